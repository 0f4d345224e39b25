//! A query's memory limit on the executors (`strata.query_memory_limit`,
//! the gateway's `--query-memory`): a query whose tasks need more than it
//! fails with SQLSTATE 53200 and leaves the executors to the others; a
//! session that raises its own limit runs the same query.

use strata_framework::tpch;

use crate::gateway::Gateway;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_limit_fails_with_53200_and_a_raised_limit_runs_it() {
    let env = Env::new("gateway-memory-limit");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let gw = Gateway::start(&env, &m, &["--query-memory", "256k"]).await;
    let table = format!(
        "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/'",
        data.join("lineitem").display()
    );
    // A hash join's build side (every comment of a partition) cannot
    // spill: past the limit the query fails, naming it.
    let join = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_comment = b.l_comment";
    let over = gw
        .psql(&["-v", "VERBOSITY=verbose", "-c", &table, "-c", join])
        .await;
    assert!(!over.status.success(), "{}", over.stdout);
    assert!(
        over.stderr.contains("53200") && over.stderr.contains("query memory limit"),
        "{}",
        over.stderr
    );
    // Small queries still run under the limit (the table is in the
    // gateway's catalog now); a
    // session that raises its limit runs the join; a limit that is not a
    // size is refused when set.
    let out = gw
        .psql_ok(&[
            "-q",
            "-A",
            "-t",
            "-c",
            "SELECT count(*) FROM lineitem WHERE l_quantity > 49",
            "-c",
            "SET strata.query_memory_limit = '512m'",
            "-c",
            join,
        ])
        .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].parse::<u64>().unwrap() > 0);
    assert!(lines[1].parse::<u64>().unwrap() >= 60175, "{out}");
    let bad = gw
        .psql(&[
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "SET strata.query_memory_limit = 'lots'",
        ])
        .await;
    assert!(
        !bad.status.success() && bad.stderr.contains("22023"),
        "{}",
        bad.stderr
    );
}
