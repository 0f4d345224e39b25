//! Launching a task: checkpoint, validation, user, sandbox, environment,
//! then the containerizer.

use super::checkpoint::{TaskCheckpoint, write_json};
use super::containerizer::{ContainerError, ContainerRecord, Containerizer, LaunchRequest};
use super::core::{Core, Task, TaskKey};
use super::docker::{CONTAINER_SANDBOX, DockerSpec};
use super::layout::{files, validate_id};
use super::supervisor::{TaskUser, unix_now};
use super::task::{self, TaskContext};
use std::fs;
use std::path::{Path, PathBuf};
use strata_proto::ids::{FrameworkId, TaskId};
use strata_proto::pb::{self, Reason, TaskState};
use strata_proto::resources::Resources;
use tracing::{debug, error, info, warn};

impl Core {
    /// Handles `RunTask`: see the module docs of [`super`] for the steps.
    /// Every failure becomes a checkpointed terminal update.
    pub(super) fn run_task(&mut self, framework_id: FrameworkId, info: Option<pb::TaskInfo>) {
        let Some(info) = info else {
            warn!(framework_id = %framework_id, "run task without a task ignored");
            return;
        };
        let key: TaskKey = (framework_id.clone(), TaskId::new(info.task_id.clone()));
        if let Some(t) = self.tasks.get_mut(&key) {
            info!(framework_id = %framework_id, task_id = %info.task_id, state = %t.state,
                "duplicate run task ignored");
            if t.queue.is_empty() {
                let state = t.state;
                self.update(
                    &key,
                    state,
                    Reason::Unspecified,
                    "task already launched".into(),
                    None,
                );
            } else {
                t.queue.reset();
            }
            return;
        }
        if let Err(e) = validate_id("framework", framework_id.as_str())
            .and_then(|()| validate_id("task", &info.task_id))
        {
            warn!(framework_id = %framework_id, task_id = %info.task_id, error = %e, "task refused");
            self.tasks
                .insert(key.clone(), Task::new(&framework_id, info, None));
            self.update(
                &key,
                TaskState::TaskError,
                Reason::TaskInvalid,
                e.to_string(),
                None,
            );
            return;
        }
        let meta_dir = self.layout.task_meta_dir(&key.0, &key.1);
        let sandbox = self.layout.sandbox_dir(&key.0, &key.1);
        let checkpointed = fs::create_dir_all(&meta_dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let cp = TaskCheckpoint::new(&framework_id, &info, unix_now());
                write_json(&meta_dir.join(files::TASK), &cp).map_err(|e| e.to_string())
            });
        let mut task = Task::new(&framework_id, info, Some(meta_dir.clone()));
        if let Err(e) = checkpointed {
            error!(framework_id = %framework_id, task_id = %task.info.task_id, error = %e,
                "cannot checkpoint the task");
            task.meta_dir = None;
            self.tasks.insert(key.clone(), task);
            let msg = format!("the agent cannot checkpoint the task: {e}");
            self.update(
                &key,
                TaskState::TaskFailed,
                Reason::ContainerLaunchFailed,
                msg,
                None,
            );
            return;
        }
        // No `updates.json` yet: a missing one reads as staging with nothing
        // pending, and its first write (at the end of this turn of the
        // core) is then a new file, which ext4 does not flush at once as it
        // does a file renamed over another.
        let info = task.info.clone();
        self.tasks.insert(key.clone(), task);
        match self.launch(&framework_id, &info, &meta_dir, &sandbox) {
            Ok(record) => {
                if let Err(e) = write_json(&meta_dir.join(files::CONTAINER), &record) {
                    error!(task_id = %info.task_id, error = %e, "cannot checkpoint the container");
                }
                info!(framework_id = %framework_id, task_id = %info.task_id,
                    sandbox = %sandbox.display(), "task launched");
                if let Some(t) = self.tasks.get_mut(&key) {
                    t.container = Some(record);
                    t.sandbox = Some(sandbox.clone());
                }
                self.poll_task(&key);
            }
            Err((state, reason, message)) => {
                warn!(framework_id = %framework_id, task_id = %info.task_id, error = %message,
                    "task launch failed");
                self.update(&key, state, reason, message, None);
            }
        }
    }

    /// Validates and launches a task; on failure, the update to send.
    fn launch(
        &mut self,
        framework_id: &FrameworkId,
        info: &pb::TaskInfo,
        meta_dir: &Path,
        sandbox: &Path,
    ) -> Result<ContainerRecord, (TaskState, Reason, String)> {
        let invalid = |m: String| (TaskState::TaskError, Reason::TaskInvalid, m);
        let failed = |m: String| (TaskState::TaskFailed, Reason::ContainerLaunchFailed, m);
        let (mut resources, revocable) = Resources::from_proto_split(&info.resources)
            .map_err(|e| invalid(format!("invalid resources: {e}")))?;
        // Revocable cpus are the task's too (its limits); it runs at the
        // lowest cpu priority so their lenders get them back at once.
        resources.cpus += revocable.cpus;
        let docker = info
            .container
            .as_ref()
            .is_some_and(|c| c.r#type() == pb::container_info::Type::Docker);
        if docker {
            return self.launch_docker(framework_id, info, &resources, meta_dir, sandbox);
        }
        let command = info
            .command
            .as_ref()
            .ok_or_else(|| invalid("the task has no command".into()))?;
        let argv = task::argv(command, self.settings.program.as_deref())
            .map_err(|m| invalid(m.to_owned()))?;
        let user = self
            .task_user(&command.user)
            .map_err(|e| failed(e.to_string()))?;
        prepare_sandbox(sandbox, user.as_ref()).map_err(|e| {
            failed(format!(
                "cannot create the sandbox {}: {e}",
                sandbox.display()
            ))
        })?;
        let agent_id = self.agent_id_str();
        let home = user.as_ref().map(|u| user_home(&u.name));
        let ctx = TaskContext {
            framework_id,
            agent_id: &agent_id,
            sandbox,
            hostname: &self.settings.hostname,
            program: self.settings.program.as_deref(),
            user: user
                .as_ref()
                .zip(home.as_ref())
                .map(|(u, h)| (u.name.as_str(), h.as_path())),
        };
        let env = task::environment(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            info,
            &ctx,
        );
        self.process
            .launch(&LaunchRequest {
                framework_id,
                task: info,
                resources: &resources,
                sandbox,
                meta_dir,
                argv,
                env,
                user,
            })
            .map_err(|e| failed(e.to_string()))
    }

    /// Launches a Docker task: its command is optional (the image's own
    /// otherwise), it runs as the image's user, its sandbox (owned by the
    /// agent's user) is mounted in the container, and its environment is
    /// only Strata's variables and the command's (none of the agent's).
    fn launch_docker(
        &mut self,
        framework_id: &FrameworkId,
        info: &pb::TaskInfo,
        resources: &Resources,
        meta_dir: &Path,
        sandbox: &Path,
    ) -> Result<ContainerRecord, (TaskState, Reason, String)> {
        let invalid = |m: String| (TaskState::TaskError, Reason::TaskInvalid, m);
        let failed = |m: String| (TaskState::TaskFailed, Reason::ContainerLaunchFailed, m);
        // Checked before anything is created for it.
        DockerSpec::from_task(self.docker.host(), framework_id, info, resources, "check")
            .map_err(|e| invalid(e.to_string()))?;
        prepare_sandbox(sandbox, None).map_err(|e| {
            failed(format!(
                "cannot create the sandbox {}: {e}",
                sandbox.display()
            ))
        })?;
        let agent_id = self.agent_id_str();
        let ctx = TaskContext {
            framework_id,
            agent_id: &agent_id,
            sandbox: Path::new(CONTAINER_SANDBOX),
            hostname: &self.settings.hostname,
            user: None,
            program: None,
        };
        let env = task::environment(std::iter::empty(), info, &ctx);
        self.docker
            .launch(&LaunchRequest {
                framework_id,
                task: info,
                resources,
                sandbox,
                meta_dir,
                argv: Vec::new(),
                env,
                user: None,
            })
            .map_err(|e| match e {
                ContainerError::Invalid(m) => invalid(m.to_string()),
                e => failed(e.to_string()),
            })
    }

    /// The user to switch to for a task (`None`: stay the agent's user).
    fn task_user(&self, asked: &str) -> Result<Option<TaskUser>, UserError> {
        if !self.is_root {
            if !asked.is_empty() {
                debug!(user = asked, "not root: the task runs as the agent's user");
            }
            return Ok(None);
        }
        let name = if !asked.is_empty() {
            asked
        } else {
            self.settings.task_user.as_deref().unwrap_or("nobody")
        };
        resolve_user(name)
    }
}

/// Why a task's user cannot be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UserError {
    /// The user database could not be read.
    #[error("cannot look up user {name:?}: {source}")]
    Lookup {
        /// The user asked for.
        name: String,
        /// The error.
        #[source]
        source: nix::errno::Errno,
    },
    /// No such user.
    #[error("unknown user {0:?}")]
    Unknown(String),
}

/// Looks a user up; `None` when it is root (nothing to switch).
pub(crate) fn resolve_user(name: &str) -> Result<Option<TaskUser>, UserError> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|source| UserError::Lookup {
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| UserError::Unknown(name.to_owned()))?;
    if user.uid.is_root() {
        return Ok(None);
    }
    let groups = std::ffi::CString::new(name)
        .ok()
        .and_then(|c| nix::unistd::getgrouplist(&c, user.gid).ok())
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|| vec![user.gid.as_raw()]);
    Ok(Some(TaskUser {
        name: name.to_owned(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
    }))
}

fn user_home(name: &str) -> PathBuf {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.dir)
        .unwrap_or_default()
}

/// Creates a fresh sandbox with empty `stdout` and `stderr`, owned by the
/// task user when there is one. A sandbox left by an earlier task with the
/// same id is replaced.
fn prepare_sandbox(dir: &Path, user: Option<&TaskUser>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match fs::remove_dir_all(dir) {
        Ok(()) => info!(sandbox = %dir.display(), "replaced an old sandbox"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    let out = dir.join(files::STDOUT);
    let err = dir.join(files::STDERR);
    fs::File::create(&out)?;
    fs::File::create(&err)?;
    if let Some(u) = user {
        for p in [dir, &out, &err] {
            std::os::unix::fs::chown(p, Some(u.uid), Some(u.gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_needs_no_switch_and_unknown_users_are_refused() {
        assert_eq!(resolve_user("root").unwrap(), None);
        assert!(
            resolve_user("no-such-user-strata")
                .unwrap_err()
                .to_string()
                .contains("unknown user")
        );
    }

    #[test]
    fn a_fresh_sandbox_replaces_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let sb = dir.path().join("fw").join("t");
        fs::create_dir_all(&sb).unwrap();
        fs::write(sb.join("old"), b"x").unwrap();
        prepare_sandbox(&sb, None).unwrap();
        assert!(!sb.join("old").exists());
        assert_eq!(fs::read(sb.join(files::STDOUT)).unwrap(), b"");
        assert_eq!(fs::read(sb.join(files::STDERR)).unwrap(), b"");
    }
}
