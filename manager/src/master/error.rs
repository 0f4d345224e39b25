//! Errors the master returns to a caller whose input it refuses.

use strata_proto::class::UnknownClass;
use strata_proto::ids::{AgentId, FrameworkId, Role, StreamId};
use strata_proto::resources::ResourceError;

/// Why the master refused an input. Each variant maps to one gRPC code and
/// one HTTP status (see [`MasterError::grpc_code`], [`MasterError::http_status`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MasterError {
    /// The peer speaks another protocol version.
    #[error("protocol version {theirs} is not supported (this manager speaks {ours})")]
    ProtocolVersion {
        /// Ours.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// A required field is missing.
    #[error("missing field {field}")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// An id that is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    #[error("invalid {kind} id {value:?}: use 1-255 characters of A-Z a-z 0-9 . _ : -")]
    InvalidId {
        /// What kind of id.
        kind: &'static str,
        /// The value given.
        value: String,
    },
    /// Bad resources.
    #[error(transparent)]
    Resources(#[from] ResourceError),
    /// An unknown priority class.
    #[error(transparent)]
    Class(#[from] UnknownClass),
    /// The framework is not known.
    #[error("framework {framework_id} is not subscribed")]
    NotSubscribed {
        /// The framework.
        framework_id: FrameworkId,
    },
    /// The call came on a stream that is no longer the framework's.
    #[error("stream {stream_id} is not the current stream of framework {framework_id}")]
    StaleStream {
        /// The framework.
        framework_id: FrameworkId,
        /// The stream named by the call.
        stream_id: StreamId,
    },
    /// The framework was removed and may not come back.
    #[error("framework {framework_id} has been removed")]
    FrameworkRemoved {
        /// The framework.
        framework_id: FrameworkId,
    },
    /// A framework may not change role while it has tasks.
    #[error("framework {framework_id} cannot change role from {from} to {to} while it has tasks")]
    RoleChange {
        /// The framework.
        framework_id: FrameworkId,
        /// Old role.
        from: Role,
        /// New role.
        to: Role,
    },
    /// A principal re-subscribing another's framework.
    #[error(
        "framework {framework_id} was not subscribed by principal {principal:?}: only its own principal (or the cluster's token) may take it over"
    )]
    PrincipalMismatch {
        /// The framework.
        framework_id: FrameworkId,
        /// Who tried.
        principal: String,
    },
    /// A bad role weight.
    #[error("invalid weight {weight} for role {role}: must be a finite number > 0")]
    InvalidWeight {
        /// The role.
        role: Role,
        /// The weight.
        weight: f64,
    },
    /// A call with no operation.
    #[error("empty call: no operation given")]
    EmptyCall,
    /// An agent message before registration.
    #[error("agent is not registered")]
    AgentNotRegistered,
    /// A placement constraint with an operator this manager does not know.
    #[error("unknown operator {operator} in the constraint on {field:?}")]
    UnknownConstraintOperator {
        /// The constrained field.
        field: String,
        /// The operator's wire value.
        operator: i32,
    },
    /// An ask no agent could ever hold.
    #[error("ask for {ask} can never be placed: the largest agent offers {largest}")]
    ImpossibleAsk {
        /// The ask.
        ask: String,
        /// The largest agent.
        largest: String,
    },
    /// No framework has this id.
    #[error("framework {framework_id} is not known to this manager")]
    UnknownFramework {
        /// The id asked for.
        framework_id: FrameworkId,
    },
    /// No agent has this id.
    #[error("agent {agent_id} is not known to this manager")]
    UnknownAgent {
        /// The id asked for.
        agent_id: AgentId,
    },
    /// The registry could not be written (a full disk, etcd out of
    /// reach): the change is kept in memory and written with the next
    /// batch, but it is not acknowledged.
    #[error(
        "the registry cannot be written ({reason}); the change is retried with the next write and is not acknowledged"
    )]
    StoreUnavailable {
        /// The store's error.
        reason: String,
    },
    /// Undraining an agent that is not being drained.
    #[error("agent {agent_id} is not being drained")]
    NotDraining {
        /// The agent.
        agent_id: AgentId,
    },
}

impl MasterError {
    /// The gRPC status code for this error.
    pub fn grpc_code(&self) -> tonic::Code {
        use MasterError::*;
        match self {
            ProtocolVersion { .. } => tonic::Code::FailedPrecondition,
            MissingField { .. }
            | InvalidId { .. }
            | Resources(_)
            | Class(_)
            | InvalidWeight { .. }
            | UnknownConstraintOperator { .. }
            | EmptyCall => tonic::Code::InvalidArgument,
            ImpossibleAsk { .. } => tonic::Code::InvalidArgument,
            NotSubscribed { .. } | AgentNotRegistered => tonic::Code::FailedPrecondition,
            StaleStream { .. } => tonic::Code::FailedPrecondition,
            FrameworkRemoved { .. } | PrincipalMismatch { .. } => tonic::Code::PermissionDenied,
            RoleChange { .. } | NotDraining { .. } => tonic::Code::FailedPrecondition,
            UnknownAgent { .. } | UnknownFramework { .. } => tonic::Code::NotFound,
            StoreUnavailable { .. } => tonic::Code::Unavailable,
        }
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self.grpc_code() {
            tonic::Code::InvalidArgument => 400,
            tonic::Code::PermissionDenied => 403,
            tonic::Code::NotFound => 404,
            tonic::Code::Unavailable => 503,
            _ => 409,
        }
    }
}

impl From<MasterError> for tonic::Status {
    fn from(e: MasterError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}
