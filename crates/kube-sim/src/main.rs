//! `kube-sim`: register simulated nodes on a real API server and play their kubelets.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use kube_sim::scenario::Scenario;
use kube_sim::sim::{self, SimConfig};

/// Simulated kubelets against a real kube-apiserver.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Cli {
    /// Kubeconfig of the API server to register nodes with.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Register N default nodes named `<name-prefix>0 …`.
    #[arg(
        long,
        conflicts_with = "scenario",
        required_unless_present = "scenario"
    )]
    nodes: Option<u32>,
    /// Name prefix for `--nodes` (lets several simulators share one API server).
    #[arg(long, default_value = "node-", conflicts_with = "scenario")]
    name_prefix: String,
    /// Scenario YAML file (nodes, image rules, preloaded images, events).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Delete the registered nodes on SIGINT/SIGTERM.
    #[arg(long)]
    cleanup: bool,
    /// Node registrations in flight at once.
    #[arg(long, default_value_t = 64)]
    create_concurrency: usize,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("kube-sim: error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube_client::client::tls=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let scenario = match (&cli.scenario, cli.nodes) {
        (Some(path), _) => {
            let yaml = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Scenario::parse(&yaml).with_context(|| format!("scenario {}", path.display()))?
        }
        (None, Some(n)) => Scenario::uniform(n, &cli.name_prefix),
        (None, None) => unreachable!("clap requires --nodes or --scenario"),
    };
    let client = sim::client_from_kubeconfig(&cli.kubeconfig).await?;
    let config = SimConfig {
        scenario,
        cleanup: cli.cleanup,
        create_concurrency: cli.create_concurrency,
    };
    sim::run(client, config, shutdown_signal(), |n| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready: {n} nodes");
        let _ = out.flush();
        tracing::info!(nodes = n, "all nodes registered");
    })
    .await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
