//! The pull Job (or, in `PullMode::Pods`, the pull Pod itself): one per
//! (task, node, attempt), pinned to its node, one no-op container per image
//! still missing there.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, LocalObjectReference, Pod, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use super::{
    ATTEMPT_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NODE_ANNOTATION, NODE_LABEL, TASK_LABEL,
};

/// Where the helper copies the no-op binary inside every pull pod.
const NOOP_DIR: &str = "/prewarm";
/// Path of the no-op binary inside the helper image.
pub const HELPER_NOOP_PATH: &str = "/usr/local/bin/prewarm-noop";

/// CPU request of each container of a pull pod.
const CONTAINER_CPU_REQUEST: &str = "1m";
/// Memory request of each container of a pull pod.
const CONTAINER_MEMORY_REQUEST: &str = "2Mi";

/// Everything needed to build one pull Job.
#[derive(Debug, Clone, PartialEq)]
pub struct PullJob {
    /// Task id (label value).
    pub task_id: String,
    /// Random part of the task id (goes into the Job name).
    pub task_suffix: String,
    /// Node the pod is pinned to.
    pub node: String,
    /// Attempt number, 0 for the first Job of the node.
    pub attempt: u32,
    /// `(index in the task's image list, reference)` of the images to pull.
    pub images: Vec<(usize, String)>,
    /// `IfNotPresent` or `Always`.
    pub pull_policy: String,
    /// Secrets for private registries.
    pub image_pull_secrets: Vec<String>,
    /// Priority class of the pod.
    pub priority_class_name: Option<String>,
    /// Image holding the static no-op binary.
    pub helper_image: String,
    /// Pod `activeDeadlineSeconds`.
    pub active_deadline_seconds: i64,
}

/// Name of the image container for task image `index`.
pub fn container_name(index: usize) -> String {
    format!("img-{index}")
}

/// Task image index of a container name made by `container_name`.
pub fn container_index(name: &str) -> Option<usize> {
    name.strip_prefix("img-")?.parse().ok()
}

/// A label-safe value for a node name (node names may be longer than 63).
pub fn node_label_value(node: &str) -> String {
    if node.len() <= 63 {
        node.to_owned()
    } else {
        format!("h-{}", &hex_digest(node)[..20])
    }
}

/// Deterministic DNS-1123 Job name for (task, node, attempt), at most 63 characters.
pub fn job_name(task_suffix: &str, node: &str, attempt: u32) -> String {
    format!("pw-{task_suffix}-{}-{attempt}", &hex_digest(node)[..10])
}

fn hex_digest(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl PullJob {
    /// This Job's name.
    pub fn name(&self) -> String {
        job_name(&self.task_suffix, &self.node, self.attempt)
    }

    /// The pull Job: its pod template is `to_pod`'s pod; the Job adds a
    /// deadline 30 s past the pod's and a TTL as safety nets.
    pub fn to_job(&self, namespace: &str) -> Job {
        let pod = self.to_pod(namespace);
        Job {
            metadata: pod.metadata.clone(),
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                completions: Some(1),
                parallelism: Some(1),
                active_deadline_seconds: Some(self.active_deadline_seconds + 30),
                ttl_seconds_after_finished: Some(3600),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: pod.metadata.labels,
                        annotations: pod.metadata.annotations,
                        ..Default::default()
                    }),
                    spec: pod.spec,
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The pull Pod, named like the Job (`PullMode::Pods` creates it
    /// directly; a Job uses it as its template).
    pub fn to_pod(&self, namespace: &str) -> Pod {
        let labels: BTreeMap<String, String> = [
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
            (TASK_LABEL.to_owned(), self.task_id.clone()),
            (NODE_LABEL.to_owned(), node_label_value(&self.node)),
            (ATTEMPT_LABEL.to_owned(), self.attempt.to_string()),
        ]
        .into();
        let annotations: BTreeMap<String, String> =
            [(NODE_ANNOTATION.to_owned(), self.node.clone())].into();
        // A pod's request is the sum over its containers: a 100-image Job asks
        // 100m CPU and 200Mi, so it is admitted on a small (2-CPU) node beside
        // other workloads. The no-op process needs well under that.
        let requests: BTreeMap<String, Quantity> = [
            ("cpu".to_owned(), Quantity(CONTAINER_CPU_REQUEST.into())),
            (
                "memory".to_owned(),
                Quantity(CONTAINER_MEMORY_REQUEST.into()),
            ),
        ]
        .into();
        let resources = ResourceRequirements {
            requests: Some(requests.clone()),
            limits: Some(
                [
                    ("cpu".to_owned(), Quantity("100m".into())),
                    ("memory".to_owned(), Quantity("32Mi".into())),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let security = SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        };
        let mount = VolumeMount {
            name: "prewarm-bin".into(),
            mount_path: NOOP_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        };
        let helper = Container {
            name: "prewarm-helper".into(),
            image: Some(self.helper_image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(vec![
                HELPER_NOOP_PATH.into(),
                "--install".into(),
                format!("{NOOP_DIR}/noop"),
            ]),
            volume_mounts: Some(vec![VolumeMount {
                read_only: Some(false),
                ..mount.clone()
            }]),
            resources: Some(resources.clone()),
            security_context: Some(security.clone()),
            ..Default::default()
        };
        let containers = self
            .images
            .iter()
            .map(|(index, image)| Container {
                name: container_name(*index),
                image: Some(image.clone()),
                image_pull_policy: Some(self.pull_policy.clone()),
                command: Some(vec![format!("{NOOP_DIR}/noop")]),
                volume_mounts: Some(vec![mount.clone()]),
                resources: Some(resources.clone()),
                security_context: Some(security.clone()),
                ..Default::default()
            })
            .collect();
        let pod = PodSpec {
            node_name: Some(self.node.clone()),
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            active_deadline_seconds: Some(self.active_deadline_seconds),
            termination_grace_period_seconds: Some(0),
            priority_class_name: self.priority_class_name.clone(),
            image_pull_secrets: (!self.image_pull_secrets.is_empty()).then(|| {
                self.image_pull_secrets
                    .iter()
                    .map(|s| LocalObjectReference { name: s.clone() })
                    .collect()
            }),
            // Pinned pods bypass the scheduler, so taints would not stop them;
            // tolerating everything keeps NoExecute taints from evicting them.
            tolerations: Some(vec![k8s_openapi::api::core::v1::Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            init_containers: Some(vec![helper]),
            containers,
            volumes: Some(vec![Volume {
                name: "prewarm-bin".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("16Mi".into())),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(self.name()),
                namespace: Some(namespace.to_owned()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(pod),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(node: &str, attempt: u32) -> PullJob {
        PullJob {
            task_id: "task-20240116-abc123".into(),
            task_suffix: "abc123".into(),
            node: node.into(),
            attempt,
            images: vec![(0, "nginx:latest".into()), (2, "redis:7".into())],
            pull_policy: "IfNotPresent".into(),
            image_pull_secrets: vec!["regcred".into()],
            priority_class_name: None,
            helper_image: "prewarm:dev".into(),
            active_deadline_seconds: 600,
        }
    }

    #[test]
    fn names_are_dns1123_and_short_even_for_long_nodes() {
        let long = format!("{}.example.internal", "n".repeat(230));
        for node in ["node-1", long.as_str()] {
            for attempt in [0, 10] {
                let name = pull(node, attempt).name();
                assert!(name.len() <= 63, "{name}");
                assert!(name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            }
        }
        assert_ne!(pull("node-1", 0).name(), pull("node-2", 0).name());
        assert_ne!(pull("node-1", 0).name(), pull("node-1", 1).name());
        assert!(node_label_value(&long).len() <= 63);
    }

    #[test]
    fn job_is_pinned_tiny_and_labelled() {
        let job = pull("node-1", 0).to_job("prewarm");
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels[TASK_LABEL], "task-20240116-abc123");
        assert_eq!(labels[NODE_LABEL], "node-1");
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.node_name.as_deref(), Some("node-1"));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let names: Vec<_> = pod.containers.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["img-0", "img-2"]);
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
        assert_eq!(container_index("img-2"), Some(2));
        assert_eq!(container_index("prewarm-helper"), None);
    }

    #[test]
    fn the_pull_pod_is_the_jobs_pod_under_the_jobs_name() {
        let pull = pull("node-1", 3);
        let pod = pull.to_pod("prewarm");
        let job = pull.to_job("prewarm");
        assert_eq!(pod.metadata.name.as_deref(), Some(pull.name().as_str()));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("prewarm"));
        assert_eq!(pod.metadata.labels, job.metadata.labels);
        assert_eq!(pod.metadata.annotations, job.metadata.annotations);
        let template = job.spec.unwrap().template;
        assert_eq!(pod.spec, template.spec);
        assert_eq!(pod.metadata.labels, template.metadata.unwrap().labels);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn a_hundred_image_pod_fits_a_small_node() {
        let mut job = pull("node-1", 0);
        job.images = (0..crate::domain::task::MAX_IMAGES)
            .map(|i| (i, format!("registry.example/app-{i}:1")))
            .collect();
        let pod = job.to_job("prewarm").spec.unwrap().template.spec.unwrap();
        // Admission counts the sum of the containers' requests (init containers run first).
        let (mut milli_cpu, mut mib) = (0u64, 0u64);
        for c in &pod.containers {
            let req = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
            milli_cpu += req["cpu"].0.trim_end_matches('m').parse::<u64>().unwrap();
            mib += req["memory"]
                .0
                .trim_end_matches("Mi")
                .parse::<u64>()
                .unwrap();
        }
        assert_eq!(pod.containers.len(), 100);
        // A 2-CPU node with 2 GiB keeps at least 90% of its CPU and memory for others.
        assert!(milli_cpu <= 200, "{milli_cpu}m CPU");
        assert!(mib <= 205, "{mib}Mi memory");
    }
}
