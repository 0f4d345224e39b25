//! `web`: a small HTTP service, the packaged example of a long-running app.
//!
//! `strata web --port $PORT0` serves:
//!
//! * `GET /` — `hello from <task id>`;
//! * `GET /health` — `200 ok` while healthy, `500` after `POST /fail`;
//! * `GET /load` — a number for the autoscaler (`POST /load` with a number
//!   in the body sets it; it starts at `--load`).
//!
//! It uses plain tokio (HTTP/1.1, one request per connection) so the same
//! code runs as a process task or inside a container image built from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The service's state.
#[derive(Debug, Default)]
pub struct Web {
    failing: AtomicBool,
    /// The load, as `f64` bits.
    load: AtomicU64,
    name: String,
}

impl Web {
    /// A healthy service named `name`, reporting `load`.
    pub fn new(name: impl Into<String>, load: f64) -> Arc<Web> {
        Arc::new(Web {
            failing: AtomicBool::new(false),
            load: AtomicU64::new(load.to_bits()),
            name: name.into(),
        })
    }

    /// Answers one request: (status line, body).
    pub fn answer(&self, method: &str, path: &str, body: &str) -> (&'static str, String) {
        match (method, path) {
            ("GET", "/") => ("200 OK", format!("hello from {}\n", self.name)),
            ("GET", "/health") if self.failing.load(Ordering::Relaxed) => {
                ("500 Internal Server Error", "failing\n".into())
            }
            ("GET", "/health") => ("200 OK", "ok\n".into()),
            ("POST", "/fail") => {
                self.failing.store(true, Ordering::Relaxed);
                ("200 OK", "now failing\n".into())
            }
            ("GET", "/load") => (
                "200 OK",
                format!("{}\n", f64::from_bits(self.load.load(Ordering::Relaxed))),
            ),
            ("POST", "/load") => match body.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => {
                    self.load.store(v.to_bits(), Ordering::Relaxed);
                    ("200 OK", format!("{v}\n"))
                }
                _ => ("400 Bad Request", "the body must be a number\n".into()),
            },
            _ => ("404 Not Found", "not found\n".into()),
        }
    }
}

/// Binds `addr` and serves until the process is killed.
pub async fn serve(addr: SocketAddr, web: Arc<Web>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("web: listening on {}", listener.local_addr()?);
    serve_on(listener, web).await
}

/// Serves on a bound listener.
pub async fn serve_on(listener: TcpListener, web: Arc<Web>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let web = web.clone();
        tokio::spawn(async move {
            handle(stream, &web).await.ok();
        });
    }
}

async fn handle(mut s: TcpStream, web: &Web) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // Read the head, then the body Content-Length names.
    let (head_end, length) = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length.min(1 << 20));
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    };
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    let (status, text) = web.answer(method, path, &body);
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    s.write_all(reply.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_fails_on_demand_and_load_is_settable() {
        let w = Web::new("t1", 2.0);
        assert_eq!(w.answer("GET", "/health", "").0, "200 OK");
        assert_eq!(w.answer("GET", "/load", "").1, "2\n");
        assert_eq!(w.answer("POST", "/load", "7.5").0, "200 OK");
        assert_eq!(w.answer("GET", "/load", "").1, "7.5\n");
        assert_eq!(w.answer("POST", "/load", "x").0, "400 Bad Request");
        w.answer("POST", "/fail", "");
        assert_eq!(
            w.answer("GET", "/health", "").0,
            "500 Internal Server Error"
        );
        assert_eq!(w.answer("GET", "/", "").1, "hello from t1\n");
    }

    #[tokio::test]
    async fn it_serves_over_tcp() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve_on(l, Web::new("t2", 0.0)));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /load HTTP/1.1\r\nContent-Length: 3\r\n\r\n4.5")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.ends_with("4.5\n"), "{out}");
    }
}
