//! The HTTP side of the CLI: one `ApiClient` for every endpoint, and the
//! `CliError` every command returns, which knows its exit code.

use std::time::Duration;

use prewarm_api::ErrorBody;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Exit code: the task completed, or the command did what it was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code: the task failed, or the server refused the request.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad command line (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the task was cancelled.
pub const EXIT_CANCELLED: u8 = 3;
/// Exit code: the server could not be reached, or it rejected the token.
pub const EXIT_UNREACHABLE: u8 = 4;

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No answer from the server (connection refused, DNS, TLS, timeout).
    #[error("cannot reach the prewarm server at {server}: {cause}")]
    Unreachable {
        /// The base URL tried.
        server: String,
        /// What the HTTP client said.
        cause: String,
    },
    /// 401 or 403.
    #[error("{}", describe(*status, body))]
    Auth {
        /// The HTTP status.
        status: u16,
        /// The API's error body.
        body: ErrorBody,
    },
    /// Any other non-2xx answer, with the API's error body.
    #[error("{}", describe(*status, body))]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's error body.
        body: ErrorBody,
    },
    /// A bad argument the parser could not catch (e.g. a malformed `k=v`).
    #[error("{0}")]
    Usage(String),
    /// The server answered something that is not the API's JSON.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Unreachable { .. } | CliError::Auth { .. } => EXIT_UNREACHABLE,
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Api { .. } | CliError::Protocol(_) => EXIT_FAILED,
        }
    }
}

/// The certificates of a PEM bundle; a file without any is a usage error.
fn read_ca_bundle(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, CliError> {
    let usage = |what: String| CliError::Usage(format!("--ca-cert {}: {what}", path.display()));
    let pem = std::fs::read(path).map_err(|e| usage(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| usage(e.to_string()))?;
    if certs.is_empty() {
        return Err(usage("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

fn describe(status: u16, body: &ErrorBody) -> String {
    match &body.details {
        Some(details) if !details.is_empty() => {
            format!("{}: {} (HTTP {status})", body.error, details)
        }
        _ => format!("{} (HTTP {status})", body.error),
    }
}

/// A client of one prewarm server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client of `server` (`http://host:port`, with or without a trailing
    /// slash), sending `token` as `Authorization: Bearer` when given.
    pub fn new(server: &str, token: Option<String>) -> Result<ApiClient, CliError> {
        Self::with_ca_cert(server, token, None)
    }

    /// Like [`ApiClient::new`]; with `ca_cert`, an `https://` server's
    /// certificate must chain to one of the PEM certificates in that file
    /// (and to nothing else).
    pub fn with_ca_cert(
        server: &str,
        token: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<ApiClient, CliError> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "--server must be an http:// or https:// URL, got {server:?}"
            )));
        }
        let mut builder = crate::tls::http_client_builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("prewarm-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            builder = builder.tls_certs_only(read_ca_bundle(path)?);
        }
        let http = builder
            .build()
            .map_err(|e| CliError::Protocol(e.to_string()))?;
        Ok(ApiClient {
            http,
            base,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request builder for `path` (starting with `/`), token attached.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends a JSON request and returns the JSON answer, or the API's error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let mut req = self
            .request(method, path)
            .timeout(Duration::from_secs(60))
            .query(query);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| CliError::Protocol(format!("{e} (HTTP {status})")));
        }
        Err(error_from(status, &bytes))
    }

    /// GET a path with query parameters.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        self.call(Method::GET, path, query, None).await
    }

    pub(crate) fn unreachable(&self, err: &reqwest::Error) -> CliError {
        let mut cause = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            cause = format!("{cause}: {s}");
            source = s.source();
        }
        CliError::Unreachable {
            server: self.base.clone(),
            cause,
        }
    }
}

/// The error for a non-2xx answer, reading the API's error body when there is one.
pub(crate) fn error_from(status: StatusCode, bytes: &[u8]) -> CliError {
    let body = serde_json::from_slice::<ErrorBody>(bytes).unwrap_or_else(|_| ErrorBody {
        error: status
            .canonical_reason()
            .unwrap_or("Unexpected status")
            .to_owned(),
        details: Some(
            String::from_utf8_lossy(bytes)
                .trim()
                .chars()
                .take(500)
                .collect(),
        )
        .filter(|d: &String| !d.is_empty()),
        task_id: None,
        status: None,
    });
    let status = status.as_u16();
    if status == 401 || status == 403 {
        CliError::Auth { status, body }
    } else {
        CliError::Api { status, body }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_show_title_and_details() {
        let err = error_from(
            StatusCode::BAD_REQUEST,
            br#"{"error":"Validation failed","details":"images[0]: invalid image reference"}"#,
        );
        assert_eq!(err.exit_code(), EXIT_FAILED);
        assert_eq!(
            err.to_string(),
            "Validation failed: images[0]: invalid image reference (HTTP 400)"
        );
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for path in [&missing, &empty] {
            let err = ApiClient::with_ca_cert("https://h:1", None, Some(path)).unwrap_err();
            assert_eq!(err.exit_code(), EXIT_USAGE, "{err}");
            assert!(err.to_string().contains("--ca-cert"), "{err}");
        }
    }

    #[test]
    fn auth_errors_exit_4_and_non_json_bodies_are_shown() {
        let err = error_from(StatusCode::UNAUTHORIZED, b"no token");
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
        assert_eq!(err.to_string(), "Unauthorized: no token (HTTP 401)");
    }

    #[test]
    fn server_must_be_a_url() {
        let err = ApiClient::new("localhost:8080", None).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_USAGE);
        assert_eq!(
            ApiClient::new("http://h:1/", None).unwrap().base(),
            "http://h:1"
        );
    }
}
