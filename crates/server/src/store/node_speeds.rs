//! Learned per-node pull speeds: the `NodeSpeedStore` trait.
//!
//! One estimate per node name (see `domain::node_speed`), kept across tasks
//! and restarts. Only the engine of the Lease holder writes them; every
//! replica reads them for `GET /api/v1/nodes/stats`.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::node_speed::NodeSpeed;

/// Where node speed estimates live. Every method is one atomic step.
#[async_trait]
pub trait NodeSpeedStore: Send + Sync + 'static {
    /// Inserts or replaces the estimates of these nodes, all in one step.
    async fn put_node_speeds(&self, speeds: &[NodeSpeed]) -> StoreResult<()>;

    /// Deletes the estimates of these nodes (missing ones are no error), all in one step.
    async fn delete_node_speeds(&self, nodes: &[String]) -> StoreResult<()>;

    /// Every stored estimate, in no particular order (the engine loads them when it starts).
    async fn node_speeds(&self) -> StoreResult<Vec<NodeSpeed>>;

    /// The `limit` slowest nodes (most seconds per pull first, then by name)
    /// and how many nodes have an estimate.
    async fn slowest_nodes(&self, limit: u32) -> StoreResult<(Vec<NodeSpeed>, u64)>;
}

/// Slowest first: seconds per pull descending, then node name ascending.
pub(crate) fn slowest_first(a: &NodeSpeed, b: &NodeSpeed) -> std::cmp::Ordering {
    b.seconds_per_pull
        .total_cmp(&a.seconds_per_pull)
        .then_with(|| a.node.cmp(&b.node))
}
