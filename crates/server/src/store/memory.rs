//! In-memory `TaskStore`: maps behind one mutex. Nothing survives a restart;
//! meant for tests and for running without a database file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prewarm_api::{
    Execution, ExecutionStatus, KeepWarmPolicy, PolicyRun, ScheduledTask, Task, TaskStatus,
};

use super::schedules::{ended_at, may_finish, Fire, FireOutcome, ScheduleStore, StoredSchedule};
use super::{CancelOutcome, NodeRecord, Retention, StoreError, StoreResult, TaskStore};

mod node_speed_store;
mod policy_store;

/// A `TaskStore` kept in process memory.
///
/// Every method takes the one lock for its whole duration, so each call is one
/// atomic step, as the trait requires. The lock is never held across an await.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Task views by id.
    tasks: HashMap<String, Task>,
    /// Node records by task id, then node name.
    nodes: HashMap<String, BTreeMap<String, serde_json::Value>>,
    /// Scheduled tasks by id.
    schedules: HashMap<String, StoredSchedule>,
    /// Executions by scheduled task id, then execution id.
    executions: HashMap<String, BTreeMap<u64, Execution>>,
    /// Last execution id handed out per scheduled task.
    execution_ids: HashMap<String, u64>,
    /// Keep-warm policies by id.
    policies: HashMap<String, KeepWarmPolicy>,
    /// Their kept runs, newest first.
    policy_runs: HashMap<String, VecDeque<PolicyRun>>,
    /// Learned pull speeds by node name.
    node_speeds: HashMap<String, crate::domain::node_speed::NodeSpeed>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No method can panic halfway through a mutation, so a poisoned lock
        // still guards consistent maps.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The page `offset..offset + limit` of `items` (already in order), cloned.
fn page<'a, T: Clone + 'a>(items: impl Iterator<Item = &'a T>, limit: u32, offset: u64) -> Vec<T> {
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    items.skip(offset).take(limit as usize).cloned().collect()
}

/// Newest first: `createdAt` descending, then task id descending.
fn newest_first(a: &Task, b: &Task) -> std::cmp::Ordering {
    b.created_at
        .cmp(&a.created_at)
        .then_with(|| b.task_id.cmp(&a.task_id))
}

#[async_trait]
impl TaskStore for MemoryStore {
    async fn insert(&self, task: &Task) -> StoreResult<()> {
        let mut inner = self.lock();
        if inner.tasks.contains_key(&task.task_id) {
            return Err(StoreError::Duplicate(task.task_id.clone()));
        }
        inner.tasks.insert(task.task_id.clone(), task.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Task>> {
        Ok(self.lock().tasks.get(id).cloned())
    }

    async fn list(
        &self,
        status: Option<TaskStatus>,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<Task>, u64)> {
        let inner = self.lock();
        let mut matching: Vec<&Task> = inner
            .tasks
            .values()
            .filter(|t| status.is_none_or(|s| t.status == s))
            .collect();
        let total = matching.len() as u64;
        matching.sort_by(|a, b| newest_first(a, b));
        Ok((page(matching.into_iter(), limit, offset), total))
    }

    async fn list_with_status(&self, statuses: &[TaskStatus]) -> StoreResult<Vec<Task>> {
        Ok(self
            .lock()
            .tasks
            .values()
            .filter(|t| statuses.contains(&t.status))
            .cloned()
            .collect())
    }

    async fn update_if(&self, task: &Task, expected: &[TaskStatus]) -> StoreResult<bool> {
        let mut inner = self.lock();
        match inner.tasks.get_mut(&task.task_id) {
            Some(stored) if expected.contains(&stored.status) => {
                *stored = task.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn cancel(&self, id: &str, at: DateTime<Utc>) -> StoreResult<CancelOutcome> {
        let mut inner = self.lock();
        let Some(stored) = inner.tasks.get_mut(id) else {
            return Ok(CancelOutcome::NotFound);
        };
        if let Err(ended) = crate::domain::task::cancel(stored, at) {
            return Ok(CancelOutcome::AlreadyEnded(ended));
        }
        Ok(CancelOutcome::Cancelled(stored.clone()))
    }

    async fn put_nodes(&self, task_id: &str, records: &[NodeRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        // Same rule as the SQLite backend's foreign key: records belong to a task.
        if !inner.tasks.contains_key(task_id) {
            return Err(StoreError::Backend(format!(
                "put_nodes: task {task_id} does not exist"
            )));
        }
        let nodes = inner.nodes.entry(task_id.to_owned()).or_default();
        for record in records {
            nodes.insert(record.node.clone(), record.body.clone());
        }
        Ok(())
    }

    async fn nodes(&self, task_id: &str) -> StoreResult<Vec<NodeRecord>> {
        Ok(self
            .lock()
            .nodes
            .get(task_id)
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|(node, body)| NodeRecord {
                        node: node.clone(),
                        body: body.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn trim(&self, retention: &Retention, batch: u32) -> StoreResult<u32> {
        let mut inner = self.lock();
        let mut all: Vec<&Task> = inner.tasks.values().collect();
        all.sort_by(|a, b| newest_first(a, b));
        let keep = usize::try_from(retention.max_tasks).unwrap_or(usize::MAX);
        let mut doomed: Vec<&Task> = all
            .iter()
            .enumerate()
            .filter(|(rank, t)| {
                t.status.is_terminal()
                    && (*rank >= keep
                        || t.finished_at
                            .is_some_and(|end| end < retention.ended_before))
            })
            .map(|(_, t)| *t)
            .collect();
        doomed.reverse();
        let doomed: Vec<String> = doomed
            .into_iter()
            .take(batch as usize)
            .map(|t| t.task_id.clone())
            .collect();
        for id in &doomed {
            inner.tasks.remove(id);
            inner.nodes.remove(id);
        }
        Ok(doomed.len() as u32)
    }

    async fn webhook_pending(&self, limit: u32) -> StoreResult<Vec<Task>> {
        let inner = self.lock();
        let mut pending: Vec<Task> = inner
            .tasks
            .values()
            .filter(|t| {
                t.status.is_terminal()
                    && t.webhook_status == Some(prewarm_api::WebhookStatus::Pending)
            })
            .cloned()
            .collect();
        pending.sort_by(|a, b| newest_first(b, a));
        pending.truncate(limit as usize);
        Ok(pending)
    }

    async fn ping(&self) -> StoreResult<()> {
        drop(self.lock());
        Ok(())
    }
}

#[async_trait]
impl ScheduleStore for MemoryStore {
    async fn insert_schedule(&self, schedule: &StoredSchedule) -> StoreResult<()> {
        let mut inner = self.lock();
        if inner.schedules.contains_key(&schedule.task.id) {
            return Err(StoreError::Duplicate(schedule.task.id.clone()));
        }
        inner
            .schedules
            .insert(schedule.task.id.clone(), schedule.clone());
        Ok(())
    }

    async fn get_schedule(&self, id: &str) -> StoreResult<Option<StoredSchedule>> {
        Ok(self.lock().schedules.get(id).cloned())
    }

    async fn list_schedules(
        &self,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<StoredSchedule>, u64)> {
        let inner = self.lock();
        let mut all: Vec<&StoredSchedule> = inner.schedules.values().collect();
        all.sort_by(|a, b| {
            b.task
                .created_at
                .cmp(&a.task.created_at)
                .then_with(|| b.task.id.cmp(&a.task.id))
        });
        let total = all.len() as u64;
        Ok((page(all.into_iter(), limit, offset), total))
    }

    async fn all_schedules(&self) -> StoreResult<Vec<StoredSchedule>> {
        Ok(self.lock().schedules.values().cloned().collect())
    }

    async fn update_schedule(
        &self,
        task: &ScheduledTask,
        reset: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        let mut inner = self.lock();
        let Some(stored) = inner.schedules.get_mut(&task.id) else {
            return Ok(false);
        };
        let last = stored.task.last_execution_at;
        stored.task = task.clone();
        stored.task.last_execution_at = last;
        if let Some(at) = reset {
            stored.fire_cursor = at;
            stored.queued_fire = None;
        }
        Ok(true)
    }

    async fn delete_schedule(&self, id: &str) -> StoreResult<bool> {
        let mut inner = self.lock();
        inner.executions.remove(id);
        inner.execution_ids.remove(id);
        Ok(inner.schedules.remove(id).is_some())
    }

    async fn record_fire(&self, id: &str, fire: &Fire) -> StoreResult<FireOutcome> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(stored) = inner.schedules.get_mut(id) else {
            return Ok(FireOutcome::NotFound);
        };
        if fire
            .cursor
            .is_some_and(|(expected, _)| stored.fire_cursor != expected)
            || fire
                .queued
                .is_some_and(|(expected, _)| stored.queued_fire != expected)
        {
            return Ok(FireOutcome::Conflict);
        }
        if let Some((_, new)) = fire.cursor {
            stored.fire_cursor = new;
        }
        if let Some((_, new)) = fire.queued {
            stored.queued_fire = new;
        }
        let Some(execution) = &fire.execution else {
            return Ok(FireOutcome::Recorded(None));
        };
        if execution.status == ExecutionStatus::Running {
            stored.task.last_execution_at = execution.started_at;
        }
        let next = inner.execution_ids.entry(id.to_owned()).or_default();
        *next += 1;
        let execution = Execution {
            id: *next,
            scheduled_task_id: id.to_owned(),
            ..execution.clone()
        };
        inner
            .executions
            .entry(id.to_owned())
            .or_default()
            .insert(execution.id, execution.clone());
        Ok(FireOutcome::Recorded(Some(execution)))
    }

    async fn finish_execution(&self, execution: &Execution) -> StoreResult<bool> {
        let mut inner = self.lock();
        match inner
            .executions
            .get_mut(&execution.scheduled_task_id)
            .and_then(|all| all.get_mut(&execution.id))
        {
            Some(stored) if may_finish(stored) => {
                *stored = execution.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn list_executions(
        &self,
        schedule_id: &str,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<Execution>, u64)> {
        let inner = self.lock();
        let Some(all) = inner.executions.get(schedule_id) else {
            return Ok((Vec::new(), 0));
        };
        Ok((page(all.values().rev(), limit, offset), all.len() as u64))
    }

    async fn get_execution(&self, schedule_id: &str, id: u64) -> StoreResult<Option<Execution>> {
        Ok(self
            .lock()
            .executions
            .get(schedule_id)
            .and_then(|all| all.get(&id))
            .cloned())
    }

    async fn running_executions(&self) -> StoreResult<Vec<Execution>> {
        Ok(self
            .lock()
            .executions
            .values()
            .flat_map(|all| all.values())
            .filter(|e| e.status == ExecutionStatus::Running)
            .cloned()
            .collect())
    }

    async fn trim_executions(&self, retention: &Retention, batch: u32) -> StoreResult<u32> {
        let mut inner = self.lock();
        let mut doomed: Vec<(DateTime<Utc>, String, u64)> = Vec::new();
        for (schedule, all) in &inner.executions {
            let last = inner.execution_ids.get(schedule).copied().unwrap_or(0);
            // Ids up to this one fall beyond the newest `max_tasks`.
            let beyond = last.saturating_sub(retention.max_tasks);
            for execution in all.values() {
                let Some(ended) = ended_at(execution) else {
                    continue;
                };
                if execution.id <= beyond || ended < retention.ended_before {
                    doomed.push((ended, schedule.clone(), execution.id));
                }
            }
        }
        doomed.sort();
        doomed.truncate(batch as usize);
        for (_, schedule, id) in &doomed {
            if let Some(all) = inner.executions.get_mut(schedule) {
                all.remove(id);
            }
        }
        Ok(doomed.len() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;

    crate::store::contract::store_contract_tests!(MemoryStore::new());
    crate::store::schedule_contract::schedule_contract_tests!(MemoryStore::new());
}
