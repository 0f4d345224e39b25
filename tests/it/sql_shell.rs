//! `strata sql` as a shell (no `-e`, no `-f`): statements read from its
//! input, through the SQL gateway or a driver of its own.

use strata_framework::tpch;

use crate::gateway::Gateway;
use crate::harness::*;

/// What a user types: DDL, `\`-commands, a `SET` the session keeps, a
/// statement over three lines, a bad one, and a last one without its `;`.
fn session_script(nation: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION '{nation}';\n\
         \\d\n\
         \\d nation\n\
         \\timing on\n\
         SET datafusion.execution.batch_size = 512;\n\
         SHOW datafusion.execution.batch_size;\n\
         select n_name,\n  n_regionkey\nfrom nation where n_nationkey < 2\norder by 1;\n\
         select * from nope;\n\
         select count(*) as nations from nation\n"
    )
}

/// What the shell printed for [`session_script`].
fn check_session(out: &CliOutput) {
    let stdout = &out.stdout;
    for expected in [
        "| public | nation | BASE TABLE |",
        "| n_regionkey | Int64",
        "Timing is on.",
        "| 512",
        "| ALGERIA   | 0",
        "| ARGENTINA | 1",
        "| 25",
        "Time: ",
    ] {
        assert!(
            stdout.contains(expected),
            "the shell's output lacks {expected:?}:\n{stdout}\n{}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
    assert_eq!(out.code(), Some(1), "a script with a failed statement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_runs_statements_and_backslash_commands_through_the_gateway_or_its_own_driver() {
    let env = Env::new("sql-shell");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let nation = format!("{}/", data.join("nation").display());
    let (m, _agents) = env.start_cluster(2).await;

    // A driver of its own (no gateway named, none discovered); it ends
    // with its input, and its executors with it.
    let own = [
        "sql",
        "--manager",
        &m.addr,
        "--executors",
        "1",
        "--executor-mem",
        "256m",
    ];
    let out = env.cli_with_input(&own, &session_script(&nation)).await;
    check_session(&out);

    // Through the gateway: one session for the whole input.
    let gw = Gateway::start(&env, &m, &["--token", "s3cret"]).await;
    let through_gateway = ["sql", "--gateway", gw.flight.as_str(), "--token", "s3cret"];
    let out = env
        .cli_with_input(&through_gateway, &session_script(&nation))
        .await;
    check_session(&out);
    // The table is the gateway's: psql sees it, and `-e` goes there too.
    let rows = gw.rows("select count(*) from nation").await;
    assert_eq!(rows, vec![vec!["25".to_owned()]]);
    let mut args = through_gateway.to_vec();
    args.extend(["-e", "select n_name from nation where n_nationkey = 24"]);
    let out = env.cli(&args).await;
    assert!(out.stdout.contains("UNITED STATES"), "{out:?}");
    // A wrong token is refused before any statement.
    let out = env
        .cli_with_input(
            &["sql", "--gateway", &gw.flight, "--token", "bad"],
            "select 1;\n",
        )
        .await;
    assert_ne!(out.code(), Some(0));
    assert!(out.stderr.contains("refused"), "{}", out.stderr);
}
