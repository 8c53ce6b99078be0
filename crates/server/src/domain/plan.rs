//! Dry-run plans: what a task would do on the cluster as it stands, from the
//! same selection and "already there" rules the engine applies when it starts
//! a task.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prewarm_api::{PlannedImage, PlannedSkip, PullPolicy, TaskPlan};

use super::image_ref::matches_node_image;
use super::selection::{DiskCheck, DiskMargin, Fit, Targeting};
use super::task::TaskSpec;
use crate::cluster::NodeInfo;

/// Node names listed in a plan at most (the counts are complete).
pub const PLAN_LIST_LIMIT: usize = 100;
/// Reason of a selected node that already holds every image.
pub const ALREADY_WARM: &str = "AlreadyWarm";

/// The plan of `spec` on `nodes`, with the engine's disk margin.
/// `mean_node_seconds` is the recent mean time of one node's pulls; without
/// it the plan has no ETA.
pub fn plan(
    nodes: &[NodeInfo],
    spec: &TaskSpec,
    disk_margin: DiskMargin,
    mean_node_seconds: Option<f64>,
    now: DateTime<Utc>,
) -> TaskPlan {
    let targeting = Targeting::new(spec);
    let disk = DiskCheck::new(nodes, spec, disk_margin);
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
    let mut skip = |plan: &mut TaskPlan, node: &str, reason: &str, message: Option<String>| {
        *skipped.entry(reason.to_owned()).or_default() += 1;
        if plan.skipped_node_details.len() < PLAN_LIST_LIMIT {
            plan.skipped_node_details.push(PlannedSkip {
                node_name: node.to_owned(),
                reason: reason.to_owned(),
                message,
            });
        }
    };
    for node in sorted {
        match targeting.classify(node) {
            Fit::Unmatched => {}
            Fit::Excluded(why) => skip(&mut plan, &node.name, why.as_str(), None),
            Fit::Selected => {
                plan.selected_nodes += 1;
                if plan.selected_node_names.len() < PLAN_LIST_LIMIT {
                    plan.selected_node_names.push(node.name.clone());
                }
                let present: Vec<bool> = spec
                    .images
                    .iter()
                    .map(|image| matches_node_image(image, &node.images))
                    .collect();
                for (planned, &there) in plan.images.iter_mut().zip(&present) {
                    planned.nodes_with_image += u32::from(there);
                }
                if let Some(why) = disk.skip(node, &present) {
                    skip(&mut plan, &node.name, why.reason, Some(why.message));
                    continue;
                }
                let mut pulls = 0;
                for (planned, &there) in plan.images.iter_mut().zip(&present) {
                    if !(there && spec.pull_policy == PullPolicy::IfNotPresent) {
                        planned.pulls_needed += 1;
                        pulls += 1;
                    }
                }
                if pulls == 0 {
                    skip(&mut plan, &node.name, ALREADY_WARM, None);
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
    use crate::testing::{node_with_images, GIB};
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
        let p = plan(&nodes, &s, DiskMargin::default(), Some(4.0), Utc::now());
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
        let p = plan(&nodes, &always, DiskMargin::default(), None, Utc::now());
        assert_eq!(p.jobs, 3, "Always pulls even where present");
        assert_eq!(p.eta_seconds, None);
    }

    #[test]
    fn disk_skips_are_planned_with_their_reasons_and_no_pulls() {
        let donor = node_with_images("n0", &[("docker.io/big/model:1", 4 * GIB)]);
        let mut pressure = node("n1", &[]);
        pressure.disk_pressure = true;
        let mut small = node("n2", &[]);
        small.ephemeral_storage = Some(4 * GIB);
        let mut roomy = node("n3", &[]);
        roomy.ephemeral_storage = Some(50 * GIB);
        let nodes = vec![donor, pressure, small, roomy];
        let s = spec(serde_json::json!({"images": ["big/model:1"]}));
        let p = plan(&nodes, &s, DiskMargin::default(), None, Utc::now());
        assert_eq!(
            p.selected_nodes, 4,
            "disk skips count among the task's nodes"
        );
        assert_eq!(p.jobs, 1, "only the roomy node pulls");
        assert_eq!(p.images[0].pulls_needed, 1);
        assert_eq!(
            p.skipped_by_reason,
            BTreeMap::from([
                ("AlreadyWarm".to_owned(), 1),
                ("DiskPressure".to_owned(), 1),
                ("InsufficientDisk".to_owned(), 1)
            ])
        );
        let small = &p.skipped_node_details[2];
        assert_eq!(
            (small.node_name.as_str(), small.reason.as_str()),
            ("n2", "InsufficientDisk")
        );
        assert!(
            small
                .message
                .as_deref()
                .unwrap()
                .starts_with("needs 4.40 GiB"),
            "{small:?}"
        );
    }
}
