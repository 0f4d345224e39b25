//! Simulated agents and frameworks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rustc_hash::FxHashSet as HashSet;
use strata_proto::ids::{AgentId, FrameworkId, OfferId, StreamId, TaskId};
use strata_proto::pb::{self, Reason, Source, TaskState, agent_message, call, manager_message};
use strata_proto::resources::Resources;

use super::{SimReport, task_id};
use crate::master::Timestamp;

/// The shape of every simulated task.
#[allow(non_snake_case)]
pub fn TASK_SHAPE() -> Resources {
    Resources::new(1.0, 1024.0)
}

const RETRY: Duration = Duration::from_secs(1);
const HEARTBEAT: Duration = Duration::from_secs(1);

struct SimTask {
    info: pb::TaskInfo,
    framework: FrameworkId,
    finish_at: Timestamp,
    state: TaskState,
}

struct Pending {
    queue: VecDeque<pb::TaskStatus>,
    sent_at: Option<Timestamp>,
}

/// A simulated agent.
pub struct SimAgent {
    /// Its position.
    pub index: usize,
    /// Id once registered.
    pub id: Option<AgentId>,
    /// What it advertises.
    pub total: Resources,
    /// Whether its link is up.
    pub connected: bool,
    /// When a lost link comes back.
    pub down_until: Timestamp,
    /// How often it came back with another address (each a registry write).
    pub moves: u32,
    tasks: BTreeMap<(FrameworkId, TaskId), SimTask>,
    pending: BTreeMap<(FrameworkId, TaskId), Pending>,
    next_heartbeat: Timestamp,
    uuid_seq: u64,
}

impl SimAgent {
    /// A new agent.
    pub fn new(index: usize, total: Resources) -> Self {
        SimAgent {
            index,
            id: None,
            total,
            connected: false,
            down_until: Timestamp::ZERO,
            moves: 0,
            tasks: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_heartbeat: Timestamp::ZERO,
            uuid_seq: 0,
        }
    }

    /// Its registration message, with every task it holds.
    pub fn register_message(&mut self) -> agent_message::Register {
        for p in self.pending.values_mut() {
            p.sent_at = None;
        }
        agent_message::Register {
            protocol_version: strata_proto::PROTOCOL_VERSION,
            agent_id: self.id.as_ref().map(|i| i.to_string()).unwrap_or_default(),
            info: Some(pb::AgentInfo {
                hostname: format!("host{}", self.index),
                address: format!(
                    "10.{}.{}.{}:5051",
                    self.moves % 250,
                    self.index / 250,
                    self.index % 250
                ),
                resources: self.total.to_proto(false),
                attributes: vec![pb::Attribute {
                    name: "rack".into(),
                    value: format!("r{}", self.index % 10),
                }],
            }),
            tasks: self
                .tasks
                .iter()
                .map(|((f, _), t)| pb::AgentTask {
                    framework_id: f.to_string(),
                    task: Some(t.info.clone()),
                    state: t.state as i32,
                })
                .collect(),
        }
    }

    fn push_update(
        &mut self,
        now: Timestamp,
        framework: &FrameworkId,
        task: &TaskId,
        state: TaskState,
        reason: Reason,
    ) {
        self.uuid_seq += 1;
        let mut uuid = (self.index as u64).to_be_bytes().to_vec();
        uuid.extend_from_slice(&self.uuid_seq.to_be_bytes());
        let status = pb::TaskStatus {
            task_id: task.to_string(),
            agent_id: self.id.as_ref().map(|i| i.to_string()).unwrap_or_default(),
            state: state as i32,
            reason: reason as i32,
            source: Source::Agent as i32,
            uuid,
            timestamp: now.as_secs_f64(),
            ..Default::default()
        };
        self.pending
            .entry((framework.clone(), task.clone()))
            .or_insert_with(|| Pending {
                queue: VecDeque::new(),
                sent_at: None,
            })
            .queue
            .push_back(status);
    }

    /// Ends tasks whose time has come.
    pub fn finish_due(&mut self, now: Timestamp) {
        let due: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal() && t.finish_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (f, tid) in due {
            if let Some(t) = self.tasks.get_mut(&(f.clone(), tid.clone())) {
                t.state = TaskState::TaskFinished;
            }
            self.push_update(
                now,
                &f,
                &tid,
                TaskState::TaskFinished,
                Reason::CommandExited,
            );
        }
    }

    /// What it sends this step: due updates (heads of queues, retried) and
    /// a heartbeat.
    pub fn outgoing(&mut self, now: Timestamp) -> Vec<agent_message::Message> {
        self.finish_due(now);
        let mut out = Vec::new();
        for ((f, _), p) in self.pending.iter_mut() {
            let due = p.sent_at.is_none_or(|t| t + RETRY <= now);
            if let (true, Some(head)) = (due, p.queue.front()) {
                p.sent_at = Some(now);
                out.push(agent_message::Message::Update(
                    agent_message::StatusUpdate {
                        framework_id: f.to_string(),
                        status: Some(head.clone()),
                    },
                ));
            }
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + HEARTBEAT;
            out.push(agent_message::Message::Heartbeat(
                agent_message::Heartbeat {},
            ));
        }
        out
    }

    /// Handles a message from the master.
    pub fn receive(
        &mut self,
        now: Timestamp,
        m: pb::ManagerMessage,
        rng: &mut StdRng,
        task_ms: (u64, u64),
    ) {
        let Some(m) = m.message else { return };
        match m {
            manager_message::Message::Registered(_) | manager_message::Message::Error(_) => {}
            manager_message::Message::RunTask(r) => {
                let Some(info) = r.task else { return };
                let f = FrameworkId::new(r.framework_id);
                let tid = TaskId::new(info.task_id.clone());
                if self.tasks.contains_key(&(f.clone(), tid.clone())) {
                    return;
                }
                let finish_at =
                    now + Duration::from_millis(rng.random_range(task_ms.0..=task_ms.1));
                self.tasks.insert(
                    (f.clone(), tid.clone()),
                    SimTask {
                        info,
                        framework: f.clone(),
                        finish_at,
                        state: TaskState::TaskRunning,
                    },
                );
                self.push_update(now, &f, &tid, TaskState::TaskRunning, Reason::Unspecified);
            }
            manager_message::Message::KillTask(k) => {
                let f = FrameworkId::new(k.framework_id);
                let tid = TaskId::new(k.task_id);
                self.kill(
                    now,
                    &f,
                    &tid,
                    Reason::try_from(k.reason).unwrap_or(Reason::KilledByFramework),
                );
            }
            manager_message::Message::Ack(a) => {
                let key = (FrameworkId::new(a.framework_id), TaskId::new(a.task_id));
                let mut empty = false;
                if let Some(p) = self.pending.get_mut(&key) {
                    if p.queue.front().is_some_and(|s| s.uuid == a.uuid) {
                        p.queue.pop_front();
                        p.sent_at = None;
                    }
                    empty = p.queue.is_empty();
                }
                if empty {
                    self.pending.remove(&key);
                    if self.tasks.get(&key).is_some_and(|t| t.state.is_terminal()) {
                        self.tasks.remove(&key);
                    }
                }
            }
            manager_message::Message::ShutdownFramework(s) => {
                let f = FrameworkId::new(s.framework_id);
                let ids: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.framework == f)
                    .map(|((_, tid), _)| tid.clone())
                    .collect();
                for tid in ids {
                    self.kill(now, &f, &tid, Reason::FrameworkRemoved);
                }
            }
        }
    }

    fn kill(&mut self, now: Timestamp, f: &FrameworkId, tid: &TaskId, reason: Reason) {
        if let Some(t) = self.tasks.get_mut(&(f.clone(), tid.clone()))
            && !t.state.is_terminal()
        {
            t.state = TaskState::TaskKilled;
            self.push_update(now, f, tid, TaskState::TaskKilled, reason);
        }
    }

    /// Whether the agent still runs a task.
    pub fn runs(&self, f: &FrameworkId, tid: &TaskId) -> bool {
        self.tasks
            .get(&(f.clone(), tid.clone()))
            .is_some_and(|t| !t.state.is_terminal())
    }
}

/// A simulated framework.
pub struct SimFramework {
    /// Its position.
    pub index: usize,
    /// Its class (`service` or `batch`).
    pub class: String,
    /// How many tasks it keeps wanting at once.
    pub want: u32,
    /// Id once subscribed.
    pub id: Option<FrameworkId>,
    /// Current stream.
    pub stream: Option<StreamId>,
    /// Connected now.
    pub connected: bool,
    /// When a disconnect ends.
    pub down_until: Timestamp,
    /// Removed by the master (failover timeout).
    pub removed: bool,
    /// Tasks it launched.
    pub launched: BTreeSet<TaskId>,
    /// Tasks whose terminal state it was told.
    pub terminal: HashSet<TaskId>,
    /// Offers it holds.
    pub offers: Vec<OfferId>,
    next_task: u64,
    suppressed: bool,
}

impl SimFramework {
    /// A new framework.
    pub fn new(index: usize, class: &str, want: u32) -> Self {
        SimFramework {
            index,
            class: class.into(),
            want,
            id: None,
            stream: None,
            connected: false,
            down_until: Timestamp::ZERO,
            removed: false,
            launched: BTreeSet::new(),
            terminal: HashSet::default(),
            offers: Vec::new(),
            next_task: 0,
            suppressed: false,
        }
    }

    fn active(&self) -> u32 {
        (self.launched.len() - self.terminal.len()) as u32
    }

    fn ask(&self, count: u32) -> pb::Ask {
        pb::Ask {
            priority_class: self.class.clone(),
            resources: TASK_SHAPE().to_proto(false),
            count,
            constraints: vec![],
            accept_revocable: false,
        }
    }

    /// Its subscription request (with its id after the first time).
    pub fn subscribe_request(&self) -> pb::SubscribeRequest {
        let count = self.want.saturating_sub(self.active());
        pb::SubscribeRequest {
            protocol_version: strata_proto::PROTOCOL_VERSION,
            framework: Some(pb::FrameworkInfo {
                framework_id: self.id.as_ref().map(|i| i.to_string()).unwrap_or_default(),
                name: format!("sim-{}", self.index),
                user: "sim".into(),
                role: "*".into(),
                default_class: self.class.clone(),
                ..Default::default()
            }),
            demand: if count > 0 {
                vec![self.ask(count)]
            } else {
                vec![]
            },
            suppressed: count == 0,
        }
    }

    fn envelope(&self, c: call::Call) -> pb::Call {
        pb::Call {
            framework_id: self.id.as_ref().map(|i| i.to_string()).unwrap_or_default(),
            stream_id: self
                .stream
                .as_ref()
                .map(|i| i.to_string())
                .unwrap_or_default(),
            call: Some(c),
        }
    }

    /// A call that declares `count` more tasks wanted (suppresses at zero).
    pub fn demand_call(&mut self, count: u32) -> pb::Call {
        if count == 0 {
            self.suppressed = true;
            self.envelope(call::Call::Suppress(call::Suppress {}))
        } else {
            self.suppressed = false;
            self.envelope(call::Call::Demand(call::Demand {
                asks: vec![self.ask(count)],
            }))
        }
    }

    /// Handles an event; returns the calls it makes in answer.
    pub fn receive(&mut self, e: pb::Event, report: &mut SimReport) -> Vec<pb::Call> {
        let mut calls = Vec::new();
        let Some(e) = e.event else { return calls };
        match e {
            pb::event::Event::Offers(o) => {
                for offer in o.offers {
                    let res = Resources::from_proto(&offer.resources).unwrap_or_default();
                    let shape = TASK_SHAPE();
                    let mut left = res.clone();
                    let mut tasks = Vec::new();
                    while self.active() + (tasks.len() as u32) < self.want && left.subtract(&shape)
                    {
                        self.next_task += 1;
                        let tid = task_id(self.index, self.next_task);
                        tasks.push(pb::TaskInfo {
                            task_id: tid.to_string(),
                            name: tid.to_string(),
                            resources: shape.to_proto(false),
                            command: Some(pb::CommandInfo {
                                value: "true".into(),
                                shell: true,
                                ..Default::default()
                            }),
                            priority_class: self.class.clone(),
                            ..Default::default()
                        });
                    }
                    if tasks.is_empty() {
                        calls.push(self.envelope(call::Call::Decline(call::Decline {
                            offer_ids: vec![offer.offer_id],
                            filters: Some(pb::Filters {
                                refuse_seconds: Some(1.0),
                            }),
                        })));
                        continue;
                    }
                    for t in &tasks {
                        self.launched.insert(TaskId::new(t.task_id.clone()));
                        report.launched += 1;
                    }
                    calls.push(self.envelope(call::Call::Accept(call::Accept {
                        offer_ids: vec![offer.offer_id],
                        operations: vec![call::Operation {
                            operation: Some(call::operation::Operation::Launch(call::Launch {
                                tasks,
                            })),
                        }],
                        filters: Some(pb::Filters {
                            refuse_seconds: Some(0.0),
                        }),
                    })));
                }
            }
            pb::event::Event::Update(u) => {
                let Some(s) = u.status else { return calls };
                let tid = TaskId::new(s.task_id.clone());
                if !s.uuid.is_empty() {
                    calls.push(self.envelope(call::Call::Acknowledge(call::Acknowledge {
                        agent_id: s.agent_id.clone(),
                        task_id: s.task_id.clone(),
                        uuid: s.uuid.clone(),
                    })));
                }
                if s.state().is_terminal()
                    && self.launched.contains(&tid)
                    && self.terminal.insert(tid)
                {
                    report.terminal_seen += 1;
                    let count = self.want.saturating_sub(self.active());
                    if count > 0 || !self.suppressed {
                        calls.push(self.demand_call(count));
                    }
                }
            }
            _ => {}
        }
        calls
    }
}
