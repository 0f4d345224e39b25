//! The job history: the latest report of every batch job the cluster's
//! drivers run (`PUT /api/v1/jobs/{job}`, [`strata_proto::jobs`]), the
//! running ones and a bounded history of finished ones, so that the web UI
//! and `GET /api/v1/jobs` answer "why was last night's ETL slow" after its
//! driver has exited.
//!
//! It is not cluster state: it lives beside the core (not in the master,
//! nor in the registry) and a new leader starts with an empty one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use strata_proto::jobs::JobReport;

/// Finished jobs kept by default.
pub const DEFAULT_KEPT: usize = 1_000;

/// Why a report was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobReportError {
    /// The path's job and the report's differ.
    #[error("the report is of job {report:?}, not {path:?}")]
    IdMismatch {
        /// The path's.
        path: String,
        /// The report's.
        report: String,
    },
    /// The id is not one.
    #[error("invalid job id {0:?}: 1 to 128 letters, digits, '.', '_' or '-'")]
    InvalidId(String),
    /// The job is another framework's.
    #[error("job {job:?} is framework {framework}'s")]
    Framework {
        /// The job.
        job: String,
        /// Its framework.
        framework: String,
    },
    /// The report is larger than the history keeps.
    #[error("the report is too large: {0}")]
    TooLarge(String),
    /// The state is not one.
    #[error("invalid job state {0:?}: queued, running, fetching, succeeded, failed or cancelled")]
    InvalidState(String),
}

/// The history, shared by the API's handlers.
pub struct JobHistory {
    inner: Mutex<Inner>,
    keep: usize,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<String, Arc<JobReport>>,
    /// Finished jobs, oldest first.
    finished: VecDeque<String>,
    /// Running jobs, oldest report first (the same bound holds for them,
    /// so drivers that die mid-job cannot grow it without end).
    running: VecDeque<String>,
}

impl JobHistory {
    /// An empty history that keeps `keep` finished jobs (and as many
    /// running ones).
    pub fn new(keep: usize) -> JobHistory {
        JobHistory {
            inner: Mutex::new(Inner::default()),
            keep: keep.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a job's latest report (sent to `/api/v1/jobs/{path_id}`).
    pub fn put(&self, path_id: &str, report: JobReport) -> Result<(), JobReportError> {
        if report.id != path_id {
            return Err(JobReportError::IdMismatch {
                path: path_id.to_owned(),
                report: report.id,
            });
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if report.id.is_empty() || report.id.len() > 128 || !report.id.chars().all(valid) {
            return Err(JobReportError::InvalidId(report.id));
        }
        check_size(&report)?;
        if !matches!(
            report.state.as_str(),
            "queued" | "running" | "fetching" | "succeeded" | "failed" | "cancelled"
        ) {
            return Err(JobReportError::InvalidState(report.state));
        }
        let mut inner = self.lock();
        if let Some(was) = inner.jobs.get(&report.id)
            && was.framework_id != report.framework_id
        {
            return Err(JobReportError::Framework {
                job: report.id,
                framework: was.framework_id.clone(),
            });
        }
        if !report.is_terminal() && inner.jobs.get(&report.id).is_some_and(|w| w.is_terminal()) {
            // A late report of an ended job's progress: the end stands.
            return Ok(());
        }
        let id = report.id.clone();
        let terminal = report.is_terminal();
        let was = inner.jobs.insert(id.clone(), Arc::new(report));
        let was_terminal = was.as_ref().is_some_and(|w| w.is_terminal());
        if was.is_some() && !was_terminal {
            inner.running.retain(|r| r != &id);
        }
        if was_terminal {
            // A finished job stays where it is in the history.
        } else if terminal {
            inner.finished.push_back(id);
        } else {
            inner.running.push_back(id);
        }
        while inner.finished.len() > self.keep {
            if let Some(old) = inner.finished.pop_front() {
                inner.jobs.remove(&old);
            }
        }
        while inner.running.len() > self.keep {
            if let Some(old) = inner.running.pop_front() {
                inner.jobs.remove(&old);
            }
        }
        Ok(())
    }

    /// One job's report.
    pub fn get(&self, id: &str) -> Option<Arc<JobReport>> {
        self.lock().jobs.get(id).cloned()
    }

    /// Every job, the latest submitted first.
    pub fn list(&self) -> Vec<Arc<JobReport>> {
        let mut all: Vec<Arc<JobReport>> = self.lock().jobs.values().cloned().collect();
        all.sort_by(|a, b| {
            b.submitted_at
                .cmp(&a.submitted_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        all
    }
}

/// The most stages and operators per stage a report may have (attempts
/// are bounded by [`strata_proto::jobs::MAX_ATTEMPTS_PER_STAGE`]).
pub const MAX_STAGES: usize = 1_000;
/// See [`MAX_STAGES`].
pub const MAX_OPERATORS: usize = 1_000;

fn check_size(r: &JobReport) -> Result<(), JobReportError> {
    use strata_proto::jobs::MAX_ATTEMPTS_PER_STAGE;
    if r.stages.len() > MAX_STAGES {
        return Err(JobReportError::TooLarge(format!(
            "{} stages",
            r.stages.len()
        )));
    }
    if let Some(s) = r
        .stages
        .iter()
        .find(|s| s.operators.len() > MAX_OPERATORS || s.attempts.len() > MAX_ATTEMPTS_PER_STAGE)
    {
        return Err(JobReportError::TooLarge(format!(
            "stage {}: {} operators, {} attempts",
            s.stage,
            s.operators.len(),
            s.attempts.len()
        )));
    }
    if r.description.len() > 64 * 1024 || r.executors.len() > 10_000 {
        return Err(JobReportError::TooLarge(
            "its description or executors".into(),
        ));
    }
    Ok(())
}

impl Default for JobHistory {
    fn default() -> Self {
        JobHistory::new(DEFAULT_KEPT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::time::Timestamp;

    fn report(id: &str, state: &str, at: u64) -> JobReport {
        JobReport {
            id: id.into(),
            framework_id: "fw".into(),
            state: state.into(),
            submitted_at: Timestamp::from_millis(at),
            ..Default::default()
        }
    }

    #[test]
    fn finished_jobs_are_kept_up_to_the_bound_newest_first() {
        let h = JobHistory::new(3);
        for i in 0..5u64 {
            let id = format!("job-{i}");
            h.put(&id, report(&id, "running", i)).unwrap();
            h.put(&id, report(&id, "succeeded", i)).unwrap();
        }
        let ids: Vec<String> = h.list().iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids, ["job-4", "job-3", "job-2"]);
        assert!(h.get("job-1").is_none());
        // A late report of a finished job replaces it, not its place.
        h.put("job-2", report("job-2", "succeeded", 2)).unwrap();
        h.put("job-5", report("job-5", "failed", 5)).unwrap();
        assert!(h.get("job-2").is_none(), "job-2 was the oldest finished");
        assert_eq!(h.list().len(), 3);
    }

    #[test]
    fn running_jobs_are_bounded_too_and_bad_reports_refused() {
        let h = JobHistory::new(2);
        for i in 0..4u64 {
            let id = format!("job-{i}");
            h.put(&id, report(&id, "running", i)).unwrap();
        }
        assert_eq!(h.list().len(), 2);
        assert_eq!(
            h.put("job-9", report("job-8", "running", 0)),
            Err(JobReportError::IdMismatch {
                path: "job-9".into(),
                report: "job-8".into()
            })
        );
        assert!(matches!(
            h.put("a/b", report("a/b", "running", 0)),
            Err(JobReportError::InvalidId(_))
        ));
        assert!(matches!(
            h.put("j", report("j", "exploded", 0)),
            Err(JobReportError::InvalidState(_))
        ));
    }
}
