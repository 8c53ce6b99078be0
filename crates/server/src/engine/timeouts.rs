//! Timeouts on the monotonic clock: a node's attempt that pulls longer
//! than `--pull-timeout`, and a task past its `timeoutSeconds`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::Engine;
use crate::domain::node_pull::TIMEOUT_REASON;

impl Engine {
    /// Pull timeouts, task timeouts.
    pub(super) fn check_timers(&mut self, now: DateTime<Utc>, mono: Instant) {
        let pull_timeout = self.config.pull_timeout;
        for run in self.runs.values_mut() {
            let limit = Duration::from_secs(run.spec.timeout_seconds);
            if run.spec.timeout_seconds > 0
                && mono.duration_since(run.started) > limit
                && !run.all_done()
            {
                let message = format!(
                    "task did not finish within timeoutSeconds={}",
                    run.spec.timeout_seconds
                );
                for i in 0..run.nodes.len() {
                    if !run.nodes[i].is_done() {
                        let was_started = run.nodes[i].is_started();
                        run.nodes[i].abort(TIMEOUT_REASON, &message, now);
                        if was_started {
                            run.attempt_ended(i);
                        } else {
                            run.unrecorded.insert(i);
                        }
                    }
                }
                run.view.reason = Some(TIMEOUT_REASON.to_owned());
                run.view.error_message = Some(message);
                run.dirty = true;
                continue;
            }
            for i in 0..run.nodes.len() {
                if !run.nodes[i].is_started() {
                    continue;
                }
                if let Some(since) = run.timer(i, now, mono) {
                    if mono.duration_since(since) > pull_timeout {
                        let spec = run.spec.clone();
                        let message = format!(
                            "image pulls did not finish within {}s",
                            self.config.pull_timeout.as_secs()
                        );
                        run.nodes[i].fail_attempt(TIMEOUT_REASON, &message, &spec, now);
                        run.attempt_ended(i);
                    }
                }
            }
        }
    }
}
