//! End-to-end benchmark: no-op tasks launched and finished per second
//! through a real manager and two agents on loopback (real gRPC, real
//! per-task supervisor processes), offer-to-running latency p50/p99, and the
//! resident memory of an idle `strata agent` process.
//!
//! Run: `cargo bench --bench cluster` (`-- --quick` for a short run).

// A benchmark is a test that measures: an error it hits stops it with
// the error, as a failed assertion stops a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata::local::{LocalCluster, LocalOptions};
use strata_proto::resources::Resources;
use strata_sdk::{Ask, Event, FrameworkConfig, Scheduler, SchedulerConfig, TaskBuilder};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn throughput(
    address: &str,
    total: usize,
    in_flight: usize,
    label: &str,
) -> anyhow::Result<()> {
    let shape = Resources::new(0.01, 8.0);
    let mut cfg = SchedulerConfig::new(address.to_owned(), FrameworkConfig::new("bench"));
    cfg.demand = vec![Ask::new(
        "batch",
        shape.clone(),
        total.min(in_flight) as u32,
    )];
    let (handle, mut events) = Scheduler::subscribe(cfg).await?;
    let mut offered_at: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    let mut launched = 0usize;
    let mut finished = 0usize;
    let mut failed = 0usize;
    let t0 = Instant::now();
    while finished + failed < total {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(60), events.next()).await
        else {
            anyhow::bail!("stalled after {finished} finished");
        };
        match event {
            Event::Offers(offers) => {
                let now = Instant::now();
                for offer in offers {
                    let mut left = offer.resources.clone();
                    let mut tasks = Vec::new();
                    while launched < total
                        && launched - finished - failed < in_flight
                        && left.subtract(&shape)
                    {
                        let id = format!("noop-{launched}");
                        launched += 1;
                        offered_at.insert(id.clone(), now);
                        tasks.push(
                            TaskBuilder::shell(id, "true")
                                .resources(shape.clone())
                                .build(),
                        );
                    }
                    if tasks.is_empty() {
                        handle
                            .decline(vec![offer.id.clone()], Some(Duration::from_secs(1)))
                            .await?;
                    } else {
                        handle.launch(offer.id.clone(), tasks).await?;
                    }
                }
            }
            Event::Update(s) => {
                let id = s.task_id.to_string();
                if s.state == strata_proto::pb::TaskState::TaskRunning {
                    if let Some(t) = offered_at.get(&id) {
                        latencies.push(t.elapsed());
                    }
                } else if s.is_terminal() {
                    if s.state == strata_proto::pb::TaskState::TaskFinished {
                        finished += 1;
                    } else {
                        failed += 1;
                    }
                    // Keep `in_flight` tasks wanted: demand as tasks end.
                    let running = launched - finished - failed;
                    let want = in_flight.saturating_sub(running).min(total - launched);
                    if in_flight < total && want > 0 {
                        handle
                            .declare_demand(vec![Ask::new("batch", shape.clone(), want as u32)])
                            .await?;
                    }
                }
            }
            _ => {}
        }
    }
    let took = t0.elapsed();
    handle.teardown().await?;
    latencies.sort();
    println!(
        "end to end ({label}): {total} no-op tasks (each under its own supervisor process) in {:.2} s: {:.0} tasks/s launched and finished ({failed} failed)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    println!(
        "  offer-to-running latency p50 {:.1} ms, p99 {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let total = if quick { 300 } else { 2_000 };
    let exe = env!("CARGO_BIN_EXE_strata");
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut opts = LocalOptions::new(2, dir.path().to_path_buf());
        opts.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        opts.machine = Some(Resources::parse("cpus:4;mem:4096;disk:1000;ports:[31000-31999]")?);
        opts.supervisor = Some(vec![exe.to_owned(), "supervise".to_owned()]);
        let cluster = LocalCluster::start(opts).await?;
        let address = cluster.address().to_string();
        throughput(&address, total, usize::MAX, "all at once").await?;
        throughput(&address, (total / 10).max(20), 1, "one at a time").await?;

        // An idle agent as its own process.
        let work = dir.path().join("idle-agent");
        let mut child = Command::new(exe)
            .args(["agent", "--manager", &address, "--listen", "127.0.0.1:0", "--resources", "cpus:1;mem:512"])
            .arg("--work-dir")
            .arg(&work)
            .env("STRATA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut registered = false;
        while Instant::now() < deadline {
            let body = strata_sdk::http::get(&address, "/api/v1/agents", None, Duration::from_secs(5)).await?;
            let agents: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
            if agents.iter().filter(|a| a["state"] == "registered").count() >= 3 {
                registered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let it settle into its idle loop (heartbeats, GC timer).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = rss_kib(child.id()).unwrap_or(0);
        println!(
            "memory: idle agent process RSS {:.1} MiB (registered: {registered})   (floor: <= 50 MiB)",
            rss as f64 / 1024.0
        );
        child.kill().ok();
        child.wait().ok();
        cluster.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(())
}
