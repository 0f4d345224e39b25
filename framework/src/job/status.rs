//! A submitted job's status: what its driver recorded in `job.json`
//! ([`JobFile`]) combined with what the manager knows of its driver task.
//! A driver that ended without recording an outcome failed, or was
//! cancelled when its framework was torn down.

use serde::Serialize;
use strata_proto::pb::TaskState;

use super::record::{JOB_PREFIX, JobFile, JobState};

/// A job as `strata jobs` shows it: its driver's record and task combined.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobStatus {
    /// The job's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its framework.
    pub framework_id: String,
    /// Where it is.
    pub state: JobState,
    /// Stages done.
    pub stages_done: u64,
    /// Stages.
    pub stages: u64,
    /// Tasks done.
    pub tasks_done: u64,
    /// Tasks.
    pub tasks: u64,
    /// When the driver first started.
    pub started_unix_ms: Option<u64>,
    /// When the job ended.
    pub ended_unix_ms: Option<u64>,
    /// How long it ran (so far).
    pub duration_ms: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Restarts of a supervised driver.
    pub restarts: u32,
    /// The driver task's state in the manager, e.g. `TASK_RUNNING`.
    pub driver_task_state: String,
    /// The HTTP address of the driver's agent.
    #[serde(skip)]
    pub agent_address: Option<String>,
    /// Whether the job's framework is still registered.
    #[serde(skip)]
    pub framework_alive: bool,
    /// The framework's role.
    #[serde(skip)]
    pub role: Option<String>,
}

impl JobStatus {
    /// Whether the job has ended.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

/// A job's driver task as the manager shows it (`/api/v1/state`).
#[derive(Clone, Copy, Debug)]
pub struct DriverTask<'a> {
    /// The task's id: the job's id.
    pub id: &'a str,
    /// The task's name: `strata-job:NAME`.
    pub name: &'a str,
    /// Its framework.
    pub framework_id: &'a str,
    /// Its state, e.g. `TASK_RUNNING`.
    pub state: &'a str,
    /// Why, e.g. `REASON_FRAMEWORK_REMOVED`.
    pub reason: &'a str,
    /// The message of its last status.
    pub message: &'a str,
    /// The HTTP address of its agent, if the agent is known.
    pub agent_address: Option<&'a str>,
    /// The role of its framework, if the framework is still registered.
    pub framework_role: Option<&'a str>,
}

impl DriverTask<'_> {
    /// Whether a task (by name and id) is the driver of a submitted job.
    pub fn is_driver(name: &str, id: &str) -> bool {
        name.starts_with(JOB_PREFIX) && id.starts_with("job-")
    }
}

/// Combines a driver task and its `job.json` (if it could be read) at
/// `now_ms`.
pub fn resolve(task: &DriverTask<'_>, file: Option<JobFile>, now_ms: u64) -> JobStatus {
    let f = file.unwrap_or_default();
    let (state, error) = state_of(task, &f);
    let started = (f.started_unix_ms > 0).then_some(f.started_unix_ms);
    let terminal = state.is_terminal();
    // A driver killed before recording its end has no known end time.
    let ended = if terminal { f.ended_unix_ms } else { None };
    let duration_ms = match (started, ended) {
        (Some(s), Some(e)) => Some(e.saturating_sub(s)),
        (Some(s), None) if !terminal => Some(now_ms.saturating_sub(s)),
        _ => None,
    };
    JobStatus {
        id: task.id.to_owned(),
        name: task
            .name
            .strip_prefix(JOB_PREFIX)
            .unwrap_or(task.name)
            .to_owned(),
        framework_id: task.framework_id.to_owned(),
        state,
        stages_done: f.stages_done,
        stages: f.stages,
        tasks_done: f.tasks_done,
        tasks: f.tasks,
        started_unix_ms: started,
        ended_unix_ms: ended,
        duration_ms,
        error,
        restarts: f.restarts,
        driver_task_state: task.state.to_owned(),
        agent_address: task.agent_address.map(str::to_owned),
        framework_alive: task.framework_role.is_some(),
        role: task.framework_role.map(str::to_owned),
    }
}

/// The job's state and error: the recorded outcome if there is one, else
/// what the driver task's state implies.
fn state_of(task: &DriverTask<'_>, f: &JobFile) -> (JobState, Option<String>) {
    let task_state = TaskState::from_str_name(task.state).unwrap_or(TaskState::TaskLost);
    let ended_task = task_state.is_terminal() || task_state == TaskState::TaskLost;
    if f.is_terminal() {
        (f.state, f.error.clone())
    } else if ended_task {
        if task_state == TaskState::TaskKilled && task.reason == "REASON_FRAMEWORK_REMOVED" {
            return (
                JobState::Cancelled,
                Some("the job's framework was torn down (cancelled)".to_owned()),
            );
        }
        let msg = if task.message.is_empty() {
            String::new()
        } else {
            format!(": {}", task.message)
        };
        (
            JobState::Failed,
            Some(format!(
                "the driver task ended {} ({}){msg} without recording an outcome",
                task.state, task.reason
            )),
        )
    } else if f.state == JobState::Running || task_state == TaskState::TaskRunning {
        (JobState::Running, f.error.clone())
    } else {
        (JobState::Starting, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task<'a>(state: &'a str, reason: &'a str) -> DriverTask<'a> {
        DriverTask {
            id: "job-0123456789ab",
            name: "strata-job:q",
            framework_id: "fw-1",
            state,
            reason,
            message: "",
            agent_address: Some("127.0.0.1:5051"),
            framework_role: Some("*"),
        }
    }

    fn file(state: JobState, started: u64, ended: Option<u64>) -> JobFile {
        JobFile {
            state,
            started_unix_ms: started,
            ended_unix_ms: ended,
            ..JobFile::default()
        }
    }

    #[test]
    fn a_recorded_outcome_wins() {
        let mut f = file(JobState::Failed, 1_000, Some(4_000));
        f.error = Some("boom".into());
        let s = resolve(&task("TASK_FINISHED", "REASON_UNSPECIFIED"), Some(f), 9_000);
        assert_eq!(
            (s.state, s.error.as_deref(), s.duration_ms),
            (JobState::Failed, Some("boom"), Some(3_000))
        );
        assert_eq!((s.name.as_str(), s.framework_alive), ("q", true));
        assert!(s.is_terminal());
    }

    #[test]
    fn a_driver_that_ended_without_an_outcome_failed_or_was_cancelled() {
        let running = Some(file(JobState::Running, 1_000, None));
        let killed = task("TASK_KILLED", "REASON_FRAMEWORK_REMOVED");
        let s = resolve(&killed, running.clone(), 9_000);
        assert_eq!(s.state, JobState::Cancelled);
        assert_eq!(
            s.error.as_deref(),
            Some("the job's framework was torn down (cancelled)")
        );
        // Killed before it recorded its end: no end, no duration.
        assert_eq!((s.ended_unix_ms, s.duration_ms), (None, None));
        let failed = DriverTask {
            message: "exited 9",
            ..task("TASK_FAILED", "REASON_COMMAND_EXITED")
        };
        let s = resolve(&failed, running, 9_000);
        assert_eq!(s.state, JobState::Failed);
        assert_eq!(
            s.error.as_deref(),
            Some(
                "the driver task ended TASK_FAILED (REASON_COMMAND_EXITED): exited 9 \
                 without recording an outcome"
            )
        );
        // An unknown task state counts as lost.
        let s = resolve(&task("TASK_WHATEVER", "REASON_UNSPECIFIED"), None, 0);
        assert_eq!(s.state, JobState::Failed);
    }

    #[test]
    fn a_live_driver_is_starting_until_it_runs() {
        let s = resolve(&task("TASK_STAGING", "REASON_UNSPECIFIED"), None, 5);
        assert_eq!(
            (s.state, s.error, s.started_unix_ms),
            (JobState::Starting, None, None)
        );
        let s = resolve(&task("TASK_RUNNING", "REASON_UNSPECIFIED"), None, 5);
        assert_eq!(s.state, JobState::Running);
        let f = Some(file(JobState::Running, 1_000, None));
        let s = resolve(&task("TASK_STARTING", "REASON_UNSPECIFIED"), f, 3_500);
        assert_eq!((s.state, s.duration_ms), (JobState::Running, Some(2_500)));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["state"], "running");
        assert_eq!(json["driver_task_state"], "TASK_STARTING");
        assert!(json.get("agent_address").is_none());
    }

    #[test]
    fn driver_tasks_are_known_by_name_and_id() {
        assert!(DriverTask::is_driver("strata-job:q", "job-0123456789ab"));
        assert!(!DriverTask::is_driver("strata-job:q", "executor-1"));
        assert!(!DriverTask::is_driver("other", "job-1"));
    }
}
