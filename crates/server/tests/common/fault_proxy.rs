//! A fault-injecting proxy between the service and the API server, for tests
//! and benchmarks. The service gets a kubeconfig pointing at plain HTTP on
//! 127.0.0.1; the proxy forwards every request to the real API server (TLS
//! and credentials from the real kubeconfig) unless a fault says otherwise:
//!
//! - pull creates (Jobs, or Pods in `--pull-mode pods`) answered `429` with
//!   `Retry-After` (the next N, or a share of all of them), or `500`;
//! - open watch streams cut; new watches refused (`503`) or expired
//!   (`410 Gone`, so the client lists again);
//! - every answer delayed;
//! - Lease writes (renewals) answered `500`: the next N, or all of them
//!   while an outage lasts (reads of the Lease too, watches excepted).
//!
//! It counts what it did, so a test can check that the faults happened, and
//! every write it passed on to the API server (by method and resource), so
//! a benchmark can count the writes the API server received.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use futures::StreamExt;
use http::header;
use rand::Rng;

/// A running proxy; it cuts its streams and stops when dropped.
pub struct FaultProxy {
    faults: Arc<Faults>,
    kubeconfig: PathBuf,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

struct Faults {
    upstream: kube::Client,
    throttle_next: AtomicUsize,
    /// Share of pull creates answered 429, in thousandths.
    throttle_per_mille: AtomicU64,
    retry_after_secs: AtomicU64,
    fail_next: AtomicUsize,
    refuse_watches: AtomicBool,
    expire_watches: AtomicBool,
    /// Watch paths already answered 410 since `expire_watches`.
    expired: Mutex<HashSet<String>>,
    delay_ms: AtomicU64,
    fail_lease_writes_next: AtomicUsize,
    lease_outage: AtomicBool,
    lease_writes_failed: AtomicUsize,
    lease_writes_forwarded: AtomicUsize,
    /// Bumped to cut every open watch stream.
    cut: tokio::sync::watch::Sender<u64>,
    throttled: AtomicUsize,
    failed: AtomicUsize,
    creates_forwarded: AtomicUsize,
    watches_cut: AtomicUsize,
    watches_refused: AtomicUsize,
    watches_expired: AtomicUsize,
    /// Writes passed on to the API server, by `METHOD resource`.
    writes: Mutex<BTreeMap<String, usize>>,
}

impl FaultProxy {
    /// Starts a proxy in front of the API server of `kubeconfig`, with no faults yet.
    pub async fn start(kubeconfig: &Path) -> FaultProxy {
        let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
        let kc = kube::config::Kubeconfig::from_yaml(&text).expect("parse kubeconfig");
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("load kubeconfig");
        // Pass the API server's answers through as they are.
        config.default_retry = false;
        let upstream = kube::Client::try_from(config).expect("kube client");
        let faults = Arc::new(Faults {
            upstream,
            throttle_next: AtomicUsize::new(0),
            throttle_per_mille: AtomicU64::new(0),
            retry_after_secs: AtomicU64::new(1),
            fail_next: AtomicUsize::new(0),
            refuse_watches: AtomicBool::new(false),
            expire_watches: AtomicBool::new(false),
            expired: Mutex::new(HashSet::new()),
            delay_ms: AtomicU64::new(0),
            fail_lease_writes_next: AtomicUsize::new(0),
            lease_outage: AtomicBool::new(false),
            lease_writes_failed: AtomicUsize::new(0),
            lease_writes_forwarded: AtomicUsize::new(0),
            cut: tokio::sync::watch::channel(0).0,
            throttled: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            creates_forwarded: AtomicUsize::new(0),
            watches_cut: AtomicUsize::new(0),
            watches_refused: AtomicUsize::new(0),
            watches_expired: AtomicUsize::new(0),
            writes: Mutex::new(BTreeMap::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(faults.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().unwrap();
        let proxied = dir.path().join("kubeconfig");
        let rewritten: String = text
            .lines()
            .map(|l| match l.trim_start().strip_prefix("server:") {
                Some(_) => {
                    let indent = &l[..l.len() - l.trim_start().len()];
                    format!("{indent}server: http://127.0.0.1:{port}\n")
                }
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&proxied, rewritten).unwrap();
        FaultProxy {
            faults,
            kubeconfig: proxied,
            server,
            _dir: dir,
        }
    }

    /// A kubeconfig that reaches the API server through this proxy.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Answers the next `n` pull creates with 429 and `Retry-After: retry_after`.
    pub fn throttle_creates(&self, n: usize, retry_after: Duration) {
        self.faults
            .retry_after_secs
            .store(retry_after.as_secs().max(1), Ordering::SeqCst);
        self.faults.throttle_next.store(n, Ordering::SeqCst);
    }

    /// Answers a `share` (0 to 1) of all pull creates with 429 and `Retry-After: retry_after`.
    pub fn throttle_share(&self, share: f64, retry_after: Duration) {
        self.faults
            .retry_after_secs
            .store(retry_after.as_secs().max(1), Ordering::SeqCst);
        self.faults
            .throttle_per_mille
            .store((share * 1000.0).round() as u64, Ordering::SeqCst);
    }

    /// Answers the next `n` pull creates that are not throttled with 500.
    pub fn fail_creates(&self, n: usize) {
        self.faults.fail_next.store(n, Ordering::SeqCst);
    }

    /// Cuts every open watch stream now; clients reconnect.
    pub fn cut_watches(&self) {
        self.faults.cut.send_modify(|g| *g += 1);
    }

    /// While `refuse` holds, new watches are answered 503.
    pub fn refuse_watches(&self, refuse: bool) {
        self.faults.refuse_watches.store(refuse, Ordering::SeqCst);
    }

    /// From now on, the first watch of every resource is answered 410 Gone,
    /// as when the client's resourceVersion was compacted away: it must list again.
    pub fn expire_watches(&self) {
        self.faults.expired.lock().unwrap().clear();
        self.faults.expire_watches.store(true, Ordering::SeqCst);
    }

    /// Delays every answer by `by`.
    pub fn delay(&self, by: Duration) {
        self.faults
            .delay_ms
            .store(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answers the next `n` Lease writes (renewals, acquisitions) with 500.
    pub fn fail_lease_writes(&self, n: usize) {
        self.faults
            .fail_lease_writes_next
            .store(n, Ordering::SeqCst);
    }

    /// While `out` holds, every Lease request but a watch is answered 500.
    pub fn lease_outage(&self, out: bool) {
        self.faults.lease_outage.store(out, Ordering::SeqCst);
    }

    /// Lease writes answered 500 so far.
    pub fn lease_writes_failed(&self) -> usize {
        self.faults.lease_writes_failed.load(Ordering::SeqCst)
    }

    /// Lease writes passed on to the API server so far.
    pub fn lease_writes_forwarded(&self) -> usize {
        self.faults.lease_writes_forwarded.load(Ordering::SeqCst)
    }

    /// pull creates answered 429 so far.
    pub fn throttled(&self) -> usize {
        self.faults.throttled.load(Ordering::SeqCst)
    }

    /// pull creates answered 500 so far.
    pub fn failed(&self) -> usize {
        self.faults.failed.load(Ordering::SeqCst)
    }

    /// Writes (any method but GET and HEAD) passed on to the API server so
    /// far, by `METHOD resource` (`POST pods`, `PUT leases`, ...).
    pub fn writes(&self) -> BTreeMap<String, usize> {
        self.faults.writes.lock().unwrap().clone()
    }

    /// pull creates passed on to the API server so far.
    pub fn creates_forwarded(&self) -> usize {
        self.faults.creates_forwarded.load(Ordering::SeqCst)
    }

    /// Watch streams cut so far.
    pub fn watches_cut(&self) -> usize {
        self.faults.watches_cut.load(Ordering::SeqCst)
    }

    /// Watches answered 503 so far.
    pub fn watches_refused(&self) -> usize {
        self.faults.watches_refused.load(Ordering::SeqCst)
    }

    /// Watches answered 410 so far.
    pub fn watches_expired(&self) -> usize {
        self.faults.watches_expired.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut_watches();
        self.server.abort();
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// A Kubernetes `Status` answer.
fn status(code: u16, reason: &str, message: &str, retry_after: Option<u64>) -> Response {
    let mut body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    let mut response = Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(secs) = retry_after {
        body["details"] = serde_json::json!({ "retryAfterSeconds": secs });
        response = response.header(header::RETRY_AFTER, secs.to_string());
    }
    response.body(Body::from(body.to_string())).unwrap()
}

async fn forward(State(f): State<Arc<Faults>>, req: Request) -> Response {
    let delay = f.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let path = req.uri().path().to_owned();
    let is_watch = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    // The service's pull creates: Jobs, or the pull Pods in pods mode (in
    // jobs mode only the controller-manager creates Pods, not through here).
    let is_job_create =
        req.method() == http::Method::POST && (path.ends_with("/jobs") || path.ends_with("/pods"));
    if is_job_create {
        let share = f.throttle_per_mille.load(Ordering::SeqCst);
        let by_share = share > 0 && rand::rng().random_range(0..1000) < share;
        if take_one(&f.throttle_next) || by_share {
            f.throttled.fetch_add(1, Ordering::SeqCst);
            return status(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
                Some(f.retry_after_secs.load(Ordering::SeqCst)),
            );
        }
        if take_one(&f.fail_next) {
            f.failed.fetch_add(1, Ordering::SeqCst);
            return status(500, "InternalError", "etcdserver: request timed out", None);
        }
        f.creates_forwarded.fetch_add(1, Ordering::SeqCst);
    }
    if path.contains("/leases/") && !is_watch {
        let write = req.method() != http::Method::GET;
        let out = f.lease_outage.load(Ordering::SeqCst);
        if out || (write && take_one(&f.fail_lease_writes_next)) {
            if write {
                f.lease_writes_failed.fetch_add(1, Ordering::SeqCst);
            }
            return status(500, "InternalError", "etcdserver: request timed out", None);
        }
        if write {
            f.lease_writes_forwarded.fetch_add(1, Ordering::SeqCst);
        }
    }
    if is_watch {
        if f.refuse_watches.load(Ordering::SeqCst) {
            f.watches_refused.fetch_add(1, Ordering::SeqCst);
            return status(503, "ServiceUnavailable", "the server is unavailable", None);
        }
        if f.expire_watches.load(Ordering::SeqCst) && f.expired.lock().unwrap().insert(path.clone())
        {
            f.watches_expired.fetch_add(1, Ordering::SeqCst);
            return status(410, "Expired", "too old resource version", None);
        }
    }

    let method = req.method().clone();
    if method != http::Method::GET && method != http::Method::HEAD {
        *f.writes
            .lock()
            .unwrap()
            .entry(format!("{method} {}", resource(&path)))
            .or_default() += 1;
    }

    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return status(400, "BadRequest", "unreadable request body", None);
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = http::Request::builder().method(parts.method).uri(target);
    for (name, value) in &parts.headers {
        if !is_hop_or_auth(name) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(kube::client::Body::from(body.to_vec()))
        .expect("a valid request");
    let answer = match f.upstream.send(upstream).await {
        Ok(a) => a,
        Err(e) => return status(503, "ServiceUnavailable", &e.to_string(), None),
    };
    let (parts, body) = answer.into_parts();
    let mut response = Response::builder().status(parts.status);
    for (name, value) in &parts.headers {
        if !is_hop_or_auth(name) {
            response = response.header(name, value);
        }
    }
    let body = Body::new(body);
    let body = if is_watch {
        let mut cut = f.cut.subscribe();
        cut.borrow_and_update();
        let counter = f.clone();
        let cut = async move {
            let _ = cut.changed().await;
            counter.watches_cut.fetch_add(1, Ordering::SeqCst);
        };
        let stream = body
            .into_data_stream()
            .map(|r| r.map_err(std::io::Error::other))
            .take_until(cut)
            .chain(futures::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("watch cut by the fault proxy"))
            }));
        Body::from_stream(stream)
    } else {
        body
    };
    response.body(body).unwrap()
}

/// The resource a request path names: `pods` in
/// `/api/v1/namespaces/ns/pods/name`, `leases` in
/// `/apis/coordination.k8s.io/v1/namespaces/ns/leases/name`, `nodes` in `/api/v1/nodes/n`.
fn resource(path: &str) -> &str {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let version = if segments.first() == Some(&"api") {
        2
    } else {
        3
    };
    match segments.get(version) {
        Some(&"namespaces") if segments.len() > version + 2 => segments[version + 2],
        Some(s) => s,
        None => "?",
    }
}

fn is_hop_or_auth(name: &header::HeaderName) -> bool {
    name == header::HOST
        || name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::CONTENT_LENGTH
        || name == header::AUTHORIZATION
}
