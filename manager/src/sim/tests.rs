//! Deterministic simulation runs. `STRATA_SIM_SEED=N` replays one seed;
//! `STRATA_SIM_SEEDS=N` runs more seeds.

use super::*;

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("STRATA_SIM_SEED") {
        return vec![s.parse().expect("STRATA_SIM_SEED is a number")];
    }
    let n: u64 = std::env::var("STRATA_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    (1..=n).collect()
}

#[test]
fn thousand_agents_with_faults_lose_nothing() {
    for seed in seeds() {
        let cfg = SimConfig {
            seed,
            demand_per_framework: 1_000,
            ..SimConfig::default()
        };
        let report = Sim::new(cfg)
            .and_then(Sim::run)
            .unwrap_or_else(|e| panic!("{e}\nreplay with STRATA_SIM_SEED={seed}"));
        eprintln!("seed {seed}: {report:?}");
        assert!(
            report.launched > 5_000,
            "seed {seed}: too little work: {report:?}"
        );
        assert!(
            report.agent_faults > 20,
            "seed {seed}: too few faults: {report:?}"
        );
        assert!(
            report.framework_faults > 0,
            "seed {seed}: no framework failover: {report:?}"
        );
    }
}

#[test]
fn same_seed_same_run() {
    let cfg = SimConfig {
        seed: 42,
        agents: 100,
        steps: 300,
        ..SimConfig::default()
    };
    let a = Sim::new(cfg.clone()).and_then(Sim::run).unwrap();
    let b = Sim::new(cfg).and_then(Sim::run).unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[test]
fn leader_failovers_and_store_outages_lose_nothing_and_launch_nothing_twice() {
    let (mut failovers, mut refused) = (0, 0);
    for seed in seeds() {
        let cfg = SimConfig {
            seed,
            agents: 200,
            steps: 1_500,
            demand_per_framework: 300,
            leader_fault_rate: 0.005,
            store_fault_rate: 0.01,
            ..SimConfig::default()
        };
        let report = Sim::new(cfg)
            .and_then(Sim::run)
            .unwrap_or_else(|e| panic!("{e}\nreplay with STRATA_SIM_SEED={seed}"));
        eprintln!("seed {seed}: {report:?}");
        assert!(
            report.launched > 1_000,
            "seed {seed}: too little work: {report:?}"
        );
        failovers += report.failovers;
        refused += report.rounds_refused;
    }
    // The faults happened (in some seed: a run may draw none of either).
    assert!(failovers > 0, "no failover in any seed");
    assert!(refused > 0, "no write refused in any seed");
}
