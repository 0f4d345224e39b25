//! Revocable capacity: lending the cpus that tasks hold but leave idle, and
//! taking them back.
//!
//! Agents report what each running task uses ([`Master::agent_usage`],
//! every few seconds). A running, regular task that has been measured for
//! a while lends `cpus − peak × (1 + headroom)` of its cpus, where `peak`
//! is its highest use over the recent window (so lending is slow to grow
//! and quick to shrink). The lent cpus of an agent go to the allocator
//! ([`AgentAlloc::lent`](crate::allocator::AgentAlloc::lent)), which places
//! asks that accept revocable cpus on them when no regular room fits.
//!
//! When lenders need their cpus back (their use rises, or they end and
//! their cpus are free again for regular work), the borrowers that no
//! longer fit are revoked: offers rescinded, tasks killed with the
//! preemption grace and `REASON_RESOURCES_REVOKED`, lowest class first and
//! then the most recently launched. On the agent, revocable tasks also run
//! at the lowest cpu priority, so lenders get their cpus back at once.

use std::collections::VecDeque;
use std::time::Duration;

use strata_proto::class::ClassIdx;
use strata_proto::ids::{AgentId, FrameworkId, OfferId, TaskId};
use strata_proto::pb::{Reason, TaskState, agent_message};
use strata_proto::resources::Scalar;
use tracing::{info, warn};

use super::{AgentState, Master, MasterError, TaskKey, Timestamp};
use crate::allocator::AgentIdx;

/// How the master lends idle cpus.
#[derive(Clone, Debug, PartialEq)]
pub struct RevocableConfig {
    /// Whether idle cpus are lent at all.
    pub enabled: bool,
    /// A task's use is judged by its peak over this window; it lends only
    /// once it has been measured for a quarter of it.
    pub window: Duration,
    /// Kept back above the peak, as a fraction of the peak.
    pub headroom: f64,
}

impl Default for RevocableConfig {
    fn default() -> Self {
        RevocableConfig {
            enabled: true,
            window: Duration::from_secs(30),
            headroom: 0.25,
        }
    }
}

/// Lending is rounded down to this many millicpus, so small changes in use
/// do not churn offers.
const LEND_STEP_MILLI: i64 = 100;

/// The recent usage samples of one task.
#[derive(Clone, Debug, Default)]
pub(super) struct UsageWindow {
    /// (time, cpus used, resident MiB), oldest first, within the window.
    samples: VecDeque<(Timestamp, f64, f64)>,
    /// When the task was first measured.
    first: Option<Timestamp>,
    /// What it lends now.
    lending: Scalar,
}

impl UsageWindow {
    fn record(&mut self, now: Timestamp, cpus: f64, mem: f64, window: Duration) {
        self.first.get_or_insert(now);
        self.samples.push_back((now, cpus, mem));
        while self
            .samples
            .front()
            .is_some_and(|&(t, _, _)| t + window < now)
        {
            self.samples.pop_front();
        }
    }

    /// Whether the task lends cpus now.
    pub(super) fn is_lending(&self) -> bool {
        !self.lending.is_zero()
    }

    /// The latest sample: (cpus used, resident MiB).
    pub(super) fn latest(&self) -> Option<(f64, f64)> {
        self.samples.back().map(|&(_, c, m)| (c, m))
    }

    /// The idle cpus of a task holding `cpus`, if it has been measured long
    /// enough.
    fn idle(&self, now: Timestamp, cpus: Scalar, cfg: &RevocableConfig) -> Scalar {
        let measured_long_enough =
            self.first.is_some_and(|f| now - f >= cfg.window / 4) && self.samples.len() >= 2;
        if !measured_long_enough {
            return Scalar::ZERO;
        }
        let peak = self.samples.iter().map(|s| s.1).fold(0.0f64, f64::max);
        let kept = (peak * (1.0 + cfg.headroom) * 1000.0).ceil() as i64;
        let idle = cpus.milli() - kept;
        if idle <= 0 {
            return Scalar::ZERO;
        }
        Scalar::from_milli(idle / LEND_STEP_MILLI * LEND_STEP_MILLI)
    }
}

impl Master {
    /// Usage of an agent's tasks: updates what they lend and revokes
    /// borrowers that no longer fit.
    pub fn agent_usage(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        usage: agent_message::Usage,
    ) -> Result<(), MasterError> {
        let aidx = *self
            .agent_index
            .get(agent)
            .ok_or(MasterError::AgentNotRegistered)?;
        if self.agents[aidx as usize].state != AgentState::Registered {
            return Err(MasterError::AgentNotRegistered);
        }
        self.agents[aidx as usize].last_seen = now;
        let window = self.cfg.revocable.window;
        for u in usage.tasks {
            if !(u.cpus.is_finite() && u.cpus >= 0.0 && u.mem.is_finite() && u.mem >= 0.0) {
                warn!(agent_id = %agent, task_id = %u.task_id, "usage sample out of range ignored");
                continue;
            }
            let Some(&fw) = self.fw_index.get(&FrameworkId::new(u.framework_id)) else {
                continue;
            };
            let key = (fw, TaskId::new(u.task_id));
            if let Some(t) = self.tasks.get_mut(&key)
                && t.agent == aidx
                && !t.released
            {
                t.usage.record(now, u.cpus, u.mem, window);
            }
        }
        self.refresh_lent(now, aidx);
        Ok(())
    }

    /// The cpus each running task of a framework used at its agent's last
    /// sample (tasks not measured yet are left out).
    pub fn task_cpus(&self, framework: &FrameworkId) -> std::collections::BTreeMap<TaskId, f64> {
        let Some(&fw) = self.fw_index.get(framework) else {
            return Default::default();
        };
        self.frameworks[fw as usize]
            .tasks
            .iter()
            .filter_map(|tid| {
                let t = self.tasks.get(&(fw, tid.clone()))?;
                let (cpus, _) = t.usage.latest().filter(|_| !t.released)?;
                Some((tid.clone(), cpus))
            })
            .collect()
    }

    /// Recomputes what an agent's tasks lend, then revokes what no longer
    /// fits.
    pub(super) fn refresh_lent(&mut self, now: Timestamp, agent: AgentIdx) {
        let cfg = &self.cfg.revocable;
        let mut lent: Vec<(ClassIdx, Scalar)> = Vec::new();
        for key in &self.agents[agent as usize].tasks {
            let Some(t) = self.tasks.get_mut(key) else {
                continue;
            };
            let lender = cfg.enabled
                && !t.released
                && !t.kill_requested
                && t.preempted_at.is_none()
                && t.revocable.is_zero()
                && t.status.state() == TaskState::TaskRunning;
            t.usage.lending = if lender {
                t.usage.idle(now, t.resources.cpus, cfg)
            } else {
                Scalar::ZERO
            };
            if t.usage.lending.is_zero() {
                continue;
            }
            match lent.iter_mut().find(|(c, _)| *c == t.class) {
                Some((_, cpus)) => *cpus += t.usage.lending,
                None => lent.push((t.class, t.usage.lending)),
            }
        }
        lent.sort();
        let a = &mut self.alloc_agents[agent as usize];
        if a.lent != lent {
            a.lent = lent;
            self.dirty = true;
        }
        self.revoke_excess(now, agent);
    }

    /// Revokes the borrowers on an agent that its lenders no longer cover:
    /// higher classes and older tasks are kept first.
    fn revoke_excess(&mut self, now: Timestamp, agent: AgentIdx) {
        enum Borrower {
            Task(TaskKey),
            Offer(OfferId),
        }
        // (class, launched, cpus, who): offers count as launched now.
        let mut borrowers: Vec<(ClassIdx, Timestamp, Scalar, Borrower)> = Vec::new();
        let a = &self.agents[agent as usize];
        for key in &a.tasks {
            if let Some(t) = self.tasks.get(key)
                && !t.released
                && !t.revocable.is_zero()
                && t.preempted_at.is_none()
            {
                borrowers.push((
                    t.class,
                    t.launched_at,
                    t.revocable,
                    Borrower::Task(key.clone()),
                ));
            }
        }
        for id in &a.offers {
            let o = &self.offers[id];
            if !o.revocable.is_zero() {
                borrowers.push((
                    o.class,
                    Timestamp::MAX,
                    o.revocable,
                    Borrower::Offer(id.clone()),
                ));
            }
        }
        if borrowers.is_empty() {
            return;
        }
        borrowers.sort_by_key(|b| (b.0, b.1));
        let alloc = &self.alloc_agents[agent as usize];
        let mut kept = Scalar::ZERO;
        let mut revoke = Vec::new();
        for (class, _, cpus, who) in borrowers {
            if kept + cpus <= alloc.lendable_to(&self.cfg.classes, class) {
                kept += cpus;
            } else {
                revoke.push(who);
            }
        }
        let grace = self.cfg.preemption_grace.as_secs_f64();
        for who in revoke {
            match who {
                Borrower::Offer(id) => {
                    info!(offer_id = %id, "revocable offer rescinded: its lenders need their cpus");
                    self.rescind(&id);
                }
                Borrower::Task(key) => {
                    let Some(t) = self.tasks.get_mut(&key) else {
                        continue;
                    };
                    t.kill_requested = true;
                    t.preempted_at = Some(now);
                    let fw = t.framework;
                    self.counters.tasks_revoked += 1;
                    info!(task_id = %key.1, framework_id = %self.frameworks[fw as usize].id,
                        grace_secs = grace, "revocable task revoked: its lenders need their cpus");
                    self.push_kill(agent, fw, &key.1, Some(grace), Reason::ResourcesRevoked);
                    self.note_takeback(now, "revoked", &key, None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn cfg() -> RevocableConfig {
        RevocableConfig {
            enabled: true,
            window: Duration::from_secs(8),
            headroom: 0.25,
        }
    }

    #[test]
    fn idle_needs_a_measured_quarter_window_and_uses_the_peak() {
        let mut u = UsageWindow::default();
        let four = Scalar::from_milli(4_000);
        u.record(t(0), 0.4, 10.0, cfg().window);
        assert_eq!(
            u.idle(t(0), four, &cfg()),
            Scalar::ZERO,
            "one sample lends nothing"
        );
        u.record(t(1_000), 0.2, 10.0, cfg().window);
        assert_eq!(u.idle(t(1_000), four, &cfg()), Scalar::ZERO, "too soon");
        u.record(t(2_000), 0.2, 10.0, cfg().window);
        // 4 − 0.4 × 1.25 = 3.5
        assert_eq!(u.idle(t(2_000), four, &cfg()), Scalar::from_milli(3_500));
        // A burst takes the lending down at once.
        u.record(t(3_000), 3.0, 10.0, cfg().window);
        assert_eq!(u.idle(t(3_000), four, &cfg()), Scalar::from_milli(200));
        // It stays down for the window, then comes back.
        u.record(t(10_000), 0.1, 10.0, cfg().window);
        assert_eq!(u.idle(t(10_000), four, &cfg()), Scalar::from_milli(200));
        u.record(t(11_500), 0.1, 10.0, cfg().window);
        assert_eq!(u.idle(t(11_500), four, &cfg()), Scalar::from_milli(3_800));
        // Use above the holding lends nothing.
        u.record(t(12_000), 5.0, 10.0, cfg().window);
        assert_eq!(u.idle(t(12_000), four, &cfg()), Scalar::ZERO);
        assert_eq!(u.latest(), Some((5.0, 10.0)));
    }
}
