//! What the service learns about each node's pull speed, and what it does
//! with it: start a task's slowest nodes first and estimate when it ends.
//!
//! A node that pulled slowly is usually slow again (same disk, same zone,
//! same link), so every measured pull feeds a per-node estimate of seconds
//! per image pull, a mean whose samples lose half their weight every
//! [`HALF_LIFE`]. A kubelet pulls a pod's images one after another, so a
//! node's expected time in a task is its estimate times the images it has
//! to pull there.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::node_pull::NodePull;

/// Age at which a sample counts half as much as a new one.
pub const HALF_LIFE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most weight the past can have against a new sample (which weighs 1), so
/// a node that changed (a new disk, a new link) is learned again in a few pulls.
pub const MAX_WEIGHT: f64 = 8.0;
/// Below this decayed weight an estimate is too old to act on (about six
/// half-lives after the last sample of a well-known node).
pub const MIN_WEIGHT: f64 = 0.1;

/// One node's learned pull speed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpeed {
    /// Node name.
    pub node: String,
    /// Decayed mean of the measured seconds per image pull.
    pub seconds_per_pull: f64,
    /// Weight of the samples behind the mean as of `updated_at`.
    pub weight: f64,
    /// Measured pull attempts in all.
    pub samples: u64,
    /// When the last sample was taken (wall clock: the decay is over days).
    pub updated_at: DateTime<Utc>,
    /// Since when the node is missing from the cluster; `None` while it is
    /// there. Gone longer than `--retention`, its estimate is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_since: Option<DateTime<Utc>>,
}

impl NodeSpeed {
    /// A node's first sample.
    pub fn first(node: String, seconds_per_pull: f64, at: DateTime<Utc>) -> NodeSpeed {
        NodeSpeed {
            node,
            seconds_per_pull,
            weight: 1.0,
            samples: 1,
            updated_at: at,
            gone_since: None,
        }
    }

    /// The weight of the samples so far, decayed to `at`.
    pub fn weight_at(&self, at: DateTime<Utc>) -> f64 {
        let age = (at - self.updated_at).to_std().unwrap_or_default();
        self.weight * 0.5f64.powf(age.as_secs_f64() / HALF_LIFE.as_secs_f64())
    }

    /// Folds in a sample of `seconds_per_pull` taken at `at`.
    pub fn observe(&mut self, seconds_per_pull: f64, at: DateTime<Utc>) {
        let past = self.weight_at(at).min(MAX_WEIGHT);
        self.seconds_per_pull = (self.seconds_per_pull * past + seconds_per_pull) / (past + 1.0);
        self.weight = (past + 1.0).min(MAX_WEIGHT);
        self.samples += 1;
        self.updated_at = self.updated_at.max(at);
        self.gone_since = None;
    }

    /// Notes whether the node is in the cluster at `at`: whether that
    /// changed what is stored, and whether the node has been gone longer
    /// than `retention` (its estimate should be deleted).
    pub fn seen(&mut self, present: bool, at: DateTime<Utc>, retention: Duration) -> Seen {
        match (present, self.gone_since) {
            (true, None) => Seen::Unchanged,
            (true, Some(_)) => {
                self.gone_since = None;
                Seen::Changed
            }
            (false, None) => {
                self.gone_since = Some(at);
                Seen::Changed
            }
            (false, Some(since)) => {
                let gone = (at - since).to_std().unwrap_or_default();
                if gone > retention {
                    Seen::Expired
                } else {
                    Seen::Unchanged
                }
            }
        }
    }
}

/// What [`NodeSpeed::seen`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Nothing to store.
    Unchanged,
    /// The node left or came back: store the estimate again.
    Changed,
    /// Gone longer than the retention: delete the estimate.
    Expired,
}

impl NodeSpeed {
    /// Seconds per pull to plan with at `at`; `None` once the samples are too old.
    pub fn expected_at(&self, at: DateTime<Utc>) -> Option<f64> {
        (self.weight_at(at) >= MIN_WEIGHT).then_some(self.seconds_per_pull)
    }
}

/// A measured pull attempt: `seconds` on `node` for `pulls` images pulled one after another.
pub fn seconds_per_pull(seconds: f64, pulls: usize) -> f64 {
    seconds / pulls.max(1) as f64
}

/// Start order for nodes expected to take `expected[i]` seconds: longest
/// first (LPT), so the slowest never start last. Nodes without an estimate
/// count as the median of the known ones and so sit in the middle; equal
/// expectations keep their given order.
pub fn longest_first(expected: &[Option<f64>]) -> Vec<usize> {
    let mut known: Vec<f64> = expected.iter().flatten().copied().collect();
    known.sort_by(f64::total_cmp);
    let middle = known.get(known.len() / 2).copied().unwrap_or(0.0);
    let mut order: Vec<usize> = (0..expected.len()).collect();
    // A stable sort keeps ties (and everything, when nothing is known) in the given order.
    order.sort_by(|&a, &b| {
        let ea = expected[a].unwrap_or(middle);
        let eb = expected[b].unwrap_or(middle);
        eb.total_cmp(&ea)
    });
    order
}

/// Puts a task's nodes in start order, longest expected first, and numbers
/// them (`rank`). A node's expected time is its seconds per pull
/// (`seconds_per_pull(name)`, `None` without history) times the images it
/// still has to pull, one after another; nodes with nothing to pull go last.
pub fn rank_longest_first(
    nodes: Vec<NodePull>,
    seconds_per_pull: impl Fn(&str) -> Option<f64>,
) -> Vec<NodePull> {
    let (to_pull, nothing): (Vec<NodePull>, Vec<NodePull>) = nodes
        .into_iter()
        .partition(|n| !n.pending_images().is_empty());
    let expected: Vec<Option<f64>> = to_pull
        .iter()
        .map(|n| seconds_per_pull(&n.node).map(|s| s * n.pending_images().len() as f64))
        .collect();
    let order = longest_first(&expected);
    let mut slots: Vec<Option<NodePull>> = to_pull.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|i| slots[i].take())
        .chain(nothing)
        .enumerate()
        .map(|(rank, mut node)| {
            node.rank = rank as u32;
            node
        })
        .collect()
}

/// Seconds until every node is done when `slots` nodes pull at once: the
/// nodes in flight need `running[i]` more seconds each, the waiting ones
/// start in the given order as slots free up (list scheduling).
pub fn makespan(running: &[f64], waiting: &[f64], slots: usize) -> f64 {
    let millis = |s: f64| (s.max(0.0) * 1000.0).round() as u64;
    let slots = slots.max(running.len()).max(1);
    let mut free: BinaryHeap<Reverse<u64>> = running.iter().map(|&s| Reverse(millis(s))).collect();
    while free.len() < slots {
        free.push(Reverse(0));
    }
    for &w in waiting {
        let Reverse(at) = free.pop().unwrap_or(Reverse(0));
        free.push(Reverse(at + millis(w)));
    }
    free.into_iter().map(|Reverse(t)| t).max().unwrap_or(0) as f64 / 1000.0
}

/// The middle of `values` (`None` when empty).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn slowest_start_first_unknown_in_the_middle_ties_keep_their_order() {
        let expected = [
            Some(4.0),
            None,
            Some(40.0),
            Some(4.0),
            Some(1.0),
            None,
            Some(40.0),
        ];
        // Median of the known (1, 4, 4, 40, 40) is 4: the unknown tie with
        // the 4 s nodes and keep their places among them.
        assert_eq!(longest_first(&expected), [2, 6, 0, 1, 3, 5, 4]);
    }

    #[test]
    fn without_any_history_the_order_is_kept() {
        assert_eq!(longest_first(&[None, None, None]), [0, 1, 2]);
        assert_eq!(longest_first(&[]), Vec::<usize>::new());
    }

    #[test]
    fn a_decayed_estimate_orders_by_its_mean_until_it_is_too_old() {
        let t0 = at("2024-01-01T00:00:00Z");
        let mut slow = NodeSpeed::first("slow".into(), 50.0, t0);
        slow.observe(30.0, t0);
        assert_eq!(slow.seconds_per_pull, 40.0);
        let fast = NodeSpeed::first("fast".into(), 2.0, t0 + chrono::Duration::days(20));
        let now = t0 + chrono::Duration::days(21);
        let expected = [fast.expected_at(now), slow.expected_at(now)];
        assert_eq!(longest_first(&expected), [1, 0]);
        // Two samples, six half-lives later: weight 2/64 is below MIN_WEIGHT.
        assert_eq!(slow.expected_at(t0 + chrono::Duration::days(42)), None);
    }

    #[test]
    fn old_samples_weigh_less_and_the_past_is_capped() {
        let t0 = at("2024-01-01T00:00:00Z");
        let mut s = NodeSpeed::first("n".into(), 10.0, t0);
        // One half-life later the old sample weighs 0.5 against the new 1.
        s.observe(40.0, t0 + chrono::Duration::days(7));
        assert!(
            (s.seconds_per_pull - 30.0).abs() < 1e-9,
            "{}",
            s.seconds_per_pull
        );
        assert!((s.weight - 1.5).abs() < 1e-9);
        for _ in 0..50 {
            s.observe(10.0, t0 + chrono::Duration::days(7));
        }
        assert_eq!(s.weight, MAX_WEIGHT);
        assert_eq!(s.samples, 52);
        // A node that became slow is learned again within a few pulls.
        for _ in 0..6 {
            s.observe(100.0, t0 + chrono::Duration::days(7));
        }
        assert!(s.seconds_per_pull > 50.0, "{}", s.seconds_per_pull);
    }

    #[test]
    fn expected_time_is_per_pull_times_the_images_left_and_ranks_follow() {
        // b pulls 3 images at 2 s (6 s), a 1 image at 5 s, c has no history (the
        // upper middle of 5 and 6), d has nothing to pull and goes last.
        let mut nodes: Vec<NodePull> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| NodePull::new((*n).to_owned(), vec![*n == "d"; 3]))
            .collect();
        nodes[0] = NodePull::new("a".into(), vec![true, true, false]);
        let speeds = |n: &str| match n {
            "a" => Some(5.0),
            "b" | "d" => Some(2.0),
            _ => None,
        };
        let ranked = rank_longest_first(nodes, speeds);
        let order: Vec<(&str, u32)> = ranked.iter().map(|n| (n.node.as_str(), n.rank)).collect();
        assert_eq!(order, [("b", 0), ("c", 1), ("a", 2), ("d", 3)]);
    }

    #[test]
    fn makespan_is_list_scheduling_over_the_slots() {
        // Two slots, one busy for 3 s more; waiting 4, 2, 2.
        assert_eq!(makespan(&[3.0], &[4.0, 2.0, 2.0], 2), 6.0);
        // LPT over the same work ends sooner than shortest-first.
        let lpt = makespan(&[], &[10.0, 1.0, 1.0, 1.0, 1.0], 2);
        let spt = makespan(&[], &[1.0, 1.0, 1.0, 1.0, 10.0], 2);
        assert_eq!((lpt, spt), (10.0, 12.0));
        assert_eq!(makespan(&[], &[], 5), 0.0);
    }

    #[test]
    fn serial_pulls_divide_an_attempt_per_image() {
        assert_eq!(seconds_per_pull(12.0, 3), 4.0);
        assert_eq!(seconds_per_pull(5.0, 0), 5.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn a_node_gone_longer_than_the_retention_expires_and_one_back_is_kept() {
        let t0 = at("2024-01-01T00:00:00Z");
        let day = chrono::Duration::days(1);
        let keep = Duration::from_secs(30 * 24 * 3600);
        let mut s = NodeSpeed::first("n".into(), 3.0, t0);
        assert_eq!(s.seen(true, t0, keep), Seen::Unchanged);
        assert_eq!(s.seen(false, t0 + day, keep), Seen::Changed);
        assert_eq!(s.gone_since, Some(t0 + day));
        assert_eq!(
            s.seen(false, t0 + day * 31, keep),
            Seen::Unchanged,
            "30 days gone"
        );
        // Back before the end: the clock starts again when it leaves next.
        assert_eq!(s.seen(true, t0 + day * 31, keep), Seen::Changed);
        assert_eq!(s.gone_since, None);
        assert_eq!(s.seen(false, t0 + day * 40, keep), Seen::Changed);
        assert_eq!(s.seen(false, t0 + day * 70, keep), Seen::Unchanged);
        assert_eq!(s.seen(false, t0 + day * 71, keep), Seen::Expired);
        // A measured pull means the node is there.
        s.observe(3.0, t0 + day * 71);
        assert_eq!(s.gone_since, None);
    }
}
