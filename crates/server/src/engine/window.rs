//! Admission and windows: pending tasks start (their nodes selected and
//! ordered slowest first, their first Jobs created, then stored) while
//! there is room under `--max-concurrent-nodes`, and each running task
//! keeps up to `batchSize` nodes pulling, retries first, highest priority first.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prewarm_api::{Task, TaskStatus};
use tokio::time::Instant;

use super::task_run::TaskRun;
use super::writes::{owe_webhook, put_all_records};
use super::Engine;
use crate::cluster::workload::{resolve_spec, WorkloadError};
use crate::cluster::PullJob;
use crate::domain::node_pull::{NodePhase, NodePull};
use crate::domain::node_speed::rank_longest_first;
use crate::domain::pacing::Gate;
use crate::domain::selection::{select_nodes, DiskCheck};
use crate::domain::task::TaskSpec;
use crate::metrics::StatusLabels;

/// Longest wait for a task's `fromWorkload` read at its start (the loop waits meanwhile).
const WORKLOAD_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Engine {
    /// Admits pending tasks while there is room, then hands free slots to
    /// running tasks in priority order.
    pub(super) async fn admit_and_fill(&mut self) {
        loop {
            self.fill_windows();
            if self.in_flight_total() >= self.config.max_concurrent_nodes || self.pending.is_empty()
            {
                break;
            }
            let view = self.pending.remove(0);
            self.start_task(view).await;
        }
    }

    /// Starts a pending task: selects its nodes, puts them in start order
    /// (slowest expected first) and creates its first window's Jobs; only
    /// then stores the node records (in batches) and the running view.
    ///
    /// Until that view is stored the task stays `pending` in the store. If
    /// the engine dies (or a write fails) meanwhile, the task starts again
    /// and that start adopts the Jobs already created: they are found at
    /// take-up, or their creation answers 409 (same names). Nothing is lost
    /// and no Job is created twice.
    async fn start_task(&mut self, mut view: Task) {
        let now = self.clock.now();
        let Some(spec) = self.spec_or_unrecoverable(&view).await else {
            return;
        };
        let Some(spec) = self.resolve_at_start(&mut view, spec, now).await else {
            return;
        };
        let all_nodes = self.cluster.nodes();
        let selected = select_nodes(&all_nodes, &spec);
        if let Some(resolved) = view.resolved_workload.as_mut() {
            resolved.selected_nodes = Some(selected.len() as u32);
        }
        if selected.is_empty() {
            let message = no_match_message(&spec, all_nodes.len());
            drop(all_nodes);
            self.fail_at_start(view, spec, "NoMatchingNodes", message, now)
                .await;
            return;
        }
        let disk = DiskCheck::new(&all_nodes, &spec, self.config.disk_margin);
        let nodes: Vec<NodePull> = selected
            .into_iter()
            .map(|n| NodePull::first(n, &spec, &disk, now))
            .collect();
        drop(all_nodes);
        let speeds = &self.speeds;
        let nodes = rank_longest_first(nodes, |node| {
            speeds.get(node).and_then(|s| s.expected_at(now))
        });
        let task_id = view.task_id.clone();
        view.status = TaskStatus::Running;
        view.started_at = Some(now);
        let mut run = TaskRun::new(view, spec, nodes);
        run.know_speeds(&self.speeds, now);
        run.anchor_start(now, Instant::now());
        self.adopt_prestarted(&mut run, now);
        self.runs.insert(task_id.clone(), run);
        // The first window's Jobs go out now, ahead of the bookkeeping below.
        let mut total = self.in_flight_total();
        self.fill_window(&task_id, &mut total, now, Instant::now());
        // The last call spawned waits in this worker's LIFO slot, which no
        // other worker may take: let it send before the records are encoded.
        tokio::task::yield_now().await;
        if !self.store_start(&task_id).await {
            // Still pending in the store: its next start adopts these Jobs.
            if let Some(mut run) = self.runs.remove(&task_id) {
                self.end_pacing(&mut run, Instant::now());
            }
        }
    }

    /// `spec` with its `fromWorkload` read now, unless it was read already
    /// (a schedule's or keep-warm run reads it when it fires): `view` then
    /// shows the images, pull secrets and workload resolved. A workload gone
    /// or unusable ends the task failed (`WorkloadUnresolved`); an API server
    /// that does not answer within [`WORKLOAD_READ_TIMEOUT`] leaves it
    /// pending, to be tried again at a later store check.
    async fn resolve_at_start(
        &mut self,
        view: &mut Task,
        spec: TaskSpec,
        now: DateTime<Utc>,
    ) -> Option<TaskSpec> {
        if spec.from_workload.is_none() || spec.workload.is_some() {
            return Some(spec);
        }
        let read = tokio::time::timeout(
            WORKLOAD_READ_TIMEOUT,
            resolve_spec(self.cluster.as_ref(), spec.clone(), now),
        )
        .await;
        let err = match read {
            Ok(Ok(resolved)) => {
                view.images = resolved
                    .images
                    .iter()
                    .map(|i| i.as_str().to_owned())
                    .collect();
                view.image_pull_secrets = resolved.image_pull_secrets.clone();
                view.resolved_workload = resolved.workload.clone();
                return Some(resolved);
            }
            Ok(Err(WorkloadError::Unavailable(message))) => message,
            Err(_) => format!("no answer within {WORKLOAD_READ_TIMEOUT:?}"),
            Ok(Err(err)) => {
                let message =
                    format!("fromWorkload could not be used when the task started: {err}");
                self.fail_at_start(view.clone(), spec, "WorkloadUnresolved", message, now)
                    .await;
                return None;
            }
        };
        tracing::warn!(task = %view.task_id, error = %err, "could not read the task's workload; it stays pending");
        None
    }

    /// Ends a pending task `failed` with `reason` before any Job was created.
    async fn fail_at_start(
        &mut self,
        view: Task,
        spec: TaskSpec,
        reason: &str,
        message: String,
        now: DateTime<Utc>,
    ) {
        let mut run = TaskRun::new(view, spec, Vec::new());
        run.view.started_at = Some(now);
        run.finish(TaskStatus::Failed, Some((reason, message)), now);
        owe_webhook(&mut run.view);
        match self
            .store
            .update_if(&run.view, &[TaskStatus::Pending])
            .await
        {
            Ok(true) => {
                self.progress.publish(&run.view);
                self.webhooks.notify(&run.view);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(task = %run.view.task_id, error = %e, "could not store task end")
            }
        }
        self.metrics
            .tasks_total
            .get_or_create(&StatusLabels {
                status: "failed".into(),
            })
            .inc();
        tracing::info!(task = %run.view.task_id, reason, "task failed at its start");
    }

    /// Stores a started run: its node records in batches, then its view as
    /// `running` (if still `pending`). False if the task did not start after
    /// all (cancelled meanwhile: its Jobs go; a failed write: retried later).
    async fn store_start(&mut self, task_id: &str) -> bool {
        let now = self.clock.now();
        let Some(run) = self.runs.get_mut(task_id) else {
            return false;
        };
        if let Err(e) = put_all_records(self.store.as_ref(), task_id, &run.nodes).await {
            tracing::error!(task = %task_id, error = %e, "could not store selected nodes; will retry");
            return false;
        }
        run.refresh_view(now);
        match self
            .store
            .update_if(&run.view, &[TaskStatus::Pending])
            .await
        {
            Ok(true) => {
                self.progress.publish(&run.view);
                tracing::info!(task = %task_id, nodes = run.nodes.len(), "task started");
                self.metrics.progressed();
                run.dirty = false;
                true
            }
            Ok(false) => {
                // Cancelled before it started.
                self.calls.delete_task_jobs(task_id.to_owned());
                false
            }
            Err(e) => {
                tracing::error!(task = %task_id, error = %e, "could not start task");
                false
            }
        }
    }

    /// Adopts the Jobs an earlier, cut-short start of this task left running
    /// (found at take-up); Jobs of nodes it no longer pulls on go.
    fn adopt_prestarted(&mut self, run: &mut TaskRun, now: DateTime<Utc>) {
        let Some(jobs) = self.prestarted.remove(&run.view.task_id) else {
            return;
        };
        let mut stale = Vec::new();
        for job in jobs {
            match run.index.get(&job.node) {
                Some(&i)
                    if matches!(run.nodes[i].phase, NodePhase::Waiting)
                        && job.attempt == run.nodes[i].attempt =>
                {
                    run.nodes[i].adopt(job.attempt, now);
                    run.in_flight += 1;
                    run.confirmed.insert(i, Instant::now());
                }
                _ => stale.push((None, job.name)),
            }
        }
        tracing::info!(task = %run.view.task_id, adopted = run.in_flight, "adopted the Jobs of an interrupted start");
        self.calls.delete_jobs(stale);
    }

    /// Starts nodes in every task's window, highest priority first, within
    /// the global cap and the registries' pull tokens.
    fn fill_windows(&mut self) {
        let now = self.clock.now();
        let mono = Instant::now();
        self.settle_pacing(mono);
        let mut order: Vec<(i32, DateTime<Utc>, String)> = self
            .runs
            .values()
            .map(|r| (r.view.priority, r.view.created_at, r.view.task_id.clone()))
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut total = self.in_flight_total();
        for (_, _, id) in order {
            if total >= self.config.max_concurrent_nodes {
                break;
            }
            self.fill_window(&id, &mut total, now, mono);
        }
    }

    /// Starts nodes in task `id`'s window while the global cap allows
    /// (`total` is the count in flight across tasks, kept current).
    fn fill_window(&mut self, id: &str, total: &mut usize, now: DateTime<Utc>, mono: Instant) {
        let Some(run) = self.runs.get_mut(id) else {
            return;
        };
        let window = run.window();
        let cap = self.config.max_concurrent_nodes;
        let paced = !self.pacing.is_idle(&run.spec.registry_pull_rates);
        let mut starts = Vec::new();
        let mut blocked_retries = 0u32;
        // Retries whose wait is over come first, then nodes held back for
        // registry tokens, then never-started nodes in order.
        let retries: Vec<usize> = (0..run.nodes.len())
            .filter(|&i| run.nodes[i].started && run.ready(i, now, mono))
            .collect();
        for i in retries {
            if run.in_flight >= window || *total >= cap {
                break;
            }
            if paced {
                let hosts = run.registries_of(i);
                let rates = &run.spec.registry_pull_rates;
                match self.pacing.gate(&run.view.task_id, rates, &hosts, mono) {
                    Gate::Closed => {
                        blocked_retries += 1;
                        continue;
                    }
                    Gate::Open(keys) => {
                        self.pacing.take(&keys);
                        run.grants.insert(i, keys);
                    }
                }
            }
            starts.push(i);
            run.in_flight += 1;
            *total += 1;
        }
        if paced {
            let groups: Vec<Vec<String>> = run.held_back.keys().cloned().collect();
            for hosts in groups {
                let rates = &run.spec.registry_pull_rates;
                let group = run.held_back.get_mut(&hosts).expect("group listed");
                while run.in_flight < window && *total < cap {
                    let Some((i, since)) = group.pop_first() else {
                        break;
                    };
                    if run.nodes[i].started || run.nodes[i].is_done() {
                        continue;
                    }
                    match self.pacing.gate(&run.view.task_id, rates, &hosts, mono) {
                        Gate::Closed => {
                            group.insert(i, since);
                            break;
                        }
                        Gate::Open(keys) => {
                            self.pacing.take(&keys);
                            run.grants.insert(i, keys);
                            self.metrics
                                .registry_wait
                                .observe(mono.duration_since(since).as_secs_f64());
                            starts.push(i);
                            run.in_flight += 1;
                            *total += 1;
                        }
                    }
                }
                if group.is_empty() {
                    run.held_back.remove(&hosts);
                }
            }
        }
        while run.in_flight < window && *total < cap && run.cursor < run.nodes.len() {
            let i = run.cursor;
            if !run.nodes[i].started && run.ready(i, now, mono) {
                if paced {
                    let hosts = run.registries_of(i);
                    let rates = &run.spec.registry_pull_rates;
                    match self.pacing.gate(&run.view.task_id, rates, &hosts, mono) {
                        Gate::Closed => {
                            run.held_back
                                .entry(hosts)
                                .or_default()
                                .entry(i)
                                .or_insert(mono);
                            run.cursor += 1;
                            continue;
                        }
                        Gate::Open(keys) => {
                            self.pacing.take(&keys);
                            run.grants.insert(i, keys);
                        }
                    }
                }
                starts.push(i);
                run.in_flight += 1;
                *total += 1;
            } else if !run.nodes[i].started && !run.nodes[i].is_done() {
                // A node waiting on a failed create: look again on the next pass.
                break;
            }
            run.cursor += 1;
        }
        let waiting = blocked_retries + run.held_back.values().map(|g| g.len() as u32).sum::<u32>();
        if waiting != run.waiting_for_registry {
            run.waiting_for_registry = waiting;
            run.dirty = true;
        }
        for i in starts {
            let attempt = run.nodes[i].start(now);
            run.set_timer(i, mono);
            run.attempt_started.insert(i, now);
            run.dirty = true;
            let job = PullJob {
                task_id: run.view.task_id.clone(),
                task_suffix: run.id.suffix().to_owned(),
                node: run.nodes[i].node.clone(),
                attempt,
                images: run.nodes[i]
                    .pending_images()
                    .into_iter()
                    .map(|ix| (ix, run.pull_reference(ix)))
                    .collect(),
                pull_policy: run.spec.pull_policy.as_str().to_owned(),
                image_pull_secrets: run.spec.image_pull_secrets.clone(),
                priority_class_name: run.spec.priority_class_name.clone(),
                helper_image: self.config.helper_image.clone(),
                active_deadline_seconds: self.config.pull_timeout.as_secs().max(1) as i64,
            };
            self.calls.create(run.view.task_id.clone(), i, attempt, job);
        }
    }
}

fn no_match_message(spec: &TaskSpec, cluster_nodes: usize) -> String {
    let selector: BTreeMap<&str, &str> = spec
        .node_selector
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    format!(
        "no Ready, schedulable node matches nodeSelector {selector:?}{}{} ({cluster_nodes} nodes in the cluster)",
        if spec.node_names.is_empty() {
            String::new()
        } else {
            format!(" and nodeNames {:?}", spec.node_names)
        },
        if spec.tolerate_taints {
            ""
        } else {
            " without NoSchedule/NoExecute taints"
        },
    )
}
