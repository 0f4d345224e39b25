//! Executors from a Strata cluster: the driver is a framework on the
//! manager. It declares demand for as many executor-shaped tasks as the
//! core wants, launches `strata executor` (or a job binary in executor
//! mode) on the offers, spreading over agents, suppresses offers when it
//! needs nothing, and reports executor tasks that end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use strata_sdk::{
    AgentId, Ask, Event, FrameworkConfig, Resources, Role, Scheduler, SchedulerConfig,
    SchedulerHandle, TaskBuilder, TaskId,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::dag::ExecutorId;
use super::{Command, DriverError};

/// Where and how executors are launched on a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSource {
    /// The manager's address (`host:port`).
    pub manager: String,
    /// Its bearer token, if it has one.
    pub token: Option<String>,
    /// The framework's name.
    pub name: String,
    /// The framework's role.
    pub role: String,
    /// The priority class of its executors.
    pub class: String,
    /// The program agents start (`strata`, or a job binary).
    pub program: PathBuf,
    /// Arguments before the executor's own (`["executor"]` for `strata`).
    pub program_args: Vec<String>,
    /// Files the agent fetches into each executor's sandbox first (a job
    /// binary, when `program` is `./NAME`).
    pub uris: Vec<strata_sdk::Uri>,
    /// Environment for executors (object store credentials, log filters).
    pub env: Vec<(String, String)>,
    /// The user executors run as (as Mesos's `FrameworkInfo.user`): by
    /// default the driver's, so executors read what the driver can.
    pub user: Option<String>,
    /// How long the manager keeps executors after the driver is gone.
    pub failover_timeout: Duration,
    /// An existing framework to take over (Mesos failover: subscribing
    /// with its id), instead of registering a new one. Its tasks keep
    /// running; the driver launches executors into it.
    pub framework_id: Option<String>,
    /// Whether executors may run on revocable cpus (idle cpus of
    /// higher-class tasks) when no regular room fits. Revoked executors are
    /// lost executors: their lost outputs run again.
    pub revocable: bool,
}

impl ClusterSource {
    /// `strata executor` launched from `program`, on the manager at `manager`.
    pub fn new(manager: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        ClusterSource {
            manager: manager.into(),
            token: None,
            name: "strata-batch".into(),
            role: "*".into(),
            class: "batch".into(),
            program: program.into(),
            program_args: vec!["executor".into()],
            uris: Vec::new(),
            env: Vec::new(),
            user: current_user(),
            failover_timeout: Duration::from_secs(10),
            framework_id: None,
            revocable: false,
        }
    }
}

/// The name of this process's user (from `/proc/self/status` and
/// `/etc/passwd`), if it can be found.
pub fn current_user() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned())
    })
}

pub(crate) enum LauncherCmd {
    Want(usize),
    Kill(ExecutorId),
    Shutdown(oneshot::Sender<()>),
}

/// Subscribes and starts the launcher task; returns its commands' sender
/// and the framework's id.
pub(crate) async fn start(
    source: ClusterSource,
    resources: Resources,
    executor_args: impl Fn(&ExecutorId) -> Vec<String> + Send + 'static,
    core: mpsc::UnboundedSender<Command>,
) -> Result<(mpsc::UnboundedSender<LauncherCmd>, String), DriverError> {
    let mut fw = FrameworkConfig::new(source.name.clone());
    fw.role = Role::new(source.role.clone());
    fw.default_class = source.class.clone();
    fw.failover_timeout = source.failover_timeout;
    fw.framework_id = source
        .framework_id
        .as_ref()
        .map(|id| strata_sdk::FrameworkId::new(id.clone()));
    let mut cfg = SchedulerConfig::new(source.manager.clone(), fw);
    cfg.token = source.token.clone();
    let (handle, events) = Scheduler::subscribe(cfg)
        .await
        .map_err(|e| DriverError::Cluster(format!("subscribing to {}: {e}", source.manager)))?;
    handle.suppress().await.ok();
    let framework_id = handle.framework_id().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    let l = Launcher {
        source,
        resources,
        executor_args: Box::new(executor_args),
        core,
        handle,
        want: 0,
        launched: HashMap::new(),
        next: 0,
        demand: None,
    };
    tokio::spawn(l.run(events, rx));
    Ok((tx, framework_id))
}

type ArgsFn = Box<dyn Fn(&ExecutorId) -> Vec<String> + Send>;

struct Launcher {
    source: ClusterSource,
    resources: Resources,
    executor_args: ArgsFn,
    core: mpsc::UnboundedSender<Command>,
    handle: SchedulerHandle,
    want: usize,
    /// Executor tasks not yet ended, and their agents.
    launched: HashMap<ExecutorId, AgentId>,
    next: u64,
    demand: Option<usize>,
}

impl Launcher {
    async fn run(
        mut self,
        mut events: strata_sdk::EventStream,
        mut cmds: mpsc::UnboundedReceiver<LauncherCmd>,
    ) {
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(LauncherCmd::Want(n)) => {
                        self.want = n;
                        self.update_demand().await;
                    }
                    Some(LauncherCmd::Kill(id)) => {
                        let agent = self.launched.get(&id).cloned();
                        if let Err(e) = self.handle.kill(TaskId::new(id.as_str()), agent).await {
                            warn!(executor = %id, error = %e, "cannot kill executor task");
                        }
                    }
                    Some(LauncherCmd::Shutdown(done)) => {
                        self.handle.teardown().await.ok();
                        done.send(()).ok();
                        return;
                    }
                    None => {
                        self.handle.teardown().await.ok();
                        return;
                    }
                },
                event = events.next() => match event {
                    Some(Event::Offers(offers)) => self.on_offers(offers).await,
                    Some(Event::Update(s)) => {
                        if s.is_terminal() {
                            let id = ExecutorId::new(s.task_id.to_string());
                            if self.launched.remove(&id).is_some() {
                                let message = format!(
                                    "executor task {} ended {} ({}){}",
                                    id,
                                    s.state.as_str_name(),
                                    s.reason.as_str_name(),
                                    if s.message.is_empty() { String::new() } else { format!(": {}", s.message) }
                                );
                                self.core.send(Command::ExecutorTaskEnded { id, message }).ok();
                                self.update_demand().await;
                            }
                        }
                    }
                    Some(Event::Subscribed { .. }) => {
                        // A re-subscription: the demand is repeated by the SDK.
                        self.demand = None;
                        self.update_demand().await;
                    }
                    Some(Event::AgentDraining { agent_id, .. }) => {
                        let ids: Vec<ExecutorId> = self
                            .launched
                            .iter()
                            .filter(|(_, a)| **a == agent_id)
                            .map(|(id, _)| id.clone())
                            .collect();
                        if !ids.is_empty() {
                            info!(agent = %agent_id, executors = ids.len(), "agent draining; retiring its executors");
                            self.core.send(Command::Retire(ids)).ok();
                        }
                    }
                    Some(Event::Error(e)) => warn!(error = %e, "manager error"),
                    Some(Event::Disconnected { reason }) => warn!(%reason, "lost the manager"),
                    Some(_) => {}
                    None => {
                        self.core.send(Command::ClusterLost("the manager closed the subscription".into())).ok();
                        return;
                    }
                }
            }
        }
    }

    fn missing(&self) -> usize {
        self.want.saturating_sub(self.launched.len())
    }

    async fn update_demand(&mut self) {
        let missing = self.missing();
        if self.demand == Some(missing) {
            return;
        }
        self.demand = Some(missing);
        let r = if missing == 0 {
            self.handle.suppress().await
        } else {
            let ask = Ask::new(
                self.source.class.clone(),
                self.resources.clone(),
                missing as u32,
            )
            .revocable(self.source.revocable);
            match self.handle.declare_demand(vec![ask]).await {
                Ok(()) => self.handle.revive().await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = r {
            warn!(error = %e, "cannot update demand");
        }
    }

    async fn on_offers(&mut self, mut offers: Vec<strata_sdk::Offer>) {
        // Spread: agents with fewer of our executors first.
        let per_agent = |a: &AgentId, launched: &HashMap<ExecutorId, AgentId>| {
            launched.values().filter(|x| *x == a).count()
        };
        offers.sort_by_key(|o| per_agent(&o.agent_id, &self.launched));
        for offer in offers {
            let mut tasks = Vec::new();
            let mut left = offer.resources.clone();
            let mut left_revocable = offer.revocable.clone();
            // Regular room first; revocable cpus (with regular mem) when
            // allowed and nothing regular is left.
            let mut on_lent_cpus = self.resources.clone();
            on_lent_cpus.cpus = Default::default();
            let lent_cpus = Resources {
                cpus: self.resources.cpus,
                ..Resources::default()
            };
            // One executor per agent per round while others remain to be
            // offered; more only when this offer is all there is.
            while self.missing() > tasks.len() {
                let (regular, revocable) = if left.contains(&self.resources) {
                    (self.resources.clone(), None)
                } else if self.source.revocable
                    && left_revocable.contains(&lent_cpus)
                    && left.contains(&on_lent_cpus)
                {
                    (on_lent_cpus.clone(), Some(lent_cpus.clone()))
                } else {
                    break;
                };
                left.subtract(&regular);
                if let Some(r) = &revocable {
                    left_revocable.subtract(r);
                }
                self.next += 1;
                let id =
                    ExecutorId::new(format!("{}-exec-{}", self.handle.framework_id(), self.next));
                let mut args = self.source.program_args.clone();
                args.extend((self.executor_args)(&id));
                let mut b = TaskBuilder::exec(
                    TaskId::new(id.as_str()),
                    self.source.program.to_string_lossy().into_owned(),
                    args,
                )
                .name(format!("executor {}", id))
                .resources(regular)
                .class(self.source.class.clone())
                .kill_grace(Duration::from_secs(2));
                if let Some(r) = revocable {
                    b = b.revocable(r);
                }
                if let Some(u) = &self.source.user {
                    b = b.user(u.clone());
                }
                for (k, v) in &self.source.env {
                    b = b.env(k.clone(), v.clone());
                }
                for uri in &self.source.uris {
                    b = b.uri(uri.clone());
                }
                tasks.push((id, b.build()));
                if self.missing() > tasks.len() && !tasks.is_empty() && self.launched.is_empty() {
                    // First round: keep spreading over the other offers.
                    break;
                }
            }
            if tasks.is_empty() {
                self.handle
                    .decline(vec![offer.id.clone()], Some(Duration::from_secs(1)))
                    .await
                    .ok();
                continue;
            }
            for (id, _) in &tasks {
                self.launched.insert(id.clone(), offer.agent_id.clone());
                info!(executor = %id, agent = %offer.agent_id, "launching executor");
            }
            let infos = tasks.into_iter().map(|(_, t)| t).collect();
            if let Err(e) = self.handle.launch(offer.id.clone(), infos).await {
                warn!(error = %e, "launch failed");
            }
        }
        self.update_demand().await;
    }
}
