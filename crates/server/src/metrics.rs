//! Prometheus metrics: one registry, the families of the SPEC, and the kube
//! client layer that counts every request the service makes to the API server.

use std::future::Future;
use std::pin::Pin;
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
        registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        Metrics {
            registry,
            tasks_total,
            task_duration,
            tasks_running,
            node_pulls,
            image_pull_duration,
            recent_node_pulls: RecentDurations::default(),
            scheduled_executions,
            http_requests,
            http_duration,
            kube_requests,
            http_connections,
            http_connections_refused,
        }
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
