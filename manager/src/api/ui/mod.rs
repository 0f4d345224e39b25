//! The web UI: server-rendered HTML (maud) on the manager's HTTP address,
//! with one small stylesheet and script shipped in the binary; nothing is
//! fetched from elsewhere at run time.
//!
//! * `/`: the cluster — the leader, agents (total, allocated and measured
//!   use, drain or unreachable state), roles (weights, quotas, shares),
//!   classes and frameworks ([`cluster`]).
//! * `/tasks`: tasks by framework, agent and state, paginated; a task's
//!   page, and its sandbox files read through the manager ([`tasks`]).
//! * `/services`: the apps of the services scheduler with their instances,
//!   health, deployments and autoscaling ([`services`]).
//! * `/jobs`: the job history; a job's stages as a graph, its plan with
//!   per-operator metrics, its executors; a stage's attempts ([`jobs`]).
//!
//! Every page has its own path, its content is in the HTML the server
//! sends, and ids are shown whole. With a token configured, pages ask for
//! it (`/login`, kept in an HTTP-only cookie).

mod cluster;
mod jobs;
mod login;
mod services;
mod tasks;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};
use strata_proto::time::Timestamp;

use crate::inbox::CoreHandle;
use crate::master::view::StateView;
use crate::services::ServicesHandle;

/// What the pages read: the core, and the services scheduler if it runs.
#[derive(Clone)]
pub(crate) struct Ui {
    core: CoreHandle,
    services: Option<ServicesHandle>,
}

/// The UI's routes: pages behind the token (a cookie set by `/login`, or
/// the API's `authorization` header), the login page and assets outside.
pub(super) fn routes(core: CoreHandle, services: Option<ServicesHandle>) -> Router {
    let ui = Ui { core, services };
    Router::new()
        .route("/", get(cluster::show))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{framework}/{task}", get(tasks::task))
        .route("/tasks/{framework}/{task}/{file}", get(tasks::file))
        .route("/services", get(services::list))
        .route("/services/app", get(services::app))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{job}", get(jobs::job))
        .route("/jobs/{job}/stages/{stage}", get(jobs::stage))
        .route_layer(middleware::from_fn_with_state(ui.clone(), login::require))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", get(login::logout))
        .route("/ui/strata.css", get(css))
        .route("/ui/strata.js", get(js))
        .with_state(ui)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("strata.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("strata.js"),
    )
        .into_response()
}

/// The sections of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Cluster,
    Tasks,
    Services,
    Jobs,
    None,
}

/// A whole page: head, navigation, `content`. `live` pages offer to
/// reload themselves every few seconds.
fn page(title: &str, section: Section, live: bool, content: Markup) -> Response {
    let nav = [
        (Section::Cluster, "/", "Cluster"),
        (Section::Tasks, "/tasks", "Tasks"),
        (Section::Services, "/services", "Services"),
        (Section::Jobs, "/jobs", "Jobs"),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Strata" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/ui/strata.css";
                script src="/ui/strata.js" defer {}
            }
            body data-live=[live.then_some("5")] {
                header {
                    a.brand href="/" { "Strata" }
                    nav {
                        @for (s, href, name) in nav {
                            a href=(href) class=[(s == section).then_some("active")] { (name) }
                        }
                    }
                    @if live {
                        label.live { input #live type="checkbox"; " refresh" }
                    }
                }
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page saying what went wrong, with its status.
fn error_page(status: StatusCode, message: &str) -> Response {
    let mut r = page(
        status.canonical_reason().unwrap_or("Error"),
        Section::None,
        false,
        html! { p.error { (message) } },
    );
    *r.status_mut() = status;
    r
}

/// The core's state, or an error page.
async fn state(ui: &Ui) -> Result<StateView, Response> {
    match super::http::snapshot(&ui.core).await {
        Ok((s, _)) => Ok(s),
        Err(_) => Err(error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "the manager is shutting down",
        )),
    }
}

/// The frameworks not removed (lighter than the whole state), or an
/// error page.
async fn frameworks(ui: &Ui) -> Result<Vec<crate::master::view::FrameworkView>, Response> {
    let (reply, wait) = tokio::sync::oneshot::channel();
    let gone = || {
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "the manager is shutting down",
        )
    };
    ui.core
        .tx
        .send(crate::inbox::Input::Frameworks { reply })
        .await
        .map_err(|_| gone())?;
    wait.await.map_err(|_| gone())
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `1.5 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `850 ms`, `12.3 s`, `4 min 05 s`.
fn millis(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60),
    }
}

/// `2026-12-05 18:40:01 UTC`.
fn when(at: Timestamp) -> String {
    let iso = at.iso8601();
    format!(
        "{} UTC",
        iso.get(..19).unwrap_or(&iso).replacen('T', " ", 1)
    )
}

/// `0.50` of a fraction as `50.0%`.
fn percent(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

/// A state's badge.
fn badge(state: &str) -> Markup {
    let kind = match state {
        "TASK_RUNNING" | "running" | "registered" | "succeeded" | "finished" | "healthy"
        | "connected" | "fetching" => "ok",
        "TASK_FINISHED" => "done",
        "TASK_STAGING" | "TASK_STARTING" | "queued" | "draining" | "drained" | "disconnected"
        | "recovered" | "TASK_KILLING" | "cancelled" | "deploying" => "warn",
        _ => "bad",
    };
    html! { span class={"badge " (kind)} { (state) } }
}

/// A usage bar: `used` of `total`.
fn bar(used: f64, total: f64) -> Markup {
    let f = if total > 0.0 {
        (used / total).clamp(0.0, 1.0)
    } else {
        0.0
    };
    html! {
        span.bar title=(percent(f)) { span style={"width:" (format!("{:.1}", f * 100.0)) "%"} {} }
    }
}

/// One page of a list: which slice, and links to the others.
struct Pager {
    page: usize,
    per: usize,
    total: usize,
}

impl Pager {
    /// Items per page.
    const PER: usize = 100;

    fn new(page: Option<usize>, total: usize) -> Pager {
        let per = Pager::PER;
        let last = total.saturating_sub(1) / per;
        Pager {
            page: page.unwrap_or(0).min(last),
            per,
            total,
        }
    }

    fn range(&self) -> std::ops::Range<usize> {
        let start = self.page * self.per;
        start..(start + self.per).min(self.total)
    }

    /// Links to the previous and next pages: `base` is the path with its
    /// other query parameters (ending in `?` or `&`).
    fn links(&self, base: &str) -> Markup {
        let pages = self.total.div_ceil(self.per).max(1);
        let r = self.range();
        html! {
            p.pager {
                @if self.page > 0 {
                    a rel="prev" href={(base) "page=" (self.page - 1)} { "« previous" } " "
                }
                @if self.total == 0 { "none" } @else {
                    (r.start + 1) "–" (r.end) " of " (self.total)
                    " (page " (self.page + 1) " of " (pages) ")"
                }
                @if self.page + 1 < pages {
                    " " a rel="next" href={(base) "page=" (self.page + 1)} { "next »" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
