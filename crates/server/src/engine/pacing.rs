//! Registry pacing in the engine (`domain::pacing` holds the rules): tokens
//! of ended attempts go back, refusals for a rate limit (429) start the
//! registry's backoff, and each paced task learns how long its registries
//! need for the pulls it has left (its ETA).

use std::collections::BTreeMap;

use rand::Rng;
use tokio::time::Instant;

use super::task_run::TaskRun;
use super::Engine;
use crate::domain::pacing::Pacing;
use crate::metrics::{Metrics, RegistryLabels};

impl Engine {
    /// Takes in every run's ended attempts and refusals.
    pub(super) fn settle_pacing(&mut self, mono: Instant) {
        for run in self.runs.values_mut() {
            settle_run(&mut self.pacing, &self.metrics, run, mono);
        }
    }

    /// Sets `pacing_wait` of every run whose view is about to be written.
    pub(super) fn update_pacing_waits(&mut self, mono: Instant) {
        for run in self.runs.values_mut().filter(|r| r.dirty) {
            if self.pacing.is_idle(&run.spec.registry_pull_rates) {
                run.pacing_wait = None;
                continue;
            }
            let mut needed: BTreeMap<String, u64> = BTreeMap::new();
            for i in 0..run.nodes.len() {
                if run.nodes[i].is_done() || run.nodes[i].is_started() {
                    continue;
                }
                for host in run.registries_of(i) {
                    *needed.entry(host).or_default() += 1;
                }
            }
            let task = run.view.task_id.as_str();
            let rates = &run.spec.registry_pull_rates;
            run.pacing_wait = needed
                .iter()
                .map(|(host, &n)| self.pacing.time_for(task, rates, host, n, mono))
                .max()
                .filter(|w| !w.is_zero());
        }
    }

    /// A run ends: the tokens its attempts still hold go back, its own buckets go.
    pub(super) fn end_pacing(&mut self, run: &mut TaskRun, mono: Instant) {
        let holding: Vec<usize> = run.grants.keys().copied().collect();
        for i in holding {
            run.give_back(i, false);
        }
        settle_run(&mut self.pacing, &self.metrics, run, mono);
        self.pacing.task_ended(&run.view.task_id);
    }
}

/// Gives `run`'s ended attempts' tokens back and reports its refusals.
fn settle_run(pacing: &mut Pacing, metrics: &Metrics, run: &mut TaskRun, mono: Instant) {
    for (keys, completed) in run.ended_grants.drain(..) {
        pacing.release(&keys, mono);
        if completed {
            for key in &keys {
                pacing.served(&key.host, mono);
            }
        }
    }
    let mut refusals: BTreeMap<String, u32> = BTreeMap::new();
    for host in std::mem::take(&mut run.throttled) {
        *refusals.entry(host).or_default() += 1;
    }
    for (host, refused) in refusals {
        metrics
            .registry_throttled
            .get_or_create(&RegistryLabels {
                registry: host.clone(),
            })
            .inc_by(u64::from(refused));
        // The refused attempts have ended; count them with the ones still pulling from the host.
        let in_flight = refused
            + (0..run.nodes.len())
                .filter(|&i| run.nodes[i].is_started() && run.registries_of(i).contains(&host))
                .count() as u32;
        let jitter = rand::rng().random_range(0.0..1.0);
        let rates = &run.spec.registry_pull_rates;
        if let Some(wait) =
            pacing.throttled(&run.view.task_id, rates, &host, in_flight, jitter, mono)
        {
            tracing::warn!(
                task = %run.view.task_id,
                registry = %host,
                wait_s = wait.as_secs(),
                "registry refused pulls for its rate limit (429); backing off and pacing the task lower"
            );
        }
    }
}
