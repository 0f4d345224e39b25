//! How a manager is set up ([`ManagerConfig`]) and why it could not start
//! ([`ServerError`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::StoreConfig;
use crate::master::MasterConfig;
use crate::registry::RegistryError;

/// How the manager process is set up.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Address to bind (gRPC and HTTP share it).
    pub listen: SocketAddr,
    /// Directory of the registry.
    pub work_dir: PathBuf,
    /// Shared secret required of agents, frameworks and clients, if set.
    pub token: Option<String>,
    /// The master's tunables.
    pub master: MasterConfig,
    /// How often timers run.
    pub tick: Duration,
    /// Run the built-in services scheduler (Marathon's `/v2` API).
    pub services: bool,
    /// Where the registry is kept.
    pub store: StoreConfig,
    /// The `host:port` other managers send clients to when this one leads
    /// (default: the bound address).
    pub advertise: Option<String>,
    /// With a shared store, the leader's lease: how long a dead leader
    /// keeps the leadership.
    pub lease_ttl: Duration,
    /// Serve DNS for the apps (`--dns-listen`).
    pub dns: Option<crate::services::dns::DnsConfig>,
    /// Finished batch jobs kept in the job history (`--job-history`).
    pub job_history: usize,
    /// ACLs (`--acls`): with them, what they do not permit is denied.
    pub acls: Option<crate::auth::acl::Acls>,
    /// The audit log (`--audit-log`; default `audit.jsonl` in the work
    /// directory).
    pub audit_log: Option<PathBuf>,
}

impl ManagerConfig {
    /// Defaults: `127.0.0.1:5050`, registry under `work_dir`.
    pub fn new(work_dir: PathBuf) -> Self {
        ManagerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5050)),
            work_dir,
            token: None,
            master: MasterConfig::default(),
            tick: Duration::from_millis(100),
            services: true,
            store: StoreConfig::Local,
            advertise: None,
            lease_ttl: Duration::from_secs(5),
            dns: None,
            job_history: crate::jobs::DEFAULT_KEPT,
            acls: None,
            audit_log: None,
        }
    }
}

/// Why the manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A non-loopback bind without a token.
    #[error(
        "refusing to listen on non-loopback address {addr} without a token (set --token or STRATA_TOKEN)"
    )]
    TokenRequired {
        /// The address.
        addr: SocketAddr,
    },
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The DNS could not start.
    #[error(transparent)]
    Dns(#[from] crate::services::dns::DnsError),
    /// The audit log could not be opened.
    #[error("cannot open the audit log {}: {source}", path.display())]
    AuditLog {
        /// Its path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
