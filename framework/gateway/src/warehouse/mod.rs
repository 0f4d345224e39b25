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
//! after it. A starting gateway replays the file into its catalog.
//!
//! Tables made without a location (`CREATE TABLE t (…)`, `CREATE TABLE …
//! AS`) are managed tables: Delta Lake tables under `tables/` ([`delta`],
//! [`managed`]), whose definition is their location.

pub mod delta;
pub mod managed;
pub mod merge;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use datafusion::common::{ResolvedTableReference, TableReference};
use datafusion::logical_expr::DdlStatement;
use serde::{Deserialize, Serialize};

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

/// A warehouse directory and the definitions it holds.
#[derive(Debug)]
pub struct Warehouse {
    dir: PathBuf,
    objects: Mutex<Vec<Definition>>,
}

impl Warehouse {
    /// Opens (creating it if need be) the warehouse at `dir`.
    pub fn open(dir: &Path) -> Result<Warehouse, WarehouseError> {
        std::fs::create_dir_all(dir).map_err(|source| WarehouseError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let objects = read_catalog(&dir.join("catalog.json"))?;
        Ok(Warehouse {
            dir: dir.to_owned(),
            objects: Mutex::new(objects),
        })
    }

    /// Holds `catalog.lock` exclusively until dropped.
    fn lock_file(&self) -> Result<std::fs::File, WarehouseError> {
        let path = self.dir.join("catalog.lock");
        let io = |source| WarehouseError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(file)
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
    pub fn record(
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
    }

    /// Keeps `d` (replacing a table or view of the same name).
    pub fn define(&self, d: Definition) -> Result<(), WarehouseError> {
        self.change(|objects| {
            objects
                .retain(|o| !(o.kind != Kind::Schema && o.schema == d.schema && o.name == d.name));
            objects.push(d);
        })
    }

    /// Forgets the `kind` object `schema.name`.
    pub fn undefine(&self, kind: Kind, schema: &str, name: &str) -> Result<(), WarehouseError> {
        self.change(|objects| {
            objects.retain(|o| !(o.kind == kind && o.schema == schema && o.name == name));
        })
    }

    /// Applies `edit` to the definitions as the file holds them now and
    /// writes them back (if they changed) before returning.
    fn change(&self, edit: impl FnOnce(&mut Vec<Definition>)) -> Result<(), WarehouseError> {
        let mut objects = self.objects.lock().unwrap_or_else(PoisonError::into_inner);
        // Other processes (`strata sql --warehouse`, another gateway) may
        // write the same catalog: one writer at a time across processes,
        // each starting from what the file holds now.
        let _writer = self.lock_file()?;
        *objects = read_catalog(&self.dir.join("catalog.json"))?;
        let before = objects.clone();
        edit(&mut objects);
        if *objects == before {
            return Ok(());
        }
        let file = CatalogFile {
            version: 1,
            objects: objects.clone(),
        };
        let path = self.dir.join("catalog.json");
        let bytes = serde_json::to_vec_pretty(&file).map_err(|source| WarehouseError::Corrupt {
            path: path.clone(),
            source,
        })?;
        strata_proto::fsutil::write_atomic(&path, &bytes).map_err(|source| {
            // Keep memory as the file is: the change did not land.
            *objects = before;
            WarehouseError::Io { path, source }
        })
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

/// The definitions `path` holds (none if it does not exist yet).
fn read_catalog(path: &Path) -> Result<Vec<Definition>, WarehouseError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let file: CatalogFile =
                serde_json::from_slice(&bytes).map_err(|source| WarehouseError::Corrupt {
                    path: path.to_owned(),
                    source,
                })?;
            Ok(file.objects)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(WarehouseError::Io {
            path: path.to_owned(),
            source,
        }),
    }
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
        let w = Warehouse::open(&dir.path().join("wh")).unwrap();
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
            w.record(&d, cat, schema).unwrap();
        }
        let d = ddl(&ctx, "DROP VIEW gone").await;
        w.record(&d, cat, schema).unwrap();

        let again = Warehouse::open(&dir.path().join("wh")).unwrap();
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
        again.record(&d, cat, schema).unwrap();
        assert_eq!(again.definitions().len(), 1, "the view in public stays");
    }

    #[tokio::test]
    async fn two_writers_of_one_warehouse_keep_each_others_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            Warehouse::open(dir.path()).unwrap(),
            Warehouse::open(dir.path()).unwrap(),
        );
        let ctx = SessionContext::new();
        let one = ddl(&ctx, "CREATE VIEW one AS SELECT 1").await;
        let two = ddl(&ctx, "CREATE VIEW two AS SELECT 2").await;
        a.record(&one, "datafusion", "public").unwrap();
        b.record(&two, "datafusion", "public").unwrap();
        let names: Vec<String> = Warehouse::open(dir.path())
            .unwrap()
            .definitions()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, vec!["one", "two"]);
    }

    #[test]
    fn a_corrupt_catalog_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("catalog.json"), b"{ torn").unwrap();
        assert!(matches!(
            Warehouse::open(dir.path()),
            Err(WarehouseError::Corrupt { .. })
        ));
    }
}
