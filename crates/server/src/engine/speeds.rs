//! Learning node speeds: the seconds per pull measured on each node fold
//! into its decayed estimate (kept in memory, written to the store in
//! batches at the view-write cadence); tasks start with what is known.

use super::Engine;
use crate::domain::node_speed::NodeSpeed;

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

    /// Writes the estimates that changed since the last write; kept for the
    /// next try if the store fails.
    pub(super) async fn write_speeds(&mut self) {
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
