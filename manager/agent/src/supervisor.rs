//! The per-task supervisor: the body of `strata supervise`.
//!
//! The agent starts one supervisor per task; the supervisor's first act is
//! to put itself in a session of its own (`setsid`), so that it outlives a
//! restart or a `kill -9` of the agent and no terminal's signals reach it.
//! (Doing so itself, not between `fork` and `exec` in the agent, lets the
//! agent start it with `posix_spawn`, which costs no copy of the agent's
//! page tables.) Its command line is stable:
//!
//! ```text
//! <AgentConfig::supervisor...> --launch <work_dir>/meta/tasks/<framework_id>/<task_id>/launch.json
//! ```
//!
//! (by default `strata supervise --launch …`). `launch.json` is a
//! [`LaunchSpec`] written by the agent. The supervisor:
//!
//! 1. becomes a child subreaper, so every orphaned descendant of the task is
//!    re-parented to it and reaped, and writes `supervisor.pid` next to
//!    `launch.json`;
//! 2. fetches the task's URIs into the sandbox ([`super::fetch`]: local
//!    paths as the task's user, so it fetches only what that user may read,
//!    and `http://` URLs);
//! 3. starts the command in its own process group, in the sandbox, with
//!    `stdout`/`stderr` appended to the sandbox files of those names, inside
//!    the task's cgroup when there is one, as the task's user when one is
//!    given (its groups, then gid, then uid), with a parent-death
//!    signal of SIGKILL; then writes `task.pid` (the pid is also the process
//!    group the agent signals to kill the task);
//! 4. waits for the command, reaping every other child meanwhile; when the
//!    command has exited, SIGKILLs what is left of its process group, its
//!    cgroup and any re-parented descendant;
//! 5. records how the command ended, atomically (temporary file + rename),
//!    as `exit_status.json` ([`ExitRecord`]) next to `launch.json` (which the
//!    agent trusts) and in the sandbox (for people and for the sandbox GC).
//!
//! When the launch file has a [`LaunchSpec::docker`] part (a Docker task),
//! steps 3 and 4 are replaced by running the task's container through the
//! Docker Engine ([`super::docker::supervise`]): `task.pid` is the
//! container's main process, SIGTERM stops the container (`docker stop` with
//! the kill's remaining grace) and SIGUSR1 kills it; the exit code is
//! recorded in step 5 the same way.
//!
//! It needs no async runtime (but for a Docker task) and no tracing; its own
//! diagnostics go to its standard error, which the agent points at
//! `supervisor.log` in the sandbox.
//! Exit code: 0 when the outcome was recorded, 1 when it could not be, 2 on
//! a usage error.

use super::checkpoint::replace_atomic;
use super::docker::DockerSpec;
use super::fetch::FetchUri;
use super::layout::files;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_proto::ids::{FrameworkId, TaskId};

/// The flag that names the launch file on the supervisor's command line.
pub const LAUNCH_FLAG: &str = "--launch";

/// The current [`LaunchSpec::version`] (3: the `docker` part, which an
/// older supervisor would ignore).
pub const LAUNCH_VERSION: u32 = 3;

/// The oldest [`LaunchSpec::version`] still run (2 has no `docker` part).
pub const MIN_LAUNCH_VERSION: u32 = 2;

/// The user a task runs as (resolved by the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUser {
    /// The user name (for messages).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its supplementary groups.
    #[serde(default)]
    pub groups: Vec<u32>,
}

/// What the supervisor runs: `launch.json`, written by the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Format version ([`LAUNCH_VERSION`]).
    pub version: u32,
    /// The task's framework.
    pub framework_id: FrameworkId,
    /// The task.
    pub task_id: TaskId,
    /// The command line; `argv[0]` is the program.
    pub argv: Vec<String>,
    /// The complete environment of the task.
    pub env: BTreeMap<String, String>,
    /// The sandbox (working directory).
    pub sandbox: PathBuf,
    /// Switch to this user before exec (the supervisor runs as the agent).
    #[serde(default)]
    pub user: Option<TaskUser>,
    /// The task's cgroup v2 directory, when limits are enforced.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// Files to fetch into the sandbox first.
    #[serde(default)]
    pub uris: Vec<FetchUri>,
    /// Run this Docker container instead of `argv` (then `argv` is unused,
    /// `env` is the container's environment and there is no cgroup or user).
    #[serde(default)]
    pub docker: Option<DockerSpec>,
    /// Run at the lowest cpu priority (the task runs on revocable cpus).
    #[serde(default)]
    pub low_priority: bool,
}

/// How a task ended: `exit_status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code, when the command exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The signal, when the command was killed by one.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Why the command could not be started (then neither of the above).
    #[serde(default)]
    pub error: Option<String>,
    /// Whether the kernel killed a process of the task's cgroup for memory.
    #[serde(default)]
    pub oom_killed: bool,
    /// The command's pid, if it was started.
    #[serde(default)]
    pub pid: Option<i32>,
    /// When the outcome was recorded (unix seconds).
    pub finished_at: f64,
}

/// The supervisor's command line for a launch file.
pub fn command_line(prefix: &[String], launch_file: &Path) -> Vec<String> {
    let mut argv = prefix.to_vec();
    argv.push(LAUNCH_FLAG.to_owned());
    argv.push(launch_file.to_string_lossy().into_owned());
    argv
}

/// Reads `exit_status.json` from a task's meta dir.
pub fn read_exit(status_dir: &Path) -> Option<ExitRecord> {
    let text = fs::read(status_dir.join(files::EXIT_STATUS)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Reads a pid file (`task.pid`, `supervisor.pid`).
pub fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 1)
}

/// Unix time now, in seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn launch_path(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == LAUNCH_FLAG {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--launch=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The body of `strata supervise`. `args` are the arguments after the
/// subcommand (a leading program name and `supervise` are tolerated): it
/// needs `--launch <file>`. Returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    let Some(launch_file) = launch_path(&args) else {
        eprintln!("usage: strata supervise --launch <launch.json>");
        return 2;
    };
    let status_dir = launch_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    // A session of our own (it fails only when we lead a process group
    // already, as when an older agent made the session for us); then
    // orphaned descendants of the task come to us, to be reaped and killed.
    // SAFETY: plain system calls with no memory arguments.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
    }
    let me = std::process::id();
    if let Err(e) = replace_atomic(
        &status_dir.join(files::SUPERVISOR_PID),
        format!("{me}\n").as_bytes(),
    ) {
        eprintln!("supervisor: cannot write {}: {e}", files::SUPERVISOR_PID);
    }
    let spec = match fs::read(&launch_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<LaunchSpec>(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            let msg = format!("cannot read {}: {e}", launch_file.display());
            return record(&status_dir, None, failed(msg, None));
        }
    };
    if spec.low_priority {
        // Inherited by the task and everything it starts. SAFETY: a plain
        // system call with no memory arguments.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
    }
    let outcome = run(&spec, &status_dir);
    record(&status_dir, Some(&spec.sandbox), outcome)
}

/// The record of a task that could not be started (or lost track of).
pub(super) fn failed(error: String, pid: Option<i32>) -> ExitRecord {
    ExitRecord {
        exit_code: None,
        signal: None,
        error: Some(error),
        oom_killed: false,
        pid,
        finished_at: unix_now(),
    }
}

fn record(status_dir: &Path, sandbox: Option<&Path>, outcome: ExitRecord) -> i32 {
    let bytes = match serde_json::to_vec_pretty(&outcome) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("supervisor: cannot serialise the exit record: {e}");
            return 1;
        }
    };
    if let Some(sandbox) = sandbox
        && let Err(e) = replace_atomic(&sandbox.join(files::EXIT_STATUS), &bytes)
    {
        eprintln!("supervisor: cannot write the sandbox exit status: {e}");
    }
    match replace_atomic(&status_dir.join(files::EXIT_STATUS), &bytes) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("supervisor: cannot write the exit status: {e}");
            1
        }
    }
}

fn run(spec: &LaunchSpec, status_dir: &Path) -> ExitRecord {
    if !(MIN_LAUNCH_VERSION..=LAUNCH_VERSION).contains(&spec.version) {
        return failed(
            format!("unsupported launch file version {}", spec.version),
            None,
        );
    }
    for uri in &spec.uris {
        if let Err(e) = super::fetch::fetch(uri, &spec.sandbox, spec.user.as_ref()) {
            return failed(format!("cannot fetch {}: {e}", uri.value), None);
        }
    }
    if let Some(docker) = &spec.docker {
        return super::docker::supervise(spec, docker, status_dir);
    }
    let Some(program) = spec.argv.first() else {
        return failed("the command is empty".to_owned(), None);
    };
    // A relative program with a directory (`./job`, a fetched binary) is
    // the sandbox's.
    let program = if program.contains('/') && !program.starts_with('/') {
        spec.sandbox.join(program).into_os_string()
    } else {
        program.into()
    };
    let (stdout, stderr) = match open_output(&spec.sandbox) {
        Ok(files) => files,
        Err(e) => return failed(e.to_string(), None),
    };
    let mut cmd = Command::new(&program);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.sandbox)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let procs_file = spec
        .cgroup
        .as_ref()
        .and_then(|c| CString::new(c.join("cgroup.procs").as_os_str().as_bytes()).ok());
    let ids = spec.user.as_ref().map(|u| {
        let groups: Vec<libc::gid_t> = u.groups.iter().map(|g| *g as libc::gid_t).collect();
        (u.uid as libc::uid_t, u.gid as libc::gid_t, groups)
    });
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec; it only makes
    // async-signal-safe system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || child_setup(procs_file.as_ref(), ids.as_ref(), parent));
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return failed(
                format!("cannot start {}: {e}", program.to_string_lossy()),
                None,
            );
        }
    };
    let pid = child.id() as i32;
    // The child is reaped below with waitpid(-1); the handle is not used.
    drop(child);
    if let Err(e) = replace_atomic(
        &status_dir.join(files::TASK_PID),
        format!("{pid}\n").as_bytes(),
    ) {
        eprintln!("supervisor: cannot write {}: {e}", files::TASK_PID);
    }
    let status = wait_for(pid);
    cleanup(pid, spec.cgroup.as_deref());
    let oom_killed = spec
        .cgroup
        .as_deref()
        .is_some_and(super::cgroup::oom_killed);
    if let Some(cg) = &spec.cgroup {
        super::cgroup::remove(cg);
    }
    ExitRecord {
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        error: status
            .is_none()
            .then(|| "the supervisor lost track of the task's process".to_owned()),
        oom_killed,
        pid: Some(pid),
        finished_at: unix_now(),
    }
}

/// Opens the sandbox's `stdout` and `stderr` for appending (never through a
/// symbolic link).
pub(super) fn open_output(sandbox: &Path) -> Result<(std::fs::File, std::fs::File), OutputError> {
    let open = |name: &str| {
        OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(sandbox.join(name))
    };
    match (open(files::STDOUT), open(files::STDERR)) {
        (Ok(o), Ok(e)) => Ok((o, e)),
        (Err(e), _) | (_, Err(e)) => Err(OutputError(e)),
    }
}

/// The sandbox's output files could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the sandbox output files: {0}")]
pub(super) struct OutputError(#[source] std::io::Error);

pub(super) fn child_setup(
    procs_file: Option<&CString>,
    ids: Option<&(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    parent: libc::pid_t,
) -> std::io::Result<()> {
    // SAFETY: raw system calls on valid pointers prepared before the fork.
    unsafe {
        if let Some(path) = procs_file {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0\n".as_ptr().cast(), 2);
            libc::close(fd);
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some((uid, gid, groups)) = ids
            && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(*gid) != 0
                || libc::setuid(*uid) != 0)
        {
            return Err(std::io::Error::last_os_error());
        }
        // After the credential change, which clears it.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != parent {
            return Err(std::io::Error::other("the supervisor died"));
        }
    }
    Ok(())
}

/// Reaps children until `pid` exits; returns its status (`None` if it
/// cannot be waited for).
fn wait_for(pid: i32) -> Option<std::process::ExitStatus> {
    loop {
        let mut raw: libc::c_int = 0;
        // SAFETY: waitpid writes into the integer we own.
        let got = unsafe { libc::waitpid(-1, &mut raw, 0) };
        if got == pid {
            return Some(std::process::ExitStatus::from_raw(raw));
        }
        if got < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
    }
}

/// Kills what the task left behind and reaps it (bounded). The supervisor
/// is a child subreaper, so every descendant of the task is its child:
/// when none is left (`waitpid` says so) nothing is, and the common case
/// costs no scan of `/proc`. Only descendants still alive after the kill
/// (they left the task's process group) are looked up there and killed.
fn cleanup(pgid: i32, cgroup: Option<&Path>) {
    use nix::sys::signal::Signal;
    let me = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        super::process::signal_group(pgid, Signal::SIGKILL).ok();
        if let Some(cg) = cgroup {
            super::cgroup::kill_all(cg);
        }
        let no_children = reap_exited();
        let empty = no_children && cgroup.is_none_or(|cg| super::cgroup::procs(cg).is_empty());
        if empty || Instant::now() >= deadline {
            return;
        }
        for child in super::process::live_children(me) {
            super::process::signal_pid(child, Signal::SIGKILL).ok();
        }
        std::thread::sleep(Duration::from_millis(10));
        reap_exited();
    }
}

/// Reaps every child that has exited; `true` when no child is left at all.
fn reap_exited() -> bool {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid writes into the integer we own.
        let got = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        if got > 0 {
            continue;
        }
        if got == 0 {
            return false;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return err.raw_os_error() == Some(libc::ECHILD);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launch_flag_is_found_after_a_program_name() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            launch_path(&a(&["--launch", "/m/launch.json"])),
            Some(PathBuf::from("/m/launch.json"))
        );
        assert_eq!(
            launch_path(&a(&["strata", "supervise", "--launch=/x"])),
            Some(PathBuf::from("/x"))
        );
        assert_eq!(launch_path(&a(&["--launch"])), None);
        assert_eq!(main(a(&[])), 2);
        assert_eq!(
            command_line(&a(&["/bin/strata", "supervise"]), Path::new("/m/l.json")),
            a(&["/bin/strata", "supervise", "--launch", "/m/l.json"])
        );
    }

    #[test]
    fn version_2_launch_files_are_still_run_and_older_ones_refused() {
        let v2 = r#"{"version":2,"framework_id":"f","task_id":"t","argv":["true"],"env":{},"sandbox":"/s"}"#;
        let spec: LaunchSpec = serde_json::from_str(v2).unwrap();
        assert_eq!(spec.docker, None);
        assert!((MIN_LAUNCH_VERSION..=LAUNCH_VERSION).contains(&spec.version));
        let dir = tempfile::tempdir().unwrap();
        let old = LaunchSpec { version: 1, ..spec };
        let e = run(&old, dir.path());
        assert_eq!(
            e.error.as_deref(),
            Some("unsupported launch file version 1")
        );
    }
}
