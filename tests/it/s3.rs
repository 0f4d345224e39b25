//! `s3://` tables through the cluster: a real S3-compatible server (moto's,
//! from PyPI; `.ci/run` installs it) on an ephemeral port, a table on it
//! queried by `strata sql`, whose executors (tasks on the agents) get the
//! S3 settings from the driver.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// moto's server, killed on drop.
struct Moto {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// One HTTP/1.1 request with a body; returns the status code.
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {head:.200}")))
}

async fn start_moto() -> Moto {
    let program = std::env::var("STRATA_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let port = free_port();
    let child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start `{program}` ({e}): install it with `python3 -m pip install 'moto[server]'` (.ci/run does)")
        });
    let mut moto = Moto {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    wait_until(
        "moto_server to answer",
        Duration::from_secs(60),
        async || {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited with {status}");
            }
            request(moto.addr, "GET", "/", b"").is_ok_and(|c| c == 200)
        },
    )
    .await;
    moto
}

/// `strata sql ARGS…` on the cluster of `manager`, with the S3 settings of
/// `moto` in its environment.
async fn sql_with_s3(env: &Env, manager: &str, moto: &Moto, args: &[&str]) -> std::process::Output {
    let mut argv = vec!["sql", "--manager", manager, "--executor-mem", "256"];
    argv.extend_from_slice(args);
    let mut c = env.command(&argv);
    c.env("AWS_ENDPOINT_URL", format!("http://{}", moto.addr))
        .env("AWS_ACCESS_KEY_ID", "strata-test")
        .env("AWS_SECRET_ACCESS_KEY", "strata-test-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut c = tokio::process::Command::from(c);
    c.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .expect("strata sql finishes")
        .expect("strata sql runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_tables_are_read_by_executors_on_the_cluster() {
    let env = Env::new("s3");
    let moto = start_moto().await;
    // moto checks no signatures: plain requests create the bucket and objects.
    assert_eq!(request(moto.addr, "PUT", "/sales", b"").unwrap(), 200);
    for (key, body) in [
        ("2026/01.csv", "region,amount\nnorth,10\nsouth,5\n"),
        ("2026/02.csv", "region,amount\nnorth,7\neast,1\n"),
    ] {
        let code = request(moto.addr, "PUT", &format!("/sales/{key}"), body.as_bytes()).unwrap();
        assert_eq!(code, 200, "put {key}");
    }
    let m = env.start_manager(ManagerSpec::default()).await;
    let _a = env.start_agent(&m.addr, &env.path("agent0"), None).await;
    let _b = env.start_agent(&m.addr, &env.path("agent1"), None).await;
    m.wait_registered_agents(2).await;
    let sql = "CREATE EXTERNAL TABLE sales STORED AS CSV LOCATION 's3://sales/2026/' \
               OPTIONS ('format.has_header' 'true'); \
               SELECT region, sum(amount) AS total FROM sales GROUP BY region ORDER BY region";
    let out = sql_with_s3(
        &env,
        &m.addr,
        &moto,
        &["--executors", "2", "--format", "csv", "-e", sql],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout, "region,total\neast,1\nnorth,17\nsouth,5\n",
        "{stderr}"
    );
    // A missing bucket is a clear error, and the process says which.
    let create = "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 's3://no-such-bucket/x/'";
    let out = sql_with_s3(&env, &m.addr, &moto, &["--executors", "1", "-e", create]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-bucket"), "{stderr}");
}

/// Every key in `bucket` (listed with boto3, which moto brings).
async fn bucket_keys(moto: &Moto, bucket: &str) -> Vec<String> {
    let script = format!(
        "import boto3\n\
         s3 = boto3.client('s3', endpoint_url='http://{}', aws_access_key_id='k', \
         aws_secret_access_key='s', region_name='us-east-1')\n\
         for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}'):\n\
         \x20   for o in page.get('Contents', []):\n\
         \x20       print(o['Key'])\n",
        moto.addr
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The `AWS_*` settings of `moto`, as a gateway's environment.
fn s3_vars(moto: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", format!("http://{}", moto.addr)),
        ("AWS_ACCESS_KEY_ID", "strata-test".into()),
        ("AWS_SECRET_ACCESS_KEY", "strata-test-secret".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_on_s3_keeps_managed_tables_across_gateways_and_strata_sql() {
    use crate::gateway::Gateway;
    let env = Env::new("s3-warehouse");
    let data = env.path("tpch");
    strata_framework::tpch::generate_parquet(0.01, &data).unwrap();
    let moto = start_moto().await;
    assert_eq!(request(moto.addr, "PUT", "/lake", b"").unwrap(), 200);
    let (m, _agents) = env.start_cluster(2).await;
    let vars = s3_vars(&moto);
    let warehouse = ["--warehouse", "s3://lake/prod"];
    let mut first = Gateway::start_with(&env, &m, &warehouse, &vars).await;
    let made = first
        .psql_ok(&[
            "-c",
            &format!(
                "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/'",
                data.join("lineitem").display()
            ),
            "-c",
            "CREATE TABLE items AS SELECT l_orderkey, l_quantity FROM lineitem",
            "-c",
            "CREATE TABLE t (id INT, name TEXT)",
            "-c",
            "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')",
            "-c",
            "INSERT INTO t SELECT l_linenumber + 10, l_shipmode FROM lineitem WHERE l_orderkey = 1",
            "-c",
            "UPDATE t SET name = 'uno' WHERE id = 1",
            "-c",
            "DELETE FROM t WHERE id = 2",
        ])
        .await;
    assert_eq!(
        made.lines().collect::<Vec<_>>(),
        [
            "CREATE TABLE",
            "SELECT 60175",
            "CREATE TABLE",
            "INSERT 0 3",
            "INSERT 0 6",
            "UPDATE 1",
            "DELETE 1"
        ],
        "{made}"
    );
    let items = "SELECT count(*), sum(l_quantity) FROM items";
    let expected = first
        .rows("SELECT count(*), sum(l_quantity) FROM lineitem")
        .await;
    assert_eq!(first.rows(items).await, expected);
    let t = "SELECT id, name FROM t WHERE id < 10 ORDER BY id";
    let t_rows = vec![
        vec!["1".to_owned(), "uno".to_owned()],
        vec!["3".to_owned(), "three".to_owned()],
    ];
    assert_eq!(first.rows(t).await, t_rows);
    // The catalog and the tables are objects in the bucket, nothing local.
    let keys = bucket_keys(&moto, "lake").await;
    assert!(keys.contains(&"prod/catalog.json".to_owned()), "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("prod/tables/public/items-")
                && k.ends_with("_delta_log/00000000000000000000.json")),
        "{keys:?}"
    );
    assert!(!env.home().join("warehouse/catalog.json").exists());

    // A gateway killed with -9 and another started (as on another agent):
    // the same tables, read from the bucket.
    first.proc.kill9();
    let second = Gateway::start_with(&env, &m, &warehouse, &vars).await;
    assert_eq!(second.rows(items).await, expected);
    assert_eq!(second.rows(t).await, t_rows);
    // `strata sql --warehouse` works in the same catalog.
    let out = sql_with_s3(
        &env,
        &m.addr,
        &moto,
        &[
            "--executors",
            "1",
            "--warehouse",
            "s3://lake/prod",
            "--format",
            "csv",
            "-e",
            "SELECT count(*) AS n FROM items",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n60175\n");
    // A COPY into a directory of the bucket lands whole: its objects under
    // their partitions, the manifest, nothing staged.
    let copied = second
        .psql_ok(&[
            "-c",
            "COPY (SELECT l_orderkey, l_returnflag FROM lineitem) TO 's3://lake/exports/flags/' \
             (FORMAT parquet, PARTITION_BY (l_returnflag))",
        ])
        .await;
    assert_eq!(copied.trim(), "COPY 60175");
    let keys = bucket_keys(&moto, "lake").await;
    let exported: Vec<&String> = keys.iter().filter(|k| k.starts_with("exports/")).collect();
    assert!(
        exported.iter().any(|k| *k == "exports/flags/_SUCCESS"),
        "{exported:?}"
    );
    assert!(
        exported
            .iter()
            .any(|k| k.starts_with("exports/flags/l_returnflag=R/") && k.ends_with(".parquet")),
        "{exported:?}"
    );
    assert!(
        !exported.iter().any(|k| k.contains("_strata_staging")),
        "{exported:?}"
    );
    // A DROP removes the table's objects.
    second.psql_ok(&["-c", "DROP TABLE t"]).await;
    let gone = second.psql(&["-c", "SELECT * FROM t"]).await;
    assert!(!gone.status.success());
    let keys = bucket_keys(&moto, "lake").await;
    assert!(
        !keys.iter().any(|k| k.starts_with("prod/tables/public/t-")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with("prod/tables/public/items-"))
    );
}
