//! Job reports: what a batch driver tells the manager about its jobs, so
//! that the manager's web UI and `GET /api/v1/jobs` show every job of the
//! cluster — and keep showing it after its driver has exited.
//!
//! A driver `PUT`s a job's whole report to `/api/v1/jobs/{job}` when the
//! job starts, every second or so while it runs, and once more when it
//! ends; the manager keeps the latest report of each job, running jobs and
//! a bounded history of finished ones. The shapes here are that JSON.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The most task attempts a report lists per stage (the stage's counts
/// still cover them all).
pub const MAX_ATTEMPTS_PER_STAGE: usize = 2_000;

/// One job of a batch driver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// The job's id (`job-N-…`), unique in the cluster.
    pub id: String,
    /// The driver's framework.
    pub framework_id: String,
    /// The driver's framework name (`strata-sql`, a gateway, a job).
    #[serde(default)]
    pub driver: String,
    /// What it runs: the SQL statement, or the job's name.
    #[serde(default)]
    pub description: String,
    /// `queued`, `running`, `fetching`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was submitted.
    pub submitted_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Its stages, in dependency order (the last is the final stage).
    #[serde(default)]
    pub stages: Vec<StageReport>,
    /// The executors that ran its tasks.
    #[serde(default)]
    pub executors: Vec<ExecutorReport>,
}

impl JobReport {
    /// Whether the job has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }

    /// Partitions done and in all, over every stage.
    pub fn progress(&self) -> (u64, u64) {
        self.stages.iter().fold((0, 0), |(d, t), s| {
            (d + u64::from(s.done), t + u64::from(s.partitions))
        })
    }
}

/// One stage of a job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Its index in the job.
    pub stage: u32,
    /// The stages it reads.
    #[serde(default)]
    pub inputs: Vec<u32>,
    /// Its tasks (partitions).
    pub partitions: u32,
    /// Partitions done.
    pub done: u32,
    /// Attempts running now.
    pub running: u32,
    /// Attempts launched in all.
    pub launched: u32,
    /// Attempts that failed.
    pub failed: u32,
    /// Attempts run again because their output was lost.
    pub recomputed: u32,
    /// Speculative copies launched.
    pub speculative: u32,
    /// Speculative copies that finished first.
    pub speculative_wins: u32,
    /// Rows written by the winning attempts.
    pub rows: u64,
    /// Bytes written by the winning attempts.
    pub bytes: u64,
    /// From its first launch to its last finish, milliseconds.
    pub elapsed_ms: u64,
    /// Its physical plan, operators in pre-order.
    #[serde(default)]
    pub operators: Vec<OperatorReport>,
    /// Its task attempts (at most [`MAX_ATTEMPTS_PER_STAGE`]).
    #[serde(default)]
    pub attempts: Vec<AttemptReport>,
}

/// One operator of a stage's plan, with its metrics summed over the
/// stage's finished attempts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorReport {
    /// Its depth in the stage's plan (the root is 0).
    pub depth: u32,
    /// One line describing it (`HashJoinExec: mode=Partitioned, …`).
    pub name: String,
    /// Rows it produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_rows: Option<u64>,
    /// Cpu time it spent computing, nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_compute_ns: Option<u64>,
    /// Bytes it spilled to disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spilled_bytes: Option<u64>,
}

/// One attempt of one task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    /// The partition it computes.
    pub partition: u32,
    /// Its attempt number.
    pub attempt: u32,
    /// The executor it ran on (a task of the driver's framework).
    pub executor: String,
    /// `running`, `finished`, `failed`, `fetch_failed`, `cancelled` or
    /// `query_error`.
    pub state: String,
    /// A speculative copy.
    #[serde(default)]
    pub speculative: bool,
    /// Rows it wrote.
    #[serde(default)]
    pub rows: u64,
    /// Bytes it wrote.
    #[serde(default)]
    pub bytes: u64,
    /// Its run time, milliseconds (once ended).
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Its error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One executor of a job's driver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutorReport {
    /// Its id: the task id of its executor task in the driver's framework.
    pub id: String,
    /// Its host.
    pub host: String,
    /// Its task slots.
    pub slots: u32,
    /// Its shuffle service.
    pub flight_address: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_round_trips_and_counts_its_progress() {
        let r = JobReport {
            id: "job-1-ab".into(),
            framework_id: "m1-0001".into(),
            state: "running".into(),
            stages: vec![
                StageReport {
                    stage: 0,
                    partitions: 4,
                    done: 4,
                    ..Default::default()
                },
                StageReport {
                    stage: 1,
                    inputs: vec![0],
                    partitions: 2,
                    done: 1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<JobReport>(&json).unwrap(), r);
        assert_eq!(r.progress(), (5, 6));
        assert!(!r.is_terminal());
    }
}
