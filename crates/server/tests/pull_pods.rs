//! `--pull-mode pods`: the service creates the pull Pods itself, with the
//! guarantees its Jobs give — pinned with `nodeName`, one deterministic name
//! per (task, node, attempt) adopted after a restart, `activeDeadlineSeconds`,
//! cleanup, at most a create and a delete per node — on the real control
//! plane with kube-sim nodes. No Job is ever created in this mode.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

const LONG: Duration = Duration::from_secs(180);

/// The service in pods mode on a fresh database in `namespace`.
fn pods_mode(namespace: &str) -> Service {
    Service::start_flags(namespace, &["--pull-mode", "pods"])
}

/// Every node got exactly one pull Pod.
fn one_pod_per_node(pods: &JobLog, nodes: usize) {
    let per_node = pods.per_node();
    assert_eq!(per_node.len(), nodes, "{per_node:#?}");
    for (node, names) in &per_node {
        assert_eq!(names.len(), 1, "{node} got {names:?}");
    }
}

/// Kubernetes API writes on `resource` the service counted in its `/metrics`.
async fn writes_on(svc: &Service, resource: &str) -> f64 {
    requests_on(
        svc,
        resource,
        &["create", "delete", "deletecollection", "update", "patch"],
    )
    .await
}

/// Kubernetes API requests with one of `verbs` on `resource`, from the service's `/metrics`.
async fn requests_on(svc: &Service, resource: &str, verbs: &[&str]) -> f64 {
    svc.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("prewarm_kube_requests_total{"))
        .filter(|l| l.contains(&format!("resource=\"{resource}\"")))
        .filter(|l| {
            verbs
                .iter()
                .any(|verb| l.contains(&format!("verb=\"{verb}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_completes_with_one_pinned_pod_per_node_and_no_job() {
    let _sim = sim_suite("pm-done", 12, 1);
    let ns = "t-pm-done";
    let pods = JobLog::watch_pods(ns).await;
    let jobs = JobLog::watch(ns).await;
    let svc = pods_mode(ns);
    let id = svc
        .create(json!({
            "images": ["nginx:1.25", "redis:7"],
            "batchSize": 4,
            "nodeSelector": {"suite": "pm-done"}
        }))
        .await;
    // A pull Pod as the API server holds it: pinned, with its deadline.
    let api: Api<Pod> = Api::namespaced(cluster().kube_client().await, ns);
    let pod = wait_first_pod(&api).await;
    let spec = pod.spec.unwrap();
    assert!(
        spec.node_name.as_deref().unwrap().starts_with("pm-done-"),
        "{spec:?}"
    );
    assert_eq!(spec.active_deadline_seconds, Some(600));
    assert!(pod.metadata.owner_references.is_none(), "made by no Job");

    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 12);
    for img in &task.image_statuses {
        assert_eq!(img.completed_nodes, 12, "{img:?}");
    }
    wait_no_pods(ns, Duration::from_secs(60)).await;
    one_pod_per_node(&pods, 12);
    assert_eq!(pods.max_pulling(), 4, "window of 4");
    assert_eq!(jobs.created(), 0, "pods mode creates no Job");
    // One create per node; at most a delete per node besides, plus one
    // delete-by-label at the end (deletes run in the background: the last
    // ones may be in flight, or made moot by the delete-by-label).
    assert_eq!(requests_on(&svc, "pods", &["create"]).await, 12.0);
    let writes = writes_on(&svc, "pods").await;
    assert!(writes <= 2.0 * 12.0 + 1.0, "{writes} pod writes");
    assert_eq!(writes_on(&svc, "jobs").await, 0.0);
}

/// The first pull Pod of `api`'s namespace, once there is one.
async fn wait_first_pod(api: &Api<Pod>) -> Pod {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let list = api.list(&ListParams::default()).await.unwrap();
        if let Some(pod) = list.items.into_iter().next() {
            return pod;
        }
        assert!(std::time::Instant::now() < deadline, "no pull Pod");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_deletes_the_pods_mid_pull() {
    let _sim = sim_suite("pm-cancel", 6, 120);
    let ns = "t-pm-cancel";
    let pods = JobLog::watch_pods(ns).await;
    let svc = pods_mode(ns);
    let id = svc
        .create(json!({
            "images": ["nginx:1.25"],
            "batchSize": 6,
            "nodeSelector": {"suite": "pm-cancel"}
        }))
        .await;
    wait_for("6 pods pulling", LONG, async || pods.alive() == 6).await;
    let (code, v) = svc.cancel(&id).await;
    assert_eq!(code, 200, "{v}");
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "cancelled", "{task:#?}");
    // Long before the 120 s pulls could have ended.
    wait_no_pods(ns, Duration::from_secs(60)).await;
    one_pod_per_node(&pods, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_task_adopts_the_pods_and_doubles_none() {
    let _sim = sim_suite("pm-kill", 100, 3);
    let ns = "t-pm-kill";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("prewarm.db");
    let pods = JobLog::watch_pods(ns).await;
    let flags = ["--pull-mode", "pods"];
    let mut svc = Service::start_with(ns, &db, &flags);
    let id = svc
        .create(json!({
            "images": ["nginx:1.25"],
            "batchSize": 20,
            "nodeSelector": {"suite": "pm-kill"}
        }))
        .await;
    svc.kill9_while_running(&id, 5, 1500, "PULL_PODS_KILL_SEED", &flags)
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 100);
    assert_eq!(task.progress.failed_nodes, 0);
    wait_no_pods(ns, Duration::from_secs(60)).await;
    let per_node = pods.per_node();
    assert_eq!(per_node.len(), 100);
    let doubled: Vec<_> = per_node.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(doubled.is_empty(), "nodes with several pods: {doubled:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_layer_adopts_a_pull_pod_created_twice_and_deletes_by_name_and_task() {
    use prewarm::cluster::kube::KubeCluster;
    use prewarm::cluster::{Cluster, PullJob, PullMode};
    let _sim = sim_suite("pm-calls", 2, 300);
    let ns = "t-pm-calls";
    let cluster = KubeCluster::connect(
        Some(common::cluster().kubeconfig_path()),
        ns,
        PullMode::Pods,
        std::sync::Arc::new(prewarm::metrics::Metrics::new()),
    )
    .await
    .unwrap();
    cluster.synced().await;
    let pull = |node: &str| PullJob {
        task_id: "task-20261202-calls1".into(),
        task_suffix: "calls1".into(),
        node: node.into(),
        attempt: 0,
        images: vec![(0, "nginx:1.25".into())],
        pull_policy: "IfNotPresent".into(),
        image_pull_secrets: vec![],
        priority_class_name: None,
        helper_image: "prewarm:test".into(),
        active_deadline_seconds: 600,
    };
    let api: Api<Pod> = Api::namespaced(common::cluster().kube_client().await, ns);
    let count = async || api.list(&ListParams::default()).await.unwrap().items.len();

    // A create repeated (a retry after a lost answer, a restart) is adopted: 409, one Pod.
    cluster.create_job(&pull("pm-calls-0")).await.unwrap();
    cluster.create_job(&pull("pm-calls-0")).await.unwrap();
    assert_eq!(count().await, 1);
    wait_for(
        "the cache lists the pod as the node's pull",
        LONG,
        async || {
            cluster.jobs().iter().any(|j| {
                j.name == pull("pm-calls-0").name() && j.node == "pm-calls-0" && j.attempt == 0
            })
        },
    )
    .await;

    // Deleted by name (twice: a missing one is fine too).
    let name = pull("pm-calls-0").name();
    cluster.delete_job(&name).await.unwrap();
    cluster.delete_job(&name).await.unwrap();
    wait_no_pods(ns, LONG).await;

    // Deleted by task, whatever the node.
    cluster.create_job(&pull("pm-calls-0")).await.unwrap();
    cluster.create_job(&pull("pm-calls-1")).await.unwrap();
    assert_eq!(count().await, 2);
    cluster
        .delete_task_jobs("task-20261202-calls1")
        .await
        .unwrap();
    wait_no_pods(ns, LONG).await;
}
