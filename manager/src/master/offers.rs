//! Offers: allocation cycles (mechanism around the pure allocator),
//! declines with filters, rescinds and offer timeouts.

use std::collections::BTreeMap;

use strata_proto::ids::OfferId;
use strata_proto::pb;
use strata_proto::resources::Resources;
use tracing::debug;

use std::time::Duration;

use super::{Action, CycleStats, Master, OfferEntry, Timestamp};
use crate::allocator::{self, AgentIdx, FrameworkIdx, Problem};

impl Master {
    /// Runs one allocation cycle if one is due (after an event that freed or
    /// added resources or demand, or when the interval has passed), and
    /// sends the offers it makes, batched per framework.
    pub fn allocate(&mut self, now: Timestamp) -> Option<CycleStats> {
        if !self.allocation_due(now) {
            return None;
        }
        Some(self.allocate_now(now))
    }

    /// Runs one allocation cycle unconditionally: its three steps, solve,
    /// offer and preempt, in order.
    pub fn allocate_now(&mut self, now: Timestamp) -> CycleStats {
        let solution = self.solve_cycle(now);
        let unplaced = solution.unplaced.clone();
        let stats = self.offer_solution(now, solution);
        if unplaced.is_empty() {
            return stats;
        }
        self.preempt_unplaced(now, &unplaced);
        self.last_cycle.clone().unwrap_or(stats)
    }

    /// The first step of a cycle: starts it and runs the pure allocator
    /// over the current state. The core reads no clock: a caller that
    /// wants to know how long a step takes times it (the benchmarks do).
    pub fn solve_cycle(&mut self, now: Timestamp) -> allocator::Solution {
        self.dirty = false;
        self.next_allocation = now + self.cfg.allocation_interval;
        self.counters.allocation_cycles += 1;
        let solution = {
            let problem = Problem {
                classes: &self.cfg.classes,
                agents: &self.alloc_agents,
                frameworks: &self.alloc_fws,
                roles: &self.alloc_roles,
                cluster_total: &self.cluster_total,
                now,
                start: self.alloc_cursor,
                min_offer: &self.cfg.min_offer,
            };
            allocator::solve(&problem)
        };
        if !self.agents.is_empty() {
            self.alloc_cursor = (self.alloc_cursor + 7919) % self.agents.len();
        }
        solution
    }

    /// The second step: makes the solution's offers, batched per
    /// framework.
    pub fn offer_solution(&mut self, now: Timestamp, solution: allocator::Solution) -> CycleStats {
        let stats = CycleStats {
            offers: solution.offers.len(),
            placements: solution.placements,
            victims: 0,
        };
        self.counters.placements += solution.placements as u64;
        let mut per_fw: BTreeMap<FrameworkIdx, Vec<pb::Offer>> = BTreeMap::new();
        for d in solution.offers {
            let id = OfferId::new(self.next_id("offer"));
            self.hold(d.agent, d.framework, &d.resources);
            self.hold_revocable(d.agent, d.revocable);
            let mut placements: Vec<(usize, u32)> = Vec::new();
            for p in &d.placements {
                match placements.iter_mut().find(|(a, _)| *a == p.ask) {
                    Some((_, n)) => *n += 1,
                    None => placements.push((p.ask, 1)),
                }
            }
            let fw = &mut self.frameworks[d.framework as usize];
            for &(ask, n) in &placements {
                if let Some(o) = fw.offered.get_mut(ask) {
                    *o += n;
                }
            }
            if !placements.is_empty() {
                *self.alloc_fws[d.framework as usize]
                    .tasks_per_agent
                    .entry(d.agent)
                    .or_default() += placements.iter().map(|p| p.1).sum::<u32>();
                self.sync_demand(d.framework);
            }
            let demand_gen = self.frameworks[d.framework as usize].demand_gen;
            self.count_live(d.class, true);
            self.frameworks[d.framework as usize]
                .offers
                .insert(id.clone());
            self.agents[d.agent as usize].offers.insert(id.clone());
            per_fw
                .entry(d.framework)
                .or_default()
                .push(self.offer_proto(&id, &d));
            self.offers.insert(
                id,
                OfferEntry {
                    framework: d.framework,
                    agent: d.agent,
                    class: d.class,
                    resources: d.resources,
                    revocable: d.revocable,
                    created: now,
                    placements,
                    demand_gen,
                },
            );
            self.counters.offers_made += 1;
        }
        for (fw, offers) in per_fw {
            self.outbox.push(Action::ToFramework {
                framework: self.frameworks[fw as usize].id.clone(),
                event: pb::Event {
                    event: Some(pb::event::Event::Offers(pb::event::Offers { offers })),
                },
            });
        }
        self.last_cycle = Some(stats.clone());
        stats
    }

    /// The third step: room for asks the cycle left unplaced, by
    /// preempting lower classes. Returns the victims chosen.
    pub fn preempt_unplaced(
        &mut self,
        now: Timestamp,
        unplaced: &[(FrameworkIdx, usize, u32)],
    ) -> usize {
        if unplaced.is_empty() {
            return 0;
        }
        let victims = self.preempt_for(now, unplaced);
        if let Some(c) = &mut self.last_cycle {
            c.victims = victims;
        }
        victims
    }

    fn offer_proto(&self, id: &OfferId, d: &allocator::OfferDecision) -> pb::Offer {
        let a = &self.alloc_agents[d.agent as usize];
        let e = &self.agents[d.agent as usize];
        pb::Offer {
            offer_id: id.to_string(),
            framework_id: self.frameworks[d.framework as usize].id.to_string(),
            agent_id: e.id.to_string(),
            hostname: a.hostname.clone(),
            resources: {
                let mut list = d.resources.to_proto(false);
                list.extend(
                    Resources {
                        cpus: d.revocable,
                        ..Resources::default()
                    }
                    .to_proto(true),
                );
                list
            },
            attributes: a
                .attributes
                .iter()
                .map(|(k, v)| pb::Attribute {
                    name: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            priority_class: self.cfg.classes.name(d.class).to_owned(),
            agent_address: e.address.clone(),
        }
    }

    /// Removes an offer and returns the resources it held to the pool (the
    /// caller decides what becomes of them); `None` if no such offer is
    /// outstanding.
    pub(super) fn take_offer(&mut self, id: &OfferId) -> Option<OfferEntry> {
        let o = self.offers.remove(id)?;
        self.count_live(o.class, false);
        self.release(o.agent, o.framework, &o.resources);
        self.release_revocable(o.agent, o.revocable);
        self.frameworks[o.framework as usize].offers.remove(id);
        self.agents[o.agent as usize].offers.remove(id);
        let placed: u32 = o.placements.iter().map(|p| p.1).sum();
        if placed > 0 {
            let fa = &mut self.alloc_fws[o.framework as usize];
            if let Some(c) = fa.tasks_per_agent.get_mut(&o.agent) {
                *c = c.saturating_sub(placed);
                if *c == 0 {
                    fa.tasks_per_agent.remove(&o.agent);
                }
            }
            let fw = &mut self.frameworks[o.framework as usize];
            if fw.demand_gen == o.demand_gen {
                for &(ask, n) in &o.placements {
                    if let Some(x) = fw.offered.get_mut(ask) {
                        *x = x.saturating_sub(n);
                    }
                }
            }
            self.sync_demand(o.framework);
        }
        Some(o)
    }

    /// Declines an offer: its resources return and the agent is filtered
    /// for the framework for `refuse`.
    pub(super) fn decline_offer(
        &mut self,
        now: Timestamp,
        fw: FrameworkIdx,
        id: &OfferId,
        refuse: Duration,
    ) {
        match self.offers.get(id) {
            Some(o) if o.framework == fw => {}
            _ => {
                debug!(offer_id = %id, "decline of an unknown offer ignored");
                return;
            }
        }
        let Some(o) = self.take_offer(id) else {
            return;
        };
        self.counters.offers_declined += 1;
        self.decline_resources(now, fw, o.agent, &o.resources, refuse);
    }

    /// Applies a refuse filter for an agent.
    pub(super) fn decline_resources(
        &mut self,
        now: Timestamp,
        fw: FrameworkIdx,
        agent: AgentIdx,
        _res: &Resources,
        refuse: Duration,
    ) {
        if !refuse.is_zero() {
            self.alloc_fws[fw as usize]
                .filters
                .insert(agent, now + refuse);
        }
        self.dirty = true;
    }

    pub(super) fn rescind(&mut self, id: &OfferId) {
        let Some(o) = self.take_offer(id) else {
            return;
        };
        self.counters.offers_rescinded += 1;
        let fw = &self.frameworks[o.framework as usize];
        if fw.connected {
            self.outbox.push(Action::ToFramework {
                framework: fw.id.clone(),
                event: pb::Event {
                    event: Some(pb::event::Event::Rescind(pb::event::Rescind {
                        offer_id: id.to_string(),
                    })),
                },
            });
        }
    }

    /// Rescinds every outstanding offer of an agent.
    pub(super) fn rescind_agent_offers(&mut self, agent: AgentIdx) {
        let ids: Vec<OfferId> = self.agents[agent as usize].offers.iter().cloned().collect();
        for id in ids {
            self.rescind(&id);
        }
    }

    /// Rescinds every outstanding offer made to a framework.
    pub(super) fn rescind_framework_offers(&mut self, fw: FrameworkIdx) {
        let ids: Vec<OfferId> = self.frameworks[fw as usize]
            .offers
            .iter()
            .cloned()
            .collect();
        for id in ids {
            self.rescind(&id);
        }
    }

    /// Rescinds offers older than the offer timeout.
    pub(super) fn expire_offers(&mut self, now: Timestamp) {
        let timeout = self.cfg.offer_timeout;
        let old: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| o.created + timeout <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            let fw = self.offers[&id].framework;
            let agent = self.offers[&id].agent;
            self.rescind(&id);
            // A hoarded offer is not offered straight back to the hoarder.
            self.alloc_fws[fw as usize]
                .filters
                .insert(agent, now + self.cfg.default_refuse);
        }
    }

    /// Number of outstanding offers.
    pub fn outstanding_offers(&self) -> usize {
        self.offers.len()
    }
}
