//! Scheduled tasks without I/O: cron expressions read in an IANA time zone,
//! the next fire time, the fires missed in a span, and validation of the
//! create and update bodies.
//!
//! Daylight-saving time follows cronie's rule for fixed-time jobs, applied to
//! every expression: each matching *wall-clock* time fires once.
//! - Spring forward: a wall-clock time that does not exist that day (02:30
//!   in a 02:00→03:00 gap) fires once, at the first instant after the gap
//!   (03:00); several such times, and a match at 03:00 itself, coalesce into
//!   that one fire.
//! - Fall back: a wall-clock time that happens twice (01:30 in a 02:00→01:00
//!   overlap) fires once, at its first occurrence.
//!
//! Kubernetes CronJob (robfig/cron) instead drops the skipped time and fires
//! the repeated one twice; we chose cronie's rule because a prewarm must be
//! neither silently missed nor doubled.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use prewarm_api::{
    CreateScheduledTaskRequest, OverlapPolicy, ScheduledTask, UpdateScheduledTaskRequest,
};

use super::task::{random_suffix, TaskSpec, ValidationError, MAX_TIMEOUT_SECONDS};

/// The time zone when none is given.
pub const DEFAULT_TIMEZONE: &str = "UTC";
/// Longest accepted `name`.
pub const MAX_NAME_LEN: usize = 253;
/// Longest accepted `description`.
pub const MAX_DESCRIPTION_LEN: usize = 4096;
/// Largest accepted `startingDeadlineSeconds` (30 days).
pub const MAX_STARTING_DEADLINE_SECONDS: u64 = 30 * 24 * 3600;
/// Nicknames accepted in place of five fields.
const NICKNAMES: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];
/// Fire times skipped in a row (repeated wall-clock times) before giving up.
const MAX_SKIPS: usize = 1000;

/// A parsed cron expression and the zone it is read in.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

impl CronSchedule {
    /// Parses a 5-field expression (or a nickname) and an IANA zone name.
    /// Errors name `cronExpr` or `timezone`; an expression that never fires
    /// after `now` is rejected too.
    pub fn parse(
        expr: &str,
        timezone: &str,
        now: DateTime<Utc>,
    ) -> Result<CronSchedule, ValidationError> {
        let tz: Tz = timezone.parse().map_err(|_| {
            ValidationError::new(
                "timezone",
                format!(
                    "unknown time zone {timezone:?}; use an IANA name such as \"UTC\" or \"Europe/Berlin\""
                ),
            )
        })?;
        let trimmed = expr.trim();
        let bad = |why: String| {
            ValidationError::new(
                "cronExpr",
                format!("invalid cron expression {expr:?}: {why}"),
            )
        };
        if let Some(nick) = trimmed.strip_prefix('@') {
            if !NICKNAMES.iter().any(|n| n[1..].eq_ignore_ascii_case(nick)) {
                return Err(bad(format!(
                    "unknown nickname @{nick}; use @hourly, @daily, @weekly, @monthly or @yearly"
                )));
            }
        } else {
            let fields = trimmed.split_whitespace().count();
            if fields != 5 {
                return Err(bad(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), got {fields}"
                )));
            }
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| bad(e.to_string()))?;
        let schedule = CronSchedule { cron, tz };
        if schedule.next_fire_after(now).is_none() {
            return Err(ValidationError::new(
                "cronExpr",
                format!("cron expression {expr:?} never fires"),
            ));
        }
        Ok(schedule)
    }

    /// The first fire strictly after `after`, or `None` if there is none.
    pub fn next_fire_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut cursor = after.with_timezone(&self.tz).naive_local();
        for _ in 0..MAX_SKIPS {
            let wall = self.cron.find_next_occurrence(&cursor, false).ok()?;
            let instant = match self.tz.from_local_datetime(&wall) {
                LocalResult::Single(t) => t.with_timezone(&Utc),
                // A repeated wall-clock time fires at its first occurrence only.
                LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
                // A skipped one fires when the gap ends.
                LocalResult::None => self.gap_end(wall)?,
            };
            if instant > after {
                return Some(instant);
            }
            cursor = wall;
        }
        None
    }

    /// The first instant after the daylight-saving gap that swallowed `wall`.
    fn gap_end(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        // Gaps are whole minutes long and at most a few hours.
        let start = wall
            .with_second(0)
            .and_then(|w| w.with_nanosecond(0))
            .unwrap_or(wall);
        (1..=24 * 60).find_map(|m| {
            self.tz
                .from_local_datetime(&(start + Duration::minutes(m)))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        })
    }

    /// The fires in `(after, until]`: `None` if there is none, else the latest
    /// one and whether earlier ones were passed over too.
    pub fn due_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<DueFires> {
        let first = self.next_fire_after(after).filter(|f| *f <= until)?;
        // Search back from `until` in growing windows, so a long downtime of a
        // frequent schedule costs a few dozen steps, not one per missed fire.
        let windows = [
            Duration::hours(1),
            Duration::days(1),
            Duration::days(35),
            Duration::days(400),
            Duration::days(4 * 366),
        ];
        let mut latest = first;
        for window in windows {
            let start = (until - window).max(after);
            let mut at = start;
            let mut found = None;
            while let Some(fire) = self.next_fire_after(at).filter(|f| *f <= until) {
                found = Some(fire);
                at = fire;
            }
            if let Some(fire) = found {
                latest = fire;
                break;
            }
            if start == after {
                break;
            }
        }
        Some(DueFires {
            latest,
            earlier_missed: latest != first,
        })
    }
}

/// Fires that fell due in a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueFires {
    /// The latest of them.
    pub latest: DateTime<Utc>,
    /// Whether there were others before it.
    pub earlier_missed: bool,
}

/// A scheduled-task identifier: `scheduled-task-YYYYMMDD-` + 6 lowercase letters or digits.
pub fn generate_schedule_id(now: DateTime<Utc>) -> String {
    format!(
        "scheduled-task-{}-{}",
        now.format("%Y%m%d"),
        random_suffix(6)
    )
}

/// A new scheduled task from a create body, validated (its `taskConfig`
/// exactly like a task create body) and with defaults applied.
/// `nextExecutionAt` is left for [`next_execution_at`] to fill.
pub fn new_scheduled_task(
    req: CreateScheduledTaskRequest,
    id: String,
    created_by: &str,
    now: DateTime<Utc>,
) -> Result<ScheduledTask, ValidationError> {
    let task = ScheduledTask {
        id,
        name: req.name,
        description: req.description.unwrap_or_default(),
        cron_expr: req.cron_expr,
        timezone: req.timezone.unwrap_or_else(|| DEFAULT_TIMEZONE.to_owned()),
        enabled: req.enabled.unwrap_or(true),
        task_config: req.task_config,
        overlap_policy: req.overlap_policy.unwrap_or(OverlapPolicy::Skip),
        timeout_seconds: req.timeout_seconds.unwrap_or(0),
        starting_deadline_seconds: req.starting_deadline_seconds.unwrap_or(0),
        last_execution_at: None,
        next_execution_at: None,
        created_by: created_by.to_owned(),
        created_at: now,
        updated_at: now,
    };
    validate(task, now)
}

/// `current` with the update applied (`taskConfig` fields merged into the
/// stored ones), validated, `updatedAt` set to `now`.
pub fn apply_update(
    current: &ScheduledTask,
    req: UpdateScheduledTaskRequest,
    now: DateTime<Utc>,
) -> Result<ScheduledTask, ValidationError> {
    let mut task = current.clone();
    if let Some(name) = req.name {
        task.name = name;
    }
    if let Some(description) = req.description {
        task.description = description;
    }
    if let Some(cron_expr) = req.cron_expr {
        task.cron_expr = cron_expr;
    }
    if let Some(timezone) = req.timezone {
        task.timezone = timezone;
    }
    if let Some(enabled) = req.enabled {
        task.enabled = enabled;
    }
    if let Some(patch) = req.task_config {
        task.task_config = patch.apply(task.task_config);
    }
    if let Some(policy) = req.overlap_policy {
        task.overlap_policy = policy;
    }
    if let Some(timeout) = req.timeout_seconds {
        task.timeout_seconds = timeout;
    }
    if let Some(deadline) = req.starting_deadline_seconds {
        task.starting_deadline_seconds = deadline;
    }
    task.updated_at = now;
    validate(task, now)
}

/// A `name` of a schedule or policy: not blank, at most [`MAX_NAME_LEN`] characters.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    let name_len = name.chars().count();
    if name.trim().is_empty() {
        return Err(ValidationError::new("name", "must not be empty"));
    }
    if name_len > MAX_NAME_LEN {
        return Err(ValidationError::new(
            "name",
            format!("at most {MAX_NAME_LEN} characters, got {name_len}"),
        ));
    }
    Ok(())
}

/// Checks every field and spells out the task config's defaults.
fn validate(mut task: ScheduledTask, now: DateTime<Utc>) -> Result<ScheduledTask, ValidationError> {
    validate_name(&task.name)?;
    if task.description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(ValidationError::new(
            "description",
            format!("at most {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    CronSchedule::parse(&task.cron_expr, &task.timezone, now)?;
    if task.timeout_seconds > MAX_TIMEOUT_SECONDS {
        return Err(ValidationError::new(
            "timeoutSeconds",
            format!("must be between 0 and {MAX_TIMEOUT_SECONDS}"),
        ));
    }
    if task.starting_deadline_seconds > MAX_STARTING_DEADLINE_SECONDS {
        return Err(ValidationError::new(
            "startingDeadlineSeconds",
            format!("must be between 0 and {MAX_STARTING_DEADLINE_SECONDS}"),
        ));
    }
    let spec = task_spec(&task)?;
    task.task_config = spec.to_request();
    Ok(task)
}

/// The validated task spec of a scheduled task's `taskConfig`; errors name
/// the field as `taskConfig.<field>`.
pub fn task_spec(task: &ScheduledTask) -> Result<TaskSpec, ValidationError> {
    let mut spec = TaskSpec::from_request(task.task_config.clone())
        .map_err(|e| ValidationError::new(format!("taskConfig.{}", e.field), e.message))?;
    spec.trigger = prewarm_api::TaskTrigger::Schedule;
    Ok(spec)
}

/// The schedule of a stored scheduled task (validated when it was stored).
pub fn cron_of(task: &ScheduledTask, now: DateTime<Utc>) -> Option<CronSchedule> {
    CronSchedule::parse(&task.cron_expr, &task.timezone, now).ok()
}

/// When the task fires next, as seen at `now`: null while disabled.
pub fn next_execution_at(task: &ScheduledTask, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if !task.enabled {
        return None;
    }
    cron_of(task, now)?.next_fire_after(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prewarm_api::CreateTaskRequest;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn fires(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = CronSchedule::parse(expr, tz, utc(from)).unwrap();
        let mut at = utc(from);
        (0..n)
            .map(|_| {
                at = s.next_fire_after(at).unwrap();
                at.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn five_fields_and_nicknames() {
        assert_eq!(
            fires("*/20 * * * *", "UTC", "2024-01-16T10:05:00Z", 3),
            [
                "2024-01-16T10:20:00+00:00",
                "2024-01-16T10:40:00+00:00",
                "2024-01-16T11:00:00+00:00"
            ]
        );
        assert_eq!(
            fires("@daily", "UTC", "2024-01-16T10:00:00Z", 1),
            ["2024-01-17T00:00:00+00:00"]
        );
        assert_eq!(
            fires("@hourly", "UTC", "2024-01-16T10:00:00Z", 1),
            ["2024-01-16T11:00:00+00:00"]
        );
        assert_eq!(
            fires("@weekly", "UTC", "2024-01-16T10:00:00Z", 1),
            ["2024-01-21T00:00:00+00:00"]
        );
        assert_eq!(
            fires("@monthly", "UTC", "2024-01-16T10:00:00Z", 1),
            ["2024-02-01T00:00:00+00:00"]
        );
        assert_eq!(
            fires("@yearly", "UTC", "2024-01-16T10:00:00Z", 1),
            ["2025-01-01T00:00:00+00:00"]
        );
        // Read in the zone: 09:00 in Berlin is 08:00 UTC in winter.
        assert_eq!(
            fires("0 9 * * 1-5", "Europe/Berlin", "2024-01-16T10:00:00Z", 1),
            ["2024-01-17T08:00:00+00:00"]
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        let now = utc("2024-01-16T10:00:00Z");
        let err = |e: &str, tz: &str| CronSchedule::parse(e, tz, now).unwrap_err();
        let e = err("0 0 * *", "UTC");
        assert_eq!(e.field, "cronExpr");
        assert!(e.message.contains("expected 5 fields"), "{e}");
        let e = err("0 0 0 * * *", "UTC");
        assert!(e.message.contains("got 6"), "{e}");
        let e = err("61 * * * *", "UTC");
        assert_eq!(e.field, "cronExpr");
        assert!(e.message.contains("61 * * * *"), "{e}");
        let e = err("@fortnightly", "UTC");
        assert!(e.message.contains("unknown nickname"), "{e}");
        let e = err("0 0 31 2 *", "UTC");
        assert!(e.message.contains("never fires"), "{e}");
        let e = err("0 0 * * *", "Mars/Olympus");
        assert_eq!(e.field, "timezone");
        assert!(e.message.contains("Mars/Olympus"), "{e}");
    }

    #[test]
    fn spring_forward_runs_a_skipped_time_once_at_the_end_of_the_gap() {
        // New York, 2024-03-10: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        assert_eq!(
            fires("30 2 * * *", "America/New_York", "2024-03-09T12:00:00Z", 3),
            [
                "2024-03-10T07:00:00+00:00", // 03:00 EDT, end of the gap
                "2024-03-11T06:30:00+00:00", // 02:30 EDT
                "2024-03-12T06:30:00+00:00",
            ]
        );
        // Hourly: 01:00 EST, then 02:00 (skipped) and 03:00 coalesce into one fire at 03:00 EDT.
        assert_eq!(
            fires("0 * * * *", "America/New_York", "2024-03-10T05:30:00Z", 3),
            [
                "2024-03-10T06:00:00+00:00", // 01:00 EST
                "2024-03-10T07:00:00+00:00", // 03:00 EDT
                "2024-03-10T08:00:00+00:00", // 04:00 EDT
            ]
        );
        // Every 15 minutes of the missing hour: one fire when it ends.
        assert_eq!(
            fires(
                "*/15 2 * * *",
                "America/New_York",
                "2024-03-10T06:50:00Z",
                2
            ),
            ["2024-03-10T07:00:00+00:00", "2024-03-11T06:00:00+00:00"]
        );
    }

    #[test]
    fn fall_back_runs_a_repeated_time_once_at_its_first_occurrence() {
        // New York, 2024-11-03: 02:00 EDT falls back to 01:00 EST (06:00 UTC).
        assert_eq!(
            fires("30 1 * * *", "America/New_York", "2024-11-02T12:00:00Z", 2),
            [
                "2024-11-03T05:30:00+00:00", // 01:30 EDT; 01:30 EST does not fire
                "2024-11-04T06:30:00+00:00",
            ]
        );
        assert_eq!(
            fires("0 * * * *", "America/New_York", "2024-11-03T04:30:00Z", 3),
            [
                "2024-11-03T05:00:00+00:00", // 01:00 EDT
                "2024-11-03T07:00:00+00:00", // 02:00 EST (01:00 EST is the same wall time)
                "2024-11-03T08:00:00+00:00",
            ]
        );
        // Asked from inside the repeated hour, the repeated time is not fired again.
        assert_eq!(
            fires("30 1 * * *", "America/New_York", "2024-11-03T06:10:00Z", 1),
            ["2024-11-04T06:30:00+00:00"]
        );
    }

    #[test]
    fn due_between_finds_the_latest_fire_and_whether_others_were_missed() {
        let s = CronSchedule::parse("* * * * *", "UTC", utc("2024-01-01T00:00:00Z")).unwrap();
        let after = utc("2024-01-01T00:00:00Z");
        assert_eq!(s.due_between(after, utc("2024-01-01T00:00:59Z")), None);
        assert_eq!(
            s.due_between(after, utc("2024-01-01T00:01:00Z")),
            Some(DueFires {
                latest: utc("2024-01-01T00:01:00Z"),
                earlier_missed: false
            })
        );
        // A month down: the latest fire, found quickly.
        assert_eq!(
            s.due_between(after, utc("2024-02-01T12:34:56Z")),
            Some(DueFires {
                latest: utc("2024-02-01T12:34:00Z"),
                earlier_missed: true
            })
        );
        let yearly = CronSchedule::parse("@yearly", "UTC", after).unwrap();
        assert_eq!(
            yearly.due_between(utc("2020-06-01T00:00:00Z"), utc("2024-06-01T00:00:00Z")),
            Some(DueFires {
                latest: utc("2024-01-01T00:00:00Z"),
                earlier_missed: true
            })
        );
    }

    fn create(task_config: CreateTaskRequest) -> CreateScheduledTaskRequest {
        CreateScheduledTaskRequest {
            name: "nightly".into(),
            cron_expr: "0 0 * * *".into(),
            task_config,
            ..Default::default()
        }
    }

    #[test]
    fn create_applies_defaults_and_names_bad_task_config_fields() {
        let now = utc("2024-01-16T10:00:00Z");
        let t = new_scheduled_task(
            create(CreateTaskRequest {
                images: vec!["nginx:1".into()],
                ..Default::default()
            }),
            generate_schedule_id(now),
            "anonymous",
            now,
        )
        .unwrap();
        assert!(t.id.starts_with("scheduled-task-20240116-"), "{}", t.id);
        assert_eq!(t.timezone, "UTC");
        assert!(t.enabled);
        assert_eq!(t.overlap_policy, OverlapPolicy::Skip);
        assert_eq!(t.task_config.batch_size, Some(10), "defaults spelled out");
        let err = new_scheduled_task(
            create(CreateTaskRequest {
                images: vec!["nginx::bad".into()],
                ..Default::default()
            }),
            "x".into(),
            "a",
            now,
        )
        .unwrap_err();
        assert_eq!(err.field, "taskConfig.images[0]");
    }

    #[test]
    fn update_merges_task_config_and_moves_updated_at() {
        let now = utc("2024-01-16T10:00:00Z");
        let t = new_scheduled_task(
            create(CreateTaskRequest {
                images: vec!["nginx:1".into()],
                batch_size: Some(3),
                ..Default::default()
            }),
            "id".into(),
            "a",
            now,
        )
        .unwrap();
        let later = now + Duration::minutes(5);
        let u = apply_update(
            &t,
            UpdateScheduledTaskRequest {
                task_config: Some(prewarm_api::TaskConfigPatch {
                    images: Some(vec!["redis:7".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            later,
        )
        .unwrap();
        assert_eq!(u.task_config.images, ["redis:7"]);
        assert_eq!(u.task_config.batch_size, Some(3), "kept");
        // fromWorkload is set by a patch, kept without one, removed by null.
        let patch = |u: &ScheduledTask, body: serde_json::Value| {
            let req: UpdateScheduledTaskRequest =
                serde_json::from_value(serde_json::json!({ "taskConfig": body })).unwrap();
            apply_update(u, req, later).unwrap()
        };
        let set = patch(
            &u,
            serde_json::json!({"fromWorkload": {"kind": "DaemonSet", "namespace": "ops", "name": "agent"}}),
        );
        assert_eq!(
            set.task_config.from_workload.as_ref().unwrap().name,
            "agent"
        );
        let kept = patch(&set, serde_json::json!({"batchSize": 4}));
        assert_eq!(
            kept.task_config.from_workload,
            set.task_config.from_workload
        );
        let removed = patch(&kept, serde_json::json!({"fromWorkload": null}));
        assert_eq!(removed.task_config.from_workload, None);
        assert_eq!(removed.task_config.images, ["redis:7"]);
        assert_eq!(u.updated_at, later);
        assert_eq!(u.created_at, now);
        let err = apply_update(
            &t,
            UpdateScheduledTaskRequest {
                cron_expr: Some("nope".into()),
                ..Default::default()
            },
            later,
        )
        .unwrap_err();
        assert_eq!(err.field, "cronExpr");
    }
}
