//! `strata submit`: runs a job with its driver as a task on the cluster
//! (Spark's cluster deploy mode on Mesos), and the hidden `strata
//! job-driver` that is that task.
//!
//! * The CLI subscribes as a framework named `strata-job:<NAME>`, launches
//!   one task, the job's driver (`strata job-driver …`, task id = the job's
//!   id), closes its subscription **without** tearing the framework down,
//!   and exits (or, with `--wait`, follows the job over HTTP).
//! * The driver takes the framework over (subscribing with its id, as a
//!   failed-over scheduler does), launches its executors into it, runs the
//!   job, and records its progress in `job.json` in its sandbox
//!   ([`JobFile`]). When the job ends it tears the framework down, which
//!   ends the executors and itself.
//! * A job is a SQL script (`FILE.sql`), or a packaged job of
//!   `strata_jobs` by name with its arguments (`wordcount INPUT`), which
//!   the driver runs with `strata job-driver --job NAME -- ARGS…`.
//! * A SQL script reaches the driver in its task's environment
//!   (`STRATA_JOB_SQL`, split over `STRATA_JOB_SQL_1`, `_2`, … as one
//!   variable may hold 128 KiB at most); the driver writes it to
//!   `sql.sql` in its sandbox and runs it from there.
//! * With `--supervise`, the task's command is `strata job-driver
//!   --supervise …`, which runs the driver as a child process and restarts
//!   it (up to 3 times, with backoff) when it dies before the job has
//!   ended; the restarted driver kills the executors of its predecessor and
//!   runs the job again.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata_framework::driver::dag::StageMetrics;
use strata_framework::driver::{ClusterSource, Driver, DriverConfig, ExecutorSource};
use strata_framework::session::{Prepared, Session};
use strata_proto::pb::TaskState;
use strata_proto::resources::Resources;
use strata_sdk::{
    Ask, Event, FrameworkConfig, FrameworkId, Role, Scheduler, SchedulerConfig, TaskBuilder, TaskId,
};
use tokio::signal::unix::{SignalKind, signal};

use super::batch::ExecutorOpts;
use super::jobs::{self, JOB_FILE, JOB_PREFIX, JobFile, JobStatus, unix_ms};
use super::output::{self, Format};
use super::{ClientArgs, parse_duration, parse_mib};

/// The environment variable that carries a SQL job's script to its driver.
pub const SQL_ENV: &str = "STRATA_JOB_SQL";

/// The largest SQL script `strata submit` accepts.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// One environment variable's share of the script (Linux refuses to
/// `execve` a single variable over 128 KiB).
const SQL_CHUNK_BYTES: usize = 64 << 10;

/// Restarts of a supervised driver at most.
const MAX_RESTARTS: u32 = 3;

/// Arguments of `strata submit`.
#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    executors: ExecutorOpts,
    /// CPUs of the job's driver task.
    #[arg(long, default_value_t = 0.5)]
    driver_cpus: f64,
    /// Memory of the job's driver task, MiB or with a unit (`1g`).
    #[arg(long, default_value = "512", value_parser = parse_mib)]
    driver_mem: f64,
    /// Follow the job until it ends, print its results, and exit 0 if it succeeded, 1 if not.
    #[arg(long)]
    wait: bool,
    /// Restart the driver (up to 3 times, with backoff) if it dies before the job has ended.
    #[arg(long)]
    supervise: bool,
    /// The job's name (default: the SQL file's stem, or the packaged job's name).
    #[arg(long)]
    name: Option<String>,
    /// Output format of the job's result sets (in its driver's stdout).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// (tests) The job framework's failover timeout: how long its executors outlive a dead driver.
    #[arg(long, hide = true, default_value = "60s", value_parser = parse_duration)]
    failover_timeout: Duration,
    /// (tests) The executors' `--driver-timeout`.
    #[arg(long, hide = true, value_parser = parse_duration)]
    executor_driver_timeout: Option<Duration>,
    /// The job: a SQL script (`FILE.sql`) or the name of a packaged job.
    #[arg(value_name = "NAME|FILE.sql")]
    job: String,
    /// The packaged job's arguments (e.g. `wordcount INPUT`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

/// Arguments of the hidden `strata job-driver` (a submitted job's driver,
/// started by an agent as the job's task, in its sandbox).
#[derive(clap::Args, Debug)]
pub struct JobDriverArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    executors: ExecutorOpts,
    /// The job's id (its task id).
    #[arg(long)]
    job_id: String,
    /// The job's framework, to take over.
    #[arg(long)]
    framework_id: String,
    /// The job's name.
    #[arg(long)]
    name: String,
    /// The SQL script; written from `STRATA_JOB_SQL` first if it does not exist.
    #[arg(long, required_unless_present = "job", conflicts_with = "job")]
    sql_file: Option<PathBuf>,
    /// The packaged job to run (its arguments follow `--`).
    #[arg(long)]
    job: Option<String>,
    /// The packaged job's arguments.
    #[arg(last = true)]
    job_args: Vec<String>,
    /// Output format of result sets.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Run the driver as a child process, restarting it if it dies before the job has ended.
    #[arg(long)]
    supervise: bool,
    /// The framework's failover timeout.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    failover_timeout: Duration,
    /// The executors' `--driver-timeout`.
    #[arg(long, value_parser = parse_duration)]
    executor_driver_timeout: Option<Duration>,
}

/// What a submission runs.
enum JobSpec {
    /// A SQL script and its default name.
    Sql { text: String, name: String },
    /// A packaged job (`strata_jobs`), by name.
    Packaged(&'static strata_jobs::Job),
}

fn resolve_job(arg: &str, args: &[String]) -> anyhow::Result<JobSpec> {
    if arg.ends_with(".sql") {
        if !args.is_empty() {
            bail!(
                "a SQL job takes no arguments (got {}); options go before the script",
                args.join(" ")
            );
        }
        let path = Path::new(arg);
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {arg}"))?;
        if bytes.len() > MAX_SQL_BYTES {
            bail!(
                "{arg} is {} bytes; a SQL job's script may hold at most {MAX_SQL_BYTES} bytes (1 MiB): \
                 read large data from tables (CREATE EXTERNAL TABLE … LOCATION) instead",
                bytes.len()
            );
        }
        let text =
            String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{arg} is not UTF-8 text"))?;
        if text.contains('\0') {
            bail!("{arg} contains a NUL byte");
        }
        if text.trim().is_empty() {
            bail!("{arg} is empty");
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sql".into());
        return Ok(JobSpec::Sql { text, name });
    }
    if let Some(job) = strata_jobs::find(arg) {
        return Ok(JobSpec::Packaged(job));
    }
    if arg.contains("://") || arg.contains('/') || Path::new(arg).is_file() {
        bail!(
            "{arg:?}: running a job binary or a URL is not supported yet; \
             give a SQL script (FILE.sql) or the name of a packaged job"
        );
    }
    let known: Vec<String> = strata_jobs::registry()
        .iter()
        .map(|j| format!("{} {} ({})", j.name, j.usage, j.description))
        .collect();
    let known = if known.is_empty() {
        "none".to_owned()
    } else {
        known.join("; ")
    };
    bail!("unknown job {arg:?}; packaged jobs: {known}; or give a SQL script (FILE.sql)")
}

/// `job-<12 hex digits>`.
fn new_job_id() -> String {
    let r = strata_proto::ids::random_id("job");
    r.chars().take(4 + 12).collect()
}

/// The script as task environment variables.
fn sql_env(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() || out.is_empty() {
        let mut cut = rest.len().min(SQL_CHUNK_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let key = if out.is_empty() {
            SQL_ENV.to_owned()
        } else {
            format!("{SQL_ENV}_{}", out.len())
        };
        out.push((key, rest[..cut].to_owned()));
        rest = &rest[cut..];
    }
    out
}

/// The script from the task's environment.
fn sql_from_env() -> Option<String> {
    let mut text = std::env::var(SQL_ENV).ok()?;
    for i in 1.. {
        match std::env::var(format!("{SQL_ENV}_{i}")) {
            Ok(part) => text.push_str(&part),
            Err(_) => break,
        }
    }
    Some(text)
}

/// Object-store credentials and log settings the driver (and its
/// executors) inherit.
fn forwarded_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k == "STRATA_LOG" || k == "RUST_LOG")
        .collect()
}

fn format_name(f: Format) -> String {
    clap::ValueEnum::to_possible_value(&f)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_else(|| "table".into())
}

fn duration_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// `strata submit`.
pub async fn run(a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let spec = resolve_job(&a.job, &a.args)?;
    let name = a.name.clone().unwrap_or_else(|| match &spec {
        JobSpec::Sql { name, .. } => name.clone(),
        JobSpec::Packaged(job) => job.name.to_owned(),
    });
    if name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    if !(a.driver_cpus.is_finite() && a.driver_cpus > 0.0) {
        bail!("--driver-cpus must be a number > 0");
    }
    if a.executors.executors == 0 {
        bail!("--executors must be at least 1");
    }
    if !(a.executors.executor_cpus.is_finite() && a.executors.executor_cpus > 0.0) {
        bail!("--executor-cpus must be a number > 0");
    }
    let target = a.client.target();
    let token = target.token.as_deref();
    let wait = a.executors.executor_wait;
    let driver_res = Resources::new(a.driver_cpus, a.driver_mem);
    super::run::check_capacity(&target.address, token, &driver_res, wait).await?;
    let executor_res = Resources::new(a.executors.executor_cpus, a.executors.executor_mem);
    super::run::check_capacity(&target.address, token, &executor_res, wait).await?;

    let job_id = new_job_id();
    let fw_name = format!("{JOB_PREFIX}{name}");
    let class = a.executors.class.clone();
    let mut fw = FrameworkConfig::new(fw_name.clone());
    fw.role = Role::new(a.executors.role.clone());
    fw.default_class = class.clone();
    fw.failover_timeout = a.failover_timeout;
    let mut cfg = SchedulerConfig::new(target.address.clone(), fw);
    cfg.token = target.token.clone();
    cfg.demand = vec![Ask::new(class.clone(), driver_res.clone(), 1)];
    // The driver takes the framework over: never take it back.
    cfg.reconnect = false;
    let (handle, mut events) = Scheduler::subscribe(cfg)
        .await
        .context("subscribing the job's framework")?;
    let fid = handle.framework_id();

    let program = std::env::current_exe().context("locating the strata binary")?;
    let mut args: Vec<String> = vec!["job-driver".into()];
    if a.supervise {
        args.push("--supervise".into());
    }
    let e = &a.executors;
    args.extend([
        "--job-id".into(),
        job_id.clone(),
        "--framework-id".into(),
        fid.to_string(),
        "--name".into(),
        name.clone(),
        "--manager".into(),
        target.address.clone(),
        "--executors".into(),
        e.executors.to_string(),
        "--executor-cpus".into(),
        e.executor_cpus.to_string(),
        "--executor-mem".into(),
        e.executor_mem.to_string(),
        "--role".into(),
        e.role.clone(),
        "--class".into(),
        e.class.clone(),
        "--executor-wait".into(),
        duration_arg(e.executor_wait),
        "--format".into(),
        format_name(a.format),
        "--failover-timeout".into(),
        duration_arg(a.failover_timeout),
    ]);
    match &spec {
        JobSpec::Sql { .. } => args.extend(["--sql-file".into(), "sql.sql".into()]),
        JobSpec::Packaged(job) => args.extend(["--job".into(), job.name.to_owned()]),
    }
    if let Some(p) = e.partitions {
        args.extend(["--partitions".into(), p.to_string()]);
    }
    if let Some(t) = a.executor_driver_timeout {
        args.extend(["--executor-driver-timeout".into(), duration_arg(t)]);
    }
    if let JobSpec::Packaged(_) = &spec {
        args.push("--".into());
        args.extend(a.args.iter().cloned());
    }
    let task_id = TaskId::new(job_id.clone());
    let mut task = TaskBuilder::exec(
        task_id.clone(),
        program.to_string_lossy().into_owned(),
        args,
    )
    .name(fw_name.clone())
    .resources(driver_res.clone())
    .class(class.clone())
    .kill_grace(Duration::from_secs(5));
    if let Some(u) = strata_framework::driver::cluster::current_user() {
        task = task.user(u);
    }
    let script = match &spec {
        JobSpec::Sql { text, .. } => sql_env(text),
        JobSpec::Packaged(_) => Vec::new(),
    };
    for (k, v) in script.into_iter().chain(forwarded_env()) {
        task = task.env(k, v);
    }
    if let Some(t) = &target.token {
        task = task.env("STRATA_TOKEN", t.clone());
    }
    let mut task = Some(task.build());

    // Place the driver, and wait until it runs (or has taken over).
    let placed_by = Instant::now() + wait;
    let mut launched = false;
    let outcome: anyhow::Result<()> = loop {
        let next = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
        let event = match next {
            Err(_) => {
                if Instant::now() >= placed_by {
                    break Err(if launched {
                        anyhow::anyhow!("the job's driver did not start within {wait:?}")
                    } else {
                        anyhow::anyhow!(
                            "the job's driver ({driver_res}) could not be placed within {wait:?} (the cluster may be full)"
                        )
                    });
                }
                continue;
            }
            // Closed: the driver has subscribed in our place.
            Ok(None) | Ok(Some(Event::Disconnected { .. })) if launched => break Ok(()),
            Ok(None) => break Err(anyhow::anyhow!("the manager closed the subscription")),
            Ok(Some(e)) => e,
        };
        match event {
            Event::Offers(offers) => {
                let mut failed = None;
                for offer in offers {
                    if task.is_some() && offer.fits(&driver_res) {
                        let t = task.take().into_iter().collect();
                        match handle.launch(offer.id.clone(), t).await {
                            Ok(()) => {
                                launched = true;
                                let _ = handle.suppress().await;
                            }
                            Err(e) => failed = Some(e),
                        }
                    } else {
                        let _ = handle
                            .decline(vec![offer.id.clone()], Some(Duration::from_secs(30)))
                            .await;
                    }
                }
                if let Some(e) = failed {
                    break Err(anyhow::Error::new(e).context("launching the job's driver"));
                }
            }
            Event::Update(s) if s.task_id == task_id => {
                if s.state == TaskState::TaskRunning {
                    break Ok(());
                }
                if s.is_terminal() {
                    let msg = if s.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", s.message)
                    };
                    break Err(anyhow::anyhow!(
                        "the job's driver task ended {} ({}){msg}",
                        s.state.as_str_name(),
                        s.reason.as_str_name()
                    ));
                }
            }
            Event::Error(e) => eprintln!("warning: {e}"),
            _ => {}
        }
    };
    if let Err(e) = outcome {
        let _ = handle.teardown().await;
        return Err(e);
    }
    // Close the subscription without tearing the framework down: the
    // driver has it (or takes it within its failover timeout).
    drop(events);
    drop(handle);
    if !a.wait {
        println!("{job_id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("submitted job {job_id} (framework {fid}); waiting for it to end");
    let status = follow(&target.address, token, &job_id).await?;
    print_stdout(&status, token).await;
    match status.state.as_str() {
        "succeeded" => Ok(ExitCode::SUCCESS),
        state => {
            eprintln!(
                "error: job {job_id} {state}{}",
                status
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// Polls the job's state over HTTP until it has ended.
async fn follow(address: &str, token: Option<&str>, job_id: &str) -> anyhow::Result<JobStatus> {
    let mut failing_since: Option<Instant> = None;
    loop {
        match jobs::find(address, token, job_id).await {
            Ok(Some(s)) => {
                failing_since = None;
                if s.is_terminal() {
                    return Ok(s);
                }
            }
            Ok(None) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(30) {
                    bail!("the manager no longer knows job {job_id}");
                }
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    return Err(e.context(format!("following job {job_id}")));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Prints the driver's stdout (the job's results) from its sandbox.
async fn print_stdout(status: &JobStatus, token: Option<&str>) {
    let Some(agent) = &status.agent_address else {
        eprintln!(
            "warning: the agent of job {} is gone; its output cannot be read",
            status.id
        );
        return;
    };
    let mut offset = 0usize;
    let mut out = std::io::stdout().lock();
    loop {
        let file = format!("stdout?offset={offset}");
        let Some(bytes) =
            jobs::read_sandbox_file(agent, &status.framework_id, &status.id, &file, token).await
        else {
            if offset == 0 {
                eprintln!("warning: cannot read the output of job {}", status.id);
            }
            break;
        };
        if bytes.is_empty() {
            break;
        }
        offset += bytes.len();
        let _ = out.write_all(&bytes);
    }
    let _ = out.flush();
}

// ---------------------------------------------------------------- job-driver

/// `strata job-driver`.
pub async fn job_driver(a: JobDriverArgs) -> anyhow::Result<ExitCode> {
    if a.supervise {
        supervise(a).await
    } else {
        drive(a).await
    }
}

/// `job.json`, kept up to date and written atomically.
struct Recorder {
    path: PathBuf,
    file: Mutex<JobFile>,
}

impl Recorder {
    /// Continues the record in `path` (a restarted driver keeps the start
    /// time and the restarts), or starts one.
    fn open(path: PathBuf, id: &str, name: &str) -> Recorder {
        let mut f: JobFile = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        f.id = id.to_owned();
        f.name = name.to_owned();
        if f.started_unix_ms == 0 {
            f.started_unix_ms = unix_ms();
        }
        f.state = "running".into();
        f.ended_unix_ms = None;
        f.error = None;
        f.stages_done = 0;
        f.stages = 0;
        f.tasks_done = 0;
        f.tasks = 0;
        let r = Recorder {
            path,
            file: Mutex::new(f.clone()),
        };
        r.write(&f);
        r
    }

    fn write(&self, f: &JobFile) {
        if let Err(e) = write_job_file(&self.path, f) {
            eprintln!("job-driver: cannot write {}: {e}", self.path.display());
        }
    }

    fn update(&self, change: impl FnOnce(&mut JobFile)) {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let before = f.clone();
        change(&mut f);
        if *f != before {
            self.write(&f);
        }
    }

    /// Records the outcome, unless one is recorded already.
    fn finish(&self, state: &str, error: Option<String>) {
        self.update(|f| {
            if !f.is_terminal() {
                f.state = state.into();
                f.error = error;
                f.ended_unix_ms = Some(unix_ms());
            }
        });
    }

    fn state(&self) -> String {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state
            .clone()
    }
}

/// Writes `job.json` atomically (temporary file + rename).
fn write_job_file(path: &Path, f: &JobFile) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(f).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

fn read_job_file(path: &Path) -> Option<JobFile> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// The script: from `--sql-file`, written first from the environment.
fn load_sql(path: &Path) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(text);
    }
    let text = sql_from_env().with_context(|| {
        format!(
            "no SQL script: {} does not exist and {SQL_ENV} is not set",
            path.display()
        )
    })?;
    let tmp = path.with_extension("sql.tmp");
    std::fs::write(&tmp, &text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(text)
}

/// The driver proper: takes the framework over, runs the script, records
/// the outcome, tears the framework down.
async fn drive(a: JobDriverArgs) -> anyhow::Result<ExitCode> {
    let recorder = Arc::new(Recorder::open(PathBuf::from(JOB_FILE), &a.job_id, &a.name));
    // Killed (a cancellation tears the framework down, and the agent
    // signals its tasks): record it, unless the job had ended.
    {
        let recorder = recorder.clone();
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        tokio::spawn(async move {
            term.recv().await;
            recorder.finish(
                "cancelled",
                Some("the driver was stopped (SIGTERM): the job was cancelled".into()),
            );
            let _ = std::io::stdout().flush();
            std::process::exit(if recorder.state() == "succeeded" {
                0
            } else {
                1
            });
        });
    }
    let result = drive_inner(&a, &recorder).await;
    let _ = std::io::stdout().flush();
    match result {
        Ok(driver) => {
            recorder.finish("succeeded", None);
            driver.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Err((driver, e)) => {
            let message = format!("{e:#}");
            eprintln!("error: {message}");
            // A job whose framework was torn down under it was cancelled.
            let target = a.client.target();
            let removed = jobs::fetch_state(&target.address, target.token.as_deref())
                .await
                .is_ok_and(|s| s.frameworks.iter().all(|f| f.id != a.framework_id));
            if removed {
                recorder.finish(
                    "cancelled",
                    Some("the job's framework was torn down: the job was cancelled".into()),
                );
            } else {
                recorder.finish("failed", Some(message));
            }
            // End the framework (and so the executors and this task).
            match driver {
                Some(d) => d.shutdown().await,
                None if !removed => {
                    let _ = jobs::teardown_framework(
                        &target.address,
                        target.token.as_deref(),
                        &a.framework_id,
                        &format!("{JOB_PREFIX}{}", a.name),
                        &a.executors.role,
                    )
                    .await;
                }
                None => {}
            }
            Ok(ExitCode::from(1))
        }
    }
}

type DriveError = (Option<Arc<Driver>>, anyhow::Error);

async fn drive_inner(
    a: &JobDriverArgs,
    recorder: &Arc<Recorder>,
) -> Result<Arc<Driver>, DriveError> {
    // What to run, checked before anything starts.
    let work = match (&a.job, &a.sql_file) {
        (Some(name), _) => match strata_jobs::find(name) {
            Some(job) => Work::Packaged(job),
            None => return Err((None, anyhow::anyhow!("unknown packaged job {name:?}"))),
        },
        (None, Some(path)) => Work::Sql(load_sql(path).map_err(|e| (None, e))?),
        (None, None) => return Err((None, anyhow::anyhow!("give --sql-file or --job"))),
    };
    let target = a.client.target();
    let token = target.token.as_deref();
    kill_leftovers(a, &target.address, token)
        .await
        .map_err(|e| (None, e.context("cleaning up after the previous driver")))?;
    let e = &a.executors;
    if e.executors == 0 || !(e.executor_cpus.is_finite() && e.executor_cpus > 0.0) {
        return Err((
            None,
            anyhow::anyhow!("--executors and --executor-cpus must be > 0"),
        ));
    }
    let program = std::env::current_exe()
        .context("locating the strata binary")
        .map_err(|e| (None, e))?;
    let mut source = ClusterSource::new(target.address.clone(), program);
    source.token = target.token.clone();
    source.name = format!("{JOB_PREFIX}{}", a.name);
    source.role = e.role.clone();
    source.class = e.class.clone();
    source.env = forwarded_env();
    source.failover_timeout = a.failover_timeout;
    source.framework_id = Some(a.framework_id.clone());
    if let Some(t) = a.executor_driver_timeout {
        source
            .program_args
            .extend(["--driver-timeout".into(), duration_arg(t)]);
    }
    let mut config = DriverConfig::new(ExecutorSource::Cluster(Box::new(source)));
    config.executors.min = e.executors;
    config.executors.max = e.executors;
    config.executors.cpus = e.executor_cpus;
    config.executors.mem_mib = e.executor_mem;
    config.executor_wait = e.executor_wait;
    let driver = Arc::new(
        Driver::start(config)
            .await
            .context("starting the driver")
            .map_err(|e| (None, e))?,
    );
    let fail = |e: anyhow::Error| (Some(driver.clone()), e);
    driver
        .wait_for_executors(e.executors, e.executor_wait)
        .await
        .context("starting executors")
        .map_err(fail)?;
    let session = Session::new(driver.clone(), e.partitions())
        .map_err(anyhow::Error::from)
        .map_err(fail)?;
    match work {
        Work::Sql(sql) => run_statements(&session, &sql, a.format, recorder)
            .await
            .map_err(fail)?,
        Work::Packaged(job) => {
            let batches = (job.run)(&session, &a.job_args)
                .await
                .map_err(|e| anyhow::anyhow!(e).context(format!("job {}", job.name)))
                .map_err(fail)?;
            if let Some(first) = batches.first() {
                let mut out = std::io::stdout().lock();
                output::write(&mut out, a.format, &first.schema(), &batches)
                    .and_then(|()| out.flush().map_err(anyhow::Error::from))
                    .map_err(fail)?;
            }
        }
    }
    Ok(driver)
}

/// What a driver runs.
enum Work {
    /// A SQL script.
    Sql(String),
    /// A packaged job, with `--`'s arguments.
    Packaged(&'static strata_jobs::Job),
}

/// Stages done, stages, tasks done, tasks.
#[derive(Clone, Copy, Default)]
struct Counts(u64, u64, u64, u64);

impl Counts {
    fn of(stages: &[StageMetrics]) -> Counts {
        Counts(
            stages.iter().filter(|s| s.done >= s.tasks).count() as u64,
            stages.len() as u64,
            stages.iter().map(|s| u64::from(s.done.min(s.tasks))).sum(),
            stages.iter().map(|s| u64::from(s.tasks)).sum(),
        )
    }

    fn plus(self, o: Counts) -> Counts {
        Counts(self.0 + o.0, self.1 + o.1, self.2 + o.2, self.3 + o.3)
    }

    fn record(self, f: &mut JobFile) {
        f.stages_done = self.0;
        f.stages = self.1;
        f.tasks_done = self.2;
        f.tasks = self.3;
    }
}

/// Runs every statement, printing result sets on stdout and recording
/// progress (summed over the script's queries).
async fn run_statements(
    session: &Session,
    sql: &str,
    format: Format,
    recorder: &Arc<Recorder>,
) -> anyhow::Result<()> {
    let statements = session.parse(sql)?;
    let mut done = Counts::default();
    for statement in statements {
        match session.prepare(statement).await? {
            Prepared::Done => {}
            Prepared::Rows(schema, batches) => {
                let mut out = std::io::stdout().lock();
                output::write(&mut out, format, &schema, &batches)?;
                out.flush()?;
            }
            Prepared::Job(job) => {
                let mut rx = job.progress();
                let rec = recorder.clone();
                let watcher = tokio::spawn(async move {
                    loop {
                        let now = Counts::of(&rx.borrow_and_update().stages);
                        rec.update(|f| done.plus(now).record(f));
                        if rx.changed().await.is_err() {
                            break;
                        }
                    }
                });
                let result = job.result().await;
                watcher.abort();
                let out = result?;
                done = done.plus(Counts::of(&out.stages));
                recorder.update(|f| done.record(f));
                let mut stdout = std::io::stdout().lock();
                output::write(&mut stdout, format, &out.schema, &out.batches)?;
                stdout.flush()?;
            }
        }
    }
    Ok(())
}

/// A restarted driver: kills the tasks its predecessor left in the
/// framework (executors, whose task ids the new driver reuses) and waits
/// until the manager has forgotten them.
async fn kill_leftovers(
    a: &JobDriverArgs,
    address: &str,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let leftovers = |s: &strata_manager::master::view::StateView| -> Vec<(String, String)> {
        s.tasks
            .iter()
            .filter(|t| t.framework_id == a.framework_id && t.id != a.job_id)
            .map(|t| (t.id.clone(), t.agent_id.clone()))
            .collect()
    };
    let state = jobs::fetch_state(address, token).await?;
    let left = leftovers(&state);
    if left.is_empty() {
        return Ok(());
    }
    eprintln!(
        "job-driver: killing {} task(s) left by a previous driver",
        left.len()
    );
    let mut fw = FrameworkConfig::new(format!("{JOB_PREFIX}{}", a.name));
    fw.role = Role::new(a.executors.role.clone());
    fw.default_class = a.executors.class.clone();
    fw.failover_timeout = a.failover_timeout;
    fw.framework_id = Some(FrameworkId::new(a.framework_id.clone()));
    let mut cfg = SchedulerConfig::new(address, fw);
    cfg.token = token.map(str::to_owned);
    cfg.suppressed = true;
    cfg.reconnect = false;
    let (handle, mut events) = Scheduler::subscribe(cfg)
        .await
        .context("taking the framework over")?;
    for (task, agent) in &left {
        let agent = (!agent.is_empty()).then(|| strata_sdk::AgentId::new(agent.clone()));
        if let Err(e) = handle.kill(TaskId::new(task.clone()), agent).await {
            eprintln!("job-driver: cannot kill {task}: {e}");
        }
    }
    // Read (and so acknowledge) the updates until the manager has
    // forgotten every leftover.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = jobs::fetch_state(address, token).await?;
        if leftovers(&state).is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!("the previous driver's tasks did not end within 60 s");
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Some(e) = events.next().await {
                if matches!(e, Event::Disconnected { .. }) {
                    break;
                }
            }
        })
        .await;
    }
    drop(events);
    drop(handle);
    Ok(())
}

/// `job-driver --supervise`: runs the driver as a child process and
/// restarts it when it dies before the job has ended.
async fn supervise(a: JobDriverArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("locating the strata binary")?;
    // The same arguments, less `--supervise` (not among the job's own,
    // after `--`).
    let mut args: Vec<OsString> = Vec::new();
    let mut own = true;
    for arg in std::env::args_os().skip(1) {
        if own && arg == "--" {
            own = false;
        } else if own && arg == "--supervise" {
            continue;
        }
        args.push(arg);
    }
    let job_file = PathBuf::from(JOB_FILE);
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut restarts = read_job_file(&job_file).map_or(0, |f| f.restarts);
    loop {
        let mut child = tokio::process::Command::new(&exe)
            .args(&args)
            .spawn()
            .context("starting the driver")?;
        let status = tokio::select! {
            s = child.wait() => s.context("waiting for the driver")?,
            _ = term.recv() => {
                // The job is being killed (its process group got the
                // signal too): let the driver record it.
                let _ = tokio::time::timeout(Duration::from_secs(4), child.wait()).await;
                return Ok(ExitCode::from(1));
            }
        };
        if status.success() {
            return Ok(ExitCode::SUCCESS);
        }
        let recorded = read_job_file(&job_file).unwrap_or_default();
        match recorded.state.as_str() {
            "succeeded" => return Ok(ExitCode::SUCCESS),
            "failed" | "cancelled" => return Ok(ExitCode::from(1)),
            _ => {}
        }
        if restarts >= MAX_RESTARTS {
            let message = format!(
                "the driver died {} times before the job ended; last: {status}",
                restarts + 1
            );
            eprintln!("job-driver: {message}; giving up");
            let mut f = recorded;
            f.state = "failed".into();
            f.error = Some(message);
            f.ended_unix_ms = Some(unix_ms());
            let _ = write_job_file(&job_file, &f);
            // End the executors now (this ends this task too).
            let target = a.client.target();
            let _ = jobs::teardown_framework(
                &target.address,
                target.token.as_deref(),
                &a.framework_id,
                &format!("{JOB_PREFIX}{}", a.name),
                &a.executors.role,
            )
            .await;
            return Ok(ExitCode::from(1));
        }
        restarts += 1;
        let backoff = Duration::from_secs(1 << (restarts - 1));
        eprintln!(
            "job-driver: the driver exited ({status}) before the job ended; restart {restarts}/{MAX_RESTARTS} in {backoff:?}"
        );
        // A fresh stdout for the new attempt; the old one is kept.
        let _ = std::fs::copy("stdout", format!("stdout.attempt-{restarts}"));
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open("stdout") {
            let _ = f.set_len(0);
        }
        let mut f = recorded;
        f.restarts = restarts;
        let _ = write_job_file(&job_file, &f);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = term.recv() => return Ok(ExitCode::from(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_over_variables_at_char_boundaries() {
        let text = "é".repeat(SQL_CHUNK_BYTES); // 2 bytes each
        let env = sql_env(&text);
        assert_eq!(env.len(), 2);
        assert_eq!(env[0].0, SQL_ENV);
        assert_eq!(env[1].0, format!("{SQL_ENV}_1"));
        assert!(env.iter().all(|(_, v)| v.len() <= SQL_CHUNK_BYTES));
        let joined: String = env.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(joined, text);
        assert_eq!(sql_env("SELECT 1").len(), 1);
    }

    #[test]
    fn job_arguments_are_checked() {
        let err = |arg: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            match resolve_job(arg, &args) {
                Ok(_) => String::new(),
                Err(e) => format!("{e:#}"),
            }
        };
        assert!(matches!(
            resolve_job("wordcount", &["in.txt".into()]),
            Ok(JobSpec::Packaged(j)) if j.name == "wordcount"
        ));
        let unknown = err("nope", &[]);
        assert!(
            unknown.contains("unknown job \"nope\"; packaged jobs: wordcount INPUT"),
            "{unknown}"
        );
        assert!(err("./bin/myjob", &[]).contains("not supported"));
        assert!(err("https://x/job", &[]).contains("not supported"));
        assert!(err("/no/such/file.sql", &[]).contains("cannot read /no/such/file.sql"));
        assert!(err("/no/such/file.sql", &["x"]).contains("takes no arguments"));
        assert!(new_job_id().starts_with("job-") && new_job_id().len() == 16);
    }
}
