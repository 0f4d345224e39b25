//! A bounded memory of status-update uuids, to drop duplicate deliveries.
//!
//! Status updates are delivered at least once: an agent retries an update
//! until it is acknowledged, so an update whose acknowledgement was lost (or
//! is still in flight) arrives again. The SDK remembers the uuids it has
//! delivered, and whether each was acknowledged, for the most recent
//! [`UuidCache::capacity`] updates.

use std::collections::{HashMap, VecDeque};

/// The default number of uuids remembered.
pub const DEFAULT_DEDUP_CAPACITY: usize = 100_000;

/// What the cache knew about a uuid when it was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time: deliver the update.
    New,
    /// Delivered before; `acked` tells whether it was acknowledged since.
    Duplicate {
        /// Whether an acknowledgement was sent for it.
        acked: bool,
    },
}

/// A bounded set of uuids with an "acknowledged" flag each; when full, the
/// oldest uuid is forgotten first.
#[derive(Debug)]
pub struct UuidCache {
    capacity: usize,
    acked: HashMap<[u8; 16], bool>,
    order: VecDeque<[u8; 16]>,
}

impl UuidCache {
    /// A cache remembering at most `capacity` uuids (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        UuidCache {
            capacity,
            acked: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The most uuids remembered.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many uuids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Records a delivery of `uuid` and says whether it was seen before.
    pub fn observe(&mut self, uuid: [u8; 16]) -> Seen {
        match self.acked.get(&uuid) {
            Some(&acked) => Seen::Duplicate { acked },
            None => {
                self.insert(uuid, false);
                Seen::New
            }
        }
    }

    /// Records that `uuid` was acknowledged (remembering it if it was not).
    pub fn mark_acked(&mut self, uuid: [u8; 16]) {
        match self.acked.get_mut(&uuid) {
            Some(acked) => *acked = true,
            None => self.insert(uuid, true),
        }
    }

    fn insert(&mut self, uuid: [u8; 16], acked: bool) {
        while self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.acked.remove(&old);
            }
        }
        self.order.push_back(uuid);
        self.acked.insert(uuid, acked);
    }
}

impl Default for UuidCache {
    fn default() -> Self {
        Self::new(DEFAULT_DEDUP_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(n: u32) -> [u8; 16] {
        let mut u = [0u8; 16];
        u[..4].copy_from_slice(&n.to_le_bytes());
        u
    }

    #[test]
    fn duplicates_are_recognised_and_ack_state_kept() {
        let mut c = UuidCache::new(10);
        assert_eq!(c.observe(uuid(1)), Seen::New);
        assert_eq!(c.observe(uuid(1)), Seen::Duplicate { acked: false });
        c.mark_acked(uuid(1));
        assert_eq!(c.observe(uuid(1)), Seen::Duplicate { acked: true });
        c.mark_acked(uuid(2));
        assert_eq!(c.observe(uuid(2)), Seen::Duplicate { acked: true });
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn bounded_and_forgets_oldest_first() {
        let mut c = UuidCache::new(100);
        for n in 0..1000 {
            assert_eq!(c.observe(uuid(n)), Seen::New);
            assert!(c.len() <= 100);
        }
        assert_eq!(c.len(), 100);
        assert_eq!(c.acked.len(), 100);
        // The newest 100 are remembered, older ones forgotten.
        assert_eq!(c.observe(uuid(999)), Seen::Duplicate { acked: false });
        assert_eq!(c.observe(uuid(900)), Seen::Duplicate { acked: false });
        assert_eq!(c.observe(uuid(899)), Seen::New);
        assert_eq!(c.len(), 100);
        let mut c = UuidCache::new(0);
        assert_eq!(c.capacity(), 1);
        assert_eq!(c.observe(uuid(1)), Seen::New);
        assert_eq!(c.observe(uuid(2)), Seen::New);
        assert_eq!(c.observe(uuid(1)), Seen::New);
        assert_eq!(UuidCache::default().capacity(), DEFAULT_DEDUP_CAPACITY);
    }
}
