//! A memory store for unit tests that fails on demand: `Duplicate` on the
//! first inserts, every call failing while "broken", `put_nodes` failing a
//! set number of times, or `get` never answering.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prewarm_api::{Task, TaskStatus};

use super::{
    CancelOutcome, MemoryStore, NodeRecord, Retention, StoreError, StoreResult, TaskStore,
};

/// A memory store that can answer `Duplicate` to the first inserts, fail
/// everything, or never answer `get`.
pub(crate) struct ScriptedStore {
    /// Where the data lives.
    pub(crate) inner: MemoryStore,
    /// `insert` answers `Duplicate` this many more times.
    pub(crate) duplicates_left: AtomicUsize,
    /// Every call fails with a backend error while set.
    pub(crate) broken: AtomicBool,
    /// `get` never answers.
    pub(crate) hang_on_get: bool,
    /// `put_nodes` fails this many more times.
    pub(crate) put_nodes_failures: AtomicUsize,
}

impl ScriptedStore {
    /// A working store.
    pub(crate) fn new() -> Self {
        ScriptedStore {
            inner: MemoryStore::new(),
            duplicates_left: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
            hang_on_get: false,
            put_nodes_failures: AtomicUsize::new(0),
        }
    }

    /// Makes every call fail (`true`) or work again.
    pub(crate) fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::SeqCst);
    }

    fn check(&self) -> StoreResult<()> {
        if self.broken.load(Ordering::SeqCst) {
            Err(StoreError::Backend(
                "disk on fire at /var/lib/secret".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl TaskStore for ScriptedStore {
    async fn insert(&self, task: &Task) -> StoreResult<()> {
        self.check()?;
        let left = self.duplicates_left.load(Ordering::SeqCst);
        if left > 0 {
            self.duplicates_left.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Duplicate(task.task_id.clone()));
        }
        self.inner.insert(task).await
    }
    async fn get(&self, id: &str) -> StoreResult<Option<Task>> {
        self.check()?;
        if self.hang_on_get {
            std::future::pending::<()>().await;
        }
        self.inner.get(id).await
    }
    async fn list(
        &self,
        status: Option<TaskStatus>,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<Task>, u64)> {
        self.check()?;
        self.inner.list(status, limit, offset).await
    }
    async fn list_with_status(&self, statuses: &[TaskStatus]) -> StoreResult<Vec<Task>> {
        self.check()?;
        self.inner.list_with_status(statuses).await
    }
    async fn update_if(&self, task: &Task, expected: &[TaskStatus]) -> StoreResult<bool> {
        self.check()?;
        self.inner.update_if(task, expected).await
    }
    async fn cancel(&self, id: &str, at: DateTime<Utc>) -> StoreResult<CancelOutcome> {
        self.check()?;
        self.inner.cancel(id, at).await
    }
    async fn put_nodes(&self, task_id: &str, records: &[NodeRecord]) -> StoreResult<()> {
        self.check()?;
        let left = self.put_nodes_failures.load(Ordering::SeqCst);
        if left > 0 {
            self.put_nodes_failures.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Backend("node records lost".into()));
        }
        self.inner.put_nodes(task_id, records).await
    }
    async fn nodes(&self, task_id: &str) -> StoreResult<Vec<NodeRecord>> {
        self.check()?;
        self.inner.nodes(task_id).await
    }
    async fn trim(&self, retention: &Retention, batch: u32) -> StoreResult<u32> {
        self.check()?;
        self.inner.trim(retention, batch).await
    }
    async fn webhook_pending(&self, limit: u32) -> StoreResult<Vec<Task>> {
        self.check()?;
        self.inner.webhook_pending(limit).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.check()
    }
}
