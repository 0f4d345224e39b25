//! Docker: tasks whose `ContainerInfo.type` is `DOCKER` run their image
//! through the Docker Engine API ([bollard], over the engine's unix socket).
//!
//! A Docker task runs under the same per-task supervisor as a process task
//! (as Mesos's docker executor does), in *docker mode*:
//!
//! * the agent ([`super::containerizer::DockerContainerizer`]) turns the task
//!   into a [`DockerSpec`] ([`DockerSpec::from_task`], pure: image, name,
//!   command, limits, ports, labels), writes it into the supervisor's
//!   `launch.json` and starts the supervisor, exactly as for a process task;
//! * the supervisor ([`supervise`], in `docker/run.rs`, on a current-thread
//!   tokio runtime) checks that the image is present locally (it never
//!   pulls), creates the container, attaches to its output (appended to the
//!   sandbox's `stdout` and `stderr`), starts it, writes `task.pid` (the
//!   container's main process), waits for it, then removes it and records
//!   the exit code in `exit_status.json` like any task;
//! * killing: the agent sends the supervisor [`STOP_SIGNAL`] (SIGTERM), which
//!   it turns into `docker stop` with what is left of the kill's grace
//!   (from `kill.json`), then [`KILL_SIGNAL`] (SIGUSR1) once the grace is
//!   over, which it turns into `docker kill`; the outcome is recorded and the
//!   container removed as for any exit;
//! * a supervisor that dies leaves its container running: the agent's
//!   cleanup of the task removes it by its launch label ([`remove_launch`]).
//!
//! The container is `strata-<framework>-<task>-<hash>` (sanitised; the hash
//! of the exact ids keeps tasks apart whose sanitised names would be equal),
//! labelled with the framework and task ids and a per-launch id. The sandbox
//! is bind-mounted at [`CONTAINER_SANDBOX`], the working directory.

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, PortBinding};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;
use strata_proto::ids::{FrameworkId, TaskId};
use strata_proto::pb;
use strata_proto::resources::Resources;

mod run;

pub use run::supervise;

/// Where the Docker Engine listens unless `DOCKER_HOST` says otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Where the task's sandbox is mounted inside its container (as Mesos does);
/// also the container's working directory and `MESOS_SANDBOX`.
pub const CONTAINER_SANDBOX: &str = "/mnt/mesos/sandbox";

/// Label with the task's framework id.
pub const LABEL_FRAMEWORK: &str = "strata.framework-id";
/// Label with the task's id.
pub const LABEL_TASK: &str = "strata.task-id";
/// Label with the id of one launch (tells a relaunch of the same task apart).
pub const LABEL_LAUNCH: &str = "strata.launch-id";

/// The signal that asks a docker-mode supervisor to stop its container
/// (`docker stop` with the kill's remaining grace).
pub const STOP_SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGTERM;
/// The signal that asks a docker-mode supervisor to kill its container now.
pub const KILL_SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR1;

/// How long one ordinary Engine API request may take.
const REQUEST_TIMEOUT_SECS: u64 = 60;
/// How long output still arriving after the container exited is waited for.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);
/// The longest container name (the readable part is cut to fit).
const MAX_NAME: usize = 200;

/// What can go wrong between Strata and the Docker Engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine cannot be reached (no socket, refused, wrong API …).
    #[error("cannot reach the Docker Engine at {host}: {reason}")]
    Unreachable {
        /// The engine's address (`unix:///…`).
        host: String,
        /// Why.
        reason: String,
    },
    /// Only unix sockets are supported.
    #[error(
        "unsupported Docker host {host:?}: the agent talks to the Docker Engine over a unix socket only (unix:///path)"
    )]
    UnsupportedHost {
        /// The address given (`DOCKER_HOST`).
        host: String,
    },
    /// The image is not in the engine's local store (nothing is pulled).
    #[error(
        "image {image} not found locally: the agent does not pull images; load it on this node first (docker pull, docker load or docker import)"
    )]
    ImageNotFound {
        /// The image asked for.
        image: String,
    },
    /// An engine request about the task's container failed.
    #[error("cannot {action} container {name}: {reason}")]
    Container {
        /// `create`, `start`, `attach to`, `wait for`, `inspect`, `remove` …
        action: &'static str,
        /// The container.
        name: String,
        /// The engine's error.
        reason: String,
    },
    /// Another engine request failed.
    #[error("the Docker Engine failed to {action}: {reason}")]
    Engine {
        /// What was asked.
        action: String,
        /// The engine's error.
        reason: String,
    },
}

/// One published port: `host_port` on the host to `container_port` inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerPort {
    /// The port on the host (one of the task's `ports`).
    pub host_port: u16,
    /// The port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// What a docker-mode supervisor runs: part of its `launch.json`. The
/// environment and the sandbox are the launch file's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerSpec {
    /// The engine's address (`unix:///var/run/docker.sock`).
    pub host: String,
    /// The container's name.
    pub name: String,
    /// The image (must be present locally).
    pub image: String,
    /// Replaces the image's entrypoint when set.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command when set.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// CPU limit in billionths of a CPU (none when 0).
    #[serde(default)]
    pub nano_cpus: i64,
    /// Memory limit in bytes (none when 0).
    #[serde(default)]
    pub memory_bytes: i64,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<DockerPort>,
    /// Labels (framework, task and launch ids).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The lowest cpu weight (2), for tasks on revocable cpus.
    #[serde(default)]
    pub low_priority: bool,
}

/// The Docker host the agent uses: `DOCKER_HOST` when set, else
/// [`DEFAULT_DOCKER_HOST`]. (Launches fail if it is not a unix socket.)
pub fn host_from_env() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned())
}

/// The socket path of a `unix://` host.
pub fn socket_path(host: &str) -> Result<&str, DockerError> {
    host.strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| DockerError::UnsupportedHost {
            host: host.to_owned(),
        })
}

/// Fails quickly when the engine's socket does not exist.
pub fn check_socket(host: &str) -> Result<(), DockerError> {
    let path = socket_path(host)?;
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(DockerError::Unreachable {
            host: host.to_owned(),
            reason: format!("{path}: {e}"),
        }),
    }
}

/// The container name of a task: `strata-<framework>-<task>-<hash>`, every
/// character Docker refuses replaced by `_`, cut to a sane length; the hash
/// (of the exact ids) keeps different tasks apart.
pub fn container_name(framework_id: &FrameworkId, task_id: &TaskId) -> String {
    // FNV-1a: stable across builds and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in framework_id
        .as_str()
        .bytes()
        .chain([0])
        .chain(task_id.as_str().bytes())
    {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let suffix = format!("-{:08x}", hash >> 32);
    let mut name: String = format!("strata-{framework_id}-{task_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(MAX_NAME - suffix.len());
    name + &suffix
}

/// What a container runs; `None` keeps the image's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerCommand {
    /// Replaces the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command (the entrypoint's arguments).
    pub cmd: Option<Vec<String>>,
}

/// Why a Docker task is invalid (it ends `TASK_ERROR` with this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDockerTask {
    /// No `container.docker`.
    #[error("a docker task needs container.docker with an image")]
    NoImage,
    /// An image name that is not one.
    #[error("invalid docker image {0:?}")]
    Image(String),
    /// A NUL byte in the command or its arguments.
    #[error("the command contains NUL")]
    NulInCommand,
    /// A port outside 1-65535.
    #[error("invalid {side} port {port}")]
    Port {
        /// `host` or `container`.
        side: &'static str,
        /// The port given.
        port: u32,
    },
    /// A protocol other than tcp and udp.
    #[error("unsupported port protocol {0:?} (tcp or udp)")]
    Protocol(String),
    /// A host port the task does not hold.
    #[error("host port {0} is not among the task's ports resources")]
    PortNotOwned(u16),
    /// A host port mapped twice.
    #[error("host port {port}/{protocol} is mapped twice")]
    MappedTwice {
        /// The port.
        port: u16,
        /// Its protocol.
        protocol: String,
    },
}

/// The entrypoint and command of a task's container: a shell command runs
/// as `/bin/sh -c <value>`; otherwise `<value> <arguments…>` (or just the
/// arguments) are the command given to the image's entrypoint; nothing
/// given: the image's own entrypoint and command.
pub fn command(command: Option<&pb::CommandInfo>) -> Result<ContainerCommand, InvalidDockerTask> {
    let Some(c) = command else {
        return Ok(ContainerCommand::default());
    };
    if c.value.contains('\0') || c.arguments.iter().any(|a| a.contains('\0')) {
        return Err(InvalidDockerTask::NulInCommand);
    }
    let value = c.value.trim();
    if c.shell && !value.is_empty() {
        return Ok(ContainerCommand {
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec![c.value.clone()]),
        });
    }
    let mut argv: Vec<String> = Vec::new();
    if !value.is_empty() {
        argv.push(c.value.clone());
    }
    argv.extend(c.arguments.iter().cloned());
    Ok(ContainerCommand {
        entrypoint: None,
        cmd: (!argv.is_empty()).then_some(argv),
    })
}

/// The published ports of a task, checked: every host port must be one of
/// the task's `ports` resources, ports in 1-65535, protocol `tcp` or `udp`
/// (empty: `tcp`), no host port twice.
pub fn ports(
    info: &pb::DockerInfo,
    resources: &Resources,
) -> Result<Vec<DockerPort>, InvalidDockerTask> {
    let owned: Vec<u64> = resources.ports.values().collect();
    let mut out: Vec<DockerPort> = Vec::new();
    for m in &info.port_mappings {
        let port = |p: u32, side: &'static str| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or(InvalidDockerTask::Port { side, port: p })
        };
        let host_port = port(m.host_port, "host")?;
        let container_port = port(m.container_port, "container")?;
        let protocol = match m.protocol.trim().to_ascii_lowercase().as_str() {
            "" | "tcp" => "tcp".to_owned(),
            "udp" => "udp".to_owned(),
            other => return Err(InvalidDockerTask::Protocol(other.to_owned())),
        };
        if !owned.contains(&u64::from(host_port)) {
            return Err(InvalidDockerTask::PortNotOwned(host_port));
        }
        if out
            .iter()
            .any(|p| p.host_port == host_port && p.protocol == protocol)
        {
            return Err(InvalidDockerTask::MappedTwice {
                port: host_port,
                protocol,
            });
        }
        out.push(DockerPort {
            host_port,
            container_port,
            protocol,
        });
    }
    Ok(out)
}

impl DockerSpec {
    /// The spec of a Docker task (which must have `container.docker` with
    /// an image): name, command, limits (`cpus` × 10⁹ nano-CPUs, `mem` MiB in
    /// bytes), ports and labels. `launch_id` names this launch. Errors say
    /// why the task is invalid.
    pub fn from_task(
        host: &str,
        framework_id: &FrameworkId,
        task: &pb::TaskInfo,
        resources: &Resources,
        launch_id: &str,
    ) -> Result<DockerSpec, InvalidDockerTask> {
        let docker = task
            .container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .ok_or(InvalidDockerTask::NoImage)?;
        let image = docker.image.trim();
        if image.is_empty() || image.contains(char::is_whitespace) || image.contains('\0') {
            return Err(InvalidDockerTask::Image(docker.image.clone()));
        }
        let ContainerCommand { entrypoint, cmd } = command(task.command.as_ref())?;
        let ports = ports(docker, resources)?;
        // Fractions of a CPU and of a MiB are kept (to the nano-CPU and byte).
        let nano_cpus = (resources.cpus.as_f64() * 1e9).round() as i64;
        let memory_bytes = (resources.mem.as_f64() * 1024.0 * 1024.0).round() as i64;
        let labels = [
            (LABEL_FRAMEWORK, framework_id.as_str()),
            (LABEL_TASK, task.task_id.as_str()),
            (LABEL_LAUNCH, launch_id),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Ok(DockerSpec {
            host: host.to_owned(),
            name: container_name(framework_id, &TaskId::new(task.task_id.clone())),
            image: image.to_owned(),
            entrypoint,
            cmd,
            nano_cpus,
            memory_bytes,
            ports,
            labels,
            low_priority: task.resources.iter().any(|r| r.revocable),
        })
    }

    /// The body of the engine's create request, with the task's complete
    /// environment and its sandbox (bind-mounted at [`CONTAINER_SANDBOX`]).
    pub fn create_body(
        &self,
        env: &BTreeMap<String, String>,
        sandbox: &Path,
    ) -> ContainerCreateBody {
        let key = |p: &DockerPort| format!("{}/{}", p.container_port, p.protocol);
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in &self.ports {
            bindings
                .entry(key(p))
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    host_port: Some(p.host_port.to_string()),
                });
        }
        let mut exposed: Vec<String> = self.ports.iter().map(key).collect();
        exposed.sort();
        exposed.dedup();
        ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(self.labels.clone().into_iter().collect()),
            working_dir: Some(CONTAINER_SANDBOX.into()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                nano_cpus: (self.nano_cpus > 0).then_some(self.nano_cpus),
                cpu_shares: self.low_priority.then_some(2),
                memory: (self.memory_bytes > 0).then_some(self.memory_bytes),
                // No swap beyond the memory limit, as under the cgroup.
                memory_swap: (self.memory_bytes > 0).then_some(self.memory_bytes),
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                mounts: Some(vec![Mount {
                    target: Some(CONTAINER_SANDBOX.into()),
                    source: Some(sandbox.to_string_lossy().into_owned()),
                    typ: Some(MountType::BIND),
                    read_only: Some(false),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn status_code(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn container_err(action: &'static str, name: &str, e: &bollard::errors::Error) -> DockerError {
    DockerError::Container {
        action,
        name: name.to_owned(),
        reason: chain(e),
    }
}

/// Connects to the engine at `host` and agrees on an API version.
pub async fn connect(host: &str) -> Result<Docker, DockerError> {
    let path = socket_path(host)?;
    let unreachable = |e: &bollard::errors::Error| DockerError::Unreachable {
        host: host.to_owned(),
        reason: chain(e),
    };
    let docker =
        Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .map_err(|e| unreachable(&e))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(&e))
}

/// Whether `image` is in the engine's local store.
pub async fn check_image(docker: &Docker, image: &str) -> Result<(), DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Err(DockerError::ImageNotFound {
            image: image.to_owned(),
        }),
        Err(e) => Err(DockerError::Engine {
            action: format!("inspect image {image}"),
            reason: chain(&e),
        }),
    }
}

/// Force-removes a container by name or id; `Ok(false)` if there was none.
pub async fn force_remove(docker: &Docker, name: &str) -> Result<bool, DockerError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(true),
        Err(e) if status_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(container_err("remove", name, &e)),
    }
}

/// Force-removes every container of one launch (by its launch label);
/// returns how many were removed.
pub async fn remove_launch(host: &str, launch_id: &str) -> Result<usize, DockerError> {
    let docker = connect(host).await?;
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_LAUNCH}={launch_id}")],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| DockerError::Engine {
            action: "list containers".into(),
            reason: chain(&e),
        })?;
    let mut removed = 0;
    for c in list {
        if let Some(id) = c.id
            && force_remove(&docker, &id).await?
        {
            removed += 1;
        }
    }
    Ok(removed)
}

/// [`remove_launch`] on a thread of its own (the agent's calls must not
/// block); the outcome is logged.
pub fn remove_in_background(host: String, launch_id: String, name: String) {
    let work = move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(container = %name, error = %e, "cannot remove the container");
                return;
            }
        };
        match rt.block_on(remove_launch(&host, &launch_id)) {
            Ok(0) => {}
            Ok(_) => {
                tracing::info!(container = %name, "removed a container left by its supervisor")
            }
            Err(e) => tracing::warn!(container = %name, error = %e, "cannot remove the container"),
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("docker-cleanup".into())
        .spawn(work)
    {
        tracing::warn!(error = %e, "cannot start the docker cleanup thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::resources::Ranges;

    fn task(command: Option<pb::CommandInfo>, mappings: Vec<(u32, u32, &str)>) -> pb::TaskInfo {
        pb::TaskInfo {
            task_id: "web.1".into(),
            resources: Resources::new(1.5, 256.0)
                .with_ports(Ranges::from_ranges([(31000, 31001)]))
                .to_proto(false),
            command,
            container: Some(pb::ContainerInfo {
                r#type: pb::container_info::Type::Docker as i32,
                docker: Some(pb::DockerInfo {
                    image: "strata-test/busybox:latest".into(),
                    port_mappings: mappings
                        .into_iter()
                        .map(|(c, h, p)| pb::docker_info::PortMapping {
                            container_port: c,
                            host_port: h,
                            protocol: p.into(),
                        })
                        .collect(),
                }),
            }),
            ..Default::default()
        }
    }

    fn spec(t: &pb::TaskInfo) -> Result<DockerSpec, InvalidDockerTask> {
        let r = Resources::from_proto(&t.resources).unwrap();
        DockerSpec::from_task(DEFAULT_DOCKER_HOST, &"fw-1".into(), t, &r, "L1")
    }

    fn shell(value: &str) -> Option<pb::CommandInfo> {
        Some(pb::CommandInfo {
            value: value.into(),
            shell: true,
            ..Default::default()
        })
    }

    #[test]
    fn names_are_sanitised_bounded_and_distinct() {
        let n = container_name(&"fw-1".into(), &"web.1".into());
        assert!(n.starts_with("strata-fw-1-web.1-"), "{n}");
        assert_eq!(n.len(), "strata-fw-1-web.1-".len() + 8);
        assert_eq!(n, container_name(&"fw-1".into(), &"web.1".into()), "stable");
        let odd = container_name(&"fw:1".into(), &"a b/é".into());
        assert!(odd.starts_with("strata-fw_1-a_b_"), "{odd}");
        assert!(
            odd.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        );
        // Equal once sanitised or joined, different tasks all the same.
        assert_ne!(
            container_name(&"a-b".into(), &"c".into()),
            container_name(&"a".into(), &"b-c".into())
        );
        assert_ne!(
            container_name(&"f".into(), &"a:b".into()),
            container_name(&"f".into(), &"a_b".into())
        );
        let long = container_name(&"f".repeat(255).into(), &"t".repeat(255).into());
        assert_eq!(long.len(), MAX_NAME);
    }

    #[test]
    fn commands_map_to_entrypoint_and_cmd() {
        let v = |a: &[&str]| Some(a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let c = command(shell("echo $HOST").as_ref()).unwrap();
        assert_eq!(c.entrypoint, v(&["/bin/sh", "-c"]));
        assert_eq!(c.cmd, v(&["echo $HOST"]));
        let args = pb::CommandInfo {
            value: "httpd".into(),
            arguments: vec!["-f".into(), "-p".into(), "80".into()],
            ..Default::default()
        };
        let c = command(Some(&args)).unwrap();
        assert_eq!(c.entrypoint, None, "the image's entrypoint runs it");
        assert_eq!(c.cmd, v(&["httpd", "-f", "-p", "80"]));
        let only_args = pb::CommandInfo {
            arguments: vec!["--verbose".into()],
            ..Default::default()
        };
        let c = command(Some(&only_args)).unwrap();
        assert_eq!((c.entrypoint, c.cmd), (None, v(&["--verbose"])));
        // Nothing given: the image's own entrypoint and command.
        assert_eq!(command(None).unwrap(), ContainerCommand::default());
        assert_eq!(
            command(shell(" ").as_ref()).unwrap(),
            ContainerCommand::default()
        );
        assert!(command(shell("a\0b").as_ref()).is_err());
    }

    #[test]
    fn a_task_becomes_a_container_config() {
        let t = task(
            shell("busybox httpd -f -p 8080"),
            vec![(8080, 31001, "TCP"), (53, 31000, "udp")],
        );
        let s = spec(&t).unwrap();
        assert_eq!(s.name, container_name(&"fw-1".into(), &"web.1".into()));
        assert_eq!(s.image, "strata-test/busybox:latest");
        assert_eq!(s.nano_cpus, 1_500_000_000);
        assert_eq!(s.memory_bytes, 256 * 1024 * 1024);
        assert_eq!(s.labels[LABEL_FRAMEWORK], "fw-1");
        assert_eq!(s.labels[LABEL_TASK], "web.1");
        assert_eq!(s.labels[LABEL_LAUNCH], "L1");
        let env = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        let body = s.create_body(&env, Path::new("/w/sandboxes/fw-1/web.1"));
        assert_eq!(body.image.as_deref(), Some("strata-test/busybox:latest"));
        assert_eq!(body.env.unwrap(), vec!["A=1"]);
        assert_eq!(body.working_dir.as_deref(), Some(CONTAINER_SANDBOX));
        assert_eq!(body.entrypoint.unwrap(), vec!["/bin/sh", "-c"]);
        assert_eq!(body.cmd.unwrap(), vec!["busybox httpd -f -p 8080"]);
        assert_eq!(body.exposed_ports.unwrap(), vec!["53/udp", "8080/tcp"]);
        let hc = body.host_config.unwrap();
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        assert_eq!(hc.memory, Some(268_435_456));
        assert_eq!(hc.memory_swap, Some(268_435_456));
        let pb = hc.port_bindings.unwrap();
        let b = pb["8080/tcp"].as_ref().unwrap();
        assert_eq!(b[0].host_port.as_deref(), Some("31001"));
        assert_eq!(b[0].host_ip.as_deref(), Some("0.0.0.0"));
        assert_eq!(
            pb["53/udp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("31000")
        );
        let m = &hc.mounts.unwrap()[0];
        assert_eq!(m.source.as_deref(), Some("/w/sandboxes/fw-1/web.1"));
        assert_eq!(m.target.as_deref(), Some(CONTAINER_SANDBOX));
        assert_eq!(m.typ, Some(MountType::BIND));
        // Serialised for the engine as it expects.
        let json = serde_json::to_value(s.create_body(&env, Path::new("/s"))).unwrap();
        assert_eq!(json["ExposedPorts"]["8080/tcp"], serde_json::json!({}));
        assert_eq!(json["HostConfig"]["NanoCpus"], 1_500_000_000);
        assert_eq!(json["Labels"][LABEL_TASK], "web.1");
    }

    #[test]
    fn no_limits_no_ports_and_the_image_default_command() {
        let mut t = task(None, vec![]);
        t.resources = Resources::new(0.0, 0.0).to_proto(false);
        let s = spec(&t).unwrap();
        let body = s.create_body(&BTreeMap::new(), Path::new("/s"));
        assert_eq!((body.entrypoint, body.cmd), (None, None));
        assert_eq!(body.exposed_ports, None);
        let hc = body.host_config.unwrap();
        assert_eq!(
            (hc.nano_cpus, hc.memory, hc.port_bindings),
            (None, None, None)
        );
    }

    #[test]
    fn invalid_docker_tasks_are_refused() {
        let err = |t: pb::TaskInfo| spec(&t).unwrap_err().to_string();
        assert!(err(task(None, vec![(80, 31005, "tcp")])).contains("not among the task's ports"));
        assert!(err(task(None, vec![(80, 31000, "sctp")])).contains("unsupported port protocol"));
        assert!(err(task(None, vec![(0, 31000, "")])).contains("invalid container port 0"));
        assert!(err(task(None, vec![(80, 70000, "")])).contains("invalid host port"));
        assert!(err(task(None, vec![(80, 31000, ""), (81, 31000, "tcp")])).contains("twice"));
        let mut no_image = task(None, vec![]);
        no_image
            .container
            .as_mut()
            .unwrap()
            .docker
            .as_mut()
            .unwrap()
            .image = " ".into();
        assert!(err(no_image).contains("invalid docker image"));
        let mut no_docker = task(None, vec![]);
        no_docker.container.as_mut().unwrap().docker = None;
        assert!(err(no_docker).contains("needs container.docker"));
    }

    #[test]
    fn hosts_must_be_unix_sockets() {
        assert_eq!(
            socket_path(DEFAULT_DOCKER_HOST).unwrap(),
            "/var/run/docker.sock"
        );
        assert!(matches!(
            socket_path("tcp://10.0.0.1:2375"),
            Err(DockerError::UnsupportedHost { .. })
        ));
        let e = check_socket("unix:///nonexistent/docker.sock").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot reach the Docker Engine at unix:///nonexistent/docker.sock: "),
            "{e}"
        );
        let e = DockerError::ImageNotFound {
            image: "x:1".into(),
        };
        assert!(e.to_string().starts_with("image x:1 not found locally"));
    }
}
