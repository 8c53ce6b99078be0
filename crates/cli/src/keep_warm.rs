//! `keep-warm create|list|get|update|delete|enable|disable`: the keep-warm
//! policy endpoints of docs/api.md "Keep-warm policies".

use clap::{Args, Subcommand};
use prewarm_api::WorkloadRef;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{CliError, EXIT_OK};
use crate::output::{self, cell, fields, table};
use crate::task::{plan_details, workload_cell};
use crate::{parse_key_value, segment, Connection};

const BASE: &str = "/api/v1/keep-warm";

/// `keep-warm …`
#[derive(Debug, Clone, Args)]
pub struct KeepWarmArgs {
    /// Server, token, output format.
    #[command(flatten)]
    pub connection: Connection,
    /// The keep-warm command.
    #[command(subcommand)]
    pub command: KeepWarmCommand,
}

/// The keep-warm policy commands.
#[derive(Debug, Clone, Subcommand)]
pub enum KeepWarmCommand {
    /// Keep IMAGE… on every matching node, including nodes that join later.
    Create {
        /// Image references.
        #[arg(required_unless_present = "from_workload", value_name = "IMAGE")]
        images: Vec<String>,
        /// Name (required).
        #[arg(long)]
        name: String,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        /// Targeting and pull settings.
        #[command(flatten)]
        policy: PolicyFlags,
        /// Print what its first run would do without creating it.
        #[arg(long)]
        dry_run: bool,
    },
    /// List policies with their coverage.
    List {
        /// Page size (1..=100).
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Entries to skip.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Show one policy: coverage, gated nodes, last runs.
    Get {
        /// Policy id.
        id: String,
    },
    /// Change a policy: only the flags given change.
    Update {
        /// Policy id.
        id: String,
        /// New image list (replaces the old one; repeatable).
        #[arg(long = "image", value_name = "IMAGE")]
        images: Vec<String>,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// Targeting and pull settings.
        #[command(flatten)]
        policy: PolicyFlags,
        /// Stop taking images and nodes from a workload (sends `fromWorkload: null`).
        #[arg(long, conflicts_with = "from_workload")]
        clear_from_workload: bool,
    },
    /// Delete a policy (a run still going finishes).
    Delete {
        /// Policy id.
        id: String,
    },
    /// Enable a policy: nodes lacking its images are warmed at once.
    Enable {
        /// Policy id.
        id: String,
    },
    /// Disable a policy: no more runs.
    Disable {
        /// Policy id.
        id: String,
    },
}

/// Targeting and pull settings of a policy.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyFlags {
    /// Node label to match, KEY=VALUE (repeatable, all must match).
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub selectors: Vec<(String, String)>,
    /// Only this node (repeatable; ANDed with --selector).
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Nodes pulling at once in each run (1..=1000; server default 10).
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Priority of its runs (-1000..=1000).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Pull policy of the pull containers.
    #[arg(long, value_parser = ["IfNotPresent", "Always"])]
    pub pull_policy: Option<String>,
    /// Secret for a private registry, in the service's job namespace (repeatable).
    #[arg(long = "pull-secret", value_name = "NAME")]
    pub pull_secrets: Vec<String>,
    /// Include (true) or leave out (false) nodes with NoSchedule/NoExecute taints.
    #[arg(long, value_name = "BOOL")]
    pub tolerate_taints: Option<bool>,
    /// NoSchedule taint KEY removed from a node once it holds every image ("" turns it off).
    #[arg(long, value_name = "KEY")]
    pub remove_taint: Option<String>,
    /// Take images (before IMAGE…), node constraints and pull secrets from this
    /// workload's pod template (Deployment, StatefulSet, DaemonSet, Job or
    /// CronJob), read at every run.
    #[arg(long, value_name = "KIND/NAMESPACE/NAME", value_parser = WorkloadRef::parse)]
    pub from_workload: Option<WorkloadRef>,
}

impl PolicyFlags {
    fn to_json(&self, body: &mut Map<String, Value>) {
        let mut put = |k: &str, v: Value| {
            body.insert(k.to_owned(), v);
        };
        if !self.selectors.is_empty() {
            put("nodeSelector", crate::selector_json(&self.selectors));
        }
        if !self.nodes.is_empty() {
            put("nodeNames", json!(self.nodes));
        }
        if let Some(v) = self.batch_size {
            put("batchSize", json!(v));
        }
        if let Some(v) = self.priority {
            put("priority", json!(v));
        }
        if let Some(v) = &self.pull_policy {
            put("pullPolicy", json!(v));
        }
        if !self.pull_secrets.is_empty() {
            put("imagePullSecrets", json!(self.pull_secrets));
        }
        if let Some(v) = self.tolerate_taints {
            put("tolerateTaints", json!(v));
        }
        if let Some(v) = &self.remove_taint {
            put("removeTaint", json!(v));
        }
        if let Some(w) = &self.from_workload {
            put("fromWorkload", json!(w));
        }
    }
}

/// Runs a keep-warm command; returns the exit code.
pub async fn run(args: KeepWarmArgs) -> Result<u8, CliError> {
    let conn = &args.connection;
    let client = conn.client()?;
    let out = conn.output;
    let one = |id: &str| format!("{BASE}/{}", segment(id));
    match args.command {
        KeepWarmCommand::Create {
            images,
            name,
            disabled,
            policy,
            dry_run,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            if !images.is_empty() {
                body.insert("images".into(), json!(images));
            }
            if disabled {
                body.insert("enabled".into(), json!(false));
            }
            policy.to_json(&mut body);
            let body = Value::Object(body);
            if dry_run {
                let plan = client
                    .call(
                        Method::POST,
                        BASE,
                        &[("dryRun", "true".to_owned())],
                        Some(&body),
                    )
                    .await?;
                output::print(out, &plan, plan_details);
                return Ok(EXIT_OK);
            }
            let created = client.call(Method::POST, BASE, &[], Some(&body)).await?;
            output::print(out, &created, policy_details);
        }
        KeepWarmCommand::List { limit, offset } => {
            let query = [("limit", limit.to_string()), ("offset", offset.to_string())];
            let list = client.get(BASE, &query).await?;
            output::print(out, &list, policy_table);
        }
        KeepWarmCommand::Get { id } => {
            let p = client.get(&one(&id), &[]).await?;
            output::print(out, &p, policy_details);
        }
        KeepWarmCommand::Update {
            id,
            images,
            name,
            policy,
            clear_from_workload,
        } => {
            let mut body = Map::new();
            if clear_from_workload {
                body.insert("fromWorkload".into(), Value::Null);
            }
            if !images.is_empty() {
                body.insert("images".into(), json!(images));
            }
            if let Some(name) = name {
                body.insert("name".into(), json!(name));
            }
            policy.to_json(&mut body);
            if body.is_empty() {
                return Err(CliError::Usage(
                    "nothing to update: give at least one flag".to_owned(),
                ));
            }
            let p = client
                .call(Method::PUT, &one(&id), &[], Some(&Value::Object(body)))
                .await?;
            output::print(out, &p, policy_details);
        }
        KeepWarmCommand::Delete { id } => {
            let answer = client.call(Method::DELETE, &one(&id), &[], None).await?;
            output::print(out, &answer, |v| {
                format!("{}: {}\n", cell(&v["taskId"]), cell(&v["message"]))
            });
        }
        KeepWarmCommand::Enable { id } => {
            let path = format!("{}/enable", one(&id));
            let p = client.call(Method::PUT, &path, &[], None).await?;
            output::print(out, &p, policy_details);
        }
        KeepWarmCommand::Disable { id } => {
            let path = format!("{}/disable", one(&id));
            let p = client.call(Method::PUT, &path, &[], None).await?;
            output::print(out, &p, policy_details);
        }
    }
    Ok(EXIT_OK)
}

/// `warm/total (pct%)`, or `-` without coverage.
fn coverage_cell(p: &Value) -> String {
    let c = &p["coverage"];
    if c.is_null() {
        return "-".to_owned();
    }
    format!(
        "{}/{} ({}%)",
        cell(&c["warmNodes"]),
        cell(&c["totalNodes"]),
        cell(&c["percentage"])
    )
}

fn policy_table(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list["policies"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            vec![
                cell(&p["id"]),
                cell(&p["name"]),
                cell(&p["enabled"]),
                cell(&p["images"]),
                coverage_cell(p),
                cell(&p["removeTaint"]),
                cell(&p["lastRuns"][0]["taskId"]),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "NAME",
            "ENABLED",
            "IMAGES",
            "WARM",
            "REMOVE TAINT",
            "LAST RUN",
        ],
        &rows,
    );
    out.push_str(&format!(
        "({} of {} policies, offset {})\n",
        rows.len(),
        cell(&list["total"]),
        cell(&list["offset"])
    ));
    out
}

fn policy_details(p: &Value) -> String {
    let mut out = fields(&[
        ("Policy", cell(&p["id"])),
        ("Name", cell(&p["name"])),
        ("Enabled", cell(&p["enabled"])),
        ("Images", cell(&p["images"])),
        ("Selector", cell(&p["nodeSelector"])),
        ("Nodes", cell(&p["nodeNames"])),
        ("From workload", workload_cell(&p["fromWorkload"])),
        ("Remove taint", cell(&p["removeTaint"])),
        ("Warm nodes", coverage_cell(p)),
        ("Cold nodes", cell(&p["coverage"]["coldNodes"])),
        ("Gated nodes", cell(&p["coverage"]["gatedNodes"])),
        ("Created", cell(&p["createdAt"])),
    ]);
    let runs: Vec<Vec<String>> = p["lastRuns"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            vec![
                cell(&r["taskId"]),
                cell(&r["createdAt"]),
                cell(&r["nodes"]),
                cell(&r["status"]),
                cell(&r["completedNodes"]),
                cell(&r["failedNodes"]),
            ]
        })
        .collect();
    if !runs.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["RUN", "CREATED", "NODES", "STATUS", "COMPLETED", "FAILED"],
            &runs,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_send_only_what_was_given() {
        let mut body = Map::new();
        PolicyFlags {
            selectors: vec![("pool".into(), "web".into())],
            remove_taint: Some("prewarm.io/cold".into()),
            tolerate_taints: Some(false),
            ..Default::default()
        }
        .to_json(&mut body);
        assert_eq!(
            Value::Object(body),
            json!({"nodeSelector": {"pool": "web"}, "removeTaint": "prewarm.io/cold", "tolerateTaints": false})
        );
    }
}
