//! Key filters before a shuffle: a join's probe side is cut down to the
//! rows whose keys occur on its (small) build side *before* it is
//! shuffled, not after.
//!
//! Single-process DataFusion gets the same effect from its dynamic
//! filters: the join pushes its build side's keys into the probe side's
//! scan at run time. On the cluster the probe-side scan runs in an earlier
//! stage than the join (an exchange lies between them), so those filters
//! are off ([`crate::planner::session_config`]), and without this rule the
//! whole probe side is written to shuffle files, read back, and only then
//! mostly dropped by the join. TPC-H q4 shuffles 3.8 M lineitem rows at
//! SF 1 for some 60 k orders; q21 the whole of lineitem, twice.
//!
//! [`KeyFilters`] runs last in the physical optimizer. For a hash join
//! whose build side is within the broadcast budget and whose probe side
//! reaches an exchange (`RepartitionExec`) through operators a key filter
//! commutes with (projections of plain columns, filters, aggregations
//! grouping by the keys), it puts a semi join below that exchange:
//!
//! ```text
//! HashJoinExec: mode=Partitioned, Left Semi     HashJoinExec: mode=Partitioned, Left Semi
//!   RepartitionExec: Hash (B)                     RepartitionExec: Hash (B)          ◄─┐ same node
//!     build                                         build                              │
//!   RepartitionExec: Hash                   ⇒     RepartitionExec: Hash                │
//!     probe                                         HashJoinExec: CollectLeft, Right Semi
//!                                                     CoalescePartitionsExec           │
//!                                                       RepartitionExec: Hash (B)  ◄───┘
//!                                                     probe
//! ```
//!
//! The filter's build side is the *same* plan node as the join's, and the
//! stage cutter cuts a shared node once, so the build side is computed
//! once: the probe side's map tasks read all of its shuffled partitions (a
//! broadcast), the join's tasks read one each.
//!
//! Only joins that never output a probe row without a match take a filter
//! (inner; left outer, semi, anti and mark with the build on the left), and
//! not null-aware anti joins (`NOT IN`), whose result depends on whether the
//! probe side holds a null at all. `SET strata.key_filters = false` turns
//! the rule off.

use std::sync::Arc;

use crate::planner::recompute;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinType, Result};
use datafusion::config::ConfigOptions;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};

use strata_executor::engine::StrataOptions;

/// The physical optimizer rule of this module.
#[derive(Debug, Default)]
pub struct KeyFilters;

impl PhysicalOptimizerRule for KeyFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let on = config
            .extensions
            .get::<StrataOptions>()
            .is_none_or(|o| o.key_filters);
        if !on {
            return Ok(plan);
        }
        let budget = Budget {
            bytes: config.optimizer.hash_join_single_partition_threshold,
            rows: config.optimizer.hash_join_single_partition_threshold_rows,
        };
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            match filtered_probe(join, budget)? {
                Some(probe) => {
                    let children = vec![join.left().clone(), probe];
                    Ok(Transformed::yes(
                        node.replace_children(children, recompute())?,
                    ))
                }
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "strata_key_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The largest build side a filter is made of (the broadcast budget).
#[derive(Debug, Clone, Copy)]
struct Budget {
    bytes: usize,
    rows: usize,
}

/// The join's probe side with a key filter below its exchange, if the
/// join can take one.
fn filtered_probe(join: &HashJoinExec, budget: Budget) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let probe_may_drop_unmatched = matches!(
        join.join_type(),
        JoinType::Inner
            | JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
            | JoinType::RightSemi
    );
    if !probe_may_drop_unmatched || join.null_aware || join.on().is_empty() {
        return Ok(None);
    }
    let stats = StatisticsContext::new();
    let left_keys = join.on().iter().map(|(l, _)| l.clone()).collect();
    let Some(filter) = key_source(join.left(), left_keys, join.null_equality(), budget, &stats)?
    else {
        return Ok(None);
    };
    let keys: Vec<Option<usize>> = join
        .on()
        .iter()
        .map(|(_, r)| r.downcast_ref::<Column>().map(Column::index))
        .collect();
    below_exchange(join.right(), &keys, &filter, &stats, false)
}

/// The keys a filter is made of: the nearest stage output within the
/// budget that holds every key of `plan` (whose keys are `keys`). That is
/// the build side itself when it is small; else a stage below it whose
/// keys are a superset of the build side's (an inner join's side, through
/// projections, filters and aggregations by the keys): q17's build side
/// (lineitem joined with 204 parts) is estimated large, and its keys are
/// among those of the 204 parts.
fn key_source(
    plan: &Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    null_equality: datafusion::common::NullEquality,
    budget: Budget,
    stats: &StatisticsContext,
) -> Result<Option<Filter>> {
    // Stage outputs, as nodes the plan already holds, so that the cutter
    // computes them once.
    let whole: Option<Arc<dyn ExecutionPlan>> = if plan.downcast_ref::<RepartitionExec>().is_some()
    {
        Some(Arc::new(CoalescePartitionsExec::new(plan.clone())))
    } else if plan.downcast_ref::<CoalescePartitionsExec>().is_some() {
        Some(plan.clone())
    } else {
        None
    };
    if let Some(build) = whole {
        let estimate = stats.compute(plan.as_ref(), &StatisticsArgs::new())?;
        // Within the budget as join selection judges it: by bytes when
        // they are estimated, else by rows.
        let rows = estimate.num_rows.get_value().copied();
        let small = match (estimate.total_byte_size.get_value(), rows) {
            (Some(&bytes), _) => bytes <= budget.bytes,
            (None, Some(rows)) => rows <= budget.rows,
            (None, None) => false,
        };
        if small {
            return Ok(Some(Filter {
                build,
                build_rows: rows,
                left_keys: keys,
                null_equality,
            }));
        }
    }
    let Some(cols) = keys
        .iter()
        .map(|k| k.downcast_ref::<Column>().map(Column::index))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let below = |input: &Arc<dyn ExecutionPlan>, cols: &[usize]| {
        let schema = input.schema();
        let keys = cols
            .iter()
            .map(|&c| Arc::new(Column::new(schema.field(c).name(), c)) as Arc<dyn PhysicalExpr>)
            .collect();
        key_source(input, keys, null_equality, budget, stats)
    };
    if plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan
            .downcast_ref::<FilterExec>()
            .is_some_and(|f| f.projection().is_none())
    {
        return below(&plan.children()[0].clone(), &cols);
    }
    let every = |cols: Vec<Option<usize>>| cols.into_iter().collect::<Option<Vec<_>>>();
    let some: Vec<Option<usize>> = cols.iter().copied().map(Some).collect();
    if let Some((input, cols)) = commute(plan, &some) {
        return match every(cols) {
            Some(cols) => below(&input, &cols),
            None => Ok(None),
        };
    }
    if let Some(j) = plan.downcast_ref::<HashJoinExec>() {
        for (side, cols) in inner_join_sides(j, &some).into_iter().enumerate() {
            if let Some(cols) = cols.and_then(every) {
                let child = if side == 0 { j.left() } else { j.right() };
                if let Some(found) = below(child, &cols)? {
                    return Ok(Some(found));
                }
            }
        }
    }
    Ok(None)
}

/// The probe side's key columns in some node's output, one per join key:
/// `None` for a key that no column there holds.
type Keys = Vec<Option<usize>>;

/// What a key filter is made of.
struct Filter {
    build: Arc<dyn ExecutionPlan>,
    build_rows: Option<usize>,
    left_keys: Vec<Arc<dyn PhysicalExpr>>,
    null_equality: datafusion::common::NullEquality,
}

/// `plan` with the filter put below its first exchange, reached through
/// operators a filter on the columns `keys` (of `plan`'s output) commutes
/// with (`None` for a key lost on the way: the filter uses the others); `None` if there is no such exchange. Below the exchange the
/// filter goes further down through aggregations (so that they see fewer
/// rows too) and projections, and stops above anything else (a filter
/// drops rows more cheaply than the key filter).
fn below_exchange(
    plan: &Arc<dyn ExecutionPlan>,
    keys: &[Option<usize>],
    filter: &Filter,
    stats: &StatisticsContext,
    crossed: bool,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let commuted = if plan.fetch().is_some() {
        // A limit picks rows; filtering first would pick others.
        None
    } else if plan.downcast_ref::<RepartitionExec>().is_some() {
        Some((keys.to_vec(), true))
    } else if let Some(f) = plan.downcast_ref::<FilterExec>() {
        (!crossed && f.projection().is_none()).then(|| (keys.to_vec(), false))
    } else {
        commute(plan, keys).map(|(_, k)| (k, crossed))
    };
    if let Some(j) = plan.downcast_ref::<HashJoinExec>()
        && j.fetch().is_none()
        && let Some(filtered) = through_inner_join(plan, j, keys, filter, stats, crossed)?
    {
        return Ok(Some(filtered));
    }
    if let Some((input_keys, crossed)) = commuted {
        let input = plan.children()[0].clone();
        return match below_exchange(&input, &input_keys, filter, stats, crossed)? {
            Some(filtered) => plan
                .clone()
                .replace_children(vec![filtered], recompute())
                .map(Some),
            None => Ok(None),
        };
    }
    if !crossed {
        return Ok(None);
    }
    let probe_stats = stats.compute(plan.as_ref(), &StatisticsArgs::new())?;
    // A probe side estimated smaller than the build side gains nothing
    // from a filter. (Estimates of aggregations and filters are rough:
    // q18's 57 orders are estimated at some 0.6 M rows at SF 1.)
    if probe_stats
        .num_rows
        .get_value()
        .zip(filter.build_rows)
        .is_some_and(|(&n, b)| n < b)
    {
        return Ok(None);
    }
    let schema = plan.schema();
    let on = filter
        .left_keys
        .iter()
        .zip(keys)
        .filter_map(|(l, &k)| {
            let k = k?;
            let r: Arc<dyn PhysicalExpr> = Arc::new(Column::new(schema.field(k).name(), k));
            Some((l.clone(), r))
        })
        .collect();
    let semi = HashJoinExec::try_new(
        filter.build.clone(),
        plan.clone(),
        on,
        None,
        &JoinType::RightSemi,
        None,
        PartitionMode::CollectLeft,
        filter.null_equality,
        false,
    )?;
    Ok(Some(Arc::new(semi)))
}

/// `plan`, an inner hash join, with the filter put into each of its sides
/// that holds the keys, directly or through the join's own equalities
/// (`o_orderkey = l_orderkey`: a filter on `o_orderkey` above the join
/// filters both sides); `None` if neither side takes it.
fn through_inner_join(
    plan: &Arc<dyn ExecutionPlan>,
    join: &HashJoinExec,
    keys: &[Option<usize>],
    filter: &Filter,
    stats: &StatisticsContext,
    crossed: bool,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let mut children = vec![join.left().clone(), join.right().clone()];
    let mut changed = false;
    for (child, keys) in children.iter_mut().zip(inner_join_sides(join, keys)) {
        let Some(keys) = keys else { continue };
        if let Some(filtered) = below_exchange(child, &keys, filter, stats, crossed)? {
            *child = filtered;
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    plan.clone()
        .replace_children(children, recompute())
        .map(Some)
}

/// The columns `keys` of `plan`'s output as columns of its input, when a
/// key filter commutes with `plan`: a projection of plain columns, or an
/// aggregation grouping by them (dropping a group's rows before it drops
/// the group after it). A key that is not such a column is lost (`None`);
/// `None` if every key is.
fn commute(
    plan: &Arc<dyn ExecutionPlan>,
    keys: &[Option<usize>],
) -> Option<(Arc<dyn ExecutionPlan>, Keys)> {
    let column = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().map(Column::index);
    let mapped: Vec<Option<usize>> = if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        keys.iter().map(|k| column(&p.expr()[(*k)?].expr)).collect()
    } else if let Some(a) = plan.downcast_ref::<AggregateExec>() {
        let group = a.group_expr();
        if group.has_grouping_set() || a.limit_options().is_some() {
            return None;
        }
        keys.iter()
            .map(|k| column(&group.expr().get((*k)?)?.0))
            .collect()
    } else {
        return None;
    };
    mapped
        .iter()
        .any(Option::is_some)
        .then(|| (plan.children()[0].clone(), mapped))
}

/// The columns `keys` of an inner join's output as columns of its left
/// and of its right side: a key from one side is on the other too where
/// the join equates it with a column there, and lost (`None`) where not.
/// `None` for a side that keeps no key, and for both if the join is not a
/// plain inner join.
fn inner_join_sides(join: &HashJoinExec, keys: &[Option<usize>]) -> [Option<Keys>; 2] {
    if *join.join_type() != JoinType::Inner || join.filter().is_some() {
        return [None, None];
    }
    let left_len = join.left().schema().fields().len();
    let column = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().map(Column::index);
    let sides: Vec<Option<(usize, usize)>> = keys
        .iter()
        .map(|k| {
            let k = join.projection.as_ref().map_or(*k, |p| k.map(|k| p[k]))?;
            Some(if k < left_len {
                (0, k)
            } else {
                (1, k - left_len)
            })
        })
        .collect();
    // The same key on the other side, where the join equates them.
    let across = |side: usize, c: usize| {
        join.on().iter().find_map(|(l, r)| {
            let (here, there) = if side == 0 { (l, r) } else { (r, l) };
            (column(here) == Some(c)).then(|| column(there)).flatten()
        })
    };
    [0, 1].map(|side| {
        let keys: Vec<Option<usize>> = sides
            .iter()
            .map(|k| {
                let (s, c) = (*k)?;
                if s == side { Some(c) } else { across(s, c) }
            })
            .collect();
        keys.iter().any(Option::is_some).then_some(keys)
    })
}
