//! Which nodes a task pulls on, and why the others are left out.
//!
//! The engine (when a task starts), dry-run plans and keep-warm policies all
//! select through [`select_nodes`] / [`classify`], so a plan never disagrees
//! with the run that follows it.

use std::collections::HashSet;

use crate::cluster::NodeInfo;
use crate::domain::placement;
use crate::domain::task::TaskSpec;

/// Why a node that matches a task's targeting is not pulled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exclusion {
    /// The `Ready` condition is not True.
    NotReady,
    /// `spec.unschedulable` (cordoned).
    Cordoned,
    /// Carries a NoSchedule/NoExecute taint the task does not tolerate.
    Tainted,
}

impl Exclusion {
    /// The wire name used in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            Exclusion::NotReady => "NotReady",
            Exclusion::Cordoned => "Cordoned",
            Exclusion::Tainted => "Tainted",
        }
    }
}

/// How one node stands against a task's targeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Outside `nodeSelector` / `nodeNames`: not a candidate at all.
    Unmatched,
    /// A candidate left out for this reason.
    Excluded(Exclusion),
    /// Pulled on.
    Selected,
}

/// Matches `nodeSelector` (exact labels), `nodeNames` and, for a task from a
/// workload, where its pod could be scheduled (node selector, required node
/// affinity, tolerations against taints), all by AND.
pub struct Targeting<'a> {
    spec: &'a TaskSpec,
    names: HashSet<&'a str>,
}

impl<'a> Targeting<'a> {
    /// The targeting of `spec`.
    pub fn new(spec: &'a TaskSpec) -> Targeting<'a> {
        Targeting {
            spec,
            names: spec.node_names.iter().map(String::as_str).collect(),
        }
    }

    /// How `node` stands.
    pub fn classify(&self, node: &NodeInfo) -> Fit {
        let spec = self.spec;
        let matched = spec
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
            && (self.names.is_empty() || self.names.contains(node.name.as_str()))
            && spec
                .workload
                .as_ref()
                .is_none_or(|w| placement::affinity_admits(w, node));
        let tainted = match &spec.workload {
            Some(w) => !placement::tolerates(w, node),
            None => node.tainted && !spec.tolerate_taints,
        };
        if !matched {
            Fit::Unmatched
        } else if !node.ready {
            Fit::Excluded(Exclusion::NotReady)
        } else if node.unschedulable {
            Fit::Excluded(Exclusion::Cordoned)
        } else if tainted {
            Fit::Excluded(Exclusion::Tainted)
        } else {
            Fit::Selected
        }
    }
}

/// How `node` stands against `spec` (for one node; build a [`Targeting`] for many).
pub fn classify(node: &NodeInfo, spec: &TaskSpec) -> Fit {
    Targeting::new(spec).classify(node)
}

/// Nodes a task pulls on: selector ∧ names, Ready, not cordoned, taints per spec; sorted by name.
pub fn select_nodes<'a>(nodes: &'a [NodeInfo], spec: &TaskSpec) -> Vec<&'a NodeInfo> {
    let targeting = Targeting::new(spec);
    let mut selected: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| targeting.classify(n) == Fit::Selected)
        .collect();
    selected.sort_by(|a, b| a.name.cmp(&b.name));
    selected
}

#[cfg(test)]
mod tests {
    use super::*;
    use prewarm_api::CreateTaskRequest;

    fn node(name: &str, zone: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: [("zone".to_owned(), zone.to_owned())].into(),
            ready: true,
            ..NodeInfo::default()
        }
    }

    fn spec(body: serde_json::Value) -> TaskSpec {
        let req: CreateTaskRequest = serde_json::from_value(body).unwrap();
        TaskSpec::from_request(req).unwrap()
    }

    #[test]
    fn each_exclusion_is_named_and_unmatched_nodes_are_not_candidates() {
        let mut not_ready = node("b", "z1");
        not_ready.ready = false;
        let mut cordoned = node("c", "z1");
        cordoned.unschedulable = true;
        let mut tainted = node("d", "z1");
        tainted.tainted = true;
        let nodes = vec![
            node("e", "z1"),
            not_ready,
            cordoned,
            tainted,
            node("a", "z2"),
        ];
        let s = spec(
            serde_json::json!({"images": ["nginx"], "nodeSelector": {"zone": "z1"}, "tolerateTaints": false}),
        );
        let fits: Vec<Fit> = nodes.iter().map(|n| classify(n, &s)).collect();
        assert_eq!(
            fits,
            vec![
                Fit::Selected,
                Fit::Excluded(Exclusion::NotReady),
                Fit::Excluded(Exclusion::Cordoned),
                Fit::Excluded(Exclusion::Tainted),
                Fit::Unmatched
            ]
        );
        let names: Vec<&str> = select_nodes(&nodes, &s)
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["e"]);
        let tolerant =
            spec(serde_json::json!({"images": ["nginx"], "nodeSelector": {"zone": "z1"}}));
        let names: Vec<&str> = select_nodes(&nodes, &tolerant)
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["d", "e"]);
    }
}
