//! The engine's Kubernetes calls for pull Jobs. Creations and deletions run
//! in the background, capped in number and owned by a task tracker that
//! shutdown drains; their results come back to the loop as `CallDone`. A
//! refused creation is retried per node with backoff and jitter. Calls still
//! running when the drain gives up, or when the engine is dropped, are
//! abandoned: none outlives its engine's term.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::Engine;
use crate::cluster::{Cluster, ClusterError, PullJob};

/// First wait before retrying a Job creation the API server refused
/// transiently; doubles per failure of the same node, up to `CREATE_BACKOFF_MAX`.
const CREATE_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two creation attempts of one node (unless the server asks for more).
const CREATE_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Limit on one Kubernetes call; a call that takes longer counts as a transient failure.
const API_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping engine waits for its in-flight Kubernetes calls.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(20);
/// Kubernetes calls in flight at once.
const API_CONCURRENCY: usize = 32;

/// A background call that finished.
pub(super) enum CallDone {
    /// A Job creation answered (or timed out).
    Created {
        task_id: String,
        node: usize,
        attempt: u32,
        result: Result<(), ClusterError>,
    },
    /// A Job deletion that frees a window slot of `task_id` is done (or failed for good).
    Deleted { task_id: String },
}

/// Job creations and deletions in flight.
pub(super) struct JobCalls {
    cluster: Arc<dyn Cluster>,
    /// Caps the calls in flight at `API_CONCURRENCY`.
    permits: Arc<Semaphore>,
    /// Every spawned call; drained on shutdown.
    tracker: TaskTracker,
    /// Cancelled to abandon the calls still waiting or in flight (the drain
    /// gave up, or the engine was dropped).
    abandon: CancellationToken,
    _abandon_on_drop: DropGuard,
    done_tx: mpsc::UnboundedSender<CallDone>,
    /// Results for the loop.
    pub(super) done: mpsc::UnboundedReceiver<CallDone>,
}

impl JobCalls {
    pub(super) fn new(cluster: Arc<dyn Cluster>) -> JobCalls {
        let (done_tx, done) = mpsc::unbounded_channel();
        let abandon = CancellationToken::new();
        JobCalls {
            cluster,
            permits: Arc::new(Semaphore::new(API_CONCURRENCY)),
            tracker: TaskTracker::new(),
            _abandon_on_drop: abandon.clone().drop_guard(),
            abandon,
            done_tx,
            done,
        }
    }

    /// Runs `call` in the background, owned by the tracker, until it ends or is abandoned.
    fn spawn(&self, call: impl std::future::Future<Output = ()> + Send + 'static) {
        let abandon = self.abandon.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = abandon.cancelled() => {}
                () = call => {}
            }
        });
    }

    /// Creates `job` in the background for node `node` of `task_id`.
    pub(super) fn create(&self, task_id: String, node: usize, attempt: u32, job: PullJob) {
        let cluster = self.cluster.clone();
        let permits = self.permits.clone();
        let tx = self.done_tx.clone();
        self.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result =
                match tokio::time::timeout(API_CALL_TIMEOUT, cluster.create_job(&job)).await {
                    Ok(result) => result,
                    Err(_) => Err(ClusterError::Unreachable(format!(
                        "no answer within {}s",
                        API_CALL_TIMEOUT.as_secs()
                    ))),
                };
            let _ = tx.send(CallDone::Created {
                task_id,
                node,
                attempt,
                result,
            });
        });
    }

    /// Deletes Jobs in the background; those tagged with a task free one of
    /// its window slots when the deletion is done (or failed for good).
    pub(super) fn delete_jobs(&self, jobs: Vec<(Option<String>, String)>) {
        for (task_id, name) in jobs {
            let cluster = self.cluster.clone();
            let permits = self.permits.clone();
            let tx = self.done_tx.clone();
            self.spawn(async move {
                let _permit = permits.acquire_owned().await;
                if let Err(e) = cluster.delete_job(&name).await {
                    tracing::warn!(job = %name, error = %e, "could not delete pull Job");
                }
                if let Some(task_id) = task_id {
                    let _ = tx.send(CallDone::Deleted { task_id });
                }
            });
        }
    }

    /// Deletes every Job of `task_id` in the background.
    pub(super) fn delete_task_jobs(&self, task_id: String) {
        let cluster = self.cluster.clone();
        self.spawn(async move {
            if let Err(e) = cluster.delete_task_jobs(&task_id).await {
                tracing::warn!(task = %task_id, error = %e, "could not delete the task's Jobs");
            }
        });
    }
}

impl Engine {
    /// Takes in the result of a background call.
    pub(super) fn on_call_done(&mut self, done: CallDone) {
        match done {
            CallDone::Created {
                task_id,
                node,
                attempt,
                result,
            } => self.on_created(&task_id, node, attempt, result),
            CallDone::Deleted { task_id } => {
                if let Some(run) = self.runs.get_mut(&task_id) {
                    run.in_flight = run.in_flight.saturating_sub(1);
                }
            }
        }
    }

    fn on_created(
        &mut self,
        task_id: &str,
        i: usize,
        attempt: u32,
        result: Result<(), ClusterError>,
    ) {
        let now = self.clock.now();
        let mono = Instant::now();
        let pull_timeout = self.config.pull_timeout;
        let Some(run) = self.runs.get_mut(task_id) else {
            return;
        };
        let node = &run.nodes[i];
        if !node.is_started() || node.attempt != attempt {
            return;
        }
        let err = match result {
            Ok(()) => {
                run.confirmed.insert(i, mono);
                run.create_failures.remove(&i);
                return;
            }
            Err(err) => err,
        };
        let (failures, since) = {
            let entry = run.create_failures.entry(i).or_insert((0, mono));
            entry.0 += 1;
            *entry
        };
        let give_up = match create_failure(&err) {
            CreateFailure::Permanent => true,
            CreateFailure::UntilPullTimeout => mono.duration_since(since) >= pull_timeout,
            CreateFailure::Transient => false,
        };
        if give_up {
            tracing::warn!(task = %task_id, node = %node.node, error = %err, "pull Job rejected");
            let message = match &err {
                ClusterError::Api { message, .. } => message.clone(),
                other => other.to_string(),
            };
            run.create_failures.remove(&i);
            run.nodes[i].abort("JobRejected", &message, now);
            run.attempt_ended(i);
            return;
        }
        let wait = create_backoff(failures, err.retry_after());
        tracing::warn!(task = %task_id, node = %node.node, error = %err, failures, retry_in_ms = wait.as_millis() as u64, "pull Job creation failed; retrying");
        run.nodes[i].unstart(now + chrono::Duration::from_std(wait).unwrap_or_default());
        run.give_back(i, false);
        run.set_timer(i, mono + wait);
        run.in_flight = run.in_flight.saturating_sub(1);
        run.cursor = run.cursor.min(i);
    }

    /// Lets the Kubernetes calls in flight finish (within `SHUTDOWN_DRAIN`),
    /// takes in their results and writes what changed.
    pub(super) async fn drain(&mut self) {
        self.calls.tracker.close();
        let tracker = self.calls.tracker.clone();
        let all_done = tracker.wait();
        tokio::pin!(all_done);
        let deadline = tokio::time::sleep(SHUTDOWN_DRAIN);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut all_done => break,
                _ = &mut deadline => {
                    tracing::warn!(calls = tracker.len(), "Kubernetes calls still running at shutdown; abandoning them");
                    self.calls.abandon.cancel();
                    break;
                }
                Some(done) = self.calls.done.recv() => self.on_call_done(done),
            }
        }
        while let Ok(done) = self.calls.done.try_recv() {
            self.on_call_done(done);
        }
        self.flush(true).await;
    }
}

/// How the engine treats a refused Job creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CreateFailure {
    /// Throttling, server errors, timeouts, a lost connection: retry with backoff.
    Transient,
    /// A ResourceQuota or an admission webhook said no (403): usually temporary,
    /// so retry with backoff until the pull timeout, then fail with the server's message.
    UntilPullTimeout,
    /// The request itself is wrong (400, 422, ...): fail the node now.
    Permanent,
}

fn create_failure(err: &ClusterError) -> CreateFailure {
    match err {
        ClusterError::Unreachable(_) => CreateFailure::Transient,
        ClusterError::Api { code, .. } => match code {
            403 => CreateFailure::UntilPullTimeout,
            408 | 409 | 429 => CreateFailure::Transient,
            c if *c >= 500 => CreateFailure::Transient,
            _ => CreateFailure::Permanent,
        },
    }
}

/// Wait before the next creation attempt after `failures` failures in a row:
/// exponential with jitter (half to all of the step), never less than what
/// the server asked for with `Retry-After`.
fn create_backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let step = CREATE_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(CREATE_BACKOFF_MAX);
    let jittered = step.mul_f64(rand::rng().random_range(0.5..=1.0));
    jittered.max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fake::{FakeCluster, Fault};
    use crate::testing::pull_job;

    #[tokio::test(start_paused = true)]
    async fn calls_still_running_stop_when_abandoned_or_when_their_engine_goes() {
        let cluster = Arc::new(FakeCluster::new());
        cluster.fail_creates([Fault::Hang, Fault::Hang]);

        let calls = JobCalls::new(cluster.clone());
        calls.create("task-20260101-abcdef".into(), 0, 0, pull_job("n1"));
        tokio::task::yield_now().await;
        assert_eq!(cluster.create_calls(), 1);
        calls.tracker.close();
        calls.abandon.cancel();
        tokio::time::timeout(Duration::from_secs(1), calls.tracker.wait())
            .await
            .expect("an abandoned call stops");

        let calls = JobCalls::new(cluster.clone());
        calls.create("task-20260101-abcdef".into(), 0, 0, pull_job("n2"));
        tokio::task::yield_now().await;
        assert_eq!(cluster.create_calls(), 2);
        let tracker = calls.tracker.clone();
        tracker.close();
        drop(calls);
        tokio::time::timeout(Duration::from_secs(1), tracker.wait())
            .await
            .expect("a call stops with its engine");
    }
}
