//! `GET /api/v1/whoami`: the caller's token name and role, so a client (the
//! web UI) can offer only the actions that role may take, without trying them.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::guard::Caller;
use super::AppState;

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
}

/// `GET /api/v1/whoami`: who the request's token belongs to.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    operation_id = "whoami",
    tag = "operations",
    responses((status = 200, description = "The caller: token name and role", body = WhoAmI))
)]
pub async fn whoami(State(state): State<AppState>, Caller(identity): Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: identity.name,
        role: identity.role.as_str().to_owned(),
        auth: !state.guard.auth.is_open(),
    })
}
