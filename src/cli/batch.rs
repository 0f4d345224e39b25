//! What the batch commands (`sql`, `demo`, `bench`) share: executor
//! options, starting a driver on a cluster, and showing a job's progress
//! and figures.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strata_framework::driver::dag::StageMetrics;
use strata_framework::driver::{ClusterSource, Driver, JobHandle, JobProgress};
use strata_framework::job::forwarded_env;

pub use strata_framework::job::ExecutorOpts;

/// Prints (on stderr) how many executors `driver` has up, their pids, and
/// how long since `started` they took.
pub async fn announce_executors(driver: &Driver, started: std::time::Instant) {
    let executors = driver.executors().await;
    eprintln!(
        "{} executors up in {:.0} ms: {}",
        executors.len(),
        started.elapsed().as_secs_f64() * 1000.0,
        executors
            .iter()
            .map(|e| format!("{} (pid {})", e.id, e.pid))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Starts a driver whose executors are `strata executor` tasks on the
/// cluster at `manager`, and waits for them.
pub async fn start_driver(
    opts: &ExecutorOpts,
    manager: &str,
    token: Option<&str>,
    name: &str,
) -> anyhow::Result<Arc<Driver>> {
    start_elastic_driver(opts, manager, token, name, opts.executors, opts.executors).await
}

/// [`start_driver`] with dynamic allocation: between `min` and `max`
/// executors (idle ones above `min` released); waits for `min` of them.
pub async fn start_elastic_driver(
    opts: &ExecutorOpts,
    manager: &str,
    token: Option<&str>,
    name: &str,
    min: usize,
    max: usize,
) -> anyhow::Result<Arc<Driver>> {
    opts.validate()?;
    anyhow::ensure!(
        max >= 1 && min <= max,
        "executors: at least 1 at most, and no more kept than at most (min {min}, max {max})"
    );
    let ask = strata_proto::resources::Resources::new(opts.executor_cpus, opts.executor_mem);
    super::run::check_capacity(manager, token, &ask, opts.executor_wait).await?;
    // Executors run each agent's own `strata`, wherever it is installed.
    let mut source = ClusterSource::new(manager, strata_proto::OWN_PROGRAM);
    source.token = token.map(str::to_owned);
    source.name = name.to_owned();
    source.env = forwarded_env();
    let mut config = opts.driver_config(source);
    config.executors.min = min;
    config.executors.max = max;
    let driver = Driver::start(config).await?;
    if let Err(e) = driver.wait_for_executors(min, opts.executor_wait).await {
        driver.shutdown().await;
        return Err(e).context("starting executors");
    }
    Ok(Arc::new(driver))
}

/// Shows a job's progress on stderr while it runs, only on a terminal.
pub fn show_progress(job: &JobHandle) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let mut rx = job.progress();
    Some(tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut shown = false;
        loop {
            let line = progress_line(&rx.borrow(), started.elapsed());
            // Only long queries get a bar.
            if started.elapsed() > Duration::from_millis(300) {
                eprint!("\r\x1b[2K{line}");
                shown = true;
            }
            let done = rx.borrow().state.is_terminal();
            if done
                || tokio::time::timeout(Duration::from_millis(200), rx.changed())
                    .await
                    .is_ok_and(|r| r.is_err())
            {
                break;
            }
        }
        if shown {
            eprint!("\r\x1b[2K");
        }
    }))
}

fn progress_line(p: &JobProgress, elapsed: Duration) -> String {
    let total: u32 = p.stages.iter().map(|s| s.tasks).sum();
    let done: u32 = p.stages.iter().map(|s| s.done).sum();
    let running: u32 = p.stages.iter().map(|s| s.running).sum();
    let stages_done = p.stages.iter().filter(|s| s.done == s.tasks).count();
    let width = 30usize;
    let filled = if total == 0 {
        0
    } else {
        (done as usize * width) / total as usize
    };
    format!(
        "[{}{}] stages {}/{} tasks {}/{} ({} running) {:.1}s",
        "#".repeat(filled),
        "-".repeat(width - filled),
        stages_done,
        p.stages.len(),
        done,
        total,
        running,
        elapsed.as_secs_f64()
    )
}

/// One line per stage: tasks, rows, bytes, time, and re-runs.
pub fn stage_lines(stages: &[StageMetrics]) -> Vec<String> {
    stages
        .iter()
        .map(|s| {
            let mut line = format!(
                "stage {}: {} tasks, {} rows, {}, {:.0} ms",
                s.stage,
                s.tasks,
                s.rows,
                human_bytes(s.bytes),
                s.elapsed.as_secs_f64() * 1000.0
            );
            if s.recomputed > 0 {
                line.push_str(&format!(", {} recomputed", s.recomputed));
            }
            if s.failed > 0 {
                line.push_str(&format!(", {} failed attempts", s.failed));
            }
            if s.speculative > 0 {
                line.push_str(&format!(
                    ", {} speculative ({} won)",
                    s.speculative, s.speculative_wins
                ));
            }
            line
        })
        .collect()
}

/// `1.2 MiB`.
pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} B")
    }
}
