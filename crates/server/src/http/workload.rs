//! Resolving `fromWorkload` for a request: read the workload through the
//! `Cluster`, check its pull secrets exist in the service's namespace, and
//! fold it into the task spec. Every failure is a 4xx (or 503 when the
//! Kubernetes API cannot answer), never a 500.

use crate::cluster::ClusterError;
use crate::domain::task::TaskSpec;

use super::error::ApiError;
use super::AppState;

/// `spec` with its `fromWorkload` resolved (unchanged without one).
pub async fn resolve(state: &AppState, spec: TaskSpec) -> Result<TaskSpec, ApiError> {
    let Some(reference) = spec.from_workload.clone() else {
        return Ok(spec);
    };
    let what = format!(
        "{:?} {}/{}",
        reference.kind, reference.namespace, reference.name
    );
    let resolved = state
        .cluster
        .read_workload(&reference)
        .await
        .map_err(|e| cluster_error(&what, e))?
        .ok_or_else(|| ApiError::WorkloadNotFound(what.clone()))?;
    let mut missing = Vec::new();
    for secret in &resolved.image_pull_secrets {
        let exists = state
            .cluster
            .secret_exists(secret)
            .await
            .map_err(|e| cluster_error(&format!("Secret {secret}"), e))?;
        if !exists {
            missing.push(secret.clone());
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::Unprocessable {
            title: "Pull secret missing".to_owned(),
            details: format!(
                "{what} names imagePullSecrets {missing:?}, which do not exist in the service's namespace; \
                 create them there under the same names (secrets are never read across namespaces)"
            ),
        });
    }
    spec.with_workload(resolved)
        .map_err(|e| ApiError::Unprocessable {
            title: "Workload not usable".to_owned(),
            details: format!("{what}: {}", e.message),
        })
}

fn cluster_error(what: &str, err: ClusterError) -> ApiError {
    match err {
        ClusterError::Api {
            code: 403, message, ..
        } => ApiError::Unprocessable {
            title: "Workload not readable".to_owned(),
            details: format!("the service may not read {what}: {message}"),
        },
        other => ApiError::KubernetesUnavailable(format!("reading {what}: {other}")),
    }
}
