//! `coverage IMAGE… [--selector k=v] [--min PERCENT]`: how warm the nodes
//! are, and a gate for CI (exit 0 when every image meets `--min`, 1 when not).

use clap::Args;
use serde_json::Value;

use crate::client::{CliError, EXIT_FAILED, EXIT_OK};
use crate::output::{self, cell, table};
use crate::{parse_key_value, Connection};

/// `coverage …`
#[derive(Debug, Clone, Args)]
pub struct CoverageArgs {
    /// Server, token, output format.
    #[command(flatten)]
    pub connection: Connection,
    /// Image references; a digest (`name@sha256:…`) matches only that digest.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Node label to match, KEY=VALUE (repeatable, all must match).
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub selectors: Vec<(String, String)>,
    /// Exit 1 unless every image is on at least this percentage of the Ready matching nodes.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub min: Option<f64>,
    /// Summarize the nodes per value of this label.
    #[arg(long, value_name = "LABEL")]
    pub group_by: Option<String>,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a percentage between 0 and 100, got {s:?}"
        )),
    }
}

/// Runs `coverage`; returns the exit code.
pub async fn run(args: CoverageArgs) -> Result<u8, CliError> {
    let conn = &args.connection;
    let client = conn.client()?;
    let mut query = vec![("images", args.images.join(","))];
    if !args.selectors.is_empty() {
        let selector: Vec<String> = args
            .selectors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        query.push(("nodeSelector", selector.join(",")));
    }
    if let Some(label) = &args.group_by {
        query.push(("groupBy", label.clone()));
    }
    let answer = client.get("/api/v1/coverage", &query).await?;
    output::print(conn.output, &answer, coverage_table);
    let Some(min) = args.min else {
        return Ok(EXIT_OK);
    };
    let short: Vec<String> = answer["images"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|i| i["percentage"].as_f64().unwrap_or(0.0) < min)
        .map(|i| format!("{} ({}%)", cell(&i["image"]), cell(&i["percentage"])))
        .collect();
    if short.is_empty() {
        Ok(EXIT_OK)
    } else {
        eprintln!("coverage below {min}%: {}", short.join(", "));
        Ok(EXIT_FAILED)
    }
}

fn coverage_table(c: &Value) -> String {
    let list = |v: &Value| -> Vec<Value> { v.as_array().cloned().unwrap_or_default() };
    let rows: Vec<Vec<String>> = list(&c["images"])
        .iter()
        .map(|i| {
            vec![
                cell(&i["image"]),
                format!("{}/{}", cell(&i["nodesWithImage"]), cell(&c["totalNodes"])),
                format!("{}%", cell(&i["percentage"])),
            ]
        })
        .collect();
    let mut out = table(&["IMAGE", "NODES", "COVERAGE"], &rows);
    let lacking: Vec<Vec<String>> = list(&c["nodes"])
        .iter()
        .filter(|n| !list(&n["missing"]).is_empty())
        .map(|n| vec![cell(&n["nodeName"]), cell(&n["missing"])])
        .collect();
    if !lacking.is_empty() {
        out.push_str("\nNodes lacking images:\n");
        out.push_str(&table(&["NODE", "MISSING"], &lacking));
    }
    let groups = list(&c["groups"]);
    if !groups.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                vec![
                    cell(&g["value"]),
                    format!("{}/{}", cell(&g["warmNodes"]), cell(&g["nodes"])),
                    format!("{}%", cell(&g["percentage"])),
                ]
            })
            .collect();
        out.push_str(&table(&["VALUE", "WARM NODES", "COVERAGE"], &rows));
    }
    let not_ready = c["notReadyNodes"].as_u64().unwrap_or(0);
    if not_ready > 0 {
        out.push_str(&format!(
            "({not_ready} matching nodes not Ready, not counted)\n"
        ));
    }
    if c["nodesAtImageCap"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!(
            "({} nodes report 50 images, the kubelet's cap: an image may be there unlisted)\n",
            cell(&c["nodesAtImageCap"])
        ));
    }
    out
}
