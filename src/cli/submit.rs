//! `strata submit`: runs a job with its driver as a task on the cluster
//! (Spark's cluster deploy mode on Mesos). The driver's side is
//! [`strata_framework::job`] (`strata job-driver`, or `JOB job-driver` for
//! a job binary).
//!
//! * The CLI subscribes as a framework named `strata-job:<NAME>`, launches
//!   one task, the job's driver (task id = the job's id), closes its
//!   subscription **without** tearing the framework down, and exits (or,
//!   with `--wait`, follows the job over HTTP).
//! * A job is a SQL script (`FILE.sql`, carried to the driver in its
//!   environment), a packaged job of `strata_jobs` by name with its
//!   arguments (`wordcount INPUT`), or a job binary by path or `http://`
//!   URL with its arguments: the agent fetches the binary into the
//!   driver's sandbox and starts it as `./NAME job-driver …`, and the
//!   driver launches its executors from the same URI.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata_framework::job::record::{JOB_PREFIX, JobState};
use strata_framework::job::status::JobStatus;
use strata_framework::job::{ExecutorOpts, JobDriverArgs, forwarded_env, run::sql_env};
use strata_framework::output::Format;
use strata_proto::resources::Resources;
use strata_sdk::{
    Ask, FrameworkConfig, LaunchError, Notice, OneTask, OneTaskOptions, Role, SchedulerConfig,
    TaskBuilder, TaskId, TaskInfo, Until, Uri,
};

use super::jobs;
use super::{ClientArgs, parse_duration, parse_mib};

/// The largest SQL script `strata submit` accepts.
pub const MAX_SQL_BYTES: usize = 1 << 20;

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
    /// The job: a SQL script (`FILE.sql`), the name of a packaged job, or a
    /// job binary (a path the agents can read, or an `http://` URL).
    #[arg(value_name = "NAME|FILE.sql|BINARY-PATH-OR-URL")]
    job: String,
    /// The job's arguments (e.g. `wordcount INPUT`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

/// What a submission runs.
enum JobSpec {
    /// A SQL script and its default name.
    Sql { text: String, name: String },
    /// A packaged job (`strata_jobs`), by name.
    Packaged(&'static strata_jobs::Job),
    /// A job binary: the URI agents fetch it from, and its file name.
    Binary { uri: String, file: String },
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
    if arg.contains("://") {
        let Some(rest) = arg.strip_prefix("http://") else {
            bail!(
                "{arg:?}: agents fetch job binaries from local paths and http:// URLs only \
                 (serve it over http:// inside the cluster, or give a path the agents can read)"
            );
        };
        let path = rest.split(['?', '#']).next().unwrap_or("");
        let file = path.rsplit('/').next().unwrap_or("");
        if !path.contains('/') || file.is_empty() {
            bail!("{arg:?} names no file (expected http://HOST/…/NAME)");
        }
        return Ok(JobSpec::Binary {
            uri: arg.to_owned(),
            file: file.to_owned(),
        });
    }
    let path = Path::new(arg);
    if arg.contains('/') || path.is_file() {
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {arg}"))?;
        if !meta.is_file() {
            bail!("{arg} is not a file");
        }
        if meta.permissions().mode() & 0o111 == 0 {
            bail!(
                "{arg} is not executable (a job binary is a program built against strata-framework)"
            );
        }
        let abs = path
            .canonicalize()
            .with_context(|| format!("cannot resolve {arg}"))?;
        let file = abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("the binary's path names no file")?;
        return Ok(JobSpec::Binary {
            uri: abs.to_string_lossy().into_owned(),
            file,
        });
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
    bail!(
        "unknown job {arg:?}; packaged jobs: {known}; or give a SQL script (FILE.sql) \
         or a job binary (./PATH or http://URL)"
    )
}

/// `job-<12 hex digits>`.
fn new_job_id() -> String {
    let r = strata_proto::ids::random_id("job");
    r.chars().take(4 + 12).collect()
}

/// `strata submit`.
pub async fn run(a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let spec = resolve_job(&a.job, &a.args)?;
    let name = a.name.clone().unwrap_or_else(|| match &spec {
        JobSpec::Sql { name, .. } => name.clone(),
        JobSpec::Packaged(job) => job.name.to_owned(),
        JobSpec::Binary { file, .. } => file.clone(),
    });
    if name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    if !(a.driver_cpus.is_finite() && a.driver_cpus > 0.0) {
        bail!("--driver-cpus must be a number > 0");
    }
    a.executors.validate()?;
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
    let mut fw = FrameworkConfig::new(fw_name);
    fw.role = Role::new(a.executors.role.clone());
    fw.default_class = class.clone();
    fw.failover_timeout = a.failover_timeout;
    let mut cfg = SchedulerConfig::new(target.address.clone(), fw);
    cfg.token = target.token.clone();
    // The driver takes the framework over: never take it back.
    cfg.reconnect = false;
    let mut one = OneTask::subscribe(cfg, Ask::new(class.clone(), driver_res.clone(), 1))
        .await
        .map_err(|e| match e {
            LaunchError::Subscribe(e) => anyhow::Error::new(e),
            e => e.into(),
        })
        .context("subscribing the job's framework")?;
    let fid = one.framework_id();

    let driver = JobDriverArgs {
        manager: target.address.clone(),
        // In the task's environment (STRATA_TOKEN), not on its command line.
        token: None,
        executors: a.executors.clone(),
        job_id: job_id.clone(),
        framework_id: fid.to_string(),
        name: name.clone(),
        sql_file: None,
        job: None,
        job_args: Vec::new(),
        format: a.format,
        supervise: a.supervise,
        failover_timeout: a.failover_timeout,
        executor_driver_timeout: a.executor_driver_timeout,
        executor_uri: None,
    };
    let task = driver_task(
        &spec,
        &a.args,
        driver,
        driver_res.clone(),
        target.token.clone(),
    )?;
    // Place the driver, and wait until it runs (or has taken over).
    let options = OneTaskOptions::new(wait, Until::Running);
    let started = one
        .follow(task, &options, |n| {
            if let Notice::Warning(e) = n {
                eprintln!("warning: {e}");
            }
        })
        .await;
    if let Err(e) = started {
        return Err(match e {
            LaunchError::NotPlaced { .. } => anyhow::anyhow!(
                "the job's driver ({driver_res}) could not be placed within {wait:?} (the cluster may be full)"
            ),
            LaunchError::NotStarted { .. } => {
                anyhow::anyhow!("the job's driver did not start within {wait:?}")
            }
            LaunchError::Launch(e) => anyhow::Error::new(e).context("launching the job's driver"),
            LaunchError::Ended(s) => {
                anyhow::anyhow!("the job's driver task ended {}", s.describe())
            }
            e => e.into(),
        });
    }
    // Close the subscription without tearing the framework down: the
    // driver has it (or takes it within its failover timeout).
    one.leave();
    if !a.wait {
        println!("{job_id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("submitted job {job_id} (framework {fid}); waiting for it to end");
    let status = follow(&target.address, token, &job_id).await?;
    print_stdout(&status, token).await;
    match status.state {
        JobState::Succeeded => Ok(ExitCode::SUCCESS),
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

/// The task of the job's driver: `strata job-driver …` (or `./JOB
/// job-driver …` for a job binary, fetched into its sandbox), with the
/// script, the forwarded variables and the token in its environment.
fn driver_task(
    spec: &JobSpec,
    job_args: &[String],
    mut driver: JobDriverArgs,
    resources: Resources,
    token: Option<String>,
) -> anyhow::Result<TaskInfo> {
    let program = match spec {
        JobSpec::Binary { file, .. } => format!("./{file}"),
        _ => strata_proto::OWN_PROGRAM.to_owned(),
    };
    match spec {
        JobSpec::Sql { .. } => driver.sql_file = Some("sql.sql".into()),
        JobSpec::Packaged(job) => driver.job = Some(job.name.to_owned()),
        JobSpec::Binary { uri, .. } => driver.executor_uri = Some(uri.clone()),
    }
    if !matches!(spec, JobSpec::Sql { .. }) {
        driver.job_args = job_args.to_vec();
    }
    let mut task = TaskBuilder::exec(
        TaskId::new(driver.job_id.clone()),
        program,
        driver.to_args(),
    )
    .name(driver.framework_name())
    .resources(resources)
    .class(driver.executors.class.clone())
    .kill_grace(Duration::from_secs(5));
    if let Some(u) = strata_framework::driver::cluster::current_user() {
        task = task.user(u);
    }
    if let JobSpec::Binary { uri, .. } = spec {
        task = task.uri(Uri::executable(uri.clone()));
    }
    let script = match spec {
        JobSpec::Sql { text, .. } => sql_env(text),
        _ => Vec::new(),
    };
    for (k, v) in script.into_iter().chain(forwarded_env()) {
        task = task.env(k, v);
    }
    if let Some(t) = token {
        task = task.env("STRATA_TOKEN", t);
    }
    Ok(task.build())
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
        out.write_all(&bytes).ok();
    }
    out.flush().ok();
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(err("./bin/myjob", &[]).contains("cannot read ./bin/myjob"));
        assert!(err("https://x/job", &[]).contains("http:// URLs only"));
        assert!(err("http://x", &[]).contains("names no file"));
        assert!(matches!(
            resolve_job("http://h:8/a/job?x=1", &[]),
            Ok(JobSpec::Binary { uri, file }) if uri == "http://h:8/a/job?x=1" && file == "job"
        ));
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("myjob");
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        let bin_arg = bin.to_string_lossy().into_owned();
        assert!(err(&bin_arg, &[]).contains("is not executable"));
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            resolve_job(&bin_arg, &["in".into()]),
            Ok(JobSpec::Binary { file, .. }) if file == "myjob"
        ));
        assert!(err("/no/such/file.sql", &[]).contains("cannot read /no/such/file.sql"));
        assert!(err("/no/such/file.sql", &["x"]).contains("takes no arguments"));
        assert!(new_job_id().starts_with("job-") && new_job_id().len() == 16);
    }
}
