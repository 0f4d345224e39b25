//! sqllogictest files (`tests/slt/*.slt`) run against a real cluster: a
//! manager, two agents and a driver whose two executors are tasks on them.
//! Each file gets a fresh [`Session`] (its own catalog) on the same driver;
//! `__DATA__` in a statement stands for the directory of the small CSV,
//! JSON and Parquet files written by [`write_data`].
//!
//! Results are compared as text: integers are `I`, floats and decimals `R`
//! (floats rounded to 4 decimals, trailing zeros dropped; decimals exact at
//! their scale), everything else `T`; `NULL` for nulls, `(empty)` for empty
//! strings. Column types are checked. Every record of every file runs; the
//! test fails at the end with each failing record, its file and line.
//!
//! The same files also run on single-process DataFusion with the cluster's
//! session settings: the reference the expected results were checked
//! against, so a failure on the cluster alone is the cluster's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Record, Runner, strict_column_validator};
use strata_framework::driver::{ClusterSource, Driver, DriverConfig, ExecutorSource};
use strata_framework::session::{Prepared, Session};

use crate::harness::*;

/// How long one statement may take on the cluster.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Partitions per stage of each session's plans.
const PARTITIONS: usize = 4;

/// A statement's failure, as the runner shows and matches it.
#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

fn err(e: impl std::fmt::Display) -> SltError {
    SltError(e.to_string())
}

/// Where statements run: a [`Session`] on the cluster, or single-process
/// DataFusion (the reference the expected results were checked against).
enum Engine {
    Cluster(Session),
    Local(SessionContext),
}

/// The runner's database: one engine, with `__DATA__` substituted.
struct Db {
    engine: Engine,
    data: String,
}

#[async_trait::async_trait]
impl AsyncDB for Db {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let sql = sql.replace("__DATA__", &self.data);
        let session = match &self.engine {
            Engine::Cluster(session) => session,
            Engine::Local(ctx) => {
                let df = ctx.sql(&sql).await.map_err(err)?;
                let schema = df.schema().as_arrow().clone();
                let batches = df.collect().await.map_err(err)?;
                if schema.fields().is_empty() {
                    return Ok(DBOutput::StatementComplete(0));
                }
                return rows(&schema, &batches);
            }
        };
        let mut out = DBOutput::StatementComplete(0);
        for statement in session.parse(&sql).map_err(err)? {
            out = match session.prepare(statement).await.map_err(err)? {
                Prepared::Done => DBOutput::StatementComplete(0),
                Prepared::Rows(schema, batches) => rows(&schema, &batches)?,
                Prepared::Job(job) => {
                    let result = tokio::time::timeout(STATEMENT_TIMEOUT, job.result())
                        .await
                        .map_err(|_| err(format!("no result in {STATEMENT_TIMEOUT:?}")))?
                        .map_err(err)?;
                    rows(&result.schema, &result.batches)?
                }
            };
        }
        Ok(out)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        match self.engine {
            Engine::Cluster(_) => "strata",
            Engine::Local(_) => "datafusion",
        }
    }

    /// `.slt` files may not sleep: a test waits on a condition with a
    /// deadline, never for a while.
    async fn sleep(dur: Duration) {
        panic!("an .slt file asked to sleep {dur:?}: wait on a condition instead")
    }
}

/// Rows as the runner compares them.
fn rows(schema: &Schema, batches: &[RecordBatch]) -> Result<DBOutput<DefaultColumnType>, SltError> {
    let types = schema
        .fields()
        .iter()
        .map(|f| column_type(f.data_type()))
        .collect();
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| cell(c, row))
                    .collect::<Result<_, _>>()?,
            );
        }
    }
    Ok(DBOutput::Rows { types, rows })
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() => DefaultColumnType::FloatingPoint,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

fn cell(array: &ArrayRef, row: usize) -> Result<String, SltError> {
    if array.is_null(row) {
        return Ok("NULL".into());
    }
    let text = if array.data_type().is_floating() {
        let v = cast(&array.slice(row, 1), &DataType::Float64).map_err(err)?;
        float(v.as_primitive::<Float64Type>().value(0))
    } else {
        array_value_to_string(array, row).map_err(err)?
    };
    Ok(if text.is_empty() {
        "(empty)".into()
    } else {
        text
    })
}

/// A float rounded to 4 decimals, without trailing zeros.
fn float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// The files the `.slt` files read as `__DATA__/…`.
async fn write_data(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let files = [
        (
            "emp.csv",
            "id,name,dept,salary,manager,bonus\n\
             1,ada,eng,5000,,500.5\n\
             2,alan,eng,4000,1,\n\
             3,grace,eng,4500,1,250.25\n\
             4,linus,ops,3000,,100\n\
             5,barbara,ops,3000,4,\n\
             6,ken,sales,2500,,0.75\n\
             7,dennis,,2000,6,\n",
        ),
        (
            "depts.json",
            "{\"dept\":\"eng\",\"floor\":3,\"budget\":20000}\n\
             {\"dept\":\"ops\",\"floor\":1,\"budget\":8000}\n\
             {\"dept\":\"hr\",\"floor\":2,\"budget\":3000}\n",
        ),
        (
            "quota.csv",
            "emp_id,region,quota\n\
             1,north,100\n\
             1,south,50\n\
             2,north,300\n\
             5,south,250\n\
             5,east,10\n",
        ),
        (
            "bands.csv",
            "band,lo,hi\n\
             low,0,2999\n\
             mid,3000,4499\n\
             high,4500,9999\n",
        ),
        (
            "scores.csv",
            "player,team,day,points\n\
             a,red,1,10\n\
             a,red,2,20\n\
             a,red,3,20\n\
             b,red,1,5\n\
             b,red,2,15\n\
             c,blue,1,30\n\
             c,blue,2,10\n\
             c,blue,3,30\n\
             d,blue,1,30\n\
             d,blue,2,\n",
        ),
        ("headerless.csv", "1,one\n2,two\n3,three\n"),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let orders = dir.join("orders.parquet");
    let copy = format!(
        "COPY (SELECT CAST(column1 AS INT) AS order_id, CAST(column2 AS BIGINT) AS emp_id, \
         CAST(column3 AS DECIMAL(10, 2)) AS amount, column4 AS region FROM (VALUES \
         (101, 1, 120.50, 'north'), (102, 1, 80.00, 'south'), (103, 2, 200.00, 'north'), \
         (104, 3, 50.25, 'east'), (105, 5, 300.00, 'south'), (106, 5, 20.00, 'north'), \
         (107, 9, 99.99, 'west'), (108, 6, 10.00, NULL))) \
         TO '{}' STORED AS PARQUET",
        orders.display()
    );
    let ctx = SessionContext::new();
    ctx.sql(&copy).await.unwrap().collect().await.unwrap();
    assert!(orders.is_file(), "{} written", orders.display());
}

/// The `.slt` files, sorted.
fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

/// Runs every `.slt` file, each with a fresh engine from `engine`, every
/// record of each; returns the failures, each with its file and record.
async fn run_files(data: &Path, engine: impl Fn() -> Result<Engine, SltError>) -> Vec<String> {
    let data = data.display().to_string();
    let engine = Arc::new(engine);
    let mut failures = Vec::new();
    for file in slt_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let started = Instant::now();
        let (engine, data) = (engine.clone(), data.clone());
        let mut runner = Runner::new(move || {
            let db = engine().map(|engine| Db {
                engine,
                data: data.clone(),
            });
            async move { db }
        });
        runner.with_column_validator(strict_column_validator);
        // Every record runs, so one failure does not hide the next.
        let records = sqllogictest::parse_file(&file).expect("the file parses");
        let (mut ran, mut failed) = (0, 0);
        for record in records {
            let counts = matches!(record, Record::Statement { .. } | Record::Query { .. });
            if let Err(e) = runner.run_async(record).await {
                failed += 1;
                failures.push(format!("{name}: {}", e.display(false)));
            }
            ran += usize::from(counts);
        }
        eprintln!(
            "{name}: {ran} records, {failed} failed, {:.1?}",
            started.elapsed()
        );
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_pass_on_the_cluster() {
    let env = Env::new("slt");
    let data = env.path("data");
    write_data(&data).await;
    let m = env.start_manager(ManagerSpec::default()).await;
    let _agents = [
        env.start_agent(&m.addr, &env.path("agent0"), None).await,
        env.start_agent(&m.addr, &env.path("agent1"), None).await,
    ];
    m.wait_registered_agents(2).await;
    let mut source = ClusterSource::new(m.addr.clone(), STRATA);
    source.name = "it-slt".into();
    let mut config = DriverConfig::new(ExecutorSource::Cluster(Box::new(source)));
    config.executors.min = 2;
    config.executors.max = 2;
    config.executors.cpus = 1.0;
    config.executors.mem_mib = 512.0;
    let driver = Arc::new(Driver::start(config).await.expect("driver starts"));
    driver
        .wait_for_executors(2, LONG)
        .await
        .expect("executors start");
    let failures = run_files(&data, || {
        let session = Session::new(driver.clone(), PARTITIONS).map_err(err)?;
        Ok(Engine::Cluster(session))
    })
    .await;
    driver.shutdown().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The same files on single-process DataFusion with the cluster's session
/// settings: a failure here is a wrong expectation, a failure only on the
/// cluster is the cluster's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_pass_on_single_process_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path()).await;
    let failures = run_files(dir.path(), || {
        let config = strata_framework::planner::session_config(PARTITIONS);
        Ok(Engine::Local(SessionContext::new_with_config(config)))
    })
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
