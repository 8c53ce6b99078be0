//! `task create|get|list|cancel|watch`.

use clap::{Args, Subcommand};
use prewarm_api::{Task, TaskStatus, WorkloadRef};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{ApiClient, CliError, EXIT_CANCELLED, EXIT_FAILED, EXIT_OK};
use crate::output::{self, cell, fields, page_table, table, OutputFormat};
use crate::{follow, parse_key_value, segment, Connection};

/// `task …`
#[derive(Debug, Clone, Args)]
pub struct TaskArgs {
    /// Server, token, output format.
    #[command(flatten)]
    pub connection: Connection,
    /// The task command.
    #[command(subcommand)]
    pub command: TaskCommand,
}

/// The task commands.
#[derive(Debug, Clone, Subcommand)]
pub enum TaskCommand {
    /// Create a task pulling IMAGE… onto the matching nodes.
    Create {
        /// Image references (`nginx:1.25`, `registry:5000/app@sha256:…`).
        #[arg(required_unless_present = "from_workload", value_name = "IMAGE")]
        images: Vec<String>,
        /// Task settings.
        #[command(flatten)]
        config: Box<TaskConfigFlags>,
        /// Follow the task to its end with a progress bar; the exit code tells how it ended.
        #[arg(long, conflicts_with = "dry_run")]
        wait: bool,
        /// Print what the task would do (nodes, pulls, Jobs, ETA) without creating it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show one task.
    Get {
        /// Task id.
        id: String,
    },
    /// List tasks, newest first.
    List {
        /// Only tasks with this status (pending, running, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Page size (1..=100).
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Tasks to skip.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Cancel a pending or running task.
    Cancel {
        /// Task id.
        id: String,
    },
    /// Follow a task to its end with a progress bar; the exit code tells how it ended.
    Watch {
        /// Task id.
        id: String,
    },
    /// Per-node results of a task, one row per (node, image), by node name.
    Nodes {
        /// Task id.
        id: String,
        /// Only results with this status (pending, pulled, present, failed, skipped).
        #[arg(long)]
        status: Option<String>,
        /// Only this image (as given in the task).
        #[arg(long)]
        image: Option<String>,
        /// Page size (1..=1000).
        #[arg(long, default_value_t = 100, conflicts_with = "all")]
        limit: u32,
        /// Results to skip.
        #[arg(long, default_value_t = 0, conflicts_with = "all")]
        offset: u64,
        /// Every matching result, fetched page by page.
        #[arg(long)]
        all: bool,
    },
}

/// The settings of a task body, shared by `task create` and `schedule create|update`.
/// Only flags given are sent (the server applies its defaults, or keeps stored values on update).
#[derive(Debug, Clone, Default, Args)]
pub struct TaskConfigFlags {
    /// Nodes pulling at once (1..=1000; server default 10).
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Node label to match, KEY=VALUE (repeatable, all must match).
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub selectors: Vec<(String, String)>,
    /// Only this node (repeatable; ANDed with --selector).
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Higher runs first (-1000..=1000).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Retries per failed (node, image) pair (0..=10).
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// How the retry delay grows.
    #[arg(long, value_parser = ["fixed", "linear", "exponential"])]
    pub retry_strategy: Option<String>,
    /// Base retry delay in seconds (0..=3600).
    #[arg(long)]
    pub retry_delay: Option<u32>,
    /// Pull policy of the pull containers.
    #[arg(long, value_parser = ["IfNotPresent", "Always"])]
    pub pull_policy: Option<String>,
    /// Secret for a private registry, in the service's job namespace (repeatable).
    #[arg(long = "pull-secret", value_name = "NAME")]
    pub pull_secrets: Vec<String>,
    /// URL notified when the task ends.
    #[arg(long = "webhook", value_name = "URL")]
    pub webhook: Option<String>,
    /// Whole-task limit in seconds (0 = none).
    #[arg(long = "task-timeout", value_name = "SECONDS")]
    pub task_timeout: Option<u64>,
    /// Pin each tag to the digest of its first successful pull: every node gets the same bytes.
    #[arg(long)]
    pub pin_digests: bool,
    /// This task's pull rate of a registry host, HOST=N/DURATION (e.g.
    /// ghcr.io=600/1m; repeatable), instead of the service's --registry-pull-rate.
    #[arg(long = "registry-pull-rate", value_name = "HOST=N/DURATION", value_parser = crate::parse_key_value)]
    pub registry_pull_rates: Vec<(String, String)>,
    /// Take images (before IMAGE…), node constraints and pull secrets from this
    /// workload's pod template (Deployment, StatefulSet, DaemonSet, Job or
    /// CronJob), read when the task starts.
    #[arg(long, value_name = "KIND/NAMESPACE/NAME", value_parser = WorkloadRef::parse)]
    pub from_workload: Option<WorkloadRef>,
}

impl TaskConfigFlags {
    /// The body fields these flags set, plus `images` when given.
    pub fn to_json(&self, images: &[String]) -> Map<String, Value> {
        let mut body = Map::new();
        let mut put = |k: &str, v: Value| {
            body.insert(k.to_owned(), v);
        };
        if !images.is_empty() {
            put("images", json!(images));
        }
        if let Some(v) = self.batch_size {
            put("batchSize", json!(v));
        }
        if !self.selectors.is_empty() {
            put("nodeSelector", crate::selector_json(&self.selectors));
        }
        if !self.nodes.is_empty() {
            put("nodeNames", json!(self.nodes));
        }
        if let Some(v) = self.priority {
            put("priority", json!(v));
        }
        if let Some(v) = self.max_retries {
            put("maxRetries", json!(v));
        }
        if let Some(v) = &self.retry_strategy {
            put("retryStrategy", json!(v));
        }
        if let Some(v) = self.retry_delay {
            put("retryDelay", json!(v));
        }
        if let Some(v) = &self.pull_policy {
            put("pullPolicy", json!(v));
        }
        if !self.pull_secrets.is_empty() {
            put("imagePullSecrets", json!(self.pull_secrets));
        }
        if let Some(v) = &self.webhook {
            put("webhookUrl", json!(v));
        }
        if let Some(v) = self.task_timeout {
            put("timeoutSeconds", json!(v));
        }
        if self.pin_digests {
            put("pinDigests", json!(true));
        }
        if !self.registry_pull_rates.is_empty() {
            put(
                "registryPullRate",
                crate::selector_json(&self.registry_pull_rates),
            );
        }
        if let Some(w) = &self.from_workload {
            put("fromWorkload", json!(w));
        }
        body
    }
}

/// Runs a task command; returns the exit code.
pub async fn run(args: TaskArgs) -> Result<u8, CliError> {
    let conn = &args.connection;
    let client = conn.client()?;
    let out = conn.output;
    match args.command {
        TaskCommand::Create {
            images,
            config,
            wait,
            dry_run,
        } => {
            let body = Value::Object(config.to_json(&images));
            if dry_run {
                let plan = client
                    .call(
                        Method::POST,
                        "/api/v1/tasks",
                        &[("dryRun", "true".to_owned())],
                        Some(&body),
                    )
                    .await?;
                output::print(out, &plan, plan_details);
                return Ok(EXIT_OK);
            }
            let created = client
                .call(Method::POST, "/api/v1/tasks", &[], Some(&body))
                .await?;
            let id = created["taskId"].as_str().unwrap_or_default().to_owned();
            if !wait {
                output::print(out, &created, |v| {
                    format!(
                        "task {} created ({})\n",
                        cell(&v["taskId"]),
                        cell(&v["status"])
                    )
                });
                return Ok(EXIT_OK);
            }
            eprintln!("task {id} created");
            follow_to_end(&client, &id, out).await
        }
        TaskCommand::Get { id } => {
            let task = client
                .get(&format!("/api/v1/tasks/{}", segment(&id)), &[])
                .await?;
            output::print(out, &task, task_details);
            Ok(EXIT_OK)
        }
        TaskCommand::List {
            status,
            limit,
            offset,
        } => {
            let mut query = vec![("limit", limit.to_string()), ("offset", offset.to_string())];
            if let Some(status) = status {
                query.push(("status", status));
            }
            let page = client.get("/api/v1/tasks", &query).await?;
            output::print(out, &page, task_table);
            Ok(EXIT_OK)
        }
        TaskCommand::Cancel { id } => {
            let answer = client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/tasks/{}", segment(&id)),
                    &[],
                    None,
                )
                .await?;
            output::print(out, &answer, |v| {
                format!("task {} {}\n", cell(&v["taskId"]), cell(&v["status"]))
            });
            Ok(EXIT_OK)
        }
        TaskCommand::Watch { id } => follow_to_end(&client, &id, out).await,
        TaskCommand::Nodes {
            id,
            status,
            image,
            limit,
            offset,
            all,
        } => {
            let path = format!("/api/v1/tasks/{}/nodes", segment(&id));
            let mut filters = Vec::new();
            if let Some(status) = status {
                filters.push(("status", status));
            }
            if let Some(image) = image {
                filters.push(("image", image));
            }
            let page = |limit: u32, offset: u64| {
                let mut query = filters.clone();
                query.push(("limit", limit.to_string()));
                query.push(("offset", offset.to_string()));
                let (client, path) = (&client, &path);
                async move { client.get(path, &query).await }
            };
            let mut answer = page(if all { NODES_PAGE } else { limit }, offset).await?;
            if all {
                let total = answer["total"].as_u64().unwrap_or(0);
                let mut results = answer["nodes"].as_array().cloned().unwrap_or_default();
                while (results.len() as u64) < total {
                    let next = page(NODES_PAGE, results.len() as u64).await?;
                    let more = next["nodes"].as_array().cloned().unwrap_or_default();
                    if more.is_empty() {
                        break;
                    }
                    results.extend(more);
                }
                answer["nodes"] = Value::Array(results);
                answer["limit"] = Value::from(total);
            }
            output::print(out, &answer, node_table);
            Ok(EXIT_OK)
        }
    }
}

/// Results per request of `task nodes --all` (the server's largest page).
const NODES_PAGE: u32 = 1_000;

fn node_table(page: &Value) -> String {
    page_table(
        page,
        "nodes",
        "results",
        &["NODE", "IMAGE", "STATUS", "REASON", "MESSAGE"],
        |r| {
            vec![
                cell(&r["nodeName"]),
                cell(&r["image"]),
                cell(&r["status"]),
                cell(&r["reason"]),
                cell(&r["message"]),
            ]
        },
    )
}

/// Follows a task to its end, prints the final view, and maps its status to the exit code.
pub async fn follow_to_end(
    client: &ApiClient,
    id: &str,
    out: OutputFormat,
) -> Result<u8, CliError> {
    let task = follow::follow(client, id).await?;
    let value = serde_json::to_value(&task).map_err(|e| CliError::Protocol(e.to_string()))?;
    output::print(out, &value, task_details);
    Ok(exit_code_for(&task))
}

/// 0 completed, 1 failed, 3 cancelled.
pub fn exit_code_for(task: &Task) -> u8 {
    match task.status {
        TaskStatus::Completed => EXIT_OK,
        TaskStatus::Cancelled => EXIT_CANCELLED,
        _ => EXIT_FAILED,
    }
}

fn task_table(page: &Value) -> String {
    page_table(
        page,
        "tasks",
        "tasks",
        &[
            "ID", "STATUS", "NODES", "FAILED", "PROGRESS", "IMAGES", "CREATED",
        ],
        |t| {
            let p = &t["progress"];
            vec![
                cell(&t["taskId"]),
                cell(&t["status"]),
                format!("{}/{}", cell(&p["completedNodes"]), cell(&p["totalNodes"])),
                cell(&p["failedNodes"]),
                format!("{}%", cell(&p["percentage"])),
                cell(&t["images"]),
                cell(&t["createdAt"]),
            ]
        },
    )
}

pub(crate) fn plan_details(p: &Value) -> String {
    let list = |v: &Value| -> Vec<Value> { v.as_array().cloned().unwrap_or_default() };
    let selected = list(&p["selectedNodeNames"]);
    let names: Vec<String> = selected.iter().map(cell).collect();
    let total = p["selectedNodes"].as_u64().unwrap_or(0) as usize;
    let more = total.saturating_sub(names.len());
    let mut pairs = vec![
        ("Selected nodes", cell(&p["selectedNodes"])),
        (
            "Node names",
            if more > 0 {
                format!("{} (+{more} more)", names.join(", "))
            } else {
                names.join(", ")
            },
        ),
        ("Skipped", cell(&p["skippedByReason"])),
        ("Jobs", cell(&p["jobs"])),
        ("Pulls", cell(&p["pullsNeeded"])),
        ("API writes", cell(&p["apiWrites"])),
    ];
    pairs.push((
        "ETA",
        match p["etaSeconds"].as_f64() {
            Some(s) => format!("{s}s"),
            None => "unknown (no node speeds learned, no recent pulls measured)".to_owned(),
        },
    ));
    let mut out = fields(&pairs);
    let rows: Vec<Vec<String>> = list(&p["images"])
        .iter()
        .map(|i| {
            vec![
                cell(&i["image"]),
                cell(&i["nodesWithImage"]),
                cell(&i["pullsNeeded"]),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(&["IMAGE", "NODES WITH IT", "PULLS NEEDED"], &rows));
    let registries = list(&p["registries"]);
    if !registries.is_empty() {
        let rows: Vec<Vec<String>> = registries
            .iter()
            .map(|r| {
                vec![
                    cell(&r["host"]),
                    cell(&r["nodes"]),
                    cell(&r["pulls"]),
                    r["pullRate"].as_str().unwrap_or("not paced").to_owned(),
                    format!("{}s", cell(&r["waitSeconds"])),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["REGISTRY", "NODES", "PULLS", "PULL RATE", "WAIT"],
            &rows,
        ));
    }
    let slowest = list(&p["slowestNodes"]);
    if !slowest.is_empty() {
        out.push_str(&format!(
            "\nSlowest nodes (started first; {} of the pulling nodes have a learned speed):\n",
            cell(&p["nodesWithSpeed"])
        ));
        let rows: Vec<Vec<String>> = slowest
            .iter()
            .map(|n| {
                vec![
                    cell(&n["nodeName"]),
                    format!("{:.1}s", n["secondsPerPull"].as_f64().unwrap_or(0.0)),
                    cell(&n["pulls"]),
                    format!("{:.1}s", n["expectedSeconds"].as_f64().unwrap_or(0.0)),
                ]
            })
            .collect();
        out.push_str(&table(&["NODE", "PER PULL", "PULLS", "EXPECTED"], &rows));
    }
    let skipped = list(&p["skippedNodeDetails"]);
    if !skipped.is_empty() {
        out.push_str("\nSkipped nodes:\n");
        let rows: Vec<Vec<String>> = skipped
            .iter()
            .map(|s| {
                vec![
                    cell(&s["nodeName"]),
                    cell(&s["reason"]),
                    cell(&s["message"]),
                ]
            })
            .collect();
        out.push_str(&table(&["NODE", "REASON", "MESSAGE"], &rows));
    }
    out
}

/// `Kind/namespace/name` of a `fromWorkload` value ("-" without one).
pub fn workload_cell(w: &Value) -> String {
    if w.is_null() {
        return "-".to_owned();
    }
    format!(
        "{}/{}/{}",
        cell(&w["kind"]),
        cell(&w["namespace"]),
        cell(&w["name"])
    )
}

fn task_details(t: &Value) -> String {
    let p = &t["progress"];
    let mut pairs = vec![
        ("Task", cell(&t["taskId"])),
        ("Status", cell(&t["status"])),
        ("Images", cell(&t["images"])),
        ("Selector", cell(&t["nodeSelector"])),
        (
            "Nodes",
            format!(
                "{} completed, {} failed, {} skipped of {}",
                cell(&p["completedNodes"]),
                cell(&p["failedNodes"]),
                cell(&p["skippedNodes"]),
                cell(&p["totalNodes"])
            ),
        ),
        ("Progress", format!("{}%", cell(&p["percentage"]))),
        ("Created", cell(&t["createdAt"])),
        ("Started", cell(&t["startedAt"])),
        ("Finished", cell(&t["finishedAt"])),
    ];
    if !t["fromWorkload"].is_null() {
        pairs.push(("From workload", workload_cell(&t["fromWorkload"])));
    }
    let resolved = &t["resolvedWorkload"];
    if !resolved.is_null() {
        pairs.push((
            "Workload read",
            format!(
                "{} (generation {}, resourceVersion {}, {} nodes)",
                cell(&resolved["resolvedAt"]),
                cell(&resolved["generation"]),
                cell(&resolved["resourceVersion"]),
                cell(&resolved["selectedNodes"])
            ),
        ));
    }
    if !t["reason"].is_null() {
        pairs.push(("Reason", cell(&t["reason"])));
        pairs.push(("Error", cell(&t["errorMessage"])));
    }
    let mut out = fields(&pairs);
    out.push_str(&image_table(t));
    let failed = t["failedNodeDetails"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !failed.is_empty() {
        out.push_str("\nFailed nodes:\n");
        let rows: Vec<Vec<String>> = failed
            .iter()
            .map(|f| {
                vec![
                    cell(&f["nodeName"]),
                    cell(&f["image"]),
                    cell(&f["reason"]),
                    cell(&f["message"]),
                ]
            })
            .collect();
        out.push_str(&table(&["NODE", "IMAGE", "REASON", "MESSAGE"], &rows));
        let total = t["failedNodeDetailsTotal"].as_u64().unwrap_or(0);
        if total > failed.len() as u64 {
            out.push_str(&format!(
                "(the first {} of {total}; all: prewarm task nodes {} --status failed --all)\n",
                failed.len(),
                cell(&t["taskId"])
            ));
        }
    }
    let skipped = t["skippedNodeDetails"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !skipped.is_empty() {
        out.push_str("\nSkipped nodes:\n");
        let rows: Vec<Vec<String>> = skipped
            .iter()
            .map(|f| {
                vec![
                    cell(&f["nodeName"]),
                    cell(&f["reason"]),
                    cell(&f["message"]),
                ]
            })
            .collect();
        out.push_str(&table(&["NODE", "REASON", "MESSAGE"], &rows));
    }
    out
}

/// Per image: nodes holding it, failures, and the digests the nodes resolved
/// (the pinned one marked; more than one digest flagged as drift).
fn image_table(t: &Value) -> String {
    let statuses = t["imageStatuses"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if statuses.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let pinned = s["pinnedDigest"].as_str();
            let digests: Vec<String> = s["digests"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|d| {
                    let d = cell(d);
                    if Some(d.as_str()) == pinned {
                        format!("{d} (pinned)")
                    } else {
                        d
                    }
                })
                .collect();
            let digests = match (digests.is_empty(), pinned) {
                (true, Some(p)) => format!("{p} (pinned)"),
                (true, None) => "-".to_owned(),
                (false, _) => digests.join(", "),
            };
            let note = if s["digestDrift"].as_bool() == Some(true) {
                "DRIFT: the nodes hold different digests".to_owned()
            } else {
                String::new()
            };
            vec![
                cell(&s["image"]),
                cell(&s["completedNodes"]),
                cell(&s["failedNodes"]),
                digests,
                note,
            ]
        })
        .collect();
    format!(
        "\n{}",
        table(&["IMAGE", "NODES", "FAILED", "DIGESTS", ""], &rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_digests_is_sent_only_when_asked() {
        let flags = TaskConfigFlags::default();
        assert_eq!(flags.to_json(&[]).get("pinDigests"), None);
        let flags = TaskConfigFlags {
            pin_digests: true,
            ..Default::default()
        };
        assert_eq!(flags.to_json(&[])["pinDigests"], json!(true));
    }

    #[test]
    fn registry_pull_rates_are_sent_as_one_object() {
        assert_eq!(
            TaskConfigFlags::default()
                .to_json(&[])
                .get("registryPullRate"),
            None
        );
        let flags = TaskConfigFlags {
            registry_pull_rates: vec![
                ("docker.io".into(), "100/6h".into()),
                ("ghcr.io".into(), "600/1m".into()),
            ],
            ..Default::default()
        };
        assert_eq!(
            flags.to_json(&[])["registryPullRate"],
            json!({"docker.io": "100/6h", "ghcr.io": "600/1m"})
        );
    }

    #[test]
    fn the_task_table_shows_pinned_digests_and_drift() {
        let t = json!({
            "taskId": "task-1", "status": "completed", "images": ["a:1", "b:1"],
            "progress": {"completedNodes": 3, "failedNodes": 0, "skippedNodes": 0, "totalNodes": 3},
            "imageStatuses": [
                {"image": "a:1", "completedNodes": 3, "failedNodes": 0,
                 "digests": ["sha256:aa"], "pinnedDigest": "sha256:aa", "digestDrift": false},
                {"image": "b:1", "completedNodes": 3, "failedNodes": 0,
                 "digests": ["sha256:b1", "sha256:b2"], "digestDrift": true}
            ]
        });
        let out = task_details(&t);
        let a = out.lines().find(|l| l.starts_with("a:1")).unwrap();
        assert!(
            a.contains("sha256:aa (pinned)") && !a.contains("DRIFT"),
            "{out}"
        );
        let b = out.lines().find(|l| l.starts_with("b:1")).unwrap();
        assert!(
            b.contains("sha256:b1, sha256:b2") && b.contains("DRIFT"),
            "{out}"
        );
    }

    #[test]
    fn a_plan_lists_its_slowest_nodes_and_eta() {
        let p = json!({
            "selectedNodes": 2, "selectedNodeNames": ["fast", "slow"], "skippedByReason": {},
            "jobs": 2, "pullsNeeded": 4, "apiWrites": 4, "etaSeconds": 24.0,
            "images": [], "nodesWithSpeed": 2,
            "slowestNodes": [
                {"nodeName": "slow", "secondsPerPull": 12.0, "pulls": 2, "expectedSeconds": 24.0},
                {"nodeName": "fast", "secondsPerPull": 1.25, "pulls": 2, "expectedSeconds": 2.5}
            ]
        });
        let out = plan_details(&p);
        assert!(out.contains("24s"), "{out}");
        assert!(out.contains("2 of the pulling nodes"), "{out}");
        let slow = out.lines().position(|l| l.starts_with("slow ")).unwrap();
        let fast = out.lines().position(|l| l.starts_with("fast ")).unwrap();
        assert!(slow < fast, "{out}");
        let row = out.lines().nth(slow).unwrap();
        assert!(row.contains("12.0s") && row.contains("24.0s"), "{out}");
    }

    #[test]
    fn a_plan_has_a_line_per_registry() {
        let p = json!({
            "selectedNodes": 40, "selectedNodeNames": [], "skippedByReason": {},
            "jobs": 40, "pullsNeeded": 80, "apiWrites": 80, "etaSeconds": 60.0, "images": [],
            "registries": [
                {"host": "fast.example", "nodes": 40, "pulls": 40, "pullRate": null, "waitSeconds": 0.0},
                {"host": "paced.example", "nodes": 40, "pulls": 40, "pullRate": "20/1m", "waitSeconds": 60.0}
            ]
        });
        let out = plan_details(&p);
        let line = |host: &str| {
            out.lines()
                .find(|l| l.starts_with(host))
                .unwrap()
                .to_owned()
        };
        assert!(line("paced.example").contains("20/1m"), "{out}");
        assert!(line("paced.example").contains("60"), "{out}");
        assert!(line("fast.example").contains("not paced"), "{out}");
    }
}
