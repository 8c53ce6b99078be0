//! In-memory `TaskStore`: maps behind one mutex. Nothing survives a restart;
//! meant for tests and for running without a database file.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prewarm_api::{Task, TaskStatus};

use super::{CancelOutcome, NodeRecord, StoreError, StoreResult, TaskStore};

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
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let page = matching
            .into_iter()
            .skip(offset)
            .take(limit as usize)
            .cloned()
            .collect();
        Ok((page, total))
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
        if stored.status.is_terminal() {
            return Ok(CancelOutcome::AlreadyEnded(stored.status));
        }
        stored.status = TaskStatus::Cancelled;
        stored.finished_at = Some(at);
        stored.estimated_completion = None;
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

    async fn ping(&self) -> StoreResult<()> {
        drop(self.lock());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;

    crate::store::contract::store_contract_tests!(MemoryStore::new());
}
