//! `strata executor`: the batch engine's executor process, started by an
//! agent as a task of a driver's framework. Its flags are
//! [`strata_executor::args::ExecutorArgs`], shared with job binaries.

use std::process::ExitCode;

pub use strata_executor::args::ExecutorArgs;

/// `strata executor`.
pub async fn run(a: ExecutorArgs) -> anyhow::Result<ExitCode> {
    strata_executor::runtime::run(a.into_config()?).await?;
    Ok(ExitCode::SUCCESS)
}
