//! The driver of a submitted job (`strata job-driver`, or `JOB
//! job-driver` for a job binary), started by an agent as the job's task, in
//! its sandbox.
//!
//! * It takes the job's framework over, kills what a previous driver of
//!   the job left running, launches its executors into the framework, runs
//!   the job, and records its progress and outcome in `job.json`.
//! * A SQL script reaches the driver in its task's environment
//!   (`STRATA_JOB_SQL`, split over `STRATA_JOB_SQL_1`, `_2`, … as one
//!   variable may hold 128 KiB at most); the driver writes it to `sql.sql`
//!   in its sandbox and runs it from there.
//! * With `--supervise` it runs the driver as a child process and restarts
//!   it (up to 3 times, with backoff) when it dies before the job has
//!   ended; the restarted driver kills the executors of its predecessor and
//!   runs the job again.
//! * When the job ends, successfully or not, the driver tears the framework
//!   down, which ends the executors and the driver's own task.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use strata_sdk::{Event, FrameworkConfig, FrameworkId, Role, Scheduler, SchedulerConfig, SdkError};
use tokio::signal::unix::{SignalKind, signal};

use super::args::JobDriverArgs;
use super::record::{Counts, JOB_FILE, JobFile, JobState, Recorder, unix_ms};
use super::{Job, JobFnError, forwarded_env};
use crate::driver::{ClusterSource, Driver, DriverError};
use crate::output::{self, Format, OutputError};
use crate::session::{Prepared, Session, SessionError};

/// The environment variable that carries a SQL job's script to its driver.
pub const SQL_ENV: &str = "STRATA_JOB_SQL";

/// One environment variable's share of the script (Linux refuses to
/// `execve` a single variable over 128 KiB).
const SQL_CHUNK_BYTES: usize = 64 << 10;

/// Restarts of a supervised driver at most.
pub const MAX_RESTARTS: u32 = 3;

/// Why a job's driver failed.
#[derive(Debug, thiserror::Error)]
pub enum JobRunError {
    /// The driver or one of the job's queries failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A statement failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The job's own code failed.
    #[error("job {name}: {source}")]
    Job {
        /// The job.
        name: &'static str,
        /// Its error.
        source: JobFnError,
    },
    /// Results could not be printed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Talking to the manager failed.
    #[error("manager: {0}")]
    Manager(#[from] SdkError),
    /// The manager's HTTP API failed.
    #[error("manager: {0}")]
    Http(#[from] strata_sdk::http::HttpError),
    /// The manager's state could not be read.
    #[error("malformed state from the manager: {0}")]
    State(#[from] serde_json::Error),
    /// What to run is not known.
    #[error("{0}")]
    NoWork(&'static str),
    /// A packaged job of that name does not exist.
    #[error("unknown packaged job {0:?}")]
    UnknownJob(String),
    /// No SQL script to run.
    #[error("no SQL script: {path} does not exist and {SQL_ENV} is not set")]
    NoScript {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file or process operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The previous driver's tasks did not end.
    #[error("the previous driver's tasks did not end within {0:?}")]
    Leftovers(Duration),
    /// Invalid executor options.
    #[error(transparent)]
    Options(#[from] super::ExecutorOptsError),
}

fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> JobRunError {
    let path = path.into();
    move |source| JobRunError::Io {
        action,
        path,
        source,
    }
}

/// The script as task environment variables.
pub fn sql_env(text: &str) -> Vec<(String, String)> {
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

/// The script: from `--sql-file`, written first from the environment.
fn load_sql(path: &Path) -> Result<String, JobRunError> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(text);
    }
    let text = sql_from_env().ok_or_else(|| JobRunError::NoScript {
        path: path.to_owned(),
    })?;
    strata_proto::fsutil::write_atomic(path, text.as_bytes()).map_err(io_err("writing", path))?;
    Ok(text)
}

/// The program a job's driver starts its executors from when it is given
/// no `--executor-uri`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorProgram {
    /// The `strata` binary of each agent ([`strata_proto::OWN_PROGRAM`]):
    /// what `strata job-driver` uses, so nothing but `strata` needs to be
    /// installed where executors run.
    AgentStrata,
    /// This very binary, at its path here (a job binary run as a driver by
    /// hand, on hosts that share its path).
    ThisBinary,
}

/// Runs a job's driver: supervised (`--supervise`) or not. `jobs` are the
/// Rust jobs this program knows: `--job NAME` picks one; with neither
/// `--job` nor `--sql-file`, a program that knows exactly one job (a job
/// binary) runs it. Executors start from `--executor-uri`, else from
/// `program`.
pub async fn run_driver(
    a: JobDriverArgs,
    jobs: &'static [Job],
    program: ExecutorProgram,
) -> ExitCode {
    // Every line of a job's driver (and of its supervisor) is in the job's
    // span.
    let span = tracing::info_span!("job", job_id = %a.job_id, name = %a.name);
    let result = if a.supervise {
        supervise(a).instrument(span).await
    } else {
        drive(a, jobs, program).instrument(span).await
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
}

/// What a driver runs.
enum Work {
    /// A SQL script.
    Sql(String),
    /// A Rust job.
    Job(&'static Job),
}

fn choose_work(a: &JobDriverArgs, jobs: &'static [Job]) -> Result<Work, JobRunError> {
    match (&a.job, &a.sql_file) {
        (Some(name), _) => jobs
            .iter()
            .find(|j| j.name == name)
            .map(Work::Job)
            .ok_or_else(|| JobRunError::UnknownJob(name.clone())),
        (None, Some(path)) => Ok(Work::Sql(load_sql(path)?)),
        (None, None) if jobs.len() == 1 => Ok(Work::Job(&jobs[0])),
        (None, None) => Err(JobRunError::NoWork("give --sql-file or --job")),
    }
}

/// The driver proper: takes the framework over, runs the job, records
/// the outcome, tears the framework down.
async fn drive(
    a: JobDriverArgs,
    jobs: &'static [Job],
    program: ExecutorProgram,
) -> Result<ExitCode, JobRunError> {
    let recorder = Arc::new(Recorder::open(PathBuf::from(JOB_FILE), &a.job_id, &a.name));
    // Killed (a cancellation tears the framework down, and the agent
    // signals its tasks): record it, unless the job had ended.
    {
        let recorder = recorder.clone();
        let mut term = signal(SignalKind::terminate())
            .map_err(io_err("installing a handler of", "SIGTERM"))?;
        tokio::spawn(async move {
            term.recv().await;
            recorder.finish(
                JobState::Cancelled,
                Some("the driver was stopped (SIGTERM): the job was cancelled".into()),
            );
            std::io::stdout().flush().ok();
            std::process::exit(if recorder.state() == JobState::Succeeded {
                0
            } else {
                1
            });
        });
    }
    let result = drive_inner(&a, jobs, program, &recorder).await;
    std::io::stdout().flush().ok();
    match result {
        Ok(driver) => {
            recorder.finish(JobState::Succeeded, None);
            driver.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Err((driver, e)) => {
            let message = e.to_string();
            eprintln!("error: {message}");
            // A job whose framework was torn down under it was cancelled.
            let removed = framework_removed(&a).await;
            if removed {
                recorder.finish(
                    JobState::Cancelled,
                    Some("the job's framework was torn down: the job was cancelled".into()),
                );
            } else {
                recorder.finish(JobState::Failed, Some(message));
            }
            // End the framework (and so the executors and this task).
            match driver {
                Some(d) => d.shutdown().await,
                None if !removed => {
                    teardown_framework(
                        &a.manager,
                        a.token.as_deref(),
                        &a.framework_id,
                        &a.framework_name(),
                        &a.executors.role,
                    )
                    .await
                    .ok();
                }
                None => {}
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// Whether the manager no longer lists the job's framework.
async fn framework_removed(a: &JobDriverArgs) -> bool {
    manager_json(&a.manager, a.token.as_deref(), "/api/v1/frameworks")
        .await
        .is_ok_and(|v| {
            v.as_array().is_some_and(|fws| {
                fws.iter()
                    .all(|f| f.get("id").and_then(|i| i.as_str()) != Some(&a.framework_id))
            })
        })
}

async fn manager_json(
    manager: &str,
    token: Option<&str>,
    path: &str,
) -> Result<serde_json::Value, JobRunError> {
    let body = strata_sdk::http::get(manager, path, token, Duration::from_secs(10)).await?;
    Ok(serde_json::from_slice(&body)?)
}

type DriveError = (Option<Arc<Driver>>, JobRunError);

async fn drive_inner(
    a: &JobDriverArgs,
    jobs: &'static [Job],
    program: ExecutorProgram,
    recorder: &Arc<Recorder>,
) -> Result<Arc<Driver>, DriveError> {
    // What to run, checked before anything starts.
    let work = choose_work(a, jobs).map_err(|e| (None, e))?;
    a.executors.validate().map_err(|e| (None, e.into()))?;
    kill_leftovers(a).await.map_err(|e| (None, e))?;
    let mut source = match &a.executor_uri {
        Some(uri) => {
            let name = uri
                .split(['?', '#'])
                .next()
                .and_then(|p| p.rsplit('/').next())
                .filter(|n| !n.is_empty())
                .unwrap_or("job");
            let mut s = ClusterSource::new(a.manager.clone(), format!("./{name}"));
            s.uris.push(strata_sdk::Uri::executable(uri.clone()));
            s
        }
        None => match program {
            ExecutorProgram::AgentStrata => {
                ClusterSource::new(a.manager.clone(), strata_proto::OWN_PROGRAM)
            }
            ExecutorProgram::ThisBinary => {
                let exe = std::env::current_exe()
                    .map_err(io_err("locating", "this program"))
                    .map_err(|e| (None, e))?;
                ClusterSource::new(a.manager.clone(), exe)
            }
        },
    };
    source.token = a.token.clone();
    source.name = a.framework_name();
    source.env = forwarded_env();
    source.failover_timeout = a.failover_timeout;
    source.framework_id = Some(a.framework_id.clone());
    if let Some(t) = a.executor_driver_timeout {
        source
            .program_args
            .extend(["--driver-timeout".into(), format!("{}ms", t.as_millis())]);
    }
    let config = a.executors.driver_config(source);
    let driver = Arc::new(Driver::start(config).await.map_err(|e| (None, e.into()))?);
    let fail = |e: JobRunError| (Some(driver.clone()), e);
    let e = &a.executors;
    driver
        .wait_for_executors(e.executors, e.executor_wait)
        .await
        .map_err(|e| fail(e.into()))?;
    let session = Session::new(driver.clone(), e.partitions())
        .map_err(|e| fail(SessionError::from(e).into()))?;
    match work {
        Work::Sql(sql) => run_statements(&session, &sql, a.format, Some(recorder))
            .await
            .map_err(fail)?,
        Work::Job(job) => {
            let batches = (job.run)(&session, &a.job_args).await.map_err(|source| {
                fail(JobRunError::Job {
                    name: job.name,
                    source,
                })
            })?;
            super::print_batches(a.format, &batches).map_err(fail)?;
        }
    }
    Ok(driver)
}

/// Runs every statement of a script, printing result sets on stdout and,
/// with a recorder, recording progress (summed over the script's queries).
pub async fn run_statements(
    session: &Session,
    sql: &str,
    format: Format,
    recorder: Option<&Arc<Recorder>>,
) -> Result<(), JobRunError> {
    let statements = session.parse(sql)?;
    let mut done = Counts::default();
    for statement in statements {
        match session.prepare(statement).await? {
            Prepared::Done => {}
            Prepared::Rows(schema, batches) => {
                let mut out = std::io::stdout().lock();
                output::write(&mut out, format, &schema, &batches)?;
            }
            Prepared::Job(job) => {
                let watcher = recorder.map(|rec| {
                    let mut rx = job.progress();
                    let rec = rec.clone();
                    tokio::spawn(async move {
                        loop {
                            let now = Counts::of(&rx.borrow_and_update().stages);
                            rec.update(|f| done.plus(now).record(f));
                            if rx.changed().await.is_err() {
                                break;
                            }
                        }
                    })
                });
                let result = job.result().await;
                if let Some(w) = watcher {
                    w.abort();
                }
                let out = result?;
                done = done.plus(Counts::of(&out.stages));
                if let Some(rec) = recorder {
                    rec.update(|f| done.record(f));
                }
                let mut stdout = std::io::stdout().lock();
                output::write(&mut stdout, format, &out.schema, &out.batches)?;
            }
        }
    }
    Ok(())
}

/// A restarted driver: kills the tasks its predecessor left in the
/// framework (executors, whose task ids the new driver reuses) and waits
/// until the manager has forgotten them.
async fn kill_leftovers(a: &JobDriverArgs) -> Result<(), JobRunError> {
    let token = a.token.as_deref();
    let leftovers = |v: &serde_json::Value| -> Vec<(String, String)> {
        let field = |t: &serde_json::Value, k: &str| {
            t.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned()
        };
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|t| field(t, "framework_id") == a.framework_id && field(t, "id") != a.job_id)
            .map(|t| (field(t, "id"), field(t, "agent_id")))
            .collect()
    };
    let left = leftovers(&manager_json(&a.manager, token, "/api/v1/tasks").await?);
    if left.is_empty() {
        return Ok(());
    }
    eprintln!(
        "job-driver: killing {} task(s) left by a previous driver",
        left.len()
    );
    let mut fw = FrameworkConfig::new(a.framework_name());
    fw.role = Role::new(a.executors.role.clone());
    fw.default_class = a.executors.class.clone();
    fw.failover_timeout = a.failover_timeout;
    fw.framework_id = Some(FrameworkId::new(a.framework_id.clone()));
    let mut cfg = SchedulerConfig::new(a.manager.clone(), fw);
    cfg.token = a.token.clone();
    cfg.suppressed = true;
    cfg.reconnect = false;
    let (handle, mut events) = Scheduler::subscribe(cfg).await?;
    for (task, agent) in &left {
        let agent = (!agent.is_empty()).then(|| strata_sdk::AgentId::new(agent.clone()));
        if let Err(e) = handle
            .kill(strata_sdk::TaskId::new(task.clone()), agent)
            .await
        {
            eprintln!("job-driver: cannot kill {task}: {e}");
        }
    }
    // Read (and so acknowledge) the updates until the manager has
    // forgotten every leftover.
    let limit = Duration::from_secs(60);
    let deadline = Instant::now() + limit;
    loop {
        if leftovers(&manager_json(&a.manager, token, "/api/v1/tasks").await?).is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(JobRunError::Leftovers(limit));
        }
        tokio::time::timeout(Duration::from_millis(200), async {
            while let Some(e) = events.next().await {
                if matches!(e, Event::Disconnected { .. }) {
                    break;
                }
            }
        })
        .await
        .ok();
    }
    Ok(())
}

/// Takes a framework over and tears it down (retrying when its old
/// scheduler takes it back in between); a framework already removed is
/// fine.
pub async fn teardown_framework(
    address: &str,
    token: Option<&str>,
    framework_id: &str,
    name: &str,
    role: &str,
) -> Result<(), SdkError> {
    let mut last = None;
    for attempt in 0..5u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
        let mut fw = FrameworkConfig::new(name);
        fw.role = Role::new(role);
        fw.framework_id = Some(FrameworkId::new(framework_id));
        let mut cfg = SchedulerConfig::new(address, fw);
        cfg.token = token.map(str::to_owned);
        cfg.suppressed = true;
        cfg.reconnect = false;
        let (handle, events) = match Scheduler::subscribe(cfg).await {
            Ok(s) => s,
            Err(e) if e.to_string().contains("has been removed") => return Ok(()),
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let result = handle.teardown().await;
        drop(events);
        match result {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| SdkError::Unavailable {
        message: format!("cannot tear down framework {framework_id}"),
    }))
}

/// `job-driver --supervise`: runs the driver as a child process and
/// restarts it when it dies before the job has ended.
async fn supervise(a: JobDriverArgs) -> Result<ExitCode, JobRunError> {
    let exe = std::env::current_exe().map_err(io_err("locating", "this program"))?;
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
    let mut term =
        signal(SignalKind::terminate()).map_err(io_err("installing a handler of", "SIGTERM"))?;
    let mut restarts = JobFile::read(&job_file).map_or(0, |f| f.restarts);
    loop {
        let mut child = tokio::process::Command::new(&exe)
            .args(&args)
            .spawn()
            .map_err(io_err("starting", &exe))?;
        let status = tokio::select! {
            s = child.wait() => s.map_err(io_err("waiting for", &exe))?,
            _ = term.recv() => {
                // The job is being killed (its process group got the
                // signal too): let the driver record it.
                tokio::time::timeout(Duration::from_secs(4), child.wait()).await.ok();
                return Ok(ExitCode::from(1));
            }
        };
        if status.success() {
            return Ok(ExitCode::SUCCESS);
        }
        let recorded = JobFile::read(&job_file).unwrap_or_default();
        match recorded.state {
            JobState::Succeeded => return Ok(ExitCode::SUCCESS),
            JobState::Failed | JobState::Cancelled => return Ok(ExitCode::from(1)),
            JobState::Starting | JobState::Running => {}
        }
        if restarts >= MAX_RESTARTS {
            let message = format!(
                "the driver died {} times before the job ended; last: {status}",
                restarts + 1
            );
            eprintln!("job-driver: {message}; giving up");
            let mut f = recorded;
            f.state = JobState::Failed;
            f.error = Some(message);
            f.ended_unix_ms = Some(unix_ms());
            if let Err(e) = f.write(&job_file) {
                tracing::warn!(path = %job_file.display(), error = %e, "cannot write the job file");
            }
            // End the executors now (this ends this task too).
            teardown_framework(
                &a.manager,
                a.token.as_deref(),
                &a.framework_id,
                &a.framework_name(),
                &a.executors.role,
            )
            .await
            .ok();
            return Ok(ExitCode::from(1));
        }
        restarts += 1;
        let backoff = Duration::from_secs(1 << (restarts - 1));
        eprintln!(
            "job-driver: the driver exited ({status}) before the job ended; restart {restarts}/{MAX_RESTARTS} in {backoff:?}"
        );
        // A fresh stdout for the new attempt; the old one is kept.
        std::fs::copy("stdout", format!("stdout.attempt-{restarts}")).ok();
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open("stdout") {
            f.set_len(0).ok();
        }
        let mut f = recorded;
        f.restarts = restarts;
        if let Err(e) = f.write(&job_file) {
            tracing::warn!(path = %job_file.display(), error = %e, "cannot write the job file");
        }
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
}
