//! Planning and observing warmth end to end (real kube-apiserver, kube-sim
//! nodes, the real `prewarm` binary): dry-run plans, image coverage and its
//! CLI gate, learned node speeds deciding which nodes start first.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(180);

/// POSTs `body` to `path` with a query; (status, JSON body).
async fn post(svc: &Service, path: &str, query: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let r = http()
        .post(format!("{}{path}", svc.url))
        .query(query)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// GETs `path` with a query; (status, JSON body).
async fn get(svc: &Service, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let r = http()
        .get(format!("{}{path}", svc.url))
        .query(query)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Repeats `probe` until `done` holds for its answer (the service's node cache fills
/// shortly after kube-sim registers its nodes).
async fn eventually<F, Fut>(what: &str, probe: F, done: impl Fn(&Value) -> bool) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, v) = probe().await;
        assert_eq!(code, 200, "{what}: {v}");
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} never held: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_creates_nothing_and_matches_the_run_that_follows() {
    let _sim = sim(r#"
timeScale: 0.05
nodes:
  - namePrefix: dry-
    count: 4
    labels: {suite: dry}
  - names: [dry-cordoned]
    labels: {suite: dry}
    unschedulable: true
  - names: [dry-tainted]
    labels: {suite: dry}
    taints: [{key: dedicated, value: gpu, effect: NoSchedule}]
  - names: [dry-down]
    labels: {suite: dry}
    ready: false
preloaded:
  - image: "nginx:1.25"
    nodes: "dry-[01]"
  - image: "redis:7"
    nodes: "dry-0"
"#);
    let ns = "t-dry";
    let svc = Service::start(ns);
    let jobs = JobLog::watch(ns).await;
    let body = json!({
        "images": ["nginx:1.25", "redis:7"],
        "nodeSelector": {"suite": "dry"},
        "tolerateTaints": false,
        "batchSize": 2
    });
    let plan = eventually(
        "all seven nodes planned",
        || post(&svc, "/api/v1/tasks", &[("dryRun", "true")], &body),
        |p| {
            p["selectedNodes"] == 4
                && p["skippedByReason"]
                    == json!({"AlreadyWarm": 1, "Cordoned": 1, "NotReady": 1, "Tainted": 1})
        },
    )
    .await;
    assert_eq!(plan["dryRun"], true);
    assert_eq!(
        plan["selectedNodeNames"],
        json!(["dry-0", "dry-1", "dry-2", "dry-3"])
    );
    assert_eq!(
        plan["skippedNodeDetails"],
        json!([
            {"nodeName": "dry-0", "reason": "AlreadyWarm"},
            {"nodeName": "dry-cordoned", "reason": "Cordoned"},
            {"nodeName": "dry-down", "reason": "NotReady"},
            {"nodeName": "dry-tainted", "reason": "Tainted"},
        ])
    );
    assert_eq!(
        plan["images"],
        json!([
            {"image": "nginx:1.25", "nodesWithImage": 2, "pullsNeeded": 2},
            {"image": "redis:7", "nodesWithImage": 1, "pullsNeeded": 3},
        ])
    );
    assert_eq!(plan["jobs"], 3);
    assert_eq!(plan["pullsNeeded"], 5);
    assert_eq!(plan["apiWrites"], 6);
    assert!(
        plan["etaSeconds"].is_null(),
        "no pulls measured yet: {plan}"
    );

    // The CLI shows the same plan.
    let out = prewarm(
        &svc,
        &[
            "task",
            "create",
            "nginx:1.25",
            "redis:7",
            "--selector",
            "suite=dry",
            "--batch-size",
            "2",
            "--dry-run",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let cli_plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        cli_plan["selectedNodes"], 5,
        "tainted node included by default"
    );
    let out = prewarm(
        &svc,
        &[
            "task",
            "create",
            "nginx:1.25",
            "--selector",
            "suite=dry",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("Jobs") && table.contains("dry-1"), "{table}");

    // Nothing was stored or created.
    let (_, list) = get(&svc, "/api/v1/tasks", &[]).await;
    assert_eq!(list["total"], 0, "{list}");
    assert_eq!(jobs.created(), 0);
    assert_eq!(jobs_in(ns).await, 0);

    // The real run matches the plan.
    let id = svc.create(body.clone()).await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.total_nodes, 4);
    wait_no_jobs(ns, Duration::from_secs(30)).await;
    assert_eq!(
        jobs.created(),
        3,
        "one Job per node the plan said needs pulls"
    );

    // Now that pulls were measured, a plan has an ETA, and every node is warm.
    let again = eventually(
        "the nodes report the pulled images",
        || post(&svc, "/api/v1/tasks", &[("dryRun", "true")], &body),
        |p| p["jobs"] == 0,
    )
    .await;
    assert_eq!(again["skippedByReason"]["AlreadyWarm"], 4, "{again}");
    let (code, fresh) = post(
        &svc,
        "/api/v1/tasks",
        &[("dryRun", "true")],
        &json!({"images": ["busybox:1.36"], "nodeSelector": {"suite": "dry"}, "batchSize": 2}),
    )
    .await;
    assert_eq!(code, 200, "{fresh}");
    assert!(fresh["etaSeconds"].as_f64().unwrap() > 0.0, "{fresh}");

    // Bad input is refused before planning.
    let (code, err) = post(
        &svc,
        "/api/v1/tasks",
        &[("dryRun", "maybe")],
        &json!({"images": ["nginx"]}),
    )
    .await;
    assert_eq!(code, 400, "{err}");
    let (code, err) = post(
        &svc,
        "/api/v1/tasks",
        &[("dryRun", "true")],
        &json!({"images": []}),
    )
    .await;
    assert_eq!(code, 400, "{err}");
}

/// Images a node reports in `status.images`, read from the API server.
async fn reported_images(node: &str) -> Vec<String> {
    let client = cluster().kube_client().await;
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let n = api.get(node).await.unwrap();
    n.status
        .and_then(|s| s.images)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|i| i.names.unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_follows_the_nodes_reported_images_and_gates_the_cli() {
    let _sim = sim(r#"
timeScale: 0.05
nodes:
  - namePrefix: cov-
    count: 4
    labels: {suite: cov}
  - names: [cov-other]
    labels: {suite: elsewhere}
preloaded:
  - image: "nginx:1.25"
    nodes: "cov-[01]"
"#);
    let svc = Service::start("t-cov");
    let query = [
        ("images", "nginx:1.25,redis:7"),
        ("nodeSelector", "suite=cov"),
        ("groupBy", "suite"),
    ];
    let before = eventually(
        "four nodes counted",
        || get(&svc, "/api/v1/coverage", &query),
        |c| c["totalNodes"] == 4,
    )
    .await;
    assert_eq!(
        before["images"],
        json!([
            {"image": "nginx:1.25", "nodesWithImage": 2, "percentage": 50.0},
            {"image": "redis:7", "nodesWithImage": 0, "percentage": 0.0},
        ])
    );
    assert_eq!(before["percentage"], 25.0);
    assert_eq!(
        before["nodes"][2],
        json!({"nodeName": "cov-2", "missing": ["nginx:1.25", "redis:7"]})
    );
    assert_eq!(
        before["groups"],
        json!([{"value": "cov", "nodes": 4, "warmNodes": 0, "percentage": 25.0}])
    );

    let gate = |min: &'static str, image: &'static str| {
        let svc = &svc;
        async move {
            prewarm(
                svc,
                &["coverage", image, "--selector", "suite=cov", "--min", min],
            )
            .await
        }
    };
    let out = gate("50", "nginx:1.25").await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2/4"),
        "{}",
        show(&out)
    );
    let out = gate("95", "nginx:1.25").await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("below 95%"),
        "{}",
        show(&out)
    );

    let id = svc
        .create(json!({"images": ["nginx:1.25", "redis:7"], "nodeSelector": {"suite": "cov"}}))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    let after = eventually(
        "every node warm",
        || get(&svc, "/api/v1/coverage", &query),
        |c| c["percentage"] == 100.0,
    )
    .await;
    for node in after["nodes"].as_array().unwrap() {
        let reported = reported_images(node["nodeName"].as_str().unwrap()).await;
        assert!(
            reported.iter().any(|n| n.ends_with("redis:7")),
            "coverage says warm, the node says {reported:?}"
        );
    }
    let out = gate("95", "redis:7").await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // Bad queries are 400s in the error shape.
    for bad in [
        vec![("nodeSelector", "suite=cov")],
        vec![("images", "Not An Image")],
        vec![("images", "nginx"), ("nodeSelector", "novalue")],
    ] {
        let (code, err) = get(&svc, "/api/v1/coverage", &bad).await;
        assert_eq!(code, 400, "{bad:?}: {err}");
        assert!(
            err["error"].is_string() && err["details"].is_string(),
            "{err}"
        );
    }
}

/// Creates namespace `ns` (if needed) and applies `objects` (Deployments, DaemonSets) in it.
async fn apply_workloads(ns: &str, objects: &[Value]) {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};
    let client = cluster().kube_client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await;
    for obj in objects {
        let pp = PostParams::default();
        match obj["kind"].as_str().unwrap() {
            "Deployment" => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                api.create(&pp, &serde_json::from_value(obj.clone()).unwrap())
                    .await
                    .unwrap();
            }
            "DaemonSet" => {
                let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
                api.create(&pp, &serde_json::from_value(obj.clone()).unwrap())
                    .await
                    .unwrap();
            }
            other => panic!("no helper for {other}"),
        }
    }
}

fn workload(kind: &str, name: &str, pod: Value) -> Value {
    let labels = json!({"app": name});
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "replicas": if kind == "Deployment" { json!(0) } else { Value::Null },
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_workload_selects_the_nodes_a_scheduler_would() {
    let _sim = sim(r#"
timeScale: 0.05
nodes:
  - names: [wl-a-0, wl-a-1]
    labels: {suite: wl, pool: web, zone: a}
  - names: [wl-c-0]
    labels: {suite: wl, pool: web, zone: c}
  - names: [wl-gpu-0]
    labels: {suite: wl, pool: web, zone: b}
    taints: [{key: gpu, value: "true", effect: NoSchedule}]
  - names: [wl-db-0]
    labels: {suite: wl, pool: web, zone: b}
    taints: [{key: dedicated, value: db, effect: NoSchedule}]
  - names: [wl-batch-0]
    labels: {suite: wl, pool: batch, zone: a}
"#);
    let apps = "t-wl-apps";
    let digest = "wl/init@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    apply_workloads(
        apps,
        &[
            workload(
                "Deployment",
                "web",
                json!({
                    "initContainers": [{"name": "init", "image": digest}],
                    "containers": [{"name": "app", "image": "wl/app:1"}],
                    "nodeSelector": {"pool": "web", "suite": "wl"},
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["c"]}]}]}}},
                    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
                }),
            ),
            workload(
                "DaemonSet",
                "agent",
                json!({
                    "containers": [{"name": "agent", "image": "wl/agent:2"}],
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}]
                }),
            ),
            workload(
                "Deployment",
                "private",
                json!({
                    "containers": [{"name": "app", "image": "wl/private:1"}],
                    "imagePullSecrets": [{"name": "regcred-nowhere"}]
                }),
            ),
        ],
    )
    .await;
    let ns = "t-wl";
    let svc = Service::start(ns);
    let from = |kind: &str, name: &str| json!({"kind": kind, "namespace": apps, "name": name});

    // The Deployment: nodeSelector, NotIn affinity, one tolerated pool (the table below).
    let body = json!({"fromWorkload": from("Deployment", "web"), "batchSize": 3});
    let plan = eventually(
        "the workload's nodes planned",
        || post(&svc, "/api/v1/tasks", &[("dryRun", "true")], &body),
        |p| p["selectedNodes"] == 3,
    )
    .await;
    let expected = [
        ("wl-a-0", "selected: zone a, web"),
        ("wl-a-1", "selected: zone a, web"),
        ("wl-gpu-0", "selected: its gpu taint is tolerated"),
    ];
    let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    assert_eq!(plan["selectedNodeNames"], json!(names), "{plan}");
    // wl-c-0 (affinity NotIn c) and wl-batch-0 (nodeSelector) are not candidates;
    // wl-db-0 matches but its taint is not tolerated.
    assert_eq!(
        plan["skippedNodeDetails"],
        json!([{"nodeName": "wl-db-0", "reason": "Tainted"}])
    );
    assert_eq!(
        plan["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["image"].clone())
            .collect::<Vec<_>>(),
        vec![json!(digest), json!("wl/app:1")],
        "init containers first, digests as written"
    );

    let id = svc.create(body).await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.total_nodes, 3);
    let (_, view) = svc.get(&id).await;
    assert_eq!(view["fromWorkload"], from("Deployment", "web"));
    assert_eq!(
        view["resolvedWorkload"]["images"],
        json!([digest, "wl/app:1"])
    );
    assert_eq!(
        view["resolvedWorkload"]["nodeSelector"],
        json!({"pool": "web", "suite": "wl"})
    );

    // The DaemonSet: every node of the suite whose taints it tolerates.
    let (code, plan) = post(
        &svc,
        "/api/v1/tasks",
        &[("dryRun", "true")],
        &json!({"fromWorkload": from("DaemonSet", "agent"), "nodeSelector": {"suite": "wl"}}),
    )
    .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(
        plan["selectedNodeNames"],
        json!(["wl-a-0", "wl-a-1", "wl-batch-0", "wl-c-0", "wl-db-0"])
    );
    assert_eq!(plan["skippedByReason"], json!({"Tainted": 1}));

    // Bad references: clear 4xx, nothing stored.
    let (code, err) = svc
        .post(json!({"fromWorkload": from("Deployment", "nope")}))
        .await;
    assert_eq!(code, 404, "{err}");
    assert_eq!(err["error"], "Workload not found");
    let (code, err) = svc
        .post(json!({"fromWorkload": from("ReplicaSet", "web")}))
        .await;
    assert_eq!(code, 400, "{err}");
    assert!(
        err["details"].as_str().unwrap().contains("ReplicaSet"),
        "{err}"
    );
    let (code, err) = svc
        .post(json!({"fromWorkload": from("Deployment", "private")}))
        .await;
    assert_eq!(code, 422, "{err}");
    assert!(
        err["details"].as_str().unwrap().contains("regcred-nowhere"),
        "{err}"
    );
    let (code, err) = svc.post(json!({"images": []})).await;
    assert_eq!(code, 400, "{err}");
    let (_, list) = get(&svc, "/api/v1/tasks", &[]).await;
    assert_eq!(list["total"], 1, "only the real run was stored: {list}");

    // Coverage of a workload: its images over the nodes its pods could land on.
    let web = format!("Deployment/{apps}/web");
    let by_workload = [("fromWorkload", web.as_str())];
    let cov = eventually(
        "the workload's coverage follows the run",
        || get(&svc, "/api/v1/coverage", &by_workload),
        |c| c["percentage"] == 100.0,
    )
    .await;
    assert_eq!(cov["totalNodes"], 3, "{cov}");
    assert_eq!(cov["images"][0]["image"], digest, "{cov}");
    let missing = format!("Deployment/{apps}/nope");
    let (code, err) = get(
        &svc,
        "/api/v1/coverage",
        &[("fromWorkload", missing.as_str())],
    )
    .await;
    assert_eq!(code, 404, "{err}");
    let (code, err) = get(&svc, "/api/v1/coverage", &[("fromWorkload", "Pod/x/y")]).await;
    assert_eq!(code, 400, "{err}");

    // A schedule reads its workload at each run and records it on the task.
    let (code, schedule) = post(
        &svc,
        "/api/v1/scheduled-tasks",
        &[],
        &json!({"name": "wl", "cronExpr": "@yearly", "taskConfig": {"fromWorkload": from("Deployment", "web")}}),
    )
    .await;
    assert_eq!(code, 201, "{schedule}");
    let (code, fired) = post(
        &svc,
        &format!(
            "/api/v1/scheduled-tasks/{}/trigger",
            schedule["id"].as_str().unwrap()
        ),
        &[],
        &json!({}),
    )
    .await;
    assert_eq!(code, 200, "{fired}");
    let run = svc.wait_end(fired["taskId"].as_str().unwrap(), LONG).await;
    assert_eq!(status(&run), "completed", "{run:#?}");
    assert_eq!(run.progress.total_nodes, 3);
    let (_, view) = svc.get(&run.task_id).await;
    assert_eq!(view["trigger"], "schedule");
    assert_eq!(
        view["resolvedWorkload"]["images"],
        json!([digest, "wl/app:1"])
    );
    let (code, err) = post(
        &svc,
        "/api/v1/scheduled-tasks",
        &[],
        &json!({"name": "wl", "cronExpr": "@yearly", "taskConfig": {"fromWorkload": from("Deployment", "nope")}}),
    )
    .await;
    assert_eq!(code, 404, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_is_read_when_its_task_starts() {
    // One node pulls the blocker for 10 s; with room for one node at a time
    // the workload tasks wait behind it, while their workloads change.
    let _sim = sim(r#"
timeScale: 0.05
nodes:
  - namePrefix: late-
    count: 3
    labels: {suite: late}
images:
  - match: "late/blocker*"
    pullSeconds: 200
  - match: "*"
    pullSeconds: 10
"#);
    let apps = "t-late-apps";
    let pod = |image: &str| json!({"containers": [{"name": "app", "image": image}], "nodeSelector": {"suite": "late"}});
    apply_workloads(
        apps,
        &[
            workload("Deployment", "app", pod("late/app:1")),
            workload("Deployment", "gone", pod("late/gone:1")),
        ],
    )
    .await;
    let ns = "t-late";
    let svc = Service::start_flags(ns, &["--max-concurrent-nodes", "1"]);
    let from = |name: &str| json!({"kind": "Deployment", "namespace": apps, "name": name});
    let blocker = svc
        .create(json!({"images": ["late/blocker:1"], "nodeNames": ["late-0"]}))
        .await;
    svc.wait_until(&blocker, LONG, |t| status(t) == "running")
        .await;
    let changed = svc.create(json!({"fromWorkload": from("app")})).await;
    let deleted = svc.create(json!({"fromWorkload": from("gone")})).await;
    let (_, pending) = svc.get(&changed).await;
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["images"], json!([]), "{pending}");
    assert!(pending.get("resolvedWorkload").is_none(), "{pending}");

    let client = cluster().kube_client().await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client, apps);
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "late/app:2"}]}}}});
    deployments
        .patch(
            "app",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&patch),
        )
        .await
        .unwrap();
    deployments
        .delete("gone", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let (_, still) = svc.get(&changed).await;
    assert_eq!(
        still["status"], "pending",
        "the blocker ended too soon: {still}"
    );

    let task = svc.wait_end(&changed, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(
        task.images,
        ["late/app:2"],
        "the workload as it was at the start"
    );
    assert_eq!(task.progress.total_nodes, 3);
    let resolved = task.resolved_workload.expect("resolvedWorkload recorded");
    assert_eq!(resolved.images, ["late/app:2"]);
    assert_eq!(resolved.generation, Some(2), "read after the patch");
    assert!(resolved.resource_version.is_some());
    assert_eq!(resolved.selected_nodes, Some(3));
    assert!(resolved.resolved_at >= task.started_at.map(|s| s - chrono::Duration::seconds(1)));
    assert!(reported_images("late-1")
        .await
        .iter()
        .any(|i| i.ends_with("late/app:2")));

    let gone = svc.wait_end(&deleted, LONG).await;
    assert_eq!(status(&gone), "failed", "{gone:#?}");
    assert_eq!(gone.reason.as_deref(), Some("WorkloadUnresolved"));
    let message = gone.error_message.unwrap_or_default();
    assert!(message.contains("gone does not exist"), "{message}");
    assert_eq!(gone.progress.total_nodes, 0, "nothing was pulled for it");
    assert_eq!(status(&svc.wait_end(&blocker, LONG).await), "completed");

    // The CLI names a workload on a schedule and a (disabled) policy, and clears it.
    let app = format!("Deployment/{apps}/app");
    let json_of = |out: std::process::Output| -> Value {
        assert!(out.status.success(), "{}", show(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let schedule = json_of(
        prewarm(
            &svc,
            &["schedule", "create", "--name", "late", "--cron", "@yearly"]
                .into_iter()
                .chain(["--from-workload", &app, "-o", "json"])
                .collect::<Vec<_>>(),
        )
        .await,
    );
    assert_eq!(schedule["taskConfig"]["fromWorkload"], from("app"));
    let id = schedule["id"].as_str().unwrap();
    let clear = [
        "--clear-from-workload",
        "--image",
        "late/plain:1",
        "-o",
        "json",
    ];
    let args: Vec<&str> = ["schedule", "update", id]
        .into_iter()
        .chain(clear)
        .collect();
    let schedule = json_of(prewarm(&svc, &args).await);
    assert!(
        schedule["taskConfig"]["fromWorkload"].is_null(),
        "{schedule}"
    );
    let policy = json_of(
        prewarm(
            &svc,
            &["keep-warm", "create", "--name", "late", "--disabled"]
                .into_iter()
                .chain(["--from-workload", &app, "-o", "json"])
                .collect::<Vec<_>>(),
        )
        .await,
    );
    assert_eq!(policy["fromWorkload"], from("app"));
    let id = policy["id"].as_str().unwrap();
    let args: Vec<&str> = ["keep-warm", "update", id]
        .into_iter()
        .chain(clear)
        .collect();
    let policy = json_of(prewarm(&svc, &args).await);
    assert!(policy["fromWorkload"].is_null(), "{policy}");
    assert_eq!(policy["images"], json!(["late/plain:1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_under_disk_pressure_or_short_of_room_are_skipped_and_pull_nothing() {
    let _sim = sim(r#"
timeScale: 0.05
nodes:
  - namePrefix: disk-
    count: 2
    labels: {suite: disk}
  - names: [disk-full]
    labels: {suite: disk}
    diskPressure: true
  - names: [disk-small]
    labels: {suite: disk}
    ephemeralStorage: 1Gi
images:
  - match: "example.com/big/*"
    sizeBytes: 2147483648
preloaded:
  - image: "example.com/big/model:1"
    nodes: "disk-0"
"#);
    let ns = "t-disk";
    let svc = Service::start(ns);
    let jobs = JobLog::watch(ns).await;
    let body = json!({
        "images": ["example.com/big/model:1", "nginx:1.25"],
        "nodeSelector": {"suite": "disk"},
        "batchSize": 4
    });
    // The plan says what the run will do: 2 GiB + 10% does not fit on a 1 GiB disk.
    let plan = eventually(
        "the four nodes planned with their disks",
        || post(&svc, "/api/v1/tasks", &[("dryRun", "true")], &body),
        |p| {
            p["selectedNodes"] == 4
                && p["skippedByReason"] == json!({"DiskPressure": 1, "InsufficientDisk": 1})
        },
    )
    .await;
    assert_eq!(plan["jobs"], 2, "{plan}");
    let small = &plan["skippedNodeDetails"][1];
    assert_eq!(small["nodeName"], "disk-small", "{plan}");
    assert_eq!(
        small["message"],
        "needs 2.20 GiB (images 2.00 GiB + 10% margin), has 1.00 GiB \
         (allocatable ephemeral-storage 1.00 GiB - images 0.0 MiB)"
    );

    let id = svc.create(body).await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.total_nodes, 4);
    assert_eq!(task.progress.completed_nodes, 2);
    assert_eq!(task.progress.skipped_nodes, 2);
    let skipped: Vec<(&str, &str)> = task
        .skipped_node_details
        .iter()
        .map(|d| (d.node_name.as_str(), d.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("disk-full", "DiskPressure"),
            ("disk-small", "InsufficientDisk")
        ]
    );
    assert!(
        task.skipped_node_details[1]
            .message
            .contains("has 1.00 GiB"),
        "{task:#?}"
    );
    wait_no_jobs(ns, Duration::from_secs(30)).await;
    let per_node = jobs.per_node();
    assert_eq!(
        per_node.keys().collect::<Vec<_>>(),
        ["disk-0", "disk-1"],
        "Jobs only where there is room"
    );
    for node in ["disk-full", "disk-small"] {
        let images = reported_images(node).await;
        assert!(
            !images
                .iter()
                .any(|i| i.contains("big/model") || i.contains("nginx")),
            "{node} pulled nothing: {images:?}"
        );
    }
}

/// When `node`'s DiskPressure condition last turned True, if it is True.
async fn disk_pressure_since(node: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let client = cluster().kube_client().await;
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let n = api.get(node).await.unwrap();
    let condition = n
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "DiskPressure" && c.status == "True")?;
    let at = condition.last_transition_time?.0;
    chrono::DateTime::from_timestamp(at.as_second(), 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_coming_under_disk_pressure_mid_task_pull_nothing_after() {
    // One node at a time, by name: dp-0 pulls for 20 s, the others in 1 s.
    // 12 s after kube-sim is ready (dp-0 still pulling) dp-2 and dp-3 come
    // under DiskPressure.
    let _sim = sim(r#"
timeScale: 0.05
nodes:
  - namePrefix: dp-
    count: 4
    labels: {suite: dp}
images:
  - match: "*"
    nodes: "dp-0"
    pullSeconds: 400
  - match: "*"
    pullSeconds: 20
events:
  - after: 12s
    setDiskPressure: {nodes: "dp-{2,3}", diskPressure: true}
"#);
    let ns = "t-dp";
    let svc = Service::start(ns);
    let jobs = JobLog::watch(ns).await;
    let id = svc
        .create(json!({"images": ["example.com/dp/app:1"], "nodeSelector": {"suite": "dp"}, "batchSize": 1}))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    let came = disk_pressure_since("dp-2")
        .await
        .expect("dp-2 under DiskPressure");
    assert!(
        task.started_at.expect("started") < came,
        "the task started after the pressure came (service too slow to start?): {task:#?}"
    );
    assert_eq!(
        task.progress.total_nodes, 4,
        "selected before the pressure came"
    );
    assert_eq!(task.progress.completed_nodes, 2);
    // Skipped in the order the engine reached them, which is not by name.
    let mut skipped: Vec<(&str, &str)> = task
        .skipped_node_details
        .iter()
        .map(|d| (d.node_name.as_str(), d.reason.as_str()))
        .collect();
    skipped.sort_unstable();
    assert_eq!(
        skipped,
        [("dp-2", "DiskPressure"), ("dp-3", "DiskPressure")]
    );
    wait_no_jobs(ns, Duration::from_secs(30)).await;
    assert_eq!(
        jobs.per_node().keys().collect::<Vec<_>>(),
        ["dp-0", "dp-1"],
        "no Job on a node after it came under DiskPressure"
    );
    for node in ["dp-2", "dp-3"] {
        let images = reported_images(node).await;
        assert!(
            !images.iter().any(|i| i.contains("dp/app")),
            "{node} pulled nothing: {images:?}"
        );
    }
}

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// When kube-sim moved the tag (Unix ms), from its log; None before it did.
fn tag_moved_at(sim: &Sim) -> Option<i64> {
    let log = sim.log();
    let line = log.lines().find(|l| l.contains("event: moving a tag"))?;
    // Drop ANSI colour codes, then read `at_ms=<digits>`.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    let digits: String = plain
        .split("at_ms=")
        .nth(1)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// (node, digest, end in Unix ms) of every node of a one-image task.
async fn node_digests(svc: &Service, id: &str) -> Vec<(String, String, i64)> {
    let (code, page) = get(
        svc,
        &format!("/api/v1/tasks/{id}/nodes"),
        &[("limit", "1000")],
    )
    .await;
    assert_eq!(code, 200, "{page}");
    page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let at: chrono::DateTime<chrono::Utc> =
                serde_json::from_value(r["timestamp"].clone()).unwrap();
            (
                r["nodeName"].as_str().unwrap().to_owned(),
                r["digest"].as_str().unwrap_or_default().to_owned(),
                at.timestamp_millis(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moving_mid_task_drifts_unless_digests_are_pinned() {
    // The tag moves 15 s after kube-sim is ready. Node *-0 pulls in 0.5 s,
    // the others in 6 s, one node at a time: both tasks begin pulls before
    // the move and after it, whenever the service came up within ~14 s.
    let sim = sim(&format!(
        r#"
timeScale: 0.05
nodes:
  - namePrefix: pin-
    count: 5
    labels: {{suite: pin}}
  - namePrefix: drift-
    count: 5
    labels: {{suite: drift}}
images:
  - match: "example.com/team/app*"
    nodes: "*-0"
    pullSeconds: 10
    digest: "{D1}"
  - match: "example.com/team/app*"
    pullSeconds: 120
    digest: "{D1}"
events:
  - after: 15s
    moveTag: {{image: "example.com/team/app:v1", digest: "{D2}"}}
"#
    ));
    let ns = "t-digests";
    let svc = Service::start(ns);
    let body = |suite: &str, pin: bool| {
        json!({
            "images": ["example.com/team/app:v1"],
            "nodeSelector": {"suite": suite},
            "batchSize": 1,
            "pinDigests": pin
        })
    };
    let pin_body = body("pin", true);
    let pinned = eventually(
        "the pinned task planned over five nodes",
        || post(&svc, "/api/v1/tasks", &[("dryRun", "true")], &pin_body),
        |p| p["selectedNodes"] == 5,
    )
    .await;
    assert_eq!(pinned["jobs"], 5);
    let pinned = svc.create(pin_body).await;
    let drifting = svc.create(body("drift", false)).await;

    let first = svc
        .wait_until(&pinned, LONG, |t| {
            t.image_statuses[0].pinned_digest.is_some()
        })
        .await;
    assert_eq!(first.image_statuses[0].pinned_digest.as_deref(), Some(D1));
    assert!(
        tag_moved_at(&sim).is_none(),
        "the first pull came after the tag moved (service too slow to start?)"
    );

    let pinned = svc.wait_end(&pinned, LONG).await;
    let drifting = svc.wait_end(&drifting, LONG).await;
    let moved = tag_moved_at(&sim).expect("the tag moved during the tasks");
    assert_eq!(status(&pinned), "completed", "{pinned:#?}");
    assert_eq!(status(&drifting), "completed", "{drifting:#?}");

    // Pinned: every node holds the first pull's digest, nodes that began
    // after the move included.
    let image = &pinned.image_statuses[0];
    assert_eq!(image.digests, [D1], "{pinned:#?}");
    assert_eq!(image.pinned_digest.as_deref(), Some(D1));
    assert!(!image.digest_drift);
    let nodes = node_digests(&svc, &pinned.task_id).await;
    assert!(nodes.iter().all(|(_, d, _)| d == D1), "{nodes:?}");
    assert!(
        nodes.iter().any(|(_, _, end)| *end > moved + 6_000),
        "a pinned node began its pull after the move: {nodes:?}, moved at {moved}"
    );

    // Not pinned: the nodes before the move got D1, the ones after D2.
    let image = &drifting.image_statuses[0];
    assert_eq!(image.digests, [D1, D2], "{drifting:#?}");
    assert!(image.digest_drift);
    assert_eq!(image.pinned_digest, None);
}

/// Nodes of the pull Pods of task `id` alive now, sorted.
async fn pulling_nodes(ns: &str, id: &str) -> Vec<String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(cluster().kube_client().await, ns);
    let list = api
        .list(&kube::api::ListParams::default().labels(&format!("prewarm.io/task-id={id}")))
        .await
        .unwrap();
    let mut nodes: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|p| p.spec?.node_name)
        .collect();
    nodes.sort();
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_learned_slow_start_in_the_first_window_of_the_next_task() {
    // Two nodes pull 12x slower than the rest; by name they come last.
    let _sim = sim(r#"
nodes:
  - namePrefix: sp-a-
    count: 6
    labels: {suite: speeds}
  - namePrefix: sp-z-slow-
    count: 2
    labels: {suite: speeds}
images:
  - match: "*"
    nodes: "sp-z-slow-*"
    pullSeconds: 6
  - match: "*"
    pullSeconds: 0.5
"#);
    let ns = "t-speeds";
    let svc = Service::start_flags(ns, &["--pull-mode", "pods"]);
    let body = |image: &str| json!({"images": [image], "batchSize": 2, "nodeSelector": {"suite": "speeds"}});
    // No history yet: name order, so the slow nodes start last.
    eventually(
        "the nodes in the service's cache",
        || {
            get(
                &svc,
                "/api/v1/coverage",
                &[("images", "x"), ("nodeSelector", "suite=speeds")],
            )
        },
        |c| c["totalNodes"] == 8,
    )
    .await;
    let first = svc.create(body("speeds/app:1")).await;
    let task = svc.wait_end(&first, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");

    // What was learned: the two slow nodes, slowest first, then the others.
    let stats = eventually(
        "every node's speed learned",
        || get(&svc, "/api/v1/nodes/stats", &[("limit", "8")]),
        |s| s["total"] == 8,
    )
    .await;
    let order: Vec<&str> = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    let mut slowest = order[..2].to_vec();
    slowest.sort();
    assert_eq!(slowest, ["sp-z-slow-0", "sp-z-slow-1"], "{stats:#}");
    let cli = prewarm(&svc, &["nodes", "stats", "--limit", "2"]).await;
    assert!(cli.status.success(), "{}", show(&cli));
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap_or_default()
            .starts_with("sp-z-slow-"),
        "{table}"
    );

    // A plan of the next task lists them as its slowest nodes, and its ETA
    // is list scheduling of the learned times over two slots: at least the
    // slowest node, at most half the work plus the slowest node.
    let (code, plan) = post(
        &svc,
        "/api/v1/tasks",
        &[("dryRun", "true")],
        &body("speeds/app:2"),
    )
    .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["nodesWithSpeed"], 8, "{plan:#}");
    let planned = plan["slowestNodes"].as_array().unwrap();
    let mut first_two: Vec<&str> = planned[..2]
        .iter()
        .map(|n| n["nodeName"].as_str().unwrap())
        .collect();
    first_two.sort();
    assert_eq!(first_two, ["sp-z-slow-0", "sp-z-slow-1"], "{plan:#}");
    let expected: Vec<f64> = planned
        .iter()
        .map(|n| n["expectedSeconds"].as_f64().unwrap())
        .collect();
    let eta = plan["etaSeconds"].as_f64().unwrap();
    let (max, sum) = (expected[0], expected.iter().sum::<f64>());
    assert!(eta >= max - 0.1 && eta <= sum / 2.0 + max + 0.1, "{plan:#}");

    // The next task starts them first: they hold its whole first window.
    let second = svc.create(body("speeds/app:2")).await;
    wait_for("the second task's first window", LONG, async || {
        pulling_nodes(ns, &second).await.len() == 2
    })
    .await;
    assert_eq!(
        pulling_nodes(ns, &second).await,
        ["sp-z-slow-0", "sp-z-slow-1"]
    );
    let (_, view) = svc.get(&second).await;
    assert!(view["estimatedCompletion"].is_string(), "{view:#}");
    let task = svc.wait_end(&second, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
}
