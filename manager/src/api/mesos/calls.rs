//! Mesos v1 scheduler calls as JSON, read into Strata's protocol.
//!
//! Only what Strata can honour is read; a field that would change what a
//! task does and that Strata cannot do (a custom executor, a health check,
//! an image for the Mesos containerizer, a second role) is refused with a
//! [`CallError`] naming it, never dropped. Fields that only inform (a
//! framework's capabilities, `checkpoint`, a task's `data`) are accepted and
//! ignored, as Mesos's own command executor ignores `data`.

use std::collections::HashMap;

use base64::Engine as _;
use serde::Deserialize;
use strata_proto::pb;

use super::MESOS_CLASS_LABEL;

/// Why a call cannot be read. Answered with `400 Bad Request`.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The body is not JSON of a call's shape.
    #[error("malformed call: {0}")]
    Malformed(String),
    /// The call's `type` names a call without its body (`"type": "KILL"`
    /// with no `kill`).
    #[error("a {kind} call needs its '{field}' object")]
    MissingBody {
        /// The call's type.
        kind: String,
        /// The missing object.
        field: &'static str,
    },
    /// A call or a field Strata does not serve.
    #[error("{what} is not supported by Strata's Mesos API")]
    Unsupported {
        /// What was asked.
        what: String,
    },
    /// A value that cannot be right (a negative scalar, bad base64).
    #[error("{field}: {message}")]
    Invalid {
        /// Where.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn unsupported(what: impl Into<String>) -> CallError {
    CallError::Unsupported { what: what.into() }
}

/// Mesos's `{"value": "…"}` ids.
#[derive(Debug, Deserialize)]
pub struct Id {
    /// The id.
    pub value: String,
}

/// A scheduler call.
#[derive(Debug, Deserialize)]
pub struct Call {
    /// `SUBSCRIBE`, `ACCEPT`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The caller; absent only on a first `SUBSCRIBE`.
    pub framework_id: Option<Id>,
    subscribe: Option<Subscribe>,
    accept: Option<Accept>,
    decline: Option<Decline>,
    kill: Option<Kill>,
    acknowledge: Option<Acknowledge>,
    reconcile: Option<Reconcile>,
}

#[derive(Debug, Deserialize)]
struct Subscribe {
    framework_info: FrameworkInfo,
    #[serde(default)]
    suppressed_roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct FrameworkInfo {
    #[serde(default)]
    user: String,
    name: String,
    id: Option<Id>,
    failover_timeout: Option<f64>,
    role: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    hostname: Option<String>,
    labels: Option<Labels>,
    #[serde(default)]
    capabilities: Vec<Capability>,
}

#[derive(Debug, Deserialize)]
struct Capability {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Default, Deserialize)]
struct Labels {
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Debug, Deserialize)]
struct Label {
    key: String,
    #[serde(default)]
    value: String,
}

impl Labels {
    fn into_map(self) -> HashMap<String, String> {
        self.labels.into_iter().map(|l| (l.key, l.value)).collect()
    }
}

#[derive(Debug, Deserialize)]
struct Filters {
    refuse_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Accept {
    #[serde(default)]
    offer_ids: Vec<Id>,
    #[serde(default)]
    operations: Vec<Operation>,
    filters: Option<Filters>,
}

#[derive(Debug, Deserialize)]
struct Operation {
    #[serde(rename = "type")]
    kind: String,
    launch: Option<Launch>,
}

#[derive(Debug, Deserialize)]
struct Launch {
    #[serde(default)]
    task_infos: Vec<TaskInfo>,
}

#[derive(Debug, Deserialize)]
struct Decline {
    #[serde(default)]
    offer_ids: Vec<Id>,
    filters: Option<Filters>,
}

#[derive(Debug, Deserialize)]
struct Kill {
    task_id: Id,
    agent_id: Option<Id>,
}

#[derive(Debug, Deserialize)]
struct Acknowledge {
    agent_id: Id,
    task_id: Id,
    uuid: String,
}

#[derive(Debug, Deserialize)]
struct Reconcile {
    #[serde(default)]
    tasks: Vec<ReconcileTask>,
}

#[derive(Debug, Deserialize)]
struct ReconcileTask {
    task_id: Id,
    agent_id: Option<Id>,
}

#[derive(Debug, Deserialize)]
struct TaskInfo {
    name: String,
    task_id: Id,
    agent_id: Id,
    #[serde(default)]
    resources: Vec<Resource>,
    command: Option<CommandInfo>,
    container: Option<ContainerInfo>,
    executor: Option<serde::de::IgnoredAny>,
    health_check: Option<serde::de::IgnoredAny>,
    check: Option<serde::de::IgnoredAny>,
    labels: Option<Labels>,
    kill_policy: Option<KillPolicy>,
}

/// A resource as Mesos writes it.
#[derive(Debug, Deserialize)]
struct Resource {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    scalar: Option<Scalar>,
    ranges: Option<Ranges>,
    revocable: Option<serde::de::IgnoredAny>,
    disk: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    reservations: Vec<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct Scalar {
    value: f64,
}

#[derive(Debug, Deserialize)]
struct Ranges {
    #[serde(default)]
    range: Vec<Range>,
}

#[derive(Debug, Deserialize)]
struct Range {
    begin: u64,
    end: u64,
}

#[derive(Debug, Deserialize)]
struct CommandInfo {
    value: Option<String>,
    shell: Option<bool>,
    #[serde(default)]
    arguments: Vec<String>,
    environment: Option<Environment>,
    #[serde(default)]
    uris: Vec<Uri>,
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Environment {
    #[serde(default)]
    variables: Vec<Variable>,
}

#[derive(Debug, Deserialize)]
struct Variable {
    name: String,
    value: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Uri {
    value: String,
    executable: Option<bool>,
    extract: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ContainerInfo {
    #[serde(rename = "type")]
    kind: String,
    docker: Option<DockerInfo>,
    mesos: Option<MesosInfo>,
    #[serde(default)]
    volumes: Vec<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct MesosInfo {
    image: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct DockerInfo {
    image: String,
    #[serde(default)]
    port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Deserialize)]
struct PortMapping {
    host_port: u32,
    container_port: u32,
    protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KillPolicy {
    grace_period: Option<DurationInfo>,
}

#[derive(Debug, Deserialize)]
struct DurationInfo {
    nanoseconds: i64,
}

/// A call read from a request body.
pub fn parse(body: &[u8]) -> Result<Call, CallError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            CallError::Malformed(inner.to_string())
        } else {
            CallError::Malformed(format!("{path}: {inner}"))
        }
    })
}

/// What a `SUBSCRIBE` asks for.
#[derive(Debug)]
pub struct Subscription {
    /// The request to the core.
    pub req: pb::SubscribeRequest,
    /// The framework declared `PARTITION_AWARE`.
    pub partition_aware: bool,
}

impl Call {
    fn body<T>(&self, field: &'static str, v: Option<T>) -> Result<T, CallError> {
        v.ok_or_else(|| CallError::MissingBody {
            kind: self.kind.clone(),
            field,
        })
    }

    /// A `SUBSCRIBE` as the core's subscription request: the framework's
    /// tasks default to the `batch` class, or to the class its label
    /// `strata.priority_class` names.
    pub fn into_subscribe(mut self) -> Result<Subscription, CallError> {
        let sub = self.subscribe.take();
        let sub = self.body("subscribe", sub)?;
        let info = sub.framework_info;
        let role = match (info.role, info.roles.as_slice()) {
            (_, [a, b, ..]) => {
                return Err(unsupported(format!(
                    "a framework in several roles ({a}, {b}, …)"
                )));
            }
            (_, [one]) => one.clone(),
            (Some(role), []) => role,
            (None, []) => String::new(),
        };
        let id = match (info.id, self.framework_id) {
            (Some(a), Some(b)) if a.value != b.value => {
                return Err(CallError::Invalid {
                    field: "framework_id".into(),
                    message: format!("'{}' differs from framework_info.id '{}'", b.value, a.value),
                });
            }
            (a, b) => a.or(b).map(|i| i.value).unwrap_or_default(),
        };
        let partition_aware = info
            .capabilities
            .iter()
            .any(|c| c.kind == "PARTITION_AWARE");
        let labels = info.labels.unwrap_or_default().into_map();
        let default_class = labels
            .get(MESOS_CLASS_LABEL)
            .cloned()
            .unwrap_or_else(|| "batch".to_owned());
        let req = pb::SubscribeRequest {
            protocol_version: strata_proto::PROTOCOL_VERSION,
            framework: Some(pb::FrameworkInfo {
                framework_id: id,
                name: info.name,
                user: info.user,
                role,
                default_class,
                failover_timeout_seconds: info.failover_timeout.unwrap_or(0.0),
                hostname: info.hostname.unwrap_or_default(),
                labels,
                // The authenticated principal is set by the handler.
                principal: String::new(),
            }),
            demand: Vec::new(),
            suppressed: !sub.suppressed_roles.is_empty(),
        };
        Ok(Subscription {
            req,
            partition_aware,
        })
    }

    /// Any other call as the core's call, with its framework and stream.
    pub fn into_call(mut self, stream_id: String) -> Result<pb::Call, CallError> {
        use pb::call::Call as C;
        let framework_id = self
            .framework_id
            .take()
            .map(|i| i.value)
            .ok_or_else(|| CallError::Malformed("missing field `framework_id`".into()))?;
        let call = match self.kind.as_str() {
            "ACCEPT" => {
                let a = self.accept.take();
                C::Accept(accept(self.body("accept", a)?)?)
            }
            "DECLINE" => {
                let d = self.decline.take();
                let d = self.body("decline", d)?;
                C::Decline(pb::call::Decline {
                    offer_ids: d.offer_ids.into_iter().map(|i| i.value).collect(),
                    filters: d.filters.map(filters),
                })
            }
            "KILL" => {
                let k = self.kill.take();
                let k = self.body("kill", k)?;
                C::Kill(pb::call::Kill {
                    task_id: k.task_id.value,
                    agent_id: k.agent_id.map(|i| i.value).unwrap_or_default(),
                })
            }
            "ACKNOWLEDGE" => {
                let a = self.acknowledge.take();
                let a = self.body("acknowledge", a)?;
                C::Acknowledge(pb::call::Acknowledge {
                    agent_id: a.agent_id.value,
                    task_id: a.task_id.value,
                    uuid: base64::engine::general_purpose::STANDARD
                        .decode(a.uuid.as_bytes())
                        .map_err(|e| CallError::Invalid {
                            field: "acknowledge.uuid".into(),
                            message: format!("not base64: {e}"),
                        })?,
                })
            }
            "RECONCILE" => C::Reconcile(pb::call::Reconcile {
                tasks: self
                    .reconcile
                    .take()
                    .map(|r| r.tasks)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| pb::call::reconcile::Task {
                        task_id: t.task_id.value,
                        agent_id: t.agent_id.map(|i| i.value).unwrap_or_default(),
                    })
                    .collect(),
            }),
            // A framework has one role here, so `roles` in either is that one.
            "REVIVE" => C::Revive(pb::call::Revive {}),
            "SUPPRESS" => C::Suppress(pb::call::Suppress {}),
            "TEARDOWN" => C::Teardown(pb::call::Teardown {}),
            "SUBSCRIBE" => {
                return Err(CallError::Invalid {
                    field: "type".into(),
                    message: "SUBSCRIBE opens the event stream; send it without Mesos-Stream-Id"
                        .into(),
                });
            }
            other => return Err(unsupported(format!("the {other} call"))),
        };
        Ok(pb::Call {
            framework_id,
            stream_id,
            call: Some(call),
        })
    }
}

fn filters(f: Filters) -> pb::Filters {
    pb::Filters {
        refuse_seconds: f.refuse_seconds,
    }
}

fn accept(a: Accept) -> Result<pb::call::Accept, CallError> {
    let mut operations = Vec::with_capacity(a.operations.len());
    for op in a.operations {
        if op.kind != "LAUNCH" {
            return Err(unsupported(format!("the {} operation", op.kind)));
        }
        let launch = op.launch.ok_or_else(|| CallError::MissingBody {
            kind: "LAUNCH".into(),
            field: "launch",
        })?;
        let tasks = launch
            .task_infos
            .into_iter()
            .map(task)
            .collect::<Result<_, _>>()?;
        operations.push(pb::call::Operation {
            operation: Some(pb::call::operation::Operation::Launch(pb::call::Launch {
                tasks,
            })),
        });
    }
    Ok(pb::call::Accept {
        offer_ids: a.offer_ids.into_iter().map(|i| i.value).collect(),
        operations,
        filters: a.filters.map(filters),
    })
}

fn task(t: TaskInfo) -> Result<pb::TaskInfo, CallError> {
    let id = t.task_id.value;
    let refuse = |what: &str| unsupported(format!("task {id}: {what}"));
    if t.executor.is_some() {
        return Err(refuse(
            "a custom executor (give a command; Strata runs it as Mesos's command executor would)",
        ));
    }
    if t.health_check.is_some() || t.check.is_some() {
        return Err(refuse("a health check or check on a task"));
    }
    if t.agent_id.value.is_empty() {
        return Err(CallError::Invalid {
            field: format!("task {id}"),
            message: "a task needs the agent_id of its offer".into(),
        });
    }
    let Some(command) = t.command else {
        return Err(CallError::Invalid {
            field: format!("task {id}"),
            message: "a task needs a command".into(),
        });
    };
    let labels = t.labels.unwrap_or_default().into_map();
    Ok(pb::TaskInfo {
        name: t.name,
        agent_id: t.agent_id.value,
        resources: t
            .resources
            .into_iter()
            .map(|r| resource(&id, r))
            .collect::<Result<_, _>>()?,
        command: Some(command_info(&id, command)?),
        container: t.container.map(|c| container(&id, c)).transpose()?,
        priority_class: labels.get(MESOS_CLASS_LABEL).cloned().unwrap_or_default(),
        labels,
        kill_policy: t
            .kill_policy
            .and_then(|k| k.grace_period)
            .map(|g| pb::KillPolicy {
                grace_period_seconds: g.nanoseconds.max(0) as f64 / 1e9,
            }),
        task_id: id,
    })
}

fn resource(task: &str, r: Resource) -> Result<pb::Resource, CallError> {
    if r.disk.is_some() || !r.reservations.is_empty() {
        return Err(unsupported(format!(
            "task {task}: reserved or persistent resources ({})",
            r.name
        )));
    }
    let revocable = r.revocable.is_some();
    match (r.kind.as_deref(), r.scalar, r.ranges) {
        (Some("SCALAR") | None, Some(s), None) => Ok(pb::Resource {
            name: r.name,
            scalar: s.value,
            ranges: Vec::new(),
            revocable,
        }),
        (Some("RANGES") | None, None, Some(rs)) => Ok(pb::Resource {
            name: r.name,
            scalar: 0.0,
            ranges: rs
                .range
                .into_iter()
                .map(|x| pb::Range {
                    begin: x.begin,
                    end: x.end,
                })
                .collect(),
            revocable,
        }),
        (kind, _, _) => Err(CallError::Invalid {
            field: format!("task {task}: resource {}", r.name),
            message: format!(
                "a {} resource needs its 'scalar' or 'ranges' (SET is not supported)",
                kind.unwrap_or("typeless")
            ),
        }),
    }
}

fn command_info(task: &str, c: CommandInfo) -> Result<pb::CommandInfo, CallError> {
    let shell = c.shell.unwrap_or(true);
    let mut environment = HashMap::new();
    for v in c.environment.map(|e| e.variables).unwrap_or_default() {
        if v.kind.as_deref().is_some_and(|k| k != "VALUE") {
            return Err(unsupported(format!(
                "task {task}: the secret environment variable {}",
                v.name
            )));
        }
        environment.insert(v.name, v.value.unwrap_or_default());
    }
    let mut uris = Vec::with_capacity(c.uris.len());
    for u in c.uris {
        if u.extract != Some(false) && is_archive(&u.value) {
            return Err(unsupported(format!(
                "task {task}: extracting the archive {}",
                u.value
            )));
        }
        uris.push(pb::Uri {
            value: u.value,
            executable: u.executable.unwrap_or(false),
        });
    }
    Ok(pb::CommandInfo {
        value: c.value.unwrap_or_default(),
        shell,
        arguments: c.arguments,
        environment,
        uris,
        user: c.user.unwrap_or_default(),
    })
}

/// Whether Mesos's fetcher would extract this file (its default `extract`
/// is true, and it only acts on archives).
fn is_archive(uri: &str) -> bool {
    [
        ".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip",
    ]
    .iter()
    .any(|ext| uri.ends_with(ext))
}

fn container(task: &str, c: ContainerInfo) -> Result<pb::ContainerInfo, CallError> {
    if !c.volumes.is_empty() {
        return Err(unsupported(format!("task {task}: container volumes")));
    }
    match c.kind.as_str() {
        "MESOS" if c.mesos.and_then(|m| m.image).is_some() => Err(unsupported(format!(
            "task {task}: an image for the Mesos containerizer (use type DOCKER)"
        ))),
        "MESOS" => Ok(pb::ContainerInfo {
            r#type: pb::container_info::Type::Process as i32,
            docker: None,
        }),
        "DOCKER" => {
            let d = c.docker.ok_or_else(|| CallError::MissingBody {
                kind: "DOCKER container".into(),
                field: "docker",
            })?;
            Ok(pb::ContainerInfo {
                r#type: pb::container_info::Type::Docker as i32,
                docker: Some(pb::DockerInfo {
                    image: d.image,
                    port_mappings: d
                        .port_mappings
                        .into_iter()
                        .map(|p| pb::docker_info::PortMapping {
                            container_port: p.container_port,
                            host_port: p.host_port,
                            protocol: p.protocol.unwrap_or_default(),
                        })
                        .collect(),
                }),
            })
        }
        other => Err(unsupported(format!("task {task}: the {other} container"))),
    }
}
