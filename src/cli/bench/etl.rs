//! `strata bench etl`: an ETL write, `CREATE TABLE … PARTITIONED BY
//! (l_shipmode) AS SELECT * FROM lineitem` into a managed (Delta Lake)
//! table — read, written as Parquet in a directory per partition by tasks
//! on a local cluster's executors, committed once — beside single-process
//! DataFusion writing the same rows as Parquet (`COPY … TO … PARTITIONED
//! BY`, the same compression), in the same run. The figure is input MB/s (the
//! Parquet bytes of `lineitem` over the write's wall time) and the ratio.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use strata_framework::job::ExecutorOpts;
use strata_framework::session::Session;
use strata_framework::tpch;
use strata_gateway::warehouse::Warehouse;

use crate::cli::batch::start_elastic_driver;

/// Arguments of `strata bench etl`.
#[derive(clap::Args, Debug)]
pub struct EtlArgs {
    /// TPC-H scale factor of the `lineitem` copied.
    #[arg(long, default_value_t = 0.1)]
    sf: f64,
    /// Runs of each side (the best and the median are shown).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The column of `lineitem` the table is partitioned by (`none`: not
    /// partitioned).
    #[arg(long, default_value = "l_shipmode")]
    partition_by: String,
    #[command(flatten)]
    executors: ExecutorOpts,
}

/// `strata bench etl`.
pub async fn run(a: EtlArgs) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("strata-bench-etl-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&a, &dir).await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

/// The bytes of the files under `dir`.
fn bytes_under(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        total += if e.file_type()?.is_dir() {
            bytes_under(&e.path())?
        } else {
            e.metadata()?.len()
        };
    }
    Ok(total)
}

fn best_and_median(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[0], times[times.len() / 2])
}

async fn bench(a: &EtlArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let data = dir.join("tpch");
    tpch::generate_parquet(a.sf, &data)?;
    let input = bytes_under(&data.join("lineitem"))?;
    let runs = a.runs.max(1);

    let mem = (a.executors.executor_mem * a.executors.executors as f64 + 1024.0).ceil();
    let cpus = (a.executors.executor_cpus * a.executors.executors as f64).ceil();
    let machine = format!("cpus:{cpus};mem:{mem};disk:4096;ports:[31000-31999]");
    let cluster = super::local_cluster(1, dir.join("cluster"), &machine).await?;
    let manager = cluster.address().to_string();
    let n = a.executors.executors;
    let driver =
        start_elastic_driver(&a.executors, &manager, None, "strata-bench-etl", n, n).await?;
    let partitions = a.executors.partitions_for(n);
    let session = Session::new(driver.clone(), partitions)?;
    tpch::register_parquet(session.context(), &data).await?;
    let warehouse = Warehouse::open(&dir.join("warehouse")).await?;
    let partitioned = (a.partition_by != "none").then_some(a.partition_by.as_str());
    let clause = partitioned
        .map(|c| format!(" PARTITIONED BY ({c})"))
        .unwrap_or_default();
    let mut ours = Vec::new();
    for i in 0..runs {
        let sql = format!("CREATE TABLE t{i}{clause} AS SELECT * FROM lineitem");
        let mut statement = session
            .parse(&sql)?
            .into_iter()
            .next()
            .context("no statement")?;
        let partition_by = strata_gateway::warehouse::partitions::take_partitioning(&mut statement);
        let plan = session
            .context()
            .state()
            .statement_to_plan(statement)
            .await?;
        let LogicalPlan::Ddl(ddl) = plan else {
            anyhow::bail!("CREATE TABLE … AS did not plan as DDL");
        };
        let started = Instant::now();
        warehouse
            .run_managed(&session, &ddl, &partition_by, "datafusion", "public")
            .await?
            .context("not a managed table")?;
        ours.push(started.elapsed());
    }
    driver.shutdown().await;
    cluster.shutdown_with_tasks(Duration::from_secs(10)).await;

    // Single-process DataFusion with as many partitions, the same codec.
    let ctx =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    tpch::register_parquet(&ctx, &data).await?;
    let mut theirs = Vec::new();
    for i in 0..runs {
        let out = dir.join(format!("datafusion-{i}"));
        let sql = format!(
            "COPY (SELECT * FROM lineitem) TO '{}/' STORED AS PARQUET{clause} \
             OPTIONS ('format.compression' 'snappy')",
            out.display()
        );
        let started = Instant::now();
        ctx.sql(&sql).await?.collect().await?;
        theirs.push(started.elapsed());
    }

    let mb = input as f64 / 1e6;
    println!(
        "CREATE TABLE …{clause} AS SELECT * FROM lineitem (TPC-H SF {}: {mb:.1} MB of \
         Parquet in), {partitions} partitions, {runs} runs each:",
        a.sf
    );
    println!(
        "{:<44} {:>9} {:>9} {:>10}",
        "", "best s", "median s", "MB/s (best)"
    );
    let (ob, om) = best_and_median(ours);
    let (tb, tm) = best_and_median(theirs);
    for (name, best, median) in [
        ("strata: managed Delta table, on executors", ob, om),
        ("datafusion: COPY TO parquet, one process", tb, tm),
    ] {
        println!(
            "{name:<44} {:>9.3} {:>9.3} {:>10.1}",
            best.as_secs_f64(),
            median.as_secs_f64(),
            mb / best.as_secs_f64()
        );
    }
    println!(
        "strata / datafusion (best): {:.2}",
        ob.as_secs_f64() / tb.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
