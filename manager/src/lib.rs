//! # strata-manager: the cluster kernel
//!
//! The manager pools the resources of many agents and offers them to
//! frameworks (two-level scheduling, as Apache Mesos); the agent (crate
//! `strata-agent`, which this crate never depends on) runs the tasks that
//! frameworks launch on those offers.
//!
//! Layers, from pure to effectful:
//!
//! * [`allocator`]: a pure function `solve(problem) -> solution` that places
//!   pending demand and makes offers, class by class (priority classes served
//!   highest first), by DRF across roles (weighted) and across frameworks
//!   inside a role, within per-role quota limits. Policy lives here.
//! * [`master`]: the sans-IO state machine. It takes inputs (an agent
//!   registers, a status update arrives, a framework calls, the clock ticks)
//!   with the current time and returns actions (send this message, persist
//!   this record). No sockets, threads or wall clock inside; the same code
//!   runs in the server, in the deterministic simulator and in benchmarks.
//! * [`registry`]: the durable store (redb) of agents, frameworks and roles.
//! * [`server`]: the effectful shell: it owns a `Master`, feeds it inputs from
//!   the gRPC streams and a timer, and carries out its actions, persisting
//!   before it acknowledges.
//! * [`api`]: the gRPC services and the HTTP operator API on one address.
//! * [`auth`]: principals with their own (hashed) tokens, Mesos-style
//!   ACLs and the audit log, as pure parts.
//! * [`jobs`]: the history of batch jobs their drivers report (the
//!   running ones and a bounded number of finished ones), for the web UI.
//! * [`services`]: the built-in services scheduler (Marathon-style apps
//!   with health checks, rolling deploys and autoscaling), a framework
//!   inside the manager process, with Marathon's REST API v2.
//! * `sim` (feature `sim`, off by default): the deterministic simulator
//!   used by this crate's tests and benchmarks. The manager's own build
//!   never includes it.
//!
//! The manager never depends on DataFusion: it stays small and fast to build.

#![warn(missing_docs)]

pub mod allocator;
pub mod api;
pub mod auth;
mod inbox;
pub mod jobs;
pub mod master;
pub mod registry;
pub mod server;
pub mod services;
#[cfg(feature = "sim")]
// The simulator is a test harness: an assumption it breaks is a failed
// simulation and stops it with its message, as an assertion in a test does.
#[allow(clippy::expect_used)]
pub mod sim;
