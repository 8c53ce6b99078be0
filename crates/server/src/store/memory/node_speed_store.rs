//! `NodeSpeedStore` in process memory.

use async_trait::async_trait;

use super::MemoryStore;
use crate::domain::node_speed::NodeSpeed;
use crate::store::node_speeds::{slowest_first, NodeSpeedStore};
use crate::store::StoreResult;

#[async_trait]
impl NodeSpeedStore for MemoryStore {
    async fn put_node_speeds(&self, speeds: &[NodeSpeed]) -> StoreResult<()> {
        let mut inner = self.lock();
        for speed in speeds {
            inner.node_speeds.insert(speed.node.clone(), speed.clone());
        }
        Ok(())
    }

    async fn delete_node_speeds(&self, nodes: &[String]) -> StoreResult<()> {
        let mut inner = self.lock();
        for node in nodes {
            inner.node_speeds.remove(node);
        }
        Ok(())
    }

    async fn node_speeds(&self) -> StoreResult<Vec<NodeSpeed>> {
        Ok(self.lock().node_speeds.values().cloned().collect())
    }

    async fn slowest_nodes(&self, limit: u32) -> StoreResult<(Vec<NodeSpeed>, u64)> {
        let mut all: Vec<NodeSpeed> = self.lock().node_speeds.values().cloned().collect();
        all.sort_by(slowest_first);
        let total = all.len() as u64;
        all.truncate(limit as usize);
        Ok((all, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store::node_speed_contract::node_speed_contract_tests!(MemoryStore::new());
}
