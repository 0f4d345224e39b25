//! What a session makes of a statement and what running it gives:
//! [`Planned`] (a plan of DataFusion's, or a statement the session
//! answers itself, with its result columns and parameter types) and
//! [`Outcome`] (rows as they come, or a command tag).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::copy::CopyIn;
use crate::error::GatewayError;
use crate::rows::RowStream;
use crate::settings::{pg_names, show_schema};
use crate::warehouse::managed::TableCommand;

/// A statement planned, ready to run (once, or many times with parameters).
#[derive(Clone, Debug)]
pub enum Planned {
    /// A plan of DataFusion's (a query, DDL, a write, `EXPLAIN`…).
    Plan(Box<LogicalPlan>),
    /// `CREATE TABLE … PARTITIONED BY (cols)`: the plan of the statement
    /// without the clause, and the partition columns.
    Partitioned(Box<LogicalPlan>, Vec<String>),
    /// `SHOW name` of a PostgreSQL setting (lowercased).
    Show(String),
    /// A statement the session answers itself.
    Command(Command),
}

/// Statements a session answers without DataFusion.
#[derive(Clone, Debug)]
pub enum Command {
    /// `SET name = value` of a PostgreSQL setting.
    Set(String, String),
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` or `ROLLBACK` (each statement commits on its own).
    End(&'static str),
    /// Accepted and without effect here, with its command tag
    /// (`SET TRANSACTION ISOLATION LEVEL …`, `DISCARD ALL`).
    Accepted(&'static str),
    /// `ALTER TABLE … RENAME TO`, `VACUUM`, `MERGE` of a managed table.
    Table(TableCommand),
    /// `COPY t FROM STDIN`: rows follow through the protocol's copy.
    CopyIn(CopyIn),
}

impl Planned {
    /// The result columns, when it returns rows.
    pub fn result_schema(&self) -> Option<SchemaRef> {
        match self {
            Planned::Plan(p) if is_query(p) => Some(pg_names(p.schema().as_arrow())),
            Planned::Plan(p) if returns_rows(p) => Some(Arc::new(p.schema().as_arrow().clone())),
            Planned::Plan(_) | Planned::Partitioned(..) | Planned::Command(_) => None,
            Planned::Show(name) => Some(show_schema(name)),
        }
    }

    /// Its parameters' types (`$1`, `$2`, …; `None` where the plan does not
    /// tell).
    pub fn parameter_types(&self) -> Result<Vec<Option<DataType>>, GatewayError> {
        let Planned::Plan(p) = self else {
            return Ok(Vec::new());
        };
        let mut types = p.get_parameter_types()?;
        // `$1::int8`: a parameter cast at once has the type it is cast to,
        // as PostgreSQL infers it.
        for (id, t) in cast_parameter_types(p) {
            if let Some(slot @ None) = types.get_mut(&id) {
                *slot = Some(t);
            }
        }
        let count = types
            .keys()
            .filter_map(|k| k.strip_prefix('$')?.parse::<usize>().ok())
            .max()
            .unwrap_or(0);
        Ok((1..=count)
            .map(|i| types.get(&format!("${i}")).cloned().flatten())
            .collect())
    }
}

/// What a statement did.
#[derive(Debug)]
pub enum Outcome {
    /// Rows, with the command tag to end them with (`SELECT`, `SHOW`).
    Rows {
        /// Their columns.
        schema: SchemaRef,
        /// The rows, as they come (from the cluster, a query's are
        /// streamed from its final stage).
        rows: RowStream,
        /// The tag.
        tag: &'static str,
    },
    /// Done: a command tag and, for writes, the rows written.
    Done(&'static str, Option<usize>),
    /// A transaction block began.
    Begin,
    /// It ended (`COMMIT` or `ROLLBACK`).
    End(&'static str),
}

/// The types of parameters a plan casts as they are (`CAST($1 AS t)`).
fn cast_parameter_types(plan: &LogicalPlan) -> Vec<(String, DataType)> {
    let mut found = Vec::new();
    let walked = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::Cast(cast) = e
                    && let Expr::Placeholder(p) = cast.expr.as_ref()
                {
                    found.push((p.id.clone(), cast.field.data_type().clone()));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    if let Err(e) = walked {
        tracing::debug!(error = %e, "parameter types not inferred from casts");
    }
    found
}

/// A plan that is a query (not an `EXPLAIN`, `DESCRIBE`, write or DDL).
fn is_query(plan: &LogicalPlan) -> bool {
    returns_rows(plan)
        && !matches!(
            plan,
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_)
        )
}

fn returns_rows(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
    )
}
