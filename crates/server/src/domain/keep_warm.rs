//! Keep-warm policies: validation, the task a policy starts, and the pure
//! decision of one controller pass (which nodes to warm, which to untaint).
//!
//! A node's gating taint (`removeTaint`) never keeps it from being selected:
//! the policy exists to warm exactly those nodes before the taint goes.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use prewarm_api::{
    CreateKeepWarmPolicyRequest, CreateTaskRequest, KeepWarmPolicy, PolicyCoverage, TaskTrigger,
    UpdateKeepWarmPolicyRequest,
};

use super::image_ref::{matches_node_image, ImageRef};
use super::labels::validate_label_key;
use super::schedule::validate_name;
use super::selection::select_nodes;
use super::task::{random_suffix, TaskSpec, ValidationError};
use crate::cluster::NodeInfo;

/// Node names listed at most in a policy's coverage.
pub const LISTED_NODES: usize = 100;
/// The taint effect `removeTaint` removes.
pub const GATE_EFFECT: &str = "NoSchedule";

/// A fresh random policy id dated `now`.
pub fn generate_policy_id(now: DateTime<Utc>) -> String {
    format!("keep-warm-{}-{}", now.format("%Y%m%d"), random_suffix(6))
}

/// A new policy from a create body, validated, with defaults spelled out.
pub fn new_policy(
    req: CreateKeepWarmPolicyRequest,
    id: String,
    created_by: &str,
    now: DateTime<Utc>,
) -> Result<KeepWarmPolicy, ValidationError> {
    let policy = KeepWarmPolicy {
        id,
        name: req.name,
        enabled: req.enabled.unwrap_or(true),
        images: req.images,
        node_selector: req.node_selector.unwrap_or_default(),
        node_names: req.node_names.unwrap_or_default(),
        tolerate_taints: req.tolerate_taints.unwrap_or(true),
        pull_policy: req.pull_policy.unwrap_or_default(),
        image_pull_secrets: req.image_pull_secrets.unwrap_or_default(),
        batch_size: req.batch_size.unwrap_or(10),
        priority: req.priority.unwrap_or(0),
        from_workload: req.from_workload,
        remove_taint: req.remove_taint.filter(|k| !k.is_empty()),
        created_by: created_by.to_owned(),
        created_at: now,
        updated_at: now,
        coverage: None,
        last_runs: Vec::new(),
    };
    validate(&policy)?;
    Ok(policy)
}

/// `current` with the fields present in `req` replaced, validated.
pub fn apply_update(
    current: &KeepWarmPolicy,
    req: UpdateKeepWarmPolicyRequest,
    now: DateTime<Utc>,
) -> Result<KeepWarmPolicy, ValidationError> {
    let c = current.clone();
    let policy = KeepWarmPolicy {
        name: req.name.unwrap_or(c.name),
        enabled: req.enabled.unwrap_or(c.enabled),
        images: req.images.unwrap_or(c.images),
        node_selector: req.node_selector.unwrap_or(c.node_selector),
        node_names: req.node_names.unwrap_or(c.node_names),
        tolerate_taints: req.tolerate_taints.unwrap_or(c.tolerate_taints),
        pull_policy: req.pull_policy.unwrap_or(c.pull_policy),
        image_pull_secrets: req.image_pull_secrets.unwrap_or(c.image_pull_secrets),
        batch_size: req.batch_size.unwrap_or(c.batch_size),
        priority: req.priority.unwrap_or(c.priority),
        from_workload: req.from_workload.unwrap_or(c.from_workload),
        remove_taint: match req.remove_taint {
            Some(key) => Some(key).filter(|k| !k.is_empty()),
            None => c.remove_taint,
        },
        updated_at: now,
        coverage: None,
        last_runs: Vec::new(),
        ..c
    };
    validate(&policy)?;
    Ok(policy)
}

fn validate(policy: &KeepWarmPolicy) -> Result<(), ValidationError> {
    validate_name(&policy.name)?;
    if let Some(key) = &policy.remove_taint {
        validate_label_key(key).map_err(|e| ValidationError::new("removeTaint", e.to_string()))?;
    }
    policy_spec(policy).map(|_| ())
}

/// The spec of the tasks `policy` starts (before `fromWorkload` is resolved
/// and before the nodes of a run are named): `trigger: keep-warm`, linked to it.
pub fn policy_spec(policy: &KeepWarmPolicy) -> Result<TaskSpec, ValidationError> {
    let mut spec = TaskSpec::from_request(CreateTaskRequest {
        images: policy.images.clone(),
        batch_size: Some(policy.batch_size),
        node_selector: Some(policy.node_selector.clone()),
        node_names: Some(policy.node_names.clone()),
        priority: Some(policy.priority),
        pull_policy: Some(policy.pull_policy),
        image_pull_secrets: Some(policy.image_pull_secrets.clone()),
        tolerate_taints: Some(policy.tolerate_taints),
        from_workload: policy.from_workload.clone(),
        ..CreateTaskRequest::default()
    })?;
    spec.trigger = TaskTrigger::KeepWarm;
    spec.keep_warm_policy_id = Some(policy.id.clone());
    Ok(spec)
}

/// Whether `node` reports every one of `images` (digest-aware).
pub fn is_warm(node: &NodeInfo, images: &[ImageRef]) -> bool {
    images.iter().all(|i| matches_node_image(i, &node.images))
}

/// Whether `node` carries the gating taint `key` (effect NoSchedule).
pub fn is_gated(node: &NodeInfo, key: &str) -> bool {
    node.taints
        .iter()
        .any(|t| t.key == key && t.effect == GATE_EFFECT)
}

/// The nodes as a policy selects among them: its gating taint ignored.
pub fn ungated(nodes: &[NodeInfo], gate: Option<&str>) -> Vec<NodeInfo> {
    let Some(key) = gate else {
        return nodes.to_vec();
    };
    nodes
        .iter()
        .map(|n| {
            if !is_gated(n, key) {
                return n.clone();
            }
            let taints: Vec<_> = n
                .taints
                .iter()
                .filter(|t| !(t.key == key && t.effect == GATE_EFFECT))
                .cloned()
                .collect();
            NodeInfo {
                tainted: taints
                    .iter()
                    .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute"),
                taints,
                ..n.clone()
            }
        })
        .collect()
}

/// What one controller pass does for one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyPass {
    /// Selected nodes lacking an image, neither in a run nor backing off: a
    /// new run is started for them (sorted).
    pub to_warm: Vec<String>,
    /// Gated nodes that are warm: the taint comes off (sorted).
    pub to_untaint: Vec<String>,
}

/// Decides a pass of a policy whose runs use `spec`: `known_warm` says a
/// node completed a run although its `status.images` may not list every
/// image (the kubelet lists 50); `busy` says a node is in a run or backing off.
pub fn decide(
    nodes: &[NodeInfo],
    spec: &TaskSpec,
    gate: Option<&str>,
    known_warm: impl Fn(&str) -> bool,
    busy: impl Fn(&str) -> bool,
) -> PolicyPass {
    let visible = ungated(nodes, gate);
    let gated: HashSet<&str> = match gate {
        Some(key) => nodes
            .iter()
            .filter(|n| is_gated(n, key))
            .map(|n| n.name.as_str())
            .collect(),
        None => HashSet::new(),
    };
    let mut pass = PolicyPass::default();
    for node in select_nodes(&visible, spec) {
        let warm = is_warm(node, &spec.images) || known_warm(&node.name);
        if !warm && !busy(&node.name) {
            pass.to_warm.push(node.name.clone());
        }
        if warm && gated.contains(node.name.as_str()) {
            pass.to_untaint.push(node.name.clone());
        }
    }
    pass
}

/// How warm the nodes `spec` selects are, from their `status.images`.
pub fn policy_coverage(nodes: &[NodeInfo], spec: &TaskSpec, gate: Option<&str>) -> PolicyCoverage {
    let visible = ungated(nodes, gate);
    let selected = select_nodes(&visible, spec);
    let mut out = PolicyCoverage {
        total_nodes: selected.len() as u32,
        ..PolicyCoverage::default()
    };
    for node in &selected {
        if is_warm(node, &spec.images) {
            out.warm_nodes += 1;
        } else if out.cold_nodes.len() < LISTED_NODES {
            out.cold_nodes.push(node.name.clone());
        }
    }
    if let Some(key) = gate {
        let mut gated: Vec<&NodeInfo> = nodes.iter().filter(|n| is_gated(n, key)).collect();
        gated.sort_by(|a, b| a.name.cmp(&b.name));
        let names: HashSet<&str> = selected.iter().map(|n| n.name.as_str()).collect();
        out.gated_nodes = gated
            .into_iter()
            .filter(|n| names.contains(n.name.as_str()))
            .take(LISTED_NODES)
            .map(|n| n.name.clone())
            .collect();
    }
    out.percentage = if out.total_nodes == 0 {
        0.0
    } else {
        (f64::from(out.warm_nodes) * 1000.0 / f64::from(out.total_nodes)).round() / 10.0
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeTaint;

    fn node(name: &str, images: &[&str]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: [("pool".to_owned(), "web".to_owned())].into(),
            ready: true,
            images: images.iter().map(|s| s.to_string()).collect(),
            ..NodeInfo::default()
        }
    }

    fn gated(mut n: NodeInfo, key: &str) -> NodeInfo {
        n.taints.push(NodeTaint {
            key: key.into(),
            value: String::new(),
            effect: GATE_EFFECT.into(),
        });
        n.tainted = true;
        n
    }

    fn policy(body: serde_json::Value) -> Result<KeepWarmPolicy, ValidationError> {
        let req: CreateKeepWarmPolicyRequest = serde_json::from_value(body).unwrap();
        new_policy(req, "keep-warm-20260101-aaaaaa".into(), "alice", Utc::now())
    }

    #[test]
    fn creation_spells_out_defaults_and_names_bad_fields() {
        let p = policy(serde_json::json!({"name": "web", "images": ["nginx:1.25"]})).unwrap();
        assert!(p.enabled && p.tolerate_taints);
        assert_eq!((p.batch_size, p.priority, &p.remove_taint), (10, 0, &None));
        for (body, field) in [
            (
                serde_json::json!({"name": " ", "images": ["nginx"]}),
                "name",
            ),
            (serde_json::json!({"name": "w"}), "images"),
            (
                serde_json::json!({"name": "w", "images": ["a::b"]}),
                "images[0]",
            ),
            (
                serde_json::json!({"name": "w", "images": ["a"], "batchSize": 0}),
                "batchSize",
            ),
            (
                serde_json::json!({"name": "w", "images": ["a"], "removeTaint": "bad key!"}),
                "removeTaint",
            ),
        ] {
            assert_eq!(policy(body).unwrap_err().field, field);
        }
        let spec = policy_spec(&p).unwrap();
        assert_eq!(spec.trigger, TaskTrigger::KeepWarm);
        assert_eq!(spec.keep_warm_policy_id.as_deref(), Some(p.id.as_str()));
    }

    #[test]
    fn an_update_merges_and_an_empty_remove_taint_turns_gating_off() {
        let p = policy(serde_json::json!({"name": "web", "images": ["nginx"], "removeTaint": "prewarm.io/cold"}))
            .unwrap();
        let u = apply_update(
            &p,
            UpdateKeepWarmPolicyRequest {
                enabled: Some(false),
                ..Default::default()
            },
            Utc::now(),
        )
        .unwrap();
        assert!(!u.enabled);
        assert_eq!(u.remove_taint.as_deref(), Some("prewarm.io/cold"));
        assert_eq!(u.images, p.images);
        let u = apply_update(
            &u,
            UpdateKeepWarmPolicyRequest {
                remove_taint: Some(String::new()),
                ..Default::default()
            },
            Utc::now(),
        )
        .unwrap();
        assert_eq!(u.remove_taint, None);
        let bad = apply_update(
            &u,
            UpdateKeepWarmPolicyRequest {
                images: Some(vec![]),
                ..Default::default()
            },
            Utc::now(),
        );
        assert_eq!(bad.unwrap_err().field, "images");
    }

    #[test]
    fn an_update_keeps_sets_or_removes_from_workload() {
        let p = policy(serde_json::json!({
            "name": "web", "images": ["nginx"],
            "fromWorkload": {"kind": "Deployment", "namespace": "shop", "name": "web"}
        }))
        .unwrap();
        let update = |p: &KeepWarmPolicy, body| {
            let req: UpdateKeepWarmPolicyRequest = serde_json::from_value(body).unwrap();
            apply_update(p, req, Utc::now()).unwrap()
        };
        let kept = update(&p, serde_json::json!({"priority": 5}));
        assert_eq!(kept.from_workload, p.from_workload);
        let moved = update(
            &kept,
            serde_json::json!({"fromWorkload": {"kind": "StatefulSet", "namespace": "shop", "name": "db"}}),
        );
        assert_eq!(moved.from_workload.as_ref().unwrap().name, "db");
        let removed = update(&moved, serde_json::json!({"fromWorkload": null}));
        assert_eq!(removed.from_workload, None);
        assert_eq!(removed.images, ["nginx"]);
        // Without a workload, the images must stand on their own.
        let req: UpdateKeepWarmPolicyRequest =
            serde_json::from_value(serde_json::json!({"fromWorkload": null, "images": []}))
                .unwrap();
        assert_eq!(
            apply_update(&p, req, Utc::now()).unwrap_err().field,
            "images"
        );
    }

    #[test]
    fn a_pass_warms_cold_idle_nodes_and_untaints_warm_gated_ones() {
        let p = policy(serde_json::json!({
            "name": "web", "images": ["nginx:1.25"], "nodeSelector": {"pool": "web"},
            "tolerateTaints": false, "removeTaint": "prewarm.io/cold"
        }))
        .unwrap();
        let spec = policy_spec(&p).unwrap();
        let mut other_pool = node("x-other", &[]);
        other_pool.labels.clear();
        let mut down = node("e-down", &[]);
        down.ready = false;
        let nodes = vec![
            node("a-warm", &["docker.io/library/nginx:1.25"]),
            node("b-cold", &[]),
            gated(node("c-gated-cold", &[]), "prewarm.io/cold"),
            gated(node("d-gated-warm", &["nginx:1.25"]), "prewarm.io/cold"),
            down,
            gated(node("f-other-taint", &[]), "dedicated"),
            node("g-busy", &[]),
            gated(node("h-completed", &[]), "prewarm.io/cold"),
            other_pool,
        ];
        let pass = decide(
            &nodes,
            &spec,
            p.remove_taint.as_deref(),
            |n| n == "h-completed",
            |n| n == "g-busy",
        );
        assert_eq!(pass.to_warm, ["b-cold", "c-gated-cold"]);
        assert_eq!(pass.to_untaint, ["d-gated-warm", "h-completed"]);

        let cov = policy_coverage(&nodes, &spec, p.remove_taint.as_deref());
        assert_eq!(cov.total_nodes, 6);
        assert_eq!(cov.warm_nodes, 2);
        assert_eq!(cov.percentage, 33.3);
        assert_eq!(
            cov.cold_nodes,
            ["b-cold", "c-gated-cold", "g-busy", "h-completed"]
        );
        assert_eq!(
            cov.gated_nodes,
            ["c-gated-cold", "d-gated-warm", "h-completed"]
        );
    }
}
