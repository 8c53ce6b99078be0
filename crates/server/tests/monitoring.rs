//! The monitoring bundle of `deploy/monitoring/` against Debian's real
//! Prometheus and Alertmanager: both started here on loopback ports with the
//! project's rule file, Prometheus scraping the real service on the local
//! control plane with kube-sim. A healthy task fires nothing; a failing task
//! fires `PrewarmTaskFailed` (and the pull-failure ratio by reason), which
//! Alertmanager delivers to a webhook receiver of this test; every query of
//! `dashboard.json` then answers with data.
//!
//! The rules' `for:` durations and the scrape/evaluation interval are shortened
//! here so the test runs in a couple of minutes: `PREWARM_MONITORING_FOR`
//! (default `2s`) and `PREWARM_MONITORING_INTERVAL` (default `1s`).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);
/// Metrics other parts of the service add; a dashboard query on one of them may
/// answer empty only while the service does not expose it yet.
const NOT_YET_EXPOSED_OK: [&str; 1] = ["prewarm_leader"];

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring")
}

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A program this test started; stopped by PID (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(name: &'static str, program: &str, args: &[String], log: PathBuf) -> Daemon {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} ({e}); scripts/setup.sh installs it"));
        Daemon { name, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `url` answers 200, or panics with the log.
    async fn wait_ready(&mut self, url: &str) {
        let deadline = Instant::now() + LONG;
        loop {
            if let Ok(r) = http().get(url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rule file with every `for:` set to `for_`.
fn rules_with_for(for_: &str) -> String {
    let rules = std::fs::read_to_string(monitoring_dir().join("rules.yaml")).unwrap();
    let mut out = String::new();
    let mut replaced = 0;
    for line in rules.lines() {
        match line.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => {
                out.push_str(&format!("{indent}for: {for_}\n"));
                replaced += 1;
            }
            _ => out.push_str(&format!("{line}\n")),
        }
    }
    assert!(replaced >= 10, "only {replaced} `for:` lines in rules.yaml");
    out
}

/// Alertmanager webhook payloads received.
type Notifications = Arc<Mutex<Vec<Value>>>;

async fn alert_receiver() -> (String, Notifications) {
    use axum::routing::post;
    let got: Notifications = Arc::default();
    let app = axum::Router::new().route(
        "/alerts",
        post({
            let got = got.clone();
            move |body: axum::Json<Value>| async move {
                got.lock().unwrap().push(body.0);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/alerts"), got)
}

/// A Prometheus instant query: the `data.result` array (panics on an error answer).
async fn query(prom: &str, promql: &str) -> Vec<Value> {
    let url = reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), [("query", promql)])
        .unwrap();
    let r = http().get(url).send().await.unwrap();
    let code = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert!(
        code == 200 && v["status"] == "success",
        "query {promql} failed: {code} {v}"
    );
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Last evaluation time (unix seconds) of the rule group `name`.
async fn last_evaluation(prom: &str, name: &str) -> f64 {
    let v = get_json(format!("{prom}/api/v1/rules")).await;
    let group = v["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no rule group {name}: {v}"))
        .clone();
    let at = group["lastEvaluation"].as_str().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `(alertname, labels)` of the alerts Prometheus has firing or pending.
async fn active_alerts(prom: &str) -> Vec<(String, Value)> {
    query(prom, "ALERTS")
        .await
        .into_iter()
        .map(|s| {
            let m = s["metric"].clone();
            (m["alertname"].as_str().unwrap_or_default().to_owned(), m)
        })
        .collect()
}

/// Every `expr` of every panel (rows included) of a Grafana dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let title = p["title"].as_str().unwrap_or_default().to_owned();
                out.push((title, t["expr"].as_str().unwrap_or_default().to_owned()));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_alert_through_alertmanager_and_every_dashboard_query_answers() {
    let started = Instant::now();
    let phase = |what: &str| eprintln!("[monitoring] {what} after {:.1?}", started.elapsed());
    let for_ = setting("PREWARM_MONITORING_FOR", "2s");
    let interval = setting("PREWARM_MONITORING_INTERVAL", "1s");
    let _sim = sim(r#"
nodes:
  - namePrefix: mon-
    count: 3
    labels: {suite: mon}
images:
  - match: "broken.example/*"
    fail: ErrImagePull
    message: "manifest unknown"
  - match: "*"
    pullSeconds: 1
"#);
    let service = Service::start("prewarm-mon");
    phase("control plane, kube-sim and service up");
    let dir = tempfile::tempdir().unwrap();
    let (receiver_url, notifications) = alert_receiver().await;

    // Alertmanager: loopback only, no cluster gossip, one webhook receiver.
    let am_port = free_port();
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: test\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: test\n    webhook_configs:\n      - url: {receiver_url}\n        send_resolved: false\n"
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("am-data")).unwrap();
    let mut alertmanager = Daemon::start(
        "alertmanager",
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", dir.path().join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".to_owned(),
        ],
        dir.path().join("alertmanager.log"),
    );
    let am = format!("http://127.0.0.1:{am_port}");
    alertmanager.wait_ready(&format!("{am}/-/ready")).await;

    // Prometheus: the project's rules (shortened `for:`), scraping the service.
    std::fs::write(dir.path().join("rules.yaml"), rules_with_for(&for_)).unwrap();
    let target = service.url.trim_start_matches("http://").to_owned();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
             rule_files: [rules.yaml]\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: prewarm\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let mut prometheus = Daemon::start(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", prom_config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        dir.path().join("prometheus.log"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    prometheus.wait_ready(&format!("{prom}/-/ready")).await;
    wait_for("Prometheus to scrape the service", LONG, async || {
        query(&prom, "up{job=\"prewarm\"} == 1").await.len() == 1
    })
    .await;

    phase("Alertmanager and Prometheus up, service scraped");
    // A healthy task: it completes, and after the rules have had their `for:`
    // and more to look at its metrics, nothing is pending, firing or delivered.
    let id = service
        .create(json!({"images": ["nginx:1.25"], "nodeSelector": {"suite": "mon"}}))
        .await;
    let task = service.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    wait_for("Prometheus to see the completed task", LONG, async || {
        query(&prom, "prewarm_tasks_total{status=\"completed\"} == 1")
            .await
            .len()
            == 1
    })
    .await;
    phase("healthy task completed and scraped");
    let seen = unix_now();
    let for_secs: f64 = humantime_secs(&for_);
    wait_for(
        "the alert rules to evaluate past `for:`",
        LONG,
        async || last_evaluation(&prom, "prewarm.alerts").await > seen + for_secs + 2.0,
    )
    .await;
    assert_eq!(active_alerts(&prom).await, vec![], "a healthy run fired");
    let am_alerts = get_json(format!("{am}/api/v2/alerts")).await;
    assert_eq!(am_alerts, json!([]), "Alertmanager holds alerts");
    assert!(notifications.lock().unwrap().is_empty());
    phase("healthy run fired nothing");

    // A failing task: PrewarmTaskFailed fires and reaches the receiver.
    let id = service
        .create(json!({
            "images": ["broken.example/app:1"],
            "nodeSelector": {"suite": "mon"},
            "maxRetries": 0,
        }))
        .await;
    let task = service.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "failed", "{task:#?}");
    wait_for("PrewarmTaskFailed to fire", LONG, async || {
        !query(
            &prom,
            "ALERTS{alertname=\"PrewarmTaskFailed\",alertstate=\"firing\"}",
        )
        .await
        .is_empty()
    })
    .await;
    wait_for(
        "Alertmanager to deliver PrewarmTaskFailed",
        LONG,
        async || {
            notifications.lock().unwrap().iter().any(|n| {
                n["alerts"].as_array().into_iter().flatten().any(|a| {
                    a["labels"]["alertname"] == "PrewarmTaskFailed" && a["status"] == "firing"
                })
            })
        },
    )
    .await;
    phase("failing task's alert delivered");
    let delivered = notifications.lock().unwrap().clone();
    let alert = delivered
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .find(|a| a["labels"]["alertname"] == "PrewarmTaskFailed")
        .unwrap();
    assert_eq!(alert["labels"]["severity"], "warning", "{alert:#}");
    assert_eq!(alert["labels"]["job"], "prewarm", "{alert:#}");
    assert_eq!(
        alert["annotations"]["summary"], "A prewarm task failed",
        "{alert:#}"
    );
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default()
            .ends_with("docs/monitoring.md#prewarmtaskfailed"),
        "{alert:#}"
    );
    // Three of six node attempts failed with ErrImagePull: the ratio alert names the reason.
    wait_for("PrewarmPullFailureRatioHigh{reason=ErrImagePull}", LONG, async || {
        !query(
            &prom,
            "ALERTS{alertname=\"PrewarmPullFailureRatioHigh\",alertstate=\"firing\",reason=\"ErrImagePull\"}",
        )
        .await
        .is_empty()
    })
    .await;

    phase("pull failure ratio alert fired");
    // Every dashboard query runs and, after these tasks, answers with data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring_dir().join("dashboard.json")).unwrap(),
    )
    .unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let exposed = service.metrics().await;
    for (title, expr) in queries {
        let result = query(&prom, &expr).await;
        if result.is_empty()
            && NOT_YET_EXPOSED_OK
                .iter()
                .any(|m| expr.contains(m) && !exposed.contains(&format!("\n{m}")))
        {
            continue;
        }
        assert!(
            !result.is_empty(),
            "panel {title:?}: {expr} answered no data"
        );
    }
}

/// Seconds of a Prometheus duration like `2s` or `1m`.
fn humantime_secs(d: &str) -> f64 {
    let (n, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len()));
    let n: f64 = n.parse().unwrap_or(0.0);
    match unit {
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => n,
    }
}
