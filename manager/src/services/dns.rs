//! The manager's DNS for apps, as Mesos-DNS serves Marathon's: names for
//! the healthy instances of every app, answered from the route table
//! ([`super::routes`]), over UDP and TCP (`strata manager --dns-listen`).
//!
//! Under the domain (`strata` by default):
//!
//! * `APP.marathon.strata` — A: the IP of each agent with a healthy
//!   instance (`/shop/api` is `api-shop`, the path reversed);
//! * `_APP._tcp.marathon.strata` (and `_udp`) — SRV: one record per
//!   instance and port, `0 0 HOSTPORT AGENT.agents.strata.`, with the
//!   agents' A records in the additional section; `_NAME._APP._tcp…`
//!   names a port by its `name`;
//! * `AGENT.agents.strata` — A: an agent with a healthy instance;
//! * `leader.strata` — A: the leading manager (standbys know it too).
//!
//! Answers are authoritative, with a short TTL (instances move); a name
//! under the domain that names nothing is NXDOMAIN, a name outside it is
//! REFUSED (this is no recursive resolver), and a standby answers
//! SERVFAIL for everything but `leader`, so a resolver given every
//! manager asks the next one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use strata_proto::routes::{AppRoute, RouteTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::api::Role;

/// The largest UDP answer to a query without EDNS (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// The largest UDP answer given, whatever EDNS offers.
const MAX_UDP: u16 = 1232;

/// How the DNS is served.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Where to listen (UDP and TCP).
    pub listen: SocketAddr,
    /// The domain (`strata`).
    pub domain: String,
    /// Seconds answers may be cached.
    pub ttl: u32,
}

impl DnsConfig {
    /// Listens on `listen` under `strata` with a 5 s TTL.
    pub fn new(listen: SocketAddr) -> Self {
        DnsConfig {
            listen,
            domain: "strata".into(),
            ttl: 5,
        }
    }
}

/// What a query is answered from.
#[derive(Clone, Debug)]
pub struct Zone {
    /// The domain, fully qualified and lower case.
    pub domain: Name,
    /// The TTL of every record.
    pub ttl: u32,
    /// The apps.
    pub table: Arc<RouteTable>,
    /// Whether this manager leads (only a leader knows the apps).
    pub leading: bool,
    /// The leading manager's IP, when known.
    pub leader: Option<Ipv4Addr>,
}

/// Why the DNS could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The domain is not a DNS name.
    #[error("--dns-domain {domain:?} is not a domain name: {reason}")]
    Domain {
        /// The domain.
        domain: String,
        /// Why.
        reason: String,
    },
    /// A socket could not be bound.
    #[error("cannot listen for DNS on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The fully qualified, lower-case name of `domain`.
pub fn domain_name(domain: &str) -> Result<Name, DnsError> {
    let bad = |reason: String| DnsError::Domain {
        domain: domain.to_owned(),
        reason,
    };
    let trimmed = domain.trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(bad("it is empty".into()));
    }
    let mut name = Name::from_ascii(trimmed).map_err(|e| bad(e.to_string()))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// The answer to `request` from `zone`.
pub fn answer(request: &Message, zone: &Zone) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(false);
    reply.add_queries(request.queries().iter().cloned());
    if request.op_code() != OpCode::Query {
        reply.set_response_code(ResponseCode::NotImp);
        return reply;
    }
    let [query] = request.queries() else {
        reply.set_response_code(ResponseCode::FormErr);
        return reply;
    };
    let name = query.name().to_lowercase();
    if !zone.domain.zone_of(&name) {
        reply.set_response_code(ResponseCode::Refused);
        return reply;
    }
    let labels: Vec<String> = name
        .iter()
        .take(name.num_labels() as usize - zone.domain.num_labels() as usize)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let found = lookup(&labels, zone);
    let Some(found) = found else {
        reply.set_response_code(ResponseCode::NXDomain);
        reply.set_authoritative(true);
        return reply;
    };
    let Some(records) = found else {
        // Only a leader knows the apps: a resolver asks another manager.
        reply.set_response_code(ResponseCode::ServFail);
        return reply;
    };
    reply.set_authoritative(true);
    let want = query.query_type();
    for (rtype, rdata) in records.answers {
        if want == rtype || want == RecordType::ANY {
            reply.add_answer(Record::from_rdata(name.clone(), zone.ttl, rdata));
        }
    }
    if want == RecordType::SRV || want == RecordType::ANY {
        for (target, ip) in records.additional {
            reply.add_additional(Record::from_rdata(target, zone.ttl, RData::A(A(ip))));
        }
    }
    reply
}

/// The records of a name that exists: its own, and the A records of the
/// SRV targets.
#[derive(Default)]
struct Records {
    answers: Vec<(RecordType, RData)>,
    additional: Vec<(Name, Ipv4Addr)>,
}

/// The records of the name whose labels under the domain are `labels`:
/// `None` when it names nothing, `Some(None)` when only a leader knows.
fn lookup(labels: &[String], zone: &Zone) -> Option<Option<Records>> {
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    if labels == ["leader"] {
        let mut r = Records::default();
        r.answers
            .extend(zone.leader.map(|ip| (RecordType::A, RData::A(A(ip)))));
        return Some(Some(r));
    }
    if !zone.leading {
        return Some(None);
    }
    let app = |label: &str| zone.table.apps.iter().find(|a| a.name == label);
    let records = match labels.as_slice() {
        [app_name, "marathon"] => {
            let a = app(app_name)?;
            let mut ips: Vec<Ipv4Addr> = a.backends.iter().filter_map(|b| ipv4(&b.ip)).collect();
            ips.sort();
            ips.dedup();
            Records {
                answers: ips
                    .into_iter()
                    .map(|ip| (RecordType::A, RData::A(A(ip))))
                    .collect(),
                additional: Vec::new(),
            }
        }
        [service, proto, "marathon"] => {
            let a = app(service.strip_prefix('_')?)?;
            srv(a, proto, None, zone)?
        }
        [port, service, proto, "marathon"] => {
            let a = app(service.strip_prefix('_')?)?;
            srv(a, proto, Some(port.strip_prefix('_')?), zone)?
        }
        [agent, "agents"] => {
            let ip = zone
                .table
                .apps
                .iter()
                .flat_map(|a| &a.backends)
                .find(|b| b.agent_id.eq_ignore_ascii_case(agent))
                .and_then(|b| ipv4(&b.ip))?;
            Records {
                answers: vec![(RecordType::A, RData::A(A(ip)))],
                additional: Vec::new(),
            }
        }
        _ => return None,
    };
    Some(Some(records))
}

/// The SRV records of an app's ports of protocol `proto` (`_tcp`,
/// `_udp`), or of its port named `port`.
fn srv(a: &AppRoute, proto: &str, port: Option<&str>, zone: &Zone) -> Option<Records> {
    let tcp = match proto {
        "_tcp" => true,
        "_udp" => false,
        _ => return None,
    };
    let indices: Vec<usize> = a
        .ports
        .iter()
        .enumerate()
        .filter(|(_, p)| if tcp { p.is_tcp() } else { p.is_udp() })
        .filter(|(_, p)| match port {
            None => true,
            Some(n) => p
                .name
                .as_deref()
                .is_some_and(|name| name.eq_ignore_ascii_case(n)),
        })
        .map(|(i, _)| i)
        .collect();
    if port.is_some() && indices.is_empty() {
        return None;
    }
    let mut r = Records::default();
    for b in &a.backends {
        let Some(ip) = ipv4(&b.ip) else { continue };
        let Ok(target) = agent_name(&b.agent_id, &zone.domain) else {
            continue;
        };
        for &i in &indices {
            let Some(&host_port) = b.ports.get(i) else {
                continue;
            };
            r.answers.push((
                RecordType::SRV,
                RData::SRV(SRV::new(0, 0, host_port, target.clone())),
            ));
        }
        if !r.additional.iter().any(|(n, _)| *n == target) {
            r.additional.push((target, ip));
        }
    }
    Some(r)
}

/// `AGENT.agents.DOMAIN.`
fn agent_name(agent: &str, domain: &Name) -> Result<Name, hickory_proto::ProtoError> {
    Name::from_ascii(format!("{agent}.agents"))?
        .to_lowercase()
        .append_domain(domain)
}

fn ipv4(s: &str) -> Option<Ipv4Addr> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Some(ip),
        _ => None,
    }
}

/// The wire form of `reply`, cut to `limit` bytes by dropping its records
/// and setting TC (the client asks again over TCP).
fn encode(mut reply: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = reply.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    reply.take_answers();
    reply.take_additionals();
    reply.set_truncated(true);
    reply.to_vec().ok()
}

/// The IP in `host:port`, when it is an IPv4 address.
pub fn host_ipv4(address: &str) -> Option<Ipv4Addr> {
    match address.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) => Some(*a.ip()).filter(|ip| !ip.is_unspecified()),
        _ => None,
    }
}

/// The sockets of a DNS server, bound.
pub struct DnsSockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl DnsSockets {
    /// Binds UDP and TCP on `addr` (an ephemeral port is the same for
    /// both: the UDP port is bound first and TCP asks for it).
    pub async fn bind(addr: SocketAddr) -> Result<Self, DnsError> {
        let err = |source| DnsError::Bind { addr, source };
        let udp = UdpSocket::bind(addr).await.map_err(err)?;
        let bound = udp.local_addr().map_err(err)?;
        let tcp = TcpListener::bind(bound).await.map_err(err)?;
        Ok(DnsSockets { udp, tcp })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// What a running DNS server reads its answers from.
pub struct DnsSource {
    /// The domain.
    pub domain: Name,
    /// The TTL.
    pub ttl: u32,
    /// The route table (none: the manager runs no services scheduler).
    pub routes: Option<watch::Receiver<Arc<RouteTable>>>,
    /// Whether this manager leads, and where the leader is.
    pub role: watch::Receiver<Role>,
    /// This manager's advertised `host:port`.
    pub me: String,
}

impl DnsSource {
    fn zone(&self) -> Zone {
        let (leading, leader) = match &*self.role.borrow() {
            Role::Leading => (true, host_ipv4(&self.me)),
            Role::Standby { leader } => (false, leader.as_deref().and_then(host_ipv4)),
        };
        Zone {
            domain: self.domain.clone(),
            ttl: self.ttl,
            table: self
                .routes
                .as_ref()
                .map(|r| r.borrow().clone())
                .unwrap_or_default(),
            leading,
            leader,
        }
    }
}

/// Serves DNS on `sockets` until the task is dropped.
pub async fn serve(sockets: DnsSockets, source: DnsSource) {
    let source = Arc::new(source);
    if let Ok(addr) = sockets.local_addr() {
        info!(address = %addr, domain = %source.domain, "dns listening (udp and tcp)");
    }
    let tcp_source = source.clone();
    let tcp = sockets.tcp;
    let tcp_task = tokio::spawn(async move {
        loop {
            match tcp.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_tcp(stream, tcp_source.clone()));
                }
                Err(e) => warn!(error = %e, "dns tcp accept failed"),
            }
        }
    });
    let _stop_tcp = AbortOnDrop(tcp_task);
    let udp = sockets.udp;
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match udp.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "dns udp receive failed");
                continue;
            }
        };
        let Ok(request) = Message::from_vec(&buf[..n]) else {
            debug!(peer = %peer, "malformed dns query ignored");
            continue;
        };
        let limit = request
            .extensions()
            .as_ref()
            .map(|e| usize::from(e.max_payload().clamp(CLASSIC_UDP as u16, MAX_UDP)))
            .unwrap_or(CLASSIC_UDP);
        let reply = with_edns(&request, answer(&request, &source.zone()));
        if let Some(bytes) = encode(reply, limit)
            && let Err(e) = udp.send_to(&bytes, peer).await
        {
            debug!(peer = %peer, error = %e, "dns answer not sent");
        }
    }
}

/// Adds an OPT record to the reply of a query that had one.
fn with_edns(request: &Message, mut reply: Message) -> Message {
    if request.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP);
        reply.set_edns(edns);
    }
    reply
}

/// Answers the queries of one TCP connection (each framed by a two-byte
/// length).
async fn serve_tcp(mut stream: TcpStream, source: Arc<DnsSource>) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Ok(request) = Message::from_vec(&buf) else {
            return;
        };
        let reply = with_edns(&request, answer(&request, &source.zone()));
        let Some(bytes) = encode(reply, usize::from(u16::MAX)) else {
            return;
        };
        let Ok(n) = u16::try_from(bytes.len()) else {
            return;
        };
        if stream.write_all(&n.to_be_bytes()).await.is_err()
            || stream.write_all(&bytes).await.is_err()
        {
            return;
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use strata_proto::routes::{Backend, RoutePort, dns_label};

    fn zone(leading: bool) -> Zone {
        let backend = |task: &str, agent: &str, ip: &str, ports: Vec<u16>| Backend {
            task_id: task.into(),
            agent_id: agent.into(),
            ip: ip.into(),
            ports,
        };
        let port = |service_port, protocol: &str, name: Option<&str>| RoutePort {
            service_port,
            protocol: protocol.into(),
            name: name.map(Into::into),
        };
        Zone {
            domain: domain_name("strata").unwrap(),
            ttl: 5,
            table: Arc::new(RouteTable::new(vec![
                AppRoute {
                    id: "/shop/api".into(),
                    name: dns_label("/shop/api"),
                    ports: vec![port(10101, "tcp", Some("http")), port(0, "udp", None)],
                    backends: vec![
                        backend("t1", "agent-m1-1", "10.0.0.1", vec![31000, 31001]),
                        backend("t2", "agent-m1-2", "10.0.0.2", vec![31005, 31006]),
                        backend("t3", "agent-m1-2", "10.0.0.2", vec![31007, 31008]),
                    ],
                },
                AppRoute {
                    id: "/idle".into(),
                    name: "idle".into(),
                    ports: vec![],
                    backends: vec![],
                },
            ])),
            leading,
            leader: Some(Ipv4Addr::new(10, 0, 0, 9)),
        }
    }

    fn ask(name: &str, rtype: RecordType, zone: &Zone) -> Message {
        let mut q = Message::new();
        q.set_id(7)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        let bytes = answer(&q, zone).to_vec().unwrap();
        Message::from_vec(&bytes).unwrap()
    }

    fn rdata(m: &Message) -> Vec<String> {
        let mut v: Vec<String> = m.answers().iter().map(|r| r.data().to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn an_app_resolves_to_its_healthy_instances_agents() {
        let m = ask("api-shop.marathon.strata.", RecordType::A, &zone(true));
        assert_eq!(m.id(), 7);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.authoritative());
        assert_eq!(rdata(&m), vec!["10.0.0.1", "10.0.0.2"]);
        assert!(m.answers().iter().all(|r| r.ttl() == 5));
        // Names are case-insensitive.
        let m = ask("API-Shop.Marathon.STRATA.", RecordType::A, &zone(true));
        assert_eq!(rdata(&m), vec!["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn srv_records_give_each_instance_port_with_its_agent() {
        let m = ask(
            "_api-shop._tcp.marathon.strata.",
            RecordType::SRV,
            &zone(true),
        );
        assert_eq!(
            rdata(&m),
            vec![
                "0 0 31000 agent-m1-1.agents.strata.",
                "0 0 31005 agent-m1-2.agents.strata.",
                "0 0 31007 agent-m1-2.agents.strata.",
            ]
        );
        let mut extra: Vec<String> = m
            .additionals()
            .iter()
            .map(|r| format!("{} {}", r.name(), r.data()))
            .collect();
        extra.sort();
        assert_eq!(
            extra,
            vec![
                "agent-m1-1.agents.strata. 10.0.0.1",
                "agent-m1-2.agents.strata. 10.0.0.2"
            ]
        );
        let named = ask(
            "_http._api-shop._tcp.marathon.strata.",
            RecordType::SRV,
            &zone(true),
        );
        assert_eq!(rdata(&named).len(), 3);
        let udp = ask(
            "_api-shop._udp.marathon.strata.",
            RecordType::SRV,
            &zone(true),
        );
        assert_eq!(rdata(&udp)[0], "0 0 31001 agent-m1-1.agents.strata.");
        let unnamed = ask(
            "_dns._api-shop._tcp.marathon.strata.",
            RecordType::SRV,
            &zone(true),
        );
        assert_eq!(unnamed.response_code(), ResponseCode::NXDomain);
    }

    #[test]
    fn agents_and_the_leader_have_names() {
        let m = ask("agent-m1-2.agents.strata.", RecordType::A, &zone(true));
        assert_eq!(rdata(&m), vec!["10.0.0.2"]);
        let m = ask("leader.strata.", RecordType::A, &zone(true));
        assert_eq!(rdata(&m), vec!["10.0.0.9"]);
    }

    #[test]
    fn unknown_names_other_types_and_other_zones() {
        let m = ask("nope.marathon.strata.", RecordType::A, &zone(true));
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert!(m.answers().is_empty());
        // An app with nothing healthy exists, with no addresses.
        let m = ask("idle.marathon.strata.", RecordType::A, &zone(true));
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
        let m = ask("api-shop.marathon.strata.", RecordType::AAAA, &zone(true));
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
        let m = ask("example.com.", RecordType::A, &zone(true));
        assert_eq!(m.response_code(), ResponseCode::Refused);
    }

    #[test]
    fn a_standby_knows_only_the_leader() {
        let m = ask("api-shop.marathon.strata.", RecordType::A, &zone(false));
        assert_eq!(m.response_code(), ResponseCode::ServFail);
        let m = ask("leader.strata.", RecordType::A, &zone(false));
        assert_eq!(rdata(&m), vec!["10.0.0.9"]);
    }

    #[test]
    fn a_long_udp_answer_is_truncated() {
        let z = zone(true);
        let mut q = Message::new();
        q.add_query(Query::query(
            Name::from_ascii("_api-shop._tcp.marathon.strata.").unwrap(),
            RecordType::SRV,
        ));
        let full = answer(&q, &z);
        let bytes = encode(full, 60).unwrap();
        let cut = Message::from_vec(&bytes).unwrap();
        assert!(cut.truncated());
        assert!(cut.answers().is_empty());
    }

    #[test]
    fn domains_are_checked() {
        assert_eq!(domain_name("Strata.").unwrap().to_string(), "strata.");
        assert!(domain_name("").is_err());
        assert!(domain_name("..").is_err());
    }
}
