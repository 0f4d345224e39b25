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
    fn an_unresolvable_peer_is_an_error_naming_it() {
        let e = resolve("no-such-host.invalid:1").unwrap_err();
        assert!(!e.to_string().is_empty());
        let e = resolve("missing-port").unwrap_err();
        assert!(!e.to_string().is_empty());
    }
}
