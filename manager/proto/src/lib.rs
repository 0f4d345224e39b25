//! # strata-proto: the wire protocol of Strata
//!
//! Everything that crosses a process boundary in a Strata cluster is defined
//! here, so that frameworks, executors and agents depend on the protocol and
//! never on the manager's implementation.
//!
//! * [`pb`]: the generated protobuf messages and the two gRPC services, the
//!   `Scheduler` service (frameworks subscribe to events and make calls) and
//!   the `AgentLink` service (one long-lived stream per agent).
//! * [`ids`]: newtype IDs (`AgentId`, `FrameworkId`, `TaskId`, …); no bare
//!   string crosses a module boundary.
//! * [`resources`]: fixed-point scalars (3 decimals, as Mesos), port ranges
//!   and the `Resources` bundle, with parsing of the command-line syntax
//!   `cpus:4;mem:8192;ports:[31000-32000]` and validated conversion from the
//!   wire.
//! * [`class`]: priority classes (`system` > `service` > `batch` >
//!   `best-effort` by default).
//! * [`fsutil`]: the durable atomic file write (temporary file, fsync,
//!   rename, fsync of the directory) every crate uses for the small files
//!   it must not lose or tear.
//! * [`jobs`]: the job reports batch drivers send the manager (its job
//!   history and web UI).
//! * [`time`]: [`time::Timestamp`], an instant on the manager's clock;
//!   spans between instants are `std::time::Duration`.
//!
//! The protocol is versioned by [`PROTOCOL_VERSION`], checked in every
//! handshake (framework subscription, agent registration, executor link):
//! a peer one version behind is served in its version ([`negotiate`]).

#![warn(missing_docs)]

pub mod class;
pub mod fsutil;
pub mod ids;
pub mod jobs;
pub mod net;
pub mod resources;
pub mod routes;
pub mod state;
pub mod time;
pub mod units;

/// The generated protobuf types and gRPC stubs (package `strata.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("strata.v1");
}

/// The batch engine's driver ↔ executor protocol (package `strata.exec.v1`):
/// the `ExecutorLink` service the driver hosts, task launches and statuses.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod exec {
    tonic::include_proto!("strata.exec.v1");
}

/// The protocol version spoken by this build. Version 2 added agent drains
/// (the `Drain` event, `REASON_AGENT_DRAINED`).
pub const PROTOCOL_VERSION: u32 = 2;

/// The first version with agent drains (the `Drain` event): frameworks of
/// an older one are not sent it.
pub const DRAIN_PROTOCOL_VERSION: u32 = 2;

/// The oldest version a peer may speak and still be served: one behind, so
/// a cluster upgrades its managers first, then its agents and frameworks,
/// one at a time. A peer outside `OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION`
/// is refused at its handshake with a clear error.
pub const OLDEST_PROTOCOL_VERSION: u32 = PROTOCOL_VERSION - 1;

/// The version two peers speak: the older of theirs and ours, or `None`
/// when theirs is outside the versions this build serves.
pub fn negotiate(theirs: u32) -> Option<u32> {
    (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION)
        .contains(&theirs)
        .then_some(theirs)
}

/// The largest message, in bytes, that any Strata endpoint accepts.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The program name that stands for an agent's own `strata` binary: a task
/// command (not a shell command) whose value is exactly this runs the
/// binary the agent itself runs from, wherever it is installed on that
/// host (shell commands find it as `$STRATA_BIN`). The batch driver starts
/// its executors so, which is why an agent on another host needs nothing
/// installed but `strata`.
pub const OWN_PROGRAM: &str = "strata";

/// The HTTP header and gRPC metadata key with which a standby manager
/// names the leader (`host:port`) when it sends a client there.
pub const LEADER_HEADER: &str = "strata-leader";

/// The gRPC metadata key (and HTTP header) that carries the shared secret.
pub const AUTH_HEADER: &str = "authorization";

/// Whether a secret given equals the one expected, compared without an
/// early exit so that timing does not tell how much of it was right.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Formats a token as the value of [`AUTH_HEADER`].
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[cfg(test)]
mod secret_tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("t0k", "t0k"));
        assert!(!same_secret("t0k", "t0K"));
        assert!(!same_secret("t0k", "t0k0"));
        assert!(!same_secret("", "t"));
    }
}
