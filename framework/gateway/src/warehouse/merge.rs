//! `MERGE INTO` a managed table, as delta-rs's merge: the source is a
//! query of the session, the `ON` condition and each `WHEN` clause become
//! the merge's predicates and assignments (as SQL, resolved by delta-rs
//! against the target's and the source's aliases), and the rows it
//! rewrites land in one commit.

use datafusion::prelude::SessionContext;
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, Merge, MergeAction, MergeClause, MergeClauseKind, MergeInsertKind,
    ObjectName, TableFactor,
};
use deltalake_core::operations::merge::MergeBuilder;
use strata_framework::session::SessionError;
use url::Url;

use super::{Warehouse, WarehouseError};

fn unsupported(what: String) -> WarehouseError {
    WarehouseError::Sql(SessionError::Sql(
        datafusion::error::DataFusionError::NotImplemented(what),
    ))
}

/// The column an assignment or insert names (`t.c` is `c`).
fn column(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
        .unwrap_or_default()
}

impl Warehouse {
    /// Runs `MERGE INTO` of a managed table; the rows it inserted, updated
    /// and deleted.
    pub async fn merge(
        &self,
        ctx: &SessionContext,
        m: &Merge,
        catalog: &str,
        default_schema: &str,
    ) -> Result<u64, WarehouseError> {
        let TableFactor::Table {
            name, alias: to, ..
        } = &m.table
        else {
            return Err(unsupported("MERGE INTO must name a table".into()));
        };
        let target = object_name_to_table_reference(name.clone(), true)
            .map_err(|e| WarehouseError::Sql(e.into()))?
            .resolve(catalog, default_schema);
        let Some(d) = self.managed(&target.schema, &target.table) else {
            return Err(unsupported(format!(
                "MERGE INTO {}: only managed tables take MERGE",
                target.table
            )));
        };
        let target_alias = to
            .as_ref()
            .map(|a| a.name.value.clone())
            .unwrap_or_else(|| target.table.to_string());
        let (source_sql, source_alias) = match &m.source {
            TableFactor::Table { name, alias, .. } => (
                format!("SELECT * FROM {name}"),
                alias
                    .as_ref()
                    .map(|a| a.name.value.clone())
                    .unwrap_or_else(|| column(name)),
            ),
            TableFactor::Derived {
                subquery,
                alias: Some(alias),
                ..
            } => (subquery.to_string(), alias.name.value.clone()),
            other => {
                return Err(unsupported(format!(
                    "MERGE … USING {other}: a table or an aliased subquery"
                )));
            }
        };
        let source = ctx
            .sql(&source_sql)
            .await
            .map_err(|e| WarehouseError::Sql(e.into()))?;
        let url =
            Url::parse(&d.sql).map_err(|e| unsupported(format!("bad location {}: {e}", d.sql)))?;
        let table = super::delta::open(&url, None).await?;
        let mut merge = table
            .merge(source, m.on.to_string())
            .with_source_alias(source_alias)
            .with_target_alias(target_alias);
        for clause in &m.clauses {
            merge = when(merge, clause)?;
        }
        let (_, metrics) = merge.await?;
        Ok((metrics.num_target_rows_inserted
            + metrics.num_target_rows_updated
            + metrics.num_target_rows_deleted) as u64)
    }
}

/// Adds one `WHEN` clause to a merge.
fn when(merge: MergeBuilder, clause: &MergeClause) -> Result<MergeBuilder, WarehouseError> {
    let predicate = clause.predicate.as_ref().map(|p| p.to_string());
    let merge = match (&clause.clause_kind, &clause.action) {
        (
            MergeClauseKind::Matched | MergeClauseKind::NotMatchedBySource,
            MergeAction::Update(u),
        ) => {
            let assignments: Vec<(String, String)> = u
                .assignments
                .iter()
                .map(|a| match &a.target {
                    AssignmentTarget::ColumnName(c) => Ok((column(c), a.value.to_string())),
                    AssignmentTarget::Tuple(_) => Err(unsupported(
                        "MERGE … UPDATE SET (a, b) = …: assign columns one by one".into(),
                    )),
                })
                .collect::<Result<_, _>>()?;
            let build = |mut b: deltalake_core::operations::merge::UpdateBuilder| {
                if let Some(p) = &predicate {
                    b = b.predicate(p.as_str());
                }
                for (c, v) in &assignments {
                    b = b.update(c.as_str(), v.as_str());
                }
                b
            };
            if clause.clause_kind == MergeClauseKind::Matched {
                merge.when_matched_update(build)?
            } else {
                merge.when_not_matched_by_source_update(build)?
            }
        }
        (
            MergeClauseKind::Matched | MergeClauseKind::NotMatchedBySource,
            MergeAction::Delete { .. },
        ) => {
            let build = |mut b: deltalake_core::operations::merge::DeleteBuilder| {
                if let Some(p) = &predicate {
                    b = b.predicate(p.as_str());
                }
                b
            };
            if clause.clause_kind == MergeClauseKind::Matched {
                merge.when_matched_delete(build)?
            } else {
                merge.when_not_matched_by_source_delete(build)?
            }
        }
        (
            MergeClauseKind::NotMatched | MergeClauseKind::NotMatchedByTarget,
            MergeAction::Insert(i),
        ) => {
            let MergeInsertKind::Values(values) = &i.kind else {
                return Err(unsupported("MERGE … INSERT ROW: list the values".into()));
            };
            let [row] = values.rows.as_slice() else {
                return Err(unsupported("MERGE … INSERT takes one row of values".into()));
            };
            let row = &row.content;
            if i.columns.len() != row.len() {
                return Err(unsupported(
                    "MERGE … INSERT (columns) VALUES (…): name a column for each value".into(),
                ));
            }
            let sets: Vec<(String, String)> = i
                .columns
                .iter()
                .zip(row)
                .map(|(c, v)| (column(c), v.to_string()))
                .collect();
            merge.when_not_matched_insert(|mut b| {
                if let Some(p) = &predicate {
                    b = b.predicate(p.as_str());
                }
                for (c, v) in &sets {
                    b = b.set(c.as_str(), v.as_str());
                }
                b
            })?
        }
        (kind, action) => {
            return Err(unsupported(format!("MERGE … WHEN {kind} THEN {action}")));
        }
    };
    Ok(merge)
}
