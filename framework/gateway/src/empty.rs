//! An analyzer rule: a scan of an in-memory table that holds no rows is an
//! empty relation. DataFusion's optimizer then drops what reads it
//! (projections, filters, sorts, joins' empty sides) before anything is
//! planned to run — so a catalog query over a table that is always empty
//! here (`pg_policy`, `pg_statistic_ext`: no row-level security, no
//! extended statistics) plans even where it uses what DataFusion cannot
//! run (a correlated subquery in a projection), and answers no rows, as
//! PostgreSQL would.

use std::sync::Arc;

use datafusion::catalog::MemTable;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::datasource::source_as_provider;
use datafusion::error::Result;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;

/// The rule.
#[derive(Debug, Default)]
pub struct EmptyMemoryScans;

impl AnalyzerRule for EmptyMemoryScans {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let empty = source_as_provider(&scan.source)
                .ok()
                .and_then(|p| p.as_ref().downcast_ref::<MemTable>().map(holds_no_rows))
                .unwrap_or(false);
            if !empty {
                return Ok(Transformed::no(node));
            }
            let schema = Arc::clone(&scan.projected_schema);
            Ok(Transformed::yes(LogicalPlan::EmptyRelation(
                EmptyRelation {
                    produce_one_row: false,
                    schema,
                },
            )))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "strata_empty_memory_scans"
    }
}

/// Whether a table holds no rows (one being written counts as not empty).
fn holds_no_rows(table: &MemTable) -> bool {
    table.batches.iter().all(|partition| {
        partition
            .try_read()
            .map(|batches| batches.iter().all(|b| b.num_rows() == 0))
            .unwrap_or(false)
    })
}
