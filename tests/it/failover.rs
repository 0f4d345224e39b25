//! Failover: the manager restarts under running tasks; frameworks come back
//! within their failover timeout, or are removed after it.

use std::time::{Duration, Instant};

use strata_sdk::{Event, Scheduler, SdkError, TaskState};

use crate::harness::{
    Env, Fw, LONG, ManagerSpec, framework_config, pid_alive, shell_task, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_restart_keeps_tasks() {
    manager_restart(libc::SIGKILL).await;
}

/// The same with a clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_sigterm_restart_keeps_tasks() {
    manager_restart(libc::SIGTERM).await;
}

/// A manager stopped with `stop` (SIGKILL or SIGTERM) and restarted on the
/// same port and work dir: agents, frameworks and tasks carry on.
async fn manager_restart(stop: libc::c_int) {
    let env = Env::new(if stop == libc::SIGKILL {
        "manager-kill9"
    } else {
        "manager-sigterm"
    });
    let manager_dir = env.path("manager");
    let mut m = env
        .start_manager(ManagerSpec {
            work_dir: Some(manager_dir.clone()),
            ..Default::default()
        })
        .await;
    let port = m.port;
    let agent = env.start_agent(&m.addr, &env.path("agent"), None).await;
    let agent_id = m.wait_registered_agents(1).await[0].id.clone();

    let mut fw = Fw::subscribe(framework_config(&m.addr, "survivor")).await;
    let fid = fw.id.clone();
    fw.launch(vec![shell_task("svc", "sleep 1000")]).await;
    fw.wait_state("svc", TaskState::TaskRunning).await;
    let pid = agent.task_pid("svc").await;

    m.proc.signal(stop);
    let status = m.proc.wait_exit(Duration::from_secs(10)).await;
    if stop == libc::SIGTERM {
        assert!(status.success(), "the manager exited {status} on SIGTERM");
    }
    assert!(pid_alive(pid), "the task died with the manager");

    let m = env
        .start_manager(ManagerSpec {
            listen: format!("127.0.0.1:{port}"),
            work_dir: Some(manager_dir),
            ..Default::default()
        })
        .await;
    assert_eq!(m.port, port);

    // The SDK notices and re-subscribes by itself, under the same id.
    fw.expect("a re-subscription", LONG, |e| match e {
        Event::Subscribed { framework_id, .. } => {
            assert_eq!(*framework_id, fid, "re-subscribed under another id");
            Some(())
        }
        _ => None,
    })
    .await;
    assert!(
        fw.seen
            .iter()
            .any(|e| matches!(e, Event::Disconnected { .. })),
        "no Disconnected before the re-subscription"
    );

    wait_until(
        "the agent re-registered and the task RUNNING on it",
        LONG,
        async || {
            let s = m.state().await;
            let agent_ok = s.agents.len() == 1
                && s.agents[0].id == agent_id
                && s.agents[0].state == "registered";
            let task_ok = s.tasks.iter().any(|t| {
                t.id == "svc"
                    && t.state == "TASK_RUNNING"
                    && t.agent_id == agent_id
                    && t.framework_id == fid.as_str()
            });
            let fw_ok = s
                .frameworks
                .iter()
                .any(|f| f.id == fid.as_str() && f.connected);
            agent_ok && task_ok && fw_ok
        },
    )
    .await;
    assert!(pid_alive(pid));

    // Reconciliation agrees.
    fw.handle
        .reconcile(vec![("svc".into(), None)])
        .await
        .expect("reconcile");
    fw.next_state("svc", TaskState::TaskRunning).await;

    fw.handle.kill("svc".into(), None).await.expect("kill");
    fw.wait_state("svc", TaskState::TaskKilled).await;
    wait_until("the task's process to die", LONG, async || !pid_alive(pid)).await;

    let states = fw.states_of("svc");
    for bad in [
        TaskState::TaskLost,
        TaskState::TaskUnreachable,
        TaskState::TaskGone,
        TaskState::TaskFailed,
    ] {
        assert!(
            !states.contains(&bad),
            "svc went through {bad:?}: {states:?}"
        );
    }
    fw.handle.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_failover_within_and_after_timeout() {
    let env = Env::new("fw-failover");
    let m = env
        .start_manager(ManagerSpec {
            failover_timeout: Some("2s".into()),
            ..Default::default()
        })
        .await;
    let agent = env.start_agent(&m.addr, &env.path("agent"), None).await;
    m.wait_registered_agents(1).await;

    let config = |name: &str| {
        let mut c = framework_config(&m.addr, name);
        c.framework.failover_timeout = Duration::from_secs(2);
        c.reconnect = false;
        c
    };
    let disconnected = async |id: &str| {
        m.state()
            .await
            .frameworks
            .iter()
            .any(|f| f.id == id && !f.connected)
    };

    // A goes away and comes back within its failover timeout.
    let mut a = Fw::subscribe(config("fw-a")).await;
    let a_id = a.id.clone();
    a.launch(vec![shell_task("a-task", "sleep 1000")]).await;
    a.wait_state("a-task", TaskState::TaskRunning).await;
    let a_pid = agent.task_pid("a-task").await;
    drop(a);
    wait_until("the manager to see A disconnected", LONG, async || {
        disconnected(a_id.as_str()).await
    })
    .await;
    let seen_gone = Instant::now();
    let mut again = config("fw-a");
    again.framework.framework_id = Some(a_id.clone());
    again.suppressed = true;
    let a2 = Fw::subscribe(again).await;
    assert_eq!(a2.id, a_id);
    assert!(
        seen_gone.elapsed() < Duration::from_secs(2),
        "the test took {:?} to re-subscribe A; it must be within 2 s",
        seen_gone.elapsed()
    );
    let t = m.task("a-task").await.expect("a-task in the state");
    assert_eq!(t.state, "TASK_RUNNING");
    assert!(pid_alive(a_pid));

    // B goes away for longer than its failover timeout.
    let mut b = Fw::subscribe(config("fw-b")).await;
    let b_id = b.id.clone();
    b.launch(vec![shell_task("b-task", "sleep 1000")]).await;
    b.wait_state("b-task", TaskState::TaskRunning).await;
    let b_pid = agent.task_pid("b-task").await;
    drop(b);
    wait_until("the manager to see B disconnected", LONG, async || {
        disconnected(b_id.as_str()).await
    })
    .await;
    let seen_gone = Instant::now();
    assert!(pid_alive(b_pid), "B's task was killed at once");
    wait_until("B's task to be killed", LONG, async || !pid_alive(b_pid)).await;
    let after = seen_gone.elapsed();
    assert!(
        after >= Duration::from_secs(1),
        "B's task was killed {after:?} after B left; its failover timeout is 2 s"
    );
    wait_until("B's task to leave the state", LONG, async || {
        let s = m.state().await;
        !s.tasks.iter().any(|t| t.id == "b-task")
            && !s.frameworks.iter().any(|f| f.id == b_id.as_str())
    })
    .await;
    let s = m.state().await;
    let done = s
        .completed_tasks
        .iter()
        .find(|t| t.id == "b-task")
        .unwrap_or_else(|| panic!("b-task not among the completed: {:#?}", s.completed_tasks));
    assert_eq!(
        (done.state.as_str(), done.reason.as_str()),
        ("TASK_KILLED", "REASON_FRAMEWORK_FAILOVER_TIMEOUT"),
        "{done:?}"
    );

    let mut late = config("fw-b");
    late.framework.framework_id = Some(b_id.clone());
    let err = Scheduler::subscribe(late)
        .await
        .expect_err("B re-subscribed after its failover timeout");
    match &err {
        SdkError::PermissionDenied { message } => {
            assert!(message.contains("removed"), "{err:?}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }

    // A, failed over in time, still has its task.
    assert!(pid_alive(a_pid));
    let t = m.task("a-task").await.expect("a-task in the state");
    assert_eq!(t.state, "TASK_RUNNING");
    a2.handle.teardown().await.expect("teardown A");
    wait_until("A's task to die after teardown", LONG, async || {
        !pid_alive(a_pid)
    })
    .await;
}
