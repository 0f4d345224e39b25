//! Strata's SQL gateway: one long-running endpoint that PostgreSQL clients
//! (psql, psycopg, SQLAlchemy, pgJDBC…) and Arrow Flight SQL clients (ADBC)
//! connect to, whose queries run as jobs on the cluster.
//!
//! ```text
//!  client ──PostgreSQL wire──▶ pg (pgwire: startup/auth, simple + extended protocol, cancel)
//!  client ──Flight SQL──────▶ flight (tonic: session tokens, statements, get_objects, ingest)
//!                                │ one GatewaySession per connection / session token
//!                                ▼
//!                      session (settings, SHOW, transactions, pg_catalog, version())
//!                        │ plans with DataFusion over the shared catalog
//!                        ├── reads no files ─▶ answered in the gateway (SELECT 1, catalog queries)
//!                        ├── reads files ────▶ a job on the Driver's executors (the cluster)
//!                        └── writes a managed table ─▶ a job whose tasks write Parquet files,
//!                                then one Delta commit in the gateway (warehouse::delta)
//! ```
//!
//! The gateway is a batch driver: [`Gateway::start`] takes the
//! [`Driver`] whose executors run every session's queries (its dynamic
//! allocation keeps between `min` and `max` executors, releasing idle
//! ones). Modules depend one way: `pg`, `flight` ──▶ `session` ──▶ `catalog`,
//! `registry`, `error`.
//!
//! - [`catalog`]: the catalog sessions share (named after the database,
//!   `strata`, with schema `public`) and each session's view of it.
//! - [`session`]: one connection's session over the batch engine's
//!   [`strata_framework::session::Session`].
//! - [`registry`]: the sessions and running queries (listing, cancel).
//! - [`empty`]: scans of empty in-memory tables planned as empty relations.
//! - [`functions`]: `version()` and PostgreSQL's text arrays.
//! - [`http`]: the HTTP API (sessions, running queries, cancel).
//! - [`rewrite`]: PostgreSQL syntax DataFusion does not plan, translated.
//! - [`pg`]: the PostgreSQL wire protocol.
//! - [`pg_views`]: `pg_tables` and `pg_views` split by relation kind.
//! - [`flight`]: Arrow Flight SQL (ADBC), over the same sessions.
//! - [`warehouse`]: the catalog's definitions kept across restarts, and
//!   its managed tables (Delta Lake: writes, `MERGE`, `VACUUM`, versions).
//! - [`copy`]: `COPY … FROM STDIN`'s text and CSV rows.
//! - [`settings`]: the version, settings and column names clients see.
//! - [`error`]: errors with their SQLSTATE.

pub mod catalog;
pub mod copy;
pub mod empty;
pub mod error;
pub mod flight;
pub mod functions;
pub mod http;
pub mod pg;
pub mod pg_views;
pub mod registry;
pub mod rewrite;
pub mod rows;
pub mod session;
pub mod settings;
pub mod statement;
pub mod warehouse;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use datafusion::catalog::CatalogProvider;
use pgwire::api::{ConnectionManager, RandomPidSecretKeyGenerator};
use strata_framework::driver::Driver;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use pg::auth::TokenSecret;
use registry::Registry;

/// The gateway's settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Where the PostgreSQL protocol listens (default `127.0.0.1:5432`).
    pub pg_listen: SocketAddr,
    /// Where the HTTP API listens (sessions, queries, cancel), if at all.
    pub http_listen: Option<SocketAddr>,
    /// Where Arrow Flight SQL listens, if at all (`strata gateway`'s
    /// default: `127.0.0.1:32010`).
    pub flight_listen: Option<SocketAddr>,
    /// The database clients name, which is the catalog (`strata`).
    pub database: String,
    /// Partitions per stage of the queries' plans.
    pub partitions: usize,
    /// The cluster's token: clients give it as their password. Without
    /// one the gateway listens on loopback only.
    pub token: Option<String>,
    /// Connections at once; past it a startup is refused (53300).
    pub max_connections: usize,
    /// Where the catalog is kept across restarts (none: it lives as long
    /// as the gateway).
    pub warehouse: Option<std::path::PathBuf>,
    /// Every session's `strata.query_memory_limit` to start with: what one
    /// query's tasks may hold at once on each executor (`512m`, `2g`…;
    /// empty: no cap but the executor's). A session may `SET` its own.
    pub query_memory: String,
}

impl GatewayConfig {
    /// The defaults, with queries cut into `partitions` partitions.
    pub fn new(partitions: usize) -> GatewayConfig {
        GatewayConfig {
            pg_listen: SocketAddr::from(([127, 0, 0, 1], 5432)),
            http_listen: None,
            flight_listen: None,
            database: "strata".to_owned(),
            partitions: partitions.max(1),
            token: None,
            max_connections: 100,
            warehouse: None,
            query_memory: String::new(),
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No token, and an address other than loopback.
    #[error(
        "the gateway listens on {0} without a token: give the cluster's token (--token or \
         STRATA_TOKEN), or listen on loopback"
    )]
    NoToken(SocketAddr),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The catalog could not be made.
    #[error("catalog: {0}")]
    Catalog(#[from] datafusion::error::DataFusionError),
    /// The warehouse could not be opened.
    #[error(transparent)]
    Warehouse(#[from] warehouse::WarehouseError),
}

/// A gateway: its sessions share its catalog and its driver.
pub struct Gateway {
    config: GatewayConfig,
    driver: Arc<Driver>,
    catalog: Arc<dyn CatalogProvider>,
    registry: Arc<Registry>,
    connections: Arc<Semaphore>,
    cancels: Arc<ConnectionManager>,
    pids: Arc<RandomPidSecretKeyGenerator>,
    secret: Option<Arc<TokenSecret>>,
    warehouse: Option<warehouse::Warehouse>,
    /// DDL runs one statement at a time (with its warehouse write).
    ddl: tokio::sync::Mutex<()>,
}

impl Gateway {
    /// Binds the listeners and serves until [`GatewayHandle::shutdown`].
    pub async fn start(
        config: GatewayConfig,
        driver: Arc<Driver>,
    ) -> Result<GatewayHandle, StartError> {
        let mut listens = std::iter::once(config.pg_listen)
            .chain(config.http_listen)
            .chain(config.flight_listen);
        if let Some(open) = listens.find(|a| !a.ip().is_loopback())
            && config.token.is_none()
        {
            return Err(StartError::NoToken(open));
        }
        let (listener, pg_addr) = bind(config.pg_listen).await?;
        let http = match config.http_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let flight = match config.flight_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let gateway = Arc::new(Gateway {
            catalog: catalog::shared_catalog()?,
            registry: Arc::new(Registry::default()),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            cancels: Arc::new(ConnectionManager::new()),
            pids: Arc::new(RandomPidSecretKeyGenerator::default()),
            secret: config
                .token
                .as_deref()
                .map(|t| Arc::new(TokenSecret::new(t))),
            warehouse: match &config.warehouse {
                Some(dir) => Some(warehouse::Warehouse::open(dir).await?),
                None => None,
            },
            ddl: tokio::sync::Mutex::new(()),
            driver,
            config,
        });
        gateway.replay_warehouse().await;
        let (stop, stopped) = watch::channel(false);
        let mut serving = vec![tokio::spawn(pg::serve(
            listener,
            gateway.clone(),
            stopped.clone(),
        ))];
        let flight_addr = flight.as_ref().map(|(_, a)| *a);
        if let Some((listener, _)) = flight {
            serving.push(tokio::spawn(flight::serve(
                listener,
                gateway.clone(),
                stopped.clone(),
            )));
        }
        let http_addr = http.as_ref().map(|(_, a)| *a);
        if let Some((listener, _)) = http {
            let router = http::router(gateway.clone());
            let mut stopped = stopped;
            serving.push(tokio::spawn(async move {
                let shutdown = async move {
                    stopped.wait_for(|s| *s).await.ok();
                };
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::warn!(error = %e, "the gateway's HTTP API stopped");
                }
            }));
        }
        tracing::info!(pg = %pg_addr, flight = ?flight_addr, http = ?http_addr, database = %gateway.config.database, "gateway serving");
        Ok(GatewayHandle {
            gateway,
            pg_addr,
            http_addr,
            flight_addr,
            stop,
            serving,
        })
    }

    /// Its sessions and queries.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Makes the warehouse's definitions again in the shared catalog, in
    /// order; one that fails (its files gone) is reported and kept.
    async fn replay_warehouse(self: &Arc<Self>) {
        let Some(w) = &self.warehouse else { return };
        let definitions = w.definitions();
        if definitions.is_empty() {
            return;
        }
        let session = match session::GatewaySession::open(self, "strata", "warehouse", "gateway") {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot replay the warehouse's catalog");
                return;
            }
        };
        let mut made = 0;
        for d in &definitions {
            let result = match w.make_managed(d, session.context()).await {
                Ok(true) => Ok(()),
                Ok(false) => session.run_sql(&d.sql).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(()) => made += 1,
                Err(e) => tracing::warn!(
                    schema = %d.schema, name = %d.name, error = %e,
                    "a warehouse definition could not be made again"
                ),
            }
        }
        tracing::info!(warehouse = %w.location(), made, of = definitions.len(), "catalog replayed");
    }
}

/// Binds a listener; its address (the port chosen for port 0).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let failed = |source| StartError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}

/// A running gateway.
pub struct GatewayHandle {
    gateway: Arc<Gateway>,
    pg_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    flight_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    serving: Vec<tokio::task::JoinHandle<()>>,
}

impl GatewayHandle {
    /// Where the PostgreSQL protocol listens.
    pub fn pg_addr(&self) -> SocketAddr {
        self.pg_addr
    }

    /// Where the HTTP API listens, if it does.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Where Arrow Flight SQL listens, if it does.
    pub fn flight_addr(&self) -> Option<SocketAddr> {
        self.flight_addr
    }

    /// The gateway.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Stops accepting connections (open ones end with the process).
    pub async fn shutdown(self) {
        self.stop.send(true).ok();
        for task in self.serving {
            task.await.ok();
        }
    }
}
