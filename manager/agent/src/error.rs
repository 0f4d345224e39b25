//! The agent's error type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in the agent, with the context needed to act
/// on it. Problems with one task never surface here: they become a status
/// update for that task instead.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The HTTP API could not bind its address.
    #[error("cannot bind the agent api on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A file or directory of the work dir could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`creating`, `reading`, `writing` …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint file does not hold what it should.
    #[error("corrupt checkpoint {path}: {reason}")]
    CorruptCheckpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An id that cannot name a directory (empty, `/`, `..`, NUL …).
    #[error("invalid {kind} id {id:?}: {reason}")]
    InvalidId {
        /// `framework` or `task`.
        kind: &'static str,
        /// The id given.
        id: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The manager address is not usable as a URI.
    #[error("invalid manager address {address:?}: {source}")]
    ManagerAddress {
        /// The address given.
        address: String,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// No manager address was given.
    #[error("no manager address given (--manager HOST:PORT[,HOST:PORT…])")]
    NoManager,
    /// The configured token cannot be sent as a header value.
    #[error("the agent token contains characters that cannot be sent in a header")]
    InvalidToken,
    /// A non-loopback bind without a token.
    #[error(
        "refusing to serve the agent api on non-loopback address {addr} without a token (set --token or STRATA_TOKEN)"
    )]
    TokenRequired {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// The agent did not register within the time allowed.
    #[error("the agent did not register with the manager within {waited:?}")]
    RegistrationTimeout {
        /// How long was waited.
        waited: Duration,
    },
    /// The agent stopped before the awaited event happened.
    #[error("the agent has stopped")]
    Stopped,
    /// The supervisor command is empty.
    #[error("the supervisor command is empty: set AgentConfig::supervisor")]
    NoSupervisor,
}

impl AgentError {
    /// Wraps an I/O error with what was being done and where.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        AgentError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
