//! Dry-run plans: what a task would do on the cluster as it stands, from the
//! same selection and "already there" rules the engine applies when it starts
//! a task.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prewarm_api::{PlannedImage, PlannedSkip, PullPolicy, TaskPlan};

use super::image_ref::matches_node_image;
use super::selection::{Fit, Targeting};
use super::task::TaskSpec;
use crate::cluster::NodeInfo;

/// Node names listed in a plan at most (the counts are complete).
pub const PLAN_LIST_LIMIT: usize = 100;
/// Reason of a selected node that already holds every image.
pub const ALREADY_WARM: &str = "AlreadyWarm";

/// The plan of `spec` on `nodes`. `mean_node_seconds` is the recent mean
/// time of one node's pulls; without it the plan has no ETA.
pub fn plan(
    nodes: &[NodeInfo],
    spec: &TaskSpec,
    mean_node_seconds: Option<f64>,
    now: DateTime<Utc>,
) -> TaskPlan {
    let targeting = Targeting::new(spec);
    let mut sorted: Vec<&NodeInfo> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));

    let mut plan = TaskPlan {
        dry_run: true,
        images: spec
            .images
            .iter()
            .map(|i| PlannedImage {
                image: i.as_str().to_owned(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut skipped: BTreeMap<String, u32> = BTreeMap::new();
    let mut skip = |plan: &mut TaskPlan, node: &str, reason: &str| {
        *skipped.entry(reason.to_owned()).or_default() += 1;
        if plan.skipped_node_details.len() < PLAN_LIST_LIMIT {
            plan.skipped_node_details.push(PlannedSkip {
                node_name: node.to_owned(),
                reason: reason.to_owned(),
            });
        }
    };
    for node in sorted {
        match targeting.classify(node) {
            Fit::Unmatched => {}
            Fit::Excluded(why) => skip(&mut plan, &node.name, why.as_str()),
            Fit::Selected => {
                plan.selected_nodes += 1;
                if plan.selected_node_names.len() < PLAN_LIST_LIMIT {
                    plan.selected_node_names.push(node.name.clone());
                }
                let mut pulls = 0;
                for (image, planned) in spec.images.iter().zip(plan.images.iter_mut()) {
                    let present = matches_node_image(image, &node.images);
                    if present {
                        planned.nodes_with_image += 1;
                    }
                    if !(present && spec.pull_policy == PullPolicy::IfNotPresent) {
                        planned.pulls_needed += 1;
                        pulls += 1;
                    }
                }
                if pulls == 0 {
                    skip(&mut plan, &node.name, ALREADY_WARM);
                } else {
                    plan.jobs += 1;
                    plan.pulls_needed += pulls;
                }
            }
        }
    }
    plan.skipped_by_reason = skipped;
    plan.api_writes = plan.jobs * 2;
    if plan.jobs == 0 {
        plan.eta_seconds = Some(0.0);
    } else if let Some(mean) = mean_node_seconds {
        let waves = plan.jobs.div_ceil(spec.batch_size.max(1));
        plan.eta_seconds = Some((f64::from(waves) * mean * 10.0).round() / 10.0);
    }
    plan.estimated_completion = plan
        .eta_seconds
        .map(|s| now + chrono::Duration::milliseconds((s * 1000.0) as i64));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use prewarm_api::CreateTaskRequest;

    fn node(name: &str, images: &[&str]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            ready: true,
            images: images.iter().map(|s| s.to_string()).collect(),
            ..NodeInfo::default()
        }
    }

    fn spec(body: serde_json::Value) -> TaskSpec {
        let req: CreateTaskRequest = serde_json::from_value(body).unwrap();
        TaskSpec::from_request(req).unwrap()
    }

    #[test]
    fn counts_pulls_warm_nodes_and_exclusions() {
        let mut cordoned = node("n4", &[]);
        cordoned.unschedulable = true;
        let nodes = vec![
            node(
                "n3",
                &["docker.io/library/nginx:1.25", "docker.io/library/redis:7"],
            ),
            node("n1", &[]),
            node("n2", &["docker.io/library/nginx:1.25"]),
            cordoned,
        ];
        let s = spec(serde_json::json!({"images": ["nginx:1.25", "redis:7"], "batchSize": 1}));
        let p = plan(&nodes, &s, Some(4.0), Utc::now());
        assert_eq!(p.selected_nodes, 3);
        assert_eq!(p.selected_node_names, ["n1", "n2", "n3"]);
        assert_eq!(p.jobs, 2);
        assert_eq!(p.pulls_needed, 3);
        assert_eq!(p.api_writes, 4);
        assert_eq!(p.images[0].nodes_with_image, 2);
        assert_eq!(p.images[0].pulls_needed, 1);
        assert_eq!(p.images[1].pulls_needed, 2);
        assert_eq!(
            p.skipped_by_reason,
            BTreeMap::from([("AlreadyWarm".to_owned(), 1), ("Cordoned".to_owned(), 1)])
        );
        assert_eq!(p.eta_seconds, Some(8.0), "two waves of one node, 4 s each");

        let always = spec(serde_json::json!({"images": ["nginx:1.25"], "pullPolicy": "Always"}));
        let p = plan(&nodes, &always, None, Utc::now());
        assert_eq!(p.jobs, 3, "Always pulls even where present");
        assert_eq!(p.eta_seconds, None);
    }
}
