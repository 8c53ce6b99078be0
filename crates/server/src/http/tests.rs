//! Handler tests through the real router, without a socket or a cluster:
//! a memory store, a fake cluster and an engine that is built but not run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::store::scripted::ScriptedStore;
use crate::store::{MemoryStore, TaskStore};
use crate::testing::{request, TestApp, START};

/// The shared test app with this file's shorthands.
struct Harness {
    app: TestApp,
}

impl Harness {
    fn new() -> Self {
        Harness {
            app: TestApp::new(),
        }
    }

    fn with_store(store: Arc<dyn TaskStore>) -> Self {
        Harness {
            app: TestApp::builder().tasks(store).build(),
        }
    }

    fn with_timeout(store: Arc<dyn TaskStore>, request_timeout: Duration) -> Self {
        Harness {
            app: TestApp::builder()
                .tasks(store)
                .request_timeout(request_timeout)
                .build(),
        }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let reply = self.app.send(req).await;
        let body = reply.json();
        (reply.status, reply.headers, body)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.send(request(Method::GET, uri, None, None)).await;
        (status, body)
    }

    async fn delete(&self, uri: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.send(request(Method::DELETE, uri, None, None)).await;
        (status, body)
    }

    async fn post_raw(&self, body: impl Into<Body>) -> (StatusCode, Value) {
        let req = Request::post("/api/v1/tasks")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        let (status, _, body) = self.send(req).await;
        (status, body)
    }

    async fn post(&self, body: Value) -> (StatusCode, Value) {
        self.post_raw(body.to_string()).await
    }

    /// Creates a task and returns its id.
    async fn create(&self, images: &[&str]) -> String {
        let (status, body) = self.post(json!({ "images": images })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["taskId"].as_str().unwrap().to_owned()
    }
}

fn details(body: &Value) -> &str {
    body["details"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn create_answers_201_with_the_full_task_view() {
    let h = Harness::new();
    let req = Request::post("/api/v1/tasks")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(
            json!({"images": ["nginx:latest", "redis:7"], "nodeSelector": {"workload": "compute"}})
                .to_string(),
        ))
        .unwrap();
    let (status, headers, body) = h.send(req).await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["message"], "Task created successfully");
    assert_eq!(body["status"], "pending");
    let id = body["taskId"].as_str().unwrap();
    let suffix = id.strip_prefix("task-20240116-").expect(id);
    assert_eq!(suffix.len(), 6, "{id}");
    assert!(suffix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    assert_eq!(
        headers[header::LOCATION].to_str().unwrap(),
        format!("/api/v1/tasks/{id}")
    );
    for field in [
        "taskId",
        "status",
        "images",
        "batchSize",
        "nodeSelector",
        "priority",
        "progress",
        "failedNodeDetails",
        "skippedNodeDetails",
        "imageStatuses",
        "createdBy",
        "createdAt",
        "startedAt",
        "finishedAt",
        "estimatedCompletion",
    ] {
        assert!(body.get(field).is_some(), "missing {field} in {body}");
    }
    for field in [
        "totalNodes",
        "completedNodes",
        "failedNodes",
        "skippedNodes",
        "currentBatch",
        "totalBatches",
        "percentage",
    ] {
        assert!(
            body["progress"].get(field).is_some(),
            "missing progress.{field}"
        );
    }
    assert_eq!(body["images"], json!(["nginx:latest", "redis:7"]));
    assert_eq!(body["batchSize"], 10);
    assert_eq!(body["nodeSelector"], json!({"workload": "compute"}));
    assert_eq!(body["createdBy"], "anonymous");
    assert!(body["createdAt"]
        .as_str()
        .unwrap()
        .starts_with("2024-01-16T10:00:00"));
    assert!(body["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["startedAt"], Value::Null);

    let (status, stored) = h.get(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored["taskId"], id);
    assert_eq!(stored["status"], "pending");
    assert!(stored.get("message").is_none());
}

#[tokio::test]
async fn create_retries_the_id_on_a_clash() {
    let store = ScriptedStore {
        duplicates_left: AtomicUsize::new(2),
        ..ScriptedStore::new()
    };
    let h = Harness::with_store(Arc::new(store));
    let id = h.create(&["nginx"]).await;
    let (status, _) = h.get(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_json_is_a_400_in_our_shape() {
    let h = Harness::new();
    for raw in [
        r#"{"images": ["nginx"]"#,
        "not json",
        "",
        r#"{"images": ["a"]} trailing"#,
    ] {
        let (status, body) = h.post_raw(raw).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{raw:?}: {body}");
        assert_eq!(body["error"], "Invalid request body", "{raw:?}");
        assert!(!details(&body).is_empty(), "{raw:?}: {body}");
        assert!(!details(&body).starts_with('?'), "{raw:?}: {body}");
    }
}

#[tokio::test]
async fn a_wrong_type_names_the_field() {
    let h = Harness::new();
    let (status, body) = h.post(json!({"images": ["nginx"], "batchSize": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        details(&body),
        r#"batchSize: invalid type: string "x", expected u32"#
    );

    let (status, body) = h.post(json!({"images": ["nginx", 7]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        details(&body).starts_with("images[1]: invalid type: integer `7`"),
        "{body}"
    );

    let (status, body) = h
        .post(json!({"images": ["nginx"], "nodeSelector": {"zone": 1}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(details(&body).starts_with("nodeSelector.zone: "), "{body}");
}

#[tokio::test]
async fn unknown_and_missing_fields_are_named() {
    let h = Harness::new();
    let (status, body) = h.post(json!({"images": ["nginx"], "batchsize": 3})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        details(&body).contains("unknown field `batchsize`"),
        "{body}"
    );

    let (status, body) = h.post(json!({"batchSize": 3})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        details(&body).contains("images: at least one image is required"),
        "{body}"
    );
}

#[tokio::test]
async fn invalid_values_fail_validation_naming_the_field() {
    let h = Harness::new();
    let cases = [
        (json!({"images": ["nginx::latest"]}), "images[0]: "),
        (
            json!({"images": ["nginx", "redis", "nginx"]}),
            "images[2]: ",
        ),
        (json!({"images": ["nginx"], "batchSize": 0}), "batchSize: "),
        (json!({"images": []}), "images: "),
    ];
    for (request, prefix) in cases {
        let (status, body) = h.post(request.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        assert_eq!(body["error"], "Validation failed", "{request}");
        assert!(details(&body).starts_with(prefix), "{request}: {body}");
    }
    let (_, list) = h.get("/api/v1/tasks").await;
    assert_eq!(list["total"], 0, "a rejected task was stored");
}

#[tokio::test]
async fn a_non_json_content_type_is_a_400() {
    let h = Harness::new();
    let body = json!({"images": ["nginx"]}).to_string();
    let text = Request::post("/api/v1/tasks")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(body.clone()))
        .unwrap();
    let none = Request::post("/api/v1/tasks")
        .body(Body::from(body))
        .unwrap();
    for req in [text, none] {
        let (status, _, body) = h.send(req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(details(&body).contains("application/json"), "{body}");
    }
}

#[tokio::test]
async fn a_body_over_1_mib_is_a_json_413() {
    let h = Harness::new();
    let huge = format!(r#"{{"images": ["{}"]}}"#, "a".repeat(2 * 1024 * 1024));
    let (status, body) = h.post_raw(huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "Request body too large");
}

#[tokio::test]
async fn list_pages_newest_first_and_filters_by_status() {
    let h = Harness::new();
    let mut ids = Vec::new();
    for image in ["a", "b", "c"] {
        ids.push(h.create(&[image]).await);
        h.app.clock.advance(Duration::from_secs(1));
    }

    let (status, page) = h.get("/api/v1/tasks?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 3);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 0);
    let listed: Vec<&str> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);

    let (_, page) = h.get("/api/v1/tasks?limit=2&offset=2").await;
    assert_eq!(page["tasks"][0]["taskId"], ids[0]);
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);

    let (_, page) = h.get("/api/v1/tasks").await;
    assert_eq!(page["limit"], 10);
    assert_eq!(page["tasks"].as_array().unwrap().len(), 3);

    let (status, _) = h.delete(&format!("/api/v1/tasks/{}", ids[1])).await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = h.get("/api/v1/tasks?status=cancelled").await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["tasks"][0]["taskId"], ids[1]);
    let (_, page) = h.get("/api/v1/tasks?status=pending&limit=100").await;
    assert_eq!(page["total"], 2);

    // An empty filter (as in `?status=&limit=10`) and unknown parameters are ignored.
    let (status, page) = h.get("/api/v1/tasks?status=&limit=10&colour=blue").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 3);
}

#[tokio::test]
async fn bad_list_parameters_are_named() {
    let h = Harness::new();
    for (query, param) in [
        ("limit=0", "limit: "),
        ("limit=101", "limit: "),
        ("limit=ten", "limit: "),
        ("offset=-1", "offset: "),
        ("status=done", "status: "),
    ] {
        let (status, body) = h.get(&format!("/api/v1/tasks?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(details(&body).starts_with(param), "{query}: {body}");
    }
}

#[tokio::test]
async fn an_unknown_task_is_a_404_with_its_id() {
    let h = Harness::new();
    let (status, body) = h.get("/api/v1/tasks/task-20240116-zzzzzz").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({
            "error": "Task not found",
            "details": "no task with id task-20240116-zzzzzz",
            "taskId": "task-20240116-zzzzzz",
        })
    );
}

#[tokio::test]
async fn cancel_then_cancel_again_conflicts() {
    let h = Harness::new();
    let id = h.create(&["nginx"]).await;
    h.app.clock.advance(Duration::from_secs(5));

    let (status, body) = h.delete(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"taskId": id, "status": "cancelled", "message": "Task cancelled"})
    );
    let (_, task) = h.get(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(task["status"], "cancelled");
    assert!(task["finishedAt"]
        .as_str()
        .unwrap()
        .starts_with("2024-01-16T10:00:05"));

    let (status, body) = h.delete(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "Task already cancelled");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["taskId"], id);
}

#[tokio::test]
async fn cancelling_an_unknown_task_is_a_404() {
    let h = Harness::new();
    let (status, body) = h.delete("/api/v1/tasks/task-20240116-nope00").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["taskId"], "task-20240116-nope00");
}

#[tokio::test]
async fn healthz_reports_the_cluster_connection() {
    let h = Harness::new();
    let (status, body) = h.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "healthy", "kubernetes": "connected", "timestamp": START,
               "auth": "open", "warning": super::health::OPEN_WARNING})
    );
}

#[tokio::test]
async fn readyz_is_503_naming_the_failing_dependency() {
    let h = Harness::new();
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "ready", "store": "ok", "kubernetes": "ok"})
    );

    h.app.cluster.probe_ok.store(false, Ordering::SeqCst);
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "Not ready");
    assert_eq!(body["store"], "ok");
    assert_eq!(body["kubernetes"], "error");
    assert!(details(&body).starts_with("kubernetes: "), "{body}");
    assert!(!details(&body).contains("store"), "{body}");
}

#[tokio::test]
async fn store_failures_are_a_500_without_the_cause() {
    let store = ScriptedStore::new();
    store.set_broken(true);
    let h = Harness::with_store(Arc::new(store));
    let (status, body) = h.post(json!({"images": ["nginx"]})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"error": "Internal error"}));

    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["store"], "error");
    assert!(!body.to_string().contains("secret"), "{body}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let h = Harness::new();
    let (status, body) = h.get("/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "Not found");

    let (status, headers, body) = h
        .send(request(Method::PUT, "/api/v1/tasks", None, None))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "Method not allowed");
    assert!(headers.contains_key(header::ALLOW), "{headers:?}");
}

#[tokio::test]
async fn a_request_over_the_time_limit_is_a_json_408() {
    let store = ScriptedStore {
        hang_on_get: true,
        ..ScriptedStore::new()
    };
    let h = Harness::with_timeout(Arc::new(store), Duration::from_millis(50));
    let (status, body) = h.get("/api/v1/tasks/task-20240116-slow00").await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(body["error"], "Request timeout");
}

/// A task of images `a:1`, `b:1` whose five nodes ended every way a pair can.
async fn task_with_node_results(store: &MemoryStore) -> String {
    use crate::domain::node_pull::{ImagePull, NodePhase, NodePull, PullFailure};
    use crate::store::NodeRecord;

    let at: chrono::DateTime<chrono::Utc> = START.parse().unwrap();
    let failure = |reason: &str| PullFailure {
        reason: reason.to_owned(),
        message: format!("{reason} from the kubelet"),
        at,
    };
    let pulled = || ImagePull::Pulled {
        digest: Some("sha256:aa".to_owned()),
    };
    let node = |name: &str, images: Vec<ImagePull>, phase: NodePhase| NodePull {
        node: name.to_owned(),
        images,
        attempt: 0,
        started: true,
        phase,
        rank: 0,
    };
    let nodes = [
        node("n0", vec![pulled(), pulled()], NodePhase::Completed { at }),
        node(
            "n1",
            vec![pulled(), ImagePull::Failed(failure("ErrImagePull"))],
            NodePhase::Failed { at },
        ),
        node(
            "n2",
            vec![
                pulled(),
                ImagePull::Pending {
                    failures: 0,
                    last: None,
                },
            ],
            NodePhase::Skipped {
                at,
                message: "node deleted".to_owned(),
                reason: None,
            },
        ),
        node(
            "n3",
            vec![
                ImagePull::Pending {
                    failures: 1,
                    last: Some(failure("ImagePullBackOff")),
                },
                pulled(),
            ],
            NodePhase::RetryWait { until: at },
        ),
        node(
            "n4",
            vec![ImagePull::Present, ImagePull::Present],
            NodePhase::Completed { at },
        ),
    ];
    let mut task = crate::store::contract::minimal_task(
        "task-20240116-nodes0",
        prewarm_api::TaskStatus::Running,
        at,
    );
    task.images = vec!["a:1".to_owned(), "b:1".to_owned()];
    store.insert(&task).await.unwrap();
    // Stored out of order: the endpoint sorts by node name.
    let records: Vec<NodeRecord> = nodes
        .iter()
        .rev()
        .map(|n| NodeRecord {
            node: n.node.clone(),
            body: serde_json::to_value(n).unwrap(),
        })
        .collect();
    store.put_nodes(&task.task_id, &records).await.unwrap();
    task.task_id
}

#[tokio::test]
async fn node_results_page_by_node_and_image_and_filter() {
    let store = Arc::new(MemoryStore::new());
    let id = task_with_node_results(&store).await;
    let h = Harness::with_store(store);
    let pairs = |body: &Value| -> Vec<String> {
        body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{}/{}/{}", r["nodeName"], r["image"], r["status"]).replace('"', ""))
            .collect()
    };

    let (status, body) = h.get(&format!("/api/v1/tasks/{id}/nodes?limit=3")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 10);
    assert_eq!(
        (body["limit"].clone(), body["offset"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(
        pairs(&body),
        ["n0/a:1/pulled", "n0/b:1/pulled", "n1/a:1/pulled"]
    );
    assert_eq!(body["nodes"][0]["digest"], "sha256:aa");

    let (_, body) = h.get(&format!("/api/v1/tasks/{id}/nodes?offset=6")).await;
    assert_eq!(body["total"], 10);
    assert_eq!(
        pairs(&body),
        [
            "n3/a:1/pending",
            "n3/b:1/pulled",
            "n4/a:1/present",
            "n4/b:1/present"
        ]
    );
    assert_eq!(body["nodes"][0]["reason"], "ImagePullBackOff");

    let (_, body) = h
        .get(&format!("/api/v1/tasks/{id}/nodes?status=failed"))
        .await;
    assert_eq!(pairs(&body), ["n1/b:1/failed"]);
    assert_eq!(body["nodes"][0]["reason"], "ErrImagePull");
    assert_eq!(body["nodes"][0]["message"], "ErrImagePull from the kubelet");
    assert_eq!(body["nodes"][0]["timestamp"], "2024-01-16T10:00:00Z");

    let (_, body) = h
        .get(&format!("/api/v1/tasks/{id}/nodes?status=skipped"))
        .await;
    assert_eq!(pairs(&body), ["n2/b:1/skipped"]);
    assert_eq!(body["nodes"][0]["reason"], "NodeGone");

    let (_, body) = h
        .get(&format!("/api/v1/tasks/{id}/nodes?image=b:1&status=pulled"))
        .await;
    assert_eq!(pairs(&body), ["n0/b:1/pulled", "n3/b:1/pulled"]);
    assert_eq!(body["total"], 2);
}

#[tokio::test]
async fn bad_node_result_parameters_are_named_and_unknown_tasks_are_404() {
    let store = Arc::new(MemoryStore::new());
    let id = task_with_node_results(&store).await;
    let h = Harness::with_store(store);
    for (query, named) in [
        ("status=done", "status"),
        ("image=c:1", "image"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("offset=-1", "offset"),
    ] {
        let (status, body) = h.get(&format!("/api/v1/tasks/{id}/nodes?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"], "Invalid parameter", "{query}");
        assert!(details(&body).starts_with(named), "{query}: {body}");
    }
    let (status, body) = h.get("/api/v1/tasks/task-20240116-zzzzzz/nodes").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["taskId"], "task-20240116-zzzzzz");
}

/// 5,000 nodes × 3 images, every pair failed with a kubelet-sized message,
/// stored in a SQLite file the way the engine leaves it: the task view stays
/// under 64 KiB, and the nodes endpoint pages all 15,000 pairs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_failed_task_has_a_small_view_and_pages_every_pair() {
    use crate::domain::node_pull::{summarize, NodePull};
    use crate::domain::task::{TaskId, TaskSpec};
    use crate::store::{NodeRecord, SqliteStore};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("prewarm.db")).unwrap());
    let images: Vec<String> = (0..3)
        .map(|i| format!("registry.example.com/team/service-{i}:2024.01.16"))
        .collect();
    let spec = TaskSpec::from_request(prewarm_api::CreateTaskRequest {
        images: images.clone(),
        batch_size: Some(1000),
        ..Default::default()
    })
    .unwrap();
    let at: chrono::DateTime<chrono::Utc> = START.parse().unwrap();
    let nodes: Vec<NodePull> = (0..5_000)
        .map(|i| {
            let mut node = NodePull::new(format!("pool-a-node-{i:05}"), vec![false; 3]);
            node.start(at);
            let message = format!(
                "Failed to pull image: rpc error: code = Unknown desc = failed to resolve reference: \
                 pulling from host registry.example.com failed with status code 401 Unauthorized (node {i})"
            );
            node.fail_attempt("ErrImagePull", &message, &spec, at + chrono::Duration::milliseconds(i));
            node
        })
        .collect();
    let mut task = spec.new_task(TaskId::generate(at), "bench", at);
    let summary = summarize(&images, 1000, &nodes);
    task.status = prewarm_api::TaskStatus::Failed;
    task.progress = summary.progress;
    task.failed_node_details = summary.failed;
    task.failed_node_details_total = summary.failed_total;
    task.image_statuses = summary.images;
    task.finished_at = Some(at + chrono::Duration::seconds(30));
    store.insert(&task).await.unwrap();
    let records: Vec<NodeRecord> = nodes
        .iter()
        .map(|n| NodeRecord {
            node: n.node.clone(),
            body: serde_json::to_value(n).unwrap(),
        })
        .collect();
    store.put_nodes(&task.task_id, &records).await.unwrap();

    let h = Harness::with_store(store);
    let id = &task.task_id;
    let (status, view) = h.get(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let size = serde_json::to_vec(&view).unwrap().len();
    assert!(size <= 64 * 1024, "view is {size} bytes");
    assert_eq!(view["failedNodeDetailsTotal"], 15_000);
    assert_eq!(view["failedNodeDetails"].as_array().unwrap().len(), 100);
    assert_eq!(view["progress"]["failedNodes"], 5_000);

    let mut seen = std::collections::BTreeSet::new();
    for page in 0..15 {
        let (status, body) = h
            .get(&format!(
                "/api/v1/tasks/{id}/nodes?status=failed&limit=1000&offset={}",
                page * 1000
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["total"], 15_000);
        let results = body["nodes"].as_array().unwrap();
        assert_eq!(results.len(), 1000);
        for r in results {
            assert_eq!(r["reason"], "ErrImagePull");
            assert!(seen.insert((r["nodeName"].to_string(), r["image"].to_string())));
        }
    }
    assert_eq!(seen.len(), 15_000);
    let (_, past) = h
        .get(&format!("/api/v1/tasks/{id}/nodes?offset=15000"))
        .await;
    assert_eq!(past["nodes"], json!([]));
}
