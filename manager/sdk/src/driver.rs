//! The background task behind an [`EventStream`](crate::EventStream): reads
//! the manager's events, converts and de-duplicates them, acknowledges
//! updates, watches heartbeats and re-subscribes after a lost connection.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_proto::ids::{AgentId, OfferId};
use strata_proto::pb::{self, call::Call as C, event::Event as E};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::client::{Shared, ack_call, subscribe_leader};
use crate::dedup::Seen;
use crate::error::SdkError;
use crate::event::{Event, Offer, Subscribed, TaskStatus};

/// The connection is lost after this many heartbeat intervals without any
/// event.
pub(crate) const MISSED_HEARTBEATS: u32 = 3;

/// First delay before re-subscribing; doubled after each failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Longest delay between re-subscription attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The driver must stop: torn down, or nobody reads the events any more.
struct Stop;

/// A call made in the background (acknowledgements, declines of malformed
/// offers), sent one at a time in order.
type Background = (&'static str, C);

struct Driver {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Event>,
    background: mpsc::UnboundedSender<Background>,
    shutdown: watch::Receiver<bool>,
}

/// Runs until the framework is torn down, the event stream is dropped, or
/// the connection is lost for good.
pub(crate) async fn run(
    shared: Arc<Shared>,
    stream: tonic::Streaming<pb::Event>,
    tx: mpsc::Sender<Event>,
    shutdown: watch::Receiver<bool>,
) {
    let (background, rx) = mpsc::unbounded_channel();
    tokio::spawn(background_calls(shared.clone(), rx));
    let mut driver = Driver {
        shared,
        tx,
        background,
        shutdown,
    };
    driver.run(stream).await;
    let mut st = driver.shared.state();
    st.stream_id = None;
    st.offers.clear();
}

/// Sends background calls in order; failures are logged (an unacknowledged
/// update is redelivered by its agent, and then acknowledged again).
async fn background_calls(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Background>) {
    while let Some((operation, call)) = rx.recv().await {
        if let Err(error) = shared.call(operation, call).await {
            if error.is_transient() || matches!(error, SdkError::NotSubscribed { .. }) {
                tracing::debug!(operation, %error, "background call failed");
            } else {
                tracing::warn!(operation, %error, "background call failed");
            }
        }
    }
}

enum Next {
    Event(pb::Event),
    End,
    Failed(tonic::Status),
    Silent(Duration),
}

async fn next_message(stream: &mut tonic::Streaming<pb::Event>, wait: Option<Duration>) -> Next {
    let message = match wait {
        Some(wait) => match tokio::time::timeout(wait, stream.message()).await {
            Ok(m) => m,
            Err(_) => return Next::Silent(wait),
        },
        None => stream.message().await,
    };
    match message {
        Ok(Some(event)) => Next::Event(event),
        Ok(None) => Next::End,
        Err(status) => Next::Failed(status),
    }
}

/// `delay` scaled by a factor in [0.75, 1.25), so that many frameworks
/// cut off together do not come back in lockstep.
fn jitter(delay: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    delay.mul_f64(0.75 + f64::from(nanos % 1000) / 2000.0)
}

impl Driver {
    async fn run(&mut self, mut stream: tonic::Streaming<pb::Event>) {
        loop {
            let reason = match self.pump(&mut stream).await {
                Ok(reason) => reason,
                Err(Stop) => return,
            };
            drop(stream);
            let (framework_id, tearing_down) = {
                let st = self.shared.state();
                (st.framework_id.clone(), st.tearing_down || st.torn_down)
            };
            if tearing_down {
                return;
            }
            tracing::warn!(%framework_id, %reason, "lost the connection to the manager");
            let outstanding: Vec<OfferId> = {
                let mut st = self.shared.state();
                st.stream_id = None;
                st.offers.drain().map(|(id, _)| id).collect()
            };
            if self.emit(Event::Disconnected { reason }).await.is_err() {
                return;
            }
            for id in outstanding {
                if self.emit(Event::Rescind(id)).await.is_err() {
                    return;
                }
            }
            if !self.shared.config.reconnect {
                return;
            }
            let Some((next, sub)) = self.resubscribe().await else {
                return;
            };
            tracing::info!(%framework_id, stream_id = %sub.stream_id, "re-subscribed to the manager");
            stream = next;
            self.shared.subscribed(&sub);
            let event = Event::Subscribed {
                framework_id: sub.framework_id,
                heartbeat_interval: sub.heartbeat_interval,
            };
            if self.emit(event).await.is_err() {
                return;
            }
        }
    }

    /// Hands an event to the framework.
    async fn emit(&self, event: Event) -> Result<(), Stop> {
        self.tx.send(event).await.map_err(|_| Stop)
    }

    fn torn_down(&self) -> bool {
        *self.shutdown.borrow() || self.shared.state().torn_down
    }

    /// Reads events until the stream is lost (returning why) or the driver
    /// must stop.
    async fn pump(&mut self, stream: &mut tonic::Streaming<pb::Event>) -> Result<String, Stop> {
        loop {
            if self.torn_down() {
                return Err(Stop);
            }
            let interval = self.shared.state().heartbeat_interval;
            // No deadline when the manager sends no heartbeats (interval 0)
            // or an interval too large to count.
            let wait = (!interval.is_zero())
                .then(|| interval.checked_mul(MISSED_HEARTBEATS))
                .flatten();
            let next = tokio::select! {
                _ = self.shutdown.changed() => return Err(Stop),
                _ = self.tx.closed() => return Err(Stop),
                next = next_message(stream, wait) => next,
            };
            match next {
                Next::Event(event) => self.handle(event).await?,
                _ if self.torn_down() => return Err(Stop),
                Next::End => return Ok("the manager closed the event stream".into()),
                Next::Failed(status) => {
                    let timeout = self.shared.config.connect_timeout;
                    let error = SdkError::from_status("subscribe", timeout, status);
                    return Ok(format!("the event stream failed: {error}"));
                }
                Next::Silent(after) => {
                    return Ok(format!(
                        "no event from the manager for {after:?} ({MISSED_HEARTBEATS} heartbeat intervals)"
                    ));
                }
            }
        }
    }

    async fn handle(&mut self, event: pb::Event) -> Result<(), Stop> {
        let Some(event) = event.event else {
            return self
                .emit(Event::Error("the manager sent an empty event".into()))
                .await;
        };
        match event {
            E::Subscribed(s) => match Subscribed::from_proto(s) {
                Ok(s) => {
                    self.shared.subscribed(&s);
                    self.emit(Event::Subscribed {
                        framework_id: s.framework_id,
                        heartbeat_interval: s.heartbeat_interval,
                    })
                    .await
                }
                Err(e) => self.malformed(e).await,
            },
            E::Offers(offers) => self.offers(offers.offers).await,
            E::Rescind(r) if r.offer_id.is_empty() => {
                self.emit(Event::Error(
                    "malformed event from the manager: rescind has no offer_id".into(),
                ))
                .await
            }
            E::Rescind(r) => {
                let id = OfferId::new(r.offer_id);
                self.shared.state().offers.remove(&id);
                self.emit(Event::Rescind(id)).await
            }
            E::Update(u) => match u.status.map(TaskStatus::from_proto) {
                None => {
                    self.emit(Event::Error(
                        "malformed event from the manager: update has no status".into(),
                    ))
                    .await
                }
                Some(Err(e)) => self.malformed(e).await,
                Some(Ok(status)) => self.update(status).await,
            },
            E::Failure(f) => {
                let agent_id = (!f.agent_id.is_empty()).then(|| f.agent_id.into());
                self.emit(Event::Failure {
                    agent_id,
                    message: f.message,
                })
                .await
            }
            E::Drain(d) if d.agent_id.is_empty() => {
                self.emit(Event::Error(
                    "malformed event from the manager: drain has no agent_id".into(),
                ))
                .await
            }
            E::Drain(d) => {
                let agent_id = AgentId::new(d.agent_id);
                if !d.draining {
                    return self.emit(Event::AgentUndrained { agent_id }).await;
                }
                match crate::event::seconds("drain", "deadline", d.deadline) {
                    Ok(since_epoch) => {
                        self.emit(Event::AgentDraining {
                            agent_id,
                            deadline: UNIX_EPOCH + since_epoch,
                        })
                        .await
                    }
                    Err(e) => self.malformed(e).await,
                }
            }
            E::Error(e) => self.emit(Event::Error(e.message)).await,
            E::Heartbeat(_) => self.emit(Event::Heartbeat).await,
        }
    }

    async fn malformed(&self, error: impl std::fmt::Display) -> Result<(), Stop> {
        tracing::warn!(%error, "malformed event from the manager");
        self.emit(Event::Error(format!(
            "malformed event from the manager: {error}"
        )))
        .await
    }

    /// Delivers the valid offers of a batch; a malformed offer becomes an
    /// error event and is declined, so its resources are not held.
    async fn offers(&mut self, offers: Vec<pb::Offer>) -> Result<(), Stop> {
        let mut good = Vec::with_capacity(offers.len());
        let mut errors = Vec::new();
        for offer in offers {
            let id = offer.offer_id.clone();
            match Offer::from_proto(offer) {
                Ok(o) => good.push(o),
                Err(e) => {
                    if !id.is_empty() {
                        self.spawn_call(
                            "decline",
                            C::Decline(pb::call::Decline {
                                offer_ids: vec![id],
                                filters: None,
                            }),
                        );
                    }
                    errors.push(e);
                }
            }
        }
        {
            let mut st = self.shared.state();
            for o in &good {
                st.offers.insert(o.id.clone(), o.agent_id.clone());
            }
        }
        if !good.is_empty() {
            self.emit(Event::Offers(good)).await?;
        }
        for e in errors {
            self.malformed(e).await?;
        }
        Ok(())
    }

    /// Delivers an update once per uuid and acknowledges as configured.
    async fn update(&mut self, status: TaskStatus) -> Result<(), Stop> {
        let Some(uuid) = status.uuid else {
            return self.emit(Event::Update(status)).await;
        };
        let auto = self.shared.config.auto_acknowledge;
        let seen = self.shared.dedup().observe(uuid);
        match seen {
            Seen::New => {
                let ack = auto.then(|| ack_call(&status, uuid));
                self.emit(Event::Update(status)).await?;
                if let Some(ack) = ack {
                    self.shared.dedup().mark_acked(uuid);
                    self.spawn_call("acknowledge", ack);
                }
            }
            Seen::Duplicate { acked } if acked || auto => {
                tracing::debug!(task_id = %status.task_id, "duplicate update acknowledged again");
                self.spawn_call("acknowledge", ack_call(&status, uuid));
            }
            Seen::Duplicate { .. } => {
                tracing::debug!(
                    task_id = %status.task_id,
                    "duplicate of an update not yet acknowledged by the framework; dropped"
                );
            }
        }
        Ok(())
    }

    fn spawn_call(&self, operation: &'static str, call: C) {
        // The worker outlives the driver's sender, so this cannot fail.
        self.background.send((operation, call)).ok();
    }

    /// Re-subscribes with the same framework id, with backoff, until the
    /// failover timeout would have passed. `None`: give up (an error event
    /// has been sent when that is news to the framework).
    async fn resubscribe(&mut self) -> Option<(tonic::Streaming<pb::Event>, Subscribed)> {
        let failover = self.shared.config.framework.failover_timeout;
        // Zero means the manager's default, unknown here: keep trying.
        let deadline = (!failover.is_zero())
            .then(|| Instant::now().checked_add(failover))
            .flatten();
        let mut delay = INITIAL_BACKOFF;
        let mut attempt = 0u32;
        loop {
            let wake = Instant::now() + jitter(delay);
            if deadline.is_some_and(|d| wake >= d) {
                let message = format!(
                    "gave up re-subscribing after {attempt} attempts: the failover timeout \
                     ({failover:?}) has passed, so the manager has removed the framework"
                );
                self.emit(Event::Error(message)).await.ok();
                return None;
            }
            tokio::select! {
                _ = self.shutdown.changed() => return None,
                _ = self.tx.closed() => return None,
                _ = tokio::time::sleep_until(wake) => {}
            }
            attempt += 1;
            let (framework_id, demand, suppressed) = {
                let st = self.shared.state();
                (st.framework_id.clone(), st.demand.clone(), st.suppressed)
            };
            let shared = &self.shared;
            let result = tokio::select! {
                _ = self.shutdown.changed() => return None,
                _ = self.tx.closed() => return None,
                r = subscribe_leader(&shared.config, Some(&framework_id), &demand, suppressed) => r,
            };
            match result {
                Ok((client, stream, sub)) => {
                    // The manager that leads now (perhaps another one).
                    shared.set_client(client);
                    return Some((stream, sub));
                }
                Err(error) if error.is_transient() => {
                    tracing::debug!(attempt, %error, "re-subscription failed; retrying");
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
                Err(error) => {
                    tracing::warn!(attempt, %error, "re-subscription refused");
                    self.emit(Event::Error(format!("re-subscription refused: {error}")))
                        .await
                        .ok();
                    return None;
                }
            }
        }
    }
}
