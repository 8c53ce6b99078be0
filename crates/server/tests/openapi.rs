//! The OpenAPI document: stable (a committed snapshot), complete (every
//! route the router serves is in it), and true (real responses of each
//! endpoint validate against the schemas it declares).
//!
//! Update the snapshot after an intended API change with
//! `UPDATE_OPENAPI_SNAPSHOT=1 cargo test -p prewarm --test openapi`.

use std::path::PathBuf;

use prewarm::http::openapi::document_json;
use serde_json::{json, Value};

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json")
}

#[test]
fn the_document_matches_the_snapshot() {
    let current = document_json().to_owned() + "\n";
    let path = snapshot_path();
    if std::env::var_os("UPDATE_OPENAPI_SNAPSHOT").is_some() {
        std::fs::write(&path, &current).unwrap();
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == current,
        "the OpenAPI document changed; if intended, run \
         UPDATE_OPENAPI_SNAPSHOT=1 cargo test -p prewarm --test openapi and commit {}",
        path.display()
    );
}

#[test]
fn every_guarded_operation_declares_bearer_auth_and_its_errors() {
    let doc: Value = serde_json::from_str(document_json()).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]})
    );
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/api/v1/tasks")
                || path.starts_with("/api/v1/scheduled-tasks")
                || path == "/api/v1/whoami"
                || path == "/api/v1/coverage"
                || path == "/api/v1/nodes/stats"
                || path.starts_with("/api/v1/keep-warm")
            {
                for code in ["401", "403", "429", "500"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
            } else {
                assert_eq!(
                    op["security"],
                    json!([{}]),
                    "{method} {path} must be public"
                );
            }
        }
    }
    let links = &doc["paths"]["/api/v1/tasks"]["post"]["responses"]["201"]["links"];
    assert_eq!(links["getTask"]["operationId"], "getTask", "{links}");
    for schema in [
        "Task",
        "TaskCreated",
        "TaskList",
        "CreateTaskRequest",
        "ErrorBody",
        "ActionResponse",
        "WebhookEvent",
        "Health",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} missing"
        );
    }
}

// --- docs/api.md: its reference section is rendered from the document -------

const REFERENCE_START: &str =
    "<!-- generated from GET /api/v1/openapi.json by crates/server/tests/openapi.rs; do not edit by hand -->\n";
const REFERENCE_END: &str = "<!-- end of generated reference -->\n";

fn api_doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md")
}

/// Text fit for one Markdown table cell.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// An operation's summary without the `METHOD /path…`: prefix the handlers' docs start with.
fn summary(op: &Value) -> String {
    let text = cell(op["summary"].as_str().unwrap_or(""));
    match text
        .strip_prefix('`')
        .and_then(|rest| rest.split_once("`: "))
    {
        Some((_, tail)) => tail.to_owned(),
        None if text.starts_with('`') && text.ends_with("`.") => String::new(),
        None => text,
    }
}

fn schema_link(reference: &str) -> String {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    format!("[{name}](#{})", name.to_ascii_lowercase())
}

/// A schema's type in a few words: `string`, `[Task]`, `{string: string}`, `integer (int32) or null`.
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        return schema_link(reference);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(parts) = schema[key].as_array() {
            let sep = if key == "allOf" { " and " } else { " or " };
            return parts.iter().map(type_of).collect::<Vec<_>>().join(sep);
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        return values
            .iter()
            .map(|v| {
                format!(
                    "`{}`",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let mut words = Vec::new();
    for t in &types {
        words.push(match *t {
            "array" => format!("[{}]", type_of(&schema["items"])),
            "object" if schema["additionalProperties"].is_object() => {
                format!("{{string: {}}}", type_of(&schema["additionalProperties"]))
            }
            "integer" | "number" | "string" if schema["format"].is_string() => {
                format!("{t} ({})", schema["format"].as_str().unwrap())
            }
            other => other.to_owned(),
        });
    }
    if words.is_empty() {
        "any".to_owned()
    } else {
        words.join(" or ")
    }
}

/// The reference section of docs/api.md: every operation, then every schema.
fn render_reference(doc: &Value) -> String {
    let mut out = String::from(REFERENCE_START);
    out.push_str("\n### Operations\n\n");
    out.push_str(
        "| method | path | what | parameters | body | responses |\n|---|---|---|---|---|---|\n",
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let params: Vec<String> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!(
                                "`{}` ({})",
                                p["name"].as_str().unwrap(),
                                p["in"].as_str().unwrap()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let body = op["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.values().next())
                .map(|media| type_of(&media["schema"]))
                .unwrap_or_default();
            // Codes with the same body share one entry: `400, 404 [ErrorBody]`.
            let mut grouped: Vec<(Vec<&str>, String)> = Vec::new();
            for (code, r) in op["responses"].as_object().unwrap() {
                let body = match r["content"].as_object().and_then(|c| c.values().next()) {
                    Some(media) if media["schema"].is_object() => type_of(&media["schema"]),
                    _ => String::new(),
                };
                match grouped.iter_mut().find(|(_, b)| *b == body) {
                    Some((codes, _)) => codes.push(code),
                    None => grouped.push((vec![code], body)),
                }
            }
            let responses: Vec<String> = grouped
                .iter()
                .map(|(codes, body)| format!("{} {body}", codes.join(", ")).trim_end().to_owned())
                .collect();
            out.push_str(&format!(
                "| {} | `{path}` | {} | {} | {body} | {} |\n",
                method.to_ascii_uppercase(),
                summary(op),
                params.join(", "),
                responses.join("; "),
            ));
        }
    }
    out.push_str("\n### Schemas\n");
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        out.push_str(&format!("\n#### {name}\n\n"));
        if let Some(description) = schema["description"].as_str() {
            out.push_str(description.trim());
            out.push_str("\n\n");
        }
        match schema["properties"].as_object() {
            Some(properties) => {
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                out.push_str("| field | type | required | meaning |\n|---|---|---|---|\n");
                for (field, property) in properties {
                    out.push_str(&format!(
                        "| `{field}` | {} | {} | {} |\n",
                        cell(&type_of(property)),
                        if required.contains(&field.as_str()) {
                            "yes"
                        } else {
                            ""
                        },
                        cell(property["description"].as_str().unwrap_or("")),
                    ));
                }
            }
            None => {
                out.push_str(&format!("Type: {}\n", cell(&type_of(schema))));
            }
        }
    }
    out.push('\n');
    out.push_str(REFERENCE_END);
    out
}

#[test]
fn docs_api_md_reference_matches_the_served_document() {
    let doc: Value = serde_json::from_str(document_json()).unwrap();
    let path = api_doc_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find(REFERENCE_START)
        .expect("docs/api.md lacks the reference start marker");
    let end = text
        .find(REFERENCE_END)
        .expect("docs/api.md lacks the reference end marker")
        + REFERENCE_END.len();
    let rendered = render_reference(&doc);
    if std::env::var_os("UPDATE_API_DOCS").is_some() {
        std::fs::write(
            &path,
            format!("{}{rendered}{}", &text[..start], &text[end..]),
        )
        .unwrap();
        return;
    }
    assert!(
        text[start..end] == rendered,
        "docs/api.md's reference differs from the served OpenAPI document; run \
         UPDATE_API_DOCS=1 cargo test -p prewarm --test openapi and commit docs/api.md"
    );
}

#[test]
fn docs_api_md_names_every_served_path() {
    // The hand-written endpoint table too: a path the service serves but the
    // contract's table never mentions is a path users cannot find.
    let doc: Value = serde_json::from_str(document_json()).unwrap();
    let text = std::fs::read_to_string(api_doc_path()).unwrap();
    let table = &text[text.find("## Endpoints").unwrap()..text.find("## Errors").unwrap()];
    for path in doc["paths"].as_object().unwrap().keys() {
        let bare = path.replace("{execution_id}", "{executionId}");
        // `/enable, /disable` share a row.
        let sibling = format!(", /{}", bare.rsplit('/').next().unwrap());
        assert!(
            table.contains(&bare) || table.contains(&sibling),
            "the endpoint table of docs/api.md does not mention {path}"
        );
    }
}
