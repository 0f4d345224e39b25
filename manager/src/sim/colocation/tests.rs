//! Co-location runs on a small workload (a 1-hour simulated day, about 30
//! agents' worth of services at peak and 15 of batch).

use super::*;

#[test]
fn same_seed_same_outcome() {
    let cfg = ColoConfig::default();
    let a = run(
        &Workload::generate(WorkloadConfig::small(3)),
        &cfg,
        Pools::Shared(40),
    )
    .unwrap();
    let b = run(
        &Workload::generate(WorkloadConfig::small(3)),
        &cfg,
        Pools::Shared(40),
    )
    .unwrap();
    assert_eq!(a, b);
    let c = run(
        &Workload::generate(WorkloadConfig::small(4)),
        &cfg,
        Pools::Shared(40),
    )
    .unwrap();
    assert_ne!(a, c, "another seed gives another run");
}

#[test]
fn workload_follows_its_config() {
    let w = Workload::generate(WorkloadConfig::small(1));
    let ((peak_cpus, _), (mean_cpus, _)) = w.service_peak_and_mean();
    // Peaks at slightly different times: the sum peaks a little lower.
    assert!((430.0..=490.0).contains(&peak_cpus), "peak {peak_cpus}");
    // A cosine from 30 % to 100 %: the mean is about 65 % of the peak.
    assert!(
        (0.55..=0.75).contains(&(mean_cpus / peak_cpus)),
        "mean {mean_cpus} of peak {peak_cpus}"
    );
    let (batch_cpus, _) = w.batch_mean();
    assert!((150.0..=350.0).contains(&batch_cpus), "batch {batch_cpus}");
    assert!(
        w.jobs
            .windows(2)
            .all(|p| p[0].arrival_ms <= p[1].arrival_ms)
    );
}

/// On a shared pool big enough for the services at their peak (and too
/// small for all the batch work), batch fills what the services leave and
/// is preempted when they grow: no instance waits longer than the
/// preemption grace plus two steps.
#[test]
fn shared_pool_keeps_services_healthy_under_batch() {
    for seed in 1..=3 {
        let w = Workload::generate(WorkloadConfig::small(seed));
        let cfg = ColoConfig::default();
        let ((peak_cpus, peak_mem), _) = w.service_peak_and_mean();
        let n = ((peak_cpus / 16.0).max(peak_mem / 65_536.0) * 1.15).ceil() as usize;
        let o = run(&w, &cfg, Pools::Shared(n)).unwrap();
        let s = o.service.clone().unwrap();
        let b = o.batch.clone().unwrap();
        eprintln!("seed {seed}: {o:?}");
        assert!(b.tasks_preempted > 0, "batch was never in the way: {o:?}");
        assert!(s.waits > 50, "too few scale-ups to judge: {s:?}");
        let grace = cfg.preemption_grace_ms as f64 / 1e3;
        let bound = grace + 2.0 * cfg.step_ms as f64 / 1e3;
        // Some instance did wait for a victim to exit, and none longer.
        assert!(s.wait_max_s >= grace, "{s:?}");
        assert!(
            s.wait_max_s <= bound,
            "seed {seed}: an instance waited {} s > grace + 2 steps ({bound} s): {s:?}",
            s.wait_max_s
        );
        assert!(s.availability >= 0.999, "{s:?}");
        assert_eq!(s.lost, 0);
        // Batch used what the services left: the pool is busier than the
        // services alone would keep it.
        let alone = run(&w, &cfg, Pools::ServicesOnly(n)).unwrap();
        assert!(
            o.cpu_utilisation > alone.cpu_utilisation + 0.1,
            "shared {} vs services alone {}",
            o.cpu_utilisation,
            alone.cpu_utilisation
        );
    }
}

fn sized(w: &Workload) -> Sizing {
    let sizing = size(w, &ColoConfig::default(), &Targets::default(), |t| {
        eprintln!(
            "{:<22} meets {:<5} svc {:?} batch {:?} cpu {:.2}",
            t.outcome.pools.to_string(),
            t.meets,
            t.outcome
                .service
                .as_ref()
                .map(|s| (s.availability, s.wait_p99_s, s.wait_max_s)),
            t.outcome
                .batch
                .as_ref()
                .map(|b| (b.mean_jct_s, b.p95_jct_s, b.unfinished)),
            t.outcome.cpu_utilisation
        )
    })
    .unwrap();
    eprintln!(
        "separate {}+{} = {}, shared {}, saved {:.1} %",
        sizing.service_agents,
        sizing.batch_agents,
        sizing.separate_agents(),
        sizing.shared_agents,
        100.0 * sizing.saved()
    );
    sizing
}

/// The chosen sizes meet their targets, and one agent fewer does not.
fn check_sizing(sizing: &Sizing) {
    let targets = Targets::default();
    let svc = sizing.separate.service.as_ref().unwrap();
    let sep_batch = sizing.separate.batch.as_ref().unwrap();
    assert!(targets.services_met(svc));
    assert!(targets.batch_met(sep_batch));
    assert!(targets.services_met(sizing.shared.service.as_ref().unwrap()));
    assert!(sizing::batch_no_worse(
        sizing.shared.batch.as_ref().unwrap(),
        sep_batch
    ));
    for below in [
        Pools::ServicesOnly(sizing.service_agents - 1),
        Pools::BatchOnly(sizing.batch_agents - 1),
        Pools::Shared(sizing.shared_agents - 1),
    ] {
        let t = sizing
            .trials
            .iter()
            .find(|t| t.outcome.pools == below)
            .unwrap_or_else(|| panic!("the search did not try {below}"));
        assert!(!t.meets, "{below} meets its targets too");
    }
}

/// With diurnal services, one shared pool meets the same service targets
/// and batch completion times as two separate pools with fewer agents;
/// with flat services it saves (next to) nothing.
#[test]
fn sharing_saves_agents_when_services_follow_a_day() {
    let diurnal = sized(&Workload::generate(WorkloadConfig::small(1)));
    check_sizing(&diurnal);
    let flat = sized(&Workload::generate(WorkloadConfig {
        trough_ratio: 1.0,
        ..WorkloadConfig::small(1)
    }));
    check_sizing(&flat);
    assert!(
        diurnal.shared_agents < diurnal.separate_agents(),
        "diurnal: shared {} vs separate {}",
        diurnal.shared_agents,
        diurnal.separate_agents()
    );
    // The saving comes from the services' day: batch runs in their trough.
    assert!(
        diurnal.saved() > flat.saved() + 0.05,
        "diurnal saves {:.3}, flat {:.3}",
        diurnal.saved(),
        flat.saved()
    );
}

/// With revocable capacity, batch runs on the cpus services hold but leave
/// idle: a shared pool lends them, some batch work runs on them, borrowers
/// are revoked when services need their cpus, and service health is the
/// same as without lending. Batch finishes sooner on the same pool.
#[test]
fn lending_idle_service_cpus_speeds_batch_and_keeps_services_healthy() {
    let w = Workload::generate(WorkloadConfig::small(1));
    let ((peak_cpus, peak_mem), _) = w.service_peak_and_mean();
    let n = ((peak_cpus / 16.0).max(peak_mem / 65_536.0) * 1.15).ceil() as usize;
    let plain = ColoConfig::default();
    let lending = ColoConfig {
        revocable: true,
        ..ColoConfig::default()
    };
    let without = run(&w, &plain, Pools::Shared(n)).unwrap();
    let with = run(&w, &lending, Pools::Shared(n)).unwrap();
    let (b0, b1) = (without.batch.unwrap(), with.batch.clone().unwrap());
    let (s0, s1) = (without.service.unwrap(), with.service.unwrap());
    eprintln!("without: {b0:?} {s0:?}\nwith: {b1:?} {s1:?}");
    assert_eq!(b0.revocable_share, 0.0);
    assert_eq!(b0.tasks_revoked, 0);
    assert!(
        b1.revocable_share > 0.1,
        "little batch work on lent cpus: {b1:?}"
    );
    assert!(b1.tasks_revoked > 0, "no borrower was ever revoked: {b1:?}");
    assert!(
        b1.mean_jct_s < 0.9 * b0.mean_jct_s,
        "lending: mean JCT {} vs {} without",
        b1.mean_jct_s,
        b0.mean_jct_s
    );
    assert_eq!(b1.unfinished, 0);
    assert!(s1.availability >= 0.999, "{s1:?}");
    let bound = plain.preemption_grace_ms as f64 / 1e3 + 2.0 * plain.step_ms as f64 / 1e3;
    assert!(s1.wait_max_s <= bound, "{s1:?}");
    assert_eq!(s1.lost, 0);
}
