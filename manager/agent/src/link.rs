//! The link to the manager: one `AgentLink.Attach` stream at a time,
//! reconnected whenever it fails, closes, or the manager answers `Error`
//! before `Registered`: at once to the next of several managers, and with
//! a doubling backoff (from `reconnect_backoff` up to 5 s) once each has
//! failed. The backoff starts over after a registration; a standby that
//! knows no leader yet is asked again after `reconnect_backoff`.
//!
//! The manager may be several (`H1:5050,H2:5050,H3:5050`), of which one
//! leads: the link tries them in turn, and goes straight to the leader
//! when a standby names it (`UNAVAILABLE` with `strata-leader`).
//!
//! The link owns no state: for each stream it hands the core a sender
//! (`CoreEvent::Connecting`), into which the core writes `Register` first and
//! then everything else, and it forwards what the manager sends.

use super::core::CoreEvent;
use std::time::Duration;
use strata_proto::pb::{agent_link_client::AgentLinkClient, manager_message};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

/// The longest delay between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How the link connects.
#[derive(Debug, Clone)]
pub(crate) struct LinkSettings {
    /// The managers' addresses, tried in turn.
    pub managers: Vec<String>,
    pub authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    pub first_backoff: Duration,
    /// The highest manager epoch registered with: lower ones are refused.
    pub epochs: std::sync::Arc<super::epoch::EpochGuard>,
}

/// The next delay after `current`: doubled, at most [`MAX_BACKOFF`].
pub fn next_backoff(current: Duration) -> Duration {
    current.saturating_mul(2).min(MAX_BACKOFF)
}

/// How one stream ended.
enum End {
    /// The manager accepted us (then the stream ended): retry soon.
    AfterRegistration,
    /// A standby named the leader: go there at once.
    Redirected(String),
    /// A standby that knows no leader yet (an election is under way):
    /// ask again soon, without backing off further.
    NoLeaderYet,
    /// Never registered on this stream: back off.
    BeforeRegistration,
    /// Shutting down.
    Shutdown,
}

/// Keeps a stream to the manager open until `shutdown`.
pub(crate) async fn run(
    settings: LinkSettings,
    core: mpsc::Sender<CoreEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let first = settings.first_backoff.max(Duration::from_millis(1));
    let mut backoff = first;
    let mut epoch = 0u64;
    let mut next = 0usize;
    let mut leader: Option<String> = None;
    // Failures since the last pause: the other managers are tried at once,
    // and the link backs off only once each has failed.
    let mut failed_in_round = 0usize;
    let managers = settings.managers.len().max(1);
    loop {
        epoch += 1;
        let manager = match leader.take() {
            Some(l) => l,
            None => {
                let m = settings.managers[next % settings.managers.len().max(1)].clone();
                next += 1;
                m
            }
        };
        let end = tokio::select! {
            end = attempt(&settings, &manager, &core, epoch) => end,
            _ = shutdown.changed() => End::Shutdown,
        };
        if core.send(CoreEvent::Disconnected { epoch }).await.is_err() {
            return;
        }
        let delay = match end {
            End::Shutdown => return,
            End::Redirected(to) => {
                info!(from = %manager, leader = %to, "following the leader");
                leader = Some(to);
                continue;
            }
            End::AfterRegistration => {
                backoff = first;
                failed_in_round = 0;
                first
            }
            End::NoLeaderYet => {
                failed_in_round = 0;
                first
            }
            End::BeforeRegistration => {
                failed_in_round += 1;
                if failed_in_round < managers {
                    continue;
                }
                failed_in_round = 0;
                let d = backoff;
                backoff = next_backoff(backoff);
                d
            }
        };
        debug!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting to the manager"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn attempt(
    settings: &LinkSettings,
    manager: &str,
    core: &mpsc::Sender<CoreEvent>,
    epoch: u64,
) -> End {
    let endpoint = match endpoint(manager) {
        Ok(e) => e,
        Err(e) => {
            warn!(manager = %manager, error = %e, "bad manager address");
            return End::BeforeRegistration;
        }
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            warn!(manager = %manager, error = %e, "cannot connect to the manager");
            return End::BeforeRegistration;
        }
    };
    let mut client = AgentLinkClient::new(channel)
        .max_decoding_message_size(strata_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(strata_proto::MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::unbounded_channel();
    if core
        .send(CoreEvent::Connecting { epoch, tx })
        .await
        .is_err()
    {
        return End::Shutdown;
    }
    let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
    if let Some(auth) = &settings.authorization {
        request
            .metadata_mut()
            .insert(strata_proto::AUTH_HEADER, auth.clone());
    }
    let mut stream = match client.attach(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            if let Some(leader) = leader_of(&status) {
                return End::Redirected(leader);
            }
            if status.code() == tonic::Code::Unavailable {
                debug!(manager = %manager, "a standby knows no leader yet");
                return End::NoLeaderYet;
            }
            warn!(manager = %manager, code = ?status.code(), message = %status.message(),
                "the manager refused the agent stream");
            return End::BeforeRegistration;
        }
    };
    let mut registered = false;
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                match &message.message {
                    Some(manager_message::Message::Registered(r)) => {
                        if !settings.epochs.admit(r.epoch) {
                            warn!(manager = %manager, epoch = r.epoch,
                                highest = settings.epochs.highest(),
                                "refusing a manager of an older epoch (a deposed leader)");
                            return End::BeforeRegistration;
                        }
                        registered = true;
                    }
                    Some(manager_message::Message::Error(e)) if !registered => {
                        warn!(manager = %manager, message = %e.message,
                            "the manager refused the registration");
                        return End::BeforeRegistration;
                    }
                    _ => {}
                }
                if core
                    .send(CoreEvent::Message {
                        epoch,
                        message: Box::new(message),
                    })
                    .await
                    .is_err()
                {
                    return End::Shutdown;
                }
            }
            Ok(None) => {
                info!(manager = %manager, "the manager closed the agent stream");
                break;
            }
            Err(status) => {
                warn!(manager = %manager, code = ?status.code(), message = %status.message(),
                    "the agent stream failed");
                break;
            }
        }
    }
    if registered {
        End::AfterRegistration
    } else {
        End::BeforeRegistration
    }
}

/// The leader a standby named in its refusal, if it did.
fn leader_of(status: &tonic::Status) -> Option<String> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    status
        .metadata()
        .get(strata_proto::LEADER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

/// Builds the endpoint for `http://{manager}`. An HTTP/2 ping every 2 s,
/// answered within 3 s, finds a manager that is paused or cut off (its
/// connection stays open) within 5 s, so the agent moves to a new leader
/// about as soon as that one leads.
pub(crate) fn endpoint(manager: &str) -> Result<Endpoint, tonic::transport::Error> {
    let manager = manager.strip_prefix("http://").unwrap_or(manager);
    Ok(Endpoint::from_shared(format!("http://{manager}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_hints() {
        let mut s = tonic::Status::unavailable("standby");
        assert_eq!(leader_of(&s), None);
        s.metadata_mut().insert(
            strata_proto::LEADER_HEADER,
            "10.0.0.1:5050".parse().unwrap(),
        );
        assert_eq!(leader_of(&s).as_deref(), Some("10.0.0.1:5050"));
        let mut other = tonic::Status::permission_denied("no");
        other.metadata_mut().insert(
            strata_proto::LEADER_HEADER,
            "10.0.0.1:5050".parse().unwrap(),
        );
        assert_eq!(leader_of(&other), None);
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        let mut d = Duration::from_millis(200);
        let mut seen = vec![];
        for _ in 0..7 {
            seen.push(d.as_millis());
            d = next_backoff(d);
        }
        assert_eq!(seen, vec![200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn endpoints_are_h2c() {
        let e = endpoint("127.0.0.1:5050").unwrap();
        assert_eq!(e.uri().to_string(), "http://127.0.0.1:5050/");
        let e = endpoint("http://localhost:5050").unwrap();
        assert_eq!(e.uri().to_string(), "http://localhost:5050/");
        assert!(endpoint("bad host:x").is_err());
    }
}
