//! What a framework sends: tasks to launch ([`TaskInfo`], built with
//! [`TaskBuilder`]), demand ([`Ask`] with [`Constraint`]s) and decline
//! [`Filters`].

use std::collections::BTreeMap;
use std::time::Duration;

use strata_proto::ids::{AgentId, TaskId};
use strata_proto::pb;
use strata_proto::resources::Resources;

/// A task to launch on an offer: the typed form of [`pb::TaskInfo`].
///
/// Build one with [`TaskBuilder`]; every field is public so a framework can
/// also adjust one after building.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskInfo {
    /// The task's id, unique within the framework (chosen by the framework).
    pub task_id: TaskId,
    /// A human-readable name; the task id when empty.
    pub name: String,
    /// The agent to run on: the agent of the offer used. When `None`,
    /// [`SchedulerHandle::accept`](crate::SchedulerHandle::accept) fills in
    /// the agent of the first accepted offer.
    pub agent_id: Option<AgentId>,
    /// Regular resources the task uses, taken from the offer.
    pub resources: Resources,
    /// Revocable resources the task uses (capacity allocated to services but
    /// idle; the task may be preempted when it is taken back).
    pub revocable: Resources,
    /// What to run.
    pub command: Command,
    /// Run in a Docker container instead of as a plain process.
    pub docker: Option<Docker>,
    /// The task's priority class; `None` means the class of the offer used.
    pub class: Option<String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL when the task is killed; `None`
    /// means the agent's default.
    pub kill_grace: Option<Duration>,
}

/// The command of a task.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Command {
    /// A shell script (when `shell`) or the program to execute.
    pub value: String,
    /// Run `value` with `sh -c` (true) or execute it directly with
    /// `arguments` (false).
    pub shell: bool,
    /// Arguments, when not `shell`.
    pub arguments: Vec<String>,
    /// Environment variables set for the command.
    pub env: BTreeMap<String, String>,
    /// Files or URLs fetched into the sandbox before the command starts.
    pub uris: Vec<Uri>,
    /// Run as this user (when the agent runs as root); `None`: the agent's
    /// default.
    pub user: Option<String>,
}

/// A file the agent fetches into a task's sandbox before the command
/// starts: a local path, `file://…` or `http://…` (Mesos's
/// `CommandInfo.URI`). It keeps the last segment of its path as its name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uri {
    /// The path or URL.
    pub value: String,
    /// Make the fetched file executable (a program the task runs).
    pub executable: bool,
}

impl Uri {
    /// A file to fetch.
    pub fn new(value: impl Into<String>) -> Self {
        Uri {
            value: value.into(),
            executable: false,
        }
    }

    /// A program to fetch and make executable.
    pub fn executable(value: impl Into<String>) -> Self {
        Uri {
            value: value.into(),
            executable: true,
        }
    }
}

impl From<&str> for Uri {
    fn from(value: &str) -> Self {
        Uri::new(value)
    }
}

impl From<String> for Uri {
    fn from(value: String) -> Self {
        Uri::new(value)
    }
}

/// A Docker container for a task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Docker {
    /// The image, e.g. `alpine:3.20`.
    pub image: String,
    /// Ports published from the container to the host.
    pub port_mappings: Vec<PortMapping>,
}

/// One published container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    /// The port inside the container.
    pub container_port: u16,
    /// The host port, one of the task's `ports` resources.
    pub host_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl TaskInfo {
    /// Converts to the wire form.
    pub fn into_proto(self) -> pb::TaskInfo {
        let mut resources = self.resources.to_proto(false);
        resources.extend(self.revocable.to_proto(true));
        let name = if self.name.is_empty() {
            self.task_id.as_str().to_owned()
        } else {
            self.name
        };
        pb::TaskInfo {
            task_id: self.task_id.into_string(),
            name,
            agent_id: self.agent_id.map(AgentId::into_string).unwrap_or_default(),
            resources,
            command: Some(pb::CommandInfo {
                value: self.command.value,
                shell: self.command.shell,
                arguments: self.command.arguments,
                environment: self.command.env.into_iter().collect(),
                uris: self
                    .command
                    .uris
                    .into_iter()
                    .map(|u| pb::Uri {
                        value: u.value,
                        executable: u.executable,
                    })
                    .collect(),
                user: self.command.user.unwrap_or_default(),
            }),
            container: self.docker.map(|d| pb::ContainerInfo {
                r#type: pb::container_info::Type::Docker as i32,
                docker: Some(pb::DockerInfo {
                    image: d.image,
                    port_mappings: d
                        .port_mappings
                        .into_iter()
                        .map(|m| pb::docker_info::PortMapping {
                            container_port: u32::from(m.container_port),
                            host_port: u32::from(m.host_port),
                            protocol: m.protocol,
                        })
                        .collect(),
                }),
            }),
            priority_class: self.class.unwrap_or_default(),
            labels: self.labels.into_iter().collect(),
            kill_policy: self.kill_grace.map(|g| pb::KillPolicy {
                grace_period_seconds: g.as_secs_f64(),
            }),
        }
    }
}

/// Builds a [`TaskInfo`].
///
/// ```
/// use std::time::Duration;
/// use strata_proto::resources::Resources;
/// use strata_sdk::TaskBuilder;
///
/// let task = TaskBuilder::shell("hello-1", "echo hello")
///     .name("hello")
///     .resources(Resources::new(0.1, 32.0))
///     .class("batch")
///     .env("GREETING", "hi")
///     .kill_grace(Duration::from_secs(3))
///     .build();
/// assert_eq!(task.command.value, "echo hello");
/// let wire = task.into_proto();
/// assert_eq!(wire.task_id, "hello-1");
/// ```
#[derive(Clone, Debug)]
#[must_use = "a TaskBuilder does nothing until built"]
pub struct TaskBuilder {
    task: TaskInfo,
}

impl TaskBuilder {
    fn with_command(task_id: impl Into<TaskId>, command: Command) -> Self {
        TaskBuilder {
            task: TaskInfo {
                task_id: task_id.into(),
                name: String::new(),
                agent_id: None,
                resources: Resources::default(),
                revocable: Resources::default(),
                command,
                docker: None,
                class: None,
                labels: BTreeMap::new(),
                kill_grace: None,
            },
        }
    }

    /// A task running `script` with `sh -c`.
    pub fn shell(task_id: impl Into<TaskId>, script: impl Into<String>) -> Self {
        Self::with_command(
            task_id,
            Command {
                value: script.into(),
                shell: true,
                ..Command::default()
            },
        )
    }

    /// A task executing `program` directly with `args` (no shell).
    pub fn exec<I, S>(task_id: impl Into<TaskId>, program: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_command(
            task_id,
            Command {
                value: program.into(),
                shell: false,
                arguments: args.into_iter().map(Into::into).collect(),
                ..Command::default()
            },
        )
    }

    /// Sets the human-readable name (default: the task id).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.task.name = name.into();
        self
    }

    /// Sets the agent (normally the agent of the offer used).
    pub fn agent(mut self, agent_id: AgentId) -> Self {
        self.task.agent_id = Some(agent_id);
        self
    }

    /// Sets the regular resources the task uses.
    pub fn resources(mut self, resources: Resources) -> Self {
        self.task.resources = resources;
        self
    }

    /// Sets the revocable resources the task uses.
    pub fn revocable(mut self, resources: Resources) -> Self {
        self.task.revocable = resources;
        self
    }

    /// Sets the priority class (default: the class of the offer used).
    pub fn class(mut self, class: impl Into<String>) -> Self {
        self.task.class = Some(class.into());
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.task.command.env.insert(key.into(), value.into());
        self
    }

    /// Sets a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.task.labels.insert(key.into(), value.into());
        self
    }

    /// Sets several labels.
    pub fn labels<I, K, V>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.task
            .labels
            .extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Adds a file or URL to fetch into the sandbox before the command
    /// starts.
    pub fn uri(mut self, uri: impl Into<Uri>) -> Self {
        self.task.command.uris.push(uri.into());
        self
    }

    /// Runs the command as this user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.task.command.user = Some(user.into());
        self
    }

    /// Sets the time between SIGTERM and SIGKILL when the task is killed.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.task.kill_grace = Some(grace);
        self
    }

    /// Runs the task in a Docker container from `image`.
    pub fn docker(mut self, image: impl Into<String>) -> Self {
        self.task.docker.get_or_insert_with(Docker::default).image = image.into();
        self
    }

    /// Publishes a container port on a host port (implies a Docker
    /// container; set the image with [`TaskBuilder::docker`]).
    pub fn port_mapping(mut self, container_port: u16, host_port: u16, protocol: &str) -> Self {
        self.task
            .docker
            .get_or_insert_with(Docker::default)
            .port_mappings
            .push(PortMapping {
                container_port,
                host_port,
                protocol: protocol.to_owned(),
            });
        self
    }

    /// The finished task.
    pub fn build(self) -> TaskInfo {
        self.task
    }
}

impl From<TaskBuilder> for TaskInfo {
    fn from(builder: TaskBuilder) -> Self {
        builder.build()
    }
}

/// The operator of a [`Constraint`] (Marathon's vocabulary).
pub use strata_proto::pb::constraint::Operator;

/// A constraint on where the tasks of an [`Ask`] may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    /// `hostname` or an attribute name.
    pub field: String,
    /// How `field` is compared.
    pub operator: Operator,
    /// The operand (empty for `UNIQUE`).
    pub value: String,
}

impl Constraint {
    fn new(field: impl Into<String>, operator: Operator, value: impl Into<String>) -> Self {
        Constraint {
            field: field.into(),
            operator,
            value: value.into(),
        }
    }

    /// At most one task per distinct value of `field` (e.g. one per host).
    pub fn unique(field: impl Into<String>) -> Self {
        Self::new(field, Operator::Unique, "")
    }

    /// Only where `field` equals `value`.
    pub fn cluster(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(field, Operator::Cluster, value)
    }

    /// Spread evenly over the values of `field`, over at least `groups`.
    pub fn group_by(field: impl Into<String>, groups: u32) -> Self {
        Self::new(field, Operator::GroupBy, groups.to_string())
    }

    /// Only where `field` matches the regular expression `pattern`.
    pub fn like(field: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self::new(field, Operator::Like, pattern)
    }

    /// Only where `field` does not match the regular expression `pattern`.
    pub fn unlike(field: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self::new(field, Operator::Unlike, pattern)
    }

    /// At most `max` tasks per distinct value of `field`.
    pub fn max_per(field: impl Into<String>, max: u32) -> Self {
        Self::new(field, Operator::MaxPer, max.to_string())
    }

    /// Converts to the wire form.
    pub fn to_proto(&self) -> pb::Constraint {
        pb::Constraint {
            field: self.field.clone(),
            operator: self.operator as i32,
            value: self.value.clone(),
        }
    }
}

/// Task-shaped demand: `count` tasks of `resources` each, in a class.
///
/// Declared demand tells the manager what offers to make (and, for a class
/// high enough, what to preempt for); it replaces any earlier demand.
#[derive(Clone, Debug, PartialEq)]
pub struct Ask {
    /// The priority class; empty means the framework's default class.
    pub class: String,
    /// The resources of one task. Ports are counted, not chosen: `ports`
    /// holding two values asks for two ports.
    pub resources: Resources,
    /// How many such tasks.
    pub count: u32,
    /// Where they may go.
    pub constraints: Vec<Constraint>,
    /// Whether they may run on revocable resources.
    pub accept_revocable: bool,
}

impl Ask {
    /// `count` tasks of `resources` each in `class`, without constraints.
    pub fn new(class: impl Into<String>, resources: Resources, count: u32) -> Self {
        Ask {
            class: class.into(),
            resources,
            count,
            constraints: Vec::new(),
            accept_revocable: false,
        }
    }

    /// Adds a constraint.
    #[must_use]
    pub fn constraint(mut self, constraint: Constraint) -> Self {
        self.constraints.push(constraint);
        self
    }

    /// Allows placement on revocable resources.
    #[must_use]
    pub fn revocable(mut self, accept: bool) -> Self {
        self.accept_revocable = accept;
        self
    }

    /// Converts to the wire form.
    pub fn to_proto(&self) -> pb::Ask {
        pb::Ask {
            priority_class: self.class.clone(),
            resources: self.resources.to_proto(false),
            count: self.count,
            constraints: self.constraints.iter().map(Constraint::to_proto).collect(),
            accept_revocable: self.accept_revocable,
        }
    }
}

/// Filters sent with an accept or a decline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Do not offer the declined (or unused) resources again for this long;
    /// `None` means the manager's default (5 s).
    pub refuse: Option<Duration>,
}

impl Filters {
    /// Refuse the resources for `duration`.
    pub fn refuse(duration: Duration) -> Self {
        Filters {
            refuse: Some(duration),
        }
    }

    /// Converts to the wire form.
    pub fn to_proto(self) -> pb::Filters {
        pb::Filters {
            refuse_seconds: self.refuse.map(|d| d.as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::resources::Ranges;

    #[test]
    fn shell_task_to_proto() {
        let res = Resources::new(0.5, 64.0).with_ports(Ranges::from_ranges([(31000, 31001)]));
        let t = TaskBuilder::shell("t-1", "echo hi")
            .resources(res.clone())
            .revocable(Resources::new(1.0, 0.0))
            .class("batch")
            .env("A", "1")
            .env("B", "2")
            .label("team", "data")
            .labels([("x", "y")])
            .uri("https://example.invalid/f.tgz")
            .user("nobody")
            .agent(AgentId::new("a-1"))
            .kill_grace(Duration::from_millis(2500))
            .build();
        let p = t.into_proto();
        assert_eq!(p.task_id, "t-1");
        assert_eq!(p.name, "t-1", "name defaults to the task id");
        assert_eq!(p.agent_id, "a-1");
        assert_eq!(p.priority_class, "batch");
        let cmd = p.command.as_ref().unwrap();
        assert_eq!(cmd.value, "echo hi");
        assert!(cmd.shell);
        assert!(cmd.arguments.is_empty());
        assert_eq!(cmd.environment.len(), 2);
        assert_eq!(cmd.environment["B"], "2");
        assert_eq!(cmd.uris.len(), 1);
        assert_eq!(cmd.uris[0].value, "https://example.invalid/f.tgz");
        assert!(!cmd.uris[0].executable);
        assert_eq!(cmd.user, "nobody");
        assert_eq!(p.labels["team"], "data");
        assert_eq!(p.labels["x"], "y");
        assert_eq!(p.kill_policy.unwrap().grace_period_seconds, 2.5);
        assert!(p.container.is_none());
        let (regular, revocable) = Resources::from_proto_split(&p.resources).unwrap();
        assert_eq!(regular, res);
        assert_eq!(revocable, Resources::new(1.0, 0.0));
    }

    #[test]
    fn exec_and_docker_task_to_proto() {
        let p = TaskBuilder::exec("t-2", "/bin/sleep", ["10"])
            .name("sleeper")
            .docker("alpine:3.20")
            .port_mapping(80, 31000, "tcp")
            .build()
            .into_proto();
        assert_eq!(p.name, "sleeper");
        assert_eq!(p.agent_id, "");
        assert_eq!(p.priority_class, "");
        assert!(p.kill_policy.is_none());
        let cmd = p.command.unwrap();
        assert!(!cmd.shell);
        assert_eq!(cmd.arguments, vec!["10"]);
        let c = p.container.unwrap();
        assert_eq!(c.r#type, pb::container_info::Type::Docker as i32);
        let d = c.docker.unwrap();
        assert_eq!(d.image, "alpine:3.20");
        assert_eq!(d.port_mappings.len(), 1);
        assert_eq!(d.port_mappings[0].host_port, 31000);
        assert_eq!(d.port_mappings[0].container_port, 80);
    }

    #[test]
    fn asks_and_filters_to_proto() {
        let ask = Ask::new("service", Resources::new(1.0, 128.0), 3)
            .constraint(Constraint::unique("hostname"))
            .constraint(Constraint::max_per("rack", 2))
            .revocable(true);
        let p = ask.to_proto();
        assert_eq!(p.priority_class, "service");
        assert_eq!(p.count, 3);
        assert!(p.accept_revocable);
        assert_eq!(p.constraints.len(), 2);
        assert_eq!(p.constraints[0].operator, Operator::Unique as i32);
        assert_eq!(p.constraints[1].operator, Operator::MaxPer as i32);
        assert_eq!(p.constraints[1].value, "2");
        assert_eq!(
            Resources::from_proto(&p.resources).unwrap(),
            Resources::new(1.0, 128.0)
        );
        assert_eq!(Filters::default().to_proto().refuse_seconds, None);
        assert_eq!(
            Filters::refuse(Duration::from_secs(30))
                .to_proto()
                .refuse_seconds,
            Some(30.0)
        );
    }
}
