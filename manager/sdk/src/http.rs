//! A minimal HTTP/1.1 client for the manager's and agents' HTTP APIs
//! (operator state, sandbox files): one request per connection, a bearer
//! token and a deadline. Clients and drivers need nothing more, and it
//! keeps the SDK's dependencies to the workspace's own.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP failure.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Could not connect or talk.
    #[error("cannot reach {address}: {source}")]
    Io {
        /// The address.
        address: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{address} did not answer within {after:?}")]
    Timeout {
        /// The address.
        address: String,
        /// The deadline.
        after: Duration,
    },
    /// The answer was not HTTP.
    #[error("malformed answer from {address}")]
    Malformed {
        /// The address.
        address: String,
    },
    /// A status other than 2xx.
    #[error("{address}{path} answered {status}: {body}")]
    Status {
        /// The address.
        address: String,
        /// The path.
        path: String,
        /// Status code.
        status: u16,
        /// Body (truncated).
        body: String,
    },
}

/// A response: status, lower-cased headers, body.
pub type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// Sends one request and returns the status, headers and body.
pub async fn request(
    method: &str,
    address: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Reply, HttpError> {
    let fut = async {
        let io = |source| HttpError::Io {
            address: address.to_owned(),
            source,
        };
        let mut s = TcpStream::connect(address).await.map_err(io)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nUser-Agent: strata\r\n"
        );
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.map_err(io)?;
        if let Some(b) = body {
            s.write_all(b).await.map_err(io)?;
        }
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(io)?;
        parse(address, &buf)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| HttpError::Timeout {
            address: address.to_owned(),
            after: timeout,
        })?
}

fn parse(address: &str, buf: &[u8]) -> Result<Reply, HttpError> {
    let bad = || HttpError::Malformed {
        address: address.to_owned(),
    };
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw).ok_or_else(bad)?
    } else {
        raw.to_vec()
    };
    Ok((status, headers, body))
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..nl]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// GET that must answer 2xx; returns the body.
pub async fn get(
    address: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Vec<u8>, HttpError> {
    let (status, _, body) = request("GET", address, path, token, None, timeout).await?;
    if !(200..300).contains(&status) {
        return Err(HttpError::Status {
            address: address.to_owned(),
            path: path.to_owned(),
            status,
            body: String::from_utf8_lossy(&body).chars().take(500).collect(),
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let (s, h, b) = parse("x", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"hi"[..]));
        assert_eq!(h[0].0, "content-length");
        let (_, _, b) = parse("x", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\n!!!\r\n0\r\n\r\n").unwrap();
        assert_eq!(b, b"hi!!!");
        assert!(parse("x", b"garbage").is_err());
    }
}
