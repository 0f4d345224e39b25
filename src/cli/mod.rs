//! The `strata` command line: argument parsing and dispatch. Every command
//! has `--help`; settings come from flags, then `STRATA_*` variables, then a
//! TOML file given with `--config`, then defaults.

mod apps;
mod batch;
mod bench;
mod daemons;
mod demo;
mod drain;
mod executor;
mod gateway;
mod jobs;
mod principals;
mod registry;
mod run;
mod shell;
mod sql;
mod status;
mod submit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata_framework::process;

/// Strata: a cluster manager with a batch and SQL engine.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info`, `strata_manager=debug` or `strata_agent=debug`.
    #[arg(long, global = true, env = "STRATA_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as text, or as JSON objects with the ids of the work they
    /// belong to (framework, job, stage, task); executors and a submitted
    /// job's driver log as their parent does.
    #[arg(
        long,
        global = true,
        env = "STRATA_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: process::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole cluster in this process, run a handful of tasks across its agents, print what ran where, and exit.
    Demo(demo::DemoArgs),
    /// Run a manager and agents on this machine in the foreground (Ctrl-C stops them).
    Local(daemons::LocalArgs),
    /// Run the manager: cluster state, allocation, offers, APIs.
    Manager(daemons::ManagerArgs),
    /// Run an agent: advertise this node's resources and run tasks.
    Agent(daemons::AgentArgs),
    /// Run a command as a task on the cluster, print its output, exit with its exit code.
    Run(run::RunArgs),
    /// Show the leading manager, agents, frameworks, roles and tasks.
    Status(status::StatusArgs),
    /// Drain an agent for maintenance: no more offers on it, services moved away, what is left killed at the deadline.
    Drain(drain::DrainArgs),
    /// End an agent's drain: it is offered again.
    Undrain(drain::UndrainArgs),
    /// Export the manager's persisted state to a JSON file, or import one into an empty store (local or etcd).
    Registry(registry::RegistryArgs),
    /// Run SQL on the cluster (the driver runs in this process).
    Sql(sql::SqlArgs),
    /// Serve SQL to PostgreSQL clients (psql, psycopg, JDBC…) and Arrow Flight SQL clients (ADBC); queries run on the cluster's executors.
    Gateway(gateway::GatewayArgs),
    /// Benchmarks: TPC-H against single-process DataFusion, tiny-task throughput.
    Bench(bench::BenchArgs),
    /// Run a batch executor (started by an agent as a task of a driver).
    Executor(executor::ExecutorArgs),
    /// Submit a job (a SQL script, a packaged job or a job binary) to run with its driver as a task on the cluster.
    Submit(submit::SubmitArgs),
    /// List the jobs submitted with `strata submit` (state, progress, duration), or cancel one.
    Jobs(jobs::JobsArgs),
    /// Long-running services (Marathon apps): list, create, show, update, scale, restart, delete, tasks, deployments.
    Apps(apps::AppsArgs),
    /// Serve the packaged example HTTP service (health check and load metric).
    Web(apps::WebArgs),
    /// Principals: identities with their own tokens (list, add, revoke), for ACLs and the audit log.
    Principals(principals::PrincipalsArgs),
    /// (internal) A submitted job's driver; started by an agent as the job's task.
    #[command(hide = true)]
    JobDriver(strata_framework::job::JobDriverArgs),
    /// (internal) Supervise one task; started by the agent.
    #[command(hide = true)]
    Supervise {
        /// Arguments given by the agent.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Options every client command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Manager address (host:port). Default: STRATA_MANAGER, else the file `strata local` writes, else 127.0.0.1:5050.
    #[arg(long)]
    pub manager: Option<String>,
    /// Shared secret token (also STRATA_TOKEN).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ClientArgs {
    /// Where the manager is.
    pub fn target(&self) -> crate::discovery::Target {
        crate::discovery::resolve(self.manager.as_deref(), self.token.as_deref())
    }
}

pub use strata_proto::units::{duration as parse_duration, mib as parse_mib};

/// One request to the manager `target` names (following a standby to
/// the leader): its status and JSON body (`null` when it is not JSON).
pub(crate) async fn manager_json(
    target: &crate::discovery::Target,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    use anyhow::Context as _;
    let (_, (code, _, reply)) = strata_sdk::http::send(
        method,
        &target.address,
        path,
        target.token.as_deref(),
        body,
        std::time::Duration::from_secs(30),
    )
    .await
    .with_context(|| format!("cannot reach the manager at {}", target.address))?;
    Ok((code, serde_json::from_slice(&reply).unwrap_or_default()))
}

/// A table for people, with this header (what the listing commands print).
pub(crate) fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(header.to_vec());
    t
}

/// Reads a TOML config file into `T`.
pub fn read_config<T: serde::de::DeserializeOwned + Default>(
    path: Option<&PathBuf>,
) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // The agent starts one supervisor per task as `strata supervise …`:
    // straight to it, without building the whole command line's parser
    // or registering the jobs' functions (a task's start costs less).
    let mut argv = std::env::args();
    if argv.nth(1).as_deref() == Some("supervise") {
        let code = strata_agent::supervisor::main(argv.collect());
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let cli = Cli::parse();
    // The packaged jobs' functions (mappers) must be known to every driver
    // and executor of this binary before either starts.
    strata_jobs::register_all();
    if let Command::Supervise { args } = cli.command {
        let code = strata_agent::supervisor::main(args);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    // The demo prints a table; keep its logs to warnings unless asked.
    let quiet = matches!(
        cli.command,
        Command::Demo(_) | Command::Sql(_) | Command::Bench(_)
    ) && std::env::var_os("STRATA_LOG").is_none()
        && cli.log == "info";
    process::init_tracing(
        if quiet { "warn" } else { &cli.log },
        "info",
        cli.log_format,
    );
    process::block_on(async move {
        match dispatch(cli.command).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        }
    })
}

/// Runs a command (other than `supervise`).
async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo(a) => demo::run(a).await,
        Command::Local(a) => daemons::local(a).await,
        Command::Manager(a) => daemons::manager(a).await,
        Command::Agent(a) => daemons::agent(a).await,
        Command::Run(a) => run::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Drain(a) => drain::drain(a).await,
        Command::Undrain(a) => drain::undrain(a).await,
        Command::Registry(a) => registry::run(a).await,
        Command::Sql(a) => sql::run(a).await,
        Command::Gateway(a) => gateway::run(a).await,
        Command::Bench(a) => bench::run(a).await,
        Command::Executor(a) => executor::run(a).await,
        Command::Submit(a) => submit::run(a).await,
        Command::Jobs(a) => jobs::run(a).await,
        Command::Apps(a) => apps::run(a).await,
        Command::Web(a) => apps::web(a).await,
        Command::Principals(a) => principals::run(a).await,
        Command::JobDriver(a) => Ok(strata_framework::job::run_driver(
            a,
            strata_jobs::JOBS,
            strata_framework::job::ExecutorProgram::AgentStrata,
        )
        .await),
        Command::Supervise { .. } => anyhow::bail!("supervise runs without a runtime"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
