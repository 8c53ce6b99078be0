//! The crate-wide error type.

/// Everything that can go wrong in kube-sim: a bad scenario, the API server, I/O.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scenario YAML does not parse or names an unknown field.
    #[error("invalid scenario: {0}")]
    Scenario(String),
    /// A glob in the scenario does not compile.
    #[error("invalid glob {pattern:?} in scenario: {source}")]
    Glob {
        /// The pattern as written.
        pattern: String,
        /// Why globset rejected it.
        source: globset::Error,
    },
    /// A duration such as `after: 10x` does not parse.
    #[error("invalid duration {0:?} (use e.g. 500ms, 10s, 2m, 1h)")]
    Duration(String),
    /// The kubeconfig could not be read or turned into a client.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Reading or writing a file, or spawning a process, failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A helper process (the local cluster script, the kube-sim binary) misbehaved.
    #[error("{0}")]
    Process(String),
}

impl Error {
    /// Wraps an I/O error with what was being attempted.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
