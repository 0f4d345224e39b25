//! Managed tables: the warehouse's Delta Lake tables, made and written
//! through the gateway, written all at once by tasks on the cluster, kept
//! across a killed gateway, and read by Python's `deltalake`.

use std::path::{Path, PathBuf};

use strata_framework::tpch;

use crate::gateway::{Gateway, python_check};
use crate::harness::*;

/// The directory of the managed table `name` (in `public`).
fn table_dir(env: &Env, name: &str) -> PathBuf {
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
                "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/'",
                lineitem.display()
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

    // A gateway killed, another started: the tables are there.
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
