//! Engine logic through the `Cluster` trait with an in-memory cluster and a
//! hand-driven clock. The real API server is exercised by the integration tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use prewarm_api::{CreateTaskRequest, TaskStatus};
use tokio::sync::broadcast;

use super::*;
use crate::clock::ManualClock;
use crate::cluster::pull_job::container_name;
use crate::cluster::{
    ClusterResult, ContainerObservation, ContainerState, JobObservation, PodObservation,
};
use crate::domain::task::TaskId;
use crate::store::MemoryStore;

#[derive(Default)]
struct FakeState {
    nodes: Vec<NodeInfo>,
    alive: BTreeMap<String, PullJob>,
    creates: Vec<String>,
    max_alive_per_task: HashMap<String, usize>,
}

/// Jobs live in a map; pods are whatever the test reports.
struct FakeCluster {
    state: Mutex<FakeState>,
    events: broadcast::Sender<ClusterEvent>,
}

impl FakeCluster {
    fn new(nodes: Vec<NodeInfo>) -> Arc<FakeCluster> {
        Arc::new(FakeCluster {
            state: Mutex::new(FakeState {
                nodes,
                ..Default::default()
            }),
            events: broadcast::channel(1024).0,
        })
    }
    fn alive(&self) -> Vec<PullJob> {
        self.state.lock().unwrap().alive.values().cloned().collect()
    }
    fn creates(&self) -> Vec<String> {
        self.state.lock().unwrap().creates.clone()
    }
    fn max_alive(&self, task: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .max_alive_per_task
            .get(task)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl Cluster for FakeCluster {
    async fn synced(&self) {}
    fn nodes(&self) -> Vec<NodeInfo> {
        self.state.lock().unwrap().nodes.clone()
    }
    fn jobs(&self) -> Vec<JobObservation> {
        self.alive()
            .into_iter()
            .map(|j| JobObservation {
                name: j.name(),
                task_id: j.task_id.clone(),
                node: j.node.clone(),
                attempt: j.attempt,
                failed_reason: None,
            })
            .collect()
    }
    fn pods(&self) -> Vec<PodObservation> {
        Vec::new()
    }
    fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }
    async fn create_job(&self, job: &PullJob) -> ClusterResult<()> {
        let mut s = self.state.lock().unwrap();
        s.creates.push(job.name());
        s.alive.insert(job.name(), job.clone());
        let n = s
            .alive
            .values()
            .filter(|j| j.task_id == job.task_id)
            .count();
        let m = s.max_alive_per_task.entry(job.task_id.clone()).or_default();
        *m = (*m).max(n);
        Ok(())
    }
    async fn delete_job(&self, name: &str) -> ClusterResult<()> {
        self.state.lock().unwrap().alive.remove(name);
        Ok(())
    }
    async fn delete_task_jobs(&self, task_id: &str) -> ClusterResult<()> {
        self.state
            .lock()
            .unwrap()
            .alive
            .retain(|_, j| j.task_id != task_id);
        Ok(())
    }
    fn connected(&self) -> bool {
        true
    }
    async fn probe(&self) -> ClusterResult<()> {
        Ok(())
    }
}

fn node(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ready: true,
        unschedulable: false,
        tainted: false,
        images: Vec::new(),
    }
}

struct Harness {
    engine: Engine,
    store: Arc<MemoryStore>,
    cluster: Arc<FakeCluster>,
    clock: Arc<ManualClock>,
}

impl Harness {
    fn new(nodes: Vec<NodeInfo>, cap: usize) -> Harness {
        Self::with(Arc::new(MemoryStore::new()), FakeCluster::new(nodes), cap)
    }

    fn with(store: Arc<MemoryStore>, cluster: Arc<FakeCluster>, cap: usize) -> Harness {
        let clock = Arc::new(ManualClock::new("2024-01-16T10:00:00Z".parse().unwrap()));
        let engine = Engine::new(
            store.clone(),
            cluster.clone(),
            clock.clone(),
            EngineConfig {
                namespace: "prewarm".into(),
                helper_image: "prewarm:test".into(),
                max_concurrent_nodes: cap,
                pull_timeout: Duration::from_secs(600),
            },
        );
        Harness {
            engine,
            store,
            cluster,
            clock,
        }
    }

    async fn submit(&self, req: CreateTaskRequest) -> String {
        let spec = TaskSpec::from_request(req).unwrap();
        let id = TaskId::generate(self.clock.now());
        let task = spec.new_task(id.clone(), "test", self.clock.now());
        self.store.insert(&task).await.unwrap();
        id.0
    }

    /// One engine pass, then let spawned API calls run.
    async fn step(&mut self) {
        self.engine.store_check_due = true;
        self.engine.step().await;
        settle().await;
        while let Ok(c) = self.engine.created_rx.try_recv() {
            self.engine.on_created(c);
        }
        while let Ok(d) = self.engine.deleted_rx.try_recv() {
            self.engine.on_deleted(d);
        }
    }

    /// Reports every alive Job's pod: images listed in `fail` fail with `reason`, others ran.
    fn report_all(&mut self, fail: &[(&str, &str)]) {
        for job in self.cluster.alive() {
            let containers = job
                .images
                .iter()
                .map(|(i, image)| {
                    let state = match fail.iter().find(|(img, _)| img == image) {
                        Some((_, reason)) => ContainerState::Waiting {
                            reason: reason.to_string(),
                            message: "i/o timeout".into(),
                        },
                        None => ContainerState::Terminated,
                    };
                    ContainerObservation {
                        name: container_name(*i),
                        state,
                        image_id: format!("docker.io/library/x@sha256:{i:064}"),
                    }
                })
                .collect();
            self.engine
                .on_event(ClusterEvent::PodChanged(PodObservation {
                    name: format!("{}-pod", job.name()),
                    job: job.name(),
                    task_id: job.task_id.clone(),
                    node: job.node.clone(),
                    attempt: job.attempt,
                    phase: "Running".into(),
                    reason: String::new(),
                    message: String::new(),
                    init_containers: Vec::new(),
                    containers,
                }));
        }
    }

    async fn task(&self, id: &str) -> prewarm_api::Task {
        self.store.get(id).await.unwrap().unwrap()
    }
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn images(list: &[&str]) -> CreateTaskRequest {
    CreateTaskRequest {
        images: list.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn rolling_window_never_exceeds_batch_and_completes() {
    let nodes = (0..10).map(|i| node(&format!("n{i}"), &[])).collect();
    let mut h = Harness::new(nodes, 500);
    let id = h
        .submit(CreateTaskRequest {
            batch_size: Some(3),
            ..images(&["nginx:1", "redis:7"])
        })
        .await;
    h.step().await;
    assert_eq!(h.cluster.alive().len(), 3);
    assert_eq!(h.task(&id).await.status, TaskStatus::Running);
    for _ in 0..10 {
        h.report_all(&[]);
        h.step().await;
        h.clock.advance(Duration::from_secs(1));
    }
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.completed_nodes, 10);
    assert_eq!(task.progress.percentage, 100.0);
    assert_eq!(task.progress.total_batches, 4);
    assert_eq!(task.image_statuses[1].completed_nodes, 10);
    assert!(!task.image_statuses[0].digests.is_empty());
    assert_eq!(h.cluster.max_alive(&id), 3);
    assert!(h.cluster.alive().is_empty(), "every Job deleted");
    assert_eq!(h.cluster.creates().len(), 10, "one Job per node");
}

#[tokio::test]
async fn transient_failures_retry_after_the_delay() {
    let mut h = Harness::new(vec![node("n0", &[])], 500);
    let id = h
        .submit(CreateTaskRequest {
            max_retries: Some(2),
            retry_delay: Some(30),
            ..images(&["flaky/app:1"])
        })
        .await;
    h.step().await;
    h.report_all(&[("flaky/app:1", "ErrImagePull")]);
    h.step().await;
    assert!(h.cluster.alive().is_empty(), "failed attempt's Job deleted");
    h.clock.advance(Duration::from_secs(29));
    h.step().await;
    assert!(h.cluster.alive().is_empty(), "not before the retry delay");
    h.clock.advance(Duration::from_secs(2));
    h.step().await;
    let alive = h.cluster.alive();
    assert_eq!(alive.len(), 1);
    assert_eq!(alive[0].attempt, 1);
    h.report_all(&[]);
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
}

#[tokio::test]
async fn exhausted_retries_fail_naming_node_image_and_reason() {
    let mut h = Harness::new(vec![node("n0", &[]), node("n1", &[])], 500);
    let id = h.submit(images(&["nginx:1", "bad/app:1"])).await;
    h.step().await;
    h.report_all(&[("bad/app:1", "ImagePullBackOff")]);
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.progress.failed_nodes, 2);
    assert_eq!(task.failed_node_details.len(), 2);
    let d = &task.failed_node_details[0];
    assert_eq!(
        (d.image.as_str(), d.reason.as_str()),
        ("bad/app:1", "ImagePullBackOff")
    );
    assert_eq!(task.image_statuses[0].completed_nodes, 2);
}

#[tokio::test]
async fn restart_adopts_jobs_without_duplicates() {
    let nodes: Vec<NodeInfo> = (0..6).map(|i| node(&format!("n{i}"), &[])).collect();
    let store = Arc::new(MemoryStore::new());
    let cluster = FakeCluster::new(nodes);
    let mut h = Harness::with(store.clone(), cluster.clone(), 500);
    let id = h
        .submit(CreateTaskRequest {
            batch_size: Some(4),
            ..images(&["nginx:1"])
        })
        .await;
    h.step().await;
    // Two nodes finish, then the engine dies without any further write.
    let alive = cluster.alive();
    for job in &alive[..2] {
        h.engine.on_event(ClusterEvent::PodChanged(PodObservation {
            name: "p".into(),
            job: job.name(),
            task_id: id.clone(),
            node: job.node.clone(),
            attempt: 0,
            phase: "Succeeded".into(),
            reason: String::new(),
            message: String::new(),
            init_containers: Vec::new(),
            containers: vec![ContainerObservation {
                name: container_name(0),
                state: ContainerState::Terminated,
                image_id: String::new(),
            }],
        }));
    }
    h.step().await;
    drop(h);

    let mut h = Harness::with(store, cluster.clone(), 500);
    h.engine.recover().await;
    h.step().await;
    for _ in 0..5 {
        h.report_all(&[]);
        h.step().await;
    }
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.completed_nodes, 6);
    let mut creates = cluster.creates();
    let n = creates.len();
    creates.sort();
    creates.dedup();
    assert_eq!(creates.len(), n, "no Job created twice");
    assert_eq!(n, 6);
}

#[tokio::test]
async fn higher_priority_takes_free_slots_first() {
    let nodes = (0..4).map(|i| node(&format!("n{i}"), &[])).collect();
    let mut h = Harness::new(nodes, 2);
    let low = h.submit(images(&["low:1"])).await;
    h.clock.advance(Duration::from_secs(1));
    let high = h
        .submit(CreateTaskRequest {
            priority: Some(100),
            ..images(&["high:1"])
        })
        .await;
    h.step().await;
    let alive = h.cluster.alive();
    assert_eq!(alive.len(), 2);
    assert!(alive.iter().all(|j| j.task_id == high), "{alive:?}");
    assert_eq!(h.task(&low).await.status, TaskStatus::Pending);
}

#[tokio::test]
async fn cancel_deletes_jobs_and_starts_no_more() {
    let nodes = (0..5).map(|i| node(&format!("n{i}"), &[])).collect();
    let mut h = Harness::new(nodes, 500);
    let id = h
        .submit(CreateTaskRequest {
            batch_size: Some(2),
            ..images(&["nginx:1"])
        })
        .await;
    h.step().await;
    assert_eq!(h.cluster.alive().len(), 2);
    h.store.cancel(&id, h.clock.now()).await.unwrap();
    h.step().await;
    assert!(h.cluster.alive().is_empty());
    h.step().await;
    assert_eq!(h.cluster.creates().len(), 2);
    assert_eq!(h.task(&id).await.status, TaskStatus::Cancelled);
}

#[tokio::test]
async fn selection_follows_selector_readiness_cordons_and_taints() {
    let mut cordoned = node("c0", &[("w", "a")]);
    cordoned.unschedulable = true;
    let mut down = node("d0", &[("w", "a")]);
    down.ready = false;
    let mut tainted = node("t0", &[("w", "a")]);
    tainted.tainted = true;
    let mut preloaded = node("p0", &[("w", "a")]);
    preloaded.images = vec!["docker.io/library/nginx:1".into()];
    let nodes = vec![
        node("a0", &[("w", "a")]),
        node("b0", &[("w", "b")]),
        cordoned,
        down,
        tainted,
        preloaded,
    ];
    let mut h = Harness::new(nodes, 500);
    let id = h
        .submit(CreateTaskRequest {
            node_selector: Some([("w".to_string(), "a".to_string())].into()),
            tolerate_taints: Some(false),
            ..images(&["nginx:1"])
        })
        .await;
    h.step().await;
    let alive: Vec<String> = h.cluster.alive().into_iter().map(|j| j.node).collect();
    assert_eq!(alive, vec!["a0".to_string()], "preloaded p0 needs no Job");
    let task = h.task(&id).await;
    assert_eq!(task.progress.total_nodes, 2);
    assert_eq!(task.progress.completed_nodes, 1);
}

#[tokio::test]
async fn no_matching_node_fails_with_a_message() {
    let mut h = Harness::new(vec![node("a0", &[])], 500);
    let id = h
        .submit(CreateTaskRequest {
            node_selector: Some([("gpu".to_string(), "yes".to_string())].into()),
            ..images(&["nginx:1"])
        })
        .await;
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.reason.as_deref(), Some("NoMatchingNodes"));
    assert!(task.error_message.unwrap().contains("gpu"));
}

#[tokio::test]
async fn node_gone_is_skipped_not_failed() {
    let mut h = Harness::new(vec![node("a0", &[]), node("a1", &[])], 500);
    let id = h.submit(images(&["nginx:1"])).await;
    h.step().await;
    h.engine.on_event(ClusterEvent::NodeDeleted("a1".into()));
    h.report_all(&[]);
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.skipped_nodes, 1);
    assert_eq!(task.skipped_node_details[0].node_name, "a1");
    assert_eq!(task.skipped_node_details[0].reason, "NodeGone");
    assert_eq!(task.progress.percentage, 100.0);
}

#[tokio::test]
async fn pull_and_task_timeouts() {
    let mut h = Harness::new(vec![node("a0", &[])], 500);
    let id = h
        .submit(CreateTaskRequest {
            timeout_seconds: Some(60),
            ..images(&["slow:1"])
        })
        .await;
    h.step().await;
    assert_eq!(h.cluster.alive().len(), 1);
    h.clock.advance(Duration::from_secs(61));
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.reason.as_deref(), Some("Timeout"));
    assert!(h.cluster.alive().is_empty());

    let id = h.submit(images(&["slow:2"])).await;
    h.step().await;
    h.clock.advance(Duration::from_secs(601));
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.failed_node_details[0].reason, "Timeout");
}
