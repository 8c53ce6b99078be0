//! Kubernetes objects decoded without what the service never reads.
//!
//! Every object the API server sends carries `metadata.managedFields`: a
//! tree of field paths per writer that decodes into nested JSON maps, often
//! larger than the rest of the object. The caches strip it after decoding,
//! but a bulk answer (a relist page of 500 Pods or Nodes, the objects a
//! `deletecollection` returns) is decoded whole first: about 90 KB per pull
//! Pod, 90 MB at once when a 5,000-node task is cancelled. [`Lean`] decodes
//! the metadata the service reads (and the spec and status, which the
//! caches strip further) and skips everything else while parsing, so it is
//! never allocated.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A `K` decoded from the API server's JSON without `managedFields`,
/// `ownerReferences`, `finalizers` and the other metadata the service does
/// not read. Derefs to `K`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lean<K>(pub K);

impl<K> Deref for Lean<K> {
    type Target = K;
    fn deref(&self) -> &K {
        &self.0
    }
}

impl<K> DerefMut for Lean<K> {
    fn deref_mut(&mut self) -> &mut K {
        &mut self.0
    }
}

/// A kind made of metadata, spec and status.
pub trait Parts: Sized {
    /// Its `spec`.
    type Spec: DeserializeOwned;
    /// Its `status`.
    type Status: DeserializeOwned;
    /// The object from its parts.
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Self::Spec>,
        status: Option<Self::Status>,
    ) -> Self;
}

macro_rules! parts {
    ($kind:ty, $spec:ty, $status:ty) => {
        impl Parts for $kind {
            type Spec = $spec;
            type Status = $status;
            fn assemble(
                metadata: ObjectMeta,
                spec: Option<$spec>,
                status: Option<$status>,
            ) -> Self {
                Self {
                    metadata,
                    spec,
                    status,
                }
            }
        }
    };
}

parts!(Node, NodeSpec, NodeStatus);
parts!(Pod, PodSpec, PodStatus);
parts!(Job, JobSpec, JobStatus);

/// The object as sent; unknown fields (`apiVersion`, `kind`) are skipped.
#[derive(Deserialize)]
#[serde(bound = "S: DeserializeOwned, T: DeserializeOwned")]
struct Wire<S, T> {
    #[serde(default)]
    metadata: Meta,
    spec: Option<S>,
    status: Option<T>,
}

/// The metadata the service reads (the reflector's identity and resume
/// points, labels, annotations, deletion); the rest is skipped unparsed.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

impl From<Meta> for ObjectMeta {
    fn from(m: Meta) -> ObjectMeta {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            generation: m.generation,
            creation_timestamp: m.creation_timestamp,
            deletion_timestamp: m.deletion_timestamp,
            labels: m.labels,
            annotations: m.annotations,
            ..ObjectMeta::default()
        }
    }
}

impl<'de, K: Parts> Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::<K::Spec, K::Status>::deserialize(d)?;
        Ok(Lean(K::assemble(w.metadata.into(), w.spec, w.status)))
    }
}

impl<K: k8s_openapi::Resource> k8s_openapi::Resource for Lean<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: k8s_openapi::Metadata<Ty = ObjectMeta>> k8s_openapi::Metadata for Lean<K> {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        self.0.metadata()
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        self.0.metadata_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pull Pod as the API server sends it after a kubelet status update.
    fn served_pod() -> serde_json::Value {
        let fields: serde_json::Value = serde_json::from_str(
            r#"{"f:metadata":{"f:labels":{".":{},"f:app.kubernetes.io/managed-by":{},"f:prewarm.io/task-id":{}}},
                "f:status":{"f:conditions":{"k:{\"type\":\"Ready\"}":{".":{},"f:status":{},"f:type":{}}},
                "f:containerStatuses":{},"f:phase":{},"f:startTime":{}}}"#,
        )
        .unwrap();
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "pw-abc-1", "namespace": "prewarm", "uid": "u-1", "resourceVersion": "42",
                "labels": {"app.kubernetes.io/managed-by": "prewarm"},
                "annotations": {"prewarm.io/node-name": "node-1"},
                "creationTimestamp": "2024-01-16T10:00:00Z",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pw-abc", "uid": "j-1"}],
                "finalizers": ["example.com/keep"],
                "managedFields": (0..8).map(|i| json!({
                    "manager": format!("writer-{i}"), "operation": "Update", "apiVersion": "v1",
                    "time": "2024-01-16T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields.clone()
                })).collect::<Vec<_>>()
            },
            "spec": {"nodeName": "node-1", "containers": [{"name": "c0", "image": "nginx:1"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c0", "ready": true, "restartCount": 0,
                       "image": "nginx:1", "imageID": "docker.io/library/nginx@sha256:00", "state": {"running": {}}}]}
        })
    }

    #[test]
    fn decodes_what_the_service_reads_and_skips_the_rest() {
        let wire = served_pod();
        let full: Pod = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(full.metadata.managed_fields.as_ref().map(Vec::len), Some(8));

        let lean: Lean<Pod> = serde_json::from_value(wire).unwrap();
        let meta = &lean.metadata;
        assert_eq!(meta.managed_fields, None);
        assert_eq!(meta.owner_references, None);
        assert_eq!(meta.finalizers, None);
        assert_eq!(meta.name, full.metadata.name);
        assert_eq!(meta.namespace, full.metadata.namespace);
        assert_eq!(meta.uid, full.metadata.uid);
        assert_eq!(meta.resource_version, full.metadata.resource_version);
        assert_eq!(meta.labels, full.metadata.labels);
        assert_eq!(meta.annotations, full.metadata.annotations);
        assert_eq!(meta.creation_timestamp, full.metadata.creation_timestamp);
        assert_eq!(lean.spec, full.spec);
        assert_eq!(lean.status, full.status);
    }

    #[test]
    fn a_list_of_lean_objects_decodes_like_the_watcher_reads_it() {
        let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7"},
                          "items": [served_pod(), served_pod()]});
        let list: kube::core::ObjectList<Lean<Pod>> = serde_json::from_value(list).unwrap();
        assert_eq!(list.items.len(), 2);
        assert!(list
            .items
            .iter()
            .all(|p| p.metadata.managed_fields.is_none()));
        assert_eq!(
            <Lean<Pod> as kube::Resource>::plural(&()),
            <Pod as kube::Resource>::plural(&())
        );
    }
}
