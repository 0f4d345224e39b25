//! `strata run`: a one-shot framework that runs one command as a task,
//! prints its output (read from the agent's sandbox API) and exits with the
//! task's exit code.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use strata_proto::pb::TaskState;
use strata_proto::resources::Resources;
use strata_sdk::{
    AgentId, Ask, End, FrameworkConfig, FrameworkId, LaunchError, Notice, OneTask, OneTaskOptions,
    SchedulerConfig, SdkError, TaskBuilder, TaskId, TaskInfo, Until,
};

use super::{ClientArgs, parse_duration, parse_mib};
use strata_sdk::http;

/// Arguments of `strata run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// CPUs for the task.
    #[arg(long, default_value_t = 0.5)]
    cpus: f64,
    /// Memory in MiB, or with a unit (`64`, `1g`).
    #[arg(long, default_value = "64", value_parser = parse_mib)]
    mem: f64,
    /// Disk in MiB, or with a unit.
    #[arg(long, default_value = "0", value_parser = parse_mib)]
    disk: f64,
    /// Number of ports to assign (given to the task as PORT0, PORT1, …).
    #[arg(long, default_value_t = 0)]
    ports: u64,
    /// Priority class of the task.
    #[arg(long, default_value = "batch")]
    class: String,
    /// Role of the one-shot framework.
    #[arg(long, default_value = "*")]
    role: String,
    /// Environment variables for the task (`KEY=VALUE`, repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// How long to wait for an agent to register, and for the task to be placed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    wait: Duration,
    /// Print the task's state transitions on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// The run's id, to try it again safely: a run with an id is launched
    /// at most once (a retry follows the task an earlier try launched, or
    /// reports how it ended; once it has ended and its one-shot framework
    /// is gone, a retry exits 3 without running anything).
    #[arg(long)]
    id: Option<String>,
    /// The command. One argument runs through `sh -c`; several run directly.
    #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

#[derive(Deserialize)]
struct AgentRow {
    id: String,
    state: String,
    total: String,
    #[serde(default)]
    address: String,
}

/// Waits (bounded) for a registered agent, and refuses at once an ask that
/// no registered agent could ever hold.
pub(crate) async fn check_capacity(
    address: &str,
    token: Option<&str>,
    ask: &Resources,
    wait: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(50);
    loop {
        let body = http::get(address, "/api/v1/agents", token, Duration::from_secs(10))
            .await
            .with_context(|| format!("cannot reach the manager at {address} (is a cluster running? try `strata local`)"))?;
        let agents: Vec<AgentRow> =
            serde_json::from_slice(&body).context("malformed agent list from the manager")?;
        let registered: Vec<&AgentRow> =
            agents.iter().filter(|a| a.state == "registered").collect();
        if !registered.is_empty() {
            let fits = registered
                .iter()
                .filter_map(|a| Resources::parse(&a.total).ok())
                .any(|t| t.fits_shape(ask));
            if !fits {
                let largest = registered
                    .iter()
                    .map(|a| format!("{} ({})", a.total, a.id))
                    .collect::<Vec<_>>()
                    .join(", ");
                bail!("no agent could ever hold {ask}: the registered agents offer {largest}");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("no agent registered with the manager at {address} within {wait:?}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Exit code of `strata run --id ID` when the run with that id ended
/// before (its framework was torn down): the command is not run again.
const ALREADY_ENDED: u8 = 3;

/// `strata run`.
pub async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let target = a.client.target();
    let token = target.token.as_deref();
    if !(a.cpus.is_finite() && a.cpus >= 0.0) {
        bail!("--cpus must be a number >= 0");
    }
    let mut resources = Resources::new(a.cpus, a.mem).with_disk(a.disk);
    if a.ports > 0 {
        resources.ports = strata_proto::resources::Ranges::from_ranges([(1, a.ports)]);
    }
    if let Some(id) = &a.id {
        strata_manager::master::validate_id("run", id).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
    }
    check_capacity(&target.address, token, &resources, a.wait).await?;
    let task_id = match &a.id {
        Some(id) => {
            // Whether the run was launched is known once every agent of an
            // earlier leader is back.
            wait_agents_back(&target.address, token, a.wait).await?;
            TaskId::new(id.clone())
        }
        None => TaskId::new(strata_proto::ids::random_id("run")),
    };
    let task = command_task(&a, task_id.clone(), resources.clone())?;

    let mut fw = FrameworkConfig::new("strata-run");
    fw.role = strata_proto::ids::Role::new(a.role.clone());
    fw.default_class = a.class.clone();
    fw.failover_timeout = Duration::from_secs(30);
    fw.framework_id =
        a.id.as_ref()
            .map(|id| FrameworkId::new(format!("run-{id}")));
    let mut cfg = SchedulerConfig::new(target.address.clone(), fw);
    cfg.token = target.token.clone();
    let ask = Ask::new(a.class.clone(), resources, 1);
    let subscribed = match a.id {
        Some(_) => OneTask::subscribe_keeping_end(cfg, ask).await,
        None => OneTask::subscribe(cfg, ask).await,
    };
    let mut one = match subscribed {
        Ok(one) => one,
        Err(LaunchError::Subscribe(SdkError::PermissionDenied { message }))
            if a.id.is_some() && message.contains("removed") =>
        {
            eprintln!(
                "strata run: the run with id {task_id} ended before (its framework is gone); not run again"
            );
            return Ok(ExitCode::from(ALREADY_ENDED));
        }
        Err(LaunchError::Subscribe(e)) => return Err(anyhow::Error::new(e)),
        Err(e) => return Err(e.into()),
    };
    let launched = launch_or_attach(&mut one, &a, task).await?;
    let End::Ended(outcome) = launched.end else {
        bail!("the task did not end");
    };
    let agent_addr = match launched.agent_address {
        Some(addr) => addr,
        None => agent_address(&target.address, token, outcome.agent_id.as_ref()).await,
    };
    let fid = one.framework_id();
    if !agent_addr.is_empty()
        && outcome.state != TaskState::TaskError
        && outcome.state != TaskState::TaskDropped
    {
        print_output(&agent_addr, token, &format!("{fid}/{task_id}")).await;
    }
    one.teardown().await;
    let code = match outcome.state {
        TaskState::TaskFinished => 0,
        TaskState::TaskFailed => outcome.exit_code.unwrap_or(1),
        _ => {
            eprintln!("task {} ended {}", task_id, outcome.describe());
            if outcome.state == TaskState::TaskError || outcome.state == TaskState::TaskDropped {
                2
            } else {
                outcome.exit_code.unwrap_or(137)
            }
        }
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Launches the task and follows it to its end; with `--id`, first asks
/// the manager about it: a run tried again follows the task an earlier try
/// launched, or takes the end it had, and launches only one that never
/// reached an agent.
async fn launch_or_attach(
    one: &mut OneTask,
    a: &RunArgs,
    task: TaskInfo,
) -> anyhow::Result<strata_sdk::Launched> {
    let mut options = OneTaskOptions::new(a.wait, Until::Ended);
    options.ports = a.ports;
    let verbose = a.verbose;
    let notice = |n: Notice<'_>| match n {
        Notice::Launching(offer) if verbose => {
            eprintln!(
                "launching {} on {} ({})",
                offer.id, offer.hostname, offer.agent_id
            );
        }
        Notice::Update(s) if verbose => {
            let msg = if s.message.is_empty() {
                String::new()
            } else {
                format!(": {}", s.message)
            };
            eprintln!("{} {}{msg}", s.task_id, s.state.as_str_name());
        }
        Notice::Warning(e) => eprintln!("warning: {e}"),
        _ => {}
    };
    let task_id = task.task_id.clone();
    let known = match a.id {
        Some(_) => match one.status_of(&task_id, Duration::from_secs(10)).await? {
            Some(s) => Some(s),
            None => bail!("the manager did not say whether run {task_id} was launched"),
        },
        None => None,
    };
    let launched = match known {
        Some(s) if s.is_terminal() && !never_ran(s.state) => strata_sdk::Launched {
            agent_address: None,
            end: End::Ended(s),
        },
        Some(s) if !never_ran(s.state) => {
            if verbose {
                eprintln!(
                    "{task_id} was launched before ({}): following it",
                    s.state.as_str_name()
                );
            }
            one.attach(&task_id, &options, notice).await?
        }
        _ => one
            .follow(task, &options, notice)
            .await
            .map_err(|e| match e {
                LaunchError::NotPlaced { wait, .. } => anyhow::anyhow!(
                    "the task could not be placed within {wait:?} (the cluster may be full)"
                ),
                LaunchError::NoPorts(_) => anyhow::anyhow!("offer lacks ports"),
                LaunchError::Launch(e) => anyhow::Error::new(e),
                e => e.into(),
            })?,
    };
    Ok(launched)
}

/// A reconciliation answer for a task that never reached an agent.
fn never_ran(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskUnknown | TaskState::TaskGone | TaskState::TaskDropped
    )
}

/// Waits (bounded) until no agent of an earlier leader is still to
/// re-register: until then, the manager cannot know every task.
async fn wait_agents_back(
    address: &str,
    token: Option<&str>,
    wait: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let body = http::get(address, "/api/v1/agents", token, Duration::from_secs(10)).await?;
        let agents: Vec<AgentRow> =
            serde_json::from_slice(&body).context("malformed agent list from the manager")?;
        if agents.iter().all(|a| a.state != "recovered") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "agents known to an earlier leader have not re-registered within {wait:?}: cannot tell whether this run was launched"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The address of agent `id`, or empty.
async fn agent_address(address: &str, token: Option<&str>, id: Option<&AgentId>) -> String {
    let Some(id) = id else { return String::new() };
    let Ok(body) = http::get(address, "/api/v1/agents", token, Duration::from_secs(10)).await
    else {
        return String::new();
    };
    serde_json::from_slice::<Vec<AgentRow>>(&body)
        .ok()
        .and_then(|agents| agents.into_iter().find(|a| a.id == id.as_str()))
        .map(|a| a.address)
        .unwrap_or_default()
}

/// Prints the task's stdout and stderr from its sandbox (`FRAMEWORK/TASK`).
async fn print_output(agent: &str, token: Option<&str>, sandbox: &str) {
    for (file, to_stdout) in [("stdout", true), ("stderr", false)] {
        let path = format!("/v1/sandbox/{sandbox}/{file}");
        match http::get(agent, &path, token, Duration::from_secs(10)).await {
            Ok(bytes) => {
                use std::io::Write;
                if to_stdout {
                    std::io::stdout().write_all(&bytes).ok();
                } else {
                    std::io::stderr().write_all(&bytes).ok();
                }
            }
            Err(e) => eprintln!("warning: cannot read the task's {file}: {e}"),
        }
    }
}

/// The task of the command.
fn command_task(a: &RunArgs, task_id: TaskId, resources: Resources) -> anyhow::Result<TaskInfo> {
    let mut b = if a.command.len() == 1 {
        TaskBuilder::shell(task_id, a.command[0].clone())
    } else {
        TaskBuilder::exec(
            task_id,
            a.command[0].clone(),
            a.command[1..].iter().cloned(),
        )
    };
    b = b
        .name(a.command.join(" "))
        .resources(resources)
        .class(a.class.clone());
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
        b = b.env(k, v);
    }
    Ok(b.build())
}
