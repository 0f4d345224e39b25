//! Strata's events written as Mesos v1 scheduler events (JSON), and the
//! RecordIO framing they travel in.

use base64::Engine as _;
use serde_json::{Value, json};
use strata_proto::pb::{self, event::Event as E};

/// The manager as a Mesos `MasterInfo`, from the address the framework
/// reached it at.
#[derive(Clone, Debug)]
pub struct MasterInfo {
    /// The host name or address the client used.
    pub hostname: String,
    /// The port.
    pub port: u16,
}

impl MasterInfo {
    fn json(&self) -> Value {
        // Mesos's `ip` is the IPv4 address as an integer in network order.
        let ip = self
            .hostname
            .parse::<std::net::Ipv4Addr>()
            .map(|a| u32::from_le_bytes(a.octets()))
            .unwrap_or(0);
        json!({
            "id": "strata",
            "ip": ip,
            "port": self.port,
            "hostname": self.hostname,
            "version": super::MESOS_VERSION,
            "address": { "hostname": self.hostname, "port": self.port },
        })
    }
}

/// Who the events are written for: the framework's role, whether it
/// declared `PARTITION_AWARE`, and the manager it reached.
#[derive(Clone, Debug)]
pub struct Audience {
    /// The framework's role (`*` when it named none).
    pub role: String,
    /// Whether the framework understands `TASK_UNREACHABLE`, `TASK_GONE`,
    /// `TASK_DROPPED` and `TASK_UNKNOWN`; without it Mesos says
    /// `TASK_LOST` for all four, and so does Strata.
    pub partition_aware: bool,
    /// The manager.
    pub master: MasterInfo,
}

fn id(v: &str) -> Value {
    json!({ "value": v })
}

/// One event as Mesos's JSON; `None` for events Mesos frameworks have no
/// word for (an agent's drain, which Mesos tells with inverse offers).
pub fn event(ev: pb::Event, to: &Audience) -> Option<Value> {
    let role = to.role.as_str();
    Some(match ev.event? {
        E::Subscribed(s) => json!({
            "type": "SUBSCRIBED",
            "subscribed": {
                "framework_id": id(&s.framework_id),
                "heartbeat_interval_seconds": s.heartbeat_interval_seconds,
                "master_info": to.master.json(),
            },
        }),
        E::Offers(o) => json!({
            "type": "OFFERS",
            "offers": { "offers": o.offers.iter().map(|o| offer(o, role)).collect::<Vec<_>>() },
        }),
        E::Rescind(r) => json!({ "type": "RESCIND", "rescind": { "offer_id": id(&r.offer_id) } }),
        E::Update(u) => json!({
            "type": "UPDATE",
            "update": { "status": status(&u.status?, to.partition_aware) },
        }),
        E::Failure(f) => json!({ "type": "FAILURE", "failure": { "agent_id": id(&f.agent_id) } }),
        E::Error(e) => error(&e.message),
        E::Heartbeat(_) => json!({ "type": "HEARTBEAT" }),
        E::Drain(_) => return None,
    })
}

/// An `ERROR` event: the stream ends after it.
pub fn error(message: &str) -> Value {
    json!({ "type": "ERROR", "error": { "message": message } })
}

fn resource(r: &pb::Resource, role: &str) -> Value {
    let mut v = if r.ranges.is_empty() {
        json!({ "name": r.name, "type": "SCALAR", "scalar": { "value": r.scalar } })
    } else {
        let ranges: Vec<Value> = r
            .ranges
            .iter()
            .map(|x| json!({ "begin": x.begin, "end": x.end }))
            .collect();
        json!({ "name": r.name, "type": "RANGES", "ranges": { "range": ranges } })
    };
    v["role"] = json!("*");
    v["allocation_info"] = json!({ "role": role });
    if r.revocable {
        v["revocable"] = json!({});
    }
    v
}

fn offer(o: &pb::Offer, role: &str) -> Value {
    let attributes: Vec<Value> = o
        .attributes
        .iter()
        .map(|a| json!({ "name": a.name, "type": "TEXT", "text": { "value": a.value } }))
        .collect();
    let mut v = json!({
        "id": id(&o.offer_id),
        "framework_id": id(&o.framework_id),
        "agent_id": id(&o.agent_id),
        "hostname": o.hostname,
        "resources": o.resources.iter().map(|r| resource(r, role)).collect::<Vec<_>>(),
        "attributes": attributes,
        "allocation_info": { "role": role },
    });
    if let Some((host, port)) = o.agent_address.rsplit_once(':')
        && let Ok(port) = port.parse::<u16>()
    {
        v["url"] = json!({
            "scheme": "http",
            "address": { "hostname": host, "port": port },
            "path": "/",
        });
    }
    v
}

/// Strata's reasons in Mesos's words: every one named, so none reaches a
/// Mesos library that does not know it (mesos-go refuses unknown names).
fn reason(r: pb::Reason) -> Option<&'static str> {
    use pb::Reason as R;
    Some(match r {
        // Mesos's command executor gives no reason for an exit or a kill.
        R::Unspecified | R::CommandExited | R::KilledByFramework => return None,
        R::Preempted | R::ResourcesRevoked | R::AgentResourcesChanged => {
            "REASON_CONTAINER_PREEMPTED"
        }
        R::AgentUnreachable | R::AgentDisconnected => "REASON_AGENT_DISCONNECTED",
        R::AgentReregistered => "REASON_AGENT_REREGISTERED",
        R::AgentRemoved => "REASON_AGENT_REMOVED",
        R::AgentRestarted => "REASON_AGENT_RESTARTED",
        R::AgentDrained => "REASON_AGENT_DRAINING",
        R::FrameworkRemoved | R::FrameworkFailoverTimeout => "REASON_FRAMEWORK_REMOVED",
        R::InvalidOffers => "REASON_INVALID_OFFERS",
        R::TaskInvalid => "REASON_TASK_INVALID",
        R::TaskUnknown => "REASON_TASK_UNKNOWN",
        R::Reconciliation => "REASON_RECONCILIATION",
        R::ContainerLaunchFailed => "REASON_CONTAINER_LAUNCH_FAILED",
        R::TaskKilledDuringLaunch => "REASON_TASK_KILLED_DURING_LAUNCH",
        R::ContainerLimitation => "REASON_CONTAINER_LIMITATION",
    })
}

/// A state as a framework of this kind is told it.
fn state(s: pb::TaskState, partition_aware: bool) -> &'static str {
    use pb::TaskState as S;
    match s {
        S::TaskUnreachable
        | S::TaskGone
        | S::TaskGoneByOperator
        | S::TaskDropped
        | S::TaskUnknown
            if !partition_aware =>
        {
            "TASK_LOST"
        }
        other => other.as_str_name(),
    }
}

fn source(s: pb::Source) -> &'static str {
    match s {
        pb::Source::Manager | pb::Source::Unspecified => "SOURCE_MASTER",
        pb::Source::Agent => "SOURCE_AGENT",
        pb::Source::Executor => "SOURCE_EXECUTOR",
    }
}

fn status(s: &pb::TaskStatus, partition_aware: bool) -> Value {
    let st = pb::TaskState::try_from(s.state).unwrap_or(pb::TaskState::TaskUnknown);
    let mut v = json!({
        "task_id": id(&s.task_id),
        "state": state(st, partition_aware),
        "source": source(pb::Source::try_from(s.source).unwrap_or(pb::Source::Unspecified)),
        "timestamp": s.timestamp,
    });
    if !s.agent_id.is_empty() {
        v["agent_id"] = id(&s.agent_id);
    }
    if let Some(r) = pb::Reason::try_from(s.reason).ok().and_then(reason) {
        v["reason"] = json!(r);
    }
    let mut message = s.message.clone();
    if let Some(code) = s.exit_code {
        // Mesos tells a command's exit in the message, as its executor does.
        if message.is_empty() {
            message = format!("Command exited with status {code}");
        }
    }
    if !message.is_empty() {
        v["message"] = json!(message);
    }
    if !s.uuid.is_empty() {
        v["uuid"] = json!(base64::engine::general_purpose::STANDARD.encode(&s.uuid));
    }
    if let Some(h) = s.healthy {
        v["healthy"] = json!(h);
    }
    v
}

/// One RecordIO record: the JSON's length in bytes, a newline, the JSON.
pub fn record(v: &Value) -> bytes::Bytes {
    let body = v.to_string();
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body.as_bytes());
    bytes::Bytes::from(out)
}
