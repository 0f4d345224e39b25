//! The route table: where each service app's healthy instances are.
//!
//! The manager's services scheduler builds it; the manager's DNS answers
//! from it and every agent forwards each app's service ports by it (as
//! Mesos-DNS and marathon-lb do from Marathon's state). It travels as the
//! JSON of `GET /api/v1/routes`, so both ends share these types.

use serde::{Deserialize, Serialize};

/// Every app and its healthy instances.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// Changes whenever anything else in the table does (a digest of it):
    /// a watcher passes the version it holds and is answered when it
    /// differs.
    pub version: String,
    /// The apps, by id.
    pub apps: Vec<AppRoute>,
}

/// One app's ports and healthy instances.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRoute {
    /// The app's id (`/shop/api`).
    pub id: String,
    /// Its DNS label: the path reversed and joined by `-` (`api-shop`), as
    /// Mesos-DNS names Marathon's apps.
    pub name: String,
    /// The app's ports, in the order of its port definitions (or container
    /// port mappings): instance `ports[i]` serves `ports[i]` here.
    pub ports: Vec<RoutePort>,
    /// The instances that are running and pass their health checks (every
    /// running instance, for an app without checks).
    pub backends: Vec<Backend>,
}

/// One port of an app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePort {
    /// Marathon's `servicePort`: the fixed port every agent forwards to the
    /// app's instances (0: none).
    pub service_port: u16,
    /// `tcp`, `udp` or both (`udp,tcp`).
    pub protocol: String,
    /// The port's name, if it has one (SRV `_name._app._tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl RoutePort {
    /// Whether the port carries TCP.
    pub fn is_tcp(&self) -> bool {
        self.protocol.split(',').any(|p| p.trim() == "tcp")
    }

    /// Whether the port carries UDP.
    pub fn is_udp(&self) -> bool {
        self.protocol.split(',').any(|p| p.trim() == "udp")
    }
}

/// One healthy instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// The task.
    pub task_id: String,
    /// Its agent.
    pub agent_id: String,
    /// The agent's IP address.
    pub ip: String,
    /// Its host ports, one per [`AppRoute::ports`].
    pub ports: Vec<u16>,
}

impl RouteTable {
    /// A table of `apps`, its version the digest of their contents.
    pub fn new(apps: Vec<AppRoute>) -> Self {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same apps give the same version in
        // every process, so a watcher that moves to another manager is not
        // sent an unchanged table again.
        let mut h = std::hash::DefaultHasher::new();
        for a in &apps {
            a.id.hash(&mut h);
            a.name.hash(&mut h);
            for p in &a.ports {
                (p.service_port, &p.protocol, &p.name).hash(&mut h);
            }
            for b in &a.backends {
                (&b.task_id, &b.agent_id, &b.ip, &b.ports).hash(&mut h);
            }
        }
        RouteTable {
            version: format!("{:016x}", h.finish()),
            apps,
        }
    }

    /// Each forwarded service port with its protocol flags and the
    /// addresses (`ip:host port`) of the instances behind it.
    pub fn service_ports(&self) -> Vec<ServicePort> {
        let mut out = Vec::new();
        for a in &self.apps {
            for (i, p) in a.ports.iter().enumerate() {
                if p.service_port == 0 {
                    continue;
                }
                let backends = a
                    .backends
                    .iter()
                    .filter_map(|b| Some(format!("{}:{}", b.ip, b.ports.get(i)?)))
                    .collect();
                out.push(ServicePort {
                    port: p.service_port,
                    app: a.id.clone(),
                    tcp: p.is_tcp(),
                    backends,
                });
            }
        }
        out
    }
}

/// One service port and where it leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The service port.
    pub port: u16,
    /// The app it belongs to.
    pub app: String,
    /// Whether it carries TCP (only TCP is forwarded).
    pub tcp: bool,
    /// `ip:port` of each healthy instance.
    pub backends: Vec<String>,
}

/// The DNS label of an app id: `/web` → `web`, `/shop/api` → `api-shop`.
pub fn dns_label(app_id: &str) -> String {
    app_id
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .collect::<Vec<_>>()
        .join("-")
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, service_port: u16, ips: &[&str]) -> AppRoute {
        AppRoute {
            id: id.into(),
            name: dns_label(id),
            ports: vec![RoutePort {
                service_port,
                protocol: "tcp".into(),
                name: None,
            }],
            backends: ips
                .iter()
                .enumerate()
                .map(|(i, ip)| Backend {
                    task_id: format!("t{i}"),
                    agent_id: format!("a{i}"),
                    ip: (*ip).into(),
                    ports: vec![31000 + i as u16],
                })
                .collect(),
        }
    }

    #[test]
    fn labels_reverse_the_path() {
        assert_eq!(dns_label("/web"), "web");
        assert_eq!(dns_label("/shop/API"), "api-shop");
        assert_eq!(dns_label("/a/b/c"), "c-b-a");
    }

    #[test]
    fn the_version_follows_the_contents() {
        let a = RouteTable::new(vec![app("/web", 10101, &["10.0.0.1"])]);
        let same = RouteTable::new(vec![app("/web", 10101, &["10.0.0.1"])]);
        let moved = RouteTable::new(vec![app("/web", 10101, &["10.0.0.2"])]);
        assert_eq!(a.version, same.version);
        assert_ne!(a.version, moved.version);
        assert_ne!(a.version, RouteTable::new(vec![]).version);
    }

    #[test]
    fn service_ports_lead_to_each_backend_host_port() {
        let t = RouteTable::new(vec![
            app("/web", 10101, &["10.0.0.1", "10.0.0.2"]),
            app("/batch", 0, &["10.0.0.3"]),
        ]);
        assert_eq!(
            t.service_ports(),
            vec![ServicePort {
                port: 10101,
                app: "/web".into(),
                tcp: true,
                backends: vec!["10.0.0.1:31000".into(), "10.0.0.2:31001".into()],
            }]
        );
    }

    #[test]
    fn protocols_are_read_from_the_list() {
        let p = |s: &str| RoutePort {
            service_port: 1,
            protocol: s.into(),
            name: None,
        };
        assert!(p("tcp").is_tcp() && !p("tcp").is_udp());
        assert!(p("udp,tcp").is_tcp() && p("udp,tcp").is_udp());
        assert!(!p("udp").is_tcp());
    }
}
