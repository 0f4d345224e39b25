//! Co-location in the simulator: a mixed workload of services and batch
//! jobs on one shared pool of agents, against two separate pools (one
//! running only the services, one only the batch jobs) sized for the same
//! service health and batch completion times. The figure is the agents
//! sharing saves (Borg reports 20–30 %).
//!
//! Everything runs on the real sans-IO [`Master`](crate::master::Master),
//! driven in simulated time (1 s steps by default) and deterministic from
//! the workload's seed:
//!
//! * a **service framework** (class `service`) keeps each app at the
//!   instance count its diurnal curve wants ([`workload::App::wanted`]):
//!   it declares demand for missing instances, launches them on the offers
//!   the allocator shapes, and kills its newest instances to scale down;
//! * a **batch framework** (class `batch`) submits jobs as they arrive
//!   (Poisson), declares demand for its waiting tasks, runs the oldest
//!   job's first, and re-queues a task killed by preemption (its work is
//!   lost: it runs again from zero);
//! * **agents** of one shape run the tasks: a batch task ends after its
//!   duration, a service instance runs until killed; a preempted victim
//!   exits after the preemption grace (by default the whole grace, the
//!   worst case for the service waiting on it) and reports `TASK_KILLED`
//!   with `REASON_PREEMPTED`.
//!
//! In a shared pool the master preempts batch tasks for service instances
//! that fit nowhere; in separate pools each master sees one framework.
//! [`run`] measures service health (wanted instance-seconds running; time
//! from an instance wanted to running), batch completion (mean and p95 job
//! completion time) and utilisation; [`sizing::size`] searches the agent
//! counts.
//!
//! The service framework asks for the instance that has waited longest
//! first (then the largest shape): the allocator serves a framework's asks
//! in the order declared, so room a preemption frees goes to the instance
//! it was freed for, not to one wanted later.
//!
//! What the figure depends on: the services' diurnal amplitude (flat
//! services save nothing here), how the batch load lines up with the
//! services' day (constant by default; batch arriving mostly in the
//! services' trough saves much more), how much slack the batch pool needs
//! for its completion target, and the shared pool's batch criterion (mean
//! *and* p95 completion time no worse than the separate pool's: the p95
//! binds, since jobs arriving at the services' peak wait longer).
//!
//! **Revocable capacity** ([`ColoConfig::revocable`]): services reserve
//! for their spikes and use less (each app a mean fraction of its cpus,
//! [`WorkloadConfig::service_usage`], swinging around it). With lending
//! on, agents report every task's use, the master lends the idle part of
//! the services' cpus, and the batch framework runs tasks on it (with
//! regular memory) when regular room is short; a task whose lender needs
//! its cpus back is revoked and runs again. This is the reason the Borg
//! paper gives for its figure. Off, services still use less than they
//! hold but nobody borrows it.
//!
//! What the model leaves out: failures and the headroom kept for them, placement
//! constraints, machines of several shapes, the autoscaler's lag (wanted
//! counts are known exactly, every step), interference between co-located
//! tasks, and the wall-clock cost of the manager (a cycle every step,
//! instantly).

mod cluster;
mod frameworks;
pub mod sizing;
pub mod workload;

use std::fmt;
use std::time::Duration;

use strata_proto::pb;
use strata_proto::resources::Resources;

use crate::master::{Action, RevocableConfig, Timestamp};
use crate::sim::SimFailure;
use cluster::Cluster;
use frameworks::{BatchFw, Handle, ServiceFw, subscribe_request};
pub use sizing::{Sizing, Targets, Trial, size, size_shared};
pub use workload::{Workload, WorkloadConfig};

/// How the simulation runs (as opposed to what it runs: the [`Workload`]).
#[derive(Clone, Debug)]
pub struct ColoConfig {
    /// What every agent advertises.
    pub agent: Resources,
    /// The simulated time step in milliseconds (one allocation cycle each).
    pub step_ms: u64,
    /// The master's preemption grace period in milliseconds.
    pub preemption_grace_ms: u64,
    /// How long a preempted victim takes to exit after SIGTERM; `None`: it
    /// uses the whole grace period (the worst case for the preemptor).
    pub victim_exit_ms: Option<u64>,
    /// From launch to `TASK_RUNNING`, in milliseconds.
    pub start_ms: u64,
    /// Check the master's accounting invariants after every step.
    pub check_invariants: bool,
    /// In a shared pool, whether the master lends the cpus services hold
    /// but leave idle and the batch framework accepts them (revocable
    /// capacity): agents report what each task uses every
    /// [`usage_interval_ms`](Self::usage_interval_ms).
    pub revocable: bool,
    /// How often agents report use, in milliseconds (with `revocable`).
    pub usage_interval_ms: u64,
    /// The master's lending window (its `--revocable-window`): a task lends
    /// what it left idle at its peak over this long.
    pub revocable_window_ms: u64,
}

impl Default for ColoConfig {
    fn default() -> Self {
        ColoConfig {
            agent: Resources::new(16.0, 64.0 * 1024.0),
            step_ms: 1_000,
            preemption_grace_ms: 5_000,
            victim_exit_ms: None,
            start_ms: 1_000,
            check_invariants: true,
            revocable: false,
            usage_interval_ms: 5_000,
            revocable_window_ms: RevocableConfig::default().window.as_millis() as u64,
        }
    }
}

/// The pools a workload runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pools {
    /// One pool of this many agents running services and batch together.
    Shared(usize),
    /// Two independent clusters, one running only the services, one only
    /// the batch jobs.
    Separate {
        /// Agents of the services' pool.
        service: usize,
        /// Agents of the batch pool.
        batch: usize,
    },
    /// The services alone on this many agents (half of a separate setup).
    ServicesOnly(usize),
    /// The batch jobs alone on this many agents (half of a separate setup).
    BatchOnly(usize),
}

impl Pools {
    /// The agents in all.
    pub fn agents(&self) -> usize {
        match *self {
            Pools::Shared(n) | Pools::ServicesOnly(n) | Pools::BatchOnly(n) => n,
            Pools::Separate { service, batch } => service + batch,
        }
    }
}

impl fmt::Display for Pools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Pools::Shared(n) => write!(f, "shared {n}"),
            Pools::Separate { service, batch } => {
                write!(f, "separate {service}+{batch}={}", service + batch)
            }
            Pools::ServicesOnly(n) => write!(f, "services {n}"),
            Pools::BatchOnly(n) => write!(f, "batch {n}"),
        }
    }
}

/// Service health over the measured window.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceFigures {
    /// Instance-seconds wanted.
    pub wanted_instance_s: f64,
    /// Instance-seconds wanted but not running.
    pub missing_instance_s: f64,
    /// The fraction of wanted instance-seconds that ran.
    pub availability: f64,
    /// Instances wanted in the window (scale-ups), each one wait.
    pub waits: usize,
    /// Median time from an instance wanted to running, in seconds.
    pub wait_p50_s: f64,
    /// 99th percentile of that time.
    pub wait_p99_s: f64,
    /// The longest such wait (an instance still missing at the end counts
    /// until then).
    pub wait_max_s: f64,
    /// Instances that died without being scaled down (none without faults).
    pub lost: u64,
}

/// Batch completion of the jobs submitted in the measured window.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchFigures {
    /// Jobs submitted in the window.
    pub jobs: usize,
    /// Of those, jobs unfinished when the run ended (their time so far
    /// counts as their completion time).
    pub unfinished: usize,
    /// Mean job completion time (submission to last task finished), seconds.
    pub mean_jct_s: f64,
    /// 95th percentile of it.
    pub p95_jct_s: f64,
    /// The mean on an empty, unbounded cluster (each job's longest task).
    pub ideal_mean_jct_s: f64,
    /// Tasks killed by preemption (and run again).
    pub tasks_preempted: u64,
    /// Tasks on revocable cpus killed because their lenders needed them
    /// (and run again).
    pub tasks_revoked: u64,
    /// Cpu-seconds of work lost to preemption and revocation.
    pub work_lost_cpu_s: f64,
    /// The fraction of the batch work done (cpu-seconds of finished tasks,
    /// over the whole run) that ran on revocable cpus.
    pub revocable_share: f64,
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The pools it ran on.
    pub pools: Pools,
    /// Service health (absent on a batch-only pool).
    pub service: Option<ServiceFigures>,
    /// Batch completion (absent on a services-only pool).
    pub batch: Option<BatchFigures>,
    /// Mean over the window of the cpus held by tasks, as a fraction of all
    /// agents' cpus.
    pub cpu_utilisation: f64,
    /// The same for memory.
    pub mem_utilisation: f64,
    /// Simulated steps run (all pools).
    pub steps: u64,
}

/// Runs `workload` on `pools`.
pub fn run(workload: &Workload, cfg: &ColoConfig, pools: Pools) -> Result<Outcome, SimFailure> {
    match pools {
        Pools::Shared(n) => run_pool(workload, cfg, pools, n, true, true),
        Pools::ServicesOnly(n) => run_pool(workload, cfg, pools, n, true, false),
        Pools::BatchOnly(n) => run_pool(workload, cfg, pools, n, false, true),
        Pools::Separate { service, batch } => {
            let s = run_pool(
                workload,
                cfg,
                Pools::ServicesOnly(service),
                service,
                true,
                false,
            )?;
            let b = run_pool(workload, cfg, Pools::BatchOnly(batch), batch, false, true)?;
            Ok(combine(&s, &b))
        }
    }
}

/// The outcome of two independent pools, one services-only and one
/// batch-only, seen as one separate setup.
pub fn combine(services: &Outcome, batch: &Outcome) -> Outcome {
    let (n1, n2) = (services.pools.agents(), batch.pools.agents());
    let total = (n1 + n2).max(1) as f64;
    let weigh = |a: f64, b: f64| (a * n1 as f64 + b * n2 as f64) / total;
    Outcome {
        pools: Pools::Separate {
            service: n1,
            batch: n2,
        },
        service: services.service.clone(),
        batch: batch.batch.clone(),
        cpu_utilisation: weigh(services.cpu_utilisation, batch.cpu_utilisation),
        mem_utilisation: weigh(services.mem_utilisation, batch.mem_utilisation),
        steps: services.steps + batch.steps,
    }
}

/// Where simulated time starts (the workload's times are offsets from it).
const BASE: Timestamp = Timestamp::from_millis(1_000_000);

/// The instant `ms` milliseconds of the run after `base`.
fn at(base: Timestamp, ms: u64) -> Timestamp {
    base + Duration::from_millis(ms)
}

/// Whole milliseconds from `earlier` to `now` (zero if `earlier` is later).
fn elapsed_ms(now: Timestamp, earlier: Timestamp) -> u64 {
    now.as_millis().saturating_sub(earlier.as_millis())
}

fn subscribe(
    c: &mut Cluster,
    now: Timestamp,
    name: &str,
    class: &str,
) -> Result<Handle, SimFailure> {
    let (id, stream) = c
        .master
        .subscribe(now, subscribe_request(name, class))
        .map_err(|e| c.fail(now, format!("subscribe refused: {e}")))?;
    Ok(Handle { id, stream })
}

/// One cluster with the frameworks it runs.
struct PoolRun {
    cluster: Cluster,
    service: Option<ServiceFw>,
    batch: Option<BatchFw>,
}

impl PoolRun {
    fn calls(&mut self, now: Timestamp, calls: Vec<pb::Call>) -> Result<(), SimFailure> {
        for c in calls {
            self.cluster
                .master
                .call(now, c)
                .map_err(|e| self.cluster.fail(now, format!("call refused: {e}")))?;
        }
        Ok(())
    }

    /// Carries out the master's actions until it has nothing more to say.
    fn deliver(&mut self, now: Timestamp) -> Result<(), SimFailure> {
        for _ in 0..64 {
            let actions = self.cluster.master.drain_actions();
            if actions.is_empty() {
                return Ok(());
            }
            for a in actions {
                match a {
                    Action::Persist(_) => {}
                    Action::ToAgent { agent, message } => {
                        self.cluster.receive(now, &agent, message);
                    }
                    Action::ToFramework { framework, event } => {
                        let calls = match (event.event, &mut self.service, &mut self.batch) {
                            (Some(pb::event::Event::Offers(o)), Some(s), _)
                                if s.handle.id == framework =>
                            {
                                s.offers(&o.offers)
                            }
                            (Some(pb::event::Event::Offers(o)), _, Some(b))
                                if b.handle.id == framework =>
                            {
                                b.offers(now, &o.offers)
                            }
                            (Some(pb::event::Event::Update(u)), Some(s), _)
                                if s.handle.id == framework =>
                            {
                                u.status.map(|st| s.update(now, &st)).unwrap_or_default()
                            }
                            (Some(pb::event::Event::Update(u)), _, Some(b))
                                if b.handle.id == framework =>
                            {
                                u.status.map(|st| b.update(now, &st)).unwrap_or_default()
                            }
                            _ => Vec::new(),
                        };
                        self.calls(now, calls)?;
                    }
                    Action::CloseStream { framework, .. } => {
                        return Err(self
                            .cluster
                            .fail(now, format!("stream of {framework} closed")));
                    }
                }
            }
        }
        Err(self
            .cluster
            .fail(now, "actions did not quiesce within 64 rounds"))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn run_pool(
    w: &Workload,
    cfg: &ColoConfig,
    pools: Pools,
    agents: usize,
    services: bool,
    batch: bool,
) -> Result<Outcome, SimFailure> {
    let mut now = BASE;
    let mut cluster = Cluster::new(cfg, agents, w.config.seed, now)?;
    let (from, to) = w.window_ms();
    let service = if services {
        let h = subscribe(&mut cluster, now, "services", "service")?;
        Some(ServiceFw::new(h, &w.apps, BASE, w.day_ms(), (from, to)))
    } else {
        None
    };
    let batch = if batch {
        let h = subscribe(&mut cluster, now, "batch", "batch")?;
        let revocable = cfg.revocable && services;
        Some(BatchFw::new(h, &w.batch_shapes, &w.jobs, BASE, revocable))
    } else {
        None
    };
    let lending = cfg.revocable && service.is_some() && batch.is_some();
    let mut r = PoolRun {
        cluster,
        service,
        batch,
    };
    r.deliver(now)?;
    let end = at(
        BASE,
        to + if r.batch.is_some() {
            w.config.drain_s * 1_000
        } else {
            0
        },
    );
    let (mut cpu_sum, mut mem_sum, mut samples) = (0.0, 0.0, 0u64);
    let mut steps = 0;
    let mut next_usage = at(now, cfg.usage_interval_ms);
    loop {
        now = at(now, cfg.step_ms);
        steps += 1;
        r.cluster.report_due(now)?;
        if lending && now >= next_usage {
            next_usage = at(next_usage, cfg.usage_interval_ms.max(1));
            r.cluster.report_usage(now)?;
        }
        r.deliver(now)?;
        if let Some(s) = &mut r.service {
            let calls = s.step(now);
            r.calls(now, calls)?;
        }
        if let Some(b) = &mut r.batch {
            let calls = b.step(now);
            r.calls(now, calls)?;
        }
        r.deliver(now)?;
        r.cluster.master.tick(now);
        r.cluster.master.allocate(now);
        r.deliver(now)?;
        if cfg.check_invariants {
            r.cluster
                .master
                .check_invariants()
                .map_err(|e| r.cluster.fail(now, e.to_string()))?;
        }
        if let Some(s) = &mut r.service {
            s.measure(now, cfg.step_ms);
        }
        if now >= at(BASE, from) && now < at(BASE, to) {
            let (used, total) = (&r.cluster.used, &r.cluster.total);
            cpu_sum += used.cpus.as_f64() / total.cpus.as_f64().max(1e-9);
            mem_sum += used.mem.as_f64() / total.mem.as_f64().max(1e-9);
            samples += 1;
        }
        let batch_done = r.batch.as_mut().is_none_or(|b| b.done_before(to));
        if (now >= at(BASE, to) && batch_done) || now >= end {
            break;
        }
    }
    let service = r.service.as_mut().map(|s| {
        s.finish(now);
        let mut waits: Vec<f64> = s.waits.iter().map(|&ms| ms as f64 / 1e3).collect();
        waits.sort_by(f64::total_cmp);
        let wanted = s.wanted_ms as f64 / 1e3;
        let missing = s.missing_ms as f64 / 1e3;
        ServiceFigures {
            wanted_instance_s: wanted,
            missing_instance_s: missing,
            availability: if wanted > 0.0 {
                1.0 - missing / wanted
            } else {
                1.0
            },
            waits: waits.len(),
            wait_p50_s: percentile(&waits, 0.50),
            wait_p99_s: percentile(&waits, 0.99),
            wait_max_s: waits.last().copied().unwrap_or(0.0),
            lost: s.lost,
        }
    });
    let batch = r.batch.as_ref().map(|b| {
        let jobs = b.completions(from, to, now);
        let mut jct: Vec<f64> = jobs.iter().map(|j| j.0 as f64 / 1e3).collect();
        jct.sort_by(f64::total_cmp);
        let n = jobs.len().max(1) as f64;
        BatchFigures {
            jobs: jobs.len(),
            unfinished: jobs.iter().filter(|j| !j.2).count(),
            mean_jct_s: jct.iter().sum::<f64>() / n,
            p95_jct_s: percentile(&jct, 0.95),
            ideal_mean_jct_s: jobs.iter().map(|j| j.1 as f64 / 1e3).sum::<f64>() / n,
            tasks_preempted: b.preempted,
            tasks_revoked: b.revoked,
            work_lost_cpu_s: b.lost_cpu_ms / 1e3,
            revocable_share: if b.done_cpu_ms > 0.0 {
                b.revocable_cpu_ms / b.done_cpu_ms
            } else {
                0.0
            },
        }
    });
    let samples = samples.max(1) as f64;
    Ok(Outcome {
        pools,
        service,
        batch,
        cpu_utilisation: cpu_sum / samples,
        mem_utilisation: mem_sum / samples,
        steps,
    })
}

#[cfg(test)]
mod tests;
