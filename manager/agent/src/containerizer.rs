//! Containerizers: how a task is started, watched and killed.
//!
//! [`ProcessContainerizer`] runs the task as a plain process tree under a
//! per-task supervisor (see [`super::supervisor`]), in a cgroup v2 when
//! available. [`DockerContainerizer`] runs the task's image through the
//! Docker Engine, under the same kind of supervisor in docker mode (see
//! [`super::docker`]): it only builds the [`DockerSpec`] the supervisor
//! runs; starting the supervisor, watching it, its exit record and cleanup
//! are the process containerizer's, which handles both kinds of record.
//!
//! A containerizer is stateless as far as recovery goes: everything needed
//! to find a container again is in its [`ContainerRecord`], which the agent
//! checkpoints as `container.json`.

use super::cgroup::{self, Cgroups};
use super::checkpoint::write_json;
use super::docker::{self, DockerError, DockerSpec};
use super::fetch::FetchUri;
use super::layout::files;
use super::process::{self, KillStep};
use super::supervisor::{self, ExitRecord, LAUNCH_VERSION, LaunchSpec, TaskUser};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use strata_proto::ids::{FrameworkId, TaskId};
use strata_proto::pb;
use strata_proto::resources::Resources;

/// Why a container could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The task cannot run in a container of this kind.
    #[error("invalid docker task: {0}")]
    Invalid(#[from] docker::InvalidDockerTask),
    /// The Docker Engine refused or cannot be reached.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// A file could not be written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The supervisor could not be started.
    #[error("cannot start the task supervisor {program:?}: {source}")]
    Spawn {
        /// The supervisor program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The supervisor command is empty.
    #[error("no supervisor command is configured")]
    NoSupervisor,
}

/// Everything a containerizer needs to launch one task.
#[derive(Debug, Clone)]
pub struct LaunchRequest<'a> {
    /// The task's framework.
    pub framework_id: &'a FrameworkId,
    /// The task.
    pub task: &'a pb::TaskInfo,
    /// Its resources (validated).
    pub resources: &'a Resources,
    /// The sandbox (exists, owned by the task user).
    pub sandbox: &'a Path,
    /// The task's meta dir (exists, private to the agent).
    pub meta_dir: &'a Path,
    /// The command line.
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: BTreeMap<String, String>,
    /// The user to switch to, if not the agent's.
    pub user: Option<TaskUser>,
}

/// How to find a launched container again (checkpointed as `container.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContainerRecord {
    /// A process tree under a supervisor.
    Process {
        /// The supervisor's pid.
        supervisor_pid: i32,
        /// Its start time (clock ticks since boot), against pid reuse.
        #[serde(default)]
        supervisor_start_time: Option<u64>,
        /// Its launch file (also its argument, so its identity).
        launch_file: PathBuf,
        /// The task's cgroup, when limits are enforced.
        #[serde(default)]
        cgroup: Option<PathBuf>,
    },
    /// A Docker container run by a supervisor in docker mode.
    Docker {
        /// The supervisor's pid.
        supervisor_pid: i32,
        /// Its start time (clock ticks since boot), against pid reuse.
        #[serde(default)]
        supervisor_start_time: Option<u64>,
        /// Its launch file (also its argument, so its identity).
        launch_file: PathBuf,
        /// The Docker Engine's address.
        host: String,
        /// The container's name.
        container: String,
        /// The launch's id (the container's [`docker::LABEL_LAUNCH`] label).
        launch_id: String,
    },
}

impl ContainerRecord {
    /// The supervisor of the container: its pid, start time and launch file.
    pub fn supervisor(&self) -> (i32, Option<u64>, &Path) {
        match self {
            ContainerRecord::Process {
                supervisor_pid,
                supervisor_start_time,
                launch_file,
                ..
            }
            | ContainerRecord::Docker {
                supervisor_pid,
                supervisor_start_time,
                launch_file,
                ..
            } => (*supervisor_pid, *supervisor_start_time, launch_file),
        }
    }
}

/// What a container is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerStatus {
    /// Being set up; the task's process is not started yet.
    Starting,
    /// The task's process runs with this pid.
    Running {
        /// The task's pid (also its process group).
        pid: i32,
    },
    /// The task ended, as recorded.
    Exited(ExitRecord),
    /// The container is gone without a record of how the task ended.
    Lost {
        /// What happened, for the status update.
        message: String,
    },
}

/// Whether a kill signal reached the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalled {
    /// Sent.
    Sent,
    /// The task's process is not known yet; try again later.
    NotYet,
    /// Nothing is left to signal.
    Gone,
}

/// Starts, watches and kills containers of one kind. Calls are quick
/// (a few system calls) and never block on the task.
pub trait Containerizer: Send + Sync {
    /// The container type this containerizer serves.
    fn kind(&self) -> &'static str;
    /// Launches a task; returns the record to checkpoint.
    fn launch(&self, request: &LaunchRequest<'_>) -> Result<ContainerRecord, ContainerError>;
    /// The current status of a container (also of one recovered after a
    /// restart of the agent).
    fn status(&self, record: &ContainerRecord) -> ContainerStatus;
    /// Sends one step of a kill to the whole container.
    fn signal(&self, record: &ContainerRecord, step: KillStep) -> Signalled;
    /// Releases what is left of a container that ended (or was lost).
    fn cleanup(&self, record: &ContainerRecord);
}

/// Runs tasks as process trees under `strata supervise`.
pub struct ProcessContainerizer {
    supervisor: Vec<String>,
    cgroups: Option<Cgroups>,
    children: Mutex<Vec<Child>>,
}

impl ProcessContainerizer {
    /// A containerizer starting supervisors with the `supervisor` argv
    /// prefix, using `cgroups` when given.
    pub fn new(supervisor: Vec<String>, cgroups: Option<Cgroups>) -> Self {
        ProcessContainerizer {
            supervisor,
            cgroups,
            children: Mutex::new(Vec::new()),
        }
    }

    /// Whether tasks get cgroups.
    pub fn cgroups_enabled(&self) -> bool {
        self.cgroups.is_some()
    }
}

fn status_dir(launch_file: &Path) -> &Path {
    launch_file.parent().unwrap_or_else(|| Path::new("."))
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.to_owned();
    move |source| ContainerError::Io {
        action,
        path,
        source,
    }
}

/// A supervisor just started.
struct Supervised {
    pid: i32,
    start_time: Option<u64>,
    launch_file: PathBuf,
}

impl ProcessContainerizer {
    /// Writes `launch.json` for a task and starts its supervisor (which
    /// makes a session of its own) with its output going to
    /// `supervisor.log`.
    fn spawn_supervisor(
        &self,
        req: &LaunchRequest<'_>,
        cgroup: Option<PathBuf>,
        docker: Option<DockerSpec>,
    ) -> Result<Supervised, ContainerError> {
        let (program, prefix_args) = self
            .supervisor
            .split_first()
            .ok_or(ContainerError::NoSupervisor)?;
        let launch_file = req.meta_dir.join(files::LAUNCH);
        let spec = LaunchSpec {
            version: LAUNCH_VERSION,
            framework_id: req.framework_id.clone(),
            task_id: TaskId::new(req.task.task_id.clone()),
            argv: req.argv.clone(),
            env: req.env.clone(),
            sandbox: req.sandbox.to_owned(),
            user: req.user.clone(),
            cgroup,
            uris: req
                .task
                .command
                .as_ref()
                .map(|c| {
                    c.uris
                        .iter()
                        .map(|u| FetchUri {
                            value: u.value.clone(),
                            executable: u.executable,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            docker,
            low_priority: req.task.resources.iter().any(|r| r.revocable),
        };
        write_json(&launch_file, &spec).map_err(|e| ContainerError::Io {
            action: "writing",
            path: launch_file.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let log_path = req.sandbox.join(files::SUPERVISOR_LOG);
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&log_path)
            .map_err(io_err("opening", &log_path))?;
        let log2 = log.try_clone().map_err(io_err("opening", &log_path))?;
        let mut cmd = Command::new(program);
        cmd.args(prefix_args)
            .args(supervisor::command_line(&[], &launch_file))
            .env_remove("STRATA_TOKEN")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // No `pre_exec`: the supervisor makes its own session, so the
        // spawn is a `posix_spawn` (no copy of the agent's page tables).
        let child = cmd.spawn().map_err(|source| ContainerError::Spawn {
            program: program.clone(),
            source,
        })?;
        let pid = child.id() as i32;
        let start_time = process::proc_stat(pid).map(|s| s.start_time);
        if let Ok(mut children) = self.children.lock() {
            children.push(child);
        }
        Ok(Supervised {
            pid,
            start_time,
            launch_file,
        })
    }
}

impl Containerizer for ProcessContainerizer {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn launch(&self, req: &LaunchRequest<'_>) -> Result<ContainerRecord, ContainerError> {
        let cgroup = match &self.cgroups {
            Some(cg) => {
                let task_id = TaskId::new(req.task.task_id.clone());
                let path = cg.task_path(req.framework_id, &task_id);
                Some(
                    cg.create_task(req.framework_id, &task_id, req.resources)
                        .map_err(io_err("creating the cgroup", &path))?,
                )
            }
            None => None,
        };
        match self.spawn_supervisor(req, cgroup.clone(), None) {
            Ok(s) => Ok(ContainerRecord::Process {
                supervisor_pid: s.pid,
                supervisor_start_time: s.start_time,
                launch_file: s.launch_file,
                cgroup,
            }),
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cgroup::remove(cg);
                }
                Err(e)
            }
        }
    }

    /// The same for both kinds of record: the supervisor's exit record,
    /// its liveness and `task.pid`.
    fn status(&self, record: &ContainerRecord) -> ContainerStatus {
        let (supervisor_pid, supervisor_start_time, launch_file) = record.supervisor();
        let dir = status_dir(launch_file);
        let needle = launch_file.to_string_lossy();
        // Liveness first: a supervisor writes its record before it exits,
        // so a dead supervisor without a record (read after) never recorded.
        let alive = process::is_alive(supervisor_pid, supervisor_start_time, Some(&needle));
        if let Some(exit) = supervisor::read_exit(dir) {
            return ContainerStatus::Exited(exit);
        }
        if !alive {
            return ContainerStatus::Lost {
                message: format!(
                    "the task supervisor (pid {supervisor_pid}) exited without recording how the task ended"
                ),
            };
        }
        match supervisor::read_pid(&dir.join(files::TASK_PID)) {
            Some(pid) => ContainerStatus::Running { pid },
            None => ContainerStatus::Starting,
        }
    }

    fn signal(&self, record: &ContainerRecord, step: KillStep) -> Signalled {
        let cgroup = match record {
            ContainerRecord::Process { cgroup, .. } => cgroup,
            ContainerRecord::Docker { .. } => return signal_docker(record, step),
        };
        let dir = status_dir(record.supervisor().2);
        if supervisor::read_exit(dir).is_some() {
            return Signalled::Gone;
        }
        let mut sent = false;
        if let Some(cg) = cgroup {
            match step {
                KillStep::Term => cgroup::signal_all(cg, step.signal()),
                KillStep::Kill => cgroup::kill_all(cg),
            }
            sent = true;
        }
        match supervisor::read_pid(&dir.join(files::TASK_PID)) {
            Some(pgid) => match process::signal_group(pgid, step.signal()) {
                Ok(true) => Signalled::Sent,
                Ok(false) if sent => Signalled::Sent,
                Ok(false) => Signalled::Gone,
                Err(e) => {
                    tracing::warn!(pgid, error = %e, "cannot signal the task's process group");
                    Signalled::Gone
                }
            },
            None => Signalled::NotYet,
        }
    }

    fn cleanup(&self, record: &ContainerRecord) {
        let dir = status_dir(record.supervisor().2);
        match record {
            ContainerRecord::Process { cgroup, .. } => {
                if supervisor::read_exit(dir).is_none() {
                    // The supervisor is gone without cleaning up: kill what is left.
                    if let Some(pgid) = supervisor::read_pid(&dir.join(files::TASK_PID)) {
                        process::signal_group(pgid, KillStep::Kill.signal()).ok();
                    }
                    if let Some(cg) = cgroup {
                        cgroup::kill_all(cg);
                    }
                }
                if let Some(cg) = cgroup {
                    cgroup::remove(cg);
                }
            }
            ContainerRecord::Docker { .. } => remove_docker(record),
        }
    }
}

impl ProcessContainerizer {
    /// Reaps the supervisors (of process and Docker tasks alike) that have
    /// exited; returns their pids.
    pub fn reap(&self) -> Vec<i32> {
        let mut exited = Vec::new();
        if let Ok(mut children) = self.children.lock() {
            children.retain_mut(|c| match c.try_wait() {
                Ok(None) => true,
                _ => {
                    exited.push(c.id() as i32);
                    false
                }
            });
        }
        exited
    }
}

/// One step of the kill of a Docker task: the supervisor is asked to stop
/// ([`docker::STOP_SIGNAL`]) or kill ([`docker::KILL_SIGNAL`]) its
/// container, once it has started it (`task.pid`).
fn signal_docker(record: &ContainerRecord, step: KillStep) -> Signalled {
    let (pid, start_time, launch_file) = record.supervisor();
    let dir = status_dir(launch_file);
    if supervisor::read_exit(dir).is_some() {
        return Signalled::Gone;
    }
    let needle = launch_file.to_string_lossy();
    if !process::is_alive(pid, start_time, Some(&needle)) {
        // Its container is removed when the task is cleaned up.
        return Signalled::Gone;
    }
    if supervisor::read_pid(&dir.join(files::TASK_PID)).is_none() {
        return Signalled::NotYet;
    }
    let signal = match step {
        KillStep::Term => docker::STOP_SIGNAL,
        KillStep::Kill => docker::KILL_SIGNAL,
    };
    match process::signal_pid(pid, signal) {
        Ok(true) => Signalled::Sent,
        Ok(false) => Signalled::Gone,
        Err(e) => {
            tracing::warn!(pid, error = %e, "cannot signal the task's supervisor");
            Signalled::Gone
        }
    }
}

/// Removes what is left of a Docker task: a supervisor still running
/// without a record is killed, and the launch's container is force-removed
/// (in the background; nothing when the supervisor removed it already).
pub(crate) fn remove_docker(record: &ContainerRecord) {
    let ContainerRecord::Docker {
        host,
        container,
        launch_id,
        ..
    } = record
    else {
        return;
    };
    let (pid, start_time, launch_file) = record.supervisor();
    let needle = launch_file.to_string_lossy();
    if supervisor::read_exit(status_dir(launch_file)).is_none()
        && process::is_alive(pid, start_time, Some(&needle))
    {
        process::signal_pid(pid, KillStep::Kill.signal()).ok();
    }
    docker::remove_in_background(host.clone(), launch_id.clone(), container.clone());
}

/// Runs tasks' images through the Docker Engine, each under a supervisor in
/// docker mode; everything but the launch is the shared supervisor path of
/// [`ProcessContainerizer`].
pub struct DockerContainerizer {
    process: Arc<ProcessContainerizer>,
    host: String,
}

impl DockerContainerizer {
    /// A containerizer starting supervisors through `process`, for the
    /// engine at `host` (`unix:///var/run/docker.sock`).
    pub fn new(process: Arc<ProcessContainerizer>, host: impl Into<String>) -> Self {
        DockerContainerizer {
            process,
            host: host.into(),
        }
    }

    /// The Docker Engine's address.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Containerizer for DockerContainerizer {
    fn kind(&self) -> &'static str {
        "docker"
    }

    /// Builds the task's [`DockerSpec`] and starts its supervisor; fails at
    /// once when the engine's socket is missing.
    fn launch(&self, req: &LaunchRequest<'_>) -> Result<ContainerRecord, ContainerError> {
        let launch_id = uuid::Uuid::new_v4().simple().to_string();
        let spec = DockerSpec::from_task(
            &self.host,
            req.framework_id,
            req.task,
            req.resources,
            &launch_id,
        )?;
        docker::check_socket(&self.host)?;
        let container = spec.name.clone();
        let s = self.process.spawn_supervisor(req, None, Some(spec))?;
        Ok(ContainerRecord::Docker {
            supervisor_pid: s.pid,
            supervisor_start_time: s.start_time,
            launch_file: s.launch_file,
            host: self.host.clone(),
            container,
            launch_id,
        })
    }

    fn status(&self, record: &ContainerRecord) -> ContainerStatus {
        self.process.status(record)
    }

    fn signal(&self, record: &ContainerRecord, step: KillStep) -> Signalled {
        self.process.signal(record, step)
    }

    fn cleanup(&self, record: &ContainerRecord) {
        self.process.cleanup(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker_task(image: &str) -> pb::TaskInfo {
        pb::TaskInfo {
            task_id: "t".into(),
            container: Some(pb::ContainerInfo {
                r#type: pb::container_info::Type::Docker as i32,
                docker: Some(pb::DockerInfo {
                    image: image.into(),
                    port_mappings: vec![],
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn docker_launches_fail_clearly_without_an_engine_or_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let process = Arc::new(ProcessContainerizer::new(vec!["/bin/false".into()], None));
        let c = DockerContainerizer::new(process, "unix:///nonexistent/docker.sock");
        assert_eq!(c.kind(), "docker");
        let launch = |task: &pb::TaskInfo| {
            c.launch(&LaunchRequest {
                framework_id: &"fw".into(),
                task,
                resources: &Resources::default(),
                sandbox: dir.path(),
                meta_dir: dir.path(),
                argv: vec![],
                env: BTreeMap::new(),
                user: None,
            })
        };
        let err = launch(&docker_task("strata-test/busybox")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot reach the Docker Engine at unix:///nonexistent/docker.sock: "),
            "{err}"
        );
        let err = launch(&docker_task("")).unwrap_err();
        assert!(matches!(err, ContainerError::Invalid(_)), "{err}");
        assert!(!dir.path().join(files::LAUNCH).exists());
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let r = ContainerRecord::Process {
            supervisor_pid: 42,
            supervisor_start_time: Some(7),
            launch_file: "/w/meta/tasks/f/t/launch.json".into(),
            cgroup: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""kind":"process""#));
        assert_eq!(serde_json::from_str::<ContainerRecord>(&text).unwrap(), r);
        let d = ContainerRecord::Docker {
            supervisor_pid: 43,
            supervisor_start_time: None,
            launch_file: "/w/meta/tasks/f/t/launch.json".into(),
            host: docker::DEFAULT_DOCKER_HOST.into(),
            container: "strata-f-t-0123abcd".into(),
            launch_id: "L".into(),
        };
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.contains(r#""kind":"docker""#), "{text}");
        assert_eq!(serde_json::from_str::<ContainerRecord>(&text).unwrap(), d);
        assert_eq!(d.supervisor().0, 43);
    }

    #[test]
    fn a_docker_task_whose_supervisor_died_is_lost_and_not_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new(vec!["/bin/false".into()], None);
        let record = ContainerRecord::Docker {
            supervisor_pid: i32::MAX - 1,
            supervisor_start_time: None,
            launch_file: dir.path().join(files::LAUNCH),
            host: "unix:///nonexistent/docker.sock".into(),
            container: "strata-f-t-0123abcd".into(),
            launch_id: "L".into(),
        };
        assert!(matches!(c.status(&record), ContainerStatus::Lost { .. }));
        std::fs::write(dir.path().join(files::TASK_PID), "4242\n").unwrap();
        assert_eq!(c.signal(&record, KillStep::Term), Signalled::Gone);
        assert_eq!(c.signal(&record, KillStep::Kill), Signalled::Gone);
    }

    #[test]
    fn a_dead_supervisor_without_a_record_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new(vec!["/bin/false".into()], None);
        let record = ContainerRecord::Process {
            supervisor_pid: i32::MAX - 1,
            supervisor_start_time: None,
            launch_file: dir.path().join(files::LAUNCH),
            cgroup: None,
        };
        assert!(matches!(c.status(&record), ContainerStatus::Lost { .. }));
        std::fs::write(
            dir.path().join(files::EXIT_STATUS),
            r#"{"exit_code":0,"finished_at":1.0}"#,
        )
        .unwrap();
        assert!(matches!(c.status(&record), ContainerStatus::Exited(e) if e.exit_code == Some(0)));
        assert_eq!(c.signal(&record, KillStep::Term), Signalled::Gone);
    }
}
