//! The task scheduler of the driver, sans IO: jobs' stages and tasks,
//! executors' slots, and the decisions (what runs where, what is re-run,
//! what gets a speculative copy). The driver feeds it events (an executor
//! came or went, a task's status) with the time, and carries out what it
//! returns; the tests drive it with simulated executors and time.
//!
//! ## Model
//!
//! A job's stages form a DAG; every stage has one task per partition, and a
//! partition is done when some attempt of it has finished: its *output*
//! lives on that attempt's executor. A stage is *required* when it is the
//! final stage, or when a required stage reads it and is not yet complete;
//! its tasks are *runnable* when every stage it reads is complete. So when
//! an executor is lost, its outputs are forgotten and exactly the lost map
//! outputs that are still needed run again (lineage), nothing else.
//!
//! * Failed attempts are retried up to `max_attempts` per partition; then
//!   the job fails with the task's error.
//! * A failure to fetch an input forgets that executor's outputs of that
//!   stage (they are re-run) and re-queues the task without counting it.
//! * Speculation: once `quantile` of a stage's tasks are done, an attempt
//!   running longer than `multiplier` × their median (and `min_runtime`)
//!   gets one copy on another executor; the first to finish wins and the
//!   other is cancelled.
//! * Placement: a task goes to the free executor holding most of its input
//!   bytes, else to the one with most free slots.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An executor's id (given by its driver).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExecutorId(pub String);

impl std::fmt::Display for ExecutorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job's id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub String);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One attempt of one task.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskRef {
    /// The job.
    pub job: JobId,
    /// The stage.
    pub stage: u32,
    /// The partition.
    pub partition: u32,
    /// The attempt (0 first).
    pub attempt: u32,
}

/// Scheduling policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Attempts per partition that may fail before the job fails.
    pub max_attempts: u32,
    /// Fetch failures per stage before the job fails.
    pub max_fetch_failures: u32,
    /// Speculative execution, if on.
    pub speculation: Option<Speculation>,
    /// Attempts an executor may hold per slot once a stage's tasks are
    /// known to be short (the extra ones queue on the executor).
    pub pipeline: u32,
    /// Tasks shorter than this on average are short.
    pub short_task: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_attempts: 4,
            max_fetch_failures: 8,
            speculation: Some(Speculation::default()),
            pipeline: 16,
            short_task: Duration::from_millis(10),
        }
    }
}

/// When a straggler gets a copy.
#[derive(Clone, Debug)]
pub struct Speculation {
    /// Fraction of a stage's tasks that must be done first.
    pub quantile: f64,
    /// How many times the median a straggler must have run.
    pub multiplier: f64,
    /// Never speculate on attempts younger than this.
    pub min_runtime: Duration,
}

impl Default for Speculation {
    fn default() -> Self {
        Speculation {
            quantile: 0.75,
            multiplier: 1.5,
            min_runtime: Duration::from_millis(500),
        }
    }
}

/// A stage as the scheduler needs it.
#[derive(Clone, Debug)]
pub struct StageSpec {
    /// Its id: its index in the job.
    pub id: u32,
    /// The stages it reads.
    pub inputs: Vec<u32>,
    /// Its number of tasks.
    pub tasks: u32,
    /// Its serialised plan.
    pub plan: Arc<Vec<u8>>,
}

/// Where a finished task's output lives.
#[derive(Clone, Debug)]
pub struct Output {
    /// The executor holding it.
    pub executor: ExecutorId,
    /// Bytes per non-empty output partition: (partition, bytes).
    pub partition_bytes: Vec<(u32, u64)>,
}

/// Figures of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageMetrics {
    /// The stage.
    pub stage: u32,
    /// Its tasks (partitions).
    pub tasks: u32,
    /// Partitions done now.
    pub done: u32,
    /// Attempts running now.
    pub running: u32,
    /// Attempts launched in all.
    pub launched: u32,
    /// Attempts that failed (errors, not losses).
    pub failed: u32,
    /// Attempts launched for partitions whose output had been lost (lineage).
    pub recomputed: u32,
    /// Speculative copies launched.
    pub speculative: u32,
    /// Speculative copies that finished first.
    pub speculative_wins: u32,
    /// Rows written by the winning attempts.
    pub rows: u64,
    /// Bytes written by the winning attempts.
    pub bytes: u64,
    /// From the first launch to the last finish.
    pub elapsed: Duration,
}

/// A job's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Running stages.
    Running,
    /// Every final partition is done; the driver is fetching them.
    OutputsReady,
    /// Done.
    Succeeded,
    /// Failed, with why.
    Failed(String),
    /// Cancelled.
    Cancelled,
}

#[derive(Clone, Debug)]
struct Attempt {
    attempt: u32,
    executor: ExecutorId,
    started: Instant,
    speculative: bool,
}

#[derive(Debug)]
struct Stage {
    spec: StageSpec,
    outputs: Vec<Option<Output>>,
    running: Vec<Vec<Attempt>>,
    next_attempt: Vec<u32>,
    failures: Vec<u32>,
    ever_done: Vec<bool>,
    /// Partitions with neither an output nor a running attempt.
    pending: BTreeSet<u32>,
    done: u32,
    fetch_failures: u32,
    durations: Vec<Duration>,
    /// Sum of `durations` (kept, not recomputed on every placement).
    duration_sum: Duration,
    metrics: StageMetrics,
    first_launch: Option<Instant>,
    last_finish: Option<Instant>,
}

impl Stage {
    fn complete(&self) -> bool {
        self.done == self.spec.tasks
    }

    /// Marks `p` pending if it has no output and no attempt running.
    fn requeue(&mut self, p: u32) {
        if self.outputs[p as usize].is_none() && self.running[p as usize].is_empty() {
            self.pending.insert(p);
        }
    }

    fn lose_output(&mut self, p: u32) {
        if self.outputs[p as usize].take().is_some() {
            self.done -= 1;
        }
        self.requeue(p);
    }
}

#[derive(Debug)]
struct Job {
    id: JobId,
    stages: Vec<Stage>,
    state: JobState,
}

impl Job {
    fn final_stage(&self) -> u32 {
        self.stages.len() as u32 - 1
    }

    /// Stages whose output is still needed.
    fn required(&self) -> Vec<bool> {
        let n = self.stages.len();
        let mut req = vec![false; n];
        req[n - 1] = true;
        // Stages are in dependency order: consumers come after their inputs.
        for s in (0..n).rev() {
            if req[s] && !self.stages[s].complete() {
                for &i in &self.stages[s].spec.inputs {
                    req[i as usize] = true;
                }
            }
        }
        req
    }

    fn runnable(&self, s: usize) -> bool {
        self.stages[s]
            .spec
            .inputs
            .iter()
            .all(|&i| self.stages[i as usize].complete())
    }
}

#[derive(Debug)]
struct Executor {
    flight: String,
    slots: u32,
    busy: u32,
    /// Whether it takes queued attempts in this assignment round: it has a
    /// free slot, or at most half of its deepest queue is taken. Refilling
    /// a queue only once it is half empty sends launches in batches
    /// instead of one message per finished task.
    open: bool,
}

/// The map outputs a task reads: per input stage, (map partition,
/// executor, its Flight address).
pub type Inputs = Vec<(u32, Vec<(u32, ExecutorId, String)>)>;

/// A task to launch.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Where.
    pub executor: ExecutorId,
    /// What.
    pub task: TaskRef,
    /// The stage's plan.
    pub plan: Arc<Vec<u8>>,
    /// Per input stage: (map partition, executor, its Flight address).
    pub inputs: Inputs,
    /// A speculative copy.
    pub speculative: bool,
}

/// What the driver must do besides launching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Cancel an attempt on its executor.
    Cancel(ExecutorId, TaskRef),
    /// Every final partition is done: fetch them.
    OutputsReady(JobId),
    /// The job failed; its running attempts were cancelled.
    JobFailed(JobId, String),
}

/// A status an executor reported.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Finished, with bytes per output partition, rows and bytes.
    Finished {
        /// Bytes per non-empty output partition: (partition, bytes).
        partition_bytes: Vec<(u32, u64)>,
        /// Rows written.
        rows: u64,
        /// Bytes written.
        bytes: u64,
    },
    /// The plan failed.
    Failed(String),
    /// An input could not be fetched from that executor.
    FetchFailed {
        /// The input stage.
        stage: u32,
        /// The executor whose output is unreadable.
        executor: ExecutorId,
        /// The error.
        error: String,
    },
    /// Cancelled on request.
    Cancelled,
}

/// The scheduler.
#[derive(Debug, Default)]
pub struct TaskScheduler {
    policy: Policy,
    executors: BTreeMap<ExecutorId, Executor>,
    /// Jobs in submission order.
    jobs: Vec<Job>,
}

impl TaskScheduler {
    /// A scheduler with `policy`.
    pub fn new(policy: Policy) -> Self {
        TaskScheduler {
            policy,
            ..Default::default()
        }
    }

    /// An executor registered.
    pub fn add_executor(&mut self, id: ExecutorId, flight: String, slots: u32) {
        self.executors.insert(
            id,
            Executor {
                flight,
                slots: slots.max(1),
                busy: 0,
                open: true,
            },
        );
    }

    /// Registered executors.
    pub fn executors(&self) -> impl Iterator<Item = &ExecutorId> {
        self.executors.keys()
    }

    /// Attempts running on `id`.
    pub fn busy(&self, id: &ExecutorId) -> u32 {
        self.executors.get(id).map_or(0, |e| e.busy)
    }

    /// Total slots.
    pub fn slots(&self) -> u32 {
        self.executors.values().map(|e| e.slots).sum()
    }

    /// Tasks waiting or running across jobs (the demand for slots).
    pub fn outstanding(&self) -> u32 {
        let mut n = 0;
        for job in self.jobs.iter().filter(|j| j.state == JobState::Running) {
            let req = job.required();
            for (s, st) in job.stages.iter().enumerate() {
                if req[s] {
                    n += st.pending.len() as u32;
                }
                n += st.metrics.running;
            }
        }
        n
    }

    /// An executor is gone: its attempts are lost (re-queued, not counted
    /// as failures) and its outputs forgotten.
    pub fn remove_executor(&mut self, id: &ExecutorId) {
        if self.executors.remove(id).is_none() {
            return;
        }
        for job in &mut self.jobs {
            let active = matches!(job.state, JobState::Running | JobState::OutputsReady);
            for st in &mut job.stages {
                for p in 0..st.spec.tasks {
                    st.running[p as usize].retain(|a| a.executor != *id);
                    if st.outputs[p as usize]
                        .as_ref()
                        .is_some_and(|o| o.executor == *id)
                    {
                        st.lose_output(p);
                    }
                    st.requeue(p);
                }
                st.metrics.running = st.running.iter().map(|r| r.len() as u32).sum();
                st.metrics.done = st.done;
            }
            if active && job.state == JobState::OutputsReady {
                let f = job.final_stage() as usize;
                if !job.stages[f].complete() {
                    job.state = JobState::Running;
                }
            }
        }
    }

    /// Adds a job.
    pub fn submit(&mut self, id: JobId, stages: Vec<StageSpec>) {
        let stages = stages
            .into_iter()
            .map(|spec| {
                let t = spec.tasks as usize;
                Stage {
                    metrics: StageMetrics {
                        stage: spec.id,
                        tasks: spec.tasks,
                        ..Default::default()
                    },
                    outputs: vec![None; t],
                    running: vec![Vec::new(); t],
                    next_attempt: vec![0; t],
                    failures: vec![0; t],
                    ever_done: vec![false; t],
                    pending: (0..spec.tasks).collect(),
                    done: 0,
                    fetch_failures: 0,
                    durations: Vec::new(),
                    duration_sum: Duration::ZERO,
                    first_launch: None,
                    last_finish: None,
                    spec,
                }
            })
            .collect();
        self.jobs.push(Job {
            id,
            stages,
            state: JobState::Running,
        });
    }

    fn job_mut(&mut self, id: &JobId) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == *id)
    }

    fn job(&self, id: &JobId) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == *id)
    }

    /// A job's state.
    pub fn state(&self, id: &JobId) -> Option<&JobState> {
        self.job(id).map(|j| &j.state)
    }

    /// A job's per-stage figures.
    pub fn metrics(&self, id: &JobId) -> Vec<StageMetrics> {
        self.job(id)
            .map(|j| j.stages.iter().map(|s| s.metrics.clone()).collect())
            .unwrap_or_default()
    }

    /// Where each non-empty final partition's output is (partition,
    /// executor, Flight address), in partition order; `None` while one is
    /// missing.
    pub fn final_outputs(&self, id: &JobId) -> Option<Vec<(u32, ExecutorId, String)>> {
        let job = self.job(id)?;
        let f = &job.stages[job.final_stage() as usize];
        let mut out = Vec::new();
        for (p, o) in f.outputs.iter().enumerate() {
            let o = o.as_ref()?;
            let flight = self.executors.get(&o.executor)?.flight.clone();
            // A task that wrote no rows left nothing to fetch.
            if o.partition_bytes.iter().any(|(_, b)| *b > 0) {
                out.push((p as u32, o.executor.clone(), flight));
            }
        }
        Some(out)
    }

    /// The driver has the job's results: it is done and forgotten.
    pub fn finish(&mut self, id: &JobId) {
        if let Some(j) = self.job_mut(id) {
            j.state = JobState::Succeeded;
        }
        self.jobs.retain(|j| j.id != *id);
    }

    /// Cancels a job (or records its failure): running attempts are
    /// cancelled and the job forgotten.
    pub fn abort(&mut self, id: &JobId, state: JobState) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Some(pos) = self.jobs.iter().position(|j| j.id == *id) {
            let job = self.jobs.remove(pos);
            for st in &job.stages {
                for (p, attempts) in st.running.iter().enumerate() {
                    for a in attempts {
                        if let Some(e) = self.executors.get_mut(&a.executor) {
                            e.busy = e.busy.saturating_sub(1);
                        }
                        effects.push(Effect::Cancel(
                            a.executor.clone(),
                            TaskRef {
                                job: job.id.clone(),
                                stage: st.spec.id,
                                partition: p as u32,
                                attempt: a.attempt,
                            },
                        ));
                    }
                }
            }
            if let JobState::Failed(why) = state {
                effects.push(Effect::JobFailed(job.id, why));
            }
        }
        effects
    }

    /// A status from an executor.
    pub fn on_status(
        &mut self,
        from: &ExecutorId,
        task: &TaskRef,
        outcome: Outcome,
        now: Instant,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let max_attempts = self.policy.max_attempts;
        let max_fetch = self.policy.max_fetch_failures;
        let Some(job) = self.jobs.iter_mut().find(|j| j.id == task.job) else {
            return effects;
        };
        let Some(st) = job.stages.get_mut(task.stage as usize) else {
            return effects;
        };
        let p = task.partition as usize;
        if p >= st.running.len() {
            return effects;
        }
        let Some(pos) = st.running[p]
            .iter()
            .position(|a| a.attempt == task.attempt && a.executor == *from)
        else {
            // Unknown or already written off (its executor was lost).
            return effects;
        };
        let attempt = st.running[p].remove(pos);
        st.metrics.running -= 1;
        if let Some(e) = self.executors.get_mut(from) {
            e.busy = e.busy.saturating_sub(1);
        }
        let mut fail_job = None;
        let mut lost_input: Option<(u32, ExecutorId)> = None;
        match outcome {
            Outcome::Finished {
                partition_bytes,
                rows,
                bytes,
            } => {
                if st.outputs[p].is_none() {
                    st.outputs[p] = Some(Output {
                        executor: from.clone(),
                        partition_bytes,
                    });
                    st.done += 1;
                    st.ever_done[p] = true;
                    st.metrics.rows += rows;
                    st.metrics.bytes += bytes;
                    let took = now.saturating_duration_since(attempt.started);
                    st.durations.push(took);
                    st.duration_sum += took;
                    st.last_finish = Some(now);
                    if attempt.speculative {
                        st.metrics.speculative_wins += 1;
                    }
                    // The other copies lost the race.
                    for other in st.running[p].drain(..) {
                        st.metrics.running -= 1;
                        if let Some(e) = self.executors.get_mut(&other.executor) {
                            e.busy = e.busy.saturating_sub(1);
                        }
                        effects.push(Effect::Cancel(
                            other.executor,
                            TaskRef {
                                attempt: other.attempt,
                                ..task.clone()
                            },
                        ));
                    }
                }
            }
            Outcome::Failed(error) => {
                st.failures[p] += 1;
                st.metrics.failed += 1;
                if st.failures[p] >= max_attempts {
                    fail_job = Some(format!(
                        "task {}/s{}/p{} failed {} times; last error: {error}",
                        task.job, task.stage, task.partition, st.failures[p]
                    ));
                }
            }
            Outcome::FetchFailed {
                stage,
                executor,
                error,
            } => {
                st.fetch_failures += 1;
                if st.fetch_failures > max_fetch {
                    fail_job = Some(format!(
                        "stage {} of {} could not read its inputs {} times; last error: {error}",
                        task.stage, task.job, st.fetch_failures
                    ));
                } else {
                    lost_input = Some((stage, executor));
                }
            }
            Outcome::Cancelled => {}
        }
        st.requeue(p as u32);
        if let Some((stage, executor)) = lost_input
            && let Some(input) = job.stages.get_mut(stage as usize)
        {
            for q in 0..input.spec.tasks {
                if input.outputs[q as usize]
                    .as_ref()
                    .is_some_and(|o| o.executor == executor)
                {
                    input.lose_output(q);
                }
            }
            input.metrics.done = input.done;
        }
        let st = &mut job.stages[task.stage as usize];
        st.metrics.done = st.done;
        if let (Some(a), Some(b)) = (st.first_launch, st.last_finish) {
            st.metrics.elapsed = b.saturating_duration_since(a);
        }
        if let Some(why) = fail_job {
            let id = job.id.clone();
            effects.extend(self.abort(&id, JobState::Failed(why)));
            return effects;
        }
        let f = job.final_stage() as usize;
        if job.state == JobState::Running && job.stages[f].complete() {
            job.state = JobState::OutputsReady;
            effects.push(Effect::OutputsReady(job.id.clone()));
        }
        effects
    }

    /// Places runnable tasks on free slots.
    pub fn assign(&mut self, now: Instant) -> Vec<Launch> {
        let mut launches = Vec::new();
        let deepest = self.policy.pipeline.max(1);
        for e in self.executors.values_mut() {
            e.open = e.busy < e.slots || e.busy <= e.slots * deepest / 2;
        }
        if self.executors.values().all(|e| !e.open) {
            return launches;
        }
        for j in 0..self.jobs.len() {
            if self.jobs[j].state != JobState::Running {
                continue;
            }
            let req = self.jobs[j].required();
            for (s, required) in req.into_iter().enumerate() {
                if !required
                    || !self.jobs[j].runnable(s)
                    || self.jobs[j].stages[s].pending.is_empty()
                {
                    continue;
                }
                let inputs = self.inputs_of(j, s);
                let depth = self.depth(j, s);
                while let Some(p) = self.jobs[j].stages[s].pending.pop_first() {
                    let executor = self.place(j, s, p, None, depth);
                    let Some(executor) = executor else {
                        self.jobs[j].stages[s].pending.insert(p);
                        break;
                    };
                    launches.push(self.start(j, s, p, executor, &inputs, now, false));
                }
            }
        }
        launches
    }

    /// Speculative copies of stragglers, on free slots.
    pub fn speculate(&mut self, now: Instant) -> Vec<Launch> {
        let Some(spec) = self.policy.speculation.clone() else {
            return Vec::new();
        };
        let mut launches = Vec::new();
        for j in 0..self.jobs.len() {
            if self.jobs[j].state != JobState::Running {
                continue;
            }
            for s in 0..self.jobs[j].stages.len() {
                let st = &self.jobs[j].stages[s];
                let tasks = st.spec.tasks as f64;
                if st.metrics.running == 0
                    || st.durations.is_empty()
                    || (st.done as f64) < (spec.quantile * tasks).ceil()
                {
                    continue;
                }
                let mut d = st.durations.clone();
                d.sort();
                let median = d[d.len() / 2];
                let threshold = median.mul_f64(spec.multiplier).max(spec.min_runtime);
                let stragglers: Vec<(u32, ExecutorId)> = st
                    .running
                    .iter()
                    .enumerate()
                    .filter(|(p, a)| {
                        st.outputs[*p].is_none()
                            && a.len() == 1
                            && now.saturating_duration_since(a[0].started) > threshold
                    })
                    .map(|(p, a)| (p as u32, a[0].executor.clone()))
                    .collect();
                if stragglers.is_empty() {
                    continue;
                }
                let inputs = self.inputs_of(j, s);
                for (p, busy_on) in stragglers {
                    if let Some(executor) = self.place(j, s, p, Some(&busy_on), 1) {
                        launches.push(self.start(j, s, p, executor, &inputs, now, true));
                    }
                }
            }
        }
        launches
    }

    /// Map outputs of each input stage of stage `s` of job `j`.
    fn inputs_of(&self, j: usize, s: usize) -> Inputs {
        let job = &self.jobs[j];
        job.stages[s]
            .spec
            .inputs
            .iter()
            .map(|&i| {
                let outs = job.stages[i as usize]
                    .outputs
                    .iter()
                    .enumerate()
                    .filter_map(|(m, o)| {
                        let o = o.as_ref()?;
                        let flight = self.executors.get(&o.executor)?.flight.clone();
                        Some((m as u32, o.executor.clone(), flight))
                    })
                    .collect();
                (i, outs)
            })
            .collect()
    }

    /// Attempts an executor may hold per slot for stage `s` of job `j`:
    /// more than one (queued behind the running one, hiding the round
    /// trip to the driver) only once the stage's tasks are known to be short.
    fn depth(&self, j: usize, s: usize) -> u32 {
        let st = &self.jobs[j].stages[s];
        let n = st.durations.len() as u32;
        if n < 8 {
            return 1;
        }
        let mean = st.duration_sum / n;
        if mean < self.policy.short_task {
            self.policy.pipeline.max(1)
        } else {
            1
        }
    }

    /// The executor with a free slot (of `depth` per slot) for partition
    /// `p` of stage `s`: most input bytes first, then most free slots;
    /// never `avoid`.
    fn place(
        &self,
        j: usize,
        s: usize,
        p: u32,
        avoid: Option<&ExecutorId>,
        depth: u32,
    ) -> Option<ExecutorId> {
        let job = &self.jobs[j];
        let mut local: BTreeMap<&ExecutorId, u64> = BTreeMap::new();
        for &i in &job.stages[s].spec.inputs {
            for o in job.stages[i as usize].outputs.iter().flatten() {
                let b = o
                    .partition_bytes
                    .iter()
                    .find(|(q, _)| *q == p)
                    .map_or(0, |(_, b)| *b);
                *local.entry(&o.executor).or_default() += b;
            }
        }
        self.executors
            .iter()
            .filter(|(id, e)| {
                e.busy < e.slots * depth && (depth == 1 || e.open) && Some(*id) != avoid
            })
            .max_by_key(|(id, e)| {
                (
                    local.get(id).copied().unwrap_or(0),
                    e.slots * depth - e.busy,
                    std::cmp::Reverse(*id),
                )
            })
            .map(|(id, _)| id.clone())
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        j: usize,
        s: usize,
        p: u32,
        executor: ExecutorId,
        inputs: &Inputs,
        now: Instant,
        speculative: bool,
    ) -> Launch {
        if let Some(e) = self.executors.get_mut(&executor) {
            e.busy += 1;
        }
        let job_id = self.jobs[j].id.clone();
        let st = &mut self.jobs[j].stages[s];
        let attempt = st.next_attempt[p as usize];
        st.next_attempt[p as usize] += 1;
        st.running[p as usize].push(Attempt {
            attempt,
            executor: executor.clone(),
            started: now,
            speculative,
        });
        st.metrics.launched += 1;
        st.metrics.running += 1;
        if speculative {
            st.metrics.speculative += 1;
        } else if st.ever_done[p as usize] {
            st.metrics.recomputed += 1;
        }
        st.first_launch.get_or_insert(now);
        Launch {
            executor,
            task: TaskRef {
                job: job_id,
                stage: st.spec.id,
                partition: p,
                attempt,
            },
            plan: st.spec.plan.clone(),
            inputs: inputs.to_vec(),
            speculative,
        }
    }
}

#[cfg(test)]
mod tests;
