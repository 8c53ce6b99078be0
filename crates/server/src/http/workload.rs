//! Resolving `fromWorkload` for a request (see
//! [`crate::cluster::workload::resolve_spec`]): every failure is a 4xx (or
//! 503 when the Kubernetes API cannot answer), never a 500.

use crate::cluster::workload::{resolve_spec, WorkloadError};
use crate::domain::task::TaskSpec;

use super::error::ApiError;
use super::AppState;

/// `spec` with its `fromWorkload` resolved (unchanged without one).
pub async fn resolve(state: &AppState, spec: TaskSpec) -> Result<TaskSpec, ApiError> {
    resolve_spec(state.cluster.as_ref(), spec, state.clock.now())
        .await
        .map_err(api_error)
}

fn api_error(err: WorkloadError) -> ApiError {
    match err {
        WorkloadError::NotFound(what) => ApiError::WorkloadNotFound(what),
        WorkloadError::Forbidden { what, message } => ApiError::Unprocessable {
            title: "Workload not readable".to_owned(),
            details: format!("the service may not read {what}: {message}"),
        },
        WorkloadError::Unavailable(details) => ApiError::KubernetesUnavailable(details),
        WorkloadError::MissingSecrets { what, missing } => ApiError::Unprocessable {
            title: "Pull secret missing".to_owned(),
            details: format!(
                "{what} names imagePullSecrets {missing:?}, which do not exist in the service's namespace; \
                 create them there under the same names (secrets are never read across namespaces)"
            ),
        },
        WorkloadError::NotUsable { what, message } => ApiError::Unprocessable {
            title: "Workload not usable".to_owned(),
            details: format!("{what}: {message}"),
        },
    }
}
