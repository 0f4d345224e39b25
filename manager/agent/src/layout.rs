//! Where things live in the work dir, and which ids may name a directory.
//!
//! ```text
//! <work_dir>/meta/agent.json                                  the agent id
//! <work_dir>/meta/boot_id                                     the host's boot the task checkpoints are of
//! <work_dir>/meta/tasks/<framework_id>/<task_id>/task.json    the task (before launch)
//! <work_dir>/meta/tasks/<framework_id>/<task_id>/updates.json latest state + unacknowledged updates
//! <work_dir>/meta/tasks/<framework_id>/<task_id>/container.json  how to find the running container
//! <work_dir>/meta/tasks/<framework_id>/<task_id>/kill.json    a kill in progress
//! <work_dir>/meta/tasks/<framework_id>/<task_id>/launch.json  what the supervisor runs
//! <work_dir>/meta/tasks/<framework_id>/<task_id>/{supervisor.pid,task.pid,exit_status.json}
//!                                                              written by the supervisor
//! <work_dir>/sandboxes/<framework_id>/<task_id>/              the task's working dir
//! ```

use super::error::AgentError;
use std::path::{Path, PathBuf};
use strata_proto::ids::{FrameworkId, TaskId};

/// The paths of one agent's work dir.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `work_dir` (which should be absolute).
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Layout {
            root: work_dir.into(),
        }
    }

    /// The work dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `meta/`: the checkpoints.
    pub fn meta_dir(&self) -> PathBuf {
        self.root.join("meta")
    }

    /// `meta/agent.json`.
    pub fn agent_file(&self) -> PathBuf {
        self.meta_dir().join("agent.json")
    }

    /// `meta/boot_id`: the kernel's boot id when the agent last started.
    pub fn boot_id_file(&self) -> PathBuf {
        self.meta_dir().join("boot_id")
    }

    /// `meta/tasks/`.
    pub fn tasks_meta_dir(&self) -> PathBuf {
        self.meta_dir().join("tasks")
    }

    /// `meta/tasks/<framework_id>/<task_id>/`. The ids must have been
    /// validated with [`validate_id`].
    pub fn task_meta_dir(&self, framework_id: &FrameworkId, task_id: &TaskId) -> PathBuf {
        self.tasks_meta_dir()
            .join(framework_id.as_str())
            .join(task_id.as_str())
    }

    /// `sandboxes/`.
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// `sandboxes/<framework_id>/<task_id>/`. The ids must have been
    /// validated with [`validate_id`].
    pub fn sandbox_dir(&self, framework_id: &FrameworkId, task_id: &TaskId) -> PathBuf {
        self.sandboxes_dir()
            .join(framework_id.as_str())
            .join(task_id.as_str())
    }
}

/// Names of the files in a task's meta dir.
pub mod files {
    /// The task checkpoint.
    pub const TASK: &str = "task.json";
    /// Latest state and unacknowledged updates.
    pub const UPDATES: &str = "updates.json";
    /// The container record (supervisor pid, cgroup …).
    pub const CONTAINER: &str = "container.json";
    /// A kill in progress.
    pub const KILL: &str = "kill.json";
    /// The supervisor's instructions.
    pub const LAUNCH: &str = "launch.json";
    /// The supervisor's pid (written by the supervisor).
    pub const SUPERVISOR_PID: &str = "supervisor.pid";
    /// The task's pid, which is also its process group (written by the supervisor).
    pub const TASK_PID: &str = "task.pid";
    /// How the task ended (written by the supervisor, also copied into the sandbox).
    pub const EXIT_STATUS: &str = "exit_status.json";
    /// The task's standard output, in the sandbox.
    pub const STDOUT: &str = "stdout";
    /// The task's standard error, in the sandbox.
    pub const STDERR: &str = "stderr";
    /// The supervisor's own diagnostics, in the sandbox.
    pub const SUPERVISOR_LOG: &str = "supervisor.log";
}

/// Checks that an id can safely name one directory level: not empty, not
/// `.` or `..`, no `/` or NUL, at most 255 bytes.
pub fn validate_id(kind: &'static str, id: &str) -> Result<(), AgentError> {
    let reason = if id.is_empty() {
        Some("it is empty")
    } else if id == "." || id == ".." {
        Some("it is a relative path component")
    } else if id.contains('/') {
        Some("it contains '/'")
    } else if id.contains('\0') {
        Some("it contains NUL")
    } else if id.contains("..") {
        Some("it contains '..'")
    } else if id.len() > 255 {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(AgentError::InvalidId {
            kind,
            id: id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks that `name` names a file directly inside a sandbox (same rules as
/// ids: one path component, no traversal).
pub fn validate_file_name(name: &str) -> Result<(), AgentError> {
    validate_id("file", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_name_one_directory_are_accepted() {
        for ok in ["t1", "task.1", "web-0_a:b", "x.y.z", "a b", "ümlaut"] {
            assert!(validate_id("task", ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn traversal_and_odd_ids_are_rejected() {
        let long = "x".repeat(256);
        for bad in ["", ".", "..", "a/b", "/abs", "../x", "a..b", "x\0y", &long] {
            assert!(
                matches!(validate_id("task", bad), Err(AgentError::InvalidId { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn paths_are_nested_under_the_work_dir() {
        let l = Layout::new("/w");
        assert_eq!(
            l.sandbox_dir(&"f".into(), &"t".into()),
            PathBuf::from("/w/sandboxes/f/t")
        );
        assert_eq!(
            l.task_meta_dir(&"f".into(), &"t".into()).join(files::TASK),
            PathBuf::from("/w/meta/tasks/f/t/task.json")
        );
        assert_eq!(l.agent_file(), PathBuf::from("/w/meta/agent.json"));
    }
}
