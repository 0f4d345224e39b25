//! The registry in etcd, with leader election and fenced writes.
//!
//! Several managers share one etcd cluster. Each campaigns for the leader
//! key (`PREFIX/leader`) with a lease: the one whose transaction creates the
//! key leads, and the key's create revision is its **epoch**, larger than
//! every earlier leader's (etcd revisions only grow). The others wait on a
//! watch of the key and try again when it goes (resigned, or its lease
//! expired). The leader keeps its lease alive; when it cannot within the
//! lease's time to live, its [`Leadership::lost`] flips and it must stop
//! acting at once.
//!
//! Every write is a transaction that holds only if the leader key still
//! has the writer's epoch as its create revision, so a leader that lost its
//! lease (paused, partitioned) can never write over its successor's state
//! (Jepsen's advice for etcd: locks alone do not exclude, fencing does).
//!
//! Records use the same key schema as the embedded registry:
//! `PREFIX/agents/ID`, `PREFIX/frameworks/ID`, `PREFIX/roles/ROLE`,
//! `PREFIX/tombstones/ID` (removed frameworks), JSON
//! values.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{RegistryError, encode};
use crate::master::{PersistOp, RegistrySnapshot};

/// Who leads (the leader key's value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// The manager's name (unique among the managers).
    pub id: String,
    /// Where clients reach it (`host:port`).
    pub advertise: String,
    /// When it began leading, milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// This manager's leadership: its epoch, and a flag that turns true, once
/// and for good, when the lease behind it is lost.
#[derive(Clone, Debug)]
pub struct Leadership {
    /// The leader key's create revision: larger than any earlier leader's.
    pub epoch: u64,
    /// True once the lease is lost (or resigned): stop acting.
    pub lost: watch::Receiver<bool>,
    lease: i64,
}

impl Leadership {
    /// Whether the lease behind it is still held, as far as this process
    /// knows.
    pub fn held(&self) -> bool {
        !*self.lost.borrow()
    }
}

/// A parsed `etcd://H1:2379,H2:2379[/prefix]` store URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http://host:port` of each member.
    pub endpoints: Vec<String>,
    /// The key prefix (default `/strata`), without a trailing slash.
    pub prefix: String,
}

impl std::str::FromStr for EtcdUrl {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| RegistryError::BadUrl {
            url: s.to_owned(),
            why: why.to_owned(),
        };
        let rest = s
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("it must start with etcd://"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((h, p)) => (h, format!("/{}", p.trim_matches('/'))),
            None => (rest, "/strata".to_owned()),
        };
        if prefix == "/" {
            return Err(bad("the key prefix is empty"));
        }
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("http://{h}"))
            .collect();
        if endpoints.is_empty() {
            return Err(bad("it names no member (etcd://HOST:PORT,…)"));
        }
        Ok(EtcdUrl { endpoints, prefix })
    }
}

/// The registry in etcd (see the module documentation).
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
    prefix: String,
    /// The epoch every write is fenced on (set once elected).
    epoch: Option<u64>,
    /// Writes without the fence: the fault suite's negative control only
    /// ([`UNFENCED_ENV`]).
    unfenced: bool,
}

/// Set to `1`, a manager writes without fencing and does not stop when it
/// loses its lease: **unsafe**, for the fault suite's negative control,
/// which must then see a deposed leader's writes land.
pub const UNFENCED_ENV: &str = "STRATA_TEST_UNFENCED";

/// Whether the negative control's switch is on (see [`UNFENCED_ENV`]).
pub fn unfenced() -> bool {
    std::env::var(UNFENCED_ENV).is_ok_and(|v| v == "1")
}

/// How often a request is sent again when the member it went to cannot
/// be reached.
const MEMBER_RETRIES: u32 = 8;

/// Whether a request failed before it reached etcd: the connection to the
/// member it was sent to could not be made.
fn not_sent(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::Unavailable && s.message().contains("connect"))
}

fn etcd(source: etcd_client::Error) -> RegistryError {
    RegistryError::Etcd {
        source: Box::new(source),
    }
}

impl EtcdRegistry {
    /// Connects to the members `url` names (the first reachable serves).
    pub async fn connect(url: &EtcdUrl) -> Result<EtcdRegistry, RegistryError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let client = Client::connect(&url.endpoints, Some(options))
            .await
            .map_err(etcd)?;
        let unfenced = unfenced();
        if unfenced {
            warn!(
                "fencing is OFF ({UNFENCED_ENV}=1): a deposed leader's writes land; for the fault suite's negative control only"
            );
        }
        Ok(EtcdRegistry {
            client,
            prefix: url.prefix.clone(),
            epoch: None,
            unfenced,
        })
    }

    /// Runs a request, sent again (up to [`MEMBER_RETRIES`] times) while
    /// the member it went to cannot be reached: the client spreads
    /// requests over every endpoint, a dead member's too, and a request
    /// that never reached etcd is safe to send again.
    pub(crate) async fn any_member<T, F, Fut>(&self, mut request: F) -> Result<T, RegistryError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut tries = 0;
        loop {
            match request(self.client.clone()).await {
                Err(e) if tries < MEMBER_RETRIES && not_sent(&e) => tries += 1,
                r => return r.map_err(etcd),
            }
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    fn leader_key(&self) -> String {
        self.key("leader")
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, RegistryError> {
        let resp = self
            .any_member(|c| {
                let key = self.leader_key();
                async move { c.kv_client().get(key, None).await }
            })
            .await?;
        resp.kvs()
            .first()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|source| RegistryError::Corrupt {
                    table: "leader",
                    key: self.leader_key(),
                    source,
                })
            })
            .transpose()
    }

    /// Campaigns until this manager leads: returns its leadership, and
    /// fences every later write of this registry on its epoch. `ttl` is the
    /// lease's time to live (whole seconds, at least 1): how long a dead
    /// leader holds the key.
    /// `observe` is told the leader each time this manager finds another one
    /// leading (so a standby can send clients there).
    pub async fn campaign(
        &mut self,
        me: &LeaderInfo,
        ttl: Duration,
        mut observe: impl FnMut(Option<LeaderInfo>) + Send,
    ) -> Result<Leadership, RegistryError> {
        let ttl_s = ttl.as_secs().max(1) as i64;
        let value = encode(me)?;
        let key = self.leader_key();
        let mut waiting_logged = false;
        loop {
            let lease = self
                .any_member(|c| async move { c.lease_client().grant(ttl_s, None).await })
                .await?
                .id();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = self
                .any_member(|c| {
                    let txn = txn.clone();
                    async move { c.kv_client().txn(txn).await }
                })
                .await?;
            let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            if resp.succeeded() {
                let epoch = u64::try_from(revision).unwrap_or(0);
                self.epoch = Some(epoch);
                let lost = keep_alive(self.client.clone(), lease, ttl);
                info!(epoch, id = %me.id, "elected leader");
                return Ok(Leadership { epoch, lost, lease });
            }
            // Someone leads: give the lease back and wait for the key to go.
            self.client.lease_client().revoke(lease).await.ok();
            let current = self.leader().await.ok().flatten();
            if !waiting_logged {
                info!(leader = ?current.as_ref().map(|l| &l.id),
                    advertise = ?current.as_ref().map(|l| &l.advertise),
                    "standing by: another manager leads");
                waiting_logged = true;
            }
            observe(current);
            self.wait_for_vacancy(revision).await?;
        }
    }

    /// Waits until the leader key is deleted after `revision` (or is found
    /// absent).
    async fn wait_for_vacancy(&self, revision: i64) -> Result<(), RegistryError> {
        let key = self.leader_key();
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = self
            .any_member(|c| {
                let (key, options) = (key.clone(), options.clone());
                async move { c.watch_client().watch(key, Some(options)).await }
            })
            .await?;
        // The key may have gone between the transaction and the watch.
        loop {
            match stream.message().await.map_err(etcd)? {
                Some(resp) => {
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        return Ok(());
                    }
                    if resp.canceled() {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            }
        }
    }

    /// Gives up leadership at once (deletes the key by revoking its lease),
    /// so a standby takes over without waiting out the lease.
    pub async fn resign(&mut self, leadership: &Leadership) -> Result<(), RegistryError> {
        self.epoch = None;
        self.client
            .lease_client()
            .revoke(leadership.lease)
            .await
            .map_err(etcd)?;
        Ok(())
    }

    fn fence(&self) -> Result<(Compare, u64), RegistryError> {
        let epoch = self.epoch.ok_or(RegistryError::NotLeader)?;
        let revision = i64::try_from(epoch).unwrap_or(i64::MAX);
        Ok((
            Compare::create_revision(self.leader_key(), CompareOp::Equal, revision),
            epoch,
        ))
    }

    /// Reads every record.
    pub async fn load(&self) -> Result<RegistrySnapshot, RegistryError> {
        Ok(RegistrySnapshot {
            agents: self.read_all("agents").await?,
            frameworks: self.read_all("frameworks").await?,
            roles: self.read_all("roles").await?,
            removed_frameworks: self.read_all("tombstones").await?,
        })
    }

    /// Every key under `prefix`, with the read's header.
    pub(crate) async fn get_prefix(
        &self,
        prefix: &str,
    ) -> Result<etcd_client::GetResponse, RegistryError> {
        self.any_member(|c| {
            let key = prefix.to_owned();
            async move {
                c.kv_client()
                    .get(key, Some(GetOptions::new().with_prefix()))
                    .await
            }
        })
        .await
    }

    async fn read_all<T: serde::de::DeserializeOwned>(
        &self,
        table: &'static str,
    ) -> Result<Vec<T>, RegistryError> {
        let resp = self.get_prefix(&self.key(&format!("{table}/"))).await?;
        resp.kvs()
            .iter()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|source| RegistryError::Corrupt {
                    table,
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    source,
                })
            })
            .collect()
    }

    /// Applies writes in one transaction, fenced on this manager's epoch:
    /// [`RegistryError::Fenced`] when another manager has been elected
    /// since (nothing is written then).
    pub async fn apply(&self, ops: &[PersistOp]) -> Result<(), RegistryError> {
        if ops.is_empty() {
            return Ok(());
        }
        let writes = ops
            .iter()
            .map(|op| self.write_op(op))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        self.fenced(writes).await
    }

    /// The etcd writes of one registry write.
    fn write_op(&self, op: &PersistOp) -> Result<Vec<TxnOp>, RegistryError> {
        Ok(vec![match op {
            PersistOp::PutAgent(a) => {
                TxnOp::put(self.key(&format!("agents/{}", a.id)), encode(a)?, None)
            }
            PersistOp::PutFramework(f) => {
                TxnOp::put(self.key(&format!("frameworks/{}", f.id)), encode(f)?, None)
            }
            PersistOp::RemoveFramework(id) => {
                return Ok(vec![
                    TxnOp::delete(self.key(&format!("frameworks/{id}")), None),
                    TxnOp::put(self.key(&format!("tombstones/{id}")), encode(id)?, None),
                ]);
            }
            PersistOp::PutRole(r) => {
                TxnOp::put(self.key(&format!("roles/{}", r.role)), encode(r)?, None)
            }
        }])
    }

    /// Stores a whole document under `name` (the services scheduler's
    /// state), fenced like [`EtcdRegistry::apply`].
    pub async fn put_document(&self, name: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let op = TxnOp::put(self.key(&format!("documents/{name}")), bytes.to_vec(), None);
        self.fenced(vec![op]).await
    }

    /// The document stored under `name`, if any.
    pub async fn document(&self, name: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let resp = self
            .any_member(|c| {
                let key = self.key(&format!("documents/{name}"));
                async move { c.kv_client().get(key, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn fenced(&self, writes: Vec<TxnOp>) -> Result<(), RegistryError> {
        let (fence, epoch) = self.fence()?;
        let txn = if self.unfenced {
            Txn::new().and_then(writes)
        } else {
            Txn::new().when([fence]).and_then(writes)
        };
        let resp = self
            .any_member(|c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(RegistryError::Fenced { epoch })
        }
    }
}

/// Keeps `lease` alive, renewing every third of `ttl`; returns a flag that
/// turns true when the lease is lost: etcd says it expired, or no renewal
/// has succeeded for `ttl` (measured from the last success, so a leader
/// that cannot reach etcd stops before a successor can be elected).
fn keep_alive(client: Client, lease: i64, ttl: Duration) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let every = (ttl / 3).max(Duration::from_millis(100));
        let mut last_ok = tokio::time::Instant::now();
        let mut keeper = None;
        loop {
            if last_ok.elapsed() >= ttl {
                warn!(
                    lease,
                    "leader lease lost: no renewal within its time to live"
                );
                break;
            }
            if tx.is_closed() {
                return;
            }
            if keeper.is_none() {
                let mut leases = client.lease_client();
                let attempt = tokio::time::timeout(every, leases.keep_alive(lease));
                if let Ok(Ok(k)) = attempt.await {
                    keeper = Some(k);
                }
            }
            if let Some((k, stream)) = keeper.as_mut() {
                let renewed = tokio::time::timeout(every, async {
                    k.keep_alive().await?;
                    stream.message().await
                })
                .await;
                match renewed {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => last_ok = tokio::time::Instant::now(),
                    Ok(Ok(Some(_))) => {
                        warn!(lease, "leader lease lost: it expired");
                        break;
                    }
                    _ => keeper = None,
                }
            }
            if keeper.is_none() {
                // etcd unreachable: try again soon, until the deadline.
                tokio::time::sleep(Duration::from_millis(100)).await;
            } else {
                tokio::time::sleep_until(last_ok + every).await;
            }
        }
        tx.send(true).ok();
    });
    rx
}

pub mod member;
mod transfer;

#[cfg(test)]
mod tests;
