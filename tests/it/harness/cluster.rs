//! Starting managers and agents.

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

// ---------------------------------------------------------------- manager and agents

/// How to start a manager. The defaults keep tests fast.
#[derive(Clone, Debug)]
pub struct ManagerSpec {
    /// `--listen`.
    pub listen: String,
    /// `--work-dir` (default `<temp>/manager`).
    pub work_dir: Option<PathBuf>,
    /// `--token`.
    pub token: Option<String>,
    /// `--agent-timeout`.
    pub agent_timeout: String,
    /// `--failover-timeout`.
    pub failover_timeout: Option<String>,
    /// `--allocation-interval`.
    pub allocation_interval: String,
    /// `--preemption-grace`.
    pub preemption_grace: Option<String>,
    /// `--revocable-window`.
    pub revocable_window: Option<String>,
    /// The host it runs on (`None`: this machine's own network).
    pub host: Option<Host>,
    /// More arguments.
    pub extra: Vec<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
}

impl Default for ManagerSpec {
    fn default() -> Self {
        ManagerSpec {
            listen: "127.0.0.1:0".into(),
            work_dir: None,
            token: None,
            agent_timeout: "5s".into(),
            failover_timeout: None,
            allocation_interval: "100ms".into(),
            preemption_grace: None,
            revocable_window: None,
            host: None,
            extra: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running manager.
pub struct Manager {
    /// The process.
    pub proc: Proc,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The port.
    pub port: u16,
    /// Its work dir.
    pub work_dir: PathBuf,
    /// Its token.
    pub token: Option<String>,
}

impl Manager {
    /// Whether it serves its API (it leads; a standby redirects).
    pub async fn leads(&self) -> bool {
        strata_sdk::http::request(
            "GET",
            &self.addr,
            "/api/v1/roles",
            self.token.as_deref(),
            None,
            Duration::from_secs(2),
        )
        .await
        .is_ok_and(|(status, _, _)| status == 200)
    }

    /// `GET /api/v1/state`.
    pub async fn state(&self) -> StateView {
        get_json(&self.addr, "/api/v1/state", self.token.as_deref()).await
    }

    /// Waits until `n` agents are registered; returns them.
    pub async fn wait_registered_agents(&self, n: usize) -> Vec<AgentView> {
        wait_for(&format!("{n} registered agent(s)"), LONG, async || {
            let agents: Vec<AgentView> = self
                .state()
                .await
                .agents
                .into_iter()
                .filter(|a| a.state == "registered")
                .collect();
            (agents.len() == n).then_some(agents)
        })
        .await
    }

    /// The active task `id` in the state, if any.
    pub async fn task(&self, id: &str) -> Option<TaskView> {
        self.state().await.tasks.into_iter().find(|t| t.id == id)
    }
}

/// How to start an agent ([`Env::start_agent_with`]).
#[derive(Clone, Debug)]
pub struct AgentSpec {
    /// `--listen`.
    pub listen: String,
    /// `--advertise`.
    pub advertise: Option<String>,
    /// `--token`.
    pub token: Option<String>,
    /// `--resources` before the ports (default [`AGENT_RESOURCES`]); with
    /// `ports:` in it, the ports too.
    pub resources: Option<String>,
    /// The host it runs on (`None`: this machine's own network).
    pub host: Option<Host>,
}

impl Default for AgentSpec {
    fn default() -> Self {
        AgentSpec {
            listen: "127.0.0.1:0".into(),
            advertise: None,
            token: None,
            resources: None,
            host: None,
        }
    }
}

/// A running agent.
pub struct Agent {
    /// The process.
    pub proc: Proc,
    /// Its HTTP address.
    pub addr: String,
    /// Its work dir.
    pub work_dir: PathBuf,
    /// Its token.
    pub token: Option<String>,
}

impl Agent {
    /// `GET /v1/tasks`.
    pub async fn tasks(&self) -> Vec<serde_json::Value> {
        get_json(&self.addr, "/v1/tasks", self.token.as_deref()).await
    }

    /// Waits until the agent reports a pid for the task; returns it.
    pub async fn task_pid(&self, task_id: &str) -> i32 {
        wait_for(&format!("the pid of task {task_id}"), LONG, async || {
            self.tasks()
                .await
                .iter()
                .find(|t| t["task_id"] == task_id)
                .and_then(|t| t["pid"].as_i64())
                .map(|p| p as i32)
        })
        .await
    }
}
