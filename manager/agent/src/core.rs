//! The agent's core: one task (an actor) that owns every task record, the
//! update queues and the current link to the manager. It reacts to messages
//! from the manager and to a periodic tick that polls containers for exits,
//! escalates kills, retries updates and sends heartbeats.

use super::checkpoint::{StoredStatus, UpdatesCheckpoint, write_json};
use super::containerizer::{
    ContainerRecord, ContainerStatus, Containerizer, DockerContainerizer, ProcessContainerizer,
};
use super::layout::{Layout, files};
use super::process::Escalation;
use super::supervisor::unix_now;
use super::task;
use super::updates::{AckOutcome, RetryPolicy, UpdateQueue};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_proto::ids::{AgentId, FrameworkId, TaskId};
use strata_proto::pb::{self, Reason, TaskState, agent_message, manager_message};
use strata_proto::resources::Resources;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

/// State shared with the HTTP API and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub link: watch::Sender<LinkState>,
    pub cgroups: bool,
    pub tasks: Mutex<Vec<TaskSummary>>,
    /// The latest usage of running tasks.
    pub usage: Mutex<Vec<super::usage::TaskUsage>>,
    pub pending_updates: AtomicUsize,
    pub layout: Layout,
    pub token: Option<String>,
}

/// Where the agent stands with the manager.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LinkState {
    /// The id from the latest registration (kept while disconnected).
    pub agent_id: Option<AgentId>,
    /// Whether the current stream is registered.
    pub registered: bool,
}

/// One task as shown by `GET /v1/tasks`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskSummary {
    /// The framework.
    pub framework_id: FrameworkId,
    /// The task.
    pub task_id: TaskId,
    /// The task's name.
    pub name: String,
    /// The latest state (wire name).
    pub state: String,
    /// The task's pid, when known.
    pub pid: Option<i32>,
    /// Unacknowledged updates.
    pub pending_updates: usize,
    /// The sandbox directory, if the task has one.
    pub sandbox: Option<PathBuf>,
}

/// Inputs of the core from the link.
#[derive(Debug)]
pub(crate) enum CoreEvent {
    /// A new stream is being opened; the core writes `Register` into `tx`
    /// and uses it for everything it sends until `Disconnected`.
    Connecting {
        epoch: u64,
        tx: mpsc::UnboundedSender<pb::AgentMessage>,
    },
    /// A message from the manager on stream `epoch`.
    Message {
        epoch: u64,
        message: Box<pb::ManagerMessage>,
    },
    /// Stream `epoch` ended.
    Disconnected { epoch: u64 },
    /// Kill every task (a local cluster stopping with its tasks).
    KillAll { reason: Reason },
}

/// A kill in progress.
#[derive(Debug, Clone)]
pub(crate) struct KillState {
    pub reason: Reason,
    pub escalation: Escalation,
}

/// Everything the agent knows about one task.
#[derive(Debug)]
pub(crate) struct Task {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub info: pb::TaskInfo,
    pub state: TaskState,
    pub queue: UpdateQueue,
    /// `None` for tasks whose ids cannot name a directory (not checkpointed).
    pub meta_dir: Option<PathBuf>,
    pub sandbox: Option<PathBuf>,
    pub container: Option<ContainerRecord>,
    pub pid: Option<i32>,
    pub kill: Option<KillState>,
    /// Updates changed since `updates.json` was written: written before
    /// anything is sent (once per turn of the core, so a task's running and
    /// finished updates of one poll cost one write).
    pub updates_dirty: bool,
}

impl Task {
    pub(crate) fn new(
        framework_id: &FrameworkId,
        info: pb::TaskInfo,
        meta_dir: Option<PathBuf>,
    ) -> Self {
        Task {
            framework_id: framework_id.clone(),
            task_id: TaskId::new(info.task_id.clone()),
            info,
            state: TaskState::TaskStaging,
            queue: UpdateQueue::default(),
            meta_dir,
            sandbox: None,
            container: None,
            pid: None,
            kill: None,
            updates_dirty: false,
        }
    }

    pub(super) fn task_id(&self) -> &TaskId {
        &self.task_id
    }

    /// Writes `updates.json` (the caller sends only after this).
    pub(super) fn checkpoint_updates(&self) {
        let Some(dir) = &self.meta_dir else { return };
        let cp = UpdatesCheckpoint {
            latest_state: self.state.wire_name().to_owned(),
            pending: self.queue.iter().map(StoredStatus::new).collect(),
        };
        if let Err(e) = write_json(&dir.join(files::UPDATES), &cp) {
            error!(framework_id = %self.framework_id, task_id = %self.task_id(), error = %e,
                "cannot checkpoint status updates");
        }
    }
}

/// Map key of a task.
pub(crate) type TaskKey = (FrameworkId, TaskId);

/// Static settings of the core.
#[derive(Debug, Clone)]
pub(crate) struct CoreSettings {
    pub hostname: String,
    pub advertise: String,
    pub resources: Resources,
    pub attributes: Vec<(String, String)>,
    pub task_user: Option<String>,
    /// The agent's own `strata` binary (the supervisor's program), which
    /// a task's program `strata` names.
    pub program: Option<String>,
    pub retry: RetryPolicy,
    pub heartbeat_interval: Duration,
    pub usage_interval: Duration,
}

struct Link {
    epoch: u64,
    tx: mpsc::UnboundedSender<pb::AgentMessage>,
    registered: bool,
}

/// The actor.
pub(crate) struct Core {
    pub(super) settings: CoreSettings,
    pub(super) layout: Layout,
    pub(super) shared: Arc<Shared>,
    pub(super) process: Arc<ProcessContainerizer>,
    pub(super) docker: DockerContainerizer,
    pub(super) agent_id: Option<AgentId>,
    pub(super) tasks: BTreeMap<TaskKey, Task>,
    link: Option<Link>,
    heartbeat_interval: Duration,
    next_heartbeat: Instant,
    pub(super) is_root: bool,
    sampler: super::usage::Sampler,
    next_usage: Instant,
}

impl Core {
    pub(crate) fn new(
        settings: CoreSettings,
        layout: Layout,
        shared: Arc<Shared>,
        process: Arc<ProcessContainerizer>,
        docker: DockerContainerizer,
        agent_id: Option<AgentId>,
        tasks: BTreeMap<TaskKey, Task>,
    ) -> Self {
        let heartbeat_interval = settings.heartbeat_interval;
        let mut core = Core {
            settings,
            layout,
            shared,
            process,
            docker,
            agent_id,
            tasks,
            link: None,
            heartbeat_interval,
            next_heartbeat: Instant::now(),
            is_root: super::process::euid() == 0,
            sampler: super::usage::Sampler::default(),
            next_usage: Instant::now(),
        };
        // Recovered tasks that ended while the agent was down get their
        // final update before the agent registers.
        core.tick();
        core.checkpoint_dirty();
        core.publish();
        core
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub(crate) async fn run(
        mut self,
        mut events: mpsc::Receiver<CoreEvent>,
        mut shutdown: watch::Receiver<bool>,
        poll_interval: Duration,
    ) {
        let mut ticker = tokio::time::interval(poll_interval.max(Duration::from_millis(5)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A supervisor's exit is seen at once, not at the next tick.
        let mut child_exits =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "cannot watch for SIGCHLD; task exits are seen at each poll");
                    None
                }
            };
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                Some(()) = async { child_exits.as_mut()?.recv().await } => self.supervisors_exited(),
                _ = ticker.tick() => self.tick(),
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
            }
            self.flush();
            self.publish();
        }
        debug!("agent core stopped");
    }

    pub(super) fn agent_id_str(&self) -> String {
        self.agent_id
            .as_ref()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default()
    }

    fn handle(&mut self, ev: CoreEvent) {
        match ev {
            CoreEvent::KillAll { reason } => {
                let keys: Vec<TaskKey> = self.tasks.keys().cloned().collect();
                for (framework_id, task_id) in keys {
                    self.kill_task(&framework_id, &task_id, None, reason);
                }
            }
            CoreEvent::Connecting { epoch, tx } => {
                let register = self.register_message();
                tx.send(register).ok();
                self.link = Some(Link {
                    epoch,
                    tx,
                    registered: false,
                });
            }
            CoreEvent::Disconnected { epoch } => {
                if self.link.as_ref().is_some_and(|l| l.epoch == epoch) {
                    self.link = None;
                    self.shared.link.send_modify(|s| s.registered = false);
                }
            }
            CoreEvent::Message { epoch, message } => {
                if self.link.as_ref().is_none_or(|l| l.epoch != epoch) {
                    debug!(epoch, "message from a stale stream ignored");
                    return;
                }
                self.manager_message(*message);
            }
        }
    }

    fn register_message(&self) -> pb::AgentMessage {
        let tasks = self
            .tasks
            .values()
            .map(|t| pb::AgentTask {
                framework_id: t.framework_id.to_string(),
                task: Some(t.info.clone()),
                state: t.state as i32,
            })
            .collect();
        let s = &self.settings;
        pb::AgentMessage {
            message: Some(agent_message::Message::Register(agent_message::Register {
                protocol_version: strata_proto::PROTOCOL_VERSION,
                agent_id: self.agent_id_str(),
                info: Some(pb::AgentInfo {
                    hostname: s.hostname.clone(),
                    address: s.advertise.clone(),
                    resources: s.resources.to_proto(false),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|(name, value)| pb::Attribute {
                            name: name.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                }),
                tasks,
            })),
        }
    }

    fn manager_message(&mut self, message: pb::ManagerMessage) {
        use manager_message::Message as M;
        match message.message {
            Some(M::Registered(r)) => self.registered(r),
            Some(M::RunTask(r)) => self.run_task(FrameworkId::new(r.framework_id), r.task),
            Some(M::KillTask(k)) => {
                let reason = Reason::try_from(k.reason).unwrap_or(Reason::Unspecified);
                self.kill_task(
                    &FrameworkId::new(k.framework_id),
                    &TaskId::new(k.task_id),
                    k.grace_period_seconds,
                    reason,
                );
            }
            Some(M::Ack(a)) => self.ack(&(a.framework_id.into(), a.task_id.into()), &a.uuid),
            Some(M::ShutdownFramework(s)) => {
                let framework = FrameworkId::new(s.framework_id);
                info!(framework_id = %framework, "shutting down the framework's tasks");
                let ids: Vec<TaskId> = self
                    .tasks
                    .values()
                    .filter(|t| t.framework_id == framework)
                    .map(|t| t.task_id.clone())
                    .collect();
                for id in ids {
                    self.kill_task(&framework, &id, None, Reason::FrameworkRemoved);
                }
            }
            Some(M::Error(e)) => warn!(message = %e.message, "error from the manager"),
            None => debug!("empty message from the manager ignored"),
        }
    }

    fn registered(&mut self, r: manager_message::Registered) {
        if r.agent_id.is_empty() {
            warn!("registered without an agent id; ignored");
            return;
        }
        let id = AgentId::new(r.agent_id);
        if self.agent_id.as_ref() != Some(&id) {
            if let Some(old) = &self.agent_id {
                warn!(old = %old, new = %id, "the manager assigned a new agent id");
            }
            let cp = super::checkpoint::AgentCheckpoint {
                agent_id: id.as_str().to_owned(),
                registered_at: unix_now(),
            };
            if let Err(e) = super::checkpoint::write_json_durable(&self.layout.agent_file(), &cp) {
                error!(error = %e, "cannot checkpoint the agent id");
            }
            self.agent_id = Some(id.clone());
        }
        let hb = r.heartbeat_interval_seconds;
        if hb.is_finite() && hb > 0.0 {
            self.heartbeat_interval = Duration::from_secs_f64(hb.clamp(0.05, 3600.0));
        }
        info!(agent_id = %id, heartbeat_seconds = self.heartbeat_interval.as_secs_f64(),
            tasks = self.tasks.len(), "registered with the manager");
        self.shared.link.send_replace(LinkState {
            agent_id: Some(id),
            registered: true,
        });
        if let Some(link) = &mut self.link {
            link.registered = true;
        }
        for t in self.tasks.values_mut() {
            t.queue.reset();
        }
        self.next_heartbeat = Instant::now() + self.heartbeat_interval;
    }

    /// Queues (checkpointed) a status update for a task.
    pub(super) fn update(
        &mut self,
        key: &TaskKey,
        state: TaskState,
        reason: Reason,
        message: String,
        exit_code: Option<i32>,
    ) {
        let agent_id = self.agent_id_str();
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        let status = task::new_status(task.task_id(), &agent_id, state, reason, message, exit_code);
        info!(framework_id = %task.framework_id, task_id = %task.task_id(), state = %state,
            reason = reason.wire_name(), message = %status.message, "task status update");
        task.state = state;
        task.queue.push(status);
        task.updates_dirty = true;
    }

    /// Writes `updates.json` of every task whose updates changed.
    fn checkpoint_dirty(&mut self) {
        for t in self.tasks.values_mut().filter(|t| t.updates_dirty) {
            t.checkpoint_updates();
            t.updates_dirty = false;
        }
    }

    /// Sends every update that is due and a heartbeat if due.
    fn flush(&mut self) {
        // Checkpointed before sent, also while no manager listens.
        self.checkpoint_dirty();
        let Some(link) = &mut self.link else { return };
        if !link.registered {
            return;
        }
        let now = Instant::now();
        let agent_id = self
            .agent_id
            .as_ref()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let mut broken = false;
        for t in self.tasks.values_mut() {
            if let Some(status) = t.queue.poll_send(now, &self.settings.retry) {
                let mut status = status.clone();
                if !agent_id.is_empty() {
                    status.agent_id = agent_id.clone();
                }
                debug!(task_id = %status.task_id, state = %status.state(), "sending status update");
                let msg = pb::AgentMessage {
                    message: Some(agent_message::Message::Update(
                        agent_message::StatusUpdate {
                            framework_id: t.framework_id.to_string(),
                            status: Some(status),
                        },
                    )),
                };
                if link.tx.send(msg).is_err() {
                    broken = true;
                    break;
                }
            }
        }
        if !broken && now >= self.next_heartbeat {
            self.next_heartbeat = now + self.heartbeat_interval;
            let hb = pb::AgentMessage {
                message: Some(agent_message::Message::Heartbeat(
                    agent_message::Heartbeat {},
                )),
            };
            broken = link.tx.send(hb).is_err();
        }
        if broken {
            debug!("the stream to the manager is closed");
            self.link = None;
            self.shared.link.send_modify(|s| s.registered = false);
        }
    }

    /// Refreshes what the HTTP API shows.
    fn publish(&self) {
        let summaries: Vec<TaskSummary> = self
            .tasks
            .values()
            .map(|t| TaskSummary {
                framework_id: t.framework_id.clone(),
                task_id: t.task_id.clone(),
                name: t.info.name.clone(),
                state: t.state.wire_name().to_owned(),
                pid: t.pid,
                pending_updates: t.queue.len(),
                sandbox: t.sandbox.clone(),
            })
            .collect();
        let pending = summaries.iter().map(|s| s.pending_updates).sum();
        self.shared
            .pending_updates
            .store(pending, Ordering::Relaxed);
        if let Ok(mut tasks) = self.shared.tasks.lock() {
            *tasks = summaries;
        }
    }

    fn ack(&mut self, key: &TaskKey, uuid: &[u8]) {
        let (framework_id, task_id) = key;
        let Some(t) = self.tasks.get_mut(key) else {
            debug!(%framework_id, %task_id, "acknowledgement for an unknown task ignored");
            return;
        };
        match t.queue.ack(uuid) {
            AckOutcome::Unexpected => {
                debug!(%framework_id, %task_id, "unexpected acknowledgement ignored");
            }
            AckOutcome::Acked(status) => {
                debug!(%framework_id, %task_id, state = %status.state(), "update acknowledged");
                if status.state().is_terminal() && t.queue.is_empty() {
                    // Its checkpoint goes whole: nothing to rewrite first.
                    self.finish(key);
                } else {
                    t.updates_dirty = true;
                }
            }
        }
    }

    /// Forgets a task whose terminal update was acknowledged.
    fn finish(&mut self, key: &TaskKey) {
        let Some(t) = self.tasks.remove(key) else {
            return;
        };
        // The container was cleaned up when the terminal update was made.
        if let Some(dir) = &t.meta_dir
            && let Err(e) = fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(dir = %dir.display(), error = %e, "cannot remove the task checkpoint");
        }
        if let Some(parent) = t.meta_dir.as_deref().and_then(Path::parent) {
            fs::remove_dir(parent).ok(); // only if empty
        }
        info!(framework_id = %key.0, task_id = %key.1, state = %t.state, "task done");
    }

    /// Polls the tasks whose supervisors just exited (on SIGCHLD).
    fn supervisors_exited(&mut self) {
        let exited = self.process.reap();
        if exited.is_empty() {
            return;
        }
        let keys: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                !t.state.is_terminal()
                    && t.container
                        .as_ref()
                        .is_some_and(|c| exited.contains(&c.supervisor().0))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.poll_task(&key);
        }
    }

    /// The periodic work.
    fn tick(&mut self) {
        self.process.reap();
        let keys: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal() && t.container.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.step_kill(&key);
            self.poll_task(&key);
        }
        if Instant::now() >= self.next_usage {
            self.next_usage = Instant::now() + self.settings.usage_interval;
            self.measure_usage();
        }
    }

    /// Measures running tasks, keeps the figures for the HTTP API and
    /// reports them to the manager.
    fn measure_usage(&mut self) {
        use super::usage::{Root, scan};
        let roots: Vec<(TaskKey, Root)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state == TaskState::TaskRunning && t.kill.is_none())
            .filter_map(|(k, t)| {
                let root = match t.container.as_ref()? {
                    ContainerRecord::Process { supervisor_pid, .. } => Root::Below(*supervisor_pid),
                    ContainerRecord::Docker { .. } => Root::At(t.pid?),
                };
                Some((k.clone(), root))
            })
            .collect();
        let procs = if roots.is_empty() {
            Vec::new()
        } else {
            scan(Path::new("/proc"))
        };
        let usage = self.sampler.sample(unix_now(), &roots, &procs);
        if let Some(link) = self.link.as_ref().filter(|l| l.registered)
            && !usage.is_empty()
        {
            let msg = pb::AgentMessage {
                message: Some(agent_message::Message::Usage(agent_message::Usage {
                    tasks: usage
                        .iter()
                        .map(|u| pb::TaskUsage {
                            framework_id: u.framework_id.to_string(),
                            task_id: u.task_id.to_string(),
                            cpus: u.cpus_used,
                            mem: u.mem_rss_mib,
                        })
                        .collect(),
                })),
            };
            link.tx.send(msg).ok();
        }
        if let Ok(mut shown) = self.shared.usage.lock() {
            *shown = usage;
        }
    }

    /// Looks at a task's container and reports what changed.
    pub(super) fn poll_task(&mut self, key: &TaskKey) {
        let Some(t) = self.tasks.get_mut(key) else {
            return;
        };
        let Some(record) = &t.container else { return };
        if t.state.is_terminal() {
            return;
        }
        let status = match record {
            ContainerRecord::Process { .. } => self.process.status(record),
            ContainerRecord::Docker { .. } => self.docker.status(record),
        };
        let kill_reason = t.kill.as_ref().map(|k| k.reason);
        match status {
            ContainerStatus::Starting => {}
            ContainerStatus::Running { pid } => {
                if t.state == TaskState::TaskStaging {
                    t.pid = Some(pid);
                    self.update(
                        key,
                        TaskState::TaskRunning,
                        Reason::Unspecified,
                        format!("pid {pid}"),
                        None,
                    );
                }
            }
            ContainerStatus::Exited(exit) => {
                if t.state == TaskState::TaskStaging
                    && exit.error.is_none()
                    && let Some(pid) = exit.pid
                {
                    t.pid = Some(pid);
                    self.update(
                        key,
                        TaskState::TaskRunning,
                        Reason::Unspecified,
                        format!("pid {pid}"),
                        None,
                    );
                }
                let o = task::outcome(&exit, kill_reason);
                self.update(key, o.state, o.reason, o.message, o.exit_code);
                self.cleanup_container(key);
            }
            ContainerStatus::Lost { message } => {
                match kill_reason {
                    Some(reason) => self.update(key, TaskState::TaskKilled, reason, message, None),
                    None => self.update(
                        key,
                        TaskState::TaskFailed,
                        Reason::Unspecified,
                        message,
                        None,
                    ),
                }
                self.cleanup_container(key);
            }
        }
    }

    fn cleanup_container(&mut self, key: &TaskKey) {
        if let Some(record) = self.tasks.get(key).and_then(|t| t.container.as_ref()) {
            self.containerizer(record).cleanup(record);
        }
    }

    /// The containerizer of a container.
    fn containerizer(&self, record: &ContainerRecord) -> &dyn Containerizer {
        match record {
            ContainerRecord::Process { .. } => self.process.as_ref(),
            ContainerRecord::Docker { .. } => &self.docker,
        }
    }
}
