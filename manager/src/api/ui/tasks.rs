//! `/tasks`: tasks by framework, agent and state; a task; its sandbox
//! files, read from its agent through the manager.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::{Pager, Section, Ui, badge, bytes, enc, error_page, page, state};
use crate::auth::acl::{Action, Subject};
use crate::master::view::TaskView;

/// The filters of `/tasks`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TaskFilter {
    #[serde(default)]
    framework: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|v| !v.is_empty())
}

/// `GET /tasks`.
pub(super) async fn list(State(ui): State<Ui>, Query(f): Query<TaskFilter>) -> Response {
    let s = match state(&ui).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (framework, agent, want) = (
        nonempty(&f.framework),
        nonempty(&f.agent),
        nonempty(&f.state),
    );
    // Current tasks first, then the recently completed, newest first.
    let all: Vec<&TaskView> = s
        .tasks
        .iter()
        .chain(s.completed_tasks.iter().rev())
        .filter(|t| framework.is_none_or(|x| t.framework_id == x))
        .filter(|t| agent.is_none_or(|x| t.agent_id == x))
        .filter(|t| want.is_none_or(|x| t.state == x))
        .collect();
    let pager = Pager::new(f.page, all.len());
    let mut base = String::from("/tasks?");
    for (k, v) in [("framework", framework), ("agent", agent), ("state", want)] {
        if let Some(v) = v {
            base.push_str(&format!("{k}={}&", enc(v)));
        }
    }
    let mut states: Vec<&str> = s
        .tasks
        .iter()
        .chain(&s.completed_tasks)
        .map(|t| t.state.as_str())
        .collect();
    states.sort_unstable();
    states.dedup();
    let content = html! {
        form.filters method="get" action="/tasks" {
            label { "framework " select name="framework" {
                option value="" { "any" }
                @for fw in &s.frameworks { option value=(fw.id) selected[framework == Some(fw.id.as_str())] { (fw.id) " (" (fw.name) ")" } }
            } }
            label { "agent " select name="agent" {
                option value="" { "any" }
                @for a in &s.agents { option value=(a.id) selected[agent == Some(a.id.as_str())] { (a.id) } }
            } }
            label { "state " select name="state" {
                option value="" { "any" }
                @for st in &states { option value=(st) selected[want == Some(*st)] { (st) } }
            } }
            button type="submit" { "filter" }
        }
        (pager.links(&base))
        table #tasks {
            thead { tr { th { "task" } th { "name" } th { "framework" } th { "agent" } th { "state" } th { "class" } th { "resources" } th { "cpus used" } th { "memory used" } th { "exit" } } }
            tbody {
                @for t in &all[pager.range()] {
                    tr {
                        td.id { a href={"/tasks/" (enc(&t.framework_id)) "/" (enc(&t.id))} { (t.id) } }
                        td { (t.name) }
                        td.id { a href={"/tasks?framework=" (enc(&t.framework_id))} { (t.framework_id) } }
                        td.id { a href={"/tasks?agent=" (enc(&t.agent_id))} { (t.agent_id) } }
                        td { (badge(&t.state)) }
                        td { (t.class) }
                        td { (t.resources) }
                        td.num { @if let Some(c) = t.cpus_used { (format!("{c:.2}")) } }
                        td.num { @if let Some(m) = t.mem_used { (format!("{m:.0} MiB")) } }
                        td.num { @if let Some(c) = t.exit_code { (c) } }
                    }
                }
            }
        }
        (pager.links(&base))
    };
    page("Tasks", Section::Tasks, true, content)
}

/// A task in the state: current or recently completed.
fn find<'a>(s: &'a crate::master::view::StateView, fw: &str, id: &str) -> Option<&'a TaskView> {
    s.tasks
        .iter()
        .chain(s.completed_tasks.iter().rev())
        .find(|t| t.framework_id == fw && t.id == id)
}

/// `GET /tasks/{framework}/{task}`.
pub(super) async fn task(State(ui): State<Ui>, Path((fw, id)): Path<(String, String)>) -> Response {
    let s = match state(&ui).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(t) = find(&s, &fw, &id) else {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!(
                "no task {id:?} of framework {fw:?} among the current and recently completed tasks"
            ),
        );
    };
    let agent = s.agents.iter().find(|a| a.id == t.agent_id);
    let jobs = ui
        .core
        .jobs
        .list()
        .iter()
        .filter(|j| j.framework_id == fw)
        .count();
    let file = |name: &str| format!("/tasks/{}/{}/{name}", enc(&fw), enc(&id));
    let content = html! {
        table.fields #task {
            tr { th { "task" } td.id { (t.id) } }
            tr { th { "name" } td { (t.name) } }
            tr { th { "framework" } td.id { a href={"/tasks?framework=" (enc(&fw))} { (fw) } } }
            tr { th { "agent" } td.id { a href={"/tasks?agent=" (enc(&t.agent_id))} { (t.agent_id) } @if let Some(a) = agent { " on " (a.hostname) } } }
            tr { th { "state" } td { (badge(&t.state)) @if !t.reason.is_empty() && t.reason != "REASON_UNSPECIFIED" { " " span.muted { (t.reason) } } } }
            tr { th { "message" } td { (t.message) } }
            tr { th { "class" } td { (t.class) } }
            tr { th { "resources" } td { (t.resources) @if t.revocable_cpus > 0.0 { " (" (t.revocable_cpus) " revocable cpus)" } } }
            tr { th { "used" } td {
                @if let Some(c) = t.cpus_used { (format!("{c:.2}")) " cpus" }
                @if let Some(m) = t.mem_used { ", " (format!("{m:.0}")) " MiB" }
            } }
            @if let Some(c) = t.exit_code { tr { th { "exit code" } td { (c) } } }
        }
        h2 { "Sandbox" }
        p.files {
            a #stdout href=(file("stdout")) { "stdout" } " · "
            a #stderr href=(file("stderr")) { "stderr" }
        }
        @if jobs > 0 {
            p { a href={"/jobs?framework=" (enc(&fw))} { "the jobs of its framework (" (jobs) ")" } }
        }
    };
    page(&format!("Task {id}"), Section::Tasks, false, content)
}

/// The query of a sandbox file's page.
#[derive(Debug, Default, Deserialize)]
pub(super) struct FileQuery {
    /// Where to start; default: the last [`TAIL`] bytes.
    #[serde(default)]
    offset: Option<u64>,
}

/// How much of a file a page shows.
const TAIL: u64 = 64 * 1024;

/// How long the agent may take.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /tasks/{framework}/{task}/{file}`: the file's last 64 KiB (or
/// from `offset`), read from its agent's sandbox API.
pub(super) async fn file(
    State(ui): State<Ui>,
    axum::Extension(who): axum::Extension<Subject>,
    Path((fw, id, name)): Path<(String, String, String)>,
    Query(q): Query<FileQuery>,
) -> Response {
    let s = match state(&ui).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(t) = find(&s, &fw, &id) else {
        return error_page(StatusCode::NOT_FOUND, &format!("no task {id:?} of {fw:?}"));
    };
    // `view_sandboxes`: by the principal of the task's framework
    // (`operator` for one subscribed with the cluster's token, `unknown`
    // once it is gone).
    let owner = match s.frameworks.iter().find(|f| f.id == fw) {
        Some(f) if f.principal.is_empty() => "operator",
        Some(f) => f.principal.as_str(),
        None => "unknown",
    };
    if let Err(denied) = ui.core.access.check(&who, Action::ViewSandboxes, owner) {
        return error_page(StatusCode::FORBIDDEN, &denied.to_string());
    }
    let Some(agent) = s.agents.iter().find(|a| a.id == t.agent_id) else {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!("the agent {:?} of task {id:?} is gone", t.agent_id),
        );
    };
    let token = ui.core.access.token();
    let path = |offset: u64, length: u64| {
        format!(
            "/v1/sandbox/{}/{}/{}?offset={offset}&length={length}",
            enc(&fw),
            enc(&id),
            enc(&name)
        )
    };
    let read = |p: String| async move {
        strata_sdk::http::request("GET", &agent.address, &p, token, None, AGENT_TIMEOUT).await
    };
    let size = match read(path(0, 0)).await {
        Ok((200, headers, _)) => headers
            .iter()
            .find(|(k, _)| k == "x-strata-file-size")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(0),
        Ok((status, _, body)) => {
            return error_page(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                &format!(
                    "the agent {} answered {status}: {}",
                    agent.id,
                    String::from_utf8_lossy(&body)
                ),
            );
        }
        Err(e) => {
            return error_page(
                StatusCode::BAD_GATEWAY,
                &format!("cannot reach the agent {}: {e}", agent.id),
            );
        }
    };
    let start = q.offset.unwrap_or(size.saturating_sub(TAIL)).min(size);
    let (text, read_bytes) = match read(path(start, TAIL)).await {
        Ok((200, _, body)) => (String::from_utf8_lossy(&body).into_owned(), body.len()),
        Ok((status, _, body)) => {
            return error_page(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "the agent answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ),
            );
        }
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    let end = start + read_bytes as u64;
    let here = format!("/tasks/{}/{}/{}", enc(&fw), enc(&id), enc(&name));
    let content = html! {
        p.muted {
            a href={"/tasks/" (enc(&fw)) "/" (enc(&id))} { "task " (id) } " · "
            "bytes " (start) "–" (end) " of " (bytes(size))
            @if start > 0 { " · " a href={(here) "?offset=" (start.saturating_sub(TAIL))} { "earlier" } }
            @if end < size { " · " a href={(here) "?offset=" (end)} { "later" } }
        }
        pre #file { (text) }
    };
    page(&format!("{name} of {id}"), Section::Tasks, false, content)
}
