//! Processes: the per-test world ([`Env`]), child processes, signals and cleanup.

#![allow(dead_code, unused_imports)]

use super::*;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_manager::master::view::{AgentView, StateView, TaskView};
use strata_proto::pb;
use strata_sdk::{
    Event, EventStream, Filters, FrameworkConfig, FrameworkId, Offer, Resources, Scheduler,
    SchedulerConfig, SchedulerHandle, TaskInfo, TaskState, TaskStatus,
};
use tokio::sync::{mpsc, watch};

// ---------------------------------------------------------------- processes

/// Whether `pid` is a live process (a zombie counts as dead).
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a pid this test started.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A pidfd of `pid` (`pidfd_open(2)`): readable once the process has
/// exited, whether or not it is this process's child; `None` if there is
/// no such process (any more).
fn pidfd(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a fresh fd that nothing else owns.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Blocks until process `pid` has exited, at most `timeout`; whether it has.
fn wait_gone(pid: i32, timeout: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let Some(fd) = pidfd(pid) else { return true };
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, owned for the duration of the call.
    unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) > 0 }
}

/// Waits until the process behind `fd` (from [`pidfd`]) has exited;
/// `None` stands for one that already has.
async fn exited(fd: &Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>) {
    if let Some(fd) = fd {
        let _ = fd.readable().await;
    }
}

/// `(state, ppid, pgrp)` from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some((stat.state, stat.ppid, stat.pgrp))
}

fn proc_state(pid: i32) -> Option<char> {
    proc_stat(pid).map(|s| s.0)
}

/// The command name of a process (`/proc/<pid>/comm`).
pub fn proc_comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn all_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&p| p != me)
                .collect()
        })
        .unwrap_or_default()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Live processes whose command line, environment or working directory
/// mentions `dir`.
fn processes_under(dir: &Path) -> Vec<i32> {
    let needle = dir.as_os_str().as_bytes();
    all_pids()
        .into_iter()
        .filter(|&pid| {
            if !pid_alive(pid) {
                return false;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            contains(&cmdline, needle) || contains(&environ, needle) || cwd.starts_with(dir)
        })
        .collect()
}

// ---------------------------------------------------------------- Env

/// One test's world: a temp dir that is its `STRATA_HOME` and holds every
/// work dir, and the logs of every process it started (printed if the test
/// fails). Dropping it kills whatever process still refers to the dir.
pub struct Env {
    dir: tempfile::TempDir,
    root: PathBuf,
    logs: Mutex<Vec<(String, Log)>>,
    labels: Mutex<Vec<String>>,
}

impl Env {
    /// A new environment for the test `name`.
    pub fn new(name: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix(&format!("strata-it-{name}-"))
            .tempdir()
            .expect("cannot create a temp dir");
        let root = dir
            .path()
            .canonicalize()
            .expect("cannot canonicalize the temp dir");
        Env {
            dir,
            root,
            logs: Mutex::new(Vec::new()),
            labels: Mutex::new(Vec::new()),
        }
    }

    /// The temp dir (also `STRATA_HOME`).
    pub fn home(&self) -> &Path {
        &self.root
    }

    /// A path inside the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn unique_label(&self, base: &str) -> String {
        let mut labels = self.labels.lock().unwrap();
        let n = labels.iter().filter(|l| l.as_str() == base).count();
        labels.push(base.to_owned());
        if n == 0 {
            base.to_owned()
        } else {
            format!("{base}#{}", n + 1)
        }
    }

    fn keep_log(&self, label: String, log: Log) {
        self.logs.lock().unwrap().push((label, log));
    }

    /// A `strata` command with this environment: `STRATA_HOME` set, logs at
    /// `info` without colours, and no other `STRATA_*` variable inherited.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_on(None, args)
    }

    /// [`Env::command`] on `host` (inside its network namespace), or on
    /// this machine's own network with `None`.
    pub fn command_on(&self, host: Option<&Host>, args: &[&str]) -> Command {
        let mut c = match host {
            Some(h) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &h.netns, STRATA]);
                c
            }
            None => Command::new(STRATA),
        };
        c.args(args);
        for (k, _) in std::env::vars_os() {
            if k.as_bytes().starts_with(b"STRATA_") {
                c.env_remove(k);
            }
        }
        c.env("STRATA_HOME", &self.root)
            .env("STRATA_LOG", "info")
            .env("NO_COLOR", "1")
            .current_dir(&self.root)
            .stdin(Stdio::null());
        c
    }

    /// Starts `strata args…` in the background, capturing its output.
    pub fn spawn(&self, label: &str, args: &[&str]) -> Proc {
        self.spawn_on(None, label, args)
    }

    /// [`Env::spawn`] on `host` (see [`Env::command_on`]).
    pub fn spawn_on(&self, host: Option<&Host>, label: &str, args: &[&str]) -> Proc {
        self.spawn_command(label, self.command_on(host, args))
    }

    /// Starts a command made by [`Env::command_on`] (perhaps with more
    /// variables) in the background, capturing its output.
    pub fn spawn_command(&self, label: &str, mut command: Command) -> Proc {
        let label = self.unique_label(label);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {STRATA}: {e}"));
        let stdout: Log = Arc::default();
        let stderr: Log = Arc::default();
        let (sender, lines) = watch::channel(0);
        let sender = Arc::new(sender);
        pump(child.stdout.take().unwrap(), stdout.clone(), sender.clone());
        pump(child.stderr.take().unwrap(), stderr.clone(), sender);
        self.keep_log(format!("{label} stdout"), stdout.clone());
        self.keep_log(format!("{label} stderr"), stderr.clone());
        Proc {
            label,
            child,
            stdout,
            stderr,
            lines,
        }
    }

    /// Runs a client command to completion (at most a minute).
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_in(&self.root, args).await
    }

    /// Runs a client command with `input` as its standard input, to
    /// completion (at most a minute).
    pub async fn cli_with_input(&self, args: &[&str], input: &str) -> CliOutput {
        self.cli_with_input_env(args, &[], input).await
    }

    /// [`Env::cli_with_input`] with more environment variables.
    pub async fn cli_with_input_env(
        &self,
        args: &[&str],
        vars: &[(&str, &str)],
        input: &str,
    ) -> CliOutput {
        use tokio::io::AsyncWriteExt;
        let mut c = tokio::process::Command::from(self.command_on(None, args));
        c.envs(vars.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `strata {}`: {e}", args.join(" ")));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(input.as_bytes()).await.unwrap();
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`strata {}` did not finish within 60 s", args.join(" ")))
            .unwrap();
        CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a client command to completion in `cwd`.
    pub async fn cli_in(&self, cwd: &Path, args: &[&str]) -> CliOutput {
        self.cli_on(None, cwd, args).await
    }

    /// Runs a client command to completion on `host`, in `cwd`.
    pub async fn cli_on(&self, host: Option<&Host>, cwd: &Path, args: &[&str]) -> CliOutput {
        let mut c = self.command_on(host, args);
        c.current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut c = tokio::process::Command::from(c);
        c.kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), c.output())
            .await
            .unwrap_or_else(|_| panic!("`strata {}` did not finish within 60 s", args.join(" ")))
            .unwrap_or_else(|e| panic!("cannot run `strata {}`: {e}", args.join(" ")));
        let out = CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        let label = self.unique_label("cli");
        self.keep_log(
            format!("{label}: strata {}", args.join(" ")),
            Arc::new(Mutex::new(format!("{out:?}"))),
        );
        out
    }

    /// Starts a manager and waits until it listens.
    pub async fn start_manager(&self, spec: ManagerSpec) -> Manager {
        let work_dir = spec
            .work_dir
            .clone()
            .unwrap_or_else(|| self.path("manager"));
        let mut args: Vec<String> = vec![
            "manager".into(),
            "--listen".into(),
            spec.listen.clone(),
            "--work-dir".into(),
            work_dir.display().to_string(),
            "--agent-timeout".into(),
            spec.agent_timeout.clone(),
            "--allocation-interval".into(),
            spec.allocation_interval.clone(),
        ];
        if let Some(t) = &spec.token {
            args.extend(["--token".into(), t.clone()]);
        }
        if let Some(f) = &spec.failover_timeout {
            args.extend(["--failover-timeout".into(), f.clone()]);
        }
        if let Some(w) = &spec.revocable_window {
            args.extend(["--revocable-window".into(), w.clone()]);
        }
        if let Some(g) = &spec.preemption_grace {
            args.extend(["--preemption-grace".into(), g.clone()]);
        }
        args.extend(spec.extra.iter().cloned());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = self.command_on(spec.host.as_ref(), &argv);
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let mut proc = self.spawn_command("manager", command);
        let line = proc.wait_stderr("strata manager listening on ", LONG).await;
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {addr:?}"));
        let manager = Manager {
            proc,
            addr,
            port,
            work_dir,
            token: spec.token,
        };
        // On the embedded registry it leads once it holds the registry's
        // lock, a moment after it listens (on a shared store, whoever
        // wins the election leads: the test waits for what it needs).
        if !spec.extra.iter().any(|a| a == "--store") {
            wait_until("the manager leads", LONG, async || manager.leads().await).await;
        }
        manager
    }

    /// A manager and `agents` agents (work dirs `agent0`, `agent1`, …,
    /// [`AGENT_RESOURCES`] each), all registered.
    pub async fn start_cluster(&self, agents: usize) -> (Manager, Vec<Agent>) {
        let m = self.start_manager(ManagerSpec::default()).await;
        let mut started = Vec::new();
        for i in 0..agents {
            let dir = self.path(&format!("agent{i}"));
            started.push(self.start_agent(&m.addr, &dir, None).await);
        }
        m.wait_registered_agents(agents).await;
        (m, started)
    }

    /// Starts an agent with [`AGENT_RESOURCES`] and waits until it serves
    /// (not until it has registered).
    pub async fn start_agent(&self, manager: &str, work_dir: &Path, token: Option<&str>) -> Agent {
        let spec = AgentSpec {
            token: token.map(str::to_owned),
            ..AgentSpec::default()
        };
        self.start_agent_with(manager, work_dir, spec).await
    }

    /// Starts an agent as `spec` says and waits until it serves. Its
    /// [`Agent::addr`] is the address it advertises when it is given one.
    pub async fn start_agent_with(&self, manager: &str, work_dir: &Path, spec: AgentSpec) -> Agent {
        let token = spec.token.as_deref();
        let wd = work_dir.display().to_string();
        // Ports of its own unless the spec names them (an agent on a host
        // of its own, started again with the same ones).
        let resources = match spec.resources.as_deref() {
            Some(r) if r.contains("ports:") => r.to_owned(),
            r => format!("{};{}", r.unwrap_or(AGENT_RESOURCES), agent_ports()),
        };
        let mut args = vec![
            "agent",
            "--manager",
            manager,
            "--listen",
            &spec.listen,
            "--work-dir",
            &wd,
            "--resources",
            &resources,
        ];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        if let Some(a) = &spec.advertise {
            args.extend(["--advertise", a]);
        }
        // A host of its own has a name of its own (what `hostname`
        // constraints spread over).
        if let Some(h) = &spec.host {
            args.extend(["--hostname", &h.netns]);
        }
        let label = work_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "agent".into());
        let mut proc = self.spawn_on(spec.host.as_ref(), &label, &args);
        let line = proc.wait_stderr("strata agent serving on ", LONG).await;
        let bound = line
            .split("serving on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        let addr = spec.advertise.clone().unwrap_or(bound);
        Agent {
            proc,
            addr,
            work_dir: work_dir.to_owned(),
            token: token.map(str::to_owned),
        }
    }

    /// Live processes of task `task_id` started by this test's agents: the
    /// task's command and its descendants (they carry the task's
    /// environment), not its supervisor.
    pub fn task_processes(&self, task_id: &str) -> Vec<i32> {
        let id = format!("STRATA_TASK_ID={task_id}");
        let sandbox = format!("STRATA_SANDBOX={}", self.root.display());
        all_pids()
            .into_iter()
            .filter(|&pid| {
                let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                let mut has_id = false;
                let mut ours = false;
                for var in environ.split(|&b| b == 0) {
                    has_id |= var == id.as_bytes();
                    ours |= var.starts_with(sandbox.as_bytes());
                }
                has_id && ours && pid_alive(pid)
            })
            .collect()
    }

    /// Kills (SIGKILL) every process that still refers to the temp dir,
    /// until none is left.
    pub fn kill_leftovers(&self) -> Vec<i32> {
        let mut killed = Vec::new();
        for _ in 0..50 {
            let left = processes_under(&self.root);
            if left.is_empty() {
                break;
            }
            for &pid in &left {
                signal(pid, libc::SIGKILL);
            }
            // Then the next round, for what they started meanwhile.
            for &pid in &left {
                wait_gone(pid, Duration::from_secs(5));
            }
            killed.extend(left);
        }
        killed
    }

    /// Every captured log, for a failure report.
    pub fn dump_logs(&self) -> String {
        let mut out = String::new();
        for (label, log) in self.logs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.push_str(&format!("\n===== {label} =====\n{}", text(log)));
        }
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let killed = self.kill_leftovers();
        if std::thread::panicking() {
            eprintln!(
                "test failed; temp dir {} (processes left behind and killed: {killed:?}){}",
                self.root.display(),
                self.dump_logs()
            );
        }
        let _ = &self.dir;
    }
}

/// Reads lines of `r` into `log` on a thread of its own.
/// Reads `r` into `log` line by line, announcing each line on `lines`
/// (whose sender is dropped, closing the channel, once every pump of a
/// process has reached the end of its pipe).
fn pump(r: impl Read + Send + 'static, log: Log, lines: Arc<watch::Sender<u64>>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            let s = String::from_utf8_lossy(&line);
            log.lock().unwrap_or_else(|e| e.into_inner()).push_str(&s);
            lines.send_modify(|n| *n += 1);
            line.clear();
        }
    });
}

/// A finished client command.
#[derive(Debug)]
pub struct CliOutput {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl CliOutput {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// A background `strata` process. Dropping it kills it (SIGKILL).
pub struct Proc {
    /// Its name in the logs.
    pub label: String,
    child: Child,
    /// Its standard output so far.
    pub stdout: Log,
    /// Its standard error so far.
    pub stderr: Log,
    /// A new line on either pipe; closed once both pipes are.
    lines: watch::Receiver<u64>,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Standard error so far.
    pub fn stderr_text(&self) -> String {
        text(&self.stderr)
    }

    /// Standard output so far.
    pub fn stdout_text(&self) -> String {
        text(&self.stdout)
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for a line of standard error containing `needle`; returns it.
    pub async fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let log = self.stderr.clone();
        self.wait_line(&log, needle, timeout).await
    }

    /// Waits for a line of standard output containing `needle`.
    pub async fn wait_stdout(&mut self, needle: &str, timeout: Duration) -> String {
        let log = self.stdout.clone();
        self.wait_line(&log, needle, timeout).await
    }

    async fn wait_line(&mut self, log: &Log, needle: &str, timeout: Duration) -> String {
        let find = || {
            text(log)
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned)
        };
        let mut lines = self.lines.clone();
        let exit = self.exit_fd();
        let waited = tokio::time::timeout(timeout, async {
            let mut open = true;
            loop {
                if let Some(line) = find() {
                    return Some(line);
                }
                tokio::select! {
                    changed = lines.changed(), if open => open = changed.is_ok(),
                    () = exited(&exit) => {
                        // Let the pumps drain the pipes to their end (with
                        // a deadline) before the last look.
                        let drained = async { while lines.changed().await.is_ok() {} };
                        let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
                        return find();
                    }
                }
            }
        })
        .await;
        match waited {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "{} exited ({:?}) before printing {needle:?}; stderr:\n{}",
                self.label,
                self.child.try_wait(),
                self.stderr_text()
            ),
            Err(_) => panic!("{} did not print {needle:?} within {timeout:?}", self.label),
        }
    }

    /// A pidfd of the process to await its exit; `None` once it has been
    /// reaped (only this handle reaps it, so the pid is never another's).
    fn exit_fd(&mut self) -> Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return None;
        }
        let fd = pidfd(self.pid())?;
        let readable = tokio::io::Interest::READABLE;
        // SAFETY: an OwnedFd stays open, and is the same fd, for as long as
        // the AsyncFd that owns it.
        let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, readable) };
        Some(registered.unwrap_or_else(|e| panic!("cannot watch a pidfd: {e}")))
    }

    /// Sends a signal.
    pub fn signal(&self, sig: libc::c_int) {
        signal(self.pid(), sig);
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    /// Waits for it to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let exit = self.exit_fd();
        if tokio::time::timeout(timeout, exited(&exit)).await.is_err() {
            panic!("{} did not exit within {timeout:?}", self.label);
        }
        // It has exited: this reaps it without blocking.
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}
