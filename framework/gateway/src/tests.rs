//! The wire protocol under bad input: a real gateway (in-process
//! executors) fed random, truncated, oversized and unknown messages over
//! raw sockets. Each bad connection ends alone; sessions opened before and
//! after carry on. Frames are written by hand here because the point is
//! to send what no client library would.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_framework::driver::{Driver, DriverConfig, ExecutorSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Gateway, GatewayConfig, GatewayHandle};

const DEADLINE: Duration = Duration::from_secs(10);

async fn gateway(dir: &std::path::Path, max_connections: usize) -> (Arc<Driver>, GatewayHandle) {
    gateway_with(dir, |gw| gw.max_connections = max_connections).await
}

/// A gateway on ephemeral ports over one in-process executor, with the
/// settings `tweak` makes.
pub(crate) async fn gateway_with(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> (Arc<Driver>, GatewayHandle) {
    let mut config = DriverConfig::new(ExecutorSource::InProcess(dir.to_path_buf()));
    config.executors.min = 1;
    config.executors.max = 1;
    config.executors.mem_mib = 256.0;
    let driver = Arc::new(Driver::start(config).await.unwrap());
    let mut gw = GatewayConfig::new(1);
    gw.pg_listen = "127.0.0.1:0".parse().unwrap();
    tweak(&mut gw);
    let handle = Gateway::start(gw, driver.clone()).await.unwrap();
    (driver, handle)
}

fn startup_message() -> Vec<u8> {
    startup_for("strata")
}

/// A startup message naming `database`.
fn startup_for(database: &str) -> Vec<u8> {
    let mut body = 196_608_i32.to_be_bytes().to_vec();
    for s in ["user", "strata", "database", database] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    m.extend(body);
    m
}

fn query_message(sql: &str) -> Vec<u8> {
    let mut m = vec![b'Q'];
    m.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    m.extend_from_slice(sql.as_bytes());
    m.push(0);
    m
}

/// Reads messages until ReadyForQuery; `None` if the connection ends
/// first. Each message is its type and body.
async fn until_ready(s: &mut TcpStream) -> Option<Vec<(u8, Vec<u8>)>> {
    let read = async {
        let mut out = Vec::new();
        loop {
            let kind = s.read_u8().await.ok()?;
            let len = s.read_i32().await.ok()?;
            let mut body = vec![0; usize::try_from(len).ok()?.checked_sub(4)?];
            s.read_exact(&mut body).await.ok()?;
            out.push((kind, body));
            if kind == b'Z' {
                return Some(out);
            }
        }
    };
    tokio::time::timeout(DEADLINE, read).await.ok().flatten()
}

/// Whether the server ends the connection (EOF or reset) within the deadline.
async fn closes(s: &mut TcpStream) -> bool {
    let drain = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, drain).await.unwrap_or(false)
}

async fn session(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&startup_message()).await.unwrap();
    let msgs = until_ready(&mut s).await.expect("startup completes");
    assert!(msgs.iter().any(|(k, _)| *k == b'R'), "authentication ok");
    s
}

/// The text of the first column of the first DataRow of `SELECT …`.
async fn select(s: &mut TcpStream, sql: &str) -> String {
    s.write_all(&query_message(sql)).await.unwrap();
    let msgs = until_ready(s).await.expect("the query completes");
    let (_, row) = msgs
        .iter()
        .find(|(k, _)| *k == b'D')
        .unwrap_or_else(|| panic!("no row for {sql}: {msgs:?}"));
    let len = i32::from_be_bytes([row[2], row[3], row[4], row[5]]) as usize;
    String::from_utf8(row[6..6 + len].to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_end_their_connection_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, gw) = gateway(dir.path(), 100).await;
    let addr = gw.pg_addr();
    let mut before = session(addr).await;

    let mut rng = StdRng::seed_from_u64(16);
    for case in 0..150 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if case % 2 == 1 {
            s.write_all(&startup_message()).await.unwrap();
            until_ready(&mut s).await.expect("startup completes");
        }
        let len = rng.random_range(1..512);
        let garbage: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // The server may close before reading it all: a write error is fine.
        s.write_all(&garbage).await.ok();
        s.shutdown().await.ok();
        assert!(closes(&mut s).await, "case {case}: the connection is ended");
    }

    // Oversized, truncated and unknown messages after a good startup.
    let mut oversized = vec![b'Q'];
    oversized.extend_from_slice(&i32::MAX.to_be_bytes());
    oversized.extend_from_slice(b"SELECT");
    let mut truncated = vec![b'Q'];
    truncated.extend_from_slice(&100_i32.to_be_bytes());
    truncated.extend_from_slice(b"SELECT 1");
    let unknown = vec![b'y', 0, 0, 0, 4];
    for bad in [oversized, truncated, unknown] {
        let mut s = session(addr).await;
        s.write_all(&bad).await.ok();
        s.shutdown().await.ok();
        assert!(closes(&mut s).await, "{bad:?} ends its connection");
    }

    // The session from before, and a new one, carry on.
    assert_eq!(select(&mut before, "SELECT 40 + 2").await, "42");
    let mut after = session(addr).await;
    assert_eq!(
        select(&mut after, "SELECT 'still here'").await,
        "still here"
    );
    gw.shutdown().await;
    driver.shutdown().await;
}

/// The first message the gateway answers `startup` with: its kind and
/// text.
async fn first_reply(addr: std::net::SocketAddr, startup: &[u8]) -> (u8, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(startup).await.unwrap();
    let kind = s.read_u8().await.unwrap();
    let len = s.read_i32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await.unwrap();
    (kind, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_other_than_the_gateways_is_refused_with_3d000() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, gw) = gateway(dir.path(), 4).await;
    let (kind, body) = first_reply(gw.pg_addr(), &startup_for("sales")).await;
    assert_eq!(kind, b'E', "an ErrorResponse: {body}");
    assert!(
        body.contains("3D000") && body.contains("\"sales\" does not exist"),
        "{body}"
    );
    // The gateway's own database is let in.
    let (kind, body) = first_reply(gw.pg_addr(), &startup_for("strata")).await;
    assert_eq!(kind, b'R', "authentication: {body}");
    gw.shutdown().await;
    driver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_with_53300() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, gw) = gateway(dir.path(), 2).await;
    let addr = gw.pg_addr();
    let mut first = session(addr).await;
    let _second = session(addr).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(&startup_message()).await.unwrap();
    let kind = third.read_u8().await.unwrap();
    let len = third.read_i32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    third.read_exact(&mut body).await.unwrap();
    assert_eq!(kind, b'E', "an ErrorResponse");
    assert!(
        String::from_utf8_lossy(&body).contains("53300"),
        "too_many_connections: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(closes(&mut third).await);
    // Those admitted carry on; one leaving lets another in.
    assert_eq!(select(&mut first, "SELECT 1").await, "1");
    drop(first);
    let mut again = tokio::time::timeout(DEADLINE, async {
        loop {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&startup_message()).await.unwrap();
            if let Some(msgs) = until_ready(&mut s).await
                && msgs.iter().all(|(k, _)| *k != b'E')
            {
                return s;
            }
        }
    })
    .await
    .expect("a place frees when a session ends");
    assert_eq!(select(&mut again, "SELECT 2").await, "2");
    gw.shutdown().await;
    driver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_view_is_seen_by_its_session_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, gw) = gateway(dir.path(), 10).await;
    let addr = gw.pg_addr();
    let mut a = session(addr).await;
    let mut b = session(addr).await;
    a.write_all(&query_message(
        "CREATE TEMPORARY VIEW tv AS SELECT 5 AS five",
    ))
    .await
    .unwrap();
    until_ready(&mut a).await.expect("the view is made");
    assert_eq!(select(&mut a, "SELECT five FROM tv").await, "5");
    b.write_all(&query_message("SELECT five FROM tv"))
        .await
        .unwrap();
    let msgs = until_ready(&mut b).await.expect("an answer");
    let error = msgs.iter().find(|(k, _)| *k == b'E').expect("an error");
    assert!(
        String::from_utf8_lossy(&error.1).contains("42P01"),
        "{msgs:?}"
    );
    // Nothing of it is in the shared catalog either.
    assert!(
        gw.gateway()
            .catalog
            .schema("public")
            .unwrap()
            .table_names()
            .is_empty()
    );
    gw.shutdown().await;
    driver.shutdown().await;
}
