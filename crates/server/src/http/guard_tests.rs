//! The guard through the real router: every route × (no token, bad token,
//! viewer, operator, admin), the audit lines of mutating and refused calls,
//! rate limits, and `createdBy`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

use super::super::audit::AuditLog;
use super::super::auth::{parse_token_file, required_role, token_digest, Authenticator, Role};
use super::super::rate_limit::Limit;
use super::Guard;
use crate::testing::{request, TestApp};

const OFF: Limit = Limit { rps: 0.0, burst: 0 };

struct Rig {
    app: TestApp,
    audit_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn tokens() -> String {
    format!(
        "root admin {}\nops operator {}\nlook viewer {}\n",
        token_digest("admin-token"),
        token_digest("operator-token"),
        token_digest("viewer-token")
    )
}

fn rig(auth: Authenticator, writes: Limit) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.log");
    let audit = AuditLog::file(&audit_path).unwrap();
    let app = TestApp::builder()
        .guard(move |clock| Guard::new(Arc::new(auth), OFF, writes, audit, clock))
        .build();
    Rig {
        app,
        audit_path,
        _dir: dir,
    }
}

impl Rig {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let reply = self
            .app
            .send(request(method, uri, token, body.as_ref()))
            .await;
        let body = reply.json_or_null();
        (reply.status, reply.headers, body)
    }

    async fn new_task(&self) -> String {
        let (s, _, v) = self
            .call(
                Method::POST,
                "/api/v1/tasks",
                Some("admin-token"),
                Some(json!({"images": ["nginx:1.25"]})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["taskId"].as_str().unwrap().to_owned()
    }

    async fn new_schedule(&self) -> String {
        let (s, _, v) = self
            .call(
                Method::POST,
                "/api/v1/scheduled-tasks",
                Some("admin-token"),
                body_for(&Method::POST, "/api/v1/scheduled-tasks"),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let (s, _, v) = self
            .call(
                Method::POST,
                &format!("/api/v1/scheduled-tasks/{id}/trigger"),
                Some("admin-token"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        id
    }

    async fn new_policy(&self) -> String {
        let (s, _, v) = self
            .call(
                Method::POST,
                "/api/v1/keep-warm",
                Some("admin-token"),
                body_for(&Method::POST, "/api/v1/keep-warm"),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A body that passes validation for routes that take one.
fn body_for(method: &Method, route: &str) -> Option<Value> {
    match (method.as_str(), route) {
        ("POST", "/api/v1/tasks") => Some(json!({"images": ["nginx:1.25"]})),
        ("POST", "/api/v1/scheduled-tasks") => Some(json!({
            "name": "nightly", "cronExpr": "0 3 * * *",
            "taskConfig": {"images": ["nginx:1.25"]}
        })),
        ("PUT", "/api/v1/scheduled-tasks/{id}") => Some(json!({"description": "x"})),
        ("POST", "/api/v1/keep-warm") => Some(json!({"name": "pool", "images": ["nginx:1.25"]})),
        ("PUT", "/api/v1/keep-warm/{id}") => Some(json!({"batchSize": 3})),
        _ => None,
    }
}

#[tokio::test]
async fn every_route_by_every_caller() {
    let r = rig(
        Authenticator::with_tokens(parse_token_file(&tokens()).unwrap()),
        OFF,
    );
    let callers: [(Option<&str>, Option<Role>); 5] = [
        (None, None),
        (Some("not-a-token"), None),
        (Some("viewer-token"), Some(Role::Viewer)),
        (Some("operator-token"), Some(Role::Operator)),
        (Some("admin-token"), Some(Role::Admin)),
    ];
    let mut checked = 0;
    for (method, route, needed) in super::super::auth::ROUTE_ROLES {
        // Routes of features not mounted in this build answer the fallback 404.
        let probe = route.replace("{id}", "x").replace("{execution_id}", "1");
        let (s, _, v) = r
            .call(method.clone(), &probe, Some("admin-token"), None)
            .await;
        if s == StatusCode::NOT_FOUND && v["error"] == "Not found" {
            continue;
        }
        checked += 1;
        for (token, role) in callers {
            let id = if route.starts_with("/api/v1/scheduled-tasks/") {
                r.new_schedule().await
            } else if route.starts_with("/api/v1/keep-warm/") {
                r.new_policy().await
            } else {
                r.new_task().await
            };
            let uri = route.replace("{id}", &id).replace("{execution_id}", "1");
            let (s, headers, v) = r
                .call(method.clone(), &uri, token, body_for(method, route))
                .await;
            match role {
                None => {
                    assert_eq!(
                        s,
                        StatusCode::UNAUTHORIZED,
                        "{method} {route} {token:?}: {v}"
                    );
                    assert!(headers[header::WWW_AUTHENTICATE]
                        .to_str()
                        .unwrap()
                        .starts_with("Bearer"));
                    assert_eq!(v["error"], "Unauthorized");
                }
                Some(role) if role < *needed => {
                    assert_eq!(s, StatusCode::FORBIDDEN, "{method} {route} {role:?}: {v}");
                    assert_eq!(v["error"], "Forbidden");
                }
                Some(role) => {
                    // A plain GET on the WebSocket route got past the guard when
                    // it is refused only for lacking the upgrade.
                    let upgrade_refused =
                        route.ends_with("/watch") && v["error"] == "WebSocket upgrade required";
                    assert!(
                        s.is_success() || upgrade_refused,
                        "{method} {route} {role:?}: {s} {v}"
                    );
                }
            }
        }
    }
    assert!(checked >= 14, "only {checked} routes mounted");
    // Public routes need no token.
    for uri in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        let (s, _, _) = r.call(Method::GET, uri, None, None).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
        assert_eq!(required_role(&Method::GET, uri), None);
    }
    let (s, _, v) = r.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["auth"], "tokens");
    assert!(v.get("warning").is_none());
}

#[tokio::test]
async fn mutating_and_refused_calls_are_audited_without_tokens() {
    let r = rig(
        Authenticator::with_tokens(parse_token_file(&tokens()).unwrap()),
        OFF,
    );
    let (s, _, created) = r
        .call(
            Method::POST,
            "/api/v1/tasks",
            Some("operator-token"),
            Some(json!({"images": ["redis:7"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = created["taskId"].as_str().unwrap();
    assert_eq!(created["createdBy"], "ops");
    r.call(
        Method::DELETE,
        &format!("/api/v1/tasks/{id}"),
        Some("viewer-token"),
        None,
    )
    .await;
    r.call(
        Method::DELETE,
        &format!("/api/v1/tasks/{id}"),
        Some("operator-token"),
        None,
    )
    .await;
    r.call(Method::GET, "/api/v1/tasks", Some("wrong-token"), None)
        .await;
    // Reads with a good token are not audited.
    r.call(Method::GET, "/api/v1/tasks", Some("viewer-token"), None)
        .await;

    let lines = r.audit();
    let summary: Vec<(Value, Value, Value, Value, Value)> = lines
        .iter()
        .map(|l| {
            (
                l["tokenName"].clone(),
                l["method"].clone(),
                l["route"].clone(),
                l["targetId"].clone(),
                l["result"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                json!("ops"),
                json!("POST"),
                json!("/api/v1/tasks"),
                json!(id),
                json!(201)
            ),
            (
                json!("look"),
                json!("DELETE"),
                json!("/api/v1/tasks/{id}"),
                json!(id),
                json!(403)
            ),
            (
                json!("ops"),
                json!("DELETE"),
                json!("/api/v1/tasks/{id}"),
                json!(id),
                json!(200)
            ),
            (
                Value::Null,
                json!("GET"),
                json!("/api/v1/tasks"),
                Value::Null,
                json!(401)
            ),
        ]
    );
    assert_eq!(lines[0]["role"], "operator");
    assert_eq!(lines[0]["time"], "2024-01-16T10:00:00.000Z");
    let text = std::fs::read_to_string(&r.audit_path).unwrap();
    for secret in ["operator-token", "viewer-token", "wrong-token"] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
}

#[tokio::test]
async fn writes_past_the_burst_get_429_until_the_bucket_refills() {
    let r = rig(Authenticator::open(), Limit { rps: 1.0, burst: 3 });
    let create = || {
        r.call(
            Method::POST,
            "/api/v1/tasks",
            None,
            Some(json!({"images": ["nginx"]})),
        )
    };
    for _ in 0..3 {
        assert_eq!(create().await.0, StatusCode::CREATED);
    }
    let (s, headers, v) = create().await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(v["error"], "Too many requests");
    // Reads have their own (here unlimited) budget.
    let (s, _, _) = r.call(Method::GET, "/api/v1/tasks", None, None).await;
    assert_eq!(s, StatusCode::OK);
    r.app.clock.advance(Duration::from_secs(1));
    assert_eq!(create().await.0, StatusCode::CREATED);
    assert_eq!(create().await.0, StatusCode::TOO_MANY_REQUESTS);
    // The refused write is audited too, as anonymous while auth is off.
    let last = r.audit().pop().unwrap();
    assert_eq!(last["result"], 429);
    assert_eq!(last["tokenName"], "anonymous");
}

#[tokio::test]
async fn open_mode_creates_as_anonymous_and_warns_in_healthz() {
    let r = rig(Authenticator::open(), OFF);
    let (s, _, v) = r
        .call(
            Method::POST,
            "/api/v1/tasks",
            None,
            Some(json!({"images": ["nginx"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["createdBy"], "anonymous");
    let (_, _, health) = r.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health["auth"], "open");
    assert!(health["warning"]
        .as_str()
        .unwrap()
        .contains("authentication is off"));
}

#[tokio::test]
async fn schedules_and_their_triggered_tasks_name_the_caller() {
    let r = rig(
        Authenticator::with_tokens(parse_token_file(&tokens()).unwrap()),
        OFF,
    );
    let (s, _, schedule) = r
        .call(
            Method::POST,
            "/api/v1/scheduled-tasks",
            Some("operator-token"),
            body_for(&Method::POST, "/api/v1/scheduled-tasks"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{schedule}");
    assert_eq!(schedule["createdBy"], "ops");
    let sid = schedule["id"].as_str().unwrap();
    let (s, _, triggered) = r
        .call(
            Method::POST,
            &format!("/api/v1/scheduled-tasks/{sid}/trigger"),
            Some("admin-token"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{triggered}");
    let task_id = triggered["taskId"].as_str().unwrap();
    let (_, _, task) = r
        .call(
            Method::GET,
            &format!("/api/v1/tasks/{task_id}"),
            Some("viewer-token"),
            None,
        )
        .await;
    assert_eq!(task["createdBy"], "root");
    // Only admin may delete a schedule; the audit line names the schedule.
    let uri = format!("/api/v1/scheduled-tasks/{sid}");
    let (s, _, _) = r
        .call(Method::DELETE, &uri, Some("operator-token"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = r
        .call(Method::DELETE, &uri, Some("admin-token"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let audit = r.audit();
    let created = &audit[0];
    assert_eq!(created["route"], "/api/v1/scheduled-tasks");
    assert_eq!(created["targetId"], sid);
    let deleted = audit.last().unwrap();
    assert_eq!(
        (deleted["tokenName"].as_str(), deleted["result"].as_u64()),
        (Some("root"), Some(200))
    );
    assert_eq!(deleted["targetId"], sid);
}
