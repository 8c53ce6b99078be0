//! Redis `TaskStore` and `ScheduleStore`: the shared store of several replicas.
//!
//! Every key lives under one prefix (`--redis-prefix`, default `prewarm:`), so
//! two installations can share one Redis. A task is a hash (`task:<id>`:
//! its JSON view, status, revision and list member) indexed by sorted sets
//! whose members sort newest first (`<createdAt>|<id>`, all with score 0, read
//! in reverse lexicographic order): one of all tasks and one per status.
//! Every multi-key change is one Lua script, so each trait method is one
//! atomic step; read-modify-write steps (cancel, schedule updates, cron fire
//! claims) compare a revision in the script and retry when another writer
//! came first.
//!
//! Writes that others must hear about are published in the same step:
//! a new or cancelled task on `<prefix>wake` (the leader's engine looks at the
//! store at once), every written task view on `<prefix>views` (every replica
//! feeds its live streams), schedule changes on `<prefix>schedules`.
//! [`RedisStore::changes`] follows those channels.
//!
//! The connection is the `redis` crate's connection manager: it reconnects by
//! itself, and a call made while Redis is away fails at once (or after the
//! response timeout) instead of hanging.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prewarm_api::{Task, TaskStatus};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::{CancelOutcome, NodeRecord, Retention, StoreError, StoreResult, TaskStore};

mod changes;
mod node_speed_store;
mod policy_store;
mod schedule_store;

pub use changes::{Change, Changes};

/// How long a call waits for Redis before it fails (the API then answers 503).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Node records per `HSET` inside the script (Lua's stack holds a few thousand).
const NODES_PER_HSET: usize = 200;

/// Where and how to reach Redis.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `unix://` URL.
    pub url: String,
    /// Used when the URL carries none.
    pub password: Option<String>,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// This replica's name (marks the views it publishes).
    pub replica: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show only where it points.
        f.debug_struct("RedisConfig")
            .field("url", &redacted_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("prefix", &self.prefix)
            .field("replica", &self.replica)
            .finish()
    }
}

/// The URL without a password, for logs and messages.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://<credentials>@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    fn task(&self, id: &str) -> String {
        format!("{}task:{id}", self.prefix)
    }
    fn task_prefix(&self) -> String {
        format!("{}task:", self.prefix)
    }
    fn tasks(&self) -> String {
        format!("{}tasks", self.prefix)
    }
    fn status_prefix(&self) -> String {
        format!("{}tasks:", self.prefix)
    }
    fn tasks_with(&self, status: TaskStatus) -> String {
        format!("{}{}", self.status_prefix(), status_name(status))
    }
    fn nodes(&self, id: &str) -> String {
        format!("{}nodes:{id}", self.prefix)
    }
    fn nodes_prefix(&self) -> String {
        format!("{}nodes:", self.prefix)
    }
    /// Ended tasks whose webhook is still owed.
    fn webhooks_owed(&self) -> String {
        format!("{}webhooks-owed", self.prefix)
    }
    fn schedule(&self, id: &str) -> String {
        format!("{}schedule:{id}", self.prefix)
    }
    fn schedule_prefix(&self) -> String {
        format!("{}schedule:", self.prefix)
    }
    fn schedules(&self) -> String {
        format!("{}schedules", self.prefix)
    }
    fn executions(&self, schedule: &str) -> String {
        format!("{}executions:{schedule}", self.prefix)
    }
    fn executions_prefix(&self) -> String {
        format!("{}executions:", self.prefix)
    }
    fn execution_ids(&self, schedule: &str) -> String {
        format!("{}{schedule}", self.execution_ids_prefix())
    }
    fn execution_seq(&self, schedule: &str) -> String {
        format!("{}{schedule}", self.execution_seq_prefix())
    }
    fn running_executions(&self) -> String {
        format!("{}executions-running", self.prefix)
    }
    /// Ended executions (`<schedule>\n<id>`) scored by when they ended (µs).
    fn ended_executions(&self) -> String {
        format!("{}executions-ended", self.prefix)
    }
    fn execution_ids_prefix(&self) -> String {
        format!("{}execution-ids:", self.prefix)
    }
    fn execution_seq_prefix(&self) -> String {
        format!("{}execution-seq:", self.prefix)
    }
    fn policy(&self, id: &str) -> String {
        format!("{}keep-warm:{id}", self.prefix)
    }
    fn policy_prefix(&self) -> String {
        format!("{}keep-warm:", self.prefix)
    }
    fn policies(&self) -> String {
        format!("{}keep-warm-policies", self.prefix)
    }
    fn policy_runs(&self, id: &str) -> String {
        format!("{}keep-warm-runs:{id}", self.prefix)
    }
    /// Node name → learned pull speed (JSON).
    fn node_speeds(&self) -> String {
        format!("{}node-speeds", self.prefix)
    }
    /// Node names scored by minus their seconds per pull (slowest first, then by name).
    fn node_speed_order(&self) -> String {
        format!("{}node-speeds-slowest", self.prefix)
    }
    /// New and cancelled task ids.
    pub(crate) fn wake_channel(&self) -> String {
        format!("{}wake", self.prefix)
    }
    /// Written task views, as `<replica>\n<json>`.
    pub(crate) fn views_channel(&self) -> String {
        format!("{}views", self.prefix)
    }
    /// Changed schedule ids.
    pub(crate) fn schedules_channel(&self) -> String {
        format!("{}schedules", self.prefix)
    }
    /// Created, changed or deleted keep-warm policy ids.
    pub(crate) fn policies_channel(&self) -> String {
        format!("{}policies", self.prefix)
    }
}

/// The wire name of a status (`pending`, …).
fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Pending => "pending",
        TaskStatus::Running => "running",
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
    }
}

/// A sorted-set member that orders newest first when read in reverse:
/// fixed-width `createdAt` with nanoseconds, then the id.
fn list_member(created_at: DateTime<Utc>, id: &str) -> String {
    format!("{}|{id}", time_key(created_at))
}

/// Fixed-width time text (list members, `ended`, trim cutoffs): text order is time order.
fn time_key(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.9f").to_string()
}

/// The `ended` field of a task's hash: when it ended, `''` while it has not.
fn ended_key(task: &Task) -> String {
    match task.finished_at {
        Some(at) if task.status.is_terminal() => time_key(at),
        _ => String::new(),
    }
}

fn encode_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn decode_time(id: &str, raw: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(id, format!("time {raw:?}: {e}")))
}

fn corrupt(id: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: message.to_string(),
    }
}

fn encode<T: serde::Serialize>(id: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encode {id}: {e}")))
}

fn decode_task(id: &str, body: &str) -> StoreResult<Task> {
    serde_json::from_str(body).map_err(|e| corrupt(id, e))
}

/// Adds a new task: fails (0) if the id exists.
const INSERT_TASK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'status', ARGV[2], 'member', ARGV[3], 'rev', 1)
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'ended', ARGV[7]) end
redis.call('ZADD', KEYS[2], 0, ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[3])
if ARGV[6] == '1' then redis.call('ZADD', KEYS[4], 0, ARGV[3]) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
";

/// Replaces a task's view if its status is one of ARGV[9..] (mode `status`)
/// or its revision is ARGV[4] (mode `rev`); moves it between status sets,
/// keeps the owed-webhook index (ARGV[7] = '1' when owed), records when it
/// ended (ARGV[8], '' while it runs) and publishes the view. Returns 1 when
/// it wrote.
const UPDATE_TASK: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'status', 'rev', 'member')
if not cur[1] then return 0 end
if ARGV[3] == 'rev' then
  if cur[2] ~= ARGV[4] then return 0 end
else
  local ok = false
  for i = 9, #ARGV do if ARGV[i] == cur[1] then ok = true end end
  if not ok then return 0 end
end
if ARGV[7] == '1' then
  redis.call('ZADD', KEYS[3], 0, cur[3])
else
  redis.call('ZREM', KEYS[3], cur[3])
end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'status', ARGV[2], 'rev', tonumber(cur[2]) + 1)
if ARGV[8] == '' then
  redis.call('HDEL', KEYS[1], 'ended')
else
  redis.call('HSET', KEYS[1], 'ended', ARGV[8])
end
if cur[1] ~= ARGV[2] then
  redis.call('ZREM', KEYS[2] .. cur[1], cur[3])
  redis.call('ZADD', KEYS[2] .. ARGV[2], 0, cur[3])
end
redis.call('PUBLISH', ARGV[5], ARGV[6] .. ARGV[1])
return 1
";

/// A page (ARGV[1]..ARGV[2], newest first, or oldest first when ARGV[4] is
/// 'oldest') of each sorted set in KEYS, as the fields ARGV[5..] of the
/// hashes `ARGV[3] .. <id>`. Returns the first set's size, then the fields
/// of each member in order.
const PAGE: &str = r"
local out = { redis.call('ZCARD', KEYS[1]) }
local order = 'ZREVRANGE'
if ARGV[4] == 'oldest' then order = 'ZRANGE' end
for _, set in ipairs(KEYS) do
  local members = redis.call(order, set, ARGV[1], ARGV[2])
  for _, member in ipairs(members) do
    local id = string.sub(member, string.find(member, '|', 1, true) + 1)
    local values = redis.call('HMGET', ARGV[3] .. id, unpack(ARGV, 5))
    for i = 1, #ARGV - 4 do
      out[#out + 1] = values[i] or ''
    end
  end
end
return out
";

/// Deletes up to ARGV[3] ended tasks (with their node records), oldest
/// first, that are beyond the newest ARGV[1] or ended before ARGV[2] (the
/// hash's `ended` field; a task stored without one counts from its
/// creation). A task created after the cutoff cannot have ended before it, so
/// the scan stops at the first such task within the newest ARGV[1].
/// KEYS: all tasks, owed webhooks. ARGV[4..6]: task, node and status-set
/// key prefixes. Returns how many went.
const TRIM: &str = r"
local total = redis.call('ZCARD', KEYS[1])
local keep, batch = tonumber(ARGV[1]), tonumber(ARGV[3])
local doomed = {}
local start = 0
while #doomed < batch and start < total do
  local members = redis.call('ZRANGE', KEYS[1], start, start + 499)
  if #members == 0 then break end
  for i, member in ipairs(members) do
    local rank = total - (start + i)
    local cut = string.find(member, '|', 1, true)
    local created = string.sub(member, 1, cut - 1)
    if rank < keep and created >= ARGV[2] then
      start = total
      break
    end
    local id = string.sub(member, cut + 1)
    local task = redis.call('HMGET', ARGV[4] .. id, 'status', 'ended')
    local status = task[1]
    if status == 'completed' or status == 'failed' or status == 'cancelled' then
      if rank >= keep or (task[2] or created) < ARGV[2] then
        doomed[#doomed + 1] = { member, id, status }
        if #doomed >= batch then break end
      end
    end
  end
  start = start + 500
end
for _, d in ipairs(doomed) do
  redis.call('DEL', ARGV[4] .. d[2], ARGV[5] .. d[2])
  redis.call('ZREM', KEYS[1], d[1])
  redis.call('ZREM', KEYS[2], d[1])
  redis.call('ZREM', ARGV[6] .. d[3], d[1])
end
return #doomed
";

/// Writes node records (ARGV pairs) of an existing task. Returns 0 if the task is missing.
const PUT_NODES: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local chunk = tonumber(ARGV[1])
local i = 2
while i <= #ARGV do
  local last = math.min(i + 2 * chunk - 1, #ARGV)
  redis.call('HSET', KEYS[2], unpack(ARGV, i, last))
  i = last + 1
end
return 1
";

/// Scripts, loaded once per store (sent by hash, re-sent if Redis forgot them).
pub(crate) struct Scripts {
    insert_task: Script,
    update_task: Script,
    page: Script,
    trim: Script,
    put_nodes: Script,
    pub(crate) insert_schedule: Script,
    pub(crate) schedule_cas: Script,
    pub(crate) delete_schedule: Script,
    pub(crate) finish_execution: Script,
    pub(crate) executions_page: Script,
    pub(crate) running_executions: Script,
    pub(crate) trim_executions: Script,
    pub(crate) insert_policy: Script,
    pub(crate) update_policy: Script,
    pub(crate) delete_policy: Script,
    pub(crate) record_run: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            insert_task: Script::new(INSERT_TASK),
            update_task: Script::new(UPDATE_TASK),
            page: Script::new(PAGE),
            trim: Script::new(TRIM),
            put_nodes: Script::new(PUT_NODES),
            insert_schedule: Script::new(schedule_store::INSERT_SCHEDULE),
            schedule_cas: Script::new(schedule_store::SCHEDULE_CAS),
            delete_schedule: Script::new(schedule_store::DELETE_SCHEDULE),
            finish_execution: Script::new(schedule_store::FINISH_EXECUTION),
            executions_page: Script::new(schedule_store::EXECUTIONS_PAGE),
            running_executions: Script::new(schedule_store::RUNNING_EXECUTIONS),
            trim_executions: Script::new(schedule_store::TRIM_EXECUTIONS),
            insert_policy: Script::new(policy_store::INSERT_POLICY),
            update_policy: Script::new(policy_store::UPDATE_POLICY),
            delete_policy: Script::new(policy_store::DELETE_POLICY),
            record_run: Script::new(policy_store::RECORD_RUN),
        }
    }
}

/// A `TaskStore` and `ScheduleStore` on Redis, shared by every replica.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    client: redis::Client,
    keys: Keys,
    replica: String,
    scripts: Arc<Scripts>,
    errors: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix)
            .field("replica", &self.replica)
            .finish()
    }
}

impl RedisStore {
    /// Connects (failing if Redis cannot be reached now). Needs a Tokio runtime.
    pub async fn connect(config: &RedisConfig) -> StoreResult<RedisStore> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
            .map_err(|e| {
                StoreError::Backend(format!("bad Redis URL {}: {e}", redacted_url(&config.url)))
            })?;
        if let Some(password) = &config.password {
            if info.redis_settings().password().is_none() {
                let settings = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(settings);
            }
        }
        let client = redis::Client::open(info).map_err(backend)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = client
            .get_connection_manager_with_config(manager)
            .await
            .map_err(|e| {
                StoreError::Backend(format!(
                    "connecting to Redis at {}: {e}",
                    redacted_url(&config.url)
                ))
            })?;
        Ok(RedisStore {
            conn,
            client,
            keys: Keys {
                prefix: config.prefix.clone(),
            },
            replica: config.replica.clone(),
            scripts: Arc::new(Scripts::new()),
            errors: Default::default(),
        })
    }

    /// Follows what other replicas (and this one) publish: new and cancelled
    /// tasks, written task views, changed schedules. Reconnects by itself;
    /// after a reconnect it reports [`Change::Resubscribed`], since messages
    /// sent meanwhile are lost.
    pub fn changes(&self) -> Changes {
        Changes::new(self.client.clone(), self.keys.clone(), self.replica.clone())
    }

    /// Counts failed calls in `metrics` (`prewarm_store_errors_total`).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> RedisStore {
        self.errors = metrics.store_errors.clone();
        self
    }

    /// A connection for one call (cheap: the manager multiplexes one socket).
    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Counts a failed call and maps it to a store error.
    fn failed(&self, err: redis::RedisError) -> StoreError {
        self.errors.inc();
        tracing::debug!(error = %err, "redis call failed");
        backend(err)
    }

    /// `HMGET` of a task's JSON view, status-independent revision.
    async fn read_task(&self, id: &str) -> StoreResult<Option<(Task, String)>> {
        let (json, rev): (Option<String>, Option<String>) = self
            .conn()
            .hmget(self.keys.task(id), &["json", "rev"])
            .await
            .map_err(|e| self.failed(e))?;
        match (json, rev) {
            (Some(json), Some(rev)) => Ok(Some((decode_task(id, &json)?, rev))),
            _ => Ok(None),
        }
    }

    /// Runs [`UPDATE_TASK`].
    async fn write_task(&self, task: &Task, guard: TaskGuard<'_>) -> StoreResult<bool> {
        let json = encode(&task.task_id, task)?;
        let mut call = self.scripts.update_task.key(self.keys.task(&task.task_id));
        call.key(self.keys.status_prefix())
            .key(self.keys.webhooks_owed())
            .arg(&json)
            .arg(status_name(task.status));
        match guard {
            TaskGuard::Rev(rev) => call.arg("rev").arg(rev),
            TaskGuard::Status(_) => call.arg("status").arg(""),
        };
        call.arg(self.keys.views_channel())
            .arg(format!("{}\n", self.replica))
            .arg(owes_webhook(task))
            .arg(ended_key(task));
        if let TaskGuard::Status(expected) = guard {
            for status in expected {
                call.arg(status_name(*status));
            }
        }
        let wrote: i64 = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(wrote == 1)
    }

    /// Runs [`PAGE`] over `sets` (newest first) and returns the first set's
    /// size and, per member, the values of `fields`.
    async fn page(
        &self,
        sets: &[String],
        start: i64,
        stop: i64,
        hash_prefix: &str,
        fields: &[&str],
    ) -> StoreResult<(u64, Vec<Vec<String>>)> {
        self.page_in(sets, (start, stop), "newest", hash_prefix, fields)
            .await
    }

    /// [`page`](Self::page) in either order (`newest` or `oldest` first).
    async fn page_in(
        &self,
        sets: &[String],
        (start, stop): (i64, i64),
        order: &str,
        hash_prefix: &str,
        fields: &[&str],
    ) -> StoreResult<(u64, Vec<Vec<String>>)> {
        let mut call = self.scripts.page.prepare_invoke();
        for set in sets {
            call.key(set);
        }
        call.arg(start).arg(stop).arg(hash_prefix).arg(order);
        for field in fields {
            call.arg(*field);
        }
        let reply: Vec<redis::Value> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        let (total, strings) = self.counted_strings(reply)?;
        let rows = strings
            .chunks(fields.len())
            .map(<[String]>::to_vec)
            .collect();
        Ok((total, rows))
    }

    /// A page script's reply: the total first, then the page's strings.
    fn counted_strings(&self, reply: Vec<redis::Value>) -> StoreResult<(u64, Vec<String>)> {
        let mut values = reply.into_iter();
        let total: u64 = match values.next() {
            Some(v) => redis::from_redis_value(v).map_err(|e| self.failed(e.into()))?,
            None => 0,
        };
        let strings = values
            .map(redis::from_redis_value)
            .collect::<Result<_, _>>()
            .map_err(|e| self.failed(e.into()))?;
        Ok((total, strings))
    }

    async fn publish(&self, channel: String, message: &str) -> StoreResult<()> {
        let _: i64 = self
            .conn()
            .publish(channel, message)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }
}

/// `'1'` when the task has ended and its webhook is still owed.
fn owes_webhook(task: &Task) -> &'static str {
    if task.status.is_terminal() && task.webhook_status == Some(prewarm_api::WebhookStatus::Pending)
    {
        "1"
    } else {
        "0"
    }
}

/// What `UPDATE_TASK` compares before writing.
enum TaskGuard<'a> {
    Rev(&'a str),
    Status(&'a [TaskStatus]),
}

/// Unreachable, timed out or still loading: `Unavailable` (the API answers
/// 503 and callers retry); anything else is a `Backend` failure.
fn backend(err: redis::RedisError) -> StoreError {
    // A Redis that refuses the service (NOAUTH, a wrong password, an ACL
    // without the command) is as unusable as one that is down, and may be
    // fixed as soon.
    let refused = matches!(
        err.kind(),
        redis::ErrorKind::AuthenticationFailed
            | redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
    ) || err.code() == Some("NOAUTH");
    let away = refused
        || err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
        );
    if away {
        StoreError::Unavailable(format!("redis: {err}"))
    } else {
        StoreError::Backend(format!("redis: {err}"))
    }
}

/// `(offset, limit)` as an inclusive `ZREVRANGE` range; `None` when empty.
fn range(limit: u32, offset: u64) -> Option<(i64, i64)> {
    if limit == 0 {
        return None;
    }
    let start = i64::try_from(offset).ok()?;
    Some((start, start.saturating_add(i64::from(limit) - 1)))
}

#[async_trait]
impl TaskStore for RedisStore {
    async fn insert(&self, task: &Task) -> StoreResult<()> {
        let json = encode(&task.task_id, task)?;
        let inserted: i64 = self
            .scripts
            .insert_task
            .key(self.keys.task(&task.task_id))
            .key(self.keys.tasks())
            .key(self.keys.tasks_with(task.status))
            .key(self.keys.webhooks_owed())
            .arg(json)
            .arg(status_name(task.status))
            .arg(list_member(task.created_at, &task.task_id))
            .arg(self.keys.wake_channel())
            .arg(&task.task_id)
            .arg(owes_webhook(task))
            .arg(ended_key(task))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        if inserted == 0 {
            return Err(StoreError::Duplicate(task.task_id.clone()));
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Task>> {
        let json: Option<String> = self
            .conn()
            .hget(self.keys.task(id), "json")
            .await
            .map_err(|e| self.failed(e))?;
        json.map(|json| decode_task(id, &json)).transpose()
    }

    async fn list(
        &self,
        status: Option<TaskStatus>,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<Task>, u64)> {
        let set = match status {
            Some(status) => self.keys.tasks_with(status),
            None => self.keys.tasks(),
        };
        let (start, stop) = range(limit, offset).unwrap_or((1, 0));
        let (total, rows) = self
            .page(&[set], start, stop, &self.keys.task_prefix(), &["json"])
            .await?;
        let tasks = rows
            .iter()
            .map(|row| decode_task("(list)", &row[0]))
            .collect::<StoreResult<_>>()?;
        Ok((tasks, total))
    }

    async fn list_with_status(&self, statuses: &[TaskStatus]) -> StoreResult<Vec<Task>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let sets: Vec<String> = statuses.iter().map(|s| self.keys.tasks_with(*s)).collect();
        let (_, rows) = self
            .page(&sets, 0, -1, &self.keys.task_prefix(), &["json"])
            .await?;
        rows.iter()
            .map(|row| decode_task("(list)", &row[0]))
            .collect()
    }

    async fn update_if(&self, task: &Task, expected: &[TaskStatus]) -> StoreResult<bool> {
        if expected.is_empty() {
            return Ok(false);
        }
        self.write_task(task, TaskGuard::Status(expected)).await
    }

    async fn cancel(&self, id: &str, at: DateTime<Utc>) -> StoreResult<CancelOutcome> {
        loop {
            let Some((mut task, rev)) = self.read_task(id).await? else {
                return Ok(CancelOutcome::NotFound);
            };
            if let Err(ended) = crate::domain::task::cancel(&mut task, at) {
                return Ok(CancelOutcome::AlreadyEnded(ended));
            }
            if self.write_task(&task, TaskGuard::Rev(&rev)).await? {
                self.publish(self.keys.wake_channel(), id).await?;
                return Ok(CancelOutcome::Cancelled(task));
            }
            // Another writer came first: read again.
        }
    }

    async fn put_nodes(&self, task_id: &str, records: &[NodeRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut call = self.scripts.put_nodes.prepare_invoke();
        call.key(self.keys.task(task_id))
            .key(self.keys.nodes(task_id))
            .arg(NODES_PER_HSET);
        for record in records {
            call.arg(&record.node).arg(encode(task_id, &record.body)?);
        }
        let wrote: i64 = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        if wrote == 0 {
            return Err(StoreError::Backend(format!(
                "put_nodes: task {task_id} does not exist"
            )));
        }
        Ok(())
    }

    async fn nodes(&self, task_id: &str) -> StoreResult<Vec<NodeRecord>> {
        let all: Vec<(String, String)> = self
            .conn()
            .hgetall(self.keys.nodes(task_id))
            .await
            .map_err(|e| self.failed(e))?;
        all.into_iter()
            .map(|(node, body)| {
                Ok(NodeRecord {
                    body: serde_json::from_str(&body)
                        .map_err(|e| corrupt(task_id, format!("node {node}: {e}")))?,
                    node,
                })
            })
            .collect()
    }

    async fn trim(&self, retention: &Retention, batch: u32) -> StoreResult<u32> {
        if batch == 0 {
            return Ok(0);
        }
        let cutoff = time_key(retention.ended_before);
        let gone: u32 = self
            .scripts
            .trim
            .key(self.keys.tasks())
            .key(self.keys.webhooks_owed())
            .arg(retention.max_tasks)
            .arg(cutoff)
            .arg(batch)
            .arg(self.keys.task_prefix())
            .arg(self.keys.nodes_prefix())
            .arg(self.keys.status_prefix())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(gone)
    }

    async fn webhook_pending(&self, limit: u32) -> StoreResult<Vec<Task>> {
        let Some(range) = range(limit, 0) else {
            return Ok(Vec::new());
        };
        let (_, rows) = self
            .page_in(
                &[self.keys.webhooks_owed()],
                range,
                "oldest",
                &self.keys.task_prefix(),
                &["json"],
            )
            .await?;
        rows.iter()
            .map(|row| decode_task("(webhooks)", &row[0]))
            .collect()
    }

    async fn ping(&self) -> StoreResult<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::testing::RedisServer;

    crate::store::contract::store_contract_tests!(guarded: RedisServer::with_store().await);
    crate::store::schedule_contract::schedule_contract_tests!(guarded: RedisServer::with_store().await);
    crate::store::policy_contract::policy_contract_tests!(guarded: RedisServer::with_store().await);
    crate::store::node_speed_contract::node_speed_contract_tests!(guarded: RedisServer::with_store().await);

    use std::time::Duration;

    use prewarm_api::TaskStatus;
    use tokio_util::sync::CancellationToken;

    use super::Change;
    use crate::store::contract::{sample_task, t};
    use crate::store::policies::PolicyStore;
    use crate::store::policy_contract::sample_policy;
    use crate::store::{StoreError, TaskStore};

    #[tokio::test]
    async fn installations_with_different_prefixes_do_not_see_each_other() {
        let server = RedisServer::start().await;
        let (a, b) = (
            server.store("blue:", "a").await,
            server.store("green:", "b").await,
        );
        a.insert(&sample_task(
            "task-20260101-aaaaaa",
            TaskStatus::Pending,
            t(0),
        ))
        .await
        .unwrap();
        assert_eq!(b.list(None, 10, 0).await.unwrap().1, 0);
        assert!(b.get("task-20260101-aaaaaa").await.unwrap().is_none());
        assert_eq!(a.list(None, 10, 0).await.unwrap().1, 1);
    }

    #[tokio::test]
    async fn a_stopped_redis_is_reported_unavailable_quickly() {
        let server = RedisServer::start().await;
        let store = server.store("prewarm:", "a").await;
        store.ping().await.unwrap();
        drop(server);
        let started = std::time::Instant::now();
        let err = store.get("task-20260101-aaaaaa").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() < super::RESPONSE_TIMEOUT * 3);
    }

    /// A follower hears creates, cancels and another replica's views.
    async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Change>) -> Change {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a change within 5 s")
            .expect("feed open")
    }

    #[tokio::test]
    async fn creates_cancels_and_views_reach_other_replicas() {
        let server = RedisServer::start().await;
        let (leader, follower) = (
            server.store("prewarm:", "leader").await,
            server.store("prewarm:", "follower").await,
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let feed = tokio::spawn(leader.changes().run(stop.clone(), move |c| {
            let _ = tx.send(c);
        }));
        // Subscribed once a publish is heard: retry the first insert's publish until then.
        let mut task = sample_task("task-20260101-aaaaaa", TaskStatus::Pending, t(0));
        follower.insert(&task).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
                Ok(Some(Change::Task(id))) => {
                    assert_eq!(id, task.task_id);
                    break;
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => {
                    assert!(std::time::Instant::now() < deadline, "never subscribed");
                    follower
                        .publish(follower.keys.wake_channel(), &task.task_id)
                        .await
                        .unwrap();
                }
            }
        }
        task.status = TaskStatus::Running;
        task.progress.completed_nodes = 3;
        assert!(follower
            .update_if(&task, &[TaskStatus::Pending])
            .await
            .unwrap());
        match next(&mut rx).await {
            Change::View(view) => assert_eq!(view.progress.completed_nodes, 3),
            other => panic!("expected a view, got {other:?}"),
        }
        // Its own views are not echoed back to the writer.
        assert!(leader
            .update_if(&task, &[TaskStatus::Running])
            .await
            .unwrap());
        follower.cancel(&task.task_id, t(9)).await.unwrap();
        match next(&mut rx).await {
            Change::View(view) => assert_eq!(view.status, TaskStatus::Cancelled),
            other => panic!("expected the cancelled view, got {other:?}"),
        }
        assert!(matches!(next(&mut rx).await, Change::Task(id) if id == task.task_id));
        // A keep-warm policy created, changed and deleted on the follower:
        // the leader hears of each.
        let mut policy = sample_policy("keep-warm-20260101-aaaaaa", t(1));
        follower.insert_policy(&policy).await.unwrap();
        assert!(matches!(next(&mut rx).await, Change::Policy(id) if id == policy.id));
        policy.enabled = false;
        assert!(follower.update_policy(&policy).await.unwrap());
        assert!(matches!(next(&mut rx).await, Change::Policy(id) if id == policy.id));
        assert!(follower.delete_policy(&policy.id).await.unwrap());
        assert!(matches!(next(&mut rx).await, Change::Policy(id) if id == policy.id));
        stop.cancel();
        feed.await.unwrap();
    }

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        assert_eq!(
            super::redacted_url("redis://:secret@10.0.0.1:6379/0"),
            "redis://<credentials>@10.0.0.1:6379/0"
        );
        assert_eq!(
            super::redacted_url("unix:///run/redis.sock"),
            "unix:///run/redis.sock"
        );
    }
}
