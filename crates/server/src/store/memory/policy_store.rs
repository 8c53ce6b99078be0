//! `PolicyStore` in process memory.

use async_trait::async_trait;
use prewarm_api::{KeepWarmPolicy, PolicyRun};

use super::MemoryStore;
use crate::store::policies::{newest_policy_first, stored_form, PolicyStore, KEPT_RUNS};
use crate::store::{StoreError, StoreResult};

#[async_trait]
impl PolicyStore for MemoryStore {
    async fn insert_policy(&self, policy: &KeepWarmPolicy) -> StoreResult<()> {
        let mut inner = self.lock();
        if inner.policies.contains_key(&policy.id) {
            return Err(StoreError::Duplicate(policy.id.clone()));
        }
        inner
            .policies
            .insert(policy.id.clone(), stored_form(policy));
        Ok(())
    }

    async fn get_policy(&self, id: &str) -> StoreResult<Option<KeepWarmPolicy>> {
        Ok(self.lock().policies.get(id).cloned())
    }

    async fn list_policies(
        &self,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<KeepWarmPolicy>, u64)> {
        let mut all: Vec<KeepWarmPolicy> = self.lock().policies.values().cloned().collect();
        all.sort_by(newest_policy_first);
        let total = all.len() as u64;
        let page = all
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(limit as usize)
            .collect();
        Ok((page, total))
    }

    async fn all_policies(&self) -> StoreResult<Vec<KeepWarmPolicy>> {
        Ok(self.lock().policies.values().cloned().collect())
    }

    async fn update_policy(&self, policy: &KeepWarmPolicy) -> StoreResult<bool> {
        let mut inner = self.lock();
        match inner.policies.get_mut(&policy.id) {
            Some(stored) => {
                *stored = stored_form(policy);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn delete_policy(&self, id: &str) -> StoreResult<bool> {
        let mut inner = self.lock();
        inner.policy_runs.remove(id);
        Ok(inner.policies.remove(id).is_some())
    }

    async fn record_policy_run(&self, policy_id: &str, run: &PolicyRun) -> StoreResult<bool> {
        let mut inner = self.lock();
        if !inner.policies.contains_key(policy_id) {
            return Ok(false);
        }
        let runs = inner.policy_runs.entry(policy_id.to_owned()).or_default();
        runs.push_front(run.clone());
        runs.truncate(KEPT_RUNS);
        Ok(true)
    }

    async fn policy_runs(&self, policy_id: &str) -> StoreResult<Vec<PolicyRun>> {
        Ok(self
            .lock()
            .policy_runs
            .get(policy_id)
            .map(|runs| runs.iter().cloned().collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store::policy_contract::policy_contract_tests!(MemoryStore::new());
}
