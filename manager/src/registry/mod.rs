//! The durable registry: agents, frameworks, roles (weights, quotas) in an
//! embedded redb database, in a versioned format, or in etcd ([`etcd`],
//! shared by several managers of which one leads).
//!
//! Every write is one redb transaction committed (fsynced) before the
//! manager acknowledges what it records. Records are JSON values, keyed by
//! id, under a `meta` table that holds the format version; a database
//! written by another format version is refused with a clear error rather
//! than misread.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::master::{PersistOp, RegistrySnapshot};

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod transfer;

/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
const FRAMEWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("frameworks");
const ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("roles");
/// Removed frameworks' ids (the value is the id, as JSON).
const TOMBSTONES: TableDefinition<&str, &[u8]> = TableDefinition::new("tombstones");

/// A registry failure.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database could not be opened or written.
    #[error("registry storage error: {source}")]
    Storage {
        /// The underlying error.
        #[source]
        source: Box<redb::Error>,
    },
    /// The database was written by another format version.
    #[error("registry format version {found} is not supported (this build uses {FORMAT_VERSION})")]
    Version {
        /// The version found.
        found: u64,
    },
    /// A record could not be decoded.
    #[error("corrupt registry record {key:?} in {table}: {source}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// Key.
        key: String,
        /// Decode error.
        #[source]
        source: serde_json::Error,
    },
    /// A record could not be encoded.
    #[error("cannot encode a registry record: {source}")]
    Encode {
        /// Encode error.
        #[source]
        source: serde_json::Error,
    },
    /// etcd could not be reached or refused a request.
    #[cfg(feature = "etcd")]
    #[error("etcd: {source}")]
    Etcd {
        /// The client's error.
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// A write was refused because another manager leads now (this one's
    /// epoch is no longer the leader key's).
    #[error("write refused: this manager (epoch {epoch}) no longer leads")]
    Fenced {
        /// This manager's epoch.
        epoch: u64,
    },
    /// A write before this manager was elected.
    #[error("write refused: this manager has not been elected")]
    NotLeader,
    /// An export or import that would lose or misread something.
    #[error("{why}")]
    Refused {
        /// Why.
        why: String,
    },
    /// A store URL that cannot be used.
    #[error("bad store url {url:?}: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: String,
    },
}

fn storage(e: impl Into<redb::Error>) -> RegistryError {
    RegistryError::Storage {
        source: Box::new(e.into()),
    }
}

/// The registry.
pub struct Registry {
    path: std::path::PathBuf,
    /// `None` after an I/O error closed it, until it is opened again.
    db: Option<Database>,
}

impl Registry {
    /// Opens (or creates) the registry at `path`.
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        let db = Database::create(path).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let found = meta
                .get("format_version")
                .map_err(storage)?
                .map(|v| v.value());
            match found {
                Some(v) if v != FORMAT_VERSION => return Err(RegistryError::Version { found: v }),
                Some(_) => {}
                None => {
                    meta.insert("format_version", FORMAT_VERSION)
                        .map_err(storage)?;
                }
            }
            txn.open_table(AGENTS).map_err(storage)?;
            txn.open_table(FRAMEWORKS).map_err(storage)?;
            txn.open_table(ROLES).map_err(storage)?;
            txn.open_table(TOMBSTONES).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(Registry {
            path: path.to_owned(),
            db: Some(db),
        })
    }

    fn db(&self) -> Result<&Database, RegistryError> {
        self.db.as_ref().ok_or_else(|| RegistryError::Refused {
            why: format!(
                "the registry {} is closed after an I/O error and cannot be opened again yet",
                self.path.display()
            ),
        })
    }

    /// Opens the database again: redb refuses every transaction after an
    /// I/O error (a full disk) until it is. Logged, and tried again at the
    /// next write, when it fails.
    fn reopen(&mut self) {
        self.db = None;
        match Database::create(&self.path) {
            Ok(db) => self.db = Some(db),
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e,
                "cannot open the registry again; retrying at the next write"),
        }
    }

    /// Begins a new term: the number of this start of a manager on this
    /// registry, one more than every earlier start's, durable before it is
    /// returned. Ids the master issues carry it, so no id is issued twice
    /// across restarts, including the ids of removed agents and frameworks.
    pub fn begin_term(&self) -> Result<u64, RegistryError> {
        let txn = self.db()?.begin_write().map_err(storage)?;
        let term = {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let last = meta.get("term").map_err(storage)?.map(|v| v.value());
            let term = last.unwrap_or(0) + 1;
            meta.insert("term", term).map_err(storage)?;
            term
        };
        txn.commit().map_err(storage)?;
        Ok(term)
    }

    /// The term of the last start (0 before the first).
    pub fn term(&self) -> Result<u64, RegistryError> {
        let txn = self.db()?.begin_read().map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        Ok(meta.get("term").map_err(storage)?.map_or(0, |v| v.value()))
    }

    /// Raises the term to at least `term` (an import from a store whose
    /// managers used terms up to it), durably.
    pub fn raise_term(&self, term: u64) -> Result<(), RegistryError> {
        let txn = self.db()?.begin_write().map_err(storage)?;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let last = meta.get("term").map_err(storage)?.map_or(0, |v| v.value());
            meta.insert("term", last.max(term)).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(())
    }

    /// Reads everything.
    pub fn load(&self) -> Result<RegistrySnapshot, RegistryError> {
        let txn = self.db()?.begin_read().map_err(storage)?;
        let mut snap = RegistrySnapshot::default();
        fn read<T: serde::de::DeserializeOwned>(
            txn: &redb::ReadTransaction,
            def: TableDefinition<&str, &[u8]>,
            name: &'static str,
        ) -> Result<Vec<T>, RegistryError> {
            let table = txn.open_table(def).map_err(storage)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                let rec =
                    serde_json::from_slice(v.value()).map_err(|source| RegistryError::Corrupt {
                        table: name,
                        key: k.value().to_owned(),
                        source,
                    })?;
                out.push(rec);
            }
            Ok(out)
        }
        snap.agents = read(&txn, AGENTS, "agents")?;
        snap.frameworks = read(&txn, FRAMEWORKS, "frameworks")?;
        snap.roles = read(&txn, ROLES, "roles")?;
        snap.removed_frameworks = read(&txn, TOMBSTONES, "tombstones")?;
        Ok(snap)
    }

    /// Applies writes in one durable transaction. After a failure (a full
    /// disk) the database is opened again, so a later write can succeed
    /// once the cause is gone.
    pub fn apply(&mut self, ops: &[PersistOp]) -> Result<(), RegistryError> {
        if ops.is_empty() {
            return Ok(());
        }
        if self.db.is_none() {
            self.reopen();
        }
        let result = self.write(ops);
        if result.is_err() {
            self.reopen();
        }
        result
    }

    fn write(&self, ops: &[PersistOp]) -> Result<(), RegistryError> {
        let txn = self.db()?.begin_write().map_err(storage)?;
        {
            let mut agents = txn.open_table(AGENTS).map_err(storage)?;
            let mut frameworks = txn.open_table(FRAMEWORKS).map_err(storage)?;
            let mut roles = txn.open_table(ROLES).map_err(storage)?;
            let mut tombstones = txn.open_table(TOMBSTONES).map_err(storage)?;
            for op in ops {
                match op {
                    PersistOp::PutAgent(a) => {
                        agents
                            .insert(a.id.as_str(), encode(a)?.as_slice())
                            .map_err(storage)?;
                    }
                    PersistOp::PutFramework(f) => {
                        frameworks
                            .insert(f.id.as_str(), encode(f)?.as_slice())
                            .map_err(storage)?;
                    }
                    PersistOp::RemoveFramework(id) => {
                        frameworks.remove(id.as_str()).map_err(storage)?;
                        tombstones
                            .insert(id.as_str(), encode(id)?.as_slice())
                            .map_err(storage)?;
                    }
                    PersistOp::PutRole(r) => {
                        roles
                            .insert(r.role.as_str(), encode(r)?.as_slice())
                            .map_err(storage)?;
                    }
                }
            }
        }
        txn.commit().map_err(storage)?;
        Ok(())
    }
}

/// A record as stored: its JSON.
fn encode<T: serde::Serialize>(record: &T) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec(record).map_err(|source| RegistryError::Encode { source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::{AgentRecord, FrameworkRecord, RoleRecord};
    use strata_proto::resources::Resources;

    #[test]
    fn each_start_begins_a_later_term() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.redb");
        let reg = Registry::open(&path).unwrap();
        assert_eq!(reg.begin_term().unwrap(), 1);
        assert_eq!(reg.begin_term().unwrap(), 2);
        drop(reg);
        let reg = Registry::open(&path).unwrap();
        assert_eq!(reg.begin_term().unwrap(), 3);
    }

    #[test]
    fn round_trip_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.redb");
        let mut reg = Registry::open(&path).unwrap();
        let agent = AgentRecord {
            id: "a1".into(),
            hostname: "h".into(),
            address: "127.0.0.1:1".into(),
            resources: Resources::new(2.0, 512.0),
            attributes: vec![("rack".into(), "r1".into())],
            drain: None,
        };
        let fw = FrameworkRecord {
            id: "f1".into(),
            name: "n".into(),
            user: "u".into(),
            role: "*".into(),
            default_class: "batch".into(),
            failover_timeout_ms: 1000,
            hostname: "h".into(),
            labels: Default::default(),
            principal: String::new(),
        };
        let role = RoleRecord {
            role: "eng".into(),
            weight: 2.0,
            quota: Some(Resources::new(4.0, 100.0)),
        };
        reg.apply(&[
            PersistOp::PutAgent(agent.clone()),
            PersistOp::PutFramework(fw.clone()),
            PersistOp::PutRole(role.clone()),
        ])
        .unwrap();
        drop(reg);
        let mut reg = Registry::open(&path).unwrap();
        let snap = reg.load().unwrap();
        assert_eq!(snap.agents, vec![agent]);
        assert_eq!(snap.frameworks, vec![fw.clone()]);
        assert_eq!(snap.roles, vec![role]);
        reg.apply(&[PersistOp::RemoveFramework(fw.id.clone())])
            .unwrap();
        let snap = reg.load().unwrap();
        assert!(snap.frameworks.is_empty());
        assert_eq!(
            snap.removed_frameworks,
            vec![fw.id],
            "its id is kept as removed"
        );
        // A database of another version is refused.
        let txn = reg.db().unwrap().begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", 99)
            .unwrap();
        txn.commit().unwrap();
        drop(reg);
        assert!(matches!(
            Registry::open(&path),
            Err(RegistryError::Version { found: 99 })
        ));
    }
}
