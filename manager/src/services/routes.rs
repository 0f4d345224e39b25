//! The route table of the services scheduler's state: each app's ports and
//! its healthy instances, for the manager's DNS and the agents' service
//! port forwarding (see [`strata_proto::routes`]).

use strata_proto::routes::{AppRoute, Backend, RouteTable, dns_label};

use super::core::Services;

/// The table of every app not being deleted.
pub fn table(services: &Services) -> RouteTable {
    let apps = services
        .apps()
        .filter(|(_, a)| !a.deleting)
        .map(|(id, a)| AppRoute {
            id: id.to_string(),
            name: dns_label(id.as_str()),
            ports: a.def.route_ports(),
            backends: a
                .live()
                .filter(|i| a.is_healthy(i))
                .map(|i| Backend {
                    task_id: i.task_id.to_string(),
                    agent_id: i.agent_id.to_string(),
                    ip: if i.ip.is_empty() {
                        i.host.clone()
                    } else {
                        i.ip.clone()
                    },
                    ports: i.ports.clone(),
                })
                .collect(),
        })
        .collect();
    RouteTable::new(apps)
}
