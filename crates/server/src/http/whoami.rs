//! `GET /api/v1/whoami`: the caller's token name and role, so a client (the
//! web UI) can offer only the actions that role may take, without trying them.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::guard::Caller;
use super::AppState;
use crate::leadership::LeaderState;

/// Body of `GET /api/v1/whoami`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    /// The token's name (`anonymous` while authentication is off).
    pub name: String,
    /// `viewer`, `operator` or `admin` (`admin` while authentication is off).
    pub role: String,
    /// Whether the service checks tokens at all.
    pub auth: bool,
    /// The replica that answered (absent when the service takes no Lease).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The replica holding the Lease and running the engine, as last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// `GET /api/v1/whoami`: who the request's token belongs to.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    operation_id = "whoami",
    tag = "operations",
    responses((status = 200, description = "The caller (token name and role), this replica and the leader", body = WhoAmI))
)]
pub async fn whoami(
    State(state): State<AppState>,
    Caller(identity): Caller,
    leadership: Option<Extension<Arc<LeaderState>>>,
) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: identity.name,
        role: identity.role.as_str().to_owned(),
        auth: !state.guard.auth.is_open(),
        replica: leadership.as_ref().map(|l| l.replica().to_owned()),
        leader: leadership.and_then(|l| l.leader()),
    })
}
