//! The prewarm client: `task`, `schedule`, `keep-warm`, `coverage` and `nodes` commands over the HTTP API,
//! live progress from the task's event stream, shell completions.
//!
//! The commands are a clap `Subcommand` ([`ClientCommand`]) so that they can
//! live in two binaries: the service's `prewarm` (next to `prewarm serve`)
//! and the light `kubectl-prewarm` plugin of this crate, which `kubectl
//! prewarm …` runs.
//!
//! Exit codes: 0 success or task completed, 1 task failed or the server
//! refused the request, 2 usage error, 3 task cancelled, 4 server
//! unreachable or token rejected.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub mod client;
pub mod coverage;
pub mod follow;
pub mod keep_warm;
pub mod nodes;
pub mod output;
pub mod schedule;
pub mod task;
pub mod tls;

pub use client::{ApiClient, CliError};
pub use output::OutputFormat;

/// Server used when neither `--server` nor `PREWARM_SERVER` is set.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Where the server is and how to print; accepted after any subcommand.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Base URL of the prewarm API.
    #[arg(long, env = "PREWARM_SERVER", default_value = DEFAULT_SERVER, global = true)]
    pub server: String,

    /// Bearer token (sent as `Authorization: Bearer`).
    #[arg(long, env = "PREWARM_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// PEM bundle of the certificate authorities an `https://` server's
    /// certificate must chain to (instead of the system's).
    #[arg(long, env = "PREWARM_CA_CERT", global = true, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    pub output: OutputFormat,
}

impl Connection {
    /// A client of the server these flags name.
    pub fn client(&self) -> Result<ApiClient, CliError> {
        ApiClient::with_ca_cert(&self.server, self.token.clone(), self.ca_cert.as_deref())
    }
}

/// The client commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Create, inspect, follow and cancel prewarm tasks.
    Task(task::TaskArgs),
    /// Manage scheduled (cron) prewarm tasks and their executions.
    Schedule(schedule::ScheduleArgs),
    /// Keep images on every matching node, including nodes that join later.
    KeepWarm(keep_warm::KeepWarmArgs),
    /// Show how many matching nodes hold IMAGE…; with --min, exit 1 when below (a CI gate).
    Coverage(coverage::CoverageArgs),
    /// Show the nodes' learned pull speeds, slowest first (the nodes tasks start first).
    Nodes(nodes::NodesArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The `kubectl-prewarm` command line: the client commands at the top level.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kubectl-prewarm",
    version,
    about = "Pre-pull container images onto Kubernetes nodes through the prewarm service"
)]
pub struct PluginCli {
    /// What to do.
    #[command(subcommand)]
    pub command: ClientCommand,
}

/// Runs a client command. `cli` builds the whole command line of the binary
/// (for completion scripts), `bin` is its name.
pub fn run(command: ClientCommand, cli: impl FnOnce() -> clap::Command, bin: &str) -> ExitCode {
    if let ClientCommand::Completions { shell } = command {
        let mut cmd = cli();
        clap_complete::generate(shell, &mut cmd, bin, &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the runtime: {err}");
            return ExitCode::from(client::EXIT_FAILED);
        }
    };
    let result = runtime.block_on(async {
        match command {
            ClientCommand::Task(args) => task::run(args).await,
            ClientCommand::Schedule(args) => schedule::run(args).await,
            ClientCommand::KeepWarm(args) => keep_warm::run(args).await,
            ClientCommand::Coverage(args) => coverage::run(args).await,
            ClientCommand::Nodes(args) => nodes::run(args).await,
            ClientCommand::Completions { .. } => Ok(client::EXIT_OK),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Parses `k=v` (a node selector entry).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// `--selector` pairs as a `nodeSelector` JSON object.
pub(crate) fn selector_json(selectors: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Object(
        selectors
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

/// Percent-encodes one path segment (ids come from users).
pub(crate) fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<PluginCli, clap::Error> {
        PluginCli::try_parse_from(std::iter::once("kubectl-prewarm").chain(args.iter().copied()))
    }

    #[test]
    fn connection_flags_go_anywhere_after_the_group() {
        let cli = parse(&[
            "task",
            "--server",
            "http://x:1",
            "list",
            "-o",
            "json",
            "--token",
            "t",
        ])
        .unwrap();
        let ClientCommand::Task(args) = cli.command else {
            panic!("not a task command")
        };
        assert_eq!(args.connection.server, "http://x:1");
        assert_eq!(args.connection.output, OutputFormat::Json);
        assert_eq!(args.connection.token.as_deref(), Some("t"));
    }

    #[test]
    fn create_needs_an_image_and_checks_selectors() {
        assert!(parse(&["task", "create"]).is_err());
        assert!(parse(&["task", "create", "nginx", "--selector", "novalue"]).is_err());
        assert!(parse(&["task", "create", "nginx", "--priority", "-5"]).is_ok());
        assert!(parse(&["task", "create", "nginx", "--pull-policy", "Sometimes"]).is_err());
    }

    #[test]
    fn key_values_and_segments() {
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".to_owned(), "b=c".to_owned())
        );
        assert!(parse_key_value("=x").is_err());
        assert_eq!(segment("task-1/../x"), "task-1%2F..%2Fx");
    }
}
