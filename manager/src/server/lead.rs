//! Becoming the leader: with the embedded registry at once (one manager per
//! registry); with etcd after an election, standing by meanwhile. Either
//! way the result is the registry's contents, the term the master's ids
//! carry, and the store the core writes through.

#[cfg(feature = "etcd")]
use std::time::Duration;
#[cfg(feature = "etcd")]
use tracing::{info, warn};

use std::sync::Arc;

use crate::master::{PersistOp, RegistrySnapshot};
use crate::registry::{Registry, RegistryError};
#[cfg(feature = "etcd")]
use crate::services::store::{DocumentError, DocumentFuture};
use crate::services::store::{DocumentStore, FileDocument};

/// Where the manager keeps its registry.
#[derive(Clone, Debug, Default)]
pub enum StoreConfig {
    /// The embedded redb registry under the work directory: one manager.
    #[default]
    Local,
    /// etcd, shared by several managers of which one leads.
    #[cfg(feature = "etcd")]
    Etcd(crate::registry::etcd::EtcdUrl),
}

impl std::str::FromStr for StoreConfig {
    type Err = RegistryError;

    /// `local`, or `etcd://H1:2379,H2:2379[/prefix]` (in a build with the
    /// `etcd` feature).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "local" {
            return Ok(StoreConfig::Local);
        }
        #[cfg(feature = "etcd")]
        if s.starts_with("etcd://") {
            return s.parse().map(StoreConfig::Etcd);
        }
        let why = if s.starts_with("etcd://") {
            "this build has no etcd support (build with `--features etcd`)"
        } else {
            "expected `local` or `etcd://HOST:PORT,…`"
        };
        Err(RegistryError::BadUrl {
            url: s.to_owned(),
            why: why.to_owned(),
        })
    }
}

/// The store the core writes through.
pub(super) enum Backend {
    Local(Registry),
    #[cfg(feature = "etcd")]
    Etcd(Box<crate::registry::etcd::EtcdRegistry>),
}

impl Backend {
    /// Applies one batch of writes durably (fenced, with etcd).
    pub(super) async fn apply(&mut self, ops: &[PersistOp]) -> Result<(), RegistryError> {
        match self {
            Backend::Local(r) => r.apply(ops),
            #[cfg(feature = "etcd")]
            Backend::Etcd(r) => r.apply(ops).await,
        }
    }
}

impl Backend {
    /// Where the services scheduler keeps its state: `services.json` in
    /// the work directory beside the local registry; a document in etcd
    /// beside the shared one, so whichever manager leads next finds it.
    pub(super) fn services_store(&self, work_dir: &std::path::Path) -> Arc<dyn DocumentStore> {
        match self {
            Backend::Local(_) => Arc::new(FileDocument::new(work_dir.join("services.json"))),
            #[cfg(feature = "etcd")]
            Backend::Etcd(r) => Arc::new(EtcdDocument {
                registry: (**r).clone(),
                name: "services",
            }),
        }
    }
}

impl Backend {
    /// Where the principals are kept: `principals.json` in the work
    /// directory, or a document in etcd beside the shared registry.
    pub(super) fn principals_store(&self, work_dir: &std::path::Path) -> Arc<dyn DocumentStore> {
        match self {
            Backend::Local(_) => Arc::new(FileDocument::new(work_dir.join("principals.json"))),
            #[cfg(feature = "etcd")]
            Backend::Etcd(r) => Arc::new(EtcdDocument {
                registry: (**r).clone(),
                name: "principals",
            }),
        }
    }
}

/// A document in etcd, written fenced on the leader's epoch.
#[cfg(feature = "etcd")]
struct EtcdDocument {
    registry: crate::registry::etcd::EtcdRegistry,
    name: &'static str,
}

#[cfg(feature = "etcd")]
impl EtcdDocument {
    fn error(&self, doing: &'static str, e: RegistryError) -> DocumentError {
        DocumentError {
            doing,
            document: self.describe(),
            source: Box::new(e),
        }
    }
}

#[cfg(feature = "etcd")]
impl DocumentStore for EtcdDocument {
    fn describe(&self) -> String {
        format!("the store's document {}", self.name)
    }

    fn read(&self) -> DocumentFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            self.registry
                .document(self.name)
                .await
                .map_err(|e| self.error("reading", e))
        })
    }

    fn write(&self, bytes: Vec<u8>) -> DocumentFuture<'_, ()> {
        Box::pin(async move {
            self.registry
                .put_document(self.name, &bytes)
                .await
                .map_err(|e| self.error("writing", e))
        })
    }

    fn set_aside(&self, bytes: Vec<u8>) -> DocumentFuture<'_, String> {
        Box::pin(async move {
            let aside = format!("{}.bad", self.name);
            self.registry
                .put_document(&aside, &bytes)
                .await
                .map_err(|e| self.error("setting aside", e))?;
            Ok(format!("the store's document {aside}"))
        })
    }
}

/// What leading starts from.
pub(super) struct Led {
    pub snapshot: RegistrySnapshot,
    /// Ids the master issues carry it: larger than every earlier leader's.
    pub term: u64,
    pub backend: Backend,
    /// Turns true when the leadership is lost (never, with the local store).
    pub lost: Option<tokio::sync::watch::Receiver<bool>>,
    /// Gives the leadership up at once (on a graceful stop).
    pub resign: Option<Resign>,
}

/// A way to give leadership up.
pub(super) enum Resign {
    #[cfg(feature = "etcd")]
    Etcd(
        Box<crate::registry::etcd::EtcdRegistry>,
        crate::registry::etcd::Leadership,
    ),
}

impl Resign {
    pub(super) async fn resign(self) {
        match self {
            #[cfg(feature = "etcd")]
            Resign::Etcd(mut r, l) => match r.resign(&l).await {
                Ok(()) => info!("resigned the leadership"),
                Err(e) => warn!(error = %e, "cannot resign; the lease expires on its own"),
            },
        }
    }
}

/// Opens the local registry and begins a new term: this manager leads.
pub(super) fn lead_local(registry: Registry) -> Result<Led, RegistryError> {
    let snapshot = registry.load()?;
    // Each start issues ids of its own term: never one an earlier start
    // issued, whether or not its holder is still registered.
    let term = registry.begin_term()?;
    Ok(Led {
        snapshot,
        term,
        backend: Backend::Local(registry),
        lost: None,
        resign: None,
    })
}

/// Connects to etcd (retrying with backoff while it cannot, saying so) and
/// campaigns until elected; `observe` is told the leader while this one
/// stands by.
#[cfg(feature = "etcd")]
pub(super) async fn lead_etcd(
    url: &crate::registry::etcd::EtcdUrl,
    me: &crate::registry::etcd::LeaderInfo,
    ttl: Duration,
    mut observe: impl FnMut(Option<String>) + Send,
) -> Led {
    use crate::registry::etcd::EtcdRegistry;
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            let mut registry = EtcdRegistry::connect(url).await?;
            let leadership = registry
                .campaign(me, ttl, |l| observe(l.map(|l| l.advertise)))
                .await?;
            let snapshot = registry.load().await?;
            let floor = registry.term_floor().await?;
            Ok::<_, RegistryError>((registry, leadership, snapshot, floor))
        };
        match attempt.await {
            Ok((registry, leadership, snapshot, floor)) => {
                return Led {
                    snapshot,
                    // Above every term of a registry imported into this
                    // one (`strata registry import`).
                    term: floor + leadership.epoch,
                    lost: Some(leadership.lost.clone()),
                    resign: Some(Resign::Etcd(Box::new(registry.clone()), leadership)),
                    backend: Backend::Etcd(Box::new(registry)),
                };
            }
            Err(e) => {
                warn!(store = ?url.endpoints, error = %e, retry_in = ?backoff,
                    "cannot reach the store to campaign; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
