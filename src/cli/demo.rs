//! `strata demo`: a whole cluster in this process (a manager and three
//! agents on ephemeral loopback ports, state in a temporary directory), a
//! handful of tasks run across its agents through the scheduler SDK, a
//! table of what ran where, and exit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use strata_proto::resources::Resources;
use strata_sdk::{Ask, Event, FrameworkConfig, Scheduler, SchedulerConfig, TaskBuilder};

use crate::http;
use crate::local::{LocalCluster, LocalOptions};

/// Arguments of `strata demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of agents.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Number of tasks.
    #[arg(long, default_value_t = 6)]
    tasks: usize,
}

struct Ran {
    agent: String,
    host: String,
    address: String,
    state: String,
    exit: Option<i32>,
    output: String,
    started: Instant,
    took: Duration,
}

/// `strata demo`.
pub async fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    if a.tasks == 0 {
        bail!("--tasks must be at least 1");
    }
    let dir = tempdir()?;
    let mut opts = LocalOptions::new(a.agents, dir.clone());
    opts.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    // Each agent gets an equal slice of a modest machine, so the demo behaves
    // the same on any host.
    opts.machine = Some(Resources::parse(&format!(
        "cpus:{};mem:{};disk:1024;ports:[31000-31999]",
        a.agents * 2,
        a.agents * 1024
    ))?);
    eprintln!(
        "starting a manager and {} agents in this process ({})",
        a.agents,
        dir.display()
    );
    let t0 = Instant::now();
    let cluster = LocalCluster::start(opts).await?;
    let address = cluster.address().to_string();
    eprintln!("cluster up in {:?}: manager at {address}", t0.elapsed());

    let result = run_tasks(&address, a.tasks).await;
    cluster.shutdown_with_tasks(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let ran = result?;

    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(vec![
        "task", "agent", "host", "state", "exit", "took", "output",
    ]);
    let mut failed = 0;
    for (id, r) in &ran {
        if r.state != "TASK_FINISHED" {
            failed += 1;
        }
        t.add_row(vec![
            id.clone(),
            r.agent.clone(),
            r.host.clone(),
            r.state.clone(),
            r.exit.map(|c| c.to_string()).unwrap_or_default(),
            format!("{:.0?}", r.took),
            r.output.trim().to_owned(),
        ]);
    }
    println!("{t}");
    let agents: std::collections::BTreeSet<&str> = ran.values().map(|r| r.agent.as_str()).collect();
    println!(
        "{} tasks ran on {} agents in {:.1?}",
        ran.len(),
        agents.len(),
        t0.elapsed()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let base = std::env::temp_dir().join(format!("strata-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    Ok(base)
}

async fn run_tasks(address: &str, n: usize) -> anyhow::Result<BTreeMap<String, Ran>> {
    let task_res = Resources::new(0.5, 64.0);
    let mut cfg = SchedulerConfig::new(address.to_owned(), FrameworkConfig::new("strata-demo"));
    // Spread the tasks: at most two per agent.
    cfg.demand = vec![
        Ask::new("batch", task_res.clone(), n as u32)
            .constraint(strata_sdk::Constraint::max_per("hostname", 2)),
    ];
    let (handle, mut events) = Scheduler::subscribe(cfg).await?;
    let mut ran: BTreeMap<String, Ran> = BTreeMap::new();
    let mut next = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ran
        .values()
        .filter(|r| r.state.starts_with("TASK_") && is_terminal(&r.state))
        .count()
        < n
    {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("demo tasks did not finish within 60s");
        }
        let Ok(Some(event)) = tokio::time::timeout(left, events.next()).await else {
            bail!("the manager stopped answering");
        };
        match event {
            Event::Offers(offers) => {
                for offer in offers {
                    let mut left = offer.resources.clone();
                    let mut tasks = Vec::new();
                    while next < n && left.subtract(&task_res) {
                        let id = format!("demo-{next}");
                        next += 1;
                        let script = format!(
                            "echo \"task {id} ran on $HOST as pid $$, agent $STRATA_AGENT_ID\"; i=0; s=0; while [ $i -lt 20000 ]; do s=$((s+i)); i=$((i+1)); done; echo \"sum 0..20000 = $s\""
                        );
                        tasks.push(
                            TaskBuilder::shell(id.clone(), script)
                                .resources(task_res.clone())
                                .build(),
                        );
                        ran.insert(
                            id,
                            Ran {
                                agent: offer.agent_id.to_string(),
                                host: offer.hostname.clone(),
                                address: offer.agent_address.clone().unwrap_or_default(),
                                state: "launched".into(),
                                exit: None,
                                output: String::new(),
                                started: Instant::now(),
                                took: Duration::ZERO,
                            },
                        );
                    }
                    if tasks.is_empty() {
                        handle
                            .decline(vec![offer.id.clone()], Some(Duration::from_secs(60)))
                            .await?;
                    } else {
                        handle.launch(offer.id.clone(), tasks).await?;
                    }
                }
                if next >= n {
                    handle.suppress().await?;
                }
            }
            Event::Update(s) => {
                if let Some(r) = ran.get_mut(s.task_id.as_str()) {
                    r.state = s.state.as_str_name().to_owned();
                    r.exit = s.exit_code;
                    if s.is_terminal() {
                        r.took = r.started.elapsed();
                        if !s.message.is_empty()
                            && s.state != strata_proto::pb::TaskState::TaskFinished
                        {
                            r.output = s.message.clone();
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let fid = handle.framework_id();
    for (id, r) in ran.iter_mut() {
        if r.output.is_empty() {
            let path = format!("/v1/sandbox/{fid}/{id}/stdout");
            r.output = match http::get(&r.address, &path, None, Duration::from_secs(5)).await {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => format!("(stdout unavailable: {e})"),
            };
        }
    }
    handle.teardown().await?;
    Ok(ran)
}

fn is_terminal(state: &str) -> bool {
    strata_proto::pb::TaskState::from_str_name(state).is_some_and(|s| s.is_terminal())
}
