//! Writing a query's rows as table files, one task per partition.
//!
//! [`TableWriterExec`] is the root of a write's final stage: each task
//! writes its partition's rows as one Parquet file in the table's directory
//! (local or in an object store) under a name no other attempt uses, and
//! yields one row naming the file (path relative to the table, bytes,
//! rows). Nothing it writes is part of the table until the driver commits
//! the files it chose — one attempt's per partition — in one commit; the
//! files of attempts it did not choose, and of writes that failed, are
//! removed by the driver (or, if it died, left unreferenced for `VACUUM`).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::arrow::arrow_writer::ArrowWriterOptions;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlanProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use url::Url;

/// The columns a [`TableWriterExec`] yields: one row per file written.
pub fn written_files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
    ]))
}

/// Writes each partition of its input as a Parquet file in a table's
/// directory and yields the file's name, size and row count.
#[derive(Debug)]
pub struct TableWriterExec {
    input: Arc<dyn ExecutionPlan>,
    table: Url,
    prefix: String,
    properties: Arc<PlanProperties>,
}

impl TableWriterExec {
    /// Writes `input` into the directory `table` (a URL ending in `/`),
    /// naming files `{prefix}-{partition}-{random}.parquet`.
    pub fn new(input: Arc<dyn ExecutionPlan>, table: Url, prefix: String) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(written_files_schema()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        TableWriterExec {
            input,
            table,
            prefix,
            properties,
        }
    }

    /// The table directory written to.
    pub fn table(&self) -> &Url {
        &self.table
    }

    /// The prefix of the files' names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Writes one partition; `None` if it had no rows (no file is made).
    async fn write(
        input: SendableRecordBatchStream,
        table: Url,
        name: String,
        ctx: Arc<TaskContext>,
    ) -> Result<Option<(String, i64, i64)>> {
        let store_url = ObjectStoreUrl::parse(&table[..url::Position::BeforePath])?;
        let store = ctx.runtime_env().object_store(&store_url)?;
        let dir = object_store::path::Path::from_url_path(table.path())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let path = dir.clone().join(name.as_str());
        let schema = file_schema(&input.schema());
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut input = input;
        let mut writer: Option<AsyncArrowWriter<BufWriter>> = None;
        let mut rows = 0i64;
        while let Some(batch) = input.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            rows += batch.num_rows() as i64;
            let batch = to_file_schema(&batch, &schema)?;
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(AsyncArrowWriter::try_new_with_options(
                    BufWriter::new(store.clone(), path.clone()),
                    schema.clone(),
                    ArrowWriterOptions::new()
                        .with_properties(props.clone())
                        .with_skip_arrow_metadata(true),
                )?),
            };
            w.write(&batch).await?;
        }
        let Some(writer) = writer else {
            return Ok(None);
        };
        writer.close().await?;
        let bytes = store
            .head(&path)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .size as i64;
        Ok(Some((name, bytes, rows)))
    }
}

/// The schema files are written in: the input's, every column nullable.
/// String and binary views are written as they are; the files carry no
/// Arrow schema, so readers see Parquet's plain strings and binaries.
fn file_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), f.data_type().clone(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

fn to_file_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        schema.clone(),
        batch.columns().to_vec(),
    )?)
}

impl DisplayAs for TableWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TableWriterExec: table={}, prefix={}",
            self.table, self.prefix
        )
    }
}

impl ExecutionPlan for TableWriterExec {
    fn name(&self) -> &str {
        "TableWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("TableWriterExec takes one child");
        }
        Ok(Arc::new(TableWriterExec::new(
            children.swap_remove(0),
            self.table.clone(),
            self.prefix.clone(),
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
        let input = self.input.execute(partition, ctx.clone())?;
        let name = format!(
            "{}-{partition:05}-{}.snappy.parquet",
            self.prefix,
            uuid::Uuid::new_v4().simple()
        );
        let table = self.table.clone();
        let schema = written_files_schema();
        let out = schema.clone();
        let fut = async move {
            let written = TableWriterExec::write(input, table, name, ctx).await?;
            let (paths, bytes, rows) = match written {
                Some((p, b, r)) => (vec![p], vec![b], vec![r]),
                None => (vec![], vec![], vec![]),
            };
            Ok(RecordBatch::try_new(
                out,
                vec![
                    Arc::new(StringArray::from(paths)),
                    Arc::new(Int64Array::from(bytes)),
                    Arc::new(Int64Array::from(rows)),
                ],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(fut),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn each_partition_becomes_one_file_and_empty_ones_none() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        let df = ctx
            .sql("SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, NULL)) AS t(x, y) WHERE x < 3")
            .await
            .unwrap();
        let input = df.create_physical_plan().await.unwrap();
        let table = Url::from_directory_path(dir.path()).unwrap();
        let exec = Arc::new(TableWriterExec::new(input, table, "part-w1".into()));
        let out = datafusion::physical_plan::collect(exec, ctx.task_ctx())
            .await
            .unwrap();
        let rows: usize = out.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 1, "one file for the one partition with rows");
        let b = &out[0];
        let path = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let written = b.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
        assert!(path.value(0).starts_with("part-w1-00000-"));
        assert_eq!(written.value(0), 2);
        let file = dir.path().join(path.value(0));
        let size = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().len() as i64,
            size.value(0)
        );
        let back = ctx
            .read_parquet(file.to_str().unwrap(), Default::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(back.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    }
}
