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
