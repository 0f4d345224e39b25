//! The test harness: a temp dir per test (its `STRATA_HOME`), real `strata`
//! child processes with their output captured, polling with deadlines, a
//! small HTTP client, signals, an SDK framework wrapper that records its
//! events, a raw gRPC scheduler for malformed requests, and cleanup that
//! leaves no process behind.
//!
//! Rules the tests follow: never sleep to wait for a condition (poll it with
//! a deadline: [`wait_until`], [`wait_for`], [`Proc::wait_stderr`],
//! [`Fw::expect`]); every process a test starts lives under its [`Env`]'s
//! temp dir, so dropping the `Env` can find and kill whatever is left
//! (managers, agents, task supervisors and the tasks themselves).

#![allow(dead_code)]

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
use tokio::sync::mpsc;

/// The binary under test.
pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// What each test agent advertises unless told otherwise.
pub const AGENT_RESOURCES: &str = "cpus:2;mem:1024;disk:100;ports:[31000-31099]";

/// The generous deadline for anything that should happen "soon".
pub const LONG: Duration = Duration::from_secs(30);

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(25);

/// Lines a process wrote, shared with the thread that reads them.
pub type Log = Arc<Mutex<String>>;

fn text(log: &Log) -> String {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

// ---------------------------------------------------------------- polling

/// Polls `cond` until it holds; panics after `timeout` naming `what`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    wait_for(what, timeout, async || cond().await.then_some(())).await
}

/// Polls `f` until it returns `Some`; panics after `timeout` naming `what`.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

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

/// `(state, ppid, pgrp)` from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
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
        let mut c = Command::new(STRATA);
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
        let label = self.unique_label(label);
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {STRATA}: {e}"));
        let stdout: Log = Arc::default();
        let stderr: Log = Arc::default();
        pump(child.stdout.take().unwrap(), stdout.clone());
        pump(child.stderr.take().unwrap(), stderr.clone());
        self.keep_log(format!("{label} stdout"), stdout.clone());
        self.keep_log(format!("{label} stderr"), stderr.clone());
        Proc {
            label,
            child,
            stdout,
            stderr,
        }
    }

    /// Runs a client command to completion (at most a minute).
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_in(&self.root, args).await
    }

    /// Runs a client command to completion in `cwd`.
    pub async fn cli_in(&self, cwd: &Path, args: &[&str]) -> CliOutput {
        let mut c = self.command(args);
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
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proc = self.spawn("manager", &argv);
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
        Manager {
            proc,
            addr,
            port,
            work_dir,
            token: spec.token,
        }
    }

    /// Starts an agent with [`AGENT_RESOURCES`] and waits until it serves
    /// (not until it has registered).
    pub async fn start_agent(&self, manager: &str, work_dir: &Path, token: Option<&str>) -> Agent {
        let wd = work_dir.display().to_string();
        let mut args = vec![
            "agent",
            "--manager",
            manager,
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
            &wd,
            "--resources",
            AGENT_RESOURCES,
        ];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        let label = work_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "agent".into());
        let mut proc = self.spawn(&label, &args);
        let line = proc.wait_stderr("strata agent serving on ", LONG).await;
        let addr = line
            .split("serving on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
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
            for pid in left {
                signal(pid, libc::SIGKILL);
                killed.push(pid);
            }
            std::thread::sleep(Duration::from_millis(20));
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
fn pump(r: impl Read + Send + 'static, log: Log) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            let s = String::from_utf8_lossy(&line);
            log.lock().unwrap_or_else(|e| e.into_inner()).push_str(&s);
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
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = text(log).lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader threads a moment to drain the pipes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(line) = text(log).lines().find(|l| l.contains(needle)) {
                    return line.to_owned();
                }
                panic!(
                    "{} exited ({status}) before printing {needle:?}; stderr:\n{}",
                    self.label,
                    self.stderr_text()
                );
            }
            if Instant::now() >= deadline {
                panic!("{} did not print {needle:?} within {timeout:?}", self.label);
            }
            tokio::time::sleep(POLL).await;
        }
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
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!("{} did not exit within {timeout:?}", self.label);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------- HTTP

/// GET or PUT; returns the status and body (panics if nobody answers).
pub async fn http(
    method: &str,
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Vec<u8>) {
    let (status, _, body) =
        strata::http::request(method, addr, path, token, body, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"));
    (status, body)
}

/// GET that must answer 200 with JSON.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    addr: &str,
    path: &str,
    token: Option<&str>,
) -> T {
    let (status, body) = http("GET", addr, path, token, None).await;
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "GET {path}: bad JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}

// ---------------------------------------------------------------- manager and agents

/// How to start a manager. The defaults keep tests fast.
#[derive(Clone, Debug)]
pub struct ManagerSpec {
    /// `--listen`.
    pub listen: String,
    /// `--work-dir` (default `<temp>/manager`).
    pub work_dir: Option<PathBuf>,
    /// `--token`.
    pub token: Option<String>,
    /// `--agent-timeout`.
    pub agent_timeout: String,
    /// `--failover-timeout`.
    pub failover_timeout: Option<String>,
    /// `--allocation-interval`.
    pub allocation_interval: String,
}

impl Default for ManagerSpec {
    fn default() -> Self {
        ManagerSpec {
            listen: "127.0.0.1:0".into(),
            work_dir: None,
            token: None,
            agent_timeout: "5s".into(),
            failover_timeout: None,
            allocation_interval: "100ms".into(),
        }
    }
}

/// A running manager.
pub struct Manager {
    /// The process.
    pub proc: Proc,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The port.
    pub port: u16,
    /// Its work dir.
    pub work_dir: PathBuf,
    /// Its token.
    pub token: Option<String>,
}

impl Manager {
    /// `GET /api/v1/state`.
    pub async fn state(&self) -> StateView {
        get_json(&self.addr, "/api/v1/state", self.token.as_deref()).await
    }

    /// Waits until `n` agents are registered; returns them.
    pub async fn wait_registered_agents(&self, n: usize) -> Vec<AgentView> {
        wait_for(&format!("{n} registered agent(s)"), LONG, async || {
            let agents: Vec<AgentView> = self
                .state()
                .await
                .agents
                .into_iter()
                .filter(|a| a.state == "registered")
                .collect();
            (agents.len() == n).then_some(agents)
        })
        .await
    }

    /// The active task `id` in the state, if any.
    pub async fn task(&self, id: &str) -> Option<TaskView> {
        self.state().await.tasks.into_iter().find(|t| t.id == id)
    }
}

/// A running agent.
pub struct Agent {
    /// The process.
    pub proc: Proc,
    /// Its HTTP address.
    pub addr: String,
    /// Its work dir.
    pub work_dir: PathBuf,
    /// Its token.
    pub token: Option<String>,
}

impl Agent {
    /// `GET /v1/tasks`.
    pub async fn tasks(&self) -> Vec<serde_json::Value> {
        get_json(&self.addr, "/v1/tasks", self.token.as_deref()).await
    }

    /// Waits until the agent reports a pid for the task; returns it.
    pub async fn task_pid(&self, task_id: &str) -> i32 {
        wait_for(&format!("the pid of task {task_id}"), LONG, async || {
            self.tasks()
                .await
                .iter()
                .find(|t| t["task_id"] == task_id)
                .and_then(|t| t["pid"].as_i64())
                .map(|p| p as i32)
        })
        .await
    }
}

// ---------------------------------------------------------------- SDK framework

/// A scheduler configuration for tests: failover timeout 60 s.
pub fn framework_config(addr: &str, name: &str) -> SchedulerConfig {
    let mut fw = FrameworkConfig::new(name);
    fw.failover_timeout = Duration::from_secs(60);
    SchedulerConfig::new(addr, fw)
}

/// A task of `script` with 0.1 cpus and 32 MiB.
pub fn shell_task(id: &str, script: &str) -> TaskInfo {
    strata_sdk::TaskBuilder::shell(id, script)
        .resources(Resources::new(0.1, 32.0))
        .build()
}

/// An SDK framework that records every event it reads (heartbeats aside).
pub struct Fw {
    /// Calls.
    pub handle: SchedulerHandle,
    /// Events not yet read.
    pub events: EventStream,
    /// Every event read so far, in order.
    pub seen: Vec<Event>,
    /// The framework id.
    pub id: FrameworkId,
}

impl Fw {
    /// Subscribes (panicking on failure) and reads the `Subscribed` event.
    pub async fn subscribe(config: SchedulerConfig) -> Fw {
        let name = config.framework.name.clone();
        let (handle, events) = Scheduler::subscribe(config)
            .await
            .unwrap_or_else(|e| panic!("framework {name} cannot subscribe: {e}"));
        let id = handle.framework_id();
        let mut fw = Fw {
            handle,
            events,
            seen: Vec::new(),
            id,
        };
        fw.expect("Subscribed", LONG, |e| {
            matches!(e, Event::Subscribed { .. }).then_some(())
        })
        .await;
        fw
    }

    fn recent(&self) -> String {
        let from = self.seen.len().saturating_sub(30);
        format!("{:#?}", &self.seen[from..])
    }

    /// Reads events until `f` picks one (events read are kept in `seen`).
    pub async fn expect<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Err(_) => panic!(
                    "framework {}: timed out after {timeout:?} waiting for {what}; recent events: {}",
                    self.id,
                    self.recent()
                ),
                Ok(None) => panic!(
                    "framework {}: the event stream ended while waiting for {what}; recent events: {}",
                    self.id,
                    self.recent()
                ),
                Ok(Some(e)) => {
                    let picked = f(&e);
                    if !matches!(e, Event::Heartbeat) {
                        self.seen.push(e);
                    }
                    if let Some(v) = picked {
                        return v;
                    }
                }
            }
        }
    }

    /// The states of every update read for `task`, in order.
    pub fn states_of(&self, task: &str) -> Vec<TaskState> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Update(s) if s.task_id.as_str() == task => Some(s.state),
                _ => None,
            })
            .collect()
    }

    /// Waits for an update putting `task` in `state` (one already read
    /// counts); panics if the task ends in another terminal state.
    pub async fn wait_state(&mut self, task: &str, state: TaskState) -> TaskStatus {
        let found = self.seen.iter().find_map(|e| match e {
            Event::Update(s) if s.task_id.as_str() == task && s.state == state => Some(s.clone()),
            _ => None,
        });
        if let Some(s) = found {
            return s;
        }
        self.next_state(task, state).await
    }

    /// Waits for a new update putting `task` in `state`.
    pub async fn next_state(&mut self, task: &str, state: TaskState) -> TaskStatus {
        let deadline = Instant::now() + LONG;
        let what = format!("task {task} to be {}", state.as_str_name());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let s = self
                .expect(&what, left, |e| match e {
                    Event::Update(s) if s.task_id.as_str() == task => Some(s.clone()),
                    _ => None,
                })
                .await;
            if s.state == state {
                return s;
            }
            if s.is_terminal() {
                panic!(
                    "waiting for {what}, it ended {} ({}): {:?}",
                    s.state.as_str_name(),
                    s.reason.as_str_name(),
                    s.message
                );
            }
        }
    }

    /// Launches `tasks` together on the first offer that holds them all
    /// (declining others), then suppresses offers. Returns the offer used.
    pub async fn launch(&mut self, tasks: Vec<TaskInfo>) -> Offer {
        self.handle.revive().await.expect("revive");
        let need = tasks
            .iter()
            .fold(Resources::default(), |acc, t| acc.plus(&t.resources));
        let offer = loop {
            let offers = self
                .expect(&format!("an offer holding {need}"), LONG, |e| match e {
                    Event::Offers(o) => Some(o.clone()),
                    _ => None,
                })
                .await;
            let mut chosen = None;
            for o in offers {
                if chosen.is_none() && o.fits(&need) {
                    chosen = Some(o);
                } else {
                    self.handle
                        .decline(vec![o.id.clone()], Some(Duration::ZERO))
                        .await
                        .expect("decline");
                }
            }
            if let Some(o) = chosen {
                break o;
            }
        };
        self.handle
            .accept(
                vec![offer.id.clone()],
                tasks,
                Filters::refuse(Duration::from_secs(1)),
            )
            .await
            .expect("accept");
        self.handle.suppress().await.expect("suppress");
        offer
    }
}

// ---------------------------------------------------------------- raw gRPC

/// A scheduler speaking the wire protocol directly (for requests the SDK
/// would never send).
pub struct Raw {
    client: pb::scheduler_client::SchedulerClient<tonic::transport::Channel>,
    /// The framework id.
    pub framework_id: String,
    /// The current stream id.
    pub stream_id: String,
    rx: mpsc::UnboundedReceiver<pb::Event>,
    /// Offers read and not yet used.
    backlog: VecDeque<pb::event::Event>,
    /// Every event read (heartbeats aside).
    pub seen: Vec<pb::Event>,
}

/// A `FrameworkInfo` for a raw subscription.
pub fn raw_framework(name: &str) -> pb::FrameworkInfo {
    pb::FrameworkInfo {
        name: name.into(),
        user: std::env::var("USER").unwrap_or_default(),
        role: "*".into(),
        default_class: "batch".into(),
        failover_timeout_seconds: 60.0,
        hostname: "localhost".into(),
        ..Default::default()
    }
}

/// A raw resource.
pub fn resource(name: &str, scalar: f64) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        scalar,
        ranges: vec![],
        revocable: false,
    }
}

/// A raw shell task.
pub fn raw_task(id: &str, script: &str, resources: Vec<pb::Resource>) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: id.into(),
        name: id.into(),
        resources,
        command: Some(pb::CommandInfo {
            value: script.into(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Raw {
    /// Connects to the manager's gRPC endpoint.
    pub async fn connect(
        addr: &str,
    ) -> pb::scheduler_client::SchedulerClient<tonic::transport::Channel> {
        pb::scheduler_client::SchedulerClient::connect(format!("http://{addr}"))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
    }

    /// Subscribes with `req`; returns the refusal, or the subscription.
    pub async fn subscribe(addr: &str, req: pb::SubscribeRequest) -> Result<Raw, tonic::Status> {
        let mut client = Raw::connect(addr).await;
        let mut stream = client.subscribe(req).await?.into_inner();
        let first = tokio::time::timeout(LONG, stream.message())
            .await
            .expect("no Subscribed event in time")?
            .expect("the stream ended before Subscribed");
        let Some(pb::event::Event::Subscribed(s)) = first.event else {
            panic!("first event is not Subscribed: {first:?}");
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(e)) = stream.message().await {
                if tx.send(e).is_err() {
                    break;
                }
            }
        });
        Ok(Raw {
            client,
            framework_id: s.framework_id,
            stream_id: s.stream_id,
            rx,
            backlog: VecDeque::new(),
            seen: Vec::new(),
        })
    }

    /// Makes a call on the subscription.
    pub async fn call(&mut self, call: pb::call::Call) -> Result<(), tonic::Status> {
        let req = pb::Call {
            framework_id: self.framework_id.clone(),
            stream_id: self.stream_id.clone(),
            call: Some(call),
        };
        self.client.call(req).await.map(|_| ())
    }

    /// Accepts `offer_ids` launching `tasks`; unused resources are offered
    /// again at once.
    pub async fn accept(
        &mut self,
        offer_ids: Vec<String>,
        tasks: Vec<pb::TaskInfo>,
    ) -> Result<(), tonic::Status> {
        self.call(pb::call::Call::Accept(pb::call::Accept {
            offer_ids,
            operations: vec![pb::call::Operation {
                operation: Some(pb::call::operation::Operation::Launch(pb::call::Launch {
                    tasks,
                })),
            }],
            filters: Some(pb::Filters {
                refuse_seconds: Some(0.0),
            }),
        }))
        .await
    }

    /// Takes the first event `f` picks: from the backlog of offers read
    /// earlier, else from the stream. Updates are acknowledged as they are
    /// read; offers not picked are kept for later (never silently held).
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&pb::event::Event) -> Option<T>,
    ) -> T {
        if let Some(i) = self.backlog.iter().position(|e| f(e).is_some()) {
            let e = self.backlog.remove(i).expect("index in range");
            return f(&e).expect("picked before");
        }
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            let e = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => panic!(
                    "timed out waiting for {what}; events: {:#?}",
                    &self.seen[self.seen.len().saturating_sub(20)..]
                ),
                Ok(None) => panic!("the event stream ended while waiting for {what}"),
                Ok(Some(e)) => e,
            };
            let Some(inner) = e.event.clone() else {
                continue;
            };
            if let pb::event::Event::Update(u) = &inner
                && let Some(s) = &u.status
                && !s.uuid.is_empty()
            {
                let ack = pb::call::Call::Acknowledge(pb::call::Acknowledge {
                    agent_id: s.agent_id.clone(),
                    task_id: s.task_id.clone(),
                    uuid: s.uuid.clone(),
                });
                self.call(ack).await.expect("acknowledge");
            }
            if !matches!(inner, pb::event::Event::Heartbeat(_)) {
                self.seen.push(e);
            }
            if let Some(v) = f(&inner) {
                return v;
            }
            if matches!(inner, pb::event::Event::Offers(_)) {
                self.backlog.push_back(inner);
            }
        }
    }

    /// The next offer (the others of its batch are kept for later).
    pub async fn next_offer(&mut self) -> pb::Offer {
        let mut offers = self
            .expect("an offer", |e| match e {
                pb::event::Event::Offers(o) if !o.offers.is_empty() => Some(o.offers.clone()),
                _ => None,
            })
            .await;
        let first = offers.remove(0);
        if !offers.is_empty() {
            self.backlog
                .push_front(pb::event::Event::Offers(pb::event::Offers { offers }));
        }
        first
    }

    /// Waits for an update of `task` with `state`; panics on another
    /// terminal state.
    pub async fn wait_state(&mut self, task: &str, state: pb::TaskState) -> pb::TaskStatus {
        loop {
            let s = self
                .expect(
                    &format!("task {task} to be {}", state.as_str_name()),
                    |e| match e {
                        pb::event::Event::Update(u) => {
                            u.status.clone().filter(|s| s.task_id == task)
                        }
                        _ => None,
                    },
                )
                .await;
            if s.state == state as i32 {
                return s;
            }
            let got = pb::TaskState::try_from(s.state).unwrap_or_default();
            if got.is_terminal() {
                panic!(
                    "waiting for task {task} to be {}, it ended {}: {:?}",
                    state.as_str_name(),
                    got.as_str_name(),
                    s.message
                );
            }
        }
    }
}
