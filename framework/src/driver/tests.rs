//! The driver with in-process executors (real gRPC links, real Flight
//! shuffle over 127.0.0.1), held to single-process DataFusion.

use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use strata_executor::ids::{PartitionId, StageId};
use strata_executor::runtime::Straggle;

use super::*;
use crate::session::Session;
use crate::tpch;

async fn driver(dir: &std::path::Path, n: usize, straggle: Vec<Straggle>) -> Arc<Driver> {
    let mut config = DriverConfig::new(ExecutorSource::InProcess(dir.to_path_buf()));
    config.executors.min = n;
    config.executors.max = n;
    config.executors.mem_mib = 256.0;
    config.straggle = straggle;
    let d = Driver::start(config).await.unwrap();
    d.wait_for_executors(n, Duration::from_secs(20))
        .await
        .unwrap();
    Arc::new(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_on_two_executors_matches_single_process_datafusion() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    tpch::generate_parquet(0.01, data.path()).unwrap();
    let reference = SessionContext::new();
    tpch::register_parquet(&reference, data.path())
        .await
        .unwrap();
    let d = driver(work.path(), 2, vec![]).await;
    let session = Session::new(d.clone(), 3).unwrap();
    tpch::register_parquet(session.context(), data.path())
        .await
        .unwrap();
    let mut failures = Vec::new();
    for n in 1..=22 {
        let mut expected = Vec::new();
        for s in tpch::statements(n) {
            expected = reference.sql(&s).await.unwrap().collect().await.unwrap();
            let is_query = s.trim_start().to_lowercase().starts_with("select");
            if is_query {
                break;
            }
        }
        let mut got = Vec::new();
        for s in tpch::statements(n) {
            match session.query(&s).await {
                Ok(b) => {
                    if s.trim_start().to_lowercase().starts_with("select") {
                        got = b;
                    }
                }
                Err(e) => failures.push(format!("q{n}: {e}")),
            }
        }
        if let Err(e) = crate::compare::same_rows(&expected, &got) {
            failures.push(format!("q{n}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Each job's files are removed at its end (the last job's removal
    // may still be on its way).
    let deadline = Instant::now() + Duration::from_secs(10);
    for e in d.executors().await {
        let dir = work.path().join(e.id.as_str()).join("shuffle");
        loop {
            let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{}: {left:?}", dir.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_straggler_gets_a_speculative_copy_that_wins() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    tpch::generate_parquet(0.01, data.path()).unwrap();
    // The first attempt of stage 0's partition 1 sleeps 20 s.
    let d = driver(
        work.path(),
        2,
        vec![Straggle {
            stage: StageId::new(0),
            partition: PartitionId::new(1),
            delay: Duration::from_secs(20),
        }],
    )
    .await;
    let session = Session::new(d.clone(), 4).unwrap();
    tpch::register_parquet(session.context(), data.path())
        .await
        .unwrap();
    let started = Instant::now();
    let df = session
        .context()
        .sql("select l_returnflag, count(*) from lineitem group by l_returnflag")
        .await
        .unwrap();
    let out = session.collect(df).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(15), "the copy won");
    let rows: usize = out.batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 3);
    let s0 = &out.stages[0];
    assert_eq!((s0.speculative, s0.speculative_wins), (1, 1), "{s0:?}");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_query_fails_clearly_and_the_driver_carries_on() {
    let work = tempfile::tempdir().unwrap();
    let d = driver(work.path(), 1, vec![]).await;
    let session = Session::new(d.clone(), 2).unwrap();
    let err = session.query("selec 1").await.unwrap_err().to_string();
    assert!(err.contains("Expected") || err.contains("syntax"), "{err}");
    let err = session
        .query("select * from missing")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    // Fails at run time on an executor, with the query's own error (a
    // value that does not cast): the job fails at once, not retried.
    let err = session
        .query("select cast(column1 as int) from (values ('1'), ('x'))")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("failed") && err.contains("'x'"), "{err}");
    assert!(!err.contains("times"), "not retried: {err}");
    // EXPLAIN shows the stages the query would run as.
    let explain = session
        .query("explain select column1, count(*) from (values (1), (2), (1)) group by column1")
        .await
        .unwrap();
    let shown = datafusion::arrow::util::pretty::pretty_format_batches(&explain)
        .unwrap()
        .to_string();
    assert!(
        shown.contains("distributed_plan") && shown.contains("Stage 0"),
        "{shown}"
    );
    assert!(shown.contains("ShuffleWriterExec"), "{shown}");
    // Recursive CTEs do not run on the cluster yet: a clear error.
    let err = session
        .query("with recursive n(x) as (select 1 union all select x + 1 from n where x < 5) select sum(x) from n")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("WITH RECURSIVE"), "{err}");
    let ok = session.query("select 40 + 2 as x").await.unwrap();
    assert_eq!(
        datafusion::arrow::util::pretty::pretty_format_batches(&ok)
            .unwrap()
            .to_string()
            .lines()
            .nth(3)
            .unwrap(),
        "| 42 |"
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_limit_fails_clearly() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    tpch::generate_parquet(0.01, data.path()).unwrap();
    let mut config = DriverConfig::new(ExecutorSource::InProcess(work.path().to_path_buf()));
    config.executors.min = 1;
    config.executors.max = 1;
    config.executors.mem_mib = 1.0;
    let d = Arc::new(Driver::start(config).await.unwrap());
    d.wait_for_executors(1, Duration::from_secs(20))
        .await
        .unwrap();
    let session = Session::new(d.clone(), 1).unwrap();
    tpch::register_parquet(session.context(), data.path())
        .await
        .unwrap();
    // A hash join's build side cannot spill: 1 MiB is not enough.
    let err = session
        .query(
            "select count(*) from lineitem a join lineitem b \
             on a.l_orderkey = b.l_orderkey and a.l_comment <> b.l_comment",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("esources exhausted"), "{err}");
    // The executor carries on.
    assert_eq!(session.query("select 1").await.unwrap()[0].num_rows(), 1);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_are_added_for_a_backlog_and_released_when_idle() {
    let work = tempfile::tempdir().unwrap();
    let mut config = DriverConfig::new(ExecutorSource::InProcess(work.path().to_path_buf()));
    config.executors.min = 1;
    config.executors.max = 3;
    config.executors.mem_mib = 64.0;
    config.executors.idle_timeout = Duration::from_millis(300);
    // Long tasks, so the backlog lasts: every first attempt of stage 0 sleeps.
    config.straggle = PartitionId::all(6)
        .map(|p| Straggle {
            stage: StageId::new(0),
            partition: p,
            delay: Duration::from_millis(700),
        })
        .collect();
    config.policy.speculation = None;
    let d = Arc::new(Driver::start(config).await.unwrap());
    d.wait_for_executors(1, Duration::from_secs(20))
        .await
        .unwrap();
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::empty());
    let plan =
        Arc::new(datafusion::physical_plan::empty::EmptyExec::new(schema).with_partitions(6));
    let job = d
        .submit(crate::planner::JobPlan {
            job: d.next_job_id(),
            stages: vec![crate::planner::Stage {
                id: StageId::new(0),
                plan,
                inputs: vec![],
                tasks: 6,
            }],
            memory_limit: 0,
            description: String::new(),
        })
        .unwrap();
    // Six partitions of one-slot work: more executors, up to the maximum.
    d.wait_for_executors(3, Duration::from_secs(20))
        .await
        .unwrap();
    job.result().await.unwrap();
    // Idle above the minimum: released.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.executors().await.len() > 1 {
        assert!(
            Instant::now() < deadline,
            "idle executors were not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_or_update_with_a_where_subquery_is_refused_and_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let d = driver(work.path(), 1, vec![]).await;
    let session = Session::new(d.clone(), 1).unwrap();
    session
        .sql(
            "CREATE TABLE t AS VALUES (1), (2), (3); \
             CREATE TABLE k AS VALUES (2)",
        )
        .await
        .unwrap();
    for sql in [
        "DELETE FROM t WHERE column1 IN (SELECT column1 FROM k)",
        "UPDATE t SET column1 = 0 WHERE EXISTS (SELECT 1 FROM k WHERE k.column1 = t.column1)",
    ] {
        let Err(e) = session.sql(sql).await else {
            panic!("{sql} was not refused");
        };
        assert!(e.to_string().contains("subquery"), "{sql}: {e}");
    }
    // The optimizer would have handed the table no filter: nothing changed.
    let rows = session.query("SELECT sum(column1) FROM t").await.unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&rows)
        .unwrap()
        .to_string();
    assert!(text.contains("| 6 "), "{text}");
    // Without a subquery, DELETE goes on as before.
    session
        .sql("DELETE FROM t WHERE column1 = 2")
        .await
        .unwrap();
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_stream_in_partition_order_and_a_dropped_stream_cancels_its_job() {
    use futures::StreamExt;
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    tpch::generate_parquet(0.01, data.path()).unwrap();
    let d = driver(work.path(), 2, vec![]).await;
    let session = Session::new(d.clone(), 4).unwrap();
    tpch::register_parquet(session.context(), data.path())
        .await
        .unwrap();
    // More batches than the stream buffers: the job is still fetching
    // when its first rows are read.
    let sql = "SELECT l_orderkey, l_comment, r.value FROM lineitem CROSS JOIN range(4) r";
    let plan = |s: &'static str| {
        let session = &session;
        async move {
            let df = session.context().sql(s).await.unwrap();
            df.create_physical_plan().await.unwrap()
        }
    };
    let job = session.submit_plan(plan(sql).await).unwrap();
    let progress = job.progress();
    let mut rows = job.stream();
    let first = rows.next().await.unwrap().unwrap();
    assert!(first.num_rows() > 0);
    assert_eq!(
        progress.borrow().state,
        JobPhase::Fetching,
        "the first rows are read before the job has handed over the last"
    );
    let mut total = first.num_rows();
    while let Some(batch) = rows.next().await {
        total += batch.unwrap().num_rows();
    }
    assert_eq!(total, 4 * 60175);
    let output = rows.output().expect("the job's figures at the end");
    assert!(output.batches.is_empty());
    assert_eq!(progress.borrow().state, JobPhase::Succeeded);

    // A reader gone before the end: the job is cancelled.
    let job = session.submit_plan(plan(sql).await).unwrap();
    let mut progress = job.progress();
    let mut rows = job.stream();
    rows.next().await.unwrap().unwrap();
    drop(rows);
    tokio::time::timeout(
        Duration::from_secs(20),
        progress.wait_for(|p| p.state == JobPhase::Cancelled),
    )
    .await
    .expect("the job is cancelled within 20 s")
    .unwrap();

    // The driver carries on.
    let n = session
        .query("SELECT count(*) FROM lineitem")
        .await
        .unwrap();
    assert_eq!(n[0].num_rows(), 1);
}
