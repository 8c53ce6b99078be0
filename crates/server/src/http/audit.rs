//! The audit log: one JSON line per mutating request and per refused
//! (401/403) request — who, what, which target, the result, when, from where.
//!
//! Lines go to a file (`--audit-log`, appended) or, without one, to stdout,
//! from a dedicated writer thread (see [`AuditLog`]). Tokens never appear:
//! the record holds the token's name only.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Longest a written line waits for its fsync while lines keep coming.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// One audited request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Always `audit`, so the line is told apart from other output.
    pub log: &'static str,
    /// When the answer was sent, RFC 3339 UTC.
    pub time: String,
    /// Token name (`anonymous` when open); `null` when no known token was given.
    pub token_name: Option<String>,
    /// The token's role, when known.
    pub role: Option<&'static str>,
    /// HTTP method.
    pub method: String,
    /// Route template (`/api/v1/tasks/{id}`).
    pub route: String,
    /// The task or scheduled task concerned, when there is one.
    pub target_id: Option<String>,
    /// Status code answered.
    pub result: u16,
    /// The client's address: the peer's address and port, or, behind a
    /// trusted proxy, the address `X-Forwarded-For` names.
    pub client: Option<String>,
    /// The trusted proxy the request came through (address and port), when
    /// `client` was taken from `X-Forwarded-For`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl AuditRecord {
    /// A record stamped `at`.
    pub fn stamped(at: DateTime<Utc>) -> AuditRecord {
        AuditRecord {
            log: "audit",
            time: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            token_name: None,
            role: None,
            method: String::new(),
            route: String::new(),
            target_id: None,
            result: 0,
            client: None,
            via: None,
        }
    }
}

/// Lines the writer thread may hold before requests wait for room.
pub const QUEUE: usize = 1_024;

/// What the writer thread is asked to do.
enum Entry {
    /// Append a line; answer once it is written.
    Line(Vec<u8>, oneshot::Sender<()>),
    /// fsync what was written; answer once done.
    Flush(oneshot::Sender<()>),
}

/// Where audit lines go: a dedicated writer thread fed by a bounded queue,
/// so no request thread ever blocks on the file. A request waits for room in
/// the queue and for its line to be written (not fsync'd): no line is
/// dropped, and a line is in the file before its answer is sent. The thread
/// fsyncs a file whenever its queue runs empty, and at least every
/// [`SYNC_EVERY`] under a steady stream of lines.
pub struct AuditLog {
    queue: mpsc::Sender<Entry>,
    target: &'static str,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.target)
    }
}

impl AuditLog {
    /// Lines to stdout.
    pub fn stdout() -> Arc<AuditLog> {
        Arc::new(AuditLog::start("stdout", Box::new(std::io::stdout()), None))
    }

    /// Lines appended to `path` (created if missing).
    pub fn file(path: &Path) -> anyhow::Result<Arc<AuditLog>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("opening the audit log {}: {e}", path.display()))?;
        let sync = file
            .try_clone()
            .map_err(|e| anyhow::anyhow!("opening the audit log {}: {e}", path.display()))?;
        Ok(Arc::new(AuditLog::start(
            "file",
            Box::new(file),
            Some(sync),
        )))
    }

    /// Starts the writer thread; it ends once every handle to the log is gone.
    fn start(
        target: &'static str,
        out: Box<dyn Write + Send>,
        sync: Option<std::fs::File>,
    ) -> AuditLog {
        let (queue, entries) = mpsc::channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("prewarm-audit".to_owned())
            .spawn(move || write_entries(entries, out, sync));
        if let Err(e) = spawned {
            // Every write will then report the log as closed.
            tracing::error!(error = %e, "audit writer thread did not start");
        }
        AuditLog { queue, target }
    }

    /// Writes one record as a JSON line: waits for room in the queue and
    /// for the line to be written.
    pub async fn write(&self, record: &AuditRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "audit record not serializable");
                return;
            }
        };
        line.push(b'\n');
        let (done, written) = oneshot::channel();
        if self.queue.send(Entry::Line(line, done)).await.is_err() || written.await.is_err() {
            tracing::error!("audit writer thread is gone; audit line lost");
        }
    }

    /// Waits until every line queued so far is written and fsync'd.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Entry::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

/// The writer thread: appends lines in order, fsyncs when the queue runs
/// empty (or every [`SYNC_EVERY`] while it does not) and on request.
fn write_entries(
    mut entries: mpsc::Receiver<Entry>,
    mut out: Box<dyn Write + Send>,
    sync: Option<std::fs::File>,
) {
    let mut synced = Synced {
        file: sync,
        dirty: false,
        at: Instant::now(),
    };
    loop {
        let entry = match entries.try_recv() {
            Ok(entry) => entry,
            Err(mpsc::error::TryRecvError::Empty) => {
                synced.sync();
                match entries.blocking_recv() {
                    Some(entry) => entry,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        match entry {
            Entry::Line(line, done) => {
                // One write(2) of the whole line on an O_APPEND file: lines never interleave.
                if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
                    tracing::error!(error = %e, "audit log write failed");
                }
                synced.dirty = true;
                let _ = done.send(());
                if synced.at.elapsed() >= SYNC_EVERY {
                    synced.sync();
                }
            }
            Entry::Flush(done) => {
                synced.sync();
                let _ = done.send(());
            }
        }
    }
    synced.sync();
}

/// The file the writer fsyncs (none for stdout), and whether lines wait for it.
struct Synced {
    file: Option<std::fs::File>,
    dirty: bool,
    at: Instant,
}

impl Synced {
    fn sync(&mut self) {
        if let (true, Some(file)) = (self.dirty, &self.file) {
            if let Err(e) = file.sync_data() {
                tracing::warn!(error = %e, "audit log fsync failed");
            }
        }
        self.dirty = false;
        self.at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(result: u16) -> AuditRecord {
        let mut rec = AuditRecord::stamped("2024-01-16T10:00:00Z".parse().unwrap());
        rec.method = "POST".into();
        rec.route = "/api/v1/tasks".into();
        rec.result = result;
        rec
    }

    #[tokio::test]
    async fn file_sink_appends_json_lines_written_before_write_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "earlier\n").unwrap();
        let log = AuditLog::file(&path).unwrap();
        log.write(&record(201)).await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "earlier");
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["time"], "2024-01-16T10:00:00.000Z");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["result"], 201);
        assert_eq!(v["tokenName"], serde_json::Value::Null);
        log.flush().await;
    }

    /// Many more writers than the queue holds at once: each waits for room,
    /// and every line arrives whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_beyond_the_queue_wait_and_no_line_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::file(&path).unwrap();
        let writers = QUEUE * 4;
        let tasks: Vec<_> = (0..writers)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.write(&record(200 + (i % 300) as u16)).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        log.flush().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let mut results = vec![0usize; 300];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            results[v["result"].as_u64().unwrap() as usize - 200] += 1;
        }
        assert_eq!(results.iter().sum::<usize>(), writers);
        assert!(results.iter().all(|n| *n >= writers / 300), "{results:?}");
    }
}
