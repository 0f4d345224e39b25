//! `strata status`: agents (total / allocated / free), frameworks, roles
//! with their DRF shares, and tasks, read from the manager's HTTP API.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use strata_manager::master::view::StateView;

use super::ClientArgs;
use strata_sdk::http;

/// Arguments of `strata status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Print the raw JSON state instead of tables.
    #[arg(long)]
    json: bool,
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(header.to_vec());
    t
}

/// Renders the state as tables.
pub fn render(s: &StateView) -> String {
    let mut out = String::new();
    let mut t = table(&[
        "agent",
        "host",
        "state",
        "total",
        "allocated",
        "free",
        "tasks",
    ]);
    for a in &s.agents {
        t.add_row(vec![
            a.id.clone(),
            a.hostname.clone(),
            a.state.clone(),
            a.total.clone(),
            a.allocated.clone(),
            a.free.clone(),
            a.tasks.to_string(),
        ]);
    }
    out.push_str(&format!("Agents ({})\n{t}\n\n", s.agents.len()));
    let mut t = table(&[
        "framework",
        "name",
        "role",
        "connected",
        "share",
        "tasks",
        "offers",
        "pending",
    ]);
    for f in &s.frameworks {
        t.add_row(vec![
            f.id.clone(),
            f.name.clone(),
            f.role.clone(),
            f.connected.to_string(),
            format!("{:.3}", f.share),
            f.tasks.to_string(),
            f.offers.to_string(),
            f.pending_tasks.to_string(),
        ]);
    }
    out.push_str(&format!("Frameworks ({})\n{t}\n\n", s.frameworks.len()));
    let mut t = table(&[
        "role",
        "weight",
        "drf share",
        "allocated",
        "quota",
        "frameworks",
    ]);
    for r in &s.roles {
        t.add_row(vec![
            r.name.clone(),
            format!("{}", r.weight),
            format!("{:.3}", r.share),
            r.allocated.clone(),
            r.quota.clone().unwrap_or_else(|| "-".into()),
            r.frameworks.to_string(),
        ]);
    }
    out.push_str(&format!("Roles ({})\n{t}\n\n", s.roles.len()));
    let mut t = table(&["task", "framework", "agent", "state", "class", "resources"]);
    for task in &s.tasks {
        t.add_row(vec![
            task.id.clone(),
            task.framework_id.clone(),
            task.agent_id.clone(),
            task.state.clone(),
            task.class.clone(),
            task.resources.clone(),
        ]);
    }
    out.push_str(&format!(
        "Tasks ({} active, {} recently finished)\n{t}\n",
        s.tasks.len(),
        s.completed_tasks.len()
    ));
    out
}

/// `strata status`.
pub async fn run(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let target = a.client.target();
    let body = http::get(
        &target.address,
        "/api/v1/state",
        target.token.as_deref(),
        Duration::from_secs(10),
    )
    .await
    .with_context(|| format!("cannot read the state of the manager at {}", target.address))?;
    if a.json {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(ExitCode::SUCCESS);
    }
    let state: StateView =
        serde_json::from_slice(&body).context("malformed state from the manager")?;
    println!("Manager {}", target.address);
    print!("{}", render(&state));
    Ok(ExitCode::SUCCESS)
}
