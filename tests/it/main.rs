//! End-to-end tests: real `strata` processes on 127.0.0.1 with ephemeral
//! ports (or on hosts of their own, network namespaces with their own
//! addresses), each test with its own `STRATA_HOME`.
//!
//! * [`gateway`]: `strata gateway` on a real cluster with real PostgreSQL
//!   clients: psql (its `\d` catalog queries, the 22 TPC-H queries against
//!   DataFusion; Ctrl-C), psycopg (types, bound parameters, SQLSTATEs,
//!   SCRAM), pgJDBC, SQLAlchemy with pandas and asyncpg; `strata gateway queries`
//!   and its cancel; the warehouse's catalog across a `kill -9`; the
//!   gateway as a service app, replaced after it dies;
//! * `ha` (feature `etcd`): managers sharing a registry in a real etcd:
//!   election, standbys redirecting to the leader, failover after `kill -9`
//!   and a graceful resignation;
//! * [`harness`]: temp dirs, child processes, polling, HTTP, signals, SDK
//!   and raw gRPC frameworks, cleanup;
//! * [`batch`]: the batch engine on a real cluster: TPC-H against
//!   single-process DataFusion, an executor killed mid-query, `strata sql`;
//! * [`cli`]: `strata run`, `strata local` + discovery + `strata status`,
//!   the shared token;
//! * [`copy_to`]: `COPY (query) TO 'dir'` through the gateway: Hive-style
//!   partitioned Parquet and CSV written by tasks and committed at once
//!   (`_SUCCESS` manifest), a failed COPY leaving nothing, pyarrow reading;
//! * [`cluster`]: launching and killing tasks, an agent killed with `-9` and
//!   restarted, malformed scheduler requests;
//! * [`drain`]: an agent drained for maintenance (its service moved within
//!   the healthy minimum, its batch task killed at the deadline), undrained;
//! * [`failover`]: a manager restart, framework failover within and after
//!   its timeout.
//! * `faults` (feature `etcd`, ignored: minutes): the fault suite's long
//!   loop, twenty faults on nine hosts under a service, a task stream and
//!   TPC-H, checking nothing is lost or run twice;
//! * [`hosts`]: a manager, agents and a client each on a host of its own
//!   (network namespaces): tasks, executors and shuffles across hosts; a
//!   leader cut off from etcd's host, an agent cut off and healed;
//! * [`jobs`]: `strata submit`, `strata jobs`, cancellation, a killed and a
//!   supervised driver;
//! * [`mesos_api`]: a pymesos framework over the Mesos v1 scheduler API:
//!   launch, reconcile, suppress/revive, failover to a new process, kill,
//!   teardown;
//! * [`limits`]: a query over the gateway's per-query memory limit fails
//!   with 53200, a session's raised limit runs it;
//! * [`revocable`]: a service's idle cpus lent to batch and revoked when
//!   it gets busy; a service autoscaled on the cpu its agent measures;
//! * [`tables`]: the warehouse's managed (Delta Lake) tables through the
//!   gateway: written by tasks at once, a failed write leaving nothing,
//!   kept across a killed gateway, read by Python's `deltalake`;
//! * [`s3`]: `s3://` tables on a real S3-compatible server, read by
//!   executors on the cluster;
//! * [`services`]: the built-in services scheduler through Marathon's
//!   `/v2` API (deploy, scale, health checks, restarts, rolling update,
//!   delete) and a service preempting batch tasks;
//! * [`ui`]: the manager's web UI in headless chromium (Selenium): each
//!   page against the API, a job followed to an executor's stderr;
//! * [`slt`]: the sqllogictest files of `tests/slt` on a real cluster (and
//!   on single-process DataFusion, the reference).

// The whole binary is tests: helpers unwrap as tests do, and a panic is
// the failure report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

pub(crate) mod batch;
mod cli;
mod cluster;
mod copy_to;
mod drain;
mod failover;
#[cfg(feature = "etcd")]
mod faults;
mod gateway;
#[cfg(feature = "etcd")]
mod ha;
mod harness;
mod hosts;
mod jobs;
mod limits;
mod mesos_api;
mod partitioned;
mod revocable;
mod s3;
mod services;
mod slt;
mod sql_shell;
mod streaming;
mod tables;
mod ui;
