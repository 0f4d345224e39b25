//! Recovery: rebuilding the agent's task table from `meta/` after a restart
//! or a crash.
//!
//! For each `meta/tasks/<framework_id>/<task_id>/`:
//!
//! * a terminal state whose updates were all acknowledged: the task was done
//!   and only its checkpoint was left; it is removed;
//! * otherwise the task is kept with its latest state and its queue of
//!   unacknowledged updates, its container record (`container.json`, or, if
//!   the agent died before writing it, the `supervisor.pid` the supervisor
//!   wrote) and a kill in progress (`kill.json`). The core's first tick then
//!   polls the container: a task whose supervisor still runs is supervised
//!   as before, one that ended (even while the agent was down) gets its final
//!   update, one whose supervisor vanished without a record fails (a Docker
//!   task's container, which outlives its supervisor, is then removed);
//! * a task whose checkpoint cannot be read is reported `TASK_FAILED` (its
//!   ids are known from the directory names) and whatever is left of its
//!   container is killed.
//!
//! First of all, an agent that finds the host rebooted since it last started
//! (the kernel's boot id differs from `meta/boot_id`) discards every task
//! checkpoint unread: those tasks died with the host, and their checkpoints
//! were never flushed to disk (see [`super::checkpoint`]). The agent then
//! re-registers with no tasks and the manager reports them `TASK_GONE`, as
//! Mesos does for an agent whose host rebooted.

use super::checkpoint::{self, list_dirs, read_json};
use super::containerizer::{ContainerRecord, remove_docker};
use super::core::{KillState, Task, TaskKey};
use super::docker::LABEL_LAUNCH;
use super::kill::{kill_grace, resumed_escalation};
use super::layout::{Layout, files};
use super::supervisor::{LaunchSpec, read_pid};
use super::task;
use super::updates::UpdateQueue;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use strata_proto::ids::AgentId;
use strata_proto::ids::{FrameworkId, TaskId};
use strata_proto::pb::{self, Reason, TaskState};
use tracing::{error, info, warn};

/// What recovery found.
pub(crate) struct Recovered {
    pub agent_id: Option<AgentId>,
    pub tasks: BTreeMap<TaskKey, Task>,
}

/// Reads the agent id and every task checkpoint. Never fails: unreadable
/// parts are logged and handled as described in the module docs.
pub(crate) fn recover(layout: &Layout) -> Recovered {
    recover_at_boot(layout, current_boot_id().as_deref())
}

/// The kernel's id of the running boot (`None` where it cannot be read).
fn current_boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Discards the task checkpoints of an earlier boot, then records `boot` as
/// the boot they are of. Without a recorded boot (a first start, or an
/// agent from before boot ids were kept) the checkpoints are taken as this
/// boot's.
fn forget_earlier_boot(layout: &Layout, boot: Option<&str>) {
    let Some(boot) = boot else { return };
    let file = layout.boot_id_file();
    let recorded = fs::read_to_string(&file).ok();
    match recorded.as_deref().map(str::trim) {
        Some(r) if r == boot => return,
        Some(r) => {
            let dir = layout.tasks_meta_dir();
            let tasks: usize = list_dirs(&dir)
                .0
                .iter()
                .map(|fw| list_dirs(&dir.join(fw)).0.len())
                .sum();
            warn!(
                previous_boot = r,
                tasks,
                "the host rebooted since the agent last ran: its tasks died with it and their checkpoints are discarded"
            );
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // The boot is not recorded, so the next start tries again.
                Err(e) => {
                    error!(dir = %dir.display(), error = %e, "cannot discard the task checkpoints of an earlier boot");
                    return;
                }
            }
        }
        None => {}
    }
    if let Err(e) = fs::create_dir_all(layout.meta_dir())
        .and_then(|()| checkpoint::write_atomic(&file, boot.as_bytes()))
    {
        warn!(file = %file.display(), error = %e, "cannot record the boot id");
    }
}

fn recover_at_boot(layout: &Layout, boot: Option<&str>) -> Recovered {
    forget_earlier_boot(layout, boot);
    let agent_id = match read_json::<checkpoint::AgentCheckpoint>(&layout.agent_file()) {
        Ok(Some(cp)) if !cp.agent_id.is_empty() => Some(AgentId::new(cp.agent_id)),
        Ok(_) => None,
        Err(e) => {
            error!(error = %e, "cannot read the agent id; registering as a new agent");
            None
        }
    };
    let mut tasks = BTreeMap::new();
    let root = layout.tasks_meta_dir();
    let (frameworks, bad) = list_dirs(&root);
    for name in bad {
        warn!(dir = %root.join(&name).display(), "skipping a checkpoint directory with an invalid name");
    }
    for fw in frameworks {
        let fw_dir = root.join(&fw);
        let (task_ids, bad) = list_dirs(&fw_dir);
        for name in bad {
            warn!(dir = %fw_dir.join(&name).display(), "skipping a checkpoint directory with an invalid name");
        }
        for task_id in task_ids {
            let dir = fw_dir.join(&task_id);
            let key = (FrameworkId::new(fw.clone()), TaskId::new(task_id));
            if let Some(task) = recover_task(layout, &dir, &key.0, &key.1, agent_id.as_ref()) {
                tasks.insert(key, task);
            }
        }
        fs::remove_dir(&fw_dir).ok(); // only if now empty
    }
    if !tasks.is_empty() {
        info!(tasks = tasks.len(), "recovered tasks from checkpoints");
    }
    Recovered { agent_id, tasks }
}

fn recover_task(
    layout: &Layout,
    dir: &Path,
    framework_id: &FrameworkId,
    task_id: &TaskId,
    agent_id: Option<&AgentId>,
) -> Option<Task> {
    let r = checkpoint::read_task_dir(dir, framework_id, task_id);
    // A finished task whose checkpoint removal was interrupted.
    if let Ok((state, pending)) = &r.updates
        && state.is_terminal()
        && pending.is_empty()
    {
        info!(%framework_id, %task_id, "removing the checkpoint of a finished task");
        if let Err(e) = fs::remove_dir_all(dir) {
            warn!(dir = %dir.display(), error = %e, "cannot remove the checkpoint");
        }
        return None;
    }
    let container = read_container(dir);
    let (info, problem) = match r.task {
        Ok((_, info)) => (info, None),
        Err(e) => (
            pb::TaskInfo {
                task_id: task_id.to_string(),
                ..Default::default()
            },
            Some(e),
        ),
    };
    let mut task = Task::new(framework_id, info, Some(dir.to_owned()));
    task.sandbox = Some(layout.sandbox_dir(framework_id, task_id));
    task.container = container;
    let (state, pending) = match r.updates {
        Ok(u) => u,
        Err(e) => {
            error!(%framework_id, %task_id, error = %e, "cannot read the task's status updates");
            (TaskState::TaskStaging, Vec::new())
        }
    };
    task.state = state;
    task.queue = UpdateQueue::new(pending);
    if let Some(k) = &r.kill {
        let reason = Reason::from_str_name(&k.reason).unwrap_or(Reason::KilledByFramework);
        let grace = kill_grace(Some(k.grace_seconds), None);
        task.kill = Some(KillState {
            reason,
            escalation: resumed_escalation(k.requested_at, grace),
        });
    }
    if task.state.is_terminal() {
        return Some(task);
    }
    let failure = match (problem, &task.container) {
        (Some(e), _) => Some(format!(
            "the agent could not read the task's checkpoint: {e}"
        )),
        (None, None) => Some("the agent restarted before the task was launched".to_owned()),
        (None, Some(_)) => None,
    };
    if let Some(message) = failure {
        error!(%framework_id, %task_id, %message, "recovered task failed");
        if let Some(record) = &task.container {
            kill_leftovers(record);
        }
        let status = task::new_status(
            task_id,
            agent_id.map(AgentId::as_str).unwrap_or_default(),
            TaskState::TaskFailed,
            Reason::AgentRestarted,
            message,
            None,
        );
        task.state = TaskState::TaskFailed;
        task.queue.push(status);
        let cp = checkpoint::UpdatesCheckpoint {
            latest_state: task.state.wire_name().to_owned(),
            pending: task
                .queue
                .iter()
                .map(checkpoint::StoredStatus::new)
                .collect(),
        };
        if let Err(e) = checkpoint::write_json(&dir.join(files::UPDATES), &cp) {
            error!(%framework_id, %task_id, error = %e, "cannot checkpoint status updates");
        }
    } else {
        info!(%framework_id, %task_id, state = %task.state, "recovered task");
    }
    Some(task)
}

/// The container record: `container.json`, or rebuilt from the
/// supervisor's own pid file when the agent died before writing it.
fn read_container(dir: &Path) -> Option<ContainerRecord> {
    match read_json::<ContainerRecord>(&dir.join(files::CONTAINER)) {
        Ok(Some(r)) => return Some(r),
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot read the container record"),
    }
    let launch_file = dir.join(files::LAUNCH);
    let spec = read_json::<LaunchSpec>(&launch_file).ok().flatten()?;
    let pid = read_pid(&dir.join(files::SUPERVISOR_PID))?;
    Some(match spec.docker {
        Some(d) => ContainerRecord::Docker {
            supervisor_pid: pid,
            supervisor_start_time: None,
            launch_file,
            launch_id: d.labels.get(LABEL_LAUNCH).cloned().unwrap_or_default(),
            host: d.host,
            container: d.name,
        },
        None => ContainerRecord::Process {
            supervisor_pid: pid,
            supervisor_start_time: None,
            launch_file,
            cgroup: spec.cgroup,
        },
    })
}

fn kill_leftovers(record: &ContainerRecord) {
    let ContainerRecord::Process {
        supervisor_pid,
        supervisor_start_time,
        launch_file,
        cgroup,
    } = record
    else {
        // The supervisor is killed and the container removed.
        remove_docker(record);
        return;
    };
    let needle = launch_file.to_string_lossy();
    if super::process::is_alive(*supervisor_pid, *supervisor_start_time, Some(&needle)) {
        super::process::signal_pid(*supervisor_pid, nix::sys::signal::Signal::SIGKILL).ok();
    }
    let dir = launch_file.parent().unwrap_or_else(|| Path::new("."));
    if let Some(pgid) = read_pid(&dir.join(files::TASK_PID))
        && super::supervisor::read_exit(dir).is_none()
    {
        super::process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL).ok();
    }
    if let Some(cg) = cgroup {
        super::cgroup::kill_all(cg);
        super::cgroup::remove(cg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{StoredStatus, TaskCheckpoint, UpdatesCheckpoint, write_json};

    fn layout() -> (tempfile::TempDir, Layout) {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        (d, l)
    }

    fn info(id: &str) -> pb::TaskInfo {
        pb::TaskInfo {
            task_id: id.into(),
            command: Some(pb::CommandInfo {
                value: "true".into(),
                shell: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn finished_tasks_are_dropped_and_pending_ones_kept() {
        let (_d, l) = layout();
        fs::create_dir_all(l.meta_dir()).unwrap();
        let agent = checkpoint::AgentCheckpoint {
            agent_id: "a1".into(),
            registered_at: 1.0,
        };
        write_json(&l.agent_file(), &agent).unwrap();
        // Done: terminal, nothing pending.
        let done = l.task_meta_dir(&"fw".into(), &"done".into());
        fs::create_dir_all(&done).unwrap();
        write_json(
            &done.join(files::TASK),
            &TaskCheckpoint::new(&"fw".into(), &info("done"), 1.0),
        )
        .unwrap();
        write_json(
            &done.join(files::UPDATES),
            &UpdatesCheckpoint {
                latest_state: "TASK_FINISHED".into(),
                pending: vec![],
            },
        )
        .unwrap();
        // Terminal update not yet acknowledged.
        let pending = l.task_meta_dir(&"fw".into(), &"pending".into());
        fs::create_dir_all(&pending).unwrap();
        write_json(
            &pending.join(files::TASK),
            &TaskCheckpoint::new(&"fw".into(), &info("pending"), 1.0),
        )
        .unwrap();
        let st = task::new_status(
            &"pending".into(),
            "a1",
            TaskState::TaskFailed,
            Reason::CommandExited,
            "x",
            Some(1),
        );
        write_json(
            &pending.join(files::UPDATES),
            &UpdatesCheckpoint {
                latest_state: "TASK_FAILED".into(),
                pending: vec![StoredStatus::new(&st)],
            },
        )
        .unwrap();
        // Never launched (no container record).
        let never = l.task_meta_dir(&"fw".into(), &"never".into());
        fs::create_dir_all(&never).unwrap();
        write_json(
            &never.join(files::TASK),
            &TaskCheckpoint::new(&"fw".into(), &info("never"), 1.0),
        )
        .unwrap();
        // Unreadable.
        let broken = l.task_meta_dir(&"fw2".into(), &"broken".into());
        fs::create_dir_all(&broken).unwrap();
        fs::write(broken.join(files::TASK), b"garbage").unwrap();

        let r = recover_at_boot(&l, Some("boot-1"));
        assert_eq!(r.agent_id, Some(AgentId::new("a1")));
        assert!(!done.exists());
        let keys: Vec<_> = r.tasks.keys().cloned().collect();
        assert_eq!(
            keys,
            vec![
                (FrameworkId::new("fw"), TaskId::new("never")),
                (FrameworkId::new("fw"), TaskId::new("pending")),
                (FrameworkId::new("fw2"), TaskId::new("broken")),
            ]
        );
        let p = &r.tasks[&(FrameworkId::new("fw"), TaskId::new("pending"))];
        assert_eq!(p.state, TaskState::TaskFailed);
        assert_eq!(p.queue.head().unwrap().uuid, st.uuid);
        for k in [("fw", "never"), ("fw2", "broken")] {
            let t = &r.tasks[&(FrameworkId::new(k.0), TaskId::new(k.1))];
            assert_eq!(t.state, TaskState::TaskFailed, "{k:?}");
            let head = t.queue.head().unwrap();
            assert_eq!(head.task_id, k.1);
            assert_eq!(head.agent_id, "a1");
        }
        // The failure was checkpointed: a second recovery sees the same update.
        let again = recover_at_boot(&l, Some("boot-1"));
        let t = &again.tasks[&(FrameworkId::new("fw2"), TaskId::new("broken"))];
        assert_eq!(t.queue.len(), 1);
        // After a reboot, none of them is left; the agent keeps its id.
        let rebooted = recover_at_boot(&l, Some("boot-2"));
        assert_eq!(rebooted.agent_id, Some(AgentId::new("a1")));
        assert!(rebooted.tasks.is_empty());
        assert!(!l.tasks_meta_dir().exists());
        assert_eq!(fs::read_to_string(l.boot_id_file()).unwrap(), "boot-2");
    }

    #[test]
    fn the_running_boot_has_an_id() {
        assert!(current_boot_id().is_some_and(|b| b.len() >= 32));
    }
}
