//! The SDK's error type, [`SdkError`], and its mapping from gRPC statuses.

use std::time::Duration;

/// Everything that can go wrong between a framework and the manager.
///
/// Statuses returned by the manager are mapped once, by gRPC code, in
/// [`SdkError::from_status`]; errors found by the SDK itself (bad
/// configuration, no live subscription, timeouts) have their own variants.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SdkError {
    /// The [`SchedulerConfig`](crate::SchedulerConfig) cannot be used.
    #[error("invalid scheduler configuration: {message}")]
    InvalidConfig {
        /// What is wrong.
        message: String,
    },
    /// The manager could not be reached at all (connection refused, bad
    /// address, DNS failure …).
    #[error("cannot connect to the manager at {address}: {message}")]
    Transport {
        /// The address tried.
        address: String,
        /// The transport error, with its causes.
        message: String,
    },
    /// The manager refused the credentials (gRPC `UNAUTHENTICATED`): a token
    /// is missing or wrong.
    #[error("the manager refused our credentials: {message}")]
    Unauthenticated {
        /// The manager's message.
        message: String,
    },
    /// The credentials are valid but not allowed to do this (gRPC
    /// `PERMISSION_DENIED`).
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The manager's message.
        message: String,
    },
    /// The manager rejected a request as malformed (gRPC `INVALID_ARGUMENT`),
    /// or the SDK did before sending it.
    #[error("invalid request: {message}")]
    InvalidArgument {
        /// Why.
        message: String,
    },
    /// There is no live subscription: the stream id is stale, the framework
    /// is not (or no longer) subscribed, or the SDK is re-subscribing (gRPC
    /// `FAILED_PRECONDITION`, or found locally).
    #[error("not subscribed: {message}")]
    NotSubscribed {
        /// Why.
        message: String,
    },
    /// Something named in the request does not exist (gRPC `NOT_FOUND`),
    /// e.g. a framework id the manager has forgotten.
    #[error("not found: {message}")]
    NotFound {
        /// The manager's message.
        message: String,
    },
    /// A message was too large, or a limit was hit (gRPC
    /// `RESOURCE_EXHAUSTED`).
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        /// The manager's message.
        message: String,
    },
    /// The manager is unreachable or going away (gRPC `UNAVAILABLE`).
    #[error("the manager is unavailable: {message}")]
    Unavailable {
        /// Details.
        message: String,
    },
    /// The manager is a standby; `leader` is the one that leads, when it
    /// named it (gRPC `UNAVAILABLE` with `strata-leader` metadata).
    #[error("the manager is a standby: {message}")]
    Standby {
        /// The leader's address, when known.
        leader: Option<String>,
        /// The standby's message.
        message: String,
    },
    /// No answer within the allotted time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was being done (`subscribe`, `accept` …).
        operation: &'static str,
        /// How long the SDK waited.
        after: Duration,
    },
    /// The manager speaks another protocol version.
    #[error("protocol version mismatch: this SDK speaks version {ours}, the manager {theirs}")]
    VersionMismatch {
        /// [`strata_proto::PROTOCOL_VERSION`] of this build.
        ours: u32,
        /// The manager's version.
        theirs: u32,
    },
    /// The manager answered something the protocol does not allow (e.g. a
    /// stream whose first event is not `Subscribed`).
    #[error("protocol error: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
    /// Any other gRPC status.
    #[error("{operation} failed with gRPC status {code:?}: {message}")]
    Rpc {
        /// What was being done.
        operation: &'static str,
        /// The gRPC code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
}

impl SdkError {
    /// Maps a gRPC status returned by the manager for `operation`. `timeout`
    /// is reported when the status is `DEADLINE_EXCEEDED`.
    pub fn from_status(operation: &'static str, timeout: Duration, status: tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message().to_owned();
        match status.code() {
            Code::Unauthenticated => SdkError::Unauthenticated { message },
            Code::PermissionDenied => SdkError::PermissionDenied { message },
            Code::InvalidArgument | Code::OutOfRange => SdkError::InvalidArgument { message },
            Code::FailedPrecondition => SdkError::NotSubscribed { message },
            Code::NotFound => SdkError::NotFound { message },
            Code::ResourceExhausted => SdkError::ResourceExhausted { message },
            Code::Unavailable => match status
                .metadata()
                .get(strata_proto::LEADER_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                Some(leader) => SdkError::Standby {
                    leader: Some(leader.to_owned()),
                    message,
                },
                None if message.contains("standby") => SdkError::Standby {
                    leader: None,
                    message,
                },
                None => SdkError::Unavailable { message },
            },
            Code::DeadlineExceeded => SdkError::Timeout {
                operation,
                after: timeout,
            },
            code => SdkError::Rpc {
                operation,
                code,
                message,
            },
        }
    }

    /// Whether retrying later may succeed (the manager was unreachable, slow
    /// or restarting), as opposed to a refusal that will not change (bad
    /// credentials, an invalid request, a version mismatch).
    pub fn is_transient(&self) -> bool {
        match self {
            SdkError::Transport { .. }
            | SdkError::Unavailable { .. }
            | SdkError::Standby { .. }
            | SdkError::Timeout { .. }
            | SdkError::ResourceExhausted { .. }
            | SdkError::Protocol { .. } => true,
            SdkError::Rpc { code, .. } => matches!(
                code,
                tonic::Code::Unknown
                    | tonic::Code::Internal
                    | tonic::Code::Cancelled
                    | tonic::Code::Aborted
            ),
            SdkError::InvalidConfig { .. }
            | SdkError::Unauthenticated { .. }
            | SdkError::PermissionDenied { .. }
            | SdkError::InvalidArgument { .. }
            | SdkError::NotSubscribed { .. }
            | SdkError::NotFound { .. }
            | SdkError::VersionMismatch { .. } => false,
        }
    }
}

/// Formats an error with its chain of causes (`a: b: c`), since
/// `tonic::transport::Error` alone prints only "transport error".
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_by_code() {
        let t = Duration::from_secs(1);
        let e = SdkError::from_status("accept", t, tonic::Status::unauthenticated("no token"));
        assert_eq!(
            e,
            SdkError::Unauthenticated {
                message: "no token".into()
            }
        );
        assert!(!e.is_transient());
        let e = SdkError::from_status("accept", t, tonic::Status::failed_precondition("stale"));
        assert!(matches!(e, SdkError::NotSubscribed { .. }));
        let e = SdkError::from_status("accept", t, tonic::Status::invalid_argument("bad cpus"));
        assert!(e.to_string().contains("bad cpus"));
        let e = SdkError::from_status("kill", t, tonic::Status::deadline_exceeded("slow"));
        assert_eq!(
            e,
            SdkError::Timeout {
                operation: "kill",
                after: t
            }
        );
        assert!(e.is_transient());
        let e = SdkError::from_status("kill", t, tonic::Status::unavailable("down"));
        assert!(e.is_transient());
        let e = SdkError::from_status("kill", t, tonic::Status::data_loss("??"));
        assert!(matches!(
            e,
            SdkError::Rpc {
                code: tonic::Code::DataLoss,
                ..
            }
        ));
        assert!(!e.is_transient());
    }
}
