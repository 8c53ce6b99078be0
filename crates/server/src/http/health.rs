//! `/healthz` (the process serves) and `/readyz` (its dependencies answer).

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use chrono::SecondsFormat;
use serde::Serialize;

use super::error::ApiError;
use super::AppState;

/// How long `/readyz` waits for each dependency.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Body of `GET /healthz`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Always `healthy`: answering at all is the signal.
    pub status: &'static str,
    /// `connected` when the API server answered recently, else `disconnected`.
    pub kubernetes: &'static str,
    /// Server time, RFC 3339 UTC.
    pub timestamp: String,
}

/// Body of `GET /readyz` when ready.
#[derive(Debug, Serialize)]
pub struct Ready {
    /// `ready`.
    pub status: &'static str,
    /// `ok`.
    pub store: &'static str,
    /// `ok`.
    pub kubernetes: &'static str,
}

/// `GET /healthz`: liveness; never touches the network.
pub async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
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
