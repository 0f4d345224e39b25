//! The SDK's client logic against a tiny in-process fake of the manager's
//! `Scheduler` gRPC service. The fake only scripts events and records calls;
//! the real manager is tested end to end elsewhere.

// A test binary: helpers unwrap as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_proto::pb::{
    self,
    scheduler_server::{Scheduler as SchedulerService, SchedulerServer},
};
use strata_sdk::{
    Ask, End, Event, EventStream, FrameworkConfig, LaunchError, Notice, OfferId, OneTask,
    OneTaskOptions, Resources, Scheduler, SchedulerConfig, SdkError, TaskBuilder, TaskState, Until,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// How long any single wait in these tests may take before it fails.
const DEADLINE: Duration = Duration::from_secs(10);

type EventTx = mpsc::Sender<Result<pb::Event, Status>>;

struct Fake {
    token: Option<String>,
    version: u32,
    /// Heartbeat interval for each successive subscription (then 30 s).
    heartbeats: Mutex<VecDeque<f64>>,
    subscriptions: AtomicU32,
    /// Refuse new subscriptions as a manager shutting down would.
    dead: AtomicBool,
    /// Refuse this many subscriptions as a standby that knows no leader.
    standby_for: AtomicU32,
    stream_id: Mutex<String>,
    subscribed: mpsc::UnboundedSender<(pb::SubscribeRequest, EventTx)>,
    calls: mpsc::UnboundedSender<pb::Call>,
}

impl Fake {
    fn check_auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let got = req
            .metadata()
            .get(strata_proto::AUTH_HEADER)
            .and_then(|v| v.to_str().ok());
        if got == Some(strata_proto::bearer(token).as_str()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

#[tonic::async_trait]
impl SchedulerService for Fake {
    type SubscribeStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.check_auth(&req)?;
        if self.dead.load(Ordering::SeqCst) {
            return Err(Status::unavailable("shutting down"));
        }
        if self
            .standby_for
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Status::unavailable("a standby: no leader is elected yet"));
        }
        let req = req.into_inner();
        let n = self.subscriptions.fetch_add(1, Ordering::SeqCst) + 1;
        let stream_id = format!("stream-{n}");
        *self.stream_id.lock().unwrap() = stream_id.clone();
        let framework_id = match req.framework.as_ref() {
            Some(f) if !f.framework_id.is_empty() => f.framework_id.clone(),
            _ => "fw-1".to_owned(),
        };
        let heartbeat = self.heartbeats.lock().unwrap().pop_front().unwrap_or(30.0);
        let (tx, rx) = mpsc::channel(64);
        let subscribed = pb::event::Subscribed {
            framework_id,
            heartbeat_interval_seconds: heartbeat,
            protocol_version: self.version,
            stream_id,
        };
        tx.send(Ok(event(pb::event::Event::Subscribed(subscribed))))
            .await
            .unwrap();
        self.subscribed.send((req, tx)).unwrap();
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn call(&self, req: Request<pb::Call>) -> Result<Response<pb::CallResponse>, Status> {
        self.check_auth(&req)?;
        let call = req.into_inner();
        if call.framework_id != "fw-1" || call.stream_id != *self.stream_id.lock().unwrap() {
            return Err(Status::failed_precondition("wrong framework or stream id"));
        }
        self.calls.send(call).unwrap();
        Ok(Response::new(pb::CallResponse {}))
    }
}

struct Harness {
    address: String,
    /// In-memory connections to the fake, when it serves no socket.
    connector: Option<strata_sdk::Connector>,
    fake: Arc<Fake>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    subscribed: mpsc::UnboundedReceiver<(pb::SubscribeRequest, EventTx)>,
    calls: mpsc::UnboundedReceiver<pb::Call>,
}

/// A fake that serves in-memory connections only: for tests in paused
/// time, whose clock must not jump while bytes are on a socket.
async fn start_in_memory(heartbeats: &[f64]) -> Harness {
    let (fake, subscribed, calls) = new_fake(None, strata_proto::PROTOCOL_VERSION, heartbeats);
    let (conns_tx, conns_rx) = mpsc::unbounded_channel::<tokio::io::DuplexStream>();
    let connector = strata_sdk::Connector::in_memory(move || {
        let (client, server) = tokio::io::duplex(1 << 20);
        conns_tx.send(server).ok();
        client
    });
    let incoming =
        tokio_stream::wrappers::UnboundedReceiverStream::new(conns_rx).map(Ok::<_, std::io::Error>);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SchedulerServer::from_arc(fake.clone()))
            .serve_with_incoming_shutdown(incoming, async {
                stopped.await.ok();
            }),
    );
    Harness {
        address: "in-memory:1".into(),
        connector: Some(connector),
        fake,
        stop: Some(stop),
        server,
        subscribed,
        calls,
    }
}

async fn start(token: Option<&str>, version: u32, heartbeats: &[f64]) -> Harness {
    start_on("127.0.0.1:0", token, version, heartbeats).await
}

type Subscriptions = mpsc::UnboundedReceiver<(pb::SubscribeRequest, EventTx)>;

/// A fake and the receivers of what it is sent.
fn new_fake(
    token: Option<&str>,
    version: u32,
    heartbeats: &[f64],
) -> (Arc<Fake>, Subscriptions, mpsc::UnboundedReceiver<pb::Call>) {
    let (subscribed_tx, subscribed) = mpsc::unbounded_channel();
    let (calls_tx, calls) = mpsc::unbounded_channel();
    let fake = Fake {
        token: token.map(str::to_owned),
        version,
        heartbeats: Mutex::new(heartbeats.iter().copied().collect()),
        subscriptions: AtomicU32::new(0),
        dead: AtomicBool::new(false),
        standby_for: AtomicU32::new(0),
        stream_id: Mutex::new(String::new()),
        subscribed: subscribed_tx,
        calls: calls_tx,
    };
    (Arc::new(fake), subscribed, calls)
}

async fn start_on(bind: &str, token: Option<&str>, version: u32, heartbeats: &[f64]) -> Harness {
    let (fake, subscribed, calls) = new_fake(token, version, heartbeats);
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SchedulerServer::from_arc(fake.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                stopped.await.ok();
            }),
    );
    Harness {
        address,
        connector: None,
        fake,
        stop: Some(stop),
        server,
        subscribed,
        calls,
    }
}

impl Harness {
    fn config(&self, token: Option<&str>) -> SchedulerConfig {
        let mut c = SchedulerConfig::new(self.address.clone(), FrameworkConfig::new("test-fw"));
        c.token = token.map(str::to_owned);
        c.connect_timeout = DEADLINE;
        c.call_timeout = DEADLINE;
        if let Some(connector) = &self.connector {
            c.connector = connector.clone();
        }
        c
    }

    async fn next_subscription(&mut self) -> (pb::SubscribeRequest, EventTx) {
        tokio::time::timeout(DEADLINE, self.subscribed.recv())
            .await
            .expect("no subscription in time")
            .expect("fake server gone")
    }

    async fn next_call(&mut self) -> pb::call::Call {
        tokio::time::timeout(DEADLINE, self.calls.recv())
            .await
            .expect("no call in time")
            .expect("fake server gone")
            .call
            .expect("call without a body")
    }
}

async fn next_event(events: &mut EventStream) -> Event {
    tokio::time::timeout(DEADLINE, events.next())
        .await
        .expect("no event in time")
        .expect("event stream ended")
}

async fn stream_ends(events: &mut EventStream) {
    let end = tokio::time::timeout(DEADLINE, events.next())
        .await
        .expect("stream did not end in time");
    assert_eq!(end, None);
}

fn event(e: pb::event::Event) -> pb::Event {
    pb::Event { event: Some(e) }
}

fn offer(id: &str, cpus: f64) -> pb::Offer {
    pb::Offer {
        offer_id: id.into(),
        framework_id: "fw-1".into(),
        agent_id: "agent-1".into(),
        hostname: "host-1".into(),
        resources: vec![
            pb::Resource {
                name: "cpus".into(),
                scalar: cpus,
                ranges: vec![],
                revocable: false,
            },
            pb::Resource {
                name: "mem".into(),
                scalar: 1024.0,
                ranges: vec![],
                revocable: false,
            },
        ],
        attributes: vec![],
        priority_class: "batch".into(),
        agent_address: String::new(),
    }
}

fn offers(list: Vec<pb::Offer>) -> pb::Event {
    event(pb::event::Event::Offers(pb::event::Offers { offers: list }))
}

fn update(task: &str, state: TaskState, uuid: Vec<u8>) -> pb::Event {
    event(pb::event::Event::Update(pb::event::Update {
        status: Some(pb::TaskStatus {
            task_id: task.into(),
            agent_id: "agent-1".into(),
            state: state as i32,
            uuid,
            ..Default::default()
        }),
    }))
}

fn heartbeat() -> pb::Event {
    event(pb::event::Event::Heartbeat(pb::event::Heartbeat {}))
}

async fn send(tx: &EventTx, events: Vec<pb::Event>) {
    for e in events {
        tx.send(Ok(e)).await.unwrap();
    }
}

fn acked_uuid(call: &pb::call::Call) -> Option<Vec<u8>> {
    match call {
        pb::call::Call::Acknowledge(a) => {
            assert_eq!(a.agent_id, "agent-1");
            Some(a.uuid.clone())
        }
        _ => None,
    }
}

#[tokio::test]
async fn offer_and_update_surface_once_and_updates_are_acknowledged() {
    let mut h = start(Some("s3cret"), strata_proto::PROTOCOL_VERSION, &[]).await;
    let mut config = h.config(Some("s3cret"));
    config.demand = vec![Ask::new("batch", Resources::new(1.0, 64.0), 2)];
    let (handle, mut events) = Scheduler::subscribe(config).await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        Event::Subscribed {
            framework_id: "fw-1".into(),
            heartbeat_interval: Duration::from_secs(30),
        }
    );
    assert_eq!(handle.framework_id().as_str(), "fw-1");
    let (req, tx) = h.next_subscription().await;
    assert_eq!(req.protocol_version, strata_proto::PROTOCOL_VERSION);
    let fw = req.framework.unwrap();
    assert_eq!(
        (fw.name.as_str(), fw.framework_id.as_str()),
        ("test-fw", "")
    );
    assert_eq!(req.demand.len(), 1);
    assert_eq!(req.demand[0].count, 2);

    let (u1, u2) = (vec![1u8; 16], vec![2u8; 16]);
    send(
        &tx,
        vec![
            offers(vec![offer("offer-1", 4.0)]),
            update("task-1", TaskState::TaskRunning, u1.clone()),
            update("task-1", TaskState::TaskRunning, u1.clone()),
            heartbeat(),
            update("task-1", TaskState::TaskFinished, u2.clone()),
            update("task-1", TaskState::TaskFinished, u2.clone()),
            heartbeat(),
        ],
    )
    .await;

    let Event::Offers(got) = next_event(&mut events).await else {
        panic!("expected offers");
    };
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, OfferId::new("offer-1"));
    assert_eq!(got[0].resources, Resources::new(4.0, 1024.0));
    let Event::Update(running) = next_event(&mut events).await else {
        panic!("expected an update");
    };
    assert_eq!(running.state, TaskState::TaskRunning);
    assert_eq!(running.uuid, Some([1; 16]));
    // The duplicate is not surfaced: the heartbeat sent after it comes next.
    assert_eq!(next_event(&mut events).await, Event::Heartbeat);
    let Event::Update(finished) = next_event(&mut events).await else {
        panic!("expected an update");
    };
    assert_eq!(finished.state, TaskState::TaskFinished);
    assert!(finished.is_terminal());
    assert_eq!(next_event(&mut events).await, Event::Heartbeat);

    // Launch on the offer; the SDK fills in the offer's agent.
    let task = TaskBuilder::shell("task-2", "echo hello")
        .resources(Resources::new(1.0, 64.0))
        .build();
    handle.launch(got[0].id.clone(), vec![task]).await.unwrap();

    // Each update acknowledged, and each duplicate acknowledged again.
    let mut acks = Vec::new();
    let mut accept = None;
    while acks.len() < 4 || accept.is_none() {
        let call = h.next_call().await;
        match acked_uuid(&call) {
            Some(uuid) => acks.push(uuid),
            None => accept = Some(call),
        }
    }
    acks.sort();
    assert_eq!(acks, vec![u1.clone(), u1, u2.clone(), u2]);
    let Some(pb::call::Call::Accept(accept)) = accept else {
        panic!("expected an accept, got {accept:?}");
    };
    assert_eq!(accept.offer_ids, vec!["offer-1"]);
    let pb::call::operation::Operation::Launch(launch) =
        accept.operations[0].operation.clone().unwrap();
    assert_eq!(launch.tasks[0].agent_id, "agent-1");
    assert_eq!(
        launch.tasks[0].command.as_ref().unwrap().value,
        "echo hello"
    );

    handle.teardown().await.unwrap();
    assert!(matches!(h.next_call().await, pb::call::Call::Teardown(_)));
    stream_ends(&mut events).await;
    assert!(matches!(
        handle.revive().await,
        Err(SdkError::NotSubscribed { .. })
    ));
}

#[tokio::test]
async fn refusals_at_subscription_are_typed_errors() {
    let h = start(Some("right"), strata_proto::PROTOCOL_VERSION, &[]).await;
    let err = Scheduler::subscribe(h.config(Some("wrong")))
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::Unauthenticated { .. }), "{err}");
    let err = Scheduler::subscribe(h.config(None)).await.unwrap_err();
    assert!(matches!(err, SdkError::Unauthenticated { .. }), "{err}");

    let h = start(None, 99, &[]).await;
    let err = Scheduler::subscribe(h.config(None)).await.unwrap_err();
    assert_eq!(
        err,
        SdkError::VersionMismatch {
            ours: strata_proto::PROTOCOL_VERSION,
            theirs: 99
        }
    );

    // Nothing listens on this port once the listener is dropped.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let mut config = h.config(None);
    config.manager = address;
    let err = Scheduler::subscribe(config).await.unwrap_err();
    assert!(matches!(err, SdkError::Transport { .. }), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn the_first_subscription_waits_out_an_election_past_a_dead_manager() {
    let h = start(None, strata_proto::PROTOCOL_VERSION, &[]).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap().to_string();
    drop(listener);
    // A dead manager, then a standby that knows no leader for three tries.
    h.fake.standby_for.store(3, Ordering::SeqCst);
    let mut config = h.config(None);
    config.manager = format!("{dead},{}", h.address);
    let (handle, _events) = Scheduler::subscribe(config.clone()).await.unwrap();
    assert_eq!(handle.framework_id().as_str(), "fw-1");
    // No leader within `leader_wait`: the standby's answer, not the dead
    // manager's.
    h.fake.standby_for.store(1_000, Ordering::SeqCst);
    config.leader_wait = Duration::from_millis(300);
    let err = Scheduler::subscribe(config).await.unwrap_err();
    assert!(
        matches!(err, SdkError::Standby { leader: None, .. }),
        "{err}"
    );
}

/// In paused time, over in-memory connections: the three missed
/// heartbeats take no wall-clock time.
#[tokio::test(start_paused = true)]
async fn missed_heartbeats_lead_to_resubscription_with_the_same_id() {
    let mut h = start_in_memory(&[0.3]).await;
    let (handle, mut events) = Scheduler::subscribe(h.config(None)).await.unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        Event::Subscribed { .. }
    ));
    let (_, tx) = h.next_subscription().await;
    send(&tx, vec![offers(vec![offer("offer-1", 1.0)])]).await;
    assert!(matches!(next_event(&mut events).await, Event::Offers(_)));
    let ask = Ask::new("service", Resources::new(0.5, 32.0), 1);
    handle.declare_demand(vec![ask]).await.unwrap();
    assert!(matches!(h.next_call().await, pb::call::Call::Demand(_)));

    // The fake keeps the stream open but silent: after three intervals the
    // SDK gives up on it, rescinds the offer and subscribes again.
    let Event::Disconnected { reason } = next_event(&mut events).await else {
        panic!("expected a disconnection");
    };
    assert!(reason.contains("heartbeat"), "{reason}");
    assert_eq!(
        next_event(&mut events).await,
        Event::Rescind(OfferId::new("offer-1"))
    );
    let (req, _tx2) = h.next_subscription().await;
    assert_eq!(req.framework.unwrap().framework_id, "fw-1");
    assert_eq!(req.demand.len(), 1, "the current demand is repeated");
    assert_eq!(req.demand[0].priority_class, "service");
    assert_eq!(
        next_event(&mut events).await,
        Event::Subscribed {
            framework_id: "fw-1".into(),
            heartbeat_interval: Duration::from_secs(30),
        }
    );
    assert!(handle.is_connected());
    // Calls now carry the new stream id (the fake rejects the old one).
    handle.revive().await.unwrap();
    assert!(matches!(h.next_call().await, pb::call::Call::Revive(_)));
    drop(tx);
}

#[tokio::test]
async fn without_reconnect_a_closed_stream_ends_the_events() {
    let mut h = start(None, strata_proto::PROTOCOL_VERSION, &[]).await;
    let mut config = h.config(None);
    config.reconnect = false;
    let (handle, mut events) = Scheduler::subscribe(config).await.unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        Event::Subscribed { .. }
    ));
    let (_, tx) = h.next_subscription().await;
    drop(tx);
    let Event::Disconnected { reason } = next_event(&mut events).await else {
        panic!("expected a disconnection");
    };
    assert!(reason.contains("closed"), "{reason}");
    stream_ends(&mut events).await;
    assert!(!handle.is_connected());
    assert!(matches!(
        handle.suppress().await,
        Err(SdkError::NotSubscribed { .. })
    ));
}

#[tokio::test]
async fn manual_acknowledgement_and_malformed_events() {
    let mut h = start(None, strata_proto::PROTOCOL_VERSION, &[]).await;
    let mut config = h.config(None);
    config.auto_acknowledge = false;
    let (handle, mut events) = Scheduler::subscribe(config).await.unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        Event::Subscribed { .. }
    ));
    let (_, tx) = h.next_subscription().await;
    let u = vec![5u8; 16];
    send(
        &tx,
        vec![
            update("task-1", TaskState::TaskRunning, u.clone()),
            // Redelivered before the framework acknowledged: dropped, and
            // not acknowledged on the framework's behalf.
            update("task-1", TaskState::TaskRunning, u.clone()),
            heartbeat(),
        ],
    )
    .await;
    let Event::Update(status) = next_event(&mut events).await else {
        panic!("expected an update");
    };
    assert_eq!(next_event(&mut events).await, Event::Heartbeat);
    handle.acknowledge(&status).await.unwrap();
    assert_eq!(acked_uuid(&h.next_call().await), Some(u.clone()));

    let mut bad_offer = offer("offer-bad", f64::NAN);
    bad_offer.hostname = "host-bad".into();
    send(
        &tx,
        vec![
            // Redelivered after the acknowledgement: acknowledged again.
            update("task-1", TaskState::TaskRunning, u.clone()),
            update("task-2", TaskState::TaskRunning, vec![1; 15]),
            offers(vec![offer("offer-good", 1.0), bad_offer]),
        ],
    )
    .await;
    let Event::Error(message) = next_event(&mut events).await else {
        panic!("expected an error for the 15-byte uuid");
    };
    assert!(message.contains("uuid"), "{message}");
    let Event::Offers(good) = next_event(&mut events).await else {
        panic!("expected the valid offer");
    };
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].id, OfferId::new("offer-good"));
    let Event::Error(message) = next_event(&mut events).await else {
        panic!("expected an error for the malformed offer");
    };
    assert!(message.contains("offer-bad"), "{message}");

    // Background calls go out in order: the re-acknowledgement, then the
    // decline of the malformed offer. Nothing else was acknowledged.
    assert_eq!(acked_uuid(&h.next_call().await), Some(u));
    let pb::call::Call::Decline(decline) = h.next_call().await else {
        panic!("expected the malformed offer to be declined");
    };
    assert_eq!(decline.offer_ids, vec!["offer-bad"]);
    assert!(h.calls.try_recv().is_err());
    drop(tx);
}

#[tokio::test]
async fn resubscribes_to_a_restarted_manager() {
    let mut a = start(None, strata_proto::PROTOCOL_VERSION, &[]).await;
    let (handle, mut events) = Scheduler::subscribe(a.config(None)).await.unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        Event::Subscribed { .. }
    ));
    let (_, tx) = a.next_subscription().await;

    // The manager goes away: it refuses new subscriptions, ends the stream
    // and shuts its server down.
    a.fake.dead.store(true, Ordering::SeqCst);
    a.stop.take().unwrap().send(()).unwrap();
    drop(tx);
    let Event::Disconnected { .. } = next_event(&mut events).await else {
        panic!("expected a disconnection");
    };
    tokio::time::timeout(DEADLINE, &mut a.server)
        .await
        .expect("server A did not stop")
        .unwrap()
        .unwrap();
    assert!(!handle.is_connected());

    // A new manager process on the same address takes the framework back.
    let mut b = start_on(&a.address, None, strata_proto::PROTOCOL_VERSION, &[]).await;
    let (req, _tx) = b.next_subscription().await;
    assert_eq!(req.framework.unwrap().framework_id, "fw-1");
    assert!(matches!(
        next_event(&mut events).await,
        Event::Subscribed { .. }
    ));
    handle.kill("task-1".into(), None).await.unwrap();
    let pb::call::Call::Kill(kill) = b.next_call().await else {
        panic!("expected a kill");
    };
    assert_eq!(
        (kill.task_id.as_str(), kill.agent_id.as_str()),
        ("task-1", "")
    );
}

async fn one_task(h: &Harness, reconnect: bool) -> OneTask {
    let mut config = h.config(None);
    config.reconnect = reconnect;
    let ask = Ask::new("batch", Resources::new(1.0, 64.0), 1);
    OneTask::subscribe(config, ask).await.unwrap()
}

fn the_task() -> strata_sdk::TaskInfo {
    TaskBuilder::shell("task-1", "true")
        .resources(Resources::new(1.0, 64.0))
        .build()
}

#[tokio::test]
async fn one_task_declines_what_does_not_fit_and_follows_its_task() {
    let mut h = start(None, strata_proto::PROTOCOL_VERSION, &[]).await;
    let mut one = one_task(&h, true).await;
    let (req, tx) = h.next_subscription().await;
    assert_eq!(req.demand.len(), 1);
    send(
        &tx,
        vec![
            offers(vec![offer("offer-1", 0.5), offer("offer-2", 4.0)]),
            update("task-2", TaskState::TaskFailed, vec![]),
            update("task-1", TaskState::TaskRunning, vec![]),
            update("task-1", TaskState::TaskFailed, vec![]),
        ],
    )
    .await;
    let mut seen = Vec::new();
    let options = OneTaskOptions::new(DEADLINE, Until::Ended);
    let launched = one
        .follow(the_task(), &options, |n| match n {
            Notice::Launching(o) => seen.push(format!("launching on {}", o.id)),
            Notice::Update(s) => seen.push(s.state.as_str_name().to_owned()),
            Notice::Warning(w) => seen.push(w.to_owned()),
        })
        .await
        .unwrap();
    assert_eq!(
        seen,
        ["launching on offer-2", "TASK_RUNNING", "TASK_FAILED"]
    );
    let End::Ended(status) = launched.end else {
        panic!("expected the task's end, got {:?}", launched.end);
    };
    assert_eq!(status.state, TaskState::TaskFailed);
    assert_eq!(status.describe(), "TASK_FAILED (REASON_UNSPECIFIED)");
    assert!(
        matches!(h.next_call().await, pb::call::Call::Decline(d) if d.offer_ids == ["offer-1"])
    );
    assert!(matches!(h.next_call().await, pb::call::Call::Accept(a) if a.offer_ids == ["offer-2"]));
    assert!(matches!(h.next_call().await, pb::call::Call::Suppress(_)));
    one.teardown().await;
    assert!(matches!(h.next_call().await, pb::call::Call::Teardown(_)));
}

#[tokio::test]
async fn one_task_until_running_ends_at_running_or_handover_and_fails_on_an_end() {
    let mut h = start(None, strata_proto::PROTOCOL_VERSION, &[]).await;
    let options = OneTaskOptions::new(DEADLINE, Until::Running);
    // Running.
    let mut one = one_task(&h, false).await;
    let (_, tx) = h.next_subscription().await;
    let events = vec![
        offers(vec![offer("offer-1", 4.0)]),
        update("task-1", TaskState::TaskRunning, vec![]),
    ];
    send(&tx, events).await;
    let launched = one.follow(the_task(), &options, |_| {}).await.unwrap();
    assert_eq!(launched.end, End::Running);
    assert!(matches!(h.next_call().await, pb::call::Call::Accept(_)));
    assert!(matches!(h.next_call().await, pb::call::Call::Suppress(_)));
    one.leave();
    // Handed over: the subscription closes after the launch.
    let mut one = one_task(&h, false).await;
    let (_, tx) = h.next_subscription().await;
    send(&tx, vec![offers(vec![offer("offer-1", 4.0)])]).await;
    let close_after_launch = async {
        assert!(matches!(h.next_call().await, pb::call::Call::Accept(_)));
        drop(tx);
    };
    let (launched, ()) = tokio::join!(one.follow(the_task(), &options, |_| {}), close_after_launch);
    assert_eq!(launched.unwrap().end, End::HandedOver);
    // Ended before it ran: an error, and the framework is torn down.
    let mut one = one_task(&h, false).await;
    let (_, tx) = h.next_subscription().await;
    let events = vec![
        offers(vec![offer("offer-1", 4.0)]),
        update("task-1", TaskState::TaskError, vec![]),
    ];
    send(&tx, events).await;
    let err = one.follow(the_task(), &options, |_| {}).await.unwrap_err();
    assert!(matches!(err, LaunchError::Ended(ref s) if s.state == TaskState::TaskError));
    assert_eq!(
        err.to_string(),
        "the task ended TASK_ERROR (REASON_UNSPECIFIED)"
    );
}

#[tokio::test]
async fn one_task_not_placed_in_time_is_an_error_and_a_teardown() {
    let mut h = start(None, strata_proto::PROTOCOL_VERSION, &[]).await;
    let mut one = one_task(&h, true).await;
    let (_, tx) = h.next_subscription().await;
    send(&tx, vec![offers(vec![offer("offer-1", 0.5)])]).await;
    let options = OneTaskOptions::new(Duration::from_millis(300), Until::Ended);
    let err = one.follow(the_task(), &options, |_| {}).await.unwrap_err();
    assert!(matches!(err, LaunchError::NotPlaced { .. }), "{err}");
    assert!(matches!(h.next_call().await, pb::call::Call::Decline(_)));
    assert!(matches!(h.next_call().await, pb::call::Call::Teardown(_)));
}
