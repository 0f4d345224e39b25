//! The batch engine held to single-process DataFusion: all 22 TPC-H
//! queries, cut into stages, every fragment serialised and run task by
//! task through shuffle files, must return the same rows.

use std::sync::Arc;

use datafusion::prelude::SessionContext;

use crate::compare::same_rows;
use crate::planner::{display_stages, plan_stages, session_config};
use crate::runner::run_job;
use crate::tpch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_queries_match_single_process_datafusion() {
    let data = tempfile::tempdir().unwrap();
    let shuffle = tempfile::tempdir().unwrap();
    tpch::generate_parquet(0.01, data.path()).unwrap();
    let config = session_config(4);
    let ctx = Arc::new(SessionContext::new_with_config(config));
    tpch::register_parquet(&ctx, data.path()).await.unwrap();
    let mut failures = Vec::new();
    let mut stages_seen = 0;
    for n in 1..=22 {
        let statements = tpch::statements(n);
        let (query, setup_teardown) = statements
            .iter()
            .partition::<Vec<_>, _>(|s| s.trim_start().to_lowercase().starts_with("select"));
        let (setup, teardown): (Vec<_>, Vec<_>) = setup_teardown
            .into_iter()
            .partition(|s| s.trim_start().to_lowercase().starts_with("create"));
        for s in &setup {
            ctx.sql(s).await.unwrap().collect().await.unwrap();
        }
        let q = query[0];
        let expected = ctx.sql(q).await.unwrap().collect().await.unwrap();
        let plan = ctx
            .sql(q)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let job = plan_stages(&format!("q{n}"), plan, shuffle.path()).unwrap();
        stages_seen += job.stages.len();
        let run = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            run_job(&job, ctx.task_ctx(), 4),
        )
        .await;
        let Ok(run) = run else {
            failures.push(format!(
                "q{n}: did not finish within 60 s\n{}",
                display_stages(&job)
            ));
            continue;
        };
        match run {
            Ok(got) => {
                if let Err(e) = same_rows(&expected, &got.batches) {
                    failures.push(format!("q{n}: {e}\n{}", display_stages(&job)));
                }
            }
            Err(e) => failures.push(format!("q{n}: {e}\n{}", display_stages(&job))),
        }
        for s in &teardown {
            ctx.sql(s).await.unwrap().collect().await.unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 22 queries differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        stages_seen > 44,
        "queries were cut into stages ({stages_seen})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_are_cut_at_exchanges_and_fragments_round_trip() {
    let data = tempfile::tempdir().unwrap();
    let shuffle = tempfile::tempdir().unwrap();
    tpch::generate_parquet(0.01, data.path()).unwrap();
    let ctx = Arc::new(SessionContext::new_with_config(session_config(4)));
    tpch::register_parquet(&ctx, data.path()).await.unwrap();
    // q1: partial aggregate | hash exchange | final aggregate + sort | merge.
    let plan = ctx
        .sql(&tpch::statements(1)[0])
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let job = plan_stages("q1", plan, shuffle.path()).unwrap();
    let shown = display_stages(&job);
    assert_eq!(job.stages.len(), 3, "{shown}");
    assert!(
        shown.contains("ShuffleWriterExec: stage=0, partitioning=Hash"),
        "{shown}"
    );
    assert_eq!(job.stages[0].tasks, 4);
    assert_eq!(
        job.stages[2].inputs,
        vec![strata_executor::ids::StageId::new(1)]
    );
    assert_eq!(job.final_stage().unwrap().tasks, 1);
    // Every stage survives serialisation unchanged.
    for s in &job.stages {
        let bytes = strata_executor::codec::plan_to_bytes(s.plan.clone()).unwrap();
        let back = strata_executor::codec::plan_from_bytes(&bytes, &ctx.task_ctx()).unwrap();
        let show = |p: &Arc<dyn datafusion::physical_plan::ExecutionPlan>| {
            datafusion::physical_plan::displayable(p.as_ref())
                .indent(true)
                .to_string()
        };
        assert_eq!(show(&s.plan), show(&back));
    }
    // The shuffle files of the job are where the layout says.
    let got = run_job(&job, ctx.task_ctx(), 2).await.unwrap();
    assert_eq!(got.stages.len(), 3);
    assert!(got.stages[0].bytes > 0);
    assert!(shuffle.path().join("q1").join("s0").join("p0").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_equi_outer_and_semi_joins_match() {
    let data = tempfile::tempdir().unwrap();
    let shuffle = tempfile::tempdir().unwrap();
    tpch::generate_parquet(0.01, data.path()).unwrap();
    let ctx = Arc::new(SessionContext::new_with_config(session_config(4)));
    tpch::register_parquet(&ctx, data.path()).await.unwrap();
    let queries = [
        "select n_name, count(r_name) from nation left join region on n_regionkey < r_regionkey group by n_name",
        "select r_name, count(n_name) from region full join nation on n_regionkey > r_regionkey + 2 group by r_name",
        "select n_name from nation where exists (select 1 from region where r_regionkey > n_regionkey + 1)",
        "select n_name from nation where not exists (select 1 from region where r_regionkey > n_regionkey + 1)",
        "select count(*) from nation, region",
        // Multi-partition sides.
        "select count(*), count(c_custkey) from (select o_orderkey from orders where o_orderkey < 400) o \
         left join customer on o_orderkey > c_custkey + 1300",
        "select count(*) from customer where exists (select 1 from orders where o_orderkey < 300 and o_custkey < c_custkey - 1400)",
        // Null-aware anti join (collected build side) over a multi-partition probe.
        "select n_name from nation where n_nationkey not in (select c_nationkey from customer where c_acctbal > 9000)",
        "select count(*) from orders where o_custkey not in (select c_custkey from customer where c_acctbal > 0)",
        // A window partitioned by a column a filter below the exchange fixed.
        "select o_orderkey, sum(o_totalprice) over (partition by o_orderstatus order by o_orderkey) \
         from orders where o_orderstatus = 'F' order by o_orderkey limit 20",
    ];
    for (i, q) in queries.iter().enumerate() {
        let expected = ctx.sql(q).await.unwrap().collect().await.unwrap();
        let plan = ctx
            .sql(q)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let job = plan_stages(&format!("nlj{i}"), plan, shuffle.path()).unwrap();
        let got = run_job(&job, ctx.task_ctx(), 4).await.unwrap();
        if let Err(e) = same_rows(&expected, &got.batches) {
            panic!("{q}: {e}\n{}", display_stages(&job));
        }
    }
}

/// Runs `sql` cut into stages; returns its rows, stages and per-stage figures.
async fn run_cut(
    ctx: &SessionContext,
    sql: &str,
    shuffle: &std::path::Path,
    job: &str,
) -> (
    Vec<datafusion::arrow::record_batch::RecordBatch>,
    crate::planner::JobPlan,
    Vec<crate::runner::StageMetrics>,
) {
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let config = ctx.state().config_options().clone();
    let job = crate::planner::cut(job, plan, &config, shuffle).unwrap();
    let got = run_job(&job, ctx.task_ctx(), 4).await.unwrap();
    (got.batches, job, got.stages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_filters_cut_the_probe_side_before_its_shuffle_and_keep_results() {
    let data = tempfile::tempdir().unwrap();
    let shuffle = tempfile::tempdir().unwrap();
    tpch::generate_parquet(0.01, data.path()).unwrap();
    let runtime = strata_executor::storage::runtime_env_builder()
        .build_arc()
        .unwrap();
    let ctx = SessionContext::new_with_state(crate::planner::session_state(4, runtime));
    tpch::register_parquet(&ctx, data.path()).await.unwrap();
    let reference = SessionContext::new();
    tpch::register_parquet(&reference, data.path())
        .await
        .unwrap();
    // q4 (semi join), q21 (semi and anti joins on lineitem), q20 (a filter
    // through an aggregation), q18 (through an inner join, into both
    // sides), q17 (keys from a stage below the build side), q5 (a build
    // side of 25 nation keys), and an inner join.
    let mut queries: Vec<String> = [4, 21, 20, 18, 17, 5]
        .iter()
        .map(|&n| tpch::statements(n)[0].clone())
        .collect();
    queries.push(
        "select o_orderpriority, count(*) from orders join \
         (select l_orderkey, count(*) n from lineitem group by l_orderkey) l \
         on o_orderkey = l_orderkey where o_orderdate < date '1992-03-01' \
         group by o_orderpriority"
            .into(),
    );
    let mut filtered = 0;
    for (i, q) in queries.iter().enumerate() {
        let expected = reference.sql(q).await.unwrap().collect().await.unwrap();
        ctx.sql("set strata.key_filters = true").await.unwrap();
        let (on, job, on_stages) = run_cut(&ctx, q, shuffle.path(), &format!("kf{i}")).await;
        let shown = display_stages(&job);
        if let Err(e) = same_rows(&expected, &on) {
            panic!("{q}: {e}\n{shown}");
        }
        ctx.sql("set strata.key_filters = false").await.unwrap();
        let (off, off_job, off_stages) =
            run_cut(&ctx, q, shuffle.path(), &format!("kf{i}-off")).await;
        same_rows(&expected, &off).unwrap();
        let off_shown = display_stages(&off_job);
        let semis = |s: &str| s.matches("join_type=RightSemi").count();
        if semis(&shown) == semis(&off_shown) {
            continue;
        }
        filtered += 1;
        // A filter holds its keys once each, whatever their duplicates.
        assert!(shown.contains("as key0], aggr=[]"), "{shown}");
        // The build side is computed once: no more stages than without.
        assert_eq!(job.stages.len(), off_job.stages.len(), "{shown}");
        let shuffled = |m: &[crate::runner::StageMetrics]| m.iter().map(|s| s.rows).sum::<u64>();
        assert!(
            shuffled(&on_stages) < shuffled(&off_stages),
            "{q}: filtered {} rows, unfiltered {}\n{shown}",
            shuffled(&on_stages),
            shuffled(&off_stages)
        );
    }
    assert!(
        filtered >= 3,
        "key filters were planned in {filtered} queries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_filters_keep_null_semantics_of_every_join_type() {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;
    let shuffle = tempfile::tempdir().unwrap();
    let runtime = strata_executor::storage::runtime_env_builder()
        .build_arc()
        .unwrap();
    let ctx = SessionContext::new_with_state(crate::planner::session_state(4, runtime));
    let reference = SessionContext::new();
    // A small and a large table; both hold null keys, and some keys of
    // each are missing from the other.
    let table = |n: i64, step: i64| {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let keys: Int64Array = (0..n)
            .map(|i| (i % 17 != 0).then_some((i * step) % 5_000))
            .collect();
        let values = Int64Array::from_iter_values(0..n);
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(keys), Arc::new(values)]).unwrap();
        let chunks = (0..4)
            .map(|c| vec![batch.slice((c * n / 4) as usize, (n / 4) as usize)])
            .collect();
        Arc::new(MemTable::try_new(schema, chunks).unwrap())
    };
    let (small, large) = (table(200, 7), table(20_000, 3));
    for c in [&ctx, &reference] {
        c.register_table("small", small.clone()).unwrap();
        c.register_table("large", large.clone()).unwrap();
    }
    let queries = [
        "select count(*) from large where exists (select 1 from small where small.k = large.k)",
        "select count(*) from large where not exists (select 1 from small where small.k = large.k)",
        "select count(*) from small where not exists (select 1 from large where small.k = large.k)",
        "select count(*) from large where k not in (select k from small)",
        "select count(*) from small where k not in (select k from large where v < 100)",
        "select count(*) from small where k in (select k from large)",
        "select count(*), count(large.k) from small left join large on small.k = large.k",
        "select count(*), count(small.k) from small right join large on small.k = large.k",
        "select count(*), count(small.k), count(large.k) from small full join large on small.k = large.k",
        "select count(*) from small join large on small.k is not distinct from large.k",
        "select count(*) from (select k from large except select k from small)",
        "select count(*) from (select k from large intersect select k from small)",
        "select count(*) from (select k, count(*) c from large group by k) g join small on g.k = small.k",
        "select k, sum(v) from large where k in (select k from small where v < 50) group by k order by k",
    ];
    for (i, q) in queries.iter().enumerate() {
        let expected = reference.sql(q).await.unwrap().collect().await.unwrap();
        let (got, job, _) = run_cut(&ctx, q, shuffle.path(), &format!("nulls{i}")).await;
        if let Err(e) = same_rows(&expected, &got) {
            panic!("{q}: {e}\n{}", display_stages(&job));
        }
    }
}
