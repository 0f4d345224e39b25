//! A small HTTP client for the tests.

#![allow(dead_code, unused_imports)]

use super::*;
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

// ---------------------------------------------------------------- HTTP

/// GET or PUT; returns the status and body (panics if nobody answers).
pub async fn http(
    method: &str,
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Vec<u8>) {
    let (status, _, body) =
        strata_sdk::http::request(method, addr, path, token, body, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"));
    (status, body)
}

/// GET that must answer 200 with JSON.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    addr: &str,
    path: &str,
    token: Option<&str>,
) -> T {
    let (status, body) = http("GET", addr, path, token, None).await;
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "GET {path}: bad JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}
