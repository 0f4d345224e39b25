//! Preemption benchmark: how long the manager takes to choose victims for a
//! pending service instance on a full cluster of 10,000 simulated agents,
//! on the real (sans-IO) master.
//!
//! Run: `cargo bench -p strata-manager --bench preemption` (add `-- --quick` for a short run).
//!
//! Ten batch frameworks fill every agent (16 cpus) with 2-cpu tasks. Then,
//! round after round, a service framework asks for one more 2-cpu
//! instance; the allocation cycle finds no room, the manager plans a
//! preemption (the measured part: candidates from every agent, victim
//! selection), the victim is reported killed, and the next cycle offers the
//! room to the service, which launches on it. The figure is the p50/p99 of
//! the decision; the floor is p99 ≤ 5 ms.

// A benchmark is a test that measures: an error it hits stops it with
// the error, as a failed assertion stops a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use strata_proto::time::Timestamp;

use strata_manager::master::{Action, Master, MasterConfig};
use strata_proto::pb::{self, agent_message, call, manager_message};
use strata_proto::resources::Resources;

const AGENTS: usize = 10_000;
const BATCH_FWS: usize = 10;

fn register(m: &mut Master, now: Timestamp, i: usize) {
    let reg = agent_message::Register {
        protocol_version: strata_proto::PROTOCOL_VERSION,
        agent_id: String::new(),
        info: Some(pb::AgentInfo {
            hostname: format!("host{i}"),
            address: format!("10.{}.{}.{}:5051", i / 65536, (i / 256) % 256, i % 256),
            resources: Resources::new(16.0, 65536.0).to_proto(false),
            attributes: vec![],
        }),
        tasks: vec![],
    };
    m.agent_register(now, reg).unwrap();
}

fn subscribe(m: &mut Master, now: Timestamp, name: &str, class: &str) -> (String, String) {
    let (id, stream) = m
        .subscribe(
            now,
            pb::SubscribeRequest {
                protocol_version: strata_proto::PROTOCOL_VERSION,
                framework: Some(pb::FrameworkInfo {
                    name: name.into(),
                    default_class: class.into(),
                    ..Default::default()
                }),
                demand: vec![],
                suppressed: true,
            },
        )
        .unwrap();
    (id.to_string(), stream.to_string())
}

fn call(m: &mut Master, now: Timestamp, fw: &(String, String), c: call::Call) {
    m.call(
        now,
        pb::Call {
            framework_id: fw.0.clone(),
            stream_id: fw.1.clone(),
            call: Some(c),
        },
    )
    .unwrap();
}

fn demand(class: &str, cpus: f64, count: u32) -> call::Call {
    call::Call::Demand(call::Demand {
        asks: vec![pb::Ask {
            priority_class: class.into(),
            resources: Resources::new(cpus, 1024.0).to_proto(false),
            count,
            ..Default::default()
        }],
    })
}

/// Launches `cpus`-sized tasks filling every offer to `fw` in `actions`.
fn launch_all(
    m: &mut Master,
    now: Timestamp,
    fw: &(String, String),
    actions: &[Action],
    cpus: f64,
    next: &mut u64,
) -> usize {
    let mut n = 0;
    for a in actions {
        let Action::ToFramework { framework, event } = a else {
            continue;
        };
        if framework.as_str() != fw.0 {
            continue;
        }
        let Some(pb::event::Event::Offers(o)) = &event.event else {
            continue;
        };
        for offer in &o.offers {
            let mut left = Resources::from_proto(&offer.resources).unwrap();
            let shape = Resources::new(cpus, 1024.0);
            let mut tasks = Vec::new();
            while left.subtract(&shape) {
                *next += 1;
                tasks.push(pb::TaskInfo {
                    task_id: format!("t{next}"),
                    resources: shape.to_proto(false),
                    command: Some(pb::CommandInfo {
                        value: "true".into(),
                        shell: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            n += tasks.len();
            let c = call::Call::Accept(call::Accept {
                offer_ids: vec![offer.offer_id.clone()],
                operations: vec![call::Operation {
                    operation: Some(call::operation::Operation::Launch(call::Launch { tasks })),
                }],
                filters: None,
            });
            call(m, now, fw, c);
        }
    }
    n
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 100 } else { 1_000 };
    let mut m = Master::new(MasterConfig {
        instance: "bench".into(),
        ..MasterConfig::default()
    });
    let mut now = Timestamp::from_millis(1_000_000);
    for i in 0..AGENTS {
        register(&mut m, now, i);
    }
    let batch: Vec<(String, String)> = (0..BATCH_FWS)
        .map(|i| subscribe(&mut m, now, &format!("batch{i}"), "batch"))
        .collect();
    let service = subscribe(&mut m, now, "services", "service");
    m.drain_actions();

    // Fill: every batch framework asks for its share of 2-cpu tasks.
    let per_fw = (AGENTS * 8 / BATCH_FWS) as u32;
    let mut next = 0u64;
    let mut running = 0usize;
    let t0 = Instant::now();
    while running < AGENTS * 8 {
        for fw in &batch {
            call(&mut m, now, fw, demand("batch", 2.0, per_fw));
        }
        m.allocate_now(now);
        let actions = m.drain_actions();
        for fw in &batch {
            running += launch_all(&mut m, now, fw, &actions, 2.0, &mut next);
        }
        m.drain_actions();
        now += Duration::from_millis(1_000);
    }
    for fw in &batch {
        call(&mut m, now, fw, call::Call::Suppress(call::Suppress {}));
    }
    m.drain_actions();
    println!(
        "filled: {AGENTS} agents × 16 cpus with {running} batch tasks in {:?}",
        t0.elapsed()
    );

    let mut decisions = Vec::with_capacity(rounds);
    let mut victims_total = 0usize;
    let mut snext = 0u64;
    for _ in 0..rounds {
        now += Duration::from_millis(100);
        call(&mut m, now, &service, demand("service", 2.0, 1));
        m.drain_actions();
        // The cycle's steps, with the preemption decision timed.
        let solution = m.solve_cycle(now);
        let unplaced = solution.unplaced.clone();
        m.offer_solution(now, solution);
        let started = Instant::now();
        let victims = m.preempt_unplaced(now, &unplaced);
        decisions.push(started.elapsed());
        victims_total += victims;
        // The victims die; the next cycle offers their room.
        for a in m.drain_actions() {
            if let Action::ToAgent {
                agent,
                message:
                    pb::ManagerMessage {
                        message: Some(manager_message::Message::KillTask(k)),
                    },
            } = a
            {
                let u = agent_message::StatusUpdate {
                    framework_id: k.framework_id.clone(),
                    status: Some(pb::TaskStatus {
                        task_id: k.task_id.clone(),
                        state: pb::TaskState::TaskKilled as i32,
                        reason: pb::Reason::Preempted as i32,
                        uuid: vec![7; 16],
                        ..Default::default()
                    }),
                };
                m.agent_update(now, &agent, u).unwrap();
            }
        }
        m.drain_actions();
        now += Duration::from_millis(100);
        m.allocate_now(now);
        let actions = m.drain_actions();
        launch_all(&mut m, now, &service, &actions, 2.0, &mut snext);
        m.drain_actions();
    }
    decisions.sort();
    let p50 = percentile(&decisions, 0.50);
    let p99 = percentile(&decisions, 0.99);
    println!(
        "preemption decision at {AGENTS} agents, {rounds} rounds: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (floor: p99 <= 5 ms: {}); {} victims, {} service instances launched",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        decisions.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        if p99 <= Duration::from_millis(5) {
            "PASS"
        } else {
            "FAIL"
        },
        victims_total,
        snext,
    );
}
