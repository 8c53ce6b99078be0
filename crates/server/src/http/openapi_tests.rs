//! Real responses of every documented operation validate against the schema
//! the served document declares for that operation and status code, and
//! every route the router serves is documented.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::testing::TestApp;

/// Sends `method uri` (with `body` as JSON); the status, the content type and the body.
async fn call(
    app: &TestApp,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (u16, String, Vec<u8>) {
    let reply = app.call(method, uri, body.as_ref()).await;
    (
        reply.status.as_u16(),
        reply.content_type().to_owned(),
        reply.body.to_vec(),
    )
}

/// Checks one real response against the served document.
fn validate(doc: &Value, template: &str, method: &str, status: u16, ctype: &str, body: &[u8]) {
    let op = &doc["paths"][template][method];
    assert!(op.is_object(), "{method} {template} is not documented");
    let response = &op["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {template} answered {status}, which is not documented"
    );
    let content = response["content"].as_object().expect("documented content");
    let essence = ctype.split(';').next().unwrap().trim();
    let media = content
        .get(essence)
        .unwrap_or_else(|| panic!("{method} {template} {status}: {essence} not documented"));
    if essence != "application/json" {
        return;
    }
    let instance: Value = serde_json::from_slice(body).expect("JSON body");
    let mut schema = media["schema"].clone();
    schema["components"] = doc["components"].clone();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status} breaks its schema: {errors:#?}\n{instance:#}"
    );
}

#[tokio::test]
async fn real_responses_validate_against_the_served_document() {
    let app = TestApp::new();
    let (s, _, bytes) = call(&app, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_slice(&bytes).unwrap();

    let (s, ct, created) = call(
        &app,
        Method::POST,
        "/api/v1/tasks",
        Some(
            json!({"images": ["nginx:1.25", "redis:7"], "nodeSelector": {"a": "b"},
                    "webhookUrl": "https://hooks.example.com/x", "priorityClassName": "low"}),
        ),
    )
    .await;
    validate(&doc, "/api/v1/tasks", "post", s, &ct, &created);
    let id = serde_json::from_slice::<Value>(&created).unwrap()["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = format!("/api/v1/tasks/{id}");

    let cases: Vec<(Method, String, &str, Option<Value>, u16)> = vec![
        (
            Method::POST,
            "/api/v1/tasks".into(),
            "/api/v1/tasks",
            Some(json!({"images": []})),
            400,
        ),
        (
            Method::POST,
            "/api/v1/tasks".into(),
            "/api/v1/tasks",
            Some(json!({"images": ["a"], "bogus": 1})),
            400,
        ),
        (
            Method::GET,
            "/api/v1/tasks".into(),
            "/api/v1/tasks",
            None,
            200,
        ),
        (
            Method::GET,
            "/api/v1/tasks?status=pending&limit=5".into(),
            "/api/v1/tasks",
            None,
            200,
        ),
        (
            Method::GET,
            "/api/v1/tasks?limit=0".into(),
            "/api/v1/tasks",
            None,
            400,
        ),
        (Method::GET, one.clone(), "/api/v1/tasks/{id}", None, 200),
        (
            Method::GET,
            "/api/v1/tasks/task-20240116-nope00".into(),
            "/api/v1/tasks/{id}",
            None,
            404,
        ),
        (Method::DELETE, one.clone(), "/api/v1/tasks/{id}", None, 200),
        (Method::DELETE, one.clone(), "/api/v1/tasks/{id}", None, 409),
        (
            Method::DELETE,
            "/api/v1/tasks/task-20240116-nope00".into(),
            "/api/v1/tasks/{id}",
            None,
            404,
        ),
        (Method::GET, "/healthz".into(), "/healthz", None, 200),
        (Method::GET, "/readyz".into(), "/readyz", None, 200),
        (Method::GET, "/metrics".into(), "/metrics", None, 200),
        (
            Method::GET,
            "/api/v1/openapi.json".into(),
            "/api/v1/openapi.json",
            None,
            200,
        ),
    ];
    let (s, ct, bytes) = call(
        &app,
        Method::POST,
        "/api/v1/scheduled-tasks",
        Some(
            json!({"name": "nightly", "cronExpr": "0 3 * * *", "timezone": "Europe/Berlin",
                    "taskConfig": {"images": ["nginx:1.25"]}}),
        ),
    )
    .await;
    validate(&doc, "/api/v1/scheduled-tasks", "post", s, &ct, &bytes);
    let sid = serde_json::from_slice::<Value>(&bytes).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let st = format!("/api/v1/scheduled-tasks/{sid}");
    let s1 = "/api/v1/scheduled-tasks/{id}";
    let cases: Vec<(Method, String, &str, Option<Value>, u16)> = cases
        .into_iter()
        .chain([
            (
                Method::POST,
                "/api/v1/scheduled-tasks".into(),
                "/api/v1/scheduled-tasks",
                Some(
                    json!({"name": "x", "cronExpr": "61 * * * *", "taskConfig": {"images": ["a"]}}),
                ),
                400,
            ),
            (
                Method::GET,
                "/api/v1/scheduled-tasks?limit=3".into(),
                "/api/v1/scheduled-tasks",
                None,
                200,
            ),
            (
                Method::GET,
                "/api/v1/scheduled-tasks?offset=-1".into(),
                "/api/v1/scheduled-tasks",
                None,
                400,
            ),
            (Method::GET, st.clone(), s1, None, 200),
            (
                Method::GET,
                "/api/v1/scheduled-tasks/nope".into(),
                s1,
                None,
                404,
            ),
            (
                Method::PUT,
                st.clone(),
                s1,
                Some(json!({"description": "d", "taskConfig": {"batchSize": 3}})),
                200,
            ),
            (
                Method::PUT,
                st.clone(),
                s1,
                Some(json!({"cronExpr": "nope"})),
                400,
            ),
            (
                Method::PUT,
                format!("{st}/disable"),
                "/api/v1/scheduled-tasks/{id}/disable",
                None,
                200,
            ),
            (
                Method::PUT,
                format!("{st}/enable"),
                "/api/v1/scheduled-tasks/{id}/enable",
                None,
                200,
            ),
            (
                Method::POST,
                format!("{st}/trigger"),
                "/api/v1/scheduled-tasks/{id}/trigger",
                None,
                200,
            ),
            (
                Method::POST,
                "/api/v1/scheduled-tasks/nope/trigger".into(),
                "/api/v1/scheduled-tasks/{id}/trigger",
                None,
                404,
            ),
            (
                Method::GET,
                format!("{st}/executions"),
                "/api/v1/scheduled-tasks/{id}/executions",
                None,
                200,
            ),
            (
                Method::GET,
                format!("{st}/executions/1"),
                "/api/v1/scheduled-tasks/{id}/executions/{execution_id}",
                None,
                200,
            ),
            (
                Method::GET,
                format!("{st}/executions/99"),
                "/api/v1/scheduled-tasks/{id}/executions/{execution_id}",
                None,
                404,
            ),
            (Method::DELETE, st.clone(), s1, None, 200),
            (Method::DELETE, st.clone(), s1, None, 404),
        ])
        .collect();
    for (method, uri, template, body, want) in cases {
        let (s, ct, bytes) = call(&app, method.clone(), &uri, body).await;
        assert_eq!(
            s,
            want,
            "{method} {uri}: {}",
            String::from_utf8_lossy(&bytes)
        );
        validate(
            &doc,
            template,
            &method.as_str().to_lowercase(),
            s,
            &ct,
            &bytes,
        );
    }
}

#[tokio::test]
async fn every_served_route_is_documented() {
    let app = TestApp::new();
    let (_, _, bytes) = call(&app, Method::GET, "/api/v1/openapi.json", None).await;
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (method, route, _) in super::super::auth::ROUTE_ROLES {
        let uri = route.replace("{id}", "x").replace("{execution_id}", "1");
        let (s, _, body) = call(&app, method.clone(), &uri, None).await;
        let not_mounted =
            s == 404 && serde_json::from_slice::<Value>(&body).unwrap()["error"] == "Not found";
        if !not_mounted {
            let m = method.as_str().to_lowercase();
            assert!(
                paths.get(*route).and_then(|p| p.get(&m)).is_some(),
                "{method} {route} is served but not documented"
            );
        }
    }
    let (s, ct, _) = call(&app, Method::GET, "/docs/", None).await;
    assert_eq!(s, StatusCode::OK.as_u16());
    assert!(ct.starts_with("text/html"), "{ct}");
}
