//! The Mesos v1 scheduler API driven by a real Mesos framework library
//! (pymesos, over HTTP with RecordIO): subscribe with a principal and
//! secret, launch on offers, updates acknowledged, decline with filters,
//! reconcile, suppress and revive, fail over to a new scheduler process
//! within the failover timeout, kill, and teardown. The manager's own view
//! is checked between the steps: the framework's tasks are `batch` tasks
//! like any other framework's.

use std::path::Path;

use serde_json::Value;

use crate::gateway::python_check;
use crate::harness::*;

const TOKEN: &str = "mesos-secret";

fn updates_of<'a>(run: &'a Value, task: &str) -> Vec<&'a Value> {
    run["updates"]
        .as_array()
        .expect("updates")
        .iter()
        .filter(|u| u["task"] == task)
        .collect()
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("the client's record")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pymesos_framework_launches_reconciles_fails_over_and_tears_down() {
    let env = Env::new("mesos-api");
    let m = env
        .start_manager(ManagerSpec {
            token: Some(TOKEN.into()),
            ..ManagerSpec::default()
        })
        .await;
    let agent = env
        .start_agent(&m.addr, &env.path("agent0"), Some(TOKEN))
        .await;
    m.wait_registered_agents(1).await;
    let out = env.path("mesos-client");
    std::fs::create_dir_all(&out).unwrap();
    let out_s = out.display().to_string();

    // The first scheduler: its tasks, then a stop for failover.
    let (status, stdout, stderr) =
        python_check("mesos_framework.py", &["first", &m.addr, TOKEN, &out_s]).await;
    assert!(status.success(), "first: {stdout}\n{stderr}");
    let first = read(&out.join("first.json"));
    let fid = first["framework_id"]
        .as_str()
        .expect("a framework id")
        .to_owned();
    assert_eq!(first["master_version"], "1.11.0");
    let last = |task: &str| {
        updates_of(&first, task)
            .last()
            .copied()
            .cloned()
            .unwrap_or_else(|| panic!("no update for {task}: {first}"))
    };
    assert_eq!(last("echo")["state"], "TASK_FINISHED");
    let fail = last("fail");
    assert_eq!(fail["state"], "TASK_FAILED");
    assert!(
        fail["message"].as_str().unwrap_or("").contains("status 3"),
        "{fail}"
    );
    let big = last("too-big");
    assert!(
        ["TASK_ERROR", "TASK_DROPPED"].contains(&big["state"].as_str().unwrap()),
        "{big}"
    );
    assert_eq!(big["source"], "SOURCE_MASTER");
    assert!(!big["message"].as_str().unwrap_or("").is_empty(), "{big}");
    // Every update from the agent carried a uuid and was acknowledged
    // (pymesos acknowledges implicitly): none is left unacknowledged.
    assert!(
        updates_of(&first, "echo")
            .iter()
            .all(|u| u["has_uuid"] == true),
        "{first}"
    );

    // The echo task really ran: its stdout in its sandbox on the agent.
    let (code, body) = http(
        "GET",
        &agent.addr,
        &format!("/v1/sandbox/{fid}/echo/stdout"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("hello-from-pymesos"));

    // Between the schedulers the framework is disconnected, not removed, and
    // its long task, a `batch` task as a Mesos framework's are, runs on.
    let state = m.state().await;
    let fw = state
        .frameworks
        .iter()
        .find(|f| f.id == fid)
        .expect("the framework is kept for its failover timeout");
    assert!(!fw.connected && !fw.removed, "{fw:?}");
    let long = m.task("long").await.expect("the long task");
    assert_eq!(
        (long.state.as_str(), long.class.as_str()),
        ("TASK_RUNNING", "batch")
    );
    assert_eq!(long.framework_id, fid);

    // A new scheduler process takes over within the failover timeout.
    let (status, stdout, stderr) = python_check(
        "mesos_framework.py",
        &["resume", &m.addr, TOKEN, &out_s, &fid],
    )
    .await;
    assert!(status.success(), "resume: {stdout}\n{stderr}");
    let resume = read(&out.join("resume.json"));
    assert_eq!(resume["framework_id"], fid.as_str());
    assert_eq!(resume["reregistered"], true);
    // Every update of the first process was acknowledged: none is sent again.
    for task in ["echo", "fail", "too-big"] {
        assert!(
            updates_of(&resume, task).is_empty(),
            "{task} again: {resume}"
        );
    }
    let killed = updates_of(&resume, "long");
    assert_eq!(killed.last().unwrap()["state"], "TASK_KILLED", "{resume}");

    // The teardown removed the framework.
    wait_for("the framework removed", LONG, async || {
        let state = m.state().await;
        state
            .frameworks
            .iter()
            .all(|f| f.id != fid || f.removed)
            .then_some(())
    })
    .await;
    assert!(m.task("long").await.is_none());
}
