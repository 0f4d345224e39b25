//! Tasks: launch validation, status updates and acknowledgements, kills and
//! reconciliation.

use rustc_hash::FxHashSet as HashSet;
use strata_proto::ids::{AgentId, OfferId, TaskId};
use strata_proto::pb::{self, Reason, Source, TaskState, call, manager_message};
use strata_proto::resources::{Resources, Scalar};
use tracing::{debug, info};

use super::{Action, AgentState, Master, MasterError, Task, TaskKey, Timestamp, validate_id, view};
use crate::allocator::{AgentIdx, FrameworkIdx};

impl Master {
    /// Accept: launch tasks on offers of one agent. Invalid tasks end in
    /// `TASK_ERROR`, tasks on invalid offers in `TASK_DROPPED`; what the
    /// offers held beyond the launched tasks is declined with the filter.
    pub(super) fn accept(
        &mut self,
        now: Timestamp,
        fw: FrameworkIdx,
        a: call::Accept,
    ) -> Result<(), MasterError> {
        let refuse = self.refuse_for(a.filters.as_ref());
        let tasks: Vec<pb::TaskInfo> = a
            .operations
            .into_iter()
            .filter_map(|op| match op.operation {
                Some(call::operation::Operation::Launch(l)) => Some(l.tasks),
                None => None,
            })
            .flatten()
            .collect();
        // Validate the offers: known, this framework's, all on one agent.
        let mut agent: Option<AgentIdx> = None;
        let mut offer_error: Option<String> = None;
        let mut valid_offers: Vec<OfferId> = Vec::new();
        let mut seen_offers = HashSet::default();
        for id in &a.offer_ids {
            let oid = OfferId::new(id.clone());
            if !seen_offers.insert(oid.clone()) {
                offer_error.get_or_insert(format!("offer {id} given twice"));
                continue;
            }
            match self.offers.get(&oid) {
                None => {
                    offer_error.get_or_insert(format!("offer {id} is unknown, used or rescinded"));
                }
                Some(o) if o.framework != fw => {
                    offer_error.get_or_insert(format!("offer {id} was made to another framework"));
                }
                Some(o) => {
                    if agent.is_some_and(|ag| ag != o.agent) {
                        offer_error
                            .get_or_insert("offers of different agents in one accept".into());
                    }
                    agent.get_or_insert(o.agent);
                    valid_offers.push(oid);
                }
            }
        }
        if a.offer_ids.is_empty() && !tasks.is_empty() {
            offer_error = Some("no offer given".into());
        }
        // Pool the offers' resources; the lowest class among them bounds tasks.
        let mut pool = Resources::default();
        let mut revocable_pool = Scalar::ZERO;
        let mut offer_class = None;
        for oid in &valid_offers {
            let Some(o) = self.take_offer(oid) else {
                continue;
            };
            pool.add(&o.resources);
            revocable_pool += o.revocable;
            offer_class = Some(
                offer_class.map_or(o.class, |c: strata_proto::class::ClassIdx| c.max(o.class)),
            );
        }
        if let Some(reason) = offer_error {
            for t in &tasks {
                self.refuse_task(
                    now,
                    fw,
                    t,
                    TaskState::TaskDropped,
                    Reason::InvalidOffers,
                    reason.clone(),
                );
            }
            if let Some(ag) = agent {
                self.decline_resources(now, fw, ag, &pool, self.cfg.default_refuse);
            }
            return Ok(());
        }
        let Some(agent) = agent else { return Ok(()) };
        let offer_class = offer_class.unwrap_or(strata_proto::class::ClassIdx(0));
        let mut batch_ids: HashSet<String> = HashSet::default();
        for t in tasks {
            match self.validate_task(fw, &t, &pool, revocable_pool, offer_class, &batch_ids) {
                Err(refusal) => {
                    self.refuse_task(
                        now,
                        fw,
                        &t,
                        TaskState::TaskError,
                        Reason::TaskInvalid,
                        refusal.to_string(),
                    );
                }
                Ok((resources, revocable, class)) => {
                    batch_ids.insert(t.task_id.clone());
                    pool.subtract(&resources);
                    revocable_pool = revocable_pool.saturating_sub(revocable);
                    self.launch(now, fw, agent, t, (resources, revocable), class);
                }
            }
        }
        if !pool.is_empty() {
            self.decline_resources(now, fw, agent, &pool, refuse);
        }
        Ok(())
    }

    fn validate_task(
        &self,
        fw: FrameworkIdx,
        t: &pb::TaskInfo,
        pool: &Resources,
        revocable_pool: Scalar,
        offer_class: strata_proto::class::ClassIdx,
        batch: &HashSet<String>,
    ) -> Result<(Resources, Scalar, strata_proto::class::ClassIdx), TaskRefusal> {
        validate_id("task", &t.task_id)?;
        if batch.contains(&t.task_id)
            || self
                .tasks
                .contains_key(&(fw, TaskId::new(t.task_id.clone())))
        {
            return Err(TaskRefusal::IdInUse(t.task_id.clone()));
        }
        let (resources, revocable) = Resources::from_proto_split(&t.resources)?;
        if !(revocable.mem.is_zero() && revocable.disk.is_zero() && revocable.ports.is_empty()) {
            return Err(TaskRefusal::RevocableNotCpus(revocable));
        }
        let revocable = revocable.cpus;
        if resources.cpus.is_zero() && revocable.is_zero() && resources.mem.is_zero() {
            return Err(TaskRefusal::NothingAsked);
        }
        let class = if t.priority_class.is_empty() {
            offer_class
        } else {
            self.cfg.classes.lookup(&t.priority_class)?
        };
        if !self.cfg.classes.may_launch(class, offer_class) {
            return Err(TaskRefusal::ClassAboveOffer {
                task: self.cfg.classes.name(class).to_owned(),
                offer: self.cfg.classes.name(offer_class).to_owned(),
            });
        }
        let has_command = t.command.as_ref().is_some_and(|c| !c.value.is_empty());
        let is_docker = t.container.as_ref().is_some_and(|c| {
            c.r#type == pb::container_info::Type::Docker as i32 && c.docker.is_some()
        });
        if !has_command && !is_docker {
            return Err(TaskRefusal::NoCommand);
        }
        if !pool.contains(&resources) {
            return Err(TaskRefusal::TooLarge {
                asked: resources,
                held: pool.clone(),
            });
        }
        if revocable > revocable_pool {
            return Err(TaskRefusal::TooManyRevocable {
                asked: revocable,
                held: revocable_pool,
            });
        }
        Ok((resources, revocable, class))
    }

    fn launch(
        &mut self,
        now: Timestamp,
        fw: FrameworkIdx,
        agent: AgentIdx,
        mut info: pb::TaskInfo,
        (resources, revocable): (Resources, Scalar),
        class: strata_proto::class::ClassIdx,
    ) {
        let tid = TaskId::new(info.task_id.clone());
        let agent_id = self.agents[agent as usize].id.clone();
        info.agent_id = agent_id.to_string();
        info.priority_class = self.cfg.classes.name(class).to_owned();
        self.hold(agent, fw, &resources);
        self.hold_revocable(agent, revocable);
        *self.alloc_fws[fw as usize]
            .tasks_per_agent
            .entry(agent)
            .or_default() += 1;
        let mut shape = resources.clone();
        shape.cpus += revocable;
        self.consume_demand(fw, class, &shape);
        self.count_live(class, true);
        let key = (fw, tid.clone());
        self.frameworks[fw as usize].tasks.insert(tid.clone());
        self.agents[agent as usize].tasks.insert(key.clone());
        self.counters.tasks_launched += 1;
        debug!(task_id = %tid, agent_id = %agent_id, "task launched");
        self.tasks.insert(
            key,
            Task {
                framework: fw,
                agent,
                name: info.name.clone(),
                resources,
                revocable,
                class,
                status: pb::TaskStatus {
                    task_id: tid.to_string(),
                    agent_id: agent_id.to_string(),
                    state: TaskState::TaskStaging as i32,
                    source: Source::Manager as i32,
                    timestamp: Self::now_secs(now),
                    ..Default::default()
                },
                kill_requested: false,
                preempted_at: None,
                launched_at: now,
                released: false,
                usage: Default::default(),
            },
        );
        self.outbox.push(Action::ToAgent {
            agent: agent_id,
            message: pb::ManagerMessage {
                message: Some(manager_message::Message::RunTask(
                    manager_message::RunTask {
                        framework_id: self.frameworks[fw as usize].id.to_string(),
                        task: Some(info),
                    },
                )),
            },
        });
    }

    /// A launched task counts against the first declared ask it matches.
    fn consume_demand(
        &mut self,
        fw: FrameworkIdx,
        class: strata_proto::class::ClassIdx,
        res: &Resources,
    ) {
        let f = &mut self.frameworks[fw as usize];
        if let Some(ask) = f
            .declared
            .iter_mut()
            .find(|a| a.class == class && a.count > 0 && res.fits_shape(&a.resources))
        {
            ask.count -= 1;
        }
        self.sync_demand(fw);
    }

    fn refuse_task(
        &mut self,
        now: Timestamp,
        fw: FrameworkIdx,
        t: &pb::TaskInfo,
        state: TaskState,
        reason: Reason,
        message: String,
    ) {
        info!(task_id = %t.task_id, state = %state, %message, "task refused");
        self.counters.tasks_refused += 1;
        let status = pb::TaskStatus {
            task_id: t.task_id.clone(),
            agent_id: t.agent_id.clone(),
            state: state as i32,
            reason: reason as i32,
            source: Source::Manager as i32,
            message,
            timestamp: Self::now_secs(now),
            ..Default::default()
        };
        self.send_manager_update(now, fw, status, true);
    }

    /// A status update from an agent.
    pub fn agent_update(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        u: pb::agent_message::StatusUpdate,
    ) -> Result<(), MasterError> {
        let aidx = *self
            .agent_index
            .get(agent)
            .ok_or(MasterError::AgentNotRegistered)?;
        if self.agents[aidx as usize].state != AgentState::Registered {
            return Err(MasterError::AgentNotRegistered);
        }
        let mut status = u
            .status
            .ok_or(MasterError::MissingField { field: "status" })?;
        self.counters.status_updates += 1;
        self.agents[aidx as usize].last_seen = now;
        status.agent_id = agent.to_string();
        let fid = strata_proto::ids::FrameworkId::new(u.framework_id);
        let fw = match self.fw_index.get(&fid).copied() {
            Some(f) if !self.frameworks[f as usize].removed => f,
            _ => {
                // Nobody to tell: acknowledge on the framework's behalf.
                self.ack_to_agent(aidx, &fid, &status.task_id, status.uuid.clone());
                if let Some(f) = self.fw_index.get(&fid).copied() {
                    let key = (f, TaskId::new(status.task_id.clone()));
                    if status.state().is_terminal() {
                        self.forget_task(&key);
                    }
                }
                return Ok(());
            }
        };
        let key = (fw, TaskId::new(status.task_id.clone()));
        if let Some(t) = self.tasks.get_mut(&key)
            && t.agent == aidx
        {
            if status.state().is_terminal() {
                self.apply_terminal(now, &key, status.clone());
            } else if !t.released {
                t.status = status.clone();
            }
        }
        self.push_update_event(fw, status);
        Ok(())
    }

    /// Records a terminal state and releases the task's resources.
    pub(super) fn apply_terminal(&mut self, now: Timestamp, key: &TaskKey, status: pb::TaskStatus) {
        let Some(t) = self.tasks.get_mut(key) else {
            return;
        };
        t.status = status;
        if t.released {
            return;
        }
        t.released = true;
        let (agent, fw, res, revocable, class) = (
            t.agent,
            t.framework,
            t.resources.clone(),
            t.revocable,
            t.class,
        );
        let lender = t.usage.is_lending();
        self.count_live(class, false);
        self.counters.tasks_terminal += 1;
        self.release(agent, fw, &res);
        self.release_revocable(agent, revocable);
        if lender {
            // Its idle cpus are no longer lent (they are free again).
            self.refresh_lent(now, agent);
        }
        if let Some(c) = self.alloc_fws[fw as usize].tasks_per_agent.get_mut(&agent) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.alloc_fws[fw as usize].tasks_per_agent.remove(&agent);
            }
        }
        let t = &self.tasks[key];
        let v = self.task_view(key, t, now);
        self.completed.push_back(v);
        while self.completed.len() > self.cfg.completed_tasks_kept {
            self.completed.pop_front();
        }
    }

    /// Drops a task that is terminal and acknowledged.
    pub(super) fn forget_task(&mut self, key: &TaskKey) {
        if let Some(t) = self.tasks.remove(key) {
            if !t.released {
                self.count_live(t.class, false);
            }
            self.frameworks[t.framework as usize].tasks.remove(&key.1);
            self.agents[t.agent as usize].tasks.remove(key);
        }
    }

    fn ack_to_agent(
        &mut self,
        agent: AgentIdx,
        fid: &strata_proto::ids::FrameworkId,
        task: &str,
        uuid: Vec<u8>,
    ) {
        if uuid.is_empty() || self.agents[agent as usize].state != AgentState::Registered {
            return;
        }
        self.outbox.push(Action::ToAgent {
            agent: self.agents[agent as usize].id.clone(),
            message: pb::ManagerMessage {
                message: Some(manager_message::Message::Ack(manager_message::AckUpdate {
                    framework_id: fid.to_string(),
                    task_id: task.to_owned(),
                    uuid,
                })),
            },
        });
    }

    /// Sends an update the manager generated; with `reliable` it carries a
    /// uuid and is re-sent until acknowledged (also across re-subscription).
    pub(super) fn send_manager_update(
        &mut self,
        now: Timestamp,
        fw: FrameworkIdx,
        mut status: pb::TaskStatus,
        reliable: bool,
    ) {
        status.source = Source::Manager as i32;
        status.timestamp = Self::now_secs(now);
        if self.frameworks[fw as usize].removed {
            return;
        }
        if reliable {
            self.seq += 1;
            let mut uuid = self.seq.to_be_bytes().to_vec();
            uuid.extend_from_slice(&(0xA5u64 ^ self.cfg.instance.len() as u64).to_be_bytes());
            status.uuid = uuid.clone();
            self.frameworks[fw as usize]
                .unacked
                .insert(uuid, (now, status.clone()));
        } else {
            status.uuid.clear();
        }
        self.push_update_event(fw, status);
    }

    pub(super) fn push_update_event(&mut self, fw: FrameworkIdx, status: pb::TaskStatus) {
        let f = &self.frameworks[fw as usize];
        if !f.connected {
            return;
        }
        self.outbox.push(Action::ToFramework {
            framework: f.id.clone(),
            event: pb::Event {
                event: Some(pb::event::Event::Update(pb::event::Update {
                    status: Some(status),
                })),
            },
        });
    }

    pub(super) fn acknowledge(
        &mut self,
        fw: FrameworkIdx,
        a: call::Acknowledge,
    ) -> Result<(), MasterError> {
        if a.uuid.is_empty() {
            return Err(MasterError::MissingField { field: "uuid" });
        }
        if let Some((_, acked)) = self.frameworks[fw as usize].unacked.remove(&a.uuid) {
            // A manager-generated update: once a terminal one is acknowledged
            // the task is forgotten.
            let key = (fw, TaskId::new(a.task_id));
            if acked.state().is_terminal() && self.tasks.get(&key).is_some_and(|t| t.released) {
                self.forget_task(&key);
            }
            return Ok(());
        }
        let key = (fw, TaskId::new(a.task_id.clone()));
        let agent = match self.tasks.get(&key) {
            Some(t) => Some(t.agent),
            None => self
                .agent_index
                .get(&AgentId::new(a.agent_id.clone()))
                .copied(),
        };
        let Some(agent) = agent else { return Ok(()) };
        let fid = self.frameworks[fw as usize].id.clone();
        self.ack_to_agent(agent, &fid, &a.task_id, a.uuid.clone());
        if self
            .tasks
            .get(&key)
            .is_some_and(|t| t.released && t.status.uuid == a.uuid)
        {
            self.forget_task(&key);
        }
        Ok(())
    }

    pub(super) fn kill(
        &mut self,
        now: Timestamp,
        fw: FrameworkIdx,
        k: call::Kill,
    ) -> Result<(), MasterError> {
        let key = (fw, TaskId::new(k.task_id.clone()));
        match self.tasks.get_mut(&key) {
            Some(t) if !t.released => {
                t.kill_requested = true;
                let agent = t.agent;
                self.push_kill(agent, fw, &key.1, None, Reason::KilledByFramework);
            }
            Some(t) => {
                let status = t.status.clone();
                self.send_manager_update(now, fw, status, false);
            }
            None => {
                let status = pb::TaskStatus {
                    task_id: k.task_id,
                    agent_id: k.agent_id,
                    state: TaskState::TaskUnknown as i32,
                    reason: Reason::TaskUnknown as i32,
                    message: "kill of a task the manager does not know".into(),
                    ..Default::default()
                };
                self.send_manager_update(now, fw, status, false);
            }
        }
        Ok(())
    }

    /// Answers with the latest state of the tasks asked about (all of the
    /// framework's tasks when the list is empty).
    pub(super) fn reconcile(&mut self, now: Timestamp, fw: FrameworkIdx, r: call::Reconcile) {
        let mut answers = Vec::new();
        if r.tasks.is_empty() {
            for tid in &self.frameworks[fw as usize].tasks {
                if let Some(t) = self.tasks.get(&(fw, tid.clone())) {
                    answers.push(t.status.clone());
                }
            }
        } else {
            for q in r.tasks {
                let key = (fw, TaskId::new(q.task_id.clone()));
                if let Some(t) = self.tasks.get(&key) {
                    answers.push(t.status.clone());
                    continue;
                }
                // Unknown task: the answer depends on what we know of its agent.
                let agent_state = self
                    .agent_index
                    .get(&AgentId::new(q.agent_id.clone()))
                    .map(|&a| self.agents[a as usize].state);
                let state = match agent_state {
                    Some(AgentState::Recovered) | Some(AgentState::Disconnected) => continue,
                    Some(AgentState::Unreachable) => TaskState::TaskUnreachable,
                    Some(AgentState::Registered) => TaskState::TaskGone,
                    None if q.agent_id.is_empty() => TaskState::TaskUnknown,
                    None => TaskState::TaskUnknown,
                };
                answers.push(pb::TaskStatus {
                    task_id: q.task_id,
                    agent_id: q.agent_id,
                    state: state as i32,
                    ..Default::default()
                });
            }
        }
        for mut s in answers {
            s.set_reason(Reason::Reconciliation);
            s.uuid.clear();
            self.send_manager_update(now, fw, s, false);
        }
    }

    pub(super) fn task_view(&self, key: &TaskKey, t: &Task, _now: Timestamp) -> view::TaskView {
        view::TaskView {
            id: key.1.to_string(),
            name: t.name.clone(),
            framework_id: self.frameworks[t.framework as usize].id.to_string(),
            agent_id: self.agents[t.agent as usize].id.to_string(),
            state: t.status.state().wire_name().to_owned(),
            reason: pb::Reason::try_from(t.status.reason)
                .unwrap_or_default()
                .wire_name()
                .to_owned(),
            class: self.cfg.classes.name(t.class).to_owned(),
            resources: t.resources.to_string(),
            exit_code: t.status.exit_code,
            message: t.status.message.clone(),
            revocable_cpus: t.revocable.as_f64(),
            cpus_used: t.usage.latest().map(|u| u.0),
            mem_used: t.usage.latest().map(|u| u.1),
        }
    }
}

/// Why a task in an accepted offer is refused (it ends `TASK_ERROR` with
/// this as its message).
#[derive(Debug, thiserror::Error)]
enum TaskRefusal {
    /// A task id that is not one.
    #[error(transparent)]
    InvalidId(#[from] super::MasterError),
    /// The framework already has a task by that id.
    #[error("task id {0} is already in use by this framework")]
    IdInUse(String),
    /// Resources that are not valid.
    #[error(transparent)]
    Resources(#[from] strata_proto::resources::ResourceError),
    /// Revocable resources other than cpus.
    #[error("only cpus can be revocable, but the task asks for revocable {0}")]
    RevocableNotCpus(Resources),
    /// Neither cpus nor memory.
    #[error("a task must ask for some cpus or mem")]
    NothingAsked,
    /// An unknown priority class.
    #[error(transparent)]
    Class(#[from] strata_proto::class::UnknownClass),
    /// A class above the offer's.
    #[error("task class {task} is above the offer's class {offer}")]
    ClassAboveOffer {
        /// The task's class.
        task: String,
        /// The offer's class.
        offer: String,
    },
    /// Nothing to run.
    #[error("a task needs a command (or a docker image)")]
    NoCommand,
    /// More than the offers hold.
    #[error("task asks for {asked} but the offers hold only {held} (after earlier tasks)")]
    TooLarge {
        /// What it asks for.
        asked: Resources,
        /// What is left in the offers.
        held: Resources,
    },
    /// More revocable cpus than the offers hold.
    #[error(
        "task asks for {asked} revocable cpus but the offers hold only {held} (after earlier tasks)"
    )]
    TooManyRevocable {
        /// What it asks for.
        asked: Scalar,
        /// What is left in the offers.
        held: Scalar,
    },
}
