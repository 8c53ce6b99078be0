//! End-of-task webhooks. The write that ends a task also records
//! `webhookStatus: pending`; the engine then hands the task to
//! [`Webhooks::notify`], which only queues it (bounded; never blocks the
//! engine). A worker POSTs `{"event", "task"}` to the task's `webhookUrl`,
//! signed when a secret is set, retrying with exponential backoff, and records
//! the outcome on the task (`webhookStatus`, `webhookError`). Deliveries still
//! owed after a restart (or dropped from a full queue) are found again by
//! [`Webhooks::resume_owed`]. Every request carries `X-Prewarm-Delivery`, the
//! same for every attempt of one task's webhook, so receivers can de-duplicate.
//!
//! Only the leader sends (see [`crate::leadership`]): a replica that does not
//! hold the Lease queues nothing (the store keeps the delivery `pending` and
//! the leader sends it), and a delivery in flight when the term ends is
//! abandoned, still `pending`, for the next leader to send.
//!
//! SSRF guard: the destination host is resolved once, every address checked
//! against [`is_private`], and the request is made to the checked address
//! (so a second DNS answer cannot redirect it). Redirects are not followed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prewarm_api::{Task, WebhookEvent, WebhookStatus};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::task::ValidationError;
use crate::domain::webhook_target::{event_name, is_private, literal_ip, signature};
use crate::leadership::LeaderState;
use crate::metrics::Metrics;
use crate::store::TaskStore;

/// Tasks waiting for their webhook; beyond this, new ones wait in the store
/// (`pending`) for the next [`Webhooks::resume_owed`].
pub const QUEUE_CAPACITY: usize = 1024;
/// Deliveries in flight at once.
pub const CONCURRENT_DELIVERIES: usize = 16;

/// How webhooks are sent.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// HMAC key for `X-Prewarm-Signature`; unsigned when `None`.
    pub secret: Option<String>,
    /// Send to private, loopback and link-local addresses too.
    pub allow_private: bool,
    /// Limit on each attempt.
    pub timeout: Duration,
    /// Attempts in all (the first one included).
    pub attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            secret: None,
            allow_private: false,
            timeout: Duration::from_secs(10),
            attempts: 5,
            backoff: Duration::from_secs(1),
        }
    }
}

/// The engine's and the API's handle on webhooks.
pub struct Webhooks {
    /// Tasks to deliver, each with the leader term it was queued in.
    tx: Option<mpsc::Sender<(Task, CancellationToken)>>,
    allow_private: bool,
    metrics: Arc<Metrics>,
    /// Tasks queued or being delivered (so a resume does not send one twice).
    owed: Arc<Mutex<HashSet<String>>>,
    store: Option<Arc<dyn TaskStore>>,
    /// Whether this replica leads, and its term.
    leader: Option<Arc<LeaderState>>,
    /// The worker and its deliveries.
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("enabled", &self.tx.is_some())
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Starts the delivery worker (needs a Tokio runtime); it sends only
    /// while `leader` leads. Outcomes are counted in
    /// `prewarm_webhook_deliveries_total`.
    pub fn start(
        config: WebhookConfig,
        store: Arc<dyn TaskStore>,
        metrics: Arc<Metrics>,
        leader: Arc<LeaderState>,
    ) -> Arc<Webhooks> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let allow_private = config.allow_private;
        let owed = Arc::new(Mutex::new(HashSet::new()));
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        tracker.spawn(run_worker(
            config,
            store.clone(),
            metrics.clone(),
            rx,
            owed.clone(),
            tracker.clone(),
            stop.clone(),
        ));
        Arc::new(Webhooks {
            tx: Some(tx),
            allow_private,
            metrics,
            owed,
            store: Some(store),
            leader: Some(leader),
            tracker,
            stop,
        })
    }

    /// Queues every webhook the store says is still owed (after a restart,
    /// a full queue, a term that ended, a cancel on another replica). Ones
    /// already queued are skipped; a replica that does not lead queues none.
    pub async fn resume_owed(&self) {
        let Some(store) = &self.store else { return };
        if self.term().is_none() {
            return;
        }
        match store.webhook_pending(QUEUE_CAPACITY as u32).await {
            Ok(tasks) => {
                for task in tasks {
                    self.notify(&task);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list owed webhooks; will retry"),
        }
    }

    /// [`Webhooks::resume_owed`] in the background (owned by the worker's
    /// tracker), for callers that cannot wait: another replica published a
    /// change that may have left a webhook owed.
    pub fn resume_owed_soon(self: &Arc<Self>) {
        if self.tx.is_none() || self.stop.is_cancelled() || self.term().is_none() {
            return;
        }
        let this = self.clone();
        self.tracker.spawn(async move { this.resume_owed().await });
    }

    /// The current leader term, if this replica leads.
    fn term(&self) -> Option<CancellationToken> {
        self.leader.as_ref()?.term()
    }

    /// Stops sending: attempts in flight are abandoned (their tasks stay
    /// `pending` in the store and resume after a restart). Waits at most `within`.
    pub async fn stop(&self, within: Duration) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("webhook deliveries still running at shutdown");
        }
    }

    /// A handle that sends nothing (tests of other parts).
    pub fn disabled() -> Arc<Webhooks> {
        Arc::new(Webhooks {
            tx: None,
            allow_private: false,
            metrics: Arc::new(Metrics::new()),
            owed: Arc::default(),
            store: None,
            leader: None,
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
        })
    }

    /// Queues the webhook of an ended task, if it has one. Never waits; a
    /// full queue leaves it to the next [`Webhooks::resume_owed`], and a
    /// replica that does not lead leaves it to the leader.
    pub fn notify(&self, task: &Task) {
        let (Some(tx), Some(_)) = (&self.tx, &task.webhook_url) else {
            return;
        };
        let Some(term) = self.term() else {
            tracing::debug!(task = %task.task_id, "not leading: the leader sends this webhook");
            return;
        };
        let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        if owed.contains(&task.task_id) {
            return;
        }
        match tx.try_send((task.clone(), term)) {
            Ok(()) => {
                owed.insert(task.task_id.clone());
            }
            Err(e) => {
                tracing::warn!(task = %task.task_id, error = %e, "webhook queue full; left pending in the store");
                self.metrics.webhook_delivery("dropped");
            }
        }
    }

    /// Create-time check: a literal private address is refused unless allowed.
    /// Host names are checked when sending (they may resolve differently later).
    pub fn check_url(&self, url: &str) -> Result<(), ValidationError> {
        match literal_ip(url) {
            Some(ip) if !self.allow_private && is_private(ip) => Err(ValidationError::new(
                "webhookUrl",
                format!(
                    "{ip} is a private, loopback or link-local address; such destinations are refused"
                ),
            )),
            _ => Ok(()),
        }
    }
}

async fn run_worker(
    config: WebhookConfig,
    store: Arc<dyn TaskStore>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<(Task, CancellationToken)>,
    owed: Arc<Mutex<HashSet<String>>>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
    loop {
        let (task, term) = tokio::select! {
            _ = stop.cancelled() => return,
            queued = rx.recv() => match queued { Some(q) => q, None => return },
        };
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
        };
        let config = config.clone();
        let store = store.clone();
        let metrics = metrics.clone();
        let owed = owed.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            // Abandoned at shutdown or when the term ends: the store still
            // says `pending`, and the next leader sends it.
            let ended = async {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = term.cancelled() => {}
                }
            };
            let outcome = tokio::select! {
                () = ended => None,
                outcome = async {
                    let task = still_owed(&*store, &task).await?;
                    Some(deliver(&config, &task).await)
                } => outcome,
            };
            if let Some((status, error)) = outcome {
                let result = match status {
                    WebhookStatus::Delivered => Some("delivered"),
                    WebhookStatus::Failed => Some("failed"),
                    WebhookStatus::Refused => Some("refused"),
                    WebhookStatus::Pending => None,
                };
                if let Some(result) = result {
                    metrics.webhook_delivery(result);
                }
                record(&*store, &task.task_id, status, error).await;
            }
            owed.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&task.task_id);
            drop(permit);
        });
    }
}

/// The task as the store has it now, if its webhook is still owed. A queued
/// copy can be stale: a listing of owed webhooks may have been read just
/// before another delivery of the same task recorded its outcome, and
/// sending it again would deliver the webhook twice. When the store cannot
/// say, nothing is sent now; the engine's periodic resume queues it again.
async fn still_owed(store: &dyn TaskStore, queued: &Task) -> Option<Task> {
    match store.get(&queued.task_id).await {
        Ok(Some(task)) if task.webhook_status == Some(WebhookStatus::Pending) => Some(task),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(task = %queued.task_id, error = %e, "could not read the task before its webhook; it stays owed");
            None
        }
    }
}

/// The `X-Prewarm-Delivery` value of a task's webhook: the same for every
/// attempt and after restarts, different for every task.
pub fn delivery_id(task: &Task) -> String {
    format!("{}.{}", task.task_id, task.status.as_str())
}

/// Sends one task's webhook with retries; the outcome and, if it failed, why.
pub async fn deliver(config: &WebhookConfig, task: &Task) -> (WebhookStatus, Option<String>) {
    let Some(url) = task.webhook_url.as_deref() else {
        return (WebhookStatus::Failed, Some("no webhookUrl".to_owned()));
    };
    let body = match serde_json::to_vec(&WebhookEvent {
        event: event_name(task.status).to_owned(),
        task: task.clone(),
    }) {
        Ok(b) => b,
        Err(e) => return (WebhookStatus::Failed, Some(e.to_string())),
    };
    let client = match checked_client(config, url).await {
        Ok(c) => c,
        Err(Refusal::Refused(why)) => {
            tracing::warn!(task = %task.task_id, reason = %why, "webhook refused");
            return (WebhookStatus::Refused, Some(why));
        }
        Err(Refusal::Failed(why)) => return (WebhookStatus::Failed, Some(why)),
    };
    let mut last_error = String::new();
    for attempt in 0..config.attempts.max(1) {
        if attempt > 0 {
            let wait = config.backoff.saturating_mul(1u32 << (attempt - 1).min(16));
            tokio::time::sleep(wait).await;
        }
        let mut req = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Prewarm-Event", event_name(task.status))
            .header("X-Prewarm-Delivery", delivery_id(task))
            .body(body.clone());
        if let Some(secret) = &config.secret {
            req = req.header("X-Prewarm-Signature", signature(secret.as_bytes(), &body));
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(task = %task.task_id, attempt = attempt + 1, "webhook delivered");
                return (WebhookStatus::Delivered, None);
            }
            Ok(r) => {
                last_error = format!("receiver answered {}", r.status());
                let code = r.status().as_u16();
                if r.status().is_client_error() && code != 408 && code != 429 {
                    break;
                }
            }
            Err(e) => last_error = format!("request failed: {}", without_url(&e)),
        }
        tracing::warn!(task = %task.task_id, attempt = attempt + 1, error = %last_error, "webhook attempt failed");
    }
    (WebhookStatus::Failed, Some(last_error))
}

enum Refusal {
    Refused(String),
    Failed(String),
}

/// A client bound to the destination's checked address.
async fn checked_client(config: &WebhookConfig, url: &str) -> Result<reqwest::Client, Refusal> {
    let parsed = reqwest::Url::parse(url).map_err(|e| Refusal::Failed(format!("bad URL: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| Refusal::Failed("the URL has no host".to_owned()))?
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match literal_ip(url) {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| Refusal::Failed(format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    if !config.allow_private {
        if let Some(bad) = addrs.iter().find(|a| is_private(a.ip())) {
            return Err(Refusal::Refused(format!(
                "{host} resolves to {}, a private, loopback or link-local address",
                bad.ip()
            )));
        }
    }
    let addr = *addrs
        .first()
        .ok_or_else(|| Refusal::Failed(format!("{host} has no address")))?;
    let mut builder = prewarm_cli::tls::http_client_builder()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("prewarm/", env!("CARGO_PKG_VERSION")));
    if literal_ip(url).is_none() {
        builder = builder.resolve(&host, addr);
    }
    builder
        .build()
        .map_err(|e| Refusal::Failed(format!("HTTP client: {e}")))
}

/// An error's text without the URL (it may carry credentials or tokens).
fn without_url(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(i) = e.find(" for url (") {
        e.truncate(i);
    }
    e
}

async fn record(
    store: &dyn TaskStore,
    task_id: &str,
    status: WebhookStatus,
    error: Option<String>,
) {
    match store.get(task_id).await {
        Ok(Some(mut task)) => {
            task.webhook_status = Some(status);
            task.webhook_error = error;
            let current = task.status;
            if let Err(e) = store.update_if(&task, &[current]).await {
                tracing::warn!(task = %task_id, error = %e, "could not record the webhook outcome");
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(task = %task_id, error = %e, "could not record the webhook outcome")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::{sample_task, t};
    use crate::store::MemoryStore;
    use prewarm_api::TaskStatus;
    use tokio::sync::Notify;

    /// A receiver on loopback: every delivery id it was sent, in order; it
    /// answers a request only with a permit from `release`.
    struct Receiver {
        url: String,
        got: Arc<Mutex<Vec<String>>>,
        arrived: Arc<Notify>,
        release: Arc<Semaphore>,
    }

    async fn receiver() -> Receiver {
        use axum::routing::post;
        let got: Arc<Mutex<Vec<String>>> = Arc::default();
        let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
        let app = axum::Router::new().route(
            "/hook",
            post({
                let (got, arrived, release) = (got.clone(), arrived.clone(), release.clone());
                move |headers: axum::http::HeaderMap| async move {
                    let id = headers["x-prewarm-delivery"].to_str().unwrap().to_owned();
                    got.lock().unwrap().push(id);
                    arrived.notify_one();
                    release.acquire().await.unwrap().forget();
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            got,
            arrived,
            release,
        }
    }

    async fn ended_task(store: &MemoryStore, id: &str, url: &str) -> Task {
        let mut task = sample_task(id, TaskStatus::Completed, t(0));
        task.webhook_url = Some(url.to_owned());
        task.webhook_status = Some(WebhookStatus::Pending);
        task.webhook_error = None;
        store.insert(&task).await.unwrap();
        task
    }

    async fn status(store: &MemoryStore, id: &str) -> Option<WebhookStatus> {
        store.get(id).await.unwrap().unwrap().webhook_status
    }

    fn config() -> WebhookConfig {
        WebhookConfig {
            allow_private: true,
            attempts: 1,
            ..WebhookConfig::default()
        }
    }

    #[tokio::test]
    async fn only_the_leader_sends_and_a_lost_term_leaves_the_delivery_owed() {
        let store = Arc::new(MemoryStore::new());
        let hook = receiver().await;
        let follower_ended = ended_task(&store, "task-20260101-follow", &hook.url).await;
        let leader_ended = ended_task(&store, "task-20260101-leader", &hook.url).await;
        let metrics = Arc::new(Metrics::new());
        let state = LeaderState::new("r1", metrics.clone());
        let webhooks = Webhooks::start(config(), store.clone(), metrics, state.clone());

        // A follower queues nothing, also when asked to resume what is owed.
        webhooks.notify(&follower_ended);
        webhooks.resume_owed().await;
        assert!(webhooks.owed.lock().unwrap().is_empty());

        // Leading: sent. The follower's notify queued nothing before it
        // (the queue is first in, first out), so this is the first request.
        let term = CancellationToken::new();
        state.begin(term.clone());
        webhooks.notify(&leader_ended);
        hook.arrived.notified().await;
        assert_eq!(
            *hook.got.lock().unwrap(),
            vec!["task-20260101-leader.completed"]
        );

        // The term ends while the receiver has not answered: the attempt is
        // abandoned and the delivery stays owed for the next leader.
        term.cancel();
        state.end();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // The worker stays; the delivery ends.
        while webhooks.tracker.len() > 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a delivery outlived its term"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            status(&store, "task-20260101-leader").await,
            Some(WebhookStatus::Pending)
        );
        webhooks.stop(Duration::from_secs(5)).await;
        hook.release.add_permits(8);

        // The next leader sends everything owed, the follower's task too.
        let metrics = Arc::new(Metrics::new());
        let next = LeaderState::always("r2", metrics.clone());
        let webhooks = Webhooks::start(config(), store.clone(), metrics, next);
        webhooks.resume_owed().await;
        let hook_got = hook.got.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (a, b) = (
                status(&store, "task-20260101-follow").await,
                status(&store, "task-20260101-leader").await,
            );
            if a == Some(WebhookStatus::Delivered) && b == Some(WebhookStatus::Delivered) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{a:?} {b:?} {:?}",
                hook_got.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        webhooks.stop(Duration::from_secs(5)).await;
    }

    /// Waits until no delivery of `id` is queued or under way.
    async fn settled(webhooks: &Webhooks, id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while webhooks.owed.lock().unwrap().contains(id) {
            assert!(tokio::time::Instant::now() < deadline, "{id} never settled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_stale_copy_queued_after_the_delivery_is_not_sent_again() {
        let store = Arc::new(MemoryStore::new());
        let hook = receiver().await;
        hook.release.add_permits(8);
        let ended = ended_task(&store, "task-20260101-twice", &hook.url).await;
        let metrics = Arc::new(Metrics::new());
        let webhooks = Webhooks::start(
            config(),
            store.clone(),
            metrics.clone(),
            LeaderState::always("r1", metrics),
        );
        webhooks.notify(&ended);
        settled(&webhooks, &ended.task_id).await;
        assert_eq!(
            status(&store, &ended.task_id).await,
            Some(WebhookStatus::Delivered)
        );
        // A listing of owed webhooks read before that outcome was recorded
        // (a resume racing the delivery) queues the same, still pending, copy.
        webhooks.notify(&ended);
        settled(&webhooks, &ended.task_id).await;
        assert_eq!(
            *hook.got.lock().unwrap(),
            vec!["task-20260101-twice.completed"],
            "delivered once"
        );
        webhooks.stop(Duration::from_secs(5)).await;
    }
}
