//! SQLite `TaskStore`: one connection behind a mutex, every call run on the
//! blocking thread pool so the tokio runtime is never blocked on disk I/O.
//!
//! Layout: `tasks` holds the task view as JSON (`body`) plus the columns that
//! queries filter and sort on (`status`, `priority`, `created_at`,
//! `finished_at`);
//! `task_nodes` holds one opaque JSON record per (task, node). `created_at` and
//! `finished_at` are RFC 3339 UTC with nine fraction digits, so text order is
//! time order.
//! The schema version lives in `PRAGMA user_version`; pending migrations run
//! at open.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use prewarm_api::{Task, TaskStatus};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use super::{CancelOutcome, NodeRecord, Retention, StoreError, StoreResult, TaskStore};

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: tasks and their node records.
    "CREATE TABLE tasks (
         id         TEXT PRIMARY KEY NOT NULL,
         status     TEXT NOT NULL,
         priority   INTEGER NOT NULL,
         created_at TEXT NOT NULL,
         body       TEXT NOT NULL
     );
     CREATE INDEX tasks_status_created ON tasks (status, created_at, id);
     CREATE INDEX tasks_created ON tasks (created_at, id);
     CREATE TABLE task_nodes (
         task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
         node    TEXT NOT NULL,
         body    TEXT NOT NULL,
         PRIMARY KEY (task_id, node)
     ) WITHOUT ROWID;",
    // 2: scheduled tasks (view + the scheduler's fire cursor and queued run) and their executions.
    "CREATE TABLE scheduled_tasks (
         id                TEXT PRIMARY KEY NOT NULL,
         created_at        TEXT NOT NULL,
         fire_cursor       TEXT NOT NULL,
         queued_fire       TEXT,
         last_execution_id INTEGER NOT NULL DEFAULT 0,
         body              TEXT NOT NULL
     );
     CREATE INDEX scheduled_tasks_created ON scheduled_tasks (created_at, id);
     CREATE TABLE scheduled_executions (
         scheduled_task_id TEXT NOT NULL REFERENCES scheduled_tasks (id) ON DELETE CASCADE,
         id                INTEGER NOT NULL,
         status            TEXT NOT NULL,
         body              TEXT NOT NULL,
         PRIMARY KEY (scheduled_task_id, id)
     ) WITHOUT ROWID;
     CREATE INDEX scheduled_executions_status ON scheduled_executions (status);",
    // 3: finds owed webhooks without reading every task.
    "CREATE INDEX tasks_webhook_pending ON tasks (created_at, id)
         WHERE json_extract(body, '$.webhookStatus') = 'pending';",
    // 4: when each task ended, for the retention trim. Rows written before
    // keep their `finishedAt` to the millisecond.
    "ALTER TABLE tasks ADD COLUMN finished_at TEXT;
     UPDATE tasks
        SET finished_at = strftime('%Y-%m-%dT%H:%M:%f', json_extract(body, '$.finishedAt')) || '000000Z'
      WHERE json_extract(body, '$.finishedAt') IS NOT NULL;
     CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;",
    // 5: keep-warm policies and their kept runs.
    "CREATE TABLE keep_warm_policies (
         id         TEXT PRIMARY KEY NOT NULL,
         created_at TEXT NOT NULL,
         body       TEXT NOT NULL
     );
     CREATE INDEX keep_warm_policies_created ON keep_warm_policies (created_at, id);
     CREATE TABLE keep_warm_runs (
         policy_id TEXT NOT NULL REFERENCES keep_warm_policies (id) ON DELETE CASCADE,
         seq       INTEGER NOT NULL,
         body      TEXT NOT NULL,
         PRIMARY KEY (policy_id, seq)
     ) WITHOUT ROWID;",
    // 6: when each execution ended, for the retention trim (its finishedAt,
    // or its fire time when skipped); NULL while it runs.
    "ALTER TABLE scheduled_executions ADD COLUMN ended_at TEXT;
     UPDATE scheduled_executions
        SET ended_at = strftime('%Y-%m-%dT%H:%M:%f', coalesce(
                json_extract(body, '$.finishedAt'), json_extract(body, '$.triggeredAt')))
            || '000000Z'
      WHERE status <> 'running';
     CREATE INDEX scheduled_executions_ended ON scheduled_executions (ended_at)
         WHERE ended_at IS NOT NULL;",
    // 7: learned pull speed per node, indexed slowest first.
    "CREATE TABLE node_speeds (
         node             TEXT PRIMARY KEY NOT NULL,
         seconds_per_pull REAL NOT NULL,
         body             TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX node_speeds_slowest ON node_speeds (seconds_per_pull DESC, node);",
];

/// A `TaskStore` in an SQLite database file.
///
/// Cloning is cheap and shares the connection.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, sets WAL mode,
    /// `synchronous=NORMAL`, a busy timeout and foreign keys, and applies
    /// pending schema migrations.
    ///
    /// Fails if the file was written by a newer schema version.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let conn =
            Connection::open(path).map_err(backend(format!("open database {}", path.display())))?;
        SqliteStore::setup(conn, true)
            .map_err(|e| StoreError::Backend(format!("database {}: {e}", path.display())))
    }

    /// A private in-memory database (for tests); gone when the store is dropped.
    pub fn open_in_memory() -> StoreResult<SqliteStore> {
        let conn = Connection::open_in_memory().map_err(backend("open in-memory database"))?;
        SqliteStore::setup(conn, false)
    }

    /// Connection settings and migrations; `wal` for file databases.
    fn setup(mut conn: Connection, wal: bool) -> StoreResult<SqliteStore> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(backend("set busy_timeout"))?;
        if wal {
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
                .map_err(backend("set journal_mode=WAL"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Backend(format!(
                    "WAL mode refused (journal_mode is {mode})"
                )));
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend("set synchronous=NORMAL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend("set foreign_keys=ON"))?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic inside `f` drops its open transaction, which rolls back,
            // so a poisoned lock still guards a consistent connection.
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store worker failed: {e}")))?
    }
}

/// Brings the schema up to `MIGRATIONS.len()`, one transaction per step.
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(backend("read schema version"))?;
    let latest = MIGRATIONS.len() as i64;
    if current > latest {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this build supports ({latest})"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(backend(format!("begin migration {version}")))?;
        tx.execute_batch(sql)
            .map_err(backend(format!("apply migration {version}")))?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(backend(format!("record schema version {version}")))?;
        tx.commit()
            .map_err(backend(format!("commit migration {version}")))?;
    }
    Ok(())
}

/// Maps a rusqlite error to `StoreError::Backend`, prefixed with what was being done.
fn backend(context: impl std::fmt::Display) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Backend(format!("{context}: {e}"))
}

/// Decodes the `(key, JSON body)` rows of `sql`; `what` names them in
/// errors, `corrupt_id(key)` names a row whose body does not decode.
fn query_json<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    what: &str,
    corrupt_id: impl Fn(&str) -> String,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(backend(format!("list {what}")))?;
    let rows = stmt
        .query_map(params, |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(backend(format!("list {what}")))?;
    let mut out = Vec::new();
    for row in rows {
        let (key, body) = row.map_err(backend(format!("list {what}")))?;
        out.push(
            serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                id: corrupt_id(&key),
                message: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

/// `created_at` and `finished_at` column text: fixed width, so text order is time order.
fn time_key(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn encode_task(task: &Task) -> StoreResult<String> {
    serde_json::to_string(task)
        .map_err(|e| StoreError::Backend(format!("encode task {}: {e}", task.task_id)))
}

fn decode_task(id: &str, body: &str) -> StoreResult<Task> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    })
}

/// `?, ?, ...` with `n` placeholders.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Reads `(id, body)` rows of a prepared query and decodes the tasks.
fn query_tasks(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    context: &str,
) -> StoreResult<Vec<Task>> {
    let rows = stmt
        .query_map(params, |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(backend(context))?;
    let mut tasks = Vec::new();
    for row in rows {
        let (id, body) = row.map_err(backend(context))?;
        tasks.push(decode_task(&id, &body)?);
    }
    Ok(tasks)
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn insert(&self, task: &Task) -> StoreResult<()> {
        let id = task.task_id.clone();
        let status = task.status.as_str();
        let priority = task.priority;
        let created_at = time_key(task.created_at);
        let finished_at = task.finished_at.map(time_key);
        let body = encode_task(task)?;
        self.run(move |conn| {
            let changed = conn
                .prepare_cached(
                    "INSERT INTO tasks (id, status, priority, created_at, finished_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO NOTHING",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![id, status, priority, created_at, finished_at, body])
                })
                .map_err(backend(format!("insert task {id}")))?;
            if changed == 0 {
                return Err(StoreError::Duplicate(id));
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Task>> {
        let id = id.to_owned();
        self.run(move |conn| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM tasks WHERE id = ?1")
                .and_then(|mut stmt| stmt.query_row([&id], |row| row.get(0)).optional())
                .map_err(backend(format!("get task {id}")))?;
            body.map(|body| decode_task(&id, &body)).transpose()
        })
        .await
    }

    async fn list(
        &self,
        status: Option<TaskStatus>,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<Task>, u64)> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let limit = i64::from(limit);
        self.run(move |conn| {
            // One read transaction: the page and the total see the same snapshot.
            let tx = conn.transaction().map_err(backend("list tasks: begin"))?;
            let (tasks, total) = match status {
                Some(status) => {
                    let status = status.as_str();
                    let total: i64 = tx
                        .prepare_cached("SELECT COUNT(*) FROM tasks WHERE status = ?1")
                        .and_then(|mut stmt| stmt.query_row([status], |row| row.get(0)))
                        .map_err(backend("count tasks"))?;
                    let mut stmt = tx
                        .prepare_cached(
                            "SELECT id, body FROM tasks WHERE status = ?1
                             ORDER BY created_at DESC, id DESC LIMIT ?2 OFFSET ?3",
                        )
                        .map_err(backend("list tasks"))?;
                    let tasks =
                        query_tasks(&mut stmt, params![status, limit, offset], "list tasks")?;
                    (tasks, total)
                }
                None => {
                    let total: i64 = tx
                        .prepare_cached("SELECT COUNT(*) FROM tasks")
                        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
                        .map_err(backend("count tasks"))?;
                    let mut stmt = tx
                        .prepare_cached(
                            "SELECT id, body FROM tasks
                             ORDER BY created_at DESC, id DESC LIMIT ?1 OFFSET ?2",
                        )
                        .map_err(backend("list tasks"))?;
                    let tasks = query_tasks(&mut stmt, params![limit, offset], "list tasks")?;
                    (tasks, total)
                }
            };
            tx.commit().map_err(backend("list tasks: end"))?;
            Ok((tasks, total as u64))
        })
        .await
    }

    async fn list_with_status(&self, statuses: &[TaskStatus]) -> StoreResult<Vec<Task>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let statuses: Vec<&'static str> = statuses.iter().map(|s| s.as_str()).collect();
        self.run(move |conn| {
            let sql = format!(
                "SELECT id, body FROM tasks WHERE status IN ({})",
                placeholders(statuses.len())
            );
            let mut stmt = conn
                .prepare_cached(&sql)
                .map_err(backend("list tasks by status"))?;
            query_tasks(
                &mut stmt,
                params_from_iter(statuses.iter()),
                "list tasks by status",
            )
        })
        .await
    }

    async fn update_if(&self, task: &Task, expected: &[TaskStatus]) -> StoreResult<bool> {
        if expected.is_empty() {
            return Ok(false);
        }
        let id = task.task_id.clone();
        let status = task.status.as_str();
        let priority = task.priority;
        let created_at = time_key(task.created_at);
        let finished_at = task.finished_at.map(time_key);
        let body = encode_task(task)?;
        let expected: Vec<&'static str> = expected.iter().map(|s| s.as_str()).collect();
        self.run(move |conn| {
            let sql = format!(
                "UPDATE tasks SET status = ?, priority = ?, created_at = ?, finished_at = ?, body = ?
                 WHERE id = ? AND status IN ({})",
                placeholders(expected.len())
            );
            let mut values: Vec<&dyn rusqlite::ToSql> =
                vec![&status, &priority, &created_at, &finished_at, &body, &id];
            values.extend(expected.iter().map(|s| s as &dyn rusqlite::ToSql));
            let changed = conn
                .prepare_cached(&sql)
                .and_then(|mut stmt| stmt.execute(values.as_slice()))
                .map_err(backend(format!("update task {id}")))?;
            Ok(changed > 0)
        })
        .await
    }

    async fn cancel(&self, id: &str, at: DateTime<Utc>) -> StoreResult<CancelOutcome> {
        let id = id.to_owned();
        self.run(move |conn| {
            let context = format!("cancel task {id}");
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend(&context))?;
            let body: Option<String> = tx
                .prepare_cached("SELECT body FROM tasks WHERE id = ?1")
                .and_then(|mut stmt| stmt.query_row([&id], |row| row.get(0)).optional())
                .map_err(backend(&context))?;
            let Some(body) = body else {
                return Ok(CancelOutcome::NotFound);
            };
            let mut task = decode_task(&id, &body)?;
            if let Err(ended) = crate::domain::task::cancel(&mut task, at) {
                return Ok(CancelOutcome::AlreadyEnded(ended));
            }
            let body = encode_task(&task)?;
            tx.prepare_cached(
                "UPDATE tasks SET status = ?1, finished_at = ?2, body = ?3 WHERE id = ?4",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![task.status.as_str(), time_key(at), body, id])
            })
            .map_err(backend(&context))?;
            tx.commit().map_err(backend(&context))?;
            Ok(CancelOutcome::Cancelled(task))
        })
        .await
    }

    async fn put_nodes(&self, task_id: &str, records: &[NodeRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let task_id = task_id.to_owned();
        let records: Vec<(String, String)> = records
            .iter()
            .map(|r| (r.node.clone(), r.body.to_string()))
            .collect();
        self.run(move |conn| {
            let context = format!("put_nodes: task {task_id}");
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend(&context))?;
            let exists = tx
                .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")
                .and_then(|mut stmt| stmt.exists([&task_id]))
                .map_err(backend(&context))?;
            if !exists {
                return Err(StoreError::Backend(format!("{context} does not exist")));
            }
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO task_nodes (task_id, node, body) VALUES (?1, ?2, ?3)
                         ON CONFLICT (task_id, node) DO UPDATE SET body = excluded.body",
                    )
                    .map_err(backend(&context))?;
                for (node, body) in &records {
                    stmt.execute(params![task_id, node, body])
                        .map_err(backend(format!("{context}, node {node}")))?;
                }
            }
            tx.commit().map_err(backend(&context))
        })
        .await
    }

    async fn nodes(&self, task_id: &str) -> StoreResult<Vec<NodeRecord>> {
        let task_id = task_id.to_owned();
        self.run(move |conn| {
            let context = format!("nodes of task {task_id}");
            let mut stmt = conn
                .prepare_cached(
                    "SELECT node, body FROM task_nodes WHERE task_id = ?1 ORDER BY node",
                )
                .map_err(backend(&context))?;
            let rows = stmt
                .query_map([&task_id], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(backend(&context))?;
            let mut records = Vec::new();
            for row in rows {
                let (node, body) = row.map_err(backend(&context))?;
                let body = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                    id: task_id.clone(),
                    message: format!("node record {node}: {e}"),
                })?;
                records.push(NodeRecord { node, body });
            }
            Ok(records)
        })
        .await
    }

    async fn trim(&self, retention: &Retention, batch: u32) -> StoreResult<u32> {
        let before = time_key(retention.ended_before);
        let keep = i64::try_from(retention.max_tasks).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let context = "trim history";
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend(context))?;
            // Node records go with their task (ON DELETE CASCADE).
            let deleted = tx
                .prepare_cached(
                    "DELETE FROM tasks WHERE id IN (
                         SELECT id FROM tasks
                         WHERE status IN ('completed', 'failed', 'cancelled')
                           AND (finished_at < ?1 OR id IN (
                                SELECT id FROM tasks ORDER BY created_at DESC, id DESC
                                LIMIT -1 OFFSET ?2))
                         ORDER BY created_at, id
                         LIMIT ?3)",
                )
                .and_then(|mut stmt| stmt.execute(params![before, keep, batch]))
                .map_err(backend(context))?;
            tx.commit().map_err(backend(context))?;
            Ok(deleted as u32)
        })
        .await
    }

    async fn webhook_pending(&self, limit: u32) -> StoreResult<Vec<Task>> {
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, body FROM tasks
                     WHERE json_extract(body, '$.webhookStatus') = 'pending'
                       AND status IN ('completed', 'failed', 'cancelled')
                     ORDER BY created_at, id LIMIT ?1",
                )
                .map_err(backend("list owed webhooks"))?;
            query_tasks(&mut stmt, params![limit], "list owed webhooks")
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.run(|conn| {
            conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| {
                row.get::<_, i64>(0)
            })
            .map_err(backend("ping"))?;
            Ok(())
        })
        .await
    }
}

mod node_speed_store;
mod policy_store;
mod schedule_store;

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use chrono::TimeZone;
    use prewarm_api::TaskStatus;
    use tempfile::TempDir;

    use super::{SqliteStore, MIGRATIONS};
    use crate::store::contract::{sample_task, sorted_nodes};
    use crate::store::{CancelOutcome, NodeRecord, StoreError, TaskStore};

    /// A store on a real file in a fresh temporary directory (removed with the guard).
    fn temp_store() -> (SqliteStore, TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("prewarm.db")).expect("open store");
        (store, dir)
    }

    crate::store::contract::store_contract_tests!(guarded: temp_store());
    crate::store::schedule_contract::schedule_contract_tests!(guarded: temp_store());
    crate::store::policy_contract::policy_contract_tests!(guarded: temp_store());
    crate::store::node_speed_contract::node_speed_contract_tests!(guarded: temp_store());

    mod in_memory {
        use super::SqliteStore;

        crate::store::contract::store_contract_tests!(
            SqliteStore::open_in_memory().expect("open in-memory store")
        );
        crate::store::schedule_contract::schedule_contract_tests!(
            SqliteStore::open_in_memory().expect("open in-memory store")
        );
    }

    fn at(secs: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc
            .timestamp_opt(1_760_000_000 + secs, 123_456_789)
            .unwrap()
    }

    #[tokio::test]
    async fn tasks_and_node_records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prewarm.db");
        let running = sample_task("task-20260101-aaaaaa", TaskStatus::Running, at(1));
        let pending = sample_task("task-20260101-bbbbbb", TaskStatus::Pending, at(2));
        let records = vec![
            NodeRecord {
                node: "node-a".into(),
                body: serde_json::json!({"phase": "done", "digests": ["sha256:1"]}),
            },
            NodeRecord {
                node: "node-b".into(),
                body: serde_json::json!({"phase": "retry", "attempt": 2}),
            },
        ];
        let cancelled = {
            let store = SqliteStore::open(&path).unwrap();
            store.insert(&running).await.unwrap();
            store.insert(&pending).await.unwrap();
            store.put_nodes(&running.task_id, &records).await.unwrap();
            match store.cancel(&pending.task_id, at(3)).await.unwrap() {
                CancelOutcome::Cancelled(task) => task,
                other => panic!("expected Cancelled, got {other:?}"),
            }
        };

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.get(&running.task_id).await.unwrap(),
            Some(running.clone())
        );
        assert_eq!(
            store.get(&pending.task_id).await.unwrap(),
            Some(cancelled.clone())
        );
        assert_eq!(
            sorted_nodes(store.nodes(&running.task_id).await.unwrap()),
            records
        );
        let (page, total) = store.list(None, 10, 0).await.unwrap();
        assert_eq!(total, 2);
        assert_eq!(page, vec![cancelled, running.clone()]);
        assert_eq!(
            store
                .list_with_status(&[TaskStatus::Running])
                .await
                .unwrap(),
            vec![running]
        );
    }

    #[tokio::test]
    async fn open_sets_wal_and_schema_version() {
        let (store, _dir) = temp_store();
        let conn = store.conn.lock().unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
    }

    /// A database file at `path` as schema version `version` left it.
    fn database_at(path: &std::path::Path, version: usize) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(path).unwrap();
        for sql in &MIGRATIONS[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version as i64)
            .unwrap();
        conn
    }

    /// A database written before tasks had a `finished_at` column: the
    /// migration fills it from the stored view, so retention counts from
    /// when those tasks ended.
    #[tokio::test]
    async fn migrated_tasks_are_trimmed_by_when_they_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prewarm.db");
        {
            let conn = database_at(&path, 3);
            for (id, ended) in [("task-20260101-oldend", 100), ("task-20260101-newend", 900)] {
                let mut task = sample_task(id, TaskStatus::Completed, at(0));
                task.finished_at = Some(at(ended));
                conn.execute(
                    "INSERT INTO tasks (id, status, priority, created_at, body)
                     VALUES (?1, 'completed', 0, ?2, ?3)",
                    rusqlite::params![
                        id,
                        super::time_key(at(0)),
                        serde_json::to_string(&task).unwrap()
                    ],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path).unwrap();
        let retention = crate::store::Retention {
            ended_before: at(500),
            max_tasks: 100,
        };
        assert_eq!(store.trim(&retention, 10).await.unwrap(), 1);
        assert!(store.get("task-20260101-oldend").await.unwrap().is_none());
        assert!(store.get("task-20260101-newend").await.unwrap().is_some());
    }

    /// A database written before executions had an `ended_at` column: the
    /// migration fills it (finishedAt, or the fire time of a skip), so old
    /// executions are trimmed by when they ended and running ones stay.
    #[tokio::test]
    async fn migrated_executions_are_trimmed_by_when_they_ended() {
        use crate::store::schedule_contract::{running, sample_schedule};
        use crate::store::ScheduleStore;
        use prewarm_api::ExecutionStatus;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prewarm.db");
        let schedule = sample_schedule("scheduled-task-20260101-aaaaaa", at(0));
        let id = &schedule.task.id;
        let ended = |n: u64, status, finished: Option<i64>, fired: i64| prewarm_api::Execution {
            id: n,
            status,
            finished_at: finished.map(at),
            ..running(id, "task-x", at(fired))
        };
        {
            let conn = database_at(&path, 5);
            conn.execute(
                "INSERT INTO scheduled_tasks (id, created_at, fire_cursor, last_execution_id, body)
                 VALUES (?1, ?2, ?2, 4, ?3)",
                rusqlite::params![
                    id,
                    super::time_key(at(0)),
                    serde_json::to_string(&schedule.task).unwrap()
                ],
            )
            .unwrap();
            for execution in [
                ended(1, ExecutionStatus::Success, Some(100), 10),
                ended(2, ExecutionStatus::Skipped, None, 200),
                ended(3, ExecutionStatus::Failed, Some(900), 50),
                ended(4, ExecutionStatus::Running, None, 10),
            ] {
                conn.execute(
                    "INSERT INTO scheduled_executions (scheduled_task_id, id, status, body)
                     VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![
                        id,
                        execution.id as i64,
                        execution.status.as_str(),
                        serde_json::to_string(&execution).unwrap()
                    ],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path).unwrap();
        let retention = crate::store::Retention {
            ended_before: at(500),
            max_tasks: 100,
        };
        assert_eq!(store.trim_executions(&retention, 10).await.unwrap(), 2);
        let (left, total) = store.list_executions(id, 10, 0).await.unwrap();
        assert_eq!(total, 2);
        assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 3]);
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prewarm.db");
        drop(SqliteStore::open(&path).unwrap());
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::Backend(m) if m.contains("newer")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn undecodable_rows_are_corrupt() {
        let store = SqliteStore::open_in_memory().unwrap();
        let task = sample_task("task-20260101-cccccc", TaskStatus::Running, at(1));
        store.insert(&task).await.unwrap();
        {
            let conn = store.conn.lock().unwrap();
            conn.execute("UPDATE tasks SET body = '{\"taskId\": 1}'", [])
                .unwrap();
            conn.execute(
                "INSERT INTO task_nodes (task_id, node, body) VALUES (?1, 'n1', 'not json')",
                [&task.task_id],
            )
            .unwrap();
        }
        for err in [
            store.get(&task.task_id).await.unwrap_err(),
            store.list(None, 10, 0).await.unwrap_err(),
            store.cancel(&task.task_id, at(2)).await.unwrap_err(),
            store.nodes(&task.task_id).await.unwrap_err(),
        ] {
            assert!(
                matches!(&err, StoreError::Corrupt { id, .. } if *id == task.task_id),
                "{err}"
            );
        }
    }

    /// 5,000 node records in transactions of 100, on a real file.
    /// `cargo test --release put_nodes_5000 -- --nocapture` prints the time.
    #[tokio::test]
    async fn put_nodes_5000_in_batches_of_100() {
        let (store, _dir) = temp_store();
        let task = sample_task("task-20260101-dddddd", TaskStatus::Running, at(1));
        store.insert(&task).await.unwrap();
        let records: Vec<NodeRecord> = (0..5_000)
            .map(|i| NodeRecord {
                node: format!("node-{i:05}"),
                body: serde_json::json!({
                    "node": format!("node-{i:05}"),
                    "state": "Completed",
                    "attempts": 1,
                    "images": [
                        {"image": "registry.example.com/team/app:1.2.3", "state": "Pulled",
                         "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                         "attempt": 1, "finishedAt": "2026-01-01T00:00:00.000000000Z"},
                        {"image": "registry.example.com/team/sidecar:4.5", "state": "Pulled",
                         "digest": "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
                         "attempt": 1, "finishedAt": "2026-01-01T00:00:01.000000000Z"}
                    ],
                    "jobName": format!("prewarm-dddddd-{i:05}"),
                }),
            })
            .collect();
        let started = Instant::now();
        for batch in records.chunks(100) {
            store.put_nodes(&task.task_id, batch).await.unwrap();
        }
        let elapsed = started.elapsed();
        println!(
            "put_nodes: 5000 records in 50 batches of 100: {elapsed:?} ({:?} per batch)",
            elapsed / 50
        );
        assert_eq!(store.nodes(&task.task_id).await.unwrap().len(), 5_000);
    }
}
