//! `strata sql`: runs SQL statements on the cluster with the driver in
//! this process, or through the SQL gateway (`--gateway`). DDL prints
//! nothing; each query's rows go to stdout as a table, CSV or JSON; errors
//! go to stderr and the exit code is non-zero (a script given with `-e` or
//! `-f` stops at the first failing statement). Without `-e` or `-f` it is
//! an interactive shell (`shell.rs`), against the gateway `strata local
//! --gateway` runs when there is one.

use std::process::ExitCode;

use anyhow::Context;
use datafusion::logical_expr::LogicalPlan;
use strata_framework::planner::session_config;
use strata_framework::session::{Prepared, Session};
use strata_gateway::warehouse::Warehouse;

use super::ClientArgs;
use super::batch::{ExecutorOpts, show_progress, stage_lines};
use super::shell::{self, Backend};
use strata_framework::output::{self, Format};

/// Arguments of `strata sql`.
#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    executors: ExecutorOpts,
    /// SQL to run (several statements separated by `;`).
    #[arg(short = 'e', long = "execute", conflicts_with = "file")]
    execute: Option<String>,
    /// A SQL script to run.
    #[arg(short = 'f', long = "file")]
    file: Option<std::path::PathBuf>,
    /// Output format of result sets.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Print each query's per-stage figures on stderr.
    #[arg(long)]
    metrics: bool,
    /// Use the SQL gateway's catalog kept in this warehouse (a directory
    /// or `s3://bucket/prefix`): its schemas, tables and views are there,
    /// and DDL here is kept there.
    #[arg(long, conflicts_with = "gateway")]
    warehouse: Option<std::path::PathBuf>,
    /// Run through the SQL gateway at this Flight SQL address
    /// (`host:port`) instead of a driver in this process. The shell (no
    /// `-e`, no `-f`) uses the gateway of `strata local --gateway` when
    /// there is one.
    #[arg(long, env = "STRATA_GATEWAY")]
    gateway: Option<String>,
}

/// `strata sql`.
pub async fn run(a: SqlArgs) -> anyhow::Result<ExitCode> {
    let script = match (&a.execute, &a.file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        ),
        (None, None) => None,
    };
    let target = a.client.target();
    // The gateway: named, or (for the shell) the local cluster's.
    let gateway = a.gateway.clone().or_else(|| {
        script
            .is_none()
            .then(crate::discovery::local_gateway)
            .flatten()
    });
    if let Some(addr) = gateway {
        let mut backend = Backend::gateway(&addr, target.token.as_deref()).await?;
        return match script {
            None => shell::run(backend, a.format, &format!("gateway {addr}")).await,
            Some(sql) => match backend.run(&sql, a.format).await {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::from(1))
                }
            },
        };
    }
    let warehouse = match a.warehouse.as_deref() {
        Some(location) => Some(Warehouse::open(location).await?),
        None => None,
    };
    let driver = super::batch::start_driver(
        &a.executors,
        &target.address,
        target.token.as_deref(),
        "strata-sql",
    )
    .await?;
    let partitions = a.executors.partitions();
    let config = session_config(partitions).with_information_schema(true);
    let session = Session::with_config(driver.clone(), partitions, config)?;
    if let Some(w) = &warehouse {
        replay(&session, w).await;
    }
    let result = match script {
        Some(sql) => run_script(&session, &sql, a.format, a.metrics, warehouse.as_ref()).await,
        None => {
            let label = format!("driver on {}", target.address);
            let backend = Backend::Local {
                session,
                warehouse: warehouse.map(Box::new),
            };
            let code = shell::run(backend, a.format, &label).await;
            driver.shutdown().await;
            return code;
        }
    };
    driver.shutdown().await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Makes the warehouse's definitions in `session` (one that fails is
/// reported and skipped).
async fn replay(session: &Session, warehouse: &Warehouse) {
    for d in warehouse.definitions() {
        let made = match warehouse.make_managed(&d, session.context()).await {
            Ok(true) => Ok(()),
            Ok(false) => session.sql(&d.sql).await.map(|_| ()).map_err(Into::into),
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            eprintln!("warning: {}.{} from the warehouse: {e}", d.schema, d.name);
        }
    }
}

/// Runs every statement of `sql`, printing results; stops at the first
/// error. DDL is kept in `warehouse` when there is one.
pub async fn run_script(
    session: &Session,
    sql: &str,
    format: Format,
    metrics: bool,
    warehouse: Option<&Warehouse>,
) -> anyhow::Result<()> {
    let statements = session.parse(sql)?;
    let mut stdout = std::io::stdout().lock();
    for mut statement in statements {
        let partition_by = strata_gateway::warehouse::partitions::take_partitioning(&mut statement);
        if !partition_by.is_empty() && warehouse.is_none() {
            anyhow::bail!("PARTITIONED BY makes a managed table, which needs --warehouse");
        }
        let text = statement.to_string();
        let plan = session
            .context()
            .state()
            .statement_to_plan(statement)
            .await?;
        let ddl = match &plan {
            LogicalPlan::Ddl(d) => Some(d.clone()),
            _ => None,
        };
        let config = session
            .context()
            .state_ref()
            .read()
            .config_options()
            .clone();
        let (catalog, schema) = (
            &config.catalog.default_catalog,
            &config.catalog.default_schema,
        );
        // Tables made without a location are the warehouse's Delta tables.
        if let (Some(d), Some(w)) = (&ddl, warehouse)
            && w.run_managed(session, d, &partition_by, catalog, schema)
                .await?
                .is_some()
        {
            continue;
        }
        // DELETE and UPDATE of a managed table from the statement as written.
        if let LogicalPlan::Dml(d) = &plan
            && let Some(rows) =
                strata_gateway::warehouse::delta::run_dml(&session.context().state(), d).await?
        {
            let schema = strata_framework::write::count_schema();
            let batch = strata_framework::write::count_batch(rows)?;
            output::write(&mut stdout, format, &schema, &[batch])?;
            continue;
        }
        let prepared = strata_framework::session::described(text, session.run_plan(plan)).await?;
        if let (Some(d), Some(w)) = (&ddl, warehouse) {
            w.record(d, catalog, schema).await?;
        }
        match prepared {
            Prepared::Done => {}
            Prepared::Rows(schema, batches) => {
                output::write(&mut stdout, format, &schema, &batches)?;
            }
            Prepared::Job(job) => {
                let progress = show_progress(&job);
                let result = job.result().await;
                if let Some(p) = progress {
                    p.await.ok();
                }
                let out = result?;
                output::write(&mut stdout, format, &out.schema, &out.batches)?;
                if metrics {
                    eprintln!("{}: {:.0} ms", out.job, out.elapsed.as_secs_f64() * 1000.0);
                    for l in stage_lines(&out.stages) {
                        eprintln!("  {l}");
                    }
                }
            }
        }
    }
    Ok(())
}
