//! The SQL gateway (`strata gateway`) on a real cluster, driven by real
//! PostgreSQL clients: psql (Debian's) and psycopg 3 (PyPI).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use strata_framework::compare::{same_rows, same_rows_as_text};
use strata_framework::tpch;

use crate::harness::*;

/// A `strata gateway` process on the cluster, on an ephemeral port.
pub(crate) struct Gateway {
    pub(crate) proc: Proc,
    pg: Pg,
}

/// A gateway's flags for one small executor (256 MiB), so that a second
/// gateway's fit beside the first's on a test cluster.
pub(crate) const SMALL: [&str; 6] = [
    "--executors",
    "1",
    "--min-executors",
    "1",
    "--executor-mem",
    "256m",
];

/// Where a gateway serves, and its clients.
pub(crate) struct Pg {
    pub(crate) port: u16,
    http: String,
    /// Flight SQL's address (`host:port`).
    pub(crate) flight: String,
    password: Option<String>,
}

impl std::ops::Deref for Gateway {
    type Target = Pg;

    fn deref(&self) -> &Pg {
        &self.pg
    }
}

impl Gateway {
    pub(crate) async fn start(env: &Env, m: &Manager, extra: &[&str]) -> Gateway {
        Gateway::start_with(env, m, extra, &[]).await
    }

    /// [`Gateway::start`] with these environment variables too.
    pub(crate) async fn start_with(
        env: &Env,
        m: &Manager,
        extra: &[&str],
        vars: &[(&str, String)],
    ) -> Gateway {
        let mut args = vec![
            "gateway",
            "--manager",
            &m.addr,
            "--pg-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--flight-listen",
            "127.0.0.1:0",
        ];
        // Two executors of 640 MiB unless `extra` says otherwise.
        for (flag, value) in [
            ("--executors", "2"),
            ("--min-executors", "2"),
            ("--executor-mem", "640m"),
        ] {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(extra);
        let mut command = env.command_on(None, &args);
        command.envs(vars.iter().map(|(k, v)| (*k, v.as_str())));
        let mut proc = env.spawn_command("gateway", command);
        let line = proc.wait_stdout("postgresql", LONG).await;
        let addr: SocketAddr = line
            .split_whitespace()
            .last()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let line = proc.wait_stdout("flight sql", LONG).await;
        let flight = line
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no Flight SQL address in {line:?}"))
            .to_owned();
        let line = proc.wait_stdout("http", LONG).await;
        let http = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no HTTP address in {line:?}"))
            .to_owned();
        let password = extra
            .iter()
            .position(|a| *a == "--token")
            .map(|i| extra[i + 1].to_owned());
        Gateway {
            proc,
            pg: Pg {
                port: addr.port(),
                http,
                flight,
                password,
            },
        }
    }
}

impl Pg {
    /// A psql command with these arguments.
    pub(crate) fn psql_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("psql");
        c.args(["-X", "-h", "127.0.0.1", "-U", "strata", "-d", "strata"])
            .args(["-p", &self.port.to_string(), "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(p) = &self.password {
            c.env("PGPASSWORD", p);
        }
        c
    }

    /// The HTTP API's address (`host:port`).
    pub(crate) fn http_address(&self) -> &str {
        &self.http
    }

    /// The running queries, as the HTTP API lists them.
    async fn queries(&self) -> Vec<serde_json::Value> {
        get_json(&self.http, "/api/v1/queries", self.password.as_deref()).await
    }

    /// Waits for a query running as a job on the executors; its id.
    async fn running_job(&self) -> u64 {
        wait_for("a query running as a job", LONG, async || {
            let queries = self.queries().await;
            let q = queries.iter().find(|q| !q["job"].is_null())?;
            q["id"].as_u64()
        })
        .await
    }

    /// psql with these arguments, to completion (at most two minutes).
    pub(crate) async fn psql(&self, args: &[&str]) -> CliOutput {
        let mut c = self.psql_command(args);
        let out = tokio::time::timeout(Duration::from_secs(120), c.output())
            .await
            .unwrap_or_else(|_| panic!("psql {args:?} did not end within two minutes"))
            .unwrap_or_else(|e| panic!("cannot run psql (Debian: postgresql-client): {e}"));
        CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// psql's output of `args`, which must succeed.
    pub(crate) async fn psql_ok(&self, args: &[&str]) -> String {
        let out = self.psql(args).await;
        assert!(
            out.status.success(),
            "psql {args:?} failed:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// The rows of `sql` as psql prints them (unaligned, tuples only).
    pub(crate) async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let out = self
            .psql_ok(&["-q", "-A", "-t", "-F", "\u{1f}", "-c", sql])
            .await;
        out.lines()
            .map(|l| l.split('\u{1f}').map(str::to_owned).collect())
            .collect()
    }
}

/// TPC-H query `n`'s rows from single-process DataFusion: its select's
/// (q15's last statement is `drop view`).
async fn reference_rows(reference: &SessionContext, n: usize) -> Vec<RecordBatch> {
    let mut expected = Vec::new();
    for statement in tpch::statements(n) {
        let batches = reference
            .sql(&statement)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        if statement.trim_start().to_lowercase().starts_with("select") {
            expected = batches;
        }
    }
    expected
}

/// `CREATE EXTERNAL TABLE` of each TPC-H table generated under `data`.
pub(crate) fn tpch_ddl(data: &Path) -> String {
    tpch::TABLES
        .iter()
        .map(|t| {
            format!(
                "CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION '{}/'",
                data.join(t).display()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_the_22_tpch_queries_through_the_gateway_on_the_clusters_executors() {
    let env = Env::new("gateway-tpch");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let reference = SessionContext::new();
    tpch::register_parquet(&reference, &data).await.unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let mut gw = Gateway::start(&env, &m, &[]).await;

    gw.psql_ok(&["-c", &tpch_ddl(&data)]).await;
    // psql's own catalog queries: \dt lists the tables, \d one's columns.
    let dt = gw.psql_ok(&["-c", "\\dt"]).await;
    for t in tpch::TABLES {
        assert!(dt.contains(t), "\\dt does not list {t}:\n{dt}");
    }
    for command in ["\\dn", "\\dn+", "\\dt+", "\\dv", "\\df", "\\l", "\\dT"] {
        gw.psql_ok(&["-c", command]).await;
    }
    let types = gw.psql_ok(&["-c", "\\dT pg_catalog.int*"]).await;
    assert!(
        types.contains("integer") && types.contains("bigint"),
        "\\dT:\n{types}"
    );
    let d = gw.psql_ok(&["-c", "\\d lineitem"]).await;
    assert!(
        d.contains("l_orderkey") && d.contains("l_shipdate") && d.contains("date"),
        "\\d lineitem:\n{d}"
    );

    for (i, query) in tpch::QUERIES.iter().enumerate() {
        let n = i + 1;
        let expected = reference_rows(&reference, n).await;
        let got = gw.rows(query).await;
        same_rows_as_text(&expected, &got).unwrap_or_else(|e| panic!("q{n}: {e}"));
    }

    // The queries ran as jobs of the gateway's framework, whose executors
    // are tasks on the agents (other processes than the gateway).
    gw.proc.wait_stderr("query ran on the cluster", LONG).await;
    let state = m.state().await;
    let gateway_framework = state
        .frameworks
        .iter()
        .find(|f| f.name == "strata-gateway")
        .expect("the gateway's framework is subscribed");
    let executors = state
        .tasks
        .iter()
        .filter(|t| t.framework_id == gateway_framework.id && t.state == "TASK_RUNNING")
        .count();
    assert_eq!(
        executors, 2,
        "two executors run as tasks: {:?}",
        state.tasks
    );
    assert!(gw.proc.is_running());
}

/// Runs a client check script of `tests/it/clients` with `args`; its
/// status, stdout and stderr (at most two minutes).
pub(crate) async fn python_check(
    script: &str,
    args: &[&str],
) -> (std::process::ExitStatus, String, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/clients")
        .join(script);
    let mut c = tokio::process::Command::new("python3");
    c.arg(&path)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not end within two minutes"))
        .expect("python3 runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_binds_prepares_reads_types_and_lists_tables_through_the_gateway() {
    let env = Env::new("gateway-jdbc");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let gw = Gateway::start(&env, &m, &[]).await;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/clients/JdbcCheck.java");
    let mut c = tokio::process::Command::new("java");
    c.args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(&source)
        .arg(gw.port.to_string())
        .arg(format!("{}/", data.join("nation").display()))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .expect("the pgJDBC checks end within two minutes")
        .expect("java runs (Debian: default-jdk-headless, libpostgresql-jdbc-java)");
    assert!(
        out.status.success(),
        "pgJDBC checks failed:\n{}\n{}\ngateway stderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gw.proc.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_pandas_and_asyncpg_query_and_list_tables_through_the_gateway() {
    let env = Env::new("gateway-python");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let gw = Gateway::start(&env, &m, &[]).await;
    let port = gw.port.to_string();
    let nation = format!("{}/", data.join("nation").display());
    for script in ["sqlalchemy_check.py", "asyncpg_check.py"] {
        let (status, stdout, stderr) = python_check(script, &[&port, &nation]).await;
        assert!(
            status.success(),
            "{script} failed:\n{stdout}\n{stderr}\ngateway stderr:\n{}",
            gw.proc.stderr_text()
        );
        // Each script creates the table: the next one starts over.
        gw.psql_ok(&["-c", "drop table nation"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_reads_types_binds_parameters_and_gets_sqlstates_from_the_gateway() {
    let env = Env::new("gateway-psycopg");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let gw = Gateway::start(&env, &m, &["--token", "s3cret"]).await;
    let nation = format!("{}/", data.join("nation").display());
    let port = gw.port.to_string();
    let run = |password: &'static str| {
        let args = [
            port.clone(),
            nation.clone(),
            "25".to_owned(),
            password.to_owned(),
        ];
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            python_check("psycopg_check.py", &args).await
        }
    };
    // A wrong password is refused with invalid_password (28P01).
    let (status, _, stderr) = run("wrong").await;
    assert!(!status.success());
    assert!(
        stderr
            .to_lowercase()
            .contains("password authentication failed"),
        "a wrong password: {stderr}"
    );
    let (status, stdout, stderr) = run("s3cret").await;
    assert!(
        status.success(),
        "psycopg checks failed:\n{stdout}\n{stderr}\ngateway stderr:\n{}",
        gw.proc.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_runs_the_22_tpch_queries_ingests_lists_binds_and_cancels_over_flight_sql() {
    let env = Env::new("gateway-adbc");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let reference = SessionContext::new();
    tpch::register_parquet(&reference, &data).await.unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let gw = Gateway::start(&env, &m, &["--token", "s3cret"]).await;
    gw.psql_ok(&["-c", &tpch_ddl(&data)]).await;

    let out = env.path("adbc");
    std::fs::create_dir_all(&out).unwrap();
    let queries: serde_json::Map<String, serde_json::Value> = (1..=tpch::QUERIES.len())
        .map(|n| (n.to_string(), serde_json::json!(tpch::statements(n))))
        .collect();
    let queries_file = out.join("tpch.json");
    std::fs::write(&queries_file, serde_json::to_string(&queries).unwrap()).unwrap();
    std::fs::write(out.join("long.sql"), LONG_QUERY).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/clients/adbc_check.py");
    let uri = format!("grpc://{}", gw.flight);
    let mut check = tokio::process::Command::new("python3")
        .arg(&script)
        .args([uri.as_str(), "s3cret"])
        .arg(&queries_file)
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    // The script ends with a long query to cancel: once it runs as a job,
    // it is told to cancel it (a script that ends before is reported
    // below).
    wait_for(
        "the long query running as a job",
        Duration::from_secs(240),
        async || {
            if let Ok(Some(_)) = check.try_wait() {
                return Some(());
            }
            let queries = gw.queries().await;
            queries
                .iter()
                .any(|q| {
                    !q["job"].is_null()
                        && q["sql"]
                            .as_str()
                            .is_some_and(|s| s.contains("lineitem a, orders b"))
                })
                .then_some(())
        },
    )
    .await;
    std::fs::write(out.join("running"), "").unwrap();
    let done = tokio::time::timeout(LONG, check.wait_with_output())
        .await
        .expect("the ADBC checks end after the cancel")
        .unwrap();
    assert!(
        done.status.success(),
        "ADBC checks failed:\n{}\n{}\ngateway stderr:\n{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr),
        gw.proc.stderr_text()
    );
    eprintln!("{}", String::from_utf8_lossy(&done.stdout));
    // The cancelled query is gone from the gateway (its job cancelled).
    wait_until("the cancelled query is gone", LONG, async || {
        gw.queries().await.is_empty()
    })
    .await;

    // The 22 queries' rows are single-process DataFusion's.
    for n in 1..=tpch::QUERIES.len() {
        let expected = reference_rows(&reference, n).await;
        let file = std::fs::File::open(out.join(format!("q{n}.arrow"))).unwrap();
        let got = datafusion::arrow::ipc::reader::FileReader::try_new(file, None)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        same_rows(&expected, &got).unwrap_or_else(|e| panic!("q{n} over Flight SQL: {e}"));
    }
}

/// A query that keeps the executors busy for minutes (a cross join).
const LONG_QUERY: &str =
    "select count(*) from lineitem a, orders b where a.l_quantity + b.o_totalprice > 0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_query_runs_while_another_sessions_long_query_holds_the_executors() {
    let env = Env::new("gateway-fair");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let gw = Gateway::start(&env, &m, &[]).await;
    gw.psql_ok(&["-c", &tpch_ddl(&data)]).await;

    // A long query of many tasks (a self cross join in 32 partitions)
    // from one session…
    let long = gw
        .psql_command(&[
            "-c",
            "SET datafusion.execution.target_partitions = 32",
            "-c",
            "select count(*) from lineitem a, lineitem b where a.l_quantity + b.l_tax > 0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = gw.running_job().await;
    // …does not hold back another session's short one: its tasks get the
    // next free slots, before the long query's pending tasks.
    let rows = gw.rows("select count(*) from nation").await;
    assert_eq!(rows, vec![vec!["25".to_owned()]]);
    let queries = gw.queries().await;
    assert!(
        queries.iter().any(|q| q["id"].as_u64() == Some(id)),
        "the short query ended while the long one runs: {queries:?}"
    );
    let cancel = env
        .cli(&[
            "gateway",
            "queries",
            "--gateway",
            &gw.http,
            "--cancel",
            &id.to_string(),
        ])
        .await;
    assert_eq!(cancel.code(), Some(0), "{}", cancel.stderr);
    let out = tokio::time::timeout(LONG, long.wait_with_output())
        .await
        .expect("the long query ends after its cancel")
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("canceling statement"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_psql_or_the_gateway_stops_the_query_and_frees_its_executors() {
    let env = Env::new("gateway-cancel");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let mut gw = Gateway::start(&env, &m, &[]).await;
    gw.psql_ok(&["-c", &tpch_ddl(&data)]).await;

    // psql's Ctrl-C (SIGINT): it sends PostgreSQL's cancel request.
    let psql = gw
        .psql_command(&["-c", LONG_QUERY])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    gw.running_job().await;
    let cancelled_at = std::time::Instant::now();
    signal(psql.id().unwrap() as i32, libc::SIGINT);
    let out = tokio::time::timeout(LONG, psql.wait_with_output())
        .await
        .expect("psql ends after its cancel")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "psql after Ctrl-C: {stderr}"
    );
    wait_until("the cancelled query is gone", LONG, async || {
        gw.queries().await.is_empty()
    })
    .await;
    eprintln!(
        "psql's cancel ended the query in {:?}",
        cancelled_at.elapsed()
    );

    // `strata gateway queries --cancel` from another client.
    let psql = gw
        .psql_command(&["-c", LONG_QUERY])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = gw.running_job().await;
    let listed = env
        .cli(&["gateway", "queries", "--gateway", &gw.http])
        .await;
    assert!(
        listed.stdout.contains("lineitem a, orders b"),
        "the listing shows the query: {}",
        listed.stdout
    );
    let id = id.to_string();
    let cancel = env
        .cli(&["gateway", "queries", "--gateway", &gw.http, "--cancel", &id])
        .await;
    assert_eq!(cancel.code(), Some(0), "{}", cancel.stderr);
    let out = tokio::time::timeout(LONG, psql.wait_with_output())
        .await
        .expect("psql ends after the cancel")
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("canceling statement"));

    // The executors' slots are free: a short query over files runs at once.
    let quick = std::time::Instant::now();
    let rows = gw.rows("select count(*) from nation").await;
    assert_eq!(rows, vec![vec!["25".to_owned()]]);
    assert!(
        quick.elapsed() < Duration::from_secs(10),
        "a query after the cancels took {:?}",
        quick.elapsed()
    );
    assert!(gw.proc.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_outlives_a_killed_gateway_and_ddl_from_sessions_at_once() {
    let env = Env::new("gateway-warehouse");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    // Small executors (SMALL): the second gateway's fit beside the first's.
    let mut first = Gateway::start(&env, &m, &SMALL).await;
    let nation = data.join("nation");
    first
        .psql_ok(&[
            "-c",
            &format!(
                "CREATE SCHEMA sales; \
                 CREATE EXTERNAL TABLE sales.nation STORED AS PARQUET LOCATION '{}/'; \
                 CREATE VIEW europe AS SELECT n_name FROM sales.nation WHERE n_regionkey = 3; \
                 CREATE VIEW dropped AS SELECT 1 AS one; DROP VIEW dropped",
                nation.display()
            ),
        ])
        .await;
    // Two sessions making views at once.
    let makers: Vec<_> = ["a", "b"]
        .iter()
        .map(|who| {
            let script: String = (0..10)
                .map(|i| format!("CREATE VIEW v_{who}_{i} AS SELECT {i} AS n;"))
                .collect();
            first
                .psql_command(&["-q", "-c", &script])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for maker in makers {
        let out = tokio::time::timeout(LONG, maker.wait_with_output())
            .await
            .expect("the views are made")
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    first.proc.kill9();

    let second = Gateway::start(&env, &m, &SMALL).await;
    let europe = second
        .rows("SELECT n_name FROM europe ORDER BY n_name")
        .await;
    assert_eq!(
        europe.concat(),
        ["FRANCE", "GERMANY", "ROMANIA", "RUSSIA", "UNITED KINGDOM"]
    );
    let views = second
        .rows(
            "SELECT count(*) FROM information_schema.views \
             WHERE table_name LIKE 'v\\_%' OR table_name = 'europe'",
        )
        .await;
    assert_eq!(views, vec![vec!["21".to_owned()]]);
    let dropped = second.psql(&["-c", "SELECT * FROM dropped"]).await;
    assert!(!dropped.status.success(), "a dropped view stays dropped");
    let dn = second.psql_ok(&["-c", "\\dn"]).await;
    assert!(dn.contains("sales"), "\\dn: {dn}");

    // `strata sql --warehouse` works in the same catalog, and keeps its DDL there.
    let warehouse = env.path("warehouse").display().to_string();
    let sql = env
        .cli(&[
            "sql",
            "--manager",
            &m.addr,
            "--warehouse",
            &warehouse,
            "--executors",
            "1",
            "--executor-mem",
            "256m",
            "--format",
            "csv",
            "-e",
            "SELECT count(*) AS n FROM europe; CREATE VIEW from_sql AS SELECT 7 AS seven",
        ])
        .await;
    assert_eq!(sql.code(), Some(0), "{}", sql.stderr);
    assert!(sql.stdout.contains("n\n5"), "strata sql: {}", sql.stdout);
    let catalog = std::fs::read_to_string(env.path("warehouse/catalog.json")).unwrap();
    assert!(catalog.contains("from_sql"), "{catalog}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_as_a_service_app_and_its_replacement_keeps_the_catalog() {
    let env = Env::new("gateway-app");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let warehouse = env.path("warehouse").display().to_string();
    let definition = env
        .cli(&[
            "gateway",
            "app",
            "--manager",
            &m.addr,
            "--program",
            STRATA,
            "--warehouse",
            &warehouse,
            "--cpus",
            "0.25",
            "--mem",
            "256",
            "--min-executors",
            "1",
            "--max-executors",
            "1",
            "--executor-mem",
            "256m",
        ])
        .await;
    assert_eq!(definition.code(), Some(0), "{}", definition.stderr);
    let app: serde_json::Value = serde_json::from_str(&definition.stdout).unwrap();
    let (code, _, body) = crate::services::request(&m, "POST", "/v2/apps", Some(app)).await;
    assert_eq!(code, 201, "{body}");
    let id = "/strata/gateway";
    let first = crate::services::settled(&m, id, 1).await;
    let task = |app: &serde_json::Value| {
        let t = &app["tasks"][0];
        let port = t["ports"][0].as_u64().unwrap() as u16;
        (t["id"].as_str().unwrap().to_owned(), port)
    };
    let (task_id, port) = task(&first);
    let pg = Pg {
        port,
        http: String::new(),
        flight: String::new(),
        password: None,
    };
    pg.psql_ok(&[
        "-c",
        &format!(
            "CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION '{}/'",
            data.join("nation").display()
        ),
    ])
    .await;
    assert_eq!(
        pg.rows("SELECT count(*) FROM nation").await,
        vec![vec!["25".to_owned()]]
    );

    // The gateway dies; the services scheduler starts another, which
    // finds the catalog in the warehouse.
    for pid in env.task_processes(&task_id) {
        signal(pid, libc::SIGKILL);
    }
    let second = wait_for("a new healthy gateway", LONG, async || {
        let a = crate::services::app(&m, id).await;
        let replaced = a["tasks"]
            .as_array()
            .is_some_and(|t| t.len() == 1 && t[0]["id"] != task_id.as_str());
        (replaced && a["tasksHealthy"] == 1).then_some(a)
    })
    .await;
    let (_, port) = task(&second);
    let pg = Pg {
        port,
        http: String::new(),
        flight: String::new(),
        password: None,
    };
    assert_eq!(
        pg.rows("SELECT count(*) FROM nation").await,
        vec![vec!["25".to_owned()]]
    );
}
