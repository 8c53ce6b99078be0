//! The web UI at `/`: static files from the repository's `web/` directory,
//! embedded in the binary (no separate web server, nothing fetched from a CDN,
//! works air-gapped).
//!
//! Every UI response carries a strict Content-Security-Policy (only this
//! origin's scripts, styles and API; no inline code), `nosniff`, no referrer
//! and `no-cache` with a content ETag, so a browser revalidates cheaply and a
//! new binary's UI is picked up at once.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};

/// The Content-Security-Policy of every UI response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file of the UI.
struct Asset {
    /// Path below `web/` (and below `/ui/` in URLs).
    path: &'static str,
    /// `Content-Type` it is served with.
    content_type: &'static str,
    /// The file's bytes.
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the UI consists of (a unit test checks this list against `web/`).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/format.js", JS),
    asset!("js/image-ref.js", JS),
    asset!("js/cron.js", JS),
    asset!("js/event-stream.js", JS),
    asset!("js/chart.js", JS),
    asset!("js/widgets.js", JS),
    asset!("js/samples.js", JS),
    asset!("js/views/login.js", JS),
    asset!("js/views/tasks.js", JS),
    asset!("js/views/new-task.js", JS),
    asset!("js/views/task-detail.js", JS),
    asset!("js/views/schedules.js", JS),
    asset!("js/views/coverage.js", JS),
    asset!("js/views/keep-warm.js", JS),
    asset!("js/views/nodes.js", JS),
];

/// Routes of the UI: `/` (the page) and `/ui/{path}` (its scripts, styles, icons).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(asset))
}

/// `GET /`: the single page; screens are addressed by the URL fragment.
async fn index(headers: HeaderMap) -> Result<Response, ApiError> {
    serve("index.html", &headers)
}

/// `GET /ui/{path}`: one embedded file, 404 in the API's error shape otherwise.
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    serve(&path, &headers)
}

fn serve(path: &str, request_headers: &HeaderMap) -> Result<Response, ApiError> {
    let index = ASSETS
        .iter()
        .position(|a| a.path == path)
        .ok_or_else(|| ApiError::RouteNotFound(format!("/ui/{path}")))?;
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::ETAG,
            HeaderValue::from_str(etag).map_err(|e| ApiError::Internal(e.into()))?,
        ),
    ];
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    Ok((headers, asset.body).into_response())
}

/// Strong ETags (`"<first 16 hex of sha256>"`), one per asset, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let hash = Sha256::digest(a.body);
                let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Files under `web/` that belong to the UI (tests and their node_modules excluded).
    fn files_on_disk(dir: &std::path::Path, base: &std::path::Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == "tests" || rel.ends_with(".md") {
                continue;
            }
            if path.is_dir() {
                files_on_disk(&path, base, out);
            } else {
                out.insert(rel);
            }
        }
    }

    #[test]
    fn pages_carry_csp_type_and_etag_and_revalidate_to_304() {
        let page = serve("index.html", &HeaderMap::new()).unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let h = page.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let etag = h[header::ETAG].clone();

        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag.clone());
        assert_eq!(
            serve("index.html", &again).unwrap().status(),
            StatusCode::NOT_MODIFIED
        );
        // Another file's tag does not match.
        assert_eq!(serve("app.css", &again).unwrap().status(), StatusCode::OK);
        assert_eq!(
            serve("js/main.js", &HeaderMap::new()).unwrap().headers()[header::CONTENT_TYPE],
            JS
        );
        assert!(matches!(
            serve("../Cargo.toml", &HeaderMap::new()),
            Err(ApiError::RouteNotFound(_))
        ));
    }

    #[test]
    fn every_web_file_is_embedded_and_nothing_else() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
        let mut on_disk = BTreeSet::new();
        files_on_disk(&base, &base, &mut on_disk);
        let embedded: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        assert_eq!(on_disk, embedded, "web/ and ASSETS differ");
    }

    #[test]
    fn html_has_no_inline_script_style_or_handlers() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        let lower = html.to_ascii_lowercase();
        let handler = lower.match_indices(" on").any(|(i, _)| {
            let rest = &lower[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].trim_start().starts_with('=')
        });
        assert!(!handler, "inline event handler attribute in index.html");
        assert!(
            !html.contains("style="),
            "inline style attribute in index.html"
        );
        assert!(!html.contains("<style"), "inline <style> in index.html");
        for script in html.split("<script").skip(1) {
            let tag_end = script.find('>').unwrap();
            assert!(
                script[..tag_end].contains("src="),
                "inline <script> in index.html"
            );
        }
    }

    #[test]
    fn scripts_never_assign_inner_html() {
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(banned), "{} uses {banned}", asset.path);
            }
        }
    }
}
