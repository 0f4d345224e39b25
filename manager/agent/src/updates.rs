//! The reliable status-update queue of one task (pure logic, no I/O).
//!
//! Updates are queued in the order they are generated. Only the head is in
//! flight: it is sent, then resent with a doubling interval until an
//! acknowledgement with its uuid arrives; then it is popped and the next one
//! goes out at once. The caller checkpoints the queue after every change
//! (before sending what was pushed), so nothing is lost across a restart.

use std::collections::VecDeque;
use std::time::{Duration, Instant};
use strata_proto::pb;

/// How unacknowledged updates are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry interval.
    pub first: Duration,
    /// The interval stops doubling here.
    pub max: Duration,
}

impl RetryPolicy {
    /// Starts at `first` (between 1 ms and 1 h), doubles up to 30 times
    /// `first`.
    pub fn new(first: Duration) -> Self {
        let first = first.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        RetryPolicy {
            first,
            max: first.saturating_mul(30),
        }
    }
}

/// Where the head of the queue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Not sent on the current connection.
    Unsent,
    /// Sent; resend at `retry_at`, then wait `interval` doubled.
    Sent {
        retry_at: Instant,
        interval: Duration,
    },
}

/// What an acknowledgement did.
#[derive(Debug, Clone, PartialEq)]
pub enum AckOutcome {
    /// The head matched and was removed.
    Acked(pb::TaskStatus),
    /// The uuid is not the head's (a duplicate or stale acknowledgement).
    Unexpected,
}

/// The unacknowledged updates of one task, oldest first.
#[derive(Debug, Clone)]
pub struct UpdateQueue {
    pending: VecDeque<pb::TaskStatus>,
    head: Head,
}

impl Default for UpdateQueue {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl UpdateQueue {
    /// A queue holding `pending` (oldest first), none of them sent yet.
    pub fn new(pending: Vec<pb::TaskStatus>) -> Self {
        UpdateQueue {
            pending: pending.into(),
            head: Head::Unsent,
        }
    }

    /// Appends an update.
    pub fn push(&mut self, status: pb::TaskStatus) {
        self.pending.push_back(status);
    }

    /// Number of unacknowledged updates.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether every update was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The updates, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &pb::TaskStatus> {
        self.pending.iter()
    }

    /// The update in flight (or next to go).
    pub fn head(&self) -> Option<&pb::TaskStatus> {
        self.pending.front()
    }

    /// Whether a terminal update is queued.
    pub fn has_terminal(&self) -> bool {
        self.pending.iter().any(|s| s.state().is_terminal())
    }

    /// If the head is due (never sent on this connection, or its retry time
    /// has come), marks it sent, schedules its next retry and returns it.
    pub fn poll_send(&mut self, now: Instant, policy: &RetryPolicy) -> Option<&pb::TaskStatus> {
        self.pending.front()?;
        let interval = match self.head {
            Head::Unsent => policy.first,
            Head::Sent { retry_at, .. } if now < retry_at => return None,
            Head::Sent { interval, .. } => interval.saturating_mul(2).min(policy.max),
        };
        self.head = Head::Sent {
            retry_at: now + interval,
            interval,
        };
        self.pending.front()
    }

    /// When the head must be sent again (`None`: nothing queued, or the head
    /// is due now because it was never sent).
    pub fn retry_at(&self) -> Option<Instant> {
        match (self.pending.front(), self.head) {
            (Some(_), Head::Sent { retry_at, .. }) => Some(retry_at),
            _ => None,
        }
    }

    /// Handles an acknowledgement: pops the head if `uuid` is its uuid.
    pub fn ack(&mut self, uuid: &[u8]) -> AckOutcome {
        match self.pending.front() {
            Some(head) if head.uuid == uuid => {
                self.head = Head::Unsent;
                match self.pending.pop_front() {
                    Some(s) => AckOutcome::Acked(s),
                    None => AckOutcome::Unexpected,
                }
            }
            _ => AckOutcome::Unexpected,
        }
    }

    /// Forgets what was sent (a new connection): the head goes out at once
    /// and its retry interval starts over.
    pub fn reset(&mut self) {
        self.head = Head::Unsent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::TaskState::*;

    fn status(state: pb::TaskState, n: u8) -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: "t".into(),
            state: state as i32,
            uuid: vec![n; 16],
            ..Default::default()
        }
    }

    #[test]
    fn only_the_head_is_in_flight_and_acks_pop_in_order() {
        let policy = RetryPolicy::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let mut q = UpdateQueue::default();
        assert!(q.poll_send(t0, &policy).is_none());
        q.push(status(TaskRunning, 1));
        q.push(status(TaskFinished, 2));
        assert!(q.has_terminal());
        assert_eq!(q.poll_send(t0, &policy).unwrap().uuid, vec![1; 16]);
        // In flight: nothing more until the retry time or an ack.
        assert!(q.poll_send(t0, &policy).is_none());
        // Acking the second (not in flight) does nothing.
        assert_eq!(q.ack(&[2; 16]), AckOutcome::Unexpected);
        assert_eq!(q.len(), 2);
        assert!(matches!(q.ack(&[1; 16]), AckOutcome::Acked(s) if s.uuid == vec![1; 16]));
        // The next goes out at once.
        assert_eq!(q.poll_send(t0, &policy).unwrap().uuid, vec![2; 16]);
        // A duplicate ack of the first is ignored.
        assert_eq!(q.ack(&[1; 16]), AckOutcome::Unexpected);
        assert!(matches!(q.ack(&[2; 16]), AckOutcome::Acked(_)));
        assert!(q.is_empty());
        assert!(q.poll_send(t0, &policy).is_none());
        assert_eq!(q.ack(&[2; 16]), AckOutcome::Unexpected);
    }

    #[test]
    fn retries_back_off_doubling_up_to_the_cap() {
        let policy = RetryPolicy::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let mut q = UpdateQueue::new(vec![status(TaskRunning, 1)]);
        assert!(q.poll_send(t0, &policy).is_some());
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..8 {
            let at = q.retry_at().unwrap();
            assert!(
                q.poll_send(at - Duration::from_millis(1), &policy)
                    .is_none()
            );
            gaps.push((at - now).as_secs());
            now = at;
            assert!(q.poll_send(now, &policy).is_some());
        }
        assert_eq!(gaps, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn reset_resends_the_head_at_once_with_a_fresh_interval() {
        let policy = RetryPolicy::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let mut q = UpdateQueue::new(vec![status(TaskRunning, 1), status(TaskFailed, 2)]);
        assert!(q.poll_send(t0, &policy).is_some());
        let later = q.retry_at().unwrap();
        assert!(q.poll_send(later, &policy).is_some());
        q.reset();
        assert_eq!(q.retry_at(), None);
        assert_eq!(q.poll_send(t0, &policy).unwrap().uuid, vec![1; 16]);
        assert_eq!(q.retry_at(), Some(t0 + Duration::from_millis(100)));
    }
}
