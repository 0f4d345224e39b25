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
#[command(args_conflicts_with_subcommands = true)]
pub struct GatewayArgs {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    executors: ExecutorOpts,
    #[command(flatten)]
    serve: ServeOpts,
}

/// What else `strata gateway` does than serve.
#[derive(clap::Subcommand, Debug)]
enum Action {
    /// List a running gateway's queries (and sessions), or cancel one.
    Queries(QueriesArgs),
    /// Print a Marathon app definition that runs the gateway as a service
    /// on the cluster (`strata gateway app … | strata apps create -`).
    App(AppArgs),
}

/// Arguments of `strata gateway app`.
#[derive(clap::Args, Debug)]
struct AppArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The app's id.
    #[arg(long, default_value = "/strata/gateway")]
    id: String,
    /// The `strata` program on the agents.
    #[arg(long, default_value = "strata")]
    program: String,
    /// The warehouse, a directory every agent that may run the gateway
    /// reaches (the same path).
    #[arg(long)]
    warehouse: std::path::PathBuf,
    /// CPUs of the gateway's own task.
    #[arg(long, default_value_t = 0.5)]
    cpus: f64,
    /// Memory of the gateway's own task, MiB or with a unit.
    #[arg(long, default_value = "512", value_parser = strata_proto::units::mib)]
    mem: f64,
    /// Executors kept while idle.
    #[arg(long, default_value_t = 1)]
    min_executors: usize,
    /// Executors at most.
    #[arg(long, default_value_t = 2)]
    max_executors: usize,
    /// CPUs per executor.
    #[arg(long, default_value_t = 1.0)]
    executor_cpus: f64,
    /// Memory per executor, MiB or with a unit.
    #[arg(long, default_value = "1g", value_parser = strata_proto::units::mib)]
    executor_mem: f64,
}

/// Arguments of `strata gateway queries`.
#[derive(clap::Args, Debug)]
struct QueriesArgs {
    /// The gateway's HTTP API.
    #[arg(long, default_value = DEFAULT_HTTP)]
    gateway: String,
    /// The gateway's token (also STRATA_TOKEN).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Cancel this query (its id in the listing).
    #[arg(long)]
    cancel: Option<u64>,
    /// List the sessions too.
    #[arg(long)]
    sessions: bool,
}

/// Where the HTTP API listens by default.
const DEFAULT_HTTP: &str = "127.0.0.1:5434";

/// Where and how the gateway serves (shared with `strata local --gateway`).
#[derive(clap::Args, Debug, Clone)]
pub struct ServeOpts {
    /// Where the PostgreSQL wire protocol listens. Without a token, only
    /// loopback addresses are allowed.
    #[arg(long, default_value = "127.0.0.1:5432")]
    pub pg_listen: SocketAddr,
    /// Where the HTTP API listens (sessions, running queries, cancel).
    #[arg(long, default_value = DEFAULT_HTTP)]
    pub http_listen: SocketAddr,
    /// Where Arrow Flight SQL listens (ADBC: `grpc://ADDR`). Without a
    /// token, only loopback addresses are allowed.
    #[arg(long, default_value = "127.0.0.1:32010")]
    pub flight_listen: SocketAddr,
    /// Executors kept while idle [default: 1].
    #[arg(long)]
    pub min_executors: Option<usize>,
    /// Executors at most [default: --executors].
    #[arg(long)]
    pub max_executors: Option<usize>,
    /// Client connections at once; more are refused (SQLSTATE 53300).
    #[arg(long, default_value_t = 100)]
    pub max_connections: usize,
    /// Memory one query's tasks may hold at once on each executor (`512m`,
    /// `2g`); past it they spill, or the query fails with SQLSTATE 53200.
    /// Sessions may `SET strata.query_memory_limit` [default: no cap but
    /// the executor's memory].
    #[arg(long, value_parser = parse_query_memory)]
    pub query_memory: Option<String>,
    /// The database name clients connect to (the catalog).
    #[arg(long, default_value = "strata")]
    pub database: String,
    /// Where the catalog (schemas, external tables, views) and the managed
    /// tables are kept across restarts: a directory, or `s3://bucket/prefix`
    /// [default: $STRATA_HOME/warehouse].
    #[arg(long)]
    pub warehouse: Option<std::path::PathBuf>,
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
        config.http_listen = Some(self.http_listen);
        config.flight_listen = Some(self.flight_listen);
        config.database = self.database.clone();
        config.token = token.map(str::to_owned);
        config.max_connections = self.max_connections;
        config.query_memory = self.query_memory.clone().unwrap_or_default();
        config.warehouse = Some(
            self.warehouse
                .clone()
                .unwrap_or_else(|| crate::discovery::strata_home().join("warehouse")),
        );
        match Gateway::start(config, driver.clone()).await {
            Ok(handle) => Ok((driver, handle)),
            Err(e) => {
                driver.shutdown().await;
                Err(e.into())
            }
        }
    }
}

/// Checks `--query-memory` when the command line is read.
fn parse_query_memory(text: &str) -> Result<String, String> {
    strata_executor::memory::parse_size(text)?;
    Ok(text.to_owned())
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
    match a.action {
        Some(Action::Queries(q)) => return queries(q).await,
        Some(Action::App(app)) => {
            println!("{}", serde_json::to_string_pretty(&app_definition(&app))?);
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let target = a.client.target();
    let (driver, handle) = a
        .serve
        .start(&a.executors, &target.address, target.token.as_deref())
        .await?;
    println!("strata gateway");
    println!("  postgresql  {}", handle.pg_addr());
    if let Some(flight) = handle.flight_addr() {
        println!("  flight sql  {flight} (ADBC: grpc://{flight})");
    }
    if let Some(http) = handle.http_addr() {
        println!("  http        {http} (strata gateway queries --gateway {http})");
    }
    println!("  connect     {}", connect_hint(&handle, &a.serve.database));
    println!("Ctrl-C stops it.");
    super::daemons::wait_for_signal().await;
    eprintln!("stopping the gateway");
    handle.shutdown().await;
    driver.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `strata gateway queries`.
async fn queries(a: QueriesArgs) -> anyhow::Result<ExitCode> {
    let token = a.token.as_deref();
    let timeout = std::time::Duration::from_secs(10);
    if let Some(id) = a.cancel {
        let path = format!("/api/v1/queries/{id}/cancel");
        let (status, _, body) =
            strata_sdk::http::request("POST", &a.gateway, &path, token, None, timeout).await?;
        return match status {
            200 => {
                println!("query {id} cancelled");
                Ok(ExitCode::SUCCESS)
            }
            _ => anyhow::bail!("{}", String::from_utf8_lossy(&body).trim()),
        };
    }
    let get = |path: &'static str| {
        strata_sdk::http::request("GET", &a.gateway, path, token, None, timeout)
    };
    let (status, _, body) = get("/api/v1/queries").await?;
    anyhow::ensure!(status == 200, "{}", String::from_utf8_lossy(&body).trim());
    let queries: Vec<strata_gateway::registry::QueryInfo> = serde_json::from_slice(&body)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut table = super::table(&["QUERY", "SESSION", "RUNNING", "JOB", "SQL"]);
    for q in &queries {
        let sql: String = q.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        table.add_row([
            q.id.to_string(),
            q.session.to_string(),
            format!("{:.1} s", now.saturating_sub(q.started_ms) as f64 / 1000.0),
            q.job.clone().unwrap_or_else(|| "(in the gateway)".into()),
            sql.chars().take(80).collect(),
        ]);
    }
    println!("{table}");
    if a.sessions {
        let (status, _, body) = get("/api/v1/sessions").await?;
        anyhow::ensure!(status == 200, "{}", String::from_utf8_lossy(&body).trim());
        let sessions: Vec<strata_gateway::registry::SessionInfo> = serde_json::from_slice(&body)?;
        let mut table = super::table(&["SESSION", "USER", "APPLICATION", "CLIENT"]);
        for s in &sessions {
            table.add_row([
                s.id.to_string(),
                s.user.clone(),
                s.application.clone(),
                s.client.clone(),
            ]);
        }
        println!("\n{table}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The gateway as a Marathon app: one instance of class `service` (the
/// default), its PostgreSQL port, HTTP API and Flight SQL on three ports
/// the agent assigns, health-checked on the API, replaced only after the old one is
/// gone (one gateway writes the warehouse at a time).
fn app_definition(a: &AppArgs) -> serde_json::Value {
    let target = a.client.target();
    // A cluster without a token runs on loopback only (as the gateway
    // without one listens); with one, the gateway listens on every
    // interface of its agent.
    let ip = if target.token.is_some() {
        "0.0.0.0"
    } else {
        "127.0.0.1"
    };
    let cmd = format!(
        "exec {} gateway --manager {} --pg-listen {ip}:$PORT0 --http-listen {ip}:$PORT1 \
         --flight-listen {ip}:$PORT2 --warehouse {} --executors {} --min-executors {} \
         --max-executors {} \
         --executor-cpus {} --executor-mem {}",
        a.program,
        target.address,
        a.warehouse.display(),
        a.max_executors,
        a.min_executors,
        a.max_executors,
        a.executor_cpus,
        a.executor_mem,
    );
    let mut env = serde_json::Map::new();
    if let Some(t) = &target.token {
        // The gateway takes the cluster's token from its environment.
        env.insert("STRATA_TOKEN".into(), serde_json::Value::String(t.clone()));
    }
    serde_json::json!({
        "id": a.id,
        "cmd": cmd,
        "instances": 1,
        "cpus": a.cpus,
        "mem": a.mem,
        "env": env,
        "portDefinitions": [
            {"port": 0, "name": "postgresql"},
            {"port": 0, "name": "http"},
            {"port": 0, "name": "flight-sql"}
        ],
        "healthChecks": [{
            "protocol": "HTTP", "portIndex": 1, "path": "/api/v1/health",
            "gracePeriodSeconds": 120, "intervalSeconds": 2, "timeoutSeconds": 2,
            "maxConsecutiveFailures": 3
        }],
        "upgradeStrategy": {"minimumHealthCapacity": 0, "maximumOverCapacity": 0},
        "backoffSeconds": 1,
        "labels": {"strata.class": "service"}
    })
}
