//! What the bench binaries share: the `prewarm` binary started on port 0,
//! figures read from its `/proc/<pid>/status`, and percentiles.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `prewarm serve` on 127.0.0.1:0 with warn-level logs, stopped with SIGTERM
/// (and waited for) when dropped, also when the bench panics.
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:<port>`, from the service's listen line.
    pub url: String,
}

impl Service {
    /// Starts it on `kubeconfig` in `namespace` (also its replica name), with
    /// the helper image the benches preload, then `args`; returns once it
    /// listens, and the rest of its stdout is drained.
    pub fn start<I, S>(kubeconfig: &Path, namespace: &str, args: I) -> Service
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_binary(&Binary::built(), kubeconfig, namespace, args)
    }

    /// [`Service::start`] with another `prewarm` binary and environment.
    pub fn start_binary<I, S>(
        binary: &Binary,
        kubeconfig: &Path,
        namespace: &str,
        args: I,
    ) -> Service
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(&binary.path)
            .envs(binary.env.iter().map(|(k, v)| (k, v)))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", namespace, "--replica-name", namespace])
            .args(["--helper-image", "prewarm:bench"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start prewarm");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("prewarm exited").unwrap();
            if let Some(u) = line.strip_prefix("listening on ") {
                break u.trim().to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Service { child, url }
    }

    /// A `field:` of the service's `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`) in MiB.
    pub fn status_mib(&self, field: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    /// Where the resident memory is: the heap and other anonymous memory,
    /// the mapped binary and libraries, the thread count.
    pub fn memory(&self) -> String {
        format!(
            "RSS {:.1} MiB = anonymous {:.1} + files {:.1} MiB, {} threads",
            self.status_mib("VmRSS:"),
            self.status_mib("RssAnon:"),
            self.status_mib("RssFile:"),
            self.status_mib("Threads:") * 1024.0,
        )
    }
}

/// A `prewarm` binary to measure, with the environment it runs in.
#[derive(Clone, Debug)]
pub struct Binary {
    /// What the figures are printed under.
    pub label: String,
    pub path: std::path::PathBuf,
    pub env: Vec<(String, String)>,
}

impl Binary {
    /// The binary cargo built with the bench.
    pub fn built() -> Binary {
        Binary {
            label: "built".into(),
            path: env!("CARGO_BIN_EXE_prewarm").into(),
            env: Vec::new(),
        }
    }

    /// `LABEL=PATH [NAME=VALUE ...]` (whitespace separated), e.g.
    /// `jemalloc=/tmp/prewarm-jemalloc _RJEM_MALLOC_CONF=background_thread:true`.
    pub fn parse(spec: &str) -> Result<Binary, String> {
        let mut words = spec.split_whitespace();
        let (label, path) = words
            .next()
            .and_then(|w| w.split_once('='))
            .ok_or_else(|| format!("{spec:?}: expected LABEL=PATH [NAME=VALUE ...]"))?;
        let env = words
            .map(|w| {
                w.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| format!("{w:?}: expected NAME=VALUE"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Binary {
            label: label.to_owned(),
            path: path.into(),
            env,
        })
    }
}

impl Service {
    /// CPU seconds (user + system) the service used so far, from
    /// `/proc/<pid>/stat` (clock ticks of 1/100 s, Linux's `USER_HZ`).
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let ticks: f64 = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<f64>().ok())
            .sum();
        ticks / 100.0
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The `p` quantile (0..=1) of sorted samples, nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Polls task `id` on the service at `url` until it has ended; its final view.
pub async fn wait_done(http: &reqwest::Client, url: &str, id: &str) -> serde_json::Value {
    loop {
        let v: serde_json::Value = http
            .get(format!("{url}/api/v1/tasks/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(
            v["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
