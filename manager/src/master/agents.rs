//! Agents: registration, re-registration with task reconciliation,
//! heartbeats, disconnection and the unreachable timeout.

use rustc_hash::FxHashSet as HashSet;
use strata_proto::ids::{AgentId, FrameworkId, TaskId};
use strata_proto::pb::{self, Reason, TaskState, manager_message};
use strata_proto::resources::Resources;
use tracing::{info, warn};

use super::{
    Action, AgentEntry, AgentRecord, AgentState, Master, MasterError, PersistOp, Task, Timestamp,
    validate_id,
};
use crate::allocator::{AgentAlloc, AgentIdx};

impl Master {
    pub(super) fn insert_agent(
        &mut self,
        rec: AgentRecord,
        state: AgentState,
        now: Timestamp,
    ) -> AgentIdx {
        let idx = self.agents.len() as AgentIdx;
        self.agent_index.insert(rec.id.clone(), idx);
        self.agents.push(AgentEntry {
            id: rec.id,
            address: rec.address,
            drain: rec.drain,
            drain_killed: false,
            state,
            last_seen: now,
            registered_at: now,
            tasks: HashSet::default(),
            offers: HashSet::default(),
        });
        self.alloc_agents.push(AgentAlloc {
            active: false,
            hostname: rec.hostname,
            attributes: rec.attributes,
            total: rec.resources,
            allocated: Resources::default(),
            lent: Vec::new(),
            revocable_allocated: Default::default(),
        });
        if state == AgentState::Registered && rec.drain.is_none() {
            self.set_agent_active(idx, true);
        }
        idx
    }

    /// Marks an agent as offerable or not, keeping the cluster total (the DRF
    /// denominator) as the sum of offerable agents.
    pub(super) fn set_agent_active(&mut self, idx: AgentIdx, active: bool) {
        let a = &mut self.alloc_agents[idx as usize];
        if a.active == active {
            return;
        }
        a.active = active;
        if active {
            self.cluster_total.add(&a.total);
        } else {
            self.cluster_total.subtract_saturating(&a.total);
            // Ports do not count in shares; keep the total's ports empty.
            self.cluster_total.ports = Default::default();
        }
        self.dirty = true;
    }

    /// An agent (re-)registers. Returns its id; the caller binds the agent's
    /// link to it before carrying out the actions.
    pub fn agent_register(
        &mut self,
        now: Timestamp,
        reg: pb::agent_message::Register,
    ) -> Result<AgentId, MasterError> {
        if strata_proto::negotiate(reg.protocol_version).is_none() {
            return Err(MasterError::ProtocolVersion {
                ours: strata_proto::PROTOCOL_VERSION,
                theirs: reg.protocol_version,
            });
        }
        let info = reg
            .info
            .ok_or(MasterError::MissingField { field: "info" })?;
        let resources = Resources::from_proto(&info.resources)?;
        let attributes: Vec<(String, String)> = info
            .attributes
            .into_iter()
            .map(|a| (a.name, a.value))
            .collect();
        let id = if reg.agent_id.is_empty() {
            AgentId::new(self.next_id("agent"))
        } else {
            validate_id("agent", &reg.agent_id)?;
            AgentId::new(reg.agent_id)
        };
        let record = AgentRecord {
            id: id.clone(),
            hostname: info.hostname,
            address: info.address,
            resources,
            attributes,
            drain: None,
        };
        let idx = match self.agent_index.get(&id).copied() {
            None => {
                info!(agent_id = %id, hostname = %record.hostname, resources = %record.resources, "agent registered");
                self.outbox
                    .push(Action::Persist(PersistOp::PutAgent(record.clone())));
                self.insert_agent(record, AgentState::Registered, now)
            }
            Some(idx) => {
                info!(agent_id = %id, "agent re-registered");
                let mut record = record;
                record.drain = self.agents[idx as usize].drain;
                self.rescind_agent_offers(idx);
                self.set_agent_active(idx, false);
                let changed = {
                    let a = &self.alloc_agents[idx as usize];
                    a.total != record.resources
                        || a.hostname != record.hostname
                        || a.attributes != record.attributes
                        || self.agents[idx as usize].address != record.address
                };
                if changed {
                    self.outbox
                        .push(Action::Persist(PersistOp::PutAgent(record.clone())));
                }
                let a = &mut self.alloc_agents[idx as usize];
                a.total = record.resources;
                a.hostname = record.hostname;
                a.attributes = record.attributes;
                let e = &mut self.agents[idx as usize];
                e.address = record.address;
                e.state = AgentState::Registered;
                e.last_seen = now;
                e.registered_at = now;
                // A drained agent stays drained when it comes back.
                let offerable = e.drain.is_none();
                self.set_agent_active(idx, offerable);
                idx
            }
        };
        self.agents[idx as usize].last_seen = now;
        self.outbox.push(Action::ToAgent {
            agent: id.clone(),
            message: pb::ManagerMessage {
                message: Some(manager_message::Message::Registered(
                    manager_message::Registered {
                        agent_id: id.to_string(),
                        heartbeat_interval_seconds: self.cfg.agent_heartbeat_interval.as_secs_f64(),
                        epoch: self.cfg.epoch,
                    },
                )),
            },
        });
        self.reconcile_agent_tasks(now, idx, reg.tasks);
        self.fit_agent_tasks(idx);
        self.dirty = true;
        Ok(id)
    }

    /// Reconciles the tasks an agent reports with what the master knows.
    fn reconcile_agent_tasks(
        &mut self,
        now: Timestamp,
        idx: AgentIdx,
        reported: Vec<pb::AgentTask>,
    ) {
        let agent_id = self.agents[idx as usize].id.clone();
        let mut seen: HashSet<(u32, TaskId)> = HashSet::default();
        let mut shutdown: HashSet<FrameworkId> = HashSet::default();
        for at in reported {
            let Some(task) = at.task else { continue };
            let fid = FrameworkId::new(at.framework_id);
            let state = TaskState::try_from(at.state).unwrap_or(TaskState::TaskUnknown);
            let fw = match self.fw_index.get(&fid).copied() {
                Some(f) if !self.frameworks[f as usize].removed => f,
                _ => {
                    if !state.is_terminal() && shutdown.insert(fid.clone()) {
                        info!(agent_id = %agent_id, framework_id = %fid, "shutting down tasks of an unknown framework");
                        self.outbox.push(Action::ToAgent {
                            agent: agent_id.clone(),
                            message: pb::ManagerMessage {
                                message: Some(manager_message::Message::ShutdownFramework(
                                    manager_message::ShutdownFramework {
                                        framework_id: fid.to_string(),
                                    },
                                )),
                            },
                        });
                    }
                    continue;
                }
            };
            let tid = TaskId::new(task.task_id.clone());
            let key = (fw, tid.clone());
            seen.insert(key.clone());
            if let Some(t) = self.tasks.get_mut(&key) {
                if t.agent != idx {
                    warn!(task_id = %tid, "task reported by a second agent; ignored");
                    continue;
                }
                let was = t.status.state();
                let kill = t.kill_requested;
                if state == TaskState::TaskRunning
                    && matches!(was, TaskState::TaskUnreachable | TaskState::TaskLost)
                {
                    let mut status = t.status.clone();
                    status.set_state(TaskState::TaskRunning);
                    status.set_reason(Reason::AgentReregistered);
                    status.message = "agent re-registered; the task is running".into();
                    // The master's own record runs again too (its views,
                    // its reconciliation answers).
                    t.status = status.clone();
                    self.send_manager_update(now, fw, status, true);
                }
                if kill && !state.is_terminal() {
                    self.push_kill(idx, fw, &tid, None, Reason::KilledByFramework);
                }
                continue;
            }
            // A task the master did not know (it restarted): adopt it.
            let (resources, revocable) =
                Resources::from_proto_split(&task.resources).unwrap_or_default();
            let revocable = revocable.cpus;
            let class = self
                .cfg
                .classes
                .lookup(&task.priority_class)
                .unwrap_or_else(|_| self.alloc_fws[fw as usize].default_class);
            let status = pb::TaskStatus {
                task_id: tid.to_string(),
                agent_id: agent_id.to_string(),
                state: state as i32,
                source: pb::Source::Agent as i32,
                timestamp: Self::now_secs(now),
                ..Default::default()
            };
            let released = state.is_terminal();
            if !released {
                self.count_live(class, true);
                self.hold(idx, fw, &resources);
                self.hold_revocable(idx, revocable);
                *self.alloc_fws[fw as usize]
                    .tasks_per_agent
                    .entry(idx)
                    .or_default() += 1;
            }
            self.frameworks[fw as usize].tasks.insert(tid.clone());
            self.agents[idx as usize].tasks.insert(key.clone());
            self.tasks.insert(
                key,
                Task {
                    framework: fw,
                    agent: idx,
                    name: task.name,
                    resources,
                    revocable,
                    class,
                    status,
                    kill_requested: false,
                    preempted_at: None,
                    launched_at: now,
                    released,
                    usage: Default::default(),
                },
            );
        }
        // Tasks the master placed on this agent that the agent no longer has.
        let missing: Vec<(u32, TaskId)> = self.agents[idx as usize]
            .tasks
            .iter()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in missing {
            let Some(t) = self.tasks.get(&key) else {
                continue;
            };
            if t.released {
                // Its terminal update was acknowledged on the agent's side.
                self.forget_task(&key);
                continue;
            }
            let mut status = t.status.clone();
            status.set_state(TaskState::TaskGone);
            status.set_reason(Reason::AgentReregistered);
            status.message = "task not found on its agent when the agent re-registered".into();
            self.apply_terminal(now, &key, status.clone());
            self.send_manager_update(now, key.0, status, true);
        }
    }

    /// Kills tasks, newest first, until what the agent's tasks hold fits
    /// within what it now advertises (an agent that came back smaller).
    fn fit_agent_tasks(&mut self, idx: AgentIdx) {
        let total = self.alloc_agents[idx as usize].total.clone();
        let mut held: Vec<(Timestamp, (u32, TaskId), Resources)> = self.agents[idx as usize]
            .tasks
            .iter()
            .filter_map(|k| {
                self.tasks
                    .get(k)
                    .filter(|t| !t.released)
                    .map(|t| (t.launched_at, k.clone(), t.resources.clone()))
            })
            .collect();
        let mut used = held
            .iter()
            .fold(Resources::default(), |acc, (_, _, r)| acc.plus(r));
        if total.contains(&used) {
            return;
        }
        held.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.1.cmp(&a.1.1)));
        for (_, key, res) in held {
            if total.contains(&used) {
                break;
            }
            warn!(task_id = %key.1, "agent came back with fewer resources; killing task");
            used.subtract_saturating(&res);
            if let Some(t) = self.tasks.get_mut(&key) {
                t.kill_requested = true;
            }
            self.push_kill(idx, key.0, &key.1, Some(0.0), Reason::AgentResourcesChanged);
        }
    }

    /// A heartbeat from an agent.
    pub fn agent_heartbeat(&mut self, now: Timestamp, agent: &AgentId) -> Result<(), MasterError> {
        let idx = *self
            .agent_index
            .get(agent)
            .ok_or(MasterError::AgentNotRegistered)?;
        let e = &mut self.agents[idx as usize];
        if e.state != AgentState::Registered {
            return Err(MasterError::AgentNotRegistered);
        }
        e.last_seen = now;
        Ok(())
    }

    /// An agent's link closed.
    pub fn agent_disconnected(&mut self, now: Timestamp, agent: &AgentId) {
        let Some(&idx) = self.agent_index.get(agent) else {
            return;
        };
        if self.agents[idx as usize].state != AgentState::Registered {
            return;
        }
        info!(agent_id = %agent, "agent disconnected");
        self.agents[idx as usize].state = AgentState::Disconnected;
        self.agents[idx as usize].last_seen = self.agents[idx as usize].last_seen.min(now);
        self.rescind_agent_offers(idx);
        self.set_agent_active(idx, false);
    }

    /// Marks agents silent past the timeout unreachable.
    pub(super) fn check_agent_health(&mut self, now: Timestamp) {
        let timeout = self.cfg.agent_timeout;
        let stale: Vec<AgentIdx> = self
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.state != AgentState::Unreachable && a.last_seen + timeout <= now)
            .map(|(i, _)| i as AgentIdx)
            .collect();
        for idx in stale {
            self.mark_unreachable(now, idx);
        }
    }

    fn mark_unreachable(&mut self, now: Timestamp, idx: AgentIdx) {
        let id = self.agents[idx as usize].id.clone();
        warn!(agent_id = %id, "agent unreachable");
        self.counters.agents_unreachable += 1;
        self.rescind_agent_offers(idx);
        self.set_agent_active(idx, false);
        self.agents[idx as usize].state = AgentState::Unreachable;
        let keys: Vec<(u32, TaskId)> = self.agents[idx as usize].tasks.iter().cloned().collect();
        for key in keys {
            let Some(t) = self.tasks.get_mut(&key) else {
                continue;
            };
            if t.released || t.status.state() == TaskState::TaskUnreachable {
                continue;
            }
            t.status.set_state(TaskState::TaskUnreachable);
            t.status.set_reason(Reason::AgentUnreachable);
            t.status.message = format!("agent {id} is unreachable");
            t.status.timestamp = Self::now_secs(now);
            let status = t.status.clone();
            self.send_manager_update(now, key.0, status, true);
        }
        for fw in 0..self.frameworks.len() {
            if self.frameworks[fw].connected {
                self.outbox.push(Action::ToFramework {
                    framework: self.frameworks[fw].id.clone(),
                    event: pb::Event {
                        event: Some(pb::event::Event::Failure(pb::event::Failure {
                            agent_id: id.to_string(),
                            message: "agent unreachable".into(),
                        })),
                    },
                });
            }
        }
    }

    pub(super) fn push_kill(
        &mut self,
        agent: AgentIdx,
        fw: u32,
        task: &TaskId,
        grace: Option<f64>,
        reason: Reason,
    ) {
        if self.agents[agent as usize].state != AgentState::Registered {
            return;
        }
        self.outbox.push(Action::ToAgent {
            agent: self.agents[agent as usize].id.clone(),
            message: pb::ManagerMessage {
                message: Some(manager_message::Message::KillTask(
                    manager_message::KillTask {
                        framework_id: self.frameworks[fw as usize].id.to_string(),
                        task_id: task.to_string(),
                        grace_period_seconds: grace,
                        reason: reason as i32,
                    },
                )),
            },
        });
    }

    /// The id and address of an agent.
    pub fn agent_address(&self, agent: &AgentId) -> Option<&str> {
        self.agent_index
            .get(agent)
            .map(|&i| self.agents[i as usize].address.as_str())
    }

    /// The largest resources any registered agent advertises (for refusing
    /// asks that could never be placed).
    pub fn largest_agent(&self) -> Option<Resources> {
        self.alloc_agents
            .iter()
            .zip(&self.agents)
            .filter(|(_, e)| e.state == AgentState::Registered)
            .map(|(a, _)| a.total.clone())
            .max_by(|a, b| a.cpus.cmp(&b.cpus).then(a.mem.cmp(&b.mem)))
    }
}
