//! Addresses across hosts: which of this host's addresses a peer reaches it
//! at.
//!
//! A process that serves others (a driver's executor link, an executor's
//! shuffle service, an agent's sandbox API) must bind and advertise an
//! address its peers can route to. On one machine that is loopback; across
//! hosts it is the address of the interface that carries traffic to the
//! peer it already knows (the manager, the driver). [`local_ip_toward`]
//! asks the kernel's routing table for it, so a process binds loopback when
//! its cluster is on loopback and a routable address when it is not,
//! without listening on every interface.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

/// This host's address on the route to `peer` (`host:port`, a name or an
/// IP): the source address the kernel would use to send to it. Sends
/// nothing (a UDP socket is connected, which only consults the routing
/// table). Loopback for a peer on loopback.
pub fn local_ip_toward(peer: &str) -> io::Result<IpAddr> {
    let target = resolve(peer)?;
    let unspecified: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(unspecified)?;
    socket.connect(target)?;
    Ok(socket.local_addr()?.ip())
}

/// The first address `peer` (`host:port`, or `http://host:port`) resolves
/// to.
pub fn resolve(peer: &str) -> io::Result<SocketAddr> {
    let bare = peer
        .strip_prefix("http://")
        .or_else(|| peer.strip_prefix("https://"))
        .unwrap_or(peer)
        .trim_end_matches('/');
    bare.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{peer} resolves to no address"),
        )
    })
}

/// The managers a `H1:PORT,H2:PORT,…` list names, in order (one address is
/// a list of one).
pub fn managers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The first manager of a list: the one whose network stands for all.
pub fn first_manager(list: &str) -> &str {
    list.split(',').next().unwrap_or_default().trim()
}

/// A search for the leading manager of a list: each address once, in
/// order, with the leader a standby names tried next, and a few such
/// hints at most (so two confused standbys cannot send a client round in
/// circles).
#[derive(Debug)]
pub struct LeaderSearch {
    queue: std::collections::VecDeque<String>,
    budget: usize,
}

impl LeaderSearch {
    /// Starts a search over `list` (`H1:PORT,H2:PORT,…`).
    pub fn new(list: &str) -> LeaderSearch {
        let mut queue: std::collections::VecDeque<String> = managers(list).into();
        if queue.is_empty() {
            queue.push_back(list.to_owned());
        }
        let budget = queue.len() + 3;
        LeaderSearch { queue, budget }
    }

    /// The next address to try, if the search is not over.
    pub fn next_address(&mut self) -> Option<String> {
        if self.budget == 0 {
            return None;
        }
        self.budget -= 1;
        self.queue.pop_front()
    }

    /// `from` named `leader`: try it next.
    pub fn follow(&mut self, from: &str, leader: &str) {
        if leader != from {
            self.queue.push_front(leader.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_peer_is_reached_from_loopback() {
        let ip = local_ip_toward("127.0.0.1:5050").unwrap();
        assert!(ip.is_loopback(), "{ip}");
        let ip = local_ip_toward("http://localhost:5050/").unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }

    #[test]
    fn manager_lists_and_the_leader_search() {
        assert_eq!(managers("a:1, b:2,,c:3"), vec!["a:1", "b:2", "c:3"]);
        assert_eq!(first_manager(" a:1 ,b:2"), "a:1");
        let mut s = LeaderSearch::new("a:1,b:2");
        assert_eq!(s.next_address().as_deref(), Some("a:1"));
        s.follow("a:1", "c:3");
        assert_eq!(s.next_address().as_deref(), Some("c:3"));
        s.follow("c:3", "c:3");
        assert_eq!(s.next_address().as_deref(), Some("b:2"));
        assert_eq!(s.next_address(), None);
        // Hints are bounded: a standby pointing at another forever ends.
        let mut s = LeaderSearch::new("a:1");
        let mut tries = 0;
        while let Some(at) = s.next_address() {
            tries += 1;
            s.follow(&at, if at == "a:1" { "b:2" } else { "a:1" });
        }
        assert_eq!(tries, 4);
    }

    #[test]
    fn an_unresolvable_peer_is_an_error_naming_it() {
        let e = resolve("no-such-host.invalid:1").unwrap_err();
        assert!(!e.to_string().is_empty());
        let e = resolve("missing-port").unwrap_err();
        assert!(!e.to_string().is_empty());
    }
}
