//! What the integration tests share: the real control plane (one per test
//! binary), kube-sim per test, the real `prewarm` binary on port 0, and an
//! HTTP client — the tests talk to the service only like a user does.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, WatchStreamExt};
use prewarm_api::{Task, TaskStatus};
use serde_json::Value;

pub use kube_sim::testing::{LocalCluster, Sim};

pub mod fault_proxy;
pub mod redis_server;

/// The control plane shared by every test of this binary.
pub fn cluster() -> &'static LocalCluster {
    LocalCluster::shared()
}

/// A running `prewarm serve` process.
pub struct Service {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    /// Its SQLite file.
    pub db: PathBuf,
    /// Namespace of its Jobs.
    pub namespace: String,
    log: PathBuf,
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl Service {
    /// Starts the service on a fresh database in `namespace`.
    pub fn start(namespace: &str) -> Service {
        Self::start_flags(namespace, &[])
    }

    /// Starts the service on a fresh database in `namespace` with extra flags.
    pub fn start_flags(namespace: &str, extra: &[&str]) -> Service {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let db = dir.path().join("prewarm.db");
        let mut s = Self::start_with(namespace, &db, extra);
        s._dir = Some(dir);
        s
    }

    /// Starts the service on `db` with extra flags.
    pub fn start_with(namespace: &str, db: &Path, extra: &[&str]) -> Service {
        Self::start_against(cluster().kubeconfig_path(), namespace, db, extra)
    }

    /// Starts the service against the cluster of `kubeconfig`, on `db`, with
    /// extra flags (`--pull-mode jobs` unless they name a mode).
    pub fn start_against(kubeconfig: &Path, namespace: &str, db: &Path, extra: &[&str]) -> Service {
        let log = db.with_extension(format!("{}.log", std::process::id()));
        let log = log.with_file_name(format!(
            "prewarm-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_prewarm"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--namespace",
                namespace,
                "--database",
                db.to_str().unwrap(),
                "--log-level",
                "info,prewarm=debug",
            ])
            .args(
                (!extra.contains(&"--helper-image"))
                    .then_some(["--helper-image", "prewarm:test"])
                    .into_iter()
                    .flatten(),
            )
            // These tests count and watch Jobs: jobs mode unless a test
            // picks a mode (tests/pull_pods.rs covers pods mode).
            .args(
                (!extra.contains(&"--pull-mode"))
                    .then_some(["--pull-mode", "jobs"])
                    .into_iter()
                    .flatten(),
            )
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prewarm");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "prewarm did not start; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Service {
            child: Some(child),
            url,
            db: db.to_owned(),
            namespace: namespace.to_owned(),
            log,
            _dir: None,
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM without waiting for the exit (the drop waits).
    pub fn sigterm(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
    }

    /// The service's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POST a task body; returns (status code, JSON body).
    pub async fn post(&self, body: Value) -> (u16, Value) {
        let r = http()
            .post(format!("{}/api/v1/tasks", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a task that must be accepted; returns its id.
    pub async fn create(&self, body: Value) -> String {
        let (code, v) = self.post(body).await;
        assert_eq!(code, 201, "{v}");
        v["taskId"].as_str().unwrap().to_owned()
    }

    /// GET a task: (status code, body).
    pub async fn get(&self, id: &str) -> (u16, Value) {
        let r = http()
            .get(format!("{}/api/v1/tasks/{id}", self.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// DELETE a task: (status code, body).
    pub async fn cancel(&self, id: &str) -> (u16, Value) {
        let r = http()
            .delete(format!("{}/api/v1/tasks/{id}", self.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Polls until the task has ended (or panics after `timeout`).
    pub async fn wait_end(&self, id: &str, timeout: Duration) -> Task {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, v) = self.get(id).await;
            assert_eq!(code, 200, "{v}");
            let task: Task = serde_json::from_value(v.clone()).expect("task view parses");
            if task.status.is_terminal() {
                return task;
            }
            if Instant::now() > deadline {
                panic!(
                    "task {id} did not end in {timeout:?}: {v:#}\n--- service log tail ---\n{}",
                    tail(&self.log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The service's `/metrics` text.
    pub async fn metrics(&self) -> String {
        http()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// SIGKILLs the service `kills` times at random points (up to `max_ms`
    /// apart, seeded from `$<seed_var>` or at random, printed), starting it
    /// again on its database with `extra` each time; task `id` must still
    /// be running at every kill.
    pub async fn kill9_while_running(
        &mut self,
        id: &str,
        kills: usize,
        max_ms: u64,
        seed_var: &str,
        extra: &[&str],
    ) {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var(seed_var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("kill points: {seed_var}={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for kill in 1..=kills {
            let point = Duration::from_millis(rng.random_range(0..max_ms));
            tokio::time::sleep(point).await;
            let (_, v) = self.get(id).await;
            assert!(
                v["status"] == "pending" || v["status"] == "running",
                "the task ended before kill {kill}; it must run longer: {v:#}"
            );
            self.kill9();
            let (db, dir) = (self.db.clone(), self._dir.take());
            *self = Service::start_with(&self.namespace, &db, extra);
            self._dir = dir;
        }
    }

    /// Polls until `check` holds for the task view.
    pub async fn wait_until(
        &self,
        id: &str,
        timeout: Duration,
        check: impl Fn(&Task) -> bool,
    ) -> Task {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, v) = self.get(id).await;
            let task: Task = serde_json::from_value(v).unwrap();
            if check(&task) {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "condition not reached: {task:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM for a graceful stop, then make sure.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `check` until it holds, or panics naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET `url` and parse the answer as JSON.
pub async fn get_json(url: impl reqwest::IntoUrl) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// A plain HTTP client.
pub fn http() -> reqwest::Client {
    prewarm_cli::tls::http_client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Starts kube-sim with a scenario.
pub fn sim(scenario: &str) -> Sim {
    Sim::start(cluster().kubeconfig_path(), scenario)
}

/// kube-sim with `count` nodes `<suite>-0 …` labelled `suite: <suite>`,
/// where every image takes `pull_seconds`.
pub fn sim_suite(suite: &str, count: usize, pull_seconds: u32) -> Sim {
    sim(&format!(
        "nodes:\n  - namePrefix: {suite}-\n    count: {count}\n    labels: {{suite: {suite}}}\nimages:\n  - match: \"*\"\n    pullSeconds: {pull_seconds}\n"
    ))
}

/// The test's own watch on a task's Jobs: who existed, when, at most how many at once.
#[derive(Clone, Default)]
pub struct JobLog {
    inner: Arc<Mutex<JobLogInner>>,
    /// The watch, stopped when the last copy of the log goes (before the
    /// test's cluster stops: a watch left running against a stopped API
    /// server would hold up the runtime's shutdown).
    watch: Option<Arc<tokio_util::task::AbortOnDropHandle<()>>>,
}

#[derive(Default)]
struct JobLogInner {
    alive: BTreeSet<String>,
    max_alive: usize,
    /// Objects seen done pulling (alive or not).
    finished: BTreeSet<String>,
    max_pulling: usize,
    created: BTreeMap<String, usize>,
    nodes: BTreeMap<String, BTreeSet<String>>,
}

impl JobLog {
    /// Watches every Job in `namespace` (all tasks).
    pub async fn watch(namespace: &str) -> JobLog {
        Self::watch_with(cluster().kube_client().await, namespace).await
    }

    /// Watches every Job in `namespace` of the cluster `client` reaches.
    pub async fn watch_with(client: kube::Client, namespace: &str) -> JobLog {
        Self::watch_objects::<Job>(client, namespace, |_| false).await
    }

    /// Watches every Pod in `namespace` (the pull objects of `--pull-mode pods`).
    /// A Pod is done pulling once it ended or every container started
    /// (running or terminated: its image is on the node).
    pub async fn watch_pods(namespace: &str) -> JobLog {
        Self::watch_objects::<Pod>(cluster().kube_client().await, namespace, pod_pulled).await
    }

    /// Watches every `K` in `namespace`; a node is named by the object's
    /// `prewarm.io/node-name` annotation, and `done` says whether an object
    /// pulls nothing more.
    async fn watch_objects<K>(client: kube::Client, namespace: &str, done: fn(&K) -> bool) -> JobLog
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + 'static,
    {
        let api: Api<K> = Api::namespaced(client, namespace);
        let mut log = JobLog::default();
        let inner = log.inner.clone();
        // Backoff between failed (re)lists, so an unreachable API server is not polled in a busy loop.
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let mut s = inner.lock().unwrap();
                match ev {
                    watcher::Event::Apply(j) | watcher::Event::InitApply(j) => {
                        let name = j.meta().name.clone().unwrap_or_default();
                        let node = j
                            .meta()
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get("prewarm.io/node-name"))
                            .cloned()
                            .unwrap_or_default();
                        if done(&j) {
                            s.finished.insert(name.clone());
                        }
                        if s.alive.insert(name.clone()) {
                            *s.created.entry(name.clone()).or_default() += 1;
                            s.nodes.entry(node).or_default().insert(name);
                        }
                        s.max_alive = s.max_alive.max(s.alive.len());
                        let pulling = s.alive.difference(&s.finished).count();
                        s.max_pulling = s.max_pulling.max(pulling);
                    }
                    watcher::Event::Delete(j) => {
                        s.alive.remove(j.meta().name.as_deref().unwrap_or_default());
                    }
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Init => {}
                }
            }
        });
        log.watch = Some(Arc::new(tokio_util::task::AbortOnDropHandle::new(task)));
        let _ = tokio::time::timeout(Duration::from_secs(30), ready_rx).await;
        log
    }

    /// Most Jobs alive at once.
    pub fn max_alive(&self) -> usize {
        self.inner.lock().unwrap().max_alive
    }

    /// Most objects alive and not done pulling at once (the window: a
    /// finished one may still await its deletion while the next pulls).
    pub fn max_pulling(&self) -> usize {
        self.inner.lock().unwrap().max_pulling
    }

    /// Jobs alive now.
    pub fn alive(&self) -> usize {
        self.inner.lock().unwrap().alive.len()
    }

    /// Distinct Job names ever seen.
    pub fn created(&self) -> usize {
        self.inner.lock().unwrap().created.len()
    }

    /// Job names per node.
    pub fn per_node(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.inner.lock().unwrap().nodes.clone()
    }
}

/// Whether a pull Pod pulls nothing more: it ended, or every container
/// started (running or terminated means its image is on the node).
fn pod_pulled(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return true;
    }
    let started = |c: &k8s_openapi::api::core::v1::ContainerStatus| {
        c.state
            .as_ref()
            .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
    };
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    !containers.is_empty()
        && containers.iter().all(started)
        && status
            .init_container_statuses
            .as_deref()
            .unwrap_or_default()
            .iter()
            .all(started)
}

/// Jobs currently in `namespace` according to the API server (a fresh list).
pub async fn jobs_in(namespace: &str) -> usize {
    let client = cluster().kube_client().await;
    let api: Api<Job> = Api::namespaced(client, namespace);
    api.list(&ListParams::default()).await.unwrap().items.len()
}

/// Waits until `namespace` holds no Job.
pub async fn wait_no_jobs(namespace: &str, timeout: Duration) {
    wait_no_jobs_with(cluster().kube_client().await, namespace, timeout).await
}

/// Waits until `namespace` of the cluster `client` reaches holds no Job.
pub async fn wait_no_jobs_with(client: kube::Client, namespace: &str, timeout: Duration) {
    wait_none::<Job>(client, namespace, timeout).await
}

/// Waits until `namespace` holds no Pod.
pub async fn wait_no_pods(namespace: &str, timeout: Duration) {
    wait_none::<Pod>(cluster().kube_client().await, namespace, timeout).await
}

/// Waits until `namespace` of the cluster `client` reaches holds no `K`.
async fn wait_none<K>(client: kube::Client, namespace: &str, timeout: Duration)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client, namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let n = api.list(&ListParams::default()).await.unwrap().items.len();
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} {} still in {namespace}",
            K::plural(&())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Status as a string for assertions.
pub fn status(t: &Task) -> &'static str {
    match t.status {
        TaskStatus::Pending => "pending",
        TaskStatus::Running => "running",
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
    }
}

/// Runs the `prewarm` CLI with `args` against `svc` (no token), off the async runtime.
pub async fn prewarm(svc: &Service, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let server = svc.url.clone();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_prewarm"))
            .args(&args)
            .env("PREWARM_SERVER", server)
            .env_remove("PREWARM_TOKEN")
            .output()
            .expect("run prewarm")
    })
    .await
    .unwrap()
}

/// A command's exit code, stdout and stderr, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
