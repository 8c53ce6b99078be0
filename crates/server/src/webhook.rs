//! End-of-task webhooks: the engine hands each ended task to [`Webhooks::notify`],
//! which only queues it (bounded; never blocks the engine). A worker POSTs
//! `{"event", "task"}` to the task's `webhookUrl`, signed when a secret is set,
//! retrying with exponential backoff, and records the outcome on the task
//! (`webhookStatus`, `webhookError`).
//!
//! SSRF guard: the destination host is resolved once, every address checked
//! against [`is_private`], and the request is made to the checked address
//! (so a second DNS answer cannot redirect it). Redirects are not followed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prewarm_api::{Task, WebhookEvent, WebhookStatus};
use tokio::sync::{mpsc, Semaphore};

use crate::domain::task::ValidationError;
use crate::domain::webhook_target::{event_name, is_private, literal_ip, signature};
use crate::metrics::Metrics;
use crate::store::TaskStore;

/// Tasks waiting for their webhook; beyond this, new ones are dropped (logged).
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
#[derive(Debug)]
pub struct Webhooks {
    tx: Option<mpsc::Sender<Task>>,
    allow_private: bool,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// Starts the delivery worker (needs a Tokio runtime).
    /// Outcomes are counted in `prewarm_webhook_deliveries_total`.
    pub fn start(
        config: WebhookConfig,
        store: Arc<dyn TaskStore>,
        metrics: Arc<Metrics>,
    ) -> Arc<Webhooks> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let allow_private = config.allow_private;
        tokio::spawn(run_worker(config, store, metrics.clone(), rx));
        Arc::new(Webhooks {
            tx: Some(tx),
            allow_private,
            metrics,
        })
    }

    /// A handle that sends nothing (tests of other parts).
    pub fn disabled() -> Arc<Webhooks> {
        Arc::new(Webhooks {
            tx: None,
            allow_private: false,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// Queues the webhook of an ended task, if it has one. Never waits.
    pub fn notify(&self, task: &Task) {
        let (Some(tx), Some(_)) = (&self.tx, &task.webhook_url) else {
            return;
        };
        if let Err(e) = tx.try_send(task.clone()) {
            tracing::warn!(task = %task.task_id, error = %e, "webhook queue full; event dropped");
            self.metrics.webhook_delivery("dropped");
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
    mut rx: mpsc::Receiver<Task>,
) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
    while let Some(task) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let config = config.clone();
        let store = store.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let (status, error) = deliver(&config, &task).await;
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
            drop(permit);
        });
    }
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
    let mut builder = reqwest::Client::builder()
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
