//! `PolicyStore` on Redis.
//!
//! A policy is a hash (`keep-warm:<id>`: JSON view and list member) indexed
//! by the `keep-warm-policies` sorted set; its kept runs are a list
//! (`keep-warm-runs:<id>`, newest first) trimmed to [`KEPT_RUNS`] in the same
//! script that pushes. Every change is one script, so each method is atomic;
//! creates, updates and deletes announce the policy's id on the policies
//! channel in the same script, so the leader's keep-warm controller hears of
//! a change made on any replica at once.

use async_trait::async_trait;
use prewarm_api::{KeepWarmPolicy, PolicyRun};
use redis::AsyncCommands;

use super::{corrupt, encode, list_member, range, RedisStore};
use crate::store::policies::{stored_form, PolicyStore, KEPT_RUNS};
use crate::store::{StoreError, StoreResult};

/// Adds a new policy (dropping runs left under its id): 0 if the id exists.
pub(super) const INSERT_POLICY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'member', ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
redis.call('DEL', KEYS[3])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// Replaces an existing policy's JSON: 0 if there is none.
pub(super) const UPDATE_POLICY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
";

/// Deletes a policy with its runs: 0 if there was none.
pub(super) const DELETE_POLICY: &str = r"
local member = redis.call('HGET', KEYS[1], 'member')
if not member then return 0 end
redis.call('ZREM', KEYS[2], member)
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
";

/// Pushes a run of an existing policy and keeps the newest ARGV[2]: 0 if there is no policy.
pub(super) const RECORD_RUN: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
return 1
";

fn decode_policy(id: &str, json: &str) -> StoreResult<KeepWarmPolicy> {
    serde_json::from_str(json).map_err(|e| corrupt(id, e))
}

impl RedisStore {
    /// Every policy in `(start, stop)` of the index, newest first, and the total.
    async fn policy_page(&self, start: i64, stop: i64) -> StoreResult<(Vec<KeepWarmPolicy>, u64)> {
        let (total, rows) = self
            .page(
                &[self.keys.policies()],
                start,
                stop,
                &self.keys.policy_prefix(),
                &["json"],
            )
            .await?;
        let page = rows
            .iter()
            .map(|row| decode_policy("(policies)", &row[0]))
            .collect::<StoreResult<_>>()?;
        Ok((page, total))
    }
}

#[async_trait]
impl PolicyStore for RedisStore {
    async fn insert_policy(&self, policy: &KeepWarmPolicy) -> StoreResult<()> {
        let id = &policy.id;
        let inserted: i64 = self
            .scripts
            .insert_policy
            .key(self.keys.policy(id))
            .key(self.keys.policies())
            .key(self.keys.policy_runs(id))
            .arg(encode(id, &stored_form(policy))?)
            .arg(list_member(policy.created_at, id))
            .arg(self.keys.policies_channel())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        if inserted == 0 {
            return Err(StoreError::Duplicate(id.clone()));
        }
        Ok(())
    }

    async fn get_policy(&self, id: &str) -> StoreResult<Option<KeepWarmPolicy>> {
        let json: Option<String> = self
            .conn()
            .hget(self.keys.policy(id), "json")
            .await
            .map_err(|e| self.failed(e))?;
        json.map(|json| decode_policy(id, &json)).transpose()
    }

    async fn list_policies(
        &self,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<KeepWarmPolicy>, u64)> {
        let (start, stop) = range(limit, offset).unwrap_or((1, 0));
        self.policy_page(start, stop).await
    }

    async fn all_policies(&self) -> StoreResult<Vec<KeepWarmPolicy>> {
        Ok(self.policy_page(0, -1).await?.0)
    }

    async fn update_policy(&self, policy: &KeepWarmPolicy) -> StoreResult<bool> {
        let id = &policy.id;
        let written: i64 = self
            .scripts
            .update_policy
            .key(self.keys.policy(id))
            .arg(encode(id, &stored_form(policy))?)
            .arg(self.keys.policies_channel())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(written == 1)
    }

    async fn delete_policy(&self, id: &str) -> StoreResult<bool> {
        let deleted: i64 = self
            .scripts
            .delete_policy
            .key(self.keys.policy(id))
            .key(self.keys.policies())
            .key(self.keys.policy_runs(id))
            .arg(self.keys.policies_channel())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(deleted == 1)
    }

    async fn record_policy_run(&self, policy_id: &str, run: &PolicyRun) -> StoreResult<bool> {
        let written: i64 = self
            .scripts
            .record_run
            .key(self.keys.policy(policy_id))
            .key(self.keys.policy_runs(policy_id))
            .arg(encode(policy_id, run)?)
            .arg(KEPT_RUNS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(written == 1)
    }

    async fn policy_runs(&self, policy_id: &str) -> StoreResult<Vec<PolicyRun>> {
        let raw: Vec<String> = self
            .conn()
            .lrange(self.keys.policy_runs(policy_id), 0, -1)
            .await
            .map_err(|e| self.failed(e))?;
        raw.iter()
            .map(|json| {
                serde_json::from_str(json).map_err(|e| corrupt(policy_id, format!("run: {e}")))
            })
            .collect()
    }
}
