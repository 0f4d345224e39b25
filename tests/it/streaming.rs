//! Results stream from the final stage: a client reading a large result a
//! little at a time (an asyncpg cursor, an ADBC record batch reader) finds
//! its query still running, as a job, after its first rows — the gateway
//! sends rows as it fetches them from the executors instead of collecting
//! the result first.

use strata_framework::tpch;

use crate::gateway::{Gateway, python_check};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_streams_to_asyncpg_and_adbc_while_its_query_runs() {
    let env = Env::new("gateway-stream");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let gw = Gateway::start(&env, &m, &[]).await;
    gw.psql_ok(&[
        "-c",
        &format!(
            "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/'",
            data.join("lineitem").display()
        ),
    ])
    .await;
    // Twelve times lineitem (722,100 rows, tens of megabytes): more than
    // the gateway's buffers and the sockets' hold.
    let sql =
        "SELECT l_orderkey, l_partkey, l_comment, r.value FROM lineitem CROSS JOIN range(12) r";
    let (status, out, err) = python_check(
        "stream_check.py",
        &[
            &gw.port.to_string(),
            &gw.flight,
            gw.http_address(),
            &(12 * 60175).to_string(),
            sql,
        ],
    )
    .await;
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("asyncpg: 722100 rows"), "{out}");
    assert!(out.contains("adbc: 722100 rows"), "{out}");
}
