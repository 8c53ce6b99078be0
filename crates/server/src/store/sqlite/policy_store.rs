//! `PolicyStore` on the SQLite database: `keep_warm_policies` holds the
//! view as JSON; `keep_warm_runs` one JSON row per kept run, numbered per
//! policy and deleted with it.

use async_trait::async_trait;
use prewarm_api::{KeepWarmPolicy, PolicyRun};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{backend, query_json, time_key, SqliteStore};
use crate::store::policies::{stored_form, PolicyStore, KEPT_RUNS};
use crate::store::{StoreError, StoreResult};

fn corrupt(id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    }
}

fn encode<T: serde::Serialize>(id: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encode {id}: {e}")))
}

/// Decodes `(id, body)` rows of `sql`.
fn query_policies(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<KeepWarmPolicy>> {
    query_json(conn, sql, params, "policies", str::to_owned)
}

#[async_trait]
impl PolicyStore for SqliteStore {
    async fn insert_policy(&self, policy: &KeepWarmPolicy) -> StoreResult<()> {
        let id = policy.id.clone();
        let body = encode(&id, &stored_form(policy))?;
        let created_at = time_key(policy.created_at);
        self.run(move |conn| {
            let changed = conn
                .prepare_cached(
                    "INSERT INTO keep_warm_policies (id, created_at, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO NOTHING",
                )
                .and_then(|mut stmt| stmt.execute(params![id, created_at, body]))
                .map_err(backend(format!("insert policy {id}")))?;
            if changed == 0 {
                return Err(StoreError::Duplicate(id));
            }
            Ok(())
        })
        .await
    }

    async fn get_policy(&self, id: &str) -> StoreResult<Option<KeepWarmPolicy>> {
        let id = id.to_owned();
        self.run(move |conn| {
            Ok(query_policies(
                conn,
                "SELECT id, body FROM keep_warm_policies WHERE id = ?1",
                [&id],
            )?
            .pop())
        })
        .await
    }

    async fn list_policies(
        &self,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<KeepWarmPolicy>, u64)> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let tx = conn.transaction().map_err(backend("list policies"))?;
            let total: i64 = tx
                .query_row("SELECT COUNT(*) FROM keep_warm_policies", [], |r| r.get(0))
                .map_err(backend("count policies"))?;
            let page = query_policies(
                &tx,
                "SELECT id, body FROM keep_warm_policies
                 ORDER BY created_at DESC, id DESC LIMIT ?1 OFFSET ?2",
                params![i64::from(limit), offset],
            )?;
            tx.commit().map_err(backend("list policies"))?;
            Ok((page, total as u64))
        })
        .await
    }

    async fn all_policies(&self) -> StoreResult<Vec<KeepWarmPolicy>> {
        self.run(|conn| query_policies(conn, "SELECT id, body FROM keep_warm_policies", []))
            .await
    }

    async fn update_policy(&self, policy: &KeepWarmPolicy) -> StoreResult<bool> {
        let id = policy.id.clone();
        let body = encode(&id, &stored_form(policy))?;
        self.run(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE keep_warm_policies SET body = ?1 WHERE id = ?2",
                    params![body, id],
                )
                .map_err(backend(format!("update policy {id}")))?;
            Ok(changed > 0)
        })
        .await
    }

    async fn delete_policy(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.run(move |conn| {
            // Runs go with it (ON DELETE CASCADE).
            let changed = conn
                .execute("DELETE FROM keep_warm_policies WHERE id = ?1", [&id])
                .map_err(backend(format!("delete policy {id}")))?;
            Ok(changed > 0)
        })
        .await
    }

    async fn record_policy_run(&self, policy_id: &str, run: &PolicyRun) -> StoreResult<bool> {
        let id = policy_id.to_owned();
        let body = encode(&id, run)?;
        self.run(move |conn| {
            let context = format!("record run of policy {id}");
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend(&context))?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM keep_warm_policies WHERE id = ?1",
                    [&id],
                    |_| Ok(()),
                )
                .optional()
                .map_err(backend(&context))?
                .is_some();
            if !exists {
                return Ok(false);
            }
            let seq: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM keep_warm_runs WHERE policy_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(backend(&context))?;
            tx.execute(
                "INSERT INTO keep_warm_runs (policy_id, seq, body) VALUES (?1, ?2, ?3)",
                params![id, seq, body],
            )
            .map_err(backend(&context))?;
            tx.execute(
                "DELETE FROM keep_warm_runs WHERE policy_id = ?1 AND seq <= ?2",
                params![id, seq - KEPT_RUNS as i64],
            )
            .map_err(backend(&context))?;
            tx.commit().map_err(backend(&context))?;
            Ok(true)
        })
        .await
    }

    async fn policy_runs(&self, policy_id: &str) -> StoreResult<Vec<PolicyRun>> {
        let id = policy_id.to_owned();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT body FROM keep_warm_runs WHERE policy_id = ?1 ORDER BY seq DESC",
                )
                .map_err(backend("list policy runs"))?;
            let rows = stmt
                .query_map([&id], |row| row.get::<_, String>(0))
                .map_err(backend("list policy runs"))?;
            let mut out = Vec::new();
            for row in rows {
                let body = row.map_err(backend("list policy runs"))?;
                out.push(
                    serde_json::from_str(&body).map_err(|e| corrupt(&id, format!("run: {e}")))?,
                );
            }
            Ok(out)
        })
        .await
    }
}
