//! The distributed planner: cuts a DataFusion physical plan into stages at
//! its exchange boundaries.
//!
//! * `RepartitionExec` (hash or round-robin): its input becomes a stage
//!   ending in a [`ShuffleWriterExec`] with the same partitioning, and the
//!   repartition is replaced by a [`ShuffleReaderExec`] of that stage.
//! * `CoalescePartitionsExec` and `SortPreservingMergeExec`: their input
//!   becomes a stage whose map tasks keep their rows whole (one output per
//!   input partition); the merge stays, above a reader of all those outputs.
//!   When the merge feeds a join's build side, every task of the consuming
//!   stage reads the whole (small) side: a broadcast. A merge whose input
//!   is already a stage's output (a key filter reading a stage whole,
//!   [`crate::key_filter`]) stays in the consuming stage over its reader.
//! * A node the plan holds twice is cut once.
//!
//! Stages come out in dependency order: a stage's inputs precede it. Each
//! stage runs one task per partition of its root.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{Result, internal_datafusion_err};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, ExecutionPlan, ExecutionPlanProperties, ReplaceChildrenOptions,
};
use strata_executor::ids::StageId;
use strata_executor::shuffle::{ShuffleLocation, ShuffleReaderExec, ShuffleWriterExec};

/// Children replaced with the node's properties recomputed.
pub(crate) fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

/// A stage of a job.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Its id (its index in the job: 0-based, in dependency order).
    pub id: StageId,
    /// Its plan: a [`ShuffleWriterExec`] for map stages, the query's root
    /// (rewritten) for the final stage.
    pub plan: Arc<dyn ExecutionPlan>,
    /// Stages it reads.
    pub inputs: Vec<StageId>,
    /// Number of tasks (partitions of the plan's root or of the writer's input).
    pub tasks: usize,
}

/// A job cut into stages; the last is the final stage, whose partitions are
/// the query's result.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// The job.
    pub job: String,
    /// Stages in dependency order.
    pub stages: Vec<Stage>,
    /// Bytes its tasks may hold at once on one executor (its session's
    /// `strata.query_memory_limit`); 0: no cap of its own.
    pub memory_limit: u64,
    /// What it runs, as its reports show it (the SQL statement).
    pub description: String,
}

impl JobPlan {
    /// The final stage (the last one). [`plan_stages`] always makes one;
    /// `None` only for a plan built by hand without stages.
    pub fn final_stage(&self) -> Option<&Stage> {
        self.stages.last()
    }
}

struct Cutter<'a> {
    root: &'a std::path::Path,
    job: &'a str,
    stages: Vec<Stage>,
    /// Nodes already rewritten, by address: a node the plan holds twice
    /// (a join's build side that is also its probe side's key filter,
    /// [`crate::key_filter`]) is cut once. The original is kept so that its
    /// address stays its own.
    done: HashMap<*const (), (Arc<dyn ExecutionPlan>, Rewritten)>,
}

/// A rewritten plan and the stages it reads.
type Rewritten = (Arc<dyn ExecutionPlan>, Vec<StageId>);

/// Cuts `plan` into stages whose shuffle files go under `shuffle_root`.
pub fn plan_stages(
    job: &str,
    plan: Arc<dyn ExecutionPlan>,
    shuffle_root: &std::path::Path,
) -> Result<JobPlan> {
    let mut c = Cutter {
        root: shuffle_root,
        job,
        stages: Vec::new(),
        done: HashMap::new(),
    };
    let (root, inputs) = c.rewrite(plan)?;
    let id = c.next_id();
    let tasks = root.output_partitioning().partition_count();
    c.stages.push(Stage {
        id,
        plan: root,
        inputs,
        tasks,
    });
    Ok(JobPlan {
        job: job.to_owned(),
        stages: c.stages,
        memory_limit: 0,
        description: String::new(),
    })
}

impl Cutter<'_> {
    /// The id of the next stage cut.
    fn next_id(&self) -> StageId {
        StageId::new(self.stages.len() as u32)
    }

    fn location(&self, stage: StageId) -> ShuffleLocation {
        ShuffleLocation {
            root: self.root.to_path_buf(),
            job: self.job.to_owned(),
            stage,
        }
    }

    /// Ends a stage at `input`; returns the reader that replaces it and
    /// the new stage's id.
    fn cut(
        &mut self,
        input: Arc<dyn ExecutionPlan>,
        inputs: Vec<StageId>,
        partitioning: Option<datafusion::physical_plan::Partitioning>,
    ) -> (Arc<dyn ExecutionPlan>, StageId) {
        let id = self.next_id();
        let location = self.location(id);
        let schema = input.schema();
        let tasks = input.output_partitioning().partition_count();
        // Columns a filter below fixed stay fixed above the exchange.
        let constants: Vec<usize> = input
            .equivalence_properties()
            .constants()
            .iter()
            .filter_map(|c| {
                c.expr
                    .downcast_ref::<datafusion::physical_expr::expressions::Column>()
                    .map(|col| col.index())
            })
            .collect();
        // The reader is partitioned as the stage's output is: by the
        // repartition it replaces, or as its input when the stage keeps its
        // partitions.
        let read_as = partitioning
            .clone()
            .unwrap_or_else(|| input.output_partitioning().clone());
        let writer = ShuffleWriterExec::new(input, location.clone(), partitioning);
        self.stages.push(Stage {
            id,
            plan: Arc::new(writer),
            inputs,
            tasks,
        });
        let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::with_properties(
            location, schema, read_as, constants,
        ));
        (reader, id)
    }

    /// Rewrites `plan`, returning it and the stages it reads; a node seen
    /// before gives the same result again.
    fn rewrite(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Rewritten> {
        let address = Arc::as_ptr(&plan) as *const ();
        if let Some((_, done)) = self.done.get(&address) {
            return Ok(done.clone());
        }
        let rewritten = self.rewrite_new(plan.clone())?;
        self.done.insert(address, (plan, rewritten.clone()));
        Ok(rewritten)
    }

    fn rewrite_new(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Rewritten> {
        let plan = single_probe_for_global_build_tracking(plan)?;
        let mut children = Vec::new();
        let mut inputs = Vec::new();
        // A scalar subquery's expressions (in its main input) share their
        // results with the ScalarSubqueryExec above them at run time, so
        // that input is never cut away from it; its subquery plans are.
        let keep_first = plan.downcast_ref::<ScalarSubqueryExec>().is_some();
        for (i, child) in plan.children().into_iter().enumerate() {
            if keep_first && i == 0 {
                children.push(child.clone());
                continue;
            }
            let (c, i) = self.rewrite(child.clone())?;
            children.push(c);
            inputs.extend(i);
        }
        // A stage read twice (a key filter's and its join's) is one input.
        inputs.sort_unstable();
        inputs.dedup();
        if let Some(r) = plan.downcast_ref::<RepartitionExec>() {
            let child = children
                .pop()
                .ok_or_else(|| internal_datafusion_err!("a repartition without a child"))?;
            let (reader, id) = self.cut(child, inputs, Some(r.partitioning().clone()));
            return Ok((reader, vec![id]));
        }
        if plan.downcast_ref::<CoalescePartitionsExec>().is_some()
            || plan.downcast_ref::<SortPreservingMergeExec>().is_some()
        {
            let child = children
                .pop()
                .ok_or_else(|| internal_datafusion_err!("a merge without a child"))?;
            let nothing_to_merge =
                child.output_partitioning().partition_count() <= 1 && inputs.is_empty();
            if nothing_to_merge || child.downcast_ref::<ShuffleReaderExec>().is_some() {
                // Nothing to merge across tasks, or a stage's outputs
                // already: keep it in this stage (each task reads them all).
                let p = plan.replace_children(vec![child], recompute())?;
                return Ok((p, inputs));
            }
            let (reader, id) = self.cut(child, inputs, None);
            let p = plan.replace_children(vec![reader], recompute())?;
            return Ok((p, vec![id]));
        }
        if children.is_empty() {
            return Ok((plan, inputs));
        }
        let p = plan.replace_children(children, recompute())?;
        Ok((p, inputs))
    }
}

/// A join that collects its build (left) side once and tracks which build
/// rows matched across *all* probe partitions of one plan instance (left,
/// full, left semi, left anti and left mark joins: DataFusion emits the
/// unmatched build rows when the last probe partition ends) cannot be split
/// into tasks by probe partition: each task would see only its own matches.
/// Such a join gets its probe side merged into one partition, so one task
/// sees every probe row.
fn single_probe_for_global_build_tracking(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
    let tracks = tracks_build_matches;
    let needs = if let Some(h) = plan.downcast_ref::<HashJoinExec>() {
        *h.partition_mode() == PartitionMode::CollectLeft && tracks(h.join_type())
    } else if let Some(n) = plan.downcast_ref::<NestedLoopJoinExec>() {
        tracks(n.join_type())
    } else {
        false
    };
    let children = plan.children();
    if !needs || children.len() != 2 || children[1].output_partitioning().partition_count() <= 1 {
        return Ok(plan);
    }
    let left = children[0].clone();
    let right: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(children[1].clone()));
    plan.replace_children(vec![left, right], recompute())
}

/// Cuts a plan made in a [`session_state`] into stages, with key filters
/// ([`crate::key_filter`]) first, as `config` has them.
pub fn cut(
    job: &str,
    plan: Arc<dyn ExecutionPlan>,
    config: &datafusion::config::ConfigOptions,
    shuffle_root: &std::path::Path,
) -> Result<JobPlan> {
    use datafusion::physical_optimizer::PhysicalOptimizerRule;
    let plan = crate::key_filter::KeyFilters.optimize(plan, config)?;
    let mut job = plan_stages(job, plan, shuffle_root)?;
    job.memory_limit = memory_limit(config)?;
    Ok(job)
}

/// The session's `strata.query_memory_limit` in bytes (0: none).
fn memory_limit(config: &datafusion::config::ConfigOptions) -> Result<u64> {
    let Some(options) = config
        .extensions
        .get::<strata_executor::engine::StrataOptions>()
    else {
        return Ok(0);
    };
    strata_executor::memory::parse_size(&options.query_memory_limit)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            datafusion::common::DataFusionError::Configuration(format!(
                "strata.query_memory_limit: {e}"
            ))
        })
}

/// A human-readable rendering of the stages (what `EXPLAIN` shows).
pub fn display_stages(job: &JobPlan) -> String {
    let mut out = String::new();
    for s in &job.stages {
        out.push_str(&format!(
            "Stage {} ({} tasks{}):\n",
            s.id,
            s.tasks,
            if s.inputs.is_empty() {
                String::new()
            } else {
                format!(", reads stages {:?}", s.inputs)
            }
        ));
        let shown = datafusion::physical_plan::displayable(s.plan.as_ref())
            .indent(true)
            .to_string();
        for line in shown.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub use strata_executor::engine::session_config;

/// A join that tracks which build rows matched across all of its probe
/// partitions (left, full, left semi, left anti, left mark).
fn tracks_build_matches(t: &datafusion::common::JoinType) -> bool {
    use datafusion::common::JoinType;
    matches!(
        t,
        JoinType::Left
            | JoinType::Full
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
    )
}

/// A physical optimizer rule, run right after DataFusion's join selection:
/// a hash join that collects a small build side (`CollectLeft`, a
/// broadcast once cut into stages) but tracks build-side matches across
/// all probe partitions is made `Partitioned` again, so that each task
/// sees all the rows of its key range on both sides. Joins that only need
/// their own probe rows keep the broadcast. (Null-aware anti joins, `NOT
/// IN`, must stay collected; the cutter then gives them a single probe
/// task.)
#[derive(Debug, Default)]
pub struct PartitionTrackingJoins;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for PartitionTrackingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
        plan.transform_up(|node| {
            let Some(h) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if *h.partition_mode() != PartitionMode::CollectLeft
                || !tracks_build_matches(h.join_type())
                || h.null_aware
            {
                return Ok(Transformed::no(node));
            }
            let partitioned = h
                .builder()
                .with_partition_mode(PartitionMode::Partitioned)
                .build()?;
            Ok(Transformed::yes(
                Arc::new(partitioned) as Arc<dyn ExecutionPlan>
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "strata_partition_tracking_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The session state plans are made in: [`session_config`], DataFusion's
/// default features and physical optimizer with
/// [`PartitionTrackingJoins`] after its join selection, and the job
/// functions. (Plans to be cut into stages get
/// [`crate::key_filter::KeyFilters`] too: [`cut`].)
pub fn session_state(
    target_partitions: usize,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> datafusion::execution::SessionState {
    session_state_with(session_config(target_partitions), runtime)
}

/// [`session_state`] with a configuration of the caller's (made from
/// [`session_config`]: the SQL gateway names its catalog and schema).
pub fn session_state_with(
    config: datafusion::prelude::SessionConfig,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> datafusion::execution::SessionState {
    use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
    use strata_executor::functions::WithJobFunctions;
    let mut rules = PhysicalOptimizer::new().rules;
    let at = rules
        .iter()
        .position(|r| r.name() == "join_selection")
        .map_or(rules.len(), |i| i + 1);
    rules.insert(at, Arc::new(PartitionTrackingJoins));
    datafusion::execution::session_state::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rules(rules)
        .with_job_functions()
        .build()
}
