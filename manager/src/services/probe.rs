//! Probes the runner sends to instances: health checks (HTTP, TCP,
//! COMMAND) and the autoscaler's HTTP metric.
//!
//! Checks run from the manager's process, against the instance's agent
//! address and host port. A `COMMAND` check runs `sh -c` here with the
//! instance's `HOST`, `PORT0…` and `PORTS` in its environment (Marathon
//! runs it on the agent; on a one-host cluster the two are the same).

use std::time::Duration;

use super::app::{CheckKind, HealthCheck};

/// Where an instance answers.
#[derive(Clone, Debug)]
pub struct Target {
    /// Host to connect to.
    pub host: String,
    /// The instance's host ports.
    pub ports: Vec<u16>,
}

/// Why a probe failed: the cause a health verdict or a log line shows.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The check names a port index the instance does not have.
    #[error("the instance has no such port")]
    NoSuchPort,
    /// A metric is read from the first host port, and there is none.
    #[error("the instance has no host port")]
    NoHostPort,
    /// The HTTP request failed.
    #[error(transparent)]
    Http(#[from] strata_sdk::http::HttpError),
    /// The answer's status says unhealthy (or, for a metric, not 200).
    #[error("GET {path} answered {code}")]
    Status {
        /// The path asked.
        path: String,
        /// The status.
        code: u16,
    },
    /// A TCP connection was refused or failed.
    #[error("connect {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A TCP connection did not complete in time.
    #[error("connect {addr}: timed out after {after:?}")]
    ConnectTimeout {
        /// The address.
        addr: String,
        /// The deadline.
        after: Duration,
    },
    /// A command check exited unsuccessfully.
    #[error("command exited with {0}")]
    CommandFailed(std::process::ExitStatus),
    /// A command check could not be run.
    #[error("cannot run the check: {0}")]
    CommandNotRun(#[source] std::io::Error),
    /// A command check did not finish in time.
    #[error("command timed out after {0:?}")]
    CommandTimeout(Duration),
    /// The check's protocol is not one Strata runs.
    #[error("unknown protocol {0}")]
    UnknownProtocol(String),
    /// A metric's body is not a finite number.
    #[error("GET {path} answered {text:?}, not a number")]
    NotANumber {
        /// The path asked.
        path: String,
        /// What it answered, trimmed.
        text: String,
    },
}

/// Runs one health check; `Ok` with a short note when healthy, the cause
/// otherwise.
pub async fn check(hc: &HealthCheck, target: &Target) -> Result<String, ProbeError> {
    let timeout = Duration::from_secs_f64(hc.timeout_seconds.max(0.001));
    let port = hc.port.or_else(|| target.ports.get(hc.port_index).copied());
    match hc.kind() {
        Some(CheckKind::Http) => {
            let port = port.ok_or(ProbeError::NoSuchPort)?;
            let addr = format!("{}:{port}", target.host);
            let path = hc.path.clone().unwrap_or_else(|| "/".into());
            let (code, _, _) =
                strata_sdk::http::request("GET", &addr, &path, None, None, timeout).await?;
            if (200..400).contains(&code) {
                Ok(format!("HTTP {code}"))
            } else {
                Err(ProbeError::Status { path, code })
            }
        }
        Some(CheckKind::Tcp) => {
            let port = port.ok_or(ProbeError::NoSuchPort)?;
            let addr = format!("{}:{port}", target.host);
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Ok("connected".into()),
                Ok(Err(source)) => Err(ProbeError::Connect { addr, source }),
                Err(_) => Err(ProbeError::ConnectTimeout {
                    addr,
                    after: timeout,
                }),
            }
        }
        Some(CheckKind::Command) => {
            let cmd = hc
                .command
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_default();
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(&cmd).kill_on_drop(true);
            c.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            c.env("HOST", &target.host);
            for (i, p) in target.ports.iter().enumerate() {
                c.env(format!("PORT{i}"), p.to_string());
            }
            let ports: Vec<String> = target.ports.iter().map(u16::to_string).collect();
            c.env("PORTS", ports.join(","));
            match tokio::time::timeout(timeout, c.status()).await {
                Ok(Ok(s)) if s.success() => Ok("exit 0".into()),
                Ok(Ok(s)) => Err(ProbeError::CommandFailed(s)),
                Ok(Err(e)) => Err(ProbeError::CommandNotRun(e)),
                Err(_) => Err(ProbeError::CommandTimeout(timeout)),
            }
        }
        None => Err(ProbeError::UnknownProtocol(hc.protocol.clone())),
    }
}

/// Reads a metric an instance serves: the body of `GET path` on its first
/// host port, a number.
pub async fn metric(path: &str, target: &Target, timeout: Duration) -> Result<f64, ProbeError> {
    let port = target.ports.first().ok_or(ProbeError::NoHostPort)?;
    let addr = format!("{}:{port}", target.host);
    let (code, _, body) =
        strata_sdk::http::request("GET", &addr, path, None, None, timeout).await?;
    if code != 200 {
        return Err(ProbeError::Status {
            path: path.to_owned(),
            code,
        });
    }
    let text = String::from_utf8_lossy(&body);
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| ProbeError::NotANumber {
            path: path.to_owned(),
            text: text.trim().to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn hc(json: &str) -> HealthCheck {
        serde_json::from_str(json).unwrap()
    }

    async fn serve(status: &'static str, body: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                // The request is read (and ignored); a closed one gets no reply.
                let Ok(n) = s.read(&mut buf).await else {
                    continue;
                };
                if n == 0 {
                    continue;
                }
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(reply.as_bytes()).await.ok();
            }
        });
        port
    }

    #[tokio::test]
    async fn http_tcp_and_command_checks_pass_and_fail() {
        let ok = serve("200 OK", "fine").await;
        let bad = serve("503 Service Unavailable", "").await;
        let t = |p: u16| Target {
            host: "127.0.0.1".into(),
            ports: vec![p],
        };
        let http = hc(r#"{"protocol":"HTTP","path":"/health","timeoutSeconds":2}"#);
        assert!(check(&http, &t(ok)).await.is_ok());
        let e = check(&http, &t(bad)).await.unwrap_err();
        assert!(matches!(e, ProbeError::Status { code: 503, .. }), "{e}");
        let tcp = hc(r#"{"protocol":"TCP","timeoutSeconds":2}"#);
        assert!(check(&tcp, &t(ok)).await.is_ok());
        // A port nobody listens on: bind one, then drop it.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(check(&tcp, &t(closed)).await.is_err());
        let cmd = hc(r#"{"protocol":"COMMAND","command":{"value":"test \"$PORT0\" = 7"}}"#);
        assert!(check(&cmd, &t(7)).await.is_ok());
        assert!(check(&cmd, &t(8)).await.is_err());
    }

    #[tokio::test]
    async fn a_metric_is_a_number_or_a_clear_error() {
        let n = serve("200 OK", " 12.5\n").await;
        let t = |p: u16| Target {
            host: "127.0.0.1".into(),
            ports: vec![p],
        };
        let timeout = Duration::from_secs(2);
        assert_eq!(metric("/load", &t(n), timeout).await.unwrap(), 12.5);
        let words = serve("200 OK", "busy").await;
        let e = metric("/load", &t(words), timeout).await.unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");
    }
}
