//! Registry pacing on the real local control plane with kube-sim nodes.
//!
//! ```sh
//! cargo bench --profile dev -p prewarm --bench pacing -- --nodes 1000 --rate 600 --per 60 --batch 100
//! ```
//!
//! One task pulls one image from a registry that kube-sim limits to `rate`
//! pulls per `per` seconds (answering `429 toomanyrequests` past it), with the
//! service paced to the same `--registry-pull-rate`. Prints the makespan
//! (POST → completed) against the ideal `pulls ÷ rate`, the pulls the
//! registry refused (over its limit), and the most pulls it saw begin in any
//! `per` seconds, from kube-sim's registry log.

mod common;
use common::{wait_done, Service};

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use kube_sim::testing::{most_served_in_any, LocalCluster, Sim};

/// The paced registry.
const REGISTRY: &str = "paced.bench";

#[derive(clap::Parser)]
#[command(
    about = "One task over N kube-sim nodes pulling from a rate-limited registry: makespan ÷ (pulls ÷ rate), pulls over the limit"
)]
struct Args {
    /// Simulated nodes (each needs one pull).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// The registry's pulls per period (kube-sim's limit and the service's rate).
    #[arg(long, default_value_t = 600)]
    rate: u32,
    /// The period, in seconds.
    #[arg(long, default_value_t = 60)]
    per: u64,
    /// The task's batch size.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Simulated seconds per pull.
    #[arg(long, default_value_t = 2.0)]
    pull_seconds: f64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let cluster = LocalCluster::up();
    let scenario = format!(
        "registries:\n  - {{host: {REGISTRY}, limit: {}, window: {}s}}\nnodes:\n  - {{namePrefix: bench-, count: {}, labels: {{suite: bench}}}}\nimages:\n  - {{match: \"*\", pullSeconds: {}}}\npreloaded:\n  - image: prewarm:bench\n",
        args.rate, args.per, args.nodes, args.pull_seconds
    );
    let sim = Sim::start(cluster.kubeconfig_path(), &scenario);
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("bench.db");
    let rate = format!("{REGISTRY}={}/{}s", args.rate, args.per);
    let service = Service::start(
        cluster.kubeconfig_path(),
        "bench",
        [
            OsStr::new("--database"),
            database.as_os_str(),
            OsStr::new("--max-concurrent-nodes"),
            OsStr::new("1000"),
            OsStr::new("--registry-pull-rate"),
            OsStr::new(&rate),
        ],
    );
    let http = prewarm_cli::tls::http_client_builder().build().unwrap();
    let url = service.url.clone();
    // Wait for the service's node cache to hold every node (a dry run sees them).
    let body = serde_json::json!({
        "images": [format!("{REGISTRY}/app:1")],
        "nodeSelector": {"suite": "bench"},
        "batchSize": args.batch,
    });
    loop {
        let plan = post(&http, &format!("{url}/api/v1/tasks?dryRun=true"), &body).await;
        if plan["selectedNodes"].as_u64() == Some(args.nodes as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let posted = Instant::now();
    let task = post(&http, &format!("{url}/api/v1/tasks"), &body).await;
    let id = task["taskId"].as_str().expect("task created").to_owned();
    let view = wait_done(&http, &url, &id).await;
    let makespan = posted.elapsed().as_secs_f64();
    let pulls = sim.registry_pulls(REGISTRY);
    let served = pulls.iter().filter(|p| p.served).count();
    let refused = pulls.len() - served;
    let ideal = served as f64 / (f64::from(args.rate) / args.per as f64);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "pacing: {} nodes, {REGISTRY} limited to {}/{}s, batch {}, pull {}s",
        args.nodes, args.rate, args.per, args.batch, args.pull_seconds
    );
    println!(
        "  task {}: {} completed, {} failed",
        view["status"], view["progress"]["completedNodes"], view["progress"]["failedNodes"]
    );
    println!(
        "  makespan {makespan:.1}s, pulls ÷ rate {ideal:.1}s, ratio {:.3}",
        makespan / ideal
    );
    println!(
        "  pulls served {served}, over the limit (refused) {refused}, most in any {}s: {}",
        args.per,
        most_served_in_any(&pulls, Duration::from_secs(args.per))
    );
    println!(
        "  load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    drop(service);
    drop(sim);
}

/// POSTs `body` to `url`; the answer's JSON.
async fn post(http: &reqwest::Client, url: &str, body: &serde_json::Value) -> serde_json::Value {
    http.post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
