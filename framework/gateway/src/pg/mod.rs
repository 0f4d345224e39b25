//! The PostgreSQL wire protocol (through `pgwire`): the listener, each
//! connection's handlers, and cancel requests.
//!
//! Every connection is its own task with its own session. A malformed,
//! truncated or oversized message ends that connection only (pgwire's codec
//! refuses it); the listener and every other session carry on.

pub mod auth;
pub mod handler;

use std::sync::Arc;

use async_trait::async_trait;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use pgwire::messages::cancel::CancelRequest;
use pgwire::tokio::process_socket;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Gateway;
use auth::Startup;
use handler::{ConnState, Queries};

/// One connection's handlers.
struct Connection {
    startup: Arc<Startup>,
    queries: Arc<Queries>,
    cancel: Arc<Cancels>,
}

/// Cancel requests: pgwire's (which stops a statement its handler still
/// waits on), and the registry's for the session's running queries (a
/// query whose first rows are out streams after the handler returned).
struct Cancels {
    manager: Arc<ConnectionManager>,
    gateway: Arc<Gateway>,
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        if self.manager.cancel(request.pid, &request.secret_key).await {
            let n = self.gateway.registry.cancel_pid(request.pid);
            tracing::info!(pid = request.pid, queries = n, "cancel request");
        }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        self.queries.clone()
    }
}

/// Serves the PostgreSQL protocol on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        socket.set_nodelay(true).ok();
        let permit = gateway.connections.clone().try_acquire_owned().ok();
        if permit.is_none() {
            tracing::warn!(%peer, "connection refused: too many clients");
        }
        let connection = Connection {
            startup: Arc::new(Startup::new(
                &gateway.config.database,
                gateway.secret.clone(),
                gateway.cancels.clone(),
                gateway.pids.clone(),
                permit.is_some(),
            )),
            queries: Arc::new(Queries::new(Arc::new(ConnState::new(gateway.clone())))),
            cancel: Arc::new(Cancels {
                manager: gateway.cancels.clone(),
                gateway: gateway.clone(),
            }),
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = process_socket(socket, None, connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
