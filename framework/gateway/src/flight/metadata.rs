//! Flight SQL's catalog commands over a session's live catalog: the
//! catalogs, schemas, tables (with their Arrow schemas) and table types
//! ADBC's `get_objects` and JDBC's `DatabaseMetaData` ask for. The
//! builders of `arrow-flight` apply the commands' filters.

use datafusion::arrow::array::RecordBatch;
use datafusion::datasource::TableType;
use tonic::Status;

use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables,
};

use crate::session::GatewaySession;

/// Flight SQL's name of a table's kind.
fn type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// The catalogs (`strata`).
pub fn catalogs(
    session: &GatewaySession,
    query: CommandGetCatalogs,
) -> Result<RecordBatch, Status> {
    let mut b = query.into_builder();
    for name in session.context().catalog_names() {
        b.append(name);
    }
    b.build().map_err(internal)
}

/// The schemas of every catalog.
pub fn schemas(
    session: &GatewaySession,
    query: CommandGetDbSchemas,
) -> Result<RecordBatch, Status> {
    let ctx = session.context();
    let mut b = query.into_builder();
    for catalog in ctx.catalog_names() {
        let Some(c) = ctx.catalog(&catalog) else {
            continue;
        };
        for schema in c.schema_names() {
            b.append(&catalog, schema);
        }
    }
    b.build().map_err(internal)
}

/// The tables and views (their Arrow schemas when asked).
pub async fn tables(
    session: &GatewaySession,
    query: CommandGetTables,
) -> Result<RecordBatch, Status> {
    let ctx = session.context();
    let only_catalog = query.catalog.clone();
    let mut b = query.into_builder();
    for catalog in ctx.catalog_names() {
        if only_catalog.as_ref().is_some_and(|c| *c != catalog) {
            continue;
        }
        let Some(c) = ctx.catalog(&catalog) else {
            continue;
        };
        for schema in c.schema_names() {
            let Some(s) = c.schema(&schema) else { continue };
            for name in s.table_names() {
                let Some(table) = s.table(&name).await.map_err(internal)? else {
                    continue;
                };
                b.append(
                    &catalog,
                    &schema,
                    &name,
                    type_name(table.table_type()),
                    table.schema().as_ref(),
                )
                .map_err(internal)?;
            }
        }
    }
    b.build().map_err(internal)
}

/// The kinds of table there are.
pub fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch, Status> {
    let mut b = query.into_builder();
    for t in [TableType::Base, TableType::View, TableType::Temporary] {
        b.append(type_name(t));
    }
    b.build().map_err(internal)
}
