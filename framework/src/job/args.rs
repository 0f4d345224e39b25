//! The command line of a job's driver: [`JobDriverArgs`] parses it (in
//! `strata job-driver` and `JOB job-driver`) and builds it
//! ([`JobDriverArgs::to_args`], for the task `strata submit` launches), so
//! the two cannot drift.

use std::path::PathBuf;
use std::time::Duration;

use super::ExecutorOpts;
use super::record::JOB_PREFIX;
use crate::output::Format;

/// The subcommand that runs a job's driver (in `strata` and in job
/// binaries).
pub const JOB_DRIVER_COMMAND: &str = "job-driver";

/// The flags of a job's driver (`strata submit` sets them).
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct JobDriverArgs {
    /// The manager's address (host:port).
    #[arg(long)]
    pub manager: String,
    /// Shared secret token (also STRATA_TOKEN).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The executors.
    #[command(flatten)]
    pub executors: ExecutorOpts,
    /// The job's id (its task id).
    #[arg(long)]
    pub job_id: String,
    /// The job's framework, to take over.
    #[arg(long)]
    pub framework_id: String,
    /// The job's name.
    #[arg(long)]
    pub name: String,
    /// The SQL script; written from `STRATA_JOB_SQL` first if it does not exist.
    #[arg(long, conflicts_with = "job")]
    pub sql_file: Option<PathBuf>,
    /// The packaged job to run (its arguments follow `--`).
    #[arg(long)]
    pub job: Option<String>,
    /// The job's arguments.
    #[arg(last = true)]
    pub job_args: Vec<String>,
    /// Output format of result sets.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Run the driver as a child process, restarting it if it dies before the job has ended.
    #[arg(long)]
    pub supervise: bool,
    /// The framework's failover timeout.
    #[arg(long, default_value = "60s", value_parser = strata_proto::units::duration)]
    pub failover_timeout: Duration,
    /// The executors' `--driver-timeout`.
    #[arg(long, value_parser = strata_proto::units::duration)]
    pub executor_driver_timeout: Option<Duration>,
    /// Where executors fetch the program from (a job binary's URI); the
    /// program is then the fetched file. Default: this process's program.
    #[arg(long)]
    pub executor_uri: Option<String>,
}

impl JobDriverArgs {
    /// The job's framework's name, `strata-job:NAME`.
    pub fn framework_name(&self) -> String {
        format!("{JOB_PREFIX}{}", self.name)
    }

    /// The command line that parses back into these arguments, starting
    /// with the subcommand ([`JOB_DRIVER_COMMAND`]). The token is left out
    /// (it would show in process lists): the driver reads it from
    /// `STRATA_TOKEN`. Durations are given in whole milliseconds.
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![JOB_DRIVER_COMMAND.into()];
        if self.supervise {
            args.push("--supervise".into());
        }
        let e = &self.executors;
        args.extend([
            "--job-id".into(),
            self.job_id.clone(),
            "--framework-id".into(),
            self.framework_id.clone(),
            "--name".into(),
            self.name.clone(),
            "--manager".into(),
            self.manager.clone(),
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
            self.format.name().into(),
            "--failover-timeout".into(),
            duration_arg(self.failover_timeout),
        ]);
        let paths = [
            (
                "--sql-file",
                self.sql_file
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
            ),
            ("--job", self.job.clone()),
            ("--executor-uri", self.executor_uri.clone()),
        ];
        for (flag, value) in paths {
            if let Some(v) = value {
                args.extend([flag.into(), v]);
            }
        }
        if e.revocable {
            args.push("--revocable".into());
        }
        if let Some(p) = e.partitions {
            args.extend(["--partitions".into(), p.to_string()]);
        }
        if let Some(t) = self.executor_driver_timeout {
            args.extend(["--executor-driver-timeout".into(), duration_arg(t)]);
        }
        if !self.job_args.is_empty() {
            args.push("--".into());
            args.extend(self.job_args.iter().cloned());
        }
        args
    }
}

/// A duration on a command line, in whole milliseconds (`1500ms`).
pub fn duration_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Command {
        JobDriver(JobDriverArgs),
    }

    fn parse(args: &[String]) -> JobDriverArgs {
        let argv = std::iter::once("strata".to_owned()).chain(args.iter().cloned());
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::JobDriver(a),
            }) => a,
            Err(e) => panic!("{args:?} does not parse: {e}"),
        }
    }

    fn args() -> JobDriverArgs {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            o: ExecutorOpts,
        }
        JobDriverArgs {
            manager: "127.0.0.1:5050".into(),
            token: None,
            executors: T::parse_from(["t"]).o,
            job_id: "job-0123456789ab".into(),
            framework_id: "fw-1".into(),
            name: "q".into(),
            sql_file: None,
            job: None,
            job_args: Vec::new(),
            format: Format::Table,
            supervise: false,
            failover_timeout: Duration::from_secs(60),
            executor_driver_timeout: None,
            executor_uri: None,
        }
    }

    #[test]
    fn driver_arguments_round_trip() {
        // STRATA_TOKEN would fill the token in.
        assert!(std::env::var_os("STRATA_TOKEN").is_none());
        let sql = JobDriverArgs {
            sql_file: Some("sql.sql".into()),
            ..args()
        };
        let mut packaged = JobDriverArgs {
            job: Some("wordcount".into()),
            job_args: vec!["in.txt".into(), "--x".into(), "--".into()],
            supervise: true,
            format: Format::Json,
            executor_driver_timeout: Some(Duration::from_millis(1500)),
            ..args()
        };
        packaged.executors.executors = 3;
        packaged.executors.executor_cpus = 0.25;
        packaged.executors.executor_mem = 1536.5;
        packaged.executors.partitions = Some(7);
        packaged.executors.revocable = true;
        packaged.executors.role = "etl".into();
        packaged.executors.class = "best-effort".into();
        packaged.executors.executor_wait = Duration::from_millis(250);
        let binary = JobDriverArgs {
            executor_uri: Some("http://h:8/a/job?x=1".into()),
            job_args: vec!["in".into()],
            name: "a name with spaces".into(),
            ..args()
        };
        for a in [args(), sql, packaged, binary] {
            let argv = a.to_args();
            assert_eq!(argv[0], JOB_DRIVER_COMMAND);
            assert_eq!(parse(&argv), a, "{argv:?}");
        }
    }

    #[test]
    fn the_command_line_is_as_submit_always_wrote_it() {
        let a = JobDriverArgs {
            sql_file: Some("sql.sql".into()),
            ..args()
        };
        assert_eq!(
            a.to_args().join(" "),
            "job-driver --job-id job-0123456789ab --framework-id fw-1 --name q \
             --manager 127.0.0.1:5050 --executors 2 --executor-cpus 1 --executor-mem 1024 \
             --role * --class batch --executor-wait 60000ms --format table \
             --failover-timeout 60000ms --sql-file sql.sql"
        );
        assert_eq!(a.framework_name(), "strata-job:q");
    }
}
