//! Putting the service together: open the store, connect the cluster, build
//! the engine, bind the listener; then serve and run the engine until told to
//! stop. Tests use exactly this wiring, with their own store and cluster.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::cluster::kube::KubeCluster;
use crate::cluster::Cluster;
use crate::config::{ServeConfig, StoreKind};
use crate::engine::scheduler::Scheduler;
use crate::engine::{Engine, EngineConfig};
use crate::http::audit::AuditLog;
use crate::http::auth::{load_token_file, watch_token_file, Authenticator};
use crate::http::guard::Guard;
use crate::http::serve::ConnectionLimits;
use crate::http::tls::{self, ReloadingCert, TlsAcceptor, TlsFiles};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::progress::ProgressHub;
use crate::store::{MemoryStore, ScheduleStore, SqliteStore, TaskStore};
use crate::webhook::{WebhookConfig, Webhooks};

/// How long in-flight requests may keep the server up after shutdown starts
/// (below Kubernetes' default 30 s termination grace period).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// The request guard, the connection settings and the webhook settings of a service.
#[derive(Debug, Clone)]
pub struct Operations {
    /// Authentication, rate limits, audit log.
    pub guard: Arc<Guard>,
    /// End-of-task webhooks; `None` sends none.
    pub webhooks: Option<WebhookConfig>,
    /// Connection timeouts, the connection cap and the request timeout.
    pub serving: Serving,
}

/// How connections and requests are bounded, and whether they are HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// Header-read and idle timeouts, most open connections.
    pub limits: ConnectionLimits,
    /// Longest an API request may take before it is answered 408.
    pub request_timeout: Duration,
    /// Certificate and key to serve HTTPS with; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
}

impl Default for Serving {
    fn default() -> Self {
        Serving {
            limits: ConnectionLimits::default(),
            request_timeout: http::REQUEST_TIMEOUT,
            tls: None,
        }
    }
}

impl Operations {
    /// Open (no tokens), unlimited, auditing to stdout, no webhooks.
    pub fn open(clock: Arc<dyn Clock>) -> Operations {
        Operations {
            guard: Arc::new(Guard::open(clock)),
            webhooks: None,
            serving: Serving::default(),
        }
    }

    /// From the configuration: loads the token file (and keeps watching it),
    /// opens the audit log. Needs a Tokio runtime.
    pub fn from_config(config: &ServeConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Operations> {
        let auth = Arc::new(Authenticator::open());
        match &config.auth_tokens_file {
            Some(path) => {
                let n = load_token_file(&auth, path)?;
                tracing::info!(tokens = n, file = %path.display(), "bearer-token authentication on");
                tokio::spawn(watch_token_file(auth.clone(), path.clone()));
            }
            None => tracing::warn!("{}", crate::http::health::OPEN_WARNING),
        }
        let audit = match &config.audit_log {
            Some(path) => AuditLog::file(path)?,
            None => AuditLog::stdout(),
        };
        let (reads, writes) = config.rate_limits();
        Ok(Operations {
            guard: Arc::new(
                Guard::new(auth, reads, writes, audit, clock)
                    .with_trusted_proxies(config.trusted_proxies.clone()),
            ),
            webhooks: Some(config.webhook_config()),
            serving: config.serving(),
        })
    }
}

/// HTTPS: the acceptor and what keeps its certificate current.
struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<ReloadingCert>,
    files: TlsFiles,
}

/// A built service: the listener is bound, nothing runs yet.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: axum::Router,
    limits: ConnectionLimits,
    tls: Option<Tls>,
    metrics: Arc<Metrics>,
    engine: Engine,
    scheduler: Scheduler,
    progress: Arc<ProgressHub>,
}

impl Application {
    /// Builds the production service from its configuration.
    pub async fn build(config: ServeConfig) -> anyhow::Result<Application> {
        let metrics = Arc::new(Metrics::new());
        let cluster = KubeCluster::connect(
            config.kubeconfig.as_deref(),
            &config.namespace,
            metrics.clone(),
        )
        .await
        .context("connecting to Kubernetes")?;
        let (cluster, clock, engine_config) = (
            Arc::new(cluster),
            Arc::new(SystemClock) as Arc<dyn Clock>,
            config.engine_config(),
        );
        let operations = Operations::from_config(&config, clock.clone())?;
        match config.store {
            StoreKind::Sqlite => {
                let store = Arc::new(SqliteStore::open(&config.database).with_context(|| {
                    format!("opening the task database {}", config.database.display())
                })?);
                Application::build_with_operations(
                    store,
                    cluster,
                    clock,
                    metrics,
                    engine_config,
                    config.listen,
                    operations,
                )
                .await
            }
            StoreKind::Memory => {
                let store = Arc::new(MemoryStore::new());
                Application::build_with_operations(
                    store,
                    cluster,
                    clock,
                    metrics,
                    engine_config,
                    config.listen,
                    operations,
                )
                .await
            }
        }
    }

    /// Builds the service from parts the caller brings (tests: a memory store,
    /// a simulated cluster, a manual clock) and binds `listen` (port 0 allowed).
    /// The one store holds both tasks and scheduled tasks. Auth is open,
    /// nothing is rate limited, audit lines go to stdout, no webhooks are sent.
    pub async fn build_with<S: TaskStore + ScheduleStore>(
        store: Arc<S>,
        cluster: Arc<dyn Cluster>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        engine_config: EngineConfig,
        listen: SocketAddr,
    ) -> anyhow::Result<Application> {
        let operations = Operations::open(clock.clone());
        Self::build_with_operations(
            store,
            cluster,
            clock,
            metrics,
            engine_config,
            listen,
            operations,
        )
        .await
    }

    /// Like [`Application::build_with`], with auth, limits, audit and webhooks as given.
    pub async fn build_with_operations<S: TaskStore + ScheduleStore>(
        store: Arc<S>,
        cluster: Arc<dyn Cluster>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        engine_config: EngineConfig,
        listen: SocketAddr,
        operations: Operations,
    ) -> anyhow::Result<Application> {
        let progress = Arc::new(ProgressHub::new());
        let schedules: Arc<dyn ScheduleStore> = store.clone();
        let store: Arc<dyn TaskStore> = store;
        let webhooks = match operations.webhooks {
            Some(config) => Webhooks::start(config, store.clone(), metrics.clone()),
            None => Webhooks::disabled(),
        };
        let engine = Engine::new(store.clone(), cluster.clone(), clock.clone(), engine_config)
            .with_metrics(metrics.clone())
            .with_progress(progress.clone())
            .with_webhooks(webhooks.clone());
        let scheduler = Scheduler::new(
            schedules.clone(),
            store.clone(),
            engine.handle(),
            clock.clone(),
        )
        .with_metrics(metrics.clone());
        let router = http::router_with_timeout(
            AppState {
                schedules,
                scheduler: scheduler.handle(),
                store,
                cluster,
                engine: engine.handle(),
                clock,
                metrics: metrics.clone(),
                progress: progress.clone(),
                guard: operations.guard,
                webhooks,
            },
            operations.serving.request_timeout,
        );
        let tls = match operations.serving.tls {
            Some(files) => {
                let (acceptor, resolver) = tls::acceptor(&files)
                    .await
                    .context("loading the TLS certificate and key")?;
                Some(Tls {
                    acceptor,
                    resolver,
                    files,
                })
            }
            None => None,
        };
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        Ok(Application {
            listener,
            local_addr,
            router,
            limits: operations.serving.limits,
            tls,
            metrics,
            engine,
            scheduler,
            progress,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound port (the real one when built with port 0).
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Serves the API and runs the engine and the cron scheduler until
    /// `shutdown` is cancelled or one of them fails (which stops the others). On shutdown the server
    /// stops accepting and lets in-flight requests finish (up to
    /// [`DRAIN_TIMEOUT`]) while the engine flushes; returns when both ended.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stop = shutdown.child_token();
        let Application {
            listener,
            local_addr,
            router,
            limits,
            tls,
            metrics,
            engine,
            scheduler,
            progress,
        } = self;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (acceptor, reload) = match tls {
            Some(Tls {
                acceptor,
                resolver,
                files,
            }) => (Some(acceptor), Some((resolver, files))),
            None => (None, None),
        };
        // Live streams would hold the drain open until the deadline: end them
        // as soon as shutdown starts (clients resume with Last-Event-ID).
        tokio::spawn({
            let stop = stop.clone();
            async move {
                stop.cancelled().await;
                progress.close();
            }
        });

        let server = {
            let stop = stop.clone();
            async move {
                let serve =
                    http::serve::serve(listener, acceptor, router, limits, metrics, stop.clone());
                // The certificate is watched for as long as the server runs.
                let serve = async {
                    match reload {
                        Some((resolver, files)) => {
                            tokio::select! {
                                () = serve => {}
                                () = tls::watch(resolver, files) => {}
                            }
                        }
                        None => serve.await,
                    }
                };
                announce(scheme, local_addr);
                let drain_deadline = async {
                    stop.cancelled().await;
                    tokio::time::sleep(DRAIN_TIMEOUT).await;
                };
                let result = tokio::select! {
                    () = serve => Ok(()),
                    () = drain_deadline => {
                        tracing::warn!(
                            timeout_secs = DRAIN_TIMEOUT.as_secs(),
                            "requests still in flight after the drain timeout; closing them"
                        );
                        Ok(())
                    }
                };
                stop.cancel();
                result
            }
        };
        let engine = {
            let stop = stop.clone();
            async move {
                let result = engine.run(stop.clone()).await.context("engine");
                stop.cancel();
                result
            }
        };

        let scheduler = {
            let stop = stop.clone();
            async move {
                let result = scheduler.run(stop.clone()).await.context("scheduler");
                stop.cancel();
                result
            }
        };

        let (served, ran, scheduled) = tokio::join!(server, engine, scheduler);
        if let Err(err) = scheduled {
            tracing::error!(error = format!("{err:#}"), "scheduler failed");
        }
        match (served, ran) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(err), Ok(())) | (Ok(()), Err(err)) => Err(err),
            (Err(server_err), Err(engine_err)) => {
                tracing::error!(error = format!("{engine_err:#}"), "engine failed too");
                Err(server_err)
            }
        }
    }
}

/// Tells whoever started the process (scripts, tests) where to connect.
fn announce(scheme: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the service; the log line below still says it.
    let _ = writeln!(out, "listening on {scheme}://{addr}").and_then(|()| out.flush());
    tracing::info!(%addr, scheme, "listening");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tests::FakeCluster;

    #[tokio::test]
    async fn serves_on_a_free_port_until_cancelled() {
        let app = Application::build_with(
            Arc::new(MemoryStore::new()),
            Arc::new(FakeCluster::new()),
            Arc::new(SystemClock),
            Arc::new(Metrics::new()),
            EngineConfig {
                namespace: "prewarm".into(),
                helper_image: "helper:test".into(),
                max_concurrent_nodes: 10,
                pull_timeout: Duration::from_secs(60),
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let port = app.port();
        assert_ne!(port, 0);
        assert_eq!(app.local_addr().port(), port);

        let shutdown = CancellationToken::new();
        let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));

        let url = format!("http://127.0.0.1:{port}/healthz");
        let health: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        assert_eq!(health["status"], "healthy");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("did not stop after cancel")
            .unwrap()
            .unwrap();
        assert!(
            reqwest::get(&url).await.is_err(),
            "still accepting after stop"
        );
    }
}
