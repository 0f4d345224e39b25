//! Revocable capacity and the `cpu` autoscaling metric on a real cluster:
//! the agent measures what tasks use, the manager lends a service's idle
//! cpus to batch and takes them back when the service gets busy, and a
//! service scales on the cpu use its agent measured.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata_manager::master::view::{AgentView, TaskView};
use strata_sdk::{Ask, Event, Reason, Resources, TaskBuilder, TaskState};

use crate::harness::*;
use crate::services::{app, request};

/// A service that idles until `flag` exists, then keeps `loops` cpus busy
/// while it does.
fn hog(id: &str, cpus: f64, loops: usize, flag: &Path) -> Value {
    let f = flag.display();
    let spin = vec![format!("while [ -e {f} ]; do :; done"); loops].join(" & ");
    json!({
        "id": id,
        "cmd": format!(
            "while :; do if [ -e {f} ]; then {spin}; wait; else sleep 0.1; fi; done"
        ),
        "instances": 1,
        "cpus": cpus,
        "mem": 32,
        "backoffSeconds": 0.2
    })
}

async fn running(m: &Manager, id: &str) -> u64 {
    app(m, id).await["tasksRunning"].as_u64().unwrap_or(0)
}

async fn agent_view(m: &Manager) -> AgentView {
    let agents: Vec<AgentView> = get_json(&m.addr, "/api/v1/agents", None).await;
    agents.into_iter().next().expect("one agent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_service_cpus_run_batch_until_the_service_needs_them() {
    let env = Env::new("revocable");
    let spec = ManagerSpec {
        preemption_grace: Some("1s".into()),
        revocable_window: Some("4s".into()),
        ..ManagerSpec::default()
    };
    let m = env.start_manager(spec).await;
    let _a = env.start_agent(&m.addr, &env.path("agent0"), None).await;
    m.wait_registered_agents(1).await;
    let flag = env.path("busy");

    // A service holds both cpus of the agent and uses none of them.
    let (code, _, v) = request(&m, "POST", "/v2/apps", Some(hog("/hog", 2.0, 2, &flag))).await;
    assert_eq!(code, 201, "{v}");
    wait_for("the service running", LONG, async || {
        (running(&m, "/hog").await == 1).then_some(())
    })
    .await;
    let lent = wait_for("its idle cpus lent", LONG, async || {
        let a = agent_view(&m).await;
        (a.cpus_lent >= 1.0).then_some(a.cpus_lent)
    })
    .await;
    assert!(lent <= 2.0, "{lent}");

    // The batch engine with --revocable runs a query on an executor on lent
    // cpus (no regular cpu is free).
    let csv = env.path("n.csv");
    std::fs::write(&csv, "n\n1\n2\n3\n").unwrap();
    let sql = format!(
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true'); \
         SELECT sum(n) AS total FROM t",
        csv.display()
    );
    let out = env
        .cli(&[
            "sql",
            "--manager",
            &m.addr,
            "--revocable",
            "--executors",
            "1",
            "--executor-mem",
            "256",
            "--format",
            "csv",
            "-e",
            &sql,
        ])
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "total\n6");
    let tasks: Value = get_json(&m.addr, "/api/v1/tasks", None).await;
    let done: Vec<TaskView> = serde_json::from_value(tasks["completed_tasks"].clone()).unwrap();
    assert!(
        done.iter()
            .any(|t| t.name.starts_with("executor") && t.revocable_cpus == 1.0),
        "{done:?}"
    );

    // An SDK framework that accepts revocable cpus gets them too: nearly
    // all of them, so that even a little use by the service (on a machine
    // busy with other tests) takes them back.
    let mut batch = Fw::subscribe(framework_config(&m.addr, "batch")).await;
    batch
        .handle
        .declare_demand(vec![
            Ask::new("batch", Resources::new(1.8, 64.0), 1).revocable(true),
        ])
        .await
        .unwrap();
    // (Offers of regular room alone — memory — are declined.)
    let offer = loop {
        let offers = batch
            .expect("offers", LONG, |e| match e {
                Event::Offers(o) => Some(o.clone()),
                _ => None,
            })
            .await;
        let (lent, other): (Vec<_>, Vec<_>) = offers
            .into_iter()
            .partition(|o| o.revocable.cpus.as_f64() >= 1.8);
        if !other.is_empty() {
            let ids = other.iter().map(|o| o.id.clone()).collect();
            batch
                .handle
                .decline(ids, Some(Duration::ZERO))
                .await
                .unwrap();
        }
        if let Some(o) = lent.into_iter().next() {
            break o;
        }
    };
    assert_eq!(offer.resources.cpus.as_f64(), 0.0, "{offer:?}");
    let task = TaskBuilder::shell("on-lent-cpus", "sleep 600")
        .resources(Resources::new(0.0, 64.0))
        .revocable(Resources::new(1.8, 0.0))
        .class("batch")
        .build();
    batch
        .handle
        .accept(
            vec![offer.id.clone()],
            vec![task],
            strata_sdk::Filters::default(),
        )
        .await
        .unwrap();
    batch
        .wait_state("on-lent-cpus", TaskState::TaskRunning)
        .await;
    batch.handle.declare_demand(vec![]).await.unwrap();
    let tasks: Value = get_json(&m.addr, "/api/v1/tasks", None).await;
    let views: Vec<TaskView> = serde_json::from_value(tasks["tasks"].clone()).unwrap();
    let t = views.iter().find(|t| t.id == "on-lent-cpus").unwrap();
    assert_eq!(t.revocable_cpus, 1.8);
    assert_eq!(agent_view(&m).await.cpus_revocable_allocated, 1.8);

    // The service gets busy: the manager revokes the batch task.
    let t0 = Instant::now();
    std::fs::write(&flag, b"").unwrap();
    let killed = batch
        .expect("the batch task revoked", LONG, |e| match e {
            Event::Update(s) if s.task_id.as_str() == "on-lent-cpus" && s.state.is_terminal() => {
                Some(s.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(killed.state, TaskState::TaskKilled, "{killed:?}");
    assert_eq!(killed.reason, Reason::ResourcesRevoked, "{killed:?}");
    eprintln!(
        "revocable: a busy service took its lent cpus back in {:.1} s (usage sampled every 2 s, grace 1 s)",
        t0.elapsed().as_secs_f64()
    );
    // The service's own cpus were never in question.
    assert_eq!(running(&m, "/hog").await, 1);
    std::fs::remove_file(&flag).unwrap();
    let (code, _, _) = request(&m, "DELETE", "/v2/apps/hog", None).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_scales_on_the_cpu_its_agent_measures() {
    let env = Env::new("cpu-autoscale");
    let m = env.start_manager(ManagerSpec::default()).await;
    let _a = env.start_agent(&m.addr, &env.path("agent0"), None).await;
    m.wait_registered_agents(1).await;
    let flag = env.path("busy");
    let mut svc = hog("/cpu", 1.0, 1, &flag);
    svc["labels"] = json!({
        "strata.autoscale.min": "1",
        "strata.autoscale.max": "2",
        "strata.autoscale.metric": "cpu",
        "strata.autoscale.target": "30",
        "strata.autoscale.interval": "1",
        "strata.autoscale.cooldown": "2",
    });
    let (code, _, v) = request(&m, "POST", "/v2/apps", Some(svc)).await;
    assert_eq!(code, 201, "{v}");
    wait_for("one instance running", LONG, async || {
        (running(&m, "/cpu").await == 1).then_some(())
    })
    .await;
    // Busy: its one cpu near 100 %, target 30 % → the most, 2 instances.
    std::fs::write(&flag, b"").unwrap();
    let t0 = Instant::now();
    wait_for("scaled up to 2 on cpu", LONG, async || {
        let a = app(&m, "/cpu").await;
        (a["instances"] == 2 && a["tasksRunning"] == 2).then_some(())
    })
    .await;
    eprintln!(
        "cpu autoscale: 1 → 2 instances {:.1} s after the service got busy",
        t0.elapsed().as_secs_f64()
    );
    // Idle again: back to the minimum after the cooldown.
    std::fs::remove_file(&flag).unwrap();
    wait_for("scaled down to 1", LONG, async || {
        let a = app(&m, "/cpu").await;
        (a["instances"] == 1 && a["tasksRunning"] == 1).then_some(())
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), async {
        let (code, _, _) = request(&m, "DELETE", "/v2/apps/cpu", None).await;
        assert_eq!(code, 200);
    })
    .await
    .unwrap();
}
