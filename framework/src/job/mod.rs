//! Jobs: work that runs with its driver as a task on the cluster (Spark's
//! cluster deploy mode on Mesos), so that it outlives the client that
//! submitted it.
//!
//! `strata submit` registers a framework named `strata-job:<NAME>`,
//! launches one task in it — the job's **driver** — and leaves. The driver
//! takes the framework over (subscribing with its id, as a failed-over
//! scheduler does), launches its executors into it, runs the job, records
//! its progress in `job.json` in its sandbox ([`record`]), and tears the
//! framework down when the job ends. A job is one of:
//!
//! * a SQL script, run statement by statement ([`run::run_statements`]);
//! * a packaged job built into `strata` (`strata-jobs`), by name;
//! * a **job binary**: a user's Rust program built against this crate,
//!   which is its own driver and its own executors. The agent fetches it
//!   into the sandbox (from a path or an `http://` URL) and starts it as
//!   `JOB job-driver …`; the driver launches executors from the same URI
//!   as `JOB executor …`.
//!
//! A job binary's `main` registers its functions and hands over to
//! [`main`]:
//!
//! ```no_run
//! use strata_framework::job::{self, Job, JobFuture};
//! use strata_framework::session::Session;
//!
//! fn run<'a>(session: &'a Session, args: &'a [String]) -> JobFuture<'a> {
//!     Box::pin(async move {
//!         let table = args.first().ok_or("usage: count-rows TABLE.parquet")?;
//!         let df = session.context().read_parquet(table.as_str(), Default::default()).await?;
//!         let out = session.collect(df.aggregate(vec![], vec![datafusion::functions_aggregate::count::count_all()])?).await?;
//!         Ok(out.batches)
//!     })
//! }
//!
//! static JOB: Job = Job {
//!     name: "count-rows",
//!     description: "counts the rows of a Parquet table",
//!     usage: "TABLE.parquet",
//!     register: || {},
//!     run,
//! };
//!
//! fn main() -> std::process::ExitCode {
//!     job::main(&JOB)
//! }
//! ```
//!
//! Run with no subcommand, the binary runs the job right there with
//! in-process executors (`JOB [--executors N] ARGS…`), as Spark's local
//! mode does; `strata submit ./JOB ARGS…` runs it on the cluster.

use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser};
use datafusion::arrow::record_batch::RecordBatch;

use crate::driver::{ClusterSource, Driver, DriverConfig, ExecutorSource};
use crate::output::{self, Format};
use crate::session::{Session, SessionError};

pub mod args;
pub mod record;
pub mod run;
pub mod status;

pub use args::JobDriverArgs;
pub use run::{ExecutorProgram, JobRunError, run_driver, teardown_framework};

/// Why a job's own code failed.
pub type JobFnError = Box<dyn std::error::Error + Send + Sync>;

/// A running job: its result sets, or why it failed.
pub type JobFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<RecordBatch>, JobFnError>> + Send + 'a>>;

/// Runs a job on a session with its arguments.
pub type RunFn = for<'a> fn(&'a Session, &'a [String]) -> JobFuture<'a>;

/// A job written in Rust: a packaged job of `strata`, or the job of a job
/// binary.
pub struct Job {
    /// The name it is known by (`strata submit NAME`).
    pub name: &'static str,
    /// What it does, in one line.
    pub description: &'static str,
    /// Its arguments, e.g. `INPUT` (a path, a directory or a glob).
    pub usage: &'static str,
    /// Registers its functions (mappers, UDFs). Called at process start,
    /// before any driver or executor, in every process of the job.
    pub register: fn(),
    /// Runs it.
    pub run: RunFn,
}

/// Executor options of the batch commands and of job drivers.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct ExecutorOpts {
    /// Executors to run.
    #[arg(long, default_value_t = 2)]
    pub executors: usize,
    /// CPUs per executor (its task slots).
    #[arg(long, default_value_t = 1.0)]
    pub executor_cpus: f64,
    /// Memory per executor, MiB or with a unit (`1g`).
    #[arg(long, default_value = "1g", value_parser = strata_proto::units::mib)]
    pub executor_mem: f64,
    /// Partitions per stage (default: executors × CPUs).
    #[arg(long)]
    pub partitions: Option<usize>,
    /// The driver framework's role.
    #[arg(long, default_value = "*")]
    pub role: String,
    /// The executors' priority class.
    #[arg(long, default_value = "batch")]
    pub class: String,
    /// Also run executors on revocable cpus (idle cpus of higher-class
    /// tasks) when no regular room is free; they are killed when their
    /// lenders need the cpus back, and lost work runs again.
    #[arg(long)]
    pub revocable: bool,
    /// How long to wait for the executors to start.
    #[arg(long, default_value = "60s", value_parser = strata_proto::units::duration)]
    pub executor_wait: Duration,
}

/// Invalid executor options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutorOptsError {
    /// `--executors 0`.
    #[error("--executors must be at least 1")]
    NoExecutors,
    /// `--executor-cpus` not a number above 0.
    #[error("--executor-cpus must be a number > 0")]
    Cpus,
}

impl ExecutorOpts {
    /// Partitions per stage.
    pub fn partitions(&self) -> usize {
        self.partitions_for(self.executors)
    }

    /// Partitions per stage with `executors` executors (default: executors
    /// × CPUs).
    pub fn partitions_for(&self, executors: usize) -> usize {
        self.partitions
            .unwrap_or_else(|| executors.max(1) * (self.executor_cpus.ceil() as usize).max(1))
    }

    /// Checks the options.
    pub fn validate(&self) -> Result<(), ExecutorOptsError> {
        if self.executors == 0 {
            return Err(ExecutorOptsError::NoExecutors);
        }
        if !(self.executor_cpus.is_finite() && self.executor_cpus > 0.0) {
            return Err(ExecutorOptsError::Cpus);
        }
        Ok(())
    }

    /// A driver configuration with exactly these executors from `source`
    /// (its role and class set from the options).
    pub fn driver_config(&self, mut source: ClusterSource) -> DriverConfig {
        source.role = self.role.clone();
        source.class = self.class.clone();
        source.revocable = self.revocable;
        let mut config = DriverConfig::new(ExecutorSource::Cluster(Box::new(source)));
        self.size(&mut config);
        config
    }

    fn size(&self, config: &mut DriverConfig) {
        config.executors.min = self.executors;
        config.executors.max = self.executors;
        config.executors.cpus = self.executor_cpus;
        config.executors.mem_mib = self.executor_mem;
        config.executor_wait = self.executor_wait;
    }
}

/// Object-store credentials and log settings that a driver's executors
/// (and a submitted job's driver) inherit from their parent: the log
/// filter as set in the environment, and the format this process logs in.
pub fn forwarded_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k == "STRATA_LOG" || k == "RUST_LOG")
        .filter(|(k, _)| k != crate::process::LogFormat::ENV)
        .chain(
            (crate::process::log_format() == crate::process::LogFormat::Json)
                .then(|| (crate::process::LogFormat::ENV.to_owned(), "json".to_owned())),
        )
        .collect()
}

/// A job binary's command line.
#[derive(Parser, Debug)]
#[command(disable_help_subcommand = true)]
struct BinaryCli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    local: LocalArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Mode {
    /// (internal) Run as an executor of this job's driver.
    #[command(hide = true)]
    Executor(strata_executor::args::ExecutorArgs),
    /// (internal) Run as the job's driver on the cluster.
    #[command(hide = true)]
    JobDriver(JobDriverArgs),
}

/// Running a job binary by itself: its executors in its own process.
#[derive(Args, Debug)]
struct LocalArgs {
    /// In-process executors.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Partitions per stage (default: the executors).
    #[arg(long)]
    partitions: Option<usize>,
    /// Output format of the job's result.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The job's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// The `main` of a job binary: registers the job's functions, then runs
/// as what the command line asks — the job's driver on the cluster
/// (`job-driver`, as `strata submit` starts it), one of its executors
/// (`executor`, as the driver starts them), or, with neither, the whole
/// job in this process with in-process executors.
pub fn main(job: &'static Job) -> ExitCode {
    main_from(job, std::env::args_os())
}

/// [`main`] with the command line given.
pub fn main_from(job: &'static Job, args: impl IntoIterator<Item = OsString>) -> ExitCode {
    (job.register)();
    let cli = match BinaryCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            e.print().ok();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let default = if cli.mode.is_some() { "info" } else { "warn" };
    let filter = std::env::var("STRATA_LOG").unwrap_or_else(|_| default.to_owned());
    crate::process::init_tracing(&filter, default, crate::process::LogFormat::from_env());
    crate::process::block_on(async move {
        match cli.mode {
            Some(Mode::Executor(a)) => {
                let result = match a.into_config() {
                    Ok(config) => strata_executor::runtime::run(config)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(format!("cannot find the work directory: {e}")),
                };
                match result {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(1)
                    }
                }
            }
            Some(Mode::JobDriver(a)) => {
                run_driver(a, std::slice::from_ref(job), ExecutorProgram::ThisBinary).await
            }
            None => match run_local(job, cli.local).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            },
        }
    })
}

/// Runs the job in this process, with in-process executors.
async fn run_local(job: &'static Job, a: LocalArgs) -> Result<(), JobRunError> {
    let work = std::env::temp_dir().join(format!("strata-local-{}", std::process::id()));
    let mut config = DriverConfig::new(ExecutorSource::InProcess(work.clone()));
    config.executors.min = a.executors.max(1);
    config.executors.max = a.executors.max(1);
    let driver = Arc::new(Driver::start(config).await?);
    let result = async {
        let partitions = a.partitions.unwrap_or(a.executors.max(1));
        let session = Session::new(driver.clone(), partitions).map_err(SessionError::from)?;
        let batches = (job.run)(&session, &a.args)
            .await
            .map_err(|source| JobRunError::Job {
                name: job.name,
                source,
            })?;
        print_batches(a.format, &batches)
    }
    .await;
    driver.shutdown().await;
    std::fs::remove_dir_all(&work).ok();
    result
}

/// Prints a job's result sets on stdout (nothing for none).
fn print_batches(format: Format, batches: &[RecordBatch]) -> Result<(), JobRunError> {
    if let Some(first) = batches.first() {
        let mut out = std::io::stdout().lock();
        output::write(&mut out, format, &first.schema(), batches)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_binary_command_line_is_well_formed() {
        BinaryCli::command().debug_assert();
        let cli = BinaryCli::try_parse_from(["job", "--executors", "3", "in.txt", "--x"]).unwrap();
        assert!(cli.mode.is_none());
        assert_eq!(cli.local.executors, 3);
        assert_eq!(cli.local.args, vec!["in.txt", "--x"]);
        let cli =
            BinaryCli::try_parse_from(["job", "executor", "--driver", "h:1", "--id", "e"]).unwrap();
        assert!(matches!(cli.mode, Some(Mode::Executor(a)) if a.id == "e"));
    }

    #[test]
    fn executor_options_are_checked() {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            o: ExecutorOpts,
        }
        let o = T::try_parse_from(["t"]).unwrap().o;
        assert_eq!(o.validate(), Ok(()));
        assert_eq!(o.partitions(), 2);
        let o = T::try_parse_from(["t", "--executors", "0"]).unwrap().o;
        assert_eq!(o.validate(), Err(ExecutorOptsError::NoExecutors));
        assert!(T::try_parse_from(["t", "--executor-mem", "lots"]).is_err());
    }
}
