//! [`TaskScheduler`]: the scheduler's state (executors, jobs in submission
//! order) and its decisions on events: placement, retries, lineage,
//! fetch failures and speculation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{
    Attempt, Effect, Executor, ExecutorId, Inputs, Job, JobId, JobState, Launch, Outcome, Output,
    PartitionId, Policy, Stage, StageId, StageMetrics, StageSpec, TaskRef,
};

/// The scheduler.
#[derive(Debug, Default)]
pub struct TaskScheduler {
    policy: Policy,
    executors: BTreeMap<ExecutorId, Executor>,
    /// Jobs in submission order (which breaks ties when slots are shared).
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
                retiring: false,
            },
        );
    }

    /// An executor takes no new attempts from now (its agent is being
    /// drained); those it runs finish. Returns whether it is known.
    pub fn retire_executor(&mut self, id: &ExecutorId) -> bool {
        self.executors
            .get_mut(id)
            .map(|e| e.retiring = true)
            .is_some()
    }

    /// Retiring executors that run nothing any more: ready to let go
    /// (their outputs are then lost, and re-run where still needed).
    pub fn retired_idle(&self) -> Vec<ExecutorId> {
        self.executors
            .iter()
            .filter(|(_, e)| e.retiring && e.busy == 0)
            .map(|(id, _)| id.clone())
            .collect()
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
                for p in st.partitions() {
                    st.running[p.index()].retain(|a| a.executor != *id);
                    if st.outputs[p.index()]
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
            if active
                && job.state == JobState::OutputsReady
                && !job.stage(job.final_stage()).complete()
            {
                job.state = JobState::Running;
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
                    pending: PartitionId::all(spec.tasks).collect(),
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
    pub fn final_outputs(&self, id: &JobId) -> Option<Vec<(PartitionId, ExecutorId, String)>> {
        let job = self.job(id)?;
        let f = job.stage(job.final_stage());
        let mut out = Vec::new();
        for (p, o) in f.partitions().zip(&f.outputs) {
            let o = o.as_ref()?;
            let flight = self.executors.get(&o.executor)?.flight.clone();
            // A task that wrote no rows left nothing to fetch.
            if o.partition_bytes.iter().any(|(_, b)| *b > 0) {
                out.push((p, o.executor.clone(), flight));
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
                for (p, attempts) in st.partitions().zip(&st.running) {
                    for a in attempts {
                        if let Some(e) = self.executors.get_mut(&a.executor) {
                            e.busy = e.busy.saturating_sub(1);
                        }
                        effects.push(Effect::Cancel(
                            a.executor.clone(),
                            TaskRef {
                                job: job.id.clone(),
                                stage: st.spec.id,
                                partition: p,
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
        let Some(st) = job.stages.get_mut(task.stage.index()) else {
            return effects;
        };
        let p = task.partition.index();
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
        let mut lost_input: Option<(StageId, ExecutorId)> = None;
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
            Outcome::QueryError(error) => {
                st.failures[p] += 1;
                st.metrics.failed += 1;
                fail_job = Some(format!(
                    "task {}/s{}/p{} failed: {error}",
                    task.job, task.stage, task.partition
                ));
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
        st.requeue(task.partition);
        if let Some((stage, executor)) = lost_input
            && let Some(input) = job.stages.get_mut(stage.index())
        {
            for q in input.partitions() {
                if input.outputs[q.index()]
                    .as_ref()
                    .is_some_and(|o| o.executor == executor)
                {
                    input.lose_output(q);
                }
            }
            input.metrics.done = input.done;
        }
        let st = job.stage_mut(task.stage);
        st.metrics.done = st.done;
        if let (Some(a), Some(b)) = (st.first_launch, st.last_finish) {
            st.metrics.elapsed = b.saturating_duration_since(a);
        }
        if let Some(why) = fail_job {
            let id = job.id.clone();
            effects.extend(self.abort(&id, JobState::Failed(why)));
            return effects;
        }
        if job.state == JobState::Running && job.stage(job.final_stage()).complete() {
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
            e.open = !e.retiring && (e.busy < e.slots || e.busy <= e.slots * deepest / 2);
        }
        if self.executors.values().all(|e| !e.open) {
            return launches;
        }
        // Jobs share the slots fairly: each attempt placed goes to the
        // running job with the fewest attempts running (the earliest
        // submitted among equals), so a short job submitted behind a long
        // one starts as soon as a slot frees instead of after every
        // pending task of the long one. A job none of whose pending tasks
        // can be placed sits out the rest of this round.
        let mut ready: BTreeMap<(usize, StageId), (Inputs, u32)> = BTreeMap::new();
        let mut running: Vec<u32> = self.jobs.iter().map(Job::running).collect();
        let mut waiting: Vec<bool> = (0..self.jobs.len())
            .map(|j| self.jobs[j].state == JobState::Running)
            .collect();
        // Which stages are needed changes as stages complete, not as
        // attempts start: once per job per round.
        let required: Vec<Vec<bool>> = (0..self.jobs.len())
            .map(|j| {
                if waiting[j] {
                    self.jobs[j].required()
                } else {
                    Vec::new()
                }
            })
            .collect();
        while let Some(j) = (0..self.jobs.len())
            .filter(|&j| waiting[j])
            .min_by_key(|&j| (running[j], j))
        {
            // `j` keeps the turn until another waiting job would come
            // first (fewer running; the earlier one among equals).
            let turn_ends = (0..self.jobs.len())
                .filter(|&k| k != j && waiting[k])
                .map(|k| if k < j { running[k] } else { running[k] + 1 })
                .min()
                .unwrap_or(u32::MAX);
            while running[j] < turn_ends {
                match self.assign_one(j, &required[j], now, &mut ready) {
                    Some(launch) => {
                        launches.push(launch);
                        running[j] += 1;
                    }
                    None => {
                        waiting[j] = false;
                        break;
                    }
                }
            }
        }
        launches
    }

    /// Places one pending task of job `j` (of its first runnable stage
    /// that has one and an executor for it), if it can.
    fn assign_one(
        &mut self,
        j: usize,
        required: &[bool],
        now: Instant,
        ready: &mut BTreeMap<(usize, StageId), (Inputs, u32)>,
    ) -> Option<Launch> {
        for (s, &required) in self.jobs[j].stage_ids().zip(required) {
            if !required || !self.jobs[j].runnable(s) || self.jobs[j].stage(s).pending.is_empty() {
                continue;
            }
            let (inputs, depth) = ready
                .entry((j, s))
                .or_insert_with(|| (self.inputs_of(j, s), self.depth(j, s)));
            let p = *self.jobs[j].stage(s).pending.first()?;
            let Some(executor) = self.place(j, s, p, None, *depth) else {
                continue;
            };
            self.jobs[j].stage_mut(s).pending.remove(&p);
            return Some(self.start(j, s, p, executor, inputs, now, false));
        }
        None
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
            for s in self.jobs[j].stage_ids() {
                let st = self.jobs[j].stage(s);
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
                let stragglers: Vec<(PartitionId, ExecutorId)> = st
                    .partitions()
                    .zip(&st.running)
                    .filter(|(p, a)| {
                        st.outputs[p.index()].is_none()
                            && a.len() == 1
                            && now.saturating_duration_since(a[0].started) > threshold
                    })
                    .map(|(p, a)| (p, a[0].executor.clone()))
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
    fn inputs_of(&self, j: usize, s: StageId) -> Inputs {
        let job = &self.jobs[j];
        job.stage(s)
            .spec
            .inputs
            .iter()
            .map(|&i| {
                let input = job.stage(i);
                let outs = input
                    .partitions()
                    .zip(&input.outputs)
                    .filter_map(|(m, o)| {
                        let o = o.as_ref()?;
                        let flight = self.executors.get(&o.executor)?.flight.clone();
                        Some((m, o.executor.clone(), flight))
                    })
                    .collect();
                (i, outs)
            })
            .collect()
    }

    /// Attempts an executor may hold per slot for stage `s` of job `j`:
    /// more than one (queued behind the running one, hiding the round
    /// trip to the driver) only once the stage's tasks are known to be short.
    fn depth(&self, j: usize, s: StageId) -> u32 {
        let st = self.jobs[j].stage(s);
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
        s: StageId,
        p: PartitionId,
        avoid: Option<&ExecutorId>,
        depth: u32,
    ) -> Option<ExecutorId> {
        let job = &self.jobs[j];
        let mut local: BTreeMap<&ExecutorId, u64> = BTreeMap::new();
        for &i in &job.stage(s).spec.inputs {
            for o in job.stage(i).outputs.iter().flatten() {
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
                !e.retiring
                    && e.busy < e.slots * depth
                    && (depth == 1 || e.open)
                    && Some(*id) != avoid
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
        s: StageId,
        p: PartitionId,
        executor: ExecutorId,
        inputs: &Inputs,
        now: Instant,
        speculative: bool,
    ) -> Launch {
        if let Some(e) = self.executors.get_mut(&executor) {
            e.busy += 1;
        }
        let job_id = self.jobs[j].id.clone();
        let st = self.jobs[j].stage_mut(s);
        let attempt = st.next_attempt[p.index()];
        st.next_attempt[p.index()] += 1;
        st.running[p.index()].push(Attempt {
            attempt,
            executor: executor.clone(),
            started: now,
            speculative,
        });
        st.metrics.launched += 1;
        st.metrics.running += 1;
        if speculative {
            st.metrics.speculative += 1;
        } else if st.ever_done[p.index()] {
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
