//! `strata demo`: a whole cluster in this process (a manager and two
//! agents on ephemeral loopback ports, state in a temporary directory),
//! TPC-H data generated at a small scale factor, the TPC-H queries run as
//! distributed jobs on executors the agents start, their results with
//! per-stage timings, and exit.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata_framework::session::Session;
use strata_framework::tpch;
use strata_proto::resources::Resources;

use super::batch::{ExecutorOpts, stage_lines};
use crate::local::{LocalCluster, LocalOptions};
use strata_framework::output::{self, Format};

/// Arguments of `strata demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of agents.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// TPC-H scale factor of the generated data.
    #[arg(long, default_value_t = 0.05)]
    sf: f64,
    /// Queries to run (1-22, comma separated). Default: all 22.
    #[arg(long, value_delimiter = ',')]
    queries: Vec<usize>,
    /// Result rows shown per query.
    #[arg(long, default_value_t = 5)]
    rows: usize,
    #[command(flatten)]
    executors: ExecutorOpts,
}

/// `strata demo`.
pub async fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    if !(a.sf.is_finite() && a.sf > 0.0 && a.sf <= 10.0) {
        bail!("--sf must be in (0, 10]");
    }
    let queries: Vec<usize> = if a.queries.is_empty() {
        (1..=22).collect()
    } else {
        a.queries.clone()
    };
    if let Some(q) = queries.iter().find(|q| !(1..=22).contains(*q)) {
        bail!("--queries: there is no TPC-H query {q} (1-22)");
    }
    let dir = tempdir()?;
    let result = demo(&a, &queries, &dir).await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

async fn demo(a: &DemoArgs, queries: &[usize], dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let data = dir.join("tpch");
    let t0 = Instant::now();
    eprintln!(
        "generating TPC-H data at scale factor {} in {}",
        a.sf,
        data.display()
    );
    let sf = a.sf;
    let d = data.clone();
    tokio::task::spawn_blocking(move || tpch::generate_parquet(sf, &d))
        .await?
        .context("generating TPC-H data")?;
    eprintln!("  done in {:.1}s", t0.elapsed().as_secs_f64());

    let mut opts = LocalOptions::new(a.agents, dir.join("cluster"));
    opts.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    // Each agent gets an equal slice of a modest machine, so the demo
    // behaves the same on any host.
    let per_agent_cpus = a.executors.executor_cpus.ceil().max(1.0) as usize;
    let per_agent_mem = (a.executors.executor_mem.ceil() as usize).max(512) + 256;
    opts.machine = Some(Resources::parse(&format!(
        "cpus:{};mem:{};disk:4096;ports:[31000-31999]",
        a.agents * per_agent_cpus,
        a.agents * per_agent_mem
    ))?);
    let t1 = Instant::now();
    let cluster = LocalCluster::start(opts).await?;
    let address = cluster.address().to_string();
    eprintln!(
        "cluster up in {:.0} ms: manager at {address}, {} agents",
        t1.elapsed().as_secs_f64() * 1000.0,
        a.agents
    );
    let outcome = run_queries(a, queries, &address, &data).await;
    cluster.shutdown_with_tasks(Duration::from_secs(10)).await;
    outcome
}

async fn run_queries(
    a: &DemoArgs,
    queries: &[usize],
    address: &str,
    data: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let t = Instant::now();
    let driver = super::batch::start_driver(&a.executors, address, None, "strata-demo").await?;
    super::batch::announce_executors(&driver, t).await;
    let session = Session::new(driver.clone(), a.executors.partitions())?;
    tpch::register_parquet(session.context(), data).await?;
    let mut stdout = std::io::stdout().lock();
    let mut total = Duration::ZERO;
    let mut failed = Vec::new();
    for &n in queries {
        use std::io::Write;
        let started = Instant::now();
        let mut shown = false;
        for statement in tpch::statements(n) {
            let is_query = statement.trim_start().to_lowercase().starts_with("select");
            if !is_query {
                if let Err(e) = session.query(&statement).await {
                    failed.push(format!("q{n}: {e}"));
                }
                continue;
            }
            let df = session.context().sql(&statement).await?;
            let submitted = strata_framework::session::described(
                format!("TPC-H q{n}: {}", statement.trim()),
                session.submit_dataframe(df),
            );
            let job = match submitted.await {
                Ok(j) => j,
                Err(e) => {
                    failed.push(format!("q{n}: {e}"));
                    continue;
                }
            };
            match job.result().await {
                Ok(out) => {
                    let rows: usize = out.batches.iter().map(|b| b.num_rows()).sum();
                    writeln!(
                        stdout,
                        "\nq{n}: {rows} rows in {:.0} ms",
                        out.elapsed.as_secs_f64() * 1000.0
                    )?;
                    for l in stage_lines(&out.stages) {
                        writeln!(stdout, "  {l}")?;
                    }
                    let mut head = Vec::new();
                    let mut left = a.rows;
                    for b in &out.batches {
                        if left == 0 {
                            break;
                        }
                        let take = left.min(b.num_rows());
                        head.push(b.slice(0, take));
                        left -= take;
                    }
                    output::write(&mut stdout, Format::Table, &out.schema, &head)?;
                    if rows > a.rows {
                        writeln!(stdout, "  … {} more rows", rows - a.rows)?;
                    }
                    shown = true;
                }
                Err(e) => failed.push(format!("q{n}: {e}")),
            }
        }
        if shown {
            total += started.elapsed();
        }
    }
    driver.shutdown().await;
    println!(
        "\n{} of {} queries ran on the cluster in {:.2} s",
        queries.len() - failed.len(),
        queries.len(),
        total.as_secs_f64()
    );
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failed {
            eprintln!("error: {f}");
        }
        Ok(ExitCode::from(1))
    }
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let base = std::env::temp_dir().join(format!("strata-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    Ok(base)
}
