//! The gate every API route passes: authenticate the bearer token, check the
//! route's role, apply the caller's rate limit, hand the caller's identity to
//! the handler, and write the audit line for mutating or refused requests.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::audit::{AuditLog, AuditRecord};
use super::auth::{required_role, AuthOutcome, Authenticator, Identity};
use super::client_addr::TrustedProxies;
use super::error::ApiError;
use super::rate_limit::{Limit, RateLimiter};
use super::AppState;
use crate::clock::Clock;

/// Authentication, rate limits and the audit log, as configured.
pub struct Guard {
    /// The tokens in force (reloaded in place).
    pub auth: Arc<Authenticator>,
    /// Limit on reads (GET, HEAD).
    pub reads: RateLimiter,
    /// Limit on everything else.
    pub writes: RateLimiter,
    /// Where audit lines go.
    pub audit: Arc<AuditLog>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("open", &self.auth.is_open())
            .field("reads", &self.reads)
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard from its parts.
    pub fn new(
        auth: Arc<Authenticator>,
        reads: Limit,
        writes: Limit,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
    ) -> Guard {
        Guard {
            auth,
            reads: RateLimiter::new(reads, clock.clone()),
            writes: RateLimiter::new(writes, clock.clone()),
            audit,
            trusted_proxies: TrustedProxies::none(),
            clock,
        }
    }

    /// The same guard, taking the client address from `X-Forwarded-For`
    /// when the peer is one of `proxies`.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Guard {
        self.trusted_proxies = proxies;
        self
    }

    /// Open, unlimited, auditing to stdout (tests and embedding).
    pub fn open(clock: Arc<dyn Clock>) -> Guard {
        let off = Limit { rps: 0.0, burst: 0 };
        Guard::new(
            Arc::new(Authenticator::open()),
            off,
            off,
            AuditLog::stdout(),
            clock,
        )
    }
}

/// The id a handler acted on when the path does not hold it (a created
/// task's new id); put in the response extensions for the audit log.
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// The caller, as established by the guard (`anonymous` when auth is off).
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("route not behind the guard")))
    }
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD || method == Method::OPTIONS
}

/// The middleware (a `route_layer`, so the route template is known).
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let Some(needed) = required_role(&method, &route) else {
        return next.run(req).await;
    };
    let guard = &state.guard;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = peer.map(|p| guard.trusted_proxies.client(p.ip(), req.headers()));
    let mut record = AuditRecord::stamped(guard.clock.now());
    record.method = method.to_string();
    record.route = route.clone();
    record.target_id = path_id(&route, req.uri().path());
    match (peer, client) {
        (Some(peer), Some(client)) if client != peer.ip() => {
            record.client = Some(client.to_string());
            record.via = Some(peer.to_string());
        }
        _ => record.client = peer.map(|p| p.to_string()),
    }

    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = match guard.auth.check(authorization) {
        AuthOutcome::Open => Identity::anonymous(),
        AuthOutcome::Known(identity) => identity,
        AuthOutcome::Missing => {
            return refuse(
                guard,
                record,
                ApiError::Unauthorized("a bearer token is required".to_owned()),
            )
            .await
        }
        AuthOutcome::Unknown => {
            return refuse(
                guard,
                record,
                ApiError::Unauthorized("the bearer token is not valid".to_owned()),
            )
            .await
        }
    };
    record.token_name = Some(identity.name.clone());
    record.role = Some(identity.role.as_str());
    if identity.role < needed {
        let err = ApiError::Forbidden {
            role: identity.role.as_str(),
            needed: needed.as_str(),
        };
        return refuse(guard, record, err).await;
    }

    let key = if guard.auth.is_open() {
        client.map_or_else(|| "unknown".to_owned(), |c| c.to_string())
    } else {
        format!("token:{}", identity.name)
    };
    let limiter = if is_read(&method) {
        &guard.reads
    } else {
        &guard.writes
    };
    let mutating = !is_read(&method);
    if let Err(wait) = limiter.check(&key) {
        let response = ApiError::RateLimited(wait).into_response();
        if mutating {
            record.result = response.status().as_u16();
            guard.audit.write(&record).await;
        }
        return response;
    }

    req.extensions_mut().insert(identity);
    let response = next.run(req).await;
    if mutating {
        if record.target_id.is_none() {
            record.target_id = response
                .extensions()
                .get::<AuditTarget>()
                .map(|t| t.0.clone());
        }
        record.time = AuditRecord::stamped(guard.clock.now()).time;
        record.result = response.status().as_u16();
        guard.audit.write(&record).await;
    }
    response
}

async fn refuse(guard: &Guard, mut record: AuditRecord, err: ApiError) -> Response {
    let response = err.into_response();
    record.result = response.status().as_u16();
    guard.audit.write(&record).await;
    response
}

/// The value of the route's `{id}` segment in `path`.
fn path_id(route: &str, path: &str) -> Option<String> {
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(t, _)| *t == "{id}")
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::path_id;

    #[test]
    fn the_id_comes_from_the_matching_segment() {
        assert_eq!(
            path_id("/api/v1/tasks/{id}", "/api/v1/tasks/task-1"),
            Some("task-1".into())
        );
        assert_eq!(
            path_id(
                "/api/v1/scheduled-tasks/{id}/executions/{execution_id}",
                "/api/v1/scheduled-tasks/s-1/executions/3"
            ),
            Some("s-1".into())
        );
        assert_eq!(path_id("/api/v1/tasks", "/api/v1/tasks"), None);
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod matrix;
