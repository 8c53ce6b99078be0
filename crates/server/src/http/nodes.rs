//! `GET /api/v1/nodes/stats`: what the service has learned about each
//! node's pull speed, slowest first (the nodes every task starts first).

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use prewarm_api::{ErrorBody, NodeStats, NodeStatsList, TaskPlan};

use super::error::ApiError;
use super::extract::{int_in_range, QueryParams};
use super::AppState;
use crate::cluster::NodeInfo;
use crate::domain::plan::{pace, plan, Speeds};
use crate::domain::task::TaskSpec;

/// Nodes listed when `limit` is not given.
const DEFAULT_LIMIT: u32 = 20;
/// Most nodes one request lists.
const MAX_LIMIT: u32 = 1000;

/// `GET /api/v1/nodes/stats?limit=N`: the slowest nodes and how many are known.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/stats",
    operation_id = "nodeStats",
    tag = "nodes",
    params(
        ("limit" = Option<u32>, Query, description = "Nodes to list, 1..=1000 (default 20)"),
    ),
    responses(
        (status = 200, description = "The nodes with a learned pull speed, slowest first", body = NodeStatsList),
        (status = 400, description = "Bad `limit`", body = ErrorBody),
        (status = 503, description = "The store did not answer", body = ErrorBody),
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<Json<NodeStatsList>, ApiError> {
    let limit = params
        .parse("limit", int_in_range(1, MAX_LIMIT))?
        .unwrap_or(DEFAULT_LIMIT);
    let (speeds, total) = state.node_speeds.slowest_nodes(limit).await?;
    let nodes = speeds
        .into_iter()
        .map(|s| NodeStats {
            node: s.node,
            seconds_per_pull: s.seconds_per_pull,
            samples: s.samples,
            updated_at: s.updated_at,
            gone_since: s.gone_since,
        })
        .collect();
    Ok(Json(NodeStatsList { nodes, total }))
}

/// The dry-run plan of `spec` on `nodes` with the learned node speeds (a
/// store that does not answer leaves the plan with the recent mean only).
pub(super) async fn dry_run_plan(
    state: &AppState,
    nodes: &[NodeInfo],
    spec: &TaskSpec,
    now: DateTime<Utc>,
) -> TaskPlan {
    let learned: Option<HashMap<_, _>> = match state.node_speeds.node_speeds().await {
        Ok(all) => Some(all.into_iter().map(|s| (s.node.clone(), s)).collect()),
        Err(e) => {
            tracing::warn!(error = %e, "could not read node speeds for a plan");
            None
        }
    };
    let speeds = Speeds {
        learned: learned.as_ref(),
        mean_node_seconds: state.metrics.recent_node_pulls.mean(),
    };
    let mut plan = plan(nodes, spec, state.engine.disk_margin(), speeds, now);
    pace(&mut plan, spec, state.engine.registry_pull_rates(), now);
    plan
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::domain::node_speed::NodeSpeed;
    use crate::store::NodeSpeedStore;
    use crate::testing::TestApp;

    #[tokio::test]
    async fn the_slowest_nodes_come_first_within_the_limit() {
        let app = TestApp::new();
        let at = "2024-01-16T10:00:00Z".parse().unwrap();
        let mut slow = NodeSpeed::first("slow".into(), 40.0, at);
        slow.observe(20.0, at);
        app.node_speeds
            .put_node_speeds(&[
                NodeSpeed::first("fast".into(), 1.0, at),
                slow,
                NodeSpeed::first("mid".into(), 5.5, at),
            ])
            .await
            .unwrap();
        let reply = app
            .call(Method::GET, "/api/v1/nodes/stats?limit=2", None)
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json(),
            json!({
                "nodes": [
                    {"node": "slow", "secondsPerPull": 30.0, "samples": 2, "updatedAt": "2024-01-16T10:00:00Z"},
                    {"node": "mid", "secondsPerPull": 5.5, "samples": 1, "updatedAt": "2024-01-16T10:00:00Z"},
                ],
                "total": 3,
            })
        );
        let all = app.call(Method::GET, "/api/v1/nodes/stats", None).await;
        assert_eq!(all.json()["nodes"].as_array().unwrap().len(), 3);
        for bad in ["0", "1001", "ten"] {
            let reply = app
                .call(
                    Method::GET,
                    &format!("/api/v1/nodes/stats?limit={bad}"),
                    None,
                )
                .await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "limit={bad}");
            assert!(
                reply.json()["details"]
                    .as_str()
                    .unwrap()
                    .starts_with("limit:"),
                "{:?}",
                reply.json()
            );
        }
    }
}
