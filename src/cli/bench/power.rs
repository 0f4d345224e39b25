//! TPC-H's power test three ways, in one run: the 22 queries one after
//! another through the gateway (one psql connection), through a `Session`
//! on the gateway's own driver and executors (what `strata sql` runs, with
//! no protocol between), and in single-process DataFusion with as many
//! partitions. The gateway's overhead is the first over the second.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use datafusion::prelude::{SessionConfig, SessionContext};
use strata_framework::driver::Driver;
use strata_framework::session::Session;
use strata_framework::tpch;

/// The best total time of each way.
pub struct Power {
    /// Through the gateway, one connection.
    pub gateway: Duration,
    /// A session on the same driver (`strata sql`).
    pub session: Duration,
    /// Single-process DataFusion.
    pub datafusion: Duration,
    /// Runs of each.
    pub runs: usize,
}

/// The 22 queries' statements in order (q15's view and its drop too).
fn script() -> Vec<String> {
    (1..=22).flat_map(tpch::statements).collect()
}

/// Runs the power test `runs` times each way over TPC-H in `data` (the
/// gateway's catalog already has its tables).
pub async fn run(
    data: &Path,
    runs: usize,
    psql: &Path,
    pg_port: u16,
    driver: Arc<Driver>,
    partitions: usize,
) -> anyhow::Result<Power> {
    let runs = runs.max(1);
    let sql_file = data.with_file_name("power.sql");
    let text: String = script().iter().map(|s| format!("{s};\n")).collect();
    std::fs::write(&sql_file, text)?;
    let session = Session::new(driver, partitions)?;
    tpch::register_parquet(session.context(), data).await?;
    let ctx =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    tpch::register_parquet(&ctx, data).await?;
    let (mut gateway, mut ours, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so that a warm page cache favours none.
    for _ in 0..runs {
        gateway.push(through_psql(&sql_file, psql, pg_port).await?);
        let started = Instant::now();
        for s in script() {
            session
                .sql(&s)
                .await
                .with_context(|| format!("strata: {s}"))?;
        }
        ours.push(started.elapsed());
        let started = Instant::now();
        for s in script() {
            ctx.sql(&s)
                .await
                .with_context(|| format!("datafusion: {s}"))?
                .collect()
                .await?;
        }
        theirs.push(started.elapsed());
    }
    let best = |v: Vec<Duration>| v.into_iter().min().unwrap_or_default();
    Ok(Power {
        gateway: best(gateway),
        session: best(ours),
        datafusion: best(theirs),
        runs,
    })
}

/// One psql running the script through the gateway; its wall time.
async fn through_psql(script: &Path, psql: &Path, port: u16) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = super::throughput::psql_file(psql, port, script)
        .output()
        .await
        .with_context(|| format!("cannot run {}", psql.display()))?;
    ensure!(
        out.status.success(),
        "the power test through the gateway failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(started.elapsed())
}
