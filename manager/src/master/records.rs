//! Records kept in the durable registry, and the operations on them.
//!
//! Tasks are not in the registry (as in Mesos): after a manager restart they
//! are rebuilt from the agents' re-registrations.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use strata_proto::ids::{AgentId, FrameworkId, Role};
use strata_proto::resources::Resources;
use strata_proto::time::Timestamp;

/// A registered agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Its id.
    pub id: AgentId,
    /// Host name.
    pub hostname: String,
    /// HTTP address (sandbox API).
    pub address: String,
    /// Advertised resources.
    pub resources: Resources,
    /// Attributes.
    pub attributes: Vec<(String, String)>,
    /// Being drained for maintenance (kept across restarts and failovers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainRecord>,
}

/// An agent's drain: no offers on it from `since`; what still runs there
/// at `deadline` is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// When the drain began.
    pub since: Timestamp,
    /// When what is left is killed.
    pub deadline: Timestamp,
}

/// A subscribed framework.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkRecord {
    /// Its id.
    pub id: FrameworkId,
    /// Name.
    pub name: String,
    /// User.
    pub user: String,
    /// Role.
    pub role: Role,
    /// Default class of whole-agent offers.
    pub default_class: String,
    /// Failover timeout in milliseconds.
    pub failover_timeout_ms: u64,
    /// Host it runs on.
    pub hostname: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The principal that subscribed it (empty: the operator's token, or
    /// a cluster without one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub principal: String,
}

/// A role's weight and quota.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoleRecord {
    /// The role.
    pub role: Role,
    /// Fair-share weight.
    pub weight: f64,
    /// Quota limit.
    pub quota: Option<Resources>,
}

/// One write to the registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PersistOp {
    /// Insert or replace an agent.
    PutAgent(AgentRecord),
    /// Insert or replace a framework.
    PutFramework(FrameworkRecord),
    /// Forget a framework (teardown or failover timeout), keeping its id
    /// as removed.
    RemoveFramework(FrameworkId),
    /// Insert or replace a role.
    PutRole(RoleRecord),
}

/// Everything the registry holds, as read at start-up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistrySnapshot {
    /// Agents.
    pub agents: Vec<AgentRecord>,
    /// Frameworks.
    pub frameworks: Vec<FrameworkRecord>,
    /// Roles.
    pub roles: Vec<RoleRecord>,
    /// Frameworks removed (torn down, or past their failover timeout):
    /// they may never subscribe again, also under a later leader.
    #[serde(default)]
    pub removed_frameworks: Vec<FrameworkId>,
}
