//! `/healthz` (the process serves) and `/readyz` (its dependencies answer).

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use chrono::SecondsFormat;
use prewarm_api::ErrorBody;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;

/// How long `/readyz` waits for each dependency.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Body of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `healthy`: answering at all is the signal.
    pub status: &'static str,
    /// `connected` when the API server answered recently, else `disconnected`.
    pub kubernetes: &'static str,
    /// Server time, RFC 3339 UTC.
    pub timestamp: String,
    /// `tokens` when bearer tokens are required, `open` when anyone may call.
    pub auth: &'static str,
    /// Set while the API is open to anyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<&'static str>,
    /// The replica that answered (absent when the service takes no Lease).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The replica holding the Lease and running the engine, as last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// What `/healthz` and the start-up log say while no token is configured.
pub const OPEN_WARNING: &str =
    "authentication is off: no token file is configured, so anyone may create and cancel tasks";

/// Body of `GET /readyz` when ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ready`.
    pub status: &'static str,
    /// `ok`.
    pub store: &'static str,
    /// `ok`.
    pub kubernetes: &'static str,
}

/// `GET /healthz`: liveness; never touches the network.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The process serves", body = Health))
)]
pub async fn healthz(
    State(state): State<AppState>,
    leadership: Option<axum::Extension<std::sync::Arc<crate::leadership::LeaderState>>>,
) -> Json<Health> {
    let open = state.guard.auth.is_open();
    Json(Health {
        replica: leadership.as_ref().map(|l| l.replica().to_owned()),
        leader: leadership.and_then(|l| l.leader()),
        auth: if open { "open" } else { "tokens" },
        warning: open.then_some(OPEN_WARNING),
        status: "healthy",
        kubernetes: if state.cluster.connected() {
            "connected"
        } else {
            "disconnected"
        },
        timestamp: state.clock.now().to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

/// `GET /readyz`: 200 when the store and the Kubernetes API both answer
/// within [`PROBE_TIMEOUT`], else 503 naming the failing one(s).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "The store and the Kubernetes API answer", body = Ready),
        (status = 503, description = "A dependency failed; `store`/`kubernetes` say which (`ok`/`error`)", body = ErrorBody),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let (store, kubernetes) = tokio::join!(
        probe("store", state.store.ping()),
        probe("kubernetes", state.cluster.probe()),
    );
    if store.is_none() && kubernetes.is_none() {
        Ok(Json(Ready {
            status: "ready",
            store: "ok",
            kubernetes: "ok",
        }))
    } else {
        Err(ApiError::NotReady { store, kubernetes })
    }
}

/// `None` when `check` succeeds in time, else a client-safe summary (the cause is logged).
async fn probe<E: std::fmt::Display>(
    name: &str,
    check: impl Future<Output = Result<(), E>>,
) -> Option<String> {
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => {
            tracing::warn!(dependency = name, error = %err, "readiness probe failed");
            Some("probe failed".to_owned())
        }
        Err(_) => {
            tracing::warn!(dependency = name, "readiness probe timed out");
            Some(format!("no answer within {}s", PROBE_TIMEOUT.as_secs()))
        }
    }
}
