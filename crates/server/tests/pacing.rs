//! Registry pacing against the real control plane: kube-sim registries that
//! count every pull and answer `429 toomanyrequests` past their limit, the
//! real `prewarm` binary, measured from kube-sim's log (what the registry saw).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use kube_sim::testing::most_served_in_any;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(240);
const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_registry_never_sees_more_than_its_rate_while_another_goes_at_full_speed() {
    // 200 nodes; 40 (pace-0..pace-39) still need the paced image, all need the fast one.
    let sim = sim(r#"
timeScale: 0.5
registries:
  - {host: paced.example, limit: 20, window: 60s}
nodes:
  - {namePrefix: pace-, count: 200, labels: {suite: pacing}}
preloaded:
  - {image: "paced.example/app:1", nodes: "pace-{4,5,6,7,8,9}?"}
  - {image: "paced.example/app:1", nodes: "pace-1??"}
"#);
    let ns = "t-pacing";
    let svc = Service::start_flags(ns, &["--registry-pull-rate", "paced.example=20/1m"]);
    let body = json!({
        "images": ["paced.example/app:1", "fast.example/tool:1"],
        "nodeSelector": {"suite": "pacing"},
        "batchSize": 50
    });
    // The plan shows what each registry is asked: the paced one's 40 nodes
    // at 20/1m start over a minute, and the ETA waits for them.
    let mut plan = Value::Null;
    wait_for("a plan over the 200 nodes", LONG, async || {
        let url = format!("{}/api/v1/tasks?dryRun=true", svc.url);
        let answer = http().post(url).json(&body).send().await.unwrap();
        plan = answer.json().await.unwrap();
        plan["selectedNodes"] == 200 && plan["pullsNeeded"] == 240
    })
    .await;
    assert_eq!(
        plan["registries"],
        json!([
            {"host": "fast.example", "nodes": 200, "pulls": 200, "pullRate": null, "waitSeconds": 0.0},
            {"host": "paced.example", "nodes": 40, "pulls": 40, "pullRate": "20/1m", "waitSeconds": 60.0}
        ]),
        "{plan}"
    );
    assert!(plan["etaSeconds"].as_f64() >= Some(60.0), "{plan}");
    let id = svc.create(body).await;
    // The other registry's nodes all finish while the paced ones wait for tokens.
    let midway = svc
        .wait_until(&id, LONG, |t| {
            t.progress.completed_nodes >= 180 || t.status.is_terminal()
        })
        .await;
    assert_eq!(midway.progress.completed_nodes, 180, "{midway:#?}");
    assert_eq!(midway.progress.waiting_for_registry, 20, "{midway:#?}");
    let eta = midway.estimated_completion.expect("an ETA while running");
    assert!(
        eta > chrono::Utc::now() + chrono::Duration::seconds(20),
        "the ETA includes the wait for tokens: {eta}"
    );
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 200);
    assert_eq!(task.progress.waiting_for_registry, 0);

    let pulls = sim.registry_pulls("paced.example");
    assert_eq!(pulls.iter().filter(|p| p.served).count(), 40, "{pulls:?}");
    assert!(pulls.iter().all(|p| p.served), "nothing refused: {pulls:?}");
    assert_eq!(most_served_in_any(&pulls, MINUTE), 20, "{pulls:?}");
    let metrics = get_json_text(&format!("{}/metrics", svc.url)).await;
    assert!(
        metrics.contains("prewarm_registry_wait_seconds_count 20"),
        "20 nodes waited for tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_answering_429_is_left_alone_then_every_node_completes() {
    let sim = sim(r#"
registries:
  - {host: hub.example, limit: 10, window: 60s}
nodes:
  - {namePrefix: hub-, count: 20, labels: {suite: throttled}}
"#);
    let ns = "t-throttled";
    let svc = Service::start(ns);
    let id = svc
        .create(json!({
            "images": ["hub.example/app:1"],
            "nodeSelector": {"suite": "throttled"},
            "batchSize": 20,
            "maxRetries": 3,
            "retryDelay": 1
        }))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 20);
    assert_eq!(
        task.progress.failed_nodes, 0,
        "no node failed for rate limiting"
    );

    let pulls = sim.registry_pulls("hub.example");
    let first_refusal = pulls.iter().find(|p| !p.served).unwrap_or_else(|| {
        let log = sim.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("registry")).collect();
        panic!(
            "the registry refused no pull: {pulls:?}\n{}",
            lines.join("\n")
        )
    });
    let served_after: Vec<i64> = pulls
        .iter()
        .filter(|p| p.served && p.at_ms > first_refusal.at_ms)
        .map(|p| p.at_ms)
        .collect();
    assert!(!served_after.is_empty());
    assert!(
        served_after
            .iter()
            .all(|&t| t - first_refusal.at_ms >= MINUTE.as_millis() as i64),
        "no pull within a minute of the refusal: {pulls:?}"
    );
    let metrics = get_json_text(&format!("{}/metrics", svc.url)).await;
    let throttled: BTreeMap<&str, f64> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("prewarm_registry_throttled_total{registry=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(host, n)| (host, n.trim().parse().unwrap_or(0.0)))
        .collect();
    assert!(
        throttled.get("hub.example").copied().unwrap_or(0.0) >= 1.0,
        "{throttled:?}"
    );
}

/// GET `url` as text.
async fn get_json_text(url: &str) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}
