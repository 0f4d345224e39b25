//! `strata gateway`: the SQL gateway in the foreground. It is a batch
//! driver on the cluster (executors between `--min-executors` and
//! `--max-executors`) serving the PostgreSQL wire protocol; every client
//! connection is a session whose queries run on those executors.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use strata_framework::driver::Driver;
use strata_gateway::{Gateway, GatewayConfig, GatewayHandle};

use super::ClientArgs;
use super::batch::{ExecutorOpts, start_elastic_driver};

/// Arguments of `strata gateway`.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    executors: ExecutorOpts,
    #[command(flatten)]
    serve: ServeOpts,
}

/// Where and how the gateway serves (shared with `strata local --gateway`).
#[derive(clap::Args, Debug, Clone)]
pub struct ServeOpts {
    /// Where the PostgreSQL wire protocol listens. Without a token, only
    /// loopback addresses are allowed.
    #[arg(long, default_value = "127.0.0.1:5432")]
    pub pg_listen: SocketAddr,
    /// Executors kept while idle [default: 1].
    #[arg(long)]
    pub min_executors: Option<usize>,
    /// Executors at most [default: --executors].
    #[arg(long)]
    pub max_executors: Option<usize>,
    /// Client connections at once; more are refused (SQLSTATE 53300).
    #[arg(long, default_value_t = 100)]
    pub max_connections: usize,
    /// The database name clients connect to (the catalog).
    #[arg(long, default_value = "strata")]
    pub database: String,
}

impl ServeOpts {
    /// Starts a driver on the cluster at `manager` and the gateway over it.
    pub async fn start(
        &self,
        executors: &ExecutorOpts,
        manager: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(Arc<Driver>, GatewayHandle)> {
        let max = self.max_executors.unwrap_or(executors.executors);
        let min = self.min_executors.unwrap_or(1).min(max);
        let driver =
            start_elastic_driver(executors, manager, token, "strata-gateway", min, max).await?;
        let mut config = GatewayConfig::new(executors.partitions_for(max));
        config.pg_listen = self.pg_listen;
        config.database = self.database.clone();
        config.token = token.map(str::to_owned);
        config.max_connections = self.max_connections;
        match Gateway::start(config, driver.clone()).await {
            Ok(handle) => Ok((driver, handle)),
            Err(e) => {
                driver.shutdown().await;
                Err(e.into())
            }
        }
    }
}

/// How to connect, as printed for people.
pub fn connect_hint(handle: &GatewayHandle, database: &str) -> String {
    let addr = handle.pg_addr();
    format!(
        "psql -h {} -p {} -U strata {database}   (or postgresql://strata@{addr}/{database})",
        addr.ip(),
        addr.port()
    )
}

/// `strata gateway`.
pub async fn run(a: GatewayArgs) -> anyhow::Result<ExitCode> {
    let target = a.client.target();
    let (driver, handle) = a
        .serve
        .start(&a.executors, &target.address, target.token.as_deref())
        .await?;
    println!("strata gateway");
    println!("  postgresql  {}", handle.pg_addr());
    println!("  connect     {}", connect_hint(&handle, &a.serve.database));
    println!("Ctrl-C stops it.");
    super::daemons::wait_for_signal().await;
    eprintln!("stopping the gateway");
    handle.shutdown().await;
    driver.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
