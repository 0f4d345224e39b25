//! Partitioned managed tables: `CREATE TABLE … PARTITIONED BY (col)`
//! through the gateway writes Hive's directories and records each file's
//! values in the Delta log; queries read only the partitions a filter
//! names; Python's `deltalake` reads the table as partitioned.

use std::path::Path;

use strata_framework::tpch;

use crate::gateway::{Gateway, python_check};
use crate::harness::*;
use crate::tables::table_dir;

/// The names of the directories in `dir`.
fn subdirectories(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "_delta_log")
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_table_is_written_in_hive_directories_read_by_partition_and_by_deltalake() {
    let env = Env::new("gateway-partitioned");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let gw = Gateway::start(&env, &m, &[]).await;
    let made = gw
        .psql_ok(&[
            "-c",
            &format!(
                "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/'",
                data.join("lineitem").display()
            ),
            "-c",
            "CREATE TABLE by_mode PARTITIONED BY (l_shipmode) AS \
             SELECT l_orderkey, l_linenumber, l_shipmode, l_quantity FROM lineitem",
            "-c",
            "CREATE TABLE days (id INT, amount DOUBLE PRECISION) PARTITIONED BY (day DATE)",
            "-c",
            "INSERT INTO days VALUES (1, 1.5, DATE '2024-01-01'), (2, 2.5, DATE '2024-01-02'), \
             (3, 3.5, DATE '2024-01-02'), (4, 4.5, NULL)",
        ])
        .await;
    let tags: Vec<&str> = made.lines().collect();
    assert_eq!(
        tags,
        ["CREATE TABLE", "SELECT 60175", "CREATE TABLE", "INSERT 0 4"],
        "{made}"
    );

    // Hive's directories, one per value, and no file outside them.
    let by_mode = table_dir(&env, "by_mode");
    let modes = subdirectories(&by_mode);
    assert_eq!(
        modes,
        [
            "l_shipmode=AIR",
            "l_shipmode=FOB",
            "l_shipmode=MAIL",
            "l_shipmode=RAIL",
            "l_shipmode=REG AIR",
            "l_shipmode=SHIP",
            "l_shipmode=TRUCK"
        ]
    );
    let loose = std::fs::read_dir(&by_mode)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
        .count();
    assert_eq!(loose, 0, "every data file is in a partition's directory");
    assert_eq!(
        subdirectories(&table_dir(&env, "days")),
        [
            "day=2024-01-01",
            "day=2024-01-02",
            "day=__HIVE_DEFAULT_PARTITION__"
        ]
    );

    // The table's columns keep their order, the partition column's values
    // come from the log, and every row is there once.
    assert_eq!(
        gw.rows("SELECT * FROM by_mode WHERE l_orderkey = 1 AND l_linenumber = 1")
            .await,
        gw.rows(
            "SELECT l_orderkey, l_linenumber, l_shipmode, l_quantity FROM lineitem \
             WHERE l_orderkey = 1 AND l_linenumber = 1"
        )
        .await
    );
    let per_mode = "SELECT l_shipmode, count(*), sum(l_quantity) FROM {} \
                    GROUP BY l_shipmode ORDER BY l_shipmode";
    assert_eq!(
        gw.rows(&per_mode.replace("{}", "by_mode")).await,
        gw.rows(&per_mode.replace("{}", "lineitem")).await
    );
    assert_eq!(
        gw.rows("SELECT id, amount, day FROM days ORDER BY id")
            .await,
        [
            ["1", "1.5", "2024-01-01"],
            ["2", "2.5", "2024-01-02"],
            ["3", "3.5", "2024-01-02"],
            ["4", "4.5", ""]
        ]
    );

    // A filter on the partition column reads that partition's files alone.
    let plan = gw
        .rows("EXPLAIN SELECT count(*) FROM by_mode WHERE l_shipmode = 'AIR'")
        .await
        .concat()
        .join("\n");
    assert!(plan.contains("l_shipmode=AIR/"), "{plan}");
    assert!(!plan.contains("l_shipmode=MAIL/"), "{plan}");
    assert_eq!(
        gw.rows("SELECT count(*) FROM by_mode WHERE l_shipmode IN ('AIR', 'FOB')")
            .await,
        gw.rows("SELECT count(*) FROM lineitem WHERE l_shipmode IN ('AIR', 'FOB')")
            .await
    );
    assert_eq!(
        gw.rows("SELECT id FROM days WHERE day = DATE '2024-01-02' ORDER BY id")
            .await,
        [["2"], ["3"]]
    );
    assert_eq!(
        gw.rows("SELECT id FROM days WHERE day IS NULL").await,
        [["4"]]
    );

    // Values a path would misread are escaped in the directory's name and
    // read back as they were; DELETE and UPDATE work by partition.
    let changed = gw
        .psql_ok(&[
            "-c",
            "INSERT INTO by_mode VALUES (0, 1, 'A/B=C 50%', 7)",
            "-c",
            "DELETE FROM by_mode WHERE l_shipmode = 'AIR'",
            "-c",
            "UPDATE days SET amount = 0 WHERE day = DATE '2024-01-01'",
        ])
        .await;
    let air = gw
        .rows("SELECT count(*) FROM lineitem WHERE l_shipmode = 'AIR'")
        .await[0][0]
        .clone();
    assert_eq!(
        changed.lines().collect::<Vec<_>>(),
        ["INSERT 0 1", &format!("DELETE {air}"), "UPDATE 1"],
        "{changed}"
    );
    assert_eq!(
        gw.rows("SELECT l_shipmode, l_quantity FROM by_mode WHERE l_orderkey = 0")
            .await,
        [["A/B=C 50%", "7.00"]]
    );
    assert_eq!(
        gw.rows("SELECT count(*) FROM by_mode WHERE l_shipmode = 'AIR'")
            .await,
        [["0"]]
    );
    let rows = 60175 + 1 - air.parse::<usize>().unwrap();

    // Another Delta reader sees a table partitioned by l_shipmode, and
    // reads each partition alone.
    let (status, out, err) = python_check(
        "partitioned_check.py",
        &[by_mode.to_str().unwrap(), "l_shipmode", &rows.to_string()],
    )
    .await;
    assert!(status.success(), "{out}\n{err}");
    let fob = gw
        .rows("SELECT count(*) FROM by_mode WHERE l_shipmode = 'FOB'")
        .await[0][0]
        .clone();
    assert!(out.contains(&format!("FOB={fob}")), "{out}");
    assert!(out.contains("A/B=C 50%=1"), "{out}");

    // Partition columns that cannot be: refused by name, nothing made.
    for (sql, error) in [
        (
            "CREATE TABLE bad PARTITIONED BY (nope) AS SELECT 1 AS x, 2 AS y",
            "\"nope\" is not a column",
        ),
        (
            "CREATE TABLE bad PARTITIONED BY (f) AS SELECT 1 AS x, 2.5::float8 AS f",
            "cannot partition",
        ),
        (
            "CREATE TABLE bad PARTITIONED BY (x) AS SELECT 1 AS x",
            "every column is a partition column",
        ),
        (
            "CREATE TEMPORARY TABLE bad PARTITIONED BY (x) AS SELECT 1 AS x, 2 AS y",
            "temporary table cannot be partitioned",
        ),
    ] {
        let out = gw.psql(&["-c", sql]).await;
        assert!(!out.status.success(), "{sql}: {}", out.stdout);
        assert!(out.stderr.contains(error), "{sql}: {}", out.stderr);
    }
    assert!(!gw.psql(&["-c", "SELECT * FROM bad"]).await.status.success());
}
