//! `NodeSpeedStore` on Redis: a hash of node → JSON estimate and a sorted
//! set of node names scored by minus their seconds per pull, so a forward
//! range reads the slowest first and ties by name. Both change in one
//! `MULTI`, so a put is atomic.

use async_trait::async_trait;
use redis::AsyncCommands;

use super::{corrupt, encode, RedisStore};
use crate::domain::node_speed::NodeSpeed;
use crate::store::node_speeds::NodeSpeedStore;
use crate::store::StoreResult;

fn decode_speed(node: &str, json: &str) -> StoreResult<NodeSpeed> {
    serde_json::from_str(json).map_err(|e| corrupt(&format!("node speed {node}"), e))
}

#[async_trait]
impl NodeSpeedStore for RedisStore {
    async fn put_node_speeds(&self, speeds: &[NodeSpeed]) -> StoreResult<()> {
        if speeds.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for speed in speeds {
            pipe.hset(
                self.keys.node_speeds(),
                &speed.node,
                encode(&speed.node, speed)?,
            )
            .ignore()
            .zadd(
                self.keys.node_speed_order(),
                &speed.node,
                -speed.seconds_per_pull,
            )
            .ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))
    }

    async fn delete_node_speeds(&self, nodes: &[String]) -> StoreResult<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        redis::pipe()
            .atomic()
            .hdel(self.keys.node_speeds(), nodes)
            .ignore()
            .zrem(self.keys.node_speed_order(), nodes)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))
    }

    async fn node_speeds(&self) -> StoreResult<Vec<NodeSpeed>> {
        let all: Vec<(String, String)> = self
            .conn()
            .hgetall(self.keys.node_speeds())
            .await
            .map_err(|e| self.failed(e))?;
        all.iter()
            .map(|(node, json)| decode_speed(node, json))
            .collect()
    }

    async fn slowest_nodes(&self, limit: u32) -> StoreResult<(Vec<NodeSpeed>, u64)> {
        let order = self.keys.node_speed_order();
        if limit == 0 {
            let total: u64 = self
                .conn()
                .zcard(&order)
                .await
                .map_err(|e| self.failed(e))?;
            return Ok((Vec::new(), total));
        }
        let (names, total): (Vec<String>, u64) = redis::pipe()
            .atomic()
            .zrange(&order, 0, limit as isize - 1)
            .zcard(&order)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        if names.is_empty() {
            return Ok((Vec::new(), total));
        }
        let jsons: Vec<Option<String>> = self
            .conn()
            .hmget(self.keys.node_speeds(), &names)
            .await
            .map_err(|e| self.failed(e))?;
        let page = names
            .iter()
            .zip(jsons)
            .filter_map(|(node, json)| json.map(|json| decode_speed(node, &json)))
            .collect::<StoreResult<_>>()?;
        Ok((page, total))
    }
}
