//! Helpers for integration tests (this crate's and other crates'): a real local
//! control plane ([`LocalCluster`]) and a running `kube-sim` process ([`Sim`]).
//!
//! ```no_run
//! # async fn demo() {
//! use kube_sim::testing::{LocalCluster, Sim};
//! let cluster = LocalCluster::shared(); // one control plane per test binary
//! let sim = Sim::start(cluster.kubeconfig_path(), "nodes: [{namePrefix: mytest-, count: 3}]");
//! let client = cluster.kube_client().await;
//! // ... create Jobs pinned to mytest-0 and watch them complete ...
//! drop(sim); // SIGTERM; kube-sim deletes its nodes (--cleanup)
//! # }
//! ```
//!
//! Requirements: `scripts/local-cluster.sh` can start (its first run builds the
//! Kubernetes binaries), `kubectl` is not needed by these helpers. [`Sim`] runs
//! the `kube-sim` binary found by [`binary_path`]: `$KUBE_SIM_BIN`, else
//! `<target>/<profile>/kube-sim` next to the test executable, which it first
//! brings up to date with `cargo build -p kube-sim` (once per test process), so
//! other crates need no build step of their own.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use crate::error::{Error, Result};

/// How long [`Sim::start`] waits for `ready: N nodes`.
pub const SIM_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The repository root (`crates/kube-sim/../..`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// A control plane (etcd, kube-apiserver, kube-controller-manager) started by
/// `scripts/local-cluster.sh up` in its own state directory, torn down with
/// `down` on drop — and, should the test process die first, by a watchdog
/// process that waits for it to exit.
#[derive(Debug)]
pub struct LocalCluster {
    state_dir: PathBuf,
    kubeconfig: PathBuf,
}

static SHARED: OnceLock<LocalCluster> = OnceLock::new();

impl LocalCluster {
    /// Starts a fresh, isolated control plane. Panics with the script's output if it fails.
    pub fn up() -> LocalCluster {
        Self::try_up().unwrap_or_else(|e| panic!("local cluster: {e}"))
    }

    /// One control plane for the whole test process, started on first use.
    /// Statics never drop, so teardown is left to the watchdog that runs
    /// `down` once this process has exited.
    pub fn shared() -> &'static LocalCluster {
        SHARED.get_or_init(LocalCluster::up)
    }

    /// Like [`LocalCluster::up`], returning errors instead of panicking.
    pub fn try_up() -> Result<LocalCluster> {
        let state = tempfile::Builder::new()
            .prefix("kube-sim-cluster-")
            .tempdir()
            .map_err(|e| Error::io("creating the cluster state dir", e))?
            .keep();
        let script = repo_root().join("scripts/local-cluster.sh");
        // Watchdog first: it also covers a crash between here and a successful `up`.
        spawn_watchdog(&script, &state)?;
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .env("LOCAL_CLUSTER_DIR", &state)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("running {}", script.display()), e))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("KUBECONFIG="))
            .map(PathBuf::from);
        match kubeconfig {
            Some(k) if out.status.success() => Ok(LocalCluster {
                state_dir: state,
                kubeconfig: k,
            }),
            _ => {
                run_down(&script, &state);
                Err(Error::Process(format!(
                    "`local-cluster.sh up` failed ({}):\n{}\n{}",
                    out.status,
                    stdout,
                    String::from_utf8_lossy(&out.stderr)
                )))
            }
        }
    }

    /// Path of the admin kubeconfig (bearer token, `insecure-skip-tls-verify`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The `LOCAL_CLUSTER_DIR` of this control plane (logs are in `logs/`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Stops only the API server (etcd and the controller-manager keep running),
    /// to test how clients behave during an outage. Panics if the script fails.
    pub fn stop_apiserver(&self) {
        self.script("stop-apiserver");
    }

    /// Starts the API server again after [`LocalCluster::stop_apiserver`] (same
    /// port, certificates and tokens) and waits until it is ready.
    pub fn start_apiserver(&self) {
        self.script("start-apiserver");
    }

    fn script(&self, command: &str) {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/local-cluster.sh"))
            .arg(command)
            .env("LOCAL_CLUSTER_DIR", &self.state_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running local-cluster.sh {command}: {e}"));
        assert!(
            out.status.success(),
            "local-cluster.sh {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A kube client for this control plane.
    pub async fn kube_client(&self) -> kube::Client {
        crate::sim::client_from_kubeconfig(&self.kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("kube client for {}: {e}", self.kubeconfig.display()))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        run_down(
            &repo_root().join("scripts/local-cluster.sh"),
            &self.state_dir,
        );
    }
}

fn run_down(script: &Path, state: &Path) {
    let _ = Command::new("bash")
        .arg(script)
        .arg("down")
        .env("LOCAL_CLUSTER_DIR", state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A shell in its own process group (so Ctrl-C of the test run does not reach
/// it) that polls this process every second and runs `down` once it is gone.
/// `down` on an already removed state dir is a no-op.
fn spawn_watchdog(script: &Path, state: &Path) -> Result<()> {
    let pid = std::process::id();
    Command::new("sh")
        .arg("-c")
        .arg(r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done; LOCAL_CLUSTER_DIR="$2" exec bash "$1" down"#)
        .arg(pid.to_string())
        .arg(script)
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|e| Error::io("spawning the cluster watchdog", e))
}

/// A running `kube-sim --cleanup` process; SIGTERM and wait on drop.
#[derive(Debug)]
pub struct Sim {
    child: Child,
    nodes: usize,
    dir: tempfile::TempDir,
}

impl Sim {
    /// Writes `scenario_yaml` to a temp file, starts `kube-sim --scenario … --cleanup`
    /// against `kubeconfig` and waits until it prints `ready: N nodes`.
    /// Panics (with kube-sim's log) if it does not become ready.
    pub fn start(kubeconfig: &Path, scenario_yaml: &str) -> Sim {
        Self::try_start(kubeconfig, scenario_yaml).unwrap_or_else(|e| panic!("kube-sim: {e}"))
    }

    /// Like [`Sim::start`], returning errors instead of panicking.
    pub fn try_start(kubeconfig: &Path, scenario_yaml: &str) -> Result<Sim> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temp dir", e))?;
        let scenario = dir.path().join("scenario.yaml");
        std::fs::write(&scenario, scenario_yaml)
            .map_err(|e| Error::io("writing the scenario", e))?;
        let log_path = dir.path().join("kube-sim.log");
        let log = std::fs::File::create(&log_path).map_err(|e| Error::io("creating the log", e))?;
        let bin = binary_path()?;
        let mut child = Command::new(&bin)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--scenario")
            .arg(&scenario)
            .arg("--cleanup")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", bin.display()), e))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            // Reads to EOF, so kube-sim never blocks on a full pipe.
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(n) = line
                    .trim()
                    .strip_prefix("ready: ")
                    .and_then(|r| r.strip_suffix(" nodes"))
                {
                    let _ = tx.send(n.parse::<usize>().unwrap_or(0));
                }
                line.clear();
            }
        });
        let mut sim = Sim {
            child,
            nodes: 0,
            dir,
        };
        match rx.recv_timeout(SIM_READY_TIMEOUT) {
            Ok(n) => {
                sim.nodes = n;
                Ok(sim)
            }
            Err(_) => Err(Error::Process(format!(
                "kube-sim did not print `ready` within {SIM_READY_TIMEOUT:?}; log:\n{}",
                sim.log()
            ))),
        }
    }

    /// Number of nodes kube-sim registered.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// kube-sim's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kube-sim's stderr so far (its tracing log), for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kube-sim.log")).unwrap_or_default()
    }

    /// The pulls the limited registry `host` (scenario `registries`) answered
    /// so far, oldest first, from the log's `registry pull` / `registry
    /// refused pull` lines: what the registry saw.
    pub fn registry_pulls(&self, host: &str) -> Vec<RegistryPull> {
        let mut pulls: Vec<RegistryPull> = self
            .log()
            .lines()
            .map(strip_ansi)
            .filter(|line| line.contains(&format!("registry={host} ")))
            .filter_map(|line| {
                let served = if line.contains("registry refused pull") {
                    false
                } else if line.contains("registry pull") {
                    true
                } else {
                    return None;
                };
                let at_ms = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("at_ms="))?
                    .parse()
                    .ok()?;
                Some(RegistryPull { at_ms, served })
            })
            .collect();
        pulls.sort_by_key(|p| p.at_ms);
        pulls
    }
}

/// One pull a limited kube-sim registry answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryPull {
    /// When, in Unix milliseconds.
    pub at_ms: i64,
    /// Served (true) or refused with `429 toomanyrequests` (false).
    pub served: bool,
}

/// Most served pulls that began within any `window` (the registry's own measure).
pub fn most_served_in_any(pulls: &[RegistryPull], window: Duration) -> usize {
    let window_ms = window.as_millis() as i64;
    let served: Vec<i64> = pulls.iter().filter(|p| p.served).map(|p| p.at_ms).collect();
    (0..served.len())
        .map(|i| served[i..].partition_point(|&t| t < served[i] + window_ms))
        .max()
        .unwrap_or(0)
}

/// `line` without ANSI colour sequences.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..600 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the `kube-sim` binary is: `$KUBE_SIM_BIN` if set; else `kube-sim` in
/// the profile directory the running test executable lives under
/// (`target/debug/deps/x-hash` → `target/debug/kube-sim`). When running under
/// cargo (`$CARGO` is set), `cargo build -p kube-sim` for that profile runs
/// first, once per process, so the binary is never missing or stale (cargo
/// does not hold its build lock while tests run; a no-op build takes ~1 s).
pub fn binary_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KUBE_SIM_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("locating the test executable", e))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("kube-sim");
    static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| build_binary(&dir));
    match built {
        _ if bin.exists() => {
            if let Err(e) = built {
                eprintln!("kube-sim: using the existing {} ({e})", bin.display());
            }
            Ok(bin)
        }
        Err(e) => Err(Error::Process(format!(
            "kube-sim binary not found at {}: {e}",
            bin.display()
        ))),
        Ok(()) => Err(Error::Process(format!(
            "`cargo build -p kube-sim` did not produce {}",
            bin.display()
        ))),
    }
}

/// Builds the binary into `profile_dir` (`<target>/debug` or `<target>/release`).
fn build_binary(profile_dir: &Path) -> std::result::Result<(), String> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Err("not running under cargo ($CARGO unset), not building".into());
    };
    let profile = profile_dir
        .file_name()
        .and_then(|p| p.to_str())
        .unwrap_or("");
    let Some(target_dir) = profile_dir.parent() else {
        return Err(format!("no target dir above {}", profile_dir.display()));
    };
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "kube-sim", "--bin", "kube-sim"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(repo_root());
    // The test process inherits per-package variables (CARGO_MANIFEST_DIR, …)
    // that build scripts such as ring's track; passing them on would make every
    // nested build look dirty and rebuild half the dependency tree.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let per_package = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if per_package {
            cmd.env_remove(key);
        }
    }
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => return Err(format!("unknown profile directory {other:?}, not building")),
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`cargo build -p kube-sim` failed ({s})")),
        Err(e) => Err(format!("running cargo: {e}")),
    }
}
