//! `strata registry export|import` for etcd (see [`crate::registry::transfer`]).
//!
//! The term of an etcd registry is its floor (`PREFIX/term_floor`, set by
//! an import) plus the revisions of its elections: a manager's epoch is
//! the floor plus its leader key's create revision.

use std::collections::BTreeMap;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::EtcdRegistry;
use crate::registry::RegistryError;
use crate::registry::transfer::{Export, FORMAT, document_bytes, document_value};

/// Writes per transaction (etcd refuses more than 128 by default).
const CHUNK: usize = 100;

impl EtcdRegistry {
    fn floor_key(&self) -> String {
        self.key("term_floor")
    }

    /// The floor under every epoch (0 unless an import set it).
    pub async fn term_floor(&self) -> Result<u64, RegistryError> {
        let resp = self
            .any_member(|c| {
                let key = self.floor_key();
                async move { c.kv_client().get(key, None).await }
            })
            .await?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Every document, by name.
    async fn documents(&self) -> Result<(BTreeMap<String, serde_json::Value>, u64), RegistryError> {
        let prefix = self.key("documents/");
        let resp = self.get_prefix(&prefix).await?;
        let revision = resp.header().map_or(0, |h| h.revision()).max(0) as u64;
        let docs = resp
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                let name = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
                (name, document_value(kv.value()))
            })
            .collect();
        Ok((docs, revision))
    }

    /// Exports the records, documents and term (managers may run: it is a
    /// consistent read of each part, not of the whole; stop them for an
    /// exact copy).
    pub async fn export(&self) -> Result<Export, RegistryError> {
        let records = self.load().await?;
        let (documents, revision) = self.documents().await?;
        Ok(Export {
            format: FORMAT.to_owned(),
            term: self.term_floor().await? + revision,
            records,
            documents,
        })
    }

    /// Imports into an empty registry with no manager running: refused
    /// when a leader holds the key or any record or document is there.
    pub async fn import(&self, export: &Export) -> Result<(), RegistryError> {
        if let Some(l) = self.leader().await? {
            return Err(RegistryError::Refused {
                why: format!(
                    "a manager leads on this store ({}); stop every manager first",
                    l.advertise
                ),
            });
        }
        let (documents, _) = self.documents().await?;
        let records = self.load().await?;
        if !documents.is_empty()
            || !records.agents.is_empty()
            || !records.frameworks.is_empty()
            || !records.roles.is_empty()
            || !records.removed_frameworks.is_empty()
        {
            return Err(RegistryError::Refused {
                why:
                    "the registry in etcd is not empty; import under a new prefix (etcd://…/PREFIX)"
                        .into(),
            });
        }
        let floor = self.term_floor().await?.max(export.term);
        let mut writes = vec![TxnOp::put(self.floor_key(), floor.to_string(), None)];
        for op in export.ops() {
            writes.extend(self.write_op(&op)?);
        }
        for (name, doc) in &export.documents {
            writes.push(TxnOp::put(
                self.key(&format!("documents/{name}")),
                document_bytes(doc)?,
                None,
            ));
        }
        // Each part holds only while no manager has been elected meanwhile.
        let no_leader = Compare::version(self.leader_key(), CompareOp::Equal, 0);
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            let part: Vec<TxnOp> = writes.by_ref().take(CHUNK).collect();
            let txn = Txn::new().when([no_leader.clone()]).and_then(part);
            let resp = self
                .any_member(|c| {
                    let txn = txn.clone();
                    async move { c.kv_client().txn(txn).await }
                })
                .await?;
            if !resp.succeeded() {
                return Err(RegistryError::Refused {
                    why: "a manager was elected during the import; stop every manager and import again under a new prefix".into(),
                });
            }
        }
        Ok(())
    }
}
