//! Cluster changes applied to the runs: pod and Job updates from the
//! watches, nodes going away, and resyncs, which re-read the caches (after
//! every relist, and every `RESYNC_EVERY`) and resolve Jobs that vanished
//! while no watch was looking.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::Engine;
use crate::cluster::{ClusterEvent, NodeInfo};
use crate::domain::node_pull::TIMEOUT_REASON;

/// A confirmed Job younger than this may be missing from a fresh list
/// without being gone (the list was taken before it was created).
const RELIST_GRACE: Duration = Duration::from_secs(5);
/// How often the caches are replayed without a relist: a Job that vanished
/// in a watch gap but was too young to be judged at the relist is resolved
/// within one period, not at the pull timeout.
pub(super) const RESYNC_EVERY: Duration = Duration::from_secs(30);

impl Engine {
    pub(super) fn on_recv(&mut self, ev: Result<ClusterEvent, broadcast::error::RecvError>) {
        match ev {
            Ok(ev) => self.on_event(ev),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "cluster events lagged; re-reading the caches");
                self.resync();
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    /// Applies one cluster change.
    pub fn on_event(&mut self, ev: ClusterEvent) {
        let now = self.clock.now();
        self.apply_event(ev, now);
        let mono = Instant::now();
        for run in self.runs.values_mut() {
            run.arm_timers(now, mono);
        }
    }

    fn apply_event(&mut self, ev: ClusterEvent, now: DateTime<Utc>) {
        match ev {
            ClusterEvent::PodChanged(pod) => {
                if let Some(run) = self.runs.get_mut(&pod.task_id) {
                    run.observe_pod(&pod, now);
                }
            }
            ClusterEvent::JobChanged(job) => {
                let Some(reason) = job.failed_reason.as_deref() else {
                    return;
                };
                if let Some(run) = self.runs.get_mut(&job.task_id) {
                    if let Some(&i) = run.index.get(&job.node) {
                        let node = &run.nodes[i];
                        if node.is_started() && node.attempt == job.attempt {
                            let (reason, message) = if reason == "DeadlineExceeded" {
                                (
                                    TIMEOUT_REASON,
                                    "the pull Job exceeded its deadline".to_owned(),
                                )
                            } else {
                                (reason, format!("the pull Job failed: {reason}"))
                            };
                            let spec = run.spec.clone();
                            run.nodes[i].fail_attempt(reason, &message, &spec, now);
                            run.attempt_ended(i);
                        }
                    }
                }
            }
            ClusterEvent::JobDeleted(job) => {
                if let Some(run) = self.runs.get_mut(&job.task_id) {
                    if let Some(&i) = run.index.get(&job.node) {
                        let node = &run.nodes[i];
                        if node.is_started() && node.attempt == job.attempt {
                            run.job_deleted(i, now);
                        }
                    }
                }
            }
            ClusterEvent::NodeChanged(node) => {
                if !node.ready {
                    for run in self.runs.values_mut() {
                        run.node_gone(&node.name, "node became NotReady", now);
                    }
                } else if node.disk_pressure {
                    for run in self.runs.values_mut() {
                        run.node_under_disk_pressure(&node.name, now);
                    }
                }
            }
            ClusterEvent::NodeDeleted(name) => {
                for run in self.runs.values_mut() {
                    run.node_gone(&name, "node was deleted", now);
                }
            }
            ClusterEvent::Resynced => self.resync(),
        }
    }

    /// Re-reads the cluster caches and applies them as if every object changed.
    pub(super) fn resync(&mut self) {
        let now = self.clock.now();
        let nodes: HashMap<String, NodeInfo> = self
            .cluster
            .nodes()
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        self.forget_gone_nodes(&nodes, now);
        for run in self.runs.values_mut() {
            let names: Vec<String> = run.nodes.iter().map(|n| n.node.clone()).collect();
            for name in names {
                match nodes.get(&name) {
                    None => {
                        run.node_gone(&name, "node was deleted", now);
                    }
                    Some(n) if !n.ready => {
                        run.node_gone(&name, "node became NotReady", now);
                    }
                    Some(n) if n.disk_pressure => {
                        run.node_under_disk_pressure(&name, now);
                    }
                    _ => {}
                }
            }
        }
        for pod in self.cluster.pods() {
            if let Some(run) = self.runs.get_mut(&pod.task_id) {
                run.observe_pod(&pod, now);
            }
        }
        // Jobs: a failed one ends its attempt; a confirmed one missing from a
        // fresh list was deleted while no watch was looking.
        let jobs = self.cluster.jobs();
        let listed: HashSet<(&str, &str, u32)> = jobs
            .iter()
            .map(|j| (j.task_id.as_str(), j.node.as_str(), j.attempt))
            .collect();
        for job in &jobs {
            if job.failed_reason.is_some() {
                self.on_event(ClusterEvent::JobChanged(Box::new(job.clone())));
            }
        }
        let mono = Instant::now();
        for run in self.runs.values_mut() {
            let gone: Vec<usize> = run
                .confirmed
                .iter()
                .filter(|(&i, &at)| {
                    let node = &run.nodes[i];
                    node.is_started()
                        && mono.duration_since(at) >= RELIST_GRACE
                        && !listed.contains(&(
                            run.view.task_id.as_str(),
                            node.node.as_str(),
                            node.attempt,
                        ))
                })
                .map(|(&i, _)| i)
                .collect();
            for i in gone {
                run.job_deleted(i, now);
            }
        }
    }
}
