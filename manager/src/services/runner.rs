//! The services scheduler's effectful shell: a framework subscribed to the
//! manager it runs in, around the sans-IO [`Services`].
//!
//! One tokio task owns the state. It takes API commands, scheduler events,
//! probe results and a one-second tick; after each it re-plans, carries
//! out the effects through the SDK, and writes the state to its
//! [`DocumentStore`] (`services.json`, or the cluster's store) before
//! answering the API call that changed it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use strata_proto::class::PriorityClasses;
use strata_proto::ids::{FrameworkId, TaskId};
use strata_proto::pb::TaskState;
use strata_proto::routes::RouteTable;
use strata_sdk::{Event, FrameworkConfig, Scheduler, SchedulerConfig, SchedulerHandle};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::app::{AppDefinition, AppId};
use super::autoscale::Metric;
use super::core::{Effect, Services, Snapshot, Timestamp, secs};
use super::error::ServiceError;
use super::probe;
use super::store::DocumentStore;

/// The services framework's name.
pub const FRAMEWORK_NAME: &str = "strata-services";

/// Declined offers are not made again for this long.
const DECLINE_REFUSE: Duration = Duration::from_secs(1);

/// How the runner starts.
#[derive(Clone)]
pub struct RunnerConfig {
    /// The manager's gRPC address.
    pub manager: String,
    /// The manager's token, if any.
    pub token: Option<String>,
    /// Where the state is kept.
    pub store: Arc<dyn DocumentStore>,
    /// The priority classes.
    pub classes: PriorityClasses,
    /// Reads the cpus the scheduler's tasks used (for the `cpu` autoscaling
    /// metric); without it, that metric has no samples.
    pub cpu_usage: Option<CpuUsageFn>,
}

/// Reads the cpus each running task of a framework used at its agent's
/// last sample.
pub type CpuUsageFn = std::sync::Arc<
    dyn Fn(
            FrameworkId,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = BTreeMap<TaskId, f64>> + Send>>
        + Send
        + Sync,
>;

/// A read of the state, answered with JSON.
pub type ReadFn = Box<dyn FnOnce(&Services) -> Result<Value, ServiceError> + Send>;
/// A change of the state, answered with JSON.
pub type WriteFn = Box<dyn FnOnce(&mut Services, Timestamp) -> Result<Value, ServiceError> + Send>;

/// A request from the API.
pub enum Command {
    /// Read the state.
    Read(ReadFn, oneshot::Sender<Result<Value, ServiceError>>),
    /// Change the state (answered once the change is durable).
    Write(WriteFn, oneshot::Sender<Result<Value, ServiceError>>),
}

/// How the API reaches the runner.
#[derive(Clone)]
pub struct ServicesHandle {
    tx: mpsc::Sender<Command>,
    routes: watch::Receiver<Arc<RouteTable>>,
}

/// What the runner takes: the API's commands, and where it publishes the
/// route table.
pub struct Inbox {
    commands: mpsc::Receiver<Command>,
    routes: watch::Sender<Arc<RouteTable>>,
}

impl ServicesHandle {
    /// A handle and the inbox the runner takes.
    pub fn channel() -> (ServicesHandle, Inbox) {
        let (tx, commands) = mpsc::channel(256);
        let (routes_tx, routes) = watch::channel(Arc::new(RouteTable::new(Vec::new())));
        (
            ServicesHandle { tx, routes },
            Inbox {
                commands,
                routes: routes_tx,
            },
        )
    }

    /// The route table, kept current by the runner (empty until it has
    /// loaded its state).
    pub fn routes(&self) -> watch::Receiver<Arc<RouteTable>> {
        self.routes.clone()
    }

    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<Value, ServiceError>>) -> Command,
    ) -> Result<Value, ServiceError> {
        let gone = || ServiceError::Unavailable {
            reason: "the services scheduler is not running".into(),
        };
        let (reply, wait) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        wait.await.map_err(|_| gone())?
    }

    /// Reads the state.
    pub async fn read(
        &self,
        f: impl FnOnce(&Services) -> Result<Value, ServiceError> + Send + 'static,
    ) -> Result<Value, ServiceError> {
        self.ask(|r| Command::Read(Box::new(f), r)).await
    }

    /// Changes the state.
    pub async fn write(
        &self,
        f: impl FnOnce(&mut Services, Timestamp) -> Result<Value, ServiceError> + Send + 'static,
    ) -> Result<Value, ServiceError> {
        self.ask(|r| Command::Write(Box::new(f), r)).await
    }
}

/// The state file.
#[derive(Default, Serialize, Deserialize)]
struct StateFile {
    framework_id: Option<String>,
    #[serde(default)]
    services: Snapshot,
}

enum Probe {
    Health {
        task: TaskId,
        result: Result<String, probe::ProbeError>,
    },
    Metric {
        app: AppId,
        samples: Vec<f64>,
    },
}

struct Runner {
    cfg: RunnerConfig,
    core: Services,
    framework_id: Option<FrameworkId>,
    handle: Option<SchedulerHandle>,
    probes_tx: mpsc::Sender<Probe>,
    /// Tasks with a health check in flight, and when each was last checked.
    checking: BTreeSet<TaskId>,
    last_check: BTreeMap<TaskId, Timestamp>,
    last_sample: BTreeMap<AppId, Timestamp>,
    sampling: BTreeSet<AppId>,
    dirty: bool,
    /// Where the route table is published.
    routes: watch::Sender<Arc<RouteTable>>,
}

/// Each instance's cpu use as a percentage of its `cpus` (instances not
/// measured yet give no sample).
fn cpu_percentages(tasks: &[TaskId], used: &BTreeMap<TaskId, f64>, cpus: f64) -> Vec<f64> {
    if cpus <= 0.0 {
        return Vec::new();
    }
    tasks
        .iter()
        .filter_map(|t| used.get(t))
        .map(|u| u / cpus * 100.0)
        .collect()
}

/// Answers a command with [`ServiceError::Unavailable`] and `reason`.
fn refuse(c: Command, reason: &str) {
    let reply = match c {
        Command::Read(_, reply) | Command::Write(_, reply) => reply,
    };
    reply
        .send(Err(ServiceError::Unavailable {
            reason: reason.to_owned(),
        }))
        .ok();
}

/// The state, read again every second until it can be (a store member
/// out of reach, an I/O error, a file to fix), with every command refused
/// meanwhile; `None` when the handles are dropped first.
async fn load_or_wait(
    store: &dyn DocumentStore,
    rx: &mut mpsc::Receiver<Command>,
) -> Option<StateFile> {
    loop {
        let e = match load(store).await {
            Ok(state) => return Some(state),
            Err(e) => e,
        };
        // Starting empty would later overwrite apps that are there but
        // cannot be read now: wait for them instead.
        let reason = format!("its state cannot be read ({e}); retrying every second");
        error!(error = %e, "services state cannot be read; the services scheduler waits for it");
        let retry = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = &mut retry => break,
                c = rx.recv() => match c {
                    Some(c) => refuse(c, &reason),
                    None => return None,
                },
            }
        }
    }
}

/// Runs the services scheduler until the handles are dropped.
pub async fn run(cfg: RunnerConfig, inbox: Inbox) {
    let Inbox {
        commands: mut rx,
        routes,
    } = inbox;
    let Some(state) = load_or_wait(cfg.store.as_ref(), &mut rx).await else {
        return;
    };
    let (probes_tx, mut probes_rx) = mpsc::channel(1024);
    let mut core = Services::new(cfg.classes.clone(), state.services);
    core.set_default_user(
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name),
    );
    let mut r = Runner {
        core,
        framework_id: state.framework_id.map(FrameworkId::new),
        cfg,
        handle: None,
        probes_tx,
        checking: BTreeSet::new(),
        last_check: BTreeMap::new(),
        last_sample: BTreeMap::new(),
        sampling: BTreeSet::new(),
        dirty: false,
        routes,
    };
    r.publish();
    let mut events = loop {
        match r.subscribe().await {
            Ok(events) => break events,
            Err(e) => {
                warn!(error = %e, "services scheduler cannot subscribe yet; retrying");
                // Answer API calls meanwhile (reads work; writes wait).
                let retry = tokio::time::sleep(Duration::from_millis(500));
                tokio::pin!(retry);
                loop {
                    tokio::select! {
                        _ = &mut retry => break,
                        c = rx.recv() => match c {
                            Some(c) => r.command(c).await,
                            None => return,
                        },
                    }
                }
            }
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            c = rx.recv() => match c {
                Some(c) => r.command(c).await,
                None => break,
            },
            e = events.next() => match e {
                Some(e) => r.event(e).await,
                None => {
                    warn!("services scheduler's subscription ended");
                    break;
                }
            },
            Some(p) = probes_rx.recv() => r.probe(p),
            _ = tick.tick() => r.tick(),
        }
        // A failed write is logged and retried after the next input.
        r.settle().await.ok();
    }
}

impl Runner {
    async fn subscribe(&mut self) -> Result<strata_sdk::EventStream, strata_sdk::SdkError> {
        let mut fw = FrameworkConfig::new(FRAMEWORK_NAME);
        fw.default_class = super::app::DEFAULT_APP_CLASS.into();
        fw.framework_id = self.framework_id.clone();
        let mut sc = SchedulerConfig::new(self.cfg.manager.clone(), fw);
        sc.token = self.cfg.token.clone();
        sc.suppressed = true;
        let (handle, events) = Scheduler::subscribe(sc).await?;
        let id = handle.framework_id();
        info!(framework_id = %id, "services scheduler subscribed");
        if self.framework_id.as_ref() != Some(&id) {
            self.framework_id = Some(id);
            self.dirty = true;
        }
        self.handle = Some(handle);
        Ok(events)
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Read(f, reply) => {
                reply.send(f(&self.core)).ok();
            }
            Command::Write(f, reply) => {
                if self.handle.is_none() {
                    reply
                        .send(Err(ServiceError::Unavailable {
                            reason: "not subscribed to the manager yet".into(),
                        }))
                        .ok();
                    return;
                }
                let result = f(&mut self.core, Timestamp::now());
                // Durable before answered.
                let result = match self.settle().await {
                    Ok(()) => result,
                    Err(e) => result.and(Err(ServiceError::Unavailable {
                        reason: format!(
                            "the change is made but not stored yet ({e}); it is retried"
                        ),
                    })),
                };
                reply.send(result).ok();
            }
        }
    }

    async fn event(&mut self, e: Event) {
        let now = Timestamp::now();
        match e {
            Event::Subscribed { .. } => {
                // Learn the fate of every instance we know of.
                let tasks: Vec<(TaskId, Option<strata_proto::ids::AgentId>)> = self
                    .core
                    .apps()
                    .flat_map(|(_, a)| a.instances.values())
                    .map(|i| (i.task_id.clone(), Some(i.agent_id.clone())))
                    .collect();
                if let Some(h) = &self.handle
                    && let Err(e) = h.reconcile(tasks).await
                {
                    warn!(error = %e, "reconciliation failed");
                }
                // Re-declare demand after a re-subscription.
                self.core.step(now);
            }
            Event::Offers(offers) => self.core.offers(now, offers),
            Event::Update(s) => self.core.status(now, &s),
            Event::Failure { agent_id, message } => {
                info!(agent_id = ?agent_id.map(|a| a.to_string()), message, "failure reported");
            }
            Event::Error(m) => warn!(message = m, "manager reported an error"),
            Event::Disconnected { reason } => warn!(reason, "services scheduler disconnected"),
            Event::AgentDraining { agent_id, .. } => self.core.agent_drain(agent_id, true),
            Event::AgentUndrained { agent_id } => self.core.agent_drain(agent_id, false),
            Event::Rescind(_) | Event::Heartbeat => {}
        }
        self.core.step(now);
    }

    fn probe(&mut self, p: Probe) {
        let now = Timestamp::now();
        match p {
            Probe::Health { task, result } => {
                self.checking.remove(&task);
                match result {
                    Ok(m) => self.core.health(now, &task, true, m),
                    Err(e) => self.core.health(now, &task, false, e.to_string()),
                }
            }
            Probe::Metric { app, samples } => {
                self.sampling.remove(&app);
                self.core.autoscale(now, &app, &samples);
            }
        }
        self.core.step(now);
    }

    /// Starts due health checks and metric samples, and re-plans.
    fn tick(&mut self) {
        let now = Timestamp::now();
        let mut live: BTreeSet<TaskId> = BTreeSet::new();
        for (id, app) in self.core.apps() {
            let check = app.def.health_checks.first();
            for i in app.instances.values() {
                live.insert(i.task_id.clone());
                let Some(hc) = check else { continue };
                if i.killing
                    || i.state != TaskState::TaskRunning
                    || self.checking.contains(&i.task_id)
                {
                    continue;
                }
                let last = self.last_check.get(&i.task_id).copied().unwrap_or_default();
                if now < last + secs(hc.interval_seconds) {
                    continue;
                }
                self.last_check.insert(i.task_id.clone(), now);
                self.checking.insert(i.task_id.clone());
                let (hc, tx, task) = (hc.clone(), self.probes_tx.clone(), i.task_id.clone());
                let target = probe::Target {
                    host: i.ip.clone(),
                    ports: i.ports.clone(),
                };
                tokio::spawn(async move {
                    let result = probe::check(&hc, &target).await;
                    tx.send(Probe::Health { task, result }).await.ok();
                });
            }
            let Some(policy) = app.policy() else { continue };
            if self.sampling.contains(id) {
                continue;
            }
            let last = self.last_sample.get(id).copied().unwrap_or_default();
            if now < last + policy.interval {
                continue;
            }
            self.last_sample.insert(id.clone(), now);
            self.sampling.insert(id.clone());
            let sampled = app
                .instances
                .values()
                .filter(|i| !i.killing && app.is_healthy(i));
            let (tx, app_id) = (self.probes_tx.clone(), id.clone());
            let path = match policy.metric {
                Metric::Http { path } => path,
                Metric::Cpu => {
                    let tasks: Vec<TaskId> = sampled.map(|i| i.task_id.clone()).collect();
                    let read = self.cfg.cpu_usage.clone();
                    let (fw, cpus) = (self.framework_id.clone(), app.def.cpus);
                    tokio::spawn(async move {
                        let used = match (read, fw) {
                            (Some(read), Some(fw)) => read(fw).await,
                            _ => BTreeMap::new(),
                        };
                        let samples = cpu_percentages(&tasks, &used, cpus);
                        tx.send(Probe::Metric {
                            app: app_id,
                            samples,
                        })
                        .await
                        .ok();
                    });
                    continue;
                }
            };
            let targets: Vec<probe::Target> = sampled
                .map(|i| probe::Target {
                    host: i.ip.clone(),
                    ports: i.ports.clone(),
                })
                .collect();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                for t in &targets {
                    match probe::metric(&path, t, Duration::from_secs(2)).await {
                        Ok(v) => samples.push(v),
                        Err(e) => warn!(app_id = %app_id, error = %e, "metric sample failed"),
                    }
                }
                tx.send(Probe::Metric {
                    app: app_id,
                    samples,
                })
                .await
                .ok();
            });
        }
        self.last_check.retain(|t, _| live.contains(t));
        self.core.step(now);
    }

    /// Carries out the effects of the last inputs, then writes the state
    /// (kept dirty, so written again later, when that fails).
    /// Publishes the route table if it changed.
    fn publish(&self) {
        let table = super::routes::table(&self.core);
        self.routes.send_if_modified(|t| {
            if t.version == table.version {
                return false;
            }
            *t = Arc::new(table);
            true
        });
    }

    async fn settle(&mut self) -> Result<(), super::store::DocumentError> {
        self.publish();
        let effects = self.core.drain();
        for e in effects {
            let Some(h) = self.handle.clone() else {
                if matches!(e, Effect::Persist) {
                    self.dirty = true;
                }
                continue;
            };
            let result = match e {
                Effect::Persist => {
                    self.dirty = true;
                    Ok(())
                }
                Effect::Launch { offer, tasks } => h.launch(offer, tasks).await,
                Effect::Decline(offers) => h.decline(offers, Some(DECLINE_REFUSE)).await,
                Effect::Kill { task, agent } => h.kill(task, agent).await,
                Effect::Demand(asks) if asks.is_empty() => h.suppress().await,
                Effect::Demand(asks) => h.declare_demand(asks).await,
            };
            if let Err(e) = result {
                warn!(error = %e, "services scheduler call failed");
            }
        }
        if !self.dirty {
            return Ok(());
        }
        let state = StateFile {
            framework_id: self.framework_id.as_ref().map(|f| f.to_string()),
            services: self.core.snapshot(),
        };
        let bytes = match serde_json::to_vec_pretty(&state) {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "services state not serialisable");
                self.dirty = false;
                return Ok(());
            }
        };
        match self.cfg.store.write(bytes).await {
            Ok(()) => {
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "cannot write services state");
                Err(e)
            }
        }
    }
}

/// Reads the state: empty when there is none, and when what is there
/// cannot be parsed (kept aside first); an error when it cannot be read.
async fn load(store: &dyn DocumentStore) -> Result<StateFile, super::store::DocumentError> {
    let Some(bytes) = store.read().await? else {
        return Ok(StateFile::default());
    };
    match serde_json::from_slice(&bytes) {
        Ok(state) => Ok(state),
        Err(e) => {
            let document = store.describe();
            match store.set_aside(bytes).await {
                Ok(kept) => warn!(document, kept, error = %e,
                    "services state unparseable; starting empty (the old one is kept)"),
                Err(aside) => {
                    error!(document, error = %aside,
                        "cannot keep the unparseable services state aside");
                    return Err(aside);
                }
            }
            Ok(StateFile::default())
        }
    }
}

/// Applies a JSON merge of `patch` over `app` (Marathon's partial `PUT`
/// and `PATCH`): top-level keys of the patch replace the app's.
pub fn merge(app: &AppDefinition, patch: Value) -> Result<AppDefinition, ServiceError> {
    let mut base = serde_json::to_value(app).map_err(|e| ServiceError::Invalid {
        details: vec![super::app::FieldError {
            path: "/".into(),
            errors: vec![e.to_string()],
        }],
    })?;
    if let (Some(b), Value::Object(p)) = (base.as_object_mut(), patch) {
        for (k, v) in p {
            b.insert(k, v);
        }
    }
    let bytes = serde_json::to_vec(&base).unwrap_or_default();
    super::app::parse(&bytes).map_err(|details| ServiceError::Invalid { details })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_samples_are_percentages_of_the_app_cpus() {
        let (a, b, c) = (TaskId::new("a"), TaskId::new("b"), TaskId::new("c"));
        let used = BTreeMap::from([(a.clone(), 0.25), (b.clone(), 0.5)]);
        // c is not measured yet: no sample.
        assert_eq!(cpu_percentages(&[a, b, c], &used, 0.5), vec![50.0, 100.0]);
        assert!(cpu_percentages(&[TaskId::new("a")], &used, 0.0).is_empty());
    }

    #[tokio::test]
    async fn a_state_that_cannot_be_read_is_never_replaced_by_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        // Not a file: reading it fails, and not with "not found" (a mode
        // 000 file would not do: the tests may run as root).
        let state_file = dir.path().join("services.json");
        std::fs::create_dir(&state_file).unwrap();
        let (handle, rx) = ServicesHandle::channel();
        let cfg = RunnerConfig {
            manager: "127.0.0.1:1".into(),
            token: None,
            store: Arc::new(crate::services::store::FileDocument::new(
                state_file.clone(),
            )),
            classes: PriorityClasses::default(),
            cpu_usage: None,
        };
        let runner = tokio::spawn(run(cfg, rx));
        for result in [
            handle.read(|_| Ok(Value::Null)).await,
            handle.write(|_, _| Ok(Value::Null)).await,
        ] {
            match result {
                Err(ServiceError::Unavailable { reason }) => {
                    assert!(reason.contains("services.json"), "{reason}");
                }
                other => panic!("expected unavailable, got {other:?}"),
            }
        }
        assert!(state_file.is_dir(), "the state was left as it was");
        drop(handle);
        runner.await.unwrap();
    }
}
