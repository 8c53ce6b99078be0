//! `ApiError`: every way a request can fail, and the one place that turns a
//! failure into a status code and the API's error body
//! `{"error": "<title>", "details": "<what exactly>", "taskId"?, "status"?}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prewarm_api::{ErrorBody, TaskStatus};
use serde::Serialize;

use crate::domain::task::ValidationError;
use crate::store::StoreError;

/// A failed request. Handlers and extractors return it; `IntoResponse` picks
/// the status code and body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not the expected JSON (syntax, type, unknown or missing field).
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    /// The body is not declared as JSON.
    #[error("unsupported content type: {0}")]
    ContentType(String),
    /// The body is well-formed JSON but a field breaks a rule.
    #[error("validation failed: {0}")]
    Validation(#[from] ValidationError),
    /// A query or path parameter has a bad value.
    #[error("invalid parameter {name}: {message}")]
    InvalidParameter {
        /// The parameter's name.
        name: String,
        /// What is wrong with its value.
        message: String,
    },
    /// The body exceeds the size limit (bytes).
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// No task with this id.
    #[error("task {0} not found")]
    TaskNotFound(String),
    /// The task has ended; it cannot be cancelled.
    #[error("task {task_id} already {status}")]
    TaskEnded {
        /// The task.
        task_id: String,
        /// How it ended.
        status: TaskStatus,
    },
    /// No scheduled task with this id.
    #[error("scheduled task {0} not found")]
    ScheduleNotFound(String),
    /// No keep-warm policy with this id.
    #[error("keep-warm policy {0} not found")]
    PolicyNotFound(String),
    /// The scheduled task has no execution with this id.
    #[error("execution {execution_id} of scheduled task {scheduled_task_id} not found")]
    ExecutionNotFound {
        /// The scheduled task.
        scheduled_task_id: String,
        /// The execution id as given.
        execution_id: String,
    },
    /// The `fromWorkload` of a request names no existing workload.
    #[error("workload {0} not found")]
    WorkloadNotFound(String),
    /// Well-formed, but what it refers to cannot be used.
    #[error("{title}: {details}")]
    Unprocessable {
        /// Short title.
        title: String,
        /// What exactly.
        details: String,
    },
    /// The Kubernetes API did not answer a read the request needs.
    #[error("kubernetes API unavailable: {0}")]
    KubernetesUnavailable(String),
    /// No route for this path.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// The path exists but not with this method.
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// A WebSocket route was called without a valid upgrade handshake.
    #[error("websocket upgrade required: {0}")]
    UpgradeRequired(String),
    /// The request took longer than the server allows.
    #[error("request timed out")]
    Timeout,
    /// `/readyz`: a dependency did not answer. Each field is `None` when that
    /// dependency is fine, else what went wrong with it.
    #[error("not ready")]
    NotReady {
        /// The task store's failure.
        store: Option<String>,
        /// The Kubernetes API's failure.
        kubernetes: Option<String>,
    },
    /// No bearer token, or one that matches no configured token.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The caller's role may not use this route.
    #[error("role {role} may not do this (needs {needed})")]
    Forbidden {
        /// The caller's role.
        role: &'static str,
        /// The least role the route needs.
        needed: &'static str,
    },
    /// The caller's rate limit is spent; try again after this long.
    #[error("rate limited")]
    RateLimited(std::time::Duration),
    /// The store did not answer (a shared Redis that is away); the cause is logged.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// A bug or a backend failure; logged, never shown to the client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => ApiError::StoreUnavailable(cause),
            err => ApiError::Internal(anyhow::Error::new(err).context("task store")),
        }
    }
}

/// Body of a 503 from `/readyz`: the error shape plus the probe summary.
#[derive(Serialize)]
struct NotReadyBody {
    #[serde(flatten)]
    error: ErrorBody,
    store: &'static str,
    kubernetes: &'static str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = |error: &str, details: Option<String>| ErrorBody {
            error: error.to_owned(),
            details,
            task_id: None,
            status: None,
        };
        let (code, body) = match self {
            ApiError::InvalidBody(details) => (
                StatusCode::BAD_REQUEST,
                body("Invalid request body", Some(details)),
            ),
            ApiError::ContentType(details) => (
                StatusCode::BAD_REQUEST,
                body("Unsupported content type", Some(details)),
            ),
            ApiError::Validation(err) => (
                StatusCode::BAD_REQUEST,
                body("Validation failed", Some(err.to_string())),
            ),
            ApiError::InvalidParameter { name, message } => (
                StatusCode::BAD_REQUEST,
                body("Invalid parameter", Some(format!("{name}: {message}"))),
            ),
            ApiError::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                body(
                    "Request body too large",
                    Some(format!("the body must be at most {limit} bytes")),
                ),
            ),
            ApiError::TaskNotFound(id) => (
                StatusCode::NOT_FOUND,
                ErrorBody {
                    details: Some(format!("no task with id {id}")),
                    task_id: Some(id),
                    ..body("Task not found", None)
                },
            ),
            ApiError::TaskEnded { task_id, status } => (
                StatusCode::CONFLICT,
                ErrorBody {
                    details: Some(format!(
                        "task {task_id} is {status}; only pending or running tasks can be cancelled"
                    )),
                    task_id: Some(task_id),
                    status: Some(status.as_str().to_owned()),
                    ..body(&format!("Task already {status}"), None)
                },
            ),
            ApiError::ScheduleNotFound(id) => (
                StatusCode::NOT_FOUND,
                ErrorBody {
                    details: Some(format!("no scheduled task with id {id}")),
                    task_id: Some(id),
                    ..body("Scheduled task not found", None)
                },
            ),
            ApiError::PolicyNotFound(id) => (
                StatusCode::NOT_FOUND,
                ErrorBody {
                    details: Some(format!("no keep-warm policy with id {id}")),
                    task_id: Some(id),
                    ..body("Keep-warm policy not found", None)
                },
            ),
            ApiError::ExecutionNotFound {
                scheduled_task_id,
                execution_id,
            } => (
                StatusCode::NOT_FOUND,
                ErrorBody {
                    details: Some(format!(
                        "scheduled task {scheduled_task_id} has no execution {execution_id}"
                    )),
                    task_id: Some(scheduled_task_id),
                    ..body("Execution not found", None)
                },
            ),
            ApiError::WorkloadNotFound(what) => (
                StatusCode::NOT_FOUND,
                body("Workload not found", Some(format!("no {what}"))),
            ),
            ApiError::Unprocessable { title, details } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                body(&title, Some(details)),
            ),
            ApiError::KubernetesUnavailable(details) => (
                StatusCode::SERVICE_UNAVAILABLE,
                body("Kubernetes API unavailable", Some(details)),
            ),
            ApiError::RouteNotFound(path) => (
                StatusCode::NOT_FOUND,
                body("Not found", Some(format!("no route for {path}"))),
            ),
            ApiError::MethodNotAllowed { method, path } => (
                StatusCode::METHOD_NOT_ALLOWED,
                body(
                    "Method not allowed",
                    Some(format!("{method} is not supported on {path}")),
                ),
            ),
            ApiError::UpgradeRequired(details) => (
                StatusCode::BAD_REQUEST,
                body("WebSocket upgrade required", Some(details)),
            ),
            ApiError::StoreUnavailable(cause) => {
                tracing::warn!(error = %cause, "store unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    body(
                        "Store unavailable",
                        Some("the task store did not answer; try again shortly".to_owned()),
                    ),
                )
            }
            ApiError::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                body(
                    "Request timeout",
                    Some("the request took too long to process".to_owned()),
                ),
            ),
            ApiError::NotReady { store, kubernetes } => {
                let failing: Vec<String> = [("store", &store), ("kubernetes", &kubernetes)]
                    .into_iter()
                    .filter_map(|(name, failure)| Some(format!("{name}: {}", failure.as_ref()?)))
                    .collect();
                let verdict = |failure: &Option<String>| match failure {
                    None => "ok",
                    Some(_) => "error",
                };
                let body = NotReadyBody {
                    error: ErrorBody {
                        status: Some("not ready".to_owned()),
                        ..body("Not ready", Some(failing.join("; ")))
                    },
                    store: verdict(&store),
                    kubernetes: verdict(&kubernetes),
                };
                return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
            }
            ApiError::Unauthorized(details) => {
                let mut response = (
                    StatusCode::UNAUTHORIZED,
                    Json(body("Unauthorized", Some(details))),
                )
                    .into_response();
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer realm=\"prewarm\""),
                );
                return response;
            }
            ApiError::Forbidden { role, needed } => (
                StatusCode::FORBIDDEN,
                body(
                    "Forbidden",
                    Some(format!("role {role} may not do this; it needs {needed}")),
                ),
            ),
            ApiError::RateLimited(wait) => {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(body(
                        "Too many requests",
                        Some(format!("rate limit exceeded; retry in {secs}s")),
                    )),
                )
                    .into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(secs),
                );
                return response;
            }
            ApiError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    body("Internal error", None),
                )
            }
        };
        (code, Json(body)).into_response()
    }
}
