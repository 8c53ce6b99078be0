//! Cost of idle live watchers: the engine's makespan for one task with and
//! without many SSE connections following it, and the service's memory.
//!
//! ```sh
//! cargo bench -p prewarm --bench streams -- --watchers 1000 --nodes 200 --batch 20 --pull-seconds 1
//! ```
//!
//! Runs the real `prewarm` binary against the local control plane with
//! kube-sim nodes. Rounds alternate: a task with no watcher, then the same
//! task with `watchers` SSE connections opened on it as soon as it is
//! created (plain sockets reading `/api/v1/tasks/{id}/events`, so the
//! benchmark's own client costs little). Prints each round's makespan, how
//! many watchers received the final event, the events each received, and the
//! service's RSS with the connections open and its peak.
//!
//! Figures (2-core VM shared with the control plane, kube-sim and the
//! benchmark's own 1,000 sockets; release build; ideal makespan 10 s),
//! from the command above with `--rounds 3`:
//!
//! | round | no watcher | 1,000 SSE watchers |
//! |---|---|---|
//! | 1 | 11.61 s | 11.71 s |
//! | 2 | 11.58 s | 12.91 s |
//! | 3 | 13.42 s | 11.95 s |
//! | mean | 12.20 s | 12.19 s |
//!
//! Every watcher got the final event (1000/1000, about 20 events each).
//! Service RSS: 31.5 MiB idle, 43.8 MiB running a task without watchers,
//! 74.6 MiB with 1,000 connections open (about 31 KiB per connection), peak
//! 83.5 MiB.

mod common;
use common::Service;

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use kube_sim::testing::{LocalCluster, Sim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(clap::Parser)]
#[command(about = "Task makespan with and without 1,000 idle SSE watchers")]
struct Args {
    /// SSE watchers of the running task.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Simulated nodes.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// The task's batch size.
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Simulated seconds per image pull.
    #[arg(long, default_value_t = 1.0)]
    pull_seconds: f64,
    /// Rounds with and without watchers.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

/// One SSE reader on a plain socket: returns (events received, saw `finished`).
async fn watcher(addr: String, id: String) -> (usize, bool) {
    let Ok(mut socket) = TcpStream::connect(&addr).await else {
        return (0, false);
    };
    let request = format!(
        "GET /api/v1/tasks/{id}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if socket.write_all(request.as_bytes()).await.is_err() {
        return (0, false);
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut events = 0;
    let mut tail = String::new();
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return (events, false),
            Ok(n) => {
                tail.push_str(&String::from_utf8_lossy(&buf[..n]));
                let complete = tail.rfind('\n').map_or(0, |i| i + 1);
                for line in tail[..complete].lines() {
                    if let Some(kind) = line.strip_prefix("event: ") {
                        events += 1;
                        if kind == "finished" {
                            return (events, true);
                        }
                    }
                }
                tail.drain(..complete);
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let cluster = LocalCluster::up();
    let scenario = format!(
        "timeScale: 1.0\nnodes:\n  - namePrefix: sbench-\n    count: {}\n    labels: {{suite: sbench}}\nimages:\n  - match: \"*\"\n    pullSeconds: {}\n",
        args.nodes, args.pull_seconds
    );
    let _sim = Sim::start(cluster.kubeconfig_path(), &scenario);

    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("bench.db");
    let service = Service::start(
        cluster.kubeconfig_path(),
        "sbench",
        [OsStr::new("--database"), database.as_os_str()],
    );
    let url = service.url.clone();
    let addr = url.trim_start_matches("http://").to_owned();
    let http = prewarm_cli::tls::http_client_builder().build().unwrap();
    let idle_rss = service.status_mib("VmRSS:");

    println!(
        "command: cargo bench -p prewarm --bench streams -- --watchers {} --nodes {} --batch {} --pull-seconds {} --rounds {}",
        args.watchers, args.nodes, args.batch, args.pull_seconds, args.rounds
    );
    println!("service RSS before any task: {idle_rss:.1} MiB");
    // Round 0 warms the API server, kube-sim and the service up and is not
    // compared; then rounds alternate without and with watchers.
    for round in 0..=args.rounds * 2 {
        let warmup = round == 0;
        let watched = round % 2 == 0 && !warmup;
        let image = format!("sbench/app:{round}");
        let started = Instant::now();
        let v: serde_json::Value = http
            .post(format!("{url}/api/v1/tasks"))
            .json(&serde_json::json!({
                "images": [image],
                "batchSize": args.batch,
                "nodeSelector": {"suite": "sbench"}
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = v["taskId"].as_str().unwrap().to_owned();
        let mut readers = Vec::new();
        let mut opened = Duration::ZERO;
        if watched {
            let t = Instant::now();
            for _ in 0..args.watchers {
                readers.push(tokio::spawn(watcher(addr.clone(), id.clone())));
            }
            opened = t.elapsed();
        }
        // Sample the RSS while the task runs (with the watchers connected).
        let mut rss_running: f64 = 0.0;
        let task = loop {
            rss_running = rss_running.max(service.status_mib("VmRSS:"));
            let v: serde_json::Value = http
                .get(format!("{url}/api/v1/tasks/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if matches!(
                v["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let makespan = started.elapsed().as_secs_f64();
        let mut finished = 0;
        let mut events = Vec::new();
        for r in readers {
            let (n, fin) = r.await.unwrap();
            finished += usize::from(fin);
            events.push(n);
        }
        events.sort_unstable();
        let median = events.get(events.len() / 2).copied().unwrap_or(0);
        println!(
            "round {}: {:<24} status {}  makespan {makespan:.2}s  RSS while running {:.1} MiB{}",
            round.div_ceil(2),
            if warmup {
                "warm-up, no watcher".to_owned()
            } else if watched {
                format!("{} SSE watchers", args.watchers)
            } else {
                "no watcher".to_owned()
            },
            task["status"],
            rss_running,
            if watched {
                format!(
                    "  spawned in {:.0} ms  got the end: {finished}/{}  events each: median {median}, min {}",
                    opened.as_secs_f64() * 1000.0,
                    args.watchers,
                    events.first().copied().unwrap_or(0)
                )
            } else {
                String::new()
            }
        );
    }
    println!("service peak RSS: {:.1} MiB", service.status_mib("VmHWM:"));
    drop(service);
}
