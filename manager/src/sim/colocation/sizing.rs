//! Sizing: the fewest agents that meet the targets, found by search.
//!
//! 1. The services' pool: the fewest agents on which the services alone
//!    meet the service targets ([`Targets::services_met`]).
//! 2. The batch pool: the fewest agents on which the batch jobs alone meet
//!    the batch target ([`Targets::batch_met`]).
//! 3. The shared pool ([`size_shared`]): the fewest agents on which both
//!    run together, the services meet the same service targets, and batch
//!    completion is no worse than on the separate batch pool of step 2:
//!    mean *and* p95 job completion time at most the batch pool's, and no
//!    job unfinished. With [`ColoConfig::revocable`] the shared pool lends
//!    idle service cpus to batch; the separate pools are the same either
//!    way (nobody there could borrow).
//!
//! Each search starts from an estimate, grows it by a quarter until the
//! target is met (or shrinks it by a quarter while it is), then bisects: it assumes
//! that more agents never make things worse, which holds for these
//! workloads up to the noise of placement. Every run is reported as a
//! [`Trial`].

use std::collections::BTreeMap;

use super::{BatchFigures, ColoConfig, Outcome, Pools, ServiceFigures, Workload, combine, run};
use crate::sim::SimFailure;

/// What the pools must achieve.
#[derive(Clone, Debug)]
pub struct Targets {
    /// The least fraction of wanted service instance-seconds running.
    pub availability: f64,
    /// The longest p99 time from a service instance wanted to running, in
    /// seconds. It must allow the preemption grace: in a shared pool an
    /// instance often waits for a victim to exit.
    pub wait_p99_s: f64,
    /// On the batch pool, the longest mean job completion time as a
    /// multiple of the ideal mean (each job's longest task).
    pub batch_mean_factor: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            availability: 0.999,
            wait_p99_s: 10.0,
            batch_mean_factor: 1.5,
        }
    }
}

impl Targets {
    /// Whether service health meets the targets.
    pub fn services_met(&self, s: &ServiceFigures) -> bool {
        s.availability >= self.availability && s.wait_p99_s <= self.wait_p99_s
    }

    /// Whether batch completion meets the target of the batch pool.
    pub fn batch_met(&self, b: &BatchFigures) -> bool {
        b.unfinished == 0 && b.mean_jct_s <= self.batch_mean_factor * b.ideal_mean_jct_s
    }
}

/// Whether `b` is no worse than `reference`: no job unfinished, mean and
/// p95 completion times at most the reference's.
pub fn batch_no_worse(b: &BatchFigures, reference: &BatchFigures) -> bool {
    b.unfinished == 0 && b.mean_jct_s <= reference.mean_jct_s && b.p95_jct_s <= reference.p95_jct_s
}

/// One run of the search.
#[derive(Clone, Debug)]
pub struct Trial {
    /// What it measured.
    pub outcome: Outcome,
    /// Whether it met its search's targets.
    pub meets: bool,
}

/// The result of the search.
#[derive(Clone, Debug)]
pub struct Sizing {
    /// Agents of the separate services' pool.
    pub service_agents: usize,
    /// Agents of the separate batch pool.
    pub batch_agents: usize,
    /// Agents of the shared pool.
    pub shared_agents: usize,
    /// The separate pools' outcome at those sizes.
    pub separate: Outcome,
    /// The shared pool's outcome at its size.
    pub shared: Outcome,
    /// Every run, in order.
    pub trials: Vec<Trial>,
}

impl Sizing {
    /// Agents of both separate pools.
    pub fn separate_agents(&self) -> usize {
        self.service_agents + self.batch_agents
    }

    /// The fraction of the separate pools' agents that sharing saves
    /// (negative if sharing needs more).
    pub fn saved(&self) -> f64 {
        let sep = self.separate_agents() as f64;
        (sep - self.shared_agents as f64) / sep.max(1.0)
    }
}

/// The fewest `n` for which `test` holds, starting from the estimate `guess`.
fn smallest(
    guess: usize,
    mut test: impl FnMut(usize) -> Result<bool, SimFailure>,
) -> Result<usize, SimFailure> {
    let mut known: BTreeMap<usize, bool> = BTreeMap::new();
    let mut probe = |n: usize, known: &mut BTreeMap<usize, bool>| -> Result<bool, SimFailure> {
        if let Some(&m) = known.get(&n) {
            return Ok(m);
        }
        let m = test(n)?;
        known.insert(n, m);
        Ok(m)
    };
    let mut n = guess.max(1);
    // `good` meets, `bad` does not (0 agents never meet).
    let (mut bad, mut good) = if probe(n, &mut known)? {
        let mut good = n;
        loop {
            let lower = good / 2 + good / 4; // three quarters
            if lower == 0 || lower == good {
                break (0, good);
            }
            if probe(lower, &mut known)? {
                good = lower;
            } else {
                break (lower, good);
            }
        }
    } else {
        loop {
            let bad = n;
            n += (n / 4).max(1);
            if probe(n, &mut known)? {
                break (bad, n);
            }
        }
    };
    while good - bad > 1 {
        let mid = bad + (good - bad) / 2;
        if probe(mid, &mut known)? {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(good)
}

/// Sizes the separate pools and the shared pool for `workload`, reporting
/// each run to `on_trial` as it ends.
pub fn size(
    workload: &Workload,
    cfg: &ColoConfig,
    targets: &Targets,
    mut on_trial: impl FnMut(&Trial),
) -> Result<Sizing, SimFailure> {
    let mut trials: Vec<Trial> = Vec::new();
    let mut record = |outcome: Outcome, meets: bool, trials: &mut Vec<Trial>| {
        let t = Trial { outcome, meets };
        on_trial(&t);
        trials.push(t);
    };
    let cpus = cfg.agent.cpus.as_f64();
    let mem = cfg.agent.mem.as_f64();
    let (peak, _) = workload.service_peak_and_mean();
    let batch = workload.batch_mean();
    let agents_for = |c: f64, m: f64| (c / cpus).max(m / mem);

    let mut outcomes: BTreeMap<Pools, Outcome> = BTreeMap::new();
    let guess = (agents_for(peak.0, peak.1) * 1.05).ceil() as usize;
    let service_agents = smallest(guess, |n| {
        let o = run(workload, cfg, Pools::ServicesOnly(n))?;
        let meets = o.service.as_ref().is_some_and(|s| targets.services_met(s));
        outcomes.insert(o.pools, o.clone());
        record(o, meets, &mut trials);
        Ok(meets)
    })?;
    let guess = (agents_for(batch.0, batch.1) / 0.8).ceil() as usize;
    let batch_agents = smallest(guess, |n| {
        let o = run(workload, cfg, Pools::BatchOnly(n))?;
        let meets = o.batch.as_ref().is_some_and(|b| targets.batch_met(b));
        outcomes.insert(o.pools, o.clone());
        record(o, meets, &mut trials);
        Ok(meets)
    })?;
    let separate = combine(
        &outcomes[&Pools::ServicesOnly(service_agents)],
        &outcomes[&Pools::BatchOnly(batch_agents)],
    );
    let shared = size_shared(workload, cfg, targets, &separate, |t| {
        on_trial(t);
        trials.push(t.clone());
    })?;
    Ok(Sizing {
        service_agents,
        batch_agents,
        shared_agents: shared.pools.agents(),
        separate,
        shared,
        trials,
    })
}

/// Sizes the shared pool alone against the `separate` pools already sized
/// (their services' pool is the least it may have; their batch figures are
/// the reference), reporting each run to `on_trial`; returns the chosen
/// run's outcome.
pub fn size_shared(
    workload: &Workload,
    cfg: &ColoConfig,
    targets: &Targets,
    separate: &Outcome,
    mut on_trial: impl FnMut(&Trial),
) -> Result<Outcome, SimFailure> {
    let Pools::Separate {
        service: service_agents,
        ..
    } = separate.pools
    else {
        panic!("size_shared needs the outcome of separate pools");
    };
    let reference = separate.batch.clone().expect("batch figures");
    let (cpus, mem) = (cfg.agent.cpus.as_f64(), cfg.agent.mem.as_f64());
    let (_, mean) = workload.service_peak_and_mean();
    let batch = workload.batch_mean();
    let guess = (((mean.0 + batch.0) / cpus).max((mean.1 + batch.1) / mem) / 0.85).ceil() as usize;
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    let shared_agents = smallest(guess.max(service_agents), |n| {
        let o = run(workload, cfg, Pools::Shared(n))?;
        let meets = o.service.as_ref().is_some_and(|s| targets.services_met(s))
            && o.batch
                .as_ref()
                .is_some_and(|b| batch_no_worse(b, &reference));
        on_trial(&Trial {
            outcome: o.clone(),
            meets,
        });
        outcomes.insert(n, o);
        Ok(meets)
    })?;
    Ok(outcomes
        .remove(&shared_agents)
        .expect("the chosen size ran"))
}
