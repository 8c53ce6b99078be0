//! One node's pulls within one task: a small state machine driven by what
//! the kubelet reports, plus the task summary derived from all nodes.
//!
//! `Waiting → Started → {Completed | Failed | RetryWait → Started | Skipped}`.
//! Counters are always derived from these states, never kept separately.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prewarm_api::{
    FailedNodeDetail, ImageStatus, NodeImageResult, NodeImageStatus, Progress, PullPolicy,
    SkippedNodeDetail,
};
use serde::{Deserialize, Serialize};

use super::image_ref::{matches_node_image, ImageRef};
use super::selection::DiskCheck;
use super::task::TaskSpec;
use crate::cluster::NodeInfo;

/// Kubelet waiting reasons that mean a pull failed.
pub const PULL_FAILURE_REASONS: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
];

/// Reason recorded when a node's pulls outlive the pull timeout.
pub const TIMEOUT_REASON: &str = "Timeout";
/// Reason recorded for nodes that went away mid-task.
pub const NODE_GONE_REASON: &str = "NodeGone";

/// Whether a pull failure will not go away by retrying.
pub fn is_permanent(reason: &str, message: &str) -> bool {
    if reason == "InvalidImageName" || reason == "ErrImageNeverPull" {
        return true;
    }
    let m = message.to_ascii_lowercase();
    [
        "not found",
        "manifest unknown",
        "unauthorized",
        "authentication required",
        "access denied",
        "denied:",
        "name unknown",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// Where one image stands on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum ImagePull {
    /// Still to pull (possibly after failed attempts).
    Pending {
        /// Failed attempts so far.
        failures: u32,
        /// Last failure, kept for the final report.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<PullFailure>,
    },
    /// The node reported it already (`status.images`), nothing was created.
    Present,
    /// A container with it ran on the node.
    Pulled {
        /// Digest the node resolved, if reported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
    /// Failed for good.
    Failed(PullFailure),
}

/// Why a pull failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullFailure {
    /// Kubelet reason or `Timeout`.
    pub reason: String,
    /// Kubelet message.
    pub message: String,
    /// When it was seen.
    pub at: DateTime<Utc>,
}

/// Where the node stands as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase")]
pub enum NodePhase {
    /// Not started yet.
    Waiting,
    /// A Job for `attempt` is (being) created.
    Started {
        /// When it started.
        since: DateTime<Utc>,
    },
    /// Waiting to retry failed images.
    RetryWait {
        /// Earliest time to start the next attempt.
        until: DateTime<Utc>,
    },
    /// Every image is on the node.
    Completed {
        /// When.
        at: DateTime<Utc>,
    },
    /// Some image failed for good.
    Failed {
        /// When.
        at: DateTime<Utc>,
    },
    /// Left out: the node went away, or its disk could not take the images.
    Skipped {
        /// When.
        at: DateTime<Utc>,
        /// Why.
        message: String,
        /// `DiskPressure` or `InsufficientDisk`; none: `NodeGone`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl NodePhase {
    /// The reason of a `Skipped` phase.
    fn skip_reason(reason: &Option<String>) -> &str {
        reason.as_deref().unwrap_or(NODE_GONE_REASON)
    }
}

/// What the current attempt's pod shows for one image.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageReport {
    /// Still pulling (or not reported).
    Pulling,
    /// Ran: pulled, with the resolved digest if known.
    Pulled(Option<String>),
    /// A pull failure reason with the kubelet's message.
    Failed {
        /// Kubelet reason.
        reason: String,
        /// Kubelet message.
        message: String,
    },
}

/// One node's pulls in one task (the durable per-node record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePull {
    /// Node name.
    pub node: String,
    /// One entry per task image, same order.
    pub images: Vec<ImagePull>,
    /// Attempt number of the current or last Job (0 = first).
    pub attempt: u32,
    /// Whether a Job was ever started for this node.
    pub started: bool,
    /// Where the node stands.
    pub phase: NodePhase,
    /// Place in the task's start order (slowest expected first), fixed when
    /// the task starts so that a restart keeps it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rank: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl NodePull {
    /// The record a task starts with for a selected node: images it reports
    /// count as present (with `IfNotPresent`), a node with nothing to pull
    /// completes at once, and one whose disk cannot take the images is skipped.
    pub fn first(
        node: &NodeInfo,
        spec: &TaskSpec,
        disk: &DiskCheck,
        now: DateTime<Utc>,
    ) -> NodePull {
        let reported: Vec<bool> = spec
            .images
            .iter()
            .map(|img| matches_node_image(img, &node.images))
            .collect();
        let present = reported
            .iter()
            .map(|&there| there && spec.pull_policy == PullPolicy::IfNotPresent)
            .collect();
        let mut pull = NodePull::new(node.name.clone(), present);
        if let Some(why) = disk.skip(node, &reported) {
            pull.skip_for(why.reason, &why.message, now);
        } else {
            pull.settle_without_pull(now);
        }
        pull
    }

    /// A node about to be pulled; images listed in `present` count as done.
    pub fn new(node: String, present: Vec<bool>) -> NodePull {
        NodePull {
            node,
            images: present
                .into_iter()
                .map(|p| {
                    if p {
                        ImagePull::Present
                    } else {
                        ImagePull::Pending {
                            failures: 0,
                            last: None,
                        }
                    }
                })
                .collect(),
            attempt: 0,
            started: false,
            phase: NodePhase::Waiting,
            rank: 0,
        }
    }

    /// Whether the node's outcome is final.
    pub fn is_done(&self) -> bool {
        matches!(
            self.phase,
            NodePhase::Completed { .. } | NodePhase::Failed { .. } | NodePhase::Skipped { .. }
        )
    }

    /// Whether a Job of this node is (supposed to be) alive.
    pub fn is_started(&self) -> bool {
        matches!(self.phase, NodePhase::Started { .. })
    }

    /// Indices of the images still to pull.
    pub fn pending_images(&self) -> Vec<usize> {
        self.images
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, ImagePull::Pending { .. }))
            .map(|(i, _)| i)
            .collect()
    }

    /// If nothing is left to pull (every image present), completes at once.
    pub fn settle_without_pull(&mut self, now: DateTime<Utc>) -> bool {
        if matches!(self.phase, NodePhase::Waiting) && self.pending_images().is_empty() {
            self.phase = NodePhase::Completed { at: now };
            return true;
        }
        false
    }

    /// Starts the next attempt; returns its attempt number.
    pub fn start(&mut self, now: DateTime<Utc>) -> u32 {
        if self.started {
            self.attempt += 1;
        }
        self.started = true;
        self.phase = NodePhase::Started { since: now };
        self.attempt
    }

    /// Undoes `start` after the Job could not be created; tries again at `until`
    /// with the same attempt number (so a Job that was created after all is adopted).
    pub fn unstart(&mut self, until: DateTime<Utc>) {
        if self.attempt > 0 {
            self.attempt -= 1;
        } else {
            self.started = false;
        }
        self.phase = NodePhase::RetryWait { until };
    }

    /// Takes up an attempt found running in the cluster (after a restart).
    pub fn adopt(&mut self, attempt: u32, now: DateTime<Utc>) {
        self.attempt = attempt;
        self.started = true;
        self.phase = NodePhase::Started { since: now };
    }

    /// Applies what the current attempt's pod shows. Returns true when the
    /// attempt is over (the Job can go): every pending image either ran or failed.
    pub fn observe(
        &mut self,
        reports: &[(usize, ImageReport)],
        spec: &TaskSpec,
        now: DateTime<Utc>,
    ) -> bool {
        if !self.is_started() {
            return false;
        }
        let mut failed_now = Vec::new();
        for (index, report) in reports {
            let Some(slot) = self.images.get_mut(*index) else {
                continue;
            };
            if !matches!(slot, ImagePull::Pending { .. }) {
                continue;
            }
            match report {
                ImageReport::Pulling => {}
                ImageReport::Pulled(digest) => {
                    *slot = ImagePull::Pulled {
                        digest: digest.clone(),
                    }
                }
                ImageReport::Failed { reason, message } => failed_now.push((
                    *index,
                    PullFailure {
                        reason: reason.clone(),
                        message: message.clone(),
                        at: now,
                    },
                )),
            }
        }
        let failed_indices: BTreeSet<usize> = failed_now.iter().map(|(i, _)| *i).collect();
        let still_pulling = self
            .pending_images()
            .into_iter()
            .any(|i| !failed_indices.contains(&i));
        if still_pulling {
            return false;
        }
        self.end_attempt(failed_now, spec, now);
        true
    }

    /// Ends the current attempt because it took too long or its pod died:
    /// every image still pending failed with `reason`.
    pub fn fail_attempt(
        &mut self,
        reason: &str,
        message: &str,
        spec: &TaskSpec,
        now: DateTime<Utc>,
    ) {
        if !self.is_started() {
            return;
        }
        let failed = self
            .pending_images()
            .into_iter()
            .map(|i| {
                (
                    i,
                    PullFailure {
                        reason: reason.to_owned(),
                        message: message.to_owned(),
                        at: now,
                    },
                )
            })
            .collect();
        self.end_attempt(failed, spec, now);
    }

    fn end_attempt(
        &mut self,
        failed: Vec<(usize, PullFailure)>,
        spec: &TaskSpec,
        now: DateTime<Utc>,
    ) {
        let mut retry_after: Option<Duration> = None;
        for (index, failure) in failed {
            let ImagePull::Pending { failures, .. } = self.images[index] else {
                continue;
            };
            let failures = failures + 1;
            let permanent = is_permanent(&failure.reason, &failure.message);
            if permanent || failures > spec.max_retries {
                self.images[index] = ImagePull::Failed(failure);
            } else {
                let wait = spec.retry_wait(failures);
                retry_after = Some(retry_after.map_or(wait, |w: Duration| w.max(wait)));
                self.images[index] = ImagePull::Pending {
                    failures,
                    last: Some(failure),
                };
            }
        }
        self.phase = match retry_after {
            Some(wait) => NodePhase::RetryWait {
                until: now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero()),
            },
            None if self
                .images
                .iter()
                .any(|s| matches!(s, ImagePull::Failed(_))) =>
            {
                NodePhase::Failed { at: now }
            }
            None => NodePhase::Completed { at: now },
        };
    }

    /// The reason of this node's most recent image failure, if any.
    pub fn last_failure_reason(&self) -> Option<&str> {
        self.images
            .iter()
            .filter_map(|slot| match slot {
                ImagePull::Failed(f) | ImagePull::Pending { last: Some(f), .. } => Some(f),
                _ => None,
            })
            .max_by_key(|f| f.at)
            .map(|f| f.reason.as_str())
    }

    /// The node went away: no longer counted as to-do, not a failure.
    pub fn skip(&mut self, message: &str, now: DateTime<Utc>) {
        self.skip_as(None, message, now);
    }

    /// Left out for `reason` (`DiskPressure`, `InsufficientDisk`): not to do, not a failure.
    pub fn skip_for(&mut self, reason: &str, message: &str, now: DateTime<Utc>) {
        self.skip_as(Some(reason.to_owned()), message, now);
    }

    fn skip_as(&mut self, reason: Option<String>, message: &str, now: DateTime<Utc>) {
        if !self.is_done() {
            self.phase = NodePhase::Skipped {
                at: now,
                message: message.to_owned(),
                reason,
            };
        }
    }

    /// Cancels what remains (task cancelled or timed out): pending images fail with `reason`.
    pub fn abort(&mut self, reason: &str, message: &str, now: DateTime<Utc>) {
        if self.is_done() {
            return;
        }
        for slot in &mut self.images {
            if let ImagePull::Pending { .. } = slot {
                *slot = ImagePull::Failed(PullFailure {
                    reason: reason.to_owned(),
                    message: message.to_owned(),
                    at: now,
                });
            }
        }
        self.phase = NodePhase::Failed { at: now };
    }
}

/// Most entries of `failedNodeDetails` and of `skippedNodeDetails` in a task
/// view; the rest are paged from `GET /api/v1/tasks/{id}/nodes`.
pub const MAX_VIEW_DETAILS: usize = 100;

/// The user-visible summary of a task derived from its nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Counters and window position.
    pub progress: Progress,
    /// The oldest [`MAX_VIEW_DETAILS`] final (node, image) failures, oldest first.
    pub failed: Vec<FailedNodeDetail>,
    /// Final (node, image) failures in all.
    pub failed_total: u64,
    /// The oldest [`MAX_VIEW_DETAILS`] skipped nodes, oldest first.
    pub skipped: Vec<SkippedNodeDetail>,
    /// Per-image outcome.
    pub images: Vec<ImageStatus>,
    /// Nodes whose outcome is final.
    pub done_nodes: u32,
}

/// Derives the task summary from every node's state.
pub fn summarize(images: &[String], batch_size: u32, nodes: &[NodePull]) -> Summary {
    let mut progress = Progress {
        total_nodes: nodes.len() as u32,
        ..Default::default()
    };
    // (node, image index, failure): details are built for the kept ones only.
    let mut failed: Vec<(&NodePull, usize, &PullFailure)> = Vec::new();
    let mut skipped: Vec<(&NodePull, DateTime<Utc>, &str, &str)> = Vec::new();
    let mut per_image: Vec<(u32, u32, BTreeSet<String>)> =
        vec![(0, 0, BTreeSet::new()); images.len()];
    let mut started = 0u32;
    for node in nodes {
        if node.started || node.is_done() {
            started += 1;
        }
        match &node.phase {
            NodePhase::Completed { .. } => progress.completed_nodes += 1,
            NodePhase::Failed { .. } => progress.failed_nodes += 1,
            NodePhase::Skipped {
                at,
                message,
                reason,
            } => {
                progress.skipped_nodes += 1;
                skipped.push((node, *at, NodePhase::skip_reason(reason), message));
            }
            _ => {}
        }
        for (i, slot) in node.images.iter().enumerate() {
            let Some(entry) = per_image.get_mut(i) else {
                continue;
            };
            match slot {
                ImagePull::Present => entry.0 += 1,
                ImagePull::Pulled { digest } => {
                    entry.0 += 1;
                    if let Some(d) = digest {
                        entry.2.insert(d.clone());
                    }
                }
                ImagePull::Failed(f) => {
                    entry.1 += 1;
                    failed.push((node, i, f));
                }
                ImagePull::Pending { .. } => {}
            }
        }
    }
    let batch = batch_size.max(1);
    progress.current_batch = started.div_ceil(batch);
    progress.total_batches = progress.total_nodes.div_ceil(batch);
    let effective = progress.total_nodes - progress.skipped_nodes;
    progress.percentage = if effective == 0 {
        0.0
    } else {
        (f64::from(progress.completed_nodes) * 1000.0 / f64::from(effective)).round() / 10.0
    };
    let failed_total = failed.len() as u64;
    failed.sort_by(|a, b| a.2.at.cmp(&b.2.at).then(a.0.node.cmp(&b.0.node)));
    failed.truncate(MAX_VIEW_DETAILS);
    let failed = failed
        .into_iter()
        .map(|(node, i, f)| FailedNodeDetail {
            node_name: node.node.clone(),
            image: images[i].clone(),
            reason: f.reason.clone(),
            message: f.message.clone(),
            timestamp: f.at,
        })
        .collect();
    skipped.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.node.cmp(&b.0.node)));
    skipped.truncate(MAX_VIEW_DETAILS);
    let skipped = skipped
        .into_iter()
        .map(|(node, at, reason, message)| SkippedNodeDetail {
            node_name: node.node.clone(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            timestamp: at,
        })
        .collect();
    let done_nodes = progress.completed_nodes + progress.failed_nodes + progress.skipped_nodes;
    Summary {
        progress,
        failed,
        failed_total,
        skipped,
        images: images
            .iter()
            .zip(per_image)
            .map(|(image, (completed, failed, digests))| ImageStatus {
                image: image.clone(),
                completed_nodes: completed,
                failed_nodes: failed,
                digest_drift: digests.len() > 1,
                digests: digests.into_iter().collect(),
                pinned_digest: None,
            })
            .collect(),
        done_nodes,
    }
}

/// The (node, image) results of one node, in the task's image order.
pub fn image_results<'a>(
    images: &'a [String],
    node: &'a NodePull,
) -> impl Iterator<Item = NodeImageResult> + 'a {
    let ended = match &node.phase {
        NodePhase::Completed { at } | NodePhase::Failed { at } | NodePhase::Skipped { at, .. } => {
            Some(*at)
        }
        _ => None,
    };
    images.iter().zip(&node.images).map(move |(image, slot)| {
        let mut result = NodeImageResult {
            node_name: node.node.clone(),
            image: image.clone(),
            status: NodeImageStatus::Pending,
            reason: None,
            message: None,
            digest: None,
            timestamp: ended,
        };
        match slot {
            ImagePull::Pending { last, .. } => {
                if let NodePhase::Skipped {
                    message, reason, ..
                } = &node.phase
                {
                    result.status = NodeImageStatus::Skipped;
                    result.reason = Some(NodePhase::skip_reason(reason).to_owned());
                    result.message = Some(message.clone());
                } else {
                    result.reason = last.as_ref().map(|f| f.reason.clone());
                    result.message = last.as_ref().map(|f| f.message.clone());
                    result.timestamp = last.as_ref().map(|f| f.at);
                }
            }
            ImagePull::Present => result.status = NodeImageStatus::Present,
            ImagePull::Pulled { digest } => {
                result.status = NodeImageStatus::Pulled;
                result.digest.clone_from(digest);
            }
            ImagePull::Failed(f) => {
                result.status = NodeImageStatus::Failed;
                result.reason = Some(f.reason.clone());
                result.message = Some(f.message.clone());
                result.timestamp = Some(f.at);
            }
        }
        result
    })
}

/// What a node pulls for `image` once its digest is pinned: the normalized
/// repository by digest (`docker.io/library/nginx@sha256:…`).
pub fn pinned_reference(image: &ImageRef, digest: &str) -> String {
    format!("{}@{digest}", image.normalized_name())
}

/// The digest part of a container `imageID` (`repo@sha256:…`, `docker-pullable://…`, `sha256:…`).
pub fn digest_of(image_id: &str) -> Option<String> {
    let tail = image_id.rsplit('@').next()?;
    let tail = tail.rsplit("://").next()?;
    (tail.starts_with("sha256:") && tail.len() > 7).then(|| tail.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prewarm_api::CreateTaskRequest;

    fn spec(max_retries: u32) -> TaskSpec {
        TaskSpec::from_request(CreateTaskRequest {
            images: vec!["a:1".into(), "b:1".into()],
            max_retries: Some(max_retries),
            retry_delay: Some(10),
            ..Default::default()
        })
        .unwrap()
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn fail(reason: &str, message: &str) -> ImageReport {
        ImageReport::Failed {
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn completes_when_every_image_ran() {
        let spec = spec(0);
        let mut n = NodePull::new("n1".into(), vec![false, false]);
        assert_eq!(n.start(t(0)), 0);
        assert!(!n.observe(
            &[(0, ImageReport::Pulled(Some("sha256:aa".into())))],
            &spec,
            t(1)
        ));
        assert!(n.observe(&[(1, ImageReport::Pulled(None))], &spec, t(2)));
        assert_eq!(n.phase, NodePhase::Completed { at: t(2) });
    }

    #[test]
    fn waits_for_the_other_images_before_ending_a_failed_attempt() {
        let spec = spec(0);
        let mut n = NodePull::new("n1".into(), vec![false, false]);
        n.start(t(0));
        assert!(!n.observe(
            &[
                (0, fail("ErrImagePull", "timeout")),
                (1, ImageReport::Pulling)
            ],
            &spec,
            t(1)
        ));
        assert!(n.observe(
            &[
                (0, fail("ErrImagePull", "timeout")),
                (1, ImageReport::Pulled(None))
            ],
            &spec,
            t(2)
        ));
        assert!(matches!(n.phase, NodePhase::Failed { .. }));
        let s = summarize(&["a:1".into(), "b:1".into()], 10, &[n]);
        assert_eq!(s.failed.len(), 1);
        assert_eq!(s.failed[0].image, "a:1");
        assert_eq!(s.images[1].completed_nodes, 1);
    }

    #[test]
    fn transient_failures_retry_then_give_up() {
        let spec = spec(2);
        let mut n = NodePull::new("n1".into(), vec![false, true]);
        n.start(t(0));
        assert!(n.observe(&[(0, fail("ErrImagePull", "i/o timeout"))], &spec, t(1)));
        assert_eq!(n.phase, NodePhase::RetryWait { until: t(11) });
        assert_eq!(n.start(t(11)), 1);
        assert!(n.observe(&[(0, fail("ImagePullBackOff", "back-off"))], &spec, t(12)));
        assert_eq!(n.phase, NodePhase::RetryWait { until: t(22) });
        assert_eq!(n.start(t(22)), 2);
        assert!(n.observe(&[(0, fail("ErrImagePull", "i/o timeout"))], &spec, t(23)));
        assert!(matches!(n.phase, NodePhase::Failed { .. }));
    }

    #[test]
    fn permanent_failures_do_not_retry() {
        let spec = spec(5);
        for (reason, message) in [
            ("InvalidImageName", "couldn't parse"),
            ("ErrImagePull", "rpc error: manifest unknown"),
            ("ErrImagePull", "pull access denied: unauthorized"),
        ] {
            let mut n = NodePull::new("n1".into(), vec![false, true]);
            n.start(t(0));
            assert!(n.observe(&[(0, fail(reason, message))], &spec, t(1)));
            assert!(
                matches!(n.phase, NodePhase::Failed { .. }),
                "{reason} {message}"
            );
        }
    }

    #[test]
    fn summary_counts_and_percentage() {
        let images = vec!["a:1".to_string()];
        let mut nodes: Vec<NodePull> = (0..4)
            .map(|i| NodePull::new(format!("n{i}"), vec![false]))
            .collect();
        let spec = TaskSpec::from_request(CreateTaskRequest {
            images: images.clone(),
            ..Default::default()
        })
        .unwrap();
        nodes[0].start(t(0));
        nodes[0].observe(
            &[(0, ImageReport::Pulled(Some("sha256:x".into())))],
            &spec,
            t(1),
        );
        nodes[1].start(t(0));
        nodes[1].skip("node deleted", t(1));
        nodes[2].start(t(0));
        let s = summarize(&images, 2, &nodes);
        assert_eq!(s.progress.total_nodes, 4);
        assert_eq!(s.progress.completed_nodes, 1);
        assert_eq!(s.progress.skipped_nodes, 1);
        assert_eq!(s.progress.current_batch, 2);
        assert_eq!(s.progress.total_batches, 2);
        assert_eq!(s.progress.percentage, 33.3);
        assert_eq!(s.images[0].digests, vec!["sha256:x".to_string()]);
        assert_eq!(s.skipped[0].reason, "NodeGone");
    }

    #[test]
    fn the_view_keeps_the_oldest_hundred_failures_and_counts_them_all() {
        let spec = spec(0);
        let images = vec!["a:1".to_string(), "b:1".to_string()];
        // 200 nodes whose two images fail, the later nodes earlier; 150 nodes gone.
        let mut nodes: Vec<NodePull> = (0..350)
            .map(|i| NodePull::new(format!("n{i:03}"), vec![false, false]))
            .collect();
        for (i, n) in nodes.iter_mut().enumerate() {
            n.start(t(0));
            if i < 200 {
                n.fail_attempt(TIMEOUT_REASON, "no pull", &spec, t(1_000 - i as i64));
            } else {
                n.skip("node deleted", t(i as i64));
            }
        }
        let s = summarize(&images, 10, &nodes);
        assert_eq!(s.failed_total, 400);
        assert_eq!(s.failed.len(), MAX_VIEW_DETAILS);
        assert_eq!(s.images[0].failed_nodes, 200);
        // Oldest first: n199 failed first, both of its images.
        assert_eq!(s.failed[0].node_name, "n199");
        assert_eq!(s.failed[1].node_name, "n199");
        assert_eq!(s.failed[99].node_name, "n150");
        assert_eq!(s.progress.skipped_nodes, 150);
        assert_eq!(s.skipped.len(), MAX_VIEW_DETAILS);
        assert_eq!(s.skipped[0].node_name, "n200");
    }

    #[test]
    fn timeout_fails_the_remaining_images() {
        let spec = spec(0);
        let mut n = NodePull::new("n1".into(), vec![false, false]);
        n.start(t(0));
        n.observe(&[(0, ImageReport::Pulled(None))], &spec, t(1));
        n.fail_attempt(TIMEOUT_REASON, "no pull within 600s", &spec, t(600));
        assert!(matches!(n.phase, NodePhase::Failed { .. }));
        assert!(matches!(n.images[1], ImagePull::Failed(ref f) if f.reason == "Timeout"));
        assert!(matches!(n.images[0], ImagePull::Pulled { .. }));
    }

    #[test]
    fn more_than_one_digest_of_an_image_is_drift() {
        let spec = spec(0);
        let images = vec!["a:1".to_string(), "b:1".to_string()];
        let mut nodes: Vec<NodePull> = (0..3)
            .map(|i| NodePull::new(format!("n{i}"), vec![false, false]))
            .collect();
        for (n, d) in nodes.iter_mut().zip(["sha256:x", "sha256:x", "sha256:y"]) {
            n.start(t(0));
            n.observe(
                &[
                    (0, ImageReport::Pulled(Some(d.into()))),
                    (1, ImageReport::Pulled(Some("sha256:b".into()))),
                ],
                &spec,
                t(1),
            );
        }
        let s = summarize(&images, 10, &nodes);
        assert!(s.images[0].digest_drift);
        assert_eq!(s.images[0].digests, ["sha256:x", "sha256:y"]);
        assert!(!s.images[1].digest_drift);
        let nginx = ImageRef::parse("nginx:1.25").unwrap();
        assert_eq!(
            pinned_reference(&nginx, "sha256:ab"),
            "docker.io/library/nginx@sha256:ab"
        );
    }

    #[test]
    fn digests_from_image_ids() {
        assert_eq!(
            digest_of("docker.io/library/nginx@sha256:abc").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(
            digest_of("docker-pullable://nginx@sha256:abc").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(digest_of("sha256:abc").as_deref(), Some("sha256:abc"));
        assert_eq!(digest_of(""), None);
    }

    #[test]
    fn record_round_trips_as_json() {
        let spec = spec(1);
        let mut n = NodePull::new("n1".into(), vec![false, true]);
        n.start(t(0));
        n.observe(&[(0, fail("ErrImagePull", "i/o timeout"))], &spec, t(1));
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(serde_json::from_value::<NodePull>(json).unwrap(), n);
    }
}
