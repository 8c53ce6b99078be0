//! The OpenAPI document: stable (a committed snapshot), complete (every
//! route the router serves is in it), and true (real responses of each
//! endpoint validate against the schemas it declares).
//!
//! Update the snapshot after an intended API change with
//! `UPDATE_OPENAPI_SNAPSHOT=1 cargo test -p prewarm --test openapi`.

use std::path::PathBuf;

use prewarm::http::openapi::document_json;
use serde_json::{json, Value};

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json")
}

#[test]
fn the_document_matches_the_snapshot() {
    let current = document_json().to_owned() + "\n";
    let path = snapshot_path();
    if std::env::var_os("UPDATE_OPENAPI_SNAPSHOT").is_some() {
        std::fs::write(&path, &current).unwrap();
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == current,
        "the OpenAPI document changed; if intended, run \
         UPDATE_OPENAPI_SNAPSHOT=1 cargo test -p prewarm --test openapi and commit {}",
        path.display()
    );
}

#[test]
fn every_guarded_operation_declares_bearer_auth_and_its_errors() {
    let doc: Value = serde_json::from_str(document_json()).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]})
    );
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/api/v1/tasks")
                || path.starts_with("/api/v1/scheduled-tasks")
                || path == "/api/v1/whoami"
                || path == "/api/v1/coverage"
            {
                for code in ["401", "403", "429", "500"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
            } else {
                assert_eq!(
                    op["security"],
                    json!([{}]),
                    "{method} {path} must be public"
                );
            }
        }
    }
    let links = &doc["paths"]["/api/v1/tasks"]["post"]["responses"]["201"]["links"];
    assert_eq!(links["getTask"]["operationId"], "getTask", "{links}");
    for schema in [
        "Task",
        "TaskCreated",
        "TaskList",
        "CreateTaskRequest",
        "ErrorBody",
        "ActionResponse",
        "WebhookEvent",
        "Health",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} missing"
        );
    }
}
