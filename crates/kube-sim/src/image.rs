//! Image references as containerd and the kubelet see them: normalization
//! (`nginx` → `docker.io/library/nginx:latest`), the names a node reports and the
//! `imageID` a container status carries. Parsing is the service's own
//! (`prewarm-image-ref`), so kube-sim accepts exactly what prewarm accepts.

use sha2::{Digest, Sha256};

/// A parsed, normalized image reference. Once built it is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef(prewarm_image_ref::ImageRef);

/// Why a reference cannot be parsed; `Display` is the kubelet's `InvalidImageName` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidImage {
    reference: String,
    reason: &'static str,
}

impl std::fmt::Display for InvalidImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Failed to apply default image tag {r:?}: couldn't parse image reference {r:?}: {reason}",
            r = self.reference,
            reason = self.reason
        )
    }
}

impl std::error::Error for InvalidImage {}

const INVALID_FORMAT: &str = "invalid reference format";
const UPPERCASE: &str = "invalid reference format: repository name must be lowercase";

impl ImageRef {
    /// Parses a reference with the grammar of `github.com/distribution/reference`
    /// (what the kubelet uses), applying Docker Hub defaults.
    pub fn parse(reference: &str) -> Result<Self, InvalidImage> {
        prewarm_image_ref::ImageRef::parse(reference)
            .map(ImageRef)
            .map_err(|e| InvalidImage {
                reference: reference.to_string(),
                reason: if e.is_uppercase() {
                    UPPERCASE
                } else {
                    INVALID_FORMAT
                },
            })
    }

    /// The reference as written in the pod spec.
    pub fn original(&self) -> &str {
        self.0.as_str()
    }

    /// The normalized repository, e.g. `docker.io/library/nginx`.
    pub fn repository(&self) -> String {
        self.0.normalized_name()
    }

    /// The pinned digest, if the reference has one.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    /// The tag; `latest` when neither tag nor digest is given.
    fn tag(&self) -> Option<&str> {
        self.0.effective_tag()
    }

    /// The fully qualified reference, e.g. `docker.io/library/nginx:latest`.
    pub fn normalized(&self) -> String {
        let mut s = self.repository();
        if let Some(t) = self.tag() {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = self.digest() {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The name under which a node lists this reference once pulled
    /// (`repo:tag` or `repo@digest`); used to decide whether it is present.
    pub fn lookup_name(&self) -> String {
        match (self.digest(), self.tag()) {
            (Some(d), _) => format!("{}@{d}", self.repository()),
            (None, Some(t)) => format!("{}:{t}", self.repository()),
            (None, None) => self.repository(),
        }
    }

    /// The content digest this image resolves to: the pinned digest, else `fixed`
    /// (a scenario override), else `sha256:` of the normalized reference, so it is
    /// stable per reference.
    pub fn resolved_digest(&self, fixed: Option<&str>) -> String {
        if let Some(d) = self.digest() {
            return d.to_string();
        }
        if let Some(d) = fixed {
            return d.to_string();
        }
        format!("sha256:{}", hex_sha256(self.normalized().as_bytes()))
    }

    /// The registry host, normalized (`docker.io` for bare names).
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// The message of a pull the registry refused for want of credentials
    /// (HTTP 401), as the kubelet reports it with containerd 1.6.
    pub fn unauthorized_message(&self) -> String {
        self.refused_message("401 Unauthorized")
    }

    /// The message of a pull the registry refused for its rate limit (HTTP 429),
    /// in containerd 1.6's form with Docker Hub's `toomanyrequests` body.
    pub fn too_many_requests_message(&self) -> String {
        self.refused_message(
            "429 Too Many Requests - Server message: toomanyrequests: \
             You have reached your pull rate limit.",
        )
    }

    /// containerd's message for a manifest request the registry answered with `status`.
    fn refused_message(&self, status: &str) -> String {
        let n = self.normalized();
        // containerd talks to Docker Hub's registry host, not `docker.io`.
        let host = match self.registry() {
            "docker.io" => "registry-1.docker.io",
            other => other,
        };
        let object = self.digest().or(self.tag()).unwrap_or("latest");
        format!(
            "rpc error: code = Unknown desc = failed to pull and unpack image \"{n}\": \
             failed to resolve reference \"{n}\": pulling from host {host} failed with \
             status code [manifests {object}]: {status}"
        )
    }

    /// `imageID` as containerd reports it: `<repository>@<digest>`.
    pub fn image_id(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repository())
    }

    /// The `names` of this image in `node.status.images`, as containerd reports
    /// them: the digest name first, then the tag name.
    pub fn node_names(&self, digest: &str) -> Vec<String> {
        let mut names = vec![self.image_id(digest)];
        if let Some(t) = self.tag() {
            names.push(format!("{}:{t}", self.repository()));
        }
        names
    }
}

/// A deterministic, plausible image size (2 MiB … 300 MiB) derived from its digest.
pub fn default_size_bytes(digest: &str) -> i64 {
    let h = Sha256::digest(digest.as_bytes());
    let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as i64;
    2 * 1024 * 1024 + n % (298 * 1024 * 1024)
}

/// Lowercase hex SHA-256 of `data`.
pub fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_containerd() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(r.normalized(), "docker.io/library/nginx:latest");
        let r = ImageRef::parse("bitnami/redis:7.2").unwrap();
        assert_eq!(r.normalized(), "docker.io/bitnami/redis:7.2");
        let r = ImageRef::parse("registry.example.com:5000/team/app:v1").unwrap();
        assert_eq!(r.repository(), "registry.example.com:5000/team/app");
        let r = ImageRef::parse("localhost/app").unwrap();
        assert_eq!(r.normalized(), "localhost/app:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("nginx@{d}")).unwrap();
        assert_eq!(r.normalized(), format!("docker.io/library/nginx@{d}"));
        assert_eq!(r.resolved_digest(None), d);
    }

    #[test]
    fn image_id_and_names_use_a_stable_digest() {
        let a = ImageRef::parse("nginx:latest").unwrap();
        let b = ImageRef::parse("docker.io/library/nginx").unwrap();
        let d = a.resolved_digest(None);
        assert_eq!(d, b.resolved_digest(None));
        assert!(d.starts_with("sha256:") && d.len() == 7 + 64);
        assert_eq!(a.image_id(&d), format!("docker.io/library/nginx@{d}"));
        assert_eq!(
            a.node_names(&d),
            vec![
                format!("docker.io/library/nginx@{d}"),
                "docker.io/library/nginx:latest".to_string()
            ]
        );
        assert_eq!(a.resolved_digest(Some("sha256:ff")), "sha256:ff");
    }

    #[test]
    fn rejects_what_the_kubelet_rejects() {
        for bad in [
            "",
            "nginx:",
            "-nginx",
            "nginx::1",
            "a//b",
            "nginx@sha256:123",
            "my image",
        ] {
            let e = ImageRef::parse(bad).unwrap_err().to_string();
            assert!(e.ends_with("invalid reference format"), "{bad:?}: {e}");
        }
        let e = ImageRef::parse("Nginx").unwrap_err().to_string();
        assert_eq!(
            e,
            "Failed to apply default image tag \"Nginx\": couldn't parse image reference \"Nginx\": \
             invalid reference format: repository name must be lowercase"
        );
    }
}
