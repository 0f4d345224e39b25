//! Writes that land all at once: a plan whose root is a [`CommitExec`].
//!
//! A table that takes writes (a warehouse's Delta table) plans `INSERT` as
//! `CommitExec(TableWriterExec(query))`. A [`crate::session::Session`]
//! runs the [`TableWriterExec`](strata_executor::write::TableWriterExec)
//! part as a job on the cluster — every task writes its own file, and the
//! driver keeps one attempt's output per partition — then hands the files
//! that job returned to the table's [`Committer`], which makes them part
//! of the table in one commit. A write that fails or is cancelled is
//! [aborted](Committer::abort): its files are removed and the table is as
//! it was. Run in one process (DataFusion executing the plan itself), the
//! same node writes then commits.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};

/// Makes a write's files part of a table, or removes them.
#[async_trait]
pub trait Committer: fmt::Debug + Send + Sync {
    /// Commits the files the write's tasks wrote (batches of
    /// [`written_files_schema`](strata_executor::write::written_files_schema),
    /// one attempt's per partition), in one commit; removes files of the
    /// same write that are not among them (attempts not chosen).
    async fn commit(&self, files: &[RecordBatch]) -> Result<u64>;

    /// Removes every file the write made: it will not be committed.
    async fn abort(&self) -> Result<()>;
}

/// Deletes every object under `prefix` in `store` (a local file system's
/// emptied directories stay); objects already gone are no error.
pub async fn delete_prefix(
    store: &dyn object_store::ObjectStore,
    prefix: &object_store::path::Path,
) -> std::result::Result<(), object_store::Error> {
    use futures::{StreamExt, TryStreamExt};
    let files = store.list(Some(prefix)).map_ok(|m| m.location).boxed();
    let deleted: Vec<_> = store.delete_stream(files).collect().await;
    for d in deleted {
        match d {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One file a write's task reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    /// Its path, relative to the table's (or COPY's) directory.
    pub path: String,
    /// Its size.
    pub bytes: i64,
    /// Its rows.
    pub rows: i64,
}

/// The files a table writer's batches report (in
/// [`written_files_schema`](strata_executor::write::written_files_schema)).
pub fn written_files(batches: &[RecordBatch]) -> Result<Vec<WrittenFile>> {
    let mut out = Vec::new();
    for b in batches {
        let col = |i: usize| b.column(i).as_any();
        let (Some(paths), Some(bytes), Some(rows)) = (
            col(0).downcast_ref::<datafusion::arrow::array::StringArray>(),
            col(1).downcast_ref::<Int64Array>(),
            col(2).downcast_ref::<Int64Array>(),
        ) else {
            return internal_err!("a table writer's report has the wrong columns");
        };
        out.extend((0..b.num_rows()).map(|i| WrittenFile {
            path: paths.value(i).to_owned(),
            bytes: bytes.value(i),
            rows: rows.value(i),
        }));
    }
    Ok(out)
}

/// The rows written, as DataFusion's DML plans report them.
pub fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

/// The number of rows files batches name.
pub fn rows_in(files: &[RecordBatch]) -> u64 {
    files
        .iter()
        .filter_map(|b| b.column(2).as_any().downcast_ref::<Int64Array>())
        .flat_map(|a| a.iter().flatten())
        .map(|r| r.max(0) as u64)
        .sum()
}

/// The rows a DML plan's `count` batches report.
pub fn count_in(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>())
        .flat_map(|a| a.iter().flatten())
        .sum()
}

/// Commits the files its input (a table writer) reports.
#[derive(Debug)]
pub struct CommitExec {
    input: Arc<dyn ExecutionPlan>,
    committer: Arc<dyn Committer>,
    properties: Arc<PlanProperties>,
}

impl CommitExec {
    /// Commits what `input` writes through `committer`.
    pub fn new(input: Arc<dyn ExecutionPlan>, committer: Arc<dyn Committer>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        CommitExec {
            input,
            committer,
            properties,
        }
    }

    /// The plan that writes the files.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// Who commits them.
    pub fn committer(&self) -> &Arc<dyn Committer> {
        &self.committer
    }
}

/// The one-row result of a write of `rows` rows.
pub fn count_batch(rows: u64) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        count_schema(),
        vec![Arc::new(UInt64Array::from(vec![rows]))],
    )?)
}

impl DisplayAs for CommitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitExec")
    }
}

impl ExecutionPlan for CommitExec {
    fn name(&self) -> &str {
        "CommitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("CommitExec takes one child");
        }
        Ok(Arc::new(CommitExec::new(
            children.swap_remove(0),
            self.committer.clone(),
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
        if partition != 0 {
            return internal_err!("CommitExec has one partition, not {partition}");
        }
        let input = self.input.clone();
        let committer = self.committer.clone();
        let fut = async move {
            match datafusion::physical_plan::collect_partitioned(input, ctx).await {
                Ok(files) => {
                    let files: Vec<RecordBatch> = files.into_iter().flatten().collect();
                    count_batch(committer.commit(&files).await?)
                }
                Err(e) => {
                    if let Err(cleanup) = committer.abort().await {
                        tracing::warn!(error = %cleanup, "a failed write's files stay");
                    }
                    Err(e)
                }
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(fut),
        )))
    }
}
