//! Prometheus metrics: one registry, the families of docs/operations.md, and the kube
//! client layer that counts every request the service makes to the API server.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Durations of the last [`RecentDurations::KEEP`] successful node attempts.
#[derive(Debug, Default)]
pub struct RecentDurations(std::sync::Mutex<std::collections::VecDeque<f64>>);

impl RecentDurations {
    /// Samples kept.
    pub const KEEP: usize = 256;

    /// Adds a sample, dropping the oldest beyond [`Self::KEEP`].
    pub fn record(&self, secs: f64) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == Self::KEEP {
            q.pop_front();
        }
        q.push_back(secs);
    }

    /// Mean of the kept samples; `None` without any.
    pub fn mean(&self) -> Option<f64> {
        let q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (!q.is_empty()).then(|| q.iter().sum::<f64>() / q.len() as f64)
    }
}

/// Labels of `prewarm_tasks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// Final task status.
    pub status: String,
}

/// Labels of `prewarm_node_pulls_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success`, `failed`, `skipped`, `retried`.
    pub result: String,
}

/// Labels of `prewarm_node_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// One of [`FAILURE_REASONS`].
    pub reason: String,
}

/// Final task statuses, exposed at 0 from the start so that the first
/// failure is an increase Prometheus can see.
const TASK_END_STATUSES: [&str; 3] = ["completed", "failed", "cancelled"];
/// Node attempt results of `prewarm_node_pulls_total`.
const PULL_RESULTS: [&str; 4] = ["success", "failed", "skipped", "retried"];
/// Scheduled execution outcomes of `prewarm_scheduled_executions_total`.
const EXECUTION_STATUSES: [&str; 4] = ["success", "failed", "skipped", "timeout"];
/// Webhook outcomes of `prewarm_webhook_deliveries_total`.
pub const WEBHOOK_RESULTS: [&str; 4] = ["delivered", "failed", "refused", "dropped"];
/// The `reason` values of `prewarm_node_failures_total`: the kubelet's pull
/// failure reasons, the attempt deadline, a failed pod; anything else is `Other`.
pub const FAILURE_REASONS: [&str; 8] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
    "Timeout",
    "PodFailed",
    "Other",
];

/// The bounded `reason` label for a node attempt's failure reason.
pub fn failure_reason(reason: &str) -> &'static str {
    FAILURE_REASONS
        .iter()
        .find(|r| **r == reason)
        .copied()
        .unwrap_or("Other")
}

/// Labels of `prewarm_registry_throttled_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    /// Registry host as references normalize it (`docker.io`, `ghcr.io`).
    pub registry: String,
}

/// Labels of `prewarm_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// HTTP method.
    pub method: String,
    /// Route template (`/api/v1/tasks/{id}`), never the raw path.
    pub route: String,
    /// Status code.
    pub code: String,
}

/// Labels of `prewarm_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
}

/// Labels of `prewarm_kube_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// Plural resource name (`jobs`, `pods`, `nodes`, ...).
    pub resource: String,
    /// HTTP status, or `error` when no answer came.
    pub code: String,
}

/// Every metric of the service.
pub struct Metrics {
    registry: Registry,
    /// Tasks ended, by final status.
    pub tasks_total: Family<StatusLabels, Counter>,
    /// Start-to-end duration of tasks.
    pub task_duration: Histogram,
    /// Tasks the engine is driving now.
    pub tasks_running: Gauge,
    /// Node attempts ended, by result.
    pub node_pulls: Family<ResultLabels, Counter>,
    /// Duration of successful node attempts (all of a node's images).
    pub image_pull_duration: Histogram,
    /// The same durations, the most recent ones kept for dry-run ETAs.
    pub recent_node_pulls: RecentDurations,
    /// Seconds per image pull measured on each node (what node speeds learn from).
    pub node_pull_seconds: Histogram,
    /// Scheduled executions, by status.
    pub scheduled_executions: Family<StatusLabels, Counter>,
    /// HTTP requests served.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request latency.
    pub http_duration: Family<RouteLabels, Histogram>,
    /// Requests made to the Kubernetes API.
    pub kube_requests: Family<KubeLabels, Counter>,
    /// Client connections open now.
    pub http_connections: Gauge,
    /// Client connections closed at once because `--max-connections` were open.
    pub http_connections_refused: Counter,
    /// Failed node attempts (retried or final), by bounded reason.
    pub node_failures: Family<ReasonLabels, Counter>,
    /// Unix time of the engine's last progress: a task started or a node attempt ended.
    pub last_progress: Gauge<f64, AtomicU64>,
    /// Tasks waiting for admission.
    pub tasks_pending: Gauge,
    /// Node pulls (Jobs) in flight across all tasks.
    pub nodes_in_flight: Gauge,
    /// The global cap on node pulls in flight.
    pub nodes_in_flight_limit: Gauge,
    /// Webhook deliveries ended, by result.
    pub webhook_deliveries: Family<ResultLabels, Counter>,
    /// 1 while this replica holds the Lease and runs the engine, else 0.
    pub leader: Gauge,
    /// Store calls that failed (backend unreachable, timeouts, corrupt records).
    pub store_errors: Counter,
    /// Ended tasks deleted by the history trim (retention and `--max-tasks`).
    pub tasks_trimmed: Counter,
    /// Ended executions of scheduled tasks deleted by the history trim.
    pub executions_trimmed: Counter,
    /// How long nodes waited for a registry token before their pull started.
    pub registry_wait: Histogram,
    /// Pulls a registry refused for its rate limit (429, toomanyrequests), by registry.
    pub registry_throttled: Family<RegistryLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let tasks_total = Family::<StatusLabels, Counter>::default();
        registry.register(
            "prewarm_tasks",
            "Tasks ended, by final status",
            tasks_total.clone(),
        );
        let task_duration =
            Histogram::new([5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]);
        registry.register(
            "prewarm_task_duration_seconds",
            "Time from a task's start to its end",
            task_duration.clone(),
        );
        let tasks_running = Gauge::default();
        registry.register(
            "prewarm_tasks_running",
            "Tasks being driven now",
            tasks_running.clone(),
        );
        let node_pulls = Family::<ResultLabels, Counter>::default();
        registry.register(
            "prewarm_node_pulls",
            "Node pull attempts ended, by result",
            node_pulls.clone(),
        );
        let image_pull_duration =
            Histogram::new([0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]);
        registry.register(
            "prewarm_image_pull_duration_seconds",
            "Time a node took to pull a task's images",
            image_pull_duration.clone(),
        );
        let node_pull_seconds =
            Histogram::new([0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]);
        registry.register(
            "prewarm_node_pull_seconds",
            "Seconds per image pull measured on a node, from its pod's creation to its last image (serial pulls)",
            node_pull_seconds.clone(),
        );
        let scheduled_executions = Family::<StatusLabels, Counter>::default();
        registry.register(
            "prewarm_scheduled_executions",
            "Scheduled task executions, by status",
            scheduled_executions.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "prewarm_http_requests",
            "HTTP requests served",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0])
        });
        registry.register(
            "prewarm_http_request_duration_seconds",
            "HTTP request latency",
            http_duration.clone(),
        );
        let kube_requests = Family::<KubeLabels, Counter>::default();
        registry.register(
            "prewarm_kube_requests",
            "Requests made to the Kubernetes API server",
            kube_requests.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "prewarm_http_connections",
            "Client connections open now",
            http_connections.clone(),
        );
        let http_connections_refused = Counter::default();
        registry.register(
            "prewarm_http_connections_refused",
            "Client connections closed at once because the connection limit was reached",
            http_connections_refused.clone(),
        );
        let node_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "prewarm_node_failures",
            "Failed node pull attempts, retried or final, by reason",
            node_failures.clone(),
        );
        let last_progress = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "prewarm_last_progress_timestamp_seconds",
            "Unix time a task last started or a node pull attempt last ended (process start until then)",
            last_progress.clone(),
        );
        let tasks_pending = Gauge::default();
        registry.register(
            "prewarm_tasks_pending",
            "Tasks waiting to be admitted",
            tasks_pending.clone(),
        );
        let nodes_in_flight = Gauge::default();
        registry.register(
            "prewarm_nodes_in_flight",
            "Node pulls in flight across all tasks",
            nodes_in_flight.clone(),
        );
        let nodes_in_flight_limit = Gauge::default();
        registry.register(
            "prewarm_nodes_in_flight_limit",
            "The cap on node pulls in flight (--max-concurrent-nodes)",
            nodes_in_flight_limit.clone(),
        );
        let webhook_deliveries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "prewarm_webhook_deliveries",
            "Task webhooks ended, by result (delivered, failed, refused, dropped)",
            webhook_deliveries.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "prewarm_leader",
            "1 while this replica holds the Lease and runs the engine",
            leader.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "prewarm_store_errors",
            "Store calls that failed",
            store_errors.clone(),
        );
        let tasks_trimmed = Counter::default();
        registry.register(
            "prewarm_tasks_trimmed",
            "Ended tasks deleted by the history trim (--retention, --max-tasks)",
            tasks_trimmed.clone(),
        );
        let executions_trimmed = Counter::default();
        registry.register(
            "prewarm_executions_trimmed",
            "Ended executions of scheduled tasks deleted by the history trim (--retention, --max-tasks)",
            executions_trimmed.clone(),
        );
        let registry_wait = Histogram::new([
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21600.0,
        ]);
        registry.register(
            "prewarm_registry_wait_seconds",
            "Time a node waited for registry pull tokens (--registry-pull-rate, registryPullRate, 429 backoff) before its pull started",
            registry_wait.clone(),
        );
        let registry_throttled = Family::<RegistryLabels, Counter>::default();
        registry.register(
            "prewarm_registry_throttled",
            "Pulls a registry refused for its rate limit (429 toomanyrequests), by registry host",
            registry_throttled.clone(),
        );
        registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        for status in TASK_END_STATUSES {
            let _ = tasks_total.get_or_create(&StatusLabels {
                status: status.to_owned(),
            });
        }
        for status in EXECUTION_STATUSES {
            let _ = scheduled_executions.get_or_create(&StatusLabels {
                status: status.to_owned(),
            });
        }
        for result in PULL_RESULTS {
            let _ = node_pulls.get_or_create(&ResultLabels {
                result: result.to_owned(),
            });
        }
        for result in WEBHOOK_RESULTS {
            let _ = webhook_deliveries.get_or_create(&ResultLabels {
                result: result.to_owned(),
            });
        }
        for reason in FAILURE_REASONS {
            let _ = node_failures.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            });
        }
        let metrics = Metrics {
            registry,
            tasks_total,
            task_duration,
            tasks_running,
            node_pulls,
            image_pull_duration,
            recent_node_pulls: RecentDurations::default(),
            node_pull_seconds,
            scheduled_executions,
            http_requests,
            http_duration,
            kube_requests,
            http_connections,
            http_connections_refused,
            node_failures,
            last_progress,
            tasks_pending,
            nodes_in_flight,
            nodes_in_flight_limit,
            webhook_deliveries,
            leader,
            store_errors,
            tasks_trimmed,
            executions_trimmed,
            registry_wait,
            registry_throttled,
        };
        metrics.progressed();
        metrics
    }

    /// The engine's occupancy after a reconcile pass.
    pub fn engine_state(&self, running: usize, pending: usize, in_flight: usize, limit: usize) {
        self.tasks_running.set(running as i64);
        self.tasks_pending.set(pending as i64);
        self.nodes_in_flight.set(in_flight as i64);
        self.nodes_in_flight_limit.set(limit as i64);
    }

    /// Records engine progress (a task started or a node attempt ended) now.
    pub fn progressed(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.last_progress.set(now);
    }

    /// Counts one failed node attempt by its (bounded) reason.
    pub fn node_failure(&self, reason: &str) {
        self.node_failures
            .get_or_create(&ReasonLabels {
                reason: failure_reason(reason).to_owned(),
            })
            .inc();
    }

    /// Counts one webhook outcome (one of [`WEBHOOK_RESULTS`]).
    pub fn webhook_delivery(&self, result: &str) {
        self.webhook_deliveries
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Records a successful node attempt of `secs` seconds.
    pub fn observe_node_pull(&self, secs: f64) {
        self.image_pull_duration.observe(secs);
        self.recent_node_pulls.record(secs);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one node attempt outcome.
    pub fn node_pull(&self, result: &str) {
        self.node_pulls
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// `(verb, resource)` of a Kubernetes API request.
pub fn classify_kube_request(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        other => other,
    };
    let rest: &[&str] = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let resource = rest.first().copied().unwrap_or("").to_owned();
    let named = rest.len() >= 2;
    let query = uri.query().unwrap_or("");
    let verb = match *method {
        http::Method::GET
            if query
                .split('&')
                .any(|p| p == "watch=true" || p == "watch=1") =>
        {
            "watch"
        }
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    };
    let resource = if resource.is_empty() {
        "version".to_owned()
    } else {
        resource
    };
    (verb, resource)
}

/// A tower layer for the kube client that counts requests by verb, resource and code.
#[derive(Clone)]
pub struct CountKubeRequests(pub Arc<Metrics>);

impl<S> tower::Layer<S> for CountKubeRequests {
    type Service = CountedKube<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountedKube {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service made by `CountKubeRequests`.
pub struct CountedKube<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for CountedKube<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let (verb, resource) = classify_kube_request(req.method(), req.uri());
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let code = match &res {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            metrics
                .kube_requests
                .get_or_create(&KubeLabels {
                    verb: verb.to_owned(),
                    resource,
                    code,
                })
                .inc();
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_requests_are_classified_by_verb_and_resource() {
        let cases = [
            (
                "GET",
                "/api/v1/nodes?watch=true&resourceVersion=1",
                "watch",
                "nodes",
            ),
            ("GET", "/api/v1/nodes", "list", "nodes"),
            ("GET", "/api/v1/namespaces/prewarm", "get", "namespaces"),
            ("POST", "/api/v1/namespaces", "create", "namespaces"),
            (
                "POST",
                "/apis/batch/v1/namespaces/prewarm/jobs",
                "create",
                "jobs",
            ),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/prewarm/jobs/pw-a-b-0",
                "delete",
                "jobs",
            ),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/prewarm/jobs?labelSelector=x",
                "deletecollection",
                "jobs",
            ),
            ("GET", "/version", "list", "version"),
        ];
        for (method, uri, verb, resource) in cases {
            let (v, r) = classify_kube_request(&method.parse().unwrap(), &uri.parse().unwrap());
            assert_eq!((v, r.as_str()), (verb, resource), "{method} {uri}");
        }
    }

    #[test]
    fn failure_reasons_stay_a_fixed_set() {
        assert_eq!(failure_reason("ErrImagePull"), "ErrImagePull");
        assert_eq!(failure_reason("Timeout"), "Timeout");
        assert_eq!(failure_reason("Evicted"), "Other");
        assert_eq!(failure_reason("node-17 said no"), "Other");
        let m = Metrics::new();
        m.node_failure("ImagePullBackOff");
        m.node_failure("something new");
        let text = m.encode();
        assert!(text.contains("prewarm_node_failures_total{reason=\"ImagePullBackOff\"} 1"));
        assert!(text.contains("prewarm_node_failures_total{reason=\"Other\"} 1"));
        let lines = text
            .lines()
            .filter(|l| l.starts_with("prewarm_node_failures_total{"))
            .count();
        assert_eq!(lines, FAILURE_REASONS.len(), "{text}");
    }

    #[test]
    fn counters_with_fixed_labels_start_at_zero() {
        let text = Metrics::new().encode();
        for sample in [
            "prewarm_tasks_total{status=\"failed\"} 0",
            "prewarm_scheduled_executions_total{status=\"skipped\"} 0",
            "prewarm_node_pulls_total{result=\"retried\"} 0",
            "prewarm_webhook_deliveries_total{result=\"failed\"} 0",
            "prewarm_node_failures_total{reason=\"ErrImagePull\"} 0",
            "prewarm_nodes_in_flight 0",
            "prewarm_tasks_pending 0",
        ] {
            assert!(text.contains(sample), "{sample} missing from\n{text}");
        }
        let progress = text
            .lines()
            .find_map(|l| l.strip_prefix("prewarm_last_progress_timestamp_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert!(
            progress > 1.7e9,
            "process start counts as progress: {progress}"
        );
    }

    #[test]
    fn exposition_names_the_spec_families() {
        let m = Metrics::new();
        m.tasks_total
            .get_or_create(&StatusLabels {
                status: "completed".into(),
            })
            .inc();
        m.node_pull("success");
        let text = m.encode();
        for name in [
            "prewarm_tasks_total{status=\"completed\"} 1",
            "prewarm_task_duration_seconds_bucket",
            "le=\"60.0\"",
            "le=\"300.0\"",
            "prewarm_tasks_running",
            "prewarm_node_pulls_total{result=\"success\"} 1",
            "prewarm_image_pull_duration_seconds",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
