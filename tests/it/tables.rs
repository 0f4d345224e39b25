//! Managed tables: the warehouse's Delta Lake tables, made and written
//! through the gateway, written all at once by tasks on the cluster, kept
//! across a killed gateway, and read by Python's `deltalake`.

use std::path::{Path, PathBuf};

use strata_framework::tpch;

use crate::gateway::{Gateway, SMALL, python_check};
use crate::harness::*;

/// The directory of the managed table `name` (in `public`).
pub(crate) fn table_dir(env: &Env, name: &str) -> PathBuf {
    let catalog = std::fs::read_to_string(env.path("warehouse/catalog.json")).unwrap();
    let catalog: serde_json::Value = serde_json::from_str(&catalog).unwrap();
    let url = catalog["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "managed" && o["name"] == name)
        .unwrap_or_else(|| panic!("no managed table {name} in {catalog}"))["sql"]
        .as_str()
        .unwrap()
        .to_owned();
    PathBuf::from(url.strip_prefix("file://").unwrap())
}

/// The Parquet files in a table's directory.
fn data_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".parquet")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_tables_are_delta_tables_written_at_once_kept_and_read_by_deltalake() {
    let env = Env::new("gateway-tables");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let mut first = Gateway::start(&env, &m, &[]).await;
    let lineitem = data.join("lineitem");
    let made = first
        .psql_ok(&[
            "-c",
            &format!(
                "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/'; \
                 CREATE EXTERNAL TABLE orders STORED AS PARQUET LOCATION '{}/'",
                lineitem.display(),
                data.join("orders").display()
            ),
            "-c",
            "CREATE TABLE items AS SELECT l_orderkey, l_linenumber, l_quantity, l_shipmode \
             FROM lineitem",
            "-c",
            "CREATE TABLE per_order AS SELECT l_orderkey, count(*) AS n, sum(l_quantity) AS q \
             FROM lineitem GROUP BY l_orderkey",
            "-c",
            "CREATE TABLE t (id INT, name TEXT, price DOUBLE PRECISION)",
            "-c",
            "INSERT INTO t VALUES (1, 'one', 1.25), (2, 'two', 2.5), (3, 'three', 3.5)",
            "-c",
            "INSERT INTO t SELECT l_linenumber + 10, l_shipmode, l_quantity FROM lineitem \
             WHERE l_orderkey = 1",
            "-c",
            "DELETE FROM t WHERE id = 2",
            "-c",
            "UPDATE t SET price = price * 2 WHERE id = 1",
        ])
        .await;
    // psql prints each statement's command tag.
    let tags: Vec<&str> = made.lines().collect();
    assert_eq!(
        tags,
        [
            "CREATE TABLE",
            "CREATE TABLE",
            "SELECT 60175",
            "SELECT 15000",
            "CREATE TABLE",
            "INSERT 0 3",
            "INSERT 0 6",
            "DELETE 1",
            "UPDATE 1"
        ],
        "{made}"
    );
    // The CTASs read files, so their rows were written by tasks on the
    // executors: one file per partition (the aggregate's are hashed into
    // several), all in the one creating commit.
    let items = table_dir(&env, "items");
    assert!(
        data_files(&table_dir(&env, "per_order")) >= 2,
        "tasks each wrote a file"
    );
    assert_eq!(
        first
            .rows("SELECT count(*), sum(l_quantity) FROM items")
            .await,
        first
            .rows("SELECT count(*), sum(l_quantity) FROM lineitem")
            .await
    );

    // A write that fails on the executors (a cast that cannot be made)
    // leaves the table as it was and removes the files it wrote.
    let t = table_dir(&env, "t");
    let files_before = data_files(&t);
    let failed = first
        .psql(&[
            "-c",
            "INSERT INTO t SELECT CAST(l_shipmode AS INT), l_shipmode, l_quantity FROM lineitem",
        ])
        .await;
    assert!(!failed.status.success(), "{}", failed.stdout);
    let after = first
        .rows("SELECT id, name, price FROM t WHERE id < 10 ORDER BY id")
        .await;
    assert_eq!(after, [["1", "one", "2.5"], ["3", "three", "3.5"]]);
    assert_eq!(first.rows("SELECT count(*) FROM t").await, [["8"]]);
    assert_eq!(
        data_files(&t),
        files_before,
        "no file of the failed write stays"
    );

    // A gateway killed mid-write (its tasks writing files, nothing
    // committed), another started: the tables are as they were.
    let entries = |dir: &Path| std::fs::read_dir(dir).unwrap().count();
    let before = entries(&t);
    let _insert = first
        .psql_command(&[
            "-c",
            "INSERT INTO t SELECT a.l_linenumber, b.o_orderstatus, a.l_quantity \
             FROM lineitem a, orders b",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the insert's tasks writing files", LONG, async || {
        entries(&t) > before
    })
    .await;
    first.proc.kill9();
    let second = Gateway::start(&env, &m, &[]).await;
    assert_eq!(second.rows("SELECT count(*) FROM items").await, [["60175"]]);
    assert_eq!(second.rows("SELECT count(*) FROM t").await, [["8"]]);
    let dropped = second
        .psql_ok(&[
            "-c",
            "CREATE TABLE gone AS SELECT 1 AS x",
            "-c",
            "DROP TABLE gone",
        ])
        .await;
    assert!(dropped.contains("DROP TABLE"), "{dropped}");
    assert!(
        !second
            .psql(&["-c", "SELECT * FROM gone"])
            .await
            .status
            .success()
    );

    // Another Delta reader: Python's deltalake, with the history.
    let (status, out, err) = python_check(
        "delta_check.py",
        &[
            t.to_str().unwrap(),
            "8",
            "CREATE TABLE,WRITE,WRITE,DELETE,UPDATE",
        ],
    )
    .await;
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("first=0"), "{out}");
    assert!(out.contains("columns=id,name,price"), "{out}");
    let (status, out, err) = python_check(
        "delta_check.py",
        &[items.to_str().unwrap(), "60175", "CREATE TABLE"],
    )
    .await;
    assert!(status.success(), "{out}\n{err}");

    // `strata sql --warehouse` reads the same tables.
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
            "SELECT count(*) AS n FROM items",
        ])
        .await;
    assert_eq!(sql.code(), Some(0), "{}", sql.stderr);
    assert!(
        sql.stdout.contains("n\n60175"),
        "strata sql: {}",
        sql.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copies_merges_time_travels_renames_and_vacuums_a_managed_table() {
    let env = Env::new("gateway-table-ops");
    let (m, _agents) = env.start_cluster(1).await;
    let gw = Gateway::start(&env, &m, &SMALL).await;
    let csv = env.path("accounts.csv");
    std::fs::write(
        &csv,
        "id,balance,owner\n1,10.5,\"Smith, J\"\n2,,ann\n3,30,\n",
    )
    .unwrap();
    let text = env.path("more.txt");
    std::fs::write(&text, "4\tbo\\tb\n5\t\\N\n").unwrap();
    let out = gw
        .psql_ok(&[
            "-c",
            "CREATE TABLE acc (id INT, balance DOUBLE PRECISION, owner TEXT)",
            "-c",
            &format!(
                "\\copy acc FROM '{}' WITH (FORMAT csv, HEADER true)",
                csv.display()
            ),
            "-c",
            &format!("\\copy acc (id, owner) FROM '{}'", text.display()),
            "-c",
            "MERGE INTO acc AS t USING (SELECT * FROM (VALUES (1, 50.0), (9, 7.5)) AS v(id, delta)) AS s \
             ON t.id = s.id \
             WHEN MATCHED THEN UPDATE SET balance = t.balance + s.delta \
             WHEN NOT MATCHED THEN INSERT (id, balance, owner) VALUES (s.id, s.delta, 'new')",
        ])
        .await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["CREATE TABLE", "COPY 3", "COPY 2", "MERGE 2"],
        "{out}"
    );
    let rows = gw
        .rows("SELECT id, balance, owner IS NULL, owner FROM acc ORDER BY id")
        .await;
    assert_eq!(
        rows,
        [
            ["1", "60.5", "f", "Smith, J"],
            ["2", "", "f", "ann"],
            ["3", "30.0", "t", ""],
            ["4", "", "f", "bo\tb"],
            ["5", "", "t", ""],
            ["9", "7.5", "f", "new"],
        ]
    );
    // A value that does not cast fails the whole COPY, which writes nothing.
    let bad = env.path("bad.csv");
    std::fs::write(&bad, "6,1,x\nseven,2,y\n").unwrap();
    let failed = gw
        .psql(&["-c", &format!("\\copy acc FROM '{}' CSV", bad.display())])
        .await;
    assert!(!failed.status.success(), "{}", failed.stdout);
    assert!(failed.stderr.contains("seven"), "{}", failed.stderr);
    // Versions: 0 made it, 1 and 2 the copies, 3 the merge.
    assert_eq!(
        gw.rows("SELECT count(*) FROM acc VERSION AS OF 1").await,
        [["3"]]
    );
    assert_eq!(
        gw.rows("SELECT count(*) FROM acc VERSION AS OF 0").await,
        [["0"]]
    );
    assert_eq!(gw.rows("SELECT count(*) FROM acc").await, [["6"]]);
    let future = gw.psql(&["-c", "SELECT * FROM acc VERSION AS OF 42"]).await;
    assert!(!future.status.success());

    let dir = table_dir(&env, "acc");
    let renamed = gw
        .psql_ok(&["-c", "ALTER TABLE acc RENAME TO accounts"])
        .await;
    assert!(renamed.contains("ALTER TABLE"), "{renamed}");
    assert_eq!(gw.rows("SELECT count(*) FROM accounts").await, [["6"]]);
    assert!(!gw.psql(&["-c", "SELECT * FROM acc"]).await.status.success());
    assert_eq!(table_dir(&env, "accounts"), dir, "a rename moves no file");

    // The merge rewrote a file; VACUUM FULL removes what the latest
    // version does not need, and older versions go with it.
    let before = data_files(&dir);
    gw.psql_ok(&["-c", "VACUUM FULL accounts"]).await;
    assert!(data_files(&dir) < before, "vacuum removed unneeded files");
    assert_eq!(gw.rows("SELECT count(*) FROM accounts").await, [["6"]]);
    assert!(
        !gw.psql(&["-c", "SELECT sum(id) FROM accounts VERSION AS OF 1"])
            .await
            .status
            .success(),
        "version 1's files are gone"
    );
}

/// A write through a driver of the test's own: the final stage straggles on
/// its first partition (a speculative copy wins), and, in `kill`, an
/// executor is killed with -9 once some of the write's files exist. The
/// table holds exactly the query's rows, one file per partition, and no
/// other file of the write stays.
async fn write_through_faults(kill: bool) {
    use datafusion::logical_expr::dml::InsertOp;
    use std::time::Duration;
    use strata_executor::ids::{PartitionId, StageId};
    use strata_executor::runtime::Straggle;
    use strata_framework::session::Session;
    use strata_framework::write::CommitExec;
    use strata_gateway::warehouse::Warehouse;

    let env = Env::new(if kill {
        "write-kill"
    } else {
        "write-speculate"
    });
    let data = env.path("tpch");
    tpch::generate_parquet(0.02, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let straggle = Straggle {
        stage: StageId::new(1),
        partition: PartitionId::new(0),
        delay: Duration::from_secs(if kill { 8 } else { 4 }),
    };
    let d = crate::batch::driver(&m, 2, 1.0, vec![straggle]).await;
    let session = Session::new(d.clone(), 4).unwrap();
    tpch::register_parquet(session.context(), &data)
        .await
        .unwrap();
    let ctx = session.context().clone();
    let warehouse = Warehouse::open(&env.path("wh")).await.unwrap();
    let make = ctx
        .state()
        .create_logical_plan("CREATE TABLE sums (l_orderkey BIGINT, n BIGINT, q DECIMAL(25, 2))")
        .await
        .unwrap();
    let datafusion::logical_expr::LogicalPlan::Ddl(make) = make else {
        panic!("not DDL");
    };
    warehouse
        .run_managed(&session, &make, &[], "datafusion", "public")
        .await
        .unwrap()
        .expect("a managed table");
    let query = "SELECT l_orderkey, count(*) AS n, sum(l_quantity) AS q FROM lineitem \
                 GROUP BY l_orderkey";
    let input = ctx
        .sql(query)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let table = ctx.table_provider("sums").await.unwrap();
    let plan = table
        .insert_into(&ctx.state(), input, InsertOp::Append)
        .await
        .unwrap();
    let dir = {
        let wh = env.path("wh/tables/public");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&wh)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(dirs.len(), 1);
        dirs.pop().unwrap()
    };
    let write = {
        let session = &session;
        async move {
            let commit = plan.downcast_ref::<CommitExec>().expect("a commit plan");
            session.run_write(commit).await
        }
    };
    let written = if kill {
        let killer = async {
            wait_until("some of the write's files", LONG, async || {
                data_files(&dir) >= 1
            })
            .await;
            let executors = d.executors().await;
            signal(executors[1].pid as i32, libc::SIGKILL);
        };
        let (written, ()) = tokio::join!(write, killer);
        written
    } else {
        write.await
    }
    .expect("the write succeeds");
    let lineitems = session
        .query("SELECT count(*) FROM lineitem")
        .await
        .unwrap();
    let check = session
        .query("SELECT count(*), count(DISTINCT l_orderkey), sum(n) FROM sums")
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&check)
        .unwrap()
        .to_string();
    let total = datafusion::arrow::util::pretty::pretty_format_batches(&lineitems)
        .unwrap()
        .to_string();
    let total = total
        .lines()
        .nth(3)
        .unwrap()
        .trim_matches(|c| c == '|' || c == ' ');
    assert!(
        text.contains("| 30000    | 30000 ") && text.contains(&format!("| {total} ")),
        "one row per order, each once:\n{text}"
    );
    assert_eq!(written.rows, 30000);
    let last = written.stages.last().unwrap();
    if kill {
        assert!(
            written
                .stages
                .iter()
                .any(|s| s.recomputed > 0 || s.failed > 0 || s.launched > s.tasks),
            "the killed executor's work ran again: {:?}",
            written.stages
        );
    } else {
        assert!(last.speculative >= 1, "a speculative copy ran: {last:?}");
    }
    // Exactly the committed files are in the table's directory.
    let committed = deltalake_core::open_table(url::Url::from_directory_path(&dir).unwrap())
        .await
        .unwrap()
        .get_file_uris()
        .unwrap()
        .count();
    assert_eq!(committed, last.tasks as usize, "one file per partition");
    assert_eq!(data_files(&dir), committed, "no other attempt's file stays");
    if !kill {
        // A COPY into a directory keeps one attempt per partition too.
        let out = env.path("out");
        let copy = ctx
            .state()
            .create_logical_plan(&format!(
                "COPY ({query}) TO '{}/' STORED AS PARQUET",
                out.display()
            ))
            .await
            .unwrap();
        let datafusion::logical_expr::LogicalPlan::Copy(copy) = copy else {
            panic!("not a COPY");
        };
        let state = ctx.state();
        let input = state.create_physical_plan(&copy.input).await.unwrap();
        let commit =
            strata_framework::copy::plan(&copy, input, state.config_options(), state.runtime_env())
                .unwrap();
        let copied = session.run_write(&commit).await.unwrap();
        let last = copied.stages.last().unwrap();
        assert!(last.speculative >= 1, "a speculative copy ran: {last:?}");
        assert_eq!(copied.rows, 30000);
        assert_eq!(crate::copy_to::committed_exactly(&out), 30000);
        assert_eq!(
            crate::copy_to::files_under(&out).len() - 1,
            last.tasks as usize,
            "one file per partition"
        );
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_a_speculative_copy_commits_one_attempt_per_partition() {
    write_through_faults(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_executor_is_killed_commits_each_row_once() {
    write_through_faults(true).await;
}

/// The dbt executable: `STRATA_DBT`, else the virtual environment `.ci/run`
/// makes (dbt-core 1.10 with dbt-postgres 1.9).
fn dbt() -> PathBuf {
    std::env::var_os("STRATA_DBT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME");
            PathBuf::from(home).join(".cache/strata/dbt-venv/bin/dbt")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbt_builds_a_view_a_table_and_an_incremental_model_and_tests_them() {
    let env = Env::new("gateway-dbt");
    let (m, _agents) = env.start_cluster(1).await;
    let gw = Gateway::start(&env, &m, &SMALL).await;
    // The project (tests/it/clients/dbt) copied beside a profile for this
    // gateway.
    let project = env.path("dbt");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/clients/dbt");
    std::fs::create_dir_all(project.join("models")).unwrap();
    for f in [
        "dbt_project.yml",
        "models/stg_numbers.sql",
        "models/numbers.sql",
    ]
    .into_iter()
    .chain(["models/numbers_incr.sql", "models/schema.yml"])
    {
        std::fs::copy(source.join(f), project.join(f)).unwrap();
    }
    std::fs::write(
        project.join("profiles.yml"),
        format!(
            "strata:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n      \
             host: 127.0.0.1\n      port: {}\n      user: strata\n      password: strata\n      \
             dbname: strata\n      schema: analytics\n      threads: 1\n",
            gw.port
        ),
    )
    .unwrap();
    let dbt = dbt();
    let run = async |args: &[&str]| {
        let mut c = tokio::process::Command::new(&dbt);
        c.args(args)
            .args(["--profiles-dir", ".", "--no-use-colors"])
            .current_dir(&project)
            .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(LONG, c.output())
            .await
            .expect("dbt ends")
            .unwrap_or_else(|e| panic!("cannot run {} (.ci/run installs it): {e}", dbt.display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "dbt {args:?}:\n{text}");
        text
    };
    let first = run(&["run"]).await;
    assert!(first.contains("PASS=3"), "{first}");
    let second = run(&["run", "--vars", "{mult: 1000}"]).await;
    assert!(second.contains("PASS=3"), "{second}");
    let tested = run(&["test"]).await;
    assert!(tested.contains("PASS=4"), "{tested}");
    assert_eq!(
        gw.rows("SELECT id, score FROM analytics.numbers_incr ORDER BY id")
            .await,
        [["1", "100"], ["2", "200"], ["3", "3000"]],
        "the incremental run rewrote only the newest row"
    );
    assert_eq!(
        gw.rows(
            "SELECT table_name, table_type FROM information_schema.tables \
                 WHERE table_schema = 'analytics' ORDER BY table_name"
        )
        .await,
        [
            ["numbers", "BASE TABLE"],
            ["numbers_incr", "BASE TABLE"],
            ["stg_numbers", "VIEW"]
        ]
    );
}
