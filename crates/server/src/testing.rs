//! The service's parts for unit tests, built one way: the real router over a
//! memory store, the fake cluster and a manual clock, with an engine and a
//! cron scheduler that are built but not run (tests step them by hand), and
//! requests sent through the router without a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use crate::clock::ManualClock;
use crate::cluster::fake::FakeCluster;
use crate::cluster::{NodeInfo, PullJob};
use crate::engine::keep_warm::KeepWarmHandle;
use crate::engine::scheduler::Scheduler;
use crate::engine::{Engine, EngineConfig};
use crate::http::guard::Guard;
use crate::http::{router_with_timeout, AppState, REQUEST_TIMEOUT};
use crate::metrics::Metrics;
use crate::progress::ProgressHub;
use crate::store::{MemoryStore, TaskStore};
use crate::webhook::Webhooks;

/// A gibibyte, for disk sizes in tests.
pub(crate) const GIB: u64 = 1024 * 1024 * 1024;

/// The first pull of `nginx` on `node` for a task.
pub(crate) fn pull_job(node: &str) -> PullJob {
    PullJob {
        task_id: "task-20260101-abcdef".into(),
        task_suffix: "abcdef".into(),
        node: node.into(),
        attempt: 0,
        images: vec![(0, "nginx".into())],
        pull_policy: "IfNotPresent".into(),
        image_pull_secrets: Vec::new(),
        priority_class_name: None,
        helper_image: "helper:test".into(),
        active_deadline_seconds: 60,
    }
}

/// A Ready node whose `status.images` lists `images` (fully qualified
/// names, as the kubelet reports them) with their sizes.
pub(crate) fn node_with_images(name: &str, images: &[(&str, u64)]) -> NodeInfo {
    let mut node = NodeInfo {
        name: name.into(),
        ready: true,
        ..NodeInfo::default()
    };
    for (image, size) in images {
        node.images.push((*image).to_owned());
        node.image_sizes.push(*size);
        node.images_bytes += size;
    }
    node
}

/// Where a test's manual clock starts.
pub(crate) const START: &str = "2024-01-16T10:00:00Z";

/// Engine settings of a test: Jobs in `prewarm`, 10 nodes pulling at once,
/// a minute per pull.
pub(crate) fn engine_config() -> EngineConfig {
    EngineConfig {
        namespace: "prewarm".into(),
        helper_image: "helper:test".into(),
        max_concurrent_nodes: 10,
        pull_timeout: Duration::from_secs(60),
        disk_margin: Default::default(),
        registry_pull_rates: Vec::new(),
        node_retention: crate::history::DEFAULT_RETENTION,
    }
}

/// The router and the parts a test reaches behind it.
pub(crate) struct TestApp {
    /// The whole API, layers included.
    pub(crate) router: Router,
    /// The clock every handler, the engine and the scheduler read.
    pub(crate) clock: Arc<ManualClock>,
    /// The cluster the handlers and the engine see.
    pub(crate) cluster: Arc<FakeCluster>,
    /// Where tasks live (scheduled tasks too, unless a task store was given).
    pub(crate) tasks: Arc<dyn TaskStore>,
    /// The cron scheduler, not running: `step` moves it.
    pub(crate) scheduler: Scheduler,
    /// Where learned node speeds live.
    pub(crate) node_speeds: Arc<MemoryStore>,
}

/// How a [`TestApp`] differs from the default one.
pub(crate) struct TestAppBuilder {
    tasks: Option<Arc<dyn TaskStore>>,
    guard: Option<Box<dyn FnOnce(Arc<ManualClock>) -> Guard>>,
    request_timeout: Duration,
}

impl TestAppBuilder {
    /// Tasks live in `store` (scheduled tasks in a memory store of their own).
    pub(crate) fn tasks(mut self, store: Arc<dyn TaskStore>) -> Self {
        self.tasks = Some(store);
        self
    }

    /// The guard `guard` builds from the test's clock, in place of an open one.
    pub(crate) fn guard(mut self, guard: impl FnOnce(Arc<ManualClock>) -> Guard + 'static) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// API requests time out after `timeout`.
    pub(crate) fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Builds the router and its parts.
    pub(crate) fn build(self) -> TestApp {
        let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
        let cluster = Arc::new(FakeCluster::new());
        let schedules = Arc::new(MemoryStore::new());
        let tasks: Arc<dyn TaskStore> = self.tasks.unwrap_or_else(|| schedules.clone());
        let engine = Engine::new(
            tasks.clone(),
            cluster.clone(),
            clock.clone(),
            engine_config(),
        );
        let scheduler = Scheduler::new(
            schedules.clone(),
            tasks.clone(),
            engine.handle(),
            clock.clone(),
        );
        let guard = match self.guard {
            Some(build) => build(clock.clone()),
            None => Guard::open(clock.clone()),
        };
        let router = router_with_timeout(
            AppState {
                store: tasks.clone(),
                cluster: cluster.clone(),
                engine: engine.handle(),
                clock: clock.clone(),
                metrics: Arc::new(Metrics::new()),
                progress: Arc::new(ProgressHub::new()),
                schedules: schedules.clone(),
                scheduler: scheduler.handle(),
                policies: schedules.clone(),
                keep_warm: KeepWarmHandle::new(),
                node_speeds: schedules.clone(),
                guard: Arc::new(guard),
                webhooks: Webhooks::disabled(),
                image_keys: Arc::default(),
            },
            self.request_timeout,
        );
        TestApp {
            router,
            clock,
            cluster,
            tasks,
            scheduler,
            node_speeds: schedules,
        }
    }
}

/// One answer of the router.
pub(crate) struct Reply {
    /// The status code.
    pub(crate) status: StatusCode,
    /// The response headers.
    pub(crate) headers: HeaderMap,
    /// The whole body; empty for an event stream (it would not end).
    pub(crate) body: Bytes,
}

impl Reply {
    /// The body as JSON; panics, showing the body, when it is not JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "{}: body is not JSON: {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as JSON, `null` when it is empty or not JSON.
    pub(crate) fn json_or_null(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `Content-Type` header, empty when there is none.
    pub(crate) fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A request to `uri`, with a bearer token and a JSON body if given.
pub(crate) fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some(body) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap()
}

impl TestApp {
    /// The default: one memory store for tasks and scheduled tasks, open
    /// auth, the production request timeout.
    pub(crate) fn new() -> TestApp {
        TestApp::builder().build()
    }

    /// A builder for a test app that differs from the default.
    pub(crate) fn builder() -> TestAppBuilder {
        TestAppBuilder {
            tasks: None,
            guard: None,
            request_timeout: REQUEST_TIMEOUT,
        }
    }

    /// Sends `req` through the router and reads the whole answer (only the
    /// head of an event stream, which stays open while its task runs).
    pub(crate) async fn send(&self, req: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let streaming = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body = if streaming {
            Bytes::new()
        } else {
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap()
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends `method uri` without a token, with `body` as JSON if given.
    pub(crate) async fn call(&self, method: Method, uri: &str, body: Option<&Value>) -> Reply {
        self.send(request(method, uri, None, body)).await
    }
}
