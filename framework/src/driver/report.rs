//! Job reports for the manager: each job's stages, attempts, operators
//! (with their metrics summed over finished attempts) and executors,
//! recorded by the driver's core as things happen ([`JobRecord`]) and sent
//! to the manager's job history (`PUT /api/v1/jobs/{job}`) by a task of
//! their own ([`Reporter`]), so the manager's web UI shows every job, also
//! after its driver has exited.
//!
//! Reports are best effort: a manager that cannot be reached costs a
//! warning, never a job.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::physical_plan::{ExecutionPlan, displayable};
use strata_proto::exec::{TaskOutcome, TaskStatus};
use strata_proto::jobs::{
    AttemptReport, ExecutorReport, JobReport, MAX_ATTEMPTS_PER_STAGE, OperatorReport, StageReport,
};
use strata_proto::time::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::dag::{StageMetrics, TaskRef};
use super::{ExecutorInfo, JobPhase};

/// How often a running job's report is sent at most.
pub(super) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a report's request may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// One job's report as the core builds it.
pub(super) struct JobRecord {
    report: JobReport,
    /// Where each attempt is in its stage's list.
    attempts: HashMap<(u32, u32, u32), usize>,
    /// Partitions whose first finished attempt's metrics are summed (a
    /// speculative loser's or a repeated status's are not).
    summed: std::collections::HashSet<(u32, u32)>,
    /// Changed since it was last sent.
    dirty: bool,
    /// When it was last sent.
    sent: Option<Instant>,
}

/// A stage's root as the executors run it (the plan whose operators the
/// attempts' metrics list in pre-order).
pub(super) struct StageRoot<'a> {
    pub(super) stage: u32,
    pub(super) inputs: Vec<u32>,
    pub(super) partitions: u32,
    pub(super) root: &'a Arc<dyn ExecutionPlan>,
}

impl JobRecord {
    /// A queued job and its stages' operators.
    pub(super) fn new(id: &str, description: &str, stages: &[StageRoot<'_>]) -> JobRecord {
        let stages = stages
            .iter()
            .map(|s| {
                let mut operators = Vec::new();
                list_operators(s.root.as_ref(), 0, &mut operators);
                StageReport {
                    stage: s.stage,
                    inputs: s.inputs.clone(),
                    partitions: s.partitions,
                    operators,
                    ..Default::default()
                }
            })
            .collect();
        JobRecord {
            report: JobReport {
                id: id.to_owned(),
                description: description.to_owned(),
                state: JobPhase::Queued.as_str().to_owned(),
                submitted_at: Timestamp::now(),
                stages,
                ..Default::default()
            },
            attempts: HashMap::new(),
            summed: Default::default(),
            dirty: true,
            sent: None,
        }
    }

    fn stage_mut(&mut self, stage: u32) -> Option<&mut StageReport> {
        self.report.stages.iter_mut().find(|s| s.stage == stage)
    }

    /// An attempt launched on an executor.
    pub(super) fn launched(&mut self, task: &TaskRef, executor: &str, speculative: bool) {
        let key = (task.stage.get(), task.partition.get(), task.attempt);
        let Some(stage) = self.stage_mut(key.0) else {
            return;
        };
        if stage.attempts.len() >= MAX_ATTEMPTS_PER_STAGE {
            return;
        }
        stage.attempts.push(AttemptReport {
            partition: key.1,
            attempt: key.2,
            executor: executor.to_owned(),
            state: "running".into(),
            speculative,
            ..Default::default()
        });
        let at = stage.attempts.len() - 1;
        self.attempts.insert(key, at);
        self.dirty = true;
    }

    /// An attempt's status from its executor.
    pub(super) fn status(&mut self, status: &TaskStatus) {
        let Some(k) = &status.key else { return };
        let outcome = TaskOutcome::try_from(status.outcome).unwrap_or(TaskOutcome::Failed);
        let at = self
            .attempts
            .get(&(k.stage, k.partition, k.attempt))
            .copied();
        let first = outcome == TaskOutcome::Finished && self.summed.insert((k.stage, k.partition));
        let Some(stage) = self.stage_mut(k.stage) else {
            return;
        };
        if first {
            add_metrics(&mut stage.operators, status);
        }
        if let Some(a) = at.and_then(|at| stage.attempts.get_mut(at)) {
            a.state = outcome_name(outcome).to_owned();
            a.rows = status.rows;
            a.bytes = status.bytes;
            a.elapsed_ms = status.elapsed_micros / 1_000;
            a.error = status.error.clone();
        }
        self.dirty = true;
    }

    /// The scheduler's per-stage figures.
    pub(super) fn stages(&mut self, metrics: &[StageMetrics]) {
        for m in metrics {
            let Some(s) = self.stage_mut(m.stage.get()) else {
                continue;
            };
            let (done, running, launched) = (m.done, m.running, m.launched);
            let changed = s.done != done
                || s.running != running
                || s.launched != launched
                || s.failed != m.failed;
            s.done = done;
            s.running = running;
            s.launched = launched;
            s.failed = m.failed;
            s.recomputed = m.recomputed;
            s.speculative = m.speculative;
            s.speculative_wins = m.speculative_wins;
            s.rows = m.rows;
            s.bytes = m.bytes;
            s.elapsed_ms = m.elapsed.as_millis() as u64;
            self.dirty |= changed;
        }
    }

    /// The job's phase; an ended job's error.
    pub(super) fn phase(&mut self, phase: JobPhase, error: Option<String>) {
        if self.report.state != phase.as_str() {
            self.report.state = phase.as_str().to_owned();
            self.dirty = true;
            // A phase change goes out at once.
            self.sent = None;
        }
        if phase.is_terminal() {
            self.report.ended_at = Some(Timestamp::now());
            self.report.error = error;
            for s in &mut self.report.stages {
                s.running = 0;
                for a in &mut s.attempts {
                    if a.state == "running" {
                        a.state = "cancelled".into();
                    }
                }
            }
        }
    }

    /// The executors the driver has now (those that ran the job's tasks
    /// are kept after they go).
    pub(super) fn executors<'a>(&mut self, executors: impl Iterator<Item = &'a ExecutorInfo>) {
        for e in executors {
            if !self.report.executors.iter().any(|r| r.id == e.id.as_str())
                && self
                    .report
                    .stages
                    .iter()
                    .any(|s| s.attempts.iter().any(|a| a.executor == e.id.as_str()))
            {
                self.report.executors.push(ExecutorReport {
                    id: e.id.to_string(),
                    host: e.host.clone(),
                    slots: e.slots,
                    flight_address: e.flight_address.clone(),
                });
                self.dirty = true;
            }
        }
    }

    /// The report, when it should be sent now: changed, and the last one
    /// is older than [`REPORT_INTERVAL`] (or the phase changed).
    pub(super) fn due(&mut self, now: Instant) -> Option<JobReport> {
        let quiet = self
            .sent
            .is_some_and(|at| now.duration_since(at) < REPORT_INTERVAL);
        if !self.dirty || quiet {
            return None;
        }
        self.dirty = false;
        self.sent = Some(now);
        Some(self.report.clone())
    }

    /// The report as it is.
    #[cfg(test)]
    pub(super) fn report(&self) -> &JobReport {
        &self.report
    }
}

fn outcome_name(o: TaskOutcome) -> &'static str {
    match o {
        TaskOutcome::Finished => "finished",
        TaskOutcome::FetchFailed => "fetch_failed",
        TaskOutcome::Cancelled => "cancelled",
        TaskOutcome::QueryError => "query_error",
        TaskOutcome::Failed | TaskOutcome::Unspecified => "failed",
    }
}

/// A plan's operators in pre-order, as the executor lists their metrics.
fn list_operators(plan: &dyn ExecutionPlan, depth: u32, out: &mut Vec<OperatorReport>) {
    out.push(OperatorReport {
        depth,
        name: displayable(plan)
            .one_line()
            .to_string()
            .trim_end()
            .to_owned(),
        ..Default::default()
    });
    for child in plan.children() {
        list_operators(child.as_ref(), depth + 1, out);
    }
}

/// Adds a finished attempt's operator metrics to its stage's sums (by
/// position; a plan of another shape than the driver's is ignored).
fn add_metrics(operators: &mut [OperatorReport], status: &TaskStatus) {
    if status.operators.len() != operators.len() {
        return;
    }
    let sum = |into: &mut Option<u64>, v: Option<u64>| {
        if let Some(v) = v {
            *into = Some(into.unwrap_or(0).saturating_add(v));
        }
    };
    for (op, m) in operators.iter_mut().zip(&status.operators) {
        sum(&mut op.output_rows, m.output_rows);
        sum(&mut op.elapsed_compute_ns, m.elapsed_compute_nanos);
        sum(&mut op.spilled_bytes, m.spilled_bytes);
    }
}

enum ReportMsg {
    Report(Box<JobReport>),
    Flush(oneshot::Sender<()>),
}

/// Sends job reports to the manager from a task of its own: the latest
/// report of each job, one request at a time (reports that queue meanwhile
/// replace older ones of their job).
#[derive(Clone)]
pub(super) struct Reporter {
    tx: mpsc::UnboundedSender<ReportMsg>,
}

impl Reporter {
    /// Starts the reporting task for a driver's framework.
    pub(super) fn spawn(
        manager: String,
        token: Option<String>,
        framework_id: String,
        driver: String,
    ) -> Reporter {
        let (tx, rx) = mpsc::unbounded_channel();
        let target = Target {
            manager,
            token,
            framework_id,
            driver,
        };
        tokio::spawn(target.run(rx));
        Reporter { tx }
    }

    /// Queues a report.
    pub(super) fn send(&self, report: JobReport) {
        self.tx.send(ReportMsg::Report(Box::new(report))).ok();
    }

    /// Waits (at most `timeout`) until what is queued has been sent.
    pub(super) async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(ReportMsg::Flush(done)).is_ok() {
            tokio::time::timeout(timeout, wait).await.ok();
        }
    }
}

struct Target {
    manager: String,
    token: Option<String>,
    framework_id: String,
    driver: String,
}

impl Target {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<ReportMsg>) {
        let mut pending: BTreeMap<String, JobReport> = BTreeMap::new();
        let mut flushes = Vec::new();
        let mut warned = false;
        while let Some(msg) = rx.recv().await {
            let mut next = Some(msg);
            while let Some(msg) = next {
                match msg {
                    ReportMsg::Report(r) => {
                        pending.insert(r.id.clone(), *r);
                    }
                    ReportMsg::Flush(done) => flushes.push(done),
                }
                next = rx.try_recv().ok();
            }
            for (_, mut report) in std::mem::take(&mut pending) {
                report.framework_id = self.framework_id.clone();
                report.driver = self.driver.clone();
                if let Err(e) = self.put(&report).await {
                    if warned {
                        debug!(job_id = %report.id, error = %e, "cannot report a job to the manager");
                    } else {
                        warn!(job_id = %report.id, error = %e, "cannot report a job to the manager");
                        warned = true;
                    }
                }
            }
            for done in flushes.drain(..) {
                done.send(()).ok();
            }
        }
    }

    async fn put(&self, report: &JobReport) -> Result<(), String> {
        let body = serde_json::to_vec(report).map_err(|e| e.to_string())?;
        let path = format!("/api/v1/jobs/{}", report.id);
        let (_, (status, _, body)) = strata_sdk::http::send(
            "PUT",
            &self.manager,
            &path,
            self.token.as_deref(),
            Some(&body),
            REPORT_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::dag::{JobId, PartitionId, StageId};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::empty::EmptyExec;
    use strata_proto::exec::{OperatorMetrics, TaskKey};

    fn task(stage: u32, partition: u32, attempt: u32) -> TaskRef {
        TaskRef {
            job: JobId::new("job-1"),
            stage: StageId::new(stage),
            partition: PartitionId::new(partition),
            attempt,
        }
    }

    #[test]
    fn a_record_follows_attempts_and_sums_operator_metrics() {
        let root: Arc<dyn ExecutionPlan> =
            Arc::new(EmptyExec::new(Arc::new(Schema::empty())).with_partitions(2));
        let mut r = JobRecord::new(
            "job-1",
            "select 1",
            &[StageRoot {
                stage: 0,
                inputs: vec![],
                partitions: 2,
                root: &root,
            }],
        );
        assert_eq!(r.report().stages[0].operators.len(), 1);
        assert!(
            r.report().stages[0].operators[0]
                .name
                .starts_with("EmptyExec")
        );
        let now = Instant::now();
        assert!(r.due(now).is_some(), "a new job is reported at once");
        assert!(r.due(now).is_none(), "nothing changed");
        r.launched(&task(0, 0, 0), "fw-exec-1", false);
        r.launched(&task(0, 1, 0), "fw-exec-1", true);
        for (partition, rows) in [(0, 3), (1, 4)] {
            r.status(&TaskStatus {
                key: Some(TaskKey {
                    job: "job-1".into(),
                    stage: 0,
                    partition,
                    attempt: 0,
                }),
                outcome: TaskOutcome::Finished as i32,
                rows,
                elapsed_micros: 2_500,
                operators: vec![OperatorMetrics {
                    output_rows: Some(rows),
                    elapsed_compute_nanos: Some(10),
                    spilled_bytes: None,
                }],
                ..Default::default()
            });
        }
        // A second finished copy of partition 1 (a speculative loser's
        // status) adds nothing to the operators' sums.
        r.launched(&task(0, 1, 1), "fw-exec-2", true);
        r.status(&TaskStatus {
            key: Some(TaskKey {
                job: "job-1".into(),
                stage: 0,
                partition: 1,
                attempt: 1,
            }),
            outcome: TaskOutcome::Finished as i32,
            rows: 4,
            operators: vec![OperatorMetrics {
                output_rows: Some(4),
                elapsed_compute_nanos: Some(10),
                spilled_bytes: None,
            }],
            ..Default::default()
        });
        let s = &r.report().stages[0];
        assert_eq!(s.attempts.len(), 3);
        assert_eq!(s.attempts[2].state, "finished");
        assert!(s.attempts.iter().all(|a| a.state == "finished"));
        assert!(s.attempts[1].speculative);
        assert_eq!(s.attempts[1].elapsed_ms, 2);
        assert_eq!(s.operators[0].output_rows, Some(7));
        assert_eq!(s.operators[0].elapsed_compute_ns, Some(20));
        assert_eq!(s.operators[0].spilled_bytes, None);
        assert!(r.due(now).is_none(), "within the interval");
        r.phase(JobPhase::Succeeded, None);
        let sent = r.due(now).expect("a phase change goes out at once");
        assert_eq!(sent.state, "succeeded");
        assert!(sent.ended_at.is_some());
    }
}
