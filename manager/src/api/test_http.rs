//! Tests' raw HTTP/1.1 against an in-process manager.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A manager on an ephemeral loopback port, with `token`.
pub(crate) async fn start(
    dir: &std::path::Path,
    token: Option<&str>,
) -> crate::server::ManagerHandle {
    let mut cfg = crate::server::ManagerConfig::new(dir.to_path_buf());
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.token = token.map(str::to_owned);
    crate::server::spawn(cfg).await.expect("manager starts")
}

/// One request: status, head (lower-cased) and body.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_owned())
}
