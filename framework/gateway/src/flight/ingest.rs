//! Bulk ingest (`CommandStatementIngest`, ADBC's `adbc_ingest`): the rows a
//! client sends become a table, or are added to one, through the same SQL
//! a session would run (`CREATE TABLE … AS`, `INSERT INTO … SELECT`), so
//! they land wherever tables of the catalog are kept.

use std::sync::Arc;

use arrow_flight::sql::{CommandStatementIngest, TableExistsOption, TableNotExistOption};
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;

use crate::error::GatewayError;
use crate::session::GatewaySession;

/// What to do with the target, from the command's options.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Create,
    Append,
    Replace,
}

/// Decides what ingest does given whether the target exists.
fn decide(command: &CommandStatementIngest, exists: bool) -> Result<Plan, String> {
    let options = command.table_definition_options.unwrap_or_default();
    let if_exists = TableExistsOption::try_from(options.if_exists).unwrap_or_default();
    let if_not_exist = TableNotExistOption::try_from(options.if_not_exist).unwrap_or_default();
    match (exists, if_exists, if_not_exist) {
        (true, TableExistsOption::Append, _) => Ok(Plan::Append),
        (true, TableExistsOption::Replace, _) => Ok(Plan::Replace),
        (true, _, _) => Err(format!("Table '{}' already exists", command.table)),
        (false, _, TableNotExistOption::Fail) => {
            Err(format!("table '{}' not found", command.table))
        }
        (false, _, _) => Ok(Plan::Create),
    }
}

/// A quoted SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Ingests `batches` into the command's table; the rows written.
pub async fn ingest(
    session: &GatewaySession,
    command: &CommandStatementIngest,
    batches: Vec<RecordBatch>,
) -> Result<i64, GatewayError> {
    if command.temporary {
        return Err(GatewayError::Unsupported(
            "ingest into a temporary table is not supported".to_owned(),
        ));
    }
    let Some(first) = batches.first() else {
        return Ok(0);
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let target = [command.catalog.as_deref(), command.schema.as_deref()]
        .into_iter()
        .flatten()
        .chain([command.table.as_str()])
        .map(quote)
        .collect::<Vec<_>>()
        .join(".");
    let exists = session
        .context()
        .table_exist(target.as_str())
        .map_err(GatewayError::from)?;
    let plan = decide(command, exists).map_err(|m| GatewayError::from(DataFusionError::Plan(m)))?;

    // The rows, as a table of this session's only, while they are copied.
    let staged = format!("__strata_ingest_{:016x}", rand::random::<u64>());
    let table = MemTable::try_new(first.schema(), vec![batches])?;
    session
        .temporary()
        .register_table(staged.clone(), Arc::new(table))?;
    let source = format!("SELECT * FROM {}", quote(&staged));
    let script = match plan {
        Plan::Create => format!("CREATE TABLE {target} AS {source}"),
        Plan::Append => format!("INSERT INTO {target} {source}"),
        Plan::Replace => format!("CREATE OR REPLACE TABLE {target} AS {source}"),
    };
    let ran = session.run_sql(&script).await;
    session.temporary().deregister_table(&staged)?;
    ran?;
    Ok(rows as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::sql::TableDefinitionOptions;

    fn command(
        if_not_exist: TableNotExistOption,
        if_exists: TableExistsOption,
    ) -> CommandStatementIngest {
        CommandStatementIngest {
            table: "t".to_owned(),
            table_definition_options: Some(TableDefinitionOptions {
                if_not_exist: if_not_exist as i32,
                if_exists: if_exists as i32,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn adbc_modes_decide_as_its_docs_say() {
        use TableExistsOption as E;
        use TableNotExistOption as N;
        // mode "create"
        assert_eq!(
            decide(&command(N::Create, E::Fail), false),
            Ok(Plan::Create)
        );
        assert!(
            decide(&command(N::Create, E::Fail), true)
                .unwrap_err()
                .contains("already exists")
        );
        // mode "append"
        assert_eq!(decide(&command(N::Fail, E::Append), true), Ok(Plan::Append));
        assert!(
            decide(&command(N::Fail, E::Append), false)
                .unwrap_err()
                .contains("not found")
        );
        // mode "replace" and "create_append"
        assert_eq!(
            decide(&command(N::Create, E::Replace), true),
            Ok(Plan::Replace)
        );
        assert_eq!(
            decide(&command(N::Create, E::Append), false),
            Ok(Plan::Create)
        );
        assert_eq!(
            decide(&command(N::Create, E::Append), true),
            Ok(Plan::Append)
        );
    }
}
