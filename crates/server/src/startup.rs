//! Putting the service together: open the store, connect the cluster, build
//! the engine, bind the listener; then serve and run the engine until told to
//! stop. Tests use exactly this wiring, with their own store and cluster.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::{follow_offset_file, Clock, OffsetClock, SystemClock};
use crate::cluster::kube::{client_config, KubeCluster};
use crate::cluster::Cluster;
use crate::config::{ServeConfig, StoreKind};
use crate::engine::keep_warm::{KeepWarm, KeepWarmHandle};
use crate::engine::scheduler::{Scheduler, SchedulerHandle};
use crate::engine::{Engine, EngineConfig, EngineHandle};
use crate::history::{trim_history, HistoryLimits};
use crate::http::audit::AuditLog;
use crate::http::auth::{load_token_file, watch_token_file, Authenticator};
use crate::http::guard::Guard;
use crate::http::serve::ConnectionLimits;
use crate::http::tls::{self, ReloadingCert, TlsAcceptor, TlsFiles};
use crate::http::{self, AppState};
use crate::leadership::{
    single_instance_message, Fenced, LeaderState, Leadership, LeaseTiming, TermEnd,
};
use crate::metrics::Metrics;
use crate::progress::ProgressHub;
use crate::store::redis::{Change, Changes, RedisConfig};
use crate::store::{
    MemoryStore, NodeSpeedStore, PolicyStore, RedisStore, ScheduleStore, SqliteStore, Storage,
    TaskStore,
};
use crate::webhook::{WebhookConfig, Webhooks};

/// How long in-flight requests may keep the server up after shutdown starts
/// (below Kubernetes' default 30 s termination grace period).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// How long webhook attempts in flight may hold up the exit after the rest
/// stopped (together with the drain, the exit stays within 30 s of SIGTERM).
const WEBHOOK_STOP: Duration = Duration::from_secs(3);

/// The request guard, the connection settings and the webhook settings of a service.
#[derive(Debug, Clone)]
pub struct Operations {
    /// Authentication, rate limits, audit log.
    pub guard: Arc<Guard>,
    /// End-of-task webhooks; `None` sends none.
    pub webhooks: Option<WebhookConfig>,
    /// Connection timeouts, the connection cap and the request timeout.
    pub serving: Serving,
    /// How much ended history the leader keeps.
    pub history: HistoryLimits,
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
            history: HistoryLimits::default(),
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
            history: config.history_limits(),
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
    term: Term,
    progress: Arc<ProgressHub>,
    terms: TermParts,
    replicas: Option<Replicas>,
    audit: Arc<AuditLog>,
    /// The clock and the file its offset follows (`--clock-offset-file`).
    offset_clock: Option<(Arc<OffsetClock>, PathBuf)>,
}

/// What a term of the engine and the scheduler is built from.
#[derive(Clone)]
struct TermParts {
    store: Arc<dyn TaskStore>,
    schedules: Arc<dyn ScheduleStore>,
    policies: Arc<dyn PolicyStore>,
    node_speeds: Arc<dyn NodeSpeedStore>,
    cluster: Arc<dyn Cluster>,
    clock: Arc<dyn Clock>,
    engine_config: EngineConfig,
    metrics: Arc<Metrics>,
    progress: Arc<ProgressHub>,
    webhooks: Arc<Webhooks>,
    history: HistoryLimits,
    /// Shared by every term's keep-warm controller, so the API's handle stays live.
    keep_warm: KeepWarmHandle,
    /// The API's wake handles of the engine and the scheduler (the first
    /// term's), shared by every later term.
    wake: Option<(EngineHandle, SchedulerHandle)>,
}

/// What runs while this replica leads: the engine, the cron scheduler and
/// the keep-warm controller.
type Term = (Engine, Scheduler, KeepWarm);

impl TermParts {
    /// The history trim of a term (runs until `stop`).
    fn trim_history(&self, stop: CancellationToken) -> impl std::future::Future<Output = ()> {
        trim_history(
            self.store.clone(),
            self.schedules.clone(),
            self.clock.clone(),
            self.history,
            self.metrics.clone(),
            stop,
        )
    }

    /// A fresh engine, scheduler and keep-warm controller (nothing runs until their `run`).
    fn term(&self) -> Term {
        let mut engine = Engine::new(
            self.store.clone(),
            self.cluster.clone(),
            self.clock.clone(),
            self.engine_config.clone(),
        )
        .with_metrics(self.metrics.clone())
        .with_progress(self.progress.clone())
        .with_webhooks(self.webhooks.clone())
        .with_node_speeds(self.node_speeds.clone());
        if let Some((engine_wake, _)) = &self.wake {
            engine = engine.with_handle(engine_wake);
        }
        let mut scheduler = Scheduler::new(
            self.schedules.clone(),
            self.store.clone(),
            engine.handle(),
            self.clock.clone(),
        )
        .with_metrics(self.metrics.clone())
        .with_cluster(self.cluster.clone());
        if let Some((_, scheduler_wake)) = &self.wake {
            scheduler = scheduler.with_handle(scheduler_wake);
        }
        let keep_warm = KeepWarm::new(
            self.policies.clone(),
            self.store.clone(),
            self.cluster.clone(),
            engine.handle(),
            self.clock.clone(),
        )
        .with_handle(&self.keep_warm);
        (engine, scheduler, keep_warm)
    }
}

/// Leadership of a service that takes the Lease.
struct Replicas {
    leadership: Arc<Leadership>,
    /// The shared store's change feed (Redis); `None` for a single-instance store.
    changes: Option<Changes>,
}

/// The running term's wake handles, for changes other replicas publish.
type TermHandles = Arc<std::sync::Mutex<Option<(EngineHandle, SchedulerHandle)>>>;

/// This replica's name: the flag, else the pod name, else the host name.
/// A restarted process keeps its name, so it takes its own Lease back at once.
fn replica_name(config: &ServeConfig) -> String {
    config
        .replica_name
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("prewarm-{}", std::process::id()))
}

impl Application {
    /// Builds the production service from its configuration: connects the
    /// cluster and the store, and competes for the Lease (a single-instance
    /// store refuses to start while another instance holds it).
    pub async fn build(config: ServeConfig) -> anyhow::Result<Application> {
        let metrics = Arc::new(Metrics::new());
        let cluster = KubeCluster::connect(
            config.kubeconfig.as_deref(),
            &config.namespace,
            config.pull_mode,
            metrics.clone(),
        )
        .await
        .context("connecting to Kubernetes")?;
        let replica = replica_name(&config);
        let timing = LeaseTiming {
            duration: Duration::from_secs(config.lease_duration),
            renew: Duration::from_secs(config.lease_renew),
        };
        anyhow::ensure!(
            timing.renew < timing.duration,
            "--lease-renew ({}s) must be shorter than --lease-duration ({}s)",
            config.lease_renew,
            config.lease_duration
        );
        let state = LeaderState::new(replica.clone(), metrics.clone());
        let leadership = Arc::new(Leadership::new(
            client_config(config.kubeconfig.as_deref()).await?,
            &config.namespace,
            &config.lease_name,
            timing,
            state.clone(),
        )?);
        if !config.store.is_shared() {
            let holder = leadership
                .other_holder()
                .await
                .context("reading the leader Lease")?;
            if let Some(holder) = holder {
                anyhow::bail!(single_instance_message(&holder, &config.namespace));
            }
        }
        let cluster: Arc<dyn Cluster> = Fenced::new(Arc::new(cluster), state.clone());
        let offset_clock = config
            .clock_offset_file
            .clone()
            .map(|file| (Arc::new(OffsetClock::default()), file));
        let clock: Arc<dyn Clock> = match &offset_clock {
            Some((clock, _)) => clock.clone(),
            None => Arc::new(SystemClock),
        };
        let engine_config = config.engine_config();
        let operations = Operations::from_config(&config, clock.clone())?;
        let (store, changes): (Arc<dyn Storage>, Option<Changes>) = match config.store {
            StoreKind::Sqlite => {
                let store = SqliteStore::open(&config.database).with_context(|| {
                    format!("opening the task database {}", config.database.display())
                })?;
                (Arc::new(store), None)
            }
            StoreKind::Memory => (Arc::new(MemoryStore::new()), None),
            StoreKind::Redis => {
                let store = RedisStore::connect(&RedisConfig {
                    url: config.redis_url.0.clone(),
                    password: config.redis_password.as_ref().map(|p| p.0.clone()),
                    prefix: config.redis_prefix.clone(),
                    replica: replica.clone(),
                })
                .await
                .context("connecting to Redis")?
                .with_metrics(metrics.clone());
                let changes = store.changes();
                (Arc::new(store), Some(changes))
            }
        };
        let mut app = Application::build_with_operations(
            store,
            cluster,
            clock,
            metrics,
            engine_config,
            config.listen,
            operations,
            state.clone(),
        )
        .await?;
        app.replicas = Some(Replicas {
            leadership,
            changes,
        });
        app.offset_clock = offset_clock;
        app.router = app.router.layer(axum::Extension(state));
        Ok(app)
    }

    /// Builds the service from parts the caller brings (tests: a memory store,
    /// a simulated cluster, a manual clock) and binds `listen` (port 0 allowed).
    /// The one store holds both tasks and scheduled tasks. Auth is open,
    /// nothing is rate limited, audit lines go to stdout, no webhooks are
    /// sent; it takes no Lease and always leads.
    pub async fn build_with(
        store: Arc<dyn Storage>,
        cluster: Arc<dyn Cluster>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        engine_config: EngineConfig,
        listen: SocketAddr,
    ) -> anyhow::Result<Application> {
        let operations = Operations::open(clock.clone());
        let leader = LeaderState::always("local", metrics.clone());
        Self::build_with_operations(
            store,
            cluster,
            clock,
            metrics,
            engine_config,
            listen,
            operations,
            leader,
        )
        .await
    }

    /// Like [`Application::build_with`], with auth, limits, audit and webhooks
    /// as given; webhooks are sent only while `leader` leads.
    #[allow(clippy::too_many_arguments)] // the parts a caller may bring, each its own kind
    pub async fn build_with_operations(
        store: Arc<dyn Storage>,
        cluster: Arc<dyn Cluster>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        engine_config: EngineConfig,
        listen: SocketAddr,
        operations: Operations,
        leader: Arc<LeaderState>,
    ) -> anyhow::Result<Application> {
        let progress = Arc::new(ProgressHub::new());
        let schedules: Arc<dyn ScheduleStore> = store.clone();
        let policies: Arc<dyn PolicyStore> = store.clone();
        let node_speeds: Arc<dyn NodeSpeedStore> = store.clone();
        let store: Arc<dyn TaskStore> = store;
        let webhooks = match operations.webhooks {
            Some(config) => Webhooks::start(config, store.clone(), metrics.clone(), leader),
            None => Webhooks::disabled(),
        };
        let mut terms = TermParts {
            store: store.clone(),
            schedules: schedules.clone(),
            cluster: cluster.clone(),
            clock: clock.clone(),
            engine_config,
            metrics: metrics.clone(),
            progress: progress.clone(),
            webhooks: webhooks.clone(),
            history: operations.history,
            keep_warm: KeepWarmHandle::new(),
            policies: policies.clone(),
            node_speeds: node_speeds.clone(),
            wake: None,
        };
        let term = terms.term();
        terms.wake = Some((term.0.handle(), term.1.handle()));
        let audit = operations.guard.audit.clone();
        let router = http::router_with_timeout(
            AppState {
                schedules,
                scheduler: term.1.handle(),
                policies,
                keep_warm: terms.keep_warm.clone(),
                node_speeds,
                store,
                cluster,
                engine: term.0.handle(),
                clock,
                metrics: metrics.clone(),
                progress: progress.clone(),
                guard: operations.guard,
                webhooks: webhooks.clone(),
                image_keys: Arc::default(),
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
            term,
            progress,
            terms,
            replicas: None,
            audit,
            offset_clock: None,
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
            term,
            progress,
            terms,
            replicas,
            audit,
            offset_clock,
        } = self;
        let webhooks = terms.webhooks.clone();
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
            let (stop, progress) = (stop.clone(), progress.clone());
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
        let work = {
            let stop = stop.clone();
            async move {
                let result = match replicas {
                    None => {
                        let trim = terms.trim_history(stop.clone());
                        run_term(term, trim, stop.clone()).await
                    }
                    Some(replicas) => {
                        lead_while_holding(replicas, term, terms, progress, stop.clone()).await
                    }
                };
                stop.cancel();
                result
            }
        };

        let follow_clock = async {
            if let Some((clock, file)) = offset_clock {
                follow_offset_file(clock, file, stop.clone()).await;
            }
        };
        let (served, ran, ()) = tokio::join!(server, work, follow_clock);
        // Unsent webhooks stay `pending` in the store and resume at the next start.
        webhooks.stop(WEBHOOK_STOP).await;
        audit.flush().await;
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

/// How long the parts of a term may take to stop once its token is
/// cancelled (the engine's own drain of Kubernetes calls is bounded at 20 s,
/// then it writes what it knows). What is still running then is named in
/// the log and dropped: the next term starts from the store and the cluster.
const TERM_STOP: Duration = Duration::from_secs(30);

/// The parts of a term that have not returned yet, by name.
#[derive(Clone, Default)]
struct Running(Arc<std::sync::Mutex<Vec<&'static str>>>);

impl Running {
    /// `part` under `name`, listed until it returns.
    fn track<F: std::future::Future>(
        &self,
        name: &'static str,
        part: F,
    ) -> impl std::future::Future<Output = F::Output> {
        self.names().push(name);
        let running = self.clone();
        async move {
            let out = part.await;
            running.names().retain(|n| *n != name);
            out
        }
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Vec<&'static str>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs an engine, a scheduler, a keep-warm controller and the history
/// trim until `stop` (or until the engine fails). Once `stop` is cancelled
/// every part has [`TERM_STOP`] to return; the parts still running then are
/// logged and dropped.
async fn run_term(
    (engine, scheduler, keep_warm): Term,
    trim: impl std::future::Future<Output = ()>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let running = Running::default();
    let engine = running.track("engine", {
        let stop = stop.clone();
        async move {
            let result = engine.run(stop.clone()).await.context("engine");
            stop.cancel();
            result
        }
    });
    // A failed scheduler or keep-warm controller ends the term (said at once).
    let scheduler = running.track("scheduler", {
        let stop = stop.clone();
        async move {
            if let Err(err) = scheduler.run(stop.clone()).await {
                tracing::error!(error = format!("{err:#}"), "scheduler failed");
            }
            stop.cancel();
        }
    });
    let keep_warm = running.track("keep-warm", {
        let stop = stop.clone();
        async move {
            if let Err(err) = keep_warm.run(stop.clone()).await {
                tracing::error!(error = format!("{err:#}"), "keep-warm controller failed");
            }
            stop.cancel();
        }
    });
    let trim = running.track("history trim", trim);
    let parts = async { tokio::join!(engine, scheduler, keep_warm, trim) };
    let stopped = async {
        stop.cancelled().await;
        tokio::time::sleep(TERM_STOP).await;
    };
    let (ran, (), (), ()) = tokio::select! {
        joined = parts => joined,
        () = stopped => {
            tracing::error!(
                still_running = ?running.names().clone(),
                timeout_secs = TERM_STOP.as_secs(),
                "parts of the term did not stop in time after it ended; dropping them"
            );
            return Ok(());
        }
    };
    ran
}

/// Runs terms of the engine and the scheduler while this replica holds the
/// Lease, until `stop`. With a shared store it follows the store's changes
/// (waking the term on new tasks and schedules, feeding live streams with
/// other replicas' views) and leads again whenever it wins the Lease back;
/// with a single-instance store, a Lease taken by another instance ends the
/// process, and a failed renewal only ends the term.
async fn lead_while_holding(
    replicas: Replicas,
    first: Term,
    terms: TermParts,
    progress: Arc<ProgressHub>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Replicas {
        leadership,
        changes,
    } = replicas;
    let shared = changes.is_some();
    let handles: TermHandles = Arc::default();
    let watch = tokio::spawn({
        let (leadership, stop) = (leadership.clone(), stop.clone());
        async move { leadership.watch(stop).await }
    });
    let follow = changes.map(|changes| {
        let (handles, stop, webhooks) = (handles.clone(), stop.clone(), terms.webhooks.clone());
        let keep_warm = terms.keep_warm.clone();
        tokio::spawn(changes.run(stop, move |change| {
            on_change(&handles, &keep_warm, &progress, &webhooks, change)
        }))
    });
    let mut first = Some(first);
    let result = loop {
        let Some(term) = leadership.acquire(&stop).await else {
            break Ok(());
        };
        let next = first.take().unwrap_or_else(|| terms.term());
        *handles.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((next.0.handle(), next.1.handle()));
        let run = run_term(next, terms.trim_history(term.clone()), term.clone());
        tokio::pin!(run);
        let end = tokio::select! {
            ran = &mut run => {
                // The engine stopped by itself: a failure, or the term ended under it.
                leadership.end_term();
                if stop.is_cancelled() { TermEnd::Stopped } else {
                    if let Err(err) = ran { break Err(err) }
                    TermEnd::Lost
                }
            }
            end = leadership.hold(&stop) => {
                term.cancel();
                if end == TermEnd::Stopped {
                    // Fenced before release: no create can follow the release.
                    leadership.release().await;
                }
                if let Err(err) = run.await {
                    tracing::error!(error = format!("{err:#}"), "engine failed while its term ended");
                }
                end
            }
        };
        *handles.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match end {
            TermEnd::Stopped => break Ok(()),
            TermEnd::Lost if !shared => {
                // A single-instance store cannot hand over: stop only if another
                // instance really holds the Lease now. A renewal that failed (API
                // server slow or restarting) ends the term, fenced, and this
                // instance leads again once it wins the Lease back.
                match leadership.other_holder().await {
                    Ok(Some(holder)) => {
                        break Err(anyhow::anyhow!(single_instance_message(
                            &holder,
                            leadership.namespace()
                        )))
                    }
                    Ok(None) => {
                        tracing::warn!("leader Lease renewal failed; leading again once it is won back")
                    }
                    Err(err) => tracing::warn!(
                        error = format!("{err:#}"),
                        "leader Lease unreadable after a failed renewal; leading again once it is won back"
                    ),
                }
            }
            TermEnd::Lost => {}
        }
    };
    leadership.release().await;
    stop.cancel();
    let _ = watch.await;
    if let Some(follow) = follow {
        let _ = follow.await;
    }
    result
}

/// Applies one change published through the shared store.
fn on_change(
    handles: &TermHandles,
    keep_warm: &KeepWarmHandle,
    progress: &ProgressHub,
    webhooks: &Arc<Webhooks>,
    change: Change,
) {
    let handles = handles.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match change {
        Change::Task(_) => {
            if let Some((engine, _)) = handles {
                engine.wake();
                // A task cancelled on a follower before it started owes its
                // webhook, which only the leader sends.
                webhooks.resume_owed_soon();
            }
        }
        Change::Schedule(_) => {
            if let Some((_, scheduler)) = handles {
                scheduler.wake();
            }
        }
        // The keep-warm handle is shared by every term; a wake while no
        // term runs only makes the next term's first pass come sooner.
        Change::Policy(_) => keep_warm.wake(),
        Change::View(task) => progress.publish(&task),
        Change::Resubscribed => {
            if let Some((engine, scheduler)) = handles {
                engine.wake();
                scheduler.wake();
            }
            keep_warm.wake();
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
    use crate::cluster::fake::FakeCluster;
    use crate::testing::engine_config;

    /// The service on a memory store and a fake cluster, on a free port.
    async fn memory_app() -> Application {
        Application::build_with(
            Arc::new(MemoryStore::new()),
            Arc::new(FakeCluster::new()),
            Arc::new(SystemClock),
            Arc::new(Metrics::new()),
            engine_config(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn later_terms_hear_the_wakes_the_api_sends() {
        let app = memory_app().await;
        let (api_engine, api_scheduler) = app.terms.wake.clone().unwrap();
        assert!(api_engine.wakes_the_same(&app.term.0.handle()));
        let (engine, scheduler, _) = app.terms.term();
        assert!(api_engine.wakes_the_same(&engine.handle()));
        assert!(api_scheduler.wakes_the_same(&scheduler.handle()));
    }

    #[tokio::test]
    async fn serves_on_a_free_port_until_cancelled() {
        let app = memory_app().await;
        let port = app.port();
        assert_ne!(port, 0);
        assert_eq!(app.local_addr().port(), port);

        let shutdown = CancellationToken::new();
        let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));

        let url = format!("http://127.0.0.1:{port}/healthz");
        let health: serde_json::Value = prewarm_cli::tls::http_client_builder()
            .build()
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["status"], "healthy");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("did not stop after cancel")
            .unwrap()
            .unwrap();
        assert!(
            prewarm_cli::tls::http_client_builder()
                .build()
                .unwrap()
                .get(&url)
                .send()
                .await
                .is_err(),
            "still accepting after stop"
        );
    }
}
