//! Tasks on a manager and an agent: launch and kill (the whole process tree
//! goes), an agent killed with `-9` and restarted (tasks survive, final
//! states are not lost), malformed scheduler requests, a full disk on an
//! agent and on the manager, and a slow disk under the manager.

use std::time::{Duration, Instant};

use strata_proto::pb;
use strata_sdk::TaskState;

use crate::harness::{
    Env, Fw, LONG, LoopDisk, ManagerSpec, Raw, framework_config, pid_alive, proc_comm,
    raw_framework, raw_task, resource, shell_task, wait_for, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_and_kill() {
    let env = Env::new("launch-kill");
    let m = env.start_manager(ManagerSpec::default()).await;
    let agent = env.start_agent(&m.addr, &env.path("agent"), None).await;
    m.wait_registered_agents(1).await;

    let mut fw = Fw::subscribe(framework_config(&m.addr, "launch-and-kill")).await;
    fw.launch(vec![
        shell_task("sleeper", "sleep 1000"),
        shell_task("tree", "sleep 1000 & sleep 1000"),
    ])
    .await;
    fw.wait_state("sleeper", TaskState::TaskRunning).await;
    fw.wait_state("tree", TaskState::TaskRunning).await;

    // The agent reports the task's pid: the task's shell (or its `sleep`),
    // which carries the task's environment.
    let pid = agent.task_pid("sleeper").await;
    assert!(pid_alive(pid));
    let sleeper = wait_for("the sleep of the sleeper task", LONG, async || {
        let procs = env.task_processes("sleeper");
        let sleeps = procs.iter().filter(|&&p| proc_comm(p) == "sleep").count();
        (sleeps == 1).then_some(procs)
    })
    .await;
    assert!(sleeper.contains(&pid), "{pid} not in {sleeper:?}");
    let view = m.task("sleeper").await.expect("sleeper in the state");
    assert_eq!(view.state, "TASK_RUNNING");

    // Both sleeps of the tree (the shell may or may not stay around).
    let tree = wait_for("both sleeps of the tree task", LONG, async || {
        let procs = env.task_processes("tree");
        let sleeps = procs.iter().filter(|&&p| proc_comm(p) == "sleep").count();
        (sleeps == 2).then_some(procs)
    })
    .await;

    fw.handle
        .kill("sleeper".into(), None)
        .await
        .expect("kill sleeper");
    let killed = fw.wait_state("sleeper", TaskState::TaskKilled).await;
    assert_eq!(
        killed.agent_id.as_ref().map(|a| a.as_str().to_owned()),
        Some(m.state().await.agents[0].id.clone())
    );
    wait_until("the sleeper's processes to die", LONG, async || {
        sleeper.iter().all(|&p| !pid_alive(p)) && env.task_processes("sleeper").is_empty()
    })
    .await;
    // The tree is untouched by the other kill.
    assert!(tree.iter().all(|&p| pid_alive(p)), "tree: {tree:?}");

    fw.handle
        .kill("tree".into(), None)
        .await
        .expect("kill tree");
    fw.wait_state("tree", TaskState::TaskKilled).await;
    wait_until("every process of the tree to die", LONG, async || {
        tree.iter().all(|&p| !pid_alive(p)) && env.task_processes("tree").is_empty()
    })
    .await;

    // The state API no longer lists them as running, and lists them as
    // killed among the completed tasks.
    wait_until(
        "the killed tasks to leave the active list",
        LONG,
        async || {
            let s = m.state().await;
            s.tasks
                .iter()
                .all(|t| t.state != "TASK_RUNNING" || (t.id != "sleeper" && t.id != "tree"))
        },
    )
    .await;
    let s = m.state().await;
    for id in ["sleeper", "tree"] {
        let done = s
            .completed_tasks
            .iter()
            .find(|t| t.id == id)
            .unwrap_or_else(|| panic!("{id} not among the completed: {:#?}", s.completed_tasks));
        assert_eq!(done.state, "TASK_KILLED", "{done:?}");
    }
    assert_eq!(s.agents[0].tasks, 0, "{:#?}", s.agents);
    fw.handle.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill9_and_restart() {
    let env = Env::new("agent-kill9");
    // The agent is down for a few seconds only: not long enough to be
    // marked unreachable.
    let m = env
        .start_manager(ManagerSpec {
            agent_timeout: "30s".into(),
            ..Default::default()
        })
        .await;
    let agent_dir = env.path("agent");
    let mut agent = env.start_agent(&m.addr, &agent_dir, None).await;
    let agent_id = m.wait_registered_agents(1).await[0].id.clone();

    let mut fw = Fw::subscribe(framework_config(&m.addr, "agent-kill9")).await;
    fw.launch(vec![
        shell_task("long", "sleep 1000"),
        shell_task("short", "sleep 2"),
    ])
    .await;
    fw.wait_state("long", TaskState::TaskRunning).await;
    fw.wait_state("short", TaskState::TaskRunning).await;
    let long_pid = agent.task_pid("long").await;
    let short_pid = agent.task_pid("short").await;
    assert!(
        pid_alive(short_pid),
        "the short task ended before the agent was killed: the test is too slow"
    );

    agent.proc.kill9();
    assert!(pid_alive(long_pid), "the long task died with its agent");
    wait_until(
        "the short task to end while its agent is down",
        LONG,
        async || !pid_alive(short_pid),
    )
    .await;
    assert!(
        pid_alive(long_pid),
        "the long task died while its agent was down"
    );
    assert!(
        !fw.states_of("short").contains(&TaskState::TaskFinished),
        "TASK_FINISHED before the agent came back: {:?}",
        fw.states_of("short")
    );

    let _agent = env.start_agent(&m.addr, &agent_dir, None).await;
    let finished = fw.wait_state("short", TaskState::TaskFinished).await;
    assert_eq!(finished.exit_code, Some(0), "{finished:?}");

    let agents = m.wait_registered_agents(1).await;
    assert_eq!(
        agents[0].id, agent_id,
        "the agent came back under another id"
    );
    wait_until(
        "the long task RUNNING on the same agent",
        LONG,
        async || {
            let s = m.state().await;
            s.agents.len() == 1
                && s.tasks
                    .iter()
                    .any(|t| t.id == "long" && t.state == "TASK_RUNNING" && t.agent_id == agent_id)
        },
    )
    .await;
    assert!(pid_alive(long_pid));

    fw.handle.kill("long".into(), None).await.expect("kill");
    fw.wait_state("long", TaskState::TaskKilled).await;
    wait_until("the long task's process to die", LONG, async || {
        !pid_alive(long_pid)
    })
    .await;
    for bad in [
        TaskState::TaskLost,
        TaskState::TaskUnreachable,
        TaskState::TaskGone,
        TaskState::TaskFailed,
    ] {
        assert!(
            !fw.states_of("long").contains(&bad),
            "long: {:?}",
            fw.states_of("long")
        );
    }
    fw.handle.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let env = Env::new("bad-requests");
    let m = env.start_manager(ManagerSpec::default()).await;
    let _agent = env.start_agent(&m.addr, &env.path("agent"), None).await;
    m.wait_registered_agents(1).await;

    // Another protocol version is refused, saying so.
    let refused = Raw::subscribe(
        &m.addr,
        pb::SubscribeRequest {
            protocol_version: 99,
            framework: Some(raw_framework("future")),
            demand: vec![],
            suppressed: false,
        },
    )
    .await
    .err()
    .expect("protocol version 99 was accepted");
    assert!(
        refused.message().contains("99") && refused.message().contains("version"),
        "{refused:?}"
    );
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    let mut fw = Raw::subscribe(
        &m.addr,
        pb::SubscribeRequest {
            protocol_version: strata_proto::PROTOCOL_VERSION,
            framework: Some(raw_framework("bad-requests")),
            demand: vec![],
            suppressed: false,
        },
    )
    .await
    .expect("subscribe");
    let small = || vec![resource("cpus", 0.1), resource("mem", 32.0)];

    // An unknown offer: the task is dropped.
    fw.accept(
        vec!["no-such-offer".into()],
        vec![raw_task("t-dropped", "true", small())],
    )
    .await
    .expect("accept");
    let s = fw.wait_state("t-dropped", pb::TaskState::TaskDropped).await;
    assert_eq!(s.reason, pb::Reason::InvalidOffers as i32, "{s:?}");
    assert!(s.message.contains("no-such-offer"), "{s:?}");

    // More than the offer holds.
    let offer = fw.next_offer().await;
    fw.accept(
        vec![offer.offer_id.clone()],
        vec![raw_task(
            "t-big",
            "true",
            vec![resource("cpus", 100.0), resource("mem", 32.0)],
        )],
    )
    .await
    .expect("accept");
    let s = fw.wait_state("t-big", pb::TaskState::TaskError).await;
    assert_eq!(s.reason, pb::Reason::TaskInvalid as i32, "{s:?}");
    assert!(!s.message.is_empty(), "{s:?}");

    // A task id already in use.
    let offer = fw.next_offer().await;
    fw.accept(
        vec![offer.offer_id.clone()],
        vec![raw_task("t-dup", "sleep 1000", small())],
    )
    .await
    .expect("accept");
    fw.wait_state("t-dup", pb::TaskState::TaskRunning).await;
    let offer = fw.next_offer().await;
    fw.accept(
        vec![offer.offer_id.clone()],
        vec![raw_task("t-dup", "true", small())],
    )
    .await
    .expect("accept");
    let s = fw.wait_state("t-dup", pb::TaskState::TaskError).await;
    assert!(s.message.contains("already in use"), "{s:?}");
    // The first t-dup is unharmed.
    let view = m.task("t-dup").await.expect("t-dup in the state");
    assert_eq!(view.state, "TASK_RUNNING", "{view:?}");

    // A resource nobody knows, and a NaN.
    let offer = fw.next_offer().await;
    fw.accept(
        vec![offer.offer_id.clone()],
        vec![
            raw_task(
                "t-gpu",
                "true",
                vec![
                    resource("cpus", 0.1),
                    resource("mem", 32.0),
                    resource("gpus", 1.0),
                ],
            ),
            raw_task(
                "t-nan",
                "true",
                vec![resource("cpus", f64::NAN), resource("mem", 32.0)],
            ),
        ],
    )
    .await
    .expect("accept");
    let s = fw.wait_state("t-gpu", pb::TaskState::TaskError).await;
    assert!(s.message.contains("gpus"), "{s:?}");
    let s = fw.wait_state("t-nan", pb::TaskState::TaskError).await;
    assert!(!s.message.is_empty(), "{s:?}");
    assert!(
        s.message.contains("cpus") || s.message.to_lowercase().contains("nan"),
        "{s:?}"
    );

    // None of it stuck: a valid task runs, on the same subscription.
    let offer = fw.next_offer().await;
    fw.accept(
        vec![offer.offer_id.clone()],
        vec![raw_task("t-ok", "echo ok", small())],
    )
    .await
    .expect("accept");
    let s = fw.wait_state("t-ok", pb::TaskState::TaskFinished).await;
    assert_eq!(s.exit_code, Some(0), "{s:?}");
    let state = m.state().await;
    for refused in ["t-dropped", "t-big", "t-gpu", "t-nan"] {
        assert!(
            !state.tasks.iter().any(|t| t.id == refused),
            "{refused} holds resources: {:#?}",
            state.tasks
        );
    }

    fw.call(pb::call::Call::Kill(pb::call::Kill {
        task_id: "t-dup".into(),
        agent_id: String::new(),
    }))
    .await
    .expect("kill");
    fw.wait_state("t-dup", pb::TaskState::TaskKilled).await;
    fw.call(pb::call::Call::Teardown(pb::call::Teardown {}))
        .await
        .expect("teardown");
}

/// The names of the roles the manager knows.
async fn role_names(m: &crate::harness::Manager) -> Vec<String> {
    m.state().await.roles.into_iter().map(|r| r.name).collect()
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// A `size` tmpfs at `dir`, or `None` (skip) where mounting is not
    /// allowed and `STRATA_REQUIRE_NETNS` (root tests) is unset.
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("STRATA_REQUIRE_NETNS").is_none(),
                "cannot mount a tmpfs, and STRATA_REQUIRE_NETNS (root tests) is set"
            );
            eprintln!("skipped: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallDisk(dir.to_owned()))
    }

    /// Fills the disk with one file; returns it.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.0)
            .status()
            .ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_on_an_agent_fails_new_tasks_clearly_and_recovers() {
    let env = Env::new("disk-full");
    let Some(disk) = SmallDisk::mount(&env.path("agent"), "4m") else {
        return;
    };
    let m = env.start_manager(ManagerSpec::default()).await;
    let _agent = env.start_agent(&m.addr, &disk.0, None).await;
    m.wait_registered_agents(1).await;
    let mut fw = Fw::subscribe(framework_config(&m.addr, "disk")).await;

    // Full: a new task fails, saying why; the agent stays registered.
    let filler = disk.fill();
    fw.launch(vec![shell_task("on-full", "echo hi")]).await;
    let failed = fw
        .expect("the task on a full disk to end", LONG, |e| match e {
            strata_sdk::Event::Update(s) if s.task_id.as_str() == "on-full" && s.is_terminal() => {
                Some(s.clone())
            }
            _ => None,
        })
        .await;
    assert_ne!(failed.state, TaskState::TaskFinished, "{failed:?}");
    assert!(
        failed.message.contains("No space left on device"),
        "{failed:?}"
    );
    assert_eq!(m.wait_registered_agents(1).await.len(), 1);

    // Space again: tasks run.
    std::fs::remove_file(filler).unwrap();
    fw.launch(vec![shell_task("after", "echo hi")]).await;
    fw.wait_state("after", TaskState::TaskFinished).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_on_the_manager_refuses_writes_clearly_and_recovers() {
    let env = Env::new("manager-disk-full");
    let Some(disk) = SmallDisk::mount(&env.path("manager"), "4m") else {
        return;
    };
    let m = env
        .start_manager(ManagerSpec {
            work_dir: Some(disk.0.clone()),
            ..ManagerSpec::default()
        })
        .await;
    let filler = disk.fill();
    let mut refused = None;
    // Several writes: the registry's file may hold room for a first few.
    for i in 0..50 {
        let body = format!(r#"{{"weight": {}}}"#, i + 2);
        let (status, body) = crate::harness::http(
            "PUT",
            &m.addr,
            &format!("/api/v1/roles/r{i}"),
            None,
            Some(body.as_bytes()),
        )
        .await;
        if status != 200 {
            refused = Some((i, status, String::from_utf8_lossy(&body).into_owned()));
            break;
        }
    }
    eprintln!("manager on a full disk: {refused:?}");
    let (i, status, body) = refused.expect("a write on a full disk is refused");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("No space left on device"), "{body}");
    // Space again: writes land, and what was refused is not there.
    std::fs::remove_file(filler).unwrap();
    let (status, body) = crate::harness::http(
        "PUT",
        &m.addr,
        "/api/v1/roles/after",
        None,
        Some(br#"{"weight": 2}"#),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // Nothing was lost: a restart on the same registry has both, the
    // refused change written with the next one.
    let mut m = m;
    m.proc.signal(libc::SIGTERM);
    assert!(m.proc.wait_exit(LONG).await.success());
    let again = env
        .start_manager(ManagerSpec {
            work_dir: Some(disk.0.clone()),
            ..ManagerSpec::default()
        })
        .await;
    let roles = role_names(&again).await;
    let first_refused = format!("r{i}");
    assert!(
        roles.contains(&"after".to_owned()) && roles.contains(&first_refused),
        "{roles:?}"
    );
}

/// A 64 MiB ext4 on a loop device at `dir` whose writes are throttled to
/// `iops` a second for the processes put under it, or `None` (skip) where
/// it cannot be made and `STRATA_REQUIRE_NETNS` (root tests) is unset.
fn slow_disk(dir: &std::path::Path, iops: u32) -> Option<LoopDisk> {
    let disk = LoopDisk::mount(dir, 64 << 20).and_then(|d| d.throttle(iops));
    if disk.is_none() {
        assert!(
            std::env::var_os("STRATA_REQUIRE_NETNS").is_none(),
            "cannot make a slow disk (loop device, ext4, blkio cgroup), and STRATA_REQUIRE_NETNS (root tests) is set"
        );
        eprintln!(
            "skipped: cannot make a slow disk (needs root, loop devices and cgroup v1 blkio)"
        );
    }
    disk
}

/// A slow disk under the manager (its registry's writes throttled to 2 a
/// second: a commit takes about as long as the agent timeout): every
/// change still lands, slower; the agents stay registered, since
/// heartbeats wait on no disk; a task runs and finishes meanwhile; a
/// restart finds every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_disk_under_the_manager_slows_its_writes_and_loses_nothing() {
    const IOPS: u32 = 2;
    let env = Env::new("manager-disk-slow");
    let Some(disk) = slow_disk(&env.path("manager"), IOPS) else {
        return;
    };
    let spec = || ManagerSpec {
        work_dir: Some(disk.dir.clone()),
        agent_timeout: "3s".into(),
        ..ManagerSpec::default()
    };
    let mut m = env.start_manager(spec()).await;
    let _agent = env.start_agent(&m.addr, &env.path("agent"), None).await;
    m.wait_registered_agents(1).await;
    let mut fw = Fw::subscribe(framework_config(&m.addr, "slow")).await;
    disk.slow_down(m.proc.pid());

    // Changes for longer than the agent timeout, each a registry commit.
    fw.launch(vec![shell_task("meanwhile", "sleep 2")]).await;
    let started = Instant::now();
    let mut took = Vec::new();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let at = Instant::now();
        let (status, body) = crate::harness::http(
            "PUT",
            &m.addr,
            &format!("/api/v1/roles/r{i}"),
            None,
            Some(br#"{"weight": 2}"#),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        took.push(at.elapsed());
        i += 1;
        let agents = m.state().await.agents;
        assert!(
            agents.iter().all(|a| a.state == "registered"),
            "an agent was lost while the manager's disk was slow: {agents:?}"
        );
    }
    fw.wait_state("meanwhile", TaskState::TaskFinished).await;
    took.sort();
    eprintln!(
        "manager on a slow disk ({IOPS} writes/s): {i} role changes, each {:?} to {:?}",
        took[0],
        took[took.len() - 1]
    );
    assert!(
        took[took.len() - 1] >= Duration::from_millis(200),
        "the disk was not slow: {took:?}"
    );

    // Nothing lost: a restart on the same registry has every change.
    m.proc.signal(libc::SIGTERM);
    assert!(m.proc.wait_exit(LONG).await.success());
    let again = env.start_manager(spec()).await;
    let roles = role_names(&again).await;
    for k in 0..i {
        assert!(roles.contains(&format!("r{k}")), "r{k} lost: {roles:?}");
    }
}

/// A slow disk under an agent (2 writes a second): tasks launch and finish
/// (a little slower: ext4 starts writing a file renamed over another at
/// once, which a task's checkpoints avoid where they can: a task's first
/// `updates.json`, holding its running and finished updates of one poll, is
/// a new file), none is lost, and the agent stays registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_disk_under_an_agent_slows_its_tasks_and_loses_none() {
    let env = Env::new("agent-disk-slow");
    let Some(disk) = slow_disk(&env.path("agent"), 2) else {
        return;
    };
    let m = env
        .start_manager(ManagerSpec {
            agent_timeout: "3s".into(),
            ..ManagerSpec::default()
        })
        .await;
    let agent = env.start_agent(&m.addr, &disk.dir, None).await;
    m.wait_registered_agents(1).await;
    disk.slow_down(agent.proc.pid());
    let mut fw = Fw::subscribe(framework_config(&m.addr, "slow-agent")).await;
    let started = Instant::now();
    let ids: Vec<String> = (0..5).map(|i| format!("quick-{i}")).collect();
    fw.launch(ids.iter().map(|id| shell_task(id, "true")).collect())
        .await;
    for id in &ids {
        fw.wait_state(id, TaskState::TaskFinished).await;
    }
    let took = started.elapsed();
    eprintln!("agent on a slow disk (2 writes/s): 5 tasks launched and finished in {took:?}");
    assert_eq!(m.wait_registered_agents(1).await.len(), 1);
}
