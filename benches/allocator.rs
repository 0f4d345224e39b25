//! Allocator benchmark: placements per second and allocation-cycle p50/p99
//! at 10,000 simulated agents × 100 frameworks, on the real master (the
//! sans-IO core, with offer bookkeeping), plus the master's resident memory
//! holding 10,000 agents and 100,000 tasks.
//!
//! Run: `cargo bench --bench allocator` (add `-- --quick` for a short run).
//!
//! Each cycle, every framework declares new task-shaped demand, the
//! allocator places it, the frameworks launch tasks on every offer, and a
//! share of the running tasks finishes, so cycles run on a busy cluster.

// A benchmark is a test that measures: an error it hits stops it with
// the error, as a failed assertion stops a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use strata_proto::time::Timestamp;

use strata_manager::master::{Action, Master, MasterConfig};
use strata_proto::pb::{self, agent_message, call};
use strata_proto::resources::Resources;

const AGENTS: usize = 10_000;
const FRAMEWORKS: usize = 100;

use strata_manager::api::resident_bytes as rss_bytes;

fn register(m: &mut Master, now: Timestamp, i: usize) -> String {
    let reg = agent_message::Register {
        protocol_version: strata_proto::PROTOCOL_VERSION,
        agent_id: String::new(),
        info: Some(pb::AgentInfo {
            hostname: format!("host{i}"),
            address: format!("10.{}.{}.{}:5051", i / 65536, (i / 256) % 256, i % 256),
            resources: Resources::parse("cpus:16;mem:65536;disk:100000;ports:[31000-32000]")
                .unwrap()
                .to_proto(false),
            attributes: vec![pb::Attribute {
                name: "rack".into(),
                value: format!("r{}", i % 50),
            }],
        }),
        tasks: vec![],
    };
    m.agent_register(now, reg).unwrap().to_string()
}

struct Fw {
    id: String,
    stream: String,
    next: u64,
}

fn subscribe(m: &mut Master, now: Timestamp, i: usize) -> Fw {
    let (id, stream) = m
        .subscribe(
            now,
            pb::SubscribeRequest {
                protocol_version: strata_proto::PROTOCOL_VERSION,
                framework: Some(pb::FrameworkInfo {
                    name: format!("fw{i}"),
                    role: format!("role{}", i % 10),
                    default_class: if i.is_multiple_of(4) {
                        "service".into()
                    } else {
                        "batch".into()
                    },
                    ..Default::default()
                }),
                demand: vec![],
                suppressed: true,
            },
        )
        .unwrap();
    Fw {
        id: id.to_string(),
        stream: stream.to_string(),
        next: 0,
    }
}

fn shape(i: usize) -> Resources {
    match i % 3 {
        0 => Resources::new(1.0, 2048.0),
        1 => Resources::new(0.5, 512.0),
        _ => Resources::new(2.0, 4096.0),
    }
}

fn envelope(f: &Fw, c: call::Call) -> pb::Call {
    pb::Call {
        framework_id: f.id.clone(),
        stream_id: f.stream.clone(),
        call: Some(c),
    }
}

/// Accepts every offer in the actions with tasks of the framework's shape;
/// returns (agent, framework index, task id) of launched tasks.
fn accept_all(
    m: &mut Master,
    now: Timestamp,
    fws: &mut [Fw],
    actions: Vec<Action>,
    launched: &mut Vec<(String, usize, String)>,
) {
    let index: std::collections::HashMap<String, usize> = fws
        .iter()
        .enumerate()
        .map(|(i, f)| (f.id.clone(), i))
        .collect();
    for a in actions {
        let Action::ToFramework { framework, event } = a else {
            continue;
        };
        let Some(pb::event::Event::Offers(o)) = event.event else {
            continue;
        };
        let fi = index[framework.as_str()];
        for offer in o.offers {
            let res = Resources::from_proto(&offer.resources).unwrap();
            let s = shape(fi);
            let mut left = res;
            let mut tasks = Vec::new();
            while left.subtract(&s) {
                fws[fi].next += 1;
                let tid = format!("t{}", fws[fi].next);
                launched.push((offer.agent_id.clone(), fi, tid.clone()));
                tasks.push(pb::TaskInfo {
                    task_id: tid,
                    resources: s.to_proto(false),
                    command: Some(pb::CommandInfo {
                        value: "true".into(),
                        shell: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            let c = call::Call::Accept(call::Accept {
                offer_ids: vec![offer.offer_id],
                operations: vec![call::Operation {
                    operation: Some(call::operation::Operation::Launch(call::Launch { tasks })),
                }],
                filters: Some(pb::Filters {
                    refuse_seconds: Some(0.0),
                }),
            });
            m.call(now, envelope(&fws[fi], c)).unwrap();
        }
    }
}

fn finish(m: &mut Master, now: Timestamp, fws: &[Fw], task: &(String, usize, String)) {
    let (agent, fi, tid) = task;
    let u = agent_message::StatusUpdate {
        framework_id: fws[*fi].id.clone(),
        status: Some(pb::TaskStatus {
            task_id: tid.clone(),
            state: pb::TaskState::TaskFinished as i32,
            uuid: vec![1; 16],
            ..Default::default()
        }),
    };
    m.agent_update(now, &agent.as_str().into(), u).unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cycles = if quick { 50 } else { 300 };
    let per_fw_per_cycle: u32 = 10;
    let base_rss = rss_bytes();

    let mut m = Master::new(MasterConfig {
        instance: "bench".into(),
        ..MasterConfig::default()
    });
    let mut now = Timestamp::from_millis(1_000_000);
    let t0 = Instant::now();
    for i in 0..AGENTS {
        register(&mut m, now, i);
    }
    let mut fws: Vec<Fw> = (0..FRAMEWORKS).map(|i| subscribe(&mut m, now, i)).collect();
    m.drain_actions();
    println!(
        "setup: {AGENTS} agents, {FRAMEWORKS} frameworks in {:?}",
        t0.elapsed()
    );

    // Fill the cluster to about 60% so cycles run on a busy cluster.
    let mut running: Vec<(String, usize, String)> = Vec::new();
    let fill_target = (AGENTS as f64 * 16.0 * 0.6) as usize;
    while running.len() < fill_target * 2 / 3 {
        for (i, f) in fws.iter().enumerate() {
            let ask = pb::Ask {
                priority_class: if i.is_multiple_of(4) {
                    "service".into()
                } else {
                    "batch".into()
                },
                resources: shape(i).to_proto(false),
                count: 500,
                ..Default::default()
            };
            m.call(
                now,
                envelope(f, call::Call::Demand(call::Demand { asks: vec![ask] })),
            )
            .unwrap();
        }
        m.allocate_now(now);
        let actions = m.drain_actions();
        accept_all(&mut m, now, &mut fws, actions, &mut running);
        m.drain_actions();
        now += Duration::from_millis(1_000);
    }
    println!("filled: {} tasks running", running.len());

    let mut times = Vec::with_capacity(cycles);
    let mut placements = 0usize;
    let mut offers = 0usize;
    let mut busy = Duration::ZERO;
    let mut seed = 12345u64;
    let mut warmup = 3;
    for _ in 0..cycles + warmup {
        now += Duration::from_millis(100);
        // New demand from every framework.
        for (i, f) in fws.iter().enumerate() {
            let ask = pb::Ask {
                priority_class: if i.is_multiple_of(4) {
                    "service".into()
                } else {
                    "batch".into()
                },
                resources: shape(i).to_proto(false),
                count: per_fw_per_cycle,
                ..Default::default()
            };
            m.call(
                now,
                envelope(f, call::Call::Demand(call::Demand { asks: vec![ask] })),
            )
            .unwrap();
        }
        m.drain_actions();
        let started = Instant::now();
        let stats = m.allocate_now(now);
        let took = started.elapsed();
        if warmup > 0 {
            // The first cycles after the fill pay for freeing the fill's
            // 100,000 launches (malloc consolidation); they are not measured.
            warmup -= 1;
        } else {
            times.push(took);
            busy += took;
            placements += stats.placements;
            offers += stats.offers;
        }
        let actions = m.drain_actions();
        accept_all(&mut m, now, &mut fws, actions, &mut running);
        m.drain_actions();
        // About as many tasks finish as were placed, at random.
        for _ in 0..stats.placements.max(1) {
            if running.is_empty() {
                break;
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let k = (seed % running.len() as u64) as usize;
            let t = running.swap_remove(k);
            finish(&mut m, now, &fws, &t);
        }
        m.drain_actions();
    }
    let mut slowest: Vec<(usize, Duration)> = times.iter().copied().enumerate().collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.1));
    println!(
        "  slowest cycles (index, ms): {:?}",
        slowest
            .iter()
            .take(5)
            .map(|(i, d)| (*i, d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
    );
    times.sort();
    let rate = placements as f64 / busy.as_secs_f64();
    println!(
        "allocator: {cycles} cycles at {AGENTS} agents x {FRAMEWORKS} frameworks, {placements} placements, {offers} offers"
    );
    println!("  placements/s (within cycles): {rate:.0}   (floor: 20,000)");
    println!(
        "  cycle p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms   (floor: p99 <= 20 ms)",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3
    );

    // Memory: grow to 100,000 tasks and read this process's RSS.
    while running.len() < 100_000 {
        for (i, f) in fws.iter().enumerate() {
            let ask = pb::Ask {
                priority_class: "batch".into(),
                resources: Resources::new(0.1, 64.0).to_proto(false),
                count: 200,
                ..Default::default()
            };
            let _ = i;
            m.call(
                now,
                envelope(f, call::Call::Demand(call::Demand { asks: vec![ask] })),
            )
            .unwrap();
        }
        m.allocate_now(now);
        let actions = m.drain_actions();
        let before = running.len();
        accept_all(&mut m, now, &mut fws, actions, &mut running);
        m.drain_actions();
        now += Duration::from_millis(1_000);
        if running.len() == before {
            break;
        }
    }
    let rss = rss_bytes();
    println!(
        "memory: master holding {AGENTS} agents and {} tasks: process RSS {:.0} MiB (before the master: {:.0} MiB)   (floor: <= 1 GiB)",
        running.len(),
        rss as f64 / 1048576.0,
        base_rss as f64 / 1048576.0
    );
}
