//! Durable task storage: the `TaskStore` trait and its backends.
//!
//! A task is stored as its API view (`prewarm_api::Task`) plus, per node, the
//! engine's `NodeRecord`. Node records are written when a node's outcome is
//! final or a retry is scheduled, always before the node's Job is deleted, so
//! a restarted engine can tell finished nodes from ones still to do.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prewarm_api::{Task, TaskStatus};

pub mod memory;
pub mod node_speeds;
pub mod policies;
pub mod redis;
pub mod schedules;
pub mod sqlite;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;
pub use node_speeds::NodeSpeedStore;
pub use policies::PolicyStore;
pub use schedules::{Fire, FireOutcome, ScheduleStore, StoredSchedule};
pub use sqlite::SqliteStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, closed connection).
    #[error("storage backend: {0}")]
    Backend(String),
    /// A stored document could not be decoded.
    #[error("corrupt stored record {id}: {message}")]
    Corrupt {
        /// Task id of the bad record.
        id: String,
        /// Decoder message.
        message: String,
    },
    /// The backend cannot be reached now (a shared Redis that is away);
    /// the same call may work shortly.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// `insert` of an id that exists.
    #[error("task {0} already exists")]
    Duplicate(String),
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The engine's durable memory of one node in one task (opaque JSON to the store).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    /// Node name (unique within a task).
    pub node: String,
    /// Serialized `domain::node_pull::NodePull`.
    pub body: serde_json::Value,
}

/// How much ended history a store keeps (see [`TaskStore::trim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Tasks that ended (`finishedAt`) before this instant are deleted.
    pub ended_before: DateTime<Utc>,
    /// At most this many tasks are kept; beyond it the oldest (by
    /// `createdAt`) ended ones go.
    pub max_tasks: u64,
}

/// Outcome of `cancel`.
#[allow(clippy::large_enum_variant)] // built once per cancel request; boxing buys nothing
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// No task with that id.
    NotFound,
    /// The task had already ended with this status; nothing changed.
    AlreadyEnded(TaskStatus),
    /// The task is now `cancelled` (this view, as stored).
    Cancelled(Task),
}

/// Where tasks live. Implementations must be safe to share between the HTTP
/// handlers and the engine; every method is one atomic step.
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Stores a new task. `Duplicate` if the id exists.
    async fn insert(&self, task: &Task) -> StoreResult<()>;

    /// One task by id.
    async fn get(&self, id: &str) -> StoreResult<Option<Task>>;

    /// A page of tasks, newest (`createdAt`, then id) first, optionally filtered by
    /// status, plus the total number matching the filter.
    async fn list(
        &self,
        status: Option<TaskStatus>,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<Task>, u64)>;

    /// All tasks whose status is one of `statuses` (any order). Used by the engine
    /// at start and when it looks for pending work.
    async fn list_with_status(&self, statuses: &[TaskStatus]) -> StoreResult<Vec<Task>>;

    /// Replaces the stored view of `task.task_id` only if the stored status is one
    /// of `expected`; returns whether it wrote. This is how the engine avoids
    /// overwriting a cancellation made by the API meanwhile.
    async fn update_if(&self, task: &Task, expected: &[TaskStatus]) -> StoreResult<bool>;

    /// Marks a pending or running task `cancelled` with `finishedAt = at`,
    /// atomically; a task with a `webhookUrl` gets `webhookStatus: pending`
    /// in the same write, so the webhook survives a crash.
    async fn cancel(&self, id: &str, at: DateTime<Utc>) -> StoreResult<CancelOutcome>;

    /// Inserts or replaces node records of a task, all in one transaction.
    async fn put_nodes(&self, task_id: &str, records: &[NodeRecord]) -> StoreResult<()>;

    /// Every node record of a task.
    async fn nodes(&self, task_id: &str) -> StoreResult<Vec<NodeRecord>>;

    /// Deletes at most `batch` ended tasks outside `retention` (ended before
    /// its cutoff, or beyond its newest `max_tasks`), oldest (`createdAt`,
    /// then id) first, together with their node records.
    /// Running and pending tasks are never deleted. Returns how many went.
    async fn trim(&self, retention: &Retention, batch: u32) -> StoreResult<u32>;

    /// Ended tasks whose webhook is still owed (`webhookStatus: pending`),
    /// at most `limit`, oldest first.
    async fn webhook_pending(&self, limit: u32) -> StoreResult<Vec<Task>>;

    /// Cheap liveness probe for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
}

/// One backend holding everything the service stores: tasks, scheduled
/// tasks, keep-warm policies and learned node speeds. The service is built
/// from one of these, whichever backend it is.
pub trait Storage: TaskStore + ScheduleStore + PolicyStore + NodeSpeedStore {}

impl<S: TaskStore + ScheduleStore + PolicyStore + NodeSpeedStore> Storage for S {}

#[cfg(test)]
pub(crate) mod contract;
#[cfg(test)]
pub(crate) mod node_speed_contract;
#[cfg(test)]
pub(crate) mod policy_contract;
#[cfg(test)]
pub(crate) mod schedule_contract;
#[cfg(test)]
pub(crate) mod scripted;
