//! Removing a keep-warm policy's gating taint from a node once it is warm.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

use super::kube::map_err;
use super::ClusterResult;

/// Removes the `key` taint with effect `effect` from `node`: one GET and, if
/// the taint is there, one merge patch of `spec.taints` carrying the read
/// `resourceVersion` (a node changed meanwhile answers 409 and is tried again
/// at the next pass). Returns whether a taint was removed; a node that is
/// gone is `Ok(false)`.
pub async fn remove_taint(
    client: &Client,
    node: &str,
    key: &str,
    effect: &str,
) -> ClusterResult<bool> {
    let api: Api<Node> = Api::all(client.clone());
    let Some(current) = api.get_opt(node).await.map_err(map_err)? else {
        return Ok(false);
    };
    let taints = current.spec.and_then(|s| s.taints).unwrap_or_default();
    let kept: Vec<_> = taints
        .iter()
        .filter(|t| !(t.key == key && t.effect == effect))
        .cloned()
        .collect();
    if kept.len() == taints.len() {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": current.metadata.resource_version},
        "spec": {"taints": kept},
    });
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(map_err)?;
    Ok(true)
}
