//! One client connection's SQL session.
//!
//! A [`GatewaySession`] wraps the batch engine's [`Session`] (its own
//! DataFusion context over the gateway's shared catalog, planning with
//! PostgreSQL's dialect) and adds what a PostgreSQL client expects of a
//! session: its settings (`SET`, `SHOW`), transaction statements, the
//! `pg_catalog` schema and `version()`.
//!
//! A statement runs in one of two places (see [`GatewaySession::execute`]):
//! a query that reads files (tables in the warehouse, external tables) is a
//! job on the cluster's executors; one that reads none (`SELECT 1`, the
//! catalog queries clients send at connect time, `pg_catalog`,
//! `information_schema`) is answered in the gateway, in a fraction of a
//! millisecond.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::SchemaProvider;
use datafusion::common::ParamValues;
use datafusion::datasource::ViewTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    DdlStatement, LogicalPlan, Statement as PlanStatement, TransactionConclusion, WriteOp,
};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::setup_pg_catalog;
use datafusion_pg_catalog::sql::rules::{self, SqlStatementRewriteRule};
use strata_framework::driver::CancelOnDrop;
use strata_framework::planner::session_config;
use strata_framework::session::{Prepared, Session, SessionError, reads_files};

use crate::Gateway;
use crate::catalog::{DEFAULT_SCHEMA, SessionCatalog};
use crate::copy::CopyIn;
use crate::error::GatewayError;
use crate::registry::{QueryGuard, SessionGuard};
use crate::rewrite::{compatibility_rules, null_nested_subqueries, reads_only_the_catalog};
use crate::rows::RowStream;
use crate::settings::{
    default_settings, is_engine_setting, parse_timeout, pg_names, setting_name, show_schema,
};
pub use crate::statement::{Command, Outcome, Planned};
use crate::warehouse::managed::{Managed, TableCommand};

/// One connection's session.
pub struct GatewaySession {
    gateway: Arc<Gateway>,
    inner: Session,
    rules: Vec<Arc<dyn SqlStatementRewriteRule>>,
    catalog: Arc<SessionCatalog>,
    settings: crate::functions::Settings,
    registration: SessionGuard,
}

impl GatewaySession {
    /// A session for `user` (connected from `client`) over the gateway's
    /// catalog and driver.
    pub fn open(
        gateway: &Arc<Gateway>,
        user: &str,
        application: &str,
        client: &str,
    ) -> Result<GatewaySession, GatewayError> {
        let database = gateway.config.database.as_str();
        let mut config = session_config(gateway.config.partitions)
            .with_default_catalog_and_schema(database, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        config
            .options_mut()
            .set("datafusion.sql_parser.dialect", "PostgreSQL")?;
        if !gateway.config.query_memory.is_empty() {
            config
                .options_mut()
                .set("strata.query_memory_limit", &gateway.config.query_memory)?;
        }
        let inner =
            Session::with_config(gateway.driver.clone(), gateway.config.partitions, config)?;
        let ctx = inner.context();
        let catalog = Arc::new(SessionCatalog::new(gateway.catalog.clone()));
        ctx.register_catalog(database, catalog.clone());
        setup_pg_catalog(ctx, database, EmptyContextProvider).map_err(|e| *e)?;
        {
            use datafusion::catalog::CatalogProvider;
            if let Some(pg) = catalog.schema("pg_catalog") {
                catalog.register_schema("pg_catalog", crate::pg_views::overlay(pg))?;
            }
        }
        for f in crate::functions::all() {
            ctx.register_udf(f);
        }
        let settings: crate::functions::Settings =
            Arc::new(Mutex::new(default_settings(user, application)));
        ctx.register_udf(crate::functions::current_setting(settings.clone()));
        ctx.add_analyzer_rule(Arc::new(crate::empty::EmptyMemoryScans));
        let registration = gateway.registry.open_session(user, application, client);
        Ok(GatewaySession {
            gateway: gateway.clone(),
            inner,
            rules: compatibility_rules(),
            catalog,
            settings,
            registration,
        })
    }

    /// The DataFusion context its statements plan in.
    pub fn context(&self) -> &datafusion::prelude::SessionContext {
        self.inner.context()
    }

    /// Its temporary tables and views (seen in `public`, this session's
    /// only).
    pub fn temporary(&self) -> &Arc<datafusion::catalog::MemorySchemaProvider> {
        self.catalog.temporary()
    }

    /// Its id in the gateway's listing.
    pub fn id(&self) -> u64 {
        self.registration.id()
    }

    /// Splits SQL into statements (DataFusion's parser, PostgreSQL's
    /// dialect), rewriting the PostgreSQL forms clients use in catalog
    /// queries (`::regclass`, `OPERATOR(pg_catalog.~)`, `COLLATE`, …) into
    /// ones DataFusion plans.
    pub fn parse(&self, sql: &str) -> Result<Vec<DfStatement>, GatewayError> {
        let sql = crate::rewrite::version_as_of(sql);
        let copy = strata_framework::copy::duckdb_options(&sql);
        let sql: &str = &copy;
        let statements = match DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}) {
            Ok(s) => s,
            // DataFusion's COPY is `COPY … TO`; PostgreSQL's `COPY t FROM
            // STDIN` is sqlparser's.
            Err(e) => match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
                Ok(s) if s.iter().all(|s| CopyIn::from_statement(s).is_some()) => s
                    .into_iter()
                    .map(|s| DfStatement::Statement(Box::new(s)))
                    .collect(),
                _ => return Err(e.into()),
            },
        };
        Ok(statements
            .into_iter()
            .map(|s| match s {
                DfStatement::Statement(mut s) => {
                    crate::rewrite::rewrite(&mut s);
                    let s = self.rules.iter().fold(*s, |s, rule| rule.rewrite(s));
                    // In the catalog (no column defaults, no collations
                    // but the default), the correlated subqueries clients'
                    // catalog queries put in their select lists are NULL.
                    let s = if reads_only_the_catalog(&s) {
                        let mut s = rules::RemoveSubqueryFromProjection.rewrite(s);
                        null_nested_subqueries(&mut s);
                        crate::rewrite::aggregate_scalar_subqueries(&mut s);
                        s
                    } else {
                        s
                    };
                    DfStatement::Statement(Box::new(s))
                }
                other => other,
            })
            .collect())
    }

    /// Plans one statement (nothing runs yet).
    pub async fn plan(&self, statement: &DfStatement) -> Result<Planned, GatewayError> {
        let mut statement = statement.clone();
        let partition_by = crate::warehouse::partitions::take_partitioning(&mut statement);
        let statement = &statement;
        let sql = match statement {
            DfStatement::Statement(s) => Some(s.as_ref()),
            _ => None,
        };
        if let Some(SqlStatement::ShowVariable { variable }) = sql {
            let parts: Vec<String> = variable.iter().map(|i| i.value.to_lowercase()).collect();
            // `SHOW datafusion.execution.batch_size` comes as three words
            // as `SHOW transaction isolation level` does: an engine
            // setting's are dotted.
            let dotted = parts.join(".");
            let name = if is_engine_setting(&dotted) {
                dotted
            } else {
                parts.join(" ")
            };
            if !is_engine_setting(&name) {
                return Ok(Planned::Show(setting_name(&name)));
            }
        }
        match sql {
            Some(SqlStatement::StartTransaction { .. }) => {
                return Ok(Planned::Command(Command::Begin));
            }
            Some(SqlStatement::Commit { .. }) => {
                return Ok(Planned::Command(Command::End("COMMIT")));
            }
            // Savepoints are accepted: each statement commits on its own,
            // so there is nothing for one to keep or roll back.
            Some(SqlStatement::Rollback {
                savepoint: Some(_), ..
            }) => return Ok(Planned::Command(Command::Accepted("ROLLBACK"))),
            Some(SqlStatement::Rollback { .. }) => {
                return Ok(Planned::Command(Command::End("ROLLBACK")));
            }
            Some(SqlStatement::Savepoint { .. }) => {
                return Ok(Planned::Command(Command::Accepted("SAVEPOINT")));
            }
            Some(SqlStatement::ReleaseSavepoint { .. }) => {
                return Ok(Planned::Command(Command::Accepted("RELEASE")));
            }
            Some(s @ SqlStatement::Copy { .. }) => {
                if let Some(copy) = CopyIn::from_statement(s) {
                    return Ok(Planned::Command(Command::CopyIn(copy?)));
                }
            }
            Some(SqlStatement::Merge(m)) => {
                return Ok(Planned::Command(Command::Table(TableCommand::Merge(
                    Box::new(m.clone()),
                ))));
            }
            Some(s @ (SqlStatement::Vacuum(_) | SqlStatement::AlterTable(_))) => {
                return Ok(Planned::Command(Command::Table(table_command(s)?)));
            }
            _ => {}
        }
        let text = statement.to_string().to_uppercase();
        if text.starts_with("SET TRANSACTION") || text.starts_with("SET SESSION CHARACTERISTICS") {
            return Ok(Planned::Command(Command::Accepted("SET")));
        }
        if text.starts_with("DISCARD") {
            return Ok(Planned::Command(Command::Accepted("DISCARD ALL")));
        }
        let state = self.inner.context().state();
        // `CREATE TEMPORARY TABLE … AS` (dbt's incremental models): planned
        // as a table, made the session's own when it runs.
        if let Some(SqlStatement::CreateTable(t)) = sql
            && t.temporary
        {
            if !partition_by.is_empty() {
                return Err(GatewayError::Unsupported(
                    "a temporary table cannot be partitioned".into(),
                ));
            }
            let mut t = t.clone();
            t.temporary = false;
            let plan = state
                .statement_to_plan(DfStatement::Statement(Box::new(SqlStatement::CreateTable(
                    t,
                ))))
                .await?;
            return match plan {
                LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(mut c)) => {
                    c.temporary = true;
                    Ok(Planned::Plan(Box::new(LogicalPlan::Ddl(
                        DdlStatement::CreateMemoryTable(c),
                    ))))
                }
                _ => Err(GatewayError::Unsupported(
                    "CREATE TEMPORARY TABLE of this form".into(),
                )),
            };
        }
        let plan = match state.statement_to_plan(statement.clone()).await {
            Ok(plan) => plan,
            // Forms of SET DataFusion does not plan (`SET TIME ZONE`,
            // `SET NAMES`) are settings of the client's only.
            Err(_) if matches!(sql, Some(SqlStatement::Set(_))) => {
                return Ok(Planned::Command(Command::Accepted("SET")));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(match plan {
            LogicalPlan::Statement(PlanStatement::SetVariable(s))
                if !is_engine_setting(&s.variable) =>
            {
                Planned::Command(Command::Set(setting_name(&s.variable), s.value))
            }
            LogicalPlan::Statement(PlanStatement::SetVariable(s))
                if s.variable.eq_ignore_ascii_case("strata.query_memory_limit")
                    && strata_executor::memory::parse_size(&s.value).is_err() =>
            {
                return Err(GatewayError::InvalidValue(format!(
                    "invalid value for strata.query_memory_limit: {:?} (bytes, or with k, m, g, t)",
                    s.value
                )));
            }
            LogicalPlan::Statement(PlanStatement::TransactionStart(_)) => {
                Planned::Command(Command::Begin)
            }
            LogicalPlan::Statement(PlanStatement::TransactionEnd(end)) => {
                Planned::Command(Command::End(match end.conclusion {
                    TransactionConclusion::Commit => "COMMIT",
                    TransactionConclusion::Rollback => "ROLLBACK",
                }))
            }
            plan if !partition_by.is_empty() => Planned::Partitioned(Box::new(plan), partition_by),
            plan => Planned::Plan(Box::new(plan)),
        })
    }

    /// Runs a planned statement with its parameters' values, under the
    /// session's `statement_timeout`; `sql` is what the query listing shows.
    pub async fn execute(
        &self,
        planned: &Planned,
        params: Option<ParamValues>,
        sql: &str,
    ) -> Result<Outcome, GatewayError> {
        match planned {
            Planned::Show(name) => self.show(name),
            Planned::Command(Command::Table(t)) => {
                let Some(w) = &self.gateway.warehouse else {
                    return Err(GatewayError::Unsupported(format!(
                        "{} needs a warehouse (strata gateway --warehouse)",
                        t.tag()
                    )));
                };
                let _one_at_a_time = self.gateway.ddl.lock().await;
                let database = &self.gateway.config.database;
                let rows = w
                    .run_command(self.inner.context(), t, database, DEFAULT_SCHEMA)
                    .await?;
                Ok(Outcome::Done(t.tag(), rows.map(|r| r as usize)))
            }
            Planned::Command(c) => self.command(c),
            Planned::Plan(plan) => self.execute_plan(plan, &[], params, sql).await,
            Planned::Partitioned(plan, partition_by) => {
                self.execute_plan(plan, partition_by, params, sql).await
            }
        }
    }

    /// Runs a plan with its parameters' values under the session's
    /// `statement_timeout`, listed as `sql` while it runs.
    async fn execute_plan(
        &self,
        plan: &LogicalPlan,
        partition_by: &[String],
        params: Option<ParamValues>,
        sql: &str,
    ) -> Result<Outcome, GatewayError> {
        let plan = match params {
            Some(p) => plan.clone().with_param_values(p)?,
            None => plan.clone(),
        };
        // One deadline for the statement, its rows' stream included.
        let deadline = self
            .statement_timeout()
            .map(|t| std::time::Instant::now() + t);
        let query = self.gateway.registry.start_query(self.id(), sql);
        let run = strata_framework::session::described(sql.to_owned(), async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), self.run(plan, partition_by, &query))
                    .await
                    .map_err(|_| GatewayError::Timeout)?,
                None => self.run(plan, partition_by, &query).await,
            }
        });
        // A cancel through the registry drops the run, and with it
        // the wait for its job, which cancels the job.
        let outcome = tokio::select! {
            outcome = run => outcome,
            () = query.cancelled() => Err(GatewayError::Cancelled),
        }?;
        // Rows streaming from the cluster are still the running query's.
        Ok(match outcome {
            Outcome::Rows { schema, rows, tag } => Outcome::Rows {
                schema,
                rows: rows.guarded(query, deadline),
                tag,
            },
            done => done,
        })
    }

    async fn run(
        &self,
        plan: LogicalPlan,
        partition_by: &[String],
        query: &QueryGuard,
    ) -> Result<Outcome, GatewayError> {
        let ctx = self.inner.context();
        match plan {
            // Temporary views and tables are this session's alone, not kept.
            LogicalPlan::Ddl(DdlStatement::CreateView(ref v)) if v.temporary => {
                self.create_temporary_view(v)
            }
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(ref c)) if c.temporary => {
                self.create_temporary_table(c, query).await
            }
            LogicalPlan::Ddl(ref d) => {
                let tag = ddl_tag(d);
                let ddl = d.clone();
                let _one_at_a_time = self.gateway.ddl.lock().await;
                let (database, warehouse) =
                    (&self.gateway.config.database, &self.gateway.warehouse);
                if warehouse.is_none() && !partition_by.is_empty() {
                    return Err(GatewayError::Unsupported(
                        "PARTITIONED BY makes a managed table, which needs a warehouse \
                         (strata gateway --warehouse)"
                            .into(),
                    ));
                }
                if let Some(w) = warehouse
                    && let Some(done) = w
                        .run_managed(&self.inner, d, partition_by, database, DEFAULT_SCHEMA)
                        .await?
                {
                    return Ok(match done {
                        Managed::Created(Some(rows)) => {
                            Outcome::Done("SELECT", Some(rows as usize))
                        }
                        Managed::Created(None) | Managed::Dropped => Outcome::Done(tag, None),
                    });
                }
                self.inner.run_plan(plan).await?;
                if let Some(w) = &self.gateway.warehouse {
                    w.record(&ddl, &self.gateway.config.database, DEFAULT_SCHEMA)
                        .await?;
                }
                Ok(Outcome::Done(tag, None))
            }
            LogicalPlan::Dml(ref d) => {
                let tag = match d.op {
                    WriteOp::Insert(_) => "INSERT",
                    WriteOp::Delete => "DELETE",
                    WriteOp::Update => "UPDATE",
                    WriteOp::Ctas => "SELECT",
                    WriteOp::Truncate => "TRUNCATE TABLE",
                    _ => "UPDATE",
                };
                if let Some(rows) = crate::warehouse::delta::run_dml(&ctx.state(), d).await? {
                    return Ok(Outcome::Done(tag, Some(rows as usize)));
                }
                let rows = match self.inner.run_plan(plan).await? {
                    Prepared::Rows(_, batches) => count_of(&batches),
                    _ => None,
                };
                Ok(Outcome::Done(tag, rows))
            }
            LogicalPlan::Copy(_) => {
                let rows = match self.inner.run_plan(plan).await? {
                    Prepared::Rows(_, batches) => count_of(&batches),
                    _ => None,
                };
                Ok(Outcome::Done("COPY", rows))
            }
            LogicalPlan::Statement(_) => {
                self.inner.run_plan(plan).await?;
                Ok(Outcome::Done("SET", None))
            }
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_) => {
                match self.inner.run_plan(plan).await? {
                    Prepared::Rows(schema, batches) => Ok(Outcome::Rows {
                        schema,
                        rows: RowStream::ready(batches),
                        tag: "EXPLAIN",
                    }),
                    _ => Ok(Outcome::Done("EXPLAIN", None)),
                }
            }
            plan => {
                let df = ctx.execute_logical_plan(plan).await?;
                let physical = df.create_physical_plan().await?;
                let named = pg_names(&physical.schema());
                let rows = if reads_files(&physical) {
                    // On the cluster: the rows stream from the final stage.
                    let job = self
                        .inner
                        .submit_plan(physical)
                        .map_err(GatewayError::Session)?;
                    let cancel = CancelOnDrop::new(job.canceller());
                    query.running_as(job.id().to_string());
                    RowStream::from_job(job.stream(), named.clone(), cancel, self.id())
                        .started()
                        .await?
                } else {
                    let batches = datafusion::physical_plan::collect(physical, ctx.task_ctx())
                        .await?
                        .into_iter()
                        .map(|b| RecordBatch::try_new(named.clone(), b.columns().to_vec()))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| GatewayError::from(DataFusionError::from(e)))?;
                    RowStream::ready(batches)
                };
                Ok(Outcome::Rows {
                    schema: named,
                    rows,
                    tag: "SELECT",
                })
            }
        }
    }

    /// `CREATE TEMPORARY VIEW`: seen by this session alone, not kept.
    fn create_temporary_view(
        &self,
        v: &datafusion::logical_expr::CreateView,
    ) -> Result<Outcome, GatewayError> {
        let view = ViewTable::new(v.input.as_ref().clone(), v.definition.clone());
        let temporary = self.catalog.temporary();
        let name = v.name.table().to_owned();
        if temporary.table_exist(&name) && !v.or_replace {
            return Err(GatewayError::from(DataFusionError::Plan(format!(
                "Table '{name}' already exists"
            ))));
        }
        temporary.register_table(name, Arc::new(view))?;
        Ok(Outcome::Done("CREATE VIEW", None))
    }

    /// `CREATE TEMPORARY TABLE … AS`: its rows computed now (on the
    /// cluster when they come from files) and held in the gateway until
    /// the session ends.
    async fn create_temporary_table(
        &self,
        c: &datafusion::logical_expr::CreateMemoryTable,
        query: &QueryGuard,
    ) -> Result<Outcome, GatewayError> {
        let name = c.name.table().to_owned();
        let temporary = self.catalog.temporary();
        if temporary.table_exist(&name) {
            if c.if_not_exists {
                return Ok(Outcome::Done("CREATE TABLE", None));
            }
            if !c.or_replace {
                return Err(GatewayError::from(DataFusionError::Plan(format!(
                    "Table '{name}' already exists"
                ))));
            }
        }
        let schema = Arc::new(c.input.schema().as_arrow().clone());
        let batches = match self.inner.run_plan(c.input.as_ref().clone()).await? {
            Prepared::Done => Vec::new(),
            Prepared::Rows(_, b) => b,
            Prepared::Job(job) => {
                query.running_as(job.id().to_string());
                let cancel = CancelOnDrop::new(job.canceller());
                let out = job.result().await.map_err(SessionError::Job)?;
                cancel.disarm();
                out.batches
            }
        };
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let table = datafusion::catalog::MemTable::try_new(schema, vec![batches])?;
        temporary.register_table(name, Arc::new(table))?;
        Ok(Outcome::Done("SELECT", Some(rows)))
    }

    /// Runs every statement of `sql`, dropping their rows.
    pub async fn run_sql(&self, sql: &str) -> Result<(), GatewayError> {
        for statement in self.parse(sql)? {
            let planned = self.plan(&statement).await?;
            self.execute(&planned, None, sql).await?;
        }
        Ok(())
    }

    fn show(&self, name: &str) -> Result<Outcome, GatewayError> {
        let settings = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        let (names, values): (Vec<&str>, Vec<&str>) = if name == "all" {
            settings
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .unzip()
        } else {
            let value = settings
                .get(name)
                .ok_or_else(|| GatewayError::UnknownSetting(name.to_owned()))?;
            (vec![name], vec![value.as_str()])
        };
        let schema = show_schema(name);
        let columns: Vec<Arc<dyn datafusion::arrow::array::Array>> = if name == "all" {
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(StringArray::from(values)),
            ]
        } else {
            vec![Arc::new(StringArray::from(values))]
        };
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| GatewayError::from(DataFusionError::from(e)))?;
        Ok(Outcome::Rows {
            schema,
            rows: RowStream::ready(vec![batch]),
            tag: "SHOW",
        })
    }

    fn command(&self, c: &Command) -> Result<Outcome, GatewayError> {
        Ok(match c {
            Command::Set(name, value) => {
                if name == "statement_timeout" {
                    parse_timeout(value)?;
                }
                self.settings
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.clone(), value.clone());
                Outcome::Done("SET", None)
            }
            Command::Begin => Outcome::Begin,
            Command::End(tag) => Outcome::End(tag),
            Command::Accepted(tag) => Outcome::Done(tag, None),
            Command::Table(t) => Outcome::Done(t.tag(), None),
            Command::CopyIn(_) => {
                return Err(GatewayError::Unsupported(
                    "COPY … FROM STDIN takes its rows through the PostgreSQL protocol's \
                     copy (psql's \\copy)"
                        .into(),
                ));
            }
        })
    }

    fn statement_timeout(&self) -> Option<Duration> {
        let settings = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        let value = settings.get("statement_timeout")?;
        parse_timeout(value).ok().flatten()
    }
}

/// `VACUUM [FULL] t` or `ALTER TABLE t RENAME TO u` as a [`TableCommand`];
/// other `ALTER TABLE`s are not supported.
fn table_command(s: &SqlStatement) -> Result<TableCommand, GatewayError> {
    use datafusion::sql::planner::object_name_to_table_reference;
    use datafusion::sql::sqlparser::ast::{AlterTableOperation, RenameTableNameKind};
    let name = |n: &datafusion::sql::sqlparser::ast::ObjectName| {
        object_name_to_table_reference(n.clone(), true).map_err(GatewayError::from)
    };
    match s {
        SqlStatement::Vacuum(v) => match &v.table_name {
            Some(t) => Ok(TableCommand::Vacuum(name(t)?, v.full)),
            None => Err(GatewayError::Unsupported(
                "VACUUM needs a table: VACUUM [FULL] name".into(),
            )),
        },
        SqlStatement::AlterTable(a) => match a.operations.as_slice() {
            [
                AlterTableOperation::RenameTable {
                    table_name: RenameTableNameKind::To(to) | RenameTableNameKind::As(to),
                },
            ] => Ok(TableCommand::Rename(name(&a.name)?, name(to)?)),
            _ => Err(GatewayError::Unsupported(format!(
                "{s}: of ALTER TABLE, only RENAME TO is supported"
            ))),
        },
        _ => Err(GatewayError::Unsupported(format!("{s}"))),
    }
}

fn ddl_tag(d: &DdlStatement) -> &'static str {
    match d {
        DdlStatement::CreateExternalTable(_) | DdlStatement::CreateMemoryTable(_) => "CREATE TABLE",
        DdlStatement::CreateView(_) => "CREATE VIEW",
        DdlStatement::CreateCatalogSchema(_) => "CREATE SCHEMA",
        DdlStatement::CreateCatalog(_) => "CREATE DATABASE",
        DdlStatement::CreateIndex(_) => "CREATE INDEX",
        DdlStatement::DropTable(_) => "DROP TABLE",
        DdlStatement::DropView(_) => "DROP VIEW",
        DdlStatement::DropCatalogSchema(_) => "DROP SCHEMA",
        DdlStatement::CreateFunction(_) => "CREATE FUNCTION",
        DdlStatement::DropFunction(_) => "DROP FUNCTION",
    }
}

/// The row count DataFusion's writes return (one `count` column).
fn count_of(batches: &[RecordBatch]) -> Option<usize> {
    let mut total = 0u64;
    for b in batches {
        let col = b.column_by_name("count")?;
        let counts = col
            .as_any()
            .downcast_ref::<datafusion::arrow::array::UInt64Array>()?;
        total += counts.iter().flatten().sum::<u64>();
    }
    usize::try_from(total).ok()
}
