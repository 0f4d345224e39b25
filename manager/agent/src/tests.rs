//! Whole-agent tests: a real agent against a fake manager (an `AgentLink`
//! gRPC server driven by the test), with real supervisors.
//!
//! The supervisor is this test binary itself: the agent runs
//! `<test binary> --exact tests::supervisor_entry … -- --launch <file>`,
//! and the `supervisor_entry` "test" turns into `supervisor::main` when it
//! sees `--launch` (it does nothing in a normal test run).

use super::*;
use crate::layout::files;
use std::time::Instant;
use strata_proto::pb::{
    self, Reason, TaskState, agent_link_server::AgentLink, agent_message, manager_message,
};
use strata_proto::resources::{Ranges, Resources};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};

/// Runs the supervisor when the agent under test starts this binary as one.
#[test]
fn supervisor_entry() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == supervisor::LAUNCH_FLAG) {
        std::process::exit(supervisor::main(args));
    }
}

pub(super) fn supervisor_prefix() -> Vec<String> {
    let exe = std::env::current_exe()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let name = concat!(module_path!(), "::supervisor_entry");
    // The module path starts with the crate name; libtest wants it without.
    let name = name.split_once("::").map(|(_, rest)| rest).unwrap_or(name);
    vec![
        exe,
        "--exact".into(),
        name.into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
        "--".into(),
    ]
}

const WAIT: Duration = Duration::from_secs(20);

/// One agent stream as the fake manager sees it.
struct Conn {
    metadata: tonic::metadata::MetadataMap,
    inbound: tonic::Streaming<pb::AgentMessage>,
    out: mpsc::UnboundedSender<Result<pb::ManagerMessage, tonic::Status>>,
}

impl Conn {
    async fn recv(&mut self) -> agent_message::Message {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.inbound.message())
                .await
                .expect("timed out waiting for the agent")
                .expect("stream error")
                .expect("stream closed");
            match msg.message {
                Some(agent_message::Message::Heartbeat(_)) | None => continue,
                Some(m) => return m,
            }
        }
    }

    async fn register(&mut self) -> agent_message::Register {
        match self.recv().await {
            agent_message::Message::Register(r) => r,
            other => panic!("expected register, got {other:?}"),
        }
    }

    fn send(&self, m: manager_message::Message) {
        self.out
            .send(Ok(pb::ManagerMessage { message: Some(m) }))
            .ok();
    }

    fn registered(&self, id: &str) {
        self.send(manager_message::Message::Registered(
            manager_message::Registered {
                agent_id: id.into(),
                heartbeat_interval_seconds: 0.2,
                epoch: 0,
            },
        ));
    }

    /// The next update of `task_id` in `state`, not acknowledged. Updates
    /// of that task in earlier states are acknowledged and skipped; those of
    /// other tasks are skipped.
    async fn expect(&mut self, task_id: &str, state: TaskState) -> pb::TaskStatus {
        loop {
            if let agent_message::Message::Update(u) = self.recv().await {
                let s = u.status.unwrap();
                if s.task_id != task_id {
                    continue;
                }
                if s.state() == state {
                    return s;
                }
                assert!(
                    !s.state().is_terminal(),
                    "task {task_id}: expected {state}, got {s:?}"
                );
                self.ack(&u.framework_id, &s);
            }
        }
    }

    /// Asks the agent to kill a task (the default grace, no reason).
    fn kill(&self, framework_id: &str, task_id: &str) {
        self.send(manager_message::Message::KillTask(
            manager_message::KillTask {
                framework_id: framework_id.into(),
                task_id: task_id.into(),
                grace_period_seconds: None,
                reason: Reason::Unspecified as i32,
            },
        ));
    }

    fn ack(&self, framework_id: &str, s: &pb::TaskStatus) {
        self.send(manager_message::Message::Ack(manager_message::AckUpdate {
            framework_id: framework_id.into(),
            task_id: s.task_id.clone(),
            uuid: s.uuid.clone(),
        }));
    }

    fn run(&self, framework_id: &str, task: pb::TaskInfo) {
        self.send(manager_message::Message::RunTask(
            manager_message::RunTask {
                framework_id: framework_id.into(),
                task: Some(task),
            },
        ));
    }
}

struct FakeManager {
    conns: mpsc::UnboundedSender<Conn>,
}

#[tonic::async_trait]
impl AgentLink for FakeManager {
    type AttachStream = UnboundedReceiverStream<Result<pb::ManagerMessage, tonic::Status>>;

    async fn attach(
        &self,
        request: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<Self::AttachStream>, tonic::Status> {
        let (out, rx) = mpsc::unbounded_channel();
        let metadata = request.metadata().clone();
        self.conns
            .send(Conn {
                metadata,
                inbound: request.into_inner(),
                out,
            })
            .ok();
        Ok(tonic::Response::new(UnboundedReceiverStream::new(rx)))
    }
}

struct Manager {
    addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<Conn>,
    server: JoinHandle<()>,
}

impl Manager {
    async fn start() -> Manager {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::unbounded_channel();
        let svc = pb::agent_link_server::AgentLinkServer::new(FakeManager { conns: tx });
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .ok();
        });
        Manager {
            addr,
            conns,
            server,
        }
    }

    async fn conn(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("the agent never connected")
            .unwrap()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn config(manager: SocketAddr, work_dir: &Path) -> AgentConfig {
    let mut c = AgentConfig::new(manager.to_string(), work_dir.to_owned());
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.resources = Resources::new(2.0, 1024.0).with_ports(Ranges::from_ranges([(31000, 31010)]));
    c.supervisor = supervisor_prefix();
    c.task_user = Some("root".into());
    c.status_retry = Duration::from_millis(300);
    c.reconnect_backoff = Duration::from_millis(50);
    c.poll_interval = Duration::from_millis(20);
    // The fake manager serves no route table.
    c.service_ports = false;
    c
}

fn shell_task(id: &str, script: &str) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: id.into(),
        name: id.into(),
        resources: Resources::new(0.1, 32.0)
            .with_ports(Ranges::from_ranges([(31002, 31003)]))
            .to_proto(false),
        command: Some(pb::CommandInfo {
            value: script.into(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn docker_task(id: &str, script: &str, image: &str) -> pb::TaskInfo {
    let mut task = shell_task(id, script);
    task.container = Some(pb::ContainerInfo {
        r#type: pb::container_info::Type::Docker as i32,
        docker: Some(pb::DockerInfo {
            image: image.into(),
            port_mappings: vec![],
        }),
    });
    task
}

/// Polls `cond` until it holds or the deadline passes.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
    }
}

fn pid_of(running: &pb::TaskStatus) -> i32 {
    running
        .message
        .strip_prefix("pid ")
        .unwrap()
        .parse()
        .unwrap()
}

async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{auth}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_finishes_and_is_forgotten_once_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut mgr = Manager::start().await;
    let mut cfg = config(mgr.addr, dir.path());
    cfg.token = Some("t0k".into());
    let agent = spawn(cfg).await.unwrap();
    let mut conn = mgr.conn().await;
    assert_eq!(conn.metadata.get("authorization").unwrap(), "Bearer t0k");
    let reg = conn.register().await;
    assert_eq!(reg.protocol_version, strata_proto::PROTOCOL_VERSION);
    assert_eq!(reg.agent_id, "");
    assert!(reg.tasks.is_empty());
    let info = reg.info.unwrap();
    assert_eq!(info.address, agent.address().to_string());
    assert_eq!(
        Resources::from_proto(&info.resources)
            .unwrap()
            .ports
            .count(),
        11
    );
    conn.registered("agent-1");
    assert_eq!(
        agent.wait_registered(WAIT).await.unwrap(),
        AgentId::new("agent-1")
    );
    let work = dir.path().canonicalize().unwrap();
    let layout = Layout::new(&work);
    assert!(
        std::fs::read_to_string(layout.agent_file())
            .unwrap()
            .contains("agent-1")
    );

    conn.run(
        "fw1",
        shell_task(
            "t1",
            "echo hello; echo \"$PORT0 $PORT1 $PORTS $STRATA_TASK_ID $STRATA_AGENT_ID $(pwd)\" >&2",
        ),
    );
    let running = conn.expect("t1", TaskState::TaskRunning).await;
    assert!(running.message.starts_with("pid "), "{running:?}");
    assert_eq!(running.agent_id, "agent-1");
    assert_eq!(running.source(), pb::Source::Agent);
    assert_eq!(running.uuid.len(), 16);
    conn.ack("fw1", &running);
    let finished = conn.expect("t1", TaskState::TaskFinished).await;
    assert_eq!(finished.exit_code, Some(0));
    assert_eq!(finished.reason(), Reason::CommandExited);
    // Not acknowledged: the same update comes again.
    let again = conn.expect("t1", TaskState::TaskFinished).await;
    assert_eq!(again.uuid, finished.uuid);

    let sandbox = layout.sandbox_dir(&"fw1".into(), &"t1".into());
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stdout")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stderr")).unwrap(),
        format!("31002 31003 31002,31003 t1 agent-1 {}\n", sandbox.display())
    );
    assert!(sandbox.join(files::EXIT_STATUS).exists());

    // The HTTP API, with its token.
    let (code, _) = http_get(agent.address(), "/v1/tasks", None).await;
    assert_eq!(code, 401);
    let (code, body) = http_get(agent.address(), "/v1/sandbox/fw1/t1/stdout", Some("t0k")).await;
    assert_eq!((code, body.as_str()), (200, "hello\n"));
    let (code, body) = http_get(agent.address(), "/health", None).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"agent_id\":\"agent-1\""), "{body}");

    conn.ack("fw1", &finished);
    let meta = layout.task_meta_dir(&"fw1".into(), &"t1".into());
    until("the task checkpoint is removed", || !meta.exists()).await;
    assert!(sandbox.exists(), "the sandbox stays for the GC");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_escalates_to_sigkill_and_takes_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut mgr = Manager::start().await;
    let agent = spawn(config(mgr.addr, dir.path())).await.unwrap();
    let mut conn = mgr.conn().await;
    conn.register().await;
    conn.registered("agent-1");
    let mut task = shell_task("stubborn", "trap '' TERM; sleep 100 & sleep 100");
    task.kill_policy = Some(pb::KillPolicy {
        grace_period_seconds: 0.3,
    });
    conn.run("fw", task);
    let running = conn.expect("stubborn", TaskState::TaskRunning).await;
    conn.ack("fw", &running);
    let pgid = pid_of(&running);
    until("both sleeps run", || {
        process::live_group_members(pgid).len() >= 3
    })
    .await;
    conn.kill("fw", "stubborn");
    let killed = conn.expect("stubborn", TaskState::TaskKilled).await;
    assert_eq!(killed.reason(), Reason::KilledByFramework);
    assert!(process::live_group_members(pgid).is_empty());
    conn.ack("fw", &killed);

    // A task that exits on SIGTERM is still reported killed, with the reason given.
    conn.run("fw", shell_task("polite", "sleep 100"));
    let running = conn.expect("polite", TaskState::TaskRunning).await;
    conn.send(manager_message::Message::ShutdownFramework(
        manager_message::ShutdownFramework {
            framework_id: "fw".into(),
        },
    ));
    let killed = conn.expect("polite", TaskState::TaskKilled).await;
    assert_eq!(killed.reason(), Reason::FrameworkRemoved);
    assert!(process::live_group_members(pid_of(&running)).is_empty());
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tasks_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut mgr = Manager::start().await;
    let agent = spawn(config(mgr.addr, dir.path())).await.unwrap();
    let mut conn = mgr.conn().await;
    conn.register().await;
    conn.registered("agent-1");

    conn.run("fw", shell_task("../escape", "true"));
    let s = conn.expect("../escape", TaskState::TaskError).await;
    assert_eq!(s.reason(), Reason::TaskInvalid);
    conn.ack("fw", &s);

    // Whether or not this machine has Docker, a missing image (or engine)
    // fails the task with a clear message.
    let image = "strata-test/no-such-image:never";
    conn.run("fw", docker_task("d1", "true", image));
    let s = conn.expect("d1", TaskState::TaskFailed).await;
    assert_eq!(s.reason(), Reason::ContainerLaunchFailed);
    assert!(
        s.message
            .starts_with(&format!("image {image} not found locally"))
            || s.message.starts_with("cannot reach the Docker Engine at "),
        "{s:?}"
    );
    conn.ack("fw", &s);
    let mut bad_port = docker_task("d2", "true", image);
    bad_port
        .container
        .as_mut()
        .unwrap()
        .docker
        .as_mut()
        .unwrap()
        .port_mappings = vec![pb::docker_info::PortMapping {
        container_port: 80,
        host_port: 31009,
        protocol: "tcp".into(),
    }];
    conn.run("fw", bad_port);
    let s = conn.expect("d2", TaskState::TaskError).await;
    assert_eq!(s.reason(), Reason::TaskInvalid);
    assert!(s.message.contains("31009"), "{s:?}");
    conn.ack("fw", &s);

    let mut empty = shell_task("e1", "");
    empty.command.as_mut().unwrap().value = "  ".into();
    conn.run("fw", empty);
    let s = conn.expect("e1", TaskState::TaskError).await;
    conn.ack("fw", &s);

    let mut missing = shell_task("m1", "/no/such/program");
    missing.command.as_mut().unwrap().shell = false;
    conn.run("fw", missing);
    let s = conn.expect("m1", TaskState::TaskFailed).await;
    assert_eq!(s.reason(), Reason::ContainerLaunchFailed);
    assert!(s.message.contains("/no/such/program"), "{s:?}");
    conn.ack("fw", &s);

    conn.run("fw", shell_task("x1", "exit 7"));
    let s = conn.expect("x1", TaskState::TaskFailed).await;
    assert_eq!(s.exit_code, Some(7));
    conn.ack("fw", &s);

    conn.run("fw", shell_task("s1", "kill -9 $$"));
    let s = conn.expect("s1", TaskState::TaskFailed).await;
    assert_eq!(s.message, "killed by signal 9");
    conn.ack("fw", &s);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_task_runs_and_is_killed_after_its_grace() {
    use super::docker_tests::{Cleanup, IMAGE, engine, exists};
    let Some((host, client)) = engine().await else {
        return;
    };
    let cleanup = Cleanup::new(&host);
    let name = super::docker::container_name(&"fw".into(), &"dk1".into());
    cleanup.add(&name);
    let dir = tempfile::tempdir().unwrap();
    let mut mgr = Manager::start().await;
    let mut cfg = config(mgr.addr, dir.path());
    cfg.docker_host = host;
    let agent = spawn(cfg).await.unwrap();
    let mut conn = mgr.conn().await;
    conn.register().await;
    conn.registered("agent-1");
    // `sleep` as the container's PID 1 has no SIGTERM handler, so the
    // kernel ignores SIGTERM: `docker stop` kills it after the grace.
    let script = "echo \"hi $STRATA_TASK_ID in $MESOS_SANDBOX\"; exec sleep 1000";
    conn.run("fw", docker_task("dk1", script, IMAGE));
    let running = conn.expect("dk1", TaskState::TaskRunning).await;
    assert!(pid_of(&running) > 1);
    conn.ack("fw", &running);
    let sandbox = agent.tasks()[0].sandbox.clone().unwrap();
    until("the greeting is in the sandbox", || {
        std::fs::read_to_string(sandbox.join(files::STDOUT))
            .is_ok_and(|s| s.contains("hi dk1 in /mnt/mesos/sandbox"))
    })
    .await;
    assert!(exists(&client, &name).await);
    let asked = Instant::now();
    conn.send(manager_message::Message::KillTask(
        manager_message::KillTask {
            framework_id: "fw".into(),
            task_id: "dk1".into(),
            grace_period_seconds: Some(1.0),
            reason: Reason::Unspecified as i32,
        },
    ));
    let killed = conn.expect("dk1", TaskState::TaskKilled).await;
    assert_eq!(killed.reason(), Reason::KilledByFramework);
    assert_eq!(killed.exit_code, Some(137), "{killed:?}");
    assert!(asked.elapsed() >= Duration::from_secs(1), "after the grace");
    assert!(!exists(&client, &name).await, "{name} was not removed");
    conn.ack("fw", &killed);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_survive_reconnection_and_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut mgr = Manager::start().await;
    let agent = spawn(config(mgr.addr, dir.path())).await.unwrap();
    let mut conn = mgr.conn().await;
    conn.register().await;
    conn.registered("agent-9");
    let wait_go = "while [ ! -e go ]; do sleep 0.02; done; exit 3";
    conn.run("fw", shell_task("ends-while-down", wait_go));
    conn.run("fw", shell_task("outlives", wait_go));
    let r1 = conn.expect("ends-while-down", TaskState::TaskRunning).await;
    let r2 = conn.expect("outlives", TaskState::TaskRunning).await;
    conn.ack("fw", &r1);

    // The manager drops the stream: the agent re-registers and resends the
    // unacknowledged head.
    drop(conn);
    let mut conn = mgr.conn().await;
    let reg = conn.register().await;
    assert_eq!(reg.agent_id, "agent-9");
    assert_eq!(reg.tasks.len(), 2);
    assert!(
        reg.tasks
            .iter()
            .all(|t| t.state() == TaskState::TaskRunning)
    );
    conn.registered("agent-9");
    let resent = conn.expect("outlives", TaskState::TaskRunning).await;
    assert_eq!(resent.uuid, r2.uuid);
    conn.ack("fw", &resent);

    // Restart the agent; one task ends while it is down.
    agent.shutdown().await;
    drop(conn);
    let layout = Layout::new(dir.path().canonicalize().unwrap());
    // A task's script waits for `go` in its sandbox.
    let release = |task: &str| {
        let go = layout.sandbox_dir(&"fw".into(), &task.into()).join("go");
        std::fs::write(go, b"").unwrap();
    };
    release("ends-while-down");
    let exit_file = layout
        .task_meta_dir(&"fw".into(), &"ends-while-down".into())
        .join(files::EXIT_STATUS);
    until("the supervisor records the exit", || exit_file.exists()).await;
    assert!(
        process::is_alive(pid_of(&r2), None, None),
        "tasks outlive the agent"
    );

    let agent = spawn(config(mgr.addr, dir.path())).await.unwrap();
    let mut conn = mgr.conn().await;
    let reg = conn.register().await;
    assert_eq!(reg.agent_id, "agent-9");
    let mut states: Vec<(String, TaskState)> = reg
        .tasks
        .iter()
        .map(|t| (t.task.as_ref().unwrap().task_id.clone(), t.state()))
        .collect();
    states.sort();
    assert_eq!(
        states,
        vec![
            ("ends-while-down".into(), TaskState::TaskFailed),
            ("outlives".into(), TaskState::TaskRunning),
        ]
    );
    conn.registered("agent-9");
    let failed = conn.expect("ends-while-down", TaskState::TaskFailed).await;
    assert_eq!(failed.exit_code, Some(3));
    conn.ack("fw", &failed);
    release("outlives");
    let failed = conn.expect("outlives", TaskState::TaskFailed).await;
    assert_eq!(failed.exit_code, Some(3));
    conn.ack("fw", &failed);
    let meta = layout.tasks_meta_dir();
    until("every checkpoint is gone", || {
        std::fs::read_dir(&meta)
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    })
    .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_supervisor_fails_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut mgr = Manager::start().await;
    let agent = spawn(config(mgr.addr, dir.path())).await.unwrap();
    let mut conn = mgr.conn().await;
    conn.register().await;
    conn.registered("agent-1");
    conn.run("fw", shell_task("orphan", "sleep 100"));
    let running = conn.expect("orphan", TaskState::TaskRunning).await;
    conn.ack("fw", &running);
    let layout = Layout::new(dir.path().canonicalize().unwrap());
    let sup = supervisor::read_pid(
        &layout
            .task_meta_dir(&"fw".into(), &"orphan".into())
            .join(files::SUPERVISOR_PID),
    )
    .unwrap();
    process::signal_pid(sup, nix::sys::signal::Signal::SIGKILL).unwrap();
    let failed = conn.expect("orphan", TaskState::TaskFailed).await;
    assert!(failed.message.contains("supervisor"), "{failed:?}");
    until("the task dies with its supervisor", || {
        process::live_group_members(pid_of(&running)).is_empty()
    })
    .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_before_registration_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut mgr = Manager::start().await;
    let agent = spawn(config(mgr.addr, dir.path())).await.unwrap();
    let mut conn = mgr.conn().await;
    conn.register().await;
    conn.send(manager_message::Message::Error(manager_message::Error {
        message: "bad token".into(),
    }));
    let mut conn = mgr.conn().await;
    conn.register().await;
    conn.registered("agent-2");
    assert_eq!(
        agent.wait_registered(WAIT).await.unwrap(),
        AgentId::new("agent-2")
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_as_nobody_under_root() {
    if process::euid() != 0 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut mgr = Manager::start().await;
    let mut cfg = config(mgr.addr, dir.path());
    cfg.task_user = None;
    let agent = spawn(cfg).await.unwrap();
    let mut conn = mgr.conn().await;
    conn.register().await;
    conn.registered("agent-1");
    use std::os::unix::fs::PermissionsExt;
    let readable = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    std::fs::write(readable.path(), b"fetched\n").unwrap();
    std::fs::set_permissions(readable.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = tempfile::NamedTempFile::new_in("/tmp").unwrap(); // 0600, root's
    let name = readable
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut task = shell_task("who", &format!("id -u; echo x > written; cat {name}"));
    let uri = format!("file://{}", readable.path().display());
    task.command.as_mut().unwrap().uris = vec![pb::Uri {
        value: uri,
        executable: false,
    }];
    conn.run("fw", task);
    let s = conn.expect("who", TaskState::TaskFinished).await;
    conn.ack("fw", &s);
    let mut task = shell_task("thief", "true");
    let uri = secret.path().display().to_string();
    task.command.as_mut().unwrap().uris = vec![pb::Uri {
        value: uri,
        executable: false,
    }];
    conn.run("fw", task);
    let s = conn.expect("thief", TaskState::TaskFailed).await;
    assert!(s.message.starts_with("cannot fetch"), "{s:?}");
    conn.ack("fw", &s);
    let layout = Layout::new(dir.path().canonicalize().unwrap());
    let sandbox = layout.sandbox_dir(&"fw".into(), &"who".into());
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stdout")).unwrap(),
        format!("{}\nfetched\n", nobody.uid)
    );
    assert!(sandbox.join("written").exists());
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_measured_and_revocable_tasks_run_at_the_lowest_priority() {
    let dir = tempfile::tempdir().unwrap();
    let mut mgr = Manager::start().await;
    let mut cfg = config(mgr.addr, dir.path());
    cfg.usage_interval = Duration::from_millis(200);
    let agent = spawn(cfg).await.unwrap();
    let mut conn = mgr.conn().await;
    conn.register().await;
    conn.registered("agent-1");
    // A busy loop, and an idle task on revocable cpus (one cpu lent, a
    // little mem regular).
    conn.run("fw", shell_task("busy", "while :; do :; done"));
    let mut idle = shell_task("idle", "sleep 100");
    idle.resources = Resources::new(0.0, 32.0).to_proto(false);
    idle.resources
        .extend(Resources::new(1.0, 0.0).to_proto(true));
    conn.run("fw", idle);
    let running = conn.expect("idle", TaskState::TaskRunning).await;
    conn.ack("fw", &running);
    let pid = pid_of(&running);
    // Usage reports name both tasks: the loop near one cpu, sleep near none.
    let deadline = Instant::now() + WAIT;
    let (mut busy_cpus, mut idle_cpus) = (None, None);
    // (The machine may be busy with other tests: a fifth of a cpu will do.)
    while busy_cpus.is_none_or(|c: f64| c < 0.2) || idle_cpus.is_none() {
        assert!(
            Instant::now() < deadline,
            "no usage reports: {busy_cpus:?} {idle_cpus:?}"
        );
        if let agent_message::Message::Usage(u) = conn.recv().await {
            for t in u.tasks {
                assert_eq!(t.framework_id, "fw");
                assert!(t.mem > 0.0, "{t:?}");
                match t.task_id.as_str() {
                    "busy" => busy_cpus = Some(t.cpus),
                    "idle" => idle_cpus = Some(t.cpus),
                    other => panic!("usage of unknown task {other}"),
                }
            }
        }
    }
    assert!(idle_cpus.unwrap() < 0.1, "{idle_cpus:?}");
    // The agent's API shows the same.
    let (code, body) = http_get(agent.address(), "/v1/usage", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"task_id\":\"busy\""), "{body}");
    // The revocable task runs at the lowest priority: nice 19.
    let stat = procfs::process::Process::new(pid).unwrap().stat().unwrap();
    assert_eq!(stat.nice, 19, "{stat:?}");
    // Tasks outlive their agent's shutdown (recovery): the busy loop is
    // killed here, or it would spin after the test.
    conn.kill("fw", "busy");
    let killed = conn.expect("busy", TaskState::TaskKilled).await;
    conn.ack("fw", &killed);
    agent.shutdown().await;
}
