//! The test harness: a temp dir per test (its `STRATA_HOME`), real `strata`
//! child processes with their output captured, polling with deadlines, a
//! small HTTP client, signals, an SDK framework wrapper that records its
//! events, a raw gRPC scheduler for malformed requests, and cleanup that
//! leaves no process behind.
//!
//! Rules the tests follow: never sleep to wait for a condition (poll it with
//! a deadline: [`wait_until`], [`wait_for`], [`Proc::wait_stderr`],
//! [`Fw::expect`]); every process a test starts lives under its [`Env`]'s
//! temp dir, so dropping the `Env` can find and kill whatever is left
//! (managers, agents, task supervisors and the tasks themselves).

#![allow(dead_code, unused_imports)]

mod cluster;
mod disk;
mod env;
#[cfg(feature = "etcd")]
mod etcd;
mod hosts;
mod http;
mod raw;
mod sdk;

pub use cluster::*;
pub use disk::*;
pub use env::*;
#[cfg(feature = "etcd")]
pub use etcd::*;
pub use hosts::*;
pub use http::*;
pub use raw::*;
pub use sdk::*;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_manager::master::view::{AgentView, StateView, TaskView};
use strata_proto::pb;
use strata_sdk::{
    Event, EventStream, Filters, FrameworkConfig, FrameworkId, Offer, Resources, Scheduler,
    SchedulerConfig, SchedulerHandle, TaskInfo, TaskState, TaskStatus,
};
use tokio::sync::mpsc;

/// The binary under test.
pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// What each test agent advertises unless told otherwise.
pub const AGENT_RESOURCES: &str = "cpus:2;mem:1024;disk:100";

/// A block of 100 host ports for one agent, distinct from other agents'
/// (tests run in parallel processes, and services bind their ports): a
/// block below the ephemeral range whose ports are free now and that no
/// other test process holds. A block is held by an exclusive lock on a file
/// under the temporary directory for the rest of this process's life (the
/// kernel drops the lock when the process exits, however it exits), so two
/// concurrent tests never hand out the same block even while one's agent
/// has not bound its ports yet.
pub fn agent_ports() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("strata-it-port-blocks");
    std::fs::create_dir_all(&dir).expect("port block lock directory");
    let salt = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..2_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let block = salt.wrapping_add(n.wrapping_mul(97)) % 200;
        let first = 11_000 + block * 100;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{first}.lock")))
            .expect("port block lock file");
        if lock.try_lock().is_err() {
            continue;
        }
        // 0.0.0.0 conflicts with a listener on any address (docker-proxy
        // binds the wildcard, agents and tasks bind loopback).
        let free = (first..first + 100)
            .all(|p| std::net::TcpListener::bind(("0.0.0.0", p as u16)).is_ok());
        if free {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return format!("ports:[{first}-{}]", first + 99);
        }
    }
    panic!("no free block of 100 host ports in 11000-30999")
}

/// The generous deadline for anything that should happen "soon".
pub const LONG: Duration = Duration::from_secs(30);

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(25);

/// Lines a process wrote, shared with the thread that reads them.
pub type Log = Arc<Mutex<String>>;

fn text(log: &Log) -> String {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

// ---------------------------------------------------------------- polling

/// Polls `cond` until it holds; panics after `timeout` naming `what`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    wait_for(what, timeout, async || cond().await.then_some(())).await
}

/// Polls `f` until it returns `Some`; panics after `timeout` naming `what`.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    wait_explained(what, timeout, async || f().await.ok_or_else(String::new)).await
}

/// Polls `f` until it returns `Ok`; panics after `timeout` naming `what`
/// and saying what the last `Err` said.
pub async fn wait_explained<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut poll = tokio::time::interval(POLL);
    loop {
        poll.tick().await;
        let last = match f().await {
            Ok(v) => return v,
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}{}",
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            );
        }
    }
}
