//! `ScheduleStore` on Redis.
//!
//! A schedule is a hash (`schedule:<id>`: JSON view, fire cursor, queued run,
//! list member, revision) indexed by the `schedules` sorted set. Its
//! executions are a hash by id (`executions:<schedule>`) with a sorted set of
//! ids for paging and a counter handing out the next id; the set
//! `executions-running` lists the ones still running, which is all the
//! scheduler's recovery reads, and the sorted set `executions-ended` holds
//! the ended ones by when they ended, for the retention trim (executions
//! that ended before it existed are trimmed by count only). The cursor and the queued run only change
//! through [`SCHEDULE_CAS`], which compares the schedule's revision, so two
//! schedulers can never both claim one fire time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prewarm_api::{Execution, ExecutionStatus, ScheduledTask};
use redis::AsyncCommands;

use super::{corrupt, decode_time, encode, encode_time, list_member, range, RedisStore};
use crate::store::schedules::{ended_at, Fire, FireOutcome, ScheduleStore, StoredSchedule};
use crate::store::{Retention, StoreError, StoreResult};

/// Adds a new schedule: 0 if the id exists.
pub(super) const INSERT_SCHEDULE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'cursor', ARGV[2], 'queued', ARGV[3], 'member', ARGV[4], 'rev', 1)
redis.call('ZADD', KEYS[2], 0, ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

/// Rewrites a schedule if its revision is ARGV[1] and, when ARGV[5] is not
/// empty, records that execution JSON under the next id (added to the running
/// set when ARGV[6] is '1', else to the ended set scored ARGV[9]). Returns -1
/// (no schedule), -2 (revision moved on), 0 (written, no execution) or the
/// new execution's id.
pub(super) const SCHEDULE_CAS: &str = r"
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return -1 end
if rev ~= ARGV[1] then return -2 end
redis.call('HSET', KEYS[1], 'json', ARGV[2], 'cursor', ARGV[3], 'queued', ARGV[4], 'rev', tonumber(rev) + 1)
if ARGV[8] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[7]) end
if ARGV[5] == '' then return 0 end
local n = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[2], n, ARGV[5])
redis.call('ZADD', KEYS[3], n, n)
if ARGV[6] == '1' then
  redis.call('SADD', KEYS[5], ARGV[7] .. '\n' .. n)
else
  redis.call('ZADD', KEYS[6], ARGV[9], ARGV[7] .. '\n' .. n)
end
return n
";

/// Deletes a schedule with its executions: 0 if there was none.
pub(super) const DELETE_SCHEDULE: &str = r"
local member = redis.call('HGET', KEYS[1], 'member')
if not member then return 0 end
redis.call('ZREM', KEYS[2], member)
for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  redis.call('SREM', KEYS[6], ARGV[1] .. '\n' .. id)
  redis.call('ZREM', KEYS[7], ARGV[1] .. '\n' .. id)
end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4], KEYS[5])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
";

/// Replaces a running execution (ARGV[1] = its running-set member, ARGV[2]
/// its id, ARGV[3] the JSON, ARGV[4] '1' if it still runs, else ARGV[5]
/// when it ended): 1 if written.
pub(super) const FINISH_EXECUTION: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] ~= '1' then
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
end
return 1
";

/// Deletes up to ARGV[3] ended executions: first those that ended before
/// ARGV[1] (KEYS[1], the ended set), then per schedule (KEYS[2]) those
/// beyond the newest ARGV[2] ids that are not running (KEYS[3]). ARGV[4..6]:
/// the execution hash, id set and id counter key prefixes. Returns how many
/// went.
pub(super) const TRIM_EXECUTIONS: &str = r"
local keep, batch = tonumber(ARGV[2]), tonumber(ARGV[3])
local gone = 0
local function drop(schedule, id)
  redis.call('HDEL', ARGV[4] .. schedule, id)
  redis.call('ZREM', ARGV[5] .. schedule, id)
  redis.call('ZREM', KEYS[1], schedule .. '\n' .. id)
  gone = gone + 1
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, batch)) do
  local cut = string.find(member, '\n', 1, true)
  drop(string.sub(member, 1, cut - 1), string.sub(member, cut + 1))
end
if gone >= batch then return gone end
local running = redis.call('SCARD', KEYS[3])
for _, entry in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local schedule = string.sub(entry, string.find(entry, '|', 1, true) + 1)
  local beyond = tonumber(redis.call('GET', ARGV[6] .. schedule) or '0') - keep
  if beyond >= 1 then
    local ids = redis.call('ZRANGEBYSCORE', ARGV[5] .. schedule, '-inf', beyond,
      'LIMIT', 0, batch - gone + running)
    for _, id in ipairs(ids) do
      if redis.call('SISMEMBER', KEYS[3], schedule .. '\n' .. id) == 0 then
        drop(schedule, id)
        if gone >= batch then return gone end
      end
    end
  end
end
return gone
";

/// A page of executions, highest id first: the total, then (id, JSON) pairs.
pub(super) const EXECUTIONS_PAGE: &str = r"
local out = { redis.call('ZCARD', KEYS[1]) }
for _, id in ipairs(redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2])) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
";

/// Every running execution: (running-set member, JSON) pairs.
pub(super) const RUNNING_EXECUTIONS: &str = r"
local out = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local cut = string.find(member, '\n', 1, true)
  local json = redis.call('HGET', ARGV[1] .. string.sub(member, 1, cut - 1), string.sub(member, cut + 1))
  if json then
    out[#out + 1] = member
    out[#out + 1] = json
  end
end
return out
";

/// A stored schedule as read, with the revision to compare on write.
struct Read {
    schedule: StoredSchedule,
    rev: String,
}

/// A score in the ended set: microseconds since the epoch (exact in a double).
fn ended_score(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// The ended-set score of `execution`, `''` while it runs.
fn ended_arg(execution: &Execution) -> String {
    ended_at(execution)
        .map(|at| ended_score(at).to_string())
        .unwrap_or_default()
}

fn encode_queued(queued: Option<DateTime<Utc>>) -> String {
    queued.map(encode_time).unwrap_or_default()
}

fn decode_schedule(
    id: &str,
    json: &str,
    cursor: &str,
    queued: &str,
) -> StoreResult<StoredSchedule> {
    Ok(StoredSchedule {
        task: serde_json::from_str(json).map_err(|e| corrupt(id, e))?,
        fire_cursor: decode_time(id, cursor)?,
        queued_fire: match queued {
            "" => None,
            at => Some(decode_time(id, at)?),
        },
    })
}

/// An execution as stored: its id and schedule come from where it is stored.
fn decode_execution(schedule_id: &str, id: &str, json: &str) -> StoreResult<Execution> {
    let mut execution: Execution = serde_json::from_str(json)
        .map_err(|e| corrupt(schedule_id, format!("execution {id}: {e}")))?;
    execution.id = id
        .parse()
        .map_err(|e| corrupt(schedule_id, format!("execution id {id:?}: {e}")))?;
    execution.scheduled_task_id = schedule_id.to_owned();
    Ok(execution)
}

impl RedisStore {
    async fn read_schedule(&self, id: &str) -> StoreResult<Option<Read>> {
        let fields: Vec<Option<String>> = self
            .conn()
            .hmget(self.keys.schedule(id), &["json", "cursor", "queued", "rev"])
            .await
            .map_err(|e| self.failed(e))?;
        let [Some(json), Some(cursor), queued, Some(rev)] = <[Option<String>; 4]>::try_from(fields)
            .map_err(|_| StoreError::Backend("HMGET answered a wrong arity".into()))?
        else {
            return Ok(None);
        };
        Ok(Some(Read {
            schedule: decode_schedule(id, &json, &cursor, queued.as_deref().unwrap_or(""))?,
            rev,
        }))
    }

    /// Runs [`SCHEDULE_CAS`]: `Ok(None)` when the revision moved on,
    /// `Ok(Some(n))` when written (`n` the new execution id, or 0).
    async fn write_schedule(
        &self,
        read: &Read,
        next: &StoredSchedule,
        execution: Option<&Execution>,
        announce: bool,
    ) -> StoreResult<Option<Result<u64, ()>>> {
        let id = &next.task.id;
        let execution_json = execution.map(|e| encode(id, e)).transpose()?;
        let running = execution.is_some_and(|e| e.status == ExecutionStatus::Running);
        let n: i64 = self
            .scripts
            .schedule_cas
            .key(self.keys.schedule(id))
            .key(self.keys.executions(id))
            .key(self.keys.execution_ids(id))
            .key(self.keys.execution_seq(id))
            .key(self.keys.running_executions())
            .key(self.keys.ended_executions())
            .arg(&read.rev)
            .arg(encode(id, &next.task)?)
            .arg(encode_time(next.fire_cursor))
            .arg(encode_queued(next.queued_fire))
            .arg(execution_json.unwrap_or_default())
            .arg(if running { "1" } else { "0" })
            .arg(id)
            .arg(if announce {
                self.keys.schedules_channel()
            } else {
                String::new()
            })
            .arg(execution.map(ended_arg).unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(match n {
            -1 => Some(Err(())),
            -2 => None,
            n => Some(Ok(u64::try_from(n).unwrap_or_default())),
        })
    }
}

#[async_trait]
impl ScheduleStore for RedisStore {
    async fn insert_schedule(&self, schedule: &StoredSchedule) -> StoreResult<()> {
        let id = &schedule.task.id;
        let inserted: i64 = self
            .scripts
            .insert_schedule
            .key(self.keys.schedule(id))
            .key(self.keys.schedules())
            .arg(encode(id, &schedule.task)?)
            .arg(encode_time(schedule.fire_cursor))
            .arg(encode_queued(schedule.queued_fire))
            .arg(list_member(schedule.task.created_at, id))
            .arg(self.keys.schedules_channel())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        if inserted == 0 {
            return Err(StoreError::Duplicate(id.clone()));
        }
        Ok(())
    }

    async fn get_schedule(&self, id: &str) -> StoreResult<Option<StoredSchedule>> {
        Ok(self.read_schedule(id).await?.map(|read| read.schedule))
    }

    async fn list_schedules(
        &self,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<StoredSchedule>, u64)> {
        let (start, stop) = range(limit, offset).unwrap_or((1, 0));
        let (total, rows) = self
            .page(
                &[self.keys.schedules()],
                start,
                stop,
                &self.keys.schedule_prefix(),
                &["json", "cursor", "queued"],
            )
            .await?;
        let page = rows
            .iter()
            .map(|row| decode_schedule("(list)", &row[0], &row[1], &row[2]))
            .collect::<StoreResult<_>>()?;
        Ok((page, total))
    }

    async fn all_schedules(&self) -> StoreResult<Vec<StoredSchedule>> {
        let (_, rows) = self
            .page(
                &[self.keys.schedules()],
                0,
                -1,
                &self.keys.schedule_prefix(),
                &["json", "cursor", "queued"],
            )
            .await?;
        rows.iter()
            .map(|row| decode_schedule("(list)", &row[0], &row[1], &row[2]))
            .collect()
    }

    async fn update_schedule(
        &self,
        task: &ScheduledTask,
        reset: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        loop {
            let Some(read) = self.read_schedule(&task.id).await? else {
                return Ok(false);
            };
            let next = StoredSchedule {
                task: ScheduledTask {
                    last_execution_at: read.schedule.task.last_execution_at,
                    ..task.clone()
                },
                fire_cursor: reset.unwrap_or(read.schedule.fire_cursor),
                queued_fire: if reset.is_some() {
                    None
                } else {
                    read.schedule.queued_fire
                },
            };
            match self.write_schedule(&read, &next, None, true).await? {
                Some(Ok(_)) => return Ok(true),
                Some(Err(())) => return Ok(false),
                None => {}
            }
        }
    }

    async fn delete_schedule(&self, id: &str) -> StoreResult<bool> {
        let deleted: i64 = self
            .scripts
            .delete_schedule
            .key(self.keys.schedule(id))
            .key(self.keys.schedules())
            .key(self.keys.executions(id))
            .key(self.keys.execution_ids(id))
            .key(self.keys.execution_seq(id))
            .key(self.keys.running_executions())
            .key(self.keys.ended_executions())
            .arg(id)
            .arg(self.keys.schedules_channel())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(deleted == 1)
    }

    async fn record_fire(&self, id: &str, fire: &Fire) -> StoreResult<FireOutcome> {
        loop {
            let Some(read) = self.read_schedule(id).await? else {
                return Ok(FireOutcome::NotFound);
            };
            let stored = &read.schedule;
            if fire
                .cursor
                .is_some_and(|(expected, _)| stored.fire_cursor != expected)
                || fire
                    .queued
                    .is_some_and(|(expected, _)| stored.queued_fire != expected)
            {
                return Ok(FireOutcome::Conflict);
            }
            let mut next = stored.clone();
            if let Some((_, new)) = fire.cursor {
                next.fire_cursor = new;
            }
            if let Some((_, new)) = fire.queued {
                next.queued_fire = new;
            }
            let execution = fire.execution.as_ref().map(|execution| Execution {
                id: 0,
                scheduled_task_id: id.to_owned(),
                ..execution.clone()
            });
            if let Some(execution) = &execution {
                if execution.status == ExecutionStatus::Running {
                    next.task.last_execution_at = execution.started_at;
                }
            }
            match self
                .write_schedule(&read, &next, execution.as_ref(), false)
                .await?
            {
                Some(Ok(n)) => {
                    return Ok(FireOutcome::Recorded(
                        execution.map(|execution| Execution { id: n, ..execution }),
                    ))
                }
                Some(Err(())) => return Ok(FireOutcome::NotFound),
                None => {}
            }
        }
    }

    async fn finish_execution(&self, execution: &Execution) -> StoreResult<bool> {
        let schedule = &execution.scheduled_task_id;
        let wrote: i64 = self
            .scripts
            .finish_execution
            .key(self.keys.running_executions())
            .key(self.keys.executions(schedule))
            .key(self.keys.ended_executions())
            .arg(format!("{schedule}\n{}", execution.id))
            .arg(execution.id)
            .arg(encode(schedule, execution)?)
            .arg(if execution.status == ExecutionStatus::Running {
                "1"
            } else {
                "0"
            })
            .arg(ended_arg(execution))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(wrote == 1)
    }

    async fn list_executions(
        &self,
        schedule_id: &str,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<Execution>, u64)> {
        let (start, stop) = range(limit, offset).unwrap_or((1, 0));
        let reply: Vec<redis::Value> = self
            .scripts
            .executions_page
            .key(self.keys.execution_ids(schedule_id))
            .key(self.keys.executions(schedule_id))
            .arg(start)
            .arg(stop)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        let (total, strings) = self.counted_strings(reply)?;
        let page = strings
            .chunks(2)
            .map(|pair| decode_execution(schedule_id, &pair[0], &pair[1]))
            .collect::<StoreResult<_>>()?;
        Ok((page, total))
    }

    async fn get_execution(&self, schedule_id: &str, id: u64) -> StoreResult<Option<Execution>> {
        let json: Option<String> = self
            .conn()
            .hget(self.keys.executions(schedule_id), id)
            .await
            .map_err(|e| self.failed(e))?;
        json.map(|json| decode_execution(schedule_id, &id.to_string(), &json))
            .transpose()
    }

    async fn running_executions(&self) -> StoreResult<Vec<Execution>> {
        let pairs: Vec<String> = self
            .scripts
            .running_executions
            .key(self.keys.running_executions())
            .arg(self.keys.executions_prefix())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        pairs
            .chunks(2)
            .map(|pair| {
                let (schedule, id) = pair[0].rsplit_once('\n').unwrap_or((&pair[0], ""));
                decode_execution(schedule, id, &pair[1])
            })
            .collect()
    }

    async fn trim_executions(&self, retention: &Retention, batch: u32) -> StoreResult<u32> {
        if batch == 0 {
            return Ok(0);
        }
        let gone: u32 = self
            .scripts
            .trim_executions
            .key(self.keys.ended_executions())
            .key(self.keys.schedules())
            .key(self.keys.running_executions())
            .arg(ended_score(retention.ended_before))
            .arg(retention.max_tasks)
            .arg(batch)
            .arg(self.keys.executions_prefix())
            .arg(self.keys.execution_ids_prefix())
            .arg(self.keys.execution_seq_prefix())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(gone)
    }
}
