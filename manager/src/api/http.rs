//! The HTTP operator API (JSON) and Prometheus metrics.
//!
//! * `GET /health`: liveness, no token needed.
//! * `GET /version` (no token needed): `{"version": "1.11.0",
//!   "strata_version": "...", "protocol": N}`, the Mesos version first.
//! * `POST /api/v1/scheduler`: the Mesos v1 scheduler API (`mesos/`).
//! * `GET /api/v1/state`: agents, frameworks, roles, tasks, classes.
//! * `GET /api/v1/agents`, `/api/v1/frameworks`, `/api/v1/tasks`, `/api/v1/roles`.
//! * `PUT /api/v1/roles/{role}` with `{"weight": 2, "quota": "cpus:4;mem:8g"}`.
//! * `POST /api/v1/agents/{agent}/drain` with `{"deadline_seconds": 3600}`
//!   (optional): no offers on the agent, what is left at the deadline
//!   killed; `POST /api/v1/agents/{agent}/undrain` ends it.
//! * `GET /metrics`: Prometheus text format.

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use strata_proto::ids::{AgentId, Role};
use strata_proto::resources::Resources;
use tokio::sync::oneshot;

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
        .route("/metrics", get(metrics))
        .merge(crate::services::http::routes(services))
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

async fn auth(State(core): State<CoreHandle>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if super::token_ok(core.token.as_deref(), header) {
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

async fn snapshot(
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

async fn set_role(
    State(core): State<CoreHandle>,
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
    Path(agent): Path<String>,
    body: Result<Json<DrainBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
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

async fn undrain(State(core): State<CoreHandle>, Path(agent): Path<String>) -> Response {
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
