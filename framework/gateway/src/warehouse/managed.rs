//! DDL on managed tables: `CREATE TABLE`, `CREATE TABLE … AS`, `DROP
//! TABLE`, `ALTER TABLE … RENAME TO` and `VACUUM` of the Delta tables a
//! warehouse keeps under `tables/`.
//!
//! A managed table's definition in `catalog.json` is its location; a new
//! table gets a directory of its own (`tables/{schema}/{name}-{id}/`), so a
//! table dropped and made again never meets the old one's files, and a
//! rename changes only the catalog.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DataFusionError, TableReference};
use datafusion::logical_expr::{DdlStatement, Expr, LogicalPlan, cast};
use datafusion::prelude::{DataFrame, SessionContext};
use strata_framework::session::{Session, SessionError};
use url::Url;

use super::delta::{
    DeltaCommitter, DeltaProvider, Target, create_empty, delta_columns, storable_schema,
};
use super::{Definition, Kind, Warehouse, WarehouseError};

/// What a statement on a managed table did.
#[derive(Debug, PartialEq, Eq)]
pub enum Managed {
    /// A table was made (with the rows `CREATE TABLE … AS` wrote).
    Created(Option<u64>),
    /// A table was dropped.
    Dropped,
}

/// A statement on managed tables that is not DataFusion's.
#[derive(Clone, Debug)]
pub enum TableCommand {
    /// `ALTER TABLE from RENAME TO to`.
    Rename(TableReference, TableReference),
    /// `VACUUM [FULL] table`.
    Vacuum(TableReference, bool),
    /// `MERGE INTO table USING source ON … WHEN …`.
    Merge(Box<datafusion::sql::sqlparser::ast::Merge>),
}

impl TableCommand {
    /// The command tag PostgreSQL ends it with.
    pub fn tag(&self) -> &'static str {
        match self {
            TableCommand::Rename(..) => "ALTER TABLE",
            TableCommand::Vacuum(..) => "VACUUM",
            TableCommand::Merge(..) => "MERGE",
        }
    }
}

fn plan_err(msg: String) -> WarehouseError {
    WarehouseError::Sql(SessionError::Sql(DataFusionError::Plan(msg)))
}

impl Warehouse {
    /// A fresh directory for a new table.
    fn new_location(&self, schema: &str, name: &str) -> Result<Url, WarehouseError> {
        self.place.new_table(schema, name)
    }

    /// The managed table `name` (resolved in `catalog`), if it is one.
    pub fn managed(&self, schema: &str, name: &str) -> Option<Definition> {
        self.definitions()
            .into_iter()
            .find(|d| d.kind == Kind::Managed && d.schema == schema && d.name == name)
    }

    /// Runs `ddl` when it makes or drops a managed table (`None`: it is not
    /// such a statement, and the caller runs it). Tables made without a
    /// location are managed tables when there is a warehouse; a table made
    /// is partitioned by `partition_by` (the statement's `PARTITIONED BY`,
    /// [`super::partitions::take_partitioning`]).
    pub async fn run_managed(
        &self,
        session: &Session,
        ddl: &DdlStatement,
        partition_by: &[String],
        catalog: &str,
        default_schema: &str,
    ) -> Result<Option<Managed>, WarehouseError> {
        let ctx = session.context();
        match ddl {
            DdlStatement::CreateMemoryTable(c) if !c.temporary => {
                let r = c.name.clone().resolve(catalog, default_schema);
                let (schema, name) = (r.schema.to_string(), r.table.to_string());
                let reference = TableReference::full(catalog, schema.as_str(), name.as_str());
                if ctx
                    .catalog(catalog)
                    .and_then(|c| c.schema(&schema))
                    .is_none()
                {
                    return Err(plan_err(format!("schema \"{schema}\" does not exist")));
                }
                if ctx.table_exist(reference.clone()).map_err(sql)? {
                    if c.if_not_exists {
                        return Ok(Some(Managed::Created(None)));
                    }
                    if !c.or_replace {
                        return Err(plan_err(format!("Table '{name}' already exists")));
                    }
                    self.drop_managed(ctx, &reference, &schema, &name).await?;
                }
                let columns = storable_schema(c.input.schema().as_arrow());
                super::partitions::check(&columns, partition_by).map_err(sql)?;
                let location = self.new_location(&schema, &name)?;
                let made = self.make_table(session, &c.input, &location, &name, partition_by);
                let rows = match made.await {
                    Ok(rows) => rows,
                    Err(e) => {
                        super::store::remove_table_files(&location).await;
                        return Err(e);
                    }
                };
                let provider = DeltaProvider::open(location.clone(), None).await?;
                ctx.register_table(reference, Arc::new(provider))
                    .map_err(sql)?;
                self.define(Definition {
                    kind: Kind::Managed,
                    schema,
                    name,
                    sql: location.to_string(),
                })
                .await?;
                Ok(Some(Managed::Created(rows)))
            }
            DdlStatement::CreateMemoryTable(_) if !partition_by.is_empty() => Err(plan_err(
                "a temporary table cannot be partitioned".to_owned(),
            )),
            _ if !partition_by.is_empty() => Err(plan_err(
                "PARTITIONED BY is a clause of CREATE TABLE".to_owned(),
            )),
            DdlStatement::DropTable(d) => {
                let r = d.name.clone().resolve(catalog, default_schema);
                let (schema, name) = (r.schema.to_string(), r.table.to_string());
                if self.managed(&schema, &name).is_none() {
                    return Ok(None);
                }
                let reference = TableReference::full(catalog, schema.as_str(), name.as_str());
                self.drop_managed(ctx, &reference, &schema, &name).await?;
                Ok(Some(Managed::Dropped))
            }
            _ => Ok(None),
        }
    }

    /// Makes the table at `location` from `input`: empty with its columns
    /// (`CREATE TABLE t (…)`), or with its rows, written on the cluster and
    /// committed with the table's creation (`CREATE TABLE … AS`).
    async fn make_table(
        &self,
        session: &Session,
        input: &LogicalPlan,
        location: &Url,
        name: &str,
        partition_by: &[String],
    ) -> Result<Option<u64>, WarehouseError> {
        let arrow = input.schema().as_arrow().clone();
        let schema = storable_schema(&arrow);
        if let LogicalPlan::EmptyRelation(e) = input
            && !e.produce_one_row
        {
            create_empty(location, name, &schema, partition_by)
                .await
                .map_err(sql)?;
            return Ok(None);
        }
        let ctx = session.context();
        let df = DataFrame::new(ctx.state(), input.clone());
        let columns: Vec<Expr> = df
            .schema()
            .iter()
            .zip(schema.fields())
            .map(|((q, f), to)| {
                let column = Expr::Column(Column::new(q.cloned(), f.name()));
                // Views are written as plain strings and binaries as they are.
                let value = if matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView)
                    || f.data_type() == to.data_type()
                {
                    column
                } else {
                    cast(column, to.data_type().clone())
                };
                value.alias(f.name())
            })
            .collect();
        let physical = df
            .select(columns)
            .map_err(sql)?
            .create_physical_plan()
            .await
            .map_err(sql)?;
        let target = Target::New(name.to_owned(), delta_columns(&schema).map_err(sql)?);
        let commit = DeltaCommitter::plan(physical, location, target, partition_by.to_vec());
        let written = session
            .run_write(&commit)
            .await
            .map_err(WarehouseError::Sql)?;
        Ok(Some(written.rows))
    }

    /// Drops a managed table: out of the catalogs, then its files.
    async fn drop_managed(
        &self,
        ctx: &SessionContext,
        reference: &TableReference,
        schema: &str,
        name: &str,
    ) -> Result<(), WarehouseError> {
        let Some(d) = self.managed(schema, name) else {
            return Err(plan_err(format!("table \"{name}\" is not a managed table")));
        };
        ctx.deregister_table(reference.clone()).map_err(sql)?;
        self.undefine(Kind::Managed, schema, name).await?;
        let location =
            Url::parse(&d.sql).map_err(|e| plan_err(format!("bad location {}: {e}", d.sql)))?;
        super::store::remove_table_files(&location).await;
        Ok(())
    }

    /// Renames the table or view `from` to `to` (names resolved in
    /// `catalog` and `default_schema`): only the catalog changes — a managed
    /// table's files stay where they are, a view's or external table's
    /// kept definition is rewritten under its new name.
    pub async fn rename(
        &self,
        ctx: &SessionContext,
        from: &TableReference,
        to: &TableReference,
        catalog: &str,
        default_schema: &str,
    ) -> Result<(), WarehouseError> {
        let (f, t) = (
            from.clone().resolve(catalog, default_schema),
            to.clone().resolve(catalog, default_schema),
        );
        let Some(d) = self
            .definitions()
            .into_iter()
            .find(|d| d.kind != Kind::Schema && *d.schema == *f.schema && *d.name == *f.table)
        else {
            return Err(WarehouseError::Sql(SessionError::Sql(
                DataFusionError::NotImplemented(format!(
                    "ALTER TABLE … RENAME: \"{}\" is not kept in the warehouse (a session's \
                     temporary view cannot be renamed)",
                    f.table
                )),
            )));
        };
        let to_ref = TableReference::full(catalog, t.schema.as_ref(), t.table.as_ref());
        if ctx.table_exist(to_ref.clone()).map_err(sql)? {
            return Err(plan_err(format!("Table '{}' already exists", t.table)));
        }
        let sql_text = match d.kind {
            Kind::Managed => d.sql.clone(),
            _ => renamed_definition(&d.sql, &t.schema, &t.table)?,
        };
        let from_ref = TableReference::full(catalog, f.schema.as_ref(), f.table.as_ref());
        let Some(provider) = ctx.deregister_table(from_ref).map_err(sql)? else {
            return Err(plan_err(format!("table \"{}\" does not exist", f.table)));
        };
        ctx.register_table(to_ref, provider).map_err(sql)?;
        self.change(|objects| {
            for o in objects.iter_mut() {
                if o.kind == d.kind && o.schema == d.schema && o.name == d.name {
                    o.schema = t.schema.to_string();
                    o.name = t.table.to_string();
                    o.sql = sql_text.clone();
                }
            }
        })
        .await
    }

    /// `VACUUM`: removes the files of the managed table `schema.name` that
    /// no version within its retention needs (`full`: that its latest
    /// version does not need — older versions can no longer be read), and
    /// files of writes that never committed. Returns how many it removed.
    pub async fn vacuum(
        &self,
        schema: &str,
        name: &str,
        full: bool,
    ) -> Result<usize, WarehouseError> {
        let Some(d) = self.managed(schema, name) else {
            return Err(plan_err(format!("\"{name}\" is not a managed table")));
        };
        let url =
            Url::parse(&d.sql).map_err(|e| plan_err(format!("bad location {}: {e}", d.sql)))?;
        let table = super::delta::open(&url, None).await?;
        let mut vacuum = table
            .vacuum()
            .with_mode(deltalake_core::operations::vacuum::VacuumMode::Full);
        if full {
            vacuum = vacuum
                .with_retention_period(chrono::Duration::zero())
                .with_enforce_retention_duration(false);
        }
        let (_, metrics) = vacuum.await?;
        Ok(metrics.files_deleted.len())
    }

    /// Runs a [`TableCommand`] in `ctx`'s catalog; the rows it changed,
    /// for those that change rows.
    pub async fn run_command(
        &self,
        ctx: &SessionContext,
        command: &TableCommand,
        catalog: &str,
        default_schema: &str,
    ) -> Result<Option<u64>, WarehouseError> {
        match command {
            TableCommand::Rename(from, to) => {
                // A bare new name stays in the table's schema, as in
                // PostgreSQL.
                let to = match (to, from.schema()) {
                    (TableReference::Bare { table }, Some(schema)) => {
                        TableReference::partial(schema, table.as_ref())
                    }
                    (to, _) => to.clone(),
                };
                self.rename(ctx, from, &to, catalog, default_schema).await?;
                Ok(None)
            }
            TableCommand::Merge(m) => self.merge(ctx, m, catalog, default_schema).await.map(Some),
            TableCommand::Vacuum(table, full) => {
                let r = table.clone().resolve(catalog, default_schema);
                let removed = self.vacuum(&r.schema, &r.table, *full).await?;
                tracing::info!(table = %r, removed, "vacuumed");
                Ok(None)
            }
        }
    }

    /// Makes a kept definition in `ctx` when it is a managed table
    /// (`false`: the caller runs its SQL).
    pub async fn make_managed(
        &self,
        d: &Definition,
        ctx: &SessionContext,
    ) -> Result<bool, WarehouseError> {
        if d.kind != Kind::Managed {
            return Ok(false);
        }
        let url =
            Url::parse(&d.sql).map_err(|e| plan_err(format!("bad location {}: {e}", d.sql)))?;
        let provider = DeltaProvider::open(url, None).await?;
        ctx.register_table(
            TableReference::partial(d.schema.as_str(), d.name.as_str()),
            Arc::new(provider),
        )
        .map_err(sql)?;
        Ok(true)
    }
}

/// A view's or external table's defining SQL with the object's name
/// changed to `schema.table`.
fn renamed_definition(sql_text: &str, schema: &str, table: &str) -> Result<String, WarehouseError> {
    use datafusion::sql::parser::{DFParser, Statement as DfStatement};
    use datafusion::sql::sqlparser::ast::{Ident, ObjectName, Statement};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    let name = ObjectName::from(vec![
        Ident::with_quote('"', schema),
        Ident::with_quote('"', table),
    ]);
    let mut statements =
        DFParser::parse_sql_with_dialect(sql_text, &PostgreSqlDialect {}).map_err(sql)?;
    match statements.pop_front() {
        Some(DfStatement::CreateExternalTable(mut c)) => {
            c.name = name;
            Ok(c.to_string())
        }
        Some(DfStatement::Statement(s)) => match *s {
            Statement::CreateView(mut v) => {
                v.name = name;
                Ok(Statement::CreateView(v).to_string())
            }
            other => Err(plan_err(format!("cannot rename what {other} makes"))),
        },
        _ => Err(plan_err(format!("cannot rename what {sql_text} makes"))),
    }
}

fn sql(e: DataFusionError) -> WarehouseError {
    WarehouseError::Sql(SessionError::Sql(e))
}
