//! `GET /api/v1/coverage`: how warm a pool of nodes is for some images.

use std::collections::{BTreeMap, HashSet};

use axum::extract::State;
use axum::Json;
use prewarm_api::{Coverage, CreateTaskRequest, ErrorBody, WorkloadRef};

use super::error::ApiError;
use super::extract::QueryParams;
use super::AppState;
use crate::domain::coverage::coverage;
use crate::domain::image_ref::ImageRef;
use crate::domain::labels::{validate_label_key, validate_label_value};
use crate::domain::placement;
use crate::domain::task::{TaskSpec, MAX_IMAGES};

/// `GET /api/v1/coverage?images=a,b&nodeSelector=k=v,k2=v2&groupBy=label`
/// (or `fromWorkload=Kind/namespace/name` instead of, or besides, `images`).
#[utoipa::path(
    get,
    path = "/api/v1/coverage",
    operation_id = "getCoverage",
    tag = "coverage",
    params(
        ("images" = Option<String>, Query, description = "Comma-separated image references (1..=100; required without fromWorkload); a digest matches only that digest"),
        ("fromWorkload" = Option<String>, Query, description = "`Kind/namespace/name` of a Deployment, StatefulSet, DaemonSet, Job or CronJob: its pod template's images (before `images`) over the nodes its pods could be scheduled on"),
        ("nodeSelector" = Option<String>, Query, description = "Comma-separated `key=value` node labels, all must match"),
        ("groupBy" = Option<String>, Query, description = "A node label key: also summarize the nodes per value of it"),
    ),
    responses(
        (status = 200, description = "Coverage from the nodes' reported images (the kubelet lists at most 50 per node)", body = Coverage),
        (status = 400, description = "Missing or bad images, selector, groupBy or fromWorkload", body = ErrorBody),
        (status = 404, description = "`fromWorkload` names no existing workload", body = ErrorBody),
        (status = 422, description = "The workload cannot be used", body = ErrorBody),
        (status = 503, description = "The Kubernetes API did not answer the workload read", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<Json<Coverage>, ApiError> {
    let workload = params.parse("fromWorkload", WorkloadRef::parse)?;
    let images = params.parse("images", parse_images)?;
    let selector = params
        .parse("nodeSelector", parse_selector)?
        .unwrap_or_default();
    let group_by = params.parse("groupBy", |raw| {
        validate_label_key(raw)
            .map(|()| raw.to_owned())
            .map_err(|e| e.to_string())
    })?;
    let nodes = state.cluster.nodes();
    state.image_keys.forget_others(&nodes);
    let Some(reference) = workload else {
        let images = images.ok_or_else(|| ApiError::InvalidParameter {
            name: "images".to_owned(),
            message: "at least one image is required".to_owned(),
        })?;
        return Ok(Json(coverage(
            &nodes,
            &images,
            &selector,
            group_by.as_deref(),
            &state.image_keys,
        )));
    };
    let spec = TaskSpec::from_request(CreateTaskRequest {
        images: images
            .unwrap_or_default()
            .iter()
            .map(|i| i.as_str().to_owned())
            .collect(),
        from_workload: Some(reference),
        ..CreateTaskRequest::default()
    })?;
    let spec = super::workload::resolve(&state, spec).await?;
    let Some(w) = &spec.workload else {
        return Err(ApiError::Internal(anyhow::anyhow!("workload not resolved")));
    };
    // The nodes its pods could be scheduled on (Ready or not; coverage counts Ready ones).
    let placeable: Vec<_> = nodes
        .into_iter()
        .filter(|n| placement::affinity_admits(w, n) && placement::tolerates(w, n))
        .collect();
    Ok(Json(coverage(
        &placeable,
        &spec.images,
        &selector,
        group_by.as_deref(),
        &state.image_keys,
    )))
}

/// `a,b,c` → distinct image references.
pub fn parse_images(raw: &str) -> Result<Vec<ImageRef>, String> {
    let mut seen = HashSet::new();
    let mut images = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let image = ImageRef::parse(part).map_err(|e| e.to_string())?;
        if seen.insert(part) {
            images.push(image);
        }
    }
    if images.is_empty() {
        return Err("at least one image is required".to_owned());
    }
    if images.len() > MAX_IMAGES {
        return Err(format!("at most {MAX_IMAGES} images, got {}", images.len()));
    }
    Ok(images)
}

/// `k=v,k2=v2` → an exact-match label selector.
pub fn parse_selector(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let mut selector = BTreeMap::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {part:?}"))?;
        validate_label_key(k).map_err(|e| format!("{k:?}: {e}"))?;
        validate_label_value(v).map_err(|e| format!("{k:?}: {e}"))?;
        selector.insert(k.to_owned(), v.to_owned());
    }
    Ok(selector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_parse_or_explain() {
        assert_eq!(parse_images("nginx, redis:7,nginx").unwrap().len(), 2);
        assert!(parse_images(",").is_err());
        assert!(parse_images("UPPER:1").is_err());
        assert_eq!(
            parse_selector("a=b,c.io/d=").unwrap(),
            BTreeMap::from([
                ("a".to_owned(), "b".to_owned()),
                ("c.io/d".to_owned(), String::new())
            ])
        );
        assert!(parse_selector("novalue").is_err());
        assert_eq!(
            WorkloadRef::parse("DaemonSet/kube-system/agent")
                .unwrap()
                .kind,
            prewarm_api::WorkloadKind::DaemonSet
        );
        assert!(WorkloadRef::parse("Pod/default/x")
            .unwrap_err()
            .contains("unknown kind"));
        assert!(WorkloadRef::parse("Deployment/x").is_err());
        assert!(parse_selector("a=b c").is_err());
    }
}
