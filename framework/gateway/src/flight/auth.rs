//! Who may call, and which session a call belongs to.
//!
//! Flight SQL has no connection to hang a session on: a client proves who
//! it is once (the basic-auth handshake, with the cluster's token as its
//! password, or the token itself as a bearer) and gets back a session
//! token in the `authorization` response header, which it sends on every
//! later call (the ADBC driver does so on its own). [`SessionLayer`] reads
//! that header before any method runs and puts the call's
//! [`FlightSession`] in the request's extensions.
//!
//! With no token configured (the gateway listens on loopback only), any
//! call without a known session token gets a new session, as any
//! PostgreSQL connection is trusted. Sessions idle for an hour, and the
//! least recently used past the gateway's connection limit, are dropped.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use http::HeaderValue;
use tonic::Status;

use strata_proto::same_secret;

use crate::Gateway;
use crate::session::GatewaySession;

/// How long an unused session is kept.
const IDLE: Duration = Duration::from_secs(3600);

/// The session a call runs in (in its request's extensions).
#[derive(Clone)]
pub struct FlightSession(pub Arc<GatewaySession>);

/// The Flight SQL sessions, by the token their clients send.
pub struct Sessions {
    gateway: Arc<Gateway>,
    open: Mutex<HashMap<String, (Arc<GatewaySession>, Instant)>>,
}

/// How a call was let in.
struct Admitted {
    session: Arc<GatewaySession>,
    /// A session token issued by this call (sent back in its response).
    issued: Option<String>,
}

impl Sessions {
    /// The sessions of `gateway`'s Flight SQL endpoint.
    pub fn new(gateway: Arc<Gateway>) -> Sessions {
        Sessions {
            gateway,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The session of a call with this `authorization` header (from
    /// `peer`), or why it is refused.
    fn admit(&self, header: Option<&str>, peer: &str) -> Result<Admitted, Status> {
        let token = self.gateway.config.token.as_deref();
        let (scheme, value) = match header {
            Some(h) => h.split_once(' ').unwrap_or((h, "")),
            None => ("", ""),
        };
        let user = match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                if let Some(session) = self.touch(value) {
                    return Ok(Admitted {
                        session,
                        issued: None,
                    });
                }
                match token {
                    Some(t) if same_secret(value, t) => "strata".to_owned(),
                    Some(_) => {
                        return Err(Status::unauthenticated(
                            "unknown or expired session token: authenticate again (the \
                             cluster's token as the password)",
                        ));
                    }
                    None => "strata".to_owned(),
                }
            }
            "basic" => {
                let (user, password) = basic_credentials(value)
                    .ok_or_else(|| Status::unauthenticated("malformed basic credentials"))?;
                let user = user.as_str();
                if let Some(t) = token
                    && !same_secret(&password, t)
                {
                    return Err(Status::unauthenticated(format!(
                        "password authentication failed for user \"{user}\""
                    )));
                }
                if user.is_empty() { "strata" } else { user }.to_owned()
            }
            "" if token.is_none() => "strata".to_owned(),
            "" => {
                return Err(Status::unauthenticated(
                    "authenticate with the cluster's token as the password (basic) or as a \
                     bearer token",
                ));
            }
            other => {
                return Err(Status::unauthenticated(format!(
                    "unsupported authorization scheme {other:?}: use basic or bearer"
                )));
            }
        };
        let session = GatewaySession::open(&self.gateway, &user, "flight sql", peer)
            .map(Arc::new)
            .map_err(|e| Status::internal(e.to_string()))?;
        let issued = format!("{:032x}", rand::random::<u128>());
        self.keep(issued.clone(), session.clone());
        Ok(Admitted {
            session,
            issued: Some(issued),
        })
    }

    fn touch(&self, token: &str) -> Option<Arc<GatewaySession>> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (session, used) = open.get_mut(token)?;
        *used = Instant::now();
        Some(session.clone())
    }

    fn keep(&self, token: String, session: Arc<GatewaySession>) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        open.retain(|_, (_, used)| now.duration_since(*used) < IDLE);
        while open.len() >= self.gateway.config.max_connections.max(1) {
            let oldest = open
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(t, _)| t.clone());
            match oldest {
                Some(t) => open.remove(&t),
                None => break,
            };
        }
        open.insert(token, (session, now));
    }
}

/// The user and password of a basic `authorization` value, padded or
/// not (Go's Flight client sends none).
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(value.trim().trim_end_matches('='))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    Some((user.to_owned(), password.to_owned()))
}

/// A tower layer admitting every call of the Flight service (see the
/// module's docs).
#[derive(Clone)]
pub struct SessionLayer(pub Arc<Sessions>);

impl<S> tower::Layer<S> for SessionLayer {
    type Service = WithSession<S>;

    fn layer(&self, inner: S) -> WithSession<S> {
        WithSession {
            inner,
            sessions: self.0.clone(),
        }
    }
}

/// The Flight service behind [`SessionLayer`].
#[derive(Clone)]
pub struct WithSession<S> {
    inner: S,
    sessions: Arc<Sessions>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for WithSession<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let peer = req
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .map_or_else(|| "flight".to_owned(), |a| a.to_string());
        let admitted = match self.sessions.admit(header, &peer) {
            Ok(a) => a,
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        };
        req.extensions_mut().insert(FlightSession(admitted.session));
        // The service that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let issued = admitted
            .issued
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok());
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            if let Some(value) = issued {
                response
                    .headers_mut()
                    .insert(http::header::AUTHORIZATION, value);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::basic_credentials;

    #[test]
    fn basic_credentials_padded_or_not() {
        let pair = |u: &str, p: &str| Some((u.to_owned(), p.to_owned()));
        // "ann:t0k", with its padding and without (as Go sends it).
        assert_eq!(basic_credentials("YW5uOnQwaw=="), pair("ann", "t0k"));
        assert_eq!(basic_credentials("YW5uOnQwaw"), pair("ann", "t0k"));
        assert_eq!(basic_credentials("YW5u"), pair("ann", ""));
        assert_eq!(basic_credentials("not base64!"), None);
    }
}
