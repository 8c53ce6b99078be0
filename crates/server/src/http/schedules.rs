//! `/api/v1/scheduled-tasks`: create, list, get, update, delete, enable,
//! disable and trigger scheduled tasks, and read their executions.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use prewarm_api::{
    ActionResponse, CreateScheduledTaskRequest, ErrorBody, Execution, ExecutionList,
    ExecutionTrigger, ScheduledTask, ScheduledTaskList, UpdateScheduledTaskRequest,
};

use super::error::ApiError;
use super::extract::{AppJson, PathId, QueryParams};
use super::guard::{AuditTarget, Caller};
use super::AppState;
use crate::domain::schedule::{
    apply_update, generate_schedule_id, new_scheduled_task, next_execution_at, task_spec,
};
use crate::engine::scheduler::{start_run, RunStart, Started};
use crate::engine::submit::ID_ATTEMPTS;
use crate::store::{Fire, StoreError, StoredSchedule};

/// The scheduled-task routes, merged into the API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/scheduled-tasks", get(list).post(create))
        .route(
            "/api/v1/scheduled-tasks/{id}",
            get(get_one).put(update).delete(delete),
        )
        .route("/api/v1/scheduled-tasks/{id}/enable", put(enable))
        .route("/api/v1/scheduled-tasks/{id}/disable", put(disable))
        .route("/api/v1/scheduled-tasks/{id}/trigger", post(trigger))
        .route("/api/v1/scheduled-tasks/{id}/executions", get(executions))
        .route(
            "/api/v1/scheduled-tasks/{id}/executions/{execution_id}",
            get(execution),
        )
}

/// The API view of a stored schedule: `nextExecutionAt` as of `now`.
fn view(stored: StoredSchedule, now: DateTime<Utc>) -> ScheduledTask {
    let next = next_execution_at(&stored.task, now);
    ScheduledTask {
        next_execution_at: next,
        ..stored.task
    }
}

async fn load(state: &AppState, id: &str) -> Result<StoredSchedule, ApiError> {
    state
        .schedules
        .get_schedule(id)
        .await?
        .ok_or_else(|| ApiError::ScheduleNotFound(id.to_owned()))
}

/// `POST /api/v1/scheduled-tasks`: validates (its `taskConfig` like a task
/// create body) and stores a scheduled task; fires count from now.
#[utoipa::path(
    post, path = "/api/v1/scheduled-tasks", operation_id = "createScheduledTask", tag = "scheduled-tasks",
    request_body = CreateScheduledTaskRequest,
    responses(
        (status = 201, description = "Stored; `nextExecutionAt` says when it fires", body = ScheduledTask),
        (status = 400, description = "Malformed JSON or a rule broken (cron, timezone, taskConfig, ...)", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppJson(request): AppJson<CreateScheduledTaskRequest>,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    if let Some(url) = &request.task_config.webhook_url {
        crate::domain::task::validate_webhook_url(url)?;
        state.webhooks.check_url(url)?;
    }
    let task = new_scheduled_task(request, generate_schedule_id(now), &caller.name, now)?;
    // A workload named now must exist now (it is read again at each run).
    super::workload::resolve(&state, task_spec(&task)?).await?;
    let mut stored = StoredSchedule {
        task,
        fire_cursor: now,
        queued_fire: None,
    };
    let mut attempts = 0;
    loop {
        match state.schedules.insert_schedule(&stored).await {
            Ok(()) => break,
            Err(StoreError::Duplicate(_)) if attempts + 1 < ID_ATTEMPTS => {
                attempts += 1;
                stored.task.id = generate_schedule_id(now);
            }
            Err(err) => return Err(err.into()),
        }
    }
    state.scheduler.wake();
    let location = HeaderValue::try_from(format!("/api/v1/scheduled-tasks/{}", stored.task.id))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let target = AuditTarget(stored.task.id.clone());
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(stored, now)),
    )
        .into_response();
    response.extensions_mut().insert(target);
    Ok(response)
}

/// `GET /api/v1/scheduled-tasks?offset=&limit=`: a page, newest first.
#[utoipa::path(
    get, path = "/api/v1/scheduled-tasks", operation_id = "listScheduledTasks", tag = "scheduled-tasks",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 10)"),
        ("offset" = Option<u64>, Query, minimum = 0, description = "Items to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "A page of scheduled tasks", body = ScheduledTaskList),
        (status = 400, description = "Bad limit or offset", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<Json<ScheduledTaskList>, ApiError> {
    let (limit, offset) = params.page()?;
    let (stored, total) = state.schedules.list_schedules(limit, offset).await?;
    let now = state.clock.now();
    Ok(Json(ScheduledTaskList {
        tasks: stored.into_iter().map(|s| view(s, now)).collect(),
        total,
        limit,
        offset,
    }))
}

/// `GET /api/v1/scheduled-tasks/{id}`.
#[utoipa::path(
    get, path = "/api/v1/scheduled-tasks/{id}", operation_id = "getScheduledTask", tag = "scheduled-tasks",
    params(("id" = String, Path, description = "Scheduled task id")),
    responses(
        (status = 200, description = "The scheduled task", body = ScheduledTask),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such scheduled task", body = ErrorBody),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<ScheduledTask>, ApiError> {
    let stored = load(&state, &id).await?;
    Ok(Json(view(stored, state.clock.now())))
}

/// `PUT /api/v1/scheduled-tasks/{id}`: every field optional, `taskConfig`
/// merged into the stored one (`fromWorkload` set, checked like at create,
/// or removed with `null`). A new schedule, zone or enabled state makes
/// fires count from now.
#[utoipa::path(
    put, path = "/api/v1/scheduled-tasks/{id}", operation_id = "updateScheduledTask", tag = "scheduled-tasks",
    params(("id" = String, Path, description = "Scheduled task id")),
    request_body = UpdateScheduledTaskRequest,
    responses(
        (status = 200, description = "The updated scheduled task", body = ScheduledTask),
        (status = 400, description = "Malformed JSON or a rule broken", body = ErrorBody),
        (status = 404, description = "No such scheduled task (or `taskConfig.fromWorkload` names no existing workload)", body = ErrorBody),
        (status = 422, description = "The workload cannot be used", body = ErrorBody),
        (status = 503, description = "The Kubernetes API did not answer the workload read", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    PathId(id): PathId,
    AppJson(request): AppJson<UpdateScheduledTaskRequest>,
) -> Result<Json<ScheduledTask>, ApiError> {
    let now = state.clock.now();
    let current = load(&state, &id).await?;
    let reads_workload = request
        .task_config
        .as_ref()
        .is_some_and(|c| matches!(c.from_workload, Some(Some(_))));
    let updated = apply_update(&current.task, request, now)?;
    if reads_workload {
        // A workload named now must exist now (it is read again at each run).
        super::workload::resolve(&state, task_spec(&updated)?).await?;
    }
    let reschedule = updated.cron_expr != current.task.cron_expr
        || updated.timezone != current.task.timezone
        || updated.enabled != current.task.enabled;
    save(&state, &updated, reschedule.then_some(now)).await?;
    state.scheduler.wake();
    Ok(Json(view(load(&state, &id).await?, now)))
}

async fn save(
    state: &AppState,
    task: &ScheduledTask,
    reset: Option<DateTime<Utc>>,
) -> Result<(), ApiError> {
    if state.schedules.update_schedule(task, reset).await? {
        Ok(())
    } else {
        Err(ApiError::ScheduleNotFound(task.id.clone()))
    }
}

fn done(id: String, message: &str) -> Json<ActionResponse> {
    Json(ActionResponse {
        task_id: id,
        status: "success".to_owned(),
        message: message.to_owned(),
    })
}

/// `DELETE /api/v1/scheduled-tasks/{id}`: the schedule and its executions
/// go; a task it started keeps running.
#[utoipa::path(
    delete, path = "/api/v1/scheduled-tasks/{id}", operation_id = "deleteScheduledTask", tag = "scheduled-tasks",
    params(("id" = String, Path, description = "Scheduled task id")),
    responses(
        (status = 200, description = "Deleted", body = ActionResponse),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such scheduled task", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<ActionResponse>, ApiError> {
    if !state.schedules.delete_schedule(&id).await? {
        return Err(ApiError::ScheduleNotFound(id));
    }
    state.scheduler.wake();
    Ok(done(id, "Scheduled task deleted successfully"))
}

async fn set_enabled(state: &AppState, id: &str, enabled: bool) -> Result<(), ApiError> {
    let now = state.clock.now();
    let mut task = load(state, id).await?.task;
    if task.enabled != enabled {
        task.enabled = enabled;
        task.updated_at = now;
        save(state, &task, Some(now)).await?;
        state.scheduler.wake();
    }
    Ok(())
}

/// `PUT /api/v1/scheduled-tasks/{id}/enable`: fires count from now.
#[utoipa::path(
    put, path = "/api/v1/scheduled-tasks/{id}/enable", operation_id = "enableScheduledTask", tag = "scheduled-tasks",
    params(("id" = String, Path, description = "Scheduled task id")),
    responses(
        (status = 200, description = "Enabled", body = ActionResponse),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such scheduled task", body = ErrorBody),
    )
)]
pub async fn enable(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<ActionResponse>, ApiError> {
    set_enabled(&state, &id, true).await?;
    Ok(done(id, "Scheduled task enabled successfully"))
}

/// `PUT /api/v1/scheduled-tasks/{id}/disable`: no fires until enabled again.
#[utoipa::path(
    put, path = "/api/v1/scheduled-tasks/{id}/disable", operation_id = "disableScheduledTask", tag = "scheduled-tasks",
    params(("id" = String, Path, description = "Scheduled task id")),
    responses(
        (status = 200, description = "Disabled", body = ActionResponse),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such scheduled task", body = ErrorBody),
    )
)]
pub async fn disable(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<ActionResponse>, ApiError> {
    set_enabled(&state, &id, false).await?;
    Ok(done(id, "Scheduled task disabled successfully"))
}

/// `POST /api/v1/scheduled-tasks/{id}/trigger`: starts a task now, whatever
/// the overlap policy; answers with the new task's id.
#[utoipa::path(
    post, path = "/api/v1/scheduled-tasks/{id}/trigger", operation_id = "triggerScheduledTask", tag = "scheduled-tasks",
    params(("id" = String, Path, description = "Scheduled task id")),
    responses(
        (status = 200, description = "A task was created now; `taskId` is the new task", body = ActionResponse),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such scheduled task", body = ErrorBody),
    )
)]
pub async fn trigger(
    State(state): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> Result<Json<ActionResponse>, ApiError> {
    let schedule = load(&state, &id).await?;
    let now = state.clock.now();
    let started = start_run(
        state.schedules.as_ref(),
        state.store.as_ref(),
        Some(state.cluster.as_ref()),
        &state.engine,
        &schedule,
        Fire::default(),
        RunStart {
            triggered_at: now,
            trigger: ExecutionTrigger::Manual,
            created_by: caller.name,
            now,
        },
    )
    .await?;
    state.scheduler.wake();
    match started {
        Started::Task(_, task) => Ok(done(task.task_id, "Scheduled task triggered successfully")),
        Started::NotCreated(execution) => Err(ApiError::Internal(anyhow::anyhow!(
            "trigger of {id}: {}",
            execution.error_message
        ))),
        Started::Lost => Err(ApiError::ScheduleNotFound(id)),
    }
}

/// `GET /api/v1/scheduled-tasks/{id}/executions?offset=&limit=`: newest first.
#[utoipa::path(
    get, path = "/api/v1/scheduled-tasks/{id}/executions", operation_id = "listExecutions", tag = "scheduled-tasks",
    params(
        ("id" = String, Path, description = "Scheduled task id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 10)"),
        ("offset" = Option<u64>, Query, minimum = 0, description = "Items to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "A page of executions, newest first", body = ExecutionList),
        (status = 400, description = "Bad id, limit or offset", body = ErrorBody),
        (status = 404, description = "No such scheduled task", body = ErrorBody),
    )
)]
pub async fn executions(
    State(state): State<AppState>,
    PathId(id): PathId,
    params: QueryParams,
) -> Result<Json<ExecutionList>, ApiError> {
    let (limit, offset) = params.page()?;
    load(&state, &id).await?;
    let (executions, total) = state.schedules.list_executions(&id, limit, offset).await?;
    Ok(Json(ExecutionList {
        executions,
        total,
        limit,
        offset,
    }))
}

/// `GET /api/v1/scheduled-tasks/{id}/executions/{executionId}`.
#[utoipa::path(
    get, path = "/api/v1/scheduled-tasks/{id}/executions/{execution_id}", operation_id = "getExecution", tag = "scheduled-tasks",
    params(
        ("id" = String, Path, description = "Scheduled task id"),
        ("execution_id" = String, Path, description = "Execution number (1, 2, ...)"),
    ),
    responses(
        (status = 200, description = "The execution", body = Execution),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such scheduled task or execution", body = ErrorBody),
    )
)]
pub async fn execution(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Execution>, ApiError> {
    let Path((id, raw)) = path.map_err(|rejection| ApiError::InvalidParameter {
        name: "id".to_owned(),
        message: rejection.body_text(),
    })?;
    load(&state, &id).await?;
    let not_found = || ApiError::ExecutionNotFound {
        scheduled_task_id: id.clone(),
        execution_id: raw.clone(),
    };
    let execution_id: u64 = raw.parse().map_err(|_| not_found())?;
    state
        .schedules
        .get_execution(&id, execution_id)
        .await?
        .map(Json)
        .ok_or_else(not_found)
}
