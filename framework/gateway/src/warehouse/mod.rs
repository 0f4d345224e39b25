//! The warehouse: where the gateway keeps its catalog across restarts.
//!
//! `catalog.json` in the warehouse directory holds the definition of every
//! schema, external table and view sessions created, in the order they
//! were made (as the SQL that made them, which DataFusion's plans keep);
//! a drop removes them. It is rewritten atomically (a temporary file,
//! fsync, rename) after each change, under the gateway's DDL lock and an
//! advisory lock on `catalog.lock` (other processes — `strata sql
//! --warehouse`, a second gateway — write it too; each change starts from
//! what the file holds), so DDL at once never leaves a torn or mixed file,
//! and a process killed mid-change leaves the catalog as it was before or
//! after it. A starting gateway replays the file into its catalog. A
//! warehouse may also be a prefix in an object store (`s3://bucket/wh`),
//! whose catalog object is changed by conditional writes ([`store`]).
//!
//! Tables made without a location (`CREATE TABLE t (…)`, `CREATE TABLE …
//! AS`) are managed tables: Delta Lake tables under `tables/` ([`delta`],
//! [`managed`]), whose definition is their location.

pub mod delta;
pub mod managed;
pub mod merge;
pub mod partitions;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use datafusion::common::{ResolvedTableReference, TableReference};
use datafusion::logical_expr::DdlStatement;
use serde::{Deserialize, Serialize};

use store::Place;

/// Why the warehouse could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// Its directory or catalog file could not be read or written.
    #[error("warehouse {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The warehouse's location cannot be used (a bad URL, an object
    /// store without credentials…).
    #[error("warehouse {location}: {why}")]
    Location {
        /// The location given.
        location: String,
        /// Why.
        why: String,
    },
    /// Other writers kept changing the catalog while this change retried.
    #[error(
        "warehouse catalog {0}: changed by other writers {CHANGE_ATTEMPTS} times in a row; try again"
    )]
    Contended(String),
    /// A managed table's statement failed (its SQL, its write).
    #[error("{0}")]
    Sql(#[from] strata_framework::session::SessionError),
    /// A managed table's Delta log could not be read or written.
    #[error("{0}")]
    Delta(#[from] deltalake_core::DeltaTableError),
    /// The catalog file is not one the gateway wrote.
    #[error("warehouse catalog {path} is not valid: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// Tries of a change of an object store's catalog that other writers beat.
const CHANGE_ATTEMPTS: usize = 16;

/// What kind of object a definition makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `CREATE SCHEMA`.
    Schema,
    /// `CREATE EXTERNAL TABLE`.
    Table,
    /// `CREATE VIEW`.
    View,
    /// A managed (Delta Lake) table; its SQL is its location.
    Managed,
}

/// One object's definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// What it is.
    pub kind: Kind,
    /// Its schema.
    pub schema: String,
    /// Its name (the schema's own for a schema).
    pub name: String,
    /// The SQL that makes it.
    pub sql: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CatalogFile {
    version: u32,
    objects: Vec<Definition>,
}

/// A warehouse (a directory, or a prefix in an object store) and the
/// definitions it holds.
#[derive(Debug)]
pub struct Warehouse {
    place: Place,
    objects: Mutex<Vec<Definition>>,
    /// One change at a time from this process.
    writing: tokio::sync::Mutex<()>,
}

impl Warehouse {
    /// Opens (creating it if need be) the warehouse at `location`: a
    /// directory, or an object store URL (`s3://bucket/wh`).
    pub async fn open(location: &Path) -> Result<Warehouse, WarehouseError> {
        Warehouse::at(Place::open(location)?).await
    }

    /// The warehouse at `place`.
    pub async fn at(place: Place) -> Result<Warehouse, WarehouseError> {
        let (bytes, _) = place.read().await?;
        let objects = parse_catalog(&place, bytes)?;
        Ok(Warehouse {
            place,
            objects: Mutex::new(objects),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Where it is (a directory or a URL), for people.
    pub fn location(&self) -> String {
        self.place.display()
    }

    /// The definitions, in the order they are to be replayed.
    pub fn definitions(&self) -> Vec<Definition> {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records what a DDL statement that succeeded changed (`catalog` and
    /// `default_schema` resolve its names); written before this returns.
    /// Statements that change nothing kept here are ignored.
    pub async fn record(
        &self,
        ddl: &DdlStatement,
        catalog: &str,
        default_schema: &str,
    ) -> Result<(), WarehouseError> {
        let resolve = |name: &TableReference| -> ResolvedTableReference {
            name.clone().resolve(catalog, default_schema)
        };
        self.change(|objects| {
            record_into(objects, ddl, &resolve);
        })
        .await
    }

    /// Keeps `d` (replacing a table or view of the same name).
    pub async fn define(&self, d: Definition) -> Result<(), WarehouseError> {
        self.change(|objects| {
            objects
                .retain(|o| !(o.kind != Kind::Schema && o.schema == d.schema && o.name == d.name));
            objects.push(d.clone());
        })
        .await
    }

    /// Forgets the `kind` object `schema.name`.
    pub async fn undefine(
        &self,
        kind: Kind,
        schema: &str,
        name: &str,
    ) -> Result<(), WarehouseError> {
        self.change(|objects| {
            objects.retain(|o| !(o.kind == kind && o.schema == schema && o.name == name));
        })
        .await
    }

    /// Applies `edit` to the definitions as the catalog holds them now and
    /// writes them back (if they changed) before returning. Other
    /// processes (`strata sql --warehouse`, another gateway) write the same
    /// catalog: each change starts from what it holds now, one writer at a
    /// time (a local warehouse's lock file), or again from the start when
    /// another writer's conditional write got there first (an object
    /// store's).
    async fn change(
        &self,
        mut edit: impl FnMut(&mut Vec<Definition>),
    ) -> Result<(), WarehouseError> {
        let _one = self.writing.lock().await;
        let _writer = self.place.lock()?;
        for _ in 0..CHANGE_ATTEMPTS {
            let (bytes, version) = self.place.read().await?;
            let mut objects = parse_catalog(&self.place, bytes)?;
            let before = objects.clone();
            edit(&mut objects);
            if objects != before {
                let file = CatalogFile {
                    version: 1,
                    objects: objects.clone(),
                };
                let bytes =
                    serde_json::to_vec_pretty(&file).map_err(|source| WarehouseError::Corrupt {
                        path: self.place.catalog_path(),
                        source,
                    })?;
                if !self.place.write(bytes, version).await? {
                    continue;
                }
            }
            *self.objects.lock().unwrap_or_else(PoisonError::into_inner) = objects;
            return Ok(());
        }
        Err(WarehouseError::Contended(self.location()))
    }
}

/// What a DDL statement that succeeded changes in `objects`.
fn record_into(
    objects: &mut Vec<Definition>,
    ddl: &DdlStatement,
    resolve: &dyn Fn(&TableReference) -> ResolvedTableReference,
) {
    {
        let mut define = |kind: Kind, name: &TableReference, sql: &Option<String>| {
            let Some(sql) = sql else { return };
            let r = resolve(name);
            objects.retain(|o| {
                !(o.kind != Kind::Schema && *o.schema == *r.schema && *o.name == *r.table)
            });
            objects.push(Definition {
                kind,
                schema: r.schema.to_string(),
                name: r.table.to_string(),
                sql: sql.clone(),
            });
        };
        match ddl {
            DdlStatement::CreateExternalTable(t) if !t.temporary => {
                define(Kind::Table, &t.name, &t.definition);
            }
            DdlStatement::CreateView(v) if !v.temporary => {
                define(Kind::View, &v.name, &v.definition)
            }
            DdlStatement::CreateCatalogSchema(s) => {
                let name = s
                    .schema_name
                    .rsplit('.')
                    .next()
                    .unwrap_or(&s.schema_name)
                    .to_owned();
                if !objects
                    .iter()
                    .any(|o| o.kind == Kind::Schema && o.name == name)
                {
                    objects.push(Definition {
                        kind: Kind::Schema,
                        schema: name.clone(),
                        name,
                        sql: format!(
                            "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                            s.schema_name.replace('"', "\"\"")
                        ),
                    });
                }
            }
            DdlStatement::DropTable(d) => {
                let r = resolve(&d.name);
                objects.retain(|o| {
                    !(o.kind == Kind::Table && *o.schema == *r.schema && *o.name == *r.table)
                });
            }
            DdlStatement::DropView(d) => {
                let r = resolve(&d.name);
                objects.retain(|o| {
                    !(o.kind == Kind::View && *o.schema == *r.schema && *o.name == *r.table)
                });
            }
            DdlStatement::DropCatalogSchema(d) => {
                let schema = d.name.schema_name();
                objects.retain(|o| o.schema != schema);
            }
            _ => {}
        }
    }
}

/// The definitions a catalog's bytes hold (none without a catalog).
fn parse_catalog(place: &Place, bytes: Option<Vec<u8>>) -> Result<Vec<Definition>, WarehouseError> {
    let Some(bytes) = bytes else {
        return Ok(Vec::new());
    };
    let file: CatalogFile =
        serde_json::from_slice(&bytes).map_err(|source| WarehouseError::Corrupt {
            path: place.catalog_path(),
            source,
        })?;
    Ok(file.objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn ddl(ctx: &SessionContext, sql: &str) -> DdlStatement {
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        let datafusion::logical_expr::LogicalPlan::Ddl(d) = plan else {
            panic!("not DDL: {sql}");
        };
        ctx.execute_logical_plan(datafusion::logical_expr::LogicalPlan::Ddl(d.clone()))
            .await
            .unwrap();
        d
    }

    #[tokio::test]
    async fn definitions_survive_a_reopen_and_drops_remove_them() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("t.csv");
        std::fs::write(&csv, "a\n1\n").unwrap();
        let ctx = SessionContext::new();
        let w = Warehouse::open(&dir.path().join("wh")).await.unwrap();
        let (cat, schema) = ("datafusion", "public");
        for sql in [
            "CREATE SCHEMA sales".to_owned(),
            format!(
                "CREATE EXTERNAL TABLE sales.t STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
                csv.display()
            ),
            "CREATE VIEW v AS SELECT a FROM sales.t".to_owned(),
            "CREATE VIEW gone AS SELECT 1".to_owned(),
        ] {
            let d = ddl(&ctx, &sql).await;
            w.record(&d, cat, schema).await.unwrap();
        }
        let d = ddl(&ctx, "DROP VIEW gone").await;
        w.record(&d, cat, schema).await.unwrap();

        let again = Warehouse::open(&dir.path().join("wh")).await.unwrap();
        let kept: Vec<(Kind, String, String)> = again
            .definitions()
            .into_iter()
            .map(|d| (d.kind, d.schema, d.name))
            .collect();
        assert_eq!(
            kept,
            vec![
                (Kind::Schema, "sales".into(), "sales".into()),
                (Kind::Table, "sales".into(), "t".into()),
                (Kind::View, "public".into(), "v".into()),
            ]
        );
        // Replayed in order into a new context, they plan again.
        let fresh = SessionContext::new();
        for d in again.definitions() {
            fresh.sql(&d.sql).await.unwrap().collect().await.unwrap();
        }
        let rows = fresh
            .sql("SELECT a FROM v")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(rows[0].num_rows(), 1);

        let d = ddl(&fresh, "DROP SCHEMA sales CASCADE").await;
        again.record(&d, cat, schema).await.unwrap();
        assert_eq!(again.definitions().len(), 1, "the view in public stays");
    }

    #[tokio::test]
    async fn two_writers_of_one_warehouse_keep_each_others_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            Warehouse::open(dir.path()).await.unwrap(),
            Warehouse::open(dir.path()).await.unwrap(),
        );
        let ctx = SessionContext::new();
        let one = ddl(&ctx, "CREATE VIEW one AS SELECT 1").await;
        let two = ddl(&ctx, "CREATE VIEW two AS SELECT 2").await;
        a.record(&one, "datafusion", "public").await.unwrap();
        b.record(&two, "datafusion", "public").await.unwrap();
        let names: Vec<String> = Warehouse::open(dir.path())
            .await
            .unwrap()
            .definitions()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, vec!["one", "two"]);
    }

    #[tokio::test]
    async fn a_corrupt_catalog_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("catalog.json"), b"{ torn").unwrap();
        assert!(matches!(
            Warehouse::open(dir.path()).await,
            Err(WarehouseError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn an_object_store_catalog_changes_only_from_the_version_it_read() {
        use object_store::memory::InMemory;
        let store: std::sync::Arc<dyn object_store::ObjectStore> =
            std::sync::Arc::new(InMemory::new());
        let place = || Place::Remote {
            url: url::Url::parse("memory://wh/prod/").unwrap(),
            store: store.clone(),
        };
        let (a, b) = (
            Warehouse::at(place()).await.unwrap(),
            Warehouse::at(place()).await.unwrap(),
        );
        let ctx = SessionContext::new();
        let one = ddl(&ctx, "CREATE VIEW one AS SELECT 1").await;
        let two = ddl(&ctx, "CREATE VIEW two AS SELECT 2").await;
        a.record(&one, "datafusion", "public").await.unwrap();
        b.record(&two, "datafusion", "public").await.unwrap();
        let names: Vec<String> = Warehouse::at(place())
            .await
            .unwrap()
            .definitions()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, vec!["one", "two"], "b started from what a wrote");
        // A write from a version another writer has moved past is refused.
        let p = place();
        let (_, seen) = p.read().await.unwrap();
        assert!(p.write(b"{}".to_vec(), seen.clone()).await.unwrap());
        assert!(!p.write(b"{}".to_vec(), seen).await.unwrap());
    }
}
