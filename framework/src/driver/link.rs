//! The driver's `ExecutorLink` gRPC service: every executor holds one
//! stream to it. Registrations, statuses and stream ends become commands
//! for the driver's core; the core's messages go back down the stream.

use std::sync::atomic::{AtomicU64, Ordering};

use strata_proto::exec::executor_link_server::ExecutorLink;
use strata_proto::exec::executor_message::Kind;
use strata_proto::exec::{DriverMessage, ExecutorMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Command;
use super::dag::ExecutorId;

/// A message for an executor, or the status ending its stream.
pub(crate) type Outbound = Result<DriverMessage, Status>;

pub(crate) struct LinkService {
    pub(crate) core: mpsc::UnboundedSender<Command>,
    pub(crate) next_conn: AtomicU64,
}

#[tonic::async_trait]
impl ExecutorLink for LinkService {
    type AttachStream = ReceiverStream<Outbound>;

    async fn attach(
        &self,
        request: Request<Streaming<ExecutorMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no registration within 10 s"))??;
        let Some(ExecutorMessage {
            kind: Some(Kind::Register(reg)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message on an executor link must be Register",
            ));
        };
        if strata_proto::negotiate(reg.version).is_none() {
            return Err(Status::failed_precondition(format!(
                "executor speaks protocol {}, this driver {} (and one older)",
                reg.version,
                strata_proto::PROTOCOL_VERSION
            )));
        }
        if reg.executor_id.is_empty() || reg.flight_address.is_empty() {
            return Err(Status::invalid_argument(
                "an executor must give its id and Flight address",
            ));
        }
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let id = ExecutorId::new(reg.executor_id.clone());
        let (tx, rx) = mpsc::channel::<Outbound>(1024);
        self.core
            .send(Command::ExecutorUp { reg, tx, conn })
            .map_err(|_| Status::unavailable("the driver is shutting down"))?;
        let core = self.core.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(ExecutorMessage {
                        kind: Some(Kind::Statuses(s)),
                    })) => {
                        if core
                            .send(Command::Statuses {
                                id: id.clone(),
                                statuses: s.statuses,
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            core.send(Command::ExecutorDown { id, conn }).ok();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
