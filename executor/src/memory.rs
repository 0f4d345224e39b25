//! A query's share of an executor's memory: [`QueryPool`] caps what one
//! job's tasks hold at once on this executor (`strata.query_memory_limit`),
//! inside the executor's own pool, which all tasks share.
//!
//! Operators that can spill (sorts, aggregations, sort-merge joins) spill
//! when the cap is reached; those that cannot (a hash join's build side)
//! fail the task with an error that names the limit, and the job fails
//! rather than take memory other queries on the executor need.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnv;

/// How an error over a query's memory limit begins (the driver fails
/// the query at once on it: another attempt would only repeat it).
pub const QUERY_LIMIT_EXCEEDED: &str = "query memory limit exceeded";

/// Caps one job's reservations at `limit` bytes, passing them on to the
/// executor's pool.
#[derive(Debug)]
pub struct QueryPool {
    inner: Arc<dyn MemoryPool>,
    job: String,
    limit: usize,
    used: AtomicUsize,
}

impl QueryPool {
    /// A cap of `limit` bytes for `job` within `inner`.
    pub fn new(inner: Arc<dyn MemoryPool>, job: &str, limit: usize) -> QueryPool {
        QueryPool {
            inner,
            job: job.to_owned(),
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// `base` with this pool in place of its memory pool (disk manager,
    /// caches and object stores shared).
    pub fn runtime(self: &Arc<Self>, base: &RuntimeEnv) -> Arc<RuntimeEnv> {
        let mut env = base.clone();
        env.memory_pool = self.clone();
        Arc::new(env)
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QueryPool({} of {} bytes, job {})",
            self.reserved(),
            self.limit,
            self.job
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "QueryPool"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let claimed = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(additional).filter(|&u| u <= self.limit)
            });
        if let Err(used) = claimed {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{QUERY_LIMIT_EXCEEDED}: job {} holds {used} bytes on this executor and \
                 {} asked {additional} more, over its limit of {} bytes \
                 (strata.query_memory_limit)",
                self.job,
                reservation.consumer().name(),
                self.limit
            )));
        }
        if let Err(e) = self.inner.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// Reads a size as `SET strata.query_memory_limit` takes it: bytes, or a
/// number with `k`, `m`, `g` or `t` (powers of 1024; `kb`, `MiB`, `GB`…
/// read the same); `0` or empty is no limit (`None`).
pub fn parse_size(text: &str) -> std::result::Result<Option<u64>, String> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() || t == "0" || t == "none" {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bytes, or with k, m, g, t)"))?;
    let scale: u64 = match unit.trim().trim_end_matches('b').trim_end_matches('i') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("{text:?}: unknown unit (k, m, g, t)")),
    };
    let bytes = (number * scale as f64) as u64;
    Ok((bytes > 0).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn a_query_past_its_cap_is_refused_and_gives_its_bytes_back() {
        let executor: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let query: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(executor.clone(), "job-1", 300));
        let a = MemoryConsumer::new("HashJoinInput").register(&query);
        a.try_grow(200).unwrap();
        let e = a.try_grow(200).unwrap_err().to_string();
        assert!(
            e.contains("query memory limit") && e.contains("job-1"),
            "{e}"
        );
        assert_eq!(query.reserved(), 200);
        assert_eq!(executor.reserved(), 200);
        // Another query's cap is its own.
        let other: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(executor.clone(), "job-2", 900));
        let b = MemoryConsumer::new("Sort").register(&other);
        // The executor's pool still has the last word.
        assert!(b.try_grow(900).is_err());
        assert_eq!(
            other.reserved(),
            0,
            "a refusal by the executor's pool is undone"
        );
        b.try_grow(800).unwrap();
        drop(a);
        assert_eq!(query.reserved(), 0);
        assert_eq!(executor.reserved(), 800);
    }

    #[test]
    fn sizes_read_as_settings_write_them() {
        assert_eq!(parse_size("0"), Ok(None));
        assert_eq!(parse_size(""), Ok(None));
        assert_eq!(parse_size("4096"), Ok(Some(4096)));
        assert_eq!(parse_size("64k"), Ok(Some(64 << 10)));
        assert_eq!(parse_size("512MiB"), Ok(Some(512 << 20)));
        assert_eq!(parse_size("1.5g"), Ok(Some(3 << 29)));
        assert_eq!(parse_size("2 GB"), Ok(Some(2 << 30)));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3x").is_err());
    }
}
