//! The catalog sessions share, and the one each session sees.
//!
//! The gateway holds one catalog (named after the database clients give,
//! `strata`) with a `public` schema; every session's DDL goes there, so a
//! table one connection creates is seen by all. A session sees it through
//! a [`SessionCatalog`]: the shared schemas, and over them schemas of its
//! own — `pg_catalog`, whose tables are views over the live catalog as that
//! session sees it (`information_schema` is DataFusion's, also live).

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::error::{DataFusionError, Result};

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
}

impl SessionCatalog {
    /// A view of `shared` with no schema of its own yet.
    pub fn new(shared: Arc<dyn CatalogProvider>) -> SessionCatalog {
        SessionCatalog {
            shared,
            own: MemoryCatalogProvider::new(),
        }
    }
}

impl CatalogProvider for SessionCatalog {
    fn schema_names(&self) -> Vec<String> {
        let names: BTreeSet<String> = self
            .own
            .schema_names()
            .into_iter()
            .chain(self.shared.schema_names())
            .collect();
        names.into_iter().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.own.schema(name).or_else(|| self.shared.schema(name))
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
}
