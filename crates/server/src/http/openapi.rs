//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the wire types' `ToSchema` derives, served at
//! `/api/v1/openapi.json`; and Swagger UI at `/docs`, built from files
//! vendored into the binary (nothing is fetched at build or run time).
//!
//! Responses every guarded operation can give (401, 403, 429, 408, 500; 413
//! with a body) are added to each operation here, from the same route table
//! the guard enforces, so the document cannot drift from it.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HttpMethod, OpenApi as OpenApiDoc, Ref};
use utoipa::{Modify, OpenApi};

use super::auth::required_role;
use super::{coverage, health, keep_warm, nodes, schedules, tasks, whoami};

/// The API description; paths come from the handlers named here.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "prewarm",
        description = "Pre-pulls container images onto Kubernetes nodes. Tokens: `Authorization: Bearer <token>`; roles viewer < operator < admin.",
        license(name = "Apache-2.0")
    ),
    paths(
        tasks::create,
        tasks::list,
        tasks::get,
        tasks::cancel,
        tasks::nodes,
        coverage::get,
        nodes::stats,
        super::stream::events,
        super::stream::watch,
        schedules::create,
        schedules::list,
        schedules::get_one,
        schedules::update,
        schedules::delete,
        schedules::enable,
        schedules::disable,
        schedules::trigger,
        schedules::executions,
        schedules::execution,
        keep_warm::create,
        keep_warm::list,
        keep_warm::get_one,
        keep_warm::update,
        keep_warm::delete,
        keep_warm::enable,
        keep_warm::disable,
        health::healthz,
        whoami::whoami,
        health::readyz,
        super::metrics_text,
        openapi_json,
    ),
    components(schemas(prewarm_api::ErrorBody, prewarm_api::WebhookEvent)),
    modifiers(&Security, &CommonResponses, &Links),
    tags(
        (name = "tasks", description = "Prewarm tasks"),
        (name = "coverage", description = "How many nodes hold which images"),
        (name = "nodes", description = "What the service learned about each node's pull speed"),
        (name = "scheduled-tasks", description = "Cron schedules that create tasks, and their executions"),
        (name = "keep-warm", description = "Policies keeping images on every matching node, including nodes that join later"),
        (name = "operations", description = "Health, readiness, metrics, API description")
    )
)]
pub struct ApiDoc;

/// The document as served (built once).
pub fn document() -> &'static OpenApiDoc {
    static DOC: OnceLock<OpenApiDoc> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The OpenAPI 3 document", body = Object, content_type = "application/json"))
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

/// The document as served: JSON text, built once.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut doc = serde_json::to_value(document()).unwrap_or_default();
        fix_link_keys(&mut doc);
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_owned())
    })
}

/// utoipa 5 writes a link's `operationId` as `operation_id`; OpenAPI says `operationId`.
fn fix_link_keys(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(links) = map.get_mut("links").and_then(|l| l.as_object_mut()) {
                for link in links.values_mut() {
                    if let Some(link) = link.as_object_mut() {
                        if let Some(id) = link.remove("operation_id") {
                            link.insert("operationId".to_owned(), id);
                        }
                    }
                }
            }
            map.values_mut().for_each(fix_link_keys);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fix_link_keys),
        _ => {}
    }
}

/// Swagger UI at `/docs`, reading `/api/v1/openapi.json`.
pub fn swagger_ui() -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::from("/api/v1/openapi.json"))
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from the service's token file; `prewarm token hash` makes its digest.",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

struct CommonResponses;

/// Links from a create's answer to the operations on what it created, so
/// clients (and schemathesis' stateful phase) can follow real ids.
struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let follow: [(&str, &str, &str, &[&str]); 2] = [
            (
                "/api/v1/tasks",
                "201",
                "$response.body#/taskId",
                &["getTask", "cancelTask"],
            ),
            (
                "/api/v1/scheduled-tasks",
                "201",
                "$response.body#/id",
                &[
                    "getScheduledTask",
                    "updateScheduledTask",
                    "deleteScheduledTask",
                    "enableScheduledTask",
                    "disableScheduledTask",
                    "triggerScheduledTask",
                    "listExecutions",
                ],
            ),
        ];
        for (path, code, id, targets) in follow {
            let Some(op) = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
            else {
                continue;
            };
            let Some(utoipa::openapi::RefOr::T(response)) = op.responses.responses.get_mut(code)
            else {
                continue;
            };
            for target in targets {
                response.links.insert(
                    (*target).to_owned(),
                    utoipa::openapi::link::LinkBuilder::new()
                        .operation_id(*target)
                        .parameter("id", id)
                        .build()
                        .into(),
                );
            }
        }
    }
}

fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops: [(HttpMethod, &mut Option<Operation>); 5] = [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Put, &mut item.put),
                (HttpMethod::Delete, &mut item.delete),
                (HttpMethod::Patch, &mut item.patch),
            ];
            for (method, op) in ops {
                let Some(op) = op.as_mut() else { continue };
                let method: axum::http::Method = match method {
                    HttpMethod::Get => axum::http::Method::GET,
                    HttpMethod::Post => axum::http::Method::POST,
                    HttpMethod::Put => axum::http::Method::PUT,
                    HttpMethod::Delete => axum::http::Method::DELETE,
                    _ => axum::http::Method::PATCH,
                };
                let responses = &mut op.responses.responses;
                let mut add = |code: &str, description: &str| {
                    responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error_response(description));
                };
                if let Some(role) = required_role(&method, path) {
                    add("401", "No bearer token, or an unknown one");
                    add(
                        "403",
                        &format!("The token's role may not do this (needs {})", role.as_str()),
                    );
                    add("429", "Rate limit exceeded; see the Retry-After header");
                    add("408", "The request took too long");
                    add("500", "Internal error (details are logged, not sent)");
                    if op.request_body.is_some() {
                        add("413", "Body larger than 1 MiB");
                    }
                } else {
                    op.security = Some(vec![
                        utoipa::openapi::security::SecurityRequirement::default(),
                    ]);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
