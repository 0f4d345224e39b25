//! Service ports, as marathon-lb serves them: every agent listens on each
//! app's service ports (Marathon's `servicePort`) and forwards each TCP
//! connection to one of the app's healthy instances, wherever it runs, so
//! a client can use any agent's address and a fixed port.
//!
//! The agent follows the manager's route table (`GET /api/v1/routes`, a
//! long poll that answers when the table changes; the leader is found in
//! the manager list) and reconciles its listeners to it. Connections go to
//! the instances in turn; one that cannot be reached within
//! [`CONNECT_TIMEOUT`] passes the connection to the next. Only TCP is
//! forwarded.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use strata_proto::routes::{RouteTable, ServicePort};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How long an instance may take to accept a forwarded connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the manager is asked to hold a route poll open.
const POLL_WAIT: Duration = Duration::from_secs(25);

/// Where the route table comes from and where service ports are bound.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// The managers (`H1:PORT,H2:PORT`).
    pub managers: String,
    /// The cluster's token.
    pub token: Option<String>,
    /// The address service ports are bound on (the agent's listen IP).
    pub bind: IpAddr,
    /// The pause after a failed poll.
    pub retry: Duration,
}

/// Follows the route table and forwards service ports until `shutdown`.
pub async fn run(settings: ProxySettings, mut shutdown: watch::Receiver<bool>) {
    let mut forwarder = Forwarder::new(settings.bind);
    let mut version: Option<String> = None;
    let mut failing = false;
    loop {
        let poll = fetch(&settings, version.as_deref());
        let result = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            r = poll => r,
        };
        match result {
            Ok(table) => {
                if failing {
                    info!("route table reached again");
                    failing = false;
                }
                if version.as_deref() != Some(table.version.as_str()) {
                    forwarder.apply(&table.service_ports()).await;
                    version = Some(table.version);
                }
            }
            Err(e) => {
                if !failing {
                    // Once per outage: a manager without the services
                    // scheduler answers this on every poll.
                    debug!(error = %e, "route table unavailable; service ports keep their last routes");
                    failing = true;
                }
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(settings.retry) => {}
                }
            }
        }
    }
}

/// One long poll of the route table.
async fn fetch(
    settings: &ProxySettings,
    after: Option<&str>,
) -> Result<RouteTable, strata_sdk::http::HttpError> {
    let path = match after {
        Some(v) => format!("/api/v1/routes?after={v}&wait={}", POLL_WAIT.as_secs_f64()),
        None => "/api/v1/routes".to_owned(),
    };
    let body = strata_sdk::http::get(
        &settings.managers,
        &path,
        settings.token.as_deref(),
        POLL_WAIT + Duration::from_secs(10),
    )
    .await?;
    serde_json::from_slice(&body).map_err(|e| strata_sdk::http::HttpError::Status {
        address: settings.managers.clone(),
        path,
        status: 200,
        body: format!("not a route table: {e}"),
    })
}

/// The listeners of the service ports, reconciled to the route table.
pub struct Forwarder {
    bind: IpAddr,
    ports: BTreeMap<u16, Listener>,
}

/// One service port being forwarded.
struct Listener {
    app: String,
    backends: watch::Sender<Arc<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Forwarder {
    /// No ports yet; they are bound on `bind`.
    pub fn new(bind: IpAddr) -> Self {
        Forwarder {
            bind,
            ports: BTreeMap::new(),
        }
    }

    /// The service ports being forwarded.
    pub fn ports(&self) -> Vec<u16> {
        self.ports.keys().copied().collect()
    }

    /// Listens on the TCP ports of `wanted` and no others, each leading to
    /// its backends; a port that cannot be bound is reported and tried
    /// again at the next change.
    pub async fn apply(&mut self, wanted: &[ServicePort]) {
        let wanted: BTreeMap<u16, &ServicePort> = wanted
            .iter()
            .filter(|p| p.tcp)
            .map(|p| (p.port, p))
            .collect();
        let gone: Vec<u16> = self
            .ports
            .iter()
            .filter(|(port, l)| wanted.get(port).is_none_or(|w| w.app != l.app))
            .map(|(port, _)| *port)
            .collect();
        for port in gone {
            if let Some(mut l) = self.ports.remove(&port) {
                // Closed once this returns: the port is free for another.
                l.task.abort();
                (&mut l.task).await.ok();
                info!(port, app = %l.app, "service port closed");
            }
        }
        for (port, w) in wanted {
            let backends = Arc::new(w.backends.clone());
            if let Some(l) = self.ports.get(&port) {
                l.backends.send_if_modified(|b| {
                    let changed = **b != *backends;
                    *b = backends.clone();
                    changed
                });
                continue;
            }
            let addr = SocketAddr::new(self.bind, port);
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    warn!(port, app = %w.app, error = %e, "cannot listen on a service port");
                    continue;
                }
            };
            info!(port, app = %w.app, backends = backends.len(), "service port open");
            let (tx, rx) = watch::channel(backends);
            self.ports.insert(
                port,
                Listener {
                    app: w.app.clone(),
                    backends: tx,
                    task: tokio::spawn(accept(listener, rx)),
                },
            );
        }
    }
}

/// Accepts connections and forwards each to the backends, in turn.
async fn accept(listener: TcpListener, backends: watch::Receiver<Arc<Vec<String>>>) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "service port accept failed");
                continue;
            }
        };
        let list = backends.borrow().clone();
        let start = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if !forward(client, &list, start).await {
                debug!(peer = %peer, "no healthy instance to forward to; connection closed");
            }
        });
    }
}

/// Forwards `client` to the first backend, from `start` on, that accepts
/// it; false if none did.
async fn forward(mut client: TcpStream, backends: &[String], start: usize) -> bool {
    client.set_nodelay(true).ok();
    for k in 0..backends.len() {
        let to = &backends[(start + k) % backends.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to.as_str())).await {
            Ok(Ok(mut upstream)) => {
                upstream.set_nodelay(true).ok();
                tokio::io::copy_bidirectional(&mut client, &mut upstream)
                    .await
                    .ok();
                return true;
            }
            Ok(Err(e)) => {
                debug!(backend = %to, error = %e, "instance refused a forwarded connection")
            }
            Err(_) => {
                debug!(backend = %to, "instance did not accept a forwarded connection in time")
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend that answers every connection with `name`.
    async fn backend(name: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                s.write_all(name.as_bytes()).await.unwrap();
            }
        });
        addr
    }

    /// A port free now (bound and released).
    async fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    async fn read_from(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    fn route(port: u16, backends: Vec<String>) -> ServicePort {
        ServicePort {
            port,
            app: "/web".into(),
            tcp: true,
            backends,
        }
    }

    #[tokio::test]
    async fn connections_go_to_each_backend_in_turn_and_follow_changes() {
        let (a, b) = (backend("a").await, backend("b").await);
        let port = free_port().await;
        let mut f = Forwarder::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
        f.apply(&[route(port, vec![a.clone(), b.clone()])]).await;
        assert_eq!(f.ports(), vec![port]);
        let mut seen = vec![read_from(port).await, read_from(port).await];
        seen.sort();
        assert_eq!(seen, vec!["a", "b"]);
        // One backend gone: every connection goes to the other.
        f.apply(&[route(port, vec![b.clone()])]).await;
        assert_eq!(read_from(port).await, "b");
        assert_eq!(read_from(port).await, "b");
        // The app gone: the port is closed.
        f.apply(&[]).await;
        assert!(f.ports().is_empty());
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    }

    #[tokio::test]
    async fn an_unreachable_backend_passes_the_connection_on() {
        let dead = format!("127.0.0.1:{}", free_port().await);
        let alive = backend("alive").await;
        let port = free_port().await;
        let mut f = Forwarder::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
        f.apply(&[route(port, vec![dead, alive])]).await;
        for _ in 0..3 {
            assert_eq!(read_from(port).await, "alive");
        }
    }

    #[tokio::test]
    async fn no_backend_closes_the_connection_and_udp_is_not_bound() {
        let port = free_port().await;
        let mut f = Forwarder::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut udp = route(free_port().await, vec![]);
        udp.tcp = false;
        f.apply(&[route(port, vec![]), udp]).await;
        assert_eq!(f.ports(), vec![port]);
        assert_eq!(read_from(port).await, "");
    }

    #[tokio::test]
    async fn a_port_in_use_is_reported_and_tried_again() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let a = backend("a").await;
        let mut f = Forwarder::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
        f.apply(&[route(port, vec![a.clone()])]).await;
        assert!(f.ports().is_empty());
        drop(taken);
        f.apply(&[route(port, vec![a])]).await;
        assert_eq!(f.ports(), vec![port]);
        assert_eq!(read_from(port).await, "a");
    }
}
