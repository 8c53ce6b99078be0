//! Live task streams: `GET /api/v1/tasks/{id}/watch` (WebSocket) and
//! `GET /api/v1/tasks/{id}/events` (Server-Sent Events).
//!
//! Both start with the task's current state, then push what the engine
//! publishes to the [`ProgressHub`](crate::progress::ProgressHub): one
//! `progress` message per change, a `finished` message with the final view,
//! and the end of the stream. A connection holds one `watch` receiver and
//! never reads the store while the task runs, so idle watchers cost the
//! engine nothing.
//!
//! SSE events carry an `id:` that grows with the task's progress
//! ([`event_id`]): a client reconnecting with `Last-Event-ID` gets only what
//! is newer than what it has, and `204 No Content` (which tells `EventSource`
//! to stop reconnecting) when it already has the final view.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use prewarm_api::{ErrorBody, Task, TaskEvent, TaskStatus};

use super::error::ApiError;
use super::extract::PathId;
use super::AppState;
use crate::progress::TaskWatch;

/// Interval of the SSE keep-alive comment (proxies drop silent connections).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a WebSocket waits for the client's close frame after sending its own.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Sequence number of a task view for SSE `id:` lines. It never decreases over
/// a task's life: finished nodes only ever grow, and status moves from pending
/// to running to an end. Two views with the same number differ only in
/// details (window position, estimate), which a resuming client may skip.
pub fn event_id(task: &Task) -> u64 {
    let p = &task.progress;
    let done =
        u64::from(p.completed_nodes) + u64::from(p.failed_nodes) + u64::from(p.skipped_nodes);
    let phase = match task.status {
        TaskStatus::Pending => 0,
        TaskStatus::Running => 1,
        TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => 3,
    };
    done * 4 + phase
}

/// The name of a stream event.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // documents the wire format only
enum SseEventName {
    /// `data` is a `ProgressUpdate`.
    Progress,
    /// `data` is the final `Task`; the last event.
    Finished,
}

/// One Server-Sent Event of `/events` as a client parses it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the wire format only
struct SseEvent {
    /// `progress` or `finished`.
    event: SseEventName,
    /// Position in the task's stream; send it back as `Last-Event-ID` to resume.
    id: String,
    /// JSON text: a `ProgressUpdate` for `progress`, the `Task` for `finished`.
    data: String,
}

/// `GET /api/v1/tasks/{id}/events`: the task's stream as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/events",
    operation_id = "taskEvents",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "Task id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `event: progress` whose `data` is a ProgressUpdate, then `event: finished` whose `data` is the Task (the `data` of a TaskEvent)", content_type = "text/event-stream", body = SseEvent),
        (status = 204, description = "The task ended and the client already has its last event"),
        (status = 400, description = "Badly encoded id", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let first = open(&state, &id).await?;
    if let (Some(seen), true) = (last_seen, first.status.is_terminal()) {
        if event_id(&first) <= seen {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    let stream = views(state, first)
        .filter(move |view| {
            let fresh = last_seen.is_none_or(|seen| event_id(view) > seen);
            std::future::ready(fresh)
        })
        .map(|view| {
            let message = message(&view);
            let event = Event::default()
                .event(message.kind())
                .id(event_id(&view).to_string());
            let event = match &message {
                TaskEvent::Progress(update) => event.json_data(update),
                TaskEvent::Finished(task) => event.json_data(task),
            };
            // Serializing our own types cannot fail; an empty event is harmless.
            Ok::<_, Infallible>(event.unwrap_or_default())
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response())
}

/// `GET /api/v1/tasks/{id}/watch`: the task's stream over a WebSocket, one
/// JSON `TaskEvent` per text message, then a normal close.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/watch",
    operation_id = "watchTask",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 101, description = "WebSocket: one JSON TaskEvent per text message (progress…, then finished), then a normal close", body = TaskEvent),
        (status = 400, description = "Not a WebSocket upgrade, or a badly encoded id", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn watch(
    State(state): State<AppState>,
    PathId(id): PathId,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let first = open(&state, &id).await?;
    let upgrade = upgrade.map_err(|rejection| ApiError::UpgradeRequired(rejection.body_text()))?;
    Ok(upgrade.on_upgrade(move |socket| serve_socket(socket, views(state, first))))
}

async fn serve_socket(mut socket: WebSocket, views: impl Stream<Item = Arc<Task>>) {
    let mut views = std::pin::pin!(views);
    let mut finished = false;
    loop {
        tokio::select! {
            view = views.next() => {
                let Some(view) = view else { break };
                finished = view.status.is_terminal();
                let Ok(text) = serde_json::to_string(&message(&view)) else { break };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // Pings are answered by the library; other client messages mean nothing here.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    }
    let close = if finished {
        CloseFrame {
            code: close_code::NORMAL,
            reason: "task finished".into(),
        }
    } else {
        CloseFrame {
            code: close_code::AWAY,
            reason: "server stopping".into(),
        }
    };
    if socket.send(Message::Close(Some(close))).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(msg)) = socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

fn message(view: &Task) -> TaskEvent {
    if view.status.is_terminal() {
        TaskEvent::Finished(Box::new(view.clone()))
    } else {
        TaskEvent::Progress(prewarm_api::ProgressUpdate::of(view))
    }
}

/// The task's current view, or 404.
async fn open(state: &AppState, id: &str) -> Result<Task, ApiError> {
    state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::TaskNotFound(id.to_owned()))
}

/// Views of a task from `first` on, ending with its terminal view.
fn views(state: AppState, first: Task) -> impl Stream<Item = Arc<Task>> {
    let feed = Feed {
        rx: None,
        first: Some(first),
        state,
        last: None,
        ended: false,
    };
    futures::stream::unfold(feed, |mut feed| async move {
        let view = feed.next_view().await?;
        Some((view, feed))
    })
}

/// State of one reader's stream.
struct Feed {
    state: AppState,
    /// The view read before subscribing, not yet handed out.
    first: Option<Task>,
    rx: Option<TaskWatch>,
    /// What was last handed out, to skip republished identical views.
    last: Option<Arc<Task>>,
    ended: bool,
}

impl Feed {
    async fn next_view(&mut self) -> Option<Arc<Task>> {
        if self.ended {
            return None;
        }
        if let Some(first) = self.first.take() {
            let view = self.settle(first).await;
            return Some(self.hand_out(view));
        }
        loop {
            let rx = self.rx.as_mut()?;
            match rx.changed().await {
                Ok(()) => {
                    let view = rx.borrow_and_update().clone();
                    if self.is_new(&view) {
                        return Some(self.hand_out(view));
                    }
                }
                Err(_) if self.state.progress.is_closed() => {
                    // The service is stopping: end here, the client resumes elsewhere.
                    self.ended = true;
                    return None;
                }
                Err(_) => {
                    // The channel closed without a final view reaching us: the store has it.
                    let task = match self.state.store.get(&self.last_id()).await {
                        Ok(Some(task)) => task,
                        _ => {
                            self.ended = true;
                            return None;
                        }
                    };
                    let view = self.settle(task).await;
                    if self.is_new(&view) || view.status.is_terminal() {
                        return Some(self.hand_out(view));
                    }
                }
            }
        }
    }

    /// Subscribes for a task that has not ended, then reads the store once
    /// more: a task that ended between the first read and the subscription
    /// published its final view to nobody, so the store is the only one that
    /// has it (and publishing it again closes the channel the subscription opened).
    async fn settle(&mut self, task: Task) -> Arc<Task> {
        let Some(rx) = self.state.progress.subscribe(&task) else {
            return Arc::new(task);
        };
        self.rx = Some(rx);
        match self.state.store.get(&task.task_id).await {
            Ok(Some(fresh)) => {
                if fresh.status.is_terminal() {
                    self.state.progress.publish(&fresh);
                }
                Arc::new(fresh)
            }
            _ => Arc::new(task),
        }
    }

    fn last_id(&self) -> String {
        self.last
            .as_ref()
            .map(|t| t.task_id.clone())
            .unwrap_or_default()
    }

    fn is_new(&self, view: &Task) -> bool {
        self.last.as_ref().is_none_or(|last| {
            last.status != view.status
                || last.progress != view.progress
                || last.estimated_completion != view.estimated_completion
        })
    }

    fn hand_out(&mut self, view: Arc<Task>) -> Arc<Task> {
        if view.status.is_terminal() {
            self.ended = true;
            self.rx = None;
        }
        self.last = Some(view.clone());
        view
    }
}
