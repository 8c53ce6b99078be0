//! Extractors that fail with `ApiError` instead of axum's plain-text
//! rejections: a JSON body that names the offending field, and query
//! parameters read by hand so a bad value gets our error shape.

use std::collections::HashMap;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::BODY_LIMIT;

/// A JSON request body. Rejects a non-JSON content type, bodies over the limit,
/// malformed JSON, wrong types and unknown fields, naming the JSON path of the
/// culprit (`batchSize: invalid type: string "x", expected u32`).
#[derive(Debug, Clone)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        decode(&bytes).map(AppJson)
    }
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::ContentType(
            "expected Content-Type: application/json".to_owned(),
        ));
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::ContentType(format!(
            "expected Content-Type: application/json, got {essence:?}"
        )))
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(BODY_LIMIT)
    } else {
        ApiError::InvalidBody(format!(
            "could not read the body: {}",
            rejection.body_text()
        ))
    }
}

/// Parses a whole JSON document into `T`, describing a failure by JSON path.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidBody(
            "the body is empty; expected a JSON object".to_owned(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|err| ApiError::InvalidBody(describe(&err)))?;
    de.end()
        .map_err(|err| ApiError::InvalidBody(err.to_string()))?;
    Ok(value)
}

/// `path: message` for a value of the wrong shape, without serde_json's
/// position (the path says more); syntax errors keep their line and column
/// and get no path (it is unknown mid-token).
fn describe(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = err.inner();
    let message = inner.to_string();
    if !inner.is_data() {
        return message;
    }
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    let message = message.strip_suffix(&position).unwrap_or(&message);
    match err.path().to_string().as_str() {
        "." => message.to_owned(),
        path => format!("{path}: {message}"),
    }
}

/// Query parameters as plain strings; unknown ones are ignored and each
/// handler parses the ones it knows with [`QueryParams::parse`].
#[derive(Debug, Clone, Default)]
pub struct QueryParams(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::InvalidParameter {
                name: "query".to_owned(),
                message: rejection.body_text(),
            })?;
        Ok(QueryParams(map))
    }
}

impl QueryParams {
    /// The raw value of `name`; an empty value counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Parses `name` with `parse` (which explains a bad value), or `None` when absent.
    pub fn parse<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|raw| {
                parse(raw).map_err(|message| ApiError::InvalidParameter {
                    name: name.to_owned(),
                    message,
                })
            })
            .transpose()
    }

    /// `limit` (1..=100, default 10) and `offset` (default 0) of a list request.
    pub fn page(&self) -> Result<(u32, u64), ApiError> {
        let limit = self
            .parse("limit", int_in_range(1, MAX_LIMIT))?
            .unwrap_or(DEFAULT_LIMIT);
        let offset = self
            .parse("offset", int_in_range(0, u64::MAX))?
            .unwrap_or(0);
        Ok((limit, offset))
    }
}

/// A parser for [`QueryParams::parse`]: `true` or `false`.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("must be true or false, got {raw:?}")),
    }
}

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 10;
/// Largest accepted `limit`.
pub const MAX_LIMIT: u32 = 100;

/// A parser for [`QueryParams::parse`]: an integer in `lo..=hi`.
pub fn int_in_range<T>(lo: T, hi: T) -> impl FnOnce(&str) -> Result<T, String>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    move |raw| match raw.trim().parse::<T>() {
        Ok(v) if v >= lo && v <= hi => Ok(v),
        _ => Err(format!(
            "must be an integer between {lo} and {hi}, got {raw:?}"
        )),
    }
}

/// The single `{id}` segment of a path, with our error shape on a bad encoding.
#[derive(Debug, Clone)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::InvalidParameter {
                name: "id".to_owned(),
                message: rejection.body_text(),
            })?;
        Ok(PathId(id))
    }
}
