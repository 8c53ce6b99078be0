//! `NodeSpeedStore` on the SQLite database: `node_speeds` holds one JSON
//! row per node, with its seconds per pull as a column for the slowest-first index.

use async_trait::async_trait;
use rusqlite::{params, Connection, TransactionBehavior};

use super::{backend, query_json, SqliteStore};
use crate::domain::node_speed::NodeSpeed;
use crate::store::node_speeds::NodeSpeedStore;
use crate::store::{StoreError, StoreResult};

/// Decodes the `(node, body)` rows of `sql`.
fn query_speeds(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<NodeSpeed>> {
    query_json(conn, sql, params, "node speeds", |node| {
        format!("node speed {node}")
    })
}

#[async_trait]
impl NodeSpeedStore for SqliteStore {
    async fn put_node_speeds(&self, speeds: &[NodeSpeed]) -> StoreResult<()> {
        let rows = speeds
            .iter()
            .map(|s| {
                serde_json::to_string(s)
                    .map(|body| (s.node.clone(), s.seconds_per_pull, body))
                    .map_err(|e| StoreError::Backend(format!("encode node speed {}: {e}", s.node)))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("begin node speeds"))?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO node_speeds (node, seconds_per_pull, body) VALUES (?1, ?2, ?3)
                         ON CONFLICT (node) DO UPDATE
                         SET seconds_per_pull = excluded.seconds_per_pull, body = excluded.body",
                    )
                    .map_err(backend("put node speeds"))?;
                for (node, seconds, body) in &rows {
                    stmt.execute(params![node, seconds, body])
                        .map_err(backend(format!("put node speed {node}")))?;
                }
            }
            tx.commit().map_err(backend("commit node speeds"))
        })
        .await
    }

    async fn delete_node_speeds(&self, nodes: &[String]) -> StoreResult<()> {
        let nodes = nodes.to_vec();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("begin node speed delete"))?;
            {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM node_speeds WHERE node = ?1")
                    .map_err(backend("delete node speeds"))?;
                for node in &nodes {
                    stmt.execute([node])
                        .map_err(backend(format!("delete node speed {node}")))?;
                }
            }
            tx.commit().map_err(backend("commit node speed delete"))
        })
        .await
    }

    async fn node_speeds(&self) -> StoreResult<Vec<NodeSpeed>> {
        self.run(|conn| query_speeds(conn, "SELECT node, body FROM node_speeds", []))
            .await
    }

    async fn slowest_nodes(&self, limit: u32) -> StoreResult<(Vec<NodeSpeed>, u64)> {
        self.run(move |conn| {
            let page = query_speeds(
                conn,
                "SELECT node, body FROM node_speeds
                 ORDER BY seconds_per_pull DESC, node LIMIT ?1",
                [limit],
            )?;
            let total: i64 = conn
                .query_row("SELECT COUNT(*) FROM node_speeds", [], |row| row.get(0))
                .map_err(backend("count node speeds"))?;
            Ok((page, total as u64))
        })
        .await
    }
}
