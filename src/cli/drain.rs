//! `strata drain AGENT` and `strata undrain AGENT`: maintenance of one
//! agent through the manager's operator API.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata_manager::master::view::AgentView;
use strata_proto::time::Timestamp;
use strata_sdk::http;

use super::{ClientArgs, parse_duration};

/// Arguments of `strata drain`.
#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The agent's id, as `strata status` shows it.
    agent: String,
    /// How long its tasks may run on before what is left is killed.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    deadline: Duration,
    /// Wait until nothing runs on the agent any more (DRAINED).
    #[arg(long)]
    wait: bool,
}

/// Arguments of `strata undrain`.
#[derive(clap::Args, Debug)]
pub struct UndrainArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The agent's id.
    agent: String,
}

/// Posts to the operator API; an error names what the manager said.
async fn post(client: &ClientArgs, path: &str, body: Option<&[u8]>) -> anyhow::Result<()> {
    let target = client.target();
    let (at, (status, _, reply)) = http::send(
        "POST",
        &target.address,
        path,
        target.token.as_deref(),
        body,
        Duration::from_secs(30),
    )
    .await
    .with_context(|| format!("cannot reach the manager at {}", target.address))?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let message = serde_json::from_slice::<serde_json::Value>(&reply)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&reply).into_owned());
    bail!("the manager at {at} refused: {message} (HTTP {status})")
}

/// The agent as the manager shows it.
async fn agent(client: &ClientArgs, id: &str) -> anyhow::Result<AgentView> {
    let target = client.target();
    let body = http::get(
        &target.address,
        "/api/v1/agents",
        target.token.as_deref(),
        Duration::from_secs(10),
    )
    .await
    .with_context(|| {
        format!(
            "cannot read the agents of the manager at {}",
            target.address
        )
    })?;
    let agents: Vec<AgentView> =
        serde_json::from_slice(&body).context("malformed agents from the manager")?;
    agents
        .into_iter()
        .find(|a| a.id == id)
        .with_context(|| format!("agent {id} is not known to the manager"))
}

/// `strata drain`.
pub async fn drain(a: DrainArgs) -> anyhow::Result<ExitCode> {
    let body = serde_json::json!({ "deadline_seconds": a.deadline.as_secs_f64() }).to_string();
    let path = format!("/api/v1/agents/{}/drain", a.agent);
    let started = Instant::now();
    post(&a.client, &path, Some(body.as_bytes())).await?;
    let shown = agent(&a.client, &a.agent).await?;
    let deadline = shown
        .drain_deadline
        .map(Timestamp::iso8601)
        .unwrap_or_else(|| "?".into());
    println!(
        "agent {} {}: nothing more is offered on it; what still runs there at {deadline} is killed",
        a.agent,
        shown.drain.as_deref().unwrap_or("draining"),
    );
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    // The deadline, the kills' grace and a margin for the last updates.
    let give_up = a.deadline + Duration::from_secs(60);
    loop {
        let shown = agent(&a.client, &a.agent).await?;
        match shown.drain.as_deref() {
            Some("drained") => {
                println!(
                    "agent {} drained in {:.1} s",
                    a.agent,
                    started.elapsed().as_secs_f64()
                );
                return Ok(ExitCode::SUCCESS);
            }
            Some(_) => {}
            None => bail!("agent {} was undrained while waiting", a.agent),
        }
        if started.elapsed() > give_up {
            bail!(
                "agent {} still has {} tasks a minute after its deadline",
                a.agent,
                shown.tasks
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `strata undrain`.
pub async fn undrain(a: UndrainArgs) -> anyhow::Result<ExitCode> {
    post(
        &a.client,
        &format!("/api/v1/agents/{}/undrain", a.agent),
        None,
    )
    .await?;
    println!("agent {} undrained: it is offered again", a.agent);
    Ok(ExitCode::SUCCESS)
}
