//! The executor's command line, shared by `strata executor` and job
//! binaries started in executor mode (`JOB executor …`): one definition of
//! the flags a driver puts on an executor task.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::runtime::{ExecutorConfig, Straggle};

/// The flags of an executor process.
#[derive(clap::Args, Debug, Clone)]
pub struct ExecutorArgs {
    /// The driver's executor-link address (host:port).
    #[arg(long)]
    pub driver: String,
    /// The id the driver gave this executor.
    #[arg(long)]
    pub id: String,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    pub slots: usize,
    /// The memory pool shared by its tasks, bytes.
    #[arg(long, default_value_t = 512 << 20)]
    pub memory_bytes: u64,
    /// Work directory (shuffle files, spills). Default: `./work` in the task's sandbox.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Where its Flight shuffle service binds [default: a free port on
    /// this host's address toward the driver].
    #[arg(long)]
    pub flight_bind: Option<SocketAddr>,
    /// The host other executors reach it at.
    #[arg(long)]
    pub advertise_host: Option<String>,
    /// Exit when the driver has been unreachable this long.
    #[arg(long, default_value = "30s", value_parser = strata_proto::units::duration)]
    pub driver_timeout: Duration,
    /// (tests) Delay the first attempt of a task: STAGE:PARTITION:MILLIS.
    #[arg(long, hide = true)]
    pub straggle: Vec<Straggle>,
}

impl ExecutorArgs {
    /// The executor's configuration; the work directory defaults to
    /// `work` under the current directory (the task's sandbox).
    pub fn into_config(self) -> std::io::Result<ExecutorConfig> {
        let work_dir = match self.work_dir {
            Some(d) => d,
            None => std::env::current_dir()?.join("work"),
        };
        let mut config = ExecutorConfig::new(self.driver, self.id, work_dir);
        config.slots = self.slots.max(1);
        config.memory_bytes = self.memory_bytes;
        config.flight_bind = self.flight_bind;
        config.advertise_host = self.advertise_host;
        config.driver_timeout = self.driver_timeout;
        config.straggle = self.straggle;
        Ok(config)
    }
}
