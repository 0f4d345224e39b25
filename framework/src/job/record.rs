//! `job.json`: what a submitted job's driver records in its sandbox, where
//! `strata jobs` reads it through the agent.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::driver::dag::StageMetrics;

/// The prefix of a job's framework name and of its driver task's name.
pub const JOB_PREFIX: &str = "strata-job:";

/// The job's status file, in its driver's sandbox.
pub const JOB_FILE: &str = "job.json";

/// Where a submitted job is. Written in lower case (`running`) in
/// `job.json`, in `strata jobs --json` and in what people read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Its driver has not started it yet (also: no state recorded).
    #[default]
    Starting,
    /// Its driver runs it.
    Running,
    /// It ended successfully.
    Succeeded,
    /// It failed.
    Failed,
    /// It was cancelled (its framework torn down, its driver stopped).
    Cancelled,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// Its name: `starting`, `running`, `succeeded`, `failed` or
    /// `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job's driver records in `job.json` in its sandbox (written
/// atomically, updated as the job progresses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobFile {
    /// The job's id (also its driver's task id).
    pub id: String,
    /// The job's name.
    pub name: String,
    /// Where the job is (`running` until it ends).
    pub state: JobState,
    /// Stages done, over the job's queries so far.
    pub stages_done: u64,
    /// Stages, over the job's queries so far.
    pub stages: u64,
    /// Tasks (partitions) done.
    pub tasks_done: u64,
    /// Tasks (partitions).
    pub tasks: u64,
    /// When the driver first started (ms since the Unix epoch).
    pub started_unix_ms: u64,
    /// When the job ended, once it has.
    pub ended_unix_ms: Option<u64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How many times a supervised driver was restarted.
    pub restarts: u32,
}

impl JobFile {
    /// Whether the recorded state is final.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// Reads a job file; `None` if it is missing or unreadable.
    pub fn read(path: &Path) -> Option<JobFile> {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Writes it atomically and durably ([`strata_proto::fsutil::write_atomic`]).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        strata_proto::fsutil::write_atomic(path, &body)
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Keeps `job.json` up to date.
pub struct Recorder {
    path: PathBuf,
    file: Mutex<JobFile>,
}

impl Recorder {
    /// Continues the record in `path` (a restarted driver keeps the start
    /// time and the restarts), or starts one.
    pub fn open(path: PathBuf, id: &str, name: &str) -> Recorder {
        let mut f = JobFile::read(&path).unwrap_or_default();
        f.id = id.to_owned();
        f.name = name.to_owned();
        if f.started_unix_ms == 0 {
            f.started_unix_ms = unix_ms();
        }
        f.state = JobState::Running;
        f.ended_unix_ms = None;
        f.error = None;
        Counts::default().record(&mut f);
        let r = Recorder {
            path,
            file: Mutex::new(f.clone()),
        };
        r.write(&f);
        r
    }

    fn write(&self, f: &JobFile) {
        if let Err(e) = f.write(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the job file");
        }
    }

    /// Changes the record, and writes it if it changed.
    pub fn update(&self, change: impl FnOnce(&mut JobFile)) {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let before = f.clone();
        change(&mut f);
        if *f != before {
            self.write(&f);
        }
    }

    /// Records the outcome, unless one is recorded already.
    pub fn finish(&self, state: JobState, error: Option<String>) {
        self.update(|f| {
            if !f.is_terminal() {
                f.state = state;
                f.error = error;
                f.ended_unix_ms = Some(unix_ms());
            }
        });
    }

    /// The recorded state.
    pub fn state(&self) -> JobState {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).state
    }
}

/// Stages done, stages, tasks done, tasks: a job's progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts(pub u64, pub u64, pub u64, pub u64);

impl Counts {
    /// The progress of a query's stages.
    pub fn of(stages: &[StageMetrics]) -> Counts {
        Counts(
            stages.iter().filter(|s| s.done >= s.tasks).count() as u64,
            stages.len() as u64,
            stages.iter().map(|s| u64::from(s.done.min(s.tasks))).sum(),
            stages.iter().map(|s| u64::from(s.tasks)).sum(),
        )
    }

    /// The sum of two.
    pub fn plus(self, o: Counts) -> Counts {
        Counts(self.0 + o.0, self.1 + o.1, self.2 + o.2, self.3 + o.3)
    }

    /// Sets the record's progress.
    pub fn record(self, f: &mut JobFile) {
        f.stages_done = self.0;
        f.stages = self.1;
        f.tasks_done = self.2;
        f.tasks = self.3;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_files_tolerate_missing_fields() {
        let f: JobFile = serde_json::from_str(r#"{"id":"job-1","state":"running"}"#).unwrap();
        assert_eq!(f.id, "job-1");
        assert_eq!(f.state, JobState::Running);
        assert!(!f.is_terminal());
        assert_eq!(f.restarts, 0);
        let f: JobFile = serde_json::from_str(r#"{"id":"job-1"}"#).unwrap();
        assert_eq!(f.state, JobState::Starting);
    }

    #[test]
    fn job_states_read_and_write_as_before() {
        for (state, name, terminal) in [
            (JobState::Starting, "starting", false),
            (JobState::Running, "running", false),
            (JobState::Succeeded, "succeeded", true),
            (JobState::Failed, "failed", true),
            (JobState::Cancelled, "cancelled", true),
        ] {
            assert_eq!(state.to_string(), name);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{name}\"")
            );
            let back: JobState = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!((back, back.is_terminal()), (state, terminal));
        }
    }

    #[test]
    fn a_reopened_record_keeps_its_start_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOB_FILE);
        let r = Recorder::open(path.clone(), "job-1", "q");
        r.update(|f| {
            f.restarts = 2;
            Counts(1, 2, 3, 4).record(f);
        });
        r.finish(JobState::Failed, Some("boom".into()));
        r.finish(JobState::Succeeded, None);
        let f = JobFile::read(&path).unwrap();
        assert_eq!(
            (f.state, f.error.as_deref()),
            (JobState::Failed, Some("boom"))
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""state": "failed""#), "{text}");
        let started = f.started_unix_ms;
        let r = Recorder::open(path.clone(), "job-1", "q");
        assert_eq!(r.state(), JobState::Running);
        let f = JobFile::read(&path).unwrap();
        assert_eq!((f.started_unix_ms, f.restarts, f.tasks), (started, 2, 0));
        assert_eq!(f.ended_unix_ms, None);
    }
}
