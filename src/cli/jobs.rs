//! `strata jobs`: the jobs submitted with `strata submit`, and
//! `strata jobs cancel`.
//!
//! A job is a framework named `strata-job:<NAME>` whose one task of its
//! own, the job's driver, has the job's id as its task id (and the
//! framework's name as its name). Its executors are further tasks of the
//! same framework. The driver keeps `job.json` ([`JobFile`]) in its sandbox;
//! the list reads it through the agent's HTTP API and combines it with the
//! driver task's state in the manager
//! ([`strata_framework::job::status::resolve`]): a driver that ended
//! without recording an outcome failed (or was cancelled, when its
//! framework was torn down).
//!
//! Cancelling takes the job's framework over (subscribing with its id, as
//! a failed-over scheduler would) and tears it down: the manager kills the
//! driver and the executors, and their resources return.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use strata_framework::job::record::{JOB_FILE, JOB_PREFIX, JobFile, JobState, unix_ms};
use strata_framework::job::status::{self, DriverTask, JobStatus};
use strata_framework::job::teardown_framework;
use strata_manager::master::view::{StateView, TaskView};

use super::ClientArgs;
use strata_sdk::http;

/// Jobs that ended longer ago than this are listed only with `--all`.
const RECENT: Duration = Duration::from_secs(3600);

/// Arguments of `strata jobs`.
#[derive(clap::Args, Debug)]
pub struct JobsArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Also list jobs that ended more than an hour ago (every job the manager remembers).
    #[arg(long)]
    all: bool,
    /// Print one JSON object per job instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Option<JobsAction>,
}

#[derive(clap::Subcommand, Debug)]
enum JobsAction {
    /// Cancel a job: its framework is torn down, which kills its driver and executors and returns their resources.
    Cancel {
        #[command(flatten)]
        client: ClientArgs,
        /// The job's id (as `strata submit` printed it).
        id: String,
    },
}

/// `strata jobs`.
pub async fn run(a: JobsArgs) -> anyhow::Result<ExitCode> {
    if let Some(JobsAction::Cancel { client, id }) = a.action {
        let client = ClientArgs {
            manager: client.manager.or(a.client.manager),
            token: client.token.or(a.client.token),
        };
        return cancel(&client, &id).await;
    }
    let target = a.client.target();
    let token = target.token.as_deref();
    let state = fetch_state(&target.address, token).await?;
    let now = unix_ms();
    let jobs: Vec<JobStatus> = statuses(&state, token)
        .await
        .into_iter()
        .filter(|j| {
            a.all
                || !j.is_terminal()
                || j.ended_unix_ms
                    .is_none_or(|e| now.saturating_sub(e) < RECENT.as_millis() as u64)
        })
        .collect();
    if a.json {
        for j in &jobs {
            println!("{}", serde_json::to_string(j)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        println!(
            "no jobs{}",
            if a.all {
                ""
            } else {
                " (in the last hour; --all for every job)"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&jobs));
    Ok(ExitCode::SUCCESS)
}

/// The jobs as a table, followed by the errors of those that failed.
fn render(jobs: &[JobStatus]) -> String {
    let mut t = super::table(&["ID", "NAME", "STATE", "PROGRESS", "DURATION"]);
    for j in jobs {
        let mut state = j.state.to_string();
        if j.restarts > 0 {
            state.push_str(&format!(
                " ({} restart{})",
                j.restarts,
                if j.restarts == 1 { "" } else { "s" }
            ));
        }
        t.add_row(vec![
            j.id.clone(),
            j.name.clone(),
            state,
            if j.stages == 0 {
                "-".to_owned()
            } else {
                format!(
                    "stages {}/{}, tasks {}/{}",
                    j.stages_done, j.stages, j.tasks_done, j.tasks
                )
            },
            j.duration_ms.map_or_else(|| "-".to_owned(), human_duration),
        ]);
    }
    let mut out = format!("{t}\n");
    for j in jobs {
        if let Some(e) = j
            .error
            .as_deref()
            .filter(|_| j.state != JobState::Succeeded)
        {
            out.push_str(&format!("{} {}: {e}\n", j.id, j.state));
        }
    }
    out
}

/// `1.2s`, `3m04s`, `2h05m`.
fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// `GET /api/v1/state`.
pub(crate) async fn fetch_state(address: &str, token: Option<&str>) -> anyhow::Result<StateView> {
    let body = http::get(address, "/api/v1/state", token, Duration::from_secs(10))
        .await
        .with_context(|| {
            format!(
                "cannot reach the manager at {address} (is a cluster running? try `strata local`)"
            )
        })?;
    serde_json::from_slice(&body).context("malformed state from the manager")
}

/// The driver tasks of jobs in the state (active first, then completed;
/// one per job).
fn driver_tasks(state: &StateView) -> Vec<&TaskView> {
    let mut seen = std::collections::HashSet::new();
    state
        .tasks
        .iter()
        .chain(state.completed_tasks.iter().rev())
        .filter(|t| DriverTask::is_driver(&t.name, &t.id))
        .filter(|t| seen.insert((t.framework_id.clone(), t.id.clone())))
        .collect()
}

/// Reads a file of a task's sandbox through its agent; `None` when it
/// cannot be read (no such file yet, agent gone).
pub(crate) async fn read_sandbox_file(
    agent: &str,
    framework_id: &str,
    task_id: &str,
    file: &str,
    token: Option<&str>,
) -> Option<Vec<u8>> {
    let path = format!("/v1/sandbox/{framework_id}/{task_id}/{file}");
    http::get(agent, &path, token, Duration::from_secs(10))
        .await
        .ok()
}

/// Combines a driver task, its framework and its `job.json`.
fn resolve(state: &StateView, task: &TaskView, file: Option<JobFile>, now_ms: u64) -> JobStatus {
    let driver = DriverTask {
        id: &task.id,
        name: &task.name,
        framework_id: &task.framework_id,
        state: &task.state,
        reason: &task.reason,
        message: &task.message,
        agent_address: state
            .agents
            .iter()
            .find(|a| a.id == task.agent_id)
            .map(|a| a.address.as_str()),
        framework_role: state
            .frameworks
            .iter()
            .find(|f| f.id == task.framework_id)
            .map(|f| f.role.as_str()),
    };
    status::resolve(&driver, file, now_ms)
}

/// Every job the state knows, oldest first.
async fn statuses(state: &StateView, token: Option<&str>) -> Vec<JobStatus> {
    let tasks = driver_tasks(state);
    let files =
        futures::future::join_all(tasks.iter().map(|t| read_job_file(state, t, token))).await;
    let now = unix_ms();
    let mut jobs: Vec<JobStatus> = tasks
        .into_iter()
        .zip(files)
        .map(|(t, f)| resolve(state, t, f, now))
        .collect();
    jobs.sort_by_key(|j| (j.started_unix_ms.unwrap_or(u64::MAX), j.id.clone()));
    jobs
}

async fn read_job_file(state: &StateView, task: &TaskView, token: Option<&str>) -> Option<JobFile> {
    let agent = state.agents.iter().find(|a| a.id == task.agent_id)?;
    let bytes = read_sandbox_file(
        &agent.address,
        &task.framework_id,
        &task.id,
        JOB_FILE,
        token,
    )
    .await?;
    serde_json::from_slice(&bytes).ok()
}

/// The job `id`, if the manager knows its driver task.
pub(crate) async fn find(
    address: &str,
    token: Option<&str>,
    id: &str,
) -> anyhow::Result<Option<JobStatus>> {
    let state = fetch_state(address, token).await?;
    let Some(task) = driver_tasks(&state).into_iter().find(|t| t.id == id) else {
        return Ok(None);
    };
    let file = read_job_file(&state, task, token).await;
    Ok(Some(resolve(&state, task, file, unix_ms())))
}

/// `strata jobs cancel ID`.
async fn cancel(client: &ClientArgs, id: &str) -> anyhow::Result<ExitCode> {
    let target = client.target();
    let token = target.token.as_deref();
    let Some(job) = find(&target.address, token, id).await? else {
        bail!("unknown job {id:?} (`strata jobs --all` lists the jobs the manager knows)");
    };
    if job.is_terminal() || !job.framework_alive {
        bail!("job {id} has already ended ({})", job.state);
    }
    teardown_framework(
        &target.address,
        token,
        &job.framework_id,
        &format!("{JOB_PREFIX}{}", job.name),
        job.role.as_deref().unwrap_or("*"),
    )
    .await?;
    println!("cancelled {id}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(1234), "1.2s");
        assert_eq!(human_duration(184_000), "3m04s");
        assert_eq!(human_duration(7_500_000), "2h05m");
    }
}
