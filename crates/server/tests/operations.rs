//! Operating the real binary: bearer tokens from a file (reloaded while
//! running), the audit log, metrics that follow a real task, signed and
//! retried webhooks with the SSRF guard, `/readyz` through an API server
//! outage, and the least-privilege RBAC of `deploy/` running a whole task.

mod common;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hmac::{Hmac, Mac};
use prewarm::http::auth::token_digest;
use serde_json::{json, Value};
use sha2::Sha256;

const LONG: Duration = Duration::from_secs(120);

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// The value of the sample `name` (with its labels, exactly as exposed), or 0.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_audit_reload_and_metrics_with_a_real_task() {
    let _sim = sim(r#"
nodes:
  - namePrefix: ops-
    count: 3
    labels: {suite: ops}
images:
  - match: "*"
    pullSeconds: 3
"#);
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let audit = dir.path().join("audit.log");
    std::fs::write(
        &tokens,
        format!(
            "# test tokens\nroot admin {}\nci operator {}\nlook viewer {}\n",
            token_digest("tok-admin-1"),
            token_digest("tok-operator-1"),
            token_digest("tok-viewer-1")
        ),
    )
    .unwrap();
    let svc = Service::start_with(
        "t-ops",
        &dir.path().join("prewarm.db"),
        &[
            "--auth-tokens-file",
            tokens.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    let tasks = format!("{}/api/v1/tasks", svc.url);
    let body = json!({"images": ["nginx:1.25", "redis:7"], "nodeSelector": {"suite": "ops"}});
    use reqwest::Method as M;

    let (code, v) = call(M::GET, &tasks, None, None).await;
    assert_eq!(code, 401, "{v}");
    let (code, _) = call(M::GET, &tasks, Some("tok-nobody"), None).await;
    assert_eq!(code, 401);
    let (code, _) = call(M::GET, &tasks, Some("tok-viewer-1"), None).await;
    assert_eq!(code, 200);
    let (code, v) = call(M::POST, &tasks, Some("tok-viewer-1"), Some(body.clone())).await;
    assert_eq!(code, 403, "{v}");
    let (code, v) = call(M::POST, &tasks, Some("tok-operator-1"), Some(body.clone())).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["createdBy"], "ci");
    let id = v["taskId"].as_str().unwrap().to_owned();
    let (code, _) = call(M::GET, &format!("{}/healthz", svc.url), None, None).await;
    assert_eq!(code, 200, "probes need no token");

    // The running gauge shows the task while it runs, the counters when it ends.
    wait_for("tasks_running = 1", LONG, async || {
        sample(&svc.metrics().await, "prewarm_tasks_running") == 1.0
    })
    .await;
    let before = svc.metrics().await;
    let task = loop {
        let (_, v) = call(M::GET, &format!("{tasks}/{id}"), Some("tok-viewer-1"), None).await;
        if v["status"] != "running" && v["status"] != "pending" {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(task["status"], "completed", "{task:#}");
    wait_for("tasks_running = 0", Duration::from_secs(10), async || {
        sample(&svc.metrics().await, "prewarm_tasks_running") == 0.0
    })
    .await;
    let after = svc.metrics().await;
    let delta = |name: &str| sample(&after, name) - sample(&before, name);
    assert_eq!(
        delta("prewarm_tasks_total{status=\"completed\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("prewarm_node_pulls_total{result=\"success\"}"),
        3.0,
        "{after}"
    );
    assert_eq!(delta("prewarm_image_pull_duration_seconds_count"), 3.0);
    assert_eq!(sample(&after, "prewarm_task_duration_seconds_count"), 1.0);
    for present in [
        "prewarm_http_requests_total{method=\"GET\",route=\"/api/v1/tasks/{id}\",code=\"200\"}",
        "prewarm_http_requests_total{method=\"POST\",route=\"/api/v1/tasks\",code=\"403\"}",
        "prewarm_kube_requests_total{verb=\"create\",resource=\"jobs\",code=\"201\"}",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            sample(&after, present) > 0.0,
            "{present} missing or 0:\n{after}"
        );
    }

    // Rotate: a new operator, the old one gone; no restart.
    std::fs::write(
        &tokens,
        format!(
            "root admin {}\nci2 operator {}\n",
            token_digest("tok-admin-1"),
            token_digest("tok-operator-2")
        ),
    )
    .unwrap();
    wait_for(
        "the new token to work",
        Duration::from_secs(15),
        async || call(M::GET, &tasks, Some("tok-operator-2"), None).await.0 == 200,
    )
    .await;
    assert_eq!(
        call(M::GET, &tasks, Some("tok-operator-1"), None).await.0,
        401
    );
    let (code, v) = call(
        M::DELETE,
        &format!("{tasks}/{id}"),
        Some("tok-operator-2"),
        None,
    )
    .await;
    assert_eq!(code, 409, "{v}");

    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |method: &str, result: u64| {
        lines
            .iter()
            .find(|l| l["method"] == method && l["result"] == result)
            .unwrap_or_else(|| panic!("no audit line {method} {result} in\n{text}"))
    };
    let created = find("POST", 201);
    assert_eq!(created["tokenName"], "ci");
    assert_eq!(created["role"], "operator");
    assert_eq!(created["targetId"], id.as_str());
    assert!(created["client"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(find("POST", 403)["tokenName"], "look");
    assert_eq!(find("GET", 401)["tokenName"], Value::Null);
    let cancel = find("DELETE", 409);
    assert_eq!(cancel["tokenName"], "ci2");
    assert_eq!(cancel["route"], "/api/v1/tasks/{id}");
    assert_eq!(cancel["targetId"], id.as_str());
    let log = svc.log();
    assert!(log.contains("token file reloaded"), "{log}");
    for secret in [
        "tok-admin-1",
        "tok-operator-1",
        "tok-operator-2",
        "tok-viewer-1",
        "tok-nobody",
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log");
        assert!(!log.contains(secret), "{secret} in the service log");
    }
}

/// Requests a receiver got: headers and body.
type Received = Arc<Mutex<Vec<(reqwest::header::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver on 127.0.0.1 that answers the given codes in turn (then 200).
struct Receiver {
    url: String,
    got: Received,
}

async fn receiver(codes: Vec<u16>) -> Receiver {
    use axum::routing::post;
    let got: Received = Arc::default();
    let codes = Arc::new(Mutex::new(VecDeque::from(codes)));
    let app = axum::Router::new().route(
        "/hook",
        post({
            let got = got.clone();
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                got.lock().unwrap().push((headers, body.to_vec()));
                let code = codes.lock().unwrap().pop_front().unwrap_or(200);
                axum::http::StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://127.0.0.1:{port}/hook"),
        got,
    }
}

/// The webhook was delivered or given up on (not `pending` any more).
fn webhook_settled(t: &prewarm_api::Task) -> bool {
    !matches!(
        t.webhook_status,
        None | Some(prewarm_api::WebhookStatus::Pending)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owed_webhook_survives_a_kill_and_is_sent_after_the_restart() {
    let _sim = sim(r#"
nodes:
  - namePrefix: owed-
    count: 1
    labels: {suite: owed}
images:
  - match: "*"
    pullSeconds: 1
"#);
    // The receiver fails the first attempts, long enough to kill the service meanwhile.
    let hook = receiver(vec![500; 3]).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("owed.db");
    let mut svc = Service::start_with("t-owed", &db, &["--webhook-allow-private"]);
    let id = svc
        .create(json!({"images": ["nginx:1.25"], "nodeSelector": {"suite": "owed"}, "webhookUrl": hook.url}))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(
        task.webhook_status,
        Some(prewarm_api::WebhookStatus::Pending)
    );
    let deadline = std::time::Instant::now() + LONG;
    while hook.got.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no webhook attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    svc.kill9();

    let again = Service::start_with("t-owed", &db, &["--webhook-allow-private"]);
    let task = again.wait_until(&id, LONG, webhook_settled).await;
    assert_eq!(
        task.webhook_status,
        Some(prewarm_api::WebhookStatus::Delivered),
        "{task:#?}"
    );
    let got = hook.got.lock().unwrap().clone();
    let ids: std::collections::BTreeSet<_> = got
        .iter()
        .map(|(h, _)| h["x-prewarm-delivery"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one delivery id across the restart: {ids:?}");
    assert!(ids.iter().next().unwrap().starts_with(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_refused_for_private_addresses() {
    let _sim = sim(r#"
nodes:
  - namePrefix: hook-
    count: 2
    labels: {suite: hook}
images:
  - match: "*"
    pullSeconds: 1
"#);
    let hook = receiver(vec![500]).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start_with(
        "t-hook",
        &dir.path().join("a.db"),
        &["--webhook-secret", "hook-s3cret", "--webhook-allow-private"],
    );
    let id = svc
        .create(json!({"images": ["nginx:1.25"], "nodeSelector": {"suite": "hook"}, "webhookUrl": hook.url}))
        .await;
    let task = svc.wait_until(&id, LONG, webhook_settled).await;
    assert_eq!(
        task.webhook_status,
        Some(prewarm_api::WebhookStatus::Delivered),
        "{task:#?}"
    );
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one 500, then a retry");
    for (headers, body) in &got {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"hook-s3cret").unwrap();
        mac.update(body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers["x-prewarm-signature"], want.as_str());
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["event"], "task.completed");
        assert_eq!(event["task"]["taskId"], id.as_str());
        assert_eq!(event["task"]["status"], "completed");
    }
    assert_eq!(got[0].1, got[1].1, "the retry sends the same body");
    assert_eq!(
        got[0].0["x-prewarm-delivery"], got[1].0["x-prewarm-delivery"],
        "one delivery id for every attempt"
    );
    assert!(!svc.log().contains("hook-s3cret"));

    // Without --webhook-allow-private: a literal loopback address is refused at once,
    // a name resolving to loopback when sending.
    let guarded = Service::start_with("t-hook2", &dir.path().join("b.db"), &[]);
    let (code, v) = guarded
        .post(json!({"images": ["nginx"], "webhookUrl": hook.url}))
        .await;
    assert_eq!(code, 400, "{v}");
    assert!(v["details"].as_str().unwrap().contains("webhookUrl"), "{v}");
    let (code, v) = guarded
        .post(json!({"images": ["nginx"], "webhookUrl": "http://169.254.169.254/latest/meta-data"}))
        .await;
    assert_eq!(code, 400, "{v}");
    let by_name = hook.url.replace("127.0.0.1", "localhost");
    let id = guarded
        .create(json!({"images": ["nginx:1.25"], "nodeSelector": {"suite": "hook"}, "webhookUrl": by_name}))
        .await;
    let task = guarded.wait_until(&id, LONG, webhook_settled).await;
    assert_eq!(
        task.webhook_status,
        Some(prewarm_api::WebhookStatus::Refused)
    );
    assert!(task.webhook_error.unwrap().contains("localhost"));
    assert_eq!(hook.got.lock().unwrap().len(), 2, "nothing more was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_kubernetes_api() {
    let own = LocalCluster::up();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start_against(
        own.kubeconfig_path(),
        "t-ready",
        &dir.path().join("prewarm.db"),
        &[],
    );
    let ready = format!("{}/readyz", svc.url);
    let health = format!("{}/healthz", svc.url);
    let (code, v) = call(reqwest::Method::GET, &ready, None, None).await;
    assert_eq!(code, 200, "{v}");

    own.stop_apiserver();
    let (code, v) = call(reqwest::Method::GET, &ready, None, None).await;
    assert_eq!(code, 503, "{v}");
    assert_eq!(v["kubernetes"], "error");
    assert_eq!(v["store"], "ok");
    assert!(
        v["details"].as_str().unwrap().starts_with("kubernetes:"),
        "{v}"
    );
    let started = Instant::now();
    let (code, v) = call(reqwest::Method::GET, &health, None, None).await;
    assert_eq!(code, 200, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "healthz must not block"
    );
    assert_eq!(v["kubernetes"], "disconnected");

    own.start_apiserver();
    wait_for("readyz 200 again", Duration::from_secs(60), async || {
        call(reqwest::Method::GET, &ready, None, None).await.0 == 200
    })
    .await;
    let (_, v) = call(reqwest::Method::GET, &health, None, None).await;
    assert_eq!(v["kubernetes"], "connected");
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_rbac_is_enough_for_a_task_and_no_more() {
    let admin = cluster().kubeconfig_path().to_owned();
    let deploy = repo().join("deploy");
    let base = deploy.join("base");
    for file in ["namespace.yaml", "rbac.yaml"] {
        let (ok, out) = kubectl(
            &admin,
            &[
                "apply",
                "--validate=false",
                "-f",
                base.join(file).to_str().unwrap(),
            ],
        );
        assert!(ok, "{file}: {out}");
    }
    // The rest of deploy/ is valid for a real API server (server-side dry run).
    for file in [
        "base/deployment.yaml",
        "base/service.yaml",
        "ingress.example.yaml",
        "secret-tokens.example.yaml",
    ] {
        let (ok, out) = kubectl(
            &admin,
            &[
                "apply",
                "--dry-run=server",
                "--validate=false",
                "-f",
                deploy.join(file).to_str().unwrap(),
            ],
        );
        assert!(ok, "{file}: {out}");
    }
    for (verb, what, ns, want) in [
        ("list", "secrets", "prewarm", false),
        ("get", "secrets", "default", false),
        // Pull mode pods (the default): the pull Pods, no Jobs.
        ("create", "pods", "prewarm", true),
        ("deletecollection", "pods", "prewarm", true),
        ("create", "pods", "default", false),
        ("create", "jobs", "prewarm", false),
        ("delete", "jobs", "prewarm", false),
        ("create", "namespaces", "", false),
        ("delete", "nodes", "", false),
        ("update", "nodes/status", "", false),
        // Only to remove a keep-warm policy's gating taint from a warm node.
        ("patch", "nodes", "", true),
        ("watch", "pods", "prewarm", true),
        ("list", "nodes", "", true),
        ("create", "leases.coordination.k8s.io", "prewarm", true),
        (
            "patch",
            "leases.coordination.k8s.io/prewarm-leader",
            "prewarm",
            true,
        ),
        (
            "watch",
            "leases.coordination.k8s.io/prewarm-leader",
            "prewarm",
            true,
        ),
        (
            "patch",
            "leases.coordination.k8s.io/kube-scheduler",
            "prewarm",
            false,
        ),
        (
            "delete",
            "leases.coordination.k8s.io/prewarm-leader",
            "prewarm",
            false,
        ),
    ] {
        assert_eq!(
            can_i(&admin, verb, what, ns),
            want,
            "can-i {verb} {what} -n {ns:?}"
        );
    }

    // The service account's own token, from the TokenRequest API.
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.json");
    std::fs::write(
        &request,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"],
                        "expirationSeconds": 3600}})
        .to_string(),
    )
    .unwrap();
    let mut issued = None;
    for _ in 0..50 {
        let (ok, out) = kubectl(
            &admin,
            &[
                "create",
                "--raw",
                "/api/v1/namespaces/prewarm/serviceaccounts/prewarm/token",
                "-f",
                request.to_str().unwrap(),
            ],
        );
        if ok {
            issued = Some(out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let issued: Value = serde_json::from_str(&issued.expect("token issued")).unwrap();
    let token = issued["status"]["token"].as_str().unwrap();
    let admin_config = std::fs::read_to_string(&admin).unwrap();
    let server = admin_config
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap();
    let sa_config = dir.path().join("kubeconfig");
    std::fs::write(
        &sa_config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: prewarm\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: prewarm\ncurrent-context: local\n"
        ),
    )
    .unwrap();
    let (ok, out) = kubectl(&sa_config, &["get", "secrets", "-n", "prewarm"]);
    assert!(!ok && out.contains("forbidden"), "{out}");

    // Pods need the namespace's default ServiceAccount (made by the controller-manager).
    wait_for(
        "the default ServiceAccount",
        Duration::from_secs(30),
        async || {
            kubectl(
                &admin,
                &["get", "serviceaccount", "default", "-n", "prewarm"],
            )
            .0
        },
    )
    .await;
    let _sim = sim(r#"
nodes:
  - namePrefix: rbac-
    count: 3
    labels: {suite: rbac}
images:
  - match: "*"
    pullSeconds: 1
"#);
    let db = dir.path().join("prewarm.db");
    let svc = Service::start_against(&sa_config, "prewarm", &db, &["--pull-mode", "pods"]);
    let id = svc
        .create(json!({"images": ["nginx:1.25", "redis:7"], "nodeSelector": {"suite": "rbac"}}))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}\n{}", svc.log());
    assert_eq!(task.progress.completed_nodes, 3);
    wait_no_pods("prewarm", Duration::from_secs(30)).await;
    let log = svc.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "{log}"
    );
    drop(svc);

    // The component deploy/pull-mode-jobs: Jobs, and Pods only to read.
    let component = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let jobs_rbac = role_of(&component_build(component.path(), "pull-mode-jobs"));
    let role = component.path().join("role.yaml");
    std::fs::write(&role, jobs_rbac).unwrap();
    let (ok, out) = kubectl(&admin, &["apply", "-f", role.to_str().unwrap()]);
    assert!(ok, "{out}");
    wait_for("the Jobs rule in force", LONG, async || {
        can_i(&admin, "create", "jobs", "prewarm")
    })
    .await;
    for (verb, what, want) in [
        ("deletecollection", "jobs", true),
        ("watch", "pods", true),
        ("create", "pods", false),
        ("delete", "pods", false),
    ] {
        assert_eq!(
            can_i(&admin, verb, what, "prewarm"),
            want,
            "can-i {verb} {what}"
        );
    }
    let svc = Service::start_against(&sa_config, "prewarm", &db, &["--pull-mode", "jobs"]);
    let id = svc
        .create(json!({"images": ["nginx:1.26"], "nodeSelector": {"suite": "rbac"}}))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}\n{}", svc.log());
    assert_eq!(task.progress.completed_nodes, 3);
    wait_no_jobs("prewarm", Duration::from_secs(30)).await;
    let log = svc.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "{log}"
    );
}

/// Whether the service account `prewarm:prewarm` may `verb` `what` in `ns`.
fn can_i(admin: &Path, verb: &str, what: &str, ns: &str) -> bool {
    let sa = "system:serviceaccount:prewarm:prewarm";
    let mut args = vec!["auth", "can-i", verb, what, "--as", sa];
    if !ns.is_empty() {
        args.extend(["-n", ns]);
    }
    let (ok, out) = kubectl(admin, &args);
    assert_eq!(out.trim().starts_with("yes"), ok, "{out}");
    ok
}

/// `kubectl kustomize` of deploy/base with the component `deploy/<component>`,
/// from a kustomization written in `dir` (kustomize takes relative paths).
fn component_build(dir: &Path, component: &str) -> String {
    let deploy = repo().join("deploy").canonicalize().unwrap();
    let up = "../".repeat(dir.canonicalize().unwrap().components().count() - 1);
    let deploy = format!(
        "{up}{}",
        deploy.display().to_string().trim_start_matches('/')
    );
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {deploy}/base\ncomponents:\n  - {deploy}/{component}\n"
        ),
    )
    .unwrap();
    let (ok, out) = kubectl(
        cluster().kubeconfig_path(),
        &["kustomize", dir.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    out
}

/// The Role document of a built kustomization.
fn role_of(built: &str) -> String {
    built
        .split("\n---\n")
        .find(|doc| doc.lines().any(|l| l == "kind: Role"))
        .expect("a Role")
        .to_owned()
}

/// The command docs/replicas.md gives for API servers older than 1.21, which
/// serve PodDisruptionBudgets only as `policy/v1beta1` (same fields).
const HA_BEFORE_1_21: &str = "kubectl kustomize deploy/ha | sed 's#^apiVersion: policy/v1$#apiVersion: policy/v1beta1#' | kubectl apply -f -";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_ha_is_accepted_by_the_api_server() {
    let admin = cluster().kubeconfig_path().to_owned();
    let ns = repo().join("deploy/base/namespace.yaml");
    let (ok, out) = kubectl(&admin, &["apply", "-f", ns.to_str().unwrap()]);
    assert!(ok, "{out}");
    let objects = [
        "serviceaccount/prewarm",
        "role.rbac.authorization.k8s.io/prewarm-pulls",
        "clusterrole.rbac.authorization.k8s.io/prewarm-nodes",
        "rolebinding.rbac.authorization.k8s.io/prewarm-pulls",
        "clusterrolebinding.rbac.authorization.k8s.io/prewarm-nodes",
        "configmap/prewarm-redis",
        "service/prewarm",
        "service/prewarm-redis",
        "deployment.apps/prewarm",
        "statefulset.apps/prewarm-redis",
    ];
    let accepted = |out: &str, object: &str| {
        out.lines()
            .any(|l| l.starts_with(&format!("{object} ")) && l.ends_with("(server dry run)"))
    };

    // The overlay as written (policy/v1, Kubernetes 1.21 and later): this
    // 1.20 API server accepts every object but the PodDisruptionBudget, and
    // refuses that one only for its API version.
    let (ok, out) = kubectl(
        &admin,
        &[
            "apply",
            "--dry-run=server",
            "-k",
            repo().join("deploy/ha").to_str().unwrap(),
        ],
    );
    for object in objects {
        assert!(accepted(&out, object), "{object} not accepted:\n{out}");
    }
    assert!(!ok, "{out}");
    let refused: Vec<&str> = out
        .lines()
        .filter(|l| !l.ends_with("(server dry run)") && !l.starts_with("ensure CRDs"))
        .collect();
    assert!(!refused.is_empty(), "{out}");
    for line in refused {
        assert!(
            line.contains(r#"no matches for kind "PodDisruptionBudget" in version "policy/v1""#),
            "refused for another reason: {line}\n{out}"
        );
    }

    // Before 1.21, the documented variant: the whole overlay, the budget included.
    let guide = std::fs::read_to_string(repo().join("docs/replicas.md")).unwrap();
    assert!(
        guide.contains(HA_BEFORE_1_21),
        "docs/replicas.md lost the command"
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(HA_BEFORE_1_21.replace("kubectl apply -f -", "kubectl apply --dry-run=server -f -"))
        .current_dir(repo())
        .env("KUBECONFIG", &admin)
        .output()
        .expect("sh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for object in objects
        .into_iter()
        .chain(["poddisruptionbudget.policy/prewarm"])
    {
        assert!(accepted(&text, object), "{object} not accepted:\n{text}");
    }
}
