//! Marathon's app definition: the JSON a user posts to `/v2/apps`, its
//! defaults, and its validation into per-field errors (Marathon's 422
//! `details`).
//!
//! Strata's own settings ride in `labels`, so requests and responses stay
//! valid Marathon JSON: [`CLASS_LABEL`] names the app's priority class, and
//! the `strata.autoscale.*` labels its autoscaling policy.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_proto::class::PriorityClasses;
use strata_proto::resources::Resources;
use strata_sdk::{Constraint, Operator};

pub use super::strategy::{KillSelection, UnreachableStrategy, UpgradeStrategy};

/// The label that sets an app's priority class (default `service`).
pub const CLASS_LABEL: &str = "strata.class";
/// The class of apps that name none.
pub const DEFAULT_APP_CLASS: &str = "service";

/// Why an app id is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAppId {
    /// No segment at all.
    #[error("an app id must not be empty")]
    Empty,
    /// A segment with other characters.
    #[error(
        "path segment {0:?} must be lowercase letters, digits, '-' or '.', \
         starting and ending with a letter or digit"
    )]
    Segment(String),
    /// Longer than Marathon allows.
    #[error("an app id must be at most 200 characters")]
    TooLong,
}

/// An app's id: a normalised absolute path such as `/shop/web`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(String);

impl AppId {
    /// Parses and normalises an id: lowercase segments of `[a-z0-9-.]`
    /// (each starting and ending alphanumeric), joined by `/`, made
    /// absolute. Empty segments (double slashes) are dropped, as Marathon's
    /// clients sometimes send them.
    pub fn parse(text: &str) -> Result<AppId, InvalidAppId> {
        let segments: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            return Err(InvalidAppId::Empty);
        }
        for s in &segments {
            let ok = s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
            if !ok || *s == "." || *s == ".." {
                return Err(InvalidAppId::Segment((*s).to_owned()));
            }
        }
        let id = format!("/{}", segments.join("/"));
        if id.len() > 200 {
            return Err(InvalidAppId::TooLong);
        }
        Ok(AppId(id))
    }

    /// The id as a path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix of the app's task ids: the path with `/` as `_`, without
    /// the leading one (Marathon's `shop_web.<instance>`).
    pub fn task_prefix(&self) -> String {
        self.0[1..].replace('/', "_")
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One app, as posted (camelCase JSON, Marathon's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDefinition {
    /// The app's id (normalised on validation).
    pub id: String,
    /// A shell command (`/bin/sh -c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// A command executed directly (or the Docker image's arguments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// How many instances to run.
    #[serde(default = "one")]
    pub instances: u32,
    /// Cpus per instance.
    #[serde(default = "one_f")]
    pub cpus: f64,
    /// Memory per instance, MiB.
    #[serde(default = "default_mem")]
    pub mem: f64,
    /// Disk per instance, MiB.
    #[serde(default)]
    pub disk: f64,
    /// GPUs (must be 0: Strata does not schedule GPUs yet).
    #[serde(default)]
    pub gpus: f64,
    /// A Docker container to run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// The app's ports: each instance gets one host port per definition
    /// (any number the offer has), and `port`, when not 0, is its service
    /// port. Absent (or `null`), one port, as Marathon gives; `[]` for
    /// none.
    #[serde(
        default = "default_port_definitions",
        deserialize_with = "port_definitions_or_default"
    )]
    pub port_definitions: Vec<PortDefinition>,
    /// Use the host ports named in `portDefinitions` exactly.
    #[serde(default)]
    pub require_ports: bool,
    /// Environment of every instance.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Free-form labels (and Strata's `strata.*` settings).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Health checks.
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    /// Placement constraints, `[field, operator, value?]`.
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    /// How deployments replace instances.
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    /// What becomes of an instance whose agent is unreachable.
    #[serde(default)]
    pub unreachable_strategy: UnreachableStrategy,
    /// First restart delay after a failure, seconds.
    #[serde(default = "one_f")]
    pub backoff_seconds: f64,
    /// Growth of the restart delay per failure.
    #[serde(default = "default_backoff_factor")]
    pub backoff_factor: f64,
    /// The longest restart delay, seconds.
    #[serde(default = "default_max_launch_delay")]
    pub max_launch_delay_seconds: f64,
    /// Which instances go first when scaling down.
    #[serde(default)]
    pub kill_selection: KillSelection,
    /// Files fetched into each instance's sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<Fetch>,
    /// The user instances run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Time between SIGTERM and SIGKILL when an instance is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<f64>,
    /// Set by the server: when this definition was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

fn one() -> u32 {
    1
}

/// Marathon's port definitions of an app that names none: one port, any
/// number, so that `$PORT0` is always set.
fn default_port_definitions() -> Vec<PortDefinition> {
    vec![PortDefinition {
        port: 0,
        protocol: tcp(),
        name: Some("default".into()),
    }]
}

fn port_definitions_or_default<'de, D>(d: D) -> Result<Vec<PortDefinition>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let defs: Option<Vec<PortDefinition>> = Deserialize::deserialize(d)?;
    Ok(defs.unwrap_or_else(default_port_definitions))
}
fn one_f() -> f64 {
    1.0
}
fn default_mem() -> f64 {
    128.0
}
fn default_backoff_factor() -> f64 {
    1.15
}
fn default_max_launch_delay() -> f64 {
    300.0
}

/// A Docker container (Marathon's `container`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// `DOCKER` (or `MESOS` with a docker image).
    #[serde(rename = "type", default = "docker_type")]
    pub kind: String,
    /// The image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSpec>,
    /// Container ports published on host ports.
    #[serde(default)]
    pub port_mappings: Vec<PortMappingSpec>,
}

fn docker_type() -> String {
    "DOCKER".into()
}

/// `container.docker`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerSpec {
    /// The image, present on the agents (no registry is used).
    pub image: String,
    /// Accepted for compatibility; images are never pulled.
    #[serde(default)]
    pub force_pull_image: bool,
}

/// `container.portMappings[i]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMappingSpec {
    /// The port inside the container.
    pub container_port: u16,
    /// The host port (`0`: any of the offer's).
    #[serde(default)]
    pub host_port: u16,
    /// Marathon's `servicePort`: the fixed port every agent forwards to the
    /// app's healthy instances (`0`: none).
    #[serde(default)]
    pub service_port: u16,
    /// `tcp` or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// A name for the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

/// `portDefinitions[i]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    /// The service port (Marathon's `port` with `requirePorts` false): the
    /// host port is always picked from the offer, and a `port` other than
    /// 0 is the fixed port every agent forwards to the app's healthy
    /// instances, as marathon-lb does.
    #[serde(default)]
    pub port: u16,
    /// `tcp` or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// A name for the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A health check (Marathon's `healthChecks[i]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `HTTP`, `TCP` or `COMMAND` (`MESOS_HTTP`, `MESOS_TCP` are read as
    /// `HTTP`, `TCP`).
    #[serde(default = "http_protocol")]
    pub protocol: String,
    /// The HTTP path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Which of the instance's host ports to check.
    #[serde(default)]
    pub port_index: usize,
    /// A fixed port to check instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// For `COMMAND`: `{"value": "..."}`, run with `sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    /// Failures are ignored this long after the instance starts, until it
    /// is first healthy.
    #[serde(default = "default_grace")]
    pub grace_period_seconds: f64,
    /// Time between checks.
    #[serde(default = "default_interval")]
    pub interval_seconds: f64,
    /// A check not answered within this long fails.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// The instance is killed after this many failures in a row (0: never).
    #[serde(default = "default_max_failures")]
    pub max_consecutive_failures: u32,
    /// Marathon's initial delay; accepted, checks start at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<f64>,
}

fn http_protocol() -> String {
    "HTTP".into()
}
fn default_grace() -> f64 {
    300.0
}
fn default_interval() -> f64 {
    60.0
}
fn default_timeout() -> f64 {
    20.0
}
fn default_max_failures() -> u32 {
    3
}

/// A `COMMAND` check's command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandCheck {
    /// The shell command; exit 0 is healthy.
    pub value: String,
}

/// The kind of a health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// `GET path` answering 2xx or 3xx.
    Http,
    /// A TCP connection accepted.
    Tcp,
    /// A command exiting 0.
    Command,
}

impl HealthCheck {
    /// The check's kind, if its protocol is known.
    pub fn kind(&self) -> Option<CheckKind> {
        match self.protocol.as_str() {
            "HTTP" | "MESOS_HTTP" => Some(CheckKind::Http),
            "TCP" | "MESOS_TCP" => Some(CheckKind::Tcp),
            "COMMAND" => Some(CheckKind::Command),
            _ => None,
        }
    }
}

/// `fetch[i]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fetch {
    /// A path or `http://` URL.
    pub uri: String,
    /// Make the fetched file executable.
    #[serde(default)]
    pub executable: bool,
}

/// One invalid field: Marathon's 422 `details[i]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// A JSON path such as `/healthChecks(0)/protocol`.
    pub path: String,
    /// What is wrong with it.
    pub errors: Vec<String>,
}

/// Parses an app definition from JSON; a value of the wrong type is
/// reported at its path.
pub fn parse(body: &[u8]) -> Result<AppDefinition, Vec<FieldError>> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = marathon_path(&e.path().to_string());
        vec![FieldError {
            path,
            errors: vec![e.inner().to_string()],
        }]
    })
}

/// `a.b[0].c` (serde_path_to_error) as `/a/b(0)/c` (Marathon).
fn marathon_path(p: &str) -> String {
    if p == "." || p == "?" || p.is_empty() {
        return "/".into();
    }
    let mut out = String::new();
    for seg in p.split('.') {
        out.push('/');
        out.push_str(&seg.replace('[', "(").replace(']', ")"));
    }
    out
}

impl AppDefinition {
    /// The app's priority class (its `strata.class` label).
    pub fn class(&self) -> &str {
        self.labels
            .get(CLASS_LABEL)
            .map(String::as_str)
            .unwrap_or(DEFAULT_APP_CLASS)
    }

    /// Resources of one instance (ports counted, not chosen).
    pub fn resources(&self) -> Resources {
        let mut r = Resources::new(self.cpus, self.mem).with_disk(self.disk);
        let n = self.host_ports() as u64;
        if n > 0 {
            r = r.with_ports(strata_proto::resources::Ranges::from_ranges([(1, n)]));
        }
        r
    }

    /// How many host ports an instance needs.
    pub fn host_ports(&self) -> usize {
        match &self.container {
            Some(c) if !c.port_mappings.is_empty() => c.port_mappings.len(),
            _ => self.port_definitions.len(),
        }
    }

    /// The app's ports as routes see them, one per host port: the service
    /// port (0: none), the protocol and the name.
    pub fn route_ports(&self) -> Vec<strata_proto::routes::RoutePort> {
        let port = |service_port, protocol: &String, name: &Option<String>| {
            strata_proto::routes::RoutePort {
                service_port,
                protocol: protocol.clone(),
                name: name.clone(),
            }
        };
        match &self.container {
            Some(c) if !c.port_mappings.is_empty() => c
                .port_mappings
                .iter()
                .map(|m| port(m.service_port, &m.protocol, &m.name))
                .collect(),
            _ => self
                .port_definitions
                .iter()
                .map(|d| port(d.port, &d.protocol, &d.name))
                .collect(),
        }
    }

    /// The Docker image, if the app runs in a container.
    pub fn image(&self) -> Option<&str> {
        self.container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .map(|d| d.image.as_str())
    }

    /// The placement constraints in the SDK's form (valid definitions only).
    pub fn sdk_constraints(&self) -> Vec<Constraint> {
        self.constraints
            .iter()
            .filter_map(|c| {
                let op = parse_operator(c.get(1)?)?;
                Some(Constraint {
                    field: c[0].clone(),
                    operator: op,
                    value: c.get(2).cloned().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Whether two definitions differ in more than `instances` and
    /// `version` (a change that replaces instances).
    pub fn config_differs(&self, other: &AppDefinition) -> bool {
        let strip = |a: &AppDefinition| AppDefinition {
            instances: 0,
            version: None,
            ..a.clone()
        };
        strip(self) != strip(other)
    }

    /// Checks every field; returns the normalised id or every error found.
    pub fn validate(&self, classes: &PriorityClasses) -> Result<AppId, Vec<FieldError>> {
        let mut errs: Vec<FieldError> = Vec::new();
        let mut err = |path: &str, msg: String| match errs.iter_mut().find(|e| e.path == path) {
            Some(e) => e.errors.push(msg),
            None => errs.push(FieldError {
                path: path.into(),
                errors: vec![msg],
            }),
        };
        let id = AppId::parse(&self.id)
            .map_err(|e| err("/id", e.to_string()))
            .ok();
        match (&self.cmd, &self.args, self.image()) {
            (Some(_), Some(_), _) => err("/", "cmd and args are mutually exclusive".into()),
            (None, None, None) => err("/", "an app needs cmd, args or a container image".into()),
            (Some(c), _, _) if c.trim().is_empty() => err("/cmd", "must not be empty".into()),
            _ => {}
        }
        if self.instances > 10_000 {
            err("/instances", "must be at most 10000".into());
        }
        for (path, v, min) in [
            ("/cpus", self.cpus, 0.01),
            ("/mem", self.mem, 1.0),
            ("/disk", self.disk, 0.0),
        ] {
            if !v.is_finite() || v < min {
                err(path, format!("must be a number at least {min}"));
            }
        }
        if self.gpus != 0.0 {
            err(
                "/gpus",
                "GPUs are not scheduled by Strata; must be 0".into(),
            );
        }
        if let Err(e) = classes.lookup(self.class()) {
            err(&format!("/labels/{CLASS_LABEL}"), e.to_string());
        }
        if let Some(c) = &self.container {
            if !matches!(c.kind.as_str(), "DOCKER" | "MESOS") {
                err("/container/type", "must be DOCKER or MESOS".into());
            }
            match &c.docker {
                Some(d) if d.image.trim().is_empty() => {
                    err("/container/docker/image", "must not be empty".into())
                }
                None if c.kind == "DOCKER" => err(
                    "/container/docker",
                    "a DOCKER container needs an image".into(),
                ),
                _ => {}
            }
            for (i, m) in c.port_mappings.iter().enumerate() {
                if m.container_port == 0 {
                    err(
                        &format!("/container/portMappings({i})/containerPort"),
                        "must be 1-65535".into(),
                    );
                }
                if !matches!(m.protocol.as_str(), "tcp" | "udp") {
                    err(
                        &format!("/container/portMappings({i})/protocol"),
                        "must be tcp or udp".into(),
                    );
                }
            }
        }
        for (i, p) in self.port_definitions.iter().enumerate() {
            if !matches!(p.protocol.as_str(), "tcp" | "udp" | "udp,tcp" | "tcp,udp") {
                err(
                    &format!("/portDefinitions({i})/protocol"),
                    "must be tcp or udp".into(),
                );
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.route_ports().iter().enumerate() {
            if p.service_port != 0 && !seen.insert(p.service_port) {
                let at = match &self.container {
                    Some(c) if !c.port_mappings.is_empty() => {
                        format!("/container/portMappings({i})/servicePort")
                    }
                    _ => format!("/portDefinitions({i})/port"),
                };
                err(
                    &at,
                    format!("service port {} is given twice", p.service_port),
                );
            }
        }
        if self.require_ports {
            err(
                "/requirePorts",
                "fixed host ports are not supported yet; use port 0".into(),
            );
        }
        for (i, h) in self.health_checks.iter().enumerate() {
            let at = |f: &str| format!("/healthChecks({i})/{f}");
            match h.kind() {
                None => err(
                    &at("protocol"),
                    format!(
                        "unknown protocol {:?}: use HTTP, TCP or COMMAND",
                        h.protocol
                    ),
                ),
                Some(CheckKind::Command) if h.command.is_none() => {
                    err(&at("command"), "a COMMAND check needs a command".into())
                }
                Some(CheckKind::Http | CheckKind::Tcp)
                    if h.port.is_none() && h.port_index >= self.host_ports() =>
                {
                    err(
                        &at("portIndex"),
                        format!(
                            "the app has {} host port(s); portIndex {} names none",
                            self.host_ports(),
                            h.port_index
                        ),
                    )
                }
                _ => {}
            }
            for (f, v) in [
                ("gracePeriodSeconds", h.grace_period_seconds),
                ("intervalSeconds", h.interval_seconds),
                ("timeoutSeconds", h.timeout_seconds),
            ] {
                if !v.is_finite() || v < 0.0 || (f != "gracePeriodSeconds" && v == 0.0) {
                    err(&at(f), "must be a positive number of seconds".into());
                }
            }
        }
        for (i, c) in self.constraints.iter().enumerate() {
            let path = format!("/constraints({i})");
            match c.as_slice() {
                [field, op, rest @ ..] if !field.is_empty() && rest.len() <= 1 => {
                    match parse_operator(op) {
                        None => err(&path, format!("unknown operator {op:?}")),
                        Some(Operator::Unique) if !rest.is_empty() => {
                            err(&path, "UNIQUE takes no value".into())
                        }
                        Some(Operator::MaxPer | Operator::GroupBy)
                            if rest.first().is_some_and(|v| v.parse::<u32>().is_err()) =>
                        {
                            err(&path, format!("{op} takes a number"))
                        }
                        Some(
                            Operator::MaxPer
                            | Operator::Cluster
                            | Operator::Like
                            | Operator::Unlike,
                        ) if rest.is_empty() => err(&path, format!("{op} needs a value")),
                        _ => {}
                    }
                }
                _ => err(&path, "a constraint is [field, operator, value?]".into()),
            }
        }
        let u = &self.upgrade_strategy;
        if !(0.0..=1.0).contains(&u.minimum_health_capacity) {
            err(
                "/upgradeStrategy/minimumHealthCapacity",
                "must be between 0 and 1".into(),
            );
        }
        if !(0.0..=1.0).contains(&u.maximum_over_capacity) {
            err(
                "/upgradeStrategy/maximumOverCapacity",
                "must be between 0 and 1".into(),
            );
        }
        let r = &self.unreachable_strategy;
        if !(r.inactive_after_seconds.is_finite() && r.inactive_after_seconds >= 0.0) {
            err(
                "/unreachableStrategy/inactiveAfterSeconds",
                "must be at least 0".into(),
            );
        }
        if !(r.expunge_after_seconds.is_finite()
            && r.expunge_after_seconds >= r.inactive_after_seconds)
        {
            err(
                "/unreachableStrategy/expungeAfterSeconds",
                "must be at least inactiveAfterSeconds".into(),
            );
        }
        if !(self.backoff_seconds.is_finite() && self.backoff_seconds >= 0.0) {
            err("/backoffSeconds", "must be at least 0".into());
        }
        if !(self.backoff_factor.is_finite() && self.backoff_factor >= 1.0) {
            err("/backoffFactor", "must be at least 1".into());
        }
        if !(self.max_launch_delay_seconds.is_finite() && self.max_launch_delay_seconds >= 0.0) {
            err("/maxLaunchDelaySeconds", "must be at least 0".into());
        }
        if let Err(e) = super::autoscale::Policy::from_labels(&self.labels) {
            err(&format!("/labels/{}", e.label), e.message);
        }
        match (id, errs.is_empty()) {
            (Some(id), true) => Ok(id),
            _ => Err(errs),
        }
    }
}

/// Marathon's constraint operator names.
pub fn parse_operator(op: &str) -> Option<Operator> {
    Some(match op {
        "UNIQUE" => Operator::Unique,
        "CLUSTER" | "IS" => Operator::Cluster,
        "GROUP_BY" => Operator::GroupBy,
        "LIKE" => Operator::Like,
        "UNLIKE" => Operator::Unlike,
        "MAX_PER" => Operator::MaxPer,
        _ => return None,
    })
}

/// The restart delay after `failures` earlier unexpected ends.
pub fn backoff_delay(def: &AppDefinition, failures: u32) -> Duration {
    let s = def.backoff_seconds * def.backoff_factor.powi(failures.min(64) as i32);
    secs(s.min(def.max_launch_delay_seconds))
}

/// A span of `s` seconds from an app definition's field; a negative, NaN
/// or absurd value reads as zero or about a year, never as a panic.
pub fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s.min(3.0e7))
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
