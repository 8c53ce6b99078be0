//! `/api/v1/tasks`: create, list, get and cancel prewarm tasks.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prewarm_api::{ActionResponse, CreateTaskRequest, Task, TaskCreated, TaskList, TaskStatus};

use super::error::ApiError;
use super::extract::{int_in_range, AppJson, PathId, QueryParams};
use super::AppState;
use crate::domain::task::TaskSpec;
use crate::engine::submit::submit_task;
use crate::store::CancelOutcome;

/// Who creates tasks while authentication is off.
pub(crate) const ANONYMOUS: &str = "anonymous";
/// Page size when `limit` is absent.
const DEFAULT_LIMIT: u32 = 10;
/// Largest accepted `limit`.
const MAX_LIMIT: u32 = 100;

/// `POST /api/v1/tasks`: validates and stores a pending task, wakes the engine.
pub async fn create(
    State(state): State<AppState>,
    AppJson(request): AppJson<CreateTaskRequest>,
) -> Result<Response, ApiError> {
    let spec = TaskSpec::from_request(request)?;
    let task = submit_task(
        state.store.as_ref(),
        &state.engine,
        state.clock.as_ref(),
        &spec,
        ANONYMOUS,
    )
    .await?;
    let location = HeaderValue::try_from(format!("/api/v1/tasks/{}", task.task_id))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let body = TaskCreated {
        task,
        message: "Task created successfully".to_owned(),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// `GET /api/v1/tasks?status=&limit=&offset=`: a page of tasks, newest first.
pub async fn list(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<Json<TaskList>, ApiError> {
    let status = params.parse("status", |raw| {
        TaskStatus::parse(raw).ok_or_else(|| {
            let known: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
            format!("must be one of {}, got {raw:?}", known.join(", "))
        })
    })?;
    let limit = params
        .parse("limit", int_in_range(1, MAX_LIMIT))?
        .unwrap_or(DEFAULT_LIMIT);
    let offset = params
        .parse("offset", int_in_range(0, u64::MAX))?
        .unwrap_or(0);
    let (tasks, total) = state.store.list(status, limit, offset).await?;
    Ok(Json(TaskList {
        tasks,
        total,
        limit,
        offset,
    }))
}

/// `GET /api/v1/tasks/{id}`: one task view.
pub async fn get(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<Task>, ApiError> {
    match state.store.get(&id).await? {
        Some(task) => Ok(Json(task)),
        None => Err(ApiError::TaskNotFound(id)),
    }
}

/// `DELETE /api/v1/tasks/{id}`: cancels a pending or running task.
pub async fn cancel(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<ActionResponse>, ApiError> {
    match state.store.cancel(&id, state.clock.now()).await? {
        CancelOutcome::Cancelled(task) => {
            // A pending task has no engine run to publish its end; live readers learn it here.
            state.progress.publish(&task);
            state.engine.wake();
            Ok(Json(ActionResponse {
                task_id: task.task_id,
                status: TaskStatus::Cancelled.as_str().to_owned(),
                message: "Task cancelled".to_owned(),
            }))
        }
        CancelOutcome::AlreadyEnded(status) => Err(ApiError::TaskEnded {
            task_id: id,
            status,
        }),
        CancelOutcome::NotFound => Err(ApiError::TaskNotFound(id)),
    }
}
