//! The manager's network APIs on one address: the gRPC services
//! (`Scheduler` for frameworks, `AgentLink` for agents) and the HTTP
//! operator API (state JSON, Prometheus metrics, health, roles). Requests
//! are told apart by protocol (gRPC is HTTP/2 with `content-type:
//! application/grpc`), so one listener serves both.

mod gate;
mod grpc;
mod http;
mod mesos;

pub use gate::{LEADER_HEADER, Role};

pub use http::resident_bytes;

use crate::inbox::CoreHandle;
use crate::services::ServicesHandle;

pub use mesos::{MESOS_CLASS_LABEL, MESOS_VERSION};

/// Checks a token in constant time: `Bearer <token>`, or HTTP Basic whose
/// password is the token (any user name), as Mesos's libraries send a
/// principal and its secret.
pub(crate) fn token_ok(expected: Option<&str>, header: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let Some(header) = header else {
        return false;
    };
    if let Some(given) = header.strip_prefix("Bearer ") {
        return strata_proto::same_secret(given, expected);
    }
    let Some(basic) = header.strip_prefix("Basic ") else {
        return false;
    };
    use base64::Engine as _;
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
        return false;
    };
    let Ok(pair) = std::str::from_utf8(&decoded) else {
        return false;
    };
    pair.split_once(':')
        .is_some_and(|(_, secret)| strata_proto::same_secret(secret, expected))
}

/// The combined router; Marathon's API over `services` when the manager
/// runs the services scheduler.
pub(crate) fn router(core: CoreHandle, services: Option<ServicesHandle>) -> axum::Router {
    let grpc = grpc::routes(core.clone());
    http::router(core, services).merge(grpc)
}

/// [`router`] behind the standby gate: served while `role` is
/// [`Role::Leading`], sent to the leader otherwise.
pub(crate) fn gated_router(
    core: CoreHandle,
    services: Option<ServicesHandle>,
    role: tokio::sync::watch::Receiver<Role>,
) -> axum::Router {
    router(core, services).layer(axum::middleware::from_fn_with_state(role, gate::gate))
}
