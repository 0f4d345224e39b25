//! Pure helpers around one task: its command line and environment, its
//! status updates, and the final state that follows from how it ended.

use super::supervisor::{ExitRecord, unix_now};
use std::collections::BTreeMap;
use std::path::Path;
use strata_proto::ids::{FrameworkId, TaskId};
use strata_proto::pb::{self, Reason, TaskState};
use strata_proto::resources::Resources;

/// Environment variables of the agent that never reach a task.
const SCRUBBED_ENV: &[&str] = &["STRATA_TOKEN", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"];

/// What the agent knows about where a task runs.
#[derive(Debug, Clone)]
pub struct TaskContext<'a> {
    /// The task's framework.
    pub framework_id: &'a FrameworkId,
    /// This agent's id (empty before registration).
    pub agent_id: &'a str,
    /// The sandbox.
    pub sandbox: &'a Path,
    /// This agent's hostname.
    pub hostname: &'a str,
    /// The user the task runs as, when it is not the agent's user:
    /// (name, home directory).
    pub user: Option<(&'a str, &'a Path)>,
    /// The agent's own `strata` binary, given to the task as `STRATA_BIN`
    /// (not inside a container, where the path means nothing).
    pub program: Option<&'a str>,
}

pub use strata_proto::OWN_PROGRAM;

/// The command line of a task: `/bin/sh -c <value>` for a shell command,
/// else `<value> <arguments…>`, with [`OWN_PROGRAM`] replaced by `own`
/// (the agent's binary) when it is known.
pub fn argv(command: &pb::CommandInfo, own: Option<&str>) -> Result<Vec<String>, &'static str> {
    if command.value.trim().is_empty() {
        return Err("the command is empty");
    }
    if command.value.contains('\0') || command.arguments.iter().any(|a| a.contains('\0')) {
        return Err("the command contains NUL");
    }
    if command.shell {
        Ok(vec!["/bin/sh".into(), "-c".into(), command.value.clone()])
    } else {
        let program = match own {
            Some(own) if command.value == OWN_PROGRAM => own.to_owned(),
            _ => command.value.clone(),
        };
        let mut v = vec![program];
        v.extend(command.arguments.iter().cloned());
        Ok(v)
    }
}

/// The environment of a task, from lowest to highest precedence: the
/// agent's own environment (less secrets such as `STRATA_TOKEN`), `USER`,
/// `LOGNAME` and `HOME` of the task user, `HOST`, `PORT0…PORTn`, `PORTS`
/// and `PORT`, the command's own environment, and last the identity
/// variables `STRATA_BIN` (the agent's `strata`), `STRATA_TASK_ID`,
/// `STRATA_FRAMEWORK_ID`, `STRATA_AGENT_ID`,
/// `STRATA_SANDBOX` and `MESOS_SANDBOX`, which a task cannot override.
pub fn environment(
    base: impl IntoIterator<Item = (String, String)>,
    task: &pb::TaskInfo,
    ctx: &TaskContext<'_>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = base
        .into_iter()
        .filter(|(k, _)| !SCRUBBED_ENV.contains(&k.as_str()))
        .collect();
    let sandbox = ctx.sandbox.to_string_lossy().into_owned();
    if let Some((name, home)) = ctx.user {
        env.insert("USER".into(), name.into());
        env.insert("LOGNAME".into(), name.into());
        let home = if home.is_dir() {
            home.to_string_lossy().into_owned()
        } else {
            sandbox.clone()
        };
        env.insert("HOME".into(), home);
    }
    env.insert("HOST".into(), ctx.hostname.into());
    let ports = task_ports(task);
    for (i, p) in ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), p.to_string());
    }
    if let Some(first) = ports.first() {
        env.insert("PORT".into(), first.to_string());
        let list: Vec<String> = ports.iter().map(u64::to_string).collect();
        env.insert("PORTS".into(), list.join(","));
    }
    if let Some(cmd) = &task.command {
        for (k, v) in &cmd.environment {
            if !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0') {
                env.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(program) = ctx.program {
        env.insert("STRATA_BIN".into(), program.into());
    }
    env.insert("STRATA_TASK_ID".into(), task.task_id.clone());
    env.insert("STRATA_FRAMEWORK_ID".into(), ctx.framework_id.to_string());
    env.insert("STRATA_AGENT_ID".into(), ctx.agent_id.into());
    env.insert("STRATA_SANDBOX".into(), sandbox.clone());
    env.insert("MESOS_SANDBOX".into(), sandbox);
    env
}

/// The ports of a task's `ports` resource, ascending.
pub fn task_ports(task: &pb::TaskInfo) -> Vec<u64> {
    Resources::from_proto(&task.resources)
        .map(|r| r.ports.values().collect())
        .unwrap_or_default()
}

/// A fresh status update (with a new uuid and the current time).
pub fn new_status(
    task_id: &TaskId,
    agent_id: &str,
    state: TaskState,
    reason: Reason,
    message: impl Into<String>,
    exit_code: Option<i32>,
) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: task_id.to_string(),
        agent_id: agent_id.to_owned(),
        state: state as i32,
        reason: reason as i32,
        source: pb::Source::Agent as i32,
        message: message.into(),
        uuid: strata_proto::ids::new_update_uuid(),
        timestamp: unix_now(),
        exit_code,
        healthy: None,
    }
}

/// The final state of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// A terminal state.
    pub state: TaskState,
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
    /// The command's exit code, when it exited.
    pub exit_code: Option<i32>,
}

/// The final state that follows from how the task ended and whether the
/// agent was killing it (`kill`: the reason of the kill).
pub fn outcome(exit: &ExitRecord, kill: Option<Reason>) -> Outcome {
    if let Some(reason) = kill {
        let how = match (exit.exit_code, exit.signal) {
            (_, Some(sig)) => format!(" (signal {sig})"),
            (Some(code), None) => format!(" (exit status {code})"),
            _ => String::new(),
        };
        return Outcome {
            state: TaskState::TaskKilled,
            reason,
            message: format!("task killed{how}"),
            exit_code: exit.exit_code,
        };
    }
    if let Some(err) = &exit.error {
        return Outcome {
            state: TaskState::TaskFailed,
            reason: Reason::ContainerLaunchFailed,
            message: err.clone(),
            exit_code: None,
        };
    }
    if exit.oom_killed {
        return Outcome {
            state: TaskState::TaskFailed,
            reason: Reason::ContainerLimitation,
            message: "memory limit exceeded: the task was killed by the kernel".into(),
            exit_code: exit.exit_code,
        };
    }
    match (exit.exit_code, exit.signal) {
        (Some(0), _) => Outcome {
            state: TaskState::TaskFinished,
            reason: Reason::CommandExited,
            message: "command exited with status 0".into(),
            exit_code: Some(0),
        },
        (Some(code), _) => Outcome {
            state: TaskState::TaskFailed,
            reason: Reason::CommandExited,
            message: format!("command exited with status {code}"),
            exit_code: Some(code),
        },
        (None, Some(sig)) => Outcome {
            state: TaskState::TaskFailed,
            reason: Reason::CommandExited,
            message: format!("killed by signal {sig}"),
            exit_code: None,
        },
        (None, None) => Outcome {
            state: TaskState::TaskFailed,
            reason: Reason::Unspecified,
            message: "the task ended without an exit status".into(),
            exit_code: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::resources::Ranges;

    fn exit(code: Option<i32>, signal: Option<i32>) -> ExitRecord {
        ExitRecord {
            exit_code: code,
            signal,
            error: None,
            oom_killed: false,
            pid: Some(10),
            finished_at: 1.0,
        }
    }

    #[test]
    fn final_states() {
        let o = outcome(&exit(Some(0), None), None);
        assert_eq!(
            (o.state, o.reason, o.exit_code),
            (TaskState::TaskFinished, Reason::CommandExited, Some(0))
        );
        let o = outcome(&exit(Some(3), None), None);
        assert_eq!((o.state, o.exit_code), (TaskState::TaskFailed, Some(3)));
        let o = outcome(&exit(None, Some(9)), None);
        assert_eq!(o.state, TaskState::TaskFailed);
        assert_eq!(o.message, "killed by signal 9");
        let o = outcome(&exit(None, Some(15)), Some(Reason::Preempted));
        assert_eq!(
            (o.state, o.reason),
            (TaskState::TaskKilled, Reason::Preempted)
        );
        // Killed even when the command exited cleanly on SIGTERM.
        let o = outcome(&exit(Some(0), None), Some(Reason::KilledByFramework));
        assert_eq!(o.state, TaskState::TaskKilled);
        let mut e = exit(None, None);
        e.error = Some("cannot start x: not found".into());
        let o = outcome(&e, None);
        assert_eq!(
            (o.state, o.reason),
            (TaskState::TaskFailed, Reason::ContainerLaunchFailed)
        );
        let mut e = exit(None, Some(9));
        e.oom_killed = true;
        assert_eq!(outcome(&e, None).reason, Reason::ContainerLimitation);
    }

    #[test]
    fn command_lines() {
        let mut c = pb::CommandInfo {
            value: "echo $HOST".into(),
            shell: true,
            ..Default::default()
        };
        assert_eq!(argv(&c, None).unwrap(), vec!["/bin/sh", "-c", "echo $HOST"]);
        c.shell = false;
        c.value = "/bin/echo".into();
        c.arguments = vec!["a".into(), "b c".into()];
        assert_eq!(argv(&c, None).unwrap(), vec!["/bin/echo", "a", "b c"]);
        c.value = " ".into();
        assert!(argv(&c, None).is_err());
    }

    #[test]
    fn the_program_strata_is_the_agents_own_binary() {
        let mut c = pb::CommandInfo {
            value: OWN_PROGRAM.into(),
            arguments: vec!["executor".into()],
            ..Default::default()
        };
        let own = Some("/opt/strata/bin/strata");
        assert_eq!(
            argv(&c, own).unwrap(),
            vec!["/opt/strata/bin/strata", "executor"]
        );
        // Unknown to the agent: left for PATH to resolve.
        assert_eq!(argv(&c, None).unwrap(), vec!["strata", "executor"]);
        // Only the bare name, and never inside a shell command.
        c.value = "./strata".into();
        assert_eq!(argv(&c, own).unwrap()[0], "./strata");
        c.value = "strata executor".into();
        c.shell = true;
        assert_eq!(argv(&c, own).unwrap()[2], "strata executor");
    }

    #[test]
    fn environment_has_ports_and_identity() {
        let task = pb::TaskInfo {
            task_id: "t1".into(),
            resources: Resources::new(1.0, 32.0)
                .with_ports(Ranges::from_ranges([(31005, 31005), (31001, 31002)]))
                .to_proto(false),
            command: Some(pb::CommandInfo {
                value: "true".into(),
                shell: true,
                environment: [
                    ("A".to_string(), "1".to_string()),
                    ("STRATA_TASK_ID".to_string(), "spoofed".to_string()),
                    ("PORT".to_string(), "8080".to_string()),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ctx = TaskContext {
            framework_id: &"fw".into(),
            agent_id: "a1",
            sandbox: Path::new("/w/sandboxes/fw/t1"),
            hostname: "node1",
            user: None,
            program: Some("/usr/bin/strata"),
        };
        let base = vec![
            ("PATH".to_string(), "/bin".to_string()),
            ("STRATA_TOKEN".to_string(), "secret".to_string()),
        ];
        let env = environment(base, &task, &ctx);
        assert_eq!(env["PATH"], "/bin");
        assert!(!env.contains_key("STRATA_TOKEN"));
        assert_eq!(env["PORT0"], "31001");
        assert_eq!(env["PORT1"], "31002");
        assert_eq!(env["PORT2"], "31005");
        assert_eq!(env["PORTS"], "31001,31002,31005");
        assert_eq!(env["PORT"], "8080", "the command's environment wins");
        assert_eq!(env["A"], "1");
        assert_eq!(env["HOST"], "node1");
        assert_eq!(env["STRATA_TASK_ID"], "t1");
        assert_eq!(env["STRATA_FRAMEWORK_ID"], "fw");
        assert_eq!(env["STRATA_AGENT_ID"], "a1");
        assert_eq!(env["MESOS_SANDBOX"], "/w/sandboxes/fw/t1");
        assert_eq!(env["STRATA_SANDBOX"], "/w/sandboxes/fw/t1");
    }

    #[test]
    fn statuses_are_fresh_and_from_the_agent() {
        let a = new_status(
            &"t".into(),
            "a",
            TaskState::TaskRunning,
            Reason::Unspecified,
            "pid 5",
            None,
        );
        let b = new_status(
            &"t".into(),
            "a",
            TaskState::TaskRunning,
            Reason::Unspecified,
            "pid 5",
            None,
        );
        assert_eq!(a.uuid.len(), 16);
        assert_ne!(a.uuid, b.uuid);
        assert_eq!(a.source(), pb::Source::Agent);
        assert!(a.timestamp > 0.0);
    }
}
