//! `strata bench`: whole-system benchmarks that print their figures.
//!
//! * `strata bench tpch --sf 1`: the 22 TPC-H queries on a local cluster
//!   (a manager and two agents as processes, executors as their tasks) and
//!   in single-process DataFusion, in the same run: per-query times,
//!   totals, the ratio, and peak memory per process.
//! * `strata bench tasks`: tiny tasks per second through driver →
//!   executors.
//! * `strata bench gateway`: the SQL gateway's `SELECT 1` round trip
//!   beside a local PostgreSQL 15's (pgbench, p50 and p99).
//! * `strata bench etl`: `CREATE TABLE … AS` into a managed (Delta) table
//!   on a local cluster beside DataFusion's `COPY … TO` Parquet (MB/s).
//! * `strata bench mesos-api`: offer-to-launch latency through the Mesos
//!   v1 scheduler HTTP API beside the native gRPC SDK.
//! * `strata bench ui`: the web UI's page times on a manager holding
//!   10,000 tasks and 1,000 finished jobs.

mod etl;
mod gateway;
mod mesos;
mod power;
mod procfs;
mod tasks;
mod throughput;
mod tpch;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use strata_proto::resources::Resources;

use crate::local::{LocalCluster, LocalOptions};

/// Arguments of `strata bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(clap::Subcommand, Debug)]
enum Which {
    /// TPC-H on a local cluster against single-process DataFusion.
    Tpch(tpch::TpchArgs),
    /// Tiny tasks per second through the driver and executors.
    Tasks(tasks::TasksArgs),
    /// The SQL gateway's round trip beside a local PostgreSQL 15's.
    Gateway(gateway::GatewayBenchArgs),
    /// An ETL write into a managed table beside DataFusion's Parquet write.
    Etl(etl::EtlArgs),
    /// Offer-to-launch latency: the Mesos v1 HTTP API against the gRPC SDK.
    MesosApi(mesos::MesosArgs),
    /// The web UI's page times with 10,000 tasks and 1,000 finished jobs.
    Ui(ui::UiArgs),
    /// (internal) One side of the TPC-H benchmark in its own process.
    #[command(hide = true)]
    TpchWorker(tpch::WorkerArgs),
}

/// `strata bench`.
pub async fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    match a.which {
        Which::Tpch(a) => tpch::run(a).await,
        Which::Tasks(a) => tasks::run(a).await,
        Which::Gateway(a) => gateway::run(a).await,
        Which::Etl(a) => etl::run(a).await,
        Which::MesosApi(a) => mesos::run(a).await,
        Which::Ui(a) => ui::run(a).await,
        Which::TpchWorker(a) => tpch::worker(a).await,
    }
}

/// A local cluster for a benchmark: `agents` agents sharing `machine`
/// (`cpus:2;mem:2048;…`), its manager on an ephemeral loopback port.
async fn local_cluster(agents: usize, dir: PathBuf, machine: &str) -> anyhow::Result<LocalCluster> {
    let mut opts = LocalOptions::new(agents, dir);
    opts.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    opts.machine = Some(Resources::parse(machine)?);
    Ok(LocalCluster::start(opts).await?)
}
