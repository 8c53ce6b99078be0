//! `/api/v1/keep-warm`: create, list, get, update, delete, enable and
//! disable keep-warm policies. A policy's view carries its coverage (from the
//! node cache, as read) and its last runs (their tasks' status as read).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use prewarm_api::{
    ActionResponse, CreateKeepWarmPolicyRequest, ErrorBody, KeepWarmPolicy, KeepWarmPolicyList,
    TaskPlan, UpdateKeepWarmPolicyRequest,
};

use super::error::ApiError;
use super::extract::{parse_bool, AppJson, PathId, QueryParams};
use super::guard::{AuditTarget, Caller};
use super::AppState;
use crate::domain::keep_warm::{
    apply_update, generate_policy_id, new_policy, policy_coverage, policy_spec, ungated,
};
use crate::engine::submit::ID_ATTEMPTS;
use crate::store::StoreError;

/// The keep-warm routes, merged into the API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/keep-warm", get(list).post(create))
        .route(
            "/api/v1/keep-warm/{id}",
            get(get_one).put(update).delete(delete),
        )
        .route("/api/v1/keep-warm/{id}/enable", put(enable))
        .route("/api/v1/keep-warm/{id}/disable", put(disable))
}

/// The API view of a stored policy: coverage from the node cache (null when
/// its workload cannot be read now) and its runs with their tasks' status.
async fn view(state: &AppState, mut policy: KeepWarmPolicy) -> Result<KeepWarmPolicy, ApiError> {
    policy.coverage = match policy_spec(&policy) {
        Ok(spec) => super::workload::resolve(state, spec)
            .await
            .ok()
            .map(|spec| {
                policy_coverage(
                    &state.cluster.nodes(),
                    &spec,
                    policy.remove_taint.as_deref(),
                )
            }),
        Err(_) => None,
    };
    let mut runs = state.policies.policy_runs(&policy.id).await?;
    for run in &mut runs {
        if let Some(task) = state.store.get(&run.task_id).await? {
            run.status = Some(task.status);
            run.completed_nodes = task.progress.completed_nodes;
            run.failed_nodes = task.progress.failed_nodes;
        }
    }
    policy.last_runs = runs;
    Ok(policy)
}

async fn load(state: &AppState, id: &str) -> Result<KeepWarmPolicy, ApiError> {
    state
        .policies
        .get_policy(id)
        .await?
        .ok_or_else(|| ApiError::PolicyNotFound(id.to_owned()))
}

/// `POST /api/v1/keep-warm`: validates (its targeting like a task create
/// body; a `fromWorkload` is read now) and stores a policy; the nodes that
/// lack its images are warmed at once. With `dryRun=true`, answers the plan
/// of that first run instead and stores nothing.
#[utoipa::path(
    post, path = "/api/v1/keep-warm", operation_id = "createKeepWarmPolicy", tag = "keep-warm",
    request_body = CreateKeepWarmPolicyRequest,
    params(
        ("dryRun" = Option<bool>, Query, description = "Answer 200 with the plan of the first run instead: nothing is stored, nothing is created"),
    ),
    responses(
        (status = 200, description = "`dryRun=true`: what the first run would do now", body = TaskPlan),
        (status = 201, description = "Stored; its first run starts at once", body = KeepWarmPolicy,
         headers(("Location" = String, description = "URL of the new policy"))),
        (status = 400, description = "Malformed JSON, an unknown field or a rule broken", body = ErrorBody),
        (status = 404, description = "`fromWorkload` names no existing workload", body = ErrorBody),
        (status = 422, description = "The workload cannot be used (a pull secret it names is missing, or it may not be read)", body = ErrorBody),
        (status = 503, description = "The Kubernetes API did not answer the workload read", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: QueryParams,
    AppJson(request): AppJson<CreateKeepWarmPolicyRequest>,
) -> Result<Response, ApiError> {
    let dry_run = params.parse("dryRun", parse_bool)?.unwrap_or(false);
    let now = state.clock.now();
    let mut policy = new_policy(request, generate_policy_id(now), &caller.name, now)?;
    let spec = super::workload::resolve(&state, policy_spec(&policy)?).await?;
    if dry_run {
        let nodes = ungated(&state.cluster.nodes(), policy.remove_taint.as_deref());
        let plan = super::nodes::dry_run_plan(&state, &nodes, &spec, now).await;
        return Ok(Json(plan).into_response());
    }
    let mut attempts = 0;
    loop {
        match state.policies.insert_policy(&policy).await {
            Ok(()) => break,
            Err(StoreError::Duplicate(_)) if attempts + 1 < ID_ATTEMPTS => {
                attempts += 1;
                policy.id = generate_policy_id(now);
            }
            Err(err) => return Err(err.into()),
        }
    }
    state.keep_warm.wake();
    let location = HeaderValue::try_from(format!("/api/v1/keep-warm/{}", policy.id))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let target = AuditTarget(policy.id.clone());
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(&state, policy).await?),
    )
        .into_response();
    response.extensions_mut().insert(target);
    Ok(response)
}

/// `GET /api/v1/keep-warm?offset=&limit=`: a page, newest first.
#[utoipa::path(
    get, path = "/api/v1/keep-warm", operation_id = "listKeepWarmPolicies", tag = "keep-warm",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 10)"),
        ("offset" = Option<u64>, Query, minimum = 0, description = "Items to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "A page of policies", body = KeepWarmPolicyList),
        (status = 400, description = "Bad limit or offset", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<Json<KeepWarmPolicyList>, ApiError> {
    let (limit, offset) = params.page()?;
    let (stored, total) = state.policies.list_policies(limit, offset).await?;
    let mut policies = Vec::with_capacity(stored.len());
    for policy in stored {
        policies.push(view(&state, policy).await?);
    }
    Ok(Json(KeepWarmPolicyList {
        policies,
        total,
        limit,
        offset,
    }))
}

/// `GET /api/v1/keep-warm/{id}`.
#[utoipa::path(
    get, path = "/api/v1/keep-warm/{id}", operation_id = "getKeepWarmPolicy", tag = "keep-warm",
    params(("id" = String, Path, description = "Policy id")),
    responses(
        (status = 200, description = "The policy with its coverage and last runs", body = KeepWarmPolicy),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<KeepWarmPolicy>, ApiError> {
    let policy = load(&state, &id).await?;
    Ok(Json(view(&state, policy).await?))
}

/// `PUT /api/v1/keep-warm/{id}`: every field optional; present ones replace
/// the stored ones. What it learned about its nodes' failures is forgotten.
#[utoipa::path(
    put, path = "/api/v1/keep-warm/{id}", operation_id = "updateKeepWarmPolicy", tag = "keep-warm",
    params(("id" = String, Path, description = "Policy id")),
    request_body = UpdateKeepWarmPolicyRequest,
    responses(
        (status = 200, description = "The updated policy", body = KeepWarmPolicy),
        (status = 400, description = "Malformed JSON or a rule broken", body = ErrorBody),
        (status = 404, description = "No such policy (or `fromWorkload` names no existing workload)", body = ErrorBody),
        (status = 422, description = "The workload cannot be used", body = ErrorBody),
        (status = 503, description = "The Kubernetes API did not answer the workload read", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    PathId(id): PathId,
    AppJson(request): AppJson<UpdateKeepWarmPolicyRequest>,
) -> Result<Json<KeepWarmPolicy>, ApiError> {
    let current = load(&state, &id).await?;
    let reads_workload = matches!(request.from_workload, Some(Some(_)));
    let updated = apply_update(&current, request, state.clock.now())?;
    if reads_workload {
        super::workload::resolve(&state, policy_spec(&updated)?).await?;
    }
    save(&state, &updated).await?;
    Ok(Json(view(&state, updated).await?))
}

async fn save(state: &AppState, policy: &KeepWarmPolicy) -> Result<(), ApiError> {
    if !state.policies.update_policy(policy).await? {
        return Err(ApiError::PolicyNotFound(policy.id.clone()));
    }
    state.keep_warm.wake();
    Ok(())
}

/// `DELETE /api/v1/keep-warm/{id}`: the policy and its run list go; a run
/// still going finishes.
#[utoipa::path(
    delete, path = "/api/v1/keep-warm/{id}", operation_id = "deleteKeepWarmPolicy", tag = "keep-warm",
    params(("id" = String, Path, description = "Policy id")),
    responses(
        (status = 200, description = "Deleted", body = ActionResponse),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<ActionResponse>, ApiError> {
    if !state.policies.delete_policy(&id).await? {
        return Err(ApiError::PolicyNotFound(id));
    }
    state.keep_warm.wake();
    Ok(Json(ActionResponse {
        task_id: id,
        status: "success".to_owned(),
        message: "Keep-warm policy deleted successfully".to_owned(),
    }))
}

async fn set_enabled(
    state: &AppState,
    id: &str,
    enabled: bool,
) -> Result<Json<KeepWarmPolicy>, ApiError> {
    let mut policy = load(state, id).await?;
    if policy.enabled != enabled {
        policy.enabled = enabled;
        policy.updated_at = state.clock.now();
        save(state, &policy).await?;
    }
    Ok(Json(view(state, policy).await?))
}

/// `PUT /api/v1/keep-warm/{id}/enable`: nodes lacking its images are warmed at once.
#[utoipa::path(
    put, path = "/api/v1/keep-warm/{id}/enable", operation_id = "enableKeepWarmPolicy", tag = "keep-warm",
    params(("id" = String, Path, description = "Policy id")),
    responses(
        (status = 200, description = "Enabled", body = KeepWarmPolicy),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
    )
)]
pub async fn enable(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<KeepWarmPolicy>, ApiError> {
    set_enabled(&state, &id, true).await
}

/// `PUT /api/v1/keep-warm/{id}/disable`: starts no more runs (one going finishes).
#[utoipa::path(
    put, path = "/api/v1/keep-warm/{id}/disable", operation_id = "disableKeepWarmPolicy", tag = "keep-warm",
    params(("id" = String, Path, description = "Policy id")),
    responses(
        (status = 200, description = "Disabled", body = KeepWarmPolicy),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
    )
)]
pub async fn disable(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<KeepWarmPolicy>, ApiError> {
    set_enabled(&state, &id, false).await
}
