//! `pg_catalog.pg_tables` and `pg_catalog.pg_views` by relation kind, and
//! `pg_index`'s vector columns as arrays.
//!
//! `datafusion-pg-catalog` lists every relation in `pg_tables` (views too)
//! and nothing in `pg_views`; tools that tell tables from views by these
//! two (dbt's relation cache does, and drops a view with `DROP TABLE` when
//! it finds it among the tables) need them split. Both are read from the
//! session's live `pg_class` and `pg_namespace` each time they are
//! scanned, never kept.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{Result, internal_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// Where a catalog view's rows come from.
#[derive(Debug)]
enum Source {
    /// A query over the live catalog.
    Query(&'static str),
    /// A catalog table of `datafusion-pg-catalog`, reshaped as clients
    /// read it ([`CatalogView::reshaped`]).
    Table(Arc<dyn TableProvider>),
}

/// A catalog view computed at each scan: its source's rows in `schema`
/// (columns cast, text vectors as arrays, columns the source lacks NULL).
#[derive(Debug)]
struct CatalogView {
    schema: SchemaRef,
    source: Source,
}

#[async_trait]
impl TableProvider for CatalogView {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = match &self.source {
            Source::Query(sql) => {
                let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
                    return internal_err!("a catalog view scanned outside a session");
                };
                let plan = state.create_logical_plan(sql).await?;
                state.create_physical_plan(&plan).await?
            }
            Source::Table(inner) => inner.scan(state, None, &[], None).await?,
        };
        let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await?;
        let batches = batches
            .iter()
            .map(|b| self.shape(b))
            .collect::<Result<Vec<_>>>()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn flag(name: &str) -> Field {
    Field::new(name, DataType::Boolean, true)
}

/// `pg_catalog` with `pg_tables` and `pg_views` of its own over the rest.
#[derive(Debug)]
struct Overlay {
    inner: Arc<dyn SchemaProvider>,
    own: Vec<(&'static str, Arc<dyn TableProvider>)>,
}

#[async_trait]
impl SchemaProvider for Overlay {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.own.iter().find(|(n, _)| *n == name) {
            Some((_, t)) => Ok(Some(t.clone())),
            None if name == "pg_class" || name == "pg_index" => {
                let extra = match name {
                    "pg_class" => vec![Field::new(
                        "reloptions",
                        DataType::new_list(DataType::Utf8, true),
                        true,
                    )],
                    _ => Vec::new(),
                };
                Ok(self
                    .inner
                    .table(name)
                    .await?
                    .map(|t| Arc::new(CatalogView::reshaped(t, extra)) as Arc<dyn TableProvider>))
            }
            None => self.inner.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.own.iter().any(|(n, _)| *n == name) || self.inner.table_exist(name)
    }
}

/// The columns [`CatalogView::reshaped`] turns into arrays, and their
/// items' type.
const VECTOR_COLUMNS: [(&str, DataType); 4] = [
    ("indkey", DataType::Int16),
    ("indoption", DataType::Int16),
    ("indcollation", DataType::UInt32),
    ("indclass", DataType::UInt32),
];

impl CatalogView {
    /// A catalog table of `datafusion-pg-catalog` reshaped as clients read
    /// it: its `int2vector` and `oidvector` columns (kept as space-separated
    /// text) as arrays — `unnest(pg_index.indkey)`, SQLAlchemy's reflection
    /// of keys and indexes — and `extra` columns PostgreSQL has and it
    /// lacks, NULL in every row (`pg_class.reloptions`: no table has
    /// storage options).
    fn reshaped(inner: Arc<dyn TableProvider>, extra: Vec<Field>) -> CatalogView {
        let mut fields: Vec<Field> = inner
            .schema()
            .fields()
            .iter()
            .map(
                |f| match VECTOR_COLUMNS.iter().find(|(n, _)| n == f.name()) {
                    Some((_, item)) if f.data_type() == &DataType::Utf8 => {
                        Field::new(f.name(), DataType::new_list(item.clone(), true), true)
                    }
                    _ => f.as_ref().clone(),
                },
            )
            .collect();
        for f in extra {
            if !fields.iter().any(|g| g.name() == f.name()) {
                fields.push(f);
            }
        }
        CatalogView {
            schema: Arc::new(Schema::new(fields)),
            source: Source::Table(inner),
        }
    }

    /// A batch of the source in the view's schema.
    fn shape(&self, b: &RecordBatch) -> Result<RecordBatch> {
        let mut columns = b
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| match f.data_type() {
                DataType::List(item) if c.data_type() == &DataType::Utf8 => {
                    vector_column(c, item.data_type())
                }
                t => Ok(cast(c, t)?),
            })
            .collect::<Result<Vec<_>>>()?;
        for f in &self.schema.fields()[columns.len()..] {
            columns.push(datafusion::arrow::array::new_null_array(
                f.data_type(),
                b.num_rows(),
            ));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// `"1 2 3"` as a list of `item`s (NULL for NULL).
fn vector_column(
    text: &datafusion::arrow::array::ArrayRef,
    item: &DataType,
) -> Result<datafusion::arrow::array::ArrayRef> {
    use datafusion::arrow::array::{Array, ListArray, StringArray};
    let strings = cast(text, &DataType::Utf8)?;
    let Some(strings) = strings.as_any().downcast_ref::<StringArray>() else {
        return internal_err!("a cast to Utf8 is not Utf8");
    };
    let mut offsets = vec![0i32];
    let mut items: Vec<Option<String>> = Vec::new();
    for i in 0..strings.len() {
        if !strings.is_null(i) {
            items.extend(
                strings
                    .value(i)
                    .split_whitespace()
                    .map(|s| Some(s.to_owned())),
            );
        }
        offsets.push(items.len() as i32);
    }
    let values = cast(&StringArray::from(items), item)?;
    let nulls = strings.nulls().cloned();
    Ok(Arc::new(ListArray::try_new(
        Arc::new(Field::new_list_field(item.clone(), true)),
        datafusion::arrow::buffer::OffsetBuffer::new(offsets.into()),
        values,
        nulls,
    )?))
}

/// `pg_catalog` (`inner`) with `pg_tables` and `pg_views` split by kind.
pub fn overlay(inner: Arc<dyn SchemaProvider>) -> Arc<dyn SchemaProvider> {
    let tables = CatalogView {
        schema: Arc::new(Schema::new(vec![
            text("schemaname"),
            text("tablename"),
            text("tableowner"),
            text("tablespace"),
            flag("hasindexes"),
            flag("hasrules"),
            flag("hastriggers"),
            flag("rowsecurity"),
        ])),
        source: Source::Query(
            "SELECT n.nspname, c.relname, 'postgres' AS owner, NULL AS space, false AS a, \
              false AS b, false AS c, false AS d \
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p')",
        ),
    };
    let views = CatalogView {
        schema: Arc::new(Schema::new(vec![
            text("schemaname"),
            text("viewname"),
            text("viewowner"),
            text("definition"),
        ])),
        source: Source::Query(
            "SELECT n.nspname, c.relname, 'postgres' AS owner, v.definition \
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              LEFT JOIN information_schema.views v \
                ON v.table_schema = n.nspname AND v.table_name = c.relname \
              WHERE c.relkind = 'v'",
        ),
    };
    Arc::new(Overlay {
        inner,
        own: vec![
            ("pg_tables", Arc::new(tables)),
            ("pg_views", Arc::new(views)),
        ],
    })
}
