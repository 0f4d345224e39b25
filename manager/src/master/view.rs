//! Read-only views of the master's state, for the HTTP API, `strata status`
//! and metrics. Plain serde types: the JSON shapes of the operator API.

use serde::{Deserialize, Serialize};

use super::{AgentState, Master, Timestamp};
use crate::allocator::{AgentIdx, drf};

/// The manager that leads, as the state API shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaderView {
    /// Its instance (`m{epoch}`), the prefix of the ids it issues.
    pub id: String,
    /// Its epoch: the registry's term, or the election's revision in etcd.
    pub epoch: u64,
    /// Where clients reach it.
    pub address: String,
    /// When it began leading (milliseconds since the Unix epoch).
    pub since: Timestamp,
}

/// An agent as the state API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentView {
    /// Id.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// HTTP address.
    pub address: String,
    /// `registered`, `disconnected`, `unreachable` or `recovered`.
    pub state: String,
    /// Advertised resources.
    pub total: String,
    /// Allocated (tasks and offers).
    pub allocated: String,
    /// Free.
    pub free: String,
    /// Total cpus.
    pub cpus: f64,
    /// Total mem (MiB).
    pub mem: f64,
    /// Allocated cpus.
    pub cpus_allocated: f64,
    /// Allocated mem (MiB).
    pub mem_allocated: f64,
    /// Attributes.
    pub attributes: Vec<(String, String)>,
    /// Active tasks.
    pub tasks: usize,
    /// Idle cpus its tasks lend as revocable (measured by the agent).
    #[serde(default)]
    pub cpus_lent: f64,
    /// Revocable cpus borrowed by tasks and offers.
    #[serde(default)]
    pub cpus_revocable_allocated: f64,
    /// `draining` (tasks remain) or `drained`; absent when not drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<String>,
    /// When what is left on a draining agent is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline: Option<Timestamp>,
}

/// A framework as the state API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrameworkView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Connected now.
    pub connected: bool,
    /// Removed (teardown or failover timeout).
    pub removed: bool,
    /// Suppressed.
    pub suppressed: bool,
    /// Dominant share of the cluster it holds.
    pub share: f64,
    /// Allocated resources.
    pub allocated: String,
    /// Active tasks.
    pub tasks: usize,
    /// Outstanding offers.
    pub offers: usize,
    /// Pending demand: tasks not yet placed.
    pub pending_tasks: u64,
    /// Failover timeout in seconds.
    pub failover_timeout_seconds: f64,
    /// The principal that subscribed it (empty: the cluster's token).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub principal: String,
}

/// A role as the state API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoleView {
    /// Name.
    pub name: String,
    /// Weight.
    pub weight: f64,
    /// Weighted dominant share.
    pub share: f64,
    /// Allocated resources.
    pub allocated: String,
    /// Quota limit.
    pub quota: Option<String>,
    /// Frameworks in the role.
    pub frameworks: usize,
}

/// A task as the state API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Framework.
    pub framework_id: String,
    /// Agent.
    pub agent_id: String,
    /// Latest state, e.g. `TASK_RUNNING`.
    pub state: String,
    /// Reason of the latest state.
    pub reason: String,
    /// Priority class.
    pub class: String,
    /// Resources.
    pub resources: String,
    /// Exit code once exited.
    pub exit_code: Option<i32>,
    /// Latest message.
    pub message: String,
    /// Revocable cpus it runs on.
    #[serde(default)]
    pub revocable_cpus: f64,
    /// Cpus it used over the agent's last sampling interval.
    #[serde(default)]
    pub cpus_used: Option<f64>,
    /// Resident memory at the last sample (MiB).
    #[serde(default)]
    pub mem_used: Option<f64>,
}

/// A task taken back: preempted for a higher class, or revoked because
/// the cpus it borrowed were needed by their lenders.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TakebackView {
    /// When.
    pub at: Timestamp,
    /// `preempted` or `revoked`.
    pub kind: String,
    /// The task.
    pub task_id: String,
    /// Its framework.
    pub framework_id: String,
    /// Its agent.
    pub agent_id: String,
    /// Its priority class.
    pub class: String,
    /// The framework whose ask it made room for (a preemption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// How many takebacks the state keeps.
pub const TAKEBACKS_KEPT: usize = 200;

/// The whole state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateView {
    /// The manager that answered (the leader, with several).
    #[serde(default)]
    pub leader: LeaderView,
    /// Agents.
    pub agents: Vec<AgentView>,
    /// Frameworks (not removed).
    pub frameworks: Vec<FrameworkView>,
    /// Roles.
    pub roles: Vec<RoleView>,
    /// Active tasks and tasks awaiting acknowledgement.
    pub tasks: Vec<TaskView>,
    /// Recently finished tasks.
    pub completed_tasks: Vec<TaskView>,
    /// Priority classes, highest first.
    pub classes: Vec<(String, i32)>,
    /// Outstanding offers.
    pub outstanding_offers: usize,
    /// The latest preemptions and revocations, newest first.
    #[serde(default)]
    pub takebacks: Vec<TakebackView>,
}

impl Master {
    /// Notes a task taken back (for the state's `takebacks`).
    pub(super) fn note_takeback(
        &mut self,
        now: Timestamp,
        kind: &str,
        key: &super::TaskKey,
        by: Option<String>,
    ) {
        let Some(t) = self.tasks.get(key) else {
            return;
        };
        let v = TakebackView {
            at: now,
            kind: kind.to_owned(),
            task_id: key.1.to_string(),
            framework_id: self.frameworks[t.framework as usize].id.to_string(),
            agent_id: self.agents[t.agent as usize].id.to_string(),
            class: self.cfg.classes.get(t.class).name.clone(),
            by,
        };
        if self.takebacks.len() >= TAKEBACKS_KEPT {
            self.takebacks.pop_front();
        }
        self.takebacks.push_back(v);
    }

    /// The frameworks not removed (what the web UI's job pages need,
    /// without the whole state).
    pub fn framework_views(&self) -> Vec<FrameworkView> {
        self.frameworks
            .iter()
            .zip(&self.alloc_fws)
            .filter(|(f, _)| !f.removed)
            .map(|(f, a)| FrameworkView {
                id: f.id.to_string(),
                name: f.record.name.clone(),
                role: f.record.role.to_string(),
                connected: f.connected,
                removed: f.removed,
                suppressed: a.suppressed,
                share: drf::weighted_share(&a.allocated, &self.cluster_total, 1.0),
                allocated: a.allocated.to_string(),
                tasks: f.tasks.len(),
                offers: f.offers.len(),
                pending_tasks: a.demand.iter().map(|d| d.count as u64).sum(),
                failover_timeout_seconds: f.failover_timeout.as_secs_f64(),
                principal: f.record.principal.clone(),
            })
            .collect()
    }

    /// A snapshot of the whole state.
    pub fn state_view(&self, now: Timestamp) -> StateView {
        let agents = self
            .agents
            .iter()
            .zip(&self.alloc_agents)
            .enumerate()
            .map(|(idx, (e, a))| AgentView {
                id: e.id.to_string(),
                hostname: a.hostname.clone(),
                address: e.address.clone(),
                state: match e.state {
                    AgentState::Registered => "registered",
                    AgentState::Disconnected => "disconnected",
                    AgentState::Unreachable => "unreachable",
                    AgentState::Recovered => "recovered",
                }
                .into(),
                total: a.total.to_string(),
                allocated: a.allocated.to_string(),
                free: a.free().to_string(),
                cpus: a.total.cpus.as_f64(),
                mem: a.total.mem.as_f64(),
                cpus_allocated: a.allocated.cpus.as_f64(),
                mem_allocated: a.allocated.mem.as_f64(),
                attributes: a.attributes.clone(),
                tasks: e
                    .tasks
                    .iter()
                    .filter(|k| self.tasks.get(*k).is_some_and(|t| !t.released))
                    .count(),
                cpus_lent: a.lent.iter().map(|(_, c)| c.as_f64()).sum(),
                cpus_revocable_allocated: a.revocable_allocated.as_f64(),
                drain: self
                    .drain_state(idx as AgentIdx)
                    .map(|d| d.as_str().to_owned()),
                drain_deadline: e.drain.map(|d| d.deadline),
            })
            .collect();
        let frameworks = self.framework_views();
        let roles = self
            .roles
            .iter()
            .zip(&self.alloc_roles)
            .enumerate()
            .map(|(i, (r, a))| RoleView {
                name: r.name.to_string(),
                weight: a.weight,
                share: drf::weighted_share(&a.allocated, &self.cluster_total, a.weight),
                allocated: a.allocated.to_string(),
                quota: a.quota_limit.as_ref().map(|q| q.to_string()),
                frameworks: self
                    .alloc_fws
                    .iter()
                    .zip(&self.frameworks)
                    .filter(|(fa, f)| fa.role as usize == i && !f.removed)
                    .count(),
            })
            .collect();
        let mut tasks: Vec<TaskView> = self
            .tasks
            .iter()
            .map(|(k, t)| self.task_view(k, t, now))
            .collect();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        StateView {
            leader: LeaderView {
                id: self.cfg.instance.clone(),
                epoch: self.cfg.epoch,
                address: self.cfg.address.clone(),
                since: self.since,
            },
            agents,
            frameworks,
            roles,
            tasks,
            completed_tasks: self.completed.iter().cloned().collect(),
            classes: self
                .cfg
                .classes
                .iter()
                .map(|c| {
                    let pc = self.cfg.classes.get(c);
                    (pc.name.clone(), pc.value)
                })
                .collect(),
            outstanding_offers: self.offers.len(),
            takebacks: self.takebacks.iter().rev().cloned().collect(),
        }
    }

    /// Figures for the Prometheus endpoint: (name, help, value).
    pub fn gauges(&self) -> Vec<(&'static str, &'static str, f64)> {
        let count = |s: AgentState| self.agents.iter().filter(|a| a.state == s).count() as f64;
        let active_tasks = self.tasks.values().filter(|t| !t.released).count() as f64;
        let c = &self.counters;
        vec![
            (
                "strata_agents_registered",
                "agents registered and connected",
                count(AgentState::Registered),
            ),
            (
                "strata_agents_disconnected",
                "agents whose link dropped",
                count(AgentState::Disconnected),
            ),
            (
                "strata_agents_unreachable",
                "agents silent past the timeout",
                count(AgentState::Unreachable),
            ),
            (
                "strata_frameworks_connected",
                "frameworks connected",
                self.frameworks.iter().filter(|f| f.connected).count() as f64,
            ),
            (
                "strata_tasks_active",
                "tasks holding resources",
                active_tasks,
            ),
            (
                "strata_offers_outstanding",
                "offers not yet answered",
                self.offers.len() as f64,
            ),
            (
                "strata_cluster_cpus_total",
                "cpus of registered agents",
                self.cluster_total.cpus.as_f64(),
            ),
            (
                "strata_cluster_mem_total_mib",
                "mem of registered agents",
                self.cluster_total.mem.as_f64(),
            ),
            (
                "strata_allocation_cycles_total",
                "allocation cycles run",
                c.allocation_cycles as f64,
            ),
            (
                "strata_placements_total",
                "asks placed by the allocator",
                c.placements as f64,
            ),
            (
                "strata_offers_made_total",
                "offers made",
                c.offers_made as f64,
            ),
            (
                "strata_offers_declined_total",
                "offers declined",
                c.offers_declined as f64,
            ),
            (
                "strata_offers_rescinded_total",
                "offers rescinded",
                c.offers_rescinded as f64,
            ),
            (
                "strata_tasks_launched_total",
                "tasks launched",
                c.tasks_launched as f64,
            ),
            (
                "strata_tasks_refused_total",
                "launches refused",
                c.tasks_refused as f64,
            ),
            (
                "strata_tasks_terminal_total",
                "tasks that reached a terminal state",
                c.tasks_terminal as f64,
            ),
            (
                "strata_status_updates_total",
                "status updates from agents",
                c.status_updates as f64,
            ),
        ]
    }
}

impl Master {
    /// A framework's dominant share, or `None` if it is unknown or removed.
    pub fn framework_share(&self, id: &strata_proto::ids::FrameworkId) -> Option<f64> {
        let &i = self.fw_index.get(id)?;
        if self.frameworks[i as usize].removed {
            return None;
        }
        Some(drf::weighted_share(
            &self.alloc_fws[i as usize].allocated,
            &self.cluster_total,
            1.0,
        ))
    }

    /// Tasks of a framework's demand not yet placed.
    pub fn pending_tasks(&self, id: &strata_proto::ids::FrameworkId) -> u64 {
        self.fw_index
            .get(id)
            .map(|&i| {
                self.alloc_fws[i as usize]
                    .demand
                    .iter()
                    .map(|d| d.count as u64)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The sum of registered agents' resources.
    pub fn cluster_total(&self) -> strata_proto::resources::Resources {
        self.cluster_total.clone()
    }

    /// An agent's unallocated resources.
    pub fn agent_free(
        &self,
        id: &strata_proto::ids::AgentId,
    ) -> Option<strata_proto::resources::Resources> {
        self.agent_index
            .get(id)
            .map(|&i| self.alloc_agents[i as usize].free())
    }

    /// Whether a framework filters an agent at `now`.
    pub fn filters(
        &self,
        fw: &strata_proto::ids::FrameworkId,
        agent: &strata_proto::ids::AgentId,
        now: Timestamp,
    ) -> bool {
        match (self.fw_index.get(fw), self.agent_index.get(agent)) {
            (Some(&f), Some(&a)) => self.alloc_fws[f as usize].filters_agent(a, now),
            _ => false,
        }
    }
}
