//! `/jobs`: the job history; a job with its stage graph, plan and
//! executors; a stage with its operators and attempts.

use std::collections::HashSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use strata_proto::jobs::{JobReport, StageReport};

use super::{Pager, Section, Ui, badge, bytes, enc, error_page, frameworks, millis, page, when};

/// The filters of `/jobs`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct JobFilter {
    #[serde(default)]
    framework: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

/// A job's state as shown: a job still running whose driver's framework
/// is gone is `lost`.
fn shown_state<'a>(j: &'a JobReport, live: &HashSet<&str>) -> &'a str {
    if !j.is_terminal() && !live.contains(j.framework_id.as_str()) {
        "lost"
    } else {
        &j.state
    }
}

/// How long it ran (or has been running).
fn duration(j: &JobReport) -> String {
    let end = j
        .ended_at
        .unwrap_or_else(strata_proto::time::Timestamp::now);
    millis(end.saturating_since(j.submitted_at).as_millis() as u64)
}

fn short(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// `GET /jobs`.
pub(super) async fn list(State(ui): State<Ui>, Query(f): Query<JobFilter>) -> Response {
    let fws = match frameworks(&ui).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let live: HashSet<&str> = fws.iter().map(|f| f.id.as_str()).collect();
    let framework = f.framework.as_deref().filter(|v| !v.is_empty());
    let want = f.state.as_deref().filter(|v| !v.is_empty());
    let all = ui.core.jobs.list();
    let jobs: Vec<&JobReport> = all
        .iter()
        .map(|j| j.as_ref())
        .filter(|j| framework.is_none_or(|x| j.framework_id == x))
        .filter(|j| want.is_none_or(|x| shown_state(j, &live) == x))
        .collect();
    let pager = Pager::new(f.page, jobs.len());
    let mut base = String::from("/jobs?");
    for (k, v) in [("framework", framework), ("state", want)] {
        if let Some(v) = v {
            base.push_str(&format!("{k}={}&", enc(v)));
        }
    }
    let states = [
        "queued",
        "running",
        "fetching",
        "succeeded",
        "failed",
        "cancelled",
        "lost",
    ];
    let content = html! {
        form.filters method="get" action="/jobs" {
            @if let Some(fw) = framework { input type="hidden" name="framework" value=(fw); }
            label { "state " select name="state" {
                option value="" { "any" }
                @for s in states { option value=(s) selected[want == Some(s)] { (s) } }
            } }
            button type="submit" { "filter" }
            @if let Some(fw) = framework { " " span.muted { "framework " (fw) " · " a href="/jobs" { "all" } } }
        }
        (pager.links(&base))
        table #jobs {
            thead { tr { th { "job" } th { "what" } th { "driver" } th { "state" } th { "tasks done" } th { "submitted" } th { "duration" } } }
            tbody {
                @for j in &jobs[pager.range()] {
                    @let (done, total) = j.progress();
                    tr {
                        td.id { a href={"/jobs/" (enc(&j.id))} { (j.id) } }
                        td title=(j.description) { (short(&j.description, 90)) }
                        td { (j.driver) br; a.id.muted href={"/jobs?framework=" (enc(&j.framework_id))} { (j.framework_id) } }
                        td { (badge(shown_state(j, &live))) }
                        td.num { (done) " / " (total) }
                        td { (when(j.submitted_at)) }
                        td.num { (duration(j)) }
                    }
                }
            }
        }
        (pager.links(&base))
    };
    page("Jobs", Section::Jobs, true, content)
}

/// Each stage's column in the graph: the longest path from a stage that
/// reads no other.
fn levels(stages: &[StageReport]) -> Vec<usize> {
    let mut level = vec![0usize; stages.len()];
    // Stages come in dependency order: inputs before their readers.
    for (i, s) in stages.iter().enumerate() {
        for input in &s.inputs {
            if let Some(j) = stages.iter().position(|x| x.stage == *input)
                && j < i
            {
                level[i] = level[i].max(level[j] + 1);
            }
        }
    }
    level
}

/// The stages as a graph (SVG): a box per stage, reading left to right.
fn graph(job: &JobReport) -> Markup {
    const W: usize = 170;
    const H: usize = 54;
    const GAP_X: usize = 50;
    const GAP_Y: usize = 18;
    let level = levels(&job.stages);
    let mut rows = vec![0usize; level.iter().max().map_or(1, |m| m + 1)];
    let mut at = Vec::with_capacity(job.stages.len());
    for l in &level {
        at.push((l * (W + GAP_X) + 4, rows[*l] * (H + GAP_Y) + 4));
        rows[*l] += 1;
    }
    let width = rows.len() * (W + GAP_X);
    let height = rows.iter().max().copied().unwrap_or(1) * (H + GAP_Y) + 4;
    let position = |stage: u32| job.stages.iter().position(|s| s.stage == stage);
    html! {
        svg #stage-graph xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox={"0 0 " (width) " " (height)} role="img" {
            title { "stages of " (job.id) }
            @for (i, s) in job.stages.iter().enumerate() {
                @for input in &s.inputs {
                    @if let Some(j) = position(*input) {
                        path.edge d={"M" (at[j].0 + W) " " (at[j].1 + H / 2) " L" (at[i].0) " " (at[i].1 + H / 2)} {}
                    }
                }
            }
            @for (i, s) in job.stages.iter().enumerate() {
                @let (x, y) = at[i];
                @let state = if s.done == s.partitions { "done" } else if s.running > 0 { "running" } else { "waiting" };
                a href={"/jobs/" (enc(&job.id)) "/stages/" (s.stage)} {
                    rect class={"stage " (state)} x=(x) y=(y) width=(W) height=(H) rx="6" {}
                    text x=(x + 10) y=(y + 20) { "stage " (s.stage) }
                    text.small x=(x + 10) y=(y + 40) { (s.done) "/" (s.partitions) " tasks · " (bytes(s.bytes)) }
                }
            }
        }
    }
}

/// Compute time: fractions of a millisecond while it is short.
fn compute(ns: u64) -> String {
    if ns < 10_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        millis(ns / 1_000_000)
    }
}

/// The operators of a stage with their metrics.
fn operators(s: &StageReport) -> Markup {
    html! {
        table.plan {
            thead { tr { th { "operator" } th { "output rows" } th { "compute" } th { "spilled" } } }
            tbody { @for op in &s.operators { tr {
                td { code style={"padding-left:" (op.depth as f64 * 1.2) "em"} { (op.name) } }
                td.num { @if let Some(r) = op.output_rows { (r) } }
                td.num { @if let Some(ns) = op.elapsed_compute_ns { (compute(ns)) } }
                td.num { @if let Some(b) = op.spilled_bytes { (bytes(b)) } }
            } } }
        }
    }
}

/// A job of the history, or the page saying it is not there.
fn find(ui: &Ui, id: &str) -> Result<std::sync::Arc<JobReport>, Box<Response>> {
    ui.core.jobs.get(id).ok_or_else(|| {
        Box::new(error_page(
            StatusCode::NOT_FOUND,
            &format!("no job {id:?} in the manager's job history"),
        ))
    })
}

/// `GET /jobs/{job}`.
pub(super) async fn job(State(ui): State<Ui>, Path(id): Path<String>) -> Response {
    let j = match find(&ui, &id) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let fws = match frameworks(&ui).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let live: HashSet<&str> = fws.iter().map(|f| f.id.as_str()).collect();
    let (done, total) = j.progress();
    let content = html! {
        table.fields #job {
            tr { th { "state" } td { (badge(shown_state(&j, &live))) } }
            @if let Some(e) = &j.error { tr { th { "error" } td.error { (e) } } }
            tr { th { "what" } td { pre.sql { (j.description) } } }
            tr { th { "driver" } td { (j.driver) " · framework " a.id href={"/tasks?framework=" (enc(&j.framework_id))} { (j.framework_id) } } }
            tr { th { "submitted" } td { (when(j.submitted_at)) } }
            tr { th { "duration" } td { (duration(&j)) } }
            tr { th { "tasks done" } td { (done) " of " (total) } }
        }
        h2 { "Stages" }
        div.graph { (graph(&j)) }
        table #stages {
            thead { tr { th { "stage" } th { "reads" } th { "tasks done" } th { "running" } th { "attempts" } th { "failed" } th { "speculative (won)" } th { "recomputed" } th { "rows" } th { "bytes" } th { "time" } } }
            tbody { @for s in &j.stages { tr {
                td { a href={"/jobs/" (enc(&j.id)) "/stages/" (s.stage)} { "stage " (s.stage) } }
                td { (s.inputs.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")) }
                td.num { (s.done) " / " (s.partitions) }
                td.num { (s.running) }
                td.num { (s.launched) }
                td.num { (s.failed) }
                td.num { (s.speculative) " (" (s.speculative_wins) ")" }
                td.num { (s.recomputed) }
                td.num { (s.rows) }
                td.num { (bytes(s.bytes)) }
                td.num { (millis(s.elapsed_ms)) }
            } } }
        }
        h2 { "Executors" }
        table #executors {
            thead { tr { th { "executor" } th { "host" } th { "slots" } th { "shuffle service" } } }
            tbody { @for e in &j.executors { tr {
                td.id { a href={"/tasks/" (enc(&j.framework_id)) "/" (enc(&e.id))} { (e.id) } }
                td { (e.host) }
                td.num { (e.slots) }
                td { (e.flight_address) }
            } } }
        }
        h2 { "Plan" }
        @for s in &j.stages {
            details open[j.stages.len() <= 3] {
                summary { "stage " (s.stage) }
                (operators(s))
            }
        }
    };
    page(
        &format!("Job {}", j.id),
        Section::Jobs,
        !j.is_terminal(),
        content,
    )
}

/// The query of a stage's page.
#[derive(Debug, Default, Deserialize)]
pub(super) struct StageQuery {
    #[serde(default)]
    page: Option<usize>,
}

/// `GET /jobs/{job}/stages/{stage}`.
pub(super) async fn stage(
    State(ui): State<Ui>,
    Path((id, stage)): Path<(String, u32)>,
    Query(q): Query<StageQuery>,
) -> Response {
    let j = match find(&ui, &id) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let Some(s) = j.stages.iter().find(|s| s.stage == stage) else {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!("job {id} has no stage {stage}"),
        );
    };
    let pager = Pager::new(q.page, s.attempts.len());
    let base = format!("/jobs/{}/stages/{stage}?", enc(&j.id));
    let content = html! {
        p { a href={"/jobs/" (enc(&j.id))} { "job " (j.id) } }
        table.fields #stage {
            tr { th { "tasks done" } td { (s.done) " of " (s.partitions) } }
            tr { th { "attempts" } td { (s.launched) " launched, " (s.running) " running, " (s.failed) " failed, " (s.recomputed) " recomputed, " (s.speculative) " speculative (" (s.speculative_wins) " won)" } }
            tr { th { "output" } td { (s.rows) " rows, " (bytes(s.bytes)) } }
            tr { th { "time" } td { (millis(s.elapsed_ms)) } }
        }
        h2 { "Operators" }
        (operators(s))
        h2 { "Tasks" }
        (pager.links(&base))
        table #attempts {
            thead { tr { th { "partition" } th { "attempt" } th { "executor" } th { "state" } th { "rows" } th { "bytes" } th { "time" } th { "error" } } }
            tbody { @for a in &s.attempts[pager.range()] { tr {
                td.num { (a.partition) }
                td.num { (a.attempt) @if a.speculative { " " span.muted { "speculative" } } }
                td.id { a href={"/tasks/" (enc(&j.framework_id)) "/" (enc(&a.executor))} { (a.executor) } }
                td { (badge(&a.state)) }
                td.num { (a.rows) }
                td.num { (bytes(a.bytes)) }
                td.num { (millis(a.elapsed_ms)) }
                td.error { (a.error) }
            } } }
        }
        (pager.links(&base))
    };
    page(
        &format!("Stage {stage} of {}", j.id),
        Section::Jobs,
        !j.is_terminal(),
        content,
    )
}
