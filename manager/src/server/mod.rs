//! The manager process: the effectful shell around the sans-IO [`Master`].
//!
//! One tokio task (the *core*) owns the `Master`. The gRPC and HTTP handlers
//! send it [`Input`]s over a channel; the core processes a batch of inputs,
//! runs due timers and an allocation cycle, then carries out the actions:
//! first every registry write (one durable redb transaction), then the
//! messages to agents and frameworks, then the replies to the callers. So
//! nothing is acknowledged before it is durable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_proto::ids::{AgentId, FrameworkId, StreamId};
use strata_proto::pb;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, info_span, warn};

use crate::api::Role;
use crate::inbox::{AgentTx, CoreHandle, FrameworkTx, Input};
use crate::master::{Action, Master, MasterError, PersistOp, Timestamp};
use crate::registry::Registry;

mod config;
mod lead;

pub use config::{ManagerConfig, ServerError};
pub use lead::StoreConfig;

/// A running manager.
pub struct ManagerHandle {
    addr: SocketAddr,
    dns_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<()>,
    deposed: watch::Receiver<bool>,
}

impl ManagerHandle {
    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// Where DNS is served, if it is.
    pub fn dns_address(&self) -> Option<SocketAddr> {
        self.dns_addr
    }

    /// Resolves when this manager has lost its leadership (and stopped
    /// acting); never, with the local registry.
    pub async fn deposed(&self) {
        let mut d = self.deposed.clone();
        d.wait_for(|lost| *lost).await.ok();
    }

    /// Stops the manager and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
        self.join.await.ok();
    }
}

/// The wall clock at start, advanced by a monotonic clock (so a step of
/// the system clock never moves the manager's time backwards).
struct Clock {
    base: Timestamp,
    start: Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            base: Timestamp::now(),
            start: Instant::now(),
        }
    }
    fn now(&self) -> Timestamp {
        self.base + self.start.elapsed()
    }
}

/// The refusal of a caller acting for a framework another principal
/// subscribed (`None`: a new framework, or one it may act for).
fn taken_by_another(
    master: &Master,
    framework: &str,
    caller: &crate::auth::acl::Subject,
) -> Option<MasterError> {
    let id = FrameworkId::new(framework);
    let recorded = master.framework_principal(&id)?;
    (!caller.may_act_for(recorded)).then(|| MasterError::PrincipalMismatch {
        framework_id: id,
        principal: caller.name().to_owned(),
    })
}

/// How the services scheduler reads its tasks' cpu use from the core.
fn cpu_usage_source(tx: mpsc::Sender<Input>) -> crate::services::runner::CpuUsageFn {
    std::sync::Arc::new(move |framework| {
        let tx = tx.clone();
        Box::pin(async move {
            let (reply, wait) = oneshot::channel();
            if tx.send(Input::TaskCpus { framework, reply }).await.is_err() {
                return Default::default();
            }
            wait.await.unwrap_or_default()
        })
    })
}

/// Starts a manager: binds the listener, leads (at once with the local
/// registry; after an election with etcd, redirecting requests to the
/// leader meanwhile), recovers the master from the registry and serves
/// until shut down or, with etcd, until its leadership is lost.
pub async fn spawn(cfg: ManagerConfig) -> Result<ManagerHandle, ServerError> {
    if !cfg.listen.ip().is_loopback() && cfg.token.is_none() {
        return Err(ServerError::TokenRequired { addr: cfg.listen });
    }
    // The local registry is opened before anything listens: a bad one is
    // an error of the start.
    let local = match &cfg.store {
        StoreConfig::Local => Some(lead::lead_local(Registry::open(
            &cfg.work_dir.join("registry.redb"),
        )?)?),
        #[cfg(feature = "etcd")]
        StoreConfig::Etcd(_) => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let (tx, rx) = mpsc::channel(65_536);
    let (services, services_rx) = if cfg.services {
        let (h, rx) = crate::services::ServicesHandle::channel();
        (Some(h), Some(rx))
    } else {
        (None, None)
    };
    let core_tx = tx.clone();
    let audit_path = cfg
        .audit_log
        .clone()
        .unwrap_or_else(|| cfg.work_dir.join("audit.jsonl"));
    let audit = crate::auth::audit::AuditLog::open(&audit_path).map_err(|source| {
        ServerError::AuditLog {
            path: audit_path.clone(),
            source,
        }
    })?;
    let access = Arc::new(
        crate::auth::Access::new(cfg.token.as_deref())
            .with_acls(cfg.acls.clone())
            .with_audit(Some(audit)),
    );
    let core = CoreHandle {
        tx,
        access: access.clone(),
        jobs: Arc::new(crate::jobs::JobHistory::new(cfg.job_history)),
    };
    let (role_tx, role_rx) = watch::channel(Role::Standby { leader: None });
    let dns = match &cfg.dns {
        Some(d) => {
            let domain = crate::services::dns::domain_name(&d.domain)?;
            let sockets = crate::services::dns::DnsSockets::bind(d.listen).await?;
            let dns_addr =
                sockets
                    .local_addr()
                    .map_err(|source| crate::services::dns::DnsError::Bind {
                        addr: d.listen,
                        source,
                    })?;
            let source = crate::services::dns::DnsSource {
                domain,
                ttl: d.ttl,
                routes: services.as_ref().map(|s| s.routes()),
                role: role_rx.clone(),
                me: cfg.advertise.clone().unwrap_or_else(|| addr.to_string()),
            };
            Some((
                dns_addr,
                tokio::spawn(crate::services::dns::serve(sockets, source)),
            ))
        }
        None => None,
    };
    let dns_addr = dns.as_ref().map(|(a, _)| *a);
    let router = crate::api::gated_router(core, services, role_rx);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (deposed_tx, deposed_rx) = watch::channel(false);
    info!(address = %addr, "manager listening (grpc and http)");
    let join = tokio::spawn(async move {
        let (graceful_tx, graceful_rx) = oneshot::channel::<()>();
        let mut serve = tokio::spawn(async move {
            // Small messages (offers, calls, updates) must not wait for
            // Nagle's algorithm.
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                tcp.set_nodelay(true).ok();
            });
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                graceful_rx.await.ok();
            });
            if let Err(e) = serve.await {
                error!(error = %e, "manager server failed");
            }
        });
        let mut stop_rx = stop_rx;
        let led = match local {
            Some(led) => Some(led),
            None => tokio::select! {
                _ = &mut stop_rx => None,
                led = elect(&cfg, addr, &role_tx) => Some(led),
            },
        };
        if let Some(led) = led {
            let resign = serve_as_leader(
                led,
                &access,
                &cfg,
                addr,
                rx,
                core_tx,
                services_rx,
                &role_tx,
                &mut stop_rx,
                &mut serve,
                &deposed_tx,
            )
            .await;
            if let Some(r) = resign {
                r.resign().await;
            }
        }
        graceful_tx.send(()).ok();
        if let Some((_, dns)) = dns {
            dns.abort();
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut serve)
            .await
            .is_err()
        {
            warn!("connections still open 5 s after shutdown; closing them");
            serve.abort();
        }
        info!("manager stopped");
    });
    Ok(ManagerHandle {
        addr,
        dns_addr,
        shutdown: Some(stop_tx),
        join,
        deposed: deposed_rx,
    })
}

/// Campaigns in the store `cfg` names until elected, telling the gate
/// where the leader is meanwhile.
#[cfg_attr(not(feature = "etcd"), allow(unused_variables))]
async fn elect(cfg: &ManagerConfig, addr: SocketAddr, role: &watch::Sender<Role>) -> lead::Led {
    match &cfg.store {
        StoreConfig::Local => std::future::pending().await,
        #[cfg(feature = "etcd")]
        StoreConfig::Etcd(url) => {
            let me = crate::registry::etcd::LeaderInfo {
                id: cfg.advertise.clone().unwrap_or_else(|| addr.to_string()),
                advertise: cfg.advertise.clone().unwrap_or_else(|| addr.to_string()),
                since_ms: Timestamp::now().as_millis(),
            };
            lead::lead_etcd(url, &me, cfg.lease_ttl, |leader| {
                role.send_replace(Role::Standby { leader });
            })
            .await
        }
    }
}

/// Recovers the master from what leading started with and runs it (the
/// core, the services scheduler) until stopped, the listener fails or the
/// leadership is lost. Returns how to resign, on a graceful stop.
#[allow(clippy::too_many_arguments)]
async fn serve_as_leader(
    led: lead::Led,
    access: &crate::auth::Access,
    cfg: &ManagerConfig,
    addr: SocketAddr,
    rx: mpsc::Receiver<Input>,
    core_tx: mpsc::Sender<Input>,
    services_rx: Option<crate::services::runner::Inbox>,
    role: &watch::Sender<Role>,
    stop_rx: &mut oneshot::Receiver<()>,
    serve: &mut tokio::task::JoinHandle<()>,
    deposed: &watch::Sender<bool>,
) -> Option<lead::Resign> {
    let mut master_cfg = cfg.master.clone();
    master_cfg.instance = format!("m{}", led.term);
    master_cfg.epoch = led.term;
    master_cfg.address = cfg.advertise.clone().unwrap_or_else(|| addr.to_string());
    let clock = Clock::new();
    let snapshot = led.snapshot;
    let recovered = !snapshot.agents.is_empty() || !snapshot.frameworks.is_empty();
    let master = Master::recover(master_cfg, snapshot, clock.now());
    if recovered {
        info!("manager recovered state from its registry");
    }
    let services_store = led.backend.services_store(&cfg.work_dir);
    if let Err(e) = access
        .lead(led.backend.principals_store(&cfg.work_dir))
        .await
    {
        // Without its principals the leader would refuse their tokens:
        // it says so, and the operator's token still works.
        error!(error = %e, "cannot load the principals");
    }
    let (core_stop_tx, core_stop_rx) = oneshot::channel::<()>();
    // Turns true when a write is refused because another manager leads.
    let (fenced_tx, mut fenced) = watch::channel(false);
    let core_task = tokio::spawn(run_core(
        master,
        led.backend,
        rx,
        clock,
        cfg.tick,
        core_stop_rx,
        fenced_tx,
    ));
    role.send_replace(Role::Leading);
    info!(term = led.term, "manager leads");
    let services_task = services_rx.map(|rx| {
        let rc = crate::services::RunnerConfig {
            manager: addr.to_string(),
            token: cfg.token.clone(),
            store: services_store,
            classes: cfg.master.classes.clone(),
            cpu_usage: Some(cpu_usage_source(core_tx.clone())),
        };
        tokio::spawn(crate::services::runner::run(rc, rx))
    });
    let mut lost = led.lost;
    let lost_lease = async {
        let lease = async {
            match lost.as_mut() {
                #[cfg(feature = "etcd")]
                Some(_) if crate::registry::etcd::unfenced() => std::future::pending().await,
                Some(l) => {
                    l.wait_for(|lost| *lost).await.ok();
                }
                None => std::future::pending().await,
            }
        };
        // A fenced write is news of a new leader before the lease says so.
        let refused = async {
            if fenced.wait_for(|f| *f).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = lease => {}
            _ = refused => {}
        }
    };
    let mut resign = led.resign;
    tokio::select! {
        _ = stop_rx => {}
        _ = &mut *serve => {}
        _ = lost_lease => {
            error!("leadership lost; this manager stops acting");
            role.send_replace(Role::Standby { leader: None });
            deposed.send_replace(true);
            resign = None;
        }
    }
    // The services scheduler goes first: it is a client of the core.
    if let Some(t) = services_task {
        t.abort();
        t.await.ok();
    }
    // Stop the core first: it owns every agent link and subscription
    // stream, and dropping them ends those long-lived responses, so the
    // graceful shutdown of the listener does not wait on them forever.
    core_stop_tx.send(()).ok();
    core_task.await.ok();
    resign
}

struct Routes {
    agents: HashMap<AgentId, (u64, AgentTx)>,
    frameworks: HashMap<FrameworkId, (StreamId, FrameworkTx)>,
}

enum Reply {
    Register(
        oneshot::Sender<Result<AgentId, MasterError>>,
        Result<AgentId, MasterError>,
    ),
    Subscribe(
        oneshot::Sender<Result<(FrameworkId, StreamId), MasterError>>,
        Result<(FrameworkId, StreamId), MasterError>,
    ),
    Unit(
        oneshot::Sender<Result<(), MasterError>>,
        Result<(), MasterError>,
    ),
}

async fn run_core(
    mut master: Master,
    mut registry: lead::Backend,
    mut rx: mpsc::Receiver<Input>,
    clock: Clock,
    tick: Duration,
    mut stop: oneshot::Receiver<()>,
    fenced: watch::Sender<bool>,
) {
    let mut routes = Routes {
        agents: HashMap::new(),
        frameworks: HashMap::new(),
    };
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(1024);
    // Writes of batches whose write failed: written first with the next,
    // so the registry catches up with the master once the store is back.
    let mut unwritten: Vec<PersistOp> = Vec::new();
    loop {
        let mut ticked = false;
        tokio::select! {
            // A stop goes first (a deposed leader acts no more), then the
            // timer (never starved by a busy queue; it reads the queue too).
            biased;
            _ = &mut stop => break,
            _ = ticker.tick() => ticked = true,
            n = rx.recv_many(&mut batch, 1024) => if n == 0 { break },
        }
        if ticked {
            // What queued while the last batch was being written (a slow
            // registry disk, a slow store) goes first: the tick must see
            // the heartbeats it holds, or it takes live agents for lost.
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(input) => batch.push(input),
                    Err(_) => break,
                }
            }
        }
        let now = clock.now();
        let mut replies = Vec::new();
        for input in batch.drain(..) {
            handle_input(&mut master, &mut routes, now, input, &mut replies);
        }
        if ticked {
            master.tick(now);
        }
        master.allocate(now);
        let actions = master.drain_actions();
        let ops: Vec<PersistOp> = unwritten
            .drain(..)
            .chain(actions.iter().filter_map(|a| match a {
                Action::Persist(op) => Some(op.clone()),
                _ => None,
            }))
            .collect();
        // A write that cannot land (a store out of reach retries for
        // seconds) must not hold a stop back: the batch is dropped, its
        // messages unsent and its callers answered by the dropped replies.
        let written = tokio::select! {
            biased;
            _ = &mut stop => break,
            r = registry.apply(&ops) => r,
        };
        if let Err(e) = written {
            // Without durability we must not acknowledge: fail the callers.
            error!(error = %e, "registry write failed; refusing the inputs of this batch");
            if matches!(e, crate::registry::RegistryError::Fenced { .. }) {
                // Another manager leads: act no more, not even the
                // messages of this batch.
                fenced.send_replace(true);
                break;
            }
            unwritten = ops;
            disconnect_skipped(&mut master, &mut routes, now, &actions);
            let refused = || MasterError::StoreUnavailable {
                reason: e.to_string(),
            };
            for r in replies {
                match r {
                    Reply::Register(tx, _) => drop(tx.send(Err(refused()))),
                    Reply::Subscribe(tx, _) => drop(tx.send(Err(refused()))),
                    Reply::Unit(tx, _) => drop(tx.send(Err(refused()))),
                }
            }
            continue;
        }
        for a in actions {
            carry_out(&mut routes, a);
        }
        for r in replies {
            match r {
                Reply::Register(tx, v) => drop(tx.send(v)),
                Reply::Subscribe(tx, v) => drop(tx.send(v)),
                Reply::Unit(tx, v) => drop(tx.send(v)),
            }
        }
    }
    info!("manager core stopped");
}

fn handle_input(
    master: &mut Master,
    routes: &mut Routes,
    now: Timestamp,
    input: Input,
    replies: &mut Vec<Reply>,
) {
    match input {
        Input::AgentRegister {
            reg,
            conn,
            tx,
            reply,
        } => {
            let r = master.agent_register(now, reg);
            if let Ok(id) = &r {
                routes.agents.insert(id.clone(), (conn, tx));
            }
            replies.push(Reply::Register(reply, r));
        }
        Input::AgentMessage {
            agent,
            conn,
            message,
        } => {
            if routes.agents.get(&agent).map(|(c, _)| *c) != Some(conn) {
                return;
            }
            let r = match message {
                pb::agent_message::Message::Heartbeat(_) => master.agent_heartbeat(now, &agent),
                pb::agent_message::Message::Update(u) => master.agent_update(now, &agent, u),
                pb::agent_message::Message::Usage(u) => master.agent_usage(now, &agent, u),
                pb::agent_message::Message::Register(_) => Ok(()),
            };
            if let Err(e) = r {
                warn!(agent_id = %agent, error = %e, "agent message refused; closing its link");
                if let Some((_, tx)) = routes.agents.remove(&agent) {
                    tx.try_send(Err(e.into())).ok();
                }
                master.agent_disconnected(now, &agent);
            }
        }
        Input::AgentGone { agent, conn } => {
            if routes.agents.get(&agent).map(|(c, _)| *c) == Some(conn) {
                routes.agents.remove(&agent);
                master.agent_disconnected(now, &agent);
            }
        }
        Input::Subscribe {
            req,
            caller,
            tx,
            reply,
        } => {
            let (id, name) = req
                .framework
                .as_ref()
                .map(|f| (f.framework_id.as_str(), f.name.as_str()))
                .unwrap_or_default();
            // A first subscription has no id yet: it is recorded once given.
            let span = info_span!(
                "framework",
                framework_id = tracing::field::Empty,
                name = name
            );
            if !id.is_empty() {
                span.record("framework_id", id);
            }
            let _in = span.enter();
            let r = match taken_by_another(master, id, &caller) {
                Some(e) => Err(e),
                None => master.subscribe(now, req),
            };
            if let Ok((id, stream)) = &r {
                span.record("framework_id", id.as_str());
                routes.frameworks.insert(id.clone(), (stream.clone(), tx));
            }
            replies.push(Reply::Subscribe(reply, r));
        }
        Input::Call {
            call,
            caller,
            reply,
        } => {
            let _in = info_span!("framework", framework_id = call.framework_id.as_str()).entered();
            let r = match taken_by_another(master, &call.framework_id, &caller) {
                Some(e) => Err(e),
                None => master.call(now, call),
            };
            replies.push(Reply::Unit(reply, r));
        }
        Input::StreamClosed { framework, stream } => {
            let _in = info_span!("framework", framework_id = framework.as_str()).entered();
            if routes
                .frameworks
                .get(&framework)
                .is_some_and(|(s, _)| *s == stream)
            {
                routes.frameworks.remove(&framework);
            }
            master.framework_disconnected(now, &framework, &stream);
        }
        Input::State { reply } => {
            reply.send((master.state_view(now), master.gauges())).ok();
        }
        Input::Frameworks { reply } => {
            reply.send(master.framework_views()).ok();
        }
        Input::FrameworkPrincipal { framework, reply } => {
            reply
                .send(master.framework_principal(&framework).map(str::to_owned))
                .ok();
        }
        Input::TaskCpus { framework, reply } => {
            reply.send(master.task_cpus(&framework)).ok();
        }
        Input::SetRole {
            role,
            weight,
            quota,
            reply,
        } => {
            let r = master.set_role(role, weight, quota);
            replies.push(Reply::Unit(reply, r));
        }
        Input::Teardown { framework, reply } => {
            let _in = info_span!("framework", framework_id = framework.as_str()).entered();
            let r = master.teardown_framework(now, &framework);
            replies.push(Reply::Unit(reply, r));
        }
        Input::Drain {
            agent,
            deadline,
            reply,
        } => {
            let r = match deadline {
                Some(d) => master.drain_agent(now, &agent, d).map(|_| ()),
                None => master.undrain_agent(&agent),
            };
            replies.push(Reply::Unit(reply, r));
        }
    }
}

/// The messages of a batch whose write failed are not sent: they rest on
/// changes that are not durable. Every agent and framework that misses one
/// is disconnected instead, as a broken connection would be, so it comes
/// back and is reconciled (an agent re-registers with what it runs; the
/// master reports what it placed there and the agent lacks as gone).
fn disconnect_skipped(
    master: &mut Master,
    routes: &mut Routes,
    now: Timestamp,
    actions: &[Action],
) {
    for a in actions {
        match a {
            Action::ToAgent { agent, .. } => {
                if routes.agents.remove(agent).is_some() {
                    warn!(agent_id = %agent, "a message to the agent rests on an unwritten change; its link is closed");
                    master.agent_disconnected(now, agent);
                }
            }
            Action::ToFramework { framework, .. } => {
                if let Some((stream, tx)) = routes.frameworks.remove(framework) {
                    warn!(framework_id = %framework, "an event for the framework rests on an unwritten change; its stream is closed");
                    tx.try_send(Err(tonic::Status::unavailable(
                        "the manager's store refused a write; subscribe again",
                    )))
                    .ok();
                    master.framework_disconnected(now, framework, &stream);
                }
            }
            Action::Persist(_) | Action::CloseStream { .. } => {}
        }
    }
}

fn carry_out(routes: &mut Routes, action: Action) {
    match action {
        Action::Persist(_) => {}
        Action::ToAgent { agent, message } => {
            if let Some((_, tx)) = routes.agents.get(&agent)
                && tx.try_send(Ok(message)).is_err()
            {
                warn!(agent_id = %agent, "agent link is full or closed; message dropped (the agent re-registers)");
            }
        }
        Action::ToFramework { framework, event } => {
            if let Some((_, tx)) = routes.frameworks.get(&framework)
                && tx.try_send(Ok(event)).is_err()
            {
                warn!(framework_id = %framework, "framework stream is full or closed; event dropped");
            }
        }
        Action::CloseStream { framework, stream } => {
            if routes
                .frameworks
                .get(&framework)
                .is_some_and(|(s, _)| *s == stream)
                && let Some((_, tx)) = routes.frameworks.remove(&framework)
            {
                tx.try_send(Err(tonic::Status::aborted(
                    "framework failed over or was removed",
                )))
                .ok();
            }
        }
    }
}

#[cfg(test)]
mod tests;
