//! Hostile clients against the real binary on a real port: half-sent headers
//! (slowloris), a storm of stalled request bodies while probes must still
//! answer, forwarded client addresses from trusted and untrusted peers, and
//! HTTPS with a certificate made here and replaced while the service runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// `host:port` of a service URL.
fn authority(url: &str) -> String {
    url.split_once("://").unwrap().1.to_owned()
}

/// A client that opens a new connection per request, as the kubelet's probes do.
fn fresh_connections() -> reqwest::Client {
    prewarm_cli::tls::http_client_builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Reads until the peer closes (or resets) the connection; returns what came.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_are_closed_after_the_header_timeout_while_the_service_serves() {
    const CONNECTIONS: usize = 3_000;
    let header_timeout = Duration::from_secs(2);
    let svc = Service::start_flags(
        "t-slowloris",
        &[
            "--header-read-timeout",
            "2",
            "--rate-limit-rps",
            "0",
            "--lease-duration",
            "120",
            "--lease-renew",
            "30",
        ],
    );
    let addr = authority(&svc.url);

    // Each connection sends the start of a request header and never ends it.
    let mut slow = JoinSet::new();
    for i in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(&addr).await.unwrap_or_else(|e| {
            panic!("connection {i} could not be opened ({e}); is `ulimit -n` below 8192?")
        });
        let opened = Instant::now();
        stream
            .write_all(b"GET /api/v1/tasks HTTP/1.1\r\nHost: prewarm\r\nX-Slow: ")
            .await
            .unwrap();
        slow.spawn(async move {
            read_to_close(&mut stream).await;
            opened.elapsed()
        });
    }

    // The service keeps answering the API and its probes while they hang.
    let client = fresh_connections();
    let mut served = 0;
    let mut lifetimes = Vec::with_capacity(CONNECTIONS);
    let give_up = Instant::now() + header_timeout + Duration::from_secs(30);
    // Requests go out every 100 ms whether or not connections are closing
    // (`biased`: a steady stream of closes must not starve them).
    let mut every = tokio::time::interval(Duration::from_millis(100));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while lifetimes.len() < CONNECTIONS {
        assert!(
            Instant::now() < give_up,
            "{} of {CONNECTIONS} half-sent headers still open",
            CONNECTIONS - lifetimes.len()
        );
        tokio::select! {
            biased;
            _ = every.tick() => {
                for path in ["/healthz", "/api/v1/tasks?limit=1"] {
                    let r = client.get(format!("{}{path}", svc.url)).send().await.unwrap();
                    assert_eq!(r.status(), 200, "{path} during the slowloris");
                }
                served += 1;
            }
            ended = slow.join_next() => lifetimes.push(ended.unwrap().unwrap()),
        }
    }
    assert!(served > 0, "no request was made while the connections hung");
    let longest = lifetimes.iter().max().unwrap();
    let shortest = lifetimes.iter().min().unwrap();
    assert!(
        *longest <= header_timeout + Duration::from_secs(1),
        "a half-sent header stayed open {longest:?} (timeout {header_timeout:?})"
    );
    assert!(
        *shortest >= header_timeout - Duration::from_millis(50),
        "a connection was closed after {shortest:?}, before the header timeout"
    );
    let r = client
        .get(format!("{}/healthz", svc.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_at_once_while_stalled_bodies_hold_every_request_slot() {
    const STORM: usize = 1_100;
    let svc = Service::start_flags(
        "t-storm",
        &[
            "--rate-limit-rps",
            "0",
            "--request-timeout",
            "5",
            "--header-read-timeout",
            "30",
            "--lease-duration",
            "120",
            "--lease-renew",
            "30",
        ],
    );
    let addr = authority(&svc.url);

    // Each POST announces a body and sends one byte of it.
    let mut storm = JoinSet::new();
    for _ in 0..STORM {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(
                b"POST /api/v1/tasks HTTP/1.1\r\nHost: prewarm\r\n\
                  Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            )
            .await
            .unwrap();
        storm.spawn(async move { read_to_close(&mut stream).await });
    }

    // An API request now waits for a slot behind the storm.
    let api = tokio::spawn({
        let url = svc.url.clone();
        async move {
            let started = Instant::now();
            let r = fresh_connections()
                .get(format!("{url}/api/v1/tasks?limit=1"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), started.elapsed())
        }
    });

    // Liveness, readiness and metrics answer throughout, each probe at once.
    let client = fresh_connections();
    let mut probes = 0;
    let mut answers = Vec::with_capacity(STORM);
    let give_up = Instant::now() + Duration::from_secs(60);
    while answers.len() < STORM {
        assert!(
            Instant::now() < give_up,
            "{} of {STORM} stalled requests still open after a minute",
            STORM - answers.len()
        );
        tokio::select! {
            ended = storm.join_next() => answers.push(ended.unwrap().unwrap()),
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                let started = Instant::now();
                let r = client.get(format!("{}/healthz", svc.url)).send().await.unwrap();
                let status = r.status();
                r.bytes().await.unwrap();
                let took = started.elapsed();
                assert_eq!(status, 200);
                assert!(
                    took <= Duration::from_millis(50),
                    "/healthz took {took:?} during the storm (probe {probes})"
                );
                if probes % 10 == 0 {
                    for path in ["/readyz", "/metrics"] {
                        let r = client.get(format!("{}{path}", svc.url)).send().await.unwrap();
                        assert_eq!(r.status(), 200, "{path} during the storm");
                    }
                }
                probes += 1;
            }
        }
    }
    assert!(probes >= 20, "only {probes} probes ran during the storm");

    // Every stalled request ended with 408, not a hang and not a 5xx.
    for answer in &answers {
        let head = String::from_utf8_lossy(answer);
        assert!(
            head.starts_with("HTTP/1.1 408"),
            "a stalled body got {:?}",
            head.lines().next()
        );
    }
    let (status, waited) = api.await.unwrap();
    assert!(
        waited >= Duration::from_secs(1),
        "the API answered in {waited:?}: the storm did not hold the request slots"
    );
    assert!(status == 200 || status == 408, "API answered {status}");
}

/// A client whose connections come from `local` (any 127.0.0.0/8 address is on loopback).
fn client_from(local: &str) -> reqwest::Client {
    prewarm_cli::tls::http_client_builder()
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs an invalid task (answered 400 once past the rate limit) claiming `forwarded`.
async fn post_as(client: &reqwest::Client, url: &str, forwarded: &str) -> u16 {
    client
        .post(format!("{url}/api/v1/tasks"))
        .header("X-Forwarded-For", forwarded)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let svc = Service::start_flags(
        "t-proxies",
        &[
            "--trusted-proxies",
            "127.0.0.2/32",
            "--rate-limit-rps",
            "0.01",
            "--rate-limit-burst",
            "2",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );

    // An untrusted peer changing its claimed address stays in one bucket.
    let direct = client_from("127.0.0.1");
    let codes = [
        post_as(&direct, &svc.url, "203.0.113.1").await,
        post_as(&direct, &svc.url, "203.0.113.2").await,
        post_as(&direct, &svc.url, "203.0.113.3").await,
    ];
    assert_eq!(
        codes,
        [400, 400, 429],
        "spoofed X-Forwarded-For changed the bucket"
    );

    // Through the trusted proxy, each forwarded client has its own bucket.
    let proxy = client_from("127.0.0.2");
    let first = [
        post_as(&proxy, &svc.url, "198.51.100.1").await,
        post_as(&proxy, &svc.url, "198.51.100.1").await,
        post_as(&proxy, &svc.url, "198.51.100.1").await,
    ];
    assert_eq!(first, [400, 400, 429]);
    // The client's own claim left of the proxy's hop is not believed.
    let second = [
        post_as(&proxy, &svc.url, "198.51.100.1, 198.51.100.2").await,
        post_as(&proxy, &svc.url, "203.0.113.9, 198.51.100.2").await,
        post_as(&proxy, &svc.url, "198.51.100.2").await,
    ];
    assert_eq!(second, [400, 400, 429]);

    // The audit log names the address each decision used.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 9, "{lines:#?}");
    for line in &lines[..3] {
        let client = line["client"].as_str().unwrap();
        assert!(client.starts_with("127.0.0.1:"), "{line}");
        assert!(line.get("via").is_none(), "{line}");
    }
    let forwarded: Vec<&str> = lines[3..]
        .iter()
        .map(|l| l["client"].as_str().unwrap())
        .collect();
    assert_eq!(
        forwarded,
        [
            "198.51.100.1",
            "198.51.100.1",
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.2",
            "198.51.100.2"
        ]
    );
    for line in &lines[3..] {
        assert!(
            line["via"].as_str().unwrap().starts_with("127.0.0.2:"),
            "{line}"
        );
    }
    assert_eq!(lines[5]["result"], 429);
}

/// Makes a certificate authority named `name` and a server certificate for
/// 127.0.0.1 signed by it; returns (CA bundle, certificate, key) paths.
fn make_certificate(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let path = |f: &str| dir.join(format!("{name}-{f}"));
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let (ca_key, ca, key, csr, cert, ext) = (
        path("ca.key"),
        path("ca.pem"),
        path("tls.key"),
        path("tls.csr"),
        path("tls.crt"),
        path("ext.cnf"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subject = format!("/CN=prewarm test CA {name}");
    let mut args = vec!["req", "-x509", "-days", "1", "-subj", &subject];
    args.extend(ec);
    let (ca_key_s, ca_s) = (s(&ca_key), s(&ca));
    args.extend(["-keyout", &ca_key_s, "-out", &ca_s]);
    openssl(&args);
    let (key_s, csr_s) = (s(&key), s(&csr));
    let mut args = vec!["req", "-subj", "/CN=127.0.0.1"];
    args.extend(ec);
    args.extend(["-keyout", &key_s, "-out", &csr_s]);
    openssl(&args);
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        &csr_s,
        "-CA",
        &ca_s,
        "-CAkey",
        &ca_key_s,
        "-CAcreateserial",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&cert),
    ]);
    (ca, cert, key)
}

/// A client that trusts only the CA bundle at `ca`.
fn trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    prewarm_cli::tls::http_client_builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_cli_and_the_python_sdk_and_picks_up_a_replaced_certificate() {
    let _sim = sim(r#"
timeScale: 0.1
nodes:
  - namePrefix: tls-
    count: 2
    labels: {suite: tls}
images:
  - match: "*"
    pullSeconds: 2
"#);
    let dir = tempfile::tempdir().unwrap();
    let (ca_one, cert_one, key_one) = make_certificate(dir.path(), "one");
    let (ca_two, cert_two, key_two) = make_certificate(dir.path(), "two");
    // The service reads the pair where cert-manager's Secret volume would put it.
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&cert_one, &cert).unwrap();
    std::fs::copy(&key_one, &key).unwrap();
    let svc = Service::start_flags(
        "t-tls",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(svc.url.starts_with("https://127.0.0.1:"), "{}", svc.url);

    // Plain HTTP is not spoken on the TLS port, and an unknown CA is refused.
    let plain = svc.url.replacen("https://", "http://", 1);
    assert!(http().get(format!("{plain}/healthz")).send().await.is_err());
    assert!(trusting(&ca_two)
        .get(format!("{}/healthz", svc.url))
        .send()
        .await
        .is_err());

    // The CLI with --ca-cert creates a task and follows it to completion.
    let cli = |args: Vec<String>| {
        let url = svc.url.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_prewarm"))
                .args(&args)
                .env("PREWARM_SERVER", url)
                .env_remove("PREWARM_TOKEN")
                .env_remove("PREWARM_CA_CERT")
                .output()
                .expect("run prewarm")
        })
    };
    let out = cli(vec![
        "task".into(),
        "create".into(),
        "nginx:1.25".into(),
        "--selector".into(),
        "suite=tls".into(),
        "--wait".into(),
        "--ca-cert".into(),
        ca_one.to_str().unwrap().into(),
    ])
    .await
    .unwrap();
    let said = |out: &std::process::Output| {
        format!(
            "exit {:?}\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Status:   completed"),
        "{}",
        said(&out)
    );
    // Without the CA the CLI cannot reach the server (exit 4).
    let out = cli(vec!["task".into(), "list".into()]).await.unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));

    // The Python SDK, given the CA bundle, creates a task and waits for it.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = r#"
import os, sys
from prewarm_client import PrewarmClient
client = PrewarmClient(os.environ["SERVER"], ca_cert=sys.argv[1])
task = client.create_task(images=["redis:7"], node_selector={"suite": "tls"})
final = client.wait_for_completion(task["taskId"], timeout=120, poll_interval=0.5)
print(final["status"])
"#;
    let (url, ca) = (svc.url.clone(), ca_one.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", script, ca.to_str().unwrap()])
            .current_dir(repo.join("clients/python"))
            .env("SERVER", url)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("PREWARM_CA_CERT")
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "completed");

    // Replacing the files (as cert-manager does) is picked up without a restart.
    let tmp = dir.path().join("tls.crt.new");
    std::fs::copy(&cert_two, &tmp).unwrap();
    let tmp_key = dir.path().join("tls.key.new");
    std::fs::copy(&key_two, &tmp_key).unwrap();
    std::fs::rename(&tmp_key, &key).unwrap();
    std::fs::rename(&tmp, &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = trusting(&ca_two)
            .get(format!("{}/healthz", svc.url))
            .send()
            .await
        {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(trusting(&ca_one)
        .get(format!("{}/healthz", svc.url))
        .send()
        .await
        .is_err());
}
