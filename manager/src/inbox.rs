//! The core's inbox: the [`Input`]s that the API handlers (and the services
//! scheduler's usage reads) send to the server's core, and the
//! [`CoreHandle`] they send them through. The server consumes them, the API
//! produces them; neither module imports the other for it.

use std::sync::Arc;

use strata_proto::ids::{AgentId, FrameworkId, Role, StreamId};
use strata_proto::pb;
use strata_proto::resources::Resources;
use tokio::sync::{mpsc, oneshot};

use crate::master::{MasterError, view::StateView};

/// One Prometheus gauge: (name, help, value).
pub(crate) type Gauge = (&'static str, &'static str, f64);

/// Sender half of an agent link.
pub(crate) type AgentTx = mpsc::Sender<Result<pb::ManagerMessage, tonic::Status>>;
/// Sender half of a framework subscription.
pub(crate) type FrameworkTx = mpsc::Sender<Result<pb::Event, tonic::Status>>;

/// An input to the core.
pub(crate) enum Input {
    AgentRegister {
        reg: pb::agent_message::Register,
        conn: u64,
        tx: AgentTx,
        reply: oneshot::Sender<Result<AgentId, MasterError>>,
    },
    AgentMessage {
        agent: AgentId,
        conn: u64,
        message: pb::agent_message::Message,
    },
    AgentGone {
        agent: AgentId,
        conn: u64,
    },
    Subscribe {
        req: pb::SubscribeRequest,
        /// Who subscribes: a framework is taken over only by its principal.
        caller: crate::auth::acl::Subject,
        tx: FrameworkTx,
        reply: oneshot::Sender<Result<(FrameworkId, StreamId), MasterError>>,
    },
    Call {
        call: pb::Call,
        /// Who calls: only the framework's principal (or the operator).
        caller: crate::auth::acl::Subject,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    StreamClosed {
        framework: FrameworkId,
        stream: StreamId,
    },
    State {
        reply: oneshot::Sender<(StateView, Vec<Gauge>)>,
    },
    /// The frameworks not removed.
    Frameworks {
        reply: oneshot::Sender<Vec<crate::master::view::FrameworkView>>,
    },
    /// The principal that subscribed a framework (`None`: unknown).
    FrameworkPrincipal {
        framework: FrameworkId,
        reply: oneshot::Sender<Option<String>>,
    },
    TaskCpus {
        framework: strata_proto::ids::FrameworkId,
        reply: oneshot::Sender<std::collections::BTreeMap<strata_proto::ids::TaskId, f64>>,
    },
    SetRole {
        role: Role,
        weight: f64,
        quota: Option<Resources>,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    /// Tear a framework down (an operator's call).
    Teardown {
        framework: FrameworkId,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    /// Drain an agent (kill what is left after `deadline`), or, with
    /// `None`, end its drain.
    Drain {
        agent: AgentId,
        deadline: Option<std::time::Duration>,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
}

/// A cheap handle the API handlers use to reach the core.
#[derive(Clone)]
pub(crate) struct CoreHandle {
    pub(crate) tx: mpsc::Sender<Input>,
    /// Who may do what: the cluster's token, principals, ACLs.
    pub(crate) access: Arc<crate::auth::Access>,
    /// The jobs drivers report, kept beside the core (not cluster state).
    pub(crate) jobs: Arc<crate::jobs::JobHistory>,
}
