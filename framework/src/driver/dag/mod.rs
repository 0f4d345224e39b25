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
//! * Sharing: jobs at once share the slots fairly (Spark's FAIR mode with
//!   equal pools): each free slot goes to the running job with the fewest
//!   attempts running, the earliest submitted among equals, so a short
//!   job behind a long one waits for one of its tasks, not for all.
//! * Placement: a task goes to the free executor holding most of its input
//!   bytes, else to the one with most free slots.

mod scheduler;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use scheduler::TaskScheduler;
pub use strata_executor::ids::{PartitionId, StageId};

strata_proto::id_type!(
    /// An executor's id (given by its driver; on a cluster, its task id).
    ExecutorId
);

strata_proto::id_type!(
    /// A job's id.
    JobId
);

/// One attempt of one task.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskRef {
    /// The job.
    pub job: JobId,
    /// The stage.
    pub stage: StageId,
    /// The partition.
    pub partition: PartitionId,
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
    pub id: StageId,
    /// The stages it reads.
    pub inputs: Vec<StageId>,
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
    pub partition_bytes: Vec<(PartitionId, u64)>,
}

/// Figures of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageMetrics {
    /// The stage.
    pub stage: StageId,
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
    pending: BTreeSet<PartitionId>,
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

    /// Its partitions, in order.
    fn partitions(&self) -> impl Iterator<Item = PartitionId> + use<> {
        PartitionId::all(self.spec.tasks)
    }

    /// Marks `p` pending if it has no output and no attempt running.
    fn requeue(&mut self, p: PartitionId) {
        if self.outputs[p.index()].is_none() && self.running[p.index()].is_empty() {
            self.pending.insert(p);
        }
    }

    fn lose_output(&mut self, p: PartitionId) {
        if self.outputs[p.index()].take().is_some() {
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
    /// The last stage, whose partitions are the job's result.
    fn final_stage(&self) -> StageId {
        StageId::new(self.stages.len() as u32 - 1)
    }

    /// Its stages' ids, in order.
    fn stage_ids(&self) -> impl DoubleEndedIterator<Item = StageId> + use<> {
        StageId::all(self.stages.len() as u32)
    }

    fn stage(&self, s: StageId) -> &Stage {
        &self.stages[s.index()]
    }

    fn stage_mut(&mut self, s: StageId) -> &mut Stage {
        &mut self.stages[s.index()]
    }

    /// Stages whose output is still needed, by stage index.
    fn required(&self) -> Vec<bool> {
        let n = self.stages.len();
        let mut req = vec![false; n];
        req[n - 1] = true;
        // Stages are in dependency order: consumers come after their inputs.
        for s in self.stage_ids().rev() {
            if req[s.index()] && !self.stage(s).complete() {
                for &i in &self.stage(s).spec.inputs {
                    req[i.index()] = true;
                }
            }
        }
        req
    }

    /// Attempts of its running now.
    fn running(&self) -> u32 {
        self.stages.iter().map(|s| s.metrics.running).sum()
    }

    fn runnable(&self, s: StageId) -> bool {
        self.stage(s)
            .spec
            .inputs
            .iter()
            .all(|&i| self.stage(i).complete())
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
    /// Takes no new attempts: its agent is being drained, and it is let
    /// go once idle.
    retiring: bool,
}

/// The map outputs a task reads: per input stage, (map partition,
/// executor, its Flight address).
pub type Inputs = Vec<(StageId, Vec<(PartitionId, ExecutorId, String)>)>;

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
        partition_bytes: Vec<(PartitionId, u64)>,
        /// Rows written.
        rows: u64,
        /// Bytes written.
        bytes: u64,
    },
    /// The plan failed.
    Failed(String),
    /// The query's own error (a bad cast, a division by zero, over its
    /// memory limit): another attempt would repeat it, the job fails.
    QueryError(String),
    /// An input could not be fetched from that executor.
    FetchFailed {
        /// The input stage.
        stage: StageId,
        /// The executor whose output is unreadable.
        executor: ExecutorId,
        /// The error.
        error: String,
    },
    /// Cancelled on request.
    Cancelled,
}

#[cfg(test)]
mod tests;
