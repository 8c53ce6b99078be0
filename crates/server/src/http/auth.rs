//! Bearer-token authentication and role-based authorization.
//!
//! Tokens come from a file (typically a mounted Kubernetes Secret) holding one
//! `<name> <role> sha256:<hex digest>` line per token; only digests are kept,
//! so neither the file nor memory holds a usable token. A request's token is
//! hashed and compared in constant time against every digest. What each route
//! needs is one table, [`ROUTE_ROLES`]; routes missing from it fall back to
//! [`default_role`] (reads: viewer, writes: admin), so a new route is never
//! left open by accident.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::Method;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads tasks, schedules and executions.
    Viewer,
    /// Also creates and cancels tasks, creates, edits and triggers schedules,
    /// creates and edits keep-warm policies.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// The lowercase name used in the token file and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Who made a request; handlers read it from the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name (`anonymous` when authentication is off).
    pub name: String,
    /// Its role (`admin` when authentication is off).
    pub role: Role,
}

/// Name of the caller while authentication is off.
pub const ANONYMOUS: &str = "anonymous";

impl Identity {
    /// The caller when no token is configured: may do everything.
    pub fn anonymous() -> Identity {
        Identity {
            name: ANONYMOUS.to_owned(),
            role: Role::Admin,
        }
    }
}

/// Role each route needs: (method, route template, role). Routes of the
/// scheduled-task API are listed ahead of their handlers so they are covered
/// the moment they are mounted.
pub const ROUTE_ROLES: &[(Method, &str, Role)] = &[
    (Method::GET, "/api/v1/whoami", Role::Viewer),
    (Method::GET, "/api/v1/tasks", Role::Viewer),
    (Method::POST, "/api/v1/tasks", Role::Operator),
    (Method::GET, "/api/v1/tasks/{id}", Role::Viewer),
    (Method::DELETE, "/api/v1/tasks/{id}", Role::Operator),
    (Method::GET, "/api/v1/tasks/{id}/nodes", Role::Viewer),
    (Method::GET, "/api/v1/tasks/{id}/watch", Role::Viewer),
    (Method::GET, "/api/v1/tasks/{id}/events", Role::Viewer),
    (Method::GET, "/api/v1/scheduled-tasks", Role::Viewer),
    (Method::POST, "/api/v1/scheduled-tasks", Role::Operator),
    (Method::GET, "/api/v1/scheduled-tasks/{id}", Role::Viewer),
    (Method::PUT, "/api/v1/scheduled-tasks/{id}", Role::Operator),
    (Method::DELETE, "/api/v1/scheduled-tasks/{id}", Role::Admin),
    (
        Method::PUT,
        "/api/v1/scheduled-tasks/{id}/enable",
        Role::Operator,
    ),
    (
        Method::PUT,
        "/api/v1/scheduled-tasks/{id}/disable",
        Role::Operator,
    ),
    (
        Method::POST,
        "/api/v1/scheduled-tasks/{id}/trigger",
        Role::Operator,
    ),
    (
        Method::GET,
        "/api/v1/scheduled-tasks/{id}/executions",
        Role::Viewer,
    ),
    (
        Method::GET,
        "/api/v1/scheduled-tasks/{id}/executions/{execution_id}",
        Role::Viewer,
    ),
    (Method::GET, "/api/v1/keep-warm", Role::Viewer),
    (Method::POST, "/api/v1/keep-warm", Role::Operator),
    (Method::GET, "/api/v1/keep-warm/{id}", Role::Viewer),
    (Method::PUT, "/api/v1/keep-warm/{id}", Role::Operator),
    (Method::DELETE, "/api/v1/keep-warm/{id}", Role::Admin),
    (Method::PUT, "/api/v1/keep-warm/{id}/enable", Role::Operator),
    (
        Method::PUT,
        "/api/v1/keep-warm/{id}/disable",
        Role::Operator,
    ),
];

/// Routes anyone may call, token or not (probes, scrapers, the API description).
pub const PUBLIC_ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/docs",
    "/docs/",
    "/docs/{*rest}",
    "/",
    "/ui/{*path}",
];

/// Role a route needs, or `None` for a public route.
pub fn required_role(method: &Method, route: &str) -> Option<Role> {
    if PUBLIC_ROUTES.contains(&route) {
        return None;
    }
    ROUTE_ROLES
        .iter()
        .find(|(m, r, _)| m == method && *r == route)
        .map(|(_, _, role)| *role)
        .or_else(|| Some(default_role(method)))
}

/// Role of a route not in [`ROUTE_ROLES`]: reads need viewer, anything else admin.
pub fn default_role(method: &Method) -> Role {
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        Role::Viewer
    } else {
        Role::Admin
    }
}

/// `sha256:<hex>` of a token, the form the token file stores.
pub fn token_digest(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// One line of the token file.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// The caller's name (`createdBy`, audit log).
    pub name: String,
    /// What it may do.
    pub role: Role,
    digest: [u8; 32],
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Parses a token file: `<name> <role> sha256:<64 hex>` per line, `#` comments
/// and blank lines ignored. An error names the line (never its digest).
pub fn parse_token_file(text: &str) -> Result<Vec<TokenEntry>, String> {
    let mut entries: Vec<TokenEntry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, role, digest] = fields.as_slice() else {
            return Err(format!(
                "line {n}: expected `<name> <role> sha256:<hex digest>`, got {} fields",
                fields.len()
            ));
        };
        let role = Role::parse(role).ok_or_else(|| {
            format!("line {n}: role must be admin, operator or viewer, got {role:?}")
        })?;
        let hex_digest = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("line {n}: the digest must start with sha256:"))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut bytes)
            .map_err(|_| format!("line {n}: the digest must be 64 hex digits"))?;
        if entries.iter().any(|e| e.name == *name) {
            return Err(format!("line {n}: token name {name:?} appears twice"));
        }
        entries.push(TokenEntry {
            name: (*name).to_owned(),
            role,
            digest: bytes,
        });
    }
    Ok(entries)
}

/// The tokens in force; swapped as a whole when the file is reloaded.
#[derive(Debug, Default)]
pub struct Authenticator {
    entries: RwLock<Option<Arc<Vec<TokenEntry>>>>,
}

/// Outcome of checking a request's `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authentication is off: the caller is anonymous.
    Open,
    /// A known token.
    Known(Identity),
    /// No bearer token in the request.
    Missing,
    /// A token that matches no entry.
    Unknown,
}

impl Authenticator {
    /// No tokens: every request is let in as `anonymous`.
    pub fn open() -> Authenticator {
        Authenticator::default()
    }

    /// Authentication with these tokens (an empty list lets nobody in).
    pub fn with_tokens(entries: Vec<TokenEntry>) -> Authenticator {
        let auth = Authenticator::default();
        auth.replace(entries);
        auth
    }

    /// Whether requests go through without a token.
    pub fn is_open(&self) -> bool {
        self.read().is_none()
    }

    /// Puts a fresh set of tokens in force.
    pub fn replace(&self, entries: Vec<TokenEntry>) {
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(entries));
    }

    fn read(&self) -> Option<Arc<Vec<TokenEntry>>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks an `Authorization` header value (`Bearer <token>`).
    pub fn check(&self, authorization: Option<&str>) -> AuthOutcome {
        let Some(entries) = self.read() else {
            return AuthOutcome::Open;
        };
        let token = authorization.and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return AuthOutcome::Missing;
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every entry, whatever matches, so timing says nothing.
        let mut found: Option<&TokenEntry> = None;
        for entry in entries.iter() {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        match found {
            Some(e) => AuthOutcome::Known(Identity {
                name: e.name.clone(),
                role: e.role,
            }),
            None => AuthOutcome::Unknown,
        }
    }
}

/// Loads `path` into `auth`; on error the tokens in force stay as they were.
pub fn load_token_file(auth: &Authenticator, path: &Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the token file {}: {e}", path.display()))?;
    let entries = parse_token_file(&text)
        .map_err(|e| anyhow::anyhow!("token file {}: {e}", path.display()))?;
    let n = entries.len();
    auth.replace(entries);
    Ok(n)
}

/// Reloads the token file on SIGHUP and whenever it changes (see
/// [`crate::file_watch`]). A bad file is logged and ignored, keeping the
/// tokens in force.
pub async fn watch_token_file(auth: Arc<Authenticator>, path: PathBuf) {
    let mut watch = crate::file_watch::FileWatch::new(vec![path.clone()]).await;
    loop {
        let by_signal = watch.changed().await;
        match load_token_file(&auth, &path) {
            Ok(n) => tracing::info!(tokens = n, sighup = by_signal, "token file reloaded"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "token file not reloaded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> String {
        format!(
            "# team tokens\n\nalice admin {}\nbob   operator {}  # ci\ncarol viewer {}\n",
            token_digest("a-secret"),
            token_digest("b-secret"),
            token_digest("c-secret")
        )
    }

    #[test]
    fn digest_is_hex_sha256() {
        assert_eq!(
            token_digest("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn known_tokens_map_to_name_and_role() {
        let auth = Authenticator::with_tokens(parse_token_file(&file()).unwrap());
        assert_eq!(
            auth.check(Some("Bearer b-secret")),
            AuthOutcome::Known(Identity {
                name: "bob".into(),
                role: Role::Operator
            })
        );
        assert_eq!(
            auth.check(Some("bearer  c-secret ")),
            AuthOutcome::Known(Identity {
                name: "carol".into(),
                role: Role::Viewer
            })
        );
        assert_eq!(auth.check(Some("Bearer nope")), AuthOutcome::Unknown);
        assert_eq!(auth.check(Some("Basic YTpi")), AuthOutcome::Missing);
        assert_eq!(auth.check(Some("Bearer ")), AuthOutcome::Missing);
        assert_eq!(auth.check(None), AuthOutcome::Missing);
    }

    #[test]
    fn open_without_tokens_closed_with_an_empty_file() {
        assert_eq!(Authenticator::open().check(None), AuthOutcome::Open);
        let none = Authenticator::with_tokens(parse_token_file("# nobody\n").unwrap());
        assert!(!none.is_open());
        assert_eq!(none.check(Some("Bearer x")), AuthOutcome::Unknown);
    }

    #[test]
    fn bad_lines_are_named_without_the_digest() {
        let d = token_digest("x");
        for (text, want) in [
            ("alice admin".to_owned(), "line 1: expected"),
            (format!("\nalice root {d}"), "line 2: role must be"),
            ("alice admin md5:abcd".to_owned(), "must start with sha256:"),
            ("alice admin sha256:zz".to_owned(), "64 hex digits"),
            (format!("a admin {d}\na viewer {d}"), "appears twice"),
        ] {
            let err = parse_token_file(&text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains(&d[7..]), "digest leaked: {err}");
        }
    }

    #[test]
    fn the_route_table_grants_by_role() {
        use Method as M;
        assert_eq!(required_role(&M::GET, "/healthz"), None);
        assert_eq!(required_role(&M::GET, "/metrics"), None);
        assert_eq!(required_role(&M::GET, "/api/v1/tasks"), Some(Role::Viewer));
        assert_eq!(
            required_role(&M::POST, "/api/v1/tasks"),
            Some(Role::Operator)
        );
        assert_eq!(
            required_role(&M::DELETE, "/api/v1/scheduled-tasks/{id}"),
            Some(Role::Admin)
        );
        // Unlisted routes: reads viewer, writes admin.
        assert_eq!(required_role(&M::GET, "/api/v1/new"), Some(Role::Viewer));
        assert_eq!(required_role(&M::PATCH, "/api/v1/new"), Some(Role::Admin));
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }

    #[test]
    fn a_bad_reload_keeps_the_tokens_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, file()).unwrap();
        let auth = Authenticator::open();
        assert_eq!(load_token_file(&auth, &path).unwrap(), 3);
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_token_file(&auth, &path).is_err());
        assert!(matches!(
            auth.check(Some("Bearer a-secret")),
            AuthOutcome::Known(_)
        ));
    }
}
