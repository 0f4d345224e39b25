//! The gateway's HTTP API: its sessions and running queries, and a cancel
//! (what `strata gateway queries` reads and calls).
//!
//! * `GET /api/v1/health`: 200 while the gateway serves (no token needed:
//!   the services scheduler's health check asks it).
//! * `GET /api/v1/sessions`: the connected sessions (JSON array).
//! * `GET /api/v1/queries`: the running queries (JSON array).
//! * `POST /api/v1/queries/{id}/cancel`: cancels one (404 if no such query).
//!
//! With a token configured, every request must carry it
//! (`Authorization: Bearer …`); without one the API listens on loopback
//! only, as the PostgreSQL listener does.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::Gateway;

/// The API's routes over `gateway`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let authorized = Router::new()
        .route("/api/v1/sessions", get(sessions))
        .route("/api/v1/queries", get(queries))
        .route("/api/v1/queries/{id}/cancel", post(cancel))
        .layer(middleware::from_fn_with_state(gateway.clone(), authorize));
    Router::new()
        .route("/api/v1/health", get(health))
        .merge(authorized)
        .with_state(gateway)
}

async fn authorize(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    if let Some(token) = &gateway.config.token {
        let given = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| strata_proto::same_secret(g, token)) {
            return (
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

async fn health(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "serving",
        "sessions": gateway.registry.sessions().len(),
        "queries": gateway.registry.queries().len(),
    }))
}

async fn sessions(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    Json(gateway.registry.sessions())
}

async fn queries(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    Json(gateway.registry.queries())
}

async fn cancel(State(gateway): State<Arc<Gateway>>, Path(id): Path<u64>) -> Response {
    if gateway.registry.cancel(id) {
        (StatusCode::OK, Json(serde_json::json!({ "cancelled": id }))).into_response()
    } else {
        (StatusCode::NOT_FOUND, format!("no running query {id}\n")).into_response()
    }
}
