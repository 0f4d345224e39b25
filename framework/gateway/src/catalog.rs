//! The catalog sessions share, and the one each session sees.
//!
//! The gateway holds one catalog (named after the database clients give,
//! `strata`) with a `public` schema; every session's DDL goes there, so a
//! table one connection creates is seen by all. A session sees it through
//! a [`SessionCatalog`]: the shared schemas, and over them schemas of its
//! own — `pg_catalog`, whose tables are views over the live catalog as that
//! session sees it (`information_schema` is DataFusion's, also live) — and
//! its temporary views, seen in `public` by that session alone, over the
//! shared tables of the same names. In every schema, `t@n` is managed
//! table `t` at version `n` (`t VERSION AS OF n`).

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::error::{DataFusionError, Result};

use crate::warehouse::delta::DeltaProvider;

/// The schema sessions start in.
pub const DEFAULT_SCHEMA: &str = "public";

/// Schemas a session holds for itself; they are never shared nor dropped.
const SESSION_SCHEMAS: &[&str] = &["pg_catalog"];

/// The gateway's catalog, shared by every session: a `public` schema to
/// start with.
pub fn shared_catalog() -> Result<Arc<dyn CatalogProvider>> {
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(DEFAULT_SCHEMA, Arc::new(MemorySchemaProvider::new()))?;
    Ok(Arc::new(catalog))
}

/// The catalog one session sees: its own schemas over the shared ones.
#[derive(Debug)]
pub struct SessionCatalog {
    shared: Arc<dyn CatalogProvider>,
    own: MemoryCatalogProvider,
    temporary: Arc<MemorySchemaProvider>,
}

impl SessionCatalog {
    /// A view of `shared` with no schema of its own yet.
    pub fn new(shared: Arc<dyn CatalogProvider>) -> SessionCatalog {
        SessionCatalog {
            shared,
            own: MemoryCatalogProvider::new(),
            temporary: Arc::new(MemorySchemaProvider::new()),
        }
    }

    /// This session's temporary views (seen in `public`, by it alone).
    pub fn temporary(&self) -> &Arc<MemorySchemaProvider> {
        &self.temporary
    }
}

/// `public` as one session sees it: its temporary views over the shared
/// schema. New tables go to the shared schema; a drop takes a temporary
/// view first.
#[derive(Debug)]
struct WithTemporary {
    temporary: Arc<MemorySchemaProvider>,
    shared: Arc<dyn SchemaProvider>,
}

#[async_trait]
impl SchemaProvider for WithTemporary {
    fn table_names(&self) -> Vec<String> {
        sorted_union(self.temporary.table_names(), self.shared.table_names())
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.temporary.table(name).await? {
            Some(t) => Ok(Some(t)),
            None => self.shared.table(name).await,
        }
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        self.shared.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.temporary.table_exist(name) {
            return self.temporary.deregister_table(name);
        }
        self.shared.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.temporary.table_exist(name) || self.shared.table_exist(name)
    }
}

/// A shared schema in which `t@n` is managed table `t` read at version
/// `n`.
#[derive(Debug)]
struct Versioned(Arc<dyn SchemaProvider>);

#[async_trait]
impl SchemaProvider for Versioned {
    fn table_names(&self) -> Vec<String> {
        self.0.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.0.table(name).await? {
            return Ok(Some(t));
        }
        let Some((base, version)) = name.rsplit_once('@') else {
            return Ok(None);
        };
        let Ok(version) = version.parse::<i64>() else {
            return Ok(None);
        };
        let Some(table) = self.0.table(base).await? else {
            return Ok(None);
        };
        let Some(delta) = table.downcast_ref::<DeltaProvider>() else {
            return Err(DataFusionError::Plan(format!(
                "VERSION AS OF reads managed tables; {base} is not one"
            )));
        };
        let at = DeltaProvider::open(delta.url().clone(), Some(version))
            .await
            .map_err(|e| DataFusionError::Plan(format!("{base} VERSION AS OF {version}: {e}")))?;
        Ok(Some(Arc::new(at)))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        self.0.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.0.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.table_exist(name)
    }
}

impl CatalogProvider for SessionCatalog {
    fn schema_names(&self) -> Vec<String> {
        sorted_union(self.own.schema_names(), self.shared.schema_names())
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(own) = self.own.schema(name) {
            return Some(own);
        }
        let shared: Arc<dyn SchemaProvider> = Arc::new(Versioned(self.shared.schema(name)?));
        if name == DEFAULT_SCHEMA {
            return Some(Arc::new(WithTemporary {
                temporary: self.temporary.clone(),
                shared,
            }));
        }
        Some(shared)
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        if SESSION_SCHEMAS.contains(&name) {
            self.own.register_schema(name, schema)
        } else {
            self.shared.register_schema(name, schema)
        }
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        if SESSION_SCHEMAS.contains(&name) || name == DEFAULT_SCHEMA {
            return Err(DataFusionError::Plan(format!(
                "schema {name} is built in and cannot be dropped"
            )));
        }
        self.shared.deregister_schema(name, cascade)
    }
}

/// The names of both lists, each once, in order.
fn sorted_union(a: Vec<String>, b: Vec<String>) -> Vec<String> {
    let names: BTreeSet<String> = a.into_iter().chain(b).collect();
    names.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_share_schemas_but_keep_their_own() {
        let shared = shared_catalog().unwrap();
        let a = SessionCatalog::new(shared.clone());
        let b = SessionCatalog::new(shared.clone());
        a.register_schema("sales", Arc::new(MemorySchemaProvider::new()))
            .unwrap();
        a.register_schema("pg_catalog", Arc::new(MemorySchemaProvider::new()))
            .unwrap();
        assert_eq!(b.schema_names(), vec!["public", "sales"]);
        assert_eq!(a.schema_names(), vec!["pg_catalog", "public", "sales"]);
        assert!(b.schema("pg_catalog").is_none());
        assert!(a.deregister_schema("public", true).is_err());
        assert!(b.deregister_schema("sales", true).unwrap().is_some());
        assert_eq!(a.schema_names(), vec!["pg_catalog", "public"]);
    }

    #[tokio::test]
    async fn a_temporary_view_is_its_sessions_alone() {
        use datafusion::arrow::datatypes::Schema;
        use datafusion::catalog::MemTable;
        let shared = shared_catalog().unwrap();
        let (a, b) = (
            SessionCatalog::new(shared.clone()),
            SessionCatalog::new(shared),
        );
        let t =
            |_: ()| Arc::new(MemTable::try_new(Arc::new(Schema::empty()), vec![vec![]]).unwrap());
        a.temporary().register_table("tmp".into(), t(())).unwrap();
        a.schema("public")
            .unwrap()
            .register_table("kept".into(), t(()))
            .unwrap();
        let (pa, pb) = (a.schema("public").unwrap(), b.schema("public").unwrap());
        assert_eq!(pa.table_names(), vec!["kept", "tmp"]);
        assert_eq!(pb.table_names(), vec!["kept"]);
        assert!(pb.table("tmp").await.unwrap().is_none());
        assert!(pa.deregister_table("tmp").unwrap().is_some());
        assert!(!pa.table_exist("tmp"));
    }
}
