//! # strata-agent: Strata's node daemon (the Mesos agent analogue)
//!
//! One agent runs per node. It advertises the node's resources to the
//! manager, launches the tasks the manager sends it, supervises them,
//! checkpoints everything it must not forget, and reports every change of a
//! task's state reliably. [`spawn`] starts one inside the current tokio
//! runtime and returns an [`AgentHandle`]; `strata agent` is a thin wrapper
//! around it, and `strata supervise` around [`supervisor::main`].
//!
//! The agent speaks to the manager only through the protocol: this crate
//! depends on `strata-proto` (and `strata-sdk`'s HTTP client, for the route
//! table) and never on `strata-manager` (nor the manager on it). The Docker Engine client (bollard) and the process and user
//! system calls (nix, libc) live here, out of the manager's build.
//!
//! ## Pieces
//!
//! * **core** (an actor task) owns the task table, the update queues and the
//!   current stream to the manager. It reacts to manager messages and to a
//!   tick (`poll_interval`, 100 ms by default) that polls containers for
//!   exits, escalates kills, resends unacknowledged updates and sends
//!   heartbeats.
//! * **link** ([`link`]) keeps one `AgentLink.Attach` stream open to
//!   `http://{manager}` (h2c), with `authorization: Bearer <token>` when a
//!   token is set, reconnecting with a doubling backoff capped at 5 s.
//! * **containerizers** ([`containerizer`]): the [`containerizer::Containerizer`]
//!   trait, the process containerizer (supervisor + process group + optional
//!   cgroup v2, [`cgroup`]) and the Docker containerizer ([`docker`]: the
//!   task's image run through the Docker Engine by the same supervisor, in
//!   docker mode).
//! * **supervisor** ([`supervisor`]): a tiny synchronous program, one per
//!   task, started in its own session so that tasks outlive an agent restart
//!   or `kill -9`. Its command line is
//!   `<AgentConfig::supervisor…> --launch <work_dir>/meta/tasks/<framework>/<task>/launch.json`.
//! * **HTTP API** ([`http`]): health, task list, sandbox files, metrics.
//! * **sandbox GC** ([`gc`]).
//! * **service ports** ([`proxy`]): each app's service ports forwarded to
//!   its healthy instances, following the manager's route table.
//!
//! ## Checkpoint layout
//!
//! ```text
//! <work_dir>/meta/agent.json                                   {"agent_id": …}
//! <work_dir>/meta/tasks/<framework_id>/<task_id>/
//!     task.json        the TaskInfo, written before anything is launched
//!     updates.json     the latest state + unacknowledged updates, oldest first
//!     container.json   how to find the container (supervisor pid + start time, cgroup;
//!                      for Docker the container's name and launch id)
//!     kill.json        a kill in progress (reason, grace, when asked)
//!     launch.json      what the supervisor runs (argv, env, user, cgroup, or a Docker spec)
//!     supervisor.pid, task.pid, exit_status.json   written by the supervisor
//! <work_dir>/sandboxes/<framework_id>/<task_id>/
//!     stdout, stderr, supervisor.log, exit_status.json (a copy), task files
//! ```
//!
//! Every checkpoint is written atomically (temporary file, fsync, rename).
//! The supervisor's own files live in `meta/`, which tasks cannot write to,
//! so a task cannot forge its exit or make the agent signal another process.
//!
//! ## Launching
//!
//! `RunTask` → ids validated (no `/`, `..`, NUL, not empty; else `TASK_ERROR`)
//! → `task.json` checkpointed → task validated (resources, command; else
//! `TASK_ERROR`) → containerizer chosen by `container.type` → sandbox created
//! (owned by the task user) → cgroup created when available → `launch.json`
//! written → supervisor started (`container.json`). The supervisor writes
//! `task.pid` once the command runs; the agent then sends `TASK_RUNNING`
//! ("pid N"). Tasks run as `CommandInfo.user`, else `AgentConfig::task_user`,
//! else `nobody` when the agent is root; as the agent's user otherwise.
//!
//! A Docker task (`container.type` `DOCKER`) needs an image and host ports
//! among its `ports` (else `TASK_ERROR`); its command is optional. Its
//! sandbox is the agent user's and is mounted at `/mnt/mesos/sandbox`, the
//! container's working directory; its environment is Strata's variables and
//! the command's only; it runs as the image's user, limited to its `cpus`
//! and `mem`. The supervisor creates, starts, waits for and removes the
//! container (see [`docker`]); a missing image, an unreachable engine or a
//! refused container is `TASK_FAILED` (`REASON_CONTAINER_LAUNCH_FAILED`)
//! with the engine's reason.
//!
//! ## Exits and kills
//!
//! The agent polls `exit_status.json` (and the supervisor's liveness, by pid,
//! start time and command line, so a reused pid is not mistaken for it) every
//! tick, for tasks it started and tasks it recovered alike. Exit 0 →
//! `TASK_FINISHED`; non-zero → `TASK_FAILED` with the exit code; a signal not
//! sent by the agent → `TASK_FAILED` "killed by signal N"; a supervisor gone
//! without a record → `TASK_FAILED`. A kill sends SIGTERM to the task's
//! process group (and every process of its cgroup), then SIGKILL after the
//! grace (the kill's override, else the task's kill policy, else 3 s); the
//! final state is `TASK_KILLED` whatever the exit. When the command exits,
//! the supervisor SIGKILLs whatever is left of its process group, its cgroup
//! and its re-parented descendants. A Docker task's kill signals its
//! supervisor instead: SIGTERM (`docker stop` with the remaining grace), then
//! SIGUSR1 (`docker kill`). A Docker task whose supervisor is gone without a
//! record has its container force-removed when it is cleaned up.
//!
//! ## Status updates
//!
//! Each update gets a fresh uuid and is appended to the task's queue and
//! checkpointed (`updates.json`) before it is sent. Per task only the head
//! is in flight; it is resent with a doubling interval (from `status_retry`
//! up to 30 times it) until `AckUpdate` with its uuid arrives, then the next
//! goes out. On every (re-)registration all heads are sent at once. When a
//! terminal update is acknowledged the task is done: its `meta/` directory
//! is removed; its sandbox stays until the GC takes it.
//!
//! ## Recovery
//!
//! [`spawn`] reads `meta/` before it connects: the agent id, and for each
//! task its info, latest state, queue, container and kill (see
//! the `recovery` module). Tasks whose supervisor still runs are supervised again;
//! tasks that ended while the agent was down get their final update; tasks
//! whose checkpoint is unreadable are reported `TASK_FAILED`. The agent then
//! registers with its id and every task it holds, so a task's final state
//! reaches the manager even when the task ended while the agent was down.

#![warn(missing_docs)]

pub mod cgroup;
pub mod checkpoint;
pub mod config;
pub mod containerizer;
mod core;
pub mod docker;
#[cfg(test)]
mod docker_tests;
mod epoch;
pub mod error;
pub mod fetch;
pub mod gc;
pub mod http;
mod kill;
mod launch;
pub mod layout;
pub mod link;
pub mod process;
pub mod proxy;
mod recovery;
pub mod supervisor;
pub mod task;
pub mod updates;
pub mod usage;

pub use config::{AgentConfig, DEFAULT_LISTEN, DEFAULT_SANDBOX_RETENTION};
pub use core::TaskSummary;
pub use error::AgentError;

use self::core::{Core, CoreSettings, LinkState, Shared};
use containerizer::{DockerContainerizer, ProcessContainerizer};
use layout::Layout;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_proto::ids::AgentId;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A running agent. Dropping it stops the agent (as [`AgentHandle::shutdown`]
/// does, without waiting).
#[derive(Debug)]
pub struct AgentHandle {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    events: mpsc::Sender<self::core::CoreEvent>,
}

impl AgentHandle {
    /// The bound address of the HTTP API.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The agent id, once the manager assigned one (kept while disconnected).
    pub fn agent_id(&self) -> Option<AgentId> {
        self.shared.link.borrow().agent_id.clone()
    }

    /// The tasks the agent holds (as `GET /v1/tasks` shows them).
    pub fn tasks(&self) -> Vec<TaskSummary> {
        self.shared
            .tasks
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Whether the agent is registered on its current stream.
    pub fn is_registered(&self) -> bool {
        self.shared.link.borrow().registered
    }

    /// Waits until the agent is registered with the manager, at most
    /// `timeout`.
    pub async fn wait_registered(&self, timeout: Duration) -> Result<AgentId, AgentError> {
        let mut rx = self.shared.link.subscribe();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.registered
                        && let Some(id) = &s.agent_id
                    {
                        return Ok(id.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(AgentError::Stopped);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| AgentError::RegistrationTimeout { waited: timeout })?
    }

    /// Kills every task (SIGTERM, then SIGKILL after its grace), waits up
    /// to `wait` for them to end, then stops the agent. Used when a local
    /// cluster stops as a whole; a real agent's stop keeps its tasks.
    pub async fn shutdown_with_tasks(self, wait: Duration) {
        let reason = strata_proto::pb::Reason::AgentRemoved;
        if self
            .events
            .send(self::core::CoreEvent::KillAll { reason })
            .await
            .is_ok()
        {
            let deadline = tokio::time::Instant::now() + wait;
            let mut delay = Duration::from_millis(20);
            while tokio::time::Instant::now() < deadline {
                let active = self.tasks().iter().any(|t| {
                    strata_proto::pb::TaskState::from_str_name(&t.state)
                        .is_some_and(|s| !s.is_terminal())
                });
                if !active {
                    break;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(200));
            }
        }
        self.shutdown().await;
    }

    /// Stops the agent: the link, the API and the GC stop; tasks keep
    /// running under their supervisors, and the next agent started on the
    /// same work dir recovers them.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for mut t in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
        info!(address = %self.address, "agent stopped");
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

fn prepare_work_dir(work_dir: &Path) -> Result<Layout, AgentError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(work_dir).map_err(|e| AgentError::io("creating", work_dir, e))?;
    let root = work_dir
        .canonicalize()
        .map_err(|e| AgentError::io("resolving", work_dir, e))?;
    let layout = Layout::new(root);
    for dir in [layout.tasks_meta_dir(), layout.sandboxes_dir()] {
        std::fs::create_dir_all(&dir).map_err(|e| AgentError::io("creating", &dir, e))?;
    }
    let meta = layout.meta_dir();
    std::fs::set_permissions(&meta, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| AgentError::io("setting permissions of", &meta, e))?;
    Ok(layout)
}

/// Warns when tasks run as another user that cannot reach their sandbox by
/// its absolute path (the working directory still works).
fn check_sandbox_reachable(layout: &Layout, config: &AgentConfig) {
    use std::os::unix::fs::PermissionsExt;
    if process::euid() != 0 || config.task_user.as_deref() == Some("root") {
        return;
    }
    let mut dir = Some(layout.sandboxes_dir());
    while let Some(d) = dir {
        if let Ok(m) = std::fs::metadata(&d)
            && m.permissions().mode() & 0o001 == 0
        {
            warn!(dir = %d.display(),
                "tasks run as another user but cannot traverse this directory: they can use their working directory, not the absolute sandbox path");
            return;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
}

/// Starts an agent: prepares the work dir, probes cgroups, binds the HTTP
/// API, recovers checkpointed tasks, and starts the link to the manager,
/// the core and the sandbox GC. Returns once the API is bound; registration
/// happens in the background ([`AgentHandle::wait_registered`]).
pub async fn spawn(config: AgentConfig) -> Result<AgentHandle, AgentError> {
    if config.supervisor.is_empty() {
        return Err(AgentError::NoSupervisor);
    }
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        return Err(AgentError::TokenRequired {
            addr: config.listen,
        });
    }
    let layout = prepare_work_dir(&config.work_dir)?;
    let authorization = match &config.token {
        Some(t) => Some(
            strata_proto::bearer(t)
                .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                .map_err(|_| AgentError::InvalidToken)?,
        ),
        None => None,
    };
    // Every manager of the list must be an address; they are tried in turn.
    let managers = strata_proto::net::managers(&config.manager);
    for m in &managers {
        link::endpoint(m).map_err(|source| AgentError::ManagerAddress {
            address: m.clone(),
            source,
        })?;
    }
    if managers.is_empty() {
        return Err(AgentError::NoManager);
    }
    let cgroups = match cgroup::Cgroups::probe(Path::new(cgroup::CGROUP_ROOT)) {
        Ok(c) => {
            info!("cgroup v2 available, task limits enforced");
            Some(c)
        }
        Err(e) => {
            info!(
                "cgroup v2 unavailable, task limits not enforced: {}",
                e.reason
            );
            None
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: config.listen,
        source,
    })?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| default_advertise(address, &config));
    check_sandbox_reachable(&layout, &config);

    let recovered = recovery::recover(&layout);
    let (link_state, _) = watch::channel(LinkState::default());
    let shared = Arc::new(Shared {
        link: link_state,
        cgroups: cgroups.is_some(),
        tasks: Mutex::new(Vec::new()),
        usage: Mutex::new(Vec::new()),
        pending_updates: AtomicUsize::new(0),
        layout: layout.clone(),
        token: config.token.clone(),
    });
    let process = Arc::new(ProcessContainerizer::new(
        config.supervisor.clone(),
        cgroups,
    ));
    let docker = DockerContainerizer::new(process.clone(), config.docker_host.clone());
    let settings = CoreSettings {
        hostname: config.hostname.clone(),
        advertise: advertise.clone(),
        resources: config.resources.clone(),
        attributes: config.attributes.clone(),
        task_user: config.task_user.clone(),
        program: config.supervisor.first().cloned(),
        retry: updates::RetryPolicy::new(config.status_retry),
        heartbeat_interval: config
            .heartbeat_interval
            .clamp(Duration::from_millis(10), Duration::from_secs(3600)),
        usage_interval: config
            .usage_interval
            .clamp(Duration::from_millis(100), Duration::from_secs(3600)),
    };
    let core = Core::new(
        settings,
        layout.clone(),
        shared.clone(),
        process,
        docker,
        recovered.agent_id.clone(),
        recovered.tasks,
    );
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (events_tx, events_rx) = mpsc::channel(1024);
    let kill_tx = events_tx.clone();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(
        core.run(
            events_rx,
            shutdown_rx.clone(),
            config
                .poll_interval
                .clamp(Duration::from_millis(5), Duration::from_secs(10)),
        ),
    ));
    tasks.push(tokio::spawn(link::run(
        link::LinkSettings {
            managers: managers.clone(),
            epochs: Arc::new(epoch::EpochGuard::load(
                layout.meta_dir().join("manager_epoch"),
            )),
            authorization,
            first_backoff: config
                .reconnect_backoff
                .clamp(Duration::from_millis(1), link::MAX_BACKOFF),
        },
        events_tx,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(gc::run(
        shared.clone(),
        config.sandbox_retention,
        config
            .gc_interval
            .clamp(Duration::from_millis(10), Duration::from_secs(24 * 3600)),
        shutdown_rx.clone(),
    )));
    if config.service_ports {
        tasks.push(tokio::spawn(proxy::run(
            proxy::ProxySettings {
                managers: config.manager.clone(),
                token: config.token.clone(),
                bind: address.ip(),
                retry: config
                    .reconnect_backoff
                    .clamp(Duration::from_secs(1), Duration::from_secs(5)),
            },
            shutdown_rx.clone(),
        )));
    }
    let app = http::router(shared.clone());
    let mut stop = shutdown_rx;
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            stop.wait_for(|s| *s).await.ok();
        });
        if let Err(e) = serve.await {
            warn!(error = %e, "the agent api stopped");
        }
    }));
    info!(address = %address, advertise = %advertise, manager = %config.manager,
        work_dir = %layout.root().display(), resources = %config.resources,
        agent_id = ?recovered.agent_id, "agent started");
    Ok(AgentHandle {
        address,
        shared,
        shutdown,
        tasks,
        events: kill_tx,
    })
}

/// The address the agent tells the manager when none is configured: the
/// bound address, or, bound to every interface, this host's address toward
/// the manager (the one the manager's network routes back to), else the
/// hostname.
fn default_advertise(bound: SocketAddr, config: &AgentConfig) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    match strata_proto::net::local_ip_toward(strata_proto::net::first_manager(&config.manager)) {
        Ok(ip) => SocketAddr::new(ip, bound.port()).to_string(),
        Err(e) => {
            warn!(manager = %config.manager, error = %e,
                "cannot find this host's address toward the manager; advertising the hostname");
            format!("{}:{}", config.hostname, bound.port())
        }
    }
}

#[cfg(test)]
mod tests;
