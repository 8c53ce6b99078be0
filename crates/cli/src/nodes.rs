//! `nodes stats [--limit N]`: what the service learned about each node's
//! pull speed, slowest first (the nodes every task starts first).

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{CliError, EXIT_OK};
use crate::output::{self, cell, table};
use crate::Connection;

/// `nodes …`
#[derive(Debug, Clone, Args)]
pub struct NodesArgs {
    /// Server, token, output format.
    #[command(flatten)]
    pub connection: Connection,
    /// What to show.
    #[command(subcommand)]
    pub command: NodesCommand,
}

/// The `nodes` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum NodesCommand {
    /// The slowest nodes by learned seconds per image pull.
    Stats {
        /// Nodes to list (1..=1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// Runs `nodes …`; returns the exit code.
pub async fn run(args: NodesArgs) -> Result<u8, CliError> {
    let conn = &args.connection;
    let client = conn.client()?;
    match args.command {
        NodesCommand::Stats { limit } => {
            let answer = client
                .get("/api/v1/nodes/stats", &[("limit", limit.to_string())])
                .await?;
            output::print(conn.output, &answer, stats_table);
        }
    }
    Ok(EXIT_OK)
}

fn stats_table(answer: &Value) -> String {
    let nodes = answer["nodes"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                cell(&n["node"]),
                format!("{:.2}", n["secondsPerPull"].as_f64().unwrap_or(0.0)),
                cell(&n["samples"]),
                cell(&n["updatedAt"]),
                n["goneSince"].as_str().unwrap_or("-").to_owned(),
            ]
        })
        .collect();
    let mut out = table(
        &["NODE", "SECONDS/PULL", "SAMPLES", "UPDATED", "GONE SINCE"],
        &rows,
    );
    out.push_str(&format!(
        "({} of {} nodes with a learned pull speed)\n",
        nodes.len(),
        cell(&answer["total"])
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_lists_the_nodes_in_the_given_order_and_the_total() {
        let text = stats_table(&json!({
            "nodes": [
                {"node": "slow-1", "secondsPerPull": 41.25, "samples": 3, "updatedAt": "2024-01-16T10:00:00Z"},
                {"node": "fast-0", "secondsPerPull": 2.0, "samples": 1, "updatedAt": "2024-01-16T09:00:00Z",
                 "goneSince": "2024-01-17T00:00:00Z"},
            ],
            "total": 7,
        }));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{text}");
        assert!(
            lines[1].starts_with("slow-1") && lines[1].contains("41.25"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("fast-0")
                && lines[2].contains("2.00")
                && lines[2].ends_with("2024-01-17T00:00:00Z"),
            "{text}"
        );
        assert_eq!(lines[3], "(2 of 7 nodes with a learned pull speed)");
    }
}
