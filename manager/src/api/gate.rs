//! The standby gate: while this manager does not lead, every request is
//! sent to the manager that does. HTTP requests get `307 Temporary
//! Redirect` to the same path on the leader's advertised address (clients
//! follow it, method and body kept); gRPC calls get `UNAVAILABLE` with the
//! leader's address in the message and in the `strata-leader` metadata;
//! with no leader known yet, HTTP answers `503`. `/health` is answered
//! here, so a load balancer sees a live standby.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tokio::sync::watch;

/// What this manager is, as the gate sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// It leads: requests are served here.
    Leading,
    /// It stands by; `leader` is where the leader is reached, when known.
    Standby {
        /// The leader's advertised `host:port`.
        leader: Option<String>,
    },
}

pub use strata_proto::LEADER_HEADER;

/// The middleware: serves requests while leading, redirects them otherwise.
pub(crate) async fn gate(
    State(role): State<watch::Receiver<Role>>,
    req: Request,
    next: Next,
) -> Response {
    let leader = match &*role.borrow() {
        Role::Leading => None,
        Role::Standby { leader } => Some(leader.clone()),
    };
    let Some(leader) = leader else {
        return next.run(req).await;
    };
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let message = match &leader {
            Some(l) => format!("this manager is a standby; the leader is at {l}"),
            None => "this manager is a standby; no leader is elected yet".to_owned(),
        };
        let mut status = tonic::Status::unavailable(message);
        if let Some(v) = leader.as_deref().and_then(|l| l.parse().ok()) {
            status.metadata_mut().insert(LEADER_HEADER, v);
        }
        return status.into_http::<Body>();
    }
    if req.uri().path() == "/health" {
        return (StatusCode::OK, "standby\n").into_response();
    }
    let Some(leader) = leader else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this manager is a standby; no leader is elected yet\n",
        )
            .into_response();
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("http://{leader}{path}");
    let mut resp = (
        StatusCode::TEMPORARY_REDIRECT,
        format!("this manager is a standby; the leader is at {leader}\n"),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&leader) {
        resp.headers_mut().insert(LEADER_HEADER, v);
    }
    resp
}
