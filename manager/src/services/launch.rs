//! From an app and an offer to a task: resources, host ports, environment,
//! Docker settings, and the app's constraints checked against the
//! instances it already has.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_proto::ids::TaskId;
use strata_proto::pb::TaskState;
use strata_proto::resources::{Ranges, Resources};
use strata_sdk::{Docker, Offer, Operator, PortMapping, TaskBuilder, TaskInfo, Uri};

use super::app::AppId;
use super::core::{App, Instance, Timestamp};
use crate::allocator::constraints::pattern_matches;

/// The label every instance carries with its app's id.
pub const APP_LABEL: &str = "strata.app";

/// Whether one more instance of `app` fits what is left of `offer`, and
/// its constraints admit the offer's agent.
pub fn fits(app: &App, offer: &Offer, remaining: &Resources) -> bool {
    let need = app.def.resources();
    if !(remaining.cpus >= need.cpus && remaining.mem >= need.mem && remaining.disk >= need.disk) {
        return false;
    }
    if remaining.ports.count() < need.ports.count() {
        return false;
    }
    admits(app, offer)
}

fn field_value<'a>(offer: &'a Offer, field: &str) -> Option<&'a str> {
    if field == "hostname" {
        Some(offer.hostname.as_str())
    } else {
        offer.attribute(field)
    }
}

/// Whether the app's constraints admit one more instance on the offer's
/// agent. Hosts of live instances are compared by host name (the
/// attributes of other agents are not known here, so grouped limits on
/// attributes count only this agent's instances).
fn admits(app: &App, offer: &Offer) -> bool {
    let live = || app.instances.values().filter(|i| !i.killing);
    app.def.sdk_constraints().iter().all(|c| {
        let value = field_value(offer, &c.field);
        match c.operator {
            Operator::Cluster => value == Some(c.value.as_str()),
            Operator::Like => value.is_some_and(|v| pattern_matches(&c.value, v)),
            Operator::Unlike => !value.is_some_and(|v| pattern_matches(&c.value, v)),
            Operator::Unique | Operator::MaxPer => {
                if value.is_none() {
                    return false;
                }
                let limit = if c.operator == Operator::Unique {
                    1
                } else {
                    c.value.parse::<usize>().unwrap_or(1)
                };
                let here = live()
                    .filter(|i| i.agent_id == offer.agent_id || i.host == offer.hostname)
                    .count();
                here < limit
            }
            // Spreading is the allocator's job; any agent with the field
            // is admitted here.
            Operator::GroupBy => value.is_some(),
        }
    })
}

/// Builds the task of one new instance and takes its resources (and
/// host ports) out of `remaining`.
pub fn build(
    id: &AppId,
    app: &App,
    offer: &Offer,
    remaining: &mut Resources,
    seq: &str,
    now: Timestamp,
    default_user: Option<&str>,
) -> Option<(TaskInfo, Instance)> {
    let def = &app.def;
    let nports = def.host_ports() as u64;
    let ports: Vec<u16> = if nports > 0 {
        let picked = remaining.ports.take_lowest(nports)?;
        picked.values().map(|p| p as u16).collect()
    } else {
        Vec::new()
    };
    let task_id = TaskId::new(format!("{}.{}", id.task_prefix(), seq));
    let mut builder = match (&def.cmd, &def.args) {
        (Some(cmd), _) => TaskBuilder::shell(task_id.clone(), cmd.clone()),
        (None, Some(args)) if def.image().is_none() && !args.is_empty() => {
            TaskBuilder::exec(task_id.clone(), args[0].clone(), args[1..].to_vec())
        }
        (None, Some(args)) => TaskBuilder::exec(task_id.clone(), String::new(), args.clone()),
        (None, None) => TaskBuilder::exec(task_id.clone(), String::new(), Vec::<String>::new()),
    };
    let mut resources = Resources::new(def.cpus, def.mem).with_disk(def.disk);
    if !ports.is_empty() {
        resources = resources.with_ports(Ranges::from_ranges(
            ports.iter().map(|&p| (u64::from(p), u64::from(p))),
        ));
    }
    builder = builder
        .name(id.task_prefix())
        .agent(offer.agent_id.clone())
        .resources(resources.clone())
        .class(def.class())
        .labels(def.labels.clone())
        .label(APP_LABEL, id.as_str());
    for (k, v) in instance_env(id, app, &task_id, &offer.hostname, &ports) {
        builder = builder.env(k, v);
    }
    for f in &def.fetch {
        builder = builder.uri(if f.executable {
            Uri::executable(f.uri.clone())
        } else {
            Uri::new(f.uri.clone())
        });
    }
    if let Some(user) = def.user.as_deref().or(default_user) {
        builder = builder.user(user);
    }
    if let Some(g) = def.task_kill_grace_period_seconds {
        builder = builder.kill_grace(Duration::from_secs_f64(g.max(0.0)));
    }
    let mut task = builder.build();
    if let Some(image) = def.image() {
        let mappings = def
            .container
            .as_ref()
            .map(|c| c.port_mappings.clone())
            .unwrap_or_default();
        task.docker = Some(Docker {
            image: image.to_owned(),
            port_mappings: mappings
                .iter()
                .zip(&ports)
                .map(|(m, &host)| PortMapping {
                    container_port: m.container_port,
                    host_port: host,
                    protocol: m.protocol.clone(),
                })
                .collect(),
        });
    }
    remaining.subtract_saturating(&resources);
    remaining.ports = remaining.ports.difference(&resources.ports);
    let inst = Instance {
        task_id,
        config_version: app.config_version.clone(),
        agent_id: offer.agent_id.clone(),
        host: offer.hostname.clone(),
        ip: offer
            .agent_address
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
            .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
            .unwrap_or_else(|| offer.hostname.clone()),
        ports,
        state: TaskState::TaskStaging,
        staged_at: now,
        started_at: None,
        healthy: None,
        ever_healthy: false,
        failures: 0,
        last_check: None,
        killing: false,
        unreachable_since: None,
    };
    Some((task, inst))
}

/// The environment of an instance: the app's `env` plus Marathon's
/// variables (`PORT0…`, `PORTS`, `HOST`, `MARATHON_APP_ID`, …).
pub fn instance_env(
    id: &AppId,
    app: &App,
    task_id: &TaskId,
    host: &str,
    ports: &[u16],
) -> BTreeMap<String, String> {
    let mut env = app.def.env.clone();
    for (i, p) in ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), p.to_string());
    }
    if let Some(p) = ports.first() {
        env.insert("PORT".into(), p.to_string());
    }
    if let Some(c) = &app.def.container {
        for (m, p) in c.port_mappings.iter().zip(ports) {
            env.insert(format!("PORT_{}", m.container_port), p.to_string());
        }
    }
    env.insert(
        "PORTS".into(),
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    env.insert("HOST".into(), host.to_owned());
    env.insert("MARATHON_APP_ID".into(), id.to_string());
    env.insert(
        "MARATHON_APP_VERSION".into(),
        app.def.version.clone().unwrap_or_default(),
    );
    env.insert("MESOS_TASK_ID".into(), task_id.to_string());
    env.insert("STRATA_TASK_ID".into(), task_id.to_string());
    env
}
