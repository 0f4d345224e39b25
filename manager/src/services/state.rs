//! The services scheduler's records: apps, their instances and
//! deployments, and the snapshot that survives a manager restart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_proto::ids::{AgentId, TaskId};
use strata_proto::pb::TaskState;

use super::app::{AppDefinition, AppId};
use super::autoscale::Policy;
use super::core::Timestamp;

/// What a deployment does (Marathon's action names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// A new app.
    StartApplication,
    /// A new instance count.
    ScaleApplication,
    /// A new configuration (or a restart): instances replaced.
    RestartApplication,
    /// The app deleted.
    StopApplication,
}

/// One deployment: an app moving to a version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Its id.
    pub id: String,
    /// The app.
    pub app: AppId,
    /// The version being deployed.
    pub version: String,
    /// What it does.
    pub action: Action,
}

/// One instance (a task) of an app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The task id.
    pub task_id: TaskId,
    /// The app configuration it runs.
    pub config_version: String,
    /// Its agent.
    pub agent_id: AgentId,
    /// The agent's host name.
    pub host: String,
    /// The address probes connect to (the agent's IP).
    #[serde(default)]
    pub ip: String,
    /// Its host ports.
    pub ports: Vec<u16>,
    /// Its last state.
    #[serde(with = "state_name")]
    pub state: TaskState,
    /// When it was launched.
    pub staged_at: Timestamp,
    /// When it first ran.
    pub started_at: Option<Timestamp>,
    /// The last health verdict (`None`: unknown, or no checks).
    pub healthy: Option<bool>,
    /// Whether it ever passed its checks.
    pub ever_healthy: bool,
    /// Failed checks in a row.
    pub failures: u32,
    /// The last check's message.
    pub last_check: Option<String>,
    /// Whether it is being killed.
    pub killing: bool,
    /// Since when its agent is unreachable (it is kept for the app's
    /// `unreachableStrategy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<Timestamp>,
}

mod state_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use strata_proto::pb::TaskState;

    pub fn serialize<S: Serializer>(s: &TaskState, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.as_str_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<TaskState, D::Error> {
        let s = String::deserialize(de)?;
        TaskState::from_str_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown task state {s}")))
    }
}

/// The last unexpected end of an app's instance (Marathon's
/// `lastTaskFailure`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The task.
    pub task_id: TaskId,
    /// Its final state.
    pub state: String,
    /// Why.
    pub message: String,
    /// When.
    pub at: Timestamp,
}

/// A change of an app's instance count by the autoscaler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    /// When.
    pub at: Timestamp,
    /// Instances before.
    pub from: u32,
    /// Instances after.
    pub to: u32,
    /// The mean of the samples it decided on.
    pub mean: f64,
}

/// One app and what runs for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// The definition (with its `version`).
    pub def: AppDefinition,
    /// The version of the last change that replaces instances.
    pub config_version: String,
    /// Its instances, by task id.
    pub instances: BTreeMap<TaskId, Instance>,
    /// The deployment holding it.
    pub deployment: Option<String>,
    /// Being deleted.
    pub deleting: bool,
    /// Unexpected ends since the last healthy run.
    pub failures: u32,
    /// No launches before this time (restart backoff).
    pub delay_until: Timestamp,
    /// The last unexpected end.
    pub last_failure: Option<Failure>,
    /// The autoscaler wants fewer instances since this time.
    #[serde(default)]
    pub scale_down_since: Option<Timestamp>,
    /// The autoscaler's last change of its instance count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scaling: Option<Scaling>,
}

impl App {
    pub(super) fn live(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values().filter(|i| !i.killing)
    }

    /// The live instances that hold their place at `now`: all but those
    /// unreachable for longer than the app's `inactiveAfterSeconds`.
    pub(super) fn placed(&self, now: Timestamp) -> impl Iterator<Item = &Instance> {
        let keep = super::core::secs(self.def.unreachable_strategy.inactive_after_seconds);
        self.live()
            .filter(move |i| i.unreachable_since.is_none_or(|since| now < since + keep))
    }

    /// Whether an instance counts as healthy.
    pub fn is_healthy(&self, i: &Instance) -> bool {
        i.state == TaskState::TaskRunning
            && (self.def.health_checks.is_empty() || i.healthy == Some(true))
    }

    /// The autoscaling policy of the app, if it has one.
    pub fn policy(&self) -> Option<Policy> {
        Policy::from_labels(&self.def.labels).ok().flatten()
    }
}

/// What survives a manager restart.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The apps with their instances.
    pub apps: Vec<App>,
    /// Open deployments.
    pub deployments: Vec<Deployment>,
    /// The id counter.
    pub seq: u64,
    /// The time of the latest version given out (versions never repeat).
    #[serde(default)]
    pub last_version: Timestamp,
}
