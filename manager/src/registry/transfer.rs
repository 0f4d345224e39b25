//! Moving a cluster's persisted state between stores: `strata registry
//! export` writes one JSON file from the embedded registry or from etcd,
//! `strata registry import` loads it into an empty one of either kind.
//!
//! The file holds the records (agents with their drains, frameworks,
//! roles), the documents beside them (the services scheduler's state) and
//! the **term**: the highest number the source's managers used in the ids
//! they issued and the epochs they told agents. The target starts above
//! it (the local registry's term counter is raised to it; etcd keeps it as
//! a floor added to every election's revision), so no id is issued twice
//! and no agent refuses the new managers as older ones.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Registry, RegistryError};
use crate::master::{PersistOp, RegistrySnapshot};

/// The file format's name and version.
pub const FORMAT: &str = "strata-registry/1";

/// The services scheduler's document.
pub const SERVICES_DOCUMENT: &str = "services";

/// A cluster's persisted state, as exported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Export {
    /// [`FORMAT`].
    pub format: String,
    /// Ids and epochs of the target's managers are above this.
    pub term: u64,
    /// The records.
    #[serde(flatten)]
    pub records: RegistrySnapshot,
    /// Documents by name (JSON values), the services scheduler's under
    /// [`SERVICES_DOCUMENT`].
    #[serde(default)]
    pub documents: BTreeMap<String, serde_json::Value>,
}

impl Export {
    /// Reads an export, refusing another format.
    pub fn parse(bytes: &[u8]) -> Result<Export, RegistryError> {
        let corrupt = |source| RegistryError::Corrupt {
            table: "export",
            key: "(file)".into(),
            source,
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(corrupt)?;
        let format = value["format"].as_str().unwrap_or_default();
        if format != FORMAT {
            return Err(RegistryError::Refused {
                why: format!("an export of format {format:?}, this build reads {FORMAT:?}"),
            });
        }
        serde_json::from_value(value).map_err(corrupt)
    }

    /// The writes that recreate the records.
    pub fn ops(&self) -> Vec<PersistOp> {
        let r = &self.records;
        r.agents
            .iter()
            .cloned()
            .map(PersistOp::PutAgent)
            .chain(r.frameworks.iter().cloned().map(PersistOp::PutFramework))
            .chain(r.roles.iter().cloned().map(PersistOp::PutRole))
            .chain(
                r.removed_frameworks
                    .iter()
                    .cloned()
                    .map(PersistOp::RemoveFramework),
            )
            .collect()
    }

    /// How many records and documents it holds, for messages.
    pub fn summary(&self) -> String {
        let r = &self.records;
        format!(
            "{} agents, {} frameworks, {} roles, {} documents, term {}",
            r.agents.len(),
            r.frameworks.len(),
            r.roles.len(),
            self.documents.len(),
            self.term
        )
    }
}

/// A document's bytes as a JSON value (a string when they are not JSON).
pub(super) fn document_value(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// A document's value as the bytes stored.
pub(super) fn document_bytes(value: &serde_json::Value) -> Result<Vec<u8>, RegistryError> {
    match value {
        serde_json::Value::String(s) => Ok(s.clone().into_bytes()),
        v => serde_json::to_vec_pretty(v).map_err(|source| RegistryError::Encode { source }),
    }
}

fn is_empty(s: &RegistrySnapshot) -> bool {
    s.agents.is_empty()
        && s.frameworks.is_empty()
        && s.roles.is_empty()
        && s.removed_frameworks.is_empty()
}

/// The embedded registry of a manager's work directory and the services
/// document beside it. Opening it fails while a manager runs there.
fn open_local(work_dir: &Path) -> Result<Registry, RegistryError> {
    Registry::open(&work_dir.join("registry.redb")).map_err(|e| RegistryError::Refused {
        why: format!(
            "cannot open the registry in {} ({e}); is a manager running there? stop it first",
            work_dir.display()
        ),
    })
}

/// Exports the embedded registry of `work_dir` (its manager stopped).
pub fn export_local(work_dir: &Path) -> Result<Export, RegistryError> {
    let registry = open_local(work_dir)?;
    let mut documents = BTreeMap::new();
    let services = work_dir.join("services.json");
    match std::fs::read(&services) {
        Ok(bytes) => {
            documents.insert(SERVICES_DOCUMENT.to_owned(), document_value(&bytes));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(RegistryError::Refused {
                why: format!("cannot read {}: {e}", services.display()),
            });
        }
    }
    Ok(Export {
        format: FORMAT.to_owned(),
        term: registry.term()?,
        records: registry.load()?,
        documents,
    })
}

/// Imports into the embedded registry of `work_dir`, which must be empty
/// (and its manager stopped).
pub fn import_local(work_dir: &Path, export: &Export) -> Result<(), RegistryError> {
    let mut registry = open_local(work_dir)?;
    let services = work_dir.join("services.json");
    if !is_empty(&registry.load()?) || services.exists() {
        return Err(RegistryError::Refused {
            why: format!(
                "the registry in {} is not empty; import into a new work directory",
                work_dir.display()
            ),
        });
    }
    registry.raise_term(export.term)?;
    registry.apply(&export.ops())?;
    if let Some(doc) = export.documents.get(SERVICES_DOCUMENT) {
        strata_proto::fsutil::write_atomic(&services, &document_bytes(doc)?).map_err(|e| {
            RegistryError::Refused {
                why: format!("cannot write {}: {e}", services.display()),
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::{AgentRecord, DrainRecord, RoleRecord};
    use strata_proto::ids::{AgentId, FrameworkId, Role};
    use strata_proto::resources::Resources;
    use strata_proto::time::Timestamp;

    fn sample() -> Export {
        Export {
            format: FORMAT.into(),
            term: 41,
            records: RegistrySnapshot {
                agents: vec![AgentRecord {
                    id: AgentId::new("agent-m40-3"),
                    hostname: "h1".into(),
                    address: "10.0.0.4:5051".into(),
                    resources: Resources::new(4.0, 8192.0),
                    attributes: vec![("rack".into(), "r1".into())],
                    drain: Some(DrainRecord {
                        since: Timestamp::from_millis(1),
                        deadline: Timestamp::from_millis(2),
                    }),
                }],
                frameworks: vec![],
                roles: vec![RoleRecord {
                    role: Role::new("eng"),
                    weight: 3.0,
                    quota: None,
                }],
                removed_frameworks: vec![FrameworkId::new("fw-m39-7")],
            },
            documents: BTreeMap::from([(
                SERVICES_DOCUMENT.to_owned(),
                serde_json::json!({"framework_id": "fw-m40-1", "services": {}}),
            )]),
        }
    }

    #[test]
    fn a_local_registry_round_trips_and_its_term_carries_over() {
        let dir = tempfile::tempdir().unwrap();
        let export = sample();
        import_local(dir.path(), &export).unwrap();
        // The next start issues ids above the source's.
        let registry = Registry::open(&dir.path().join("registry.redb")).unwrap();
        assert_eq!(registry.begin_term().unwrap(), 42);
        drop(registry);
        let again = export_local(dir.path()).unwrap();
        assert_eq!(again.records, export.records);
        assert_eq!(again.documents, export.documents);
        assert_eq!(again.term, 42);
        // Through the file format too.
        let bytes = serde_json::to_vec(&again).unwrap();
        assert_eq!(Export::parse(&bytes).unwrap(), again);
    }

    #[test]
    fn an_import_never_overwrites_and_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        import_local(dir.path(), &sample()).unwrap();
        let err = import_local(dir.path(), &sample()).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        let err = Export::parse(br#"{"format": "other/9", "term": 1}"#).unwrap_err();
        assert!(err.to_string().contains("other/9"), "{err}");
        assert!(Export::parse(b"{not json").is_err());
    }

    #[test]
    fn a_registry_held_by_a_running_manager_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Registry::open(&dir.path().join("registry.redb")).unwrap();
        let err = export_local(dir.path()).unwrap_err();
        assert!(err.to_string().contains("stop it first"), "{err}");
    }
}
