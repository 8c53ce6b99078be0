//! Reading a workload's pod template (`fromWorkload`) with one GET, and
//! turning it into what a task needs: images, node constraints, pull secrets.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::Client;
use prewarm_api::{
    NodeRequirement, NodeTerm, PodToleration, ResolvedWorkload, WorkloadKind, WorkloadRef,
};

use super::ClusterResult;

/// The pod template spec of `workload` with the workload's resourceVersion
/// and generation, `None` when it does not exist.
pub async fn pod_spec(
    client: &Client,
    workload: &WorkloadRef,
) -> ClusterResult<Option<(PodSpec, ObjectMeta)>> {
    let ns = workload.namespace.as_str();
    let name = workload.name.as_str();
    let c = client.clone();
    let spec = match workload.kind {
        WorkloadKind::Deployment => get(Api::<Deployment>::namespaced(c, ns), name)
            .await?
            .and_then(|d| Some((d.spec?.template.spec?, d.metadata))),
        WorkloadKind::StatefulSet => get(Api::<StatefulSet>::namespaced(c, ns), name)
            .await?
            .and_then(|d| Some((d.spec?.template.spec?, d.metadata))),
        WorkloadKind::DaemonSet => get(Api::<DaemonSet>::namespaced(c, ns), name)
            .await?
            .and_then(|d| Some((d.spec?.template.spec?, d.metadata))),
        WorkloadKind::Job => get(Api::<Job>::namespaced(c, ns), name)
            .await?
            .and_then(|d| Some((d.spec?.template.spec?, d.metadata))),
        WorkloadKind::CronJob => get(Api::<CronJob>::namespaced(c, ns), name)
            .await?
            .and_then(|d| Some((d.spec?.job_template.spec?.template.spec?, d.metadata))),
    };
    Ok(spec)
}

/// Why a `fromWorkload` reference could not be resolved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkloadError {
    /// No such workload.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The service may not read it (or a secret it names).
    #[error("the service may not read {what}: {message}")]
    Forbidden {
        /// What was read.
        what: String,
        /// The API server's message.
        message: String,
    },
    /// The Kubernetes API did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// Pull secrets it names are missing from the service's namespace.
    #[error("{what} names imagePullSecrets {missing:?}, missing from the service's namespace")]
    MissingSecrets {
        /// The workload.
        what: String,
        /// The missing names.
        missing: Vec<String>,
    },
    /// Its pod template cannot make a task (bad or too many images).
    #[error("{what}: {message}")]
    NotUsable {
        /// The workload.
        what: String,
        /// Why.
        message: String,
    },
}

/// `spec` with its `fromWorkload` resolved (unchanged without one): reads
/// the workload through `cluster`, checks its pull secrets exist in the
/// service's namespace, and folds it into the spec (read at `now`).
pub async fn resolve_spec(
    cluster: &dyn super::Cluster,
    spec: crate::domain::task::TaskSpec,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::domain::task::TaskSpec, WorkloadError> {
    let Some(reference) = spec.from_workload.clone() else {
        return Ok(spec);
    };
    let what = format!(
        "{:?} {}/{}",
        reference.kind, reference.namespace, reference.name
    );
    let mut resolved = cluster
        .read_workload(&reference)
        .await
        .map_err(|e| read_error(&what, e))?
        .ok_or_else(|| WorkloadError::NotFound(what.clone()))?;
    resolved.resolved_at = Some(now);
    let mut missing = Vec::new();
    for secret in &resolved.image_pull_secrets {
        let exists = cluster
            .secret_exists(secret)
            .await
            .map_err(|e| read_error(&format!("Secret {secret}"), e))?;
        if !exists {
            missing.push(secret.clone());
        }
    }
    if !missing.is_empty() {
        return Err(WorkloadError::MissingSecrets { what, missing });
    }
    spec.with_workload(resolved)
        .map_err(|e| WorkloadError::NotUsable {
            what,
            message: e.message,
        })
}

fn read_error(what: &str, err: super::ClusterError) -> WorkloadError {
    match err {
        super::ClusterError::Api {
            code: 403, message, ..
        } => WorkloadError::Forbidden {
            what: what.to_owned(),
            message,
        },
        other => WorkloadError::Unavailable(format!("reading {what}: {other}")),
    }
}

/// Whether Secret `name` exists in `namespace`.
pub async fn secret_exists(client: &Client, namespace: &str, name: &str) -> ClusterResult<bool> {
    Ok(
        get(Api::<Secret>::namespaced(client.clone(), namespace), name)
            .await?
            .is_some(),
    )
}

async fn get<K>(api: Api<K>, name: &str) -> ClusterResult<Option<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(super::kube::map_err)
}

/// What a task takes from a pod spec: init container and container images as
/// written (digests kept, duplicates dropped), `nodeSelector`, required node
/// affinity, tolerations and pull secret names.
pub fn resolve(workload: &WorkloadRef, spec: &PodSpec, meta: &ObjectMeta) -> ResolvedWorkload {
    let mut images: Vec<String> = Vec::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        if let Some(image) = &c.image {
            if !images.contains(image) {
                images.push(image.clone());
            }
        }
    }
    let requirement = |r: &k8s_openapi::api::core::v1::NodeSelectorRequirement| NodeRequirement {
        key: r.key.clone(),
        operator: r.operator.clone(),
        values: r.values.clone().unwrap_or_default(),
    };
    let node_affinity = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|sel| {
            sel.node_selector_terms
                .iter()
                .map(|t| NodeTerm {
                    match_expressions: t
                        .match_expressions
                        .iter()
                        .flatten()
                        .map(requirement)
                        .collect(),
                    match_fields: t.match_fields.iter().flatten().map(requirement).collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    ResolvedWorkload {
        workload: workload.clone(),
        images,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        node_affinity,
        tolerations: spec
            .tolerations
            .iter()
            .flatten()
            .map(|t| PodToleration {
                key: t.key.clone().unwrap_or_default(),
                operator: t.operator.clone().unwrap_or_default(),
                value: t.value.clone().unwrap_or_default(),
                effect: t.effect.clone().unwrap_or_default(),
            })
            .collect(),
        image_pull_secrets: spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.clone())
            .filter(|n| !n.is_empty())
            .collect(),
        resource_version: meta.resource_version.clone(),
        generation: meta.generation,
        resolved_at: None,
        selected_nodes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_constraints_and_secrets_come_from_the_pod_spec() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "initContainers": [{"name": "init", "image": "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}],
            "containers": [{"name": "a", "image": "nginx:1.25"}, {"name": "b", "image": "nginx:1.25"}],
            "nodeSelector": {"pool": "web"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["c"]}]}
            ]}}},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "imagePullSecrets": [{"name": "regcred"}]
        }))
        .unwrap();
        let w = WorkloadRef {
            kind: WorkloadKind::Deployment,
            namespace: "shop".into(),
            name: "web".into(),
        };
        let meta = ObjectMeta {
            resource_version: Some("42".into()),
            generation: Some(3),
            ..Default::default()
        };
        let r = resolve(&w, &spec, &meta);
        assert_eq!(r.resource_version.as_deref(), Some("42"));
        assert_eq!(r.generation, Some(3));
        assert_eq!(
            r.images.len(),
            2,
            "init first, duplicates dropped: {:?}",
            r.images
        );
        assert!(r.images[0].starts_with("busybox@sha256:"));
        assert_eq!(r.node_affinity[0].match_expressions[0].operator, "NotIn");
        assert_eq!(r.tolerations[0].key, "gpu");
        assert_eq!(r.image_pull_secrets, ["regcred"]);
    }
}
