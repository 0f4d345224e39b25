//! One simulated cluster: the real [`Master`] and simulated agents of one
//! shape that run tasks and report them.
//!
//! A task's command says how long it runs and what it uses: `sleep
//! SECONDS` ends by itself (`TASK_FINISHED`) and keeps all its cpus busy;
//! `serve MEAN SWING PHASE` runs until killed and uses the fraction of its
//! cpus [`use_level`] gives; anything else runs until killed using all its
//! cpus. With revocable capacity on, agents report every task's use every
//! usage interval. A launched task
//! reports `TASK_RUNNING` after the start latency. A kill without a grace
//! period (a framework's own kill) ends the task at once; a kill with one
//! (preemption) ends it after the grace (or after the configured victim
//! exit time, if shorter), with the kill's reason. Updates carry uuids; the
//! agents send each once (no faults are injected, so nothing is lost) and
//! ignore acknowledgements.

use std::time::Duration;

use crate::services::core::secs;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap as HashMap;
use strata_proto::ids::{AgentId, FrameworkId, TaskId};
use strata_proto::pb::{self, Reason, Source, TaskState, agent_message, manager_message};
use strata_proto::resources::Resources;

use super::ColoConfig;
use super::workload::use_level;
use crate::master::{Master, MasterConfig, RevocableConfig, Timestamp};
use crate::sim::SimFailure;

/// What happens to a task at a due time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DueKind {
    /// It has started: report `TASK_RUNNING`.
    Run,
    /// Its command exited: report `TASK_FINISHED`.
    Finish,
    /// It died of a kill: report `TASK_KILLED` with this reason.
    Killed(Reason),
}

#[derive(Debug)]
struct Due {
    at: Timestamp,
    seq: u64,
    task: TaskId,
    kind: DueKind,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    Dying,
}

struct AgentTask {
    agent: usize,
    framework: FrameworkId,
    /// Regular and revocable together.
    resources: Resources,
    /// How long it runs once started; `None` until killed.
    run: Option<Duration>,
    /// Its use as (mean, swing, phase) for [`use_level`]; `None`: all its
    /// cpus.
    usage: Option<(f64, f64, f64)>,
    phase: Phase,
}

/// A cluster of identical simulated agents around a real master.
pub(super) struct Cluster {
    /// The master under test.
    pub master: Master,
    agents: Vec<AgentId>,
    agent_by_id: HashMap<AgentId, usize>,
    tasks: HashMap<TaskId, AgentTask>,
    due: BinaryHeap<Reverse<Due>>,
    seq: u64,
    start: Duration,
    victim_exit: Option<Duration>,
    /// What the agents advertise in all.
    pub total: Resources,
    /// What tasks hold now (from launch until their terminal report).
    pub used: Resources,
    seed: u64,
}

impl Cluster {
    /// A master with `agents` agents of the configured shape registered at `now`.
    pub fn new(
        cfg: &ColoConfig,
        agents: usize,
        seed: u64,
        now: Timestamp,
    ) -> Result<Self, SimFailure> {
        let master = Master::new(MasterConfig {
            instance: "colo".into(),
            // No faults are simulated: agents stay registered without heartbeats.
            agent_timeout: Duration::from_secs(1 << 30),
            framework_heartbeat_interval: Duration::from_secs(3_600),
            allocation_interval: Duration::from_millis(cfg.step_ms),
            preemption_grace: Duration::from_millis(cfg.preemption_grace_ms),
            revocable: RevocableConfig {
                enabled: cfg.revocable,
                window: Duration::from_millis(cfg.revocable_window_ms),
                ..RevocableConfig::default()
            },
            ..MasterConfig::default()
        });
        let mut c = Cluster {
            master,
            agents: Vec::with_capacity(agents),
            agent_by_id: HashMap::default(),
            tasks: HashMap::default(),
            due: BinaryHeap::new(),
            seq: 0,
            start: Duration::from_millis(cfg.start_ms),
            victim_exit: cfg.victim_exit_ms.map(Duration::from_millis),
            total: Resources::default(),
            used: Resources::default(),
            seed,
        };
        for i in 0..agents {
            let reg = agent_message::Register {
                protocol_version: strata_proto::PROTOCOL_VERSION,
                agent_id: String::new(),
                info: Some(pb::AgentInfo {
                    hostname: format!("host{i}"),
                    address: format!("10.{}.{}.{}:5051", i / 65_536, (i / 256) % 256, i % 256),
                    resources: cfg.agent.to_proto(false),
                    attributes: vec![],
                }),
                tasks: vec![],
            };
            let id = c
                .master
                .agent_register(now, reg)
                .map_err(|e| c.fail(now, format!("agent registration refused: {e}")))?;
            c.agent_by_id.insert(id.clone(), i);
            c.agents.push(id);
            c.total.add(&cfg.agent);
        }
        Ok(c)
    }

    /// A failure at `now`.
    pub fn fail(&self, now: Timestamp, what: impl Into<String>) -> SimFailure {
        SimFailure {
            seed: self.seed,
            at: now,
            what: what.into(),
        }
    }

    fn schedule(&mut self, at: Timestamp, task: TaskId, kind: DueKind) {
        self.seq += 1;
        self.due.push(Reverse(Due {
            at,
            seq: self.seq,
            task,
            kind,
        }));
    }

    /// Agents report what came due by `now`: tasks started, finished, or
    /// dead of a kill.
    pub fn report_due(&mut self, now: Timestamp) -> Result<(), SimFailure> {
        while self.due.peek().is_some_and(|d| d.0.at <= now) {
            let Reverse(d) = self.due.pop().expect("peeked");
            let Some(t) = self.tasks.get_mut(&d.task) else {
                continue;
            };
            let report = match (d.kind, t.phase) {
                (DueKind::Run, Phase::Starting) => {
                    t.phase = Phase::Running;
                    if let Some(run) = t.run {
                        self.schedule(now + run, d.task.clone(), DueKind::Finish);
                    }
                    Some((TaskState::TaskRunning, Reason::Unspecified))
                }
                (DueKind::Finish, Phase::Running | Phase::Dying) => {
                    Some((TaskState::TaskFinished, Reason::CommandExited))
                }
                (DueKind::Killed(reason), Phase::Dying) => Some((TaskState::TaskKilled, reason)),
                _ => None,
            };
            let Some((state, reason)) = report else {
                continue;
            };
            let t = &self.tasks[&d.task];
            let (agent, framework) = (t.agent, t.framework.clone());
            if state != TaskState::TaskRunning {
                let t = self.tasks.remove(&d.task).expect("present");
                self.used.subtract_saturating(&t.resources);
            }
            self.seq += 1;
            let mut uuid = (agent as u64).to_be_bytes().to_vec();
            uuid.extend_from_slice(&self.seq.to_be_bytes());
            let update = agent_message::StatusUpdate {
                framework_id: framework.to_string(),
                status: Some(pb::TaskStatus {
                    task_id: d.task.to_string(),
                    agent_id: self.agents[agent].to_string(),
                    state: state as i32,
                    reason: reason as i32,
                    source: Source::Agent as i32,
                    uuid,
                    timestamp: now.as_secs_f64(),
                    ..Default::default()
                }),
            };
            let id = self.agents[agent].clone();
            self.master
                .agent_update(now, &id, update)
                .map_err(|e| self.fail(now, format!("update refused: {e}")))?;
        }
        Ok(())
    }

    /// An agent receives a message from the master.
    pub fn receive(&mut self, now: Timestamp, agent: &AgentId, m: pb::ManagerMessage) {
        let Some(&agent) = self.agent_by_id.get(agent) else {
            return;
        };
        match m.message {
            Some(manager_message::Message::RunTask(r)) => {
                let Some(info) = r.task else { return };
                let tid = TaskId::new(info.task_id.clone());
                if self.tasks.contains_key(&tid) {
                    return;
                }
                let resources = Resources::from_proto(&info.resources).unwrap_or_default();
                let command = info.command.as_ref().map_or("", |c| c.value.as_str());
                let run = command
                    .strip_prefix("sleep ")
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .map(secs);
                let usage = command.strip_prefix("serve ").and_then(|s| {
                    let v: Vec<f64> = s
                        .split_whitespace()
                        .map(|x| x.parse().ok())
                        .collect::<Option<_>>()?;
                    match v[..] {
                        [mean, swing, phase] => Some((mean, swing, phase)),
                        _ => None,
                    }
                });
                self.used.add(&resources);
                self.tasks.insert(
                    tid.clone(),
                    AgentTask {
                        agent,
                        framework: FrameworkId::new(r.framework_id),
                        resources,
                        run,
                        usage,
                        phase: Phase::Starting,
                    },
                );
                self.schedule(now + self.start, tid, DueKind::Run);
            }
            Some(manager_message::Message::KillTask(k)) => {
                let tid = TaskId::new(k.task_id);
                let reason = Reason::try_from(k.reason).unwrap_or(Reason::KilledByFramework);
                let exit = match (k.grace_period_seconds, self.victim_exit) {
                    (None, _) => Duration::ZERO,
                    (Some(g), None) => secs(g),
                    (Some(g), Some(v)) => v.min(secs(g)),
                };
                self.kill(now, tid, exit, reason);
            }
            Some(manager_message::Message::ShutdownFramework(s)) => {
                let f = FrameworkId::new(s.framework_id);
                let ids: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.agent == agent && t.framework == f)
                    .map(|(id, _)| id.clone())
                    .collect();
                for tid in ids {
                    self.kill(now, tid, Duration::ZERO, Reason::FrameworkRemoved);
                }
            }
            // Acknowledgements, registration replies and errors change nothing here.
            _ => {}
        }
    }

    /// Every agent reports what its running tasks use now (only agents
    /// running something report).
    pub fn report_usage(&mut self, now: Timestamp) -> Result<(), SimFailure> {
        let mut per_agent: Vec<Vec<pb::TaskUsage>> = vec![Vec::new(); self.agents.len()];
        for (tid, t) in &self.tasks {
            if t.phase != Phase::Running {
                continue;
            }
            let cpus = t.resources.cpus.as_f64();
            let used = match t.usage {
                Some((mean, swing, phase)) => cpus * use_level(mean, swing, phase, now.as_millis()),
                None => cpus,
            };
            per_agent[t.agent].push(pb::TaskUsage {
                framework_id: t.framework.to_string(),
                task_id: tid.to_string(),
                cpus: used,
                mem: t.resources.mem.as_f64(),
            });
        }
        for (i, tasks) in per_agent.into_iter().enumerate() {
            if tasks.is_empty() {
                continue;
            }
            let id = self.agents[i].clone();
            self.master
                .agent_usage(now, &id, agent_message::Usage { tasks })
                .map_err(|e| self.fail(now, format!("usage refused: {e}")))?;
        }
        Ok(())
    }

    fn kill(&mut self, now: Timestamp, tid: TaskId, exit: Duration, reason: Reason) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        if t.phase == Phase::Dying {
            return;
        }
        // A task that has not started yet dies at once.
        let exit = if t.phase == Phase::Starting {
            Duration::ZERO
        } else {
            exit
        };
        t.phase = Phase::Dying;
        self.schedule(now + exit, tid, DueKind::Killed(reason));
    }
}
