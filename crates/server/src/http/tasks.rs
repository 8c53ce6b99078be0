//! `/api/v1/tasks`: create, list, get and cancel prewarm tasks.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prewarm_api::{
    ActionResponse, CreateTaskRequest, NodeImageStatus, NodeResultList, Task, TaskCreated,
    TaskList, TaskPlan, TaskStatus,
};

use prewarm_api::ErrorBody;

use super::error::ApiError;
use super::extract::{int_in_range, parse_bool, AppJson, PathId, QueryParams};
use super::guard::{AuditTarget, Caller};
use super::AppState;
use crate::domain::node_pull::image_results;
use crate::domain::task::TaskSpec;
use crate::engine::node_of;
use crate::engine::submit::submit_task;
use crate::store::{CancelOutcome, StoreError};

/// `POST /api/v1/tasks`: validates and stores a pending task, wakes the engine.
/// A `fromWorkload` is checked here and read when the task starts.
#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    operation_id = "createTask",
    tag = "tasks",
    request_body = CreateTaskRequest,
    params(
        ("dryRun" = Option<bool>, Query, description = "Answer 200 with the plan instead: nothing is stored, nothing is created"),
    ),
    responses(
        (status = 200, description = "`dryRun=true`: what the task would do now", body = TaskPlan),
        (status = 201, description = "Stored as pending; the engine starts it soon", body = TaskCreated,
         headers(("Location" = String, description = "URL of the new task"))),
        (status = 400, description = "Malformed JSON, a wrong type, an unknown field (or `fromWorkload` kind) or a rule broken", body = ErrorBody),
        (status = 404, description = "`fromWorkload` names no existing workload", body = ErrorBody),
        (status = 422, description = "The workload cannot be used: a pull secret it names is missing from the service's namespace, or it may not be read", body = ErrorBody),
        (status = 503, description = "The Kubernetes API did not answer the workload read", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: QueryParams,
    AppJson(request): AppJson<CreateTaskRequest>,
) -> Result<Response, ApiError> {
    let dry_run = params.parse("dryRun", parse_bool)?.unwrap_or(false);
    if let Some(url) = &request.webhook_url {
        crate::domain::task::validate_webhook_url(url)?;
        state.webhooks.check_url(url)?;
    }
    let spec = TaskSpec::from_request(request)?;
    // The reference is checked now (404/422/503); the engine reads the
    // workload again when the task starts, and records what it found.
    let resolved = super::workload::resolve(&state, spec.clone()).await?;
    if dry_run {
        let plan = super::nodes::dry_run_plan(
            &state,
            &state.cluster.nodes(),
            &resolved,
            state.clock.now(),
        )
        .await;
        return Ok(Json(plan).into_response());
    }
    let task = submit_task(
        state.store.as_ref(),
        &state.engine,
        state.clock.as_ref(),
        &spec,
        &caller.name,
    )
    .await?;
    let location = HeaderValue::try_from(format!("/api/v1/tasks/{}", task.task_id))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let body = TaskCreated {
        task,
        message: "Task created successfully".to_owned(),
    };
    let target = AuditTarget(body.task.task_id.clone());
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response();
    response.extensions_mut().insert(target);
    Ok(response)
}

/// `GET /api/v1/tasks?status=&limit=&offset=`: a page of tasks, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    operation_id = "listTasks",
    tag = "tasks",
    params(
        ("status" = Option<TaskStatus>, Query, description = "Only tasks with this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 10)"),
        ("offset" = Option<u64>, Query, minimum = 0, description = "Tasks to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "A page of tasks, newest first", body = TaskList),
        (status = 400, description = "Bad status, limit or offset", body = ErrorBody),
    )
)]
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
    let (limit, offset) = params.page()?;
    let (tasks, total) = state.store.list(status, limit, offset).await?;
    Ok(Json(TaskList {
        tasks,
        total,
        limit,
        offset,
    }))
}

/// `GET /api/v1/tasks/{id}`: one task view.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    operation_id = "getTask",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task view", body = Task),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<Task>, ApiError> {
    match state.store.get(&id).await? {
        Some(task) => Ok(Json(task)),
        None => Err(ApiError::TaskNotFound(id)),
    }
}

/// Page size of `GET /api/v1/tasks/{id}/nodes` when `limit` is absent.
pub const DEFAULT_NODES_LIMIT: u32 = 100;
/// Largest `limit` of `GET /api/v1/tasks/{id}/nodes`.
pub const MAX_NODES_LIMIT: u32 = 1_000;

/// `GET /api/v1/tasks/{id}/nodes?status=&image=&limit=&offset=`: a page of
/// the task's (node, image) results as recorded so far.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/nodes",
    operation_id = "listTaskNodes",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "Task id"),
        ("status" = Option<NodeImageStatus>, Query, description = "Only results with this status"),
        ("image" = Option<String>, Query, description = "Only this image (as given in the task)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("offset" = Option<u64>, Query, minimum = 0, description = "Results to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "A page of (node, image) results by node name, then image order. \
A node appears once its first outcome (or retry) is recorded; every node of an ended task appears.", body = NodeResultList),
        (status = 400, description = "Bad status, image, limit or offset", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn nodes(
    State(state): State<AppState>,
    PathId(id): PathId,
    params: QueryParams,
) -> Result<Json<NodeResultList>, ApiError> {
    let status = params.parse("status", |raw| {
        NodeImageStatus::parse(raw).ok_or_else(|| {
            let known: Vec<&str> = NodeImageStatus::ALL.iter().map(|s| s.as_str()).collect();
            format!("must be one of {}, got {raw:?}", known.join(", "))
        })
    })?;
    let limit = params
        .parse("limit", int_in_range(1, MAX_NODES_LIMIT))?
        .unwrap_or(DEFAULT_NODES_LIMIT);
    let offset = params
        .parse("offset", int_in_range(0, u64::MAX))?
        .unwrap_or(0);
    let Some(task) = state.store.get(&id).await? else {
        return Err(ApiError::TaskNotFound(id));
    };
    let image = params.parse("image", |raw| {
        task.images
            .iter()
            .any(|i| i == raw)
            .then(|| raw.to_owned())
            .ok_or_else(|| format!("{raw:?} is not one of the task's images"))
    })?;
    let mut pulls = state
        .store
        .nodes(&id)
        .await?
        .iter()
        .map(|record| {
            node_of(record).map_err(|message| StoreError::Corrupt {
                id: id.clone(),
                message,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    pulls.sort_by(|a, b| a.node.cmp(&b.node));
    let matching = pulls
        .iter()
        .flat_map(|pull| image_results(&task.images, pull))
        .filter(|r| status.is_none_or(|s| r.status == s))
        .filter(|r| image.as_ref().is_none_or(|i| &r.image == i));
    let mut total = 0u64;
    let mut page = Vec::new();
    for result in matching {
        if total >= offset && page.len() < limit as usize {
            page.push(result);
        }
        total += 1;
    }
    Ok(Json(NodeResultList {
        nodes: page,
        total,
        limit,
        offset,
    }))
}

/// `DELETE /api/v1/tasks/{id}`: cancels a pending or running task.
#[utoipa::path(
    delete,
    path = "/api/v1/tasks/{id}",
    operation_id = "cancelTask",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "Cancelled", body = ActionResponse),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task already ended (`status` says how)", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<ActionResponse>, ApiError> {
    match state.store.cancel(&id, state.clock.now()).await? {
        CancelOutcome::Cancelled(task) => {
            // A pending task has no engine run to publish its end; live readers learn it here.
            state.progress.publish(&task);
            state.engine.wake();
            if task.started_at.is_none() {
                // Never started: the engine will not see it end, so notify here.
                state.webhooks.notify(&task);
            }
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
