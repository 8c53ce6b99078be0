//! The behaviour every `NodeSpeedStore` backend must show, as one test suite
//! (run by each backend with [`node_speed_contract_tests!`], like `contract.rs`).

use std::sync::Arc;

use super::contract::t;
use super::node_speeds::NodeSpeedStore;
use crate::domain::node_speed::NodeSpeed;

/// Expands to one `#[tokio::test]` per contract behaviour, each on a fresh store.
macro_rules! node_speed_contract_tests {
    (guarded: $make:expr) => {
        $crate::store::node_speed_contract::node_speed_contract_tests!(@tests $make;
            speeds_round_trip_exactly,
            a_put_replaces_the_node_estimate,
            slowest_first_then_by_name_within_the_limit,
            concurrent_puts_are_all_kept,
            deleted_estimates_are_gone_from_every_read,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        mod node_speed_contract {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (store, _guard) = $make;
                    $crate::store::node_speed_contract::$name(store).await;
                }
            )+
        }
    };
    ($make:expr) => {
        $crate::store::node_speed_contract::node_speed_contract_tests!(guarded: ($make, ()));
    };
}

pub(crate) use node_speed_contract_tests;

fn speed(node: &str, seconds_per_pull: f64) -> NodeSpeed {
    NodeSpeed {
        node: node.to_owned(),
        seconds_per_pull,
        weight: 2.75,
        samples: 3,
        updated_at: t(0),
        gone_since: None,
    }
}

fn by_name(mut speeds: Vec<NodeSpeed>) -> Vec<NodeSpeed> {
    speeds.sort_by(|a, b| a.node.cmp(&b.node));
    speeds
}

pub(crate) async fn speeds_round_trip_exactly(store: impl NodeSpeedStore) {
    assert_eq!(store.node_speeds().await.unwrap(), Vec::new());
    assert_eq!(store.slowest_nodes(10).await.unwrap(), (Vec::new(), 0));
    let written = vec![
        speed("node-a", 0.25),
        speed("node-b \"quoted\"", 0.001),
        speed("node-c", 12345.5),
    ];
    store.put_node_speeds(&written).await.unwrap();
    store.put_node_speeds(&[]).await.unwrap();
    assert_eq!(by_name(store.node_speeds().await.unwrap()), written);
}

pub(crate) async fn a_put_replaces_the_node_estimate(store: impl NodeSpeedStore) {
    store
        .put_node_speeds(&[speed("node-a", 50.0), speed("node-b", 5.0)])
        .await
        .unwrap();
    let mut newer = speed("node-a", 1.5);
    newer.samples = 4;
    newer.updated_at = t(86_400);
    store.put_node_speeds(&[newer.clone()]).await.unwrap();
    assert_eq!(
        by_name(store.node_speeds().await.unwrap()),
        vec![newer.clone(), speed("node-b", 5.0)]
    );
    // The ordering follows the new value, not the old one.
    assert_eq!(
        store.slowest_nodes(1).await.unwrap(),
        (vec![speed("node-b", 5.0)], 2)
    );
}

pub(crate) async fn slowest_first_then_by_name_within_the_limit(store: impl NodeSpeedStore) {
    store
        .put_node_speeds(&[
            speed("d", 1.0),
            speed("b", 30.0),
            speed("a", 2.0),
            speed("c", 30.0),
            speed("e", 0.5),
        ])
        .await
        .unwrap();
    let names = |speeds: Vec<NodeSpeed>| speeds.into_iter().map(|s| s.node).collect::<Vec<_>>();
    let (top, total) = store.slowest_nodes(3).await.unwrap();
    assert_eq!(
        (names(top), total),
        (vec!["b".into(), "c".into(), "a".into()], 5)
    );
    let (all, total) = store.slowest_nodes(100).await.unwrap();
    assert_eq!(names(all), ["b", "c", "a", "d", "e"]);
    assert_eq!(total, 5);
    assert_eq!(store.slowest_nodes(0).await.unwrap(), (Vec::new(), 5));
}

pub(crate) async fn concurrent_puts_are_all_kept(store: impl NodeSpeedStore) {
    let store = Arc::new(store);
    let puts: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let batch: Vec<NodeSpeed> = (0..25)
                    .map(|j| speed(&format!("node-{i}-{j}"), f64::from(i * 25 + j)))
                    .collect();
                store.put_node_speeds(&batch).await.unwrap();
            })
        })
        .collect();
    for put in puts {
        put.await.unwrap();
    }
    assert_eq!(store.node_speeds().await.unwrap().len(), 200);
    let (top, total) = store.slowest_nodes(1).await.unwrap();
    assert_eq!((top[0].node.as_str(), total), ("node-7-24", 200));
}

pub(crate) async fn deleted_estimates_are_gone_from_every_read(store: impl NodeSpeedStore) {
    let mut gone = speed("gone", 40.0);
    gone.gone_since = Some(t(3_600));
    store
        .put_node_speeds(&[speed("a", 1.0), gone.clone(), speed("b", 2.0)])
        .await
        .unwrap();
    assert_eq!(
        store.slowest_nodes(1).await.unwrap(),
        (vec![gone], 3),
        "the time a node left is kept"
    );
    store
        .delete_node_speeds(&["gone".into(), "never-there".into()])
        .await
        .unwrap();
    store.delete_node_speeds(&[]).await.unwrap();
    assert_eq!(
        by_name(store.node_speeds().await.unwrap()),
        vec![speed("a", 1.0), speed("b", 2.0)]
    );
    assert_eq!(
        store.slowest_nodes(10).await.unwrap(),
        (vec![speed("b", 2.0), speed("a", 1.0)], 2)
    );
    // A node that comes back is learned afresh.
    store.put_node_speeds(&[speed("gone", 3.0)]).await.unwrap();
    assert_eq!(
        store.slowest_nodes(1).await.unwrap(),
        (vec![speed("gone", 3.0)], 3)
    );
}
