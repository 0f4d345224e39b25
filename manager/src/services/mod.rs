//! The built-in services scheduler: Marathon-style long-running apps.
//!
//! It runs inside the manager process as a framework like any other: it
//! subscribes to the manager (over its own address), declares demand for
//! the instances its apps want at each app's priority class (`service`
//! unless the app's `strata.class` label says otherwise), launches them on
//! the offers it gets, and keeps them up: failed instances are restarted
//! with backoff, instances failing their health checks are killed and
//! replaced, instances on lost agents are started elsewhere. When nothing
//! free fits, the manager preempts lower classes for its demand.
//!
//! * `app.rs`: Marathon's app definition, defaults and validation.
//! * `plan.rs`: the pure per-app decision (kills and launches) behind
//!   creation, scaling, restarts, rolling updates and deletion.
//! * `core.rs`: the sans-IO state machine (apps, instances, deployments,
//!   backoff, health verdicts, autoscaling).
//! * `state.rs`: the records (apps, instances, deployments, snapshot).
//! * `launch.rs`: an instance's task from an app and an offer.
//! * `autoscale.rs`: the autoscaling policy from `strata.autoscale.*`.
//! * `probe.rs`: health checks and metric samples.
//! * `routes.rs`: the route table (healthy instances, service ports) that
//!   the manager's DNS and the agents' service port forwarding follow.
//! * `dns.rs`: the manager's DNS for apps (A and SRV records).
//! * `runner.rs`: the effectful shell (SDK subscription, state saved).
//! * `store.rs`: where the state is saved (a file, or the cluster's store).
//! * `http.rs`, `view.rs`, `error.rs`: Marathon's REST API v2.

pub mod app;
pub mod autoscale;
pub mod core;
pub mod dns;
pub mod error;
pub(crate) mod http;
pub mod launch;
pub mod plan;
pub mod probe;
pub mod routes;
pub mod runner;
pub mod state;
pub mod store;
pub mod strategy;
pub mod view;

pub use app::{AppDefinition, AppId};
pub use error::ServiceError;
pub use runner::{RunnerConfig, ServicesHandle};

#[cfg(test)]
mod tests;
