//! `strata executor`: the batch engine's executor process, started by an
//! agent as a task of a driver's framework.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use strata_executor::runtime::{ExecutorConfig, Straggle};

use super::parse_duration;

/// Arguments of `strata executor`.
#[derive(clap::Args, Debug)]
pub struct ExecutorArgs {
    /// The driver's executor-link address (host:port).
    #[arg(long)]
    driver: String,
    /// The id the driver gave this executor.
    #[arg(long)]
    id: String,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    slots: usize,
    /// The memory pool shared by its tasks, bytes.
    #[arg(long, default_value_t = 512 << 20)]
    memory_bytes: u64,
    /// Work directory (shuffle files, spills). Default: `./work` in the task's sandbox.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Where its Flight shuffle service binds.
    #[arg(long, default_value = "127.0.0.1:0")]
    flight_bind: SocketAddr,
    /// The host other executors reach it at.
    #[arg(long)]
    advertise_host: Option<String>,
    /// Exit when the driver has been unreachable this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    driver_timeout: Duration,
    /// (tests) Delay the first attempt of a task: STAGE:PARTITION:MILLIS.
    #[arg(long, hide = true)]
    straggle: Vec<Straggle>,
}

/// `strata executor`.
pub async fn run(a: ExecutorArgs) -> anyhow::Result<ExitCode> {
    let work_dir = match a.work_dir {
        Some(d) => d,
        None => std::env::current_dir()?.join("work"),
    };
    let mut config = ExecutorConfig::new(a.driver, a.id, work_dir);
    config.slots = a.slots.max(1);
    config.memory_bytes = a.memory_bytes;
    config.flight_bind = a.flight_bind;
    config.advertise_host = a.advertise_host;
    config.driver_timeout = a.driver_timeout;
    config.straggle = a.straggle;
    strata_executor::runtime::run(config).await?;
    Ok(ExitCode::SUCCESS)
}
