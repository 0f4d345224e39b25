//! The batch engine on a real cluster: a manager and agents as processes,
//! executors started by the agents as tasks, the driver in the test (as in
//! `strata sql`) or in the `strata sql` process itself.

use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use strata_executor::ids::{PartitionId, StageId};
use strata_executor::runtime::Straggle;
use strata_framework::driver::{ClusterSource, Driver, DriverConfig, ExecutorSource};
use strata_framework::session::Session;
use strata_framework::tpch;

use crate::harness::*;

/// A driver on the cluster with `n` executors of `cpus` each.
pub(crate) async fn driver(
    m: &Manager,
    n: usize,
    cpus: f64,
    straggle: Vec<Straggle>,
) -> Arc<Driver> {
    let mut source = ClusterSource::new(m.addr.clone(), STRATA);
    source.name = "it-batch".into();
    let mut config = DriverConfig::new(ExecutorSource::Cluster(Box::new(source)));
    config.executors.min = n;
    config.executors.max = n;
    config.executors.cpus = cpus;
    config.executors.mem_mib = 640.0;
    config.straggle = straggle;
    let d = Driver::start(config).await.expect("driver starts");
    d.wait_for_executors(n, LONG)
        .await
        .expect("executors start");
    Arc::new(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_on_executors_on_separate_agents_matches_datafusion() {
    let env = Env::new("tpch");
    let data = env.path("tpch");
    tpch::generate_parquet(0.1, &data).unwrap();
    let reference = SessionContext::new();
    tpch::register_parquet(&reference, &data).await.unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    // Two-cpu executors on two-cpu agents: one executor per agent.
    let d = driver(&m, 2, 2.0, vec![]).await;
    let state = m.state().await;
    let executor_agents: std::collections::BTreeSet<String> = state
        .tasks
        .iter()
        .filter(|t| t.id.contains("-exec-"))
        .map(|t| t.agent_id.clone())
        .collect();
    assert_eq!(executor_agents.len(), 2, "executors on separate agents");
    let session = Session::new(d.clone(), 4).unwrap();
    tpch::register_parquet(session.context(), &data)
        .await
        .unwrap();
    let mut failures = Vec::new();
    for n in 1..=22 {
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for s in tpch::statements(n) {
            let is_query = s.trim_start().to_lowercase().starts_with("select");
            let e = reference.sql(&s).await.unwrap().collect().await.unwrap();
            match session.query(&s).await {
                Ok(b) if is_query => {
                    expected = e;
                    got = b;
                }
                Ok(_) => {}
                Err(err) => failures.push(format!("q{n}: {err}")),
            }
        }
        if let Err(e) = strata_framework::compare::same_rows(&expected, &got) {
            failures.push(format!("q{n}: {e}"));
        }
    }
    d.shutdown().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A query mid-way: a manager, `agents` agents and two one-cpu executors
/// over TPC-H SF 0.02; a grouped query over `lineitem` whose stage 1
/// straggles on its first partition (so stage 1 is still running), once
/// stage 0 has completed. Returns the cluster, the driver, the job and the
/// reference result.
async fn query_mid_way(
    env: &Env,
    agents: usize,
) -> (
    Manager,
    Vec<Agent>,
    Arc<Driver>,
    strata_framework::driver::JobHandle,
    Vec<datafusion::arrow::record_batch::RecordBatch>,
) {
    let data = env.path("tpch");
    tpch::generate_parquet(0.02, &data).unwrap();
    let reference = SessionContext::new();
    tpch::register_parquet(&reference, &data).await.unwrap();
    let (m, agents) = env.start_cluster(agents).await;
    let d = driver(
        &m,
        2,
        1.0,
        vec![Straggle {
            stage: StageId::new(1),
            partition: PartitionId::new(0),
            delay: Duration::from_secs(3),
        }],
    )
    .await;
    let session = Session::new(d.clone(), 4).unwrap();
    tpch::register_parquet(session.context(), &data)
        .await
        .unwrap();
    let q = "select l_returnflag, l_linestatus, count(*), sum(l_quantity) from lineitem \
             group by l_returnflag, l_linestatus";
    let expected = reference.sql(q).await.unwrap().collect().await.unwrap();
    let job = session
        .submit_dataframe(session.context().sql(q).await.unwrap())
        .await
        .unwrap();
    let mut progress = job.progress();
    tokio::time::timeout(
        LONG,
        progress.wait_for(|p| p.stages.first().is_some_and(|s| s.done == s.tasks)),
    )
    .await
    .expect("stage 0 completes")
    .unwrap();
    (m, agents, d, job, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_executor_mid_query_recomputes_only_its_outputs() {
    let env = Env::new("kill-exec");
    let (_m, _agents, d, job, expected) = query_mid_way(&env, 2).await;
    let victims = d.executors().await;
    let victim = &victims[1];
    signal(victim.pid as i32, libc::SIGKILL);
    let out = tokio::time::timeout(Duration::from_secs(60), job.result())
        .await
        .expect("the query completes")
        .expect("the query succeeds");
    strata_framework::compare::same_rows(&expected, &out.batches).unwrap();
    let s0 = &out.stages[0];
    assert!(
        s0.recomputed >= 1 && s0.recomputed < s0.tasks,
        "only the lost map outputs run again: {s0:?}"
    );
    assert_eq!(s0.failed, 0, "losses are not failures: {s0:?}");
    // The lost executor was replaced.
    wait_until("a replacement executor", LONG, async || {
        d.executors().await.len() == 2
    })
    .await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_sql_prints_tables_csv_and_json_and_fails_clearly() {
    let env = Env::new("sql");
    let (m, _agents) = env.start_cluster(2).await;
    let csv = env.path("people.csv");
    std::fs::write(&csv, "name,age\nada,36\nalan,41\ngrace,85\n").unwrap();
    let ddl = format!(
        "CREATE EXTERNAL TABLE people STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true');",
        csv.display()
    );
    let run = async |format: &str, sql: &str| {
        env.cli(&[
            "sql",
            "--manager",
            &m.addr,
            "--executors",
            "1",
            "--executor-mem",
            "256",
            "--format",
            format,
            "-e",
            sql,
        ])
        .await
    };
    let q = format!("{ddl} SELECT name, age FROM people WHERE age > 40 ORDER BY age");
    let out = run("csv", &q).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "name,age\nalan,41\ngrace,85\n");
    let out = run("json", &q).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "{\"name\":\"alan\",\"age\":41}\n{\"name\":\"grace\",\"age\":85}\n"
    );
    let out = run("table", &format!("{ddl} SELECT count(*) AS n FROM people")).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("| n |") && out.stdout.contains("| 3 |"),
        "{}",
        out.stdout
    );
    // DDL alone prints nothing.
    let out = run("table", &ddl).await;
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (Some(0), ""),
        "{}",
        out.stderr
    );
    // Errors: syntax, unknown table, unknown column, missing file.
    for (sql, needle) in [
        ("SELEC 1".to_owned(), "SELEC"),
        ("SELECT * FROM nowhere".to_owned(), "nowhere"),
        (format!("{ddl} SELECT height FROM people"), "height"),
        (
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/no/such/file.parquet'".to_owned(),
            "/no/such/file.parquet",
        ),
    ] {
        let out = run("table", &sql).await;
        assert_eq!(out.code(), Some(1), "{sql}: {}", out.stdout);
        assert!(
            out.stderr.contains("error:") && out.stderr.contains(needle),
            "{sql}: {}",
            out.stderr
        );
    }
    // An impossible executor is refused before anything starts.
    let out = env
        .cli(&[
            "sql",
            "--manager",
            &m.addr,
            "--executor-cpus",
            "64",
            "-e",
            "SELECT 1",
        ])
        .await;
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("no agent could ever hold"),
        "{}",
        out.stderr
    );
    // The cluster carries on: nothing of the failed runs is left.
    wait_until("executors of finished sessions gone", LONG, async || {
        m.state().await.tasks.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_runs_on_through_a_drain_of_an_executors_agent() {
    let env = Env::new("drain-query");
    let (m, _agents, d, job, expected) = query_mid_way(&env, 3).await;
    // Drain the agent of one executor while stage 1 runs.
    let executor = d.executors().await[1].id.clone();
    let agent = m
        .task(executor.as_str())
        .await
        .expect("the executor is a task")
        .agent_id;
    let (status, body) = http(
        "POST",
        &m.addr,
        &format!("/api/v1/agents/{agent}/drain"),
        None,
        Some(br#"{"deadline_seconds": 120}"#),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let out = tokio::time::timeout(Duration::from_secs(60), job.result())
        .await
        .expect("the query completes")
        .expect("the query succeeds");
    strata_framework::compare::same_rows(&expected, &out.batches).unwrap();
    eprintln!(
        "query through the drain: {:?}, stages {:?}",
        out.elapsed, out.stages
    );
    // The retired executor's map outputs ran again elsewhere, only they,
    // and nothing counted as a failure.
    let s0 = &out.stages[0];
    assert!(
        s0.recomputed >= 1 && s0.recomputed < s0.tasks,
        "only the drained executor's outputs run again: {s0:?}"
    );
    assert!(out.stages.iter().all(|s| s.failed == 0), "{:?}", out.stages);
    // The drain ends long before its deadline: the executor is let go
    // once idle (nothing killed), and replaced on another agent.
    wait_until("the agent drained", LONG, async || {
        m.state()
            .await
            .agents
            .iter()
            .any(|a| a.id == agent && a.drain.as_deref() == Some("drained"))
    })
    .await;
    wait_until("a replacement executor elsewhere", LONG, async || {
        let mut on_other = 0;
        for e in d.executors().await {
            if m.task(e.id.as_str())
                .await
                .is_some_and(|t| t.agent_id != agent)
            {
                on_other += 1;
            }
        }
        on_other == 2
    })
    .await;
    d.shutdown().await;
}
