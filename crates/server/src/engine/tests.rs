//! Engine logic through the `Cluster` trait with an in-memory cluster and a
//! hand-driven clock. The real API server is exercised by the integration tests.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prewarm_api::{CreateTaskRequest, TaskStatus};

use super::*;
use crate::clock::ManualClock;
use crate::cluster::fake::{FakeCluster, Fault};
use crate::cluster::pull_job::container_name;
use crate::cluster::{ClusterEvent, NodeInfo};
use crate::cluster::{ContainerObservation, ContainerState, PodObservation};
use crate::domain::task::TaskId;
use crate::domain::task::TaskSpec;
use crate::store::scripted::ScriptedStore;
use crate::store::MemoryStore;
use crate::testing::{node_with_images, GIB};

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
        ..NodeInfo::default()
    }
}

struct Harness {
    engine: Engine,
    store: Arc<dyn TaskStore>,
    cluster: Arc<FakeCluster>,
    clock: Arc<ManualClock>,
}

impl Harness {
    fn new(nodes: Vec<NodeInfo>, cap: usize) -> Harness {
        Self::with(
            Arc::new(MemoryStore::new()),
            Arc::new(FakeCluster::with_nodes(nodes)),
            cap,
        )
    }

    fn with(store: Arc<dyn TaskStore>, cluster: Arc<FakeCluster>, cap: usize) -> Harness {
        let clock = Arc::new(ManualClock::new("2024-01-16T10:00:00Z".parse().unwrap()));
        let engine = Engine::new(
            store.clone(),
            cluster.clone(),
            clock.clone(),
            EngineConfig {
                max_concurrent_nodes: cap,
                pull_timeout: Duration::from_secs(600),
                ..crate::testing::engine_config()
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
        self.engine.store_checks.ask();
        self.engine.step().await;
        settle().await;
        while let Ok(done) = self.engine.calls.done.try_recv() {
            self.engine.on_call_done(done);
        }
    }

    /// Reports every alive Job's pod: images listed in `fail` fail with `reason`, others ran.
    fn report_all(&mut self, fail: &[(&str, &str)]) {
        self.report_all_saying(fail, "i/o timeout");
    }

    /// Like `report_all`, the failures with the kubelet message `message`.
    fn report_all_saying(&mut self, fail: &[(&str, &str)], message: &str) {
        for job in self.cluster.alive() {
            let containers = job
                .images
                .iter()
                .map(|(i, image)| {
                    let state = match fail.iter().find(|(img, _)| img == image) {
                        Some((_, reason)) => ContainerState::Waiting {
                            reason: reason.to_string(),
                            message: message.into(),
                        },
                        None => ContainerState::Terminated,
                    };
                    ContainerObservation {
                        name: container_name(*i),
                        state,
                        image_id: format!("docker.io/library/x@sha256:{i:064}"),
                    }
                })
                .collect::<Vec<_>>();
            if containers
                .iter()
                .all(|c| c.state == ContainerState::Terminated)
            {
                self.cluster.finished(&job.name());
            }
            self.engine
                .on_event(ClusterEvent::PodChanged(Box::new(PodObservation {
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
                })));
        }
    }

    /// Reports the pod of the alive Job on `node` with its containers in `state`.
    fn report_node(&mut self, node: &str, state: ContainerState) {
        let job = self
            .cluster
            .alive()
            .into_iter()
            .find(|j| j.node == node)
            .expect("a Job on the node");
        let containers = job
            .images
            .iter()
            .map(|(i, _)| ContainerObservation {
                name: container_name(*i),
                state: state.clone(),
                image_id: String::new(),
            })
            .collect();
        self.engine
            .on_event(ClusterEvent::PodChanged(Box::new(PodObservation {
                name: format!("{}-pod", job.name()),
                job: job.name(),
                task_id: job.task_id.clone(),
                node: job.node.clone(),
                attempt: job.attempt,
                phase: "Pending".into(),
                reason: String::new(),
                message: String::new(),
                init_containers: Vec::new(),
                containers,
            })));
    }

    /// Moves both clocks: the wall clock users see and the monotonic one timers use.
    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        tokio::time::advance(by).await;
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

/// A harness over `count` plain nodes `n0…` (no global cap to speak of)
/// with `req` submitted and one pass run.
async fn started(count: usize, req: CreateTaskRequest) -> (Harness, String) {
    let nodes = (0..count).map(|i| node(&format!("n{i}"), &[])).collect();
    let mut h = Harness::new(nodes, 500);
    let id = h.submit(req).await;
    h.step().await;
    (h, id)
}

/// A task of `list` with `batch_size` nodes pulling at once.
fn batch(batch_size: u32, list: &[&str]) -> CreateTaskRequest {
    CreateTaskRequest {
        batch_size: Some(batch_size),
        ..images(list)
    }
}

fn images(list: &[&str]) -> CreateTaskRequest {
    CreateTaskRequest {
        images: list.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn rolling_window_never_exceeds_batch_and_completes() {
    let (mut h, id) = started(10, batch(3, &["nginx:1", "redis:7"])).await;
    assert_eq!(h.cluster.alive().len(), 3);
    assert_eq!(h.task(&id).await.status, TaskStatus::Running);
    for _ in 0..10 {
        h.report_all(&[]);
        h.step().await;
        h.advance(Duration::from_secs(1)).await;
    }
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.completed_nodes, 10);
    assert_eq!(task.progress.percentage, 100.0);
    assert_eq!(task.progress.total_batches, 4);
    assert_eq!(task.image_statuses[1].completed_nodes, 10);
    assert!(!task.image_statuses[0].digests.is_empty());
    assert_eq!(h.cluster.max_pulling(&id), 3);
    assert!(h.cluster.alive().is_empty(), "every Job deleted");
    assert_eq!(h.cluster.creates().len(), 10, "one Job per node");
}

#[tokio::test(start_paused = true)]
async fn a_completed_nodes_slot_goes_to_the_next_node_before_its_job_is_deleted() {
    let (mut h, id) = started(6, batch(2, &["nginx:1"])).await;
    assert_eq!(h.cluster.alive().len(), 2);
    h.cluster.hold_deletes.store(true, Ordering::SeqCst);
    h.report_all(&[]);
    h.step().await;
    assert_eq!(
        h.cluster.creates().len(),
        4,
        "two more nodes started while the deletions hang"
    );
    assert_eq!(
        h.cluster.alive().len(),
        4,
        "the finished Jobs are still there"
    );
    assert_eq!(h.cluster.max_pulling(&id), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_holds_its_slot_until_its_job_is_deleted() {
    let (mut h, id) = started(
        4,
        CreateTaskRequest {
            max_retries: Some(1),
            retry_delay: Some(30),
            ..batch(2, &["flaky/app:1"])
        },
    )
    .await;
    h.cluster.hold_deletes.store(true, Ordering::SeqCst);
    h.report_all(&[("flaky/app:1", "ErrImagePull")]);
    h.step().await;
    h.step().await;
    assert_eq!(
        h.cluster.creates().len(),
        2,
        "a Job the kubelet may still be pulling for keeps its slot"
    );
    assert_eq!(h.task(&id).await.status, TaskStatus::Running);
}

#[tokio::test(start_paused = true)]
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
    h.advance(Duration::from_secs(29)).await;
    h.step().await;
    assert!(h.cluster.alive().is_empty(), "not before the retry delay");
    h.advance(Duration::from_secs(2)).await;
    h.step().await;
    let alive = h.cluster.alive();
    assert_eq!(alive.len(), 1);
    assert_eq!(alive[0].attempt, 1);
    h.report_all(&[]);
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
async fn restart_adopts_jobs_without_duplicates() {
    let nodes: Vec<NodeInfo> = (0..6).map(|i| node(&format!("n{i}"), &[])).collect();
    let store = Arc::new(MemoryStore::new());
    let cluster = Arc::new(FakeCluster::with_nodes(nodes));
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
        h.engine
            .on_event(ClusterEvent::PodChanged(Box::new(PodObservation {
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
            })));
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

#[tokio::test(start_paused = true)]
async fn higher_priority_takes_free_slots_first() {
    let nodes = (0..4).map(|i| node(&format!("n{i}"), &[])).collect();
    let mut h = Harness::new(nodes, 2);
    let low = h.submit(images(&["low:1"])).await;
    h.advance(Duration::from_secs(1)).await;
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

#[tokio::test(start_paused = true)]
async fn cancel_deletes_jobs_and_starts_no_more() {
    let (mut h, id) = started(5, batch(2, &["nginx:1"])).await;
    assert_eq!(h.cluster.alive().len(), 2);
    h.store.cancel(&id, h.clock.now()).await.unwrap();
    h.step().await;
    assert!(h.cluster.alive().is_empty());
    h.step().await;
    assert_eq!(h.cluster.creates().len(), 2);
    assert_eq!(h.task(&id).await.status, TaskStatus::Cancelled);
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
async fn disk_pressure_and_small_disks_are_skipped_without_a_job() {
    let donor = node_with_images("a0", &[("docker.io/big/model:1", 3 * GIB)]);
    let mut pressure = node("a1", &[]);
    pressure.disk_pressure = true;
    let mut small = node("a2", &[]);
    small.ephemeral_storage = Some(2 * GIB);
    let mut roomy = node("a3", &[]);
    roomy.ephemeral_storage = Some(40 * GIB);
    let mut h = Harness::new(vec![donor, pressure, small, roomy], 500);
    let id = h.submit(images(&["big/model:1", "nginx:1"])).await;
    h.step().await;
    let alive: Vec<String> = h.cluster.alive().into_iter().map(|j| j.node).collect();
    assert_eq!(alive, ["a0", "a3"], "no Job on the skipped nodes");
    h.report_all(&[]);
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.total_nodes, 4);
    assert_eq!(task.progress.skipped_nodes, 2);
    let skipped: Vec<(&str, &str)> = task
        .skipped_node_details
        .iter()
        .map(|d| (d.node_name.as_str(), d.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [("a1", "DiskPressure"), ("a2", "InsufficientDisk")]
    );
    assert!(
        task.skipped_node_details[1]
            .message
            .starts_with("needs 3.30 GiB"),
        "{:?}",
        task.skipped_node_details[1]
    );
    assert_eq!(h.cluster.creates().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_node_under_disk_pressure_mid_task_is_skipped_before_it_starts() {
    let (mut h, id) = started(3, batch(1, &["nginx:1"])).await;
    let first = h.cluster.alive();
    assert_eq!(first.len(), 1);
    // The pulling node and a waiting one come under pressure.
    for name in [first[0].node.as_str(), "n2"] {
        let mut pressed = node(name, &[]);
        pressed.disk_pressure = true;
        h.engine
            .on_event(ClusterEvent::NodeChanged(Box::new(pressed)));
    }
    for _ in 0..4 {
        h.report_all(&[]);
        h.step().await;
    }
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.completed_nodes, 2, "the pull under way ended");
    assert_eq!(task.skipped_node_details.len(), 1);
    assert_eq!(task.skipped_node_details[0].node_name, "n2");
    assert_eq!(task.skipped_node_details[0].reason, "DiskPressure");
    assert_eq!(h.cluster.creates().len(), 2, "no Job on n2");
}

#[tokio::test(start_paused = true)]
async fn pinned_digests_let_one_node_resolve_the_tags_then_pull_by_digest() {
    let (mut h, id) = started(
        4,
        CreateTaskRequest {
            pin_digests: Some(true),
            ..batch(3, &["nginx:1", "redis:7"])
        },
    )
    .await;
    let first = h.cluster.alive();
    assert_eq!(first.len(), 1, "one node resolves the tags first");
    assert_eq!(
        first[0].images,
        [(0, "nginx:1".to_owned()), (1, "redis:7".to_owned())]
    );
    h.report_all(&[]);
    for _ in 0..5 {
        h.step().await;
    }
    let d0 = format!("sha256:{:064}", 0);
    let d1 = format!("sha256:{:064}", 1);
    let later = h.cluster.alive();
    assert_eq!(
        later.len(),
        3,
        "the whole window once both digests are pinned"
    );
    for job in &later {
        assert_eq!(
            job.images,
            [
                (0, format!("docker.io/library/nginx@{d0}")),
                (1, format!("docker.io/library/redis@{d1}"))
            ]
        );
    }
    for _ in 0..5 {
        h.report_all(&[]);
        h.step().await;
    }
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert!(task.pin_digests);
    assert_eq!(task.image_statuses[0].pinned_digest.as_deref(), Some(&*d0));
    assert_eq!(task.image_statuses[1].pinned_digest.as_deref(), Some(&*d1));
    assert_eq!(task.image_statuses[0].digests, [d0]);
    assert!(!task.image_statuses[0].digest_drift);
}

#[tokio::test(start_paused = true)]
async fn without_pinning_the_window_is_full_at_once_and_nothing_is_pinned() {
    let (mut h, id) = started(4, batch(3, &["nginx:1"])).await;
    assert_eq!(h.cluster.alive().len(), 3);
    h.report_all(&[]);
    h.step().await;
    let task = h.task(&id).await;
    assert!(!task.pin_digests);
    assert_eq!(task.image_statuses[0].pinned_digest, None);
    assert!(h
        .cluster
        .alive()
        .iter()
        .all(|j| j.images == [(0, "nginx:1".to_owned())]));
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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
    h.advance(Duration::from_secs(61)).await;
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.reason.as_deref(), Some("Timeout"));
    assert!(h.cluster.alive().is_empty());

    let id = h.submit(images(&["slow:2"])).await;
    h.step().await;
    h.advance(Duration::from_secs(601)).await;
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.failed_node_details[0].reason, "Timeout");
}

#[tokio::test(start_paused = true)]
async fn throttled_create_waits_for_retry_after_and_creates_once() {
    let mut h = Harness::new(vec![node("a0", &[])], 500);
    let id = h.submit(images(&["nginx:1"])).await;
    h.cluster.fail_creates([Fault::throttled(7)]);
    h.step().await;
    assert!(h.cluster.alive().is_empty());
    assert_eq!(h.cluster.create_calls(), 1);
    h.advance(Duration::from_secs(6)).await;
    h.step().await;
    assert_eq!(h.cluster.create_calls(), 1, "not before Retry-After");
    h.advance(Duration::from_secs(2)).await;
    h.step().await;
    assert_eq!(h.cluster.alive().len(), 1);
    h.report_all(&[]);
    h.step().await;
    assert_eq!(h.task(&id).await.status, TaskStatus::Completed);
    assert_eq!(h.cluster.creates().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn server_errors_back_off_exponentially_per_node() {
    let mut h = Harness::new(vec![node("a0", &[]), node("a1", &[])], 500);
    let id = h.submit(images(&["nginx:1"])).await;
    // Both nodes' first creates and a0's (or a1's) second fail.
    h.cluster.fail_creates([
        Fault::server_error(),
        Fault::server_error(),
        Fault::server_error(),
    ]);
    h.step().await;
    assert_eq!(h.cluster.create_calls(), 2);
    // First backoff is 0.5–1 s; the second, 1–2 s.
    h.advance(Duration::from_millis(1_001)).await;
    h.step().await;
    assert_eq!(h.cluster.create_calls(), 4, "each node retried once");
    assert_eq!(h.cluster.alive().len(), 1);
    h.step().await;
    assert_eq!(h.cluster.create_calls(), 4, "the failing node waits");
    h.advance(Duration::from_millis(2_001)).await;
    h.step().await;
    assert_eq!(h.cluster.alive().len(), 2);
    h.report_all(&[]);
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.completed_nodes, 2);
    assert_eq!(h.cluster.creates().len(), 2, "no duplicate Jobs");
}

#[tokio::test(start_paused = true)]
async fn quota_refusals_are_retried_until_the_pull_timeout() {
    let mut h = Harness::new(vec![node("a0", &[])], 500);
    let id = h.submit(images(&["nginx:1"])).await;
    h.cluster
        .fail_creates(std::iter::repeat_n(Fault::quota(), 1_000));
    h.step().await;
    for _ in 0..9 {
        h.advance(Duration::from_secs(60)).await;
        h.step().await;
    }
    assert_eq!(
        h.task(&id).await.status,
        TaskStatus::Running,
        "still trying at 9 min"
    );
    assert!(h.cluster.create_calls() > 5);
    for _ in 0..3 {
        h.advance(Duration::from_secs(60)).await;
        h.step().await;
    }
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    let d = &task.failed_node_details[0];
    assert_eq!(d.reason, "JobRejected");
    assert!(d.message.contains("403"), "{}", d.message);
}

#[tokio::test(start_paused = true)]
async fn an_invalid_job_fails_the_node_at_once() {
    let mut h = Harness::new(vec![node("a0", &[])], 500);
    let id = h.submit(images(&["nginx:1"])).await;
    h.cluster.fail_creates([Fault::invalid()]);
    h.step().await;
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.failed_node_details[0].reason, "JobRejected");
    assert_eq!(h.cluster.create_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_create_that_never_answers_times_out_and_is_retried() {
    let mut h = Harness::new(vec![node("a0", &[])], 500);
    let id = h.submit(images(&["nginx:1"])).await;
    h.cluster.fail_creates([Fault::Hang]);
    h.step().await;
    h.advance(Duration::from_secs(29)).await;
    h.step().await;
    assert_eq!(h.cluster.create_calls(), 1);
    h.advance(Duration::from_secs(2)).await;
    h.step().await;
    h.advance(Duration::from_secs(2)).await;
    h.step().await;
    assert_eq!(h.cluster.alive().len(), 1);
    h.report_all(&[]);
    h.step().await;
    assert_eq!(h.task(&id).await.status, TaskStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn wall_clock_steps_neither_time_out_nor_freeze_nodes() {
    let mut h = Harness::new(vec![node("a0", &[]), node("a1", &[])], 500);
    let id = h
        .submit(CreateTaskRequest {
            batch_size: Some(1),
            timeout_seconds: Some(600),
            ..images(&["nginx:1"])
        })
        .await;
    h.step().await;
    assert_eq!(h.cluster.alive().len(), 1);
    // NTP steps the wall clock two hours ahead: no pull or task timeout fires.
    h.clock.advance(Duration::from_secs(7_200));
    h.step().await;
    assert_eq!(h.task(&id).await.status, TaskStatus::Running);
    assert_eq!(h.cluster.alive().len(), 1);
    // ... and then four hours back: work goes on.
    h.clock
        .set(h.clock.now() - chrono::Duration::seconds(14_400));
    h.report_all(&[]);
    h.step().await;
    h.advance(Duration::from_secs(1)).await;
    h.step().await;
    assert_eq!(h.cluster.alive().len(), 1, "the second node started");
    h.report_all(&[]);
    h.step().await;
    h.advance(Duration::from_secs(1)).await;
    h.step().await;
    assert_eq!(h.task(&id).await.status, TaskStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_job_deleted_during_a_watch_gap_is_resolved_at_the_relist() {
    let mut h = Harness::new(vec![node("a0", &[]), node("a1", &[])], 500);
    let id = h
        .submit(CreateTaskRequest {
            max_retries: Some(0),
            ..images(&["nginx:1"])
        })
        .await;
    h.step().await;
    let gone = h.cluster.alive()[0].clone();
    h.cluster.delete_unseen(&gone.name());
    h.advance(Duration::from_secs(10)).await;
    h.step().await;
    assert_eq!(
        h.task(&id).await.progress.failed_nodes,
        0,
        "no event, no news"
    );
    h.engine.on_event(ClusterEvent::Resynced);
    h.report_all(&[]);
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.progress.completed_nodes, 1);
    assert_eq!(task.failed_node_details[0].node_name, gone.node);
    assert_eq!(task.failed_node_details[0].reason, "JobDeleted");
}

#[tokio::test(start_paused = true)]
async fn a_job_just_created_is_not_taken_for_gone_by_an_older_list_but_by_the_next_resync() {
    let mut h = Harness::new(vec![node("a0", &[])], 500);
    let id = h.submit(images(&["nginx:1"])).await;
    h.step().await;
    let job = h.cluster.alive()[0].clone();
    // The relist was taken before the create landed in it.
    h.cluster.delete_unseen(&job.name());
    h.engine.on_event(ClusterEvent::Resynced);
    h.step().await;
    assert_eq!(h.task(&id).await.progress.failed_nodes, 0);
    // The periodic resync judges it once it is old enough to have been listed.
    h.advance(super::cluster_events::RESYNC_EVERY).await;
    h.step().await;
    h.report_all(&[]);
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed, "{task:#?}");
    assert_eq!(task.failed_node_details[0].reason, "JobDeleted");
}

/// A task started by one engine, with two of three Jobs alive; the engine is gone.
async fn started_elsewhere(store: Arc<dyn TaskStore>, cluster: Arc<FakeCluster>) -> String {
    let mut h = Harness::with(store, cluster, 500);
    let id = h.submit(images(&["nginx:1"])).await;
    h.step().await;
    id
}

fn three_nodes() -> Arc<FakeCluster> {
    Arc::new(FakeCluster::with_nodes(
        (0..3).map(|i| node(&format!("n{i}"), &[])).collect(),
    ))
}

#[tokio::test(start_paused = true)]
async fn a_store_down_at_start_is_retried_until_the_task_is_taken_up() {
    let store = Arc::new(crate::store::scripted::ScriptedStore::new());
    let cluster = three_nodes();
    let id = started_elsewhere(store.clone(), cluster.clone()).await;
    store.set_broken(true);
    let mut h = Harness::with(store.clone(), cluster.clone(), 500);
    h.engine.recover().await;
    h.engine.step().await;
    assert!(h.engine.runs.is_empty());
    h.advance(Duration::from_secs(5)).await;
    h.engine.step().await;
    assert!(h.engine.runs.is_empty());
    store.set_broken(false);
    h.advance(Duration::from_secs(31)).await;
    h.engine.step().await;
    assert!(
        h.engine.runs.contains_key(&id),
        "taken up once the store answers"
    );
    h.report_all(&[]);
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.completed_nodes, 3);
    assert_eq!(cluster.creates().len(), 3, "the live Jobs were adopted");
}

#[tokio::test(start_paused = true)]
async fn a_stored_task_that_no_longer_validates_ends_unrecoverable() {
    let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new());
    let cluster = three_nodes();
    let id = started_elsewhere(store.clone(), cluster.clone()).await;
    assert_eq!(cluster.alive().len(), 3);
    let mut view = store.get(&id).await.unwrap().unwrap();
    view.batch_size = 0;
    store
        .update_if(&view, &[TaskStatus::Running])
        .await
        .unwrap();

    let mut h = Harness::with(store, cluster.clone(), 500);
    h.engine.recover().await;
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.reason.as_deref(), Some(UNRECOVERABLE_REASON));
    assert!(task.error_message.unwrap().contains("batchSize"));
    assert!(cluster.alive().is_empty(), "its Jobs are cleaned up");
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_node_record_ends_the_task_instead_of_dropping_the_node() {
    let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new());
    let cluster = three_nodes();
    let id = started_elsewhere(store.clone(), cluster.clone()).await;
    store
        .put_nodes(
            &id,
            &[crate::store::NodeRecord {
                node: "n1".into(),
                body: serde_json::json!({"node": "n1", "recordVersion": 9}),
            }],
        )
        .await
        .unwrap();
    let mut h = Harness::with(store, cluster.clone(), 500);
    h.engine.recover().await;
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.reason.as_deref(), Some(UNRECOVERABLE_REASON));
    assert!(task.error_message.unwrap().contains("n1"));
    assert!(cluster.alive().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_running_task_without_a_run_is_taken_up_at_the_next_store_check() {
    let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new());
    let cluster = three_nodes();
    let mut h = Harness::with(store.clone(), cluster.clone(), 500);
    h.engine.recover().await;
    // Another engine (an earlier leader) started it after this one recovered.
    let id = started_elsewhere(store, cluster.clone()).await;
    assert!(!h.engine.runs.contains_key(&id));
    h.step().await;
    assert!(h.engine.runs.contains_key(&id));
    h.report_all(&[]);
    h.step().await;
    assert_eq!(h.task(&id).await.status, TaskStatus::Completed);
    assert_eq!(cluster.creates().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_start_cut_short_after_its_first_jobs_is_resumed_without_duplicates() {
    let store = Arc::new(ScriptedStore::new());
    store
        .put_nodes_failures
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let cluster = Arc::new(FakeCluster::with_nodes(
        (0..6).map(|i| node(&format!("n{i}"), &[])).collect(),
    ));
    let mut h = Harness::with(store.clone(), cluster.clone(), 500);
    let id = h
        .submit(CreateTaskRequest {
            batch_size: Some(2),
            ..images(&["nginx:1"])
        })
        .await;
    h.step().await;
    // The first window's Jobs went out ahead of the node records, whose
    // write failed: the task is still pending in the store. The engine dies.
    assert_eq!(cluster.alive().len(), 2);
    assert_eq!(h.task(&id).await.status, TaskStatus::Pending);
    drop(h);

    let mut h = Harness::with(store, cluster.clone(), 500);
    h.engine.recover().await;
    h.step().await;
    assert_eq!(h.task(&id).await.status, TaskStatus::Running);
    assert_eq!(
        cluster.creates().len(),
        2,
        "the first Jobs are adopted, not created again"
    );
    for _ in 0..5 {
        h.report_all(&[]);
        h.step().await;
    }
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.completed_nodes, 6);
    let mut creates = cluster.creates();
    creates.sort();
    creates.dedup();
    assert_eq!(creates.len(), 6, "one Job per node");
    assert_eq!(cluster.creates().len(), 6);
    assert_eq!(cluster.max_pulling(&id), 2);
}

#[tokio::test(start_paused = true)]
async fn a_node_learned_slow_starts_first_in_the_next_task_and_sets_its_eta() {
    let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new());
    let speeds = Arc::new(MemoryStore::new());
    let cluster = Arc::new(FakeCluster::with_nodes(
        (0..4).map(|i| node(&format!("n{i}"), &[])).collect(),
    ));
    let mut h = Harness::with(store.clone(), cluster.clone(), 500);
    h.engine.node_speeds = speeds.clone();
    let first = h
        .submit(CreateTaskRequest {
            batch_size: Some(4),
            ..images(&["nginx:1"])
        })
        .await;
    h.step().await;
    let waiting = || ContainerState::Waiting {
        reason: "ContainerCreating".into(),
        message: String::new(),
    };
    for n in ["n0", "n1", "n2", "n3"] {
        h.report_node(n, waiting());
    }
    h.advance(Duration::from_secs(2)).await;
    for n in ["n0", "n1", "n2"] {
        h.report_node(n, ContainerState::Terminated);
    }
    h.step().await;
    h.advance(Duration::from_secs(30)).await;
    h.report_node("n3", ContainerState::Terminated);
    h.step().await;
    h.advance(Duration::from_secs(1)).await;
    h.step().await;
    assert_eq!(h.task(&first).await.status, TaskStatus::Completed);
    let (slowest, total) = speeds.slowest_nodes(1).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(
        (slowest[0].node.as_str(), slowest[0].seconds_per_pull),
        ("n3", 32.0)
    );

    // A restarted engine knows it from the store: n3 goes first, one node at a time.
    drop(h);
    let mut h = Harness::with(store.clone(), cluster.clone(), 500);
    h.engine.node_speeds = speeds.clone();
    h.engine.recover().await;
    let second = h
        .submit(CreateTaskRequest {
            batch_size: Some(1),
            ..images(&["nginx:1"])
        })
        .await;
    h.step().await;
    let alive = cluster.alive();
    assert_eq!(alive.len(), 1);
    assert_eq!(
        (alive[0].task_id.as_str(), alive[0].node.as_str()),
        (second.as_str(), "n3")
    );
    // Serial estimate: 32 s on n3, then 2 s on each of the others.
    let task = h.task(&second).await;
    assert_eq!(
        task.estimated_completion,
        Some(h.clock.now() + chrono::Duration::seconds(38))
    );

    // The order is stored with the nodes: a restart keeps it.
    drop(h);
    let mut h = Harness::with(store, cluster.clone(), 500);
    h.engine.recover().await;
    let order: Vec<&str> = h.engine.runs[&second]
        .nodes
        .iter()
        .map(|n| n.node.as_str())
        .collect();
    assert_eq!(order, ["n3", "n0", "n1", "n2"]);
}

/// Nodes with a live Job, sorted.
fn alive_nodes(h: &Harness) -> Vec<String> {
    let mut nodes: Vec<String> = h.cluster.alive().iter().map(|j| j.node.clone()).collect();
    nodes.sort();
    nodes
}

/// A harness whose engine paces these registries (`HOST=N/DURATION`).
fn paced(nodes: Vec<NodeInfo>, rates: &[&str]) -> Harness {
    let mut h = Harness::new(nodes, 500);
    let rates: Vec<crate::domain::pacing::HostRate> =
        rates.iter().map(|r| r.parse().unwrap()).collect();
    h.engine.pacing = crate::domain::pacing::Pacing::new(&rates);
    h
}

#[tokio::test(start_paused = true)]
async fn a_paced_registry_gets_its_rate_and_the_others_fill_the_window() {
    let warm = |name: &str| NodeInfo {
        images: vec!["paced.example/app:1".into()],
        ..node(name, &[])
    };
    let nodes = vec![
        node("n0", &[]),
        node("n1", &[]),
        node("n2", &[]),
        node("n3", &[]),
        warm("n4"),
        warm("n5"),
    ];
    let mut h = paced(nodes, &["paced.example=2/1m"]);
    let id = h
        .submit(images(&["paced.example/app:1", "fast.example/tool:1"]))
        .await;
    h.step().await;
    let started = alive_nodes(&h);
    assert_eq!(
        started,
        ["n0", "n1", "n4", "n5"],
        "two paced pulls, the rest from the other registry"
    );
    h.report_all(&[]);
    h.step().await;
    h.advance(Duration::from_secs(1)).await;
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.progress.completed_nodes, 4);
    assert_eq!(task.progress.waiting_for_registry, 2);
    let eta = task.estimated_completion.expect("an ETA");
    assert!(
        eta >= h.clock.now() + chrono::Duration::seconds(59),
        "the ETA waits for the tokens: {eta} vs now {}",
        h.clock.now()
    );
    // A token comes back one minute after its pull ended, not before.
    h.advance(Duration::from_secs(58)).await;
    h.step().await;
    assert!(h.cluster.alive().is_empty(), "no token yet");
    h.advance(Duration::from_secs(2)).await;
    h.step().await;
    let started = alive_nodes(&h);
    assert_eq!(started, ["n2", "n3"]);
    h.report_all(&[]);
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.waiting_for_registry, 0);
    assert!(
        h.engine
            .metrics
            .encode()
            .contains("prewarm_registry_wait_seconds_count 2\n"),
        "two nodes waited"
    );
}

#[tokio::test(start_paused = true)]
async fn a_registry_refusing_pulls_is_left_alone_for_a_minute_then_the_nodes_complete() {
    let nodes = (0..3).map(|i| node(&format!("n{i}"), &[])).collect();
    let mut h = paced(nodes, &[]);
    let id = h
        .submit(CreateTaskRequest {
            max_retries: Some(2),
            retry_delay: Some(1),
            ..images(&["hub.example/app:1"])
        })
        .await;
    h.step().await;
    assert_eq!(h.cluster.alive().len(), 3);
    h.report_all_saying(
        &[("hub.example/app:1", "ErrImagePull")],
        "failed to resolve reference \"hub.example/app:1\": pulling from host hub.example failed \
         with status code [manifests 1]: 429 Too Many Requests - Server message: toomanyrequests: \
         You have reached your pull rate limit.",
    );
    h.step().await;
    let labels = crate::metrics::RegistryLabels {
        registry: "hub.example".into(),
    };
    assert_eq!(
        h.engine
            .metrics
            .registry_throttled
            .get_or_create(&labels)
            .get(),
        3
    );
    h.advance(Duration::from_secs(59)).await;
    h.step().await;
    assert!(
        h.cluster.alive().is_empty(),
        "backing off, though the retry delay is over"
    );
    assert_eq!(h.task(&id).await.progress.waiting_for_registry, 3);
    h.advance(Duration::from_secs(32)).await;
    h.step().await;
    assert_eq!(
        h.cluster.alive().len(),
        3,
        "after the backoff (60 s + up to 50 % jitter)"
    );
    h.report_all(&[]);
    h.step().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.failed_nodes, 0);
}

#[tokio::test(start_paused = true)]
async fn a_node_gone_longer_than_the_retention_loses_its_learned_speed() {
    let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new());
    let speeds = Arc::new(MemoryStore::new());
    let cluster = Arc::new(FakeCluster::with_nodes(vec![
        node("stays", &[]),
        node("left", &[]),
    ]));
    let at = "2024-01-16T10:00:00Z".parse().unwrap();
    speeds
        .put_node_speeds(&[
            NodeSpeed::first("stays".into(), 2.0, at),
            NodeSpeed::first("left".into(), 9.0, at),
            NodeSpeed::first("back".into(), 5.0, at),
        ])
        .await
        .unwrap();
    let mut h = Harness::with(store, cluster.clone(), 500);
    h.engine.node_speeds = speeds.clone();
    h.step().await;
    let stored = |speeds: Arc<MemoryStore>| async move {
        let mut all: Vec<(String, Option<chrono::DateTime<chrono::Utc>>)> = speeds
            .node_speeds()
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.node, s.gone_since))
            .collect();
        all.sort();
        all
    };
    // The first resync marks "back" (not in the cluster) gone, with the time.
    h.advance(super::cluster_events::RESYNC_EVERY).await;
    h.step().await;
    let marked = h.clock.now();
    assert_eq!(
        stored(speeds.clone()).await,
        [
            ("back".into(), Some(marked)),
            ("left".into(), None),
            ("stays".into(), None)
        ]
    );
    // "left" leaves, "back" comes back.
    cluster.set_nodes(vec![node("stays", &[]), node("back", &[])]);
    h.advance(super::cluster_events::RESYNC_EVERY).await;
    h.step().await;
    let left_at = h.clock.now();
    assert_eq!(
        stored(speeds.clone()).await,
        [
            ("back".into(), None),
            ("left".into(), Some(left_at)),
            ("stays".into(), None)
        ]
    );
    // Thirty days on (the retention) it is still known; past it, it is deleted.
    h.clock
        .advance(Duration::from_secs(30 * 24 * 3600) - super::cluster_events::RESYNC_EVERY);
    h.advance(super::cluster_events::RESYNC_EVERY).await;
    h.step().await;
    assert_eq!(stored(speeds.clone()).await.len(), 3);
    h.advance(super::cluster_events::RESYNC_EVERY).await;
    h.step().await;
    assert_eq!(
        stored(speeds.clone()).await,
        [("back".into(), None), ("stays".into(), None)]
    );
    assert!(!h.engine.speeds.contains_key("left"));
}
