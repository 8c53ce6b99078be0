//! Printing answers: the server's JSON as is (`-o json`), as YAML, or as
//! aligned tables for people.

use clap::ValueEnum;
use serde_json::Value;

/// How answers are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// The server's JSON, pretty-printed.
    Json,
    /// The server's JSON as YAML.
    Yaml,
}

/// Prints `value` in `format`; `table` renders it for `-o table`.
pub fn print(format: OutputFormat, value: &Value, table: impl FnOnce(&Value) -> String) {
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(value).unwrap_or_default(),
        OutputFormat::Yaml => serde_saphyr::to_string(value)
            .unwrap_or_default()
            .trim_end()
            .to_owned(),
        OutputFormat::Table => table(value).trim_end().to_owned(),
    };
    println!("{text}");
}

/// Rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A page of a list answer as a table: a row per object in `page[items]`
/// (`row` picks its cells) under `header`, then which part of how many
/// `noun` it shows.
pub fn page_table(
    page: &Value,
    items: &str,
    noun: &str,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> String {
    let rows: Vec<Vec<String>> = page[items]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(row)
        .collect();
    let mut out = table(header, &rows);
    out.push_str(&format!(
        "({} of {} {noun}, offset {})\n",
        rows.len(),
        cell(&page["total"]),
        cell(&page["offset"])
    ));
    out
}

/// `key: value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "STATUS"],
            &[
                vec!["a".into(), "running".into()],
                vec!["long-id".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID        STATUS\na         running\nlong-id   x\n");
    }

    #[test]
    fn page_tables_say_which_part_they_show() {
        let page = json!({"tasks": [{"id": "a"}, {"id": null}], "total": 7, "offset": 2});
        let t = page_table(&page, "tasks", "tasks", &["ID"], |t| vec![cell(&t["id"])]);
        assert_eq!(t, "ID\na\n-\n(2 of 7 tasks, offset 2)\n");
        let empty = page_table(
            &json!({"total": 0, "offset": 0}),
            "tasks",
            "tasks",
            &["ID"],
            |_| unreachable!(),
        );
        assert_eq!(empty, "ID\n(0 of 0 tasks, offset 0)\n");
    }

    #[test]
    fn cells_render_json() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(["a", "b"])), "a,b");
        assert_eq!(cell(&json!({"k": "v"})), "k=v");
        assert_eq!(cell(&json!(3)), "3");
    }
}
