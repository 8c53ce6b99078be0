//! Where a workload's pod could be scheduled: its `nodeSelector`, its
//! required node affinity and its tolerations against node taints, the rules
//! kube-scheduler's NodeAffinity and TaintToleration filters apply.

use prewarm_api::{NodeRequirement, NodeTerm, PodToleration, ResolvedWorkload};

use crate::cluster::{NodeInfo, NodeTaint};

/// Whether the pod's `nodeSelector` and required node affinity admit `node`.
pub fn affinity_admits(workload: &ResolvedWorkload, node: &NodeInfo) -> bool {
    workload
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && (workload.node_affinity.is_empty()
            || workload.node_affinity.iter().any(|t| term_matches(t, node)))
}

/// A term matches when all its requirements hold; an empty term matches nothing.
fn term_matches(term: &NodeTerm, node: &NodeInfo) -> bool {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return false;
    }
    term.match_expressions
        .iter()
        .all(|r| requirement_holds(r, node.labels.get(&r.key).map(String::as_str)))
        && term.match_fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(node.name.as_str());
            requirement_holds(r, value)
        })
}

fn requirement_holds(r: &NodeRequirement, value: Option<&str>) -> bool {
    let number = |s: &str| s.trim().parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(want)) = (
                value.and_then(number),
                r.values.first().and_then(|s| number(s)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// Whether every NoSchedule/NoExecute taint of `node` is tolerated.
pub fn tolerates(workload: &ResolvedWorkload, node: &NodeInfo) -> bool {
    node.taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| {
            workload
                .tolerations
                .iter()
                .any(|tol| toleration_matches(tol, t))
        })
}

fn toleration_matches(tol: &PodToleration, taint: &NodeTaint) -> bool {
    if !tol.effect.is_empty() && tol.effect != taint.effect {
        return false;
    }
    match tol.operator.as_str() {
        "Exists" => tol.key.is_empty() || tol.key == taint.key,
        _ => tol.key == taint.key && tol.value == taint.value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prewarm_api::{WorkloadKind, WorkloadRef};

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str, &str)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready: true,
            taints: taints
                .iter()
                .map(|(k, v, e)| NodeTaint {
                    key: k.to_string(),
                    value: v.to_string(),
                    effect: e.to_string(),
                })
                .collect(),
            ..NodeInfo::default()
        }
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeRequirement {
        NodeRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn workload(terms: Vec<NodeTerm>, tolerations: Vec<PodToleration>) -> ResolvedWorkload {
        ResolvedWorkload {
            workload: WorkloadRef {
                kind: WorkloadKind::Deployment,
                namespace: "default".into(),
                name: "web".into(),
            },
            images: vec!["nginx".into()],
            node_selector: [("pool".to_owned(), "web".to_owned())].into(),
            node_affinity: terms,
            tolerations,
            image_pull_secrets: vec![],
            resource_version: None,
            generation: None,
            resolved_at: None,
            selected_nodes: None,
        }
    }

    #[test]
    fn every_affinity_operator_and_empty_terms() {
        let n = node("n1", &[("pool", "web"), ("zone", "a"), ("cores", "8")], &[]);
        let cases = [
            (req("zone", "In", &["a", "b"]), true),
            (req("zone", "In", &["b"]), false),
            (req("zone", "NotIn", &["b"]), true),
            (req("zone", "NotIn", &["a"]), false),
            (req("absent", "NotIn", &["a"]), true),
            (req("zone", "Exists", &[]), true),
            (req("absent", "Exists", &[]), false),
            (req("absent", "DoesNotExist", &[]), true),
            (req("zone", "DoesNotExist", &[]), false),
            (req("cores", "Gt", &["4"]), true),
            (req("cores", "Gt", &["8"]), false),
            (req("cores", "Lt", &["16"]), true),
            (req("zone", "Gt", &["1"]), false),
        ];
        for (r, want) in cases {
            let w = workload(
                vec![NodeTerm {
                    match_expressions: vec![r.clone()],
                    match_fields: vec![],
                }],
                vec![],
            );
            assert_eq!(affinity_admits(&w, &n), want, "{r:?}");
        }
        let by_name = workload(
            vec![
                NodeTerm::default(),
                NodeTerm {
                    match_expressions: vec![],
                    match_fields: vec![req("metadata.name", "In", &["n1"])],
                },
            ],
            vec![],
        );
        assert!(
            affinity_admits(&by_name, &n),
            "terms are ORed, empty one matches nothing"
        );
        let other_pool = node("n2", &[("pool", "batch")], &[]);
        assert!(!affinity_admits(&workload(vec![], vec![]), &other_pool));
    }

    #[test]
    fn tolerations_against_taints() {
        let gpu = node(
            "g",
            &[],
            &[
                ("gpu", "true", "NoSchedule"),
                ("soft", "", "PreferNoSchedule"),
            ],
        );
        let tol = |key: &str, op: &str, value: &str, effect: &str| PodToleration {
            key: key.into(),
            operator: op.into(),
            value: value.into(),
            effect: effect.into(),
        };
        assert!(!tolerates(&workload(vec![], vec![]), &gpu));
        assert!(tolerates(
            &workload(vec![], vec![tol("gpu", "Equal", "true", "NoSchedule")]),
            &gpu
        ));
        assert!(tolerates(
            &workload(vec![], vec![tol("gpu", "", "true", "")]),
            &gpu
        ));
        assert!(!tolerates(
            &workload(vec![], vec![tol("gpu", "Equal", "false", "")]),
            &gpu
        ));
        assert!(!tolerates(
            &workload(vec![], vec![tol("gpu", "Exists", "", "NoExecute")]),
            &gpu
        ));
        assert!(tolerates(
            &workload(vec![], vec![tol("", "Exists", "", "")]),
            &gpu
        ));
        assert!(tolerates(
            &workload(vec![], vec![]),
            &node("plain", &[], &[])
        ));
    }
}
