//! The HTTP API: routes, shared state and the layers every request passes.
//!
//! Handlers only parse the request and call the store, the domain or the
//! engine handle; `error::ApiError` is the one place that picks status codes,
//! so every failure, including unknown routes, wrong methods, oversized bodies
//! and timeouts, answers in the API's error shape (docs/api.md).

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{Method, Request, Uri};
use axum::routing::get;
use axum::{BoxError, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::engine::keep_warm::KeepWarmHandle;
use crate::engine::scheduler::SchedulerHandle;
use crate::engine::EngineHandle;
use crate::metrics::{HttpLabels, Metrics, RouteLabels};
use crate::progress::ProgressHub;
use crate::store::{PolicyStore, ScheduleStore, TaskStore};

pub mod audit;
pub mod auth;
pub mod client_addr;
pub mod coverage;
pub mod error;
pub mod extract;
pub mod guard;
pub mod health;
pub mod keep_warm;
pub mod nodes;
pub mod openapi;
pub mod rate_limit;
pub mod schedules;
pub mod serve;
pub mod stream;
pub mod tasks;
pub mod tls;
pub mod ui;
pub mod whoami;
pub mod workload;

pub use error::ApiError;

/// Largest accepted request body (1 MiB); larger ones get 413.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Longest a request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most requests handled at once; further ones wait for a slot.
pub const MAX_CONCURRENT_REQUESTS: usize = 1024;

/// What every handler can reach: the two I/O boundaries, the engine's
/// doorbell and the clock.
#[derive(Clone)]
pub struct AppState {
    /// Where tasks live.
    pub store: Arc<dyn TaskStore>,
    /// The Kubernetes view (for health and readiness).
    pub cluster: Arc<dyn Cluster>,
    /// Tells the engine a task was created or cancelled.
    pub engine: EngineHandle,
    /// Source of `createdAt`, `finishedAt` and task id dates.
    pub clock: Arc<dyn Clock>,
    /// Every metric, served at `/metrics` and fed by the HTTP layer.
    pub metrics: Arc<Metrics>,
    /// Live task views for streaming readers.
    pub progress: Arc<ProgressHub>,
    /// Where scheduled tasks and their executions live.
    pub schedules: Arc<dyn ScheduleStore>,
    /// Tells the cron scheduler a schedule changed.
    pub scheduler: SchedulerHandle,
    /// Where keep-warm policies and their runs live.
    pub policies: Arc<dyn PolicyStore>,
    /// Tells the keep-warm controller a policy changed.
    pub keep_warm: KeepWarmHandle,
    /// Learned node pull speeds.
    pub node_speeds: Arc<dyn crate::store::NodeSpeedStore>,
    /// Authentication, rate limits and the audit log.
    pub guard: Arc<guard::Guard>,
    /// End-of-task webhooks (and their create-time address check).
    pub webhooks: Arc<crate::webhook::Webhooks>,
    /// Nodes' image match keys for coverage, kept between requests.
    pub image_keys: Arc<crate::domain::coverage::ImageKeyCache>,
}

/// The whole API as one router, layers included.
pub fn router(state: AppState) -> Router {
    router_with_timeout(state, REQUEST_TIMEOUT)
}

/// [`router`] with its request timeout as given.
///
/// The probes (`/healthz`, `/readyz`, `/metrics`) sit outside the API's
/// concurrency cap and request timeout, and the guard leaves them unlimited,
/// so a flood of slow API requests cannot starve a liveness probe.
pub fn router_with_timeout(state: AppState, request_timeout: Duration) -> Router {
    let api_layers = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(layer_error))
        .timeout(request_timeout)
        .layer(GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    let api = Router::new()
        .route("/api/v1/tasks", get(tasks::list).post(tasks::create))
        .route("/api/v1/tasks/{id}", get(tasks::get).delete(tasks::cancel))
        .route("/api/v1/tasks/{id}/nodes", get(tasks::nodes))
        .route("/api/v1/tasks/{id}/watch", get(stream::watch))
        .route("/api/v1/tasks/{id}/events", get(stream::events))
        .route("/api/v1/coverage", get(coverage::get))
        .route("/api/v1/nodes/stats", get(nodes::stats))
        .merge(schedules::routes())
        .merge(keep_warm::routes())
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .merge(openapi::swagger_ui())
        .route("/api/v1/whoami", get(whoami::whoami))
        .merge(ui::routes())
        .layer(api_layers);

    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics_text))
        .merge(api)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(route_not_found)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .with_state(state)
}

/// Counts and times every matched request by method, route template and code.
async fn record_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", MatchedPath::as_str)
        .to_owned();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .http_duration
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            code: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

/// `GET /metrics`: the Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Prometheus/OpenMetrics text", body = String,
               content_type = "application/openmetrics-text"))
)]
pub async fn metrics_text(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// One span per request, named by the route template so ids don't explode
/// cardinality; bodies and query strings are never recorded.
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", MatchedPath::as_str);
    tracing::info_span!("request", method = %req.method(), route)
}

async fn layer_error(err: BoxError) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::Timeout
    } else {
        ApiError::Internal(anyhow::anyhow!(err))
    }
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

#[cfg(test)]
mod schedule_tests;
#[cfg(test)]
pub(crate) mod tests;
