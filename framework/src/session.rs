//! A SQL session over the cluster: DataFusion's catalog, parser and
//! planner in the driver process; every query runs as a distributed job.
//!
//! * `CREATE EXTERNAL TABLE … STORED AS PARQUET|CSV|JSON LOCATION '…'`
//!   (local paths, `file://`, `s3://`) and other DDL change the session's
//!   catalog and print nothing. Tables live as long as the session.
//! * Queries are planned by DataFusion, cut into stages ([`crate::planner`])
//!   and submitted to the [`Driver`]; results come back to the session.
//! * `EXPLAIN` shows DataFusion's plans and the stages the query would run as.
//! * Statements that write (`INSERT`, `COPY`) run in the driver process,
//!   except writes into tables planned as a [`CommitExec`] (a warehouse's
//!   Delta tables) and `COPY … TO` a directory ([`crate::copy`]): their
//!   files are written on the cluster and committed at once
//!   ([`crate::write`]).
//!
//! [`Session::context`] gives DataFusion's DataFrame API: build a
//! DataFrame with the session's context, then [`Session::collect`] runs it
//! on the cluster.

use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};

use crate::driver::{Driver, DriverError, JobHandle, JobOutput};
use crate::planner::{JobPlan, cut, display_stages, session_config, session_state_with};
use crate::write::{CommitExec, Committer, count_batch, count_schema};

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The SQL did not parse or plan (syntax, unknown table or column…).
    #[error("{0}")]
    Sql(#[from] DataFusionError),
    /// The job failed on the cluster.
    #[error("{0}")]
    Job(#[from] DriverError),
}

/// A statement, ready to run.
pub enum Prepared {
    /// DDL or a setting: done, nothing to show.
    Done,
    /// Rows computed in the driver (`EXPLAIN`, `SHOW`, writes).
    Rows(SchemaRef, Vec<RecordBatch>),
    /// A query running on the cluster.
    Job(JobHandle),
}

/// A SQL session whose queries run on the cluster.
pub struct Session {
    ctx: SessionContext,
    driver: Arc<Driver>,
    partitions: usize,
}

impl Session {
    /// A session whose plans have `partitions` partitions per stage.
    pub fn new(driver: Arc<Driver>, partitions: usize) -> Result<Session> {
        Session::with_config(driver, partitions, session_config(partitions))
    }

    /// A session with a configuration of the caller's, made from
    /// [`session_config`] (the SQL gateway names its catalog and schema
    /// and turns `information_schema` on).
    pub fn with_config(
        driver: Arc<Driver>,
        partitions: usize,
        config: SessionConfig,
    ) -> Result<Session> {
        let runtime = strata_executor::storage::runtime_env_builder().build_arc()?;
        let state = session_state_with(config, runtime);
        Ok(Session {
            ctx: SessionContext::new_with_state(state),
            driver,
            partitions,
        })
    }

    /// Sets a configuration option of this session, as `SET key = value`
    /// does (`datafusion.…` or `strata.…`).
    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        let state = self.ctx.state_ref();
        let mut state = state.write();
        state.config_mut().options_mut().set(key, value)
    }

    /// The DataFusion context: its catalog, and DataFrames to [`Session::collect`].
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The driver.
    pub fn driver(&self) -> &Arc<Driver> {
        &self.driver
    }

    /// Partitions per stage.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Splits a script into statements.
    /// DuckDB's `COPY … TO 'dir' (FORMAT …, PARTITION_BY (…))` is read
    /// too ([`crate::copy::duckdb_options`]).
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>, SessionError> {
        let sql = crate::copy::duckdb_options(sql);
        let name = self
            .ctx
            .state()
            .config()
            .options()
            .sql_parser
            .dialect
            .to_string();
        let dialect = datafusion::sql::sqlparser::dialect::dialect_from_str(&name)
            .unwrap_or_else(|| Box::new(datafusion::sql::sqlparser::dialect::GenericDialect {}));
        Ok(DFParser::parse_sql_with_dialect(&sql, dialect.as_ref())?.into())
    }

    /// Plans one statement and starts it (its jobs described by its text).
    pub async fn prepare(&self, statement: Statement) -> Result<Prepared, SessionError> {
        let text = statement.to_string();
        described(text, async {
            let state = self.ctx.state();
            let plan = state.statement_to_plan(statement).await?;
            self.run_plan(plan).await
        })
        .await
    }

    /// Starts a logical plan of this session: DDL and settings done at
    /// once, `EXPLAIN` and writes in this process, queries on the cluster.
    pub async fn run_plan(&self, plan: LogicalPlan) -> Result<Prepared, SessionError> {
        match plan {
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => {
                self.ctx.execute_logical_plan(plan).await?.collect().await?;
                Ok(Prepared::Done)
            }
            LogicalPlan::Explain(e) if e.verbose => {
                let df = self
                    .ctx
                    .execute_logical_plan(LogicalPlan::Explain(e))
                    .await?;
                let schema = Arc::new(df.schema().as_arrow().clone());
                Ok(Prepared::Rows(schema, df.collect().await?))
            }
            LogicalPlan::Explain(e) => {
                let df = self.ctx.execute_logical_plan((*e.plan).clone()).await?;
                let logical = df
                    .clone()
                    .into_optimized_plan()?
                    .display_indent()
                    .to_string();
                let physical = df.create_physical_plan().await?;
                let job = self.cut("explain", physical)?;
                let (schema, batch) = explain_batch(&logical, &display_stages(&job))?;
                Ok(Prepared::Rows(schema, vec![batch]))
            }
            LogicalPlan::Analyze(_) => Err(SessionError::Sql(DataFusionError::NotImplemented(
                "EXPLAIN ANALYZE does not run on the cluster; a job's per-stage figures \
                 (rows, bytes, tasks, time) are in its result (`strata sql --metrics`)"
                    .into(),
            ))),
            // DataFusion's optimizer turns a subquery of a DELETE's or an
            // UPDATE's WHERE into a join, after which the table is handed
            // no filter at all — and would change every row. Refused.
            LogicalPlan::Dml(ref d)
                if matches!(d.op, WriteOp::Delete | WriteOp::Update) && has_subquery(&d.input) =>
            {
                Err(SessionError::Sql(DataFusionError::NotImplemented(format!(
                    "{} with a subquery in its WHERE on table {} (managed tables of a \
                     warehouse take them)",
                    d.op, d.table_name
                ))))
            }
            // A COPY into a directory: tasks write, the driver commits.
            LogicalPlan::Copy(ref copy) if crate::copy::into_directory(copy) => {
                let state = self.ctx.state();
                let input = state.create_physical_plan(&copy.input).await?;
                let commit =
                    crate::copy::plan(copy, input, state.config_options(), state.runtime_env())?;
                let written = self.run_write(&commit).await?;
                Ok(Prepared::Rows(
                    count_schema(),
                    vec![count_batch(written.rows)?],
                ))
            }
            LogicalPlan::Dml(_) | LogicalPlan::Copy(_) | LogicalPlan::DescribeTable(_) => {
                self.run_here(plan).await
            }
            plan => {
                let df = self.ctx.execute_logical_plan(plan).await?;
                let physical = df.create_physical_plan().await?;
                // A query of the catalog (`information_schema`, `SHOW`)
                // is answered here: its tables live in this process.
                if !reads_files(&physical) && reads_catalog(&physical) {
                    let schema = physical.schema();
                    let batches =
                        datafusion::physical_plan::collect(physical, self.ctx.task_ctx()).await?;
                    return Ok(Prepared::Rows(schema, batches));
                }
                Ok(Prepared::Job(self.submit_plan(physical)?))
            }
        }
    }

    /// Runs a DML, COPY or DESCRIBE plan: in this process, except writes
    /// planned as a [`CommitExec`], whose files tasks on the cluster write.
    async fn run_here(&self, plan: LogicalPlan) -> Result<Prepared, SessionError> {
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let physical = df.create_physical_plan().await?;
        if let Some(commit) = physical.downcast_ref::<CommitExec>() {
            let written = self.run_write(commit).await?;
            return Ok(Prepared::Rows(
                count_schema(),
                vec![count_batch(written.rows)?],
            ));
        }
        let batches = datafusion::physical_plan::collect(physical, self.ctx.task_ctx()).await?;
        Ok(Prepared::Rows(schema, batches))
    }

    /// Runs a write ([`crate::write`]): its files are written by tasks on
    /// the cluster, then committed at once; a write that fails, or whose
    /// wait is dropped (a cancel), is aborted and leaves the table as it
    /// was. Returns the rows written.
    pub async fn run_write(&self, commit: &CommitExec) -> Result<Written, SessionError> {
        let committer = commit.committer().clone();
        // Rows that come from no file (`VALUES`, a session's in-memory
        // table) are written here: there is nothing to spread.
        if !reads_files(commit.input()) {
            let here = Arc::new(CommitExec::new(commit.input().clone(), committer));
            let out = datafusion::physical_plan::collect(here, self.ctx.task_ctx()).await?;
            return Ok(Written {
                rows: crate::write::count_in(&out),
                stages: Vec::new(),
            });
        }
        let abort = AbortOnDrop(Some(committer.clone()));
        let job = self.submit_plan(commit.input().clone())?;
        // A write whose wait is dropped (a cancel, a closed connection)
        // stops its tasks too.
        let stop = crate::driver::CancelOnDrop::new(job.canceller());
        let written = job.result().await.map_err(SessionError::from);
        stop.disarm();
        let out = written?;
        let rows = committer.commit(&out.batches).await?;
        abort.disarm();
        Ok(Written {
            rows,
            stages: out.stages,
        })
    }

    /// Runs a DataFrame built on [`Session::context`] on the cluster.
    pub async fn submit_dataframe(&self, df: DataFrame) -> Result<JobHandle, SessionError> {
        let physical = df.create_physical_plan().await?;
        self.submit_plan(physical)
    }

    /// Runs a physical plan on the cluster.
    pub fn submit_plan(&self, plan: Arc<dyn ExecutionPlan>) -> Result<JobHandle, SessionError> {
        let id = self.driver.next_job_id();
        let mut job = self.cut(&id, plan)?;
        job.description = DESCRIPTION.try_with(Clone::clone).unwrap_or_default();
        Ok(self.driver.submit(job)?)
    }

    /// Cuts a plan of this session into stages, with its settings.
    fn cut(&self, job: &str, plan: Arc<dyn ExecutionPlan>) -> Result<JobPlan> {
        let config = self.ctx.state_ref().read().config_options().clone();
        cut(job, plan, &config, std::path::Path::new(""))
    }

    /// Runs a DataFrame on the cluster and returns its rows.
    pub async fn collect(&self, df: DataFrame) -> Result<JobOutput, SessionError> {
        Ok(self.submit_dataframe(df).await?.result().await?)
    }

    /// Runs every statement of a script; returns each one's rows (empty
    /// for DDL).
    pub async fn sql(&self, sql: &str) -> Result<Vec<Vec<RecordBatch>>, SessionError> {
        let mut out = Vec::new();
        for s in self.parse(sql)? {
            out.push(match self.prepare(s).await? {
                Prepared::Done => Vec::new(),
                Prepared::Rows(_, b) => b,
                Prepared::Job(j) => j.result().await?.batches,
            });
        }
        Ok(out)
    }

    /// Runs one query; returns its rows.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, SessionError> {
        let mut all = self.sql(sql).await?;
        Ok(all.pop().unwrap_or_default())
    }
}

/// What a write did: the rows committed and, when tasks on the cluster
/// wrote them, the job's per-stage figures.
#[derive(Debug)]
pub struct Written {
    /// Rows committed.
    pub rows: u64,
    /// The write job's stages (empty when written in this process).
    pub stages: Vec<crate::driver::dag::StageMetrics>,
}

/// Aborts a write that did not reach its commit (failed, or its wait was
/// dropped).
struct AbortOnDrop(Option<Arc<dyn Committer>>);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(committer) = self.0.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = committer.abort().await {
                tracing::warn!(error = %e, "a failed write's files stay");
            }
        });
    }
}

fn explain_batch(logical: &str, stages: &str) -> Result<(SchemaRef, RecordBatch)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("plan_type", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["logical_plan", "distributed_plan"])),
            Arc::new(StringArray::from(vec![logical, stages])),
        ],
    )?;
    Ok((schema, batch))
}

/// Whether a logical plan holds a subquery expression.
fn has_subquery(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::Expr;
    plan.exists(|p| {
        Ok(p.expressions().iter().any(|e| {
            e.exists(|e| {
                Ok(matches!(
                    e,
                    Expr::InSubquery(_) | Expr::Exists(_) | Expr::ScalarSubquery(_)
                ))
            })
            .unwrap_or(false)
        }))
    })
    .unwrap_or(false)
}

/// Whether a physical plan reads the session's catalog tables
/// (`information_schema`, settings), which exist in its process only.
pub fn reads_catalog(plan: &Arc<dyn ExecutionPlan>) -> bool {
    use datafusion::physical_plan::streaming::StreamingTableExec;
    plan.downcast_ref::<StreamingTableExec>().is_some()
        || plan.children().into_iter().any(reads_catalog)
}

/// Whether a physical plan scans files (local or object store): those are
/// the plans worth running on executors.
pub fn reads_files(plan: &Arc<dyn ExecutionPlan>) -> bool {
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    let scans_files = plan
        .downcast_ref::<DataSourceExec>()
        .is_some_and(|d| d.data_source().is::<FileScanConfig>());
    scans_files || plan.children().into_iter().any(reads_files)
}

tokio::task_local! {
    /// What the jobs submitted in this scope run (see [`described`]).
    static DESCRIPTION: String;
}

/// Runs `work` with `text` (a statement's SQL) as the description of the
/// jobs it submits: their reports, and the manager's web UI, show it.
pub async fn described<F: std::future::Future>(text: String, work: F) -> F::Output {
    DESCRIPTION.scope(text, work).await
}
