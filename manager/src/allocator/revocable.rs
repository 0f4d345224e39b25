//! Revocable placement: the last pass of a cycle.
//!
//! Running tasks often hold more cpus than they use (a service sized for
//! its peak). The agent measures what each task uses, and the master turns
//! the idle part of each task's cpus into [`AgentAlloc::lent`]. After every
//! class had its regular placements, asks that *accept revocable* and found
//! no regular room are placed on those idle cpus: the task's cpus are
//! revocable, everything else it needs (mem, disk, ports) is regular.
//! Memory is never lent: it cannot be taken back without killing, while
//! cpus can be (a revocable task's cpu share is the lowest on the agent).
//!
//! Only classes at least
//! [`PREEMPTION_GAP`](strata_proto::class::PREEMPTION_GAP) below a lender borrow its cpus:
//! the same rule as preemption, so a lender could always have preempted its
//! borrower. When the lenders start using their cpus again, the master
//! revokes borrowers (see `master::revocable`).

use strata_proto::class::{ClassIdx, PriorityClasses};
use strata_proto::resources::{Resources, Scalar};

use super::{AgentAlloc, AgentIdx, CycleState, FrameworkIdx, PendingAsk, constraints};

impl AgentAlloc {
    /// Idle cpus lent by tasks of classes at least
    /// [`PREEMPTION_GAP`](strata_proto::class::PREEMPTION_GAP) above
    /// `class`.
    pub fn lendable_to(&self, classes: &PriorityClasses, class: ClassIdx) -> Scalar {
        self.lent
            .iter()
            .filter(|(lender, _)| classes.may_preempt(*lender, class))
            .fold(Scalar::ZERO, |acc, (_, cpus)| acc + *cpus)
    }

    /// Revocable cpus still free for a borrower of `class`.
    pub fn revocable_free(&self, classes: &PriorityClasses, class: ClassIdx) -> Scalar {
        self.lendable_to(classes, class)
            .saturating_sub(self.revocable_allocated)
    }
}

impl CycleState<'_, '_> {
    /// Places what is left unplaced of asks that accept revocable cpus.
    pub(super) fn place_revocable(&mut self) {
        let p = self.p;
        if !p.agents.iter().any(|a| !a.lent.is_empty()) {
            return;
        }
        let unplaced = std::mem::take(&mut self.unplaced);
        for (f, ai, count) in unplaced {
            let ask = &p.frameworks[f as usize].demand[ai];
            let mut left = count;
            if ask.accept_revocable && !ask.resources.cpus.is_zero() {
                while left > 0 {
                    let Some((agent, res)) = self.find_revocable(f, ask) else {
                        break;
                    };
                    self.take(f, agent, ask.class, res, ask.resources.cpus, Some(ai));
                    left -= 1;
                }
            }
            if left > 0 {
                self.unplaced.push((f, ai, left));
            }
        }
    }

    /// An agent with idle cpus for one task of `ask` and regular room for
    /// the rest of it; returns the regular part with concrete ports.
    fn find_revocable(
        &mut self,
        f: FrameworkIdx,
        ask: &PendingAsk,
    ) -> Option<(AgentIdx, Resources)> {
        let p = self.p;
        let fw = &p.frameworks[f as usize];
        let mut regular = ask.resources.clone();
        regular.cpus = Scalar::ZERO;
        if !self.within_quota(fw.role, &regular) {
            return None;
        }
        let n = p.agents.len();
        for step in 0..n {
            let a = ((self.cursor + step) % n) as AgentIdx;
            let agent = &p.agents[a as usize];
            if !agent.active || agent.lent.is_empty() || fw.filters_agent(a, p.now) {
                continue;
            }
            let taken = self.revocable_taken.get(&a).copied().unwrap_or_default();
            if agent
                .revocable_free(p.classes, ask.class)
                .saturating_sub(taken)
                < ask.resources.cpus
            {
                continue;
            }
            let free = self.agent_free(a);
            if free.mem < regular.mem || free.disk < regular.disk {
                continue;
            }
            let mut res = regular.clone();
            let want_ports = regular.ports.count();
            if want_ports > 0 {
                match free.ports.take_lowest(want_ports) {
                    Some(ports) => res.ports = ports,
                    None => continue,
                }
            }
            if !ask.constraints.is_empty() {
                let placed_here = fw.tasks_per_agent.get(&a).copied().unwrap_or(0)
                    + self.fw_agent_count.get(&(f, a)).copied().unwrap_or(0);
                if !constraints::allows(&ask.constraints, agent, placed_here, |other| {
                    self.count_on_value(f, other)
                }) {
                    continue;
                }
            }
            self.cursor = a as usize;
            return Some((a, res));
        }
        None
    }
}
