//! Arrow Flight SQL: the gateway's door for Arrow-native clients (the ADBC
//! Flight SQL driver, JDBC's Flight SQL driver), over the same sessions,
//! catalog and executors as the PostgreSQL protocol.
//!
//! ```text
//!  client ──gRPC──▶ auth::SessionLayer (authorization header ─▶ session)
//!                     ▼
//!                   service::FlightSql (statements, prepared statements,
//!                     │                 updates, ingest, cancel)
//!                     ├── metadata (catalogs, schemas, tables, SqlInfo)
//!                     └── ingest (bulk ingest as CREATE TABLE AS / INSERT)
//! ```

pub mod auth;
pub mod ingest;
pub mod metadata;
pub mod service;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use futures::TryStreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::Gateway;
use auth::{SessionLayer, Sessions};
use service::FlightSql;

/// The largest message a client may send or be sent (a batch of results,
/// a batch to ingest).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Serves Flight SQL on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let sessions = Arc::new(Sessions::new(gateway));
    let service = FlightServiceServer::new(FlightSql::new())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Small responses go out at once (no Nagle delay on the round trip).
    let incoming = TcpListenerStream::new(listener).map_ok(|s| {
        s.set_nodelay(true).ok();
        s
    });
    let served = tonic::transport::Server::builder()
        .layer(SessionLayer(sessions))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            stop.wait_for(|s| *s).await.ok();
        })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the gateway's flight sql endpoint stopped");
    }
}
