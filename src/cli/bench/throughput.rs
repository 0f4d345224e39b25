//! TPC-H's throughput test through the gateway: N clients (psql, each its
//! own connection and session) each run the 22 queries in an order of its
//! own, all at once; the figure is queries per hour. Meanwhile a short
//! query (a GROUP BY of `nation`, a job on the cluster like the long
//! ones) runs over and over through Flight SQL, and its p99 shows
//! whether a short query waits behind long ones.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, ensure};
use strata_framework::tpch;

use super::gateway::Latencies;

/// One measurement: streams at once, queries per hour, the short query's
/// latencies while they ran.
pub struct Throughput {
    /// Streams (clients) at once.
    pub streams: usize,
    /// Queries per hour (22 × streams × 3600 / elapsed seconds).
    pub per_hour: f64,
    /// Seconds from the first stream's start to the last one's end.
    pub elapsed: f64,
    /// The short query's latencies.
    pub short: Latencies,
}

/// Generates TPC-H at `sf` under `dir`, registers it in the gateway's
/// catalog, and runs the throughput test for each count of `streams`.
pub async fn run(
    sf: f64,
    streams: &[usize],
    dir: &Path,
    psql: &Path,
    pg_port: u16,
    flight: SocketAddr,
) -> anyhow::Result<Vec<Throughput>> {
    use crate::cli::shell::{connect, flight_query};
    let data = dir.join("tpch");
    tpch::generate_parquet(sf, &data).context("generating TPC-H data")?;
    let mut client = connect(&flight.to_string(), None).await?;
    for t in tpch::TABLES {
        let ddl = format!(
            "CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION '{}/'",
            data.join(t).display()
        );
        flight_query(&mut client, &ddl).await?;
    }
    let mut out = Vec::new();
    for &n in streams {
        out.push(measure(n.max(1), dir, psql, pg_port, flight).await?);
    }
    Ok(out)
}

/// Stream `k`'s script: the 22 queries in its own order (a fixed
/// permutation per stream, as TPC-H gives each stream one), q15's view
/// temporary so that streams at once do not share it.
fn stream_script(k: usize) -> String {
    let mut order: Vec<usize> = (1..=22).collect();
    // A deterministic shuffle per stream (xorshift seeded by k).
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (k as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut script = String::new();
    for q in order {
        for s in tpch::statements(q) {
            let s = s.replacen("create view", "create temporary view", 1);
            script.push_str(&s);
            script.push_str(";\n");
        }
    }
    script
}

async fn measure(
    n: usize,
    dir: &Path,
    psql: &Path,
    port: u16,
    flight: SocketAddr,
) -> anyhow::Result<Throughput> {
    let done = Arc::new(AtomicBool::new(false));
    let short = tokio::spawn(short_queries(flight, done.clone()));
    let started = Instant::now();
    let mut children = Vec::new();
    for k in 0..n {
        let script = dir.join(format!("stream-{n}-{k}.sql"));
        std::fs::write(&script, stream_script(k))?;
        let child = psql_file(psql, port, &script)
            .spawn()
            .with_context(|| format!("cannot run {}", psql.display()))?;
        children.push(child);
    }
    for child in children {
        let out = child.wait_with_output().await?;
        ensure!(
            out.status.success(),
            "a TPC-H stream failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let short = short.await.context("the short-query loop")??;
    Ok(Throughput {
        streams: n,
        per_hour: (22 * n) as f64 * 3600.0 / elapsed,
        elapsed,
        short,
    })
}

/// psql running the SQL file `script` through the gateway on `port`, its
/// output dropped, stopping at the first error (kept on stderr).
pub(super) fn psql_file(psql: &Path, port: u16, script: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(psql);
    c.args([
        "-X",
        "-q",
        "-h",
        "127.0.0.1",
        "-U",
        "strata",
        "-d",
        "strata",
    ])
    .args([
        "-p",
        &port.to_string(),
        "-v",
        "ON_ERROR_STOP=1",
        "-o",
        "/dev/null",
    ])
    .arg("-f")
    .arg(script)
    .stdin(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    c
}

/// The short query: it reads a file on the executors (a bare `count(*)`
/// would be answered from the file's statistics, in the gateway).
const SHORT: &str = "SELECT n_regionkey, count(*) FROM nation GROUP BY n_regionkey";

/// Runs the short query until `done`; its latencies.
async fn short_queries(flight: SocketAddr, done: Arc<AtomicBool>) -> anyhow::Result<Latencies> {
    use crate::cli::shell::{connect, flight_query};
    let mut client = connect(&flight.to_string(), None).await?;
    let mut micros = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let started = Instant::now();
        flight_query(&mut client, SHORT).await?;
        micros.push(started.elapsed().as_micros() as u64);
    }
    micros.sort_unstable();
    Ok(Latencies(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stream_runs_every_query_once_in_an_order_of_its_own() {
        let a = stream_script(0);
        let b = stream_script(1);
        assert_ne!(a, b);
        for s in [&a, &b] {
            assert_eq!(s.matches("create temporary view revenue0").count(), 1);
            assert_eq!(s.matches("drop view revenue0").count(), 1);
        }
        assert_eq!(stream_script(1), b, "deterministic");
    }
}
