//! Noticing that mounted files changed (the token file, the TLS certificate
//! and key): a cheap poll of each file's modification time, size and resolved
//! path — Kubernetes Secret volumes swap a symlink, so the path counts too —
//! plus SIGHUP for an immediate reload.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often the files are checked for changes.
pub const POLL: Duration = Duration::from_secs(2);

/// What identifies a file's content cheaply; `None` while it cannot be read.
type Stamp = Option<(SystemTime, u64, PathBuf)>;

async fn stamp(path: &Path) -> Stamp {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((
        meta.modified().ok()?,
        meta.len(),
        tokio::fs::canonicalize(path).await.ok()?,
    ))
}

async fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        out.push(stamp(path).await);
    }
    out
}

/// Watches a set of files.
pub struct FileWatch {
    paths: Vec<PathBuf>,
    last: Vec<Stamp>,
    hup: Option<tokio::signal::unix::Signal>,
    tick: tokio::time::Interval,
}

impl FileWatch {
    /// Starts watching `paths` (their state now is the baseline).
    pub async fn new(paths: Vec<PathBuf>) -> FileWatch {
        let last = stamps(&paths).await;
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        FileWatch {
            paths,
            last,
            hup,
            tick,
        }
    }

    /// Waits until one of the files changed (`false`) or SIGHUP came (`true`).
    pub async fn changed(&mut self) -> bool {
        loop {
            let hup = &mut self.hup;
            let by_signal = tokio::select! {
                _ = self.tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let now = stamps(&self.paths).await;
            if by_signal || now != self.last {
                self.last = now;
                return by_signal;
            }
        }
    }
}
