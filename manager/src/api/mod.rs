//! The manager's network APIs on one address: the gRPC services
//! (`Scheduler` for frameworks, `AgentLink` for agents) and the HTTP
//! operator API (state JSON, Prometheus metrics, health, roles, the job
//! history) and the web UI (`ui/`). Requests
//! are told apart by protocol (gRPC is HTTP/2 with `content-type:
//! application/grpc`), so one listener serves both.

#[cfg(test)]
mod access_tests;
mod gate;
mod grpc;
mod http;
mod mesos;
#[cfg(test)]
mod test_http;
mod ui;

pub use gate::{LEADER_HEADER, Role};

pub use http::resident_bytes;

use crate::inbox::CoreHandle;
use crate::services::ServicesHandle;

pub use mesos::{MESOS_CLASS_LABEL, MESOS_VERSION};

/// Whether `subject` may subscribe the framework `req` describes: in its
/// role (`register_frameworks`), with its user (`run_tasks`). Audited.
/// The framework is marked with the subject's principal (whatever the
/// client sent is replaced): only that principal may take it over later.
pub(crate) fn may_subscribe(
    core: &CoreHandle,
    subject: &crate::auth::acl::Subject,
    req: &mut strata_proto::pb::SubscribeRequest,
) -> Result<(), crate::auth::acl::Denied> {
    use crate::auth::acl::{Action, Subject};
    if let Some(f) = req.framework.as_mut() {
        f.principal = match subject {
            Subject::Principal(p) => p.clone(),
            Subject::Operator | Subject::Anonymous => String::new(),
        };
    }
    let fw = req.framework.as_ref();
    let role = fw
        .map(|f| f.role.as_str())
        .filter(|r| !r.is_empty())
        .unwrap_or("*");
    core.access
        .authorize(subject, Action::RegisterFrameworks, role)?;
    if let Some(user) = fw.map(|f| f.user.as_str()).filter(|u| !u.is_empty()) {
        core.access.authorize(subject, Action::RunTasks, user)?;
    }
    Ok(())
}

/// Whether `subject` may launch what `call` launches: each task that
/// names a user must be permitted to run as it (`run_tasks`; a task
/// naming none runs as its framework's user, checked at subscription).
/// Audited.
pub(crate) fn may_launch(
    core: &CoreHandle,
    subject: &crate::auth::acl::Subject,
    call: &strata_proto::pb::Call,
) -> Result<(), crate::auth::acl::Denied> {
    use strata_proto::pb::call::{Call as C, operation::Operation as Op};
    let Some(C::Accept(accept)) = &call.call else {
        return Ok(());
    };
    let users = accept
        .operations
        .iter()
        .filter_map(|o| o.operation.as_ref().map(|Op::Launch(l)| l))
        .flat_map(|l| &l.tasks)
        .filter_map(|t| t.command.as_ref())
        .map(|c| c.user.as_str())
        .filter(|u| !u.is_empty());
    let mut seen = std::collections::BTreeSet::new();
    for user in users {
        if seen.insert(user) {
            core.access
                .authorize(subject, crate::auth::acl::Action::RunTasks, user)?;
        }
    }
    Ok(())
}

/// Writes a refused takeover (a principal re-subscribing another's
/// framework) to the audit log.
pub(crate) fn audit_refused_takeover(
    core: &CoreHandle,
    subject: &crate::auth::acl::Subject,
    e: &crate::master::MasterError,
) {
    if let crate::master::MasterError::PrincipalMismatch { framework_id, .. } = e {
        core.access.audit(
            subject,
            "take_over_framework",
            framework_id.as_str(),
            "denied",
        );
    }
}

/// The combined router; Marathon's API over `services` when the manager
/// runs the services scheduler.
pub(crate) fn router(core: CoreHandle, services: Option<ServicesHandle>) -> axum::Router {
    let grpc = grpc::routes(core.clone());
    let ui = ui::routes(core.clone(), services.clone());
    http::router(core, services).merge(grpc).merge(ui)
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
