//! Writing a query's rows as table files, one task per partition.
//!
//! [`TableWriterExec`] is the root of a write's final stage: each task
//! writes its partition's rows as files in the table's directory (local or
//! in an object store) under names no other attempt uses — one file, or
//! one per `col=value/` directory it saw rows for when the write is
//! partitioned by columns ([`WriteSpec`]) — and yields one row per file
//! (path relative to the table, bytes, rows). Nothing it writes is part of
//! the table until the driver commits the files it chose — one attempt's
//! per partition — in one commit; the files of attempts it did not choose,
//! and of writes that failed, are removed by the driver (or, if it died,
//! left unreferenced for `VACUUM`, or in a staging directory readers skip).

mod files;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
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
use url::Url;

pub use files::{
    DEFAULT_ROW_GROUP_ROWS, FileFormat, NULL_PARTITION, WriteSpec, unescape_partition_value,
};
use files::{FileWriter, file_schema, split};

/// The columns a [`TableWriterExec`] yields: one row per file written.
pub fn written_files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
    ]))
}

/// Writes each partition of its input as files in a table's directory and
/// yields each file's name, size and row count.
#[derive(Debug)]
pub struct TableWriterExec {
    input: Arc<dyn ExecutionPlan>,
    table: Url,
    prefix: String,
    spec: WriteSpec,
    properties: Arc<PlanProperties>,
}

/// A file a task wrote: its path relative to the table, bytes and rows.
type Written = (String, i64, i64);

impl TableWriterExec {
    /// Writes `input` into the directory `table` (a URL ending in `/`) as
    /// Snappy Parquet, naming files `{prefix}-{partition}-{random}.snappy.parquet`.
    pub fn new(input: Arc<dyn ExecutionPlan>, table: Url, prefix: String) -> Self {
        TableWriterExec::with_spec(input, table, prefix, WriteSpec::default())
    }

    /// Writes `input` into `table` as `spec` says (format, partition
    /// columns).
    pub fn with_spec(
        input: Arc<dyn ExecutionPlan>,
        table: Url,
        prefix: String,
        spec: WriteSpec,
    ) -> Self {
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
            spec,
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

    /// The files' format and partition columns.
    pub fn spec(&self) -> &WriteSpec {
        &self.spec
    }

    /// Writes one partition: a file per partition directory it has rows
    /// for (none if it has no rows), each named `name`.
    async fn write(
        input: SendableRecordBatchStream,
        table: Url,
        spec: WriteSpec,
        name: String,
        ctx: Arc<TaskContext>,
    ) -> Result<Vec<Written>> {
        let store_url = ObjectStoreUrl::parse(&table[..url::Position::BeforePath])?;
        let store = ctx.runtime_env().object_store(&store_url)?;
        let dir = object_store::path::Path::from_url_path(table.path())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut input = input;
        let mut open: Vec<(String, FileWriter)> = Vec::new();
        let mut by_dir: HashMap<String, usize> = HashMap::new();
        while let Some(batch) = input.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            for (part, rows) in split(&batch, &spec.partition_by)? {
                let schema = file_schema(&rows.schema());
                let rows = RecordBatch::try_new(schema.clone(), rows.columns().to_vec())?;
                let i = match by_dir.get(&part) {
                    Some(&i) => i,
                    None => {
                        let relative = match part.as_str() {
                            "" => name.clone(),
                            _ => format!("{part}/{name}"),
                        };
                        let path = relative
                            .split('/')
                            .fold(dir.clone(), |p, segment| p.join(segment));
                        let writer = FileWriter::new(store.clone(), path, schema, &spec.format)?;
                        open.push((relative, writer));
                        by_dir.insert(part, open.len() - 1);
                        open.len() - 1
                    }
                };
                open[i].1.write(&rows).await?;
            }
        }
        let mut written = Vec::with_capacity(open.len());
        for (relative, writer) in open {
            let (path, rows) = writer.close().await?;
            let bytes = store
                .head(&path)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .size as i64;
            written.push((relative, bytes, rows));
        }
        Ok(written)
    }
}

impl DisplayAs for TableWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TableWriterExec: table={}, prefix={}, format={}",
            self.table,
            self.prefix,
            self.spec.format.extension()
        )?;
        if !self.spec.partition_by.is_empty() {
            write!(f, ", partition_by={:?}", self.spec.partition_by)?;
        }
        Ok(())
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
        Ok(Arc::new(TableWriterExec::with_spec(
            children.swap_remove(0),
            self.table.clone(),
            self.prefix.clone(),
            self.spec.clone(),
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
            "{}-{partition:05}-{}.{}",
            self.prefix,
            uuid::Uuid::new_v4().simple(),
            self.spec.format.extension()
        );
        let table = self.table.clone();
        let spec = self.spec.clone();
        let schema = written_files_schema();
        let out = schema.clone();
        let fut = async move {
            let written = TableWriterExec::write(input, table, spec, name, ctx).await?;
            let paths: Vec<&str> = written.iter().map(|(p, _, _)| p.as_str()).collect();
            let bytes: Vec<i64> = written.iter().map(|(_, b, _)| *b).collect();
            let rows: Vec<i64> = written.iter().map(|(_, _, r)| *r).collect();
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

    #[tokio::test]
    async fn a_partitioned_write_makes_a_file_per_value_directory_without_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        let df = ctx
            .sql("SELECT * FROM (VALUES (1, 'eu'), (2, 'us'), (3, 'eu')) AS t(x, region)")
            .await
            .unwrap();
        let input = df.create_physical_plan().await.unwrap();
        let table = Url::from_directory_path(dir.path()).unwrap();
        let spec = WriteSpec {
            format: FileFormat::Csv {
                header: true,
                delimiter: b';',
            },
            partition_by: vec!["region".into()],
        };
        let exec = Arc::new(TableWriterExec::with_spec(input, table, "w".into(), spec));
        let out = datafusion::physical_plan::collect(exec, ctx.task_ctx())
            .await
            .unwrap();
        let mut files: Vec<(String, i64)> = Vec::new();
        for b in &out {
            let p = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let r = b.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
            files.extend((0..b.num_rows()).map(|i| (p.value(i).to_owned(), r.value(i))));
        }
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files[0].0.starts_with("region=eu/w-00000-") && files[0].0.ends_with(".csv"));
        assert_eq!(files[0].1, 2);
        assert!(files[1].0.starts_with("region=us/"));
        let eu = std::fs::read_to_string(dir.path().join(&files[0].0)).unwrap();
        assert_eq!(eu, "x\n1\n3\n", "one header, the partition column left out");
    }
}
