//! Co-location benchmark: the agents a shared pool saves over two separate
//! pools (services, batch) sized for the same service health and batch
//! completion times, in the simulator on the real (sans-IO) master.
//!
//! Run: `cargo bench -p strata-manager --bench colocation`. Arguments
//! (after `--`): `--quick` for a tiny workload, `--seed N` for another
//! workload, `--day SECONDS` to shorten the simulated day, `--variants` for
//! the sensitivity table instead (one sizing per variant of the workload,
//! on a 4-hour day unless `--day` says otherwise). For exploring:
//! `--lend-at N` runs one shared pool of N agents with lending;
//! `--usage-swing F`, `--usage-min F --usage-max F` and
//! `--revocable-window SECONDS` change the services' use and the lending.
//!
//! The workload (`WorkloadConfig::default`): 12 service apps whose wanted
//! instances follow a cosine over a 24-hour day (trough 30 % of peak,
//! peaks within ±2 h of each other), about 2,400 cpus at peak; and Poisson
//! batch jobs of 1–100 tasks of 1–20 minutes, about 1,200 cpus of work on
//! average. Agents have 16 cpus and 64 GiB. The search finds the fewest
//! agents for the services alone (≥ 99.9 % of wanted instance-seconds
//! running, p99 wait for a new instance ≤ 10 s), for the batch alone (mean
//! job completion ≤ 1.5 × ideal), and for both shared (the same service
//! targets; batch mean and p95 completion no worse than the separate batch
//! pool's). Then it sizes the shared pool again with revocable capacity
//! on: services use 30–70 % of the cpus they hold (per app, swinging ±30 %
//! around that), the master lends the idle part and batch runs on it.
//! Every run is printed.

// A benchmark is a test that measures: an error it hits stops it with
// the error, as a failed assertion stops a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use strata_manager::sim::colocation::{
    ColoConfig, Outcome, Pools, Sizing, Targets, Workload, WorkloadConfig, run, size, size_shared,
};

fn row(label: &str, o: &Outcome, meets: Option<bool>) {
    let svc = o.service.as_ref().map_or_else(
        || format!("{:>8} {:>17}", "-", "-"),
        |s| {
            format!(
                "{:>7.3}% {:>5.1}/{:>5.1}/{:>5.1}",
                100.0 * s.availability,
                s.wait_p50_s,
                s.wait_p99_s,
                s.wait_max_s
            )
        },
    );
    let batch = o.batch.as_ref().map_or_else(
        || {
            format!(
                "{:>13} {:>5} {:>7} {:>6} {:>8} {:>5}",
                "-", "-", "-", "-", "-", "-"
            )
        },
        |b| {
            format!(
                "{:>6.0}/{:>6.0} {:>5} {:>7} {:>6} {:>8.1} {:>4.0}%",
                b.mean_jct_s,
                b.p95_jct_s,
                b.unfinished,
                b.tasks_preempted,
                b.tasks_revoked,
                b.work_lost_cpu_s / 3_600.0,
                100.0 * b.revocable_share
            )
        },
    );
    let meets = match meets {
        Some(true) => "yes",
        Some(false) => "no",
        None => "",
    };
    println!(
        "{label:<24} {meets:>5} {svc} {batch} {:>5.1}% {:>5.1}%",
        100.0 * o.cpu_utilisation,
        100.0 * o.mem_utilisation
    );
}

fn header() {
    println!(
        "{:<24} {:>5} {:>8} {:>17} {:>13} {:>5} {:>7} {:>6} {:>8} {:>5} {:>6} {:>6}",
        "pools (agents)",
        "meets",
        "svc up",
        "wait p50/p99/max",
        "JCT mean/p95",
        "unfin",
        "preempt",
        "revoke",
        "lost cpu-h",
        "lent",
        "cpu",
        "mem"
    );
}

fn describe(w: &Workload, cfg: &ColoConfig) {
    let wc = &w.config;
    let ((peak_cpus, peak_mem), (mean_cpus, mean_mem)) = w.service_peak_and_mean();
    let (batch_cpus, batch_mem) = w.batch_mean();
    println!(
        "workload (seed {}): {} apps, services {:.0} cpus / {:.0} GiB at peak, {:.0} cpus / {:.0} GiB mean \
         (trough {:.0} % of peak, phases ±{:.1} h); batch {:.0} cpus / {:.0} GiB mean (swing {:.0} %), {} jobs, {} tasks; \
         services use {:.0}–{:.0} % of their cpus (±{:.0} %), {:.0} cpus mean; \
         day {} s, warm-up {} s, drain ≤ {} s; agents {} cpus / {:.0} GiB; grace {} s",
        wc.seed,
        w.apps.len(),
        peak_cpus,
        peak_mem / 1024.0,
        mean_cpus,
        mean_mem / 1024.0,
        100.0 * wc.trough_ratio,
        wc.phase_spread * wc.day_s as f64 / 3_600.0,
        batch_cpus,
        batch_mem / 1024.0,
        100.0 * wc.batch_swing,
        w.jobs.len(),
        w.jobs.iter().map(|j| j.task_ms.len()).sum::<usize>(),
        100.0 * wc.service_usage.0,
        100.0 * wc.service_usage.1,
        100.0 * wc.usage_swing,
        w.service_mean_used_cpus(),
        wc.day_s,
        wc.warmup_s,
        wc.drain_s,
        cfg.agent.cpus.as_f64(),
        cfg.agent.mem.as_f64() / 1024.0,
        cfg.preemption_grace_ms / 1_000,
    );
}

fn describe_targets(targets: &Targets) {
    println!(
        "targets: services >= {:.1} % of wanted instance-seconds running and p99 wait <= {} s; \
         batch pool mean JCT <= {} x ideal; shared: the same service targets, batch mean and p95 JCT <= the batch pool's",
        100.0 * targets.availability,
        targets.wait_p99_s,
        targets.batch_mean_factor
    );
}

fn summary(sizing: &Sizing, lending: Option<&Outcome>) -> String {
    let sep = sizing.separate_agents();
    let saved = |shared: usize| {
        format!(
            "saved {} agents = {:.1} %",
            sep as i64 - shared as i64,
            100.0 * (sep as f64 - shared as f64) / sep.max(1) as f64
        )
    };
    let mut s = format!(
        "separate {} + {} = {sep}, shared {}: {}",
        sizing.service_agents,
        sizing.batch_agents,
        sizing.shared_agents,
        saved(sizing.shared_agents),
    );
    if let Some(o) = lending {
        let n = o.pools.agents();
        s += &format!("; shared with revocable capacity {n}: {}", saved(n));
    }
    s
}

/// The configuration with revocable capacity on.
fn lending(cfg: &ColoConfig) -> ColoConfig {
    ColoConfig {
        revocable: true,
        ..cfg.clone()
    }
}

/// One sizing per variant of the workload, one line each.
fn variants(base: &WorkloadConfig, cfg: &ColoConfig, targets: &Targets) {
    type Tweak = fn(&mut WorkloadConfig, &mut Targets);
    let list: [(&str, Tweak); 11] = [
        ("baseline", |_, _| {}),
        ("seed + 1", |w, _| w.seed += 1),
        ("seed + 2", |w, _| w.seed += 2),
        ("flat services (trough 100 %)", |w, _| w.trough_ratio = 1.0),
        ("milder day (trough 60 %)", |w, _| w.trough_ratio = 0.6),
        ("deeper day (trough 15 %)", |w, _| w.trough_ratio = 0.15),
        ("app phases spread over the day", |w, _| {
            w.phase_spread = 0.5
        }),
        ("batch arrivals ±50 %, peak at trough", |w, _| {
            w.batch_swing = 0.5;
            w.batch_peak_at = 0.0;
        }),
        ("stricter batch pool (mean 1.2 x)", |_, t| {
            t.batch_mean_factor = 1.2
        }),
        ("busier services (use 60–100 %)", |w, _| {
            w.service_usage = (0.6, 1.0)
        }),
        ("steady use (no swing)", |w, _| w.usage_swing = 0.0),
    ];
    println!(
        "{:<38} {:>9} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8} {:>6}",
        "variant", "services", "batch", "separate", "shared", "saved", "+lending", "saved", "time"
    );
    for (name, tweak) in list {
        let mut wc = base.clone();
        let mut t = targets.clone();
        tweak(&mut wc, &mut t);
        let w = Workload::generate(wc);
        let started = Instant::now();
        let sizing = size(&w, cfg, &t, |_| {}).unwrap_or_else(|e| panic!("{e}"));
        let lent = size_shared(&w, &lending(cfg), &t, &sizing.separate, |_| {})
            .unwrap_or_else(|e| panic!("{e}"))
            .pools
            .agents();
        let sep = sizing.separate_agents() as f64;
        println!(
            "{name:<38} {:>9} {:>9} {:>9} {:>7} {:>7.1}% {:>8} {:>7.1}% {:>5.0}s",
            sizing.service_agents,
            sizing.batch_agents,
            sizing.separate_agents(),
            sizing.shared_agents,
            100.0 * sizing.saved(),
            lent,
            100.0 * (sep - lent as f64) / sep.max(1.0),
            started.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| -> Option<u64> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok())
    };
    let quick = args.iter().any(|a| a == "--quick");
    let seed = value("--seed").unwrap_or(1);
    let fraction = |name: &str| -> Option<f64> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok())
    };
    let mut wcfg = if quick {
        WorkloadConfig::small(seed)
    } else {
        WorkloadConfig {
            seed,
            ..WorkloadConfig::default()
        }
    };
    if let Some(swing) = fraction("--usage-swing") {
        wcfg.usage_swing = swing;
    }
    if let (Some(lo), Some(hi)) = (fraction("--usage-min"), fraction("--usage-max")) {
        wcfg.service_usage = (lo, hi);
    }
    let mut cfg = ColoConfig {
        // Checked in the tests; the benchmark runs many long simulations.
        check_invariants: false,
        ..ColoConfig::default()
    };
    if let Some(secs) = value("--revocable-window") {
        cfg.revocable_window_ms = secs * 1_000;
    }
    if let Some(n) = value("--lend-at") {
        // One shared run with lending at this size (for exploring).
        let w = Workload::generate(wcfg);
        describe(&w, &cfg);
        header();
        let o =
            run(&w, &lending(&cfg), Pools::Shared(n as usize)).unwrap_or_else(|e| panic!("{e}"));
        row(&format!("{} +lending", o.pools), &o, None);
        return;
    }
    let targets = Targets::default();
    if args.iter().any(|a| a == "--variants") {
        wcfg.day_s = value("--day").unwrap_or(if quick { wcfg.day_s } else { 4 * 3_600 });
        wcfg.warmup_s = wcfg.warmup_s.min(wcfg.day_s / 8);
        wcfg.drain_s = wcfg.drain_s.min(wcfg.day_s / 4);
        describe(&Workload::generate(wcfg.clone()), &cfg);
        describe_targets(&targets);
        println!();
        variants(&wcfg, &cfg, &targets);
        return;
    }
    if let Some(day) = value("--day") {
        wcfg.day_s = day;
        wcfg.warmup_s = wcfg.warmup_s.min(day / 8);
        wcfg.drain_s = wcfg.drain_s.min(day / 4);
    }
    let w = Workload::generate(wcfg);
    describe(&w, &cfg);
    describe_targets(&targets);
    println!();
    header();
    let started = Instant::now();
    let sizing = size(&w, &cfg, &targets, |t| {
        row(&t.outcome.pools.to_string(), &t.outcome, Some(t.meets));
    })
    .unwrap_or_else(|e| panic!("{e}"));
    println!();
    println!("the shared pool again, with revocable capacity:");
    header();
    let (mut runs, mut steps) = (sizing.trials.len(), 0);
    steps += sizing.trials.iter().map(|t| t.outcome.steps).sum::<u64>();
    let lent = size_shared(&w, &lending(&cfg), &targets, &sizing.separate, |t| {
        runs += 1;
        steps += t.outcome.steps;
        row(
            &format!("{} +lending", t.outcome.pools),
            &t.outcome,
            Some(t.meets),
        );
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let elapsed = started.elapsed();
    println!();
    println!("chosen:");
    header();
    row(&sizing.separate.pools.to_string(), &sizing.separate, None);
    row(&sizing.shared.pools.to_string(), &sizing.shared, None);
    row(&format!("{} +lending", lent.pools), &lent, None);
    println!();
    println!(
        "agents: {} ({runs} runs, {steps} simulated steps, {:.1} s)",
        summary(&sizing, Some(&lent)),
        elapsed.as_secs_f64()
    );
}
