//! Creating a task from a validated spec: the one path shared by
//! `POST /api/v1/tasks` and the scheduler (same ids, same store insert, same
//! engine wake-up).

use chrono::{DateTime, Utc};
use prewarm_api::Task;

use super::EngineHandle;
use crate::clock::Clock;
use crate::domain::task::{TaskId, TaskSpec};
use crate::store::{StoreError, StoreResult, TaskStore};

/// Attempts at a fresh id before giving up on `Duplicate` (36^6 ids a day make a clash rare).
pub const ID_ATTEMPTS: usize = 5;

/// Stores a new pending task of `spec` under `id` and wakes the engine.
/// `Duplicate` if the id is taken.
pub async fn submit_task_with_id(
    store: &dyn TaskStore,
    engine: &EngineHandle,
    spec: &TaskSpec,
    id: TaskId,
    created_by: &str,
    now: DateTime<Utc>,
) -> StoreResult<Task> {
    let task = spec.new_task(id, created_by, now);
    store.insert(&task).await?;
    engine.wake();
    Ok(task)
}

/// Stores a new pending task of `spec` under a fresh id (retrying on a
/// clash) and wakes the engine.
pub async fn submit_task(
    store: &dyn TaskStore,
    engine: &EngineHandle,
    clock: &dyn Clock,
    spec: &TaskSpec,
    created_by: &str,
) -> StoreResult<Task> {
    let mut last = None;
    for _ in 0..ID_ATTEMPTS {
        let now = clock.now();
        match submit_task_with_id(store, engine, spec, TaskId::generate(now), created_by, now).await
        {
            Err(StoreError::Duplicate(id)) => last = Some(id),
            other => return other,
        }
    }
    Err(StoreError::Backend(format!(
        "no free task id after {ID_ATTEMPTS} attempts (last tried {})",
        last.unwrap_or_default()
    )))
}
