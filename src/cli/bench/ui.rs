//! `strata bench ui`: the web UI's page times on a manager holding many
//! tasks and a full job history.
//!
//! A manager runs in this process (loopback, no token). Its tasks run on a
//! *phantom agent*: a client of the manager's `AgentLink` protocol, like a
//! real agent, that answers each launch with `TASK_RUNNING` without
//! starting a process, so 10,000 tasks fit on one machine. A framework of
//! the SDK launches them; the job history is filled with reports shaped
//! like a four-stage query's, sent to `PUT /api/v1/jobs/{job}` as drivers
//! send them. Then each page is fetched `--rounds` times: the figure is
//! the time to the last byte of its HTML (server-rendered: what the
//! browser shows first), p50 and p99, with its size.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata_proto::jobs::{AttemptReport, ExecutorReport, JobReport, OperatorReport, StageReport};
use strata_proto::pb;
use strata_proto::pb::agent_message::Message as AgentMsg;
use strata_proto::pb::manager_message::Message as ManagerMsg;
use strata_proto::time::Timestamp;
use strata_sdk::{
    Event, Filters, FrameworkConfig, Resources, Scheduler, SchedulerConfig, TaskBuilder,
};
use tokio::sync::mpsc;

/// Arguments of `strata bench ui`.
#[derive(clap::Args, Debug)]
pub struct UiArgs {
    /// Running tasks the manager holds.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Finished jobs in the job history.
    #[arg(long, default_value_t = 1_000)]
    jobs: usize,
    /// Fetches per page.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
}

/// `strata bench ui`.
pub async fn run(a: UiArgs) -> anyhow::Result<ExitCode> {
    if a.rounds == 0 || a.tasks == 0 || a.jobs == 0 {
        bail!("--tasks, --jobs and --rounds must be at least 1");
    }
    let dir = std::env::temp_dir().join(format!("strata-bench-ui-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut cfg = strata_manager::server::ManagerConfig::new(dir.clone());
    cfg.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.job_history = a.jobs;
    let manager = strata_manager::server::spawn(cfg).await?;
    let address = manager.address().to_string();
    let result = bench(&a, &address).await;
    manager.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

async fn bench(a: &UiArgs, address: &str) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let agent = phantom_agent(address, a.tasks).await?;
    let (framework, _scheduler) = launch(address, &agent, a.tasks).await?;
    let jobs = fill_history(address, &framework, a.jobs).await?;
    println!(
        "{} running tasks and {} finished jobs in {:.1} s",
        a.tasks,
        jobs.len(),
        started.elapsed().as_secs_f64()
    );
    let job = jobs.first().context("no job")?;
    let task = format!("/tasks/{framework}/ui-bench-0");
    let pages = [
        ("cluster", "/".to_owned()),
        ("tasks, first page", "/tasks".to_owned()),
        ("tasks, page 50", "/tasks?page=50".to_owned()),
        (
            "tasks of a framework",
            format!("/tasks?framework={framework}&state=TASK_RUNNING"),
        ),
        ("a task", task),
        ("jobs, first page", "/jobs".to_owned()),
        ("jobs, last page", format!("/jobs?page={}", a.jobs / 100)),
        ("a job", format!("/jobs/{job}")),
        ("a stage", format!("/jobs/{job}/stages/0")),
        ("services", "/services".to_owned()),
        ("(API) /api/v1/state", "/api/v1/state".to_owned()),
    ];
    println!("{:<24} {:>10} {:>10} {:>10}", "page", "p50", "p99", "size");
    for (name, path) in pages {
        let mut times = Vec::with_capacity(a.rounds);
        let mut size = 0;
        for _ in 0..a.rounds + 1 {
            let t0 = Instant::now();
            let (status, _, body) = strata_sdk::http::request(
                "GET",
                address,
                &path,
                None,
                None,
                Duration::from_secs(30),
            )
            .await?;
            if status != 200 {
                bail!("{path}: status {status}");
            }
            times.push(t0.elapsed());
            size = body.len();
        }
        // The first fetch warms up; it is not kept.
        times.remove(0);
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "{name:<24} {:>8.1}ms {:>8.1}ms {:>8.0}KB",
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            size as f64 / 1024.0
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An agent that runs nothing: it registers room for `tasks` small tasks
/// and answers every launch with `TASK_RUNNING`. Returns its id.
async fn phantom_agent(address: &str, tasks: usize) -> anyhow::Result<String> {
    let mut client =
        pb::agent_link_client::AgentLinkClient::connect(format!("http://{address}")).await?;
    let (tx, rx) = mpsc::unbounded_channel::<pb::AgentMessage>();
    let resource = |name: &str, scalar: f64| pb::Resource {
        name: name.into(),
        scalar,
        ..Default::default()
    };
    let send = move |m: AgentMsg| tx.send(pb::AgentMessage { message: Some(m) }).ok();
    send(AgentMsg::Register(pb::agent_message::Register {
        protocol_version: strata_proto::PROTOCOL_VERSION,
        agent_id: String::new(),
        info: Some(pb::AgentInfo {
            hostname: "phantom".into(),
            address: "127.0.0.1:9".into(),
            resources: vec![
                resource("cpus", tasks as f64 * 0.01 + 1.0),
                resource("mem", tasks as f64 + 1024.0),
            ],
            attributes: Vec::new(),
        }),
        tasks: Vec::new(),
    }));
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut inbound = client.attach(outbound).await?.into_inner();
    let first = inbound
        .message()
        .await?
        .and_then(|m| m.message)
        .context("the manager closed the agent link")?;
    let ManagerMsg::Registered(reg) = first else {
        bail!("the manager did not register the phantom agent: {first:?}");
    };
    let agent_id = reg.agent_id.clone();
    let beat = Duration::from_secs_f64(reg.heartbeat_interval_seconds.max(0.1));
    let id = agent_id.clone();
    tokio::spawn(async move {
        let mut heartbeat = tokio::time::interval(beat);
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    send(AgentMsg::Heartbeat(pb::agent_message::Heartbeat {}));
                }
                m = inbound.message() => {
                    let Ok(Some(pb::ManagerMessage { message: Some(m) })) = m else { return };
                    if let ManagerMsg::RunTask(run) = m {
                        let task_id = run.task.map(|t| t.task_id).unwrap_or_default();
                        send(AgentMsg::Update(pb::agent_message::StatusUpdate {
                            framework_id: run.framework_id,
                            status: Some(pb::TaskStatus {
                                task_id,
                                agent_id: id.clone(),
                                state: pb::TaskState::TaskRunning as i32,
                                source: pb::Source::Agent as i32,
                                uuid: strata_proto::ids::new_update_uuid(),
                                timestamp: Timestamp::now().as_secs_f64(),
                                ..Default::default()
                            }),
                        }));
                    }
                }
            }
        }
    });
    Ok(agent_id)
}

/// Launches `n` tasks on the phantom agent and waits until they run;
/// returns the framework's id and its handle (the framework stays
/// subscribed while it is held; its later events are read and dropped).
async fn launch(
    address: &str,
    agent: &str,
    n: usize,
) -> anyhow::Result<(String, strata_sdk::SchedulerHandle)> {
    let (handle, mut events) = Scheduler::subscribe(SchedulerConfig::new(
        address,
        FrameworkConfig::new("ui-bench"),
    ))
    .await?;
    let framework = handle.framework_id().to_string();
    let (mut launched, mut running) = (0, 0);
    let each = Resources::parse("cpus:0.01;mem:1")?;
    while running < n {
        let event = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .context("no event within a minute")?
            .context("the subscription ended")?;
        match event {
            Event::Offers(offers) => {
                for offer in offers {
                    let room = n - launched;
                    let fit = ((offer.resources.cpus.as_f64() / 0.01) as usize)
                        .min(offer.resources.mem.as_f64() as usize)
                        .min(room)
                        .min(1_000);
                    let tasks: Vec<_> = (launched..launched + fit)
                        .map(|i| {
                            TaskBuilder::shell(format!("ui-bench-{i}").as_str(), "sleep 1d")
                                .agent(offer.agent_id.clone())
                                .resources(each.clone())
                                .build()
                        })
                        .collect();
                    launched += fit;
                    handle
                        .accept(vec![offer.id], tasks, Filters::refuse(Duration::ZERO))
                        .await?;
                }
            }
            Event::Update(s) if s.state == strata_sdk::TaskState::TaskRunning => running += 1,
            _ => {}
        }
    }
    tracing::debug!(agent, framework, "tasks running");
    tokio::spawn(async move { while events.next().await.is_some() {} });
    Ok((framework, handle))
}

/// Fills the job history with `n` finished four-stage jobs; returns their
/// ids.
async fn fill_history(address: &str, framework: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    let now = Timestamp::now().as_millis();
    for j in 0..n {
        let id = format!("job-{j}-bench");
        let report = job_report(&id, framework, now - (n - j) as u64 * 1000);
        let body = serde_json::to_vec(&report)?;
        let (status, _, reply) = strata_sdk::http::request(
            "PUT",
            address,
            &format!("/api/v1/jobs/{id}"),
            None,
            Some(&body),
            Duration::from_secs(10),
        )
        .await?;
        if status != 200 {
            bail!("PUT {id}: {status} {}", String::from_utf8_lossy(&reply));
        }
        ids.push(id);
    }
    ids.reverse();
    Ok(ids)
}

/// A finished query's report: four stages of eight tasks, ten operators.
fn job_report(id: &str, framework: &str, at: u64) -> JobReport {
    let stages = (0..4u32)
        .map(|s| StageReport {
            stage: s,
            inputs: if s == 0 { vec![] } else { vec![s - 1] },
            partitions: 8,
            done: 8,
            launched: 8,
            rows: 1_000_000,
            bytes: 64 << 20,
            elapsed_ms: 1_200,
            operators: (0..10u32)
                .map(|d| OperatorReport {
                    depth: d,
                    name: format!("ProjectionExec: expr=[l_orderkey@{d} as l_orderkey]"),
                    output_rows: Some(1_000_000),
                    elapsed_compute_ns: Some(40_000_000),
                    spilled_bytes: None,
                })
                .collect(),
            attempts: (0..8u32)
                .map(|p| AttemptReport {
                    partition: p,
                    attempt: 0,
                    executor: format!("{framework}-exec-{}", p % 2),
                    state: "finished".into(),
                    rows: 125_000,
                    bytes: 8 << 20,
                    elapsed_ms: 1_100,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    JobReport {
        id: id.into(),
        framework_id: framework.into(),
        driver: "strata-sql".into(),
        description:
            "SELECT l_returnflag, l_linestatus, sum(l_quantity) FROM lineitem GROUP BY 1, 2".into(),
        state: "succeeded".into(),
        submitted_at: Timestamp::from_millis(at),
        ended_at: Some(Timestamp::from_millis(at + 4_800)),
        stages,
        executors: (0..2)
            .map(|e| ExecutorReport {
                id: format!("{framework}-exec-{e}"),
                host: "127.0.0.1".into(),
                slots: 2,
                flight_address: "127.0.0.1:40000".into(),
            })
            .collect(),
        ..Default::default()
    }
}
