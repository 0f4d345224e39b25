//! `strata bench gateway`: the SQL gateway's round trip, beside a local
//! PostgreSQL 15 measured the same way in the same run.
//!
//! A local cluster and a gateway run in this process; a PostgreSQL server
//! (Debian's `postgresql-15`, `initdb` in a temporary directory) beside
//! it. `pgbench` runs `SELECT 1` against each, one client, in the simple
//! and in the extended protocol, logging every transaction's latency; the
//! figures are their p50 and p99. The same round trip over the gateway's
//! Arrow Flight SQL (`GetFlightInfo` and `DoGet`, arrow-flight's client
//! in this process) is measured too; PostgreSQL has no Flight SQL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use strata_gateway::{Gateway, GatewayConfig};

use crate::cli::batch::{ExecutorOpts, start_elastic_driver};

/// Arguments of `strata bench gateway`.
#[derive(clap::Args, Debug)]
pub struct GatewayBenchArgs {
    /// `SELECT 1` round trips per measurement.
    #[arg(long, default_value_t = 5000)]
    transactions: usize,
    /// Concurrent clients to measure throughput with (simple protocol),
    /// besides the one-client latencies.
    #[arg(long, value_delimiter = ',', default_value = "4,8")]
    clients: Vec<usize>,
    /// Also run TPC-H's throughput test at this scale factor (0: not):
    /// `--streams` clients each run the 22 queries in an order of their
    /// own, while a short query's latency is measured.
    #[arg(long, default_value_t = 0.0)]
    tpch_sf: f64,
    /// Streams at once for the throughput test.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    streams: Vec<usize>,
    /// Runs of TPC-H's power test (the 22 queries one after another)
    /// through the gateway, a session on the same executors (`strata
    /// sql`) and single-process DataFusion, with `--tpch-sf` (0: not).
    #[arg(long, default_value_t = 2)]
    power_runs: usize,
    /// Where PostgreSQL's programs are (initdb, postgres, pgbench).
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin: PathBuf,
    #[command(flatten)]
    executors: ExecutorOpts,
}

/// One measurement's latencies, in microseconds, sorted.
pub(super) struct Latencies(pub(super) Vec<u64>);

impl Latencies {
    /// The `q` quantile, in milliseconds.
    pub(super) fn quantile(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[i.min(self.0.len() - 1)] as f64 / 1000.0
    }
}

/// `strata bench gateway`.
pub async fn run(a: GatewayBenchArgs) -> anyhow::Result<ExitCode> {
    for tool in ["initdb", "postgres", "pgbench"] {
        if !a.pg_bin.join(tool).exists() {
            bail!(
                "{} not found: install Debian's postgresql-15 (or give --pg-bin)",
                a.pg_bin.join(tool).display()
            );
        }
    }
    let dir = std::env::temp_dir().join(format!("strata-bench-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&a, &dir).await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

async fn bench(a: &GatewayBenchArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    // The gateway: one agent, one executor (`SELECT 1` runs in the gateway).
    let machine = "cpus:2;mem:2048;disk:1024;ports:[31000-31999]";
    let cluster = super::local_cluster(1, dir.join("cluster"), machine).await?;
    let manager = cluster.address().to_string();
    let mut executors = a.executors.clone();
    executors.executor_mem = executors.executor_mem.min(1024.0);
    let driver =
        start_elastic_driver(&executors, &manager, None, "strata-bench-gateway", 1, 1).await?;
    let partitions = executors.partitions_for(1);
    let mut config = GatewayConfig::new(partitions);
    config.pg_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.flight_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let gateway = Gateway::start(config, driver.clone()).await?;
    let port = gateway.pg_addr().port();

    let script = dir.join("select1.sql");
    std::fs::write(&script, "SELECT 1;\n")?;
    let mut rows = Vec::new();
    let postgres = Postgres::start(&a.pg_bin, &dir.join("pg")).await;
    for mode in ["simple", "extended"] {
        let (ours, _) = pgbench(
            a, dir, &script, mode, port, "strata", "strata", "gateway", 1,
        )
        .await?;
        let theirs = match &postgres {
            Ok(pg) => Some(
                pgbench(
                    a, dir, &script, mode, pg.port, "postgres", "postgres", "pg", 1,
                )
                .await?
                .0,
            ),
            Err(_) => None,
        };
        rows.push((mode, ours, theirs));
    }
    // Throughput with clients at once (each its own connection, session).
    let mut concurrent = Vec::new();
    for &c in std::iter::once(&1).chain(a.clients.iter()) {
        let ours = pgbench(
            a, dir, &script, "simple", port, "strata", "strata", "gateway", c,
        )
        .await?;
        let theirs = match &postgres {
            Ok(pg) => Some(
                pgbench(
                    a, dir, &script, "simple", pg.port, "postgres", "postgres", "pg", c,
                )
                .await?,
            ),
            Err(_) => None,
        };
        concurrent.push((c, ours, theirs));
    }
    if let Some(flight) = gateway.flight_addr() {
        rows.push((
            "flight sql",
            flight_select1(flight, a.transactions).await?,
            None,
        ));
    }
    let psql = a.pg_bin.join("psql");
    let throughput = match gateway.flight_addr() {
        Some(flight) if a.tpch_sf > 0.0 => {
            super::throughput::run(a.tpch_sf, &a.streams, dir, &psql, port, flight).await?
        }
        _ => Vec::new(),
    };
    let power = if a.tpch_sf > 0.0 && a.power_runs > 0 {
        let data = dir.join("tpch");
        Some(super::power::run(&data, a.power_runs, &psql, port, driver.clone(), partitions).await?)
    } else {
        None
    };
    if let Ok(pg) = postgres {
        pg.stop().await;
    } else if let Err(e) = &postgres {
        eprintln!("PostgreSQL did not start, measured alone: {e:#}");
    }
    gateway.shutdown().await;
    driver.shutdown().await;
    cluster.shutdown_with_tasks(Duration::from_secs(10)).await;

    println!(
        "SELECT 1 round trip, one client, {} transactions per row (pgbench; Flight SQL: \
         arrow-flight's client):",
        a.transactions
    );
    println!(
        "{:<10} {:>12} {:>12} {:>14} {:>14} {:>8}",
        "protocol", "gateway p50", "gateway p99", "postgres p50", "postgres p99", "p50 ×"
    );
    for (mode, ours, theirs) in rows {
        let (p50, p99) = (ours.quantile(0.5), ours.quantile(0.99));
        let reference = match &theirs {
            Some(t) => {
                let (t50, t99) = (t.quantile(0.5), t.quantile(0.99));
                format!("{t50:>11.3} ms {t99:>11.3} ms {:>8.2}", p50 / t50)
            }
            None => format!("{:>14} {:>14} {:>8}", "-", "-", "-"),
        };
        println!("{mode:<10} {p50:>9.3} ms {p99:>9.3} ms {reference}");
    }
    println!();
    println!("SELECT 1, simple protocol, clients at once (pgbench -c N -j N):");
    println!(
        "{:<8} {:>12} {:>12} {:>14} {:>14}",
        "clients", "gateway tps", "gateway p99", "postgres tps", "postgres p99"
    );
    for (c, (ours, tps), theirs) in concurrent {
        let reference = match theirs {
            Some((t, ttps)) => format!("{ttps:>14.0} {:>11.3} ms", t.quantile(0.99)),
            None => format!("{:>14} {:>14}", "-", "-"),
        };
        println!(
            "{c:<8} {tps:>12.0} {:>9.3} ms {reference}",
            ours.quantile(0.99)
        );
    }
    if let Some(p) = power {
        println!();
        println!(
            "TPC-H SF {} power test: the 22 queries one after another, best of {} runs, \
             {partitions} partitions:",
            a.tpch_sf, p.runs
        );
        println!("{:<48} {:>10} {:>10}", "", "seconds", "× strata sql");
        let base = p.session.as_secs_f64();
        for (name, t) in [
            ("gateway (psql, one connection)", p.gateway),
            ("strata sql (a session on the same executors)", p.session),
            ("datafusion (one process)", p.datafusion),
        ] {
            let secs = t.as_secs_f64();
            println!("{name:<48} {secs:>10.2} {:>10.3}", secs / base);
        }
        println!(
            "gateway overhead over strata sql: {:+.1} %",
            (p.gateway.as_secs_f64() / base - 1.0) * 100.0
        );
    }
    if !throughput.is_empty() {
        println!();
        println!(
            "TPC-H SF {} throughput: streams at once, each the 22 queries in its own order \
             (psql); a short query (a GROUP BY of nation, Flight SQL) meanwhile:",
            a.tpch_sf
        );
        println!(
            "{:<8} {:>10} {:>14} {:>10} {:>10} {:>8}",
            "streams", "elapsed", "queries/hour", "short p50", "short p99", "short n"
        );
        for t in throughput {
            println!(
                "{:<8} {:>8.1} s {:>14.0} {:>7.1} ms {:>7.1} ms {:>8}",
                t.streams,
                t.elapsed,
                t.per_hour,
                t.short.quantile(0.5),
                t.short.quantile(0.99),
                t.short.0.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `SELECT 1` over Flight SQL `n` times, one after another, after a
/// warm-up; each round trip's latency.
async fn flight_select1(addr: SocketAddr, n: usize) -> anyhow::Result<Latencies> {
    use crate::cli::shell::{connect, flight_query};
    let mut client = connect(&addr.to_string(), None).await?;
    let mut micros = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let started = std::time::Instant::now();
        let (_, rows) = flight_query(&mut client, "SELECT 1").await?;
        anyhow::ensure!(rows.len() == 1, "SELECT 1 gave {} batches", rows.len());
        // The first tenth warms up.
        if i >= n / 10 {
            micros.push(started.elapsed().as_micros() as u64);
        }
    }
    micros.sort_unstable();
    Ok(Latencies(micros))
}

/// Runs pgbench and reads its per-transaction log.
#[allow(clippy::too_many_arguments)]
async fn pgbench(
    a: &GatewayBenchArgs,
    dir: &Path,
    script: &Path,
    mode: &str,
    port: u16,
    user: &str,
    database: &str,
    label: &str,
    clients: usize,
) -> anyhow::Result<(Latencies, f64)> {
    let clients = clients.max(1);
    let logs = dir.join(format!("log-{label}-{mode}-{clients}"));
    std::fs::create_dir_all(&logs)?;
    let prefix = logs.join("tx");
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new(a.pg_bin.join("pgbench"))
        .args(["-n", "-M", mode, "-h", "127.0.0.1", "-U", user])
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg(clients.to_string())
        .arg("-j")
        .arg(clients.to_string())
        .arg("-t")
        .arg((a.transactions / clients).max(1).to_string())
        .arg("-f")
        .arg(script)
        .arg("-l")
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(database)
        .current_dir(&logs)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run pgbench")?;
    if !out.status.success() {
        bail!(
            "pgbench against {label} ({mode}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut micros = Vec::new();
    for entry in std::fs::read_dir(&logs)? {
        let text = std::fs::read_to_string(entry?.path())?;
        // client transaction latency_us script epoch_s epoch_us
        micros.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()),
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tps = micros.len() as f64 / elapsed;
    micros.sort_unstable();
    Ok((Latencies(micros), tps))
}

/// A PostgreSQL server in a directory of its own, as the `postgres` user
/// when this runs as root (PostgreSQL refuses to run as root).
struct Postgres {
    child: tokio::process::Child,
    port: u16,
}

impl Postgres {
    async fn start(bin: &Path, data: &Path) -> anyhow::Result<Postgres> {
        std::fs::create_dir_all(data)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(data.parent().unwrap_or(data))
                .status()?;
            anyhow::ensure!(
                status.success(),
                "cannot give {} to postgres",
                data.display()
            );
        }
        let as_postgres = |program: PathBuf| {
            let mut c = if root {
                let mut c = tokio::process::Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                tokio::process::Command::new(program)
            };
            c.stdin(Stdio::null());
            c
        };
        let out = as_postgres(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(data)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port()?;
        let mut child = as_postgres(bin.join("postgres"))
            .arg("-D")
            .arg(data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("unix_socket_directories={}", data.display()))
            .arg("-p")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start postgres")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Postgres { child, port });
            }
            if let Some(status) = child.try_wait()? {
                bail!("postgres exited: {status}");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("postgres did not listen within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        if let Some(pid) = self.child.id() {
            // SAFETY: kill with a pid of our own child and a valid signal.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
        }
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .ok();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}
