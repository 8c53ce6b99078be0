//! Command line and environment: one clap struct for the `prewarm` binary.
//!
//! Every flag of `prewarm serve` can also come from an environment variable
//! (`PREWARM_*`, plus the names the original design used: `STORAGE_TYPE`,
//! `LOG_LEVEL`, `KUBECONFIG`). A flag on the command line wins over its variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cluster::PullMode;
use crate::domain::pacing::HostRate;
use crate::domain::selection::DiskMargin;
use crate::engine::EngineConfig;
use crate::history::HistoryLimits;
use crate::http::client_addr::TrustedProxies;
use crate::http::rate_limit::Limit;
use crate::http::serve::ConnectionLimits;
use crate::http::tls::TlsFiles;
use crate::startup::Serving;
use crate::webhook::WebhookConfig;

/// Image of the pull pods' helper init container. The service's own image
/// carries the static no-op binary at `/usr/local/bin/prewarm-noop`, which the
/// helper copies into an `emptyDir` for the image containers to execute.
pub const DEFAULT_HELPER_IMAGE: &str = "ghcr.io/prewarm/prewarm:0.1.0";

/// The `prewarm` binary's command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "prewarm",
    version,
    about = "Pre-pulls container images onto Kubernetes nodes"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of `prewarm`.
#[derive(Debug, Clone, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Run the HTTP API and the engine until SIGTERM/SIGINT.
    Serve(ServeConfig),
    /// Print the version and exit.
    Version,
    /// Client commands (`task …`, `schedule …`, `completions …`) against a running service.
    #[command(flatten)]
    Client(Box<prewarm_cli::ClientCommand>),
    /// Token helpers for the token file.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `prewarm token …`
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Read a token from stdin and print the `sha256:<hex>` digest the token file stores.
    Hash,
}

/// A secret setting whose value never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            Err("must not be empty".to_owned())
        } else {
            Ok(Secret(s.to_owned()))
        }
    }
}

/// Where tasks are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// A SQLite file; history survives restarts.
    Sqlite,
    /// In memory; everything is lost on exit.
    Memory,
    /// A shared Redis: several replicas, one engine (the Lease holder).
    Redis,
}

impl StoreKind {
    /// Whether several replicas may share this store.
    pub fn is_shared(self) -> bool {
        self == StoreKind::Redis
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Settings of `prewarm serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address the HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "PREWARM_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Kubeconfig file (one path); unset: $KUBECONFIG, ~/.kube/config, then in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace of the pull Jobs (created if missing).
    #[arg(long, env = "PREWARM_NAMESPACE", default_value = "prewarm")]
    pub namespace: String,

    /// Task storage backend.
    #[arg(
        long = "store",
        env = "STORAGE_TYPE",
        value_enum,
        ignore_case = true,
        default_value = "sqlite"
    )]
    pub store: StoreKind,

    /// SQLite database file (with `--store sqlite`).
    #[arg(long, env = "PREWARM_DATABASE", default_value = "./prewarm.db")]
    pub database: PathBuf,

    /// Redis URL (with `--store redis`): `redis://`, `rediss://` (TLS) or
    /// `unix://`; a password may be given in it.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: Secret,

    /// Redis password, when the URL carries none.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<Secret>,

    /// Prefix of every Redis key and channel (two installations may share one Redis).
    #[arg(long, env = "PREWARM_REDIS_PREFIX", default_value = "prewarm:")]
    pub redis_prefix: String,

    /// Name of the Lease whose holder runs the engine, in `--namespace`.
    #[arg(long, env = "PREWARM_LEASE_NAME", default_value = "prewarm-leader")]
    pub lease_name: String,

    /// Seconds a Lease stays valid after its last renewal.
    #[arg(long, env = "PREWARM_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_duration: u64,

    /// Seconds between renewals of the Lease by its holder (less than the duration).
    #[arg(long, env = "PREWARM_LEASE_RENEW", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub lease_renew: u64,

    /// This replica's name in the Lease and in `/api/v1/whoami`; unset: the
    /// pod name (`POD_NAME`, else the host name) plus a random suffix.
    #[arg(long, env = "PREWARM_REPLICA_NAME")]
    pub replica_name: Option<String>,

    /// Image of the pull pods' helper init container.
    #[arg(long, env = "PREWARM_HELPER_IMAGE", default_value = DEFAULT_HELPER_IMAGE)]
    pub helper_image: String,

    /// What pulls the images on a node: `pods` creates each pull Pod
    /// directly; `jobs` creates a Job per node and lets the controller-manager
    /// make its Pod (paced by the controller-manager's client QPS; for
    /// clusters whose policies admit only Jobs). The RBAC differs: see
    /// docs/operations.md.
    #[arg(
        long,
        env = "PREWARM_PULL_MODE",
        value_enum,
        ignore_case = true,
        default_value_t = PullMode::default()
    )]
    pub pull_mode: PullMode,

    /// Most nodes pulling at once across all tasks.
    #[arg(
        long,
        env = "PREWARM_MAX_CONCURRENT_NODES",
        default_value_t = 500,
        value_parser = parse_at_least_one
    )]
    pub max_concurrent_nodes: usize,

    /// Seconds a node may take to pull its images before it fails with `Timeout`.
    #[arg(
        long,
        env = "PREWARM_PULL_TIMEOUT",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub pull_timeout: u64,

    /// Room kept free on a node beyond the images a task pulls there, as a
    /// percentage of their sizes (`10%`): a node whose allocatable
    /// ephemeral-storage minus its images has less is skipped (`InsufficientDisk`).
    #[arg(long, env = "PREWARM_DISK_MARGIN", default_value = "10%")]
    pub disk_margin: DiskMargin,
    /// Pull rate of a registry host, `HOST=N/DURATION` (e.g. `docker.io=100/6h`):
    /// at most N needed (node, image) pulls begin in any DURATION. Repeatable
    /// (comma-separated in the variable); hosts not listed are not paced.
    #[arg(
        long = "registry-pull-rate",
        env = "PREWARM_REGISTRY_PULL_RATE",
        value_name = "HOST=N/DURATION",
        value_delimiter = ','
    )]
    pub registry_pull_rates: Vec<HostRate>,

    /// Log filter, an EnvFilter directive (`info`, `prewarm=debug,kube=warn`, ...).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = parse_log_filter)]
    pub log_level: String,

    /// Log line format.
    #[arg(
        long,
        env = "PREWARM_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Bearer tokens: `<name> <role> sha256:<hex>` per line (roles admin,
    /// operator, viewer). Reloaded on SIGHUP and on change. Unset: no auth.
    #[arg(long, env = "PREWARM_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// Append audit lines (JSON) to this file; unset: audit lines go to stdout.
    #[arg(long, env = "PREWARM_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,

    /// Requests per second each caller may make on average (0 = no limit).
    #[arg(long, env = "PREWARM_RATE_LIMIT_RPS", default_value_t = 50.0, value_parser = parse_rate)]
    pub rate_limit_rps: f64,

    /// Requests each caller may make at once.
    #[arg(long, env = "PREWARM_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,

    /// Separate rate for writes (POST, PUT, DELETE); unset: `--rate-limit-rps`.
    #[arg(long, env = "PREWARM_RATE_LIMIT_WRITE_RPS", value_parser = parse_rate)]
    pub rate_limit_write_rps: Option<f64>,

    /// Separate burst for writes; unset: `--rate-limit-burst`.
    #[arg(long, env = "PREWARM_RATE_LIMIT_WRITE_BURST")]
    pub rate_limit_write_burst: Option<u32>,

    /// HMAC-SHA256 key signing webhook bodies (`X-Prewarm-Signature`).
    #[arg(long, env = "PREWARM_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// Allow webhooks to private, loopback and link-local addresses.
    #[arg(long, env = "PREWARM_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,

    /// Seconds each webhook attempt may take.
    #[arg(long, env = "PREWARM_WEBHOOK_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout: u64,

    /// Seconds a client has to send a complete request header (also the
    /// longest a kept-alive HTTP/1.1 connection waits for its next request).
    #[arg(long, env = "PREWARM_HEADER_READ_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout: u64,

    /// Seconds without a byte in either direction after which a connection is closed.
    #[arg(long, env = "PREWARM_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub idle_timeout: u64,

    /// Most client connections open at once; further ones are closed at once.
    #[arg(long, env = "PREWARM_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = parse_at_least_one)]
    pub max_connections: usize,

    /// Seconds an API request may take before it is answered 408.
    #[arg(long, env = "PREWARM_REQUEST_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: u64,

    /// PEM certificate chain to serve HTTPS with (needs `--tls-key`);
    /// reloaded when the file changes. Unset: plain HTTP.
    #[arg(
        long,
        env = "PREWARM_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(
        long,
        env = "PREWARM_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,

    /// Proxies (`CIDR,…` or addresses) whose `X-Forwarded-For` names the
    /// client: the rightmost hop that is not one of them is the client's
    /// address for rate limits and the audit log. Unset: the TCP peer.
    #[arg(long, env = "PREWARM_TRUSTED_PROXIES", value_parser = parse_trusted_proxies, default_value = "")]
    pub trusted_proxies: TrustedProxies,

    /// Webhook attempts in all; retries wait 1 s, 2 s, 4 s, ...
    #[arg(long, env = "PREWARM_WEBHOOK_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub webhook_attempts: u32,

    /// How long ended tasks and schedule executions are kept, counted from
    /// when they ended (`30d`, `12h`, `90m`); older ones are deleted (tasks
    /// with their node results). A node gone from the cluster this long
    /// loses its learned pull speed.
    #[arg(long, env = "PREWARM_RETENTION", default_value = "30d", value_parser = parse_retention)]
    pub retention: Duration,

    /// Most tasks kept, and most executions per scheduled task; beyond it the
    /// oldest ended ones are deleted.
    #[arg(long, env = "PREWARM_MAX_TASKS", default_value_t = crate::history::DEFAULT_MAX_TASKS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tasks: u64,

    /// For tests: a file holding whole seconds (signed) added to the
    /// service's wall clock (timestamps, cron fires), followed while it runs.
    /// Monotonic time (timeouts, intervals, backoff) is untouched, as in a
    /// real step of the machine's clock.
    #[arg(long, env = "PREWARM_CLOCK_OFFSET_FILE", hide = true)]
    pub clock_offset_file: Option<PathBuf>,
}

impl ServeConfig {
    /// The pull timeout as a duration.
    pub fn pull_timeout(&self) -> Duration {
        Duration::from_secs(self.pull_timeout)
    }

    /// The engine's share of the settings.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            namespace: self.namespace.clone(),
            helper_image: self.helper_image.clone(),
            max_concurrent_nodes: self.max_concurrent_nodes,
            pull_timeout: self.pull_timeout(),
            disk_margin: self.disk_margin,
            registry_pull_rates: self.registry_pull_rates.clone(),
            node_retention: self.retention,
        }
    }
}

impl ServeConfig {
    /// The read and write rate limits.
    pub fn rate_limits(&self) -> (Limit, Limit) {
        let reads = Limit {
            rps: self.rate_limit_rps,
            burst: self.rate_limit_burst,
        };
        let writes = Limit {
            rps: self.rate_limit_write_rps.unwrap_or(reads.rps),
            burst: self.rate_limit_write_burst.unwrap_or(reads.burst),
        };
        (reads, writes)
    }

    /// Connection timeouts, the connection cap and the request timeout.
    pub fn serving(&self) -> Serving {
        Serving {
            limits: ConnectionLimits {
                header_read_timeout: Duration::from_secs(self.header_read_timeout),
                idle_timeout: Duration::from_secs(self.idle_timeout),
                max_connections: self.max_connections,
            },
            request_timeout: Duration::from_secs(self.request_timeout),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
        }
    }

    /// How much ended history to keep.
    pub fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            retention: self.retention,
            max_tasks: self.max_tasks,
        }
    }

    /// The webhook sender's settings.
    pub fn webhook_config(&self) -> WebhookConfig {
        WebhookConfig {
            secret: self.webhook_secret.as_ref().map(|s| s.0.clone()),
            allow_private: self.webhook_allow_private,
            timeout: Duration::from_secs(self.webhook_timeout),
            attempts: self.webhook_attempts,
            ..WebhookConfig::default()
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "expected a number of requests per second >= 0, got {s:?}"
        )),
    }
}

fn parse_retention(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s.trim()) {
        Ok(d) if d >= Duration::from_secs(60) => Ok(d),
        Ok(_) => Err(format!("expected at least one minute, got {s:?}")),
        Err(e) => Err(format!(
            "expected a duration such as 30d, 12h or 90m, got {s:?}: {e}"
        )),
    }
}

fn parse_trusted_proxies(s: &str) -> Result<TrustedProxies, String> {
    TrustedProxies::parse(s)
}

fn parse_at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got {s:?}")),
    }
}

fn parse_log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("invalid log filter {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Every variable the config reads; tests that touch the environment hold `ENV`.
    const VARS: [&str; 10] = [
        "PREWARM_LISTEN",
        "KUBECONFIG",
        "PREWARM_NAMESPACE",
        "STORAGE_TYPE",
        "PREWARM_DATABASE",
        "PREWARM_HELPER_IMAGE",
        "PREWARM_MAX_CONCURRENT_NODES",
        "PREWARM_PULL_TIMEOUT",
        "LOG_LEVEL",
        "PREWARM_LOG_FORMAT",
    ];
    static ENV: Mutex<()> = Mutex::new(());

    fn with_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
        let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let saved: Vec<_> = VARS.iter().map(|k| (*k, std::env::var_os(k))).collect();
        for k in VARS {
            std::env::remove_var(k);
        }
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let out = f();
        for (k, v) in saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
        out
    }

    fn serve(args: &[&str]) -> Result<ServeConfig, clap::Error> {
        let argv = ["prewarm", "serve"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(cfg) => Ok(cfg),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults_without_flags_or_env() {
        let cfg = with_env(&[], || serve(&[])).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(cfg.kubeconfig, None);
        assert_eq!(cfg.namespace, "prewarm");
        assert_eq!(cfg.store, StoreKind::Sqlite);
        assert_eq!(cfg.database, PathBuf::from("./prewarm.db"));
        assert_eq!(cfg.helper_image, DEFAULT_HELPER_IMAGE);
        assert_eq!(cfg.max_concurrent_nodes, 500);
        assert_eq!(cfg.pull_mode, PullMode::Pods);
        assert_eq!(cfg.pull_timeout(), Duration::from_secs(600));
        assert_eq!(cfg.disk_margin, DiskMargin::default());
        assert_eq!(cfg.log_level, "info");
        assert_eq!(cfg.log_format, LogFormat::Text);
    }

    #[test]
    fn environment_variables_set_every_flag() {
        let cfg = with_env(
            &[
                ("PREWARM_LISTEN", "127.0.0.1:0"),
                ("KUBECONFIG", "/etc/kube/config"),
                ("PREWARM_NAMESPACE", "warm"),
                ("STORAGE_TYPE", "memory"),
                ("PREWARM_DATABASE", "/var/lib/prewarm/tasks.db"),
                ("PREWARM_HELPER_IMAGE", "registry.local/prewarm:dev"),
                ("PREWARM_MAX_CONCURRENT_NODES", "7"),
                ("PREWARM_PULL_MODE", "Jobs"),
                ("PREWARM_PULL_TIMEOUT", "30"),
                ("PREWARM_DISK_MARGIN", "25%"),
                ("LOG_LEVEL", "prewarm=debug,kube=warn"),
                ("PREWARM_LOG_FORMAT", "json"),
            ],
            || serve(&[]),
        )
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cfg.kubeconfig, Some(PathBuf::from("/etc/kube/config")));
        assert_eq!(cfg.namespace, "warm");
        assert_eq!(cfg.store, StoreKind::Memory);
        assert_eq!(cfg.database, PathBuf::from("/var/lib/prewarm/tasks.db"));
        assert_eq!(cfg.helper_image, "registry.local/prewarm:dev");
        assert_eq!(cfg.max_concurrent_nodes, 7);
        assert_eq!(cfg.pull_mode, PullMode::Jobs);
        assert_eq!(cfg.pull_timeout(), Duration::from_secs(30));
        assert_eq!(cfg.disk_margin, DiskMargin::percent(25).unwrap());
        assert_eq!(cfg.log_level, "prewarm=debug,kube=warn");
        assert_eq!(cfg.log_format, LogFormat::Json);
    }

    #[test]
    fn flags_win_over_environment() {
        let cfg = with_env(
            &[("STORAGE_TYPE", "memory"), ("PREWARM_NAMESPACE", "env")],
            || serve(&["--store", "sqlite", "--namespace", "flag"]),
        )
        .unwrap();
        assert_eq!(cfg.store, StoreKind::Sqlite);
        assert_eq!(cfg.namespace, "flag");
    }

    #[test]
    fn storage_type_ignores_case() {
        let cfg = with_env(&[("STORAGE_TYPE", "MEMORY")], || serve(&[])).unwrap();
        assert_eq!(cfg.store, StoreKind::Memory);
    }

    #[test]
    fn bad_values_are_rejected() {
        let bad: [(&str, &str); 6] = [
            ("STORAGE_TYPE", "postgres"),
            ("PREWARM_MAX_CONCURRENT_NODES", "0"),
            ("PREWARM_PULL_TIMEOUT", "0"),
            ("PREWARM_LISTEN", "nowhere"),
            ("LOG_LEVEL", "prewarm=loud"),
            ("PREWARM_LOG_FORMAT", "xml"),
        ];
        for (k, v) in bad {
            let res = with_env(&[(k, v)], || serve(&[]));
            assert!(res.is_err(), "{k}={v} was accepted");
        }
    }

    #[test]
    fn history_limits_default_to_30_days_and_10000_tasks() {
        let cfg = with_env(&[], || serve(&[])).unwrap();
        assert_eq!(cfg.history_limits(), HistoryLimits::default());
        assert_eq!(cfg.retention, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(cfg.max_tasks, 10_000);
        let cfg = with_env(&[], || serve(&["--retention", "36h", "--max-tasks", "50"])).unwrap();
        assert_eq!(cfg.retention, Duration::from_secs(36 * 3600));
        assert_eq!(cfg.max_tasks, 50);
        for bad in [
            &["--retention", "soon"][..],
            &["--retention", "10s"],
            &["--max-tasks", "0"],
        ] {
            assert!(
                with_env(&[], || serve(bad)).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn operations_flags_parse() {
        let cfg = with_env(&[], || {
            serve(&[
                "--auth-tokens-file",
                "/etc/prewarm/tokens",
                "--rate-limit-rps",
                "2.5",
                "--rate-limit-burst",
                "5",
                "--rate-limit-write-rps",
                "0",
                "--webhook-secret",
                "s3cret",
            ])
        })
        .unwrap();
        assert_eq!(
            cfg.auth_tokens_file,
            Some(PathBuf::from("/etc/prewarm/tokens"))
        );
        let (reads, writes) = cfg.rate_limits();
        assert_eq!(reads, Limit { rps: 2.5, burst: 5 });
        assert_eq!(writes, Limit { rps: 0.0, burst: 5 });
        assert!(!writes.enabled());
        assert_eq!(cfg.webhook_config().secret.as_deref(), Some("s3cret"));
        assert!(!format!("{cfg:?}").contains("s3cret"), "secret in Debug");
        let defaults = with_env(&[], || serve(&[])).unwrap();
        assert_eq!(
            defaults.rate_limits().0,
            Limit {
                rps: 50.0,
                burst: 100
            }
        );
        assert!(with_env(&[], || serve(&["--rate-limit-rps", "-1"])).is_err());
    }

    #[test]
    fn connection_flags_parse_and_default() {
        let defaults = with_env(&[], || serve(&[])).unwrap().serving();
        assert_eq!(defaults, Serving::default());
        assert_eq!(defaults.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(defaults.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(defaults.limits.max_connections, 10_000);
        let cfg = with_env(&[], || {
            serve(&[
                "--header-read-timeout",
                "2",
                "--idle-timeout",
                "5",
                "--max-connections",
                "7",
                "--request-timeout",
                "3",
            ])
        })
        .unwrap()
        .serving();
        assert_eq!(cfg.limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(cfg.limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(cfg.limits.max_connections, 7);
        assert_eq!(cfg.request_timeout, Duration::from_secs(3));
        assert_eq!(defaults.tls, None);
        let tls = with_env(&[], || {
            serve(&["--tls-cert", "/tls/tls.crt", "--tls-key", "/tls/tls.key"])
        })
        .unwrap()
        .serving();
        assert_eq!(
            tls.tls,
            Some(TlsFiles {
                cert: "/tls/tls.crt".into(),
                key: "/tls/tls.key".into()
            })
        );
        for bad in [
            ["--max-connections", "0"],
            ["--header-read-timeout", "0"],
            ["--idle-timeout", "x"],
            ["--tls-cert", "/tls/tls.crt"],
            ["--tls-key", "/tls/tls.key"],
        ] {
            assert!(with_env(&[], || serve(&bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn client_commands_parse_next_to_serve() {
        let cli = Cli::try_parse_from(["prewarm", "task", "list", "-o", "json"]).unwrap();
        let Command::Client(command) = cli.command else {
            panic!("not a client command")
        };
        assert!(matches!(*command, prewarm_cli::ClientCommand::Task(_)));
    }

    #[test]
    fn version_subcommand_parses() {
        let cli = Cli::try_parse_from(["prewarm", "version"]).unwrap();
        assert!(matches!(cli.command, Command::Version));
    }

    #[test]
    fn engine_config_carries_the_settings() {
        let cfg = with_env(&[], || {
            serve(&["--max-concurrent-nodes", "3", "--pull-timeout", "9"])
        })
        .unwrap();
        let engine = cfg.engine_config();
        assert_eq!(engine.namespace, "prewarm");
        assert_eq!(engine.helper_image, DEFAULT_HELPER_IMAGE);
        assert_eq!(engine.max_concurrent_nodes, 3);
        assert_eq!(engine.pull_timeout, Duration::from_secs(9));
    }
}
