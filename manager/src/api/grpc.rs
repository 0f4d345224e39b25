//! The gRPC services.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use strata_proto::ids::{FrameworkId, StreamId};
use strata_proto::pb::{self, agent_link_server, scheduler_server};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::acl::Subject;
use crate::inbox::{CoreHandle, Input};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// How many events a framework's stream holds before the core's sends wait.
pub(super) const STREAM_BUFFER: usize = 65_536;

/// Who a request comes from: the operator, a principal, or an anonymous
/// caller of a cluster without a token.
fn check_token<T>(core: &CoreHandle, req: &Request<T>) -> Result<Subject, Status> {
    let header = req
        .metadata()
        .get(strata_proto::AUTH_HEADER)
        .and_then(|v| v.to_str().ok());
    core.access.authenticate(header).ok_or_else(|| {
        Status::unauthenticated("missing or wrong token (authorization: Bearer <token>)")
    })
}

fn unavailable<T>(_: T) -> Status {
    Status::unavailable("manager is shutting down")
}

pub(super) fn routes(core: CoreHandle) -> axum::Router {
    let sched = scheduler_server::SchedulerServer::new(SchedulerSvc { core: core.clone() })
        .max_decoding_message_size(strata_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(strata_proto::MAX_MESSAGE_BYTES);
    let link = agent_link_server::AgentLinkServer::new(AgentLinkSvc { core })
        .max_decoding_message_size(strata_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(strata_proto::MAX_MESSAGE_BYTES);
    tonic::service::Routes::new(sched)
        .add_service(link)
        .into_axum_router()
}

struct SchedulerSvc {
    core: CoreHandle,
}

/// A framework's event stream; tells the core when the client goes away.
/// Served as gRPC here and as Mesos's RecordIO by the Mesos API.
pub(super) struct EventStream {
    rx: mpsc::Receiver<Result<pb::Event, Status>>,
    closed: Option<(FrameworkId, StreamId, mpsc::Sender<Input>)>,
}

impl EventStream {
    /// The events of `framework`'s subscription `stream`, received on `rx`.
    pub(super) fn new(
        rx: mpsc::Receiver<Result<pb::Event, Status>>,
        framework: FrameworkId,
        stream: StreamId,
        core: mpsc::Sender<Input>,
    ) -> Self {
        EventStream {
            rx,
            closed: Some((framework, stream, core)),
        }
    }
}

impl Stream for EventStream {
    type Item = Result<pb::Event, Status>;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some((framework, stream, tx)) = self.closed.take() {
            tx.try_send(Input::StreamClosed { framework, stream }).ok();
        }
    }
}

#[tonic::async_trait]
impl scheduler_server::Scheduler for SchedulerSvc {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let subject = check_token(&self.core, &req)?;
        let mut sub = req.into_inner();
        super::may_subscribe(&self.core, &subject, &mut sub)
            .map_err(|d| Status::permission_denied(d.to_string()))?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let (reply, wait) = oneshot::channel();
        self.core
            .tx
            .send(Input::Subscribe {
                req: sub,
                caller: subject.clone(),
                tx,
                reply,
            })
            .await
            .map_err(unavailable)?;
        let (fid, stream) = match wait.await.map_err(unavailable)? {
            Ok(ids) => ids,
            Err(e) => {
                super::audit_refused_takeover(&self.core, &subject, &e);
                return Err(e.into());
            }
        };
        let s = EventStream::new(rx, fid, stream, self.core.tx.clone());
        Ok(Response::new(Box::pin(s)))
    }

    async fn call(&self, req: Request<pb::Call>) -> Result<Response<pb::CallResponse>, Status> {
        let caller = check_token(&self.core, &req)?;
        super::may_launch(&self.core, &caller, req.get_ref())
            .map_err(|d| Status::permission_denied(d.to_string()))?;
        let (reply, wait) = oneshot::channel();
        self.core
            .tx
            .send(Input::Call {
                call: req.into_inner(),
                caller,
                reply,
            })
            .await
            .map_err(unavailable)?;
        wait.await.map_err(unavailable)??;
        Ok(Response::new(pb::CallResponse {}))
    }
}

struct AgentLinkSvc {
    core: CoreHandle,
}

#[tonic::async_trait]
impl agent_link_server::AgentLink for AgentLinkSvc {
    type AttachStream = Pin<Box<dyn Stream<Item = Result<pb::ManagerMessage, Status>> + Send>>;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        if let Subject::Principal(p) = check_token(&self.core, &req)? {
            return Err(Status::permission_denied(format!(
                "principal {p:?} may not register an agent: agents use the cluster's token"
            )));
        }
        let mut inbound = req.into_inner();
        let first = inbound
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("agent link closed before registering"))??;
        let Some(pb::agent_message::Message::Register(reg)) = first.message else {
            return Err(Status::invalid_argument(
                "the first message on an agent link must be register",
            ));
        };
        let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let (reply, wait) = oneshot::channel();
        self.core
            .tx
            .send(Input::AgentRegister {
                reg,
                conn,
                tx,
                reply,
            })
            .await
            .map_err(unavailable)?;
        let agent = wait.await.map_err(unavailable)??;
        let core = self.core.tx.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.next().await {
                let Ok(msg) = msg else { break };
                let Some(message) = msg.message else { continue };
                if core
                    .send(Input::AgentMessage {
                        agent: agent.clone(),
                        conn,
                        message,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            core.send(Input::AgentGone { agent, conn }).await.ok();
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
