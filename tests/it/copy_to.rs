//! `COPY (query) TO 'dir'`: a write of plain files whose tasks run on the
//! cluster and whose files land at once — staged, then moved into place by
//! one commit that writes a `_SUCCESS` manifest — read back by pyarrow.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_framework::tpch;

use crate::gateway::{Gateway, python_check};
use crate::harness::*;

/// Every file under `dir` (paths relative to it, `/`-separated).
pub(crate) fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel);
            }
        }
    }
    out
}

/// The files `dir/_SUCCESS` names, and the rows it counts.
pub(crate) fn manifest(dir: &Path) -> (BTreeSet<String>, u64) {
    let text = std::fs::read_to_string(dir.join("_SUCCESS")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let files = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    (files, m["rows"].as_u64().unwrap())
}

/// Checks that `dir` holds exactly the files its manifest names (and the
/// manifest), nothing staged; returns the manifest's rows.
pub(crate) fn committed_exactly(dir: &Path) -> u64 {
    let (named, rows) = manifest(dir);
    let mut present = files_under(dir);
    assert!(present.remove("_SUCCESS"));
    assert_eq!(
        present, named,
        "the directory holds exactly the committed files"
    );
    assert!(
        !dir.join("_strata_staging").exists(),
        "no staging directory stays"
    );
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copies_queries_into_partitioned_directories_at_once_and_pyarrow_reads_them() {
    let env = Env::new("gateway-copy-to");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let (m, _agents) = env.start_cluster(2).await;
    let mut gw = Gateway::start(&env, &m, &[]).await;
    let flags = env.path("out/flags");
    let modes = env.path("out/modes");
    let made = gw
        .psql_ok(&[
            "-c",
            &format!(
                "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/'; \
                 CREATE EXTERNAL TABLE orders STORED AS PARQUET LOCATION '{}/'",
                data.join("lineitem").display(),
                data.join("orders").display()
            ),
            // DuckDB's option list …
            "-c",
            &format!(
                "COPY (SELECT l_orderkey, l_quantity, l_returnflag FROM lineitem) TO '{}' \
                 (FORMAT parquet, PARTITION_BY (l_returnflag), COMPRESSION snappy)",
                flags.display()
            ),
            // … and DataFusion's clauses.
            "-c",
            &format!(
                "COPY (SELECT l_orderkey, l_shipmode FROM lineitem WHERE l_orderkey < 1000) \
                 TO '{}/' STORED AS CSV PARTITIONED BY (l_shipmode) OPTIONS (has_header true)",
                modes.display()
            ),
        ])
        .await;
    let expected_small = gw
        .rows("SELECT count(*) FROM lineitem WHERE l_orderkey < 1000")
        .await[0][0]
        .clone();
    assert_eq!(
        made.lines().collect::<Vec<_>>(),
        [
            "CREATE TABLE",
            "CREATE TABLE",
            "COPY 60175",
            &format!("COPY {expected_small}")
        ]
    );
    // One directory per flag, Hive's layout, and the manifest naming
    // exactly the files there.
    let dirs: BTreeSet<String> = std::fs::read_dir(&flags)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        dirs,
        [
            "_SUCCESS",
            "l_returnflag=A",
            "l_returnflag=N",
            "l_returnflag=R"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(committed_exactly(&flags), 60175);
    assert!(
        files_under(&flags)
            .iter()
            .all(|f| f == "_SUCCESS" || f.ends_with(".snappy.parquet"))
    );
    assert_eq!(
        committed_exactly(&modes).to_string(),
        expected_small,
        "CSV too"
    );

    // pyarrow reads them as Hive-partitioned datasets, with the counts the
    // gateway computes.
    let per_flag: Vec<String> = gw
        .rows("SELECT l_returnflag, count(*) FROM lineitem GROUP BY 1 ORDER BY 1")
        .await
        .into_iter()
        .map(|r| format!("{}={}", r[0], r[1]))
        .collect();
    let (status, stdout, stderr) = python_check(
        "dataset_check.py",
        &[flags.to_str().unwrap(), "parquet", "l_returnflag"],
    )
    .await;
    assert!(status.success(), "{stdout}\n{stderr}");
    let mut want = vec!["rows=60175".to_owned()];
    want.extend(per_flag);
    assert_eq!(stdout.lines().collect::<Vec<_>>(), want);
    let (status, stdout, stderr) = python_check(
        "dataset_check.py",
        &[modes.to_str().unwrap(), "csv", "l_shipmode"],
    )
    .await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().next(),
        Some(format!("rows={expected_small}").as_str())
    );

    // A COPY that fails on the executors (a cast that cannot be made)
    // leaves the directory as it was: no new file, the same manifest.
    let before = files_under(&flags);
    let marker = std::fs::read(flags.join("_SUCCESS")).unwrap();
    let failed = gw
        .psql(&[
            "-c",
            &format!(
                "COPY (SELECT CAST(l_shipmode AS INT) AS x, l_returnflag FROM lineitem) TO '{}' \
                 (FORMAT parquet, PARTITION_BY (l_returnflag))",
                flags.display()
            ),
        ])
        .await;
    assert!(!failed.status.success(), "{}", failed.stdout);
    assert_eq!(files_under(&flags), before);
    assert_eq!(std::fs::read(flags.join("_SUCCESS")).unwrap(), marker);

    // Options a directory COPY cannot honour are refused before anything
    // runs, by name; so is a partition column the query lacks.
    for (options, says) in [
        (
            "(FORMAT parquet, ROW_GROUP_SIZE 5)",
            "format.row_group_size",
        ),
        ("(FORMAT parquet, PARTITION_BY (nope))", "nope"),
        ("(FORMAT csv, DELIMITER '||')", "one character"),
    ] {
        let bad = gw
            .psql(&[
                "-c",
                &format!(
                    "COPY (SELECT l_orderkey FROM lineitem) TO '{}' {options}",
                    env.path("out/bad").display()
                ),
            ])
            .await;
        assert!(
            !bad.status.success() && bad.stderr.contains(says),
            "{options}: {}",
            bad.stderr
        );
    }
    assert!(!env.path("out/bad").exists(), "nothing was written");

    // A gateway killed with -9 while a COPY's tasks write commits nothing:
    // outside the staging directory (which readers skip) the directory is
    // as it was, and pyarrow reads the same rows.
    let staging = flags.join("_strata_staging");
    let _copy = gw
        .psql_command(&[
            "-c",
            &format!(
                "COPY (SELECT a.l_comment, b.o_comment, b.o_orderstatus AS l_returnflag \
                 FROM lineitem a, orders b) TO '{}' \
                 (FORMAT parquet, PARTITION_BY (l_returnflag), MAX_ROW_GROUP_SIZE 20000)",
                flags.display()
            ),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A file shows once a task's writer has closed row groups enough to
    // fill its upload buffer (small row groups of wide rows: soon).
    wait_until("the COPY's tasks writing files", LONG, async || {
        staging.exists() && !files_under(&staging).is_empty()
    })
    .await;
    gw.proc.kill9();
    let visible: BTreeSet<String> = files_under(&flags)
        .into_iter()
        .filter(|f| !f.starts_with("_strata_staging/"))
        .collect();
    assert_eq!(visible, before);
    assert_eq!(std::fs::read(flags.join("_SUCCESS")).unwrap(), marker);
    let (status, stdout, stderr) = python_check(
        "dataset_check.py",
        &[flags.to_str().unwrap(), "parquet", "l_returnflag"],
    )
    .await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().next(), Some("rows=60175"));

    // The killed COPY's staging stays until the next COPY into the
    // directory finds it abandoned (nothing added for a day): aged two
    // days, it is removed; another write's, fresh, is not. (Once the
    // killed gateway's executors have ended: they write no more.)
    wait_until("the killed gateway's executors ending", LONG, async || {
        m.state()
            .await
            .tasks
            .iter()
            .all(|t| t.state != "TASK_RUNNING")
    })
    .await;
    let killed: Vec<PathBuf> = std::fs::read_dir(&staging)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(killed.len(), 1, "{killed:?}");
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    for f in files_under(&killed[0]) {
        std::fs::File::options()
            .write(true)
            .open(killed[0].join(f))
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
    }
    let fresh = staging.join("another-write");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("part-0.parquet"), b"in progress").unwrap();
    let gw = Gateway::start(&env, &m, &[]).await;
    gw.psql_ok(&[
        "-c",
        &format!(
            "COPY (SELECT l_orderkey, l_returnflag FROM lineitem) TO '{}' \
             (FORMAT parquet, PARTITION_BY (l_returnflag))",
            flags.display()
        ),
    ])
    .await;
    assert!(!killed[0].exists(), "the abandoned staging is removed");
    assert!(fresh.join("part-0.parquet").exists(), "a fresh one stays");
}
