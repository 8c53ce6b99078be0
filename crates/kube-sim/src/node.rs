//! The Node object a kubelet registers: labels, taints, capacity, conditions,
//! addresses, nodeInfo and images.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec as K8sNodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;

use crate::image::hex_sha256;
use crate::kubelet::NodeState;
use crate::scenario::NodeSpec;

/// Annotation that marks a Node as simulated by kube-sim.
pub const SIMULATED_ANNOTATION: &str = "kube-sim.prewarm.dev/simulated";

/// The full Node object (metadata, spec and status) for `spec`.
pub fn node_object(spec: &NodeSpec, state: &NodeState, now: Timestamp) -> Node {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), spec.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
    ]);
    labels.extend(spec.labels.clone());
    let taints = taints(spec, spec.ready, spec.disk_pressure);
    let pod_cidr = {
        let h = hex_sha256(spec.name.as_bytes());
        let b = u8::from_str_radix(&h[..2], 16).unwrap_or(0);
        let c = u8::from_str_radix(&h[2..4], 16).unwrap_or(0);
        format!("10.{}.{}.0/24", 64 + b % 64, c)
    };
    Node {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([
                (SIMULATED_ANNOTATION.to_string(), "true".to_string()),
                ("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(K8sNodeSpec {
            pod_cidr: Some(pod_cidr.clone()),
            pod_cidrs: Some(vec![pod_cidr]),
            taints: (!taints.is_empty()).then_some(taints),
            unschedulable: spec.unschedulable.then_some(true),
            ..Default::default()
        }),
        status: Some(node_status(spec, state, spec.ready, now)),
    }
}

/// Taint the node-lifecycle controller keeps on a NotReady node (and that the
/// API server's `TaintNodesByCondition` admission adds to every new Node).
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// Taint the node-lifecycle controller keeps on a node under DiskPressure.
pub const DISK_PRESSURE_TAINT: &str = "node.kubernetes.io/disk-pressure";

/// `spec.taints`: the scenario's, plus `node.kubernetes.io/not-ready:NoSchedule`
/// while the node is not Ready and `node.kubernetes.io/disk-pressure:NoSchedule`
/// while it is under DiskPressure. kube-sim maintains these itself because the
/// local control plane runs without the node-lifecycle controller.
pub fn taints(spec: &NodeSpec, ready: bool, disk_pressure: bool) -> Vec<Taint> {
    let mut taints: Vec<Taint> = spec
        .taints
        .iter()
        .map(|t| Taint {
            key: t.key.clone(),
            value: t.value.clone(),
            effect: t.effect.clone(),
            time_added: None,
        })
        .collect();
    let conditions = [
        (!ready, NOT_READY_TAINT),
        (disk_pressure, DISK_PRESSURE_TAINT),
    ];
    for (_, key) in conditions.into_iter().filter(|(on, _)| *on) {
        taints.push(Taint {
            key: key.to_string(),
            effect: "NoSchedule".to_string(),
            ..Default::default()
        });
    }
    taints
}

/// The status part of the Node: what the kubelet writes to `nodes/status`.
pub fn node_status(spec: &NodeSpec, state: &NodeState, ready: bool, now: Timestamp) -> NodeStatus {
    let capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(spec.cpu.clone())),
        ("memory".to_string(), Quantity(spec.memory.clone())),
        ("pods".to_string(), Quantity(spec.pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            Quantity(
                spec.ephemeral_storage
                    .clone()
                    .unwrap_or_else(|| "102350Mi".to_string()),
            ),
        ),
        ("hugepages-2Mi".to_string(), Quantity("0".to_string())),
    ]);
    let mut allocatable = capacity.clone();
    if spec.ephemeral_storage.is_none() {
        allocatable.insert(
            "ephemeral-storage".to_string(),
            Quantity("94326066270".to_string()),
        );
    }
    let h = hex_sha256(format!("machine/{}", spec.name).as_bytes());
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions(ready, spec.disk_pressure, now)),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_string(),
                address: state.ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".to_string(),
                address: spec.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".to_string(),
            boot_id: format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ),
            container_runtime_version: "containerd://1.4.13".to_string(),
            kernel_version: "5.10.0-28-cloud-amd64".to_string(),
            kube_proxy_version: "v1.20.2".to_string(),
            kubelet_version: "v1.20.2".to_string(),
            machine_id: h[32..64].to_string(),
            operating_system: "linux".to_string(),
            os_image: "Debian GNU/Linux 11 (bullseye)".to_string(),
            system_uuid: format!(
                "{}-{}-{}-{}-{}",
                &h[32..40],
                &h[40..44],
                &h[44..48],
                &h[48..52],
                &h[52..64]
            ),
            ..Default::default()
        }),
        images: Some(images(state)),
        ..Default::default()
    }
}

/// `status.images` for a node.
pub fn images(state: &NodeState) -> Vec<ContainerImage> {
    state
        .reported_images()
        .iter()
        .map(|i| ContainerImage {
            names: Some(i.names.clone()),
            size_bytes: Some(i.size_bytes),
        })
        .collect()
}

/// The four kubelet conditions: `Ready` and `DiskPressure` as given, the
/// other pressure ones healthy.
pub fn conditions(ready: bool, disk_pressure: bool, now: Timestamp) -> Vec<NodeCondition> {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let cond = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    vec![
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        if disk_pressure {
            cond(
                "DiskPressure",
                "True",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            )
        } else {
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            )
        },
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        if ready {
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            )
        } else {
            cond(
                "Ready",
                "False",
                "KubeletNotReady",
                "container runtime network not ready: NetworkReady=false \
                 reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
            )
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn status_of(yaml: &str) -> (Node, NodeStatus) {
        let s = Scenario::parse(yaml).unwrap();
        let spec = &s.nodes[0];
        let state = NodeState::new(&spec.name, &s);
        let now = Timestamp::now();
        let node = node_object(spec, &state, now);
        let status = node.status.clone().unwrap();
        (node, status)
    }

    fn condition(status: &NodeStatus, type_: &str) -> String {
        let c = status.conditions.as_ref().unwrap();
        c.iter().find(|c| c.type_ == type_).unwrap().status.clone()
    }

    #[test]
    fn ephemeral_storage_and_disk_pressure_follow_the_scenario() {
        let (node, status) = status_of("nodes: [{names: [a]}]");
        let alloc = status.allocatable.as_ref().unwrap();
        assert_eq!(alloc["ephemeral-storage"].0, "94326066270");
        assert_eq!(condition(&status, "DiskPressure"), "False");
        assert!(node.spec.unwrap().taints.is_none());

        let (node, status) =
            status_of("nodes: [{names: [b], ephemeralStorage: 2Gi, diskPressure: true}]");
        assert_eq!(
            status.allocatable.as_ref().unwrap()["ephemeral-storage"].0,
            "2Gi"
        );
        assert_eq!(
            status.capacity.as_ref().unwrap()["ephemeral-storage"].0,
            "2Gi"
        );
        assert_eq!(condition(&status, "DiskPressure"), "True");
        assert_eq!(condition(&status, "Ready"), "True");
        let taints = node.spec.unwrap().taints.unwrap();
        assert_eq!(taints.len(), 1);
        assert_eq!(taints[0].key, DISK_PRESSURE_TAINT);
        assert_eq!(taints[0].effect, "NoSchedule");
    }

    #[test]
    fn preloaded_images_report_the_rule_size() {
        let (_, status) = status_of(
            "nodes: [{names: [a]}]\nimages: [{match: \"big/*\", sizeBytes: 5000000000}]\npreloaded: [{image: \"big/model:1\"}]",
        );
        let images = status.images.unwrap();
        assert_eq!(images[0].size_bytes, Some(5_000_000_000));
    }
}
