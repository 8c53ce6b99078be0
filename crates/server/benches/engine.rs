//! Engine benchmark on the real local control plane with kube-sim nodes.
//!
//! ```sh
//! cargo bench -p prewarm --bench engine -- --nodes 1000 --batch 100 --pull-seconds 2
//! cargo bench -p prewarm --bench engine -- --nodes 5000 --batch 500 --pull-seconds 20 --stores sqlite,redis
//! KCM_QPS=20 cargo bench -p prewarm --bench engine -- --nodes 1000 --batch 100 --pull-seconds 4 --pull-modes jobs,pods
//! ```
//!
//! Prints, for one task of 2 images over N nodes with a rolling window of
//! `batch`: the makespan against the ideal `nodes × images × pull ÷ batch`
//! (a node pulls its images one after another, as a kubelet does), the
//! Kubernetes API requests the service made per node (from its own client
//! metrics), POST → first Job latency (from a watch), Job → pod latency,
//! and the service's peak RSS. With several `--stores`, the same
//! measurement runs once per store, one after another on the same nodes
//! (each with images of its own, so none is already present), and the
//! makespans are compared; `redis` starts a `redis-server` of its own.
//! `--pull-modes jobs,pods` does the same per pull mode (in pods mode the
//! "first Job" is the first pull Pod, and there is no Job → pod step).
//! `KCM_QPS` sets the controller-manager's client QPS of the control plane
//! the bench starts (default 500; the upstream default is 20).
//!
//! `--stragglers 0.05 --slowdown 10` makes that share of the nodes pull that
//! many times slower (named `bench-slow-*`, so they come last by name) and
//! `--runs 2` runs the big task again on the same service (fresh image
//! tags): the first run learns the node speeds, the next starts the slow
//! nodes first. Each run prints its makespan against the work-bound ideal
//! (all pull work ÷ batch, or the slowest node's own pulls if longer), the
//! POST → first Job latency of the big task itself, and the service's CPU
//! seconds per node.
//!
//! ```sh
//! cargo bench --profile dev -p prewarm --bench engine -- --nodes 1000 --batch 100 --pull-seconds 4 --stragglers 0.05 --slowdown 10 --runs 2
//! ```
//!
//! The service reaches the API server through a proxy (the fault proxy of
//! the tests, with no faults unless `--throttle`) that counts every write
//! the API server receives, by method and resource: the writes per node
//! are printed from that count as well as from the service's own metrics.
//!
//! `--curve 1000,5000,10000` is the cost curve: the nodes are registered in
//! steps up to the largest size (more kube-sim processes join), and at each
//! size a fresh service runs one task over every node with batch
//! `min(--batch, size)`; a table of the node registration time, makespan,
//! the service's peak and final RSS, CPU seconds per node and API writes
//! per node closes the run.
//!
//! ```sh
//! cargo bench --profile dev -p prewarm --bench engine -- --curve 1000,5000,10000 --batch 1000 --pull-seconds 2 --posts 1
//! ```

mod common;
use common::{percentile, wait_done, Service};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube_sim::testing::{LocalCluster, Sim};

#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)] // restart and stop are for the tests
mod redis_server;
use redis_server::Redis;

#[path = "../tests/common/fault_proxy.rs"]
#[allow(dead_code)]
mod fault_proxy;

/// The task's images (tagged per store run); each node pulls them one after another.
const BENCH_IMAGES: [&str; 2] = ["bench/app", "bench/sidecar"];

#[derive(clap::Parser, Clone)]
#[command(
    about = "One task over N kube-sim nodes on the local control plane: makespan, API requests per node, latencies, RSS"
)]
struct Args {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// The task's batch size.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Simulated seconds per image pull.
    #[arg(long, default_value_t = 2.0)]
    pull_seconds: f64,
    /// Tasks created to time POST → first Job.
    #[arg(long, default_value_t = 5)]
    posts: usize,
    /// Stores to measure, one after another: `sqlite`, `redis`, `memory`.
    #[arg(long, value_delimiter = ',', default_value = "sqlite")]
    stores: Vec<String>,
    /// Shares of pull creates (Jobs or Pods) answered `429` with `Retry-After: 1` by a fault
    /// proxy in front of the API server, one run each (0: no proxy).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    throttle: Vec<f64>,
    /// Pull modes to measure, one after another: `jobs`, `pods`.
    #[arg(long, value_delimiter = ',', default_value = "pods")]
    pull_modes: Vec<String>,
    /// Share of the nodes that pull `--slowdown` times slower.
    #[arg(long, default_value_t = 0.0)]
    stragglers: f64,
    /// How many times slower the stragglers pull.
    #[arg(long, default_value_t = 10.0)]
    slowdown: f64,
    /// Big tasks per service, one after another (later ones start with learned node speeds).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Cost curve: node counts, ascending; nodes are added up to each and a
    /// fresh service runs one task over all of them (ignores `--nodes` and the stragglers).
    #[arg(long, value_delimiter = ',')]
    curve: Vec<usize>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let cluster = LocalCluster::up();
    if !args.curve.is_empty() {
        cost_curve(&args, &cluster).await;
        return;
    }
    let slow = args.slow_nodes();
    let scenario = format!(
        "timeScale: 1.0\nnodes:\n  - namePrefix: bench-\n    count: {}\n    labels: {{suite: bench}}\n{}images:\n{}  - match: \"*\"\n    pullSeconds: {}\npreloaded:\n  - image: prewarm:bench\n    nodes: \"*\"\n",
        args.nodes - slow,
        if slow > 0 {
            format!("  - namePrefix: bench-slow-\n    count: {slow}\n    labels: {{suite: bench}}\n")
        } else {
            String::new()
        },
        if slow > 0 {
            format!(
                "  - match: \"*\"\n    nodes: \"bench-slow-*\"\n    pullSeconds: {}\n",
                args.pull_seconds * args.slowdown
            )
        } else {
            String::new()
        },
        args.pull_seconds
    );
    let t = Instant::now();
    let _sim = Sim::start(cluster.kubeconfig_path(), &scenario);
    eprintln!(
        "{} nodes registered in {:.1}s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let redis = args.stores.iter().any(|s| s == "redis").then(Redis::start);
    let mut makespans = Vec::new();
    for store in &args.stores {
        let mut store_args = vec!["--store".to_owned(), store.clone()];
        match store.as_str() {
            "sqlite" => store_args.extend([
                "--database".to_owned(),
                dir.path().join("bench.db").display().to_string(),
            ]),
            "redis" => store_args.extend([
                "--redis-url".to_owned(),
                redis.as_ref().expect("started above").url(),
            ]),
            _ => {}
        }
        for &throttle in &args.throttle {
            for mode in &args.pull_modes {
                let run = Run {
                    store,
                    throttle,
                    mode,
                };
                let figures = measure(&args, &cluster, run, &store_args).await;
                makespans.push((run.label(), figures.makespan));
            }
        }
    }
    if let [(first, base), rest @ ..] = makespans.as_slice() {
        for (run, makespan) in rest {
            println!(
                "makespan {run} / {first}: {:.3} ({makespan:.1}s / {base:.1}s, one run, same nodes)",
                makespan / base
            );
        }
    }
}

impl Args {
    /// Nodes that pull `slowdown` times slower.
    fn slow_nodes(&self) -> usize {
        ((self.nodes as f64 * self.stragglers).round() as usize).min(self.nodes)
    }

    /// The big task's least possible makespan: all pull work over `batch`
    /// slots, or the slowest node's own serial pulls if that is longer.
    fn work_bound_ideal(&self) -> f64 {
        let images = BENCH_IMAGES.len() as f64;
        let slow = self.slow_nodes() as f64;
        let fast = self.nodes as f64 - slow;
        let slowest = if slow > 0.0 { self.slowdown } else { 1.0 };
        let work = images * self.pull_seconds * (fast + slow * self.slowdown);
        (work / self.batch as f64).max(images * self.pull_seconds * slowest)
    }
}

/// One measured run: a store, the share of pull creates throttled, the pull mode.
#[derive(Clone, Copy)]
struct Run<'a> {
    store: &'a str,
    throttle: f64,
    mode: &'a str,
}

impl Run<'_> {
    /// `sqlite`, `sqlite-429x5pct` with throttling, `sqlite-jobs` in jobs
    /// mode; names the run's namespace and image tags.
    fn label(&self) -> String {
        let mut label = self.store.to_owned();
        if self.throttle > 0.0 {
            label += &format!("-429x{}pct", (self.throttle * 100.0).round());
        }
        if self.mode != "pods" {
            label += &format!("-{}", self.mode);
        }
        label
    }

    /// Whether the pull Pods are made directly (no Jobs).
    fn pods(&self) -> bool {
        self.mode == "pods"
    }
}

/// One service on the run's store (its own namespace), the probes and the big
/// task, behind a fault proxy if the run throttles; prints the figures and
/// returns the makespan in seconds.
async fn measure(
    args: &Args,
    cluster: &LocalCluster,
    run: Run<'_>,
    store_args: &[String],
) -> Figures {
    let store = run.label();
    let store = store.as_str();
    let namespace = format!("bench-{store}");
    let images: Vec<String> = BENCH_IMAGES
        .iter()
        .map(|image| format!("{image}:{store}"))
        .collect();
    // Always through the proxy: it counts the writes the API server receives.
    let proxy = fault_proxy::FaultProxy::start(cluster.kubeconfig_path()).await;
    if run.throttle > 0.0 {
        proxy.throttle_share(run.throttle, Duration::from_secs(1));
    }
    let kubeconfig = proxy.kubeconfig();
    let service = Service::start(
        kubeconfig,
        &namespace,
        ["--max-concurrent-nodes", "1000", "--pull-mode", run.mode]
            .into_iter()
            .chain(store_args.iter().map(String::as_str)),
    );
    let url = service.url.clone();
    let http = prewarm_cli::tls::http_client_builder().build().unwrap();
    let client = cluster.kube_client().await;

    // Pull object (Job, or pull Pod in pods mode) and pod creation times as
    // the watches deliver them.
    let job_seen: Seen = Arc::default();
    let pod_seen: Arc<Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let watches = {
        let jobs = if run.pods() {
            first_seen::<Pod>(Api::namespaced(client.clone(), &namespace), &job_seen)
        } else {
            first_seen::<Job>(Api::namespaced(client.clone(), &namespace), &job_seen)
        };
        let seen = pod_seen.clone();
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let pods = tokio::spawn(async move {
            let mut s = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            while let Some(Ok(ev)) = s.next().await {
                if let watcher::Event::Apply(p) = ev {
                    let job = p
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("job-name"))
                        .cloned()
                        .unwrap_or_default();
                    seen.lock().unwrap().entry(job).or_insert_with(Instant::now);
                }
            }
        });
        [jobs, pods]
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // POST → first Job, on small tasks.
    let mut first_job_ms = Vec::new();
    for i in 0..args.posts {
        let sent = Instant::now();
        let v: serde_json::Value = http
            .post(format!("{url}/api/v1/tasks"))
            .json(&serde_json::json!({"images": [format!("probe/app:{store}-{i}")], "nodeNames": ["bench-0"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = v["taskId"].as_str().unwrap().to_owned();
        loop {
            if let Some((_, _, at)) = job_seen.lock().unwrap().iter().find(|(t, _, _)| *t == id) {
                first_job_ms.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        wait_done(&http, &url, &id).await;
    }
    first_job_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());

    let mut figures = Figures::default();
    for round in 0..args.runs {
        let images: Vec<String> = if round == 0 {
            images.clone()
        } else {
            images.iter().map(|i| format!("{i}-run{round}")).collect()
        };
        figures = big_task(
            args,
            &run,
            &service,
            &http,
            &images,
            &job_seen,
            &pod_seen,
            &proxy,
            &first_job_ms,
            round,
        )
        .await;
    }
    figures.peak_rss_mib = service.status_mib("VmHWM:");
    figures.rss_mib = service.status_mib("VmRSS:");
    println!(
        "service peak RSS: {:.1} MiB  now: {}",
        figures.peak_rss_mib,
        service.memory()
    );
    drop(service);
    for watch in watches {
        watch.abort();
    }
    figures
}

/// What one big task cost.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    makespan: f64,
    /// Writes the API server received per node, from the proxy's count.
    writes_per_node: f64,
    /// Service CPU seconds per node.
    cpu_per_node: f64,
    peak_rss_mib: f64,
    rss_mib: f64,
}

/// The big task over every node: runs it, prints its figures, returns its makespan.
#[allow(clippy::too_many_arguments)] // the run's parts, each its own kind
async fn big_task(
    args: &Args,
    run: &Run<'_>,
    service: &Service,
    http: &reqwest::Client,
    images: &[String],
    job_seen: &Seen,
    pod_seen: &Arc<Mutex<std::collections::HashMap<String, Instant>>>,
    proxy: &fault_proxy::FaultProxy,
    first_job_ms: &[f64],
    round: usize,
) -> Figures {
    let url = &service.url;
    let store = run.label();
    let cpu_before = service.cpu_seconds();
    let before = kube_requests(http, url).await;
    let received_before = proxy.writes();
    let started = Instant::now();
    let v: serde_json::Value = http
        .post(format!("{url}/api/v1/tasks"))
        .json(&serde_json::json!({
            "images": images,
            "batchSize": args.batch,
            "nodeSelector": {"suite": "bench"}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["taskId"].as_str().unwrap().to_owned();
    let task = wait_done(http, url, &id).await;
    let makespan = started.elapsed().as_secs_f64();
    // The pull objects are deleted in the background after their nodes end:
    // count the writes (and the CPU) once every create has its delete.
    let kind = if run.pods() { "pods" } else { "jobs" };
    let settled = Instant::now();
    loop {
        let received = writes_since(&received_before, &proxy.writes());
        let count = |verb: &str| {
            received
                .get(&format!("{verb} {kind}"))
                .copied()
                .unwrap_or(0)
        };
        if count("DELETE") >= count("POST") {
            break;
        }
        if settled.elapsed() > Duration::from_secs(300) {
            println!(
                "warning: {} of {} pull {kind} not deleted 300 s after the task ended",
                count("POST") - count("DELETE"),
                count("POST")
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "pull {kind} all deleted {:.1}s after the task ended",
        settled.elapsed().as_secs_f64()
    );
    let first_big_job_ms = job_seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(task, _, _)| *task == id)
        .map(|(_, _, at)| at.duration_since(started).as_secs_f64() * 1000.0)
        .fold(f64::INFINITY, f64::min);
    let after = kube_requests(http, url).await;
    let received = writes_since(&received_before, &proxy.writes());
    // Pulls are serialized per node (the kubelet's `serializeImagePulls`).
    let ideal =
        args.nodes as f64 * BENCH_IMAGES.len() as f64 * args.pull_seconds / args.batch as f64;

    // Job → pod latency: from the Job's ADDED to its pod's ADDED, per node.
    let pods = pod_seen.lock().unwrap().clone();
    let mut job_to_pod_ms: Vec<f64> = job_seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(task, _, _)| *task == id)
        .filter_map(|(_, name, at)| {
            pods.get(name)
                .map(|p| p.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    job_to_pod_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pull_ms = args.pull_seconds * 1000.0;

    let writes: f64 = after.0 - before.0;
    let reads: f64 = after.1 - before.1;
    // A step of the cost curve: its command is printed with the table.
    if args.curve.is_empty() {
        print_command(args);
    }
    println!("run: {store}");
    if run.throttle > 0.0 {
        println!(
            "creates answered 429 by the fault proxy: {} of {} ({:.1}%)",
            proxy.throttled(),
            proxy.throttled() + proxy.creates_forwarded(),
            proxy.throttled() as f64 * 100.0
                / (proxy.throttled() + proxy.creates_forwarded()).max(1) as f64
        );
    }
    println!("task status: {}", task["status"]);
    println!(
        "nodes: {}  batch: {}  pull: {}s  images: {}",
        args.nodes,
        args.batch,
        args.pull_seconds,
        BENCH_IMAGES.len()
    );
    println!(
        "makespan: {makespan:.1}s  ideal: {ideal:.1}s  ratio: {:.3}",
        makespan / ideal
    );
    println!(
        "kube API writes/node (service metrics): {:.2}  non-watch reads/node: {:.3}",
        writes / args.nodes as f64,
        reads / args.nodes as f64
    );
    let task_writes: usize = received
        .iter()
        .filter(|(what, _)| !what.ends_with(" leases"))
        .map(|(_, n)| n)
        .sum();
    let writes_per_node = task_writes as f64 / args.nodes as f64;
    println!(
        "API server writes/node (received, counted by the proxy; Lease renewals apart): {writes_per_node:.2}  {}",
        received
            .iter()
            .map(|(what, n)| format!("{what}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "POST -> first Job: median {:.1} ms  max {:.1} ms  (n={})",
        percentile(first_job_ms, 0.5),
        percentile(first_job_ms, 1.0),
        first_job_ms.len()
    );
    if run.pods() {
        println!("Job -> pod: none (pull mode pods: the service creates the pod)");
    } else {
        println!(
            "Job -> pod: median {:.0} ms  p95 {:.0} ms  ({:.0}% of a node's {:.0} ms pull)",
            percentile(&job_to_pod_ms, 0.5),
            percentile(&job_to_pod_ms, 0.95),
            percentile(&job_to_pod_ms, 0.5) / pull_ms * 100.0,
            pull_ms
        );
    }
    let cpu = service.cpu_seconds() - cpu_before;
    println!(
        "run {}: POST -> first Job of the big task: {:.1} ms",
        round + 1,
        first_big_job_ms
    );
    println!(
        "run {}: makespan ÷ work-bound ideal ({:.1}s): {:.3}",
        round + 1,
        args.work_bound_ideal(),
        makespan / args.work_bound_ideal()
    );
    println!(
        "run {}: service CPU {:.1}s = {:.2} ms/node",
        round + 1,
        cpu,
        cpu * 1000.0 / args.nodes as f64
    );
    Figures {
        makespan,
        writes_per_node,
        cpu_per_node: cpu / args.nodes as f64,
        ..Figures::default()
    }
}

/// The command line of a bench run with these arguments.
fn print_command(args: &Args) {
    println!(
        "command: KCM_QPS={} cargo bench -p prewarm --bench engine -- --nodes {} --batch {} --pull-seconds {} --stores {} --throttle {} --pull-modes {} --stragglers {} --slowdown {} --runs {}",
        std::env::var("KCM_QPS").unwrap_or_else(|_| "500".to_owned()),
        args.nodes,
        args.batch,
        args.pull_seconds,
        args.stores.join(","),
        args.throttle
            .iter()
            .map(f64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.pull_modes.join(","),
        args.stragglers,
        args.slowdown,
        args.runs
    );
}

/// The counts of `after` less those of `before`, zeros left out.
fn writes_since(
    before: &std::collections::BTreeMap<String, usize>,
    after: &std::collections::BTreeMap<String, usize>,
) -> std::collections::BTreeMap<String, usize> {
    after
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The cost curve: nodes registered in steps up to each size of `--curve`,
/// one fresh service and task over all of them at each, then the table.
async fn cost_curve(args: &Args, cluster: &LocalCluster) {
    let dir = tempfile::tempdir().unwrap();
    let mut sims = Vec::new();
    let mut registered = 0;
    let mut rows = Vec::new();
    for &size in &args.curve {
        let add = size.saturating_sub(registered);
        let t = Instant::now();
        if add > 0 {
            // Each step's nodes have a prefix of their own; the first is `bench-`,
            // so the latency probes' `bench-0` exists.
            let prefix = if registered == 0 {
                "bench-".to_owned()
            } else {
                format!("bench-from{registered}-")
            };
            let scenario = format!(
                "timeScale: 1.0\nnodes:\n  - namePrefix: {prefix}\n    count: {add}\n    labels: {{suite: bench}}\nimages:\n  - match: \"*\"\n    pullSeconds: {}\npreloaded:\n  - image: prewarm:bench\n    nodes: \"*\"\n",
                args.pull_seconds
            );
            sims.push(Sim::start(cluster.kubeconfig_path(), &scenario));
            registered = size;
        }
        let registration = t.elapsed().as_secs_f64();
        eprintln!("{size} nodes registered ({add} added in {registration:.1}s)");
        let step = Args {
            nodes: size,
            batch: args.batch.min(size),
            stragglers: 0.0,
            runs: 1,
            ..args.clone()
        };
        let store_args = vec![
            "--store".to_owned(),
            "sqlite".to_owned(),
            "--database".to_owned(),
            dir.path()
                .join(format!("curve-{size}.db"))
                .display()
                .to_string(),
        ];
        let label = format!("n{size}");
        let run = Run {
            store: &label,
            throttle: 0.0,
            mode: &args.pull_modes[0],
        };
        let figures = measure(&step, cluster, run, &store_args).await;
        rows.push((size, add, registration, step.batch, figures));
    }
    println!(
        "command: KCM_QPS={} cargo bench --profile dev -p prewarm --bench engine -- --curve {} --batch {} --pull-seconds {} --posts {} --pull-modes {}",
        std::env::var("KCM_QPS").unwrap_or_else(|_| "500".to_owned()),
        args.curve
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.batch,
        args.pull_seconds,
        args.posts,
        args.pull_modes[0],
    );
    println!(
        "{:>7} {:>14} {:>6} {:>10} {:>9} {:>13} {:>13} {:>14} {:>12}",
        "nodes",
        "registered",
        "batch",
        "makespan",
        "÷ideal",
        "peak RSS MiB",
        "end RSS MiB",
        "CPU ms/node",
        "writes/node"
    );
    for (size, add, registration, batch, f) in rows {
        let ideal = size as f64 * BENCH_IMAGES.len() as f64 * args.pull_seconds / batch as f64;
        println!(
            "{size:>7} {:>14} {batch:>6} {:>9.1}s {:>9.3} {:>13.1} {:>13.1} {:>14.2} {:>12.2}",
            format!("+{add} {registration:.0}s"),
            f.makespan,
            f.makespan / ideal,
            f.peak_rss_mib,
            f.rss_mib,
            f.cpu_per_node * 1000.0,
            f.writes_per_node
        );
    }
    drop(sims);
}

/// (task, name, when first seen) of every pull object.
type Seen = Arc<Mutex<Vec<(String, String, Instant)>>>;

/// Watches `api` and records (task, name, when first seen) of every object.
fn first_seen<K>(api: Api<K>, seen: &Seen) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let seen = seen.clone();
    tokio::spawn(async move {
        let mut s = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(Ok(ev)) = s.next().await {
            if let watcher::Event::Apply(obj) = ev {
                let meta = obj.meta();
                let task = meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("prewarm.io/task-id"))
                    .cloned()
                    .unwrap_or_default();
                let name = meta.name.clone().unwrap_or_default();
                let mut seen = seen.lock().unwrap();
                if !seen.iter().any(|(_, n, _)| *n == name) {
                    seen.push((task, name, Instant::now()));
                }
            }
        }
    })
}

/// (writes, non-watch reads) the service has made so far, from its `/metrics`.
async fn kube_requests(http: &reqwest::Client, url: &str) -> (f64, f64) {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap_or_default();
    let mut writes = 0.0;
    let mut reads = 0.0;
    for line in text
        .lines()
        .filter(|l| l.starts_with("prewarm_kube_requests_total{"))
    {
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if [
            "verb=\"create\"",
            "verb=\"delete\"",
            "verb=\"update\"",
            "verb=\"patch\"",
            "verb=\"deletecollection\"",
        ]
        .iter()
        .any(|v| line.contains(v))
        {
            writes += value;
        } else if ["verb=\"get\"", "verb=\"list\""]
            .iter()
            .any(|v| line.contains(v))
        {
            reads += value;
        }
    }
    (writes, reads)
}
