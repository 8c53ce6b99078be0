//! The audit log: one JSON line per mutating request and per refused
//! (401/403) request — who, what, which target, the result, when, from where.
//!
//! Lines go to a file (`--audit-log`, appended, written at once, fsync'd every
//! [`SYNC_EVERY`]) or, without one, to stdout. Tokens never appear: the record
//! holds the token's name only.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// How often a file sink is fsync'd when lines were written.
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

enum Sink {
    Stdout,
    File {
        file: Mutex<std::fs::File>,
        dirty: AtomicBool,
    },
}

/// Where audit lines go.
pub struct AuditLog {
    sink: Sink,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.sink {
            Sink::Stdout => "AuditLog(stdout)",
            Sink::File { .. } => "AuditLog(file)",
        })
    }
}

impl AuditLog {
    /// Lines to stdout.
    pub fn stdout() -> Arc<AuditLog> {
        Arc::new(AuditLog { sink: Sink::Stdout })
    }

    /// Lines appended to `path` (created if missing), with a background fsync
    /// every [`SYNC_EVERY`] while lines are written. Needs a Tokio runtime.
    pub fn file(path: &Path) -> anyhow::Result<Arc<AuditLog>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("opening the audit log {}: {e}", path.display()))?;
        let log = Arc::new(AuditLog {
            sink: Sink::File {
                file: Mutex::new(file),
                dirty: AtomicBool::new(false),
            },
        });
        let weak = Arc::downgrade(&log);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SYNC_EVERY);
            loop {
                tick.tick().await;
                let Some(log) = weak.upgrade() else { return };
                log.sync();
            }
        });
        Ok(log)
    }

    /// Writes one record as a JSON line.
    pub fn write(&self, record: &AuditRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "audit record not serializable");
                return;
            }
        };
        line.push(b'\n');
        match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&line).and_then(|()| out.flush());
            }
            Sink::File { file, dirty } => {
                let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
                // One write(2) of the whole line on an O_APPEND file: lines never interleave.
                if let Err(e) = f.write_all(&line) {
                    tracing::error!(error = %e, "audit log write failed");
                }
                dirty.store(true, Ordering::Release);
            }
        }
    }

    /// fsyncs a file sink if lines were written since the last sync.
    pub fn sync(&self) {
        if let Sink::File { file, dirty } = &self.sink {
            if dirty.swap(false, Ordering::AcqRel) {
                let f = file.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = f.sync_data() {
                    tracing::warn!(error = %e, "audit log fsync failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_sink_appends_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "earlier\n").unwrap();
        let log = AuditLog::file(&path).unwrap();
        let mut rec = AuditRecord::stamped("2024-01-16T10:00:00Z".parse().unwrap());
        rec.method = "POST".into();
        rec.route = "/api/v1/tasks".into();
        rec.result = 201;
        log.write(&rec);
        log.sync();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "earlier");
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["time"], "2024-01-16T10:00:00.000Z");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["result"], 201);
        assert_eq!(v["tokenName"], serde_json::Value::Null);
    }
}
