//! Following the store's change channels (Redis pub/sub).

use std::time::Duration;

use futures::StreamExt;
use prewarm_api::Task;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::Keys;

/// Least and most wait before subscribing again after Redis went away.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long one subscribe attempt may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One thing another replica (or this one) changed.
#[derive(Debug, Clone)]
pub enum Change {
    /// A task was created or cancelled (its id).
    Task(String),
    /// A task view was written by another replica.
    View(Box<Task>),
    /// A schedule was created, changed or deleted (its id).
    Schedule(String),
    /// A keep-warm policy was created, changed or deleted (its id).
    Policy(String),
    /// The subscription was re-established after a loss: anything may have
    /// changed meanwhile.
    Resubscribed,
}

/// A subscription to the store's change channels; see [`Changes::run`].
pub struct Changes {
    client: redis::Client,
    keys: Keys,
    replica: String,
}

impl Changes {
    pub(super) fn new(client: redis::Client, keys: Keys, replica: String) -> Changes {
        Changes {
            client,
            keys,
            replica,
        }
    }

    /// Hands every change to `on_change` until `stop` is cancelled,
    /// subscribing again (with growing, jittered waits) whenever Redis goes away.
    pub async fn run(self, stop: CancellationToken, mut on_change: impl FnMut(Change) + Send) {
        let (wake, views, schedules, policies) = (
            self.keys.wake_channel(),
            self.keys.views_channel(),
            self.keys.schedules_channel(),
            self.keys.policies_channel(),
        );
        let own_views = format!("{}\n", self.replica);
        let mut delay = RETRY_MIN;
        let mut lost = false;
        loop {
            let subscribed = tokio::select! {
                () = stop.cancelled() => return,
                subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
                    let mut pubsub = self.client.get_async_pubsub().await?;
                    pubsub.subscribe(&[&wake, &views, &schedules, &policies]).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                }) => subscribed,
            };
            match subscribed {
                Ok(Ok(mut pubsub)) => {
                    delay = RETRY_MIN;
                    if lost {
                        tracing::info!("subscribed to the store's changes again");
                        on_change(Change::Resubscribed);
                    }
                    let mut messages = pubsub.on_message();
                    loop {
                        let message = tokio::select! {
                            () = stop.cancelled() => return,
                            message = messages.next() => message,
                        };
                        let Some(message) = message else { break };
                        let channel = message.get_channel_name();
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        if channel == wake {
                            on_change(Change::Task(payload));
                        } else if channel == schedules {
                            on_change(Change::Schedule(payload));
                        } else if channel == policies {
                            on_change(Change::Policy(payload));
                        } else if channel == views && !payload.starts_with(&own_views) {
                            let json = payload.split_once('\n').map_or("", |(_, json)| json);
                            match serde_json::from_str::<Task>(json) {
                                Ok(task) => on_change(Change::View(Box::new(task))),
                                Err(err) => {
                                    tracing::warn!(error = %err, "undecodable task view on the views channel");
                                }
                            }
                        }
                    }
                    tracing::warn!("lost the store's change subscription; subscribing again");
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cannot subscribe to the store's changes; retrying");
                }
                Err(_) => {
                    tracing::warn!("subscribing to the store's changes timed out; retrying");
                }
            }
            lost = true;
            let jitter = rand::rng().random_range(0.5..1.5);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay.mul_f64(jitter)) => {}
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }
}
