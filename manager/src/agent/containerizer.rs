//! Containerizers: how a task is started, watched and killed.
//!
//! [`ProcessContainerizer`] runs the task as a plain process tree under a
//! per-task supervisor (see [`super::supervisor`]), in a cgroup v2 when
//! available. [`DockerContainerizer`] is the slot for Docker; it refuses
//! every launch for now.
//!
//! A containerizer is stateless as far as recovery goes: everything needed
//! to find a container again is in its [`ContainerRecord`], which the agent
//! checkpoints as `container.json`.

use super::cgroup::{self, Cgroups};
use super::checkpoint::write_json;
use super::fetch::FetchUri;
use super::layout::files;
use super::process::{self, KillStep};
use super::supervisor::{self, ExitRecord, LAUNCH_VERSION, LaunchSpec, TaskUser};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use strata_proto::pb;
use strata_proto::resources::Resources;

/// Why a container could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// This kind of container is not available on this agent.
    #[error("{kind} containerizer not enabled")]
    NotEnabled {
        /// The container type asked for.
        kind: &'static str,
    },
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
    pub framework_id: &'a str,
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
    /// Reaps child processes that have exited (called periodically).
    fn reap(&self) {}
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

impl Containerizer for ProcessContainerizer {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn launch(&self, req: &LaunchRequest<'_>) -> Result<ContainerRecord, ContainerError> {
        let (program, prefix_args) = self
            .supervisor
            .split_first()
            .ok_or(ContainerError::NoSupervisor)?;
        let cgroup = match &self.cgroups {
            Some(cg) => {
                let path = cg.task_path(req.framework_id, &req.task.task_id);
                Some(
                    cg.create_task(req.framework_id, &req.task.task_id, req.resources)
                        .map_err(io_err("creating the cgroup", &path))?,
                )
            }
            None => None,
        };
        let launch_file = req.meta_dir.join(files::LAUNCH);
        let spec = LaunchSpec {
            version: LAUNCH_VERSION,
            framework_id: req.framework_id.to_owned(),
            task_id: req.task.task_id.clone(),
            argv: req.argv.clone(),
            env: req.env.clone(),
            sandbox: req.sandbox.to_owned(),
            user: req.user.clone(),
            cgroup: cgroup.clone(),
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
        };
        let cleanup_cgroup = |e| {
            if let Some(cg) = &cgroup {
                cgroup::remove(cg);
            }
            e
        };
        write_json(&launch_file, &spec).map_err(|e| {
            cleanup_cgroup(ContainerError::Io {
                action: "writing",
                path: launch_file.clone(),
                source: std::io::Error::other(e.to_string()),
            })
        })?;
        let log_path = req.sandbox.join(files::SUPERVISOR_LOG);
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&log_path)
            .map_err(|e| cleanup_cgroup(io_err("opening", &log_path)(e)))?;
        let log2 = log
            .try_clone()
            .map_err(|e| cleanup_cgroup(io_err("opening", &log_path)(e)))?;
        let mut cmd = Command::new(program);
        cmd.args(prefix_args)
            .args(supervisor::command_line(&[], &launch_file))
            .env_remove("STRATA_TOKEN")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: setsid is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| {
            cleanup_cgroup(ContainerError::Spawn {
                program: program.clone(),
                source,
            })
        })?;
        let pid = child.id() as i32;
        let start = process::proc_stat(pid).map(|s| s.start_time);
        if let Ok(mut children) = self.children.lock() {
            children.push(child);
        }
        Ok(ContainerRecord::Process {
            supervisor_pid: pid,
            supervisor_start_time: start,
            launch_file,
            cgroup,
        })
    }

    fn status(&self, record: &ContainerRecord) -> ContainerStatus {
        let ContainerRecord::Process {
            supervisor_pid,
            supervisor_start_time,
            launch_file,
            ..
        } = record;
        let dir = status_dir(launch_file);
        let needle = launch_file.to_string_lossy();
        // Liveness first: a supervisor writes its record before it exits,
        // so a dead supervisor without a record (read after) never recorded.
        let alive = process::is_alive(*supervisor_pid, *supervisor_start_time, Some(&needle));
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
        let ContainerRecord::Process {
            launch_file,
            cgroup,
            ..
        } = record;
        let dir = status_dir(launch_file);
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
        let ContainerRecord::Process {
            launch_file,
            cgroup,
            ..
        } = record;
        let dir = status_dir(launch_file);
        if supervisor::read_exit(dir).is_none() {
            // The supervisor is gone without cleaning up: kill what is left.
            if let Some(pgid) = supervisor::read_pid(&dir.join(files::TASK_PID)) {
                let _ = process::signal_group(pgid, KillStep::Kill.signal());
            }
            if let Some(cg) = cgroup {
                cgroup::kill_all(cg);
            }
        }
        if let Some(cg) = cgroup {
            cgroup::remove(cg);
        }
    }

    fn reap(&self) {
        if let Ok(mut children) = self.children.lock() {
            children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        }
    }
}

/// The place for the Docker containerizer; refuses every launch for now.
#[derive(Debug, Default)]
pub struct DockerContainerizer;

impl Containerizer for DockerContainerizer {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn launch(&self, _request: &LaunchRequest<'_>) -> Result<ContainerRecord, ContainerError> {
        Err(ContainerError::NotEnabled { kind: "docker" })
    }

    fn status(&self, _record: &ContainerRecord) -> ContainerStatus {
        ContainerStatus::Lost {
            message: "docker containerizer not enabled".into(),
        }
    }

    fn signal(&self, _record: &ContainerRecord, _step: KillStep) -> Signalled {
        Signalled::Gone
    }

    fn cleanup(&self, _record: &ContainerRecord) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_is_refused_with_a_clear_message() {
        let task = pb::TaskInfo::default();
        let req = LaunchRequest {
            framework_id: "fw",
            task: &task,
            resources: &Resources::default(),
            sandbox: Path::new("/nonexistent"),
            meta_dir: Path::new("/nonexistent"),
            argv: vec![],
            env: BTreeMap::new(),
            user: None,
        };
        let err = DockerContainerizer.launch(&req).unwrap_err();
        assert_eq!(err.to_string(), "docker containerizer not enabled");
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
