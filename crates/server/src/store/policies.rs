//! Durable keep-warm policies and the runs they started: the `PolicyStore` trait.
//!
//! A policy is stored as its API view without the parts computed when read
//! (`coverage`, the runs' current status). Its runs are kept apart, newest
//! first, at most [`KEPT_RUNS`] per policy, and go with it when it is deleted.

use async_trait::async_trait;
use prewarm_api::{KeepWarmPolicy, PolicyRun};

use super::StoreResult;

/// Runs kept per policy; older ones are dropped as new ones are recorded.
pub const KEPT_RUNS: usize = 10;

/// Where keep-warm policies live. Every method is one atomic step.
#[async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// Stores a new policy. `Duplicate` if the id exists.
    async fn insert_policy(&self, policy: &KeepWarmPolicy) -> StoreResult<()>;

    /// One policy by id.
    async fn get_policy(&self, id: &str) -> StoreResult<Option<KeepWarmPolicy>>;

    /// A page of policies, newest (`createdAt`, then id) first, and the total.
    async fn list_policies(
        &self,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<KeepWarmPolicy>, u64)>;

    /// Every policy (for the keep-warm controller).
    async fn all_policies(&self) -> StoreResult<Vec<KeepWarmPolicy>>;

    /// Replaces the stored policy of `policy.id`; returns whether it exists.
    async fn update_policy(&self, policy: &KeepWarmPolicy) -> StoreResult<bool>;

    /// Deletes a policy and its runs. Returns whether it existed.
    async fn delete_policy(&self, id: &str) -> StoreResult<bool>;

    /// Records a run of an existing policy (keeping the newest [`KEPT_RUNS`]);
    /// returns whether the policy exists.
    async fn record_policy_run(&self, policy_id: &str, run: &PolicyRun) -> StoreResult<bool>;

    /// A policy's kept runs, newest first (empty for an unknown policy).
    async fn policy_runs(&self, policy_id: &str) -> StoreResult<Vec<PolicyRun>>;
}

/// The stored form of a policy: the parts computed when read left out.
pub(crate) fn stored_form(policy: &KeepWarmPolicy) -> KeepWarmPolicy {
    KeepWarmPolicy {
        coverage: None,
        last_runs: Vec::new(),
        ..policy.clone()
    }
}

/// Newest first: `createdAt` descending, then id descending.
pub(crate) fn newest_policy_first(a: &KeepWarmPolicy, b: &KeepWarmPolicy) -> std::cmp::Ordering {
    b.created_at
        .cmp(&a.created_at)
        .then_with(|| b.id.cmp(&a.id))
}
