//! Dry-run plans: what a task would do on the cluster as it stands, from the
//! same selection and "already there" rules the engine applies when it starts
//! a task.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use prewarm_api::{PlannedImage, PlannedNode, PlannedRegistry, PlannedSkip, PullPolicy, TaskPlan};
use tokio::time::Instant;

use super::image_ref::matches_node_image;
use super::node_speed::{self, longest_first, makespan, NodeSpeed};
use super::pacing::{Bucket, HostRate};
use super::selection::{DiskCheck, DiskMargin, Fit, Targeting};
use super::task::TaskSpec;
use crate::cluster::NodeInfo;

/// Node names listed in a plan at most (the counts are complete).
pub const PLAN_LIST_LIMIT: usize = 100;
/// Slowest nodes listed in a plan at most.
pub const PLAN_SLOWEST_LIMIT: usize = 10;
/// Reason of a selected node that already holds every image.
pub const ALREADY_WARM: &str = "AlreadyWarm";

/// What a plan knows of how fast nodes pull.
#[derive(Debug, Clone, Copy, Default)]
pub struct Speeds<'a> {
    /// Learned speeds by node name (`GET /api/v1/nodes/stats`).
    pub learned: Option<&'a HashMap<String, NodeSpeed>>,
    /// The recent mean time of one node's pulls, for when no selected node
    /// has a learned speed.
    pub mean_node_seconds: Option<f64>,
}

/// The plan of `spec` on `nodes`, with the engine's disk margin and what is
/// known of the nodes' speeds (without anything, the plan has no ETA).
pub fn plan(
    nodes: &[NodeInfo],
    spec: &TaskSpec,
    disk_margin: DiskMargin,
    speeds: Speeds<'_>,
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
    // (node, pulls) of every node that would get a Job.
    let mut pulling: Vec<(&str, u32)> = Vec::new();
    // Per registry host: (nodes, pulls).
    let mut registries: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
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
                let mut hosts: Vec<&str> = Vec::new();
                for ((planned, &there), image) in
                    plan.images.iter_mut().zip(&present).zip(&spec.images)
                {
                    if !(there && spec.pull_policy == PullPolicy::IfNotPresent) {
                        planned.pulls_needed += 1;
                        pulls += 1;
                        let host = image.registry();
                        registries.entry(host).or_default().1 += 1;
                        if !hosts.contains(&host) {
                            hosts.push(host);
                            registries.entry(host).or_default().0 += 1;
                        }
                    }
                }
                if pulls == 0 {
                    skip(&mut plan, &node.name, ALREADY_WARM, None);
                } else {
                    plan.jobs += 1;
                    plan.pulls_needed += pulls;
                    pulling.push((&node.name, pulls));
                }
            }
        }
    }
    plan.skipped_by_reason = skipped;
    plan.registries = registries
        .into_iter()
        .map(|(host, (nodes, pulls))| PlannedRegistry {
            host: host.to_owned(),
            nodes,
            pulls,
            ..Default::default()
        })
        .collect();
    plan.api_writes = plan.jobs * 2;
    plan.eta_seconds = if plan.jobs == 0 {
        Some(0.0)
    } else {
        expected_seconds(&mut plan, &pulling, spec.batch_size, speeds, now)
    };
    plan.estimated_completion = plan
        .eta_seconds
        .map(|s| now + chrono::Duration::milliseconds((s * 1000.0) as i64));
    plan
}

/// Registry pacing in `plan` (of `spec`): the rate of each paced host (the
/// task's `registryPullRate`, else the service's `--registry-pull-rate`) and
/// how long until its last node may start, its tokens all free to begin
/// with. The ETA is at least the longest of those waits, as a running task's
/// is.
pub fn pace(plan: &mut TaskPlan, spec: &TaskSpec, service: &[HostRate], now: DateTime<Utc>) {
    let mono = Instant::now();
    let mut longest = 0.0_f64;
    for registry in &mut plan.registries {
        let rate = spec
            .registry_pull_rates
            .get(&registry.host)
            .copied()
            .or_else(|| {
                service
                    .iter()
                    .find(|s| s.host == registry.host)
                    .map(|s| s.rate)
            });
        let Some(rate) = rate else {
            continue;
        };
        registry.pull_rate = Some(rate.to_string());
        registry.wait_seconds = Bucket::new(rate)
            .time_for(u64::from(registry.nodes), mono)
            .as_secs_f64();
        longest = longest.max(registry.wait_seconds);
    }
    if longest > 0.0 {
        let eta = plan.eta_seconds.map_or(longest, |e| e.max(longest));
        plan.eta_seconds = Some(eta);
        plan.estimated_completion =
            Some(now + chrono::Duration::milliseconds((eta * 1000.0) as i64));
    }
}

/// The ETA of the nodes that would pull (`(name, pulls)`, by name): each
/// pulls its images one after another at its learned speed, `batch` nodes at
/// a time, in the engine's start order (longest expected first). Nodes
/// without a learned speed count at the middle of the known ones, or at the
/// recent mean node time when none is known. Fills in the plan's slowest
/// nodes on the way.
fn expected_seconds(
    plan: &mut TaskPlan,
    pulling: &[(&str, u32)],
    batch: u32,
    speeds: Speeds<'_>,
    now: DateTime<Utc>,
) -> Option<f64> {
    let per_pull: Vec<Option<f64>> = pulling
        .iter()
        .map(|(node, _)| {
            speeds
                .learned
                .and_then(|l| l.get(*node))
                .and_then(|s| s.expected_at(now))
        })
        .collect();
    let mut known: Vec<PlannedNode> = pulling
        .iter()
        .zip(&per_pull)
        .filter_map(|(&(node, pulls), s)| {
            s.map(|s| PlannedNode {
                node_name: node.to_owned(),
                seconds_per_pull: s,
                pulls,
                expected_seconds: s * f64::from(pulls),
            })
        })
        .collect();
    plan.nodes_with_speed = known.len() as u32;
    known.sort_by(|a, b| {
        b.expected_seconds
            .total_cmp(&a.expected_seconds)
            .then_with(|| a.node_name.cmp(&b.node_name))
    });
    known.truncate(PLAN_SLOWEST_LIMIT);
    plan.slowest_nodes = known;

    let expected: Vec<Option<f64>> = pulling
        .iter()
        .zip(&per_pull)
        .map(|(&(_, pulls), s)| s.map(|s| s * f64::from(pulls)))
        .collect();
    let middle = node_speed::median(per_pull.iter().flatten().copied().collect());
    let work: Vec<f64> = match (middle, speeds.mean_node_seconds) {
        (Some(middle), _) => pulling
            .iter()
            .zip(&expected)
            .map(|(&(_, pulls), e)| e.unwrap_or(middle * f64::from(pulls)))
            .collect(),
        (None, Some(mean)) => vec![mean; pulling.len()],
        (None, None) => return None,
    };
    let order: Vec<f64> = longest_first(&work.iter().map(|&w| Some(w)).collect::<Vec<_>>())
        .into_iter()
        .map(|i| work[i])
        .collect();
    let secs = makespan(&[], &order, batch.max(1) as usize);
    Some((secs * 10.0).round() / 10.0)
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
    fn paced_registries_have_their_rate_and_wait_and_raise_the_eta() {
        let nodes: Vec<NodeInfo> = (0..5).map(|i| node(&format!("n{i}"), &[])).collect();
        let s = spec(serde_json::json!({
            "images": ["nginx:1.25", "redis:7", "ghcr.io/team/app:1", "quay.io/org/tool:2"],
            "registryPullRate": {"ghcr.io": "5/30s"}
        }));
        let mean = Speeds {
            learned: None,
            mean_node_seconds: Some(4.0),
        };
        let now = Utc::now();
        let mut p = plan(&nodes, &s, DiskMargin::default(), mean, now);
        assert_eq!(p.eta_seconds, Some(4.0));
        let service: Vec<HostRate> = vec!["docker.io=2/1m".parse().unwrap()];
        pace(&mut p, &s, &service, now);
        let line = |host: &str| p.registries.iter().find(|r| r.host == host).unwrap();
        let docker = line("docker.io");
        assert_eq!((docker.nodes, docker.pulls), (5, 10), "one token per node");
        assert_eq!(docker.pull_rate.as_deref(), Some("2/1m"));
        assert_eq!(
            docker.wait_seconds, 120.0,
            "2 now, 2 a minute later, 1 after two"
        );
        let ghcr = line("ghcr.io");
        assert_eq!(
            ghcr.pull_rate.as_deref(),
            Some("5/30s"),
            "the task's own rate"
        );
        assert_eq!(ghcr.wait_seconds, 0.0, "five tokens for five nodes");
        let quay = line("quay.io");
        assert_eq!((quay.pull_rate.as_deref(), quay.wait_seconds), (None, 0.0));
        assert_eq!(p.eta_seconds, Some(120.0), "the longest wait");
        assert_eq!(
            p.estimated_completion,
            Some(now + chrono::Duration::seconds(120))
        );
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
        let mean = Speeds {
            learned: None,
            mean_node_seconds: Some(4.0),
        };
        let p = plan(&nodes, &s, DiskMargin::default(), mean, Utc::now());
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
        let p = plan(
            &nodes,
            &always,
            DiskMargin::default(),
            Speeds::default(),
            Utc::now(),
        );
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
        let p = plan(
            &nodes,
            &s,
            DiskMargin::default(),
            Speeds::default(),
            Utc::now(),
        );
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

    #[test]
    fn eta_is_serial_per_node_slowest_first_over_the_batch_and_lists_the_slowest() {
        let now = Utc::now();
        // Six nodes, two images each, batch 2: a (10 s/pull) and b (6 s/pull)
        // are learned, c..e at 1 s/pull, f unknown (counts at the median, 1 s).
        let names = ["a", "b", "c", "d", "e", "f"];
        let nodes: Vec<NodeInfo> = names.iter().map(|n| node(n, &[])).collect();
        let learned: HashMap<String, NodeSpeed> =
            [("a", 10.0), ("b", 6.0), ("c", 1.0), ("d", 1.0), ("e", 1.0)]
                .into_iter()
                .map(|(n, s)| (n.to_owned(), NodeSpeed::first(n.to_owned(), s, now)))
                .collect();
        let s = spec(serde_json::json!({"images": ["nginx:1.25", "redis:7"], "batchSize": 2}));
        let speeds = Speeds {
            learned: Some(&learned),
            mean_node_seconds: Some(100.0),
        };
        let p = plan(&nodes, &s, DiskMargin::default(), speeds, now);
        // Work 20, 12, 2, 2, 2, 2: a on one slot (20 s) while b and the four
        // 2 s nodes share the other (12 + 8 = 20 s).
        assert_eq!(p.eta_seconds, Some(20.0));
        assert_eq!(p.nodes_with_speed, 5);
        let slowest: Vec<(&str, f64, u32)> = p
            .slowest_nodes
            .iter()
            .map(|n| (n.node_name.as_str(), n.expected_seconds, n.pulls))
            .collect();
        assert_eq!(
            slowest,
            [
                ("a", 20.0, 2),
                ("b", 12.0, 2),
                ("c", 2.0, 2),
                ("d", 2.0, 2),
                ("e", 2.0, 2)
            ]
        );
        // One slot: everything in a row.
        let one = spec(serde_json::json!({"images": ["nginx:1.25", "redis:7"], "batchSize": 1}));
        let p = plan(&nodes, &one, DiskMargin::default(), speeds, now);
        assert_eq!(p.eta_seconds, Some(40.0));
        // Waves at a mean would say 3 waves x the 2 s typical node = 6 s; the slow node sets it.
        let none_known = Speeds {
            learned: None,
            mean_node_seconds: Some(3.0),
        };
        let p = plan(&nodes, &s, DiskMargin::default(), none_known, now);
        assert_eq!(
            p.eta_seconds,
            Some(9.0),
            "three waves of 3 s without learned speeds"
        );
        assert!(p.slowest_nodes.is_empty());
    }

    #[test]
    fn estimates_too_old_to_act_on_are_not_used() {
        let now = Utc::now();
        let nodes = vec![node("old", &[])];
        let learned = HashMap::from([(
            "old".to_owned(),
            NodeSpeed::first("old".into(), 50.0, now - chrono::Duration::days(60)),
        )]);
        let s = spec(serde_json::json!({"images": ["nginx:1.25"]}));
        let speeds = Speeds {
            learned: Some(&learned),
            mean_node_seconds: None,
        };
        let p = plan(&nodes, &s, DiskMargin::default(), speeds, now);
        assert_eq!((p.eta_seconds, p.nodes_with_speed), (None, 0));
    }
}
