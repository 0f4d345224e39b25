//! Draining an agent for maintenance on a real cluster: its service
//! instance moves to another agent without the app falling below its
//! healthy minimum, a batch task there runs until the deadline and is then
//! killed, frameworks are told, `strata status` shows DRAINING → DRAINED,
//! and `strata undrain` makes the agent offerable again.

use strata_sdk::{Event, TaskState};

use crate::harness::*;
use crate::services::{app, request, settled, web_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_agent_hands_its_service_over_and_loses_its_batch_task_at_the_deadline() {
    let env = Env::new("drain");
    let m = env.start_manager(ManagerSpec::default()).await;
    let _a0 = env.start_agent(&m.addr, &env.path("a0"), None).await;
    let a0 = m.wait_registered_agents(1).await[0].id.clone();

    // A service instance and a batch task, both on a0 (the only agent).
    let (code, _, v) = request(&m, "POST", "/v2/apps", Some(web_app("/web", 1))).await;
    assert_eq!(code, 201, "{v}");
    let before = settled(&m, "/web", 1).await;
    assert_eq!(before["tasks"][0]["slaveId"], a0.as_str(), "{before}");
    let mut fw = Fw::subscribe(framework_config(&m.addr, "batch")).await;
    fw.launch(vec![shell_task("batch-1", "exec sleep 600")])
        .await;
    fw.wait_state("batch-1", TaskState::TaskRunning).await;

    // A second agent to move to.
    let _a1 = env.start_agent(&m.addr, &env.path("a1"), None).await;
    let agents = m.wait_registered_agents(2).await;
    let a1 = agents.iter().find(|a| a.id != a0).unwrap().id.clone();

    // Drain a0 with a short deadline, watching the service meanwhile.
    let args = [
        "drain",
        &a0,
        "--deadline",
        "4s",
        "--wait",
        "--manager",
        &m.addr,
    ];
    let drain = env.cli(&args);
    tokio::pin!(drain);
    let mut least_healthy = u64::MAX;
    let out = loop {
        tokio::select! {
            out = &mut drain => break out,
            a = app(&m, "/web") => {
                least_healthy = least_healthy.min(a["tasksHealthy"].as_u64().unwrap_or(0));
            }
        }
    };
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&format!("agent {a0} drained in")),
        "{}",
        out.stdout
    );
    assert!(
        least_healthy >= 1,
        "the service fell to {least_healthy} healthy"
    );

    // The framework was told, and its task killed at the deadline.
    fw.expect("the drain of a0", LONG, |e| {
        matches!(e, Event::AgentDraining { agent_id, .. } if agent_id.as_str() == a0).then_some(())
    })
    .await;
    let killed = fw.wait_state("batch-1", TaskState::TaskKilled).await;
    assert_eq!(killed.reason, strata_proto::pb::Reason::AgentDrained);

    // The service runs on a1 now.
    let after = settled(&m, "/web", 1).await;
    assert_eq!(after["tasks"][0]["slaveId"], a1.as_str(), "{after}");
    assert_ne!(after["tasks"][0]["id"], before["tasks"][0]["id"]);

    // `strata status` shows the drain; nothing more lands on a0.
    let status = env.cli(&["status", "--manager", &m.addr]).await;
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.contains(&a0) && l.contains("(drained)")),
        "{}",
        status.stdout
    );
    let state = m.state().await;
    let shown = state.agents.iter().find(|a| a.id == a0).unwrap();
    assert_eq!(shown.drain.as_deref(), Some("drained"));
    assert_eq!(shown.tasks, 0);

    // Draining an agent nobody knows is refused, clearly.
    let out = env
        .cli(&["drain", "no-such-agent", "--manager", &m.addr])
        .await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("agent no-such-agent is not known"),
        "{}",
        out.stderr
    );

    // Undrained, it is offered again: a task lands there.
    let out = env.cli(&["undrain", &a0, "--manager", &m.addr]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    fw.expect("the end of a0's drain", LONG, |e| {
        matches!(e, Event::AgentUndrained { agent_id } if agent_id.as_str() == a0).then_some(())
    })
    .await;
    wait_until("a0 offerable again", LONG, async || {
        m.state()
            .await
            .agents
            .iter()
            .any(|a| a.id == a0 && a.drain.is_none())
    })
    .await;
}
