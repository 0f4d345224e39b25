//! `strata bench tasks`: scheduler overhead. Jobs of tiny tasks (each one
//! partition of a plan that returns an empty batch) run on a local
//! cluster's executors; the figure is tasks per second from submission to
//! the job's result, through the driver's scheduler, the executor links,
//! plan decoding and status reports.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::physical_plan::empty::EmptyExec;
use strata_executor::ids::StageId;
use strata_framework::planner::{JobPlan, Stage};

use crate::cli::batch::ExecutorOpts;

/// Arguments of `strata bench tasks`.
#[derive(clap::Args, Debug)]
pub struct TasksArgs {
    /// Tasks per job.
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Jobs run one after another (the first is a warm-up, not counted).
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    #[command(flatten)]
    executors: ExecutorOpts,
}

/// `strata bench tasks`.
pub async fn run(a: TasksArgs) -> anyhow::Result<ExitCode> {
    if a.tasks == 0 || a.jobs < 2 {
        bail!("--tasks must be at least 1 and --jobs at least 2 (the first is a warm-up)");
    }
    let dir = std::env::temp_dir().join(format!("strata-bench-tasks-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let agents = a.executors.executors;
    let cpus = a.executors.executor_cpus.ceil().max(1.0) as usize;
    let mem = a.executors.executor_mem.ceil() as usize + 256;
    let machine = format!(
        "cpus:{};mem:{};disk:1024;ports:[31000-31999]",
        agents * cpus,
        agents * mem
    );
    let cluster = super::local_cluster(agents, dir.clone(), &machine).await?;
    let address = cluster.address().to_string();
    let result = bench(&a, &address).await;
    cluster.shutdown_with_tasks(Duration::from_secs(10)).await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

async fn bench(a: &TasksArgs, address: &str) -> anyhow::Result<ExitCode> {
    let driver =
        crate::cli::batch::start_driver(&a.executors, address, None, "strata-bench-tasks").await?;
    let slots: u32 = driver.executors().await.iter().map(|e| e.slots).sum();
    eprintln!(
        "{} executors, {slots} task slots; {} jobs of {} tiny tasks",
        a.executors.executors, a.jobs, a.tasks
    );
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let mut rates = Vec::new();
    for j in 0..a.jobs {
        let plan = Arc::new(EmptyExec::new(schema.clone()).with_partitions(a.tasks));
        let job = JobPlan {
            job: driver.next_job_id(),
            stages: vec![Stage {
                id: StageId::new(0),
                plan,
                inputs: vec![],
                tasks: a.tasks,
            }],
            memory_limit: 0,
            description: format!("{} tiny tasks", a.tasks),
        };
        let started = Instant::now();
        let out = driver.submit(job)?.result().await?;
        let took = started.elapsed();
        let rate = a.tasks as f64 / took.as_secs_f64();
        let launched = out.stages[0].launched;
        println!(
            "job {}{}: {} tasks ({} attempts) in {:.0} ms: {:.0} tasks/s",
            j + 1,
            if j == 0 { " (warm-up)" } else { "" },
            a.tasks,
            launched,
            took.as_secs_f64() * 1000.0,
            rate
        );
        if j > 0 {
            rates.push(rate);
        }
    }
    driver.shutdown().await;
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "median {median:.0} tasks/s over {} jobs (floor 5,000: {})",
        rates.len(),
        if median >= 5000.0 { "PASS" } else { "FAIL" }
    );
    Ok(ExitCode::SUCCESS)
}
