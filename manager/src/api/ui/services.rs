//! `/services`: the services scheduler's apps, their instances and health,
//! deployments in progress, the autoscaler's decisions, and the
//! preemptions and revocations that made room for them.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Section, Ui, badge, enc, error_page, page, state, when};
use crate::master::view::{StateView, TakebackView};
use crate::services::view;
use strata_proto::time::Timestamp;

/// The apps (Marathon's JSON with their tasks, and the autoscaler's last
/// decision) and the deployments.
async fn apps(ui: &Ui) -> Result<Value, Response> {
    let Some(svc) = &ui.services else {
        return Err(error_page(
            StatusCode::NOT_FOUND,
            "this manager runs without the services scheduler",
        ));
    };
    svc.read(|s| {
        let apps: Vec<Value> = s
            .apps()
            .filter(|(_, a)| !a.deleting)
            .map(|(id, a)| {
                let mut v = view::app(id, a, true);
                v["lastScaling"] = json!(a.last_scaling);
                v
            })
            .collect();
        let deployments: Vec<Value> = s.deployments().map(view::deployment).collect();
        Ok(json!({ "apps": apps, "deployments": deployments }))
    })
    .await
    .map_err(|e| error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()))
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// The services scheduler's framework: the one running the apps' tasks.
fn services_framework<'a>(st: &'a StateView, apps: &Value) -> Option<&'a str> {
    let any_task = apps["apps"]
        .as_array()?
        .iter()
        .flat_map(|a| a["tasks"].as_array().into_iter().flatten())
        .find_map(|t| t["id"].as_str())?;
    st.tasks
        .iter()
        .find(|t| t.id == any_task)
        .map(|t| t.framework_id.as_str())
}

fn takebacks(list: &[&TakebackView]) -> Markup {
    html! {
        @if list.is_empty() { p.muted { "none recently" } } @else {
            table #takebacks {
                thead { tr { th { "when" } th { "what" } th { "task" } th { "its framework" } th { "class" } th { "agent" } } }
                tbody { @for t in list { tr {
                    td { (when(t.at)) }
                    td { (badge(&t.kind)) }
                    td.id { a href={"/tasks/" (enc(&t.framework_id)) "/" (enc(&t.task_id))} { (t.task_id) } }
                    td.id { (t.framework_id) }
                    td { (t.class) }
                    td.id { (t.agent_id) }
                } } }
            }
        }
    }
}

/// The state and the apps, or an error page.
async fn state_and_apps(ui: &Ui) -> Result<(StateView, Value), Response> {
    Ok((state(ui).await?, apps(ui).await?))
}

/// The preemptions that made room for the services scheduler's asks.
fn served<'a>(st: &'a StateView, apps: &Value) -> Vec<&'a TakebackView> {
    let fw = services_framework(st, apps);
    st.takebacks
        .iter()
        .filter(|t| t.by.is_some() && t.by.as_deref() == fw)
        .collect()
}

/// `GET /services`.
pub(super) async fn list(State(ui): State<Ui>) -> Response {
    let (st, v) = match state_and_apps(&ui).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let served = served(&st, &v);
    let empty = Vec::new();
    let list = v["apps"].as_array().unwrap_or(&empty);
    let deployments = v["deployments"].as_array().unwrap_or(&empty);
    let content = html! {
        table #apps {
            thead { tr { th { "app" } th { "instances (running / healthy / wanted)" } th { "cpus" } th { "memory" } th { "class" } th { "deployment" } th { "last failure" } th { "autoscaler" } } }
            tbody {
                @for a in list {
                    @let wanted = n(a, "instances");
                    @let running = n(a, "tasksRunning");
                    @let has_checks = a["healthChecks"].as_array().is_some_and(|c| !c.is_empty());
                    tr {
                        td.id { a href={"/services/app?id=" (enc(s(a, "id")))} { (s(a, "id")) } }
                        td {
                            (running) " / " @if has_checks { (n(a, "tasksHealthy")) } @else { "–" } " / " (wanted) " "
                            (badge(if running >= wanted { "running" } else { "deploying" }))
                        }
                        td.num { (a["cpus"].to_string()) }
                        td.num { (a["mem"].to_string()) " MiB" }
                        td { (a["labels"]["strata.class"].as_str().unwrap_or("service")) }
                        td { @for d in a["deployments"].as_array().unwrap_or(&empty) { span.id { (s(d, "id")) } } }
                        td { @if let Some(m) = a["lastTaskFailure"]["message"].as_str() { (m) } }
                        td { (scaling(&a["lastScaling"])) }
                    }
                }
            }
        }
        h2 { "Deployments in progress" }
        @if deployments.is_empty() { p.muted { "none" } } @else {
            table #deployments {
                thead { tr { th { "deployment" } th { "app" } th { "action" } th { "version" } } }
                tbody { @for d in deployments { tr {
                    td.id { (s(d, "id")) }
                    td { (d["affectedApps"][0].as_str().unwrap_or("")) }
                    td { (d["currentActions"][0]["action"].as_str().unwrap_or("")) }
                    td { (s(d, "version")) }
                } } }
            }
        }
        h2 { "Preemptions that made room for services" }
        (takebacks(&served))
    };
    page("Services", Section::Services, true, content)
}

fn scaling(v: &Value) -> Markup {
    html! {
        @if v.is_object() {
            (n(v, "from")) " → " (n(v, "to"))
            " (mean " (format!("{:.2}", v["mean"].as_f64().unwrap_or(0.0))) ") "
            span.muted { (when(Timestamp::from_millis(n(v, "at")))) }
        }
    }
}

/// The query of an app's page.
#[derive(Debug, Deserialize)]
pub(super) struct AppQuery {
    id: String,
}

/// `GET /services/app?id=/web`.
pub(super) async fn app(State(ui): State<Ui>, Query(q): Query<AppQuery>) -> Response {
    let (st, v) = match state_and_apps(&ui).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let empty = Vec::new();
    let Some(a) = v["apps"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .find(|a| s(a, "id") == q.id)
    else {
        return error_page(StatusCode::NOT_FOUND, &format!("no app {:?}", q.id));
    };
    let tasks = a["tasks"].as_array().unwrap_or(&empty);
    let framework_of = |task: &str| {
        st.tasks
            .iter()
            .find(|t| t.id == task)
            .map(|t| t.framework_id.clone())
            .unwrap_or_default()
    };
    let served = served(&st, &v);
    let definition = serde_json::to_string_pretty(a).unwrap_or_default();
    let content = html! {
        table.fields #app {
            tr { th { "instances" } td { (n(a, "tasksRunning")) " running of " (n(a, "instances")) " wanted; " (n(a, "tasksHealthy")) " healthy, " (n(a, "tasksUnhealthy")) " unhealthy, " (n(a, "tasksStaged")) " staged" } }
            tr { th { "command" } td { code { (s(a, "cmd")) } } }
            tr { th { "version" } td { (s(a, "version")) } }
            tr { th { "autoscaler" } td { (scaling(&a["lastScaling"])) } }
            @if let Some(m) = a["lastTaskFailure"]["message"].as_str() {
                tr { th { "last failure" } td { (m) " " span.muted { (s(&a["lastTaskFailure"], "timestamp")) } } }
            }
        }
        h2 { "Instances" }
        table #instances {
            thead { tr { th { "task" } th { "state" } th { "host" } th { "ports" } th { "started" } th { "health" } } }
            tbody { @for t in tasks {
                @let id = s(t, "id");
                tr {
                    td.id { a href={"/tasks/" (enc(&framework_of(id))) "/" (enc(id))} { (id) } }
                    td { (badge(s(t, "state"))) }
                    td { (s(t, "host")) }
                    td { (t["ports"].to_string()) }
                    td { (s(t, "startedAt")) }
                    td { @for h in t["healthCheckResults"].as_array().unwrap_or(&empty) {
                        (badge(if h["alive"].as_bool() == Some(true) { "healthy" } else { "unhealthy" }))
                        @if let Some(c) = h["lastFailureCause"].as_str() { " " span.muted { (c) } }
                    } }
                }
            } }
        }
        h2 { "Preemptions that made room for services" }
        (takebacks(&served))
        details { summary { "Definition" } pre { (definition) } }
    };
    page(&format!("App {}", q.id), Section::Services, true, content)
}
