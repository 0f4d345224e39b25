//! The HTTP operator API (JSON) and Prometheus metrics.
//!
//! * `GET /health`: liveness, no token needed.
//! * `GET /version` (no token needed): `{"version": "1.11.0",
//!   "strata_version": "...", "protocol": N}`, the Mesos version first.
//! * `POST /api/v1/scheduler`: the Mesos v1 scheduler API (`mesos/`).
//! * `GET /api/v1/state`: agents, frameworks, roles, tasks, classes.
//! * `GET /api/v1/agents`, `/api/v1/frameworks`, `/api/v1/tasks`, `/api/v1/roles`.
//! * `POST /api/v1/frameworks/{id}/teardown`: removes a framework (its
//!   tasks killed), under `teardown_frameworks` by its principal.
//! * `PUT /api/v1/roles/{role}` with `{"weight": 2, "quota": "cpus:4;mem:8g"}`.
//! * `POST /api/v1/agents/{agent}/drain` with `{"deadline_seconds": 3600}`
//!   (optional): no offers on the agent, what is left at the deadline
//!   killed; `POST /api/v1/agents/{agent}/undrain` ends it.
//! * `PUT /api/v1/jobs/{job}` with a job's report (batch drivers send it);
//!   `GET /api/v1/jobs?state=&framework=&offset=&limit=` lists the job
//!   history (newest first, without stages), `GET /api/v1/jobs/{job}` is
//!   one job's whole report.
//! * `GET /api/v1/principals`, `POST /api/v1/principals` with
//!   `{"name": "etl"}` (answers the principal's token, once) and
//!   `DELETE /api/v1/principals/{name}` (revokes it): the cluster's token
//!   only.
//! * `GET /metrics`: Prometheus text format.

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use strata_proto::ids::{AgentId, FrameworkId, Role};
use strata_proto::resources::Resources;
use tokio::sync::oneshot;

use crate::auth::acl::{Action, Subject};
use crate::inbox::{CoreHandle, Input};
use crate::master::MasterError;
use crate::master::view::StateView;
use crate::services::ServicesHandle;

pub(super) fn router(core: CoreHandle, services: Option<ServicesHandle>) -> Router {
    let api = Router::new()
        .route("/api/v1/state", get(state))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/frameworks", get(frameworks))
        .route("/api/v1/tasks", get(tasks))
        .route("/api/v1/roles", get(roles))
        .route("/api/v1/roles/{role}", put(set_role))
        .route("/api/v1/agents/{agent}/drain", post(drain))
        .route("/api/v1/agents/{agent}/undrain", post(undrain))
        .route("/api/v1/frameworks/{framework}/teardown", post(teardown))
        .route(
            "/api/v1/principals",
            get(list_principals).post(add_principal),
        )
        .route("/api/v1/principals/{name}", delete(revoke_principal))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{job}", get(get_job).put(put_job))
        .route("/metrics", get(metrics))
        .merge(
            crate::services::http::routes(services)
                .route_layer(middleware::from_fn_with_state(core.clone(), apps_acl)),
        )
        .merge(super::mesos::routes())
        .route_layer(middleware::from_fn_with_state(core.clone(), auth))
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/ping", get(crate::services::http::ping));
    api.with_state(core)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "message": message.into() }))).into_response()
}

async fn auth(State(core): State<CoreHandle>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(subject) = core.access.authenticate(header) {
        req.extensions_mut().insert(subject);
        next.run(req).await
    } else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token (authorization: Bearer <token>, or Basic with the token as the password)",
        );
        // Basic is offered too, for clients that only speak it (Mesos's).
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"strata\""),
        );
        r
    }
}

pub(super) async fn snapshot(
    core: &CoreHandle,
) -> Result<(StateView, Vec<(&'static str, &'static str, f64)>), Response> {
    let (reply, wait) = oneshot::channel();
    core.tx
        .send(Input::State { reply })
        .await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "manager is shutting down"))?;
    wait.await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "manager is shutting down"))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Mesos's version first (its libraries read `version` to pick their
/// protocol), then Strata's own.
async fn version() -> Json<serde_json::Value> {
    Json(json!({
        "version": super::MESOS_VERSION,
        "strata_version": env!("CARGO_PKG_VERSION"),
        "protocol": strata_proto::PROTOCOL_VERSION,
    }))
}

async fn state(State(core): State<CoreHandle>) -> Response {
    match snapshot(&core).await {
        Ok((s, _)) => Json(s).into_response(),
        Err(r) => r,
    }
}

async fn agents(State(core): State<CoreHandle>) -> Response {
    match snapshot(&core).await {
        Ok((s, _)) => Json(s.agents).into_response(),
        Err(r) => r,
    }
}

async fn frameworks(State(core): State<CoreHandle>) -> Response {
    match snapshot(&core).await {
        Ok((s, _)) => Json(s.frameworks).into_response(),
        Err(r) => r,
    }
}

async fn tasks(State(core): State<CoreHandle>) -> Response {
    match snapshot(&core).await {
        Ok((s, _)) => {
            Json(json!({ "tasks": s.tasks, "completed_tasks": s.completed_tasks })).into_response()
        }
        Err(r) => r,
    }
}

async fn roles(State(core): State<CoreHandle>) -> Response {
    match snapshot(&core).await {
        Ok((s, _)) => Json(s.roles).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    #[serde(default = "one")]
    weight: f64,
    #[serde(default)]
    quota: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// The request's subject (set by [`auth`]).
type Who = axum::Extension<Subject>;

/// The app ids a Marathon request changes: from its path
/// (`/v2/apps/{id}[/restart]`), from its body (`POST /v2/apps`, one app
/// or a list), or every app (`/`, for a deployment's cancel).
pub(super) fn changed_apps(path: &str, body: &[u8]) -> Vec<String> {
    let norm = |id: &str| {
        let id = id.trim_end_matches('/');
        if id.starts_with('/') {
            id.to_owned()
        } else {
            format!("/{id}")
        }
    };
    if let Some(rest) = path.strip_prefix("/v2/apps/") {
        // As the handler reads it (`/web/tasks/T` acts on `/web`); a path
        // it refuses names the root.
        return vec![crate::services::http::app_of_path(rest).unwrap_or_else(|| "/".to_owned())];
    }
    if path.starts_with("/v2/deployments") {
        return vec!["/".to_owned()];
    }
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let apps = match &v {
        serde_json::Value::Array(list) => list.iter().collect(),
        other => vec![other],
    };
    apps.iter()
        .map(|a| norm(a["id"].as_str().unwrap_or("")))
        .collect()
}

/// Marathon's changes under `manage_apps` (by app id; a rule's object
/// ending in `/` covers the ids under it). Reads pass.
async fn apps_acl(State(core): State<CoreHandle>, req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD {
        return next.run(req).await;
    }
    let who = req
        .extensions()
        .get::<Subject>()
        .cloned()
        .unwrap_or(Subject::Anonymous);
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 8 << 20).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    for app in changed_apps(parts.uri.path(), &bytes) {
        if let Some(r) = refused(&core, &who, Action::ManageApps, &app) {
            return r;
        }
    }
    // The user an app's instances run as is a `run_tasks` object too.
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let apps = match &v {
        serde_json::Value::Array(list) => list.iter().collect(),
        other => vec![other],
    };
    for user in apps.iter().filter_map(|a| a["user"].as_str()) {
        if !user.is_empty()
            && let Some(r) = refused(&core, &who, Action::RunTasks, user)
        {
            return r;
        }
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// The refusal of what the ACLs do not permit (audited either way).
fn refused(core: &CoreHandle, who: &Subject, action: Action, object: &str) -> Option<Response> {
    core.access
        .authorize(who, action, object)
        .err()
        .map(|d| error(StatusCode::FORBIDDEN, d.to_string()))
}

async fn set_role(
    State(core): State<CoreHandle>,
    axum::Extension(who): Who,
    Path(role): Path<String>,
    body: Result<Json<RoleBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if let Err(e) = crate::master::validate_id("role", &role) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    if let Some(r) = refused(&core, &who, Action::UpdateRoles, &role) {
        return r;
    }
    let quota = match body.quota.as_deref().map(Resources::parse).transpose() {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    change(&core, |reply| Input::SetRole {
        role: Role::new(role),
        weight: body.weight,
        quota,
        reply,
    })
    .await
}

/// Sends a change to the core and answers once it is durable: `{"status":
/// "ok"}`, or the master's error with its status.
async fn change(
    core: &CoreHandle,
    input: impl FnOnce(oneshot::Sender<Result<(), MasterError>>) -> Input,
) -> Response {
    let (reply, wait) = oneshot::channel();
    if core.tx.send(input(reply)).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "manager is shutting down");
    }
    match wait.await {
        Ok(Ok(())) => Json(json!({ "status": "ok" })).into_response(),
        Ok(Err(e)) => error(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.to_string(),
        ),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "manager is shutting down"),
    }
}

/// The longest drain deadline accepted (a week).
const MAX_DRAIN_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    /// Seconds until what is left is killed (default an hour).
    #[serde(default = "an_hour")]
    deadline_seconds: f64,
}

fn an_hour() -> f64 {
    3600.0
}

async fn drain(
    State(core): State<CoreHandle>,
    axum::Extension(who): Who,
    Path(agent): Path<String>,
    body: Result<Json<DrainBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if let Some(r) = refused(&core, &who, Action::ManageAgents, &agent) {
        return r;
    }
    let deadline = match std::time::Duration::try_from_secs_f64(body.deadline_seconds) {
        Ok(d) if body.deadline_seconds <= MAX_DRAIN_SECONDS => d,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid deadline_seconds {}: a number of seconds from 0 to {MAX_DRAIN_SECONDS}",
                    body.deadline_seconds
                ),
            );
        }
    };
    change(&core, |reply| Input::Drain {
        agent: AgentId::new(agent),
        deadline: Some(deadline),
        reply,
    })
    .await
}

async fn teardown(
    State(core): State<CoreHandle>,
    axum::Extension(who): Who,
    Path(framework): Path<String>,
) -> Response {
    let state = match snapshot(&core).await {
        Ok((s, _)) => s,
        Err(r) => return r,
    };
    // The ACL's object: the framework's principal (`operator` for one
    // subscribed with the cluster's token).
    let owner = match state.frameworks.iter().find(|f| f.id == framework) {
        Some(f) if f.principal.is_empty() => "operator".to_owned(),
        Some(f) => f.principal.clone(),
        None => "unknown".to_owned(),
    };
    if let Some(r) = refused(&core, &who, Action::TeardownFrameworks, &owner) {
        return r;
    }
    change(&core, |reply| Input::Teardown {
        framework: FrameworkId::new(framework),
        reply,
    })
    .await
}

async fn undrain(
    State(core): State<CoreHandle>,
    axum::Extension(who): Who,
    Path(agent): Path<String>,
) -> Response {
    if let Some(r) = refused(&core, &who, Action::ManageAgents, &agent) {
        return r;
    }
    change(&core, |reply| Input::Drain {
        agent: AgentId::new(agent),
        deadline: None,
        reply,
    })
    .await
}

async fn metrics(State(core): State<CoreHandle>) -> Response {
    let (_, gauges) = match snapshot(&core).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut out = String::new();
    for (name, help, value) in gauges {
        let kind = if name.ends_with("_total") && !name.contains("cluster") {
            "counter"
        } else {
            "gauge"
        };
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP strata_process_resident_memory_bytes resident memory of the manager\n# TYPE strata_process_resident_memory_bytes gauge\nstrata_process_resident_memory_bytes {}\n",
        resident_bytes()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Resident memory of this process, from /proc (0 where unavailable).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// The filters of `GET /api/v1/jobs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    framework: Option<String>,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A job as the list shows it: its report without stages and executors.
fn job_summary(r: &strata_proto::jobs::JobReport) -> serde_json::Value {
    let (done, partitions) = r.progress();
    json!({
        "id": r.id,
        "framework_id": r.framework_id,
        "driver": r.driver,
        "description": r.description,
        "state": r.state,
        "error": r.error,
        "submitted_at": r.submitted_at,
        "ended_at": r.ended_at,
        "stages": r.stages.len(),
        "partitions_done": done,
        "partitions": partitions,
    })
}

async fn list_jobs(
    State(core): State<CoreHandle>,
    query: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let all = core.jobs.list();
    let matching: Vec<_> = all
        .iter()
        .filter(|r| q.state.as_ref().is_none_or(|s| &r.state == s))
        .filter(|r| q.framework.as_ref().is_none_or(|f| &r.framework_id == f))
        .collect();
    let jobs: Vec<_> = matching
        .iter()
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(100))
        .map(|r| job_summary(r))
        .collect();
    Json(json!({ "total": matching.len(), "jobs": jobs })).into_response()
}

async fn get_job(State(core): State<CoreHandle>, Path(job): Path<String>) -> Response {
    match core.jobs.get(&job) {
        Some(r) => Json(r.as_ref()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no job {job:?} in the history"),
        ),
    }
}

async fn put_job(
    State(core): State<CoreHandle>,
    axum::Extension(who): Who,
    Path(job): Path<String>,
    body: Result<Json<strata_proto::jobs::JobReport>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(report) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    // A principal reports the jobs of its own frameworks only.
    let (reply, wait) = oneshot::channel();
    let framework = FrameworkId::new(report.framework_id.clone());
    if core
        .tx
        .send(Input::FrameworkPrincipal { framework, reply })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "manager is shutting down");
    }
    let allowed = match (wait.await.ok().flatten(), &who) {
        (Some(recorded), _) => who.may_act_for(&recorded),
        (None, Subject::Principal(_)) => false,
        (None, _) => true,
    };
    if !allowed {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not report the jobs of framework {:?}",
                who.name(),
                report.framework_id
            ),
        );
    }
    match core.jobs.put(&job, report) {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// Only the operator (the cluster's token) manages principals: the
/// refusal of anyone else.
fn not_operator(who: &Subject) -> Option<Response> {
    (*who != Subject::Operator).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "principals are managed with the cluster's token",
        )
    })
}

fn access_error(e: crate::auth::AccessError) -> Response {
    error(
        StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.to_string(),
    )
}

async fn list_principals(State(core): State<CoreHandle>, axum::Extension(who): Who) -> Response {
    if let Some(r) = not_operator(&who) {
        return r;
    }
    Json(json!({ "principals": core.access.principals().list() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPrincipal {
    name: String,
}

async fn add_principal(
    State(core): State<CoreHandle>,
    axum::Extension(who): Who,
    body: Result<Json<NewPrincipal>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(r) = not_operator(&who) {
        return r;
    }
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match core.access.add_principal(&who, &body.name).await {
        Ok(token) => (
            StatusCode::CREATED,
            Json(json!({ "name": body.name, "token": token })),
        )
            .into_response(),
        Err(e) => access_error(e),
    }
}

async fn revoke_principal(
    State(core): State<CoreHandle>,
    axum::Extension(who): Who,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = not_operator(&who) {
        return r;
    }
    match core.access.revoke_principal(&who, &name).await {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => access_error(e),
    }
}
