//! The `prewarm` binary: parse the configuration, set up logging, build the
//! service and run it until SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use prewarm::config::{Cli, Command, LogFormat, ServeConfig, TokenCommand};
use prewarm::startup::Application;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    if invoked_as_plugin() {
        let cli = prewarm_cli::PluginCli::parse();
        return prewarm_cli::run(
            cli.command,
            prewarm_cli::PluginCli::command,
            "kubectl-prewarm",
        );
    }
    match Cli::parse().command {
        Command::Client(command) => prewarm_cli::run(*command, Cli::command, "prewarm"),
        Command::Version => {
            println!("prewarm {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Token(TokenCommand::Hash) => {
            let mut token = String::new();
            if let Err(err) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut token) {
                return fail(&anyhow::Error::new(err).context("reading the token from stdin"));
            }
            let token = token.trim_end_matches(['\n', '\r']);
            if token.is_empty() {
                return fail(&anyhow::anyhow!("no token on stdin"));
            }
            println!("{}", prewarm::http::auth::token_digest(token));
            ExitCode::SUCCESS
        }
        Command::Serve(config) => {
            fix_malloc_mmap_threshold();
            init_tracing(&config);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(err) => return fail(&anyhow::Error::new(err).context("starting the runtime")),
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&err),
            }
        }
    }
}

/// Under glibc's malloc, keeps blocks of 128 KiB and more in their own
/// mappings, returned to the system when freed. By default glibc raises
/// that threshold each time such a block is freed, after which large
/// answers (a page of 100 task views, a batch of node records) are carved
/// from the heap arenas and their memory stays with the process: with
/// 10,000 stored tasks and a 5,000-node task this alone was 20 MiB more
/// resident (BENCHMARKS.md, "Allocators"). An explicit
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...` is left as set; the
/// jemalloc build and musl builds have their own allocators.
fn fix_malloc_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
    {
        const THRESHOLD: libc::c_int = 128 * 1024;
        if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("mmap_threshold")) {
            return;
        }
        // SAFETY: mallopt takes plain integers and only sets a parameter of
        // glibc's allocator, under its own lock; it is called before the
        // runtime starts any thread.
        #[allow(unsafe_code)]
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) };
        if set != 1 {
            eprintln!("could not set malloc's mmap threshold; continuing with glibc's default");
        }
    }
}

/// Whether this binary was installed (copied or linked) as `kubectl-prewarm`.
fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|name| name == "kubectl-prewarm")
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; a second one exits at once.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(error = %err, "cannot listen for signals");
            return;
        }
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if shutdown.is_cancelled() {
            tracing::warn!(signal = name, "second signal; exiting without draining");
            std::process::exit(130);
        }
        tracing::info!(signal = name, "shutting down");
        shutdown.cancel();
    }
}

fn init_tracing(config: &ServeConfig) {
    // `log_level` was checked while parsing, so this cannot fail.
    let mut filter =
        EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    // kube-rs warns on every new connection when a kubeconfig skips TLS
    // verification; say it once at start instead (unless asked for by name).
    if !config.log_level.contains("kube_client") {
        if let Ok(d) = "kube_client::client::tls=error".parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::FAILURE
}
