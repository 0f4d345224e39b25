//! What a framework receives: [`Event`]s carrying typed [`Offer`]s and
//! [`TaskStatus`]es, converted and validated from the wire.

use std::time::{Duration, SystemTime};

use strata_proto::ids::{AgentId, FrameworkId, OfferId, StreamId, TaskId};
use strata_proto::pb::{self, Reason, Source, TaskState};
use strata_proto::resources::{Ranges, ResourceError, Resources};

/// One event from the manager, as the SDK delivers it.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The subscription is live (first event of the stream, and again after
    /// each re-subscription).
    Subscribed {
        /// The framework's id: keep it to fail over later.
        framework_id: FrameworkId,
        /// How often the manager sends heartbeats.
        heartbeat_interval: Duration,
    },
    /// New offers. Accept, launch on or decline each; an unanswered offer
    /// holds resources that nobody else can use until it is rescinded.
    Offers(Vec<Offer>),
    /// An offer was withdrawn and may no longer be used.
    Rescind(OfferId),
    /// A task's status changed (or a reconciliation answer). Duplicates have
    /// already been removed by the SDK.
    Update(TaskStatus),
    /// An agent was lost (with `agent_id`), or another failure happened.
    Failure {
        /// The agent concerned, if any.
        agent_id: Option<AgentId>,
        /// What happened.
        message: String,
    },
    /// An agent is being drained for maintenance: nothing more is offered
    /// on it, and what still runs there at `deadline` is killed. Move work
    /// away (and treat outputs kept there as going).
    AgentDraining {
        /// The agent.
        agent_id: AgentId,
        /// When what is left there is killed.
        deadline: std::time::SystemTime,
    },
    /// A drain ended: the agent is offered again.
    AgentUndrained {
        /// The agent.
        agent_id: AgentId,
    },
    /// An error reported by the manager, or a malformed event the SDK could
    /// not convert.
    Error(String),
    /// The manager is alive.
    Heartbeat,
    /// The connection to the manager was lost. With
    /// [`SchedulerConfig::reconnect`](crate::SchedulerConfig::reconnect) the
    /// SDK re-subscribes and a new [`Event::Subscribed`] follows; outstanding
    /// offers are rescinded first. Otherwise the stream ends after this.
    Disconnected {
        /// Why.
        reason: String,
    },
}

/// A wire message that does not convert to its typed form.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConversionError {
    /// A required field is empty or absent.
    #[error("{message} has no {field}")]
    MissingField {
        /// The message type.
        message: &'static str,
        /// The field.
        field: &'static str,
    },
    /// An offer or status names invalid resources.
    #[error("{message} {id} has invalid resources: {source}")]
    Resources {
        /// The message type.
        message: &'static str,
        /// Its id.
        id: String,
        /// The resource error.
        #[source]
        source: ResourceError,
    },
    /// An enum field holds a value this SDK does not know.
    #[error("{message} {id} has an unknown {field} value {value}")]
    UnknownEnum {
        /// The message type.
        message: &'static str,
        /// Its id.
        id: String,
        /// The field.
        field: &'static str,
        /// The value.
        value: i32,
    },
    /// A status-update uuid that is not 16 bytes.
    #[error("status update for task {task_id} has a {len}-byte uuid (16 expected)")]
    BadUuid {
        /// The task.
        task_id: String,
        /// The length received.
        len: usize,
    },
    /// A number that is NaN, infinite or negative.
    #[error("{message} has an invalid {field} {value}")]
    BadNumber {
        /// The message type.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// The value.
        value: f64,
    },
}

fn required(
    value: String,
    message: &'static str,
    field: &'static str,
) -> Result<String, ConversionError> {
    if value.is_empty() {
        Err(ConversionError::MissingField { message, field })
    } else {
        Ok(value)
    }
}

fn optional(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// A non-negative finite number of seconds, as a duration.
pub(crate) fn seconds(
    message: &'static str,
    field: &'static str,
    value: f64,
) -> Result<Duration, ConversionError> {
    Duration::try_from_secs_f64(value).map_err(|_| ConversionError::BadNumber {
        message,
        field,
        value,
    })
}

/// An offer of one agent's resources to this framework.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    /// The offer's id; usable once.
    pub id: OfferId,
    /// The agent whose resources these are.
    pub agent_id: AgentId,
    /// The agent's hostname.
    pub hostname: String,
    /// Regular resources.
    pub resources: Resources,
    /// Revocable resources (allocated to someone else but idle; tasks using
    /// them may be preempted).
    pub revocable: Resources,
    /// The agent's attributes (`rack`, `zone` …), in the agent's order.
    pub attributes: Vec<(String, String)>,
    /// The offer's priority class: tasks launched on it may not be of a
    /// higher class. Empty when the manager names none.
    pub class: String,
    /// The agent's HTTP address (sandbox files), when known.
    pub agent_address: Option<String>,
}

impl Offer {
    /// Converts and validates a wire offer.
    pub fn from_proto(offer: pb::Offer) -> Result<Offer, ConversionError> {
        let id = required(offer.offer_id, "offer", "offer_id")?;
        let (resources, revocable) =
            Resources::from_proto_split(&offer.resources).map_err(|source| {
                ConversionError::Resources {
                    message: "offer",
                    id: id.clone(),
                    source,
                }
            })?;
        let agent_id = required(offer.agent_id, "offer", "agent_id")?;
        Ok(Offer {
            id: OfferId::new(id),
            agent_id: AgentId::new(agent_id),
            hostname: offer.hostname,
            resources,
            revocable,
            attributes: offer
                .attributes
                .into_iter()
                .map(|a| (a.name, a.value))
                .collect(),
            class: offer.priority_class,
            agent_address: optional(offer.agent_address),
        })
    }

    /// Converts to the wire form (for tests and in-process fakes).
    pub fn to_proto(&self, framework_id: &FrameworkId) -> pb::Offer {
        let mut resources = self.resources.to_proto(false);
        resources.extend(self.revocable.to_proto(true));
        pb::Offer {
            offer_id: self.id.as_str().to_owned(),
            framework_id: framework_id.as_str().to_owned(),
            agent_id: self.agent_id.as_str().to_owned(),
            hostname: self.hostname.clone(),
            resources,
            attributes: self
                .attributes
                .iter()
                .map(|(name, value)| pb::Attribute {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            priority_class: self.class.clone(),
            agent_address: self.agent_address.clone().unwrap_or_default(),
        }
    }

    /// Whether the offer's regular resources hold `resources` (concrete
    /// ports included).
    pub fn fits(&self, resources: &Resources) -> bool {
        self.resources.contains(resources)
    }

    /// Whether the offer's revocable resources hold `resources`.
    pub fn fits_revocable(&self, resources: &Resources) -> bool {
        self.revocable.contains(resources)
    }

    /// The `n` lowest ports of the offer, or `None` if it holds fewer.
    pub fn pick_ports(&self, n: u64) -> Option<Ranges> {
        self.resources.ports.take_lowest(n)
    }

    /// The value of an attribute.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The state of a task at one moment, as reported by an agent or the
/// manager.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskStatus {
    /// The task.
    pub task_id: TaskId,
    /// The agent it runs (or ran) on, when known.
    pub agent_id: Option<AgentId>,
    /// Its state.
    pub state: TaskState,
    /// Why it is in that state.
    pub reason: Reason,
    /// Who reported it.
    pub source: Source,
    /// A human-readable message (may be empty).
    pub message: String,
    /// Present on updates that must be acknowledged.
    pub uuid: Option<[u8; 16]>,
    /// When the state was observed, if given.
    pub timestamp: Option<SystemTime>,
    /// The exit code of the task's command, once it has exited.
    pub exit_code: Option<i32>,
    /// The result of the task's health check, if it has one.
    pub healthy: Option<bool>,
}

impl TaskStatus {
    /// Converts and validates a wire status.
    pub fn from_proto(status: pb::TaskStatus) -> Result<TaskStatus, ConversionError> {
        let task_id = required(status.task_id, "task status", "task_id")?;
        let bad_enum = |field, value| ConversionError::UnknownEnum {
            message: "task status",
            id: task_id.clone(),
            field,
            value,
        };
        let state =
            TaskState::try_from(status.state).map_err(|_| bad_enum("state", status.state))?;
        let reason =
            Reason::try_from(status.reason).map_err(|_| bad_enum("reason", status.reason))?;
        let source =
            Source::try_from(status.source).map_err(|_| bad_enum("source", status.source))?;
        let uuid = match status.uuid.len() {
            0 => None,
            16 => {
                let mut u = [0u8; 16];
                u.copy_from_slice(&status.uuid);
                Some(u)
            }
            len => return Err(ConversionError::BadUuid { task_id, len }),
        };
        let timestamp = if status.timestamp == 0.0 {
            None
        } else {
            Some(SystemTime::UNIX_EPOCH + seconds("task status", "timestamp", status.timestamp)?)
        };
        Ok(TaskStatus {
            task_id: TaskId::new(task_id),
            agent_id: optional(status.agent_id).map(AgentId::new),
            state,
            reason,
            source,
            message: status.message,
            uuid,
            timestamp,
            exit_code: status.exit_code,
            healthy: status.healthy,
        })
    }

    /// Converts to the wire form (for tests and in-process fakes).
    pub fn to_proto(&self) -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: self.task_id.as_str().to_owned(),
            agent_id: self
                .agent_id
                .as_ref()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            state: self.state as i32,
            reason: self.reason as i32,
            source: self.source as i32,
            message: self.message.clone(),
            uuid: self.uuid.map(|u| u.to_vec()).unwrap_or_default(),
            timestamp: self
                .timestamp
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64()),
            exit_code: self.exit_code,
            healthy: self.healthy,
        }
    }

    /// Whether no further update can follow for this task.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// Whether the update must be acknowledged (it carries a uuid).
    pub fn needs_ack(&self) -> bool {
        self.uuid.is_some()
    }

    /// `STATE (REASON)`, and `: message` when it has one, e.g.
    /// `TASK_FAILED (REASON_COMMAND_EXITED): exited 1`.
    pub fn describe(&self) -> String {
        let msg = if self.message.is_empty() {
            String::new()
        } else {
            format!(": {}", self.message)
        };
        format!(
            "{} ({}){msg}",
            self.state.as_str_name(),
            self.reason.as_str_name()
        )
    }
}

/// The contents of a `Subscribed` event, validated.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Subscribed {
    pub framework_id: FrameworkId,
    pub stream_id: StreamId,
    pub heartbeat_interval: Duration,
    pub protocol_version: u32,
}

impl Subscribed {
    pub(crate) fn from_proto(s: pb::event::Subscribed) -> Result<Subscribed, ConversionError> {
        Ok(Subscribed {
            framework_id: FrameworkId::new(required(
                s.framework_id,
                "subscribed event",
                "framework_id",
            )?),
            stream_id: StreamId::new(required(s.stream_id, "subscribed event", "stream_id")?),
            heartbeat_interval: seconds(
                "subscribed event",
                "heartbeat_interval_seconds",
                s.heartbeat_interval_seconds,
            )?,
            protocol_version: s.protocol_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> pb::Offer {
        pb::Offer {
            offer_id: "o-1".into(),
            framework_id: "f-1".into(),
            agent_id: "a-1".into(),
            hostname: "host1".into(),
            resources: Resources::parse("cpus:4;mem:1024;ports:[31000-31009]")
                .unwrap()
                .to_proto(false)
                .into_iter()
                .chain(Resources::new(2.0, 0.0).to_proto(true))
                .collect(),
            attributes: vec![pb::Attribute {
                name: "rack".into(),
                value: "r1".into(),
            }],
            priority_class: "batch".into(),
            agent_address: String::new(),
        }
    }

    #[test]
    fn good_offer_converts_and_round_trips() {
        let o = Offer::from_proto(offer()).unwrap();
        assert_eq!(o.id, OfferId::new("o-1"));
        assert_eq!(o.agent_id, AgentId::new("a-1"));
        assert_eq!(o.revocable, Resources::new(2.0, 0.0));
        assert_eq!(o.attribute("rack"), Some("r1"));
        assert_eq!(o.attribute("zone"), None);
        assert_eq!(o.agent_address, None);
        assert!(o.fits(&Resources::new(4.0, 1024.0)));
        assert!(!o.fits(&Resources::new(4.5, 1.0)));
        assert!(o.fits_revocable(&Resources::new(2.0, 0.0)));
        let ports = o.pick_ports(3).unwrap();
        assert_eq!(ports.ranges(), &[(31000, 31002)]);
        assert!(o.fits(&Resources::new(1.0, 1.0).with_ports(ports)));
        assert!(o.pick_ports(11).is_none());
        let back = Offer::from_proto(o.to_proto(&FrameworkId::new("f-1"))).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn malformed_offers_are_errors() {
        let mut p = offer();
        p.offer_id.clear();
        assert!(matches!(
            Offer::from_proto(p),
            Err(ConversionError::MissingField {
                field: "offer_id",
                ..
            })
        ));
        let mut p = offer();
        p.agent_id.clear();
        assert!(Offer::from_proto(p).is_err());
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            let mut p = offer();
            p.resources[0].scalar = bad;
            let err = Offer::from_proto(p).unwrap_err();
            assert!(matches!(err, ConversionError::Resources { .. }), "{err}");
            assert!(err.to_string().contains("o-1"));
        }
        let mut p = offer();
        p.resources.push(pb::Resource {
            name: "gpus".into(),
            scalar: 1.0,
            ranges: vec![],
            revocable: false,
        });
        assert!(Offer::from_proto(p).is_err());
        let mut p = offer();
        p.resources.push(p.resources[0].clone());
        assert!(Offer::from_proto(p).is_err(), "duplicate resource");
        let mut p = offer();
        let ports = p.resources.iter_mut().find(|r| r.name == "ports").unwrap();
        ports.ranges = vec![pb::Range { begin: 10, end: 5 }];
        assert!(Offer::from_proto(p).is_err(), "inverted port range");
    }

    fn status() -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: "t-1".into(),
            agent_id: "a-1".into(),
            state: TaskState::TaskFinished as i32,
            reason: Reason::CommandExited as i32,
            source: Source::Agent as i32,
            message: "done".into(),
            uuid: vec![7; 16],
            timestamp: 1_700_000_000.5,
            exit_code: Some(0),
            healthy: None,
        }
    }

    #[test]
    fn good_status_converts_and_round_trips() {
        let s = TaskStatus::from_proto(status()).unwrap();
        assert_eq!(s.task_id, TaskId::new("t-1"));
        assert_eq!(s.state, TaskState::TaskFinished);
        assert!(s.is_terminal());
        assert!(s.needs_ack());
        assert_eq!(s.uuid, Some([7; 16]));
        assert_eq!(s.exit_code, Some(0));
        assert_eq!(TaskStatus::from_proto(s.to_proto()).unwrap(), s);
        let mut p = status();
        p.uuid.clear();
        p.agent_id.clear();
        p.timestamp = 0.0;
        let s = TaskStatus::from_proto(p).unwrap();
        assert!(!s.needs_ack());
        assert_eq!(s.agent_id, None);
        assert_eq!(s.timestamp, None);
    }

    #[test]
    fn malformed_statuses_are_errors() {
        let mut p = status();
        p.task_id.clear();
        assert!(matches!(
            TaskStatus::from_proto(p),
            Err(ConversionError::MissingField {
                field: "task_id",
                ..
            })
        ));
        let mut p = status();
        p.state = 99;
        assert!(matches!(
            TaskStatus::from_proto(p),
            Err(ConversionError::UnknownEnum {
                field: "state",
                value: 99,
                ..
            })
        ));
        let mut p = status();
        p.reason = -3;
        assert!(TaskStatus::from_proto(p).is_err());
        let mut p = status();
        p.source = 1000;
        assert!(TaskStatus::from_proto(p).is_err());
        let mut p = status();
        p.uuid = vec![1; 15];
        assert!(matches!(
            TaskStatus::from_proto(p),
            Err(ConversionError::BadUuid { len: 15, .. })
        ));
        for bad in [f64::NAN, -5.0, f64::INFINITY] {
            let mut p = status();
            p.timestamp = bad;
            assert!(TaskStatus::from_proto(p).is_err());
        }
    }

    #[test]
    fn subscribed_validation() {
        let good = pb::event::Subscribed {
            framework_id: "f-1".into(),
            heartbeat_interval_seconds: 15.0,
            protocol_version: strata_proto::PROTOCOL_VERSION,
            stream_id: "s-1".into(),
        };
        let s = Subscribed::from_proto(good.clone()).unwrap();
        assert_eq!(s.heartbeat_interval, Duration::from_secs(15));
        let mut bad = good.clone();
        bad.stream_id.clear();
        assert!(Subscribed::from_proto(bad).is_err());
        let mut bad = good.clone();
        bad.framework_id.clear();
        assert!(Subscribed::from_proto(bad).is_err());
        let mut bad = good;
        bad.heartbeat_interval_seconds = f64::NAN;
        assert!(Subscribed::from_proto(bad).is_err());
    }
}
