//! The behaviour every `TaskStore` backend must show, as one test suite.
//!
//! Each `pub(crate) async fn` here checks one behaviour against a fresh store.
//! A backend runs the whole suite with [`store_contract_tests!`]:
//!
//! ```ignore
//! #[cfg(test)]
//! mod tests {
//!     use super::MemoryStore;
//!     crate::store::contract::store_contract_tests!(MemoryStore::new());
//! }
//! ```
//!
//! or, when the store needs something kept alive for the length of a test
//! (a temporary directory), `store_contract_tests!(guarded: make())` where
//! `make()` returns `(store, guard)`.
//!
//! The macro is reached by path (`pub(crate) use` below), so the order of the
//! `mod` declarations in `store/mod.rs` does not matter.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use prewarm_api::{
    FailedNodeDetail, ImageStatus, Progress, PullPolicy, RetryStrategy, SkippedNodeDetail, Task,
    TaskStatus,
};
use serde_json::json;

use super::{CancelOutcome, NodeRecord, Retention, StoreError, TaskStore};

/// Expands to one `#[tokio::test]` per contract behaviour, each on a fresh store.
///
/// `store_contract_tests!(expr)`: `expr` builds a store.
/// `store_contract_tests!(guarded: expr)`: `expr` builds `(store, guard)`; the
/// guard is dropped after the store, at the end of the test.
macro_rules! store_contract_tests {
    (guarded: $make:expr) => {
        $crate::store::contract::store_contract_tests!(@tests $make;
            insert_get_round_trip,
            insert_duplicate_is_rejected,
            list_is_newest_first_and_pages,
            list_breaks_created_at_ties_by_id,
            list_filters_by_status,
            list_with_status_returns_exactly_the_matching_tasks,
            update_if_writes_only_on_expected_status,
            update_if_does_not_overwrite_a_cancellation,
            cancel_outcomes,
            put_nodes_inserts_and_replaces,
            put_nodes_for_unknown_task_fails,
            nodes_do_not_leak_between_tasks,
            ping_is_ok,
            concurrent_writers_lose_nothing,
            trim_deletes_oldest_ended_tasks_and_their_nodes,
            trim_honours_the_age_limit_and_batch,
            trim_counts_age_from_the_end_of_a_task,
            webhook_pending_lists_owed_deliveries,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (store, _guard) = $make;
                $crate::store::contract::$name(store).await;
            }
        )+
    };
    ($make:expr) => {
        $crate::store::contract::store_contract_tests!(guarded: ($make, ()));
    };
}

pub(crate) use store_contract_tests;

/// A fixed instant plus `secs` seconds, with a nanosecond part that a lossy
/// timestamp encoding would not keep.
pub(crate) fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600 + secs, 123_456_789)
        .single()
        .expect("valid timestamp")
}

/// A task with every field set to a non-default value.
pub(crate) fn sample_task(id: &str, status: TaskStatus, created_at: DateTime<Utc>) -> Task {
    Task {
        task_id: id.to_owned(),
        status,
        images: vec![
            "registry.example.com/team/app:1.2.3".to_owned(),
            "docker.io/library/nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                .to_owned(),
        ],
        batch_size: 25,
        node_selector: BTreeMap::from([
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("pool".to_owned(), "gpu \"a100\"".to_owned()),
        ]),
        node_names: vec!["node-a".to_owned(), "nöde-ü".to_owned()],
        priority: -17,
        max_retries: 3,
        retry_strategy: RetryStrategy::Exponential,
        retry_delay: 45,
        webhook_url: Some("https://hooks.example.com/prewarm?x=1&y=2".to_owned()),
        pull_policy: PullPolicy::Always,
        image_pull_secrets: vec!["regcred".to_owned(), "other".to_owned()],
        tolerate_taints: false,
        pin_digests: true,
        timeout_seconds: 7_200,
        priority_class_name: Some("system-node-critical".to_owned()),
        from_workload: None,
        resolved_workload: None,
        trigger: prewarm_api::TaskTrigger::KeepWarm,
        keep_warm_policy_id: Some("keep-warm-20240116-abc123".to_owned()),
        registry_pull_rate: Default::default(),
        progress: Progress {
            total_nodes: 120,
            completed_nodes: 40,
            failed_nodes: 2,
            skipped_nodes: 1,
            current_batch: 3,
            total_batches: 5,
            percentage: 33.6,
            waiting_for_registry: 7,
        },
        failed_node_details: vec![
            FailedNodeDetail {
                node_name: "node-f1".to_owned(),
                image: "registry.example.com/team/app:1.2.3".to_owned(),
                reason: "ErrImagePull".to_owned(),
                message: "manifest unknown\nsecond line".to_owned(),
                timestamp: created_at + Duration::seconds(30),
            },
            FailedNodeDetail {
                node_name: "node-f2".to_owned(),
                image: "docker.io/library/nginx".to_owned(),
                reason: "Timeout".to_owned(),
                message: "no progress for 600s".to_owned(),
                timestamp: created_at + Duration::nanoseconds(31_000_000_001),
            },
        ],
        failed_node_details_total: 2,
        skipped_node_details: vec![SkippedNodeDetail {
            node_name: "node-s1".to_owned(),
            reason: "NodeGone".to_owned(),
            message: "node deleted".to_owned(),
            timestamp: created_at + Duration::seconds(12),
        }],
        image_statuses: vec![
            ImageStatus {
                image: "registry.example.com/team/app:1.2.3".to_owned(),
                completed_nodes: 40,
                failed_nodes: 1,
                digests: vec!["sha256:1111".to_owned(), "sha256:2222".to_owned()],
                pinned_digest: Some("sha256:1111".to_owned()),
                digest_drift: true,
            },
            ImageStatus {
                image: "docker.io/library/nginx".to_owned(),
                completed_nodes: 41,
                failed_nodes: 1,
                digests: vec![],
                pinned_digest: None,
                digest_drift: false,
            },
        ],
        reason: Some("Timeout".to_owned()),
        error_message: Some("task exceeded timeoutSeconds".to_owned()),
        created_by: "alice".to_owned(),
        created_at,
        started_at: Some(created_at + Duration::seconds(1)),
        finished_at: Some(created_at + Duration::seconds(300)),
        estimated_completion: Some(created_at + Duration::seconds(600)),
        webhook_status: None,
        webhook_error: None,
    }
}

/// A task as the API creates it: optional values absent, collections empty.
pub(crate) fn minimal_task(id: &str, status: TaskStatus, created_at: DateTime<Utc>) -> Task {
    Task {
        task_id: id.to_owned(),
        status,
        images: vec!["nginx".to_owned()],
        batch_size: 10,
        node_selector: BTreeMap::new(),
        node_names: vec![],
        priority: 0,
        max_retries: 0,
        retry_strategy: RetryStrategy::Fixed,
        retry_delay: 30,
        webhook_url: None,
        pull_policy: PullPolicy::IfNotPresent,
        image_pull_secrets: vec![],
        tolerate_taints: true,
        pin_digests: false,
        timeout_seconds: 0,
        priority_class_name: None,
        from_workload: None,
        resolved_workload: None,
        trigger: prewarm_api::TaskTrigger::Api,
        keep_warm_policy_id: None,
        registry_pull_rate: Default::default(),
        progress: Progress::default(),
        failed_node_details: vec![],
        failed_node_details_total: 0,
        skipped_node_details: vec![],
        image_statuses: vec![],
        reason: None,
        error_message: None,
        created_by: "anonymous".to_owned(),
        created_at,
        started_at: None,
        finished_at: None,
        estimated_completion: None,
        webhook_status: None,
        webhook_error: None,
    }
}

/// A node record with a small nested body.
pub(crate) fn record(node: &str, attempt: u32) -> NodeRecord {
    NodeRecord {
        node: node.to_owned(),
        body: json!({
            "node": node,
            "attempt": attempt,
            "images": [{"image": "nginx", "state": "Pulled", "digest": "sha256:abc"}],
            "retryAt": null,
        }),
    }
}

/// Node records in node-name order (the trait promises no order).
pub(crate) fn sorted_nodes(mut records: Vec<NodeRecord>) -> Vec<NodeRecord> {
    records.sort_by(|a, b| a.node.cmp(&b.node));
    records
}

fn ids(tasks: &[Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.task_id.as_str()).collect()
}

fn sorted_ids(tasks: &[Task]) -> Vec<&str> {
    let mut ids = ids(tasks);
    ids.sort_unstable();
    ids
}

/// A full task comes back exactly as stored; a missing id is `None`.
pub(crate) async fn insert_get_round_trip<S: TaskStore>(store: S) {
    let full = sample_task("task-20260101-full01", TaskStatus::Running, t(0));
    let minimal = minimal_task("task-20260101-min001", TaskStatus::Pending, t(1));
    store.insert(&full).await.unwrap();
    store.insert(&minimal).await.unwrap();

    assert_eq!(store.get(&full.task_id).await.unwrap(), Some(full.clone()));
    assert_eq!(store.get(&minimal.task_id).await.unwrap(), Some(minimal));
    assert_eq!(store.get("task-20260101-nope00").await.unwrap(), None);
}

/// Inserting an existing id fails with `Duplicate` and keeps the original.
pub(crate) async fn insert_duplicate_is_rejected<S: TaskStore>(store: S) {
    let original = sample_task("task-20260101-dup001", TaskStatus::Pending, t(0));
    store.insert(&original).await.unwrap();

    let mut other = minimal_task(&original.task_id, TaskStatus::Running, t(50));
    other.priority = 999;
    let err = store.insert(&other).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate(id) if *id == original.task_id),
        "expected Duplicate, got {err:?}"
    );
    assert_eq!(store.get(&original.task_id).await.unwrap(), Some(original));
    assert_eq!(store.list(None, 10, 0).await.unwrap().1, 1);
}

/// Seven tasks inserted out of order; two share a `createdAt`.
/// Returns them in the expected newest-first order.
async fn insert_seven<S: TaskStore>(store: &S) -> Vec<Task> {
    let statuses = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::Running,
        TaskStatus::Pending,
    ];
    // (id, created_at offset, status index), in insertion order.
    let spec: [(&str, i64, usize); 7] = [
        ("task-20260101-cccccc", 30, 0),
        ("task-20260101-aaaaaa", 10, 1),
        ("task-20260101-gggggg", 70, 2),
        ("task-20260101-bbbbbb", 30, 3), // same createdAt as cccccc
        ("task-20260101-eeeeee", 5, 4),
        ("task-20260101-ffffff", 60, 5),
        ("task-20260101-dddddd", -100, 6), // created before the others
    ];
    let mut tasks = Vec::new();
    for (id, secs, status) in spec {
        let task = sample_task(id, statuses[status], t(secs));
        store.insert(&task).await.unwrap();
        tasks.push(task);
    }
    // One nanosecond newer than aaaaaa but with a smaller id: only a time key
    // that keeps full precision puts it first.
    let mut close = minimal_task("task-20260101-a00000", TaskStatus::Running, t(10));
    close.created_at += Duration::nanoseconds(1);
    store.insert(&close).await.unwrap();
    tasks.push(close);

    tasks.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.task_id.cmp(&a.task_id))
    });
    tasks
}

/// Newest (`createdAt`, then id) first; pages tile the full list; `total`
/// ignores paging.
pub(crate) async fn list_is_newest_first_and_pages<S: TaskStore>(store: S) {
    let expected = insert_seven(&store).await;
    assert_eq!(
        ids(&expected),
        [
            "task-20260101-gggggg",
            "task-20260101-ffffff",
            "task-20260101-cccccc",
            "task-20260101-bbbbbb",
            "task-20260101-a00000",
            "task-20260101-aaaaaa",
            "task-20260101-eeeeee",
            "task-20260101-dddddd",
        ],
        "fixture order"
    );

    let (all, total) = store.list(None, 100, 0).await.unwrap();
    assert_eq!(total, 8);
    assert_eq!(all, expected, "full views, newest first");

    let mut paged = Vec::new();
    for offset in [0u64, 3, 6] {
        let (page, total) = store.list(None, 3, offset).await.unwrap();
        assert_eq!(total, 8, "total at offset {offset}");
        assert!(page.len() <= 3);
        paged.extend(page);
    }
    assert_eq!(ids(&paged), ids(&expected));

    let (page, total) = store.list(None, 2, 7).await.unwrap();
    assert_eq!((ids(&page), total), (vec!["task-20260101-dddddd"], 8));
    let (page, total) = store.list(None, 10, 8).await.unwrap();
    assert_eq!((page.len(), total), (0, 8));
    let (page, total) = store.list(None, 10, u64::MAX).await.unwrap();
    assert_eq!((page.len(), total), (0, 8));
    let (page, total) = store.list(None, 0, 0).await.unwrap();
    assert_eq!((page.len(), total), (0, 8));
}

/// Tasks created at the same instant come highest id first.
pub(crate) async fn list_breaks_created_at_ties_by_id<S: TaskStore>(store: S) {
    let scrambled = ["k3", "k0", "k5", "k1", "k4", "k2"];
    for suffix in scrambled {
        let status = if suffix < "k3" {
            TaskStatus::Pending
        } else {
            TaskStatus::Running
        };
        store
            .insert(&minimal_task(
                &format!("task-20260101-tie0{suffix}"),
                status,
                t(7),
            ))
            .await
            .unwrap();
    }
    let (page, _) = store.list(None, 10, 0).await.unwrap();
    assert_eq!(
        ids(&page),
        [
            "task-20260101-tie0k5",
            "task-20260101-tie0k4",
            "task-20260101-tie0k3",
            "task-20260101-tie0k2",
            "task-20260101-tie0k1",
            "task-20260101-tie0k0",
        ]
    );
    let (page, total) = store.list(Some(TaskStatus::Pending), 2, 1).await.unwrap();
    assert_eq!(
        (ids(&page), total),
        (vec!["task-20260101-tie0k1", "task-20260101-tie0k0"], 3)
    );
}

/// A status filter limits both the page and the total; order is kept.
pub(crate) async fn list_filters_by_status<S: TaskStore>(store: S) {
    assert_eq!(
        store
            .list(Some(TaskStatus::Running), 10, 0)
            .await
            .unwrap()
            .1,
        0,
        "empty store"
    );
    insert_seven(&store).await;

    let (running, total) = store.list(Some(TaskStatus::Running), 100, 0).await.unwrap();
    assert_eq!(total, 3);
    assert!(running.iter().all(|t| t.status == TaskStatus::Running));
    assert_eq!(
        ids(&running),
        [
            "task-20260101-ffffff",
            "task-20260101-a00000",
            "task-20260101-aaaaaa"
        ]
    );

    let (page, total) = store.list(Some(TaskStatus::Running), 1, 1).await.unwrap();
    assert_eq!((ids(&page), total), (vec!["task-20260101-a00000"], 3));

    let (pending, total) = store.list(Some(TaskStatus::Pending), 10, 0).await.unwrap();
    assert_eq!(
        (ids(&pending), total),
        (vec!["task-20260101-cccccc", "task-20260101-dddddd"], 2)
    );

    for status in [
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ] {
        let (page, total) = store.list(Some(status), 10, 0).await.unwrap();
        assert_eq!(total, 1, "{status}");
        assert_eq!(page.len(), 1, "{status}");
        assert_eq!(page[0].status, status);
    }

    // Once nothing is live, filtering on a live status finds nothing.
    for task in store
        .list_with_status(&[TaskStatus::Pending, TaskStatus::Running])
        .await
        .unwrap()
    {
        store.cancel(&task.task_id, t(1_000)).await.unwrap();
    }
    let (page, total) = store.list(Some(TaskStatus::Pending), 10, 0).await.unwrap();
    assert_eq!((page.len(), total), (0, 0));
    let (page, total) = store.list(Some(TaskStatus::Cancelled), 2, 0).await.unwrap();
    assert_eq!((page.len(), total), (2, 6));
}

/// `list_with_status` returns every task in one of the statuses, full views.
pub(crate) async fn list_with_status_returns_exactly_the_matching_tasks<S: TaskStore>(store: S) {
    let all = insert_seven(&store).await;

    let live = store
        .list_with_status(&[TaskStatus::Pending, TaskStatus::Running])
        .await
        .unwrap();
    assert_eq!(
        sorted_ids(&live),
        [
            "task-20260101-a00000",
            "task-20260101-aaaaaa",
            "task-20260101-cccccc",
            "task-20260101-dddddd",
            "task-20260101-ffffff",
        ]
    );
    for task in &live {
        let original = all.iter().find(|t| t.task_id == task.task_id).unwrap();
        assert_eq!(task, original);
    }

    let ended = store
        .list_with_status(&[
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ])
        .await
        .unwrap();
    assert_eq!(ended.len(), 3);
    assert!(ended.iter().all(|t| t.status.is_terminal()));

    assert_eq!(
        store
            .list_with_status(&TaskStatus::ALL)
            .await
            .unwrap()
            .len(),
        8
    );
    assert!(store.list_with_status(&[]).await.unwrap().is_empty());
}

/// `update_if` writes the whole view only when the stored status is expected,
/// and says whether it wrote; queries see the new status.
pub(crate) async fn update_if_writes_only_on_expected_status<S: TaskStore>(store: S) {
    let pending = minimal_task("task-20260101-upd001", TaskStatus::Pending, t(0));
    store.insert(&pending).await.unwrap();

    // Wrong expectation: nothing changes.
    let mut completed = sample_task(&pending.task_id, TaskStatus::Completed, t(0));
    assert!(!store
        .update_if(&completed, &[TaskStatus::Running])
        .await
        .unwrap());
    assert!(!store.update_if(&completed, &[]).await.unwrap());
    assert_eq!(
        store.get(&pending.task_id).await.unwrap(),
        Some(pending.clone())
    );

    // Right expectation: the whole view is replaced.
    let mut running = sample_task(&pending.task_id, TaskStatus::Running, t(0));
    running.priority = 500;
    running.finished_at = None;
    assert!(store
        .update_if(&running, &[TaskStatus::Pending, TaskStatus::Running])
        .await
        .unwrap());
    assert_eq!(
        store.get(&pending.task_id).await.unwrap(),
        Some(running.clone())
    );
    assert_eq!(
        ids(&store
            .list(Some(TaskStatus::Running), 10, 0)
            .await
            .unwrap()
            .0),
        [pending.task_id.as_str()]
    );
    assert_eq!(
        store
            .list(Some(TaskStatus::Pending), 10, 0)
            .await
            .unwrap()
            .1,
        0
    );

    // Running -> running progress update, then running -> completed.
    running.progress.completed_nodes = 99;
    assert!(store
        .update_if(&running, &[TaskStatus::Running])
        .await
        .unwrap());
    completed.progress.completed_nodes = 120;
    assert!(store
        .update_if(&completed, &[TaskStatus::Running])
        .await
        .unwrap());
    assert_eq!(
        store.get(&pending.task_id).await.unwrap(),
        Some(completed.clone())
    );
    assert_eq!(
        store
            .list_with_status(&[TaskStatus::Completed])
            .await
            .unwrap(),
        vec![completed]
    );

    // An unknown id is not created.
    let ghost = minimal_task("task-20260101-ghost0", TaskStatus::Running, t(1));
    assert!(!store.update_if(&ghost, &TaskStatus::ALL).await.unwrap());
    assert_eq!(store.get(&ghost.task_id).await.unwrap(), None);
    assert_eq!(store.list(None, 10, 0).await.unwrap().1, 1);
}

/// The engine's running update loses against a cancellation made meanwhile.
pub(crate) async fn update_if_does_not_overwrite_a_cancellation<S: TaskStore>(store: S) {
    let task = minimal_task("task-20260101-upd002", TaskStatus::Running, t(0));
    store.insert(&task).await.unwrap();
    let cancelled = match store.cancel(&task.task_id, t(5)).await.unwrap() {
        CancelOutcome::Cancelled(view) => view,
        other => panic!("expected Cancelled, got {other:?}"),
    };

    let mut engine_view = task.clone();
    engine_view.progress.completed_nodes = 7;
    assert!(!store
        .update_if(&engine_view, &[TaskStatus::Pending, TaskStatus::Running])
        .await
        .unwrap());
    let stored = store.get(&task.task_id).await.unwrap().unwrap();
    assert_eq!(stored, cancelled);
    assert_eq!(stored.status, TaskStatus::Cancelled);
    assert_eq!(stored.progress.completed_nodes, 0);
}

/// `cancel` on pending/running/ended/missing ids, and what is stored after.
pub(crate) async fn cancel_outcomes<S: TaskStore>(store: S) {
    let pending = sample_task("task-20260101-can001", TaskStatus::Pending, t(0));
    let running = sample_task("task-20260101-can002", TaskStatus::Running, t(1));
    let completed = sample_task("task-20260101-can003", TaskStatus::Completed, t(2));
    let failed = sample_task("task-20260101-can004", TaskStatus::Failed, t(3));
    for task in [&pending, &running, &completed, &failed] {
        store.insert(task).await.unwrap();
    }

    for (task, at) in [(&pending, t(100)), (&running, t(200))] {
        let mut expected = task.clone();
        expected.status = TaskStatus::Cancelled;
        expected.finished_at = Some(at);
        expected.estimated_completion = None;
        // It has a webhookUrl: the webhook is owed from the same write.
        expected.webhook_status = Some(prewarm_api::WebhookStatus::Pending);
        assert_eq!(
            store.cancel(&task.task_id, at).await.unwrap(),
            CancelOutcome::Cancelled(expected.clone()),
            "{}",
            task.status
        );
        assert_eq!(store.get(&task.task_id).await.unwrap(), Some(expected));
    }

    // Ended tasks are untouched.
    for task in [&completed, &failed] {
        assert_eq!(
            store.cancel(&task.task_id, t(300)).await.unwrap(),
            CancelOutcome::AlreadyEnded(task.status)
        );
        assert_eq!(store.get(&task.task_id).await.unwrap(), Some(task.clone()));
    }
    // Cancelling twice keeps the first finishedAt.
    assert_eq!(
        store.cancel(&pending.task_id, t(400)).await.unwrap(),
        CancelOutcome::AlreadyEnded(TaskStatus::Cancelled)
    );
    assert_eq!(
        store
            .get(&pending.task_id)
            .await
            .unwrap()
            .unwrap()
            .finished_at,
        Some(t(100))
    );

    assert_eq!(
        store.cancel("task-20260101-nope00", t(0)).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(store.get("task-20260101-nope00").await.unwrap(), None);

    // Queries see the new status.
    let (cancelled, total) = store
        .list(Some(TaskStatus::Cancelled), 10, 0)
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        ids(&cancelled),
        [running.task_id.as_str(), pending.task_id.as_str()]
    );
    assert!(store
        .list_with_status(&[TaskStatus::Pending, TaskStatus::Running])
        .await
        .unwrap()
        .is_empty());
}

/// Records are upserted per node; `nodes` returns exactly the latest per node.
pub(crate) async fn put_nodes_inserts_and_replaces<S: TaskStore>(store: S) {
    let task = minimal_task("task-20260101-nod001", TaskStatus::Running, t(0));
    store.insert(&task).await.unwrap();
    assert!(store.nodes(&task.task_id).await.unwrap().is_empty());

    let first = vec![
        record("node-b", 1),
        record("node-a", 1),
        record("node-c", 1),
    ];
    store.put_nodes(&task.task_id, &first).await.unwrap();
    assert_eq!(
        sorted_nodes(store.nodes(&task.task_id).await.unwrap()),
        sorted_nodes(first)
    );

    // Replace one, add one, leave the others.
    store
        .put_nodes(&task.task_id, &[record("node-b", 2), record("node-d", 1)])
        .await
        .unwrap();
    // Within one call the last record for a node wins.
    store
        .put_nodes(&task.task_id, &[record("node-c", 2), record("node-c", 3)])
        .await
        .unwrap();
    store.put_nodes(&task.task_id, &[]).await.unwrap();
    assert_eq!(
        sorted_nodes(store.nodes(&task.task_id).await.unwrap()),
        vec![
            record("node-a", 1),
            record("node-b", 2),
            record("node-c", 3),
            record("node-d", 1),
        ]
    );

    // Node records do not touch the task view.
    assert_eq!(store.get(&task.task_id).await.unwrap(), Some(task));
    assert!(store
        .nodes("task-20260101-nope00")
        .await
        .unwrap()
        .is_empty());
}

/// Records belong to a stored task: writing them for an unknown id fails and
/// stores nothing.
pub(crate) async fn put_nodes_for_unknown_task_fails<S: TaskStore>(store: S) {
    let err = store
        .put_nodes("task-20260101-nope00", &[record("node-a", 1)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(store
        .nodes("task-20260101-nope00")
        .await
        .unwrap()
        .is_empty());
}

/// Two tasks with the same node names keep separate records.
pub(crate) async fn nodes_do_not_leak_between_tasks<S: TaskStore>(store: S) {
    let one = minimal_task("task-20260101-iso001", TaskStatus::Running, t(0));
    let two = minimal_task("task-20260101-iso002", TaskStatus::Running, t(1));
    store.insert(&one).await.unwrap();
    store.insert(&two).await.unwrap();

    store
        .put_nodes(&one.task_id, &[record("node-a", 1), record("node-b", 1)])
        .await
        .unwrap();
    store
        .put_nodes(&two.task_id, &[record("node-a", 7)])
        .await
        .unwrap();
    store
        .put_nodes(&one.task_id, &[record("node-b", 2)])
        .await
        .unwrap();

    assert_eq!(
        sorted_nodes(store.nodes(&one.task_id).await.unwrap()),
        vec![record("node-a", 1), record("node-b", 2)]
    );
    assert_eq!(
        store.nodes(&two.task_id).await.unwrap(),
        vec![record("node-a", 7)]
    );
}

/// A healthy store answers the liveness probe.
pub(crate) async fn ping_is_ok<S: TaskStore>(store: S) {
    store.ping().await.unwrap();
    store
        .insert(&minimal_task(
            "task-20260101-ping01",
            TaskStatus::Pending,
            t(0),
        ))
        .await
        .unwrap();
    store.ping().await.unwrap();
}

const WORKERS: usize = 8;
const ROUNDS: u32 = 25;

/// Eight tokio tasks writing at once: node records, progress updates, a race
/// to start one task and a race to cancel another. Nothing is lost and each
/// race has exactly one winner.
pub(crate) async fn concurrent_writers_lose_nothing<S: TaskStore>(store: S) {
    let store = Arc::new(store);
    let shared = minimal_task("task-20260101-shared", TaskStatus::Running, t(0));
    let start_race = minimal_task("task-20260101-start0", TaskStatus::Pending, t(1));
    let cancel_race = minimal_task("task-20260101-cancel", TaskStatus::Running, t(2));
    for task in [&shared, &start_race, &cancel_race] {
        store.insert(task).await.unwrap();
    }
    let own_id = |w: usize| format!("task-20260101-own{w:03}");
    for w in 0..WORKERS {
        store
            .insert(&minimal_task(
                &own_id(w),
                TaskStatus::Running,
                t(10 + w as i64),
            ))
            .await
            .unwrap();
    }

    let barrier = Arc::new(tokio::sync::Barrier::new(WORKERS));
    let mut handles = Vec::new();
    for w in 0..WORKERS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        let own = minimal_task(&own_id(w), TaskStatus::Running, t(10 + w as i64));
        let shared_id = shared.task_id.clone();
        let mut start_view = start_race.clone();
        let cancel_id = cancel_race.task_id.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            // Race to start the pending task: one update_if from Pending wins.
            start_view.status = TaskStatus::Running;
            start_view.created_by = format!("worker-{w}");
            let started = store
                .update_if(&start_view, &[TaskStatus::Pending])
                .await
                .unwrap();
            let cancelled = matches!(
                store.cancel(&cancel_id, t(500)).await.unwrap(),
                CancelOutcome::Cancelled(_)
            );
            let mut own = own;
            for round in 1..=ROUNDS {
                store
                    .put_nodes(&shared_id, &[record(&format!("w{w}-n{round:02}"), round)])
                    .await
                    .unwrap();
                store
                    .put_nodes(
                        &own.task_id,
                        &[
                            record(&format!("n{round:02}"), round),
                            record("last", round),
                        ],
                    )
                    .await
                    .unwrap();
                own.progress.completed_nodes = round;
                assert!(store.update_if(&own, &[TaskStatus::Running]).await.unwrap());
            }
            (w, started, cancelled)
        }));
    }
    let mut start_winners = Vec::new();
    let mut cancel_winners = 0;
    for handle in handles {
        let (w, started, cancelled) = handle.await.unwrap();
        if started {
            start_winners.push(w);
        }
        cancel_winners += usize::from(cancelled);
    }

    assert_eq!(start_winners.len(), 1, "exactly one start wins");
    let started = store.get(&start_race.task_id).await.unwrap().unwrap();
    assert_eq!(started.status, TaskStatus::Running);
    assert_eq!(started.created_by, format!("worker-{}", start_winners[0]));
    assert_eq!(cancel_winners, 1, "exactly one cancel wins");
    assert_eq!(
        store
            .get(&cancel_race.task_id)
            .await
            .unwrap()
            .unwrap()
            .finished_at,
        Some(t(500))
    );

    let shared_nodes = store.nodes(&shared.task_id).await.unwrap();
    assert_eq!(shared_nodes.len(), WORKERS * ROUNDS as usize);
    for w in 0..WORKERS {
        for round in 1..=ROUNDS {
            let name = format!("w{w}-n{round:02}");
            assert!(
                shared_nodes.contains(&record(&name, round)),
                "missing {name}"
            );
        }
        let own = store.get(&own_id(w)).await.unwrap().unwrap();
        assert_eq!(own.progress.completed_nodes, ROUNDS);
        let nodes = store.nodes(&own_id(w)).await.unwrap();
        assert_eq!(nodes.len(), ROUNDS as usize + 1);
        assert!(nodes.contains(&record("last", ROUNDS)));
    }
}

/// Beyond `max_tasks`, the oldest ended tasks go with their node records;
/// running and pending tasks stay whatever their age.
pub(crate) async fn trim_deletes_oldest_ended_tasks_and_their_nodes<S: TaskStore>(store: S) {
    let statuses = [
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Pending,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::Completed,
    ];
    for (i, status) in statuses.into_iter().enumerate() {
        let id = format!("task-20260101-trim0{i}");
        store
            .insert(&ended_task(&id, status, t(i as i64), t(i as i64 + 10)))
            .await
            .unwrap();
        store.put_nodes(&id, &[record("n1", 0)]).await.unwrap();
    }
    let retention = Retention {
        ended_before: t(-1_000),
        max_tasks: 2,
    };
    // Ended tasks beyond the newest two: trim01 and trim03, oldest first.
    assert_eq!(store.trim(&retention, 1).await.unwrap(), 1);
    assert_eq!(store.get("task-20260101-trim01").await.unwrap(), None);
    assert!(store
        .nodes("task-20260101-trim01")
        .await
        .unwrap()
        .is_empty());
    assert!(store.get("task-20260101-trim03").await.unwrap().is_some());
    assert_eq!(store.trim(&retention, 10).await.unwrap(), 1);
    assert_eq!(store.get("task-20260101-trim03").await.unwrap(), None);
    assert_eq!(store.trim(&retention, 10).await.unwrap(), 0);
    let (left, total) = store.list(None, 10, 0).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(
        sorted_ids(&left),
        vec![
            "task-20260101-trim00",
            "task-20260101-trim02",
            "task-20260101-trim04",
            "task-20260101-trim05"
        ]
    );
    assert_eq!(store.nodes("task-20260101-trim00").await.unwrap().len(), 1);
}

/// A task of `status` created at `created`; an ended one ended at `ended`.
fn ended_task(id: &str, status: TaskStatus, created: DateTime<Utc>, ended: DateTime<Utc>) -> Task {
    let mut task = minimal_task(id, status, created);
    if status.is_terminal() {
        task.finished_at = Some(ended);
    }
    task
}

/// Ended tasks that ended before the cutoff go, in batches; newer ones stay.
pub(crate) async fn trim_honours_the_age_limit_and_batch<S: TaskStore>(store: S) {
    for i in 0..5 {
        let id = format!("task-20260101-age00{i}");
        store
            .insert(&ended_task(
                &id,
                TaskStatus::Completed,
                t(i * 100),
                t(i * 100 + 10),
            ))
            .await
            .unwrap();
    }
    store
        .insert(&minimal_task(
            "task-20260101-agerun",
            TaskStatus::Running,
            t(0),
        ))
        .await
        .unwrap();
    let retention = Retention {
        ended_before: t(250),
        max_tasks: 1_000,
    };
    assert_eq!(store.trim(&retention, 2).await.unwrap(), 2);
    assert_eq!(store.get("task-20260101-age000").await.unwrap(), None);
    assert_eq!(store.get("task-20260101-age001").await.unwrap(), None);
    assert!(store.get("task-20260101-age002").await.unwrap().is_some());
    assert_eq!(store.trim(&retention, 2).await.unwrap(), 1);
    assert_eq!(store.trim(&retention, 2).await.unwrap(), 0);
    assert!(store.get("task-20260101-agerun").await.unwrap().is_some());
    assert_eq!(store.list(None, 10, 0).await.unwrap().1, 3);
}

/// Age counts from when a task ended: a long task that ended after the cutoff
/// stays however old it is; one cancelled before the cutoff goes.
pub(crate) async fn trim_counts_age_from_the_end_of_a_task<S: TaskStore>(store: S) {
    let long = ended_task("task-20260101-long00", TaskStatus::Completed, t(0), t(900));
    let short = ended_task("task-20260101-short0", TaskStatus::Failed, t(100), t(200));
    store.insert(&long).await.unwrap();
    store.insert(&short).await.unwrap();
    let running = minimal_task("task-20260101-run000", TaskStatus::Running, t(50));
    store.insert(&running).await.unwrap();
    let mut finished = running.clone();
    finished.status = TaskStatus::Completed;
    finished.finished_at = Some(t(300));
    assert!(store
        .update_if(&finished, &[TaskStatus::Running])
        .await
        .unwrap());
    store
        .insert(&minimal_task(
            "task-20260101-cancel",
            TaskStatus::Pending,
            t(60),
        ))
        .await
        .unwrap();
    store.cancel("task-20260101-cancel", t(400)).await.unwrap();
    store
        .insert(&minimal_task(
            "task-20260101-latecl",
            TaskStatus::Pending,
            t(70),
        ))
        .await
        .unwrap();
    store.cancel("task-20260101-latecl", t(600)).await.unwrap();

    let retention = Retention {
        ended_before: t(500),
        max_tasks: 1_000,
    };
    assert_eq!(store.trim(&retention, 10).await.unwrap(), 3);
    let (left, _) = store.list(None, 10, 0).await.unwrap();
    assert_eq!(
        sorted_ids(&left),
        vec!["task-20260101-latecl", "task-20260101-long00"]
    );
}

/// Only ended tasks whose webhook is `pending` are owed, oldest first.
pub(crate) async fn webhook_pending_lists_owed_deliveries<S: TaskStore>(store: S) {
    use prewarm_api::WebhookStatus;
    let cases = [
        (
            "task-20260101-wh0001",
            TaskStatus::Completed,
            Some(WebhookStatus::Pending),
            5,
        ),
        (
            "task-20260101-wh0002",
            TaskStatus::Failed,
            Some(WebhookStatus::Delivered),
            1,
        ),
        (
            "task-20260101-wh0003",
            TaskStatus::Failed,
            Some(WebhookStatus::Pending),
            2,
        ),
        ("task-20260101-wh0004", TaskStatus::Running, None, 3),
        ("task-20260101-wh0005", TaskStatus::Cancelled, None, 4),
    ];
    for (id, status, webhook, secs) in cases {
        let mut task = minimal_task(id, status, t(secs));
        task.webhook_url = Some("https://hooks.example.com/x".to_owned());
        task.webhook_status = webhook;
        store.insert(&task).await.unwrap();
    }
    let owed = store.webhook_pending(10).await.unwrap();
    assert_eq!(
        ids(&owed),
        vec!["task-20260101-wh0003", "task-20260101-wh0001"]
    );
    assert_eq!(store.webhook_pending(1).await.unwrap().len(), 1);
    let mut delivered = owed[0].clone();
    delivered.webhook_status = Some(WebhookStatus::Delivered);
    assert!(store
        .update_if(&delivered, &[TaskStatus::Failed])
        .await
        .unwrap());
    assert_eq!(
        ids(&store.webhook_pending(10).await.unwrap()),
        vec!["task-20260101-wh0001"]
    );
}
