//! Container image references, parsed once per the distribution/reference grammar.
//!
//! The grammar mirrors `github.com/distribution/reference` (`regexp.go`,
//! `reference.go` and `normalize.go`):
//!
//! ```text
//! reference       := name [ ":" tag ] [ "@" digest ]
//! name            := [domain '/'] remote-name
//! domain          := host [':' port-number]
//! host            := domain-name | '[' ipv6-chars ']'
//! domain-name     := domain-component ['.' domain-component]*
//! domain-component:= /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! port-number     := /[0-9]+/
//! remote-name     := path-component ['/' path-component]*
//! path-component  := alphanumeric [separator alphanumeric]*
//! alphanumeric    := /[a-z0-9]+/
//! separator       := /[_.]|__|[-]+/
//! tag             := /[\w][\w.-]{0,127}/
//! digest          := algorithm ":" hex
//! algorithm       := /[A-Za-z][A-Za-z0-9]*([+._-][A-Za-z][A-Za-z0-9]*)*/
//! hex             := /[0-9a-fA-F]{32,}/
//! ```
//!
//! Which leading component is a domain follows distribution's `splitDockerDomain`
//! (the rule the kubelet and containerd use via `ParseNormalizedNamed`): only when the
//! reference contains a `/` and the first component is `localhost`, contains a `.` or
//! `:`, or contains upper-case letters.

use std::fmt;
use std::str::FromStr;

/// How a reason for upper-case letters in a repository name begins.
const UPPERCASE_REASON: &str = "repository name must be lowercase";

/// Registry assumed when a reference names no domain.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Legacy Docker Hub domain, canonicalised to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Namespace of Docker Hub's single-component ("official") repositories.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Tag assumed when a reference has neither tag nor digest.
const DEFAULT_TAG: &str = "latest";
/// Maximum length of the (normalized) repository name, `domain/path`.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// Maximum length of a tag.
const TAG_MAX_LEN: usize = 128;
/// Minimum number of hex characters in a digest.
const DIGEST_MIN_HEX_LEN: usize = 32;

/// A container image reference that is valid per the distribution reference grammar.
///
/// The original string is kept verbatim (it is what gets handed to Kubernetes); the
/// parsed parts are exposed through accessors. Equality, ordering and hashing are
/// effectively those of the original string, since the parts are derived from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// The reference exactly as given.
    raw: String,
    /// Registry host (and port) as written, if the reference names one.
    domain: Option<String>,
    /// Repository path (remote name) as written.
    path: String,
    /// Tag, without the leading `:`.
    tag: Option<String>,
    /// Digest (`algorithm:hex`), without the leading `@`.
    digest: Option<String>,
}

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRefError {
    /// The rejected input, verbatim.
    pub reference: String,
    /// Human-readable explanation of what is wrong with it.
    pub reason: String,
}

impl fmt::Display for ImageRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid image reference {:?}: {}",
            self.reference, self.reason
        )
    }
}

impl std::error::Error for ImageRefError {}

impl ImageRefError {
    /// Whether the reference fails only for upper-case letters in its
    /// repository name (the kubelet reports this case with its own message).
    pub fn is_uppercase(&self) -> bool {
        self.reason.starts_with(UPPERCASE_REASON)
    }
}

impl ImageRef {
    /// Parses `s` as an image reference, rejecting anything the distribution
    /// reference grammar (as applied by the kubelet / containerd) would reject.
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        parse_parts(s).map_err(|reason| ImageRefError {
            reference: s.to_owned(),
            reason,
        })
    }

    /// The reference exactly as given (passed to Kubernetes unchanged).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The registry domain (host with optional port) as written, `None` if the
    /// reference names none (Docker Hub is then implied).
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The repository path (remote name) as written, e.g. `nginx` or `team/app`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, without the leading `:`, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (e.g. `sha256:…`), without the leading `@`, if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Fully-qualified form as containerd / the kubelet report it in
    /// `node.status.images`: default domain `docker.io`, `library/` prefix for
    /// single-component Docker Hub paths, tag `latest` when neither tag nor digest
    /// is given, and the digest form `name@digest` when a digest is given (with or
    /// without a tag, since containerd then pulls by digest).
    ///
    /// `nginx` → `docker.io/library/nginx:latest`;
    /// `registry:5000/a/b:1` → `registry:5000/a/b:1`.
    pub fn normalized(&self) -> String {
        let name = self.normalized_name();
        match (&self.digest, &self.tag) {
            (Some(digest), _) => format!("{name}@{digest}"),
            (None, Some(tag)) => format!("{name}:{tag}"),
            (None, None) => format!("{name}:{DEFAULT_TAG}"),
        }
    }

    /// The registry host pulls go to, normalized as the kubelet does: the domain
    /// as written, `docker.io` for references without one (and for the legacy
    /// `index.docker.io`). `nginx` → `docker.io`; `ghcr.io/a/b` → `ghcr.io`.
    pub fn registry(&self) -> &str {
        normalized_domain(self.domain.as_deref())
    }

    /// Normalized repository without tag or digest, e.g. `docker.io/library/nginx`.
    pub fn normalized_name(&self) -> String {
        let (domain, path) = normalized_name_parts(self.domain.as_deref(), &self.path);
        format!("{domain}/{path}")
    }

    /// The tag this reference denotes: its own tag, or `latest` when it has
    /// neither tag nor digest (what a pull of it fetches).
    pub fn effective_tag(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => Some(tag),
            (None, None) => Some(DEFAULT_TAG),
            (None, Some(_)) => None,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// Whether any of a node's image names (as the kubelet reports them in
/// `node.status.images[].names`, normalized or not) denotes the same image as `image`.
///
/// An image given by digest matches a node name with the same normalized repository
/// and the same digest; otherwise it matches a node name with the same normalized
/// repository and the same tag (`latest` when none is given). Node names that do not
/// parse are skipped.
pub fn matches_node_image(image: &ImageRef, node_image_names: &[String]) -> bool {
    let wanted_name = image.normalized_name();
    node_image_names
        .iter()
        .filter_map(|name| ImageRef::parse(name).ok())
        .any(|node| {
            if node.normalized_name() != wanted_name {
                return false;
            }
            match image.digest() {
                Some(digest) => node.digest() == Some(digest),
                None => {
                    node.effective_tag().is_some() && node.effective_tag() == image.effective_tag()
                }
            }
        })
}

/// Canonical `(domain, path)` of a repository: default / legacy Docker Hub domain
/// replaced by `docker.io`, and `library/` prepended to single-component Docker Hub
/// paths.
fn normalized_name_parts<'a>(domain: Option<&'a str>, path: &'a str) -> (&'a str, String) {
    let domain = normalized_domain(domain);
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path.to_owned()
    };
    (domain, path)
}

/// The registry host of a reference's domain: `docker.io` for none or the legacy Hub domain.
fn normalized_domain(domain: Option<&str>) -> &str {
    match domain {
        None | Some(LEGACY_DEFAULT_DOMAIN) => DEFAULT_DOMAIN,
        Some(d) => d,
    }
}

/// Parses `s` into an [`ImageRef`], returning the rejection reason on failure.
fn parse_parts(s: &str) -> Result<ImageRef, String> {
    if s.is_empty() {
        return Err("reference must not be empty".into());
    }
    if s.chars().any(char::is_whitespace) {
        return Err("reference must not contain whitespace".into());
    }
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(
            "a bare 64-character hexadecimal string is an image ID, not a repository name".into(),
        );
    }

    // Name and tag never contain '@'; the digest is everything after the first one.
    let (name_and_tag, digest) = match s.split_once('@') {
        Some((before, digest)) => {
            validate_digest(digest)?;
            (before, Some(digest))
        }
        None => (s, None),
    };

    // A tag contains neither ':' nor '/', so it is whatever follows the last ':' when
    // that ':' comes after the last '/' (a ':' before it belongs to a domain's port or
    // IPv6 literal).
    let (name, tag) = match name_and_tag.rfind(':') {
        Some(colon) if name_and_tag.rfind('/').is_none_or(|slash| slash < colon) => {
            let tag = &name_and_tag[colon + 1..];
            validate_tag(tag)?;
            (&name_and_tag[..colon], Some(tag))
        }
        _ => (name_and_tag, None),
    };
    if name.is_empty() {
        return Err("repository name must not be empty".into());
    }

    let (domain, path) = split_domain(name);
    if let Some(domain) = domain {
        validate_domain(domain)?;
    }
    validate_path(path)?;

    let (norm_domain, norm_path) = normalized_name_parts(domain, path);
    let name_len = norm_domain.len() + 1 + norm_path.len();
    if name_len > NAME_TOTAL_LENGTH_MAX {
        return Err(format!(
            "repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters \
             (normalized as \"{norm_domain}/{norm_path}\" it has {name_len})"
        ));
    }

    Ok(ImageRef {
        raw: s.to_owned(),
        domain: domain.map(str::to_owned),
        path: path.to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

/// Splits a name (without tag or digest) into its domain and remote name, following
/// distribution's `splitDockerDomain`: the first component is a domain only if there
/// is a `/` and it is `localhost`, contains `.` or `:`, or contains upper-case letters.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first == "localhost"
                || first.contains(['.', ':'])
                || first.chars().any(char::is_uppercase) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// Checks `host [':' port]` where host is a domain name or a bracketed IPv6 literal.
fn validate_domain(domain: &str) -> Result<(), String> {
    let bad = |what: &str| format!("invalid registry domain {domain:?}: {what}");
    let port_part = if let Some(inner_and_rest) = domain.strip_prefix('[') {
        let Some((inner, rest)) = inner_and_rest.split_once(']') else {
            return Err(bad("IPv6 address is missing its closing ']'"));
        };
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(bad(
                "IPv6 address must consist of hexadecimal digits and ':'",
            ));
        }
        rest
    } else {
        let (host, rest) = match domain.find(':') {
            Some(colon) => domain.split_at(colon),
            None => (domain, ""),
        };
        for component in host.split('.') {
            if !is_domain_component(component) {
                return Err(bad(
                    "each dot-separated host component must consist of letters, digits \
                     and '-', and must start and end with a letter or digit",
                ));
            }
        }
        rest
    };
    if port_part.is_empty() {
        return Ok(());
    }
    match port_part.strip_prefix(':') {
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(bad("port must be a non-empty sequence of digits")),
    }
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        }
        _ => false,
    }
}

/// Checks the remote name: `path-component ['/' path-component]*`.
fn validate_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err(
                "repository path must not have empty components (leading, trailing or doubled '/')"
                    .into(),
            );
        }
        if !is_path_component(component) {
            if is_path_component(&component.to_ascii_lowercase()) {
                return Err(format!("{UPPERCASE_REASON} (component {component:?})"));
            }
            return Err(format!(
                "repository path component {component:?} must consist of lower-case letters \
                 and digits, separated by '.', '_', '__' or one or more '-', and must start \
                 and end with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` with `separator := [_.] | __ | [-]+`.
fn is_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        // One or more alphanumerics.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // Exactly one separator.
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// Checks `[\w][\w.-]{0,127}`.
fn validate_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    let Some(&first) = b.first() else {
        return Err("tag after ':' must not be empty".into());
    };
    if b.len() > TAG_MAX_LEN {
        return Err(format!(
            "tag must be at most {TAG_MAX_LEN} characters (got {})",
            b.len()
        ));
    }
    if !word(first) || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
        return Err(format!(
            "tag {tag:?} must consist of letters, digits, '_', '.' and '-', and must not \
             start with '.' or '-'"
        ));
    }
    Ok(())
}

/// Checks `algorithm ":" hex`, with the exact lengths of the registered algorithms.
fn validate_digest(digest: &str) -> Result<(), String> {
    if digest.is_empty() {
        return Err("digest after '@' must not be empty".into());
    }
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!(
            "digest {digest:?} must have the form algorithm:hex (e.g. sha256:…)"
        ));
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|part| {
            let b = part.as_bytes();
            b.first().is_some_and(u8::is_ascii_alphabetic)
                && b.iter().all(u8::is_ascii_alphanumeric)
        });
    if !algorithm_ok {
        return Err(format!("digest algorithm {algorithm:?} is invalid"));
    }
    if hex.len() < DIGEST_MIN_HEX_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "digest {digest:?} must have at least {DIGEST_MIN_HEX_LEN} hexadecimal characters \
             after the algorithm"
        ));
    }
    let exact_len = match algorithm {
        "sha256" => Some(64),
        "sha384" => Some(96),
        "sha512" => Some(128),
        // The kubelet resolves no other algorithm; accepting one would only fail later.
        _ => {
            return Err(format!(
                "digest algorithm {algorithm:?} is not supported (use sha256, sha384 or sha512)"
            ))
        }
    };
    if let Some(len) = exact_len {
        if hex.len() != len || hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "{algorithm} digest must be exactly {len} lower-case hexadecimal characters"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const HEX64B: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn ok(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("expected {s:?} to parse: {e}"))
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// (input, expected (domain, path, tag, digest) or None for rejection)
    type Case = (
        String,
        Option<(Option<&'static str>, String, Option<String>, Option<String>)>,
    );

    fn accept(
        s: impl Into<String>,
        domain: Option<&'static str>,
        path: impl Into<String>,
        tag: Option<&str>,
        digest: Option<String>,
    ) -> Case {
        (
            s.into(),
            Some((domain, path.into(), tag.map(str::to_owned), digest)),
        )
    }

    fn reject(s: impl Into<String>) -> Case {
        (s.into(), None)
    }

    fn cases() -> Vec<Case> {
        let sha = format!("sha256:{HEX64}");
        vec![
            // --- valid ---
            accept("nginx", None, "nginx", None, None),
            accept("nginx:latest", None, "nginx", Some("latest"), None),
            accept(
                "nginx:1.25.3-alpine",
                None,
                "nginx",
                Some("1.25.3-alpine"),
                None,
            ),
            accept("library/nginx", None, "library/nginx", None, None),
            accept(
                "docker.io/library/nginx:1",
                Some("docker.io"),
                "library/nginx",
                Some("1"),
                None,
            ),
            accept(
                "registry.example.com:5000/team/app:v1.2",
                Some("registry.example.com:5000"),
                "team/app",
                Some("v1.2"),
                None,
            ),
            accept("localhost/foo", Some("localhost"), "foo", None, None),
            accept(
                "localhost:5000/foo",
                Some("localhost:5000"),
                "foo",
                None,
                None,
            ),
            accept(
                "[::1]:5000/foo:bar",
                Some("[::1]:5000"),
                "foo",
                Some("bar"),
                None,
            ),
            accept(
                "[2001:db8::1]/foo",
                Some("[2001:db8::1]"),
                "foo",
                None,
                None,
            ),
            accept(
                format!("nginx@{sha}"),
                None,
                "nginx",
                None,
                Some(sha.clone()),
            ),
            accept(
                format!("nginx:1.25@{sha}"),
                None,
                "nginx",
                Some("1.25"),
                Some(sha.clone()),
            ),
            accept(
                "gcr.io/a/b/c/d:tag_1-x.y",
                Some("gcr.io"),
                "a/b/c/d",
                Some("tag_1-x.y"),
                None,
            ),
            accept("a__b", None, "a__b", None, None),
            accept("a--b", None, "a--b", None, None),
            accept("a---b", None, "a---b", None, None),
            accept("a.b_c-d", None, "a.b_c-d", None, None),
            accept("0", None, "0", None, None),
            accept("foo/bar", None, "foo/bar", None, None),
            accept("foo_bar/baz", None, "foo_bar/baz", None, None),
            accept("Foo/bar", Some("Foo"), "bar", None, None),
            accept(
                "REGISTRY.example.com/bar",
                Some("REGISTRY.example.com"),
                "bar",
                None,
                None,
            ),
            accept("example:5000/x", Some("example:5000"), "x", None, None),
            accept(
                "127.0.0.1:5000/x/y:z",
                Some("127.0.0.1:5000"),
                "x/y",
                Some("z"),
                None,
            ),
            accept("my-registry.io/x", Some("my-registry.io"), "x", None, None),
            accept("nginx:_tag", None, "nginx", Some("_tag"), None),
            accept("nginx:TAG", None, "nginx", Some("TAG"), None),
            accept(
                format!("nginx:{}", "a".repeat(128)),
                None,
                "nginx",
                Some(&"a".repeat(128)),
                None,
            ),
            // 'localhost:5000' without a slash is the Docker Hub repo "localhost" with tag "5000".
            accept("localhost:5000", None, "localhost", Some("5000"), None),
            accept("localhost", None, "localhost", None, None),
            accept(
                format!("sha512:{}", "a".repeat(128)),
                None,
                "sha512",
                Some(&"a".repeat(128)),
                None,
            ),
            accept(
                format!("x@sha512:{}", "a".repeat(128)),
                None,
                "x",
                None,
                Some(format!("sha512:{}", "a".repeat(128))),
            ),
            reject(format!("x@multihash+base58:{}", "A".repeat(32))),
            // --- invalid ---
            reject(""),
            reject(" nginx"),
            reject("nginx "),
            reject("ngi nx"),
            reject("nginx:la test"),
            reject("nginx\t"),
            reject("nginx::latest"),
            reject("Nginx"),
            reject("foo/Bar"),
            reject("docker.io/Library/nginx"),
            reject("nginx:"),
            reject("nginx@"),
            reject("nginx:@"),
            reject("nginx@sha256:abc"),
            reject(format!("nginx@sha256:{}", HEX64.to_uppercase())),
            reject(format!("nginx@sha256:{HEX64}0")),
            reject(format!("nginx@sha256:{}", &HEX64[1..])),
            reject(format!("nginx@sha256{HEX64}")),
            reject(format!("nginx@:{HEX64}")),
            reject(format!("nginx@1sha:{HEX64}")),
            reject(format!("nginx@sha256:{HEX64}@sha256:{HEX64}")),
            reject("nginx@md5:0123456789abcdef"),
            reject(format!("nginx@x:{}", "g".repeat(40))),
            reject(format!("@sha256:{HEX64}")),
            reject(":tag"),
            reject("-nginx"),
            reject("nginx-"),
            reject(".nginx"),
            reject("nginx."),
            reject("_nginx"),
            reject("a_-b"),
            reject("a___b"),
            reject("a..b"),
            reject("a.-b"),
            reject("a//b"),
            reject("/a"),
            reject("a/"),
            reject("gcr.io/"),
            reject("gcr.io//a"),
            reject(format!("nginx:{}", "a".repeat(129))),
            reject("nginx:-tag"),
            reject("nginx:.tag"),
            reject("nginx:ta/g"),
            reject("nginx:t@g"),
            reject("registry:/foo"),
            reject("registry:abc/foo"),
            reject("-registry.io/foo"),
            reject("registry-.io/foo"),
            reject("registry..io/foo"),
            reject("registry.io./foo"),
            reject("reg_istry.io/foo"),
            // Has a '.', so it is taken as a domain (splitDockerDomain), but is not a
            // valid host; distribution would quietly yield a domain-less name here.
            reject("a.b_c/d"),
            reject("[::1/foo"),
            reject("[]/foo"),
            reject("[::g]/foo"),
            reject("[::1]:/foo"),
            reject("[::1]x/foo"),
            reject("nginx:tag/foo"),
            reject("ngi%nx"),
            reject("ngïnx"),
            reject(HEX64),
            reject(format!("a/{}", "b".repeat(255))),
        ]
    }

    #[test]
    fn grammar_table() {
        let cases = cases();
        assert!(cases.len() >= 40);
        for (input, expected) in cases {
            let got = ImageRef::parse(&input);
            match (expected, got) {
                (Some((domain, path, tag, digest)), Ok(r)) => {
                    assert_eq!(r.as_str(), input);
                    assert_eq!(r.domain(), domain, "domain of {input:?}");
                    assert_eq!(r.path(), path, "path of {input:?}");
                    assert_eq!(r.tag(), tag.as_deref(), "tag of {input:?}");
                    assert_eq!(r.digest(), digest.as_deref(), "digest of {input:?}");
                }
                (Some(_), Err(e)) => panic!("expected {input:?} to be accepted, got: {e}"),
                (None, Ok(r)) => panic!("expected {input:?} to be rejected, got {r:?}"),
                (None, Err(e)) => {
                    assert_eq!(e.reference, input);
                    assert!(!e.reason.is_empty());
                }
            }
        }
    }

    #[test]
    fn name_length_limit_counts_normalized_name() {
        // "docker.io/" + 245 = 255: accepted.
        let path = format!("a/{}", "b".repeat(243));
        assert_eq!(ok(&path).normalized_name().len(), 255);
        // One more character: rejected.
        let too_long = format!("a/{}", "b".repeat(244));
        let err = ImageRef::parse(&too_long).unwrap_err();
        assert!(err.reason.contains("255"), "{err}");
        // Single-component Docker Hub names get "library/" counted too.
        let single = "b".repeat(255 - "docker.io/library/".len());
        ok(&single);
        assert!(ImageRef::parse(&format!("{single}b")).is_err());
        // Explicit domains count as written.
        let with_domain = format!("r.io/{}", "c".repeat(250));
        assert_eq!(ok(&with_domain).normalized_name().len(), 255);
        assert!(ImageRef::parse(&format!("{with_domain}c")).is_err());
    }

    #[test]
    fn error_messages() {
        let e = ImageRef::parse("Nginx").unwrap_err();
        assert_eq!(e.reference, "Nginx");
        assert!(e.reason.contains("lowercase"), "{e}");
        assert!(
            e.to_string()
                .starts_with("invalid image reference \"Nginx\": "),
            "{e}"
        );
        let e = ImageRef::parse("").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid image reference \"\": reference must not be empty"
        );
        let e = ImageRef::parse(" nginx").unwrap_err();
        assert!(e.reason.contains("whitespace"), "{e}");
        let e = ImageRef::parse("nginx:").unwrap_err();
        assert!(e.reason.contains("tag"), "{e}");
        let e = ImageRef::parse("nginx@sha256:abc").unwrap_err();
        assert!(e.reason.contains("sha256"), "{e}");
        let e = ImageRef::parse("a//b").unwrap_err();
        assert!(e.reason.contains("empty"), "{e}");
        // Display escapes control characters instead of printing them raw.
        let e = ImageRef::parse("a\nb").unwrap_err();
        assert!(e.to_string().contains("\\n"), "{e}");
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().starts_with("invalid image reference"));
    }

    #[test]
    fn registry_is_the_normalized_host() {
        for (reference, registry) in [
            ("nginx", "docker.io"),
            ("bitnami/redis:7", "docker.io"),
            ("index.docker.io/nginx", "docker.io"),
            ("docker.io/library/nginx:1", "docker.io"),
            ("ghcr.io/org/app:1", "ghcr.io"),
            ("localhost/app", "localhost"),
            ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000"),
        ] {
            assert_eq!(
                ImageRef::parse(reference).unwrap().registry(),
                registry,
                "{reference}"
            );
        }
    }

    #[test]
    fn normalized_forms() {
        let cases: Vec<(String, String, String)> = vec![
            (
                "nginx".into(),
                "docker.io/library/nginx:latest".into(),
                "docker.io/library/nginx".into(),
            ),
            (
                "nginx:1.25".into(),
                "docker.io/library/nginx:1.25".into(),
                "docker.io/library/nginx".into(),
            ),
            (
                format!("nginx@sha256:{HEX64}"),
                format!("docker.io/library/nginx@sha256:{HEX64}"),
                "docker.io/library/nginx".into(),
            ),
            (
                format!("nginx:1.25@sha256:{HEX64}"),
                format!("docker.io/library/nginx@sha256:{HEX64}"),
                "docker.io/library/nginx".into(),
            ),
            (
                "bitnami/redis".into(),
                "docker.io/bitnami/redis:latest".into(),
                "docker.io/bitnami/redis".into(),
            ),
            (
                "docker.io/nginx".into(),
                "docker.io/library/nginx:latest".into(),
                "docker.io/library/nginx".into(),
            ),
            (
                "docker.io/library/nginx:1".into(),
                "docker.io/library/nginx:1".into(),
                "docker.io/library/nginx".into(),
            ),
            (
                "index.docker.io/nginx".into(),
                "docker.io/library/nginx:latest".into(),
                "docker.io/library/nginx".into(),
            ),
            (
                "index.docker.io/a/b:c".into(),
                "docker.io/a/b:c".into(),
                "docker.io/a/b".into(),
            ),
            (
                "registry:5000/a/b:1".into(),
                "registry:5000/a/b:1".into(),
                "registry:5000/a/b".into(),
            ),
            (
                "localhost/foo".into(),
                "localhost/foo:latest".into(),
                "localhost/foo".into(),
            ),
            (
                "gcr.io/proj/img".into(),
                "gcr.io/proj/img:latest".into(),
                "gcr.io/proj/img".into(),
            ),
            (
                "quay.io/x".into(),
                "quay.io/x:latest".into(),
                "quay.io/x".into(),
            ),
            (
                "[::1]:5000/foo:bar".into(),
                "[::1]:5000/foo:bar".into(),
                "[::1]:5000/foo".into(),
            ),
            (
                "localhost:5000".into(),
                "docker.io/library/localhost:5000".into(),
                "docker.io/library/localhost".into(),
            ),
        ];
        for (input, normalized, name) in cases {
            let r = ok(&input);
            assert_eq!(r.normalized(), normalized, "normalized({input:?})");
            assert_eq!(r.normalized_name(), name, "normalized_name({input:?})");
            // as_str stays untouched.
            assert_eq!(r.as_str(), input);
            // Normalization is idempotent.
            assert_eq!(ok(&normalized).normalized(), normalized);
        }
    }

    #[test]
    fn display_fromstr_and_ordering() {
        let r: ImageRef = "gcr.io/a/b:c".parse().unwrap();
        assert_eq!(r.to_string(), "gcr.io/a/b:c");
        assert_eq!(r, ImageRef::parse("gcr.io/a/b:c").unwrap());
        assert!("Nginx".parse::<ImageRef>().is_err());
        // Different spellings of the same image are distinct values (as_str differs).
        assert_ne!(ok("nginx"), ok("docker.io/library/nginx:latest"));
        let mut v = [ok("b"), ok("a:1"), ok("a")];
        v.sort();
        assert_eq!(
            v.iter().map(ImageRef::as_str).collect::<Vec<_>>(),
            ["a", "a:1", "b"]
        );
        let set: std::collections::HashSet<ImageRef> = [ok("a"), ok("a"), ok("b")].into();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn node_image_matching() {
        let sha = format!("sha256:{HEX64}");
        let other_sha = format!("sha256:{HEX64B}");
        let typical = names(&[
            &format!("docker.io/library/nginx@{sha}"),
            "docker.io/library/nginx:1.25",
        ]);

        // Tag-based.
        assert!(matches_node_image(&ok("nginx:1.25"), &typical));
        assert!(matches_node_image(&ok("docker.io/nginx:1.25"), &typical));
        assert!(matches_node_image(
            &ok("index.docker.io/library/nginx:1.25"),
            &typical
        ));
        assert!(!matches_node_image(&ok("nginx:1.26"), &typical));
        assert!(
            !matches_node_image(&ok("nginx"), &typical),
            "implicit latest != 1.25"
        );
        assert!(!matches_node_image(&ok("other/nginx:1.25"), &typical));
        assert!(!matches_node_image(&ok("quay.io/nginx:1.25"), &typical));

        // Implicit latest.
        let latest = names(&["docker.io/library/nginx:latest"]);
        assert!(matches_node_image(&ok("nginx"), &latest));
        assert!(matches_node_image(&ok("nginx:latest"), &latest));
        assert!(matches_node_image(&ok("nginx:latest"), &names(&["nginx"])));

        // Digest-based.
        assert!(matches_node_image(&ok(&format!("nginx@{sha}")), &typical));
        assert!(
            matches_node_image(&ok(&format!("nginx:9.9@{sha}")), &typical),
            "digest wins over tag"
        );
        assert!(!matches_node_image(
            &ok(&format!("nginx@{other_sha}")),
            &typical
        ));
        assert!(!matches_node_image(&ok(&format!("redis@{sha}")), &typical));
        // A digest image does not match a tag-only node name.
        assert!(!matches_node_image(
            &ok(&format!("nginx@{sha}")),
            &names(&["docker.io/library/nginx:latest"])
        ));
        // A tag image does not match a digest-only node name.
        assert!(!matches_node_image(
            &ok("nginx"),
            &names(&[&format!("docker.io/library/nginx@{sha}")])
        ));
        // ...but does match a node name carrying both.
        assert!(matches_node_image(
            &ok("nginx:1.25"),
            &names(&[&format!("nginx:1.25@{sha}")])
        ));

        // Un-normalized node names.
        assert!(matches_node_image(
            &ok("docker.io/library/nginx:1.25"),
            &names(&["nginx:1.25"])
        ));
        assert!(matches_node_image(
            &ok(&format!("docker.io/library/nginx@{sha}")),
            &names(&[&format!("nginx@{sha}")])
        ));

        // Private registries keep their domain and path.
        let private = names(&["registry.example.com:5000/team/app:v1.2"]);
        assert!(matches_node_image(
            &ok("registry.example.com:5000/team/app:v1.2"),
            &private
        ));
        assert!(!matches_node_image(
            &ok("registry.example.com/team/app:v1.2"),
            &private
        ));
        assert!(!matches_node_image(&ok("team/app:v1.2"), &private));

        // Unparseable node names are skipped, not fatal.
        let junk = names(&["", "sha256:", "Not A Ref", "docker.io/library/nginx:1.25"]);
        assert!(matches_node_image(&ok("nginx:1.25"), &junk));
        assert!(!matches_node_image(
            &ok("nginx:1.25"),
            &names(&["", "<none>@<none>", "<none>:<none>"])
        ));
        assert!(!matches_node_image(&ok("nginx"), &[]));
    }

    /// SplitMix64: tiny deterministic PRNG so the property test needs no crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Invariants every accepted reference must satisfy.
    fn check_accepted(input: &str, r: &ImageRef) {
        assert_eq!(r.as_str(), input);
        assert_eq!(r.to_string(), input);
        let rebuilt = format!(
            "{}{}{}{}",
            r.domain().map(|d| format!("{d}/")).unwrap_or_default(),
            r.path(),
            r.tag().map(|t| format!(":{t}")).unwrap_or_default(),
            r.digest().map(|d| format!("@{d}")).unwrap_or_default(),
        );
        assert_eq!(rebuilt, input, "parts of {input:?} do not reassemble");
        let n = r.normalized();
        let reparsed = ImageRef::parse(&n)
            .unwrap_or_else(|e| panic!("normalized form of {input:?} does not parse: {e}"));
        assert_eq!(
            reparsed.normalized(),
            n,
            "normalization of {input:?} not idempotent"
        );
        assert_eq!(reparsed.normalized_name(), r.normalized_name());
        assert!(r.normalized_name().len() <= NAME_TOTAL_LENGTH_MAX);
        assert!(
            matches_node_image(r, &[n]),
            "{input:?} must match its own normalized form"
        );
        assert!(matches_node_image(r, &[input.to_owned()]));
    }

    #[test]
    fn property_random_bytes_never_panic_and_round_trip() {
        const ALPHABET: &[u8] = b"abz09AZ._-/:@[] \t\x00\xc3\xa9";
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let len = rng.below(16);
            let bytes: Vec<u8> = (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect();
            let input = String::from_utf8_lossy(&bytes).into_owned();
            if let Ok(r) = ImageRef::parse(&input) {
                accepted += 1;
                check_accepted(&input, &r);
            }
        }
        assert!(
            accepted > 100,
            "only {accepted} random strings were accepted"
        );
    }

    #[test]
    fn property_random_tokens_never_panic_and_round_trip() {
        let sha = format!("sha256:{HEX64}");
        let digest_token = format!("@{sha}");
        let tokens: Vec<&str> = vec![
            "a",
            "b0",
            "nginx",
            "x",
            "9",
            ".",
            "_",
            "__",
            "-",
            "--",
            "/",
            "/",
            "/",
            ":",
            ":",
            "@",
            "localhost",
            "[::1]",
            "[",
            "]",
            "5000",
            "example.com",
            "A",
            "latest",
            &digest_token,
            "sha256:",
            HEX64,
            "docker.io",
            "index.docker.io",
            "library",
        ];
        let mut rng = Rng(42);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let n = 1 + rng.below(7);
            let input: String = (0..n).map(|_| tokens[rng.below(tokens.len())]).collect();
            if let Ok(r) = ImageRef::parse(&input) {
                accepted += 1;
                check_accepted(&input, &r);
            }
        }
        assert!(
            accepted > 1_000,
            "only {accepted} token strings were accepted"
        );
    }
}
