//! Shuffle operators: [`ShuffleWriterExec`] ends a stage, writing each of
//! its input partitions' rows into per-output-partition Arrow IPC files;
//! [`ShuffleReaderExec`] starts the next stage, reading one output partition
//! from every map task's files.
//!
//! Layout under the shuffle root:
//! `{job}/s{stage}/p{output_partition}/from-{input_partition}.arrow`, one
//! Arrow IPC stream file per (map task, output partition). A file is written
//! under a temporary name and renamed when complete, so a reader never sees
//! half a file.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics;
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::{StreamExt, TryStreamExt};

use crate::ids::{PartitionId, StageId};
use crate::shuffle_service::{ShuffleTicket, fetch_stream, partition_stream};

/// Where one map task's output lives, as a reading task sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapOutputLocation {
    /// The map task (input partition of the map stage).
    pub map_partition: PartitionId,
    /// The executor that holds it.
    pub executor_id: String,
    /// That executor's Flight address (`host:port`).
    pub flight_address: String,
}

/// The shuffle environment of one task on an executor, carried in its
/// [`TaskContext`]'s session config as an extension. Without it (the
/// in-process runner) writers and readers use the plan's own root and read
/// every file there.
#[derive(Debug, Default)]
pub struct ShuffleEnv {
    /// This executor's shuffle root.
    pub root: PathBuf,
    /// This executor's id: outputs it holds are read from disk, not fetched.
    pub executor_id: String,
    /// The attempt, so that concurrent attempts never share a temporary file.
    pub attempt: u32,
    /// Per input stage, where its map outputs are.
    pub inputs: std::collections::HashMap<StageId, Vec<MapOutputLocation>>,
    /// Set by a reader whose fetch failed: (stage, executor).
    pub fetch_failure: std::sync::Mutex<Option<(StageId, String)>>,
}

impl ShuffleEnv {
    fn of(ctx: &TaskContext) -> Option<Arc<ShuffleEnv>> {
        ctx.session_config().get_extension::<ShuffleEnv>()
    }
}

/// What a map task wrote.
#[derive(Clone, Debug, Default)]
pub struct WriteStats {
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Bytes per non-empty output partition: (partition, bytes).
    pub partition_bytes: Vec<(PartitionId, u64)>,
}

/// Where a stage's shuffle files live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShuffleLocation {
    /// The shuffle root (an executor's local directory).
    pub root: PathBuf,
    /// The job.
    pub job: String,
    /// The stage.
    pub stage: StageId,
}

impl ShuffleLocation {
    /// The Flight ticket of one output partition.
    pub fn ticket(&self, output_partition: PartitionId) -> ShuffleTicket {
        ShuffleTicket {
            job: self.job.clone(),
            stage: self.stage,
            partition: output_partition,
            maps: None,
        }
    }

    /// The directory of one output partition (the layout the executor's
    /// shuffle service serves).
    pub fn partition_dir(&self, output_partition: PartitionId) -> PathBuf {
        self.ticket(output_partition).dir(&self.root)
    }

    /// The file one map task writes for one output partition.
    pub fn file(&self, output_partition: PartitionId, input_partition: PartitionId) -> PathBuf {
        self.partition_dir(output_partition)
            .join(format!("from-{input_partition}.arrow"))
    }
}

/// A shuffle file being written: its final path and its IPC writer.
type OpenFile = (PathBuf, StreamWriter<BufWriter<File>>);

/// Ends a stage: runs one input partition of its child and splits the rows
/// into output partitions by `partitioning` (or keeps them whole as output
/// partition = input partition when `None`). It returns no rows; its
/// output is the files.
#[derive(Debug)]
pub struct ShuffleWriterExec {
    input: Arc<dyn ExecutionPlan>,
    location: ShuffleLocation,
    partitioning: Option<Partitioning>,
    properties: Arc<PlanProperties>,
}

impl ShuffleWriterExec {
    /// A writer for `input`, repartitioned by `partitioning`.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        location: ShuffleLocation,
        partitioning: Option<Partitioning>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        ShuffleWriterExec {
            input,
            location,
            partitioning,
            properties,
        }
    }

    /// The child plan.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// Where it writes.
    pub fn location(&self) -> &ShuffleLocation {
        &self.location
    }

    /// How it splits rows (`None`: one output per input partition).
    pub fn partitioning(&self) -> Option<&Partitioning> {
        self.partitioning.as_ref()
    }

    /// Number of output partitions.
    pub fn output_partitions(&self) -> usize {
        match &self.partitioning {
            Some(p) => p.partition_count(),
            None => self.input.output_partitioning().partition_count(),
        }
    }

    /// Runs map task `input_partition` to completion.
    pub async fn write(
        &self,
        input_partition: PartitionId,
        ctx: Arc<TaskContext>,
    ) -> Result<WriteStats> {
        let env = ShuffleEnv::of(&ctx);
        let location = match &env {
            Some(env) => ShuffleLocation {
                root: env.root.clone(),
                ..self.location.clone()
            },
            None => self.location.clone(),
        };
        static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp_suffix = format!(
            "tmp.{}.{}",
            std::process::id(),
            UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut stream = self.input.execute(input_partition.index(), ctx)?;
        let schema = self.input.schema();
        // Only the outputs this task writes to (without a partitioning,
        // just its own): a stage of many partitions must not cost each
        // task a slot per partition.
        let mut writers: BTreeMap<PartitionId, OpenFile> = BTreeMap::new();
        let mut partitioner = match &self.partitioning {
            Some(p) => Some(BatchPartitioner::try_new(
                p.clone(),
                metrics::Time::new(),
                input_partition.index(),
                self.input.output_partitioning().partition_count(),
            )?),
            None => None,
        };
        let mut rows = 0u64;
        let mut push = |out: PartitionId,
                        batch: RecordBatch,
                        writers: &mut BTreeMap<PartitionId, OpenFile>|
         -> Result<()> {
            if batch.num_rows() == 0 {
                return Ok(());
            }
            rows += batch.num_rows() as u64;
            let (_, w) = match writers.entry(out) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let path = location.file(out, input_partition);
                    let dir = location.partition_dir(out);
                    std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
                    let tmp = path.with_extension(&tmp_suffix);
                    let file = File::create(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
                    e.insert((path, StreamWriter::try_new(BufWriter::new(file), &schema)?))
                }
            };
            w.write(&compact_views(batch)?)?;
            Ok(())
        };
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            match partitioner.as_mut() {
                Some(p) => p.partition(batch, |out, b| {
                    push(PartitionId::new(out as u32), b, &mut writers)
                })?,
                None => push(input_partition, batch, &mut writers)?,
            }
        }
        let mut stats = WriteStats {
            rows,
            bytes: 0,
            partition_bytes: Vec::new(),
        };
        for (out, (path, mut w)) in writers {
            w.finish()?;
            drop(w);
            let tmp = path.with_extension(&tmp_suffix);
            std::fs::rename(&tmp, &path).map_err(|e| io_err("renaming", &tmp, e))?;
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            stats.partition_bytes.push((out, len));
            stats.bytes += len;
        }
        Ok(stats)
    }
}

/// A batch whose string and binary *view* columns hold only the bytes of
/// its own rows. A view array taken (filtered, partitioned) from a larger
/// one still points into all of the larger one's buffers, and IPC would
/// write them whole: a 2,000-row shuffle batch could carry 30 MB.
fn compact_views(batch: RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Array, ArrayRef, BinaryViewArray, StringViewArray};
    use datafusion::arrow::datatypes::DataType;
    if !batch
        .columns()
        .iter()
        .any(|c| matches!(c.data_type(), DataType::Utf8View | DataType::BinaryView))
    {
        return Ok(batch);
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8View => match c.as_any().downcast_ref::<StringViewArray>() {
                Some(a) if bloated(a.data_buffers(), a.total_buffer_bytes_used()) => {
                    Arc::new(a.gc()) as ArrayRef
                }
                _ => c.clone(),
            },
            DataType::BinaryView => match c.as_any().downcast_ref::<BinaryViewArray>() {
                Some(a) if bloated(a.data_buffers(), a.total_buffer_bytes_used()) => {
                    Arc::new(a.gc()) as ArrayRef
                }
                _ => c.clone(),
            },
            _ => c.clone(),
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Whether view data buffers hold much more than the views use (then the
/// copy that compacts them is worth it; otherwise the batch is written as
/// it is).
fn bloated(buffers: &[datafusion::arrow::buffer::Buffer], used: usize) -> bool {
    let held: usize = buffers.iter().map(|b| b.len()).sum();
    held > 2 * used + 64 * 1024
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> DataFusionError {
    DataFusionError::External(format!("shuffle: {what} {}: {e}", path.display()).into())
}

impl DisplayAs for ShuffleWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.partitioning {
            Some(p) => write!(
                f,
                "ShuffleWriterExec: stage={}, partitioning={p}",
                self.location.stage
            ),
            None => write!(
                f,
                "ShuffleWriterExec: stage={}, partitioning=by input",
                self.location.stage
            ),
        }
    }
}

impl ExecutionPlan for ShuffleWriterExec {
    fn name(&self) -> &str {
        "ShuffleWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        if let Some(Partitioning::Hash(exprs, _)) = &self.partitioning {
            for e in exprs {
                if f(e)? == TreeNodeRecursion::Stop {
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("ShuffleWriterExec takes one child");
        }
        Ok(Arc::new(ShuffleWriterExec::new(
            children.swap_remove(0),
            self.location.clone(),
            self.partitioning.clone(),
        )))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // Executed as a plan, the writer runs its map task and yields nothing.
        let schema = self.input.schema();
        let this = ShuffleWriterExec::new(
            self.input.clone(),
            self.location.clone(),
            self.partitioning.clone(),
        );
        let fut = async move {
            this.write(PartitionId::new(partition as u32), ctx).await?;
            Ok::<_, DataFusionError>(futures::stream::empty::<Result<RecordBatch>>())
        };
        let stream = futures::stream::once(fut).flat_map(|r| match r {
            Ok(s) => s.boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Where a reader's batches come from.
enum Source {
    Local {
        root: PathBuf,
        ticket: ShuffleTicket,
    },
    Remote {
        executor_id: String,
        address: String,
        ticket: ShuffleTicket,
    },
}

/// The sources of output partition `partition` of `location`'s stage: one
/// per executor holding map outputs, naming exactly the map tasks whose
/// output it holds (so a speculative copy's duplicate is never read).
fn sources(
    env: &ShuffleEnv,
    location: &ShuffleLocation,
    partition: PartitionId,
) -> Result<Vec<Source>> {
    let outputs = env.inputs.get(&location.stage).ok_or_else(|| {
        DataFusionError::Internal(format!(
            "task has no locations for its input stage {}",
            location.stage
        ))
    })?;
    let mut by_executor: std::collections::BTreeMap<(&str, &str), Vec<PartitionId>> =
        Default::default();
    for o in outputs {
        by_executor
            .entry((o.executor_id.as_str(), o.flight_address.as_str()))
            .or_default()
            .push(o.map_partition);
    }
    Ok(by_executor
        .into_iter()
        .map(|((executor_id, address), mut maps)| {
            maps.sort_unstable();
            let ticket = ShuffleTicket {
                maps: Some(maps),
                ..location.ticket(partition)
            };
            if executor_id == env.executor_id {
                Source::Local {
                    root: env.root.clone(),
                    ticket,
                }
            } else {
                Source::Remote {
                    executor_id: executor_id.to_owned(),
                    address: address.to_owned(),
                    ticket,
                }
            }
        })
        .collect())
}

/// Starts a stage: output partition `p` is every map task's file for `p`.
///
/// It reports the partitioning its stage was written with (a hash
/// repartition's, or its input's when the stage kept its partitions), as
/// the exchange it replaces did: operators above that check their inputs'
/// partitioning (an `InterleaveExec` over a union, a partitioned join)
/// still see what the planner saw.
#[derive(Debug)]
pub struct ShuffleReaderExec {
    location: ShuffleLocation,
    schema: SchemaRef,
    constants: Vec<usize>,
    properties: Arc<PlanProperties>,
}

impl ShuffleReaderExec {
    /// A reader of `partitions` output partitions of a stage, partitioned
    /// in no known way.
    pub fn new(location: ShuffleLocation, schema: SchemaRef, partitions: usize) -> Self {
        Self::with_properties(
            location,
            schema,
            Partitioning::UnknownPartitioning(partitions),
            Vec::new(),
        )
    }

    /// A reader whose output is partitioned by `partitioning` (a hash
    /// partitioning's expressions name the reader's columns) and whose
    /// columns `constants` are known to hold one value (a filter below the
    /// exchange fixed them): operators above rely on both, e.g. a window
    /// partitioned by such a column needs no sort on it.
    pub fn with_properties(
        location: ShuffleLocation,
        schema: SchemaRef,
        partitioning: Partitioning,
        constants: Vec<usize>,
    ) -> Self {
        let mut eq = EquivalenceProperties::new(schema.clone());
        let consts = constants
            .iter()
            .filter(|&&i| i < schema.fields().len())
            .map(|&i| {
                let col: Arc<dyn PhysicalExpr> = Arc::new(
                    datafusion::physical_expr::expressions::Column::new(schema.field(i).name(), i),
                );
                datafusion::physical_expr::ConstExpr::new(
                    col,
                    datafusion::physical_expr::AcrossPartitions::Heterogeneous,
                )
            });
        // Adding constants to fresh properties cannot fail.
        eq.add_constants(consts).ok();
        // Only a hash or range partitioning says where rows are.
        let partitioning = match partitioning {
            p @ (Partitioning::Hash(..) | Partitioning::Range(..)) => p,
            other => Partitioning::UnknownPartitioning(other.partition_count()),
        };
        let properties = Arc::new(PlanProperties::new(
            eq,
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        ShuffleReaderExec {
            location,
            schema,
            constants,
            properties,
        }
    }

    /// Columns known to be constant.
    pub fn constant_columns(&self) -> &[usize] {
        &self.constants
    }

    /// Where it reads.
    pub fn location(&self) -> &ShuffleLocation {
        &self.location
    }

    /// Number of partitions.
    pub fn partitions(&self) -> usize {
        self.properties.partitioning.partition_count()
    }

    /// How its output is partitioned.
    pub fn partitioning(&self) -> &Partitioning {
        &self.properties.partitioning
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ShuffleReaderExec: stage={}, partitions={}",
            self.location.stage,
            self.partitions()
        )
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &str {
        "ShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("ShuffleReaderExec takes no children");
        }
        Ok(self)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema.clone();
        let partition = PartitionId::new(partition as u32);
        let sources = match ShuffleEnv::of(&ctx) {
            None => vec![Source::Local {
                root: self.location.root.clone(),
                ticket: self.location.ticket(partition),
            }],
            Some(env) => sources(&env, &self.location, partition)?,
        };
        let env = ShuffleEnv::of(&ctx);
        let stage = self.location.stage;
        let batches = futures::stream::iter(sources)
            .then(move |source| {
                let env = env.clone();
                async move {
                    match source {
                        Source::Local { root, ticket } => Ok(partition_stream(root, ticket)
                            .map_err(|e| DataFusionError::External(Box::new(e)))
                            .boxed()),
                        Source::Remote {
                            executor_id,
                            address,
                            ticket,
                        } => {
                            let failed = {
                                let env = env.clone();
                                let executor_id = executor_id.clone();
                                move |e: crate::shuffle_service::ShuffleError| {
                                    if let Some(env) = &env {
                                        *env.fetch_failure
                                            .lock()
                                            .unwrap_or_else(|p| p.into_inner()) =
                                            Some((stage, executor_id.clone()));
                                    }
                                    DataFusionError::External(Box::new(e))
                                }
                            };
                            let s = fetch_stream(&address, &ticket).await.map_err(&failed)?;
                            Ok::<_, DataFusionError>(s.map_err(failed).boxed())
                        }
                    }
                }
            })
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, StringViewArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn view_columns_keep_only_their_rows_bytes() {
        let long: Vec<String> = (0..1000).map(|i| format!("{i:0>200}")).collect();
        let all = StringViewArray::from_iter_values(long.iter());
        let one = all.slice(7, 1);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(one)]).unwrap();
        let before = batch.get_array_memory_size();
        let after = compact_views(batch.clone()).unwrap();
        assert!(
            after.get_array_memory_size() * 100 < before,
            "{before} -> {}",
            after.get_array_memory_size()
        );
        assert_eq!(after.column(0).len(), 1);
        let s = after
            .column(0)
            .as_any()
            .downcast_ref::<StringViewArray>()
            .unwrap();
        assert_eq!(s.value(0), long[7]);
    }
}
