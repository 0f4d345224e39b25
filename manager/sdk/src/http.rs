//! A small HTTP client for the manager's and agents' HTTP APIs (operator
//! state, sandbox files, Marathon's API) and the services' probes: one
//! request, a bearer token and a deadline, over hyper's client (HTTP/1.1,
//! chunked bodies and all), with no connection kept between requests.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// An HTTP failure.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Could not connect, send the request or read the answer's head.
    #[error("cannot reach {address}: {}", causes(.source))]
    Io {
        /// The address.
        address: String,
        /// The error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The answer's body broke off.
    #[error("cannot read the answer of {address}: {}", causes(.source))]
    Body {
        /// The address.
        address: String,
        /// The error.
        #[source]
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("{address} did not answer within {after:?}")]
    Timeout {
        /// The address.
        address: String,
        /// The deadline.
        after: Duration,
    },
    /// The request could not be made (a method or path that is not HTTP).
    #[error("malformed request to {address}: {source}")]
    Malformed {
        /// The address.
        address: String,
        /// The error.
        #[source]
        source: http::Error,
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

/// An error and its causes, innermost last (hyper's own messages name
/// only the stage that failed: "client error (Connect)").
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
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
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"))
        .header(http::header::USER_AGENT, "strata");
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
        .map_err(|source| HttpError::Malformed {
            address: address.to_owned(),
            source,
        })?;
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let exchange = async {
        let response = client.request(req).await.map_err(|source| HttpError::Io {
            address: address.to_owned(),
            source,
        })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|source| HttpError::Body {
                address: address.to_owned(),
                source,
            })?
            .to_bytes();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok((parts.status.as_u16(), headers, body.to_vec()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            address: address.to_owned(),
            after: timeout,
        })?
}

/// Sends a request to the managers `address` names (`H1:PORT,H2:PORT,…`)
/// until one that leads answers: they are asked in turn (one that cannot
/// be reached, or that answers 503 — a standby that knows no leader yet —
/// passes to the next), and a standby's redirect to the leader (`307` with
/// `strata-leader`) is followed. Returns the address that answered and its
/// reply, whatever its status; the last failure when none answered.
pub async fn send(
    method: &str,
    address: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(String, Reply), HttpError> {
    let mut search = strata_proto::net::LeaderSearch::new(address);
    let mut last = None;
    while let Some(at) = search.next_address() {
        let reply = match request(method, &at, path, token, body, timeout).await {
            Ok(reply) => reply,
            Err(e) => {
                last = Some(Err(e));
                continue;
            }
        };
        let leader = reply
            .1
            .iter()
            .find(|(k, _)| k == strata_proto::LEADER_HEADER)
            .map(|(_, v)| v.clone());
        match (reply.0, leader) {
            (307, Some(leader)) if leader != at => search.follow(&at, &leader),
            (503, _) => {}
            _ => return Ok((at, reply)),
        }
        last = Some(Ok((at, reply)));
    }
    last.unwrap_or_else(|| {
        Err(HttpError::Timeout {
            address: address.to_owned(),
            after: Duration::ZERO,
        })
    })
}

/// GET that must answer 2xx; returns the body. `address` may name several
/// managers, as with [`send`].
pub async fn get(
    address: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Vec<u8>, HttpError> {
    let (at, (status, _, body)) = send("GET", address, path, token, None, timeout).await?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    Err(HttpError::Status {
        address: at,
        path: path.to_owned(),
        status,
        body: String::from_utf8_lossy(&body).chars().take(500).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot server that answers `reply` to the first request.
    async fn serve_once(reply: &'static [u8]) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(reply).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn reads_plain_and_chunked_bodies_and_statuses() {
        let addr = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").await;
        let (s, h, b) = request("GET", &addr, "/", None, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"hi"[..]));
        assert!(h.iter().any(|(k, v)| k == "content-length" && v == "2"));
        let addr = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\n!!!\r\n0\r\n\r\n",
        )
        .await;
        let b = get(&addr, "/", Some("t"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(b, b"hi!!!");
        let addr = serve_once(b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope").await;
        let e = get(&addr, "/x", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Status { status: 404, .. }), "{e}");
        let addr = serve_once(b"garbage\r\n\r\n").await;
        let e = get(&addr, "/", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Io { .. }), "{e}");
        // Nobody listens: the message names the cause.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let e = get(&closed, "/", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
    }
}
