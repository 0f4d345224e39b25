//! Key filters before a shuffle: one side of a join is cut down to the
//! rows whose keys occur on the other (small) side *before* it is
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
//! grouping by the keys, inner joins on them), it puts a semi join below
//! that exchange:
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
//! The filter's keys come from a node the plan already holds, and the
//! stage cutter cuts a shared node once, so they are computed once: the
//! filtered side's map tasks read all of that stage's partitions (a
//! broadcast), the join's tasks read one each. When the build side is
//! estimated too large, the keys come from a smaller stage below it that
//! holds them all (q17: lineitem joined with 204 parts has no key that
//! those parts lack). When the probe side is the small one (q21: the
//! anti join of the Saudi suppliers' late lines against 3.8 M late lines),
//! the build side is filtered by the probe side's keys instead; a join is
//! filtered in one direction only, so stages never wait on each other.
//!
//! A side is filtered only if the join never outputs its rows unmatched
//! (the probe side of inner, left, left semi, left anti, left mark and
//! right semi joins; the build side of inner, right, right semi, right
//! anti, right mark and left semi joins), and never for a null-aware anti
//! join (`NOT IN`), whose result depends on whether a null exists at all.
//! `SET strata.key_filters = false` turns the rule off.
//!
//! The rule is for plans about to be cut into stages
//! ([`crate::session::Session`] runs it before the cutter): the shared
//! node is safe only because the cutter makes it a stage of its own. Run
//! in one process, a plan would execute that node twice. Joins in a scalar
//! subquery's main input, which the cutter never cuts, get no filter.

use std::sync::Arc;

use datafusion::common::{JoinSide, JoinType, NullEquality, Result};
use datafusion::config::ConfigOptions;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::{ColumnIndex, build_join_schema};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};

use crate::planner::recompute;
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
        let options = config.extensions.get::<StrataOptions>();
        if options.is_some_and(|o| !o.key_filters) {
            return Ok(plan);
        }
        let factor = options.map_or(1.0, |o| o.key_filter_source_factor.max(0.0));
        let scale = |n: usize| (n as f64 * factor) as usize;
        let mut rewrite = Rewrite {
            budget_bytes: scale(config.optimizer.hash_join_single_partition_threshold),
            budget_rows: scale(config.optimizer.hash_join_single_partition_threshold_rows),
            stats: StatisticsContext::new(),
            sources: Vec::new(),
        };
        rewrite.bottom_up(plan, false)
    }

    fn name(&self) -> &str {
        "strata_key_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// One run of the rule.
struct Rewrite {
    /// The largest key source, as join selection judges a broadcast.
    budget_bytes: usize,
    budget_rows: usize,
    stats: StatisticsContext,
    /// The nodes filters read their keys from. A later filter does not go
    /// down through one (that would replace it with a filtered copy, and
    /// the earlier filter would read a second, unfiltered stage).
    sources: Vec<Arc<dyn ExecutionPlan>>,
}

/// The probe side's key columns in some node's output, one per join key:
/// `None` for a key that no column there holds.
type Keys = Vec<Option<usize>>;

/// What a key filter is made of.
struct Filter {
    /// The node whose rows hold the keys: a stage's whole output.
    build: Arc<dyn ExecutionPlan>,
    /// The node of the plan `build` reads (itself, or the exchange it
    /// merges), which must stay as it is.
    shared: Arc<dyn ExecutionPlan>,
    build_rows: Option<usize>,
    /// The key expressions over `build`'s rows, one per join key.
    build_keys: Vec<Arc<dyn PhysicalExpr>>,
    null_equality: NullEquality,
}

impl Rewrite {
    /// `plan` with its joins filtered, deepest first. Nothing is filtered
    /// in a scalar subquery's main input (`uncut`): the cutter keeps that
    /// input in one stage, where a shared node would run twice.
    fn bottom_up(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
        uncut: bool,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let keeps_first = plan.downcast_ref::<ScalarSubqueryExec>().is_some();
        let mut changed = false;
        let mut children = Vec::new();
        for (i, child) in plan.children().into_iter().enumerate() {
            let new = self.bottom_up(child.clone(), uncut || (keeps_first && i == 0))?;
            changed |= !Arc::ptr_eq(&new, child);
            children.push(new);
        }
        let plan = if changed {
            plan.replace_children(children, recompute())?
        } else {
            plan
        };
        let Some(join) = plan.downcast_ref::<HashJoinExec>().filter(|_| !uncut) else {
            return Ok(plan);
        };
        // The probe side first; the build side only if the probe side
        // takes no filter (both would make each side wait on the other).
        for side in [JoinSide::Right, JoinSide::Left] {
            if let Some(filtered) = self.filtered(join, side)? {
                let mut children = vec![join.left().clone(), join.right().clone()];
                children[usize::from(side == JoinSide::Right)] = filtered;
                return plan.clone().replace_children(children, recompute());
            }
        }
        Ok(plan)
    }

    /// The join's `side` with a key filter below its exchange, if the join
    /// can take one there.
    fn filtered(
        &mut self,
        join: &HashJoinExec,
        side: JoinSide,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        use JoinType::*;
        let never_unmatched = match side {
            JoinSide::Right => matches!(
                join.join_type(),
                Inner | Left | LeftSemi | LeftAnti | LeftMark | RightSemi
            ),
            _ => matches!(
                join.join_type(),
                Inner | Right | RightSemi | RightAnti | RightMark | LeftSemi
            ),
        };
        if !never_unmatched || join.null_aware || join.on().is_empty() {
            return Ok(None);
        }
        let (filtered, other) = match side {
            JoinSide::Right => (join.right(), join.left()),
            _ => (join.left(), join.right()),
        };
        let (keys, other_keys): (Vec<_>, Vec<_>) = join
            .on()
            .iter()
            .map(|(l, r)| match side {
                JoinSide::Right => (r.clone(), l.clone()),
                _ => (l.clone(), r.clone()),
            })
            .unzip();
        let Some(filter) = self.key_source(other, other_keys, join.null_equality())? else {
            return Ok(None);
        };
        let keys: Keys = keys.iter().map(column).collect();
        let done = self.below_exchange(filtered, &keys, &filter, false)?;
        if done.is_some() {
            self.sources.push(filter.shared);
        }
        Ok(done)
    }

    /// The keys a filter is made of: the nearest stage output within the
    /// budget that holds every key of `plan` (`keys`, over its rows). That
    /// is `plan` itself when it is a small stage output; else a stage
    /// below it whose keys are a superset of `plan`'s (through filters,
    /// projections, aggregations by the keys, and joins).
    fn key_source(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        null_equality: NullEquality,
    ) -> Result<Option<Filter>> {
        // Stage outputs, as nodes the plan already holds, so that the
        // cutter computes them once.
        // (Not a merge with a limit: each task would take its own rows.)
        let whole: Option<Arc<dyn ExecutionPlan>> = if plan.fetch().is_some() {
            None
        } else if plan.downcast_ref::<RepartitionExec>().is_some() {
            Some(Arc::new(CoalescePartitionsExec::new(plan.clone())))
        } else if plan.downcast_ref::<CoalescePartitionsExec>().is_some() {
            Some(plan.clone())
        } else {
            None
        };
        if let Some(build) = whole {
            let estimate = self.stats.compute(plan.as_ref(), &StatisticsArgs::new())?;
            // Within the budget as join selection judges it: by bytes when
            // they are estimated, else by rows.
            let rows = estimate.num_rows.get_value().copied();
            let small = match (estimate.total_byte_size.get_value(), rows) {
                (Some(&bytes), _) => bytes <= self.budget_bytes,
                (None, Some(rows)) => rows <= self.budget_rows,
                (None, None) => false,
            };
            if small {
                return Ok(Some(Filter {
                    build,
                    shared: plan.clone(),
                    build_rows: rows,
                    build_keys: keys,
                    null_equality,
                }));
            }
        }
        let Some(cols) = keys.iter().map(column).collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let below = |input: &Arc<dyn ExecutionPlan>, cols: Keys| {
            let Some(cols) = cols.into_iter().collect::<Option<Vec<_>>>() else {
                return Ok(None);
            };
            let schema = input.schema();
            let keys = cols
                .iter()
                .map(|&c| Arc::new(Column::new(schema.field(c).name(), c)) as _)
                .collect();
            self.key_source(input, keys, null_equality)
        };
        let some: Keys = cols.iter().copied().map(Some).collect();
        if plan.downcast_ref::<RepartitionExec>().is_some()
            || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
            || plan
                .downcast_ref::<FilterExec>()
                .is_some_and(|f| f.projection().is_none())
        {
            return below(&plan.children()[0].clone(), some);
        }
        if let Some((input, cols)) = commute(plan, &some) {
            return below(&input, cols);
        }
        if let Some(j) = plan.downcast_ref::<HashJoinExec>() {
            // A join's output keys are among those of the side they come
            // from (an outer join's padding adds only nulls).
            let [left, right] = join_sides(j, &some);
            for (child, cols) in [(j.left(), left), (j.right(), right)] {
                if let Some(cols) = cols
                    && let Some(found) = below(child, cols)?
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// `plan` with the filter put below its first exchange, reached
    /// through operators a filter on the columns `keys` (of `plan`'s
    /// output) commutes with (`None` for a key lost on the way: the filter
    /// uses the others); `None` if there is no such exchange. Below the
    /// exchange the filter goes further down through aggregations (so that
    /// they see fewer rows too), projections and inner joins, and stops
    /// above anything else (a filter drops rows more cheaply than the key
    /// filter).
    fn below_exchange(
        &mut self,
        plan: &Arc<dyn ExecutionPlan>,
        keys: &[Option<usize>],
        filter: &Filter,
        crossed: bool,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if self.sources.iter().any(|s| Arc::ptr_eq(s, plan)) {
            return Ok(None);
        }
        let commuted = if plan.fetch().is_some() {
            // A limit picks rows; filtering first would pick others.
            None
        } else if plan.downcast_ref::<RepartitionExec>().is_some() {
            Some((plan.children()[0].clone(), keys.to_vec(), true))
        } else if let Some(f) = plan.downcast_ref::<FilterExec>() {
            (!crossed && f.projection().is_none())
                .then(|| (f.input().clone(), keys.to_vec(), false))
        } else {
            commute(plan, keys).map(|(input, k)| (input, k, crossed))
        };
        if let Some((input, input_keys, crossed)) = commuted {
            return match self.below_exchange(&input, &input_keys, filter, crossed)? {
                Some(filtered) => plan
                    .clone()
                    .replace_children(vec![filtered], recompute())
                    .map(Some),
                None => Ok(None),
            };
        }
        if plan.fetch().is_none()
            && let Some(j) = plan.downcast_ref::<HashJoinExec>()
            && *j.join_type() == JoinType::Inner
            && j.filter().is_none()
            && let Some(filtered) = self.through_inner_join(plan, j, keys, filter, crossed)?
        {
            return Ok(Some(filtered));
        }
        // Not above a merge: its rows were shuffled already (a broadcast
        // build side of a join this filter went through).
        if !crossed || plan.downcast_ref::<CoalescePartitionsExec>().is_some() {
            return Ok(None);
        }
        let estimate = self.stats.compute(plan.as_ref(), &StatisticsArgs::new())?;
        // A side estimated smaller than the keys' source gains nothing
        // from a filter. (Estimates of aggregations and filters are rough:
        // q18's 57 orders are estimated at some 0.6 M rows at SF 1.)
        if estimate
            .num_rows
            .get_value()
            .zip(filter.build_rows)
            .is_some_and(|(&n, b)| n < b)
        {
            return Ok(None);
        }
        let (build_keys, probe_keys): (Vec<_>, Vec<_>) = filter
            .build_keys
            .iter()
            .zip(keys)
            .filter_map(|(l, &k)| Some((l.clone(), k?)))
            .unzip();
        if build_keys.is_empty() {
            return Ok(None);
        }
        // The distinct keys: a hash join walks every duplicate of a key
        // for each probe row (q5's supplier nations: 25 keys, 100 k rows
        // at SF 10).
        let named = build_keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, format!("key{i}")))
            .collect();
        let distinct = AggregateExec::try_new(
            AggregateMode::Single,
            PhysicalGroupBy::new_single(named),
            vec![],
            vec![],
            filter.build.clone(),
            filter.build.schema(),
        )?;
        let distinct_schema = distinct.schema();
        let schema = plan.schema();
        let on = probe_keys
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let l: Arc<dyn PhysicalExpr> =
                    Arc::new(Column::new(distinct_schema.field(i).name(), i));
                let r: Arc<dyn PhysicalExpr> = Arc::new(Column::new(schema.field(k).name(), k));
                (l, r)
            })
            .collect();
        let semi = HashJoinExec::try_new(
            Arc::new(distinct),
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

    /// `plan`, an inner hash join, with the filter put into each of its
    /// sides that holds a key, directly or through the join's own
    /// equalities (`o_orderkey = l_orderkey`: a filter on `o_orderkey`
    /// above the join filters both sides); `None` if neither side takes it.
    fn through_inner_join(
        &mut self,
        plan: &Arc<dyn ExecutionPlan>,
        join: &HashJoinExec,
        keys: &[Option<usize>],
        filter: &Filter,
        crossed: bool,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let mut children = vec![join.left().clone(), join.right().clone()];
        let mut changed = false;
        for (child, keys) in children.iter_mut().zip(join_sides(join, keys)) {
            let Some(keys) = keys else { continue };
            if let Some(filtered) = self.below_exchange(child, &keys, filter, crossed)? {
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
}

/// The column an expression is, if it is one.
fn column(e: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    e.downcast_ref::<Column>().map(Column::index)
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
    let mapped: Keys = if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
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

/// The columns `keys` of a hash join's output as columns of its left and
/// of its right side. For an inner join, a key from one side is on the
/// other too where the join equates it with a column there; elsewhere a
/// key is lost (`None`) on the side it does not come from. `None` for a
/// side that keeps no key.
fn join_sides(join: &HashJoinExec, keys: &[Option<usize>]) -> [Option<Keys>; 2] {
    let (_, indices) = build_join_schema(
        &join.left().schema(),
        &join.right().schema(),
        join.join_type(),
    );
    let output: Vec<&ColumnIndex> = match &join.projection {
        Some(p) => p.iter().map(|&i| &indices[i]).collect(),
        None => indices.iter().collect(),
    };
    let inner = *join.join_type() == JoinType::Inner;
    // The same key on the other side, where the join equates them.
    let across = |side: JoinSide, c: usize| {
        join.on().iter().find_map(|(l, r)| {
            let (here, there) = if side == JoinSide::Left {
                (l, r)
            } else {
                (r, l)
            };
            (column(here) == Some(c)).then(|| column(there)).flatten()
        })
    };
    [JoinSide::Left, JoinSide::Right].map(|side| {
        let keys: Keys = keys
            .iter()
            .map(|k| {
                let c = output.get((*k)?)?;
                if c.side == side {
                    Some(c.index)
                } else if inner && c.side != JoinSide::None {
                    across(c.side, c.index)
                } else {
                    None
                }
            })
            .collect();
        keys.iter().any(Option::is_some).then_some(keys)
    })
}
