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

/// The `job_id`s in JSON log lines: the current span's or any enclosing one's.
fn job_ids(log: &str) -> std::collections::BTreeSet<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|v| v["spans"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["job_id"].as_str().map(str::to_owned))
        .collect()
}

fn stderr_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            stderr_files(&p, out);
        } else if p.file_name().is_some_and(|n| n == "stderr") {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_follow_a_job_from_its_driver_into_its_executors_tasks() {
    let env = Env::new("json-logs");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let nation = format!("{}/", data.join("nation").display());
    let (m, _agents) = env.start_cluster(1).await;
    let args = [
        "--log-format",
        "json",
        "sql",
        "--manager",
        &m.addr,
        "--executors",
        "1",
        "--executor-mem",
        "256m",
    ];
    let script = format!(
        "CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION '{nation}';\n\
         SELECT n_regionkey, count(*) FROM nation GROUP BY n_regionkey ORDER BY 1;\n"
    );
    // The filter reaches the executors through the environment, as the
    // format does through the driver.
    let vars = [("STRATA_LOG", "info,strata_executor=debug")];
    let out = env.cli_with_input_env(&args, &vars, &script).await;
    let stderr = &out.stderr;
    assert_eq!(out.code(), Some(0), "{stderr}");
    // Every line the driver logged is a JSON object.
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["message"].is_string() && v["level"].is_string(), "{line}");
    }
    let driver = job_ids(stderr);
    assert!(
        !driver.is_empty(),
        "no job's lines in the driver's log:\n{stderr}"
    );

    // The executor (a task on the agent) logged each task of those jobs
    // in JSON, with the job's id, its stage and partition.
    let mut files = Vec::new();
    stderr_files(&env.path("agent0"), &mut files);
    let executor_log: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    let executor = job_ids(&executor_log);
    assert!(
        driver.intersection(&executor).next().is_some(),
        "driver jobs {driver:?}, executor jobs {executor:?}"
    );
    let task_line = executor_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "task ended")
        .expect("a task's end in the executor's log");
    assert!(task_line["span"]["stage"].is_u64(), "{task_line}");
    assert!(task_line["span"]["partition"].is_u64(), "{task_line}");
}
