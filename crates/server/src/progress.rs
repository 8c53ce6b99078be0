//! Fan-out of task progress from the engine to live readers (SSE, WebSocket).
//!
//! The engine publishes a task's view each time it writes it to the store
//! (coalesced, a few times a second at most). Readers hold a `watch`
//! receiver: they always see the latest view, never a backlog, so a thousand
//! idle watchers cost a thousand small receivers and nothing on the engine's
//! side. When a task ends its channel is published one last time and dropped,
//! which ends every reader's stream after the final view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prewarm_api::Task;
use tokio::sync::watch;

/// A subscription to one task's views.
pub type TaskWatch = watch::Receiver<Arc<Task>>;

/// Per-task channels of the latest task view.
#[derive(Default)]
pub struct ProgressHub {
    channels: Mutex<HashMap<String, watch::Sender<Arc<Task>>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for ProgressHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressHub")
            .field("tasks", &self.lock().len())
            .finish()
    }
}

impl ProgressHub {
    /// An empty hub.
    pub fn new() -> ProgressHub {
        ProgressHub::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Arc<Task>>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the latest view of a task; a terminal view closes its channel
    /// after readers have been handed it.
    pub fn publish(&self, task: &Task) {
        let mut channels = self.lock();
        if self.is_closed() {
            return;
        }
        let view = Arc::new(task.clone());
        if task.status.is_terminal() {
            if let Some(tx) = channels.remove(&task.task_id) {
                let _ = tx.send(view);
            }
            return;
        }
        match channels.get(&task.task_id) {
            Some(tx) => {
                tx.send_replace(view);
            }
            None => {
                let (tx, _) = watch::channel(view);
                channels.insert(task.task_id.clone(), tx);
            }
        }
    }

    /// Subscribes to a task that is not over yet, starting from `current`
    /// (the view the caller just read from the store). Returns `None` when the
    /// task has ended: the caller already holds its final view.
    pub fn subscribe(&self, current: &Task) -> Option<TaskWatch> {
        if current.status.is_terminal() {
            return None;
        }
        let mut channels = self.lock();
        if self.is_closed() {
            // A receiver whose sender is gone: the reader sees the end at once.
            return Some(watch::channel(Arc::new(current.clone())).1);
        }
        let tx = channels
            .entry(current.task_id.clone())
            .or_insert_with(|| watch::channel(Arc::new(current.clone())).0);
        Some(tx.subscribe())
    }

    /// Ends every reader's stream without a final view (the service is
    /// stopping; clients resume elsewhere). Later subscriptions end at once.
    pub fn close(&self) {
        let mut channels = self.lock();
        self.closed.store(true, Ordering::SeqCst);
        channels.clear();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Number of tasks with a live channel.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no task has a live channel.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prewarm_api::{CreateTaskRequest, TaskStatus};

    fn task(status: TaskStatus, completed: u32) -> Task {
        let spec = crate::domain::task::TaskSpec::from_request(CreateTaskRequest {
            images: vec!["nginx".into()],
            ..Default::default()
        })
        .unwrap();
        let mut t = spec.new_task(
            crate::domain::task::TaskId("task-20240116-abc123".into()),
            "t",
            chrono::Utc::now(),
        );
        t.status = status;
        t.progress.completed_nodes = completed;
        t
    }

    #[tokio::test]
    async fn readers_see_the_latest_view_then_the_end() {
        let hub = ProgressHub::new();
        let mut rx = hub.subscribe(&task(TaskStatus::Running, 0)).unwrap();
        hub.publish(&task(TaskStatus::Running, 1));
        hub.publish(&task(TaskStatus::Running, 2));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().progress.completed_nodes, 2);
        hub.publish(&task(TaskStatus::Completed, 3));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().status, TaskStatus::Completed);
        assert!(
            rx.changed().await.is_err(),
            "stream ends after the final view"
        );
        assert!(hub.is_empty());
    }

    #[tokio::test]
    async fn closing_ends_every_stream_without_a_final_view() {
        let hub = ProgressHub::new();
        let mut rx = hub.subscribe(&task(TaskStatus::Running, 0)).unwrap();
        hub.close();
        assert!(rx.changed().await.is_err());
        assert_eq!(rx.borrow().status, TaskStatus::Running);
        let mut late = hub.subscribe(&task(TaskStatus::Running, 1)).unwrap();
        assert!(late.changed().await.is_err());
        assert!(hub.is_closed() && hub.is_empty());
    }

    #[test]
    fn ended_tasks_get_no_subscription() {
        let hub = ProgressHub::new();
        assert!(hub.subscribe(&task(TaskStatus::Failed, 0)).is_none());
    }
}
