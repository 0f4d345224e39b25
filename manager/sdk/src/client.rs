//! The client: [`Scheduler::subscribe`], the cloneable [`SchedulerHandle`]
//! that makes calls, and the [`EventStream`] of events.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use strata_proto::ids::{AgentId, FrameworkId, OfferId, StreamId, TaskId};
use strata_proto::pb::{self, call::Call as C, scheduler_client::SchedulerClient};
use strata_proto::{AUTH_HEADER, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, bearer};
use tokio::sync::{mpsc, watch};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::SchedulerConfig;
use crate::dedup::UuidCache;
use crate::error::{SdkError, error_chain};
use crate::event::{Event, Subscribed, TaskStatus};
use crate::task::{Ask, Filters, TaskInfo};

/// How many events may wait in the [`EventStream`] before the SDK stops
/// reading from the manager.
const EVENT_BUFFER: usize = 1024;

/// Adds `authorization: Bearer <token>` to every request when a token is set.
#[derive(Clone)]
pub(crate) struct Auth(Option<AsciiMetadataValue>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert(AUTH_HEADER, value.clone());
        }
        Ok(req)
    }
}

pub(crate) type Client = SchedulerClient<InterceptedService<Channel, Auth>>;

/// The state shared by the handles and the background driver.
pub(crate) struct Shared {
    /// The channel to the manager that leads (replaced when a
    /// re-subscription finds another one).
    client: Mutex<Client>,
    pub(crate) config: SchedulerConfig,
    state: Mutex<State>,
    pub(crate) dedup: Mutex<UuidCache>,
    pub(crate) shutdown: watch::Sender<bool>,
}

/// The live subscription and what a re-subscription must repeat.
pub(crate) struct State {
    pub(crate) framework_id: FrameworkId,
    /// `None` while disconnected and after the driver stopped.
    pub(crate) stream_id: Option<StreamId>,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) demand: Vec<Ask>,
    pub(crate) suppressed: bool,
    /// Outstanding offers, to fill in tasks' agents and to rescind them
    /// when the connection is lost.
    pub(crate) offers: HashMap<OfferId, AgentId>,
    pub(crate) torn_down: bool,
    /// A teardown call is in flight.
    pub(crate) tearing_down: bool,
}

impl Shared {
    /// The channel to the leading manager.
    pub(crate) fn client(&self) -> Client {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Uses `client` from now on (the manager that leads now).
    pub(crate) fn set_client(&self, client: Client) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = client;
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn dedup(&self) -> MutexGuard<'_, UuidCache> {
        self.dedup.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a (re-)subscription.
    pub(crate) fn subscribed(&self, s: &Subscribed) {
        let mut st = self.state();
        st.framework_id = s.framework_id.clone();
        st.stream_id = Some(s.stream_id.clone());
        st.heartbeat_interval = s.heartbeat_interval;
    }

    /// Sends one call on the live subscription.
    pub(crate) async fn call(&self, operation: &'static str, call: C) -> Result<(), SdkError> {
        let (framework_id, stream_id) = {
            let st = self.state();
            if st.torn_down {
                return Err(SdkError::NotSubscribed {
                    message: "the framework was torn down".into(),
                });
            }
            match &st.stream_id {
                Some(s) => (st.framework_id.to_string(), s.to_string()),
                None => {
                    return Err(SdkError::NotSubscribed {
                        message: "no live subscription (the connection to the manager was lost)"
                            .into(),
                    });
                }
            }
        };
        let timeout = self.config.call_timeout;
        let mut req = tonic::Request::new(pb::Call {
            framework_id,
            stream_id,
            call: Some(call),
        });
        req.set_timeout(timeout);
        let mut client = self.client();
        match tokio::time::timeout(timeout, client.call(req)).await {
            Err(_) => Err(SdkError::Timeout {
                operation,
                after: timeout,
            }),
            Ok(Err(status)) => Err(SdkError::from_status(operation, timeout, status)),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// Subscribes to whichever of the configured managers leads: each in turn,
/// going straight to the leader a standby names. Returns the channel to
/// it, the event stream and its `Subscribed`; with every manager tried,
/// the last error (a standby's, when one answered: a cluster without a
/// leader right now, rather than no cluster).
pub(crate) async fn subscribe_leader(
    config: &SchedulerConfig,
    framework_id: Option<&FrameworkId>,
    demand: &[Ask],
    suppressed: bool,
) -> Result<(Client, tonic::Streaming<pb::Event>, Subscribed), SdkError> {
    let mut search = strata_proto::net::LeaderSearch::new(&config.manager);
    let mut last = None;
    while let Some(address) = search.next_address() {
        let client = match connect(config, &address).await {
            Ok(c) => c,
            Err(e) if e.is_transient() => {
                if !matches!(last, Some(SdkError::Standby { .. })) {
                    last = Some(e);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        match subscribe_once(&client, config, framework_id, demand, suppressed).await {
            Ok((stream, sub)) => return Ok((client, stream, sub)),
            Err(SdkError::Standby {
                leader: Some(leader),
                message,
            }) => {
                tracing::debug!(manager = %address, %leader, "a standby named the leader");
                search.follow(&address, &leader);
                last = Some(SdkError::Standby {
                    leader: Some(leader),
                    message,
                });
            }
            Err(e @ SdkError::Standby { .. }) => last = Some(e),
            Err(e) if e.is_transient() => {
                if !matches!(last, Some(SdkError::Standby { .. })) {
                    last = Some(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| SdkError::InvalidConfig {
        message: "no manager address given".into(),
    }))
}

/// Opens the gRPC channel (h2c) to the manager at `address`.
async fn connect(config: &SchedulerConfig, address: &str) -> Result<Client, SdkError> {
    let uri = SchedulerConfig::endpoint_uri(address);
    let endpoint = Endpoint::from_shared(uri).map_err(|e| SdkError::InvalidConfig {
        message: format!("bad manager address {address:?}: {}", error_chain(&e)),
    })?;
    let mut endpoint = endpoint
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    if config.connector.streams().is_none() {
        // An HTTP/2 ping every 2 s, answered within 3 s, finds a manager
        // that is paused or cut off (its connection stays open) in 5 s,
        // sooner than missed heartbeats would.
        endpoint = endpoint
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true);
    }
    let connecting =
        async {
            match config.connector.streams() {
                None => endpoint.connect().await,
                Some(make) => endpoint
                    .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                        let stream = make();
                        async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream)) }
                    }))
                    .await,
            }
        };
    let channel = match tokio::time::timeout(config.connect_timeout, connecting).await {
        Err(_) => {
            return Err(SdkError::Timeout {
                operation: "connect",
                after: config.connect_timeout,
            });
        }
        Ok(Err(e)) => {
            return Err(SdkError::Transport {
                address: address.to_owned(),
                message: error_chain(&e),
            });
        }
        Ok(Ok(channel)) => channel,
    };
    let auth = match &config.token {
        None => Auth(None),
        Some(token) => Auth(Some(bearer(token).parse().map_err(|_| {
            SdkError::InvalidConfig {
                message: "the token is not a valid header value".into(),
            }
        })?)),
    };
    Ok(SchedulerClient::with_interceptor(channel, auth)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Subscribes once and waits for the `Subscribed` event.
async fn subscribe_once(
    client: &Client,
    config: &SchedulerConfig,
    framework_id: Option<&FrameworkId>,
    demand: &[Ask],
    suppressed: bool,
) -> Result<(tonic::Streaming<pb::Event>, Subscribed), SdkError> {
    let request = pb::SubscribeRequest {
        protocol_version: PROTOCOL_VERSION,
        framework: Some(config.framework.to_proto(framework_id)),
        demand: demand.iter().map(Ask::to_proto).collect(),
        suppressed,
    };
    let timeout = config.connect_timeout;
    let status = |s| subscribe_error(timeout, s);
    let attempt = async {
        let mut stream = client
            .clone()
            .subscribe(request)
            .await
            .map_err(status)?
            .into_inner();
        let first = stream
            .message()
            .await
            .map_err(status)?
            .ok_or_else(|| SdkError::Protocol {
                message: "the manager closed the event stream before Subscribed".into(),
            })?;
        let Some(pb::event::Event::Subscribed(s)) = first.event else {
            return Err(SdkError::Protocol {
                message: format!("expected Subscribed as the first event, got {first:?}"),
            });
        };
        let s = Subscribed::from_proto(s).map_err(|e| SdkError::Protocol {
            message: e.to_string(),
        })?;
        if strata_proto::negotiate(s.protocol_version).is_none() {
            return Err(SdkError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: s.protocol_version,
            });
        }
        if let Some(id) = framework_id
            && *id != s.framework_id
        {
            return Err(SdkError::Protocol {
                message: format!(
                    "re-subscribed as {id} but the manager answered for {}",
                    s.framework_id
                ),
            });
        }
        Ok((stream, s))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| SdkError::Timeout {
            operation: "subscribe",
            after: timeout,
        })?
}

/// Maps a refused subscription. The manager refuses another protocol
/// version with `FAILED_PRECONDITION` and a message ending "this manager
/// speaks N"; that becomes [`SdkError::VersionMismatch`].
fn subscribe_error(timeout: Duration, status: tonic::Status) -> SdkError {
    if status.code() == tonic::Code::FailedPrecondition
        && let Some(theirs) = manager_version(status.message())
    {
        return SdkError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        };
    }
    SdkError::from_status("subscribe", timeout, status)
}

fn manager_version(message: &str) -> Option<u32> {
    let rest = message.split("manager speaks ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Entry point: subscribes a framework to the manager.
#[derive(Debug)]
pub struct Scheduler;

impl Scheduler {
    /// Connects to the manager, subscribes (registering a new framework, or
    /// failing over to `config.framework.framework_id`) and waits for the
    /// manager's `Subscribed` event, which is also the first event of the
    /// returned stream.
    ///
    /// A background task then reads the manager's events into the
    /// [`EventStream`]; it ends when the framework is torn down, when the
    /// stream is dropped, or when the connection is lost for good.
    pub async fn subscribe(
        config: SchedulerConfig,
    ) -> Result<(SchedulerHandle, EventStream), SdkError> {
        config.validate()?;
        let framework_id = config.framework.framework_id.clone();
        // Managers that answer but none leads: an election is under way.
        let deadline = tokio::time::Instant::now() + config.leader_wait;
        let mut delay = Duration::from_millis(100);
        let (client, stream, sub) = loop {
            match subscribe_leader(
                &config,
                framework_id.as_ref(),
                &config.demand,
                config.suppressed,
            )
            .await
            {
                Ok(found) => break found,
                Err(e @ SdkError::Standby { .. })
                    if tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::info!(error = %e, "no manager leads yet; asking again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!(
            framework_id = %sub.framework_id,
            stream_id = %sub.stream_id,
            manager = %config.manager,
            "subscribed to the manager"
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            client: Mutex::new(client),
            state: Mutex::new(State {
                framework_id: sub.framework_id.clone(),
                stream_id: Some(sub.stream_id.clone()),
                heartbeat_interval: sub.heartbeat_interval,
                demand: config.demand.clone(),
                suppressed: config.suppressed && config.demand.is_empty(),
                offers: HashMap::new(),
                torn_down: false,
                tearing_down: false,
            }),
            dedup: Mutex::new(UuidCache::new(config.dedup_capacity)),
            config,
            shutdown,
        });
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        // The buffer is empty, so this cannot fail.
        tx.try_send(Event::Subscribed {
            framework_id: sub.framework_id,
            heartbeat_interval: sub.heartbeat_interval,
        })
        .ok();
        tokio::spawn(crate::driver::run(shared.clone(), stream, tx, shutdown_rx));
        Ok((SchedulerHandle { shared }, EventStream { rx }))
    }
}

/// The events of a subscription, in the order the manager sent them.
///
/// Read it with [`EventStream::next`] or as a [`futures::Stream`]. It ends
/// (yields `None`) after [`SchedulerHandle::teardown`], or when the
/// connection is lost and not (or no longer) re-established. Dropping it
/// stops the background task and closes the subscription.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Event>,
}

impl EventStream {
    /// The next event, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl futures::Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// Makes calls to the manager on behalf of a subscribed framework. Cheap to
/// clone; every clone uses the same subscription.
///
/// Every call carries the framework id and the current stream id. While the
/// SDK is re-subscribing after a lost connection, calls fail with
/// [`SdkError::NotSubscribed`].
#[derive(Clone)]
pub struct SchedulerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SchedulerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.state();
        f.debug_struct("SchedulerHandle")
            .field("framework_id", &st.framework_id)
            .field("stream_id", &st.stream_id)
            .finish()
    }
}

impl SchedulerHandle {
    /// The framework's id (assigned by the manager at the first
    /// subscription; keep it to fail over).
    pub fn framework_id(&self) -> FrameworkId {
        self.shared.state().framework_id.clone()
    }

    /// Whether a subscription is live (false while re-subscribing and after
    /// the stream ended).
    pub fn is_connected(&self) -> bool {
        self.shared.state().stream_id.is_some()
    }

    /// Accepts offers (all of one agent) and launches `tasks` on them.
    /// Resources of the offers that the tasks leave unused are declined
    /// under `filters`. With no tasks this is a decline. Tasks without an
    /// agent get the agent of the first offer.
    pub async fn accept(
        &self,
        offer_ids: Vec<OfferId>,
        mut tasks: Vec<TaskInfo>,
        filters: Filters,
    ) -> Result<(), SdkError> {
        if offer_ids.is_empty() {
            return Err(SdkError::InvalidArgument {
                message: "accept needs at least one offer id".into(),
            });
        }
        let agent = {
            let mut st = self.shared.state();
            let agent = st.offers.get(&offer_ids[0]).cloned();
            for id in &offer_ids {
                st.offers.remove(id);
            }
            agent
        };
        if let Some(agent) = agent {
            for t in tasks.iter_mut().filter(|t| t.agent_id.is_none()) {
                t.agent_id = Some(agent.clone());
            }
        }
        let operations = if tasks.is_empty() {
            Vec::new()
        } else {
            vec![pb::call::Operation {
                operation: Some(pb::call::operation::Operation::Launch(pb::call::Launch {
                    tasks: tasks.into_iter().map(TaskInfo::into_proto).collect(),
                })),
            }]
        };
        let call = C::Accept(pb::call::Accept {
            offer_ids: offer_ids.into_iter().map(OfferId::into_string).collect(),
            operations,
            filters: Some(filters.to_proto()),
        });
        self.shared.call("accept", call).await
    }

    /// Launches `tasks` on one offer, with default filters.
    pub async fn launch(&self, offer_id: OfferId, tasks: Vec<TaskInfo>) -> Result<(), SdkError> {
        self.accept(vec![offer_id], tasks, Filters::default()).await
    }

    /// Declines offers; their resources are not offered again to this
    /// framework for `refuse` (the manager's default, 5 s, when `None`).
    /// Declining nothing is a no-op.
    pub async fn decline(
        &self,
        offer_ids: Vec<OfferId>,
        refuse: Option<Duration>,
    ) -> Result<(), SdkError> {
        if offer_ids.is_empty() {
            return Ok(());
        }
        {
            let mut st = self.shared.state();
            for id in &offer_ids {
                st.offers.remove(id);
            }
        }
        let call = C::Decline(pb::call::Decline {
            offer_ids: offer_ids.into_iter().map(OfferId::into_string).collect(),
            filters: Some(Filters { refuse }.to_proto()),
        });
        self.shared.call("decline", call).await
    }

    /// Stops offers to this framework until [`revive`](Self::revive) or new
    /// demand. Remembered across re-subscriptions.
    pub async fn suppress(&self) -> Result<(), SdkError> {
        self.shared
            .call("suppress", C::Suppress(pb::call::Suppress {}))
            .await?;
        self.shared.state().suppressed = true;
        Ok(())
    }

    /// Clears decline filters and resumes offers.
    pub async fn revive(&self) -> Result<(), SdkError> {
        self.shared
            .call("revive", C::Revive(pb::call::Revive {}))
            .await?;
        self.shared.state().suppressed = false;
        Ok(())
    }

    /// Replaces the framework's pending demand (empty: no demand). The
    /// manager makes offers shaped by it, highest class first, and may
    /// preempt lower classes for it. Remembered and repeated on
    /// re-subscription; non-empty demand ends suppression.
    pub async fn declare_demand(&self, asks: Vec<Ask>) -> Result<(), SdkError> {
        let call = C::Demand(pb::call::Demand {
            asks: asks.iter().map(Ask::to_proto).collect(),
        });
        self.shared.call("demand", call).await?;
        let mut st = self.shared.state();
        if !asks.is_empty() {
            st.suppressed = false;
        }
        st.demand = asks;
        Ok(())
    }

    /// Kills a task (SIGTERM, then SIGKILL after its kill grace). The agent
    /// may be omitted if unknown; a status update follows.
    pub async fn kill(&self, task_id: TaskId, agent_id: Option<AgentId>) -> Result<(), SdkError> {
        let call = C::Kill(pb::call::Kill {
            task_id: task_id.into_string(),
            agent_id: agent_id.map(AgentId::into_string).unwrap_or_default(),
        });
        self.shared.call("kill", call).await
    }

    /// Acknowledges a status update (a no-op for updates without a uuid).
    /// Needed only with `auto_acknowledge` off; with it on, the SDK has
    /// already acknowledged the update and this sends a harmless repeat.
    pub async fn acknowledge(&self, status: &TaskStatus) -> Result<(), SdkError> {
        let Some(uuid) = status.uuid else {
            return Ok(());
        };
        self.shared.dedup().mark_acked(uuid);
        self.shared
            .call("acknowledge", ack_call(status, uuid))
            .await
    }

    /// Asks for the latest state of tasks: the listed ones (explicit), or
    /// every task the manager knows of this framework when `tasks` is empty
    /// (implicit). Answers arrive as [`Event::Update`]s without uuids.
    pub async fn reconcile(&self, tasks: Vec<(TaskId, Option<AgentId>)>) -> Result<(), SdkError> {
        let call = C::Reconcile(pb::call::Reconcile {
            tasks: tasks
                .into_iter()
                .map(|(task_id, agent_id)| pb::call::reconcile::Task {
                    task_id: task_id.into_string(),
                    agent_id: agent_id.map(AgentId::into_string).unwrap_or_default(),
                })
                .collect(),
        });
        self.shared.call("reconcile", call).await
    }

    /// Removes the framework: the manager kills its tasks and forgets it.
    /// The event stream then ends, and every later call fails.
    pub async fn teardown(&self) -> Result<(), SdkError> {
        // Mark the teardown first: the manager closes the stream as it
        // answers, and the driver must not take that for a lost connection.
        self.shared.state().tearing_down = true;
        let result = self
            .shared
            .call("teardown", C::Teardown(pb::call::Teardown {}))
            .await;
        if let Err(e) = result {
            self.shared.state().tearing_down = false;
            return Err(e);
        }
        {
            let mut st = self.shared.state();
            st.torn_down = true;
            st.stream_id = None;
            st.offers.clear();
        }
        self.shared.shutdown.send_replace(true);
        tracing::info!(framework_id = %self.framework_id(), "framework torn down");
        Ok(())
    }
}

/// The acknowledgement of a status update.
pub(crate) fn ack_call(status: &TaskStatus, uuid: [u8; 16]) -> C {
    C::Acknowledge(pb::call::Acknowledge {
        agent_id: status
            .agent_id
            .as_ref()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default(),
        task_id: status.task_id.as_str().to_owned(),
        uuid: uuid.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_refusals_become_version_mismatch() {
        let t = Duration::from_secs(1);
        let refused = tonic::Status::failed_precondition(
            "protocol version 1 is not supported (this manager speaks 2)",
        );
        assert_eq!(
            subscribe_error(t, refused),
            SdkError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 2
            }
        );
        let other = tonic::Status::failed_precondition("framework fw-1 cannot change role");
        assert!(matches!(
            subscribe_error(t, other),
            SdkError::NotSubscribed { .. }
        ));
    }
}
