//! `/api/v1/scheduled-tasks` through the real router (no socket): a memory
//! store for tasks and schedules, a manual clock, and the scheduler stepped
//! by hand where a test needs executions to move.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use prewarm_api::TaskStatus;
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::testing::{TestApp, START};

/// The shared test app with this file's shorthands.
struct Harness {
    app: TestApp,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            app: TestApp::new(),
        }
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let reply = self.app.call(method, uri, body.as_ref()).await;
        (reply.status, reply.json())
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None).await
    }

    async fn create(&self, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/api/v1/scheduled-tasks", Some(body))
            .await
    }

    async fn create_ok(&self, body: Value) -> String {
        let (code, v) = self.create(body).await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    fn advance(&self, secs: u64) {
        self.app.clock.advance(Duration::from_secs(secs));
    }
}

/// The create body of the original design.
fn seed_body() -> Value {
    json!({
        "name": "Daily Image Prewarm",
        "description": "Prewarm nginx and redis every day at midnight",
        "cronExpr": "0 0 * * *",
        "enabled": true,
        "taskConfig": {
            "images": ["nginx:latest", "redis:7"],
            "batchSize": 10,
            "priority": 1,
            "nodeSelector": {"prewarm": "true"},
            "maxRetries": 3,
            "retryStrategy": "linear",
            "retryDelay": 60,
            "webhookUrl": "https://hooks.example.com/notify"
        },
        "overlapPolicy": "skip",
        "timeoutSeconds": 3600
    })
}

fn details(v: &Value) -> &str {
    v["details"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn create_answers_201_with_the_scheduled_task_of_the_design() {
    let h = Harness::new();
    let (code, v) = h.create(seed_body()).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap();
    assert!(
        id.starts_with("scheduled-task-20240116-") && id.len() == 30,
        "{id}"
    );
    assert_eq!(v["name"], "Daily Image Prewarm");
    assert_eq!(
        v["description"],
        "Prewarm nginx and redis every day at midnight"
    );
    assert_eq!(v["cronExpr"], "0 0 * * *");
    assert_eq!(v["timezone"], "UTC");
    assert_eq!(v["enabled"], true);
    assert_eq!(
        v["taskConfig"]["images"],
        json!(["nginx:latest", "redis:7"])
    );
    assert_eq!(v["taskConfig"]["retryStrategy"], "linear");
    assert_eq!(
        v["taskConfig"]["webhookUrl"],
        "https://hooks.example.com/notify"
    );
    assert_eq!(v["overlapPolicy"], "skip");
    assert_eq!(v["timeoutSeconds"], 3600);
    assert_eq!(v["startingDeadlineSeconds"], 0);
    assert_eq!(v["lastExecutionAt"], Value::Null);
    assert_eq!(v["nextExecutionAt"], "2024-01-17T00:00:00Z");
    assert_eq!(v["createdBy"], "anonymous");
    assert_eq!(v["createdAt"], START);
    assert_eq!(v["updatedAt"], START);

    let (code, got) = h.get(&format!("/api/v1/scheduled-tasks/{id}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(got, v);

    // Defaults and a zone.
    let (code, v) = h
        .create(
            json!({"name": "berlin", "cronExpr": "@daily", "timezone": "Europe/Berlin",
                       "taskConfig": {"images": ["nginx"]}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert_eq!(v["overlapPolicy"], "skip");
    assert_eq!(v["description"], "");
    assert_eq!(
        v["nextExecutionAt"], "2024-01-16T23:00:00Z",
        "midnight in Berlin"
    );
}

#[tokio::test]
async fn bad_bodies_are_400s_saying_what_is_wrong_and_store_nothing() {
    let h = Harness::new();
    let with = |patch: Value| {
        let mut body = seed_body();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (
            with(json!({"cronExpr": "0 0 * *"})),
            "cronExpr: invalid cron expression \"0 0 * *\"",
        ),
        (
            with(json!({"cronExpr": "99 * * * *"})),
            "cronExpr: invalid cron expression \"99 * * * *\"",
        ),
        (
            with(json!({"cronExpr": "@fortnightly"})),
            "unknown nickname",
        ),
        (with(json!({"cronExpr": "0 0 31 2 *"})), "never fires"),
        (
            with(json!({"timezone": "Mars/Olympus"})),
            "timezone: unknown time zone \"Mars/Olympus\"",
        ),
        (
            with(json!({"taskConfig": {"images": ["nginx::bad"]}})),
            "taskConfig.images[0]",
        ),
        (
            with(json!({"taskConfig": {"images": ["nginx"], "batchSize": 0}})),
            "taskConfig.batchSize",
        ),
        (with(json!({"name": "  "})), "name"),
        (with(json!({"timeoutSeconds": -1})), "timeoutSeconds"),
        (with(json!({"overlapPolicy": "sometimes"})), "overlapPolicy"),
        (
            with(json!({"cronExpresion": "0 0 * * *"})),
            "unknown field `cronExpresion`",
        ),
        (
            with(json!({"taskConfig": {"images": ["nginx"], "batchsize": 3}})),
            "unknown field `batchsize`",
        ),
        (
            json!({"cronExpr": "0 0 * * *", "taskConfig": {"images": ["nginx"]}}),
            "missing field `name`",
        ),
    ];
    for (body, want) in cases {
        let (code, v) = h.create(body.clone()).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body} -> {v}");
        assert!(details(&v).contains(want), "{body}: wanted {want:?} in {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let (_, list) = h.get("/api/v1/scheduled-tasks").await;
    assert_eq!(list["total"], 0, "nothing half-stored");
}

#[tokio::test]
async fn list_pages_newest_first_with_a_total() {
    let h = Harness::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut body = seed_body();
        body["name"] = json!(format!("s{i}"));
        ids.push(h.create_ok(body).await);
        h.advance(1);
    }
    let (code, v) = h.get("/api/v1/scheduled-tasks?limit=2&offset=0").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["total"], 3);
    assert_eq!(v["limit"], 2);
    assert_eq!(v["offset"], 0);
    let names: Vec<&str> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["s2", "s1"]);
    assert_eq!(v["tasks"][0]["nextExecutionAt"], "2024-01-17T00:00:00Z");
    let (_, v) = h.get("/api/v1/scheduled-tasks?limit=2&offset=2").await;
    assert_eq!(v["tasks"][0]["id"], ids[0].as_str());
    for bad in ["limit=0", "limit=101", "offset=-1", "limit=x"] {
        let (code, v) = h.get(&format!("/api/v1/scheduled-tasks?{bad}")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
}

#[tokio::test]
async fn update_merges_task_config_moves_updated_at_and_recomputes_the_next_fire() {
    let h = Harness::new();
    let id = h.create_ok(seed_body()).await;
    let uri = format!("/api/v1/scheduled-tasks/{id}");
    h.advance(300);
    let (code, v) = h
        .call(
            Method::PUT,
            &uri,
            Some(json!({"name": "Updated Task Name", "cronExpr": "0 6 * * *",
                        "taskConfig": {"images": ["nginx:latest"]},
                        "overlapPolicy": "allow", "timeoutSeconds": 1800})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "Updated Task Name");
    assert_eq!(v["cronExpr"], "0 6 * * *");
    assert_eq!(v["taskConfig"]["images"], json!(["nginx:latest"]));
    assert_eq!(
        v["taskConfig"]["maxRetries"], 3,
        "unnamed taskConfig fields kept"
    );
    assert_eq!(v["taskConfig"]["nodeSelector"], json!({"prewarm": "true"}));
    assert_eq!(v["overlapPolicy"], "allow");
    assert_eq!(v["timeoutSeconds"], 1800);
    assert_eq!(
        v["description"],
        "Prewarm nginx and redis every day at midnight"
    );
    assert_eq!(v["createdAt"], START);
    assert_eq!(v["updatedAt"], "2024-01-16T10:05:00Z");
    assert_eq!(v["nextExecutionAt"], "2024-01-17T06:00:00Z");
    assert_eq!(h.get(&uri).await.1, v);

    for (body, want) in [
        (json!({"cronExpr": "bad"}), "cronExpr"),
        (json!({"timezone": "Nowhere/Else"}), "timezone"),
        (
            json!({"taskConfig": {"images": ["ok", "Bad Image"]}}),
            "taskConfig.images[1]",
        ),
        (
            json!({"taskConfig": {"imagez": ["x"]}}),
            "unknown field `imagez`",
        ),
        (json!({"id": "other"}), "unknown field `id`"),
    ] {
        let (code, e) = h.call(Method::PUT, &uri, Some(body.clone())).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(details(&e).contains(want), "{body}: wanted {want:?} in {e}");
    }
    assert_eq!(h.get(&uri).await.1, v, "a rejected update changes nothing");

    let (code, e) = h
        .call(
            Method::PUT,
            "/api/v1/scheduled-tasks/scheduled-task-20240116-nope00",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{e}");
}

#[tokio::test]
async fn disable_and_enable_answer_success_and_null_the_next_fire_meanwhile() {
    let h = Harness::new();
    let id = h.create_ok(seed_body()).await;
    let uri = format!("/api/v1/scheduled-tasks/{id}");
    let (code, v) = h.call(Method::PUT, &format!("{uri}/disable"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        v,
        json!({"taskId": id, "status": "success", "message": "Scheduled task disabled successfully"})
    );
    let (_, got) = h.get(&uri).await;
    assert_eq!(got["enabled"], false);
    assert_eq!(got["nextExecutionAt"], Value::Null);

    let (code, v) = h.call(Method::PUT, &format!("{uri}/enable"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["message"], "Scheduled task enabled successfully");
    let (_, got) = h.get(&uri).await;
    assert_eq!(got["enabled"], true);
    assert_eq!(got["nextExecutionAt"], "2024-01-17T00:00:00Z");
}

#[tokio::test]
async fn trigger_starts_a_task_now_whatever_the_overlap_policy() {
    let h = Harness::new();
    let id = h.create_ok(seed_body()).await;
    let uri = format!("/api/v1/scheduled-tasks/{id}");
    let (code, v) = h.call(Method::POST, &format!("{uri}/trigger"), None).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["message"], "Scheduled task triggered successfully");
    let first = v["taskId"].as_str().unwrap().to_owned();
    assert!(first.starts_with("task-20240116-"), "{first}");
    let (code, task) = h.get(&format!("/api/v1/tasks/{first}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(task["images"], json!(["nginx:latest", "redis:7"]));
    assert_eq!(task["batchSize"], 10);
    assert_eq!(task["status"], "pending");

    // The first run is still going and the policy is skip: a trigger still runs.
    h.advance(10);
    let (code, v) = h.call(Method::POST, &format!("{uri}/trigger"), None).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let second = v["taskId"].as_str().unwrap().to_owned();
    assert_ne!(first, second);

    let (_, list) = h.get(&format!("{uri}/executions")).await;
    assert_eq!(list["total"], 2);
    let runs = list["executions"].as_array().unwrap();
    assert_eq!(runs[0]["id"], 2, "newest first");
    assert_eq!(runs[0]["taskId"], second.as_str());
    assert_eq!(runs[0]["trigger"], "manual");
    assert_eq!(runs[0]["status"], "running");
    assert_eq!(runs[0]["triggeredAt"], "2024-01-16T10:00:10Z");
    assert_eq!(runs[1]["taskId"], first.as_str());
    let (_, sched) = h.get(&uri).await;
    assert_eq!(sched["lastExecutionAt"], "2024-01-16T10:00:10Z");

    // The run ends with its task.
    let mut t = h.app.tasks.get(&first).await.unwrap().unwrap();
    h.advance(50);
    t.status = TaskStatus::Completed;
    t.finished_at = Some(h.app.clock.now());
    h.app
        .tasks
        .update_if(&t, &[TaskStatus::Pending])
        .await
        .unwrap();
    h.app.scheduler.step().await;
    let (code, run) = h.get(&format!("{uri}/executions/1")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(run["status"], "success");
    assert_eq!(run["scheduledTaskId"], id.as_str());
    assert_eq!(run["startedAt"], START);
    assert_eq!(run["finishedAt"], "2024-01-16T10:01:00Z");
    assert_eq!(run["durationSeconds"], 60.0);
    assert_eq!(run["errorMessage"], "");
}

#[tokio::test]
async fn executions_page_newest_first() {
    let h = Harness::new();
    let id = h.create_ok(seed_body()).await;
    let uri = format!("/api/v1/scheduled-tasks/{id}");
    for _ in 0..3 {
        h.call(Method::POST, &format!("{uri}/trigger"), None).await;
    }
    let (code, v) = h.get(&format!("{uri}/executions?limit=2&offset=1")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["total"], 3);
    assert_eq!(v["limit"], 2);
    assert_eq!(v["offset"], 1);
    let ids: Vec<u64> = v["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [2, 1]);
    let (code, _) = h.get(&format!("{uri}/executions?limit=1000")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn delete_removes_the_schedule_and_history_but_not_a_running_task() {
    let h = Harness::new();
    let id = h.create_ok(seed_body()).await;
    let uri = format!("/api/v1/scheduled-tasks/{id}");
    let (_, v) = h.call(Method::POST, &format!("{uri}/trigger"), None).await;
    let task_id = v["taskId"].as_str().unwrap().to_owned();
    let (code, v) = h.call(Method::DELETE, &uri, None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        v,
        json!({"taskId": id, "status": "success", "message": "Scheduled task deleted successfully"})
    );
    assert_eq!(h.get(&uri).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        h.get(&format!("{uri}/executions")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get(&format!("{uri}/executions/1")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, task) = h.get(&format!("/api/v1/tasks/{task_id}")).await;
    assert_eq!(task["status"], "pending", "the task it started keeps going");
    assert_eq!(
        h.call(Method::DELETE, &uri, None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn unknown_ids_are_404s_naming_them() {
    let h = Harness::new();
    let missing = "scheduled-task-20240116-zzzzzz";
    let base = format!("/api/v1/scheduled-tasks/{missing}");
    for (method, uri, body) in [
        (Method::GET, base.clone(), None),
        (Method::PUT, base.clone(), Some(json!({"name": "x"}))),
        (Method::DELETE, base.clone(), None),
        (Method::PUT, format!("{base}/enable"), None),
        (Method::PUT, format!("{base}/disable"), None),
        (Method::POST, format!("{base}/trigger"), None),
        (Method::GET, format!("{base}/executions"), None),
        (Method::GET, format!("{base}/executions/1"), None),
    ] {
        let (code, v) = h.call(method.clone(), &uri, body).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{method} {uri}: {v}");
        assert_eq!(v["error"], "Scheduled task not found", "{v}");
        assert_eq!(v["taskId"], missing);
    }
    let id = h.create_ok(seed_body()).await;
    for exec in ["1", "0", "abc", "99999999999999999999999"] {
        let (code, v) = h
            .get(&format!("/api/v1/scheduled-tasks/{id}/executions/{exec}"))
            .await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{exec}: {v}");
        assert_eq!(v["error"], "Execution not found");
        assert!(details(&v).contains(exec), "{v}");
    }
}
