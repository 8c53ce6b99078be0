//! The behaviour every `PolicyStore` backend must show, as one test suite
//! (run by each backend with [`policy_contract_tests!`], like `contract.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prewarm_api::{
    KeepWarmPolicy, PolicyCoverage, PolicyRun, PullPolicy, TaskStatus, WorkloadKind, WorkloadRef,
};

use super::contract::t;
use super::policies::{PolicyStore, KEPT_RUNS};
use super::StoreError;

/// Expands to one `#[tokio::test]` per contract behaviour, each on a fresh store.
macro_rules! policy_contract_tests {
    (guarded: $make:expr) => {
        $crate::store::policy_contract::policy_contract_tests!(@tests $make;
            policy_round_trip_and_duplicates,
            policies_list_newest_first_and_page,
            update_replaces_and_needs_the_policy,
            runs_are_kept_newest_first_and_bounded,
            concurrent_runs_are_all_recorded,
            delete_takes_the_runs_along,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        mod policy_contract {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (store, _guard) = $make;
                    $crate::store::policy_contract::$name(store).await;
                }
            )+
        }
    };
    ($make:expr) => {
        $crate::store::policy_contract::policy_contract_tests!(guarded: ($make, ()));
    };
}

pub(crate) use policy_contract_tests;

/// A policy with every field set.
pub(crate) fn sample_policy(id: &str, created_at: DateTime<Utc>) -> KeepWarmPolicy {
    KeepWarmPolicy {
        id: id.to_owned(),
        name: "web \"pool\"\nsecond line".to_owned(),
        enabled: true,
        images: vec![
            "nginx:1.25".to_owned(),
            "redis@sha256:".to_owned() + &"a".repeat(64),
        ],
        node_selector: BTreeMap::from([("pool".to_owned(), "web".to_owned())]),
        node_names: vec!["node-1".to_owned()],
        tolerate_taints: false,
        pull_policy: PullPolicy::Always,
        image_pull_secrets: vec!["regcred".to_owned()],
        batch_size: 7,
        priority: -3,
        from_workload: Some(WorkloadRef {
            kind: WorkloadKind::Deployment,
            namespace: "shop".to_owned(),
            name: "web".to_owned(),
        }),
        remove_taint: Some("prewarm.io/cold".to_owned()),
        created_by: "alice".to_owned(),
        created_at,
        updated_at: created_at,
        coverage: None,
        last_runs: Vec::new(),
    }
}

/// A run of task `task_id` created at `at`.
pub(crate) fn run(task_id: &str, at: DateTime<Utc>) -> PolicyRun {
    PolicyRun {
        task_id: task_id.to_owned(),
        created_at: at,
        nodes: 3,
        status: None,
        completed_nodes: 0,
        failed_nodes: 0,
    }
}

pub(crate) async fn policy_round_trip_and_duplicates<S: PolicyStore>(store: S) {
    let p = sample_policy("keep-warm-20260101-aaaaaa", t(0));
    // What is computed when read is not stored.
    let mut shown = p.clone();
    shown.coverage = Some(PolicyCoverage {
        total_nodes: 4,
        ..Default::default()
    });
    shown.last_runs = vec![run("task-1", t(1))];
    store.insert_policy(&shown).await.unwrap();
    assert_eq!(store.get_policy(&p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(store.get_policy("nope").await.unwrap(), None);
    let err = store.insert_policy(&p).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(ref id) if *id == p.id),
        "{err}"
    );
    let mut minimal = sample_policy("keep-warm-20260101-bbbbbb", t(1));
    minimal.from_workload = None;
    minimal.remove_taint = None;
    minimal.node_selector.clear();
    minimal.node_names.clear();
    store.insert_policy(&minimal).await.unwrap();
    let mut all = store.all_policies().await.unwrap();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all, vec![p, minimal]);
}

pub(crate) async fn policies_list_newest_first_and_page<S: PolicyStore>(store: S) {
    for i in 0..5 {
        let p = sample_policy(&format!("keep-warm-20260101-00000{i}"), t(i));
        store.insert_policy(&p).await.unwrap();
    }
    let (page, total) = store.list_policies(2, 1).await.unwrap();
    assert_eq!(total, 5);
    let ids: Vec<&str> = page.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        ["keep-warm-20260101-000003", "keep-warm-20260101-000002"]
    );
    let (page, total) = store.list_policies(10, 10).await.unwrap();
    assert!(page.is_empty());
    assert_eq!(total, 5);
}

pub(crate) async fn update_replaces_and_needs_the_policy<S: PolicyStore>(store: S) {
    let p = sample_policy("keep-warm-20260101-aaaaaa", t(0));
    store.insert_policy(&p).await.unwrap();
    let mut changed = p.clone();
    changed.enabled = false;
    changed.images = vec!["busybox".to_owned()];
    changed.remove_taint = None;
    changed.updated_at = t(60);
    assert!(store.update_policy(&changed).await.unwrap());
    assert_eq!(
        store.get_policy(&p.id).await.unwrap(),
        Some(changed.clone())
    );
    let (page, _) = store.list_policies(10, 0).await.unwrap();
    assert_eq!(page, vec![changed.clone()]);
    changed.id = "keep-warm-20260101-zzzzzz".to_owned();
    assert!(!store.update_policy(&changed).await.unwrap());
    assert_eq!(store.get_policy(&changed.id).await.unwrap(), None);
}

pub(crate) async fn runs_are_kept_newest_first_and_bounded<S: PolicyStore>(store: S) {
    let p = sample_policy("keep-warm-20260101-aaaaaa", t(0));
    store.insert_policy(&p).await.unwrap();
    assert!(store.policy_runs(&p.id).await.unwrap().is_empty());
    let total = KEPT_RUNS + 3;
    for i in 0..total {
        let mut r = run(&format!("task-{i:02}"), t(i as i64));
        r.status = Some(TaskStatus::Running);
        assert!(store.record_policy_run(&p.id, &r).await.unwrap());
    }
    let runs = store.policy_runs(&p.id).await.unwrap();
    let ids: Vec<String> = runs.iter().map(|r| r.task_id.clone()).collect();
    let expected: Vec<String> = (0..total)
        .rev()
        .take(KEPT_RUNS)
        .map(|i| format!("task-{i:02}"))
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(runs[0].created_at, t(total as i64 - 1));
    assert_eq!(runs[0].nodes, 3);
    assert!(!store
        .record_policy_run("keep-warm-20260101-zzzzzz", &run("task-x", t(0)))
        .await
        .unwrap());
    assert!(store
        .policy_runs("keep-warm-20260101-zzzzzz")
        .await
        .unwrap()
        .is_empty());
}

pub(crate) async fn concurrent_runs_are_all_recorded<S: PolicyStore>(store: S) {
    let store = Arc::new(store);
    let p = sample_policy("keep-warm-20260101-aaaaaa", t(0));
    store.insert_policy(&p).await.unwrap();
    let writers: Vec<_> = (0..KEPT_RUNS)
        .map(|i| {
            let (store, id) = (store.clone(), p.id.clone());
            tokio::spawn(async move {
                store
                    .record_policy_run(&id, &run(&format!("task-{i}"), t(i as i64)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for w in writers {
        assert!(w.await.unwrap());
    }
    let mut ids: Vec<String> = store
        .policy_runs(&p.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.task_id)
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..KEPT_RUNS).map(|i| format!("task-{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "a concurrent record was lost");
}

pub(crate) async fn delete_takes_the_runs_along<S: PolicyStore>(store: S) {
    let p = sample_policy("keep-warm-20260101-aaaaaa", t(0));
    let other = sample_policy("keep-warm-20260101-bbbbbb", t(1));
    store.insert_policy(&p).await.unwrap();
    store.insert_policy(&other).await.unwrap();
    store
        .record_policy_run(&p.id, &run("task-1", t(1)))
        .await
        .unwrap();
    store
        .record_policy_run(&other.id, &run("task-2", t(2)))
        .await
        .unwrap();
    assert!(store.delete_policy(&p.id).await.unwrap());
    assert!(!store.delete_policy(&p.id).await.unwrap());
    assert_eq!(store.get_policy(&p.id).await.unwrap(), None);
    assert!(store.policy_runs(&p.id).await.unwrap().is_empty());
    // Recreated under the same id, it starts without the old runs.
    store.insert_policy(&p).await.unwrap();
    assert!(store.policy_runs(&p.id).await.unwrap().is_empty());
    assert_eq!(store.policy_runs(&other.id).await.unwrap().len(), 1);
    let (page, total) = store.list_policies(10, 0).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(page.len(), 2);
}
