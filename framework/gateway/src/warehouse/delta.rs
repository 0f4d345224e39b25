//! Managed tables: Delta Lake tables in the warehouse (delta-rs).
//!
//! A [`DeltaProvider`] reads a table at its latest version (each query
//! loads the log again, so commits of other sessions and processes are
//! seen) or at one pinned version (`VERSION AS OF`). Its scan is a plain
//! Parquet scan of exactly the files that version holds, with the row
//! counts the log records — the scan the cluster already runs — so queries
//! of managed tables run on executors like any other.
//!
//! Writes go through [`strata_framework::write`]: `INSERT` is planned as
//! `CommitExec(TableWriterExec(query))`, whose tasks write one Parquet file
//! per partition into the table's directory; the [`DeltaCommitter`] then
//! adds the files of one attempt per partition in one Delta commit (or, for
//! `CREATE TABLE … AS`, in the commit that creates the table) and removes
//! every other file of that write. `DELETE` and `UPDATE` are delta-rs's
//! operations (they rewrite the files they touch, in the gateway's
//! process, and commit once).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::{Precision, Statistics};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DataFusionError, Result, ScalarValue, not_impl_err};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake_core::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake_core::kernel::transaction::CommitBuilder;
use deltalake_core::kernel::{Action, Add, StructField, StructType};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use strata_executor::write::{TableWriterExec, WriteSpec};
use strata_framework::write::{
    CommitExec, Committer, WrittenFile, count_batch, count_schema, rows_in,
};
use url::Url;

use super::partitions::{self, ScanColumns};

fn delta_err(e: DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Opens the Delta table at `url`, at `version` or its latest.
pub async fn open(url: &Url, version: Option<i64>) -> Result<DeltaTable, DeltaTableError> {
    match version {
        Some(v) => deltalake_core::open_table_with_version(url.clone(), v.max(0) as u64).await,
        None => deltalake_core::open_table(url.clone()).await,
    }
}

/// The type a column is kept as in a Delta table: Delta has no unsigned
/// integers, no string views and microsecond timestamps.
fn storable(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 | DataType::Null => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 => DataType::Float32,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Date64 => DataType::Date32,
        t => t.clone(),
    }
}

/// The schema a table made from `schema` has (every column nullable, as
/// DataFusion's `CREATE TABLE` columns are unless `NOT NULL`).
pub fn storable_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), storable(f.data_type()), f.is_nullable()))
            .collect::<Vec<_>>(),
    ))
}

/// Delta columns for an Arrow schema.
pub fn delta_columns(schema: &Schema) -> Result<Vec<StructField>> {
    let st = StructType::try_from_arrow(schema).map_err(|e| {
        DataFusionError::Plan(format!("a Delta table cannot hold these columns: {e}"))
    })?;
    Ok(st.fields().cloned().collect())
}

/// Creates an empty Delta table at `url` with `schema`'s columns,
/// partitioned by `partition_by`.
pub async fn create_empty(
    url: &Url,
    name: &str,
    schema: &Schema,
    partition_by: &[String],
) -> Result<()> {
    deltalake_core::operations::create::CreateBuilder::new()
        .with_location(url.as_str())
        .with_table_name(name)
        .with_columns(delta_columns(schema)?)
        .with_partition_columns(partition_by.to_vec())
        .with_save_mode(SaveMode::ErrorIfExists)
        .await
        .map_err(delta_err)?;
    Ok(())
}

/// A managed table as DataFusion sees it.
#[derive(Debug)]
pub struct DeltaProvider {
    url: Url,
    schema: SchemaRef,
    version: Option<i64>,
    columns: ScanColumns,
}

impl DeltaProvider {
    /// The table at `url`, read at `version` (or its latest each query).
    pub async fn open(url: Url, version: Option<i64>) -> Result<DeltaProvider, DeltaTableError> {
        let table = open(&url, version).await?;
        let snapshot = table.snapshot()?;
        let schema = snapshot.snapshot().arrow_schema();
        let columns = ScanColumns::new(&schema, snapshot.metadata().partition_columns())
            .map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        Ok(DeltaProvider {
            url,
            schema,
            version,
            columns,
        })
    }

    /// Where the table is.
    pub fn url(&self) -> &Url {
        &self.url
    }

    async fn load(&self) -> Result<DeltaTable> {
        let table = open(&self.url, self.version).await.map_err(delta_err)?;
        let snapshot = table.snapshot().map_err(delta_err)?;
        let features = snapshot.protocol().reader_features();
        if let Some(f) = features
            .into_iter()
            .flatten()
            .map(|f| f.to_string())
            .find(|f| matches!(f.as_str(), "deletionVectors" | "columnMapping"))
        {
            return not_impl_err!("Delta tables with the reader feature {f} cannot be read yet");
        }
        Ok(table)
    }
}

#[async_trait]
impl TableProvider for DeltaProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters on partition columns alone choose the files to read;
        // DataFusion still applies every filter to the rows.
        Ok(filters
            .iter()
            .map(|f| {
                if self.columns.only_partitions(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = self.load().await?;
        let snapshot = table.snapshot().map_err(delta_err)?;
        let columns = &self.columns;
        let dir = object_store::path::Path::from_url_path(self.url.path())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // Exactly the files this version holds, with the row counts the
        // log records (a file gone from storage fails the scan), and their
        // partition values.
        let mut files: Vec<PartitionedFile> = snapshot
            .log_data()
            .into_iter()
            .map(|f| {
                let path: object_store::path::Path =
                    dir.parts().chain(f.object_store_path().parts()).collect();
                let size = f.size().max(0) as u64;
                let mut stats = Statistics::new_unknown(&self.schema);
                stats.total_byte_size = Precision::Inexact(size as usize);
                if let Some(n) = f.num_records() {
                    stats.num_rows = Precision::Exact(n);
                }
                let mut file =
                    PartitionedFile::new(String::new(), size).with_statistics(Arc::new(stats));
                // The object's path as it is (parsing its text again would
                // encode a partition value's escapes twice).
                file.object_meta.location = path;
                file.partition_values = columns.file_values(&f.partition_values_map())?;
                Ok(file)
            })
            .collect::<Result<_>>()?;
        // Filters on partition columns alone, evaluated once over every
        // file's values.
        let on_partitions = filters
            .iter()
            .filter(|f| columns.only_partitions(f))
            .cloned()
            .collect();
        if let Some(filter) = conjunction(on_partitions)? {
            let values: Vec<Vec<ScalarValue>> =
                files.iter().map(|f| f.partition_values.clone()).collect();
            let mut keep = columns.keep(state, &filter, &values)?.into_iter();
            files.retain(|_| keep.next().unwrap_or(true));
        }
        let (mut rows, mut bytes) = (Some(0usize), 0usize);
        for f in &files {
            bytes += f.object_meta.size as usize;
            rows = match f.statistics.as_ref().map(|s| s.num_rows) {
                Some(Precision::Exact(n)) => rows.map(|r| r + n),
                _ => None,
            };
        }
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        if files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let partitions = state.config_options().execution.target_partitions.max(1);
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions.min(files.len())];
        let slots = groups.len();
        for (i, f) in files.into_iter().enumerate() {
            groups[i % slots].push(f);
        }
        let mut table_stats = Statistics::new_unknown(&self.schema);
        table_stats.total_byte_size = Precision::Inexact(bytes);
        if let Some(rows) = rows {
            table_stats.num_rows = Precision::Exact(rows);
        }
        let store = ObjectStoreUrl::parse(&self.url[..url::Position::BeforePath])?;
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let source = format.file_source(
            TableSchema::builder(columns.file_schema.clone())
                .with_table_partition_cols(columns.partition_fields.clone())
                .build(),
        );
        let config = FileScanConfigBuilder::new(store, source)
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_statistics(table_stats)
            .with_projection_indices(Some(columns.projection(projection)))?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.version.is_some() {
            return not_impl_err!("an older version of a table cannot be written");
        }
        let mode = match insert_op {
            InsertOp::Append => SaveMode::Append,
            InsertOp::Overwrite => SaveMode::Overwrite,
            InsertOp::Replace => return not_impl_err!("INSERT OR REPLACE into a Delta table"),
        };
        let partition_by = self.columns.partition_names();
        Ok(Arc::new(DeltaCommitter::plan(
            input,
            &self.url,
            Target::Existing(mode),
            partition_by,
        )))
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = self.load().await?;
        let mut delete = table.delete();
        let filters = materialize_subqueries(state, filters).await?;
        if let Some(p) = conjunction(filters)? {
            delete = delete.with_predicate(p);
        }
        let (_, metrics) = delete.await.map_err(delta_err)?;
        count_exec(metrics.num_deleted_rows.unwrap_or(0) as u64)
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = self.load().await?;
        let mut update = table.update();
        for (column, value) in assignments {
            // An assignment that keeps a column as it is needs no update.
            if matches!(&value, Expr::Column(c) if c.name == column) {
                continue;
            }
            update = update.with_update(column, unqualified(value)?);
        }
        let filters = materialize_subqueries(state, filters).await?;
        if let Some(p) = conjunction(filters)? {
            update = update.with_predicate(p);
        }
        let (_, metrics) = update.await.map_err(delta_err)?;
        count_exec(metrics.num_updated_rows as u64)
    }
}

/// Runs `DELETE` or `UPDATE` of a managed table from the statement's plan
/// as written (`None`: not one). DataFusion's optimizer would turn a
/// `WHERE key IN (SELECT …)` into a join before the table sees the
/// statement, and the table would be handed no filter — every row; taken
/// from the unoptimized plan, the filter is the statement's, its
/// subqueries run first. The rows deleted or updated.
pub async fn run_dml(
    state: &datafusion::execution::SessionState,
    dml: &datafusion::logical_expr::DmlStatement,
) -> Result<Option<u64>> {
    use datafusion::datasource::DefaultTableSource;
    use datafusion::logical_expr::{LogicalPlan, WriteOp, utils::split_conjunction};
    if !matches!(dml.op, WriteOp::Delete | WriteOp::Update) {
        return Ok(None);
    }
    let Some(source) = dml.target.downcast_ref::<DefaultTableSource>() else {
        return Ok(None);
    };
    let Some(table) = source.table_provider.downcast_ref::<DeltaProvider>() else {
        return Ok(None);
    };
    let mut filters = Vec::new();
    let mut assignments = Vec::new();
    let mut node = dml.input.as_ref();
    loop {
        match node {
            LogicalPlan::Filter(f) => {
                filters.extend(split_conjunction(&f.predicate).into_iter().cloned());
                node = f.input.as_ref();
            }
            LogicalPlan::Projection(p) if dml.op == WriteOp::Update && assignments.is_empty() => {
                for e in &p.expr {
                    match e {
                        Expr::Alias(a) => assignments.push((a.name.clone(), (*a.expr).clone())),
                        Expr::Column(c) => assignments.push((c.name.clone(), e.clone())),
                        other => {
                            return not_impl_err!("UPDATE with the assignment {other}");
                        }
                    }
                }
                node = p.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(a) => node = a.input.as_ref(),
            LogicalPlan::TableScan(_) => break,
            other => {
                return not_impl_err!(
                    "{} of a managed table reading other tables than through WHERE \
                     subqueries ({})",
                    dml.op,
                    other.display()
                );
            }
        }
    }
    let plan = if dml.op == WriteOp::Delete {
        table.delete_from(state, filters).await?
    } else {
        table.update(state, assignments, filters).await?
    };
    let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await?;
    Ok(Some(strata_framework::write::count_in(&batches)))
}

/// `filters` with their uncorrelated subqueries run and replaced by their
/// values (`x IN (SELECT …)` a list, a scalar subquery a literal, `EXISTS`
/// a boolean): delta-rs evaluates predicates row by row, without plans.
/// (dbt's incremental models delete `WHERE key IN (SELECT key FROM tmp)`.)
async fn materialize_subqueries(state: &dyn Session, filters: Vec<Expr>) -> Result<Vec<Expr>> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::expr::{Exists, InList, InSubquery};
    use datafusion::logical_expr::{LogicalPlan, Subquery};
    async fn values(state: &dyn Session, plan: &LogicalPlan) -> Result<Vec<ScalarValue>> {
        let physical = state.create_physical_plan(plan).await?;
        let batches = datafusion::physical_plan::collect(physical, state.task_ctx()).await?;
        let mut out = Vec::new();
        for b in batches {
            for row in 0..b.num_rows() {
                out.push(ScalarValue::try_from_array(b.column(0), row)?);
            }
        }
        Ok(out)
    }
    fn subqueries(e: &Expr) -> Vec<Subquery> {
        let mut found = Vec::new();
        e.apply(|e| {
            match e {
                Expr::InSubquery(InSubquery { subquery, .. })
                | Expr::Exists(Exists { subquery, .. })
                | Expr::ScalarSubquery(subquery) => found.push(subquery.clone()),
                _ => {}
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .ok();
        found
    }
    let mut out = Vec::with_capacity(filters.len());
    for f in filters {
        let mut results = HashMap::new();
        for s in subqueries(&f) {
            let v = values(state, &s.subquery).await?;
            results.insert(s, v);
        }
        if results.is_empty() {
            out.push(f);
            continue;
        }
        let replaced = f.transform(|e| {
            Ok(match e {
                Expr::InSubquery(InSubquery {
                    expr,
                    subquery,
                    negated,
                }) => {
                    let list = results[&subquery]
                        .iter()
                        .cloned()
                        .map(datafusion::logical_expr::lit)
                        .collect();
                    Transformed::yes(Expr::InList(InList::new(expr, list, negated)))
                }
                Expr::Exists(Exists { subquery, negated }) => {
                    let any = !results[&subquery].is_empty();
                    Transformed::yes(datafusion::logical_expr::lit(any != negated))
                }
                Expr::ScalarSubquery(subquery) => {
                    let v = results[&subquery]
                        .first()
                        .cloned()
                        .unwrap_or(ScalarValue::Null);
                    Transformed::yes(datafusion::logical_expr::lit(v))
                }
                e => Transformed::no(e),
            })
        })?;
        out.push(replaced.data);
    }
    Ok(out)
}

/// `filters` as one predicate with column names alone (delta-rs resolves
/// them against the table's own schema).
fn conjunction(filters: Vec<Expr>) -> Result<Option<Expr>> {
    filters
        .into_iter()
        .map(unqualified)
        .reduce(|a, b| Ok(a?.and(b?)))
        .transpose()
}

fn unqualified(e: Expr) -> Result<Expr> {
    Ok(e.transform(|e| {
        Ok(match e {
            Expr::Column(c) if c.relation.is_some() => {
                Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
            }
            e => Transformed::no(e),
        })
    })?
    .data)
}

fn count_exec(rows: u64) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(MemorySourceConfig::try_new_exec(
        &[vec![count_batch(rows)?]],
        count_schema(),
        None,
    )?)
}

/// What a write commits into.
#[derive(Debug)]
pub enum Target {
    /// A table that exists, appended to or overwritten.
    Existing(SaveMode),
    /// A table the commit creates (`CREATE TABLE … AS`), with its name and
    /// columns.
    New(String, Vec<StructField>),
}

/// Commits a write's files into a Delta table in one commit.
#[derive(Debug)]
pub struct DeltaCommitter {
    url: Url,
    prefix: String,
    target: Target,
    partition_by: Vec<String>,
}

impl DeltaCommitter {
    /// A write into the table at `url`, partitioned by `partition_by`,
    /// whose files get a fresh prefix.
    pub fn new(url: Url, target: Target, partition_by: Vec<String>) -> DeltaCommitter {
        DeltaCommitter {
            url,
            prefix: format!("part-{}", uuid::Uuid::new_v4().simple()),
            target,
            partition_by,
        }
    }

    /// The plan that writes `input` into the table at `url` (its tasks
    /// write the files — in a directory per partition when the table is
    /// partitioned — and this committer commits them).
    pub fn plan(
        input: Arc<dyn ExecutionPlan>,
        url: &Url,
        target: Target,
        partition_by: Vec<String>,
    ) -> CommitExec {
        let spec = WriteSpec {
            partition_by: partition_by.clone(),
            ..WriteSpec::default()
        };
        let committer = DeltaCommitter::new(url.clone(), target, partition_by);
        let writer = TableWriterExec::with_spec(input, url.clone(), committer.prefix.clone(), spec);
        CommitExec::new(Arc::new(writer), Arc::new(committer))
    }

    fn store(&self) -> Result<(Arc<dyn ObjectStore>, object_store::path::Path)> {
        super::store::object_store_for(&self.url)
    }

    /// Removes this write's files but `keep`.
    async fn remove_files(&self, keep: &HashSet<String>) -> Result<()> {
        let (store, dir) = self.store()?;
        let ours: Vec<object_store::path::Path> = store
            .list(Some(&dir))
            .map_err(|e| DataFusionError::External(Box::new(e)))
            .try_filter_map(|meta| {
                let name = meta.location.filename().unwrap_or_default().to_owned();
                let mine = name.starts_with(&self.prefix) && !keep.contains(&name);
                async move { Ok(mine.then_some(meta.location)) }
            })
            .try_collect()
            .await?;
        for path in ours {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(DataFusionError::External(Box::new(e))),
            }
        }
        Ok(())
    }
}

/// The Delta `add` actions for the files a write's tasks wrote (in the
/// directories of `partition_by`'s values).
fn adds(files: &[WrittenFile], partition_by: &[String]) -> Result<Vec<Add>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    files
        .iter()
        .map(|f| {
            Ok(Add {
                path: partitions::log_path(&f.path),
                partition_values: partitions::values_of(&f.path, partition_by)?,
                size: f.bytes,
                modification_time: now,
                data_change: true,
                stats: Some(format!("{{\"numRecords\":{}}}", f.rows)),
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
                clustering_provider: None,
            })
        })
        .collect()
}

#[async_trait]
impl Committer for DeltaCommitter {
    async fn commit(&self, files: &[RecordBatch]) -> Result<u64> {
        let written = strata_framework::write::written_files(files)?;
        let adds = adds(&written, &self.partition_by)?;
        let keep: HashSet<String> = written
            .iter()
            .filter_map(|f| f.path.rsplit('/').next().map(str::to_owned))
            .collect();
        let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        match &self.target {
            Target::New(name, columns) => {
                deltalake_core::operations::create::CreateBuilder::new()
                    .with_location(self.url.as_str())
                    .with_table_name(name)
                    .with_columns(columns.clone())
                    .with_partition_columns(self.partition_by.clone())
                    .with_save_mode(SaveMode::ErrorIfExists)
                    .with_actions(actions)
                    .await
                    .map_err(delta_err)?;
            }
            Target::Existing(mode) => {
                let table = open(&self.url, None).await.map_err(delta_err)?;
                let snapshot = table.snapshot().map_err(delta_err)?;
                if *mode == SaveMode::Overwrite {
                    let removes: Vec<Action> = snapshot
                        .log_data()
                        .into_iter()
                        .map(|f| Action::Remove(f.remove_action(true)))
                        .collect();
                    actions.extend(removes);
                }
                CommitBuilder::default()
                    .with_actions(actions)
                    .build(
                        Some(snapshot),
                        table.log_store(),
                        DeltaOperation::Write {
                            mode: *mode,
                            partition_by: (!self.partition_by.is_empty())
                                .then(|| self.partition_by.clone()),
                            predicate: None,
                        },
                    )
                    .await
                    .map_err(delta_err)?;
            }
        }
        // Attempts the driver did not choose wrote files too.
        if let Err(e) = self.remove_files(&keep).await {
            tracing::warn!(error = %e, "files of attempts not committed stay");
        }
        Ok(rows_in(files))
    }

    async fn abort(&self) -> Result<()> {
        self.remove_files(&HashSet::new()).await
    }
}
