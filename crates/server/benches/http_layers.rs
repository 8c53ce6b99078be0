//! Cost of the connection layer: GET throughput of one router served by
//! `axum::serve` (no header-read or idle timeout, no connection cap) against
//! the same router served by `prewarm::http::serve` (timeouts, cap, idle
//! tracking), and that over HTTPS (rustls, ring).
//!
//! ```sh
//! cargo bench -p prewarm --bench http_layers -- --seconds 10 --rounds 3
//! ```
//!
//! Needs `wrk` (Debian package `wrk`) and `openssl`. Each round runs wrk
//! (1 thread, 64 connections) against the three servers in turn, all in this
//! process on loopback; the handler answers a fixed 1 KiB JSON body, so the
//! figures isolate the serving layers (the API's own handlers cost the same
//! under both). Prints requests/s per server and round, and the ratios.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use clap::Parser;
use prewarm::http::serve::{serve, ConnectionLimits};
use prewarm::http::tls::{self, TlsFiles};
use prewarm::metrics::Metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Seconds wrk runs against each server per round.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds (each measures all three servers).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Accepted and ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

fn router() -> Router {
    let body: String = format!("{{\"taskId\":\"t-1\",\"pad\":\"{}\"}}", "x".repeat(1000));
    Router::new().route(
        "/api/v1/tasks/{id}",
        get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    )
}

/// Requests per second wrk reached against `url`.
fn wrk(url: &str, seconds: u64, connections: usize) -> f64 {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            url,
        ])
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

fn make_certificate(dir: &Path) -> TlsFiles {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(status.status.success(), "{status:?}");
    TlsFiles { cert, key }
}

async fn bound() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let stop = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let files = make_certificate(dir.path());

    let (plain_listener, plain) = bound().await;
    let baseline = axum::serve(
        plain_listener,
        router().into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.clone().cancelled_owned());
    let (layered_listener, layered) = bound().await;
    let metrics = Arc::new(Metrics::new());
    let with_layers = serve(
        layered_listener,
        None,
        router(),
        ConnectionLimits::default(),
        metrics.clone(),
        stop.clone(),
    );
    let (tls_listener, secure) = bound().await;
    let (acceptor, _resolver) = tls::acceptor(&files).await.unwrap();
    let with_tls = serve(
        tls_listener,
        Some(acceptor),
        router(),
        ConnectionLimits::default(),
        metrics,
        stop.clone(),
    );
    let servers = tokio::spawn(async move {
        let _ = tokio::join!(baseline, with_layers, with_tls);
    });

    let urls = [
        ("axum::serve", format!("http://{plain}/api/v1/tasks/t-1")),
        (
            "prewarm serve",
            format!("http://{layered}/api/v1/tasks/t-1"),
        ),
        (
            "prewarm serve, HTTPS",
            format!("https://{secure}/api/v1/tasks/t-1"),
        ),
    ];
    let mut totals = [0.0f64; 3];
    println!(
        "wrk -t1 -c{} -d{}s, {} rounds",
        args.connections, args.seconds, args.rounds
    );
    println!("| round | axum::serve | prewarm serve | prewarm serve, HTTPS |");
    println!("|---|---|---|---|");
    for round in 1..=args.rounds {
        let mut row = Vec::new();
        for (i, (_, url)) in urls.iter().enumerate() {
            let (url, seconds, connections) = (url.clone(), args.seconds, args.connections);
            let rps = tokio::task::spawn_blocking(move || wrk(&url, seconds, connections))
                .await
                .unwrap();
            totals[i] += rps;
            row.push(format!("{rps:.0}"));
        }
        println!("| {round} | {} |", row.join(" | "));
    }
    let mean = totals.map(|t| t / args.rounds as f64);
    println!(
        "| mean | {:.0} | {:.0} | {:.0} |",
        mean[0], mean[1], mean[2]
    );
    println!(
        "with layers / without: {:.3}; HTTPS / HTTP: {:.3}",
        mean[1] / mean[0],
        mean[2] / mean[1]
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), servers).await;
}
