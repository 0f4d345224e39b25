//! End-to-end benchmark across hosts: a manager and three agents, each a
//! `strata` process on a host of its own (a network namespace with its own
//! IP on a bridge, as the multi-host tests make them; on 127.0.0.1, said
//! so, where this process cannot make namespaces), and this process as the
//! framework. It measures no-op tasks (`true`, each under its own supervisor
//! process) launched and finished per second with 2,000 tasks queued,
//! offer-to-running latency p50/p99, the CPU time each task costs the
//! manager, the agents (with the supervisors and tasks they reap) and the
//! framework, and the resident memory of an idle agent.
//!
//! Run: `cargo bench --bench cluster` (as root for separate hosts;
//! `-- --quick` for a short run).

// A benchmark is a test that measures: an error it hits stops it with
// the error, as a failed assertion stops a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/harness/hosts.rs"]
#[allow(dead_code)]
mod hosts;

#[path = "../tests/it/harness/disk.rs"]
#[allow(dead_code)]
mod disk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_proto::resources::Resources;
use strata_sdk::{Ask, Event, FrameworkConfig, Scheduler, SchedulerConfig, TaskBuilder};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const TOKEN: &str = "bench-secret";
/// What each agent offers: the cores of this machine, as a real agent
/// detects them, and memory for the tiny tasks.
const AGENT_RESOURCES: &str = "mem:4096;disk:1000;ports:[31000-31999]";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `/proc/PID/stat` fields after the command name: state is [0].
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// CPU seconds a process used, with the children it reaped (an agent's
/// supervisors and, through them, the tasks).
fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    stat_fields(pid).map_or(0.0, |f| (f[11] + f[12] + f[13] + f[14]) as f64 / ticks)
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

/// A `strata` process of the cluster, its log in a file.
struct Proc {
    child: Child,
    log: PathBuf,
    /// The pid of `strata` itself (under `ip netns exec`, which execs it).
    pid: u32,
}

impl Proc {
    fn spawn(host: Option<&hosts::Host>, home: &Path, args: &[&str], log: PathBuf) -> Proc {
        let mut c = match host {
            Some(h) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &h.netns, STRATA]);
                c
            }
            None => Command::new(STRATA),
        };
        let file = std::fs::File::create(&log).unwrap();
        let child = c
            .args(args)
            .env("STRATA_LOG", "info")
            .env("STRATA_HOME", home)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let pid = child.id();
        Proc { child, log, pid }
    }

    /// Waits (at most 30 s) for a log line containing `needle`; returns it.
    fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {}:\n{text}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The agents' disk: a journaled ext4 on a loop device, as an agent
/// host's disk is (this machine's own root file system may differ: without
/// a journal, ext4 scans for an inode not recently freed on every file it
/// creates), when this process may make one; else the directory as it is.
struct AgentDisk {
    dir: PathBuf,
    loop_disk: Option<disk::LoopDisk>,
}

impl AgentDisk {
    fn make(dir: &Path) -> AgentDisk {
        let mount = dir.join("agents");
        match disk::LoopDisk::mount(&mount, 2 << 30) {
            Some(d) => AgentDisk {
                dir: mount,
                loop_disk: Some(d),
            },
            None => {
                std::fs::create_dir_all(&mount).unwrap();
                AgentDisk {
                    dir: mount,
                    loop_disk: None,
                }
            }
        }
    }

    fn describe(&self) -> &'static str {
        if self.loop_disk.is_some() {
            "work dirs on a journaled ext4 (loop device)"
        } else {
            "work dirs under the temporary directory"
        }
    }
}

/// The manager and three agents.
struct Cluster {
    manager: Proc,
    agents: Vec<Proc>,
    address: String,
    where_: &'static str,
    // Dropped after the processes.
    _lan: Option<hosts::Lan>,
    disk: AgentDisk,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let lan = hosts::Lan::new("bench", 4);
        let host = |i: usize| lan.as_ref().map(|l| l.host(i).clone());
        let listen = host(0).map_or("127.0.0.1:0".to_owned(), |h| h.addr(5050));
        let work = dir.join("manager");
        let manager = Proc::spawn(
            host(0).as_ref(),
            dir,
            &[
                "manager",
                "--listen",
                &listen,
                "--token",
                TOKEN,
                "--work-dir",
                work.to_str().unwrap(),
            ],
            dir.join("manager.log"),
        );
        let line = manager.wait_line("strata manager listening on ");
        let address = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .to_owned();
        let disk = AgentDisk::make(dir);
        let mut agents = Vec::new();
        for i in 1..=3 {
            let work = disk.dir.join(format!("agent-{i}"));
            let (listen, advertise) = match host(i) {
                Some(h) => ("0.0.0.0:5051".to_owned(), h.addr(5051)),
                None => ("127.0.0.1:0".to_owned(), String::new()),
            };
            let mut args = vec![
                "agent",
                "--manager",
                &address,
                "--listen",
                &listen,
                "--token",
                TOKEN,
                "--work-dir",
                work.to_str().unwrap(),
                "--resources",
                AGENT_RESOURCES,
                "--no-service-ports",
            ];
            if !advertise.is_empty() {
                args.extend(["--advertise", &advertise]);
            }
            agents.push(Proc::spawn(
                host(i).as_ref(),
                dir,
                &args,
                dir.join(format!("agent-{i}.log")),
            ));
        }
        let where_ = if lan.is_some() {
            "each on its own host (network namespace)"
        } else {
            "on 127.0.0.1 (no network namespaces here: not root?)"
        };
        Cluster {
            manager,
            agents,
            address,
            where_,
            _lan: lan,
            disk,
        }
    }

    async fn wait_agents(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = strata_sdk::http::get(
                &self.address,
                "/api/v1/agents",
                Some(TOKEN),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            let agents: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
            if agents.iter().filter(|a| a["state"] == "registered").count() >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{n} agents never registered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// CPU seconds so far: the manager, the agents (with what they reaped).
    fn cpu(&self) -> (f64, f64) {
        (
            cpu_seconds(self.manager.pid),
            self.agents.iter().map(|a| cpu_seconds(a.pid)).sum(),
        )
    }
}

/// This process's own CPU seconds (the framework).
fn own_cpu() -> f64 {
    cpu_seconds(std::process::id())
}

async fn throughput(
    cluster: &Cluster,
    total: usize,
    in_flight: usize,
    cpus: f64,
    label: &str,
) -> anyhow::Result<()> {
    let shape = Resources::new(cpus, 8.0);
    let mut cfg = SchedulerConfig::new(cluster.address.clone(), FrameworkConfig::new("bench"));
    cfg.token = Some(TOKEN.to_owned());
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
    let (manager0, agents0) = cluster.cpu();
    let own0 = own_cpu();
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
    let took = t0.elapsed().as_secs_f64();
    let (manager1, agents1) = cluster.cpu();
    let own = own_cpu() - own0;
    handle.teardown().await?;
    latencies.sort();
    let rate = total as f64 / took;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "{label}: {total} no-op tasks in {took:.2} s: {rate:.0} tasks/s launched and finished \
         ({:.0} per core of {cores}; {failed} failed)",
        rate / cores
    );
    println!(
        "  offer-to-running latency p50 {:.1} ms, p99 {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    let per = |s: f64| s * 1e3 / total as f64;
    println!(
        "  cpu per task: manager {:.2} ms, agents with supervisors and tasks {:.2} ms, framework {:.2} ms",
        per(manager1 - manager0),
        per(agents1 - agents0),
        per(own)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let total = if quick { 300 } else { 2_000 };
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cluster = Cluster::start(dir.path());
    println!(
        "a manager and three agents, {}; agents offer the machine's cores and {AGENT_RESOURCES}, {}",
        cluster.where_,
        cluster.disk.describe()
    );
    rt.block_on(async {
        cluster.wait_agents(3).await;
        // As many run at once as the agents' cpus hold: 60 tasks of 0.1
        // cpu, or 600 of 0.01 (then the latency is that queue's: Little's
        // law, in flight / rate).
        for cpus in [0.1, 0.01] {
            let all = format!("{total} queued at once, {cpus} cpu each");
            throughput(&cluster, total, usize::MAX, cpus, &all).await?;
        }
        throughput(&cluster, (total / 10).max(20), 1, 0.1, "one at a time").await?;
        anyhow::Ok(())
    })?;
    // An idle agent, settled into its loop (heartbeats, GC timer).
    std::thread::sleep(Duration::from_secs(2));
    if let Some(a) = cluster.agents.first() {
        let rss = rss_kib(a.pid).unwrap_or(0);
        println!(
            "memory: idle agent process RSS {:.1} MiB   (floor: <= 50 MiB)",
            rss as f64 / 1024.0
        );
    }
    drop(cluster);
    Ok(())
}
