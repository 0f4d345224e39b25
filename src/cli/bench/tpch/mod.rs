//! `strata bench tpch`: the 22 TPC-H queries on a local cluster and in
//! single-process DataFusion, in the same run, on the same Parquet files.
//!
//! What runs where, so that each process's peak memory is its own:
//!
//! * the data: `--data DIR` (default `$HOME/.cache/strata/tpch-sf{SF}`),
//!   generated once by a child process (`strata bench tpch-worker
//!   --generate`) when missing, and reused afterwards;
//! * DataFusion: a child process (`strata bench tpch-worker`) with
//!   DataFusion's default configuration except `target_partitions`
//!   (`--partitions`, default 2: this machine's cores, the cluster's total
//!   CPUs). It takes query numbers on stdin and answers each with its
//!   times as a line of JSON, writes each query's rows as an Arrow IPC
//!   file, and reports its peak memory at the end;
//! * Strata: a `strata manager` and two `strata agent` child processes
//!   (1 CPU each), the driver in this process (as `strata sql` runs it),
//!   and one `strata executor` per agent (`--executor-mem`, default 4 GiB),
//!   launched by the driver through offers as the agents' tasks.
//!
//! Timing: each query runs once untimed (warm-up), then `--runs` times
//! timed; the best (minimum) wall time is reported. A query's time is from
//! its SQL text to its last row in the caller's hands (planning included),
//! for every statement of the query (q15: create view, select, drop view).
//! The sides alternate query by query (DataFusion's runs of q1, the
//! cluster's runs of q1, DataFusion's runs of q2, …), so that both see the
//! same machine; CPU time used by other processes during the run is
//! reported, and a busy machine is warned about.
//!
//! Peak memory is `VmHWM` of `/proc/<pid>/status`: the floor compares the
//! cluster's processes (manager, agents, executors, their supervisors, the
//! driver) with DataFusion's process's peak. Every one of those processes
//! maps the same `strata` binary, whose resident code a plain sum of peaks
//! would count once per process; so the cluster's figure is each
//! process's peak less its file-backed pages, plus the resident pages of
//! the files they map counted once (read from `/proc/PID/pagemap` at the
//! end). The plain sum is printed too. Executors' figures are read every 200 ms while queries run and
//! at the end; executors that exited during the run (replaced after a
//! failure) are shown but not summed. This process's high-water mark is
//! reset (`/proc/self/clear_refs`) before the cluster starts, so the
//! driver's figure covers the cluster run only. The largest sampled sum of
//! the cluster's resident memory is shown too.
//!
//! Guards: a query on the cluster is stopped, and the driver restarted
//! with fresh executors, when an executor's resident memory passes
//! `--executor-rss-limit` or the machine runs out of memory, or when it
//! runs past `--query-timeout`. The daemons get SIGTERM if this process
//! dies; SIGINT and SIGTERM stop the run cleanly.
//!
//! Results: each query's rows on the cluster are compared with
//! DataFusion's (`compare::same_rows`); a mismatch or any error makes the
//! exit code non-zero. The two floors (time and memory) are reported as
//! PASS/FAIL and do not change the exit code: this is a measurement.

mod cluster;
mod report;
mod sampler;
mod worker;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use strata_framework::compare::same_rows;
use strata_framework::driver::dag::StageMetrics;
use strata_framework::tpch;

use crate::cli::batch::stage_lines;
use crate::cli::parse_mib;

use super::procfs::{cpu_busy, machine_cpu_seconds, resident_file_bytes};
use cluster::{ClusterRun, die_with_parent};
use report::Report;
use worker::{DfWorker, read_ipc};
pub use worker::{WorkerArgs, worker};

/// Strata's total time may be at most this many times DataFusion's.
const TIME_FLOOR: f64 = 1.25;
/// The cluster's summed peak memory may be at most this many times
/// DataFusion's peak.
const MEMORY_FLOOR: f64 = 2.0;
/// A query on the cluster is stopped when the disk of its shuffle files
/// has less than this free.
const MIN_FREE_DISK: u64 = 4 << 30;
/// The file of a generated data directory that holds its scale factor.
const SF_MARKER: &str = "scale-factor";
/// How long a daemon has to print its address, and to stop.
const DAEMON_WAIT: Duration = Duration::from_secs(30);

/// Arguments of `strata bench tpch`.
#[derive(clap::Args, Debug)]
pub struct TpchArgs {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    sf: f64,
    /// Directory of the Parquet data (generated there if missing)
    /// [default: $HOME/.cache/strata/tpch-sf{SF}].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Queries to run (1-22, comma separated) [default: all 22].
    #[arg(long, value_delimiter = ',')]
    queries: Vec<usize>,
    /// Timed runs per query after one untimed warm-up run; the best is
    /// reported.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Partitions per stage on the cluster, and DataFusion's
    /// `target_partitions`.
    #[arg(long, default_value_t = 2)]
    partitions: usize,
    /// Memory of each executor (and its pool), MiB or with a unit (`4g`).
    #[arg(long, default_value = "4g", value_parser = parse_mib)]
    executor_mem: f64,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print each cluster query's per-stage figures (tasks, rows, bytes,
    /// time) under the table.
    #[arg(long)]
    stages: bool,
    /// Directory for the cluster's state, logs and sandboxes (kept
    /// afterwards) [default: a temporary directory, removed afterwards].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// A query on the cluster is stopped (and the driver and its executors
    /// restarted for the next query) when an executor's resident memory
    /// exceeds this, MiB or with a unit [default: 1.5 × --executor-mem].
    /// Executors' memory pools do not bound all their memory; this keeps
    /// a runaway query from exhausting the machine.
    #[arg(long, value_parser = parse_mib)]
    executor_rss_limit: Option<f64>,
    /// A query on the cluster is stopped likewise when it runs longer
    /// than this.
    #[arg(long, default_value = "10m", value_parser = crate::cli::parse_duration)]
    query_timeout: Duration,
    /// DataFusion's settings: `default` (the baseline), or `strata` (the
    /// settings the cluster plans with: partitioned joins only, no dynamic
    /// filters; to tell their cost from that of distribution).
    #[arg(long, value_enum, default_value = "default")]
    datafusion_config: DfConfig,
    /// A configuration option of the cluster's SQL session, as `SET KEY =
    /// VALUE` would set it (repeatable): for example
    /// `--set strata.key_filters=false`, or
    /// `--set datafusion.optimizer.hash_join_single_partition_threshold=67108864`
    /// (the broadcast limit). DataFusion's side is not affected.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

/// `KEY=VALUE` of `--set`.
fn parse_setting(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => anyhow::bail!("expected KEY=VALUE, got {s:?}"),
    }
}

/// The settings of the single-process DataFusion side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum DfConfig {
    /// DataFusion's defaults but for `target_partitions`.
    Default,
    /// `strata_executor::engine::session_config`.
    Strata,
}

/// One query's figures on one side.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct QueryRun {
    query: usize,
    /// Best timed run, ms.
    best_ms: f64,
    /// Every timed run, ms.
    runs_ms: Vec<f64>,
    /// The warm-up run, ms.
    warmup_ms: f64,
    /// Rows of the result.
    rows: usize,
    /// Why it failed, if it did.
    error: Option<String>,
}

/// What the DataFusion worker prints.
#[derive(Serialize, Deserialize, Debug)]
struct WorkerReport {
    pid: u32,
    peak_rss_bytes: u64,
    /// CPU time it used (user + system), seconds.
    #[serde(default)]
    cpu_s: f64,
    /// Resident memory at the end: anonymous (heap) and file-backed
    /// (the binary's pages, shared with other `strata` processes).
    #[serde(default)]
    rss_anon_bytes: u64,
    #[serde(default)]
    rss_file_bytes: u64,
    queries: Vec<QueryRun>,
}

/// A cluster query's figures beyond its time.
struct ClusterQuery {
    run: QueryRun,
    batches: Vec<RecordBatch>,
    /// The best run's stages (of the query's one job).
    stages: Vec<StageMetrics>,
    /// The best run's job time as the driver measured it, ms.
    job_ms: f64,
}

// ------------------------------------------------------------------ run

/// `strata bench tpch`.
pub async fn run(a: TpchArgs) -> anyhow::Result<ExitCode> {
    if !(a.sf.is_finite() && a.sf > 0.0 && a.sf <= 1000.0) {
        bail!("--sf must be a number in (0, 1000]");
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if a.partitions == 0 {
        bail!("--partitions must be at least 1");
    }
    if a.executor_mem.is_nan() || a.executor_mem < 64.0 {
        bail!("--executor-mem must be at least 64 MiB");
    }
    if a.executor_rss_limit
        .is_some_and(|l| l.is_nan() || l < a.executor_mem)
    {
        bail!("--executor-rss-limit must be at least --executor-mem");
    }
    let queries = query_list(&a.queries)?;
    let exe =
        std::env::current_exe().context("cannot locate the strata binary to run its children")?;
    if !exe.is_file() {
        bail!(
            "the strata binary {} is gone (rebuilt or removed while running?); cannot start children",
            exe.display()
        );
    }

    let data = match &a.data {
        Some(d) => d.clone(),
        None => default_data_dir(a.sf),
    };
    let data = with_interrupt(ensure_data(&exe, a.sf, &data)).await?;

    let (work, temporary) = match &a.work_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("strata-bench-tpch-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let work = work.canonicalize()?;
    let outcome = bench(&a, &exe, &queries, &data, &work).await;
    let clean = matches!(&outcome, Ok(code) if *code == ExitCode::SUCCESS);
    if temporary && clean {
        // Executors may still be exiting (and writing) for a moment.
        for _ in 0..10 {
            if std::fs::remove_dir_all(&work).is_ok() || !work.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    } else if !clean {
        // Keep the logs (daemons', executors' sandboxes) but not the
        // shuffle and spill files.
        tokio::time::sleep(Duration::from_millis(500)).await;
        prune_work_files(&work);
        eprintln!("logs kept in {}", work.display());
    }
    outcome
}

/// Removes the executors' work directories (shuffle and spill files)
/// under the agents' sandboxes in `dir`.
fn prune_work_files(dir: &Path) {
    let Ok(agents) = std::fs::read_dir(dir) else {
        return;
    };
    for agent in agents.flatten() {
        let Ok(frameworks) = std::fs::read_dir(agent.path().join("sandboxes")) else {
            continue;
        };
        for framework in frameworks.flatten() {
            let Ok(tasks) = std::fs::read_dir(framework.path()) else {
                continue;
            };
            for task in tasks.flatten() {
                std::fs::remove_dir_all(task.path().join("work")).ok();
            }
        }
    }
}

fn query_list(given: &[usize]) -> anyhow::Result<Vec<usize>> {
    if let Some(q) = given.iter().find(|q| !(1..=22).contains(*q)) {
        bail!("--queries: there is no TPC-H query {q} (1-22)");
    }
    Ok(if given.is_empty() {
        (1..=22).collect()
    } else {
        given.to_vec()
    })
}

fn default_data_dir(sf: f64) -> PathBuf {
    let base = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("strata"))
        .unwrap_or_else(|| std::env::temp_dir().join("strata-cache"));
    base.join(format!("tpch-sf{sf}"))
}

/// Checks the data under `dir`, generating it in a child process if the
/// directory does not exist; returns its absolute path.
async fn ensure_data(exe: &Path, sf: f64, dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        eprintln!(
            "generating TPC-H data at scale factor {sf} in {} (once; reused by later runs)",
            dir.display()
        );
        let t = Instant::now();
        let mut cmd = std::process::Command::new(exe);
        die_with_parent(&mut cmd);
        let status = tokio::process::Command::from(cmd)
            .args([
                "bench",
                "tpch-worker",
                "--generate",
                "--sf",
                &sf.to_string(),
                "--data",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .with_context(|| format!("cannot start {} to generate the data", exe.display()))?;
        if !status.success() {
            bail!("generating the TPC-H data failed ({status})");
        }
        eprintln!("  generated in {:.1} s", t.elapsed().as_secs_f64());
    }
    let missing: Vec<&str> = tpch::TABLES
        .iter()
        .copied()
        .filter(|t| !dir.join(t).is_dir())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} is not a complete TPC-H data directory (missing {}); remove it to have it generated",
            dir.display(),
            missing.join(", ")
        );
    }
    if let Ok(text) = std::fs::read_to_string(dir.join(SF_MARKER))
        && let Ok(generated) = text.trim().parse::<f64>()
        && generated != sf
    {
        bail!(
            "{} holds TPC-H data at scale factor {generated}, not {sf}",
            dir.display()
        );
    }
    Ok(dir.canonicalize()?)
}

async fn bench(
    a: &TpchArgs,
    exe: &Path,
    queries: &[usize],
    data: &Path,
    work: &Path,
) -> anyhow::Result<ExitCode> {
    // DataFusion in a process of its own, the cluster's daemons as
    // children, the driver here; each query runs on one side, then on the
    // other, so that both see the same machine.
    let df_results = work.join("datafusion-results");
    std::fs::create_dir_all(&df_results)?;
    let busy_before = cpu_busy(Duration::from_secs(1));
    if busy_before > 0.1 {
        eprintln!(
            "warning: other processes keep {:.0}% of this machine's CPUs busy; timings will be noisy",
            busy_before * 100.0
        );
    }
    let machine_before = machine_cpu_seconds();
    let started = Instant::now();
    eprintln!(
        "datafusion: target_partitions {}, {} settings; data {}",
        a.partitions,
        match a.datafusion_config {
            DfConfig::Default => "default",
            DfConfig::Strata => "the cluster's",
        },
        data.display()
    );
    let mut df = with_interrupt(DfWorker::start(a, exe, data, &df_results)).await?;
    let mut run = with_interrupt(ClusterRun::start(a, exe, work, data)).await?;
    let outcome = with_interrupt(async {
        let mut cluster = Vec::new();
        let mut df_runs = Vec::new();
        for &n in queries {
            df_runs.push(df.run(n).await?);
            cluster.push(run.run_query(a, n, data).await?);
        }
        let mut report = df.finish().await?;
        report.queries = df_runs;
        Ok((report, cluster))
    })
    .await;
    let (peaks, sampled_total) = run.peaks().await;
    let live: Vec<u32> = peaks.iter().filter(|p| !p.exited).map(|p| p.pid).collect();
    let file_union = resident_file_bytes(&live);
    run.stop().await;
    let (df, cluster) = outcome?;
    let driver_pid = std::process::id();
    // CPU used by processes other than the benchmark's while it ran.
    let ours: f64 = peaks.iter().map(|p| p.cpu_s).sum::<f64>() + df.cpu_s;
    let others = (machine_cpu_seconds() - machine_before - ours).max(0.0);
    // The kernel's own threads (page-cache writeback of shuffle files…)
    // count as others too: only a share above 5% of the machine is noise.
    let capacity = started.elapsed().as_secs_f64()
        * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;

    // 3. Compare, report.
    let mut errors = Vec::new();
    let mut mismatches = Vec::new();
    let df_by_query: BTreeMap<usize, &QueryRun> = df.queries.iter().map(|q| (q.query, q)).collect();
    let mut matched = BTreeMap::new();
    for c in &cluster {
        let n = c.run.query;
        let d = df_by_query.get(&n);
        if let Some(e) = d.and_then(|d| d.error.as_ref()) {
            errors.push(format!("q{n} (datafusion): {e}"));
        }
        if let Some(e) = &c.run.error {
            errors.push(format!("q{n} (strata): {e}"));
        }
        if c.run.error.is_some() || d.is_none_or(|d| d.error.is_some()) {
            continue;
        }
        let expected = read_ipc(&df_results.join(format!("q{n}.arrow")))
            .with_context(|| format!("reading DataFusion's result of q{n}"))?;
        match same_rows(&c.batches, &expected) {
            Ok(()) => {
                matched.insert(n, true);
            }
            Err(e) => {
                matched.insert(n, false);
                mismatches.push(format!("q{n}: {e}"));
            }
        }
    }
    let report = Report {
        a,
        queries,
        df: &df,
        cluster: &cluster,
        peaks: &peaks,
        sampled_total,
        file_union,
        others_cpu_s: others,
        driver_pid,
        matched: &matched,
    };
    report.print()?;
    if others > (0.05 * capacity).max(1.0) {
        eprintln!(
            "warning: other processes (or the kernel's threads, e.g. writing shuffle files back) used {others:.1} CPU-seconds ({:.0}% of the machine) while the benchmark ran; timings may be noisy",
            100.0 * others / capacity
        );
    }
    if a.stages {
        let mut out = std::io::stdout().lock();
        for c in &cluster {
            writeln!(
                out,
                "\nq{}: {:.0} ms end to end, job {:.0} ms",
                c.run.query, c.run.best_ms, c.job_ms
            )?;
            for l in stage_lines(&c.stages) {
                writeln!(out, "  {l}")?;
            }
        }
    }
    if let Some(path) = &a.json {
        let v = report.json(&errors, &mismatches);
        std::fs::write(path, serde_json::to_vec_pretty(&v)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    for m in &mismatches {
        eprintln!("error: results differ from DataFusion's: {m}");
    }
    Ok(if errors.is_empty() && mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs `f`, or fails when this process is interrupted (SIGINT, SIGTERM);
/// dropping `f` stops what it started.
async fn with_interrupt<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let why = tokio::select! {
        r = f => return r,
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = terminated => "terminated",
    };
    // End a progress line in flight.
    eprintln!();
    bail!(why)
}

#[cfg(test)]
mod tests {
    use super::super::procfs::{cpu_seconds, free_disk, parent_pid, peak_rss};
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        assert!(peak_rss(std::process::id()).is_some_and(|b| b > 0));
        assert!(parent_pid(std::process::id()).is_some());
        assert!(cpu_seconds(std::process::id()).is_some());
        assert!(free_disk(Path::new("/")).is_some_and(|b| b > 0));
        assert!(machine_cpu_seconds() > 0.0);
        assert!(query_list(&[23]).is_err());
        assert_eq!(query_list(&[]).unwrap().len(), 22);
        assert!(default_data_dir(0.1).ends_with("tpch-sf0.1"));
        assert!(default_data_dir(1.0).ends_with("tpch-sf1"));
    }
}
