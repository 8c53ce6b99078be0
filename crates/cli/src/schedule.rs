//! `schedule create|list|get|update|delete|enable|disable|trigger|executions`:
//! the scheduled-task endpoints of docs/api.md "Scheduled tasks".

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{CliError, EXIT_OK};
use crate::output::{self, cell, fields, page_table};
use crate::task::{follow_to_end, workload_cell, TaskConfigFlags};
use crate::{segment, Connection};

const BASE: &str = "/api/v1/scheduled-tasks";

/// `schedule …`
#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// Server, token, output format.
    #[command(flatten)]
    pub connection: Connection,
    /// The schedule command.
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

/// The scheduled-task commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ScheduleCommand {
    /// Create a scheduled task pulling IMAGE… on a cron schedule.
    Create {
        /// Image references of the task config.
        #[arg(required_unless_present = "from_workload", value_name = "IMAGE")]
        images: Vec<String>,
        /// Schedule settings.
        #[command(flatten)]
        schedule: ScheduleFlags,
        /// Settings of the tasks it creates.
        #[command(flatten)]
        config: Box<TaskConfigFlags>,
    },
    /// List scheduled tasks.
    List {
        /// Page size (1..=100).
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Entries to skip.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Show one scheduled task.
    Get {
        /// Scheduled task id.
        id: String,
    },
    /// Change a scheduled task: only the flags given change; task settings merge into the stored ones.
    Update {
        /// Scheduled task id.
        id: String,
        /// New image list of the task config (replaces the old one).
        #[arg(long = "image", value_name = "IMAGE")]
        images: Vec<String>,
        /// Schedule settings.
        #[command(flatten)]
        schedule: ScheduleUpdateFlags,
        /// Settings of the tasks it creates.
        #[command(flatten)]
        config: Box<TaskConfigFlags>,
        /// Stop taking the tasks' images and nodes from a workload (sends `fromWorkload: null`).
        #[arg(long, conflicts_with = "from_workload")]
        clear_from_workload: bool,
    },
    /// Delete a scheduled task.
    Delete {
        /// Scheduled task id.
        id: String,
    },
    /// Enable a scheduled task.
    Enable {
        /// Scheduled task id.
        id: String,
    },
    /// Disable a scheduled task (no fires until enabled again).
    Disable {
        /// Scheduled task id.
        id: String,
    },
    /// Run a scheduled task now, whatever its overlap policy.
    Trigger {
        /// Scheduled task id.
        id: String,
        /// Follow the created task to its end; the exit code tells how it ended.
        #[arg(long)]
        wait: bool,
    },
    /// List a scheduled task's executions, newest first, or show one.
    Executions {
        /// Scheduled task id.
        id: String,
        /// Show only this execution.
        execution: Option<String>,
        /// Page size (1..=100).
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Entries to skip.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
}

/// Settings of a new scheduled task.
#[derive(Debug, Clone, Args)]
pub struct ScheduleFlags {
    /// Name (required).
    #[arg(long)]
    pub name: String,
    /// Cron expression: 5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, …
    #[arg(long = "cron", value_name = "EXPR")]
    pub cron: String,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// IANA time zone of the cron expression (server default UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
    /// What a fire does while the last task still runs.
    #[arg(long, value_parser = ["skip", "allow", "queue"])]
    pub overlap_policy: Option<String>,
    /// Cancel a task of this schedule still running after this many seconds (0 = none).
    #[arg(long = "timeout", value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Run a fire missed while the service was down if it is back within this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub starting_deadline: Option<u64>,
}

/// Schedule settings that `update` may change.
#[derive(Debug, Clone, Args)]
pub struct ScheduleUpdateFlags {
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New cron expression.
    #[arg(long = "cron", value_name = "EXPR")]
    pub cron: Option<String>,
    /// New description.
    #[arg(long)]
    pub description: Option<String>,
    /// New IANA time zone.
    #[arg(long)]
    pub timezone: Option<String>,
    /// New overlap policy.
    #[arg(long, value_parser = ["skip", "allow", "queue"])]
    pub overlap_policy: Option<String>,
    /// New task timeout in seconds (0 = none).
    #[arg(long = "timeout", value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// New starting deadline in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub starting_deadline: Option<u64>,
}

fn create_body(images: &[String], s: &ScheduleFlags, config: &TaskConfigFlags) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), json!(s.name));
    body.insert("cronExpr".into(), json!(s.cron));
    body.insert("enabled".into(), json!(!s.disabled));
    body.insert("taskConfig".into(), Value::Object(config.to_json(images)));
    let optional = [
        ("description", s.description.as_ref().map(|v| json!(v))),
        ("timezone", s.timezone.as_ref().map(|v| json!(v))),
        ("overlapPolicy", s.overlap_policy.as_ref().map(|v| json!(v))),
        ("timeoutSeconds", s.timeout.map(|v| json!(v))),
        (
            "startingDeadlineSeconds",
            s.starting_deadline.map(|v| json!(v)),
        ),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    }
    Value::Object(body)
}

fn update_body(
    images: &[String],
    s: &ScheduleUpdateFlags,
    config: &TaskConfigFlags,
    clear_from_workload: bool,
) -> Value {
    let mut body = Map::new();
    let optional = [
        ("name", s.name.as_ref().map(|v| json!(v))),
        ("cronExpr", s.cron.as_ref().map(|v| json!(v))),
        ("description", s.description.as_ref().map(|v| json!(v))),
        ("timezone", s.timezone.as_ref().map(|v| json!(v))),
        ("overlapPolicy", s.overlap_policy.as_ref().map(|v| json!(v))),
        ("timeoutSeconds", s.timeout.map(|v| json!(v))),
        (
            "startingDeadlineSeconds",
            s.starting_deadline.map(|v| json!(v)),
        ),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    }
    let mut task_config = config.to_json(images);
    if clear_from_workload {
        task_config.insert("fromWorkload".into(), Value::Null);
    }
    if !task_config.is_empty() {
        body.insert("taskConfig".into(), Value::Object(task_config));
    }
    Value::Object(body)
}

/// Runs a schedule command; returns the exit code.
pub async fn run(args: ScheduleArgs) -> Result<u8, CliError> {
    let conn = &args.connection;
    let client = conn.client()?;
    let out = conn.output;
    let one = |id: &str| format!("{BASE}/{}", segment(id));
    let page = |limit: u32, offset: u64| {
        vec![("limit", limit.to_string()), ("offset", offset.to_string())]
    };
    match args.command {
        ScheduleCommand::Create {
            images,
            schedule,
            config,
        } => {
            let body = create_body(&images, &schedule, &config);
            let created = client.call(Method::POST, BASE, &[], Some(&body)).await?;
            output::print(out, &created, schedule_details);
        }
        ScheduleCommand::List { limit, offset } => {
            let list = client.get(BASE, &page(limit, offset)).await?;
            output::print(out, &list, schedule_table);
        }
        ScheduleCommand::Get { id } => {
            let s = client.get(&one(&id), &[]).await?;
            output::print(out, &s, schedule_details);
        }
        ScheduleCommand::Update {
            id,
            images,
            schedule,
            config,
            clear_from_workload,
        } => {
            let body = update_body(&images, &schedule, &config, clear_from_workload);
            if body.as_object().is_some_and(Map::is_empty) {
                return Err(CliError::Usage(
                    "nothing to update: give at least one flag".to_owned(),
                ));
            }
            let s = client
                .call(Method::PUT, &one(&id), &[], Some(&body))
                .await?;
            output::print(out, &s, schedule_details);
        }
        ScheduleCommand::Delete { id } => {
            let answer = client.call(Method::DELETE, &one(&id), &[], None).await?;
            output::print(out, &answer, action_line);
        }
        ScheduleCommand::Enable { id } => {
            let path = format!("{}/enable", one(&id));
            let answer = client.call(Method::PUT, &path, &[], None).await?;
            output::print(out, &answer, action_line);
        }
        ScheduleCommand::Disable { id } => {
            let path = format!("{}/disable", one(&id));
            let answer = client.call(Method::PUT, &path, &[], None).await?;
            output::print(out, &answer, action_line);
        }
        ScheduleCommand::Trigger { id, wait } => {
            let path = format!("{}/trigger", one(&id));
            let answer = client.call(Method::POST, &path, &[], None).await?;
            if wait {
                let task_id = answer["taskId"].as_str().unwrap_or_default().to_owned();
                eprintln!("scheduled task {id} triggered task {task_id}");
                return follow_to_end(&client, &task_id, out).await;
            }
            output::print(out, &answer, action_line);
        }
        ScheduleCommand::Executions {
            id,
            execution,
            limit,
            offset,
        } => match execution {
            Some(execution) => {
                let path = format!("{}/executions/{}", one(&id), segment(&execution));
                let e = client.get(&path, &[]).await?;
                output::print(out, &e, |e| {
                    fields(&[
                        ("Execution", cell(&e["id"])),
                        ("Scheduled task", cell(&e["scheduledTaskId"])),
                        ("Task", cell(&e["taskId"])),
                        ("Status", cell(&e["status"])),
                        ("Trigger", cell(&e["trigger"])),
                        ("Triggered", cell(&e["triggeredAt"])),
                        ("Started", cell(&e["startedAt"])),
                        ("Finished", cell(&e["finishedAt"])),
                        ("Duration (s)", cell(&e["durationSeconds"])),
                        ("Error", cell(&e["errorMessage"])),
                    ])
                });
            }
            None => {
                let path = format!("{}/executions", one(&id));
                let list = client.get(&path, &page(limit, offset)).await?;
                output::print(out, &list, execution_table);
            }
        },
    }
    Ok(EXIT_OK)
}

fn action_line(v: &Value) -> String {
    match v["message"].as_str() {
        Some(message) => format!("{}: {message}\n", cell(&v["taskId"])),
        None => format!("{} {}\n", cell(&v["taskId"]), cell(&v["status"])),
    }
}

fn schedule_table(list: &Value) -> String {
    page_table(
        list,
        "tasks",
        "scheduled tasks",
        &["ID", "NAME", "CRON", "ENABLED", "OVERLAP", "NEXT", "LAST"],
        |s| {
            vec![
                cell(&s["id"]),
                cell(&s["name"]),
                cell(&s["cronExpr"]),
                cell(&s["enabled"]),
                cell(&s["overlapPolicy"]),
                cell(&s["nextExecutionAt"]),
                cell(&s["lastExecutionAt"]),
            ]
        },
    )
}

fn schedule_details(s: &Value) -> String {
    let config = &s["taskConfig"];
    fields(&[
        ("Scheduled task", cell(&s["id"])),
        ("Name", cell(&s["name"])),
        ("Description", cell(&s["description"])),
        ("Cron", cell(&s["cronExpr"])),
        ("Timezone", cell(&s["timezone"])),
        ("Enabled", cell(&s["enabled"])),
        ("Overlap policy", cell(&s["overlapPolicy"])),
        ("Timeout (s)", cell(&s["timeoutSeconds"])),
        ("Images", cell(&config["images"])),
        ("Selector", cell(&config["nodeSelector"])),
        ("From workload", workload_cell(&config["fromWorkload"])),
        ("Next run", cell(&s["nextExecutionAt"])),
        ("Last run", cell(&s["lastExecutionAt"])),
        ("Created", cell(&s["createdAt"])),
    ])
}

fn execution_table(list: &Value) -> String {
    page_table(
        list,
        "executions",
        "executions",
        &[
            "ID",
            "STATUS",
            "TASK",
            "TRIGGER",
            "TRIGGERED",
            "DURATION",
            "ERROR",
        ],
        |e| {
            vec![
                cell(&e["id"]),
                cell(&e["status"]),
                cell(&e["taskId"]),
                cell(&e["trigger"]),
                cell(&e["triggeredAt"]),
                cell(&e["durationSeconds"]),
                cell(&e["errorMessage"]),
            ]
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use prewarm_api::WorkloadRef;

    #[test]
    fn update_sends_only_what_was_given() {
        let flags = ScheduleUpdateFlags {
            name: None,
            cron: Some("@daily".into()),
            description: None,
            timezone: None,
            overlap_policy: None,
            timeout: None,
            starting_deadline: None,
        };
        let config = TaskConfigFlags {
            batch_size: Some(3),
            ..Default::default()
        };
        assert_eq!(
            update_body(&[], &flags, &config, false),
            json!({"cronExpr": "@daily", "taskConfig": {"batchSize": 3}})
        );
        let none = ScheduleUpdateFlags {
            cron: None,
            ..flags
        };
        assert_eq!(
            update_body(&[], &none, &TaskConfigFlags::default(), true),
            json!({"taskConfig": {"fromWorkload": null}}),
            "--clear-from-workload sends null"
        );
        let set = TaskConfigFlags {
            from_workload: Some(WorkloadRef::parse("CronJob/ops/nightly").unwrap()),
            ..Default::default()
        };
        assert_eq!(
            update_body(&[], &none, &set, false),
            json!({"taskConfig": {"fromWorkload": {"kind": "CronJob", "namespace": "ops", "name": "nightly"}}})
        );
    }

    #[test]
    fn create_body_has_the_spec_fields() {
        let flags = ScheduleFlags {
            name: "nightly".into(),
            cron: "0 2 * * *".into(),
            description: None,
            timezone: Some("Europe/Berlin".into()),
            disabled: false,
            overlap_policy: Some("queue".into()),
            timeout: Some(600),
            starting_deadline: None,
        };
        let config = TaskConfigFlags {
            selectors: vec![("pool".into(), "a".into())],
            ..Default::default()
        };
        assert_eq!(
            create_body(&["nginx".into()], &flags, &config),
            json!({
                "name": "nightly", "cronExpr": "0 2 * * *", "enabled": true,
                "timezone": "Europe/Berlin", "overlapPolicy": "queue", "timeoutSeconds": 600,
                "taskConfig": {"images": ["nginx"], "nodeSelector": {"pool": "a"}}
            })
        );
    }
}
