//! The DataFusion side of the bench: the hidden worker process (`strata
//! bench tpch-worker`), which generates the data or runs queries in
//! single-process DataFusion, and [`DfWorker`], its handle in the bench.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use strata_framework::tpch;

use super::super::procfs::{cpu_seconds, peak_rss, rss_kind};
use super::cluster::die_with_parent;
use super::{DfConfig, QueryRun, SF_MARKER, TpchArgs, WorkerReport};

/// Arguments of the hidden worker (`strata bench tpch-worker`): either
/// generates the data (`--generate`), or runs queries in single-process
/// DataFusion: it reads query numbers on stdin, one a line, and answers
/// each with a line of JSON (its times) on stdout; at the end of its
/// input it prints a last line of JSON (its pid, peak memory and CPU time)
/// and exits.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Directory of the Parquet data.
    #[arg(long)]
    data: PathBuf,
    /// Generate the data at `--sf` into `--data` (which must not exist)
    /// and exit.
    #[arg(long)]
    generate: bool,
    /// Scale factor (with `--generate`).
    #[arg(long, default_value_t = 1.0)]
    sf: f64,
    /// DataFusion's `target_partitions`.
    #[arg(long, default_value_t = 2)]
    partitions: usize,
    /// Timed runs per query after the warm-up run.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Where to write each query's rows (`q{N}.arrow`, Arrow IPC files).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Plan with the cluster's settings instead of DataFusion's defaults.
    #[arg(long)]
    strata_config: bool,
}

/// The DataFusion worker process.
pub(super) struct DfWorker {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl DfWorker {
    pub(super) async fn start(
        a: &TpchArgs,
        exe: &Path,
        data: &Path,
        results: &Path,
    ) -> anyhow::Result<DfWorker> {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = std::process::Command::new(exe);
        die_with_parent(&mut cmd);
        let mut child = tokio::process::Command::from(cmd)
            .args(["bench", "tpch-worker", "--data"])
            .arg(data)
            .arg("--results")
            .arg(results)
            .args(["--partitions", &a.partitions.to_string()])
            .args(["--runs", &a.runs.to_string()])
            .args(if a.datafusion_config == DfConfig::Strata {
                &["--strata-config"][..]
            } else {
                &[]
            })
            .env("STRATA_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the DataFusion worker ({})", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the worker's stdout")?;
        Ok(DfWorker {
            child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        })
    }

    /// Its next line of JSON.
    async fn read<T: serde::de::DeserializeOwned>(&mut self) -> anyhow::Result<T> {
        match self.lines.next_line().await? {
            Some(line) => serde_json::from_str(&line)
                .with_context(|| format!("the DataFusion worker printed {line:?}")),
            None => {
                let status = self.child.wait().await?;
                bail!("the DataFusion worker exited ({status})")
            }
        }
    }

    /// Runs query `n` there.
    pub(super) async fn run(&mut self, n: usize) -> anyhow::Result<QueryRun> {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().context("the worker's stdin")?;
        stdin.write_all(format!("{n}\n").as_bytes()).await?;
        stdin.flush().await?;
        self.read().await
    }

    /// Ends it; returns its report (without queries).
    pub(super) async fn finish(mut self) -> anyhow::Result<WorkerReport> {
        drop(self.stdin.take());
        let report = self.read().await?;
        let status = self.child.wait().await?;
        if !status.success() {
            bail!("the DataFusion worker failed ({status})");
        }
        Ok(report)
    }
}

/// The hidden worker: generates the data, or runs the queries in
/// single-process DataFusion.
pub async fn worker(a: WorkerArgs) -> anyhow::Result<ExitCode> {
    if a.generate {
        generate(a.sf, &a.data).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if a.runs == 0 || a.partitions == 0 {
        bail!("--runs and --partitions must be at least 1");
    }
    // DataFusion's defaults, but for the partitions (or the cluster's
    // settings, to compare).
    let config = if a.strata_config {
        strata_executor::engine::session_config(a.partitions)
    } else {
        SessionConfig::new().with_target_partitions(a.partitions)
    };
    let ctx = SessionContext::new_with_config(config);
    tpch::register_parquet(&ctx, &a.data).await?;
    loop {
        // Blocking reads of stdin, one line at a time, off the runtime.
        let (read, line) = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|n| (n, line))
        })
        .await??;
        if read == 0 {
            break;
        }
        let n: usize = line
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=22).contains(n))
            .with_context(|| format!("not a TPC-H query number: {:?}", line.trim()))?;
        let q = df_run(&ctx, n, a.runs, a.results.as_deref()).await?;
        println!("{}", serde_json::to_string(&q)?);
    }
    let me = std::process::id();
    let report = WorkerReport {
        pid: me,
        peak_rss_bytes: peak_rss(me).unwrap_or(0),
        cpu_s: cpu_seconds(me).unwrap_or(0.0),
        rss_anon_bytes: rss_kind(me, "RssAnon:"),
        rss_file_bytes: rss_kind(me, "RssFile:"),
        queries: Vec::new(),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// Runs query `n` in DataFusion: a warm-up run, then `runs` timed runs;
/// writes its rows under `results`.
async fn df_run(
    ctx: &SessionContext,
    n: usize,
    runs: usize,
    results: Option<&Path>,
) -> anyhow::Result<QueryRun> {
    let mut q = QueryRun {
        query: n,
        ..QueryRun::default()
    };
    let mut last = None;
    for i in 0..=runs {
        let label = if i == 0 {
            "warm-up".to_owned()
        } else {
            format!("run {i}/{runs}")
        };
        eprint!("datafusion q{n:<2} {label} …");
        let t = Instant::now();
        match df_query(ctx, n).await {
            Ok(r) => {
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                eprintln!(" {ms:.0} ms");
                if i == 0 {
                    q.warmup_ms = ms;
                } else {
                    q.runs_ms.push(ms);
                    if q.runs_ms.len() == 1 || ms < q.best_ms {
                        q.best_ms = ms;
                    }
                }
                last = Some(r);
            }
            Err(e) => {
                eprintln!(" failed");
                q.error = Some(format!("{e:#}"));
                last = None;
                break;
            }
        }
    }
    if let (Some((schema, batches)), Some(dir)) = (last, results) {
        q.rows = batches.iter().map(RecordBatch::num_rows).sum();
        write_ipc(&dir.join(format!("q{n}.arrow")), &schema, &batches)?;
    }
    Ok(q)
}

/// Runs every statement of query `n`; returns its query statement's rows.
async fn df_query(ctx: &SessionContext, n: usize) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut result = None;
    for sql in tpch::statements(n) {
        let df = ctx.sql(&sql).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        let lower = sql.trim_start().to_ascii_lowercase();
        if lower.starts_with("select") || lower.starts_with("with") {
            result = Some((schema, batches));
        }
    }
    result.ok_or_else(|| anyhow::anyhow!("q{n} has no query statement"))
}

/// Generates the data into `dir` through a temporary sibling directory, so
/// that `dir` exists only when complete.
async fn generate(sf: f64, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    let name = dir
        .file_name()
        .context("--data must name a directory")?
        .to_string_lossy()
        .into_owned();
    let partial = dir.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let p = partial.clone();
    let r = tokio::task::spawn_blocking(move || {
        tpch::generate_parquet(sf, &p)?;
        std::fs::write(p.join(SF_MARKER), format!("{sf}\n"))
            .map_err(|e| datafusion::common::DataFusionError::External(Box::new(e)))
    })
    .await?;
    if let Err(e) = r {
        std::fs::remove_dir_all(&partial).ok();
        return Err(e).context("generating TPC-H data");
    }
    std::fs::rename(&partial, dir)
        .with_context(|| format!("cannot move {} to {}", partial.display(), dir.display()))?;
    Ok(())
}

fn write_ipc(path: &Path, schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<()> {
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = FileWriter::try_new(f, schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(())
}

pub(super) fn read_ipc(path: &Path) -> anyhow::Result<Vec<RecordBatch>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let r = FileReader::try_new(f, None)?;
    Ok(r.collect::<Result<Vec<_>, _>>()?)
}
