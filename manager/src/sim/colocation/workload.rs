//! The mixed workload: service apps whose wanted instance counts follow a
//! diurnal curve, and batch jobs arriving over time. Generated from a seed;
//! the same [`WorkloadConfig`] always gives the same [`Workload`].

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_proto::resources::Resources;

/// MiB in a GiB.
const GIB: f64 = 1024.0;

/// How a workload is generated.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// The seed; the same seed gives the same workload.
    pub seed: u64,
    /// Length of one diurnal period (a simulated "day") in seconds. The
    /// measured window is one whole period.
    pub day_s: u64,
    /// Simulated seconds before the measured window (the batch backlog
    /// reaches its steady state; initial service launches are not counted).
    pub warmup_s: u64,
    /// The longest the run goes on after the window for the measured batch
    /// jobs to finish (jobs keep arriving meanwhile); jobs still unfinished
    /// then count as unfinished.
    pub drain_s: u64,
    /// Number of service apps.
    pub apps: usize,
    /// The sum over apps of peak instances × cpus per instance.
    pub service_peak_cpus: f64,
    /// An app's trough instance count as a fraction of its peak (1.0: flat).
    pub trough_ratio: f64,
    /// Apps peak at mid-day ± up to this fraction of a day (0.0: all
    /// together; 0.5: phases spread over the whole day).
    pub phase_spread: f64,
    /// Mean cpus the arriving batch work needs (the offered batch load):
    /// arrival rate × mean cpu-seconds per job.
    pub batch_mean_cpus: f64,
    /// How much the batch arrival rate swings over the day: the rate is its
    /// mean × (1 + swing × cos), highest at [`batch_peak_at`](Self::batch_peak_at).
    /// 0.0: constant.
    pub batch_swing: f64,
    /// When in the day batch arrivals peak, as a fraction of the day (0.0 is
    /// when the services are at their trough).
    pub batch_peak_at: f64,
    /// Tasks per job, drawn log-uniformly from this range (inclusive).
    pub job_tasks: (u32, u32),
    /// A job's mean task duration in seconds, drawn log-uniformly from this
    /// range; each of its tasks lasts 0.75–1.25 × that mean.
    pub task_s: (u64, u64),
    /// The fraction of its cpus an app's instances use on average, drawn
    /// uniformly per app from this range. Services are sized for their
    /// spikes and use less; what they leave idle is what the master lends
    /// as revocable (when [`ColoConfig::revocable`](super::ColoConfig::revocable)
    /// is on). `(1.0, 1.0)`: they use all they hold.
    pub service_usage: (f64, f64),
    /// How far an instance's use swings around its app's mean, as a
    /// fraction of that mean: use = mean × (1 + swing × sin), one cycle
    /// every [`USAGE_PERIOD_MS`] with a phase of its own.
    pub usage_swing: f64,
}

/// The period of an instance's swing in use, in milliseconds.
pub const USAGE_PERIOD_MS: u64 = 10 * 60 * 1_000;

impl Default for WorkloadConfig {
    /// The benchmark's workload: about 150 agents' worth of services at
    /// peak (30 % of that at the trough) and about 75 agents' worth of batch
    /// work on 16-cpu agents, over a 24-hour day.
    fn default() -> Self {
        WorkloadConfig {
            seed: 1,
            day_s: 24 * 3_600,
            warmup_s: 2 * 3_600,
            drain_s: 2 * 3_600,
            apps: 12,
            service_peak_cpus: 2_400.0,
            trough_ratio: 0.3,
            phase_spread: 1.0 / 12.0,
            batch_mean_cpus: 1_200.0,
            batch_swing: 0.0,
            batch_peak_at: 0.0,
            job_tasks: (1, 100),
            task_s: (60, 1_200),
            service_usage: (0.3, 0.7),
            usage_swing: 0.3,
        }
    }
}

impl WorkloadConfig {
    /// A small workload for tests: about 30 agents' worth of services at
    /// peak and 15 of batch, over a 1-hour day.
    pub fn small(seed: u64) -> Self {
        WorkloadConfig {
            seed,
            day_s: 3_600,
            warmup_s: 600,
            drain_s: 1_800,
            apps: 6,
            service_peak_cpus: 480.0,
            trough_ratio: 0.3,
            phase_spread: 1.0 / 12.0,
            batch_mean_cpus: 240.0,
            batch_swing: 0.0,
            batch_peak_at: 0.0,
            job_tasks: (1, 40),
            task_s: (30, 300),
            service_usage: (0.3, 0.7),
            usage_swing: 0.3,
        }
    }
}

/// A service app: instances of one shape, as many as its diurnal curve wants.
#[derive(Clone, Debug)]
pub struct App {
    /// Resources of one instance.
    pub shape: Resources,
    /// Instances wanted at the peak.
    pub peak: u32,
    /// Instances wanted at the trough.
    pub trough: u32,
    /// When in the day the peak comes, as a fraction of the day.
    pub peak_at: f64,
    /// The fraction of its cpus an instance uses on average.
    pub usage: f64,
    /// How far an instance's use swings around that, as a fraction of it.
    pub usage_swing: f64,
}

impl App {
    /// Instances wanted `t_ms` milliseconds after the start of the run, for
    /// a day of `day_ms`: a cosine from the trough to the peak and back.
    pub fn wanted(&self, t_ms: u64, day_ms: u64) -> u32 {
        let x = t_ms as f64 / day_ms as f64 - self.peak_at;
        let level = (1.0 + (2.0 * std::f64::consts::PI * x).cos()) / 2.0;
        let span = f64::from(self.peak - self.trough);
        self.trough + (span * level).round() as u32
    }

    /// The cpus an instance whose swing starts at `phase` (a fraction of
    /// the period) uses `t_ms` milliseconds after the start of the run:
    /// never more than it holds.
    pub fn cpus_used(&self, phase: f64, t_ms: u64) -> f64 {
        self.shape.cpus.as_f64() * use_level(self.usage, self.usage_swing, phase, t_ms)
    }
}

/// The fraction of its cpus an instance uses at `t_ms`: `mean` swinging
/// by `swing` × `mean` over [`USAGE_PERIOD_MS`], starting at `phase` (a
/// fraction of the period); within 0..=1.
pub fn use_level(mean: f64, swing: f64, phase: f64, t_ms: u64) -> f64 {
    let x = t_ms as f64 / USAGE_PERIOD_MS as f64 + phase;
    (mean * (1.0 + swing * (2.0 * std::f64::consts::PI * x).sin())).clamp(0.0, 1.0)
}

/// A batch job: tasks of one shape that may all run at once.
#[derive(Clone, Debug)]
pub struct Job {
    /// When it is submitted, in milliseconds after the start of the run.
    pub arrival_ms: u64,
    /// Index of its task shape in [`Workload::batch_shapes`].
    pub shape: usize,
    /// Each task's duration in milliseconds (a task killed by preemption
    /// starts again from zero).
    pub task_ms: Vec<u64>,
}

impl Job {
    /// Its completion time on an empty, unbounded cluster: its longest task.
    pub fn ideal_ms(&self) -> u64 {
        self.task_ms.iter().copied().max().unwrap_or(0)
    }
}

/// A generated workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// How it was generated.
    pub config: WorkloadConfig,
    /// The service apps.
    pub apps: Vec<App>,
    /// The distinct task shapes of batch jobs.
    pub batch_shapes: Vec<Resources>,
    /// Batch jobs in arrival order, over the whole run (warm-up, window and
    /// drain).
    pub jobs: Vec<Job>,
}

/// Draws log-uniformly from `[lo, hi]`.
fn log_uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    if hi <= lo {
        return lo;
    }
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

impl Workload {
    /// Generates the workload of `config`.
    pub fn generate(config: WorkloadConfig) -> Workload {
        let mut rng = StdRng::seed_from_u64(config.seed);
        // Services: shapes of 1, 2 or 4 cpus with 2–4 GiB per cpu; the
        // peak cpus split unevenly among the apps.
        let mut apps = Vec::with_capacity(config.apps);
        let weights: Vec<f64> = (0..config.apps)
            .map(|_| rng.random_range(0.5..1.5))
            .collect();
        let total_w: f64 = weights.iter().sum();
        for w in weights {
            let cpus = [1.0, 2.0, 4.0][rng.random_range(0..3)];
            let mem = cpus * GIB * [2.0, 3.0, 4.0][rng.random_range(0..3)];
            let peak_cpus = config.service_peak_cpus * w / total_w;
            let peak = ((peak_cpus / cpus).round() as u32).max(1);
            let trough = ((f64::from(peak) * config.trough_ratio).round() as u32).min(peak);
            let peak_at = 0.5 + rng.random_range(-1.0..=1.0) * config.phase_spread;
            apps.push(App {
                shape: Resources::new(cpus, mem),
                peak,
                trough,
                peak_at,
                usage: 1.0,
                usage_swing: config.usage_swing,
            });
        }
        // Use is drawn from a stream of its own, so the rest of the
        // workload does not depend on it.
        let mut usage_rng = StdRng::seed_from_u64(config.seed ^ 0x5eed_05a6e);
        let (lo, hi) = config.service_usage;
        for a in &mut apps {
            a.usage = if hi > lo {
                usage_rng.random_range(lo..=hi)
            } else {
                lo
            };
        }
        // Batch: 1, 2 or 4 cpus with 1, 2 or 4 GiB per cpu.
        let mut batch_shapes = Vec::new();
        for cpus in [1.0, 2.0, 4.0] {
            for per_cpu in [1.0, 2.0, 4.0] {
                batch_shapes.push(Resources::new(cpus, cpus * per_cpu * GIB));
            }
        }
        // Jobs first without arrival times, to learn the mean work per job;
        // then Poisson arrivals at the rate that gives the mean load.
        let horizon_ms = (config.warmup_s + config.day_s + config.drain_s) * 1_000;
        // Tasks are drawn from [lo, hi + 1) and rounded down.
        let mean_tasks = {
            let (lo, hi) = (
                f64::from(config.job_tasks.0.max(1)),
                f64::from(config.job_tasks.1.max(1)) + 1.0,
            );
            if hi > lo + 1.0 {
                (hi - lo) / (hi.ln() - lo.ln()) - 0.5
            } else {
                lo
            }
        };
        let mean_secs = {
            let (lo, hi) = (config.task_s.0 as f64, config.task_s.1 as f64);
            if hi > lo {
                (hi - lo) / (hi.ln() - lo.ln())
            } else {
                lo
            }
        };
        let mean_cpus =
            batch_shapes.iter().map(|s| s.cpus.as_f64()).sum::<f64>() / batch_shapes.len() as f64;
        let work_per_job = mean_tasks * mean_cpus * mean_secs;
        let rate_per_ms = config.batch_mean_cpus / work_per_job / 1_000.0;
        // Arrivals at the highest rate, thinned to the rate at their time.
        let swing = config.batch_swing.clamp(0.0, 1.0);
        let top_rate = rate_per_ms * (1.0 + swing);
        let day_ms = (config.day_s * 1_000) as f64;
        let mut jobs = Vec::new();
        let mut t = 0.0f64;
        if top_rate > 0.0 {
            loop {
                t += -(1.0 - rng.random::<f64>()).ln() / top_rate;
                if t >= horizon_ms as f64 {
                    break;
                }
                if swing > 0.0 {
                    let x = t / day_ms - config.batch_peak_at;
                    let rate = 1.0 + swing * (2.0 * std::f64::consts::PI * x).cos();
                    if rng.random::<f64>() * (1.0 + swing) >= rate {
                        continue;
                    }
                }
                let tasks = log_uniform(
                    &mut rng,
                    f64::from(config.job_tasks.0.max(1)),
                    f64::from(config.job_tasks.1.max(1)) + 0.999,
                )
                .floor()
                .max(1.0) as u32;
                let mean_ms =
                    log_uniform(&mut rng, config.task_s.0 as f64, config.task_s.1 as f64) * 1e3;
                let task_ms = (0..tasks)
                    .map(|_| (mean_ms * rng.random_range(0.75..1.25)).round() as u64)
                    .collect();
                jobs.push(Job {
                    arrival_ms: t as u64,
                    shape: rng.random_range(0..batch_shapes.len()),
                    task_ms,
                });
            }
        }
        Workload {
            config,
            apps,
            batch_shapes,
            jobs,
        }
    }

    /// The day in milliseconds.
    pub fn day_ms(&self) -> u64 {
        self.config.day_s * 1_000
    }

    /// The measured window, in milliseconds after the start of the run.
    pub fn window_ms(&self) -> (u64, u64) {
        let start = self.config.warmup_s * 1_000;
        (start, start + self.day_ms())
    }

    /// Cpus and mem (MiB) the services want at `t_ms`.
    pub fn service_demand(&self, t_ms: u64) -> (f64, f64) {
        let day = self.day_ms();
        self.apps.iter().fold((0.0, 0.0), |(c, m), a| {
            let n = f64::from(a.wanted(t_ms, day));
            (c + n * a.shape.cpus.as_f64(), m + n * a.shape.mem.as_f64())
        })
    }

    /// The peak and mean over the window of what the services want (cpus,
    /// mem), sampled every minute.
    pub fn service_peak_and_mean(&self) -> ((f64, f64), (f64, f64)) {
        let (start, end) = self.window_ms();
        let mut peak = (0.0f64, 0.0f64);
        let mut sum = (0.0, 0.0);
        let mut n = 0.0f64;
        let mut t = start;
        while t < end {
            let (c, m) = self.service_demand(t);
            peak = (peak.0.max(c), peak.1.max(m));
            sum = (sum.0 + c, sum.1 + m);
            n += 1.0;
            t += 60_000;
        }
        (peak, (sum.0 / n.max(1.0), sum.1 / n.max(1.0)))
    }

    /// The mean over the window of the cpus the services use (their mean
    /// use, leaving out the swing), sampled every minute.
    pub fn service_mean_used_cpus(&self) -> f64 {
        let (start, end) = self.window_ms();
        let day = self.day_ms();
        let (mut sum, mut n) = (0.0, 0.0f64);
        let mut t = start;
        while t < end {
            sum += self
                .apps
                .iter()
                .map(|a| f64::from(a.wanted(t, day)) * a.shape.cpus.as_f64() * a.usage)
                .sum::<f64>();
            n += 1.0;
            t += 60_000;
        }
        sum / n.max(1.0)
    }

    /// Mean cpus and mem (MiB) of the batch work arriving in the window.
    pub fn batch_mean(&self) -> (f64, f64) {
        let (start, end) = self.window_ms();
        let (mut c, mut m) = (0.0, 0.0);
        for j in self
            .jobs
            .iter()
            .filter(|j| j.arrival_ms >= start && j.arrival_ms < end)
        {
            let s = &self.batch_shapes[j.shape];
            let secs: f64 = j.task_ms.iter().map(|&d| d as f64 / 1e3).sum();
            c += secs * s.cpus.as_f64();
            m += secs * s.mem.as_f64();
        }
        let span = (end - start) as f64 / 1e3;
        (c / span, m / span)
    }
}
