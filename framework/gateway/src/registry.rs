//! The gateway's sessions and running queries: what `strata gateway
//! queries` lists, and what it cancels.
//!
//! A session or a query is listed while its guard lives: a closed
//! connection or a finished query removes itself, whatever way it ended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use strata_framework::driver::JobCanceller;

/// A connected session, as listed.
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
    queries: BTreeMap<u64, (QueryInfo, Option<JobCanceller>)>,
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

    /// Lists a query until the guard is dropped.
    pub fn start_query(self: &Arc<Self>, session: u64, sql: &str) -> QueryGuard {
        let id = self.next_id();
        let info = QueryInfo {
            id,
            session,
            sql: sql.to_owned(),
            started_ms: now_ms(),
            job: None,
        };
        self.lock().queries.insert(id, (info, None));
        QueryGuard {
            id,
            registry: self.clone(),
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

    /// Cancels a running query; false when there is no such query, or it
    /// runs in the gateway (those end with their connection's cancel).
    pub fn cancel(&self, id: u64) -> bool {
        let canceller = self.lock().queries.get(&id).and_then(|(_, c)| c.clone());
        match canceller {
            Some(c) => {
                c.cancel();
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
        self.registry.lock().sessions.remove(&self.id);
    }
}

/// A listed query; dropping it unlists it.
pub struct QueryGuard {
    id: u64,
    registry: Arc<Registry>,
}

impl QueryGuard {
    /// The query runs as this job, which `canceller` cancels.
    pub fn running_as(&self, job: String, canceller: JobCanceller) {
        if let Some(q) = self.registry.lock().queries.get_mut(&self.id) {
            q.0.job = Some(job);
            q.1 = Some(canceller);
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

    #[test]
    fn sessions_and_queries_are_listed_while_they_live() {
        let r = Arc::new(Registry::default());
        let s = r.open_session("ana", "psql", "127.0.0.1:5000");
        let q = r.start_query(s.id(), "select 1");
        assert_eq!(r.sessions().len(), 1);
        assert_eq!(r.queries()[0].sql, "select 1");
        assert!(!r.cancel(r.queries()[0].id), "no job to cancel yet");
        drop(q);
        assert!(r.queries().is_empty());
        drop(s);
        assert!(r.sessions().is_empty());
    }
}
