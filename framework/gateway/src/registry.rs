//! The gateway's sessions and running queries: what `strata gateway
//! queries` lists, and what it cancels.
//!
//! A session or a query is listed while its guard lives: a closed
//! connection or a finished query removes itself, whatever way it ended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A connected session, as listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Its id (the listing's; PostgreSQL clients know it as the backend pid).
    pub id: u64,
    /// The user it authenticated as.
    pub user: String,
    /// The client's `application_name`.
    pub application: String,
    /// Where it connected from.
    pub client: String,
    /// When it connected (ms since the epoch).
    pub connected_ms: u64,
}

/// A running query, as listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryInfo {
    /// Its id.
    pub id: u64,
    /// Its session.
    pub session: u64,
    /// Its SQL.
    pub sql: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// Its job on the cluster, once it runs as one.
    pub job: Option<String>,
}

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<u64, SessionInfo>,
    queries: BTreeMap<u64, (QueryInfo, watch::Sender<bool>)>,
    /// PostgreSQL's backend pid of each wire session (cancel requests
    /// name it).
    pg_pids: BTreeMap<i32, u64>,
}

/// Sessions and queries of one gateway.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    inner: Mutex<Inner>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Lists a session until the guard is dropped.
    pub fn open_session(
        self: &Arc<Self>,
        user: &str,
        application: &str,
        client: &str,
    ) -> SessionGuard {
        let id = self.next_id();
        self.lock().sessions.insert(
            id,
            SessionInfo {
                id,
                user: user.to_owned(),
                application: application.to_owned(),
                client: client.to_owned(),
                connected_ms: now_ms(),
            },
        );
        SessionGuard {
            id,
            registry: self.clone(),
        }
    }

    /// Session `session` is the PostgreSQL connection whose cancel
    /// requests name `pid` (until the session ends).
    pub fn bind_pid(&self, pid: i32, session: u64) {
        self.lock().pg_pids.insert(pid, session);
    }

    /// Cancels the running queries of the session whose backend pid is
    /// `pid` (a cancel request already checked against its secret key);
    /// how many.
    pub fn cancel_pid(&self, pid: i32) -> usize {
        let inner = self.lock();
        let Some(&session) = inner.pg_pids.get(&pid) else {
            return 0;
        };
        let mut n = 0;
        for (info, cancel) in inner.queries.values() {
            if info.session == session {
                cancel.send_replace(true);
                n += 1;
            }
        }
        n
    }

    /// Lists a query until the guard is dropped; the guard tells when
    /// [`Registry::cancel`] is called for it.
    pub fn start_query(self: &Arc<Self>, session: u64, sql: &str) -> QueryGuard {
        let id = self.next_id();
        let info = QueryInfo {
            id,
            session,
            sql: sql.to_owned(),
            started_ms: now_ms(),
            job: None,
        };
        let (cancel, cancelled) = watch::channel(false);
        self.lock().queries.insert(id, (info, cancel));
        QueryGuard {
            id,
            registry: self.clone(),
            cancelled,
        }
    }

    /// The sessions, oldest first.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.lock().sessions.values().cloned().collect()
    }

    /// The running queries, oldest first.
    pub fn queries(&self) -> Vec<QueryInfo> {
        self.lock()
            .queries
            .values()
            .map(|(q, _)| q.clone())
            .collect()
    }

    /// Cancels a running query (its wait ends with an error and its job,
    /// if it has one, is cancelled); false when there is no such query.
    pub fn cancel(&self, id: u64) -> bool {
        match self.lock().queries.get(&id) {
            Some((_, cancel)) => {
                cancel.send_replace(true);
                true
            }
            None => false,
        }
    }
}

/// A listed session; dropping it unlists it.
pub struct SessionGuard {
    id: u64,
    registry: Arc<Registry>,
}

impl SessionGuard {
    /// The session's id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.sessions.remove(&self.id);
        inner.pg_pids.retain(|_, s| *s != self.id);
    }
}

/// A listed query; dropping it unlists it.
pub struct QueryGuard {
    id: u64,
    registry: Arc<Registry>,
    cancelled: watch::Receiver<bool>,
}

impl QueryGuard {
    /// The query runs as this job.
    pub fn running_as(&self, job: String) {
        if let Some(q) = self.registry.lock().queries.get_mut(&self.id) {
            q.0.job = Some(job);
        }
    }

    /// Resolves once the query is cancelled through the registry.
    pub async fn cancelled(&self) {
        let mut rx = self.cancelled.clone();
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for QueryGuard {
    fn drop(&mut self) {
        self.registry.lock().queries.remove(&self.id);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_and_queries_are_listed_while_they_live() {
        let r = Arc::new(Registry::default());
        let s = r.open_session("ana", "psql", "127.0.0.1:5000");
        let q = r.start_query(s.id(), "select 1");
        assert_eq!(r.sessions().len(), 1);
        assert_eq!(r.queries()[0].sql, "select 1");
        q.running_as("job-1".into());
        assert_eq!(r.queries()[0].job.as_deref(), Some("job-1"));
        assert!(r.cancel(r.queries()[0].id));
        q.cancelled().await;
        assert!(!r.cancel(999), "no such query");
        drop(q);
        assert!(r.queries().is_empty());
        drop(s);
        assert!(r.sessions().is_empty());
    }

    #[tokio::test]
    async fn a_cancel_request_stops_the_queries_of_its_pids_session_only() {
        let r = Arc::new(Registry::default());
        let (a, b) = (r.open_session("a", "", ""), r.open_session("b", "", ""));
        r.bind_pid(7, a.id());
        r.bind_pid(8, b.id());
        let qa = r.start_query(a.id(), "select 1");
        let qb = r.start_query(b.id(), "select 2");
        assert_eq!(r.cancel_pid(7), 1);
        qa.cancelled().await;
        assert!(!*qb.cancelled.borrow(), "the other session's query runs on");
        assert_eq!(r.cancel_pid(99), 0, "no such pid");
        drop(a);
        assert_eq!(r.cancel_pid(7), 0, "a closed session's pid is forgotten");
    }
}
