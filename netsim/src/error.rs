//! The lab's error type.

use std::io;

/// Everything that can go wrong while building, using or tearing down a lab.
///
/// [`NetsimError::NotRoot`] is the one callers are expected to match on: tests use it to skip
/// (the lab needs root to create network namespaces) instead of failing.
#[derive(Debug, thiserror::Error)]
pub enum NetsimError {
    /// The process is not root; network namespaces and nftables need it.
    #[error("netsim needs root (network namespaces and nftables); run it as root, e.g. with sudo")]
    NotRoot,
    /// A required system tool (`ip`, `nft`) is not installed.
    #[error(
        "netsim needs the `{tool}` command ({package}); install it, e.g. apt-get install {package}"
    )]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    /// The lab description is inconsistent (unknown router, duplicate name, ...).
    #[error("invalid lab topology: {0}")]
    Topology(String),
    /// An external command (`ip`, `nft`, ...) failed.
    #[error("command `{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    /// An I/O error with context.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A host name that is not part of the lab.
    #[error("no host named `{0}` in this lab")]
    UnknownHost(String),
    /// The lab's NAT self-check found a router that does not behave as configured.
    #[error("NAT self-check failed: {0}")]
    SelfCheck(String),
    /// No lab is up (for `netsim exec`), or the named one is not.
    #[error("{0}")]
    NoLab(String),
    /// A lab description or report could not be (de)serialised.
    #[error("{context}: {message}")]
    Format { context: String, message: String },
    /// The scenario matrix could not run (missing binaries, bad expectations file, ...).
    #[error("matrix: {0}")]
    Matrix(String),
}

impl NetsimError {
    /// Wraps an [`io::Error`] with a sentence saying what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        NetsimError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the lab.
pub type Result<T, E = NetsimError> = std::result::Result<T, E>;
