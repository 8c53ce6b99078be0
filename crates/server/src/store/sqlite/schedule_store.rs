//! `ScheduleStore` on the SQLite database: `scheduled_tasks` holds the view
//! as JSON plus the scheduler's columns (fire cursor, queued run, last
//! execution id); `scheduled_executions` one JSON row per execution (with
//! when it ended, for the retention trim), deleted with its schedule.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prewarm_api::{Execution, ExecutionStatus, ScheduledTask};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{backend, time_key, SqliteStore};
use crate::store::schedules::{ended_at, Fire, FireOutcome, ScheduleStore, StoredSchedule};
use crate::store::{Retention, StoreError, StoreResult};

const SCHEDULE_COLUMNS: &str = "id, body, fire_cursor, queued_fire";

fn corrupt(id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    }
}

fn encode<T: serde::Serialize>(id: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encode {id}: {e}")))
}

fn parse_time(id: &str, raw: &str) -> StoreResult<DateTime<Utc>> {
    raw.parse().map_err(|e| corrupt(id, e))
}

/// Raw `(id, body, fire_cursor, queued_fire)` row.
type ScheduleRow = (String, String, String, Option<String>);

fn schedule_row(row: &Row<'_>) -> rusqlite::Result<ScheduleRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn decode_schedule((id, body, cursor, queued): ScheduleRow) -> StoreResult<StoredSchedule> {
    Ok(StoredSchedule {
        task: serde_json::from_str(&body).map_err(|e| corrupt(&id, e))?,
        fire_cursor: parse_time(&id, &cursor)?,
        queued_fire: queued.map(|q| parse_time(&id, &q)).transpose()?,
    })
}

fn decode_execution(schedule_id: &str, body: &str) -> StoreResult<Execution> {
    serde_json::from_str(body).map_err(|e| corrupt(schedule_id, format!("execution: {e}")))
}

fn query_schedules(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<StoredSchedule>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(backend("list schedules"))?;
    let rows = stmt
        .query_map(params, schedule_row)
        .map_err(backend("list schedules"))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode_schedule(row.map_err(backend("list schedules"))?)?);
    }
    Ok(out)
}

fn query_executions(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<Execution>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(backend("list executions"))?;
    let rows = stmt
        .query_map(params, |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(backend("list executions"))?;
    let mut out = Vec::new();
    for row in rows {
        let (schedule_id, body) = row.map_err(backend("list executions"))?;
        out.push(decode_execution(&schedule_id, &body)?);
    }
    Ok(out)
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn insert_schedule(&self, schedule: &StoredSchedule) -> StoreResult<()> {
        let id = schedule.task.id.clone();
        let body = encode(&id, &schedule.task)?;
        let created_at = time_key(schedule.task.created_at);
        let cursor = time_key(schedule.fire_cursor);
        let queued = schedule.queued_fire.map(time_key);
        self.run(move |conn| {
            let changed = conn
                .prepare_cached(
                    "INSERT INTO scheduled_tasks (id, created_at, fire_cursor, queued_fire, body)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
                )
                .and_then(|mut stmt| stmt.execute(params![id, created_at, cursor, queued, body]))
                .map_err(backend(format!("insert schedule {id}")))?;
            if changed == 0 {
                return Err(StoreError::Duplicate(id));
            }
            Ok(())
        })
        .await
    }

    async fn get_schedule(&self, id: &str) -> StoreResult<Option<StoredSchedule>> {
        let id = id.to_owned();
        self.run(move |conn| {
            let row = conn
                .prepare_cached(&format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM scheduled_tasks WHERE id = ?1"
                ))
                .and_then(|mut stmt| stmt.query_row([&id], schedule_row).optional())
                .map_err(backend(format!("get schedule {id}")))?;
            row.map(decode_schedule).transpose()
        })
        .await
    }

    async fn list_schedules(
        &self,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<StoredSchedule>, u64)> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let tx = conn.transaction().map_err(backend("list schedules"))?;
            let total: i64 = tx
                .query_row("SELECT COUNT(*) FROM scheduled_tasks", [], |r| r.get(0))
                .map_err(backend("count schedules"))?;
            let page = query_schedules(
                &tx,
                &format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM scheduled_tasks
                     ORDER BY created_at DESC, id DESC LIMIT ?1 OFFSET ?2"
                ),
                params![i64::from(limit), offset],
            )?;
            tx.commit().map_err(backend("list schedules"))?;
            Ok((page, total as u64))
        })
        .await
    }

    async fn all_schedules(&self) -> StoreResult<Vec<StoredSchedule>> {
        self.run(|conn| {
            query_schedules(
                conn,
                &format!("SELECT {SCHEDULE_COLUMNS} FROM scheduled_tasks"),
                [],
            )
        })
        .await
    }

    async fn update_schedule(
        &self,
        task: &ScheduledTask,
        reset: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        let task = task.clone();
        let reset = reset.map(time_key);
        self.run(move |conn| {
            let context = format!("update schedule {}", task.id);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend(&context))?;
            let body: Option<String> = tx
                .query_row(
                    "SELECT body FROM scheduled_tasks WHERE id = ?1",
                    [&task.id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend(&context))?;
            let Some(body) = body else {
                return Ok(false);
            };
            let stored: ScheduledTask =
                serde_json::from_str(&body).map_err(|e| corrupt(&task.id, e))?;
            let task = ScheduledTask {
                last_execution_at: stored.last_execution_at,
                ..task
            };
            let body = encode(&task.id, &task)?;
            match &reset {
                Some(at) => tx.execute(
                    "UPDATE scheduled_tasks SET body = ?1, fire_cursor = ?2, queued_fire = NULL
                     WHERE id = ?3",
                    params![body, at, task.id],
                ),
                None => tx.execute(
                    "UPDATE scheduled_tasks SET body = ?1 WHERE id = ?2",
                    params![body, task.id],
                ),
            }
            .map_err(backend(&context))?;
            tx.commit().map_err(backend(&context))?;
            Ok(true)
        })
        .await
    }

    async fn delete_schedule(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.run(move |conn| {
            let changed = conn
                .execute("DELETE FROM scheduled_tasks WHERE id = ?1", [&id])
                .map_err(backend(format!("delete schedule {id}")))?;
            Ok(changed > 0)
        })
        .await
    }

    async fn record_fire(&self, id: &str, fire: &Fire) -> StoreResult<FireOutcome> {
        let id = id.to_owned();
        let fire = fire.clone();
        self.run(move |conn| {
            let context = format!("record fire of schedule {id}");
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend(&context))?;
            let row: Option<(String, String, Option<String>, i64)> = tx
                .query_row(
                    "SELECT body, fire_cursor, queued_fire, last_execution_id
                     FROM scheduled_tasks WHERE id = ?1",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(backend(&context))?;
            let Some((body, cursor, queued, last_id)) = row else {
                return Ok(FireOutcome::NotFound);
            };
            if fire
                .cursor
                .is_some_and(|(expected, _)| time_key(expected) != cursor)
                || fire
                    .queued
                    .is_some_and(|(expected, _)| expected.map(time_key) != queued)
            {
                return Ok(FireOutcome::Conflict);
            }
            let cursor = fire.cursor.map_or(cursor, |(_, new)| time_key(new));
            let queued = fire.queued.map_or(queued, |(_, new)| new.map(time_key));
            let mut task: ScheduledTask =
                serde_json::from_str(&body).map_err(|e| corrupt(&id, e))?;
            let mut recorded = None;
            let mut next_id = last_id;
            if let Some(execution) = &fire.execution {
                next_id += 1;
                if execution.status == ExecutionStatus::Running {
                    task.last_execution_at = execution.started_at;
                }
                let execution = Execution {
                    id: next_id as u64,
                    scheduled_task_id: id.clone(),
                    ..execution.clone()
                };
                tx.execute(
                    "INSERT INTO scheduled_executions (scheduled_task_id, id, status, body, ended_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        id,
                        next_id,
                        execution.status.as_str(),
                        encode(&id, &execution)?,
                        ended_at(&execution).map(time_key),
                    ],
                )
                .map_err(backend(&context))?;
                recorded = Some(execution);
            }
            tx.execute(
                "UPDATE scheduled_tasks
                 SET fire_cursor = ?1, queued_fire = ?2, last_execution_id = ?3, body = ?4
                 WHERE id = ?5",
                params![cursor, queued, next_id, encode(&id, &task)?, id],
            )
            .map_err(backend(&context))?;
            tx.commit().map_err(backend(&context))?;
            Ok(FireOutcome::Recorded(recorded))
        })
        .await
    }

    async fn finish_execution(&self, execution: &Execution) -> StoreResult<bool> {
        let execution = execution.clone();
        self.run(move |conn| {
            let body = encode(&execution.scheduled_task_id, &execution)?;
            let changed = conn
                .execute(
                    "UPDATE scheduled_executions SET status = ?1, body = ?2, ended_at = ?5
                     WHERE scheduled_task_id = ?3 AND id = ?4 AND status = 'running'",
                    params![
                        execution.status.as_str(),
                        body,
                        execution.scheduled_task_id,
                        execution.id as i64,
                        ended_at(&execution).map(time_key),
                    ],
                )
                .map_err(backend(format!(
                    "finish execution {} of {}",
                    execution.id, execution.scheduled_task_id
                )))?;
            Ok(changed > 0)
        })
        .await
    }

    async fn list_executions(
        &self,
        schedule_id: &str,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<Execution>, u64)> {
        let schedule_id = schedule_id.to_owned();
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let tx = conn.transaction().map_err(backend("list executions"))?;
            let total: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM scheduled_executions WHERE scheduled_task_id = ?1",
                    [&schedule_id],
                    |r| r.get(0),
                )
                .map_err(backend("count executions"))?;
            let page = query_executions(
                &tx,
                "SELECT scheduled_task_id, body FROM scheduled_executions
                 WHERE scheduled_task_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
                params![schedule_id, i64::from(limit), offset],
            )?;
            tx.commit().map_err(backend("list executions"))?;
            Ok((page, total as u64))
        })
        .await
    }

    async fn get_execution(&self, schedule_id: &str, id: u64) -> StoreResult<Option<Execution>> {
        let schedule_id = schedule_id.to_owned();
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.run(move |conn| {
            let mut found = query_executions(
                conn,
                "SELECT scheduled_task_id, body FROM scheduled_executions
                 WHERE scheduled_task_id = ?1 AND id = ?2",
                params![schedule_id, id],
            )?;
            Ok(found.pop())
        })
        .await
    }

    async fn running_executions(&self) -> StoreResult<Vec<Execution>> {
        self.run(|conn| {
            query_executions(
                conn,
                "SELECT scheduled_task_id, body FROM scheduled_executions WHERE status = 'running'",
                [],
            )
        })
        .await
    }

    async fn trim_executions(&self, retention: &Retention, batch: u32) -> StoreResult<u32> {
        let before = time_key(retention.ended_before);
        let keep = i64::try_from(retention.max_tasks).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let context = "trim executions";
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM scheduled_executions WHERE (scheduled_task_id, id) IN (
                         SELECT e.scheduled_task_id, e.id
                         FROM scheduled_executions e
                         JOIN scheduled_tasks s ON s.id = e.scheduled_task_id
                         WHERE e.ended_at IS NOT NULL
                           AND (e.ended_at < ?1 OR e.id <= s.last_execution_id - ?2)
                         ORDER BY e.ended_at, e.scheduled_task_id, e.id
                         LIMIT ?3)",
                )
                .and_then(|mut stmt| stmt.execute(params![before, keep, batch]))
                .map_err(backend(context))?;
            Ok(deleted as u32)
        })
        .await
    }
}
