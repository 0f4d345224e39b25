//! Marathon's REST API v2 over the services scheduler, on the manager's
//! HTTP address.
//!
//! * `GET /v2/apps`, `POST /v2/apps` (201, `Location`,
//!   `Marathon-Deployment-Id`);
//! * `GET|PUT|PATCH|DELETE /v2/apps/{id}`, `POST /v2/apps/{id}/restart`,
//!   `GET|DELETE /v2/apps/{id}/tasks[/{task}]?scale=`;
//! * `GET /v2/tasks`, `GET /v2/deployments`, `DELETE /v2/deployments/{id}`;
//! * `GET /v2/info`; `GET /ping` (`pong`, no token needed);
//! * `GET /api/v1/routes[?after=VERSION&wait=SECS]`: the route table
//!   (healthy instances and service ports); with `after`, answered once
//!   the table's version differs from it or `wait` seconds (default 30,
//!   at most 60) have passed: a long poll the agents follow.
//!
//! A change to an app held by a deployment answers 409 unless `force=true`;
//! an invalid definition 422 with per-field details; malformed JSON 400;
//! an unknown id 404.

// Handlers return early with a finished `Response` as their error; boxing
// it would only add an allocation to every failed request.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::{Value, json};
use strata_proto::ids::TaskId;

use super::app::{self, AppId};
use super::error::ServiceError;
use super::runner::{ServicesHandle, merge};
use super::view;

/// What the handlers hold: the services scheduler, when the manager runs it.
type Services = Option<ServicesHandle>;

/// The routes that need the token (when one is set), over `services`.
pub(crate) fn routes<S>(services: Services) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/v2/apps", get(list_apps).post(create_app))
        .route(
            "/v2/apps/{*path}",
            get(app_path)
                .put(app_path)
                .patch(app_path)
                .delete(app_path)
                .post(app_path),
        )
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/deployments", get(list_deployments))
        .route("/v2/deployments/{id}", delete(cancel_deployment))
        .route("/v2/info", get(info))
        .route("/api/v1/routes", get(routes_table))
        .with_state(services)
}

/// The longest a route watcher is kept waiting.
const ROUTES_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Query of `GET /api/v1/routes`.
#[derive(Debug, Default, Deserialize)]
struct RoutesQuery {
    /// The version the caller holds.
    #[serde(default)]
    after: Option<String>,
    /// Seconds to wait for a change.
    #[serde(default)]
    wait: Option<f64>,
}

/// `GET /api/v1/routes`.
async fn routes_table(State(services): State<Services>, Query(q): Query<RoutesQuery>) -> Response {
    let svc = match handle(&services) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut rx = svc.routes();
    if let Some(after) = q.after {
        let wait = q
            .wait
            .filter(|w| w.is_finite() && *w >= 0.0)
            .map(std::time::Duration::from_secs_f64)
            .unwrap_or(std::time::Duration::from_secs(30))
            .min(ROUTES_MAX_WAIT);
        tokio::time::timeout(wait, rx.wait_for(|t| t.version != after))
            .await
            .ok();
    }
    let table = rx.borrow().clone();
    (StatusCode::OK, axum::Json(table.as_ref().clone())).into_response()
}

/// `GET /ping`.
pub(crate) async fn ping() -> &'static str {
    "pong"
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn fail(e: ServiceError) -> Response {
    reply(e.status(), e.body())
}

fn handle(services: &Services) -> Result<&ServicesHandle, Response> {
    services.as_ref().ok_or_else(|| {
        fail(ServiceError::Unavailable {
            reason: "the manager runs without the services scheduler".into(),
        })
    })
}

/// Query flags Marathon's endpoints take.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Flags {
    #[serde(default)]
    force: Option<String>,
    #[serde(default)]
    scale: Option<String>,
    #[serde(default)]
    embed: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    label: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The body as JSON: 400 when it is not JSON at all.
fn json_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice::<Value>(body).map_err(|e| {
        reply(
            StatusCode::BAD_REQUEST,
            json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": [e.to_string()]}]}),
        )
    })
}

fn parse_app(body: &Bytes) -> Result<app::AppDefinition, Response> {
    json_body(body)?;
    app::parse(body).map_err(|details| fail(ServiceError::Invalid { details }))
}

async fn list_apps(State(services): State<Services>, Query(q): Query<Flags>) -> Response {
    let svc = match handle(&services) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let with_tasks = q.embed.as_deref().is_some_and(|e| e.contains("tasks"));
    let result = svc
        .read(move |s| {
            let apps: Vec<Value> = s
                .apps()
                .filter(|(id, _)| {
                    q.id.as_ref()
                        .is_none_or(|f| id.as_str().contains(f.as_str()))
                })
                .filter(|(_, a)| {
                    q.label.as_ref().is_none_or(|l| match l.split_once("==") {
                        Some((k, v)) => a.def.labels.get(k).is_some_and(|x| x == v),
                        None => a.def.labels.contains_key(l),
                    })
                })
                .filter(|(_, a)| !a.deleting)
                .map(|(id, a)| view::app(id, a, with_tasks))
                .collect();
            Ok(json!({ "apps": apps }))
        })
        .await;
    match result {
        Ok(v) => reply(StatusCode::OK, v),
        Err(e) => fail(e),
    }
}

async fn create_app(State(services): State<Services>, body: Bytes) -> Response {
    let svc = match handle(&services) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let def = match parse_app(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let result = svc
        .write(move |s, now| {
            let (id, deployment) = s.create(now, def)?;
            let app = s
                .app(&id)
                .ok_or_else(|| ServiceError::UnknownApp { id: id.to_string() })?;
            Ok(json!({"app": view::app(&id, app, false), "id": id.as_str(), "deployment": deployment}))
        })
        .await;
    match result {
        Ok(v) => {
            let mut headers = HeaderMap::new();
            let id = v["id"].as_str().unwrap_or_default();
            if let Ok(l) = HeaderValue::from_str(&format!("/v2/apps{id}")) {
                headers.insert(header::LOCATION, l);
            }
            if let Ok(d) = HeaderValue::from_str(v["deployment"].as_str().unwrap_or_default()) {
                headers.insert("Marathon-Deployment-Id", d);
            }
            (StatusCode::CREATED, headers, axum::Json(v["app"].clone())).into_response()
        }
        Err(e) => fail(e),
    }
}

/// What an `/v2/apps/{*path}` request is about.
enum Target {
    App(AppId),
    Restart(AppId),
    Tasks(AppId),
    Task(AppId, TaskId),
}

/// The app a `/v2/apps/{path}` request acts on (what the ACLs check),
/// read as its handler reads it; `None` for a path it refuses.
pub(crate) fn app_of_path(path: &str) -> Option<String> {
    match target(path).ok()? {
        Target::App(id) | Target::Restart(id) | Target::Tasks(id) | Target::Task(id, _) => {
            Some(id.to_string())
        }
    }
}

fn target(path: &str) -> Result<Target, ServiceError> {
    let bad = |e: app::InvalidAppId| ServiceError::Invalid {
        details: vec![app::FieldError {
            path: "/id".into(),
            errors: vec![e.to_string()],
        }],
    };
    let p = path.trim_end_matches('/');
    if let Some(id) = p.strip_suffix("/restart") {
        return Ok(Target::Restart(AppId::parse(id).map_err(bad)?));
    }
    if let Some(id) = p.strip_suffix("/tasks") {
        return Ok(Target::Tasks(AppId::parse(id).map_err(bad)?));
    }
    if let Some((id, task)) = p.rsplit_once("/tasks/")
        && !task.contains('/')
    {
        return Ok(Target::Task(
            AppId::parse(id).map_err(bad)?,
            TaskId::new(task),
        ));
    }
    Ok(Target::App(AppId::parse(p).map_err(bad)?))
}

fn deployment_result(v: &Value) -> Value {
    json!({"deploymentId": v["deployment"], "version": v["version"]})
}

async fn app_path(
    State(services): State<Services>,
    method: Method,
    Path(path): Path<String>,
    Query(q): Query<Flags>,
    body: Bytes,
) -> Response {
    let svc = match handle(&services) {
        Ok(s) => s.clone(),
        Err(r) => return r,
    };
    let t = match target(&path) {
        Ok(t) => t,
        Err(ServiceError::Invalid { .. }) => {
            return fail(ServiceError::UnknownApp {
                id: format!("/{path}"),
            });
        }
        Err(e) => return fail(e),
    };
    let force = truthy(&q.force);
    let result = match (method.as_str(), t) {
        ("GET", Target::App(id)) => {
            svc.read(move |s| {
                let a = s
                    .app(&id)
                    .filter(|a| !a.deleting)
                    .ok_or_else(|| ServiceError::UnknownApp { id: id.to_string() })?;
                Ok(json!({"app": view::app(&id, a, true)}))
            })
            .await
        }
        ("PUT" | "PATCH", Target::App(id)) => {
            let patch = match json_body(&body) {
                Ok(v) => v,
                Err(r) => return r,
            };
            let r = svc
                .write(move |s, now| {
                    let def = match s.app(&id) {
                        Some(a) if !a.deleting => merge(&a.def, patch)?,
                        _ => {
                            let mut p = patch;
                            p["id"] = json!(id.as_str());
                            app::parse(&serde_json::to_vec(&p).unwrap_or_default())
                                .map_err(|details| ServiceError::Invalid { details })?
                        }
                    };
                    let mut def = def;
                    def.id = id.to_string();
                    let (d, v, created) = s.put(now, def, force)?;
                    Ok(json!({"deployment": d, "version": v, "created": created, "id": id.as_str()}))
                })
                .await;
            return match r {
                Ok(v) if v["created"] == json!(true) => {
                    let mut headers = HeaderMap::new();
                    if let Ok(l) = HeaderValue::from_str(&format!(
                        "/v2/apps{}",
                        v["id"].as_str().unwrap_or_default()
                    )) {
                        headers.insert(header::LOCATION, l);
                    }
                    (
                        StatusCode::CREATED,
                        headers,
                        axum::Json(deployment_result(&v)),
                    )
                        .into_response()
                }
                Ok(v) => reply(StatusCode::OK, deployment_result(&v)),
                Err(e) => fail(e),
            };
        }
        ("DELETE", Target::App(id)) => {
            svc.write(move |s, now| {
                let (d, v) = s.delete(now, &id, force)?;
                Ok(deployment_result(&json!({"deployment": d, "version": v})))
            })
            .await
        }
        ("POST", Target::Restart(id)) => {
            svc.write(move |s, now| {
                let (d, v) = s.restart(now, &id, force)?;
                Ok(deployment_result(&json!({"deployment": d, "version": v})))
            })
            .await
        }
        ("GET", Target::Tasks(id)) => {
            svc.read(move |s| {
                let a = s
                    .app(&id)
                    .ok_or_else(|| ServiceError::UnknownApp { id: id.to_string() })?;
                let tasks: Vec<Value> = a
                    .instances
                    .values()
                    .map(|i| view::task(&id, a, i))
                    .collect();
                Ok(json!({ "tasks": tasks }))
            })
            .await
        }
        ("DELETE", t @ (Target::Tasks(_) | Target::Task(..))) => {
            let scale = truthy(&q.scale);
            svc.write(move |s, now| {
                let (id, tasks) = match t {
                    Target::Task(id, task) => (id, vec![task]),
                    Target::Tasks(id) => {
                        let a = s
                            .app(&id)
                            .ok_or_else(|| ServiceError::UnknownApp { id: id.to_string() })?;
                        let all = a.instances.keys().cloned().collect();
                        (id, all)
                    }
                    _ => unreachable!("matched above"),
                };
                let killed = s.kill_tasks(now, &id, &tasks, scale)?;
                let a = s
                    .app(&id)
                    .ok_or_else(|| ServiceError::UnknownApp { id: id.to_string() })?;
                if scale {
                    let v = a.def.version.clone().unwrap_or_default();
                    Ok(json!({"deploymentId": Value::Null, "version": v}))
                } else {
                    let tasks: Vec<Value> = killed.iter().map(|i| view::task(&id, a, i)).collect();
                    Ok(json!({ "tasks": tasks }))
                }
            })
            .await
        }
        (m, _) => {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"message": format!("{m} is not allowed here")}),
            );
        }
    };
    match result {
        Ok(v) => reply(StatusCode::OK, v),
        Err(e) => fail(e),
    }
}

async fn list_tasks(State(services): State<Services>) -> Response {
    let svc = match handle(&services) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let r = svc
        .read(|s| {
            let tasks: Vec<Value> = s
                .apps()
                .flat_map(|(id, a)| a.instances.values().map(move |i| view::task(id, a, i)))
                .collect();
            Ok(json!({ "tasks": tasks }))
        })
        .await;
    match r {
        Ok(v) => reply(StatusCode::OK, v),
        Err(e) => fail(e),
    }
}

async fn list_deployments(State(services): State<Services>) -> Response {
    let svc = match handle(&services) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let r = svc
        .read(|s| {
            Ok(Value::Array(
                s.deployments().map(view::deployment).collect(),
            ))
        })
        .await;
    match r {
        Ok(v) => reply(StatusCode::OK, v),
        Err(e) => fail(e),
    }
}

async fn cancel_deployment(State(services): State<Services>, Path(id): Path<String>) -> Response {
    let svc = match handle(&services) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let r = svc
        .write(move |s, _| {
            s.cancel_deployment(&id)?;
            Ok(json!({}))
        })
        .await;
    match r {
        Ok(_) => reply(StatusCode::ACCEPTED, json!({})),
        Err(e) => fail(e),
    }
}

async fn info() -> Response {
    reply(
        StatusCode::OK,
        json!({
            "name": "strata",
            "version": env!("CARGO_PKG_VERSION"),
            "buildref": "strata",
            "elected": true,
            "leader": Value::Null,
            "frameworkId": Value::Null,
            "marathon_config": {},
            "zookeeper_config": {},
            "http_config": {},
            "event_subscriber": Value::Null,
        }),
    )
}
