//! `strata status`: the leading manager and since when, agents (total / allocated / free), frameworks, roles
//! with their DRF shares, and tasks, read from the manager's HTTP API.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use strata_manager::master::view::StateView;
use strata_proto::time::Timestamp;

use super::ClientArgs;
use super::table;
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
            match &a.drain {
                Some(d) => format!("{} ({d})", a.state),
                None => a.state.clone(),
            },
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

/// Which manager leads and since when (a manager too old to say: the
/// address asked).
fn leader_line(s: &StateView, asked: &str, now: Timestamp) -> String {
    let l = &s.leader;
    if l.id.is_empty() {
        return format!("Manager {asked}\n");
    }
    let ago = (now - l.since).as_secs();
    format!(
        "Leader {} at {} (epoch {}), leading since {} ({})\n\n",
        l.id,
        l.address,
        l.epoch,
        l.since.iso8601(),
        ago_text(ago)
    )
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn ago_text(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
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
    print!("{}", leader_line(&state, &target.address, Timestamp::now()));
    print!("{}", render(&state));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_manager::master::view::LeaderView;

    fn state(leader: LeaderView) -> StateView {
        let mut v: StateView = serde_json::from_str(
            r#"{"agents":[],"frameworks":[],"roles":[],"tasks":[],"completed_tasks":[],
                "classes":[],"outstanding_offers":0}"#,
        )
        .unwrap();
        v.leader = leader;
        v
    }

    #[test]
    fn the_leader_line_names_the_leader_and_how_long_it_has_led() {
        let since = Timestamp::from_millis(1_795_556_280_000);
        let s = state(LeaderView {
            id: "m7".into(),
            epoch: 7,
            address: "10.0.0.2:5050".into(),
            since,
        });
        let now = since + Duration::from_secs(2 * 3_600 + 5 * 60 + 9);
        assert_eq!(
            leader_line(&s, "10.0.0.1:5050", now),
            "Leader m7 at 10.0.0.2:5050 (epoch 7), leading since 2026-11-24T21:38:00.000Z (2h 5m)\n\n"
        );
        // A manager too old to say who leads: the address asked.
        let old = state(LeaderView::default());
        assert_eq!(leader_line(&old, "h:1", now), "Manager h:1\n");
    }

    #[test]
    fn spans_read_in_their_two_largest_units() {
        assert_eq!(ago_text(12), "12s");
        assert_eq!(ago_text(250), "4m 10s");
        assert_eq!(ago_text(3 * 86_400 + 4 * 3_600 + 59), "3d 4h");
    }
}
