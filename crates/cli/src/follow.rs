//! Following a task live: the Server-Sent Events stream of
//! `/api/v1/tasks/{id}/events` (resumed with `Last-Event-ID` after a dropped
//! connection) and its display, a progress bar on a terminal, plain lines
//! otherwise (CI logs).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prewarm_api::{ProgressUpdate, Task, TaskEvent};
use reqwest::{header, Method, StatusCode};

use crate::client::{error_from, ApiClient, CliError};

/// Consecutive failed connection attempts before giving up as unreachable.
const MAX_RECONNECTS: u32 = 6;

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `id:` field, if any.
    pub id: Option<String>,
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines joined by newlines.
    pub data: String,
}

/// Incremental parser of a `text/event-stream` body.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds a chunk of the body; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() || self.event.is_some() {
                    out.push(SseEvent {
                        id: self.id.clone(),
                        event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "id" => self.id = Some(value.to_owned()),
                "event" => self.event = Some(value.to_owned()),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        out
    }
}

/// Follows a task until it ends, showing progress on stderr; returns the final view.
pub async fn follow(client: &ApiClient, task_id: &str) -> Result<Task, CliError> {
    let mut display = Display::new(task_id);
    let result = stream_until_finished(client, task_id, &mut display).await;
    display.finish();
    result
}

async fn stream_until_finished(
    client: &ApiClient,
    task_id: &str,
    display: &mut Display,
) -> Result<Task, CliError> {
    let path = format!("/api/v1/tasks/{task_id}/events");
    let mut last_id: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let mut req = client
            .request(Method::GET, &path)
            .header(header::ACCEPT, "text/event-stream");
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(err) => {
                failures += 1;
                if failures >= MAX_RECONNECTS {
                    return Err(client.unreachable(&err));
                }
                tokio::time::sleep(Duration::from_secs(u64::from(failures))).await;
                continue;
            }
        };
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            // The server says we already have the end; read it plainly.
            let task = client.get(&format!("/api/v1/tasks/{task_id}"), &[]).await?;
            return serde_json::from_value(task).map_err(|e| CliError::Protocol(e.to_string()));
        }
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(error_from(status, &bytes));
        }
        failures = 0;
        let mut parser = SseParser::default();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            for event in parser.push(&chunk) {
                if event.id.is_some() {
                    last_id.clone_from(&event.id);
                }
                let message = match event.event.as_str() {
                    "progress" => serde_json::from_str(&event.data).map(TaskEvent::Progress),
                    "finished" => serde_json::from_str(&event.data).map(TaskEvent::Finished),
                    _ => continue,
                }
                .map_err(|e| CliError::Protocol(format!("bad {} event: {e}", event.event)))?;
                match message {
                    TaskEvent::Progress(update) => display.progress(&update),
                    TaskEvent::Finished(task) => {
                        display.progress(&ProgressUpdate::of(&task));
                        return Ok(*task);
                    }
                }
            }
        }
        // The connection dropped before the end: resume where we were.
        failures += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Where progress goes: a bar when stderr is a terminal, else a line per change.
struct Display {
    task_id: String,
    bar: Option<ProgressBar>,
    last_line: String,
}

impl Display {
    fn new(task_id: &str) -> Display {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} {prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} nodes {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(task_id.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Display {
            task_id: task_id.to_owned(),
            bar,
            last_line: String::new(),
        }
    }

    fn progress(&mut self, update: &ProgressUpdate) {
        let p = &update.progress;
        let done = p.completed_nodes + p.failed_nodes + p.skipped_nodes;
        let eta = update
            .estimated_completion
            .map(|at| {
                let left = (at - chrono::Utc::now()).num_seconds().max(0);
                format!(", ETA {}", human_duration(left))
            })
            .unwrap_or_default();
        let summary = format!(
            "{}, {:.1}%, {} failed, {} skipped{eta}",
            update.status, p.percentage, p.failed_nodes, p.skipped_nodes
        );
        match &self.bar {
            Some(bar) => {
                bar.set_length(u64::from(p.total_nodes));
                bar.set_position(u64::from(done));
                bar.set_message(summary);
            }
            None => {
                let line = format!(
                    "{}: {done}/{} nodes, {summary}",
                    self.task_id, p.total_nodes
                );
                if line != self.last_line {
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{line}");
                    self.last_line = line;
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks_and_skips_comments() {
        let mut p = SseParser::default();
        assert!(p
            .push(b": keep-alive\n\nevent: progress\nid: 5\nda")
            .is_empty());
        let events = p.push(b"ta: {\"a\":1}\r\n\r\nevent: finished\ndata: x\ndata: y\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    id: Some("5".into()),
                    event: "progress".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    id: Some("5".into()),
                    event: "finished".into(),
                    data: "x\ny".into()
                },
            ]
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(125), "2m05s");
        assert_eq!(human_duration(7260), "2h01m");
    }
}
