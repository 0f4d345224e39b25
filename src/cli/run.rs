//! `strata run`: a one-shot framework that runs one command as a task,
//! prints its output (read from the agent's sandbox API) and exits with the
//! task's exit code.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use strata_proto::pb::TaskState;
use strata_proto::resources::Resources;
use strata_sdk::{Ask, Event, FrameworkConfig, Scheduler, SchedulerConfig, TaskBuilder};

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
    /// The command. One argument runs through `sh -c`; several run directly.
    #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

#[derive(Deserialize)]
struct AgentRow {
    id: String,
    state: String,
    total: String,
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
    check_capacity(&target.address, token, &resources, a.wait).await?;

    let mut fw = FrameworkConfig::new("strata-run");
    fw.role = strata_proto::ids::Role::new(a.role.clone());
    fw.default_class = a.class.clone();
    fw.failover_timeout = Duration::from_secs(30);
    let mut cfg = SchedulerConfig::new(target.address.clone(), fw);
    cfg.token = target.token.clone();
    cfg.demand = vec![Ask::new(a.class.clone(), resources.clone(), 1)];
    let (handle, mut events) = Scheduler::subscribe(cfg).await?;
    let task_id = strata_proto::ids::TaskId::new(strata_proto::ids::random_id("run"));
    let mut launched: Option<String> = None; // agent address
    let placed_by = Instant::now() + a.wait;
    let outcome = loop {
        let next = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
        let event = match next {
            Err(_) => {
                if launched.is_none() && Instant::now() >= placed_by {
                    let _ = handle.teardown().await;
                    bail!(
                        "the task could not be placed within {:?} (the cluster may be full)",
                        a.wait
                    );
                }
                continue;
            }
            Ok(None) => bail!("the manager closed the subscription"),
            Ok(Some(e)) => e,
        };
        match event {
            Event::Offers(offers) => {
                for offer in offers {
                    if launched.is_none() && offer.fits(&resources) {
                        let mut res = resources.clone();
                        if a.ports > 0 {
                            res.ports = offer.pick_ports(a.ports).context("offer lacks ports")?;
                        }
                        let mut b = if a.command.len() == 1 {
                            TaskBuilder::shell(task_id.clone(), a.command[0].clone())
                        } else {
                            TaskBuilder::exec(
                                task_id.clone(),
                                a.command[0].clone(),
                                a.command[1..].iter().cloned(),
                            )
                        };
                        b = b
                            .name(a.command.join(" "))
                            .resources(res)
                            .class(a.class.clone());
                        for kv in &a.env {
                            let (k, v) = kv
                                .split_once('=')
                                .with_context(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
                            b = b.env(k, v);
                        }
                        if a.verbose {
                            eprintln!(
                                "launching {task_id} on {} ({})",
                                offer.hostname, offer.agent_id
                            );
                        }
                        launched = Some(offer.agent_address.clone().unwrap_or_default());
                        handle.launch(offer.id.clone(), vec![b.build()]).await?;
                        let _ = handle.suppress().await;
                    } else {
                        handle
                            .decline(vec![offer.id.clone()], Some(Duration::from_secs(30)))
                            .await?;
                    }
                }
            }
            Event::Update(s) if s.task_id == task_id => {
                if a.verbose {
                    let msg = if s.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", s.message)
                    };
                    eprintln!("{} {}{msg}", s.task_id, s.state.as_str_name());
                }
                if s.is_terminal() {
                    break s;
                }
            }
            Event::Error(e) => eprintln!("warning: {e}"),
            _ => {}
        }
    };
    // Print the task's output from its sandbox.
    let agent_addr = launched.unwrap_or_default();
    let fid = handle.framework_id();
    if !agent_addr.is_empty()
        && outcome.state != TaskState::TaskError
        && outcome.state != TaskState::TaskDropped
    {
        for (file, to_stdout) in [("stdout", true), ("stderr", false)] {
            let path = format!("/v1/sandbox/{fid}/{task_id}/{file}");
            match http::get(&agent_addr, &path, token, Duration::from_secs(10)).await {
                Ok(bytes) => {
                    use std::io::Write;
                    if to_stdout {
                        let _ = std::io::stdout().write_all(&bytes);
                    } else {
                        let _ = std::io::stderr().write_all(&bytes);
                    }
                }
                Err(e) => eprintln!("warning: cannot read the task's {file}: {e}"),
            }
        }
    }
    let _ = handle.teardown().await;
    let code = match outcome.state {
        TaskState::TaskFinished => 0,
        TaskState::TaskFailed => outcome.exit_code.unwrap_or(1),
        _ => {
            let msg = if outcome.message.is_empty() {
                String::new()
            } else {
                format!(": {}", outcome.message)
            };
            eprintln!(
                "task {} ended {} ({}){msg}",
                task_id,
                outcome.state.as_str_name(),
                outcome.reason.as_str_name()
            );
            if outcome.state == TaskState::TaskError || outcome.state == TaskState::TaskDropped {
                2
            } else {
                outcome.exit_code.unwrap_or(137)
            }
        }
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
