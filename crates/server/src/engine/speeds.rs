//! Learning node speeds: the seconds per pull measured on each node fold
//! into its decayed estimate (kept in memory, written to the store in
//! batches at the view-write cadence); tasks start with what is known.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::Engine;
use crate::cluster::NodeInfo;
use crate::domain::node_speed::{NodeSpeed, Seen};

impl Engine {
    /// Loads the learned speeds (once; retried at the next store check if it fails).
    pub(super) async fn load_speeds(&mut self) {
        match self.node_speeds.node_speeds().await {
            Ok(speeds) => {
                for speed in speeds {
                    self.speeds.entry(speed.node.clone()).or_insert(speed);
                }
                self.speeds_loaded = true;
            }
            Err(e) => tracing::warn!(error = %e, "could not load node speeds; will retry"),
        }
    }

    /// Folds measured `(node, seconds per pull)` samples into the estimates.
    pub(super) fn learn(&mut self, samples: Vec<(String, f64)>) {
        let now = self.clock.now();
        for (node, seconds) in samples {
            self.metrics.node_pull_seconds.observe(seconds);
            match self.speeds.get_mut(&node) {
                Some(speed) => speed.observe(seconds, now),
                None => {
                    self.speeds
                        .insert(node.clone(), NodeSpeed::first(node.clone(), seconds, now));
                }
            }
            self.speeds_unwritten.push(node);
        }
    }

    /// Notes which learned nodes are in the cluster (`nodes`, the cache): a
    /// node that left is marked with the time, one back is unmarked, and one
    /// gone longer than `--retention` is forgotten (deleted at the next write).
    pub(super) fn forget_gone_nodes(
        &mut self,
        nodes: &HashMap<String, NodeInfo>,
        now: DateTime<Utc>,
    ) {
        if !self.speeds_loaded {
            return;
        }
        let retention = self.config.node_retention;
        let mut expired = Vec::new();
        for (name, speed) in &mut self.speeds {
            match speed.seen(nodes.contains_key(name), now, retention) {
                Seen::Unchanged => {}
                Seen::Changed => self.speeds_unwritten.push(name.clone()),
                Seen::Expired => expired.push(name.clone()),
            }
        }
        if !expired.is_empty() {
            tracing::info!(
                nodes = expired.len(),
                "learned speeds of nodes gone longer than the retention forgotten"
            );
        }
        for name in &expired {
            self.speeds.remove(name);
        }
        self.speeds_forgotten.extend(expired);
    }

    /// Writes the estimates that changed since the last write and deletes the
    /// forgotten ones; both kept for the next try if the store fails.
    pub(super) async fn write_speeds(&mut self) {
        if !self.speeds_forgotten.is_empty() {
            let forgotten = std::mem::take(&mut self.speeds_forgotten);
            if let Err(e) = self.node_speeds.delete_node_speeds(&forgotten).await {
                tracing::warn!(error = %e, nodes = forgotten.len(), "could not delete forgotten node speeds; will retry");
                self.speeds_forgotten = forgotten;
            }
        }
        if self.speeds_unwritten.is_empty() {
            return;
        }
        let mut nodes = std::mem::take(&mut self.speeds_unwritten);
        nodes.sort();
        nodes.dedup();
        let changed: Vec<NodeSpeed> = nodes
            .iter()
            .filter_map(|n| self.speeds.get(n).cloned())
            .collect();
        if let Err(e) = self.node_speeds.put_node_speeds(&changed).await {
            tracing::warn!(error = %e, nodes = changed.len(), "could not store node speeds; will retry");
            self.speeds_unwritten = nodes;
        }
    }
}
