//! The allocator: a pure function from the cluster's allocation state to a
//! set of offers.
//!
//! [`solve`] is the mechanism: one allocation cycle. It walks the priority
//! classes from highest to lowest. Inside a class it serves frameworks in
//! the order of the [`drf`] sorter (policy): lowest weighted dominant share of
//! the role first, then the lowest share inside the role. Two kinds of
//! frameworks are served:
//!
//! 1. frameworks with **pending demand** in the class (task-shaped asks) get
//!    their asks *placed* one at a time on agents that fit them (next-fit from
//!    a rotating cursor, honouring filters, constraints and quota), and the
//!    placements on one agent become one offer;
//! 2. frameworks with **no demand** that are not suppressed get Mesos-style
//!    offers of whole agents' remaining free resources at their default class.
//!
//! Everything offered counts as allocated to the framework until it is
//! launched on, declined, rescinded or timed out, so nothing is offered twice
//! at once. The function takes no clock and no randomness beyond what the
//! caller passes, so a cycle can be replayed exactly.

pub mod constraints;
pub mod drf;
pub mod preemption;
mod revocable;

use rustc_hash::FxHashMap as HashMap;
use std::collections::BinaryHeap;

use strata_proto::class::{ClassIdx, PriorityClasses};
use strata_proto::resources::{Resources, Scalar};
use strata_proto::time::Timestamp;

pub use constraints::{Constraint, ConstraintOp};

/// Dense index of an agent in the master's tables.
pub type AgentIdx = u32;
/// Dense index of a framework in the master's tables.
pub type FrameworkIdx = u32;
/// Dense index of a role in the master's tables.
pub type RoleIdx = u32;

/// An agent as the allocator sees it.
#[derive(Clone, Debug, Default)]
pub struct AgentAlloc {
    /// Whether the agent may receive offers (registered and connected).
    pub active: bool,
    /// Host name (for `hostname` constraints).
    pub hostname: String,
    /// Attributes (for attribute constraints).
    pub attributes: Vec<(String, String)>,
    /// What the agent advertises.
    pub total: Resources,
    /// What is allocated on it: tasks plus outstanding offers.
    pub allocated: Resources,
    /// Idle cpus that running tasks of each class hold but do not use
    /// (measured by the agent), lendable as revocable to classes at least
    /// [`PREEMPTION_GAP`](strata_proto::class::PREEMPTION_GAP) below.
    pub lent: Vec<(ClassIdx, Scalar)>,
    /// Revocable cpus lent out: tasks plus outstanding offers.
    pub revocable_allocated: Scalar,
}

impl AgentAlloc {
    /// The resources not allocated.
    pub fn free(&self) -> Resources {
        let mut free = self.total.clone();
        free.subtract_saturating(&self.allocated);
        free
    }
}

/// One pending ask of a framework.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingAsk {
    /// Its class.
    pub class: ClassIdx,
    /// Resources of one task (ports: how many, not which).
    pub resources: Resources,
    /// How many tasks of this shape are still wanted (beyond what is offered).
    pub count: u32,
    /// Where they may go.
    pub constraints: Vec<Constraint>,
    /// Whether a task may run on revocable cpus when no regular room fits.
    pub accept_revocable: bool,
}

/// A framework as the allocator sees it.
#[derive(Clone, Debug, Default)]
pub struct FrameworkAlloc {
    /// Whether the framework may receive offers (subscribed and connected).
    pub active: bool,
    /// Its role.
    pub role: RoleIdx,
    /// No offers at all while suppressed.
    pub suppressed: bool,
    /// The class of whole-agent offers when it declares no demand.
    pub default_class: ClassIdx,
    /// Pending demand.
    pub demand: Vec<PendingAsk>,
    /// Agents it declined, until an instant.
    pub filters: HashMap<AgentIdx, Timestamp>,
    /// Resources allocated to it (tasks plus outstanding offers).
    pub allocated: Resources,
    /// How many of its tasks (and outstanding placements) each agent holds,
    /// for `UNIQUE` and `MAX_PER` constraints.
    pub tasks_per_agent: HashMap<AgentIdx, u32>,
}

impl FrameworkAlloc {
    /// Whether the framework filters the agent at `now`.
    pub fn filters_agent(&self, agent: AgentIdx, now: Timestamp) -> bool {
        self.filters.get(&agent).is_some_and(|&until| until > now)
    }
}

/// A role as the allocator sees it.
#[derive(Clone, Debug)]
pub struct RoleAlloc {
    /// Fair-share weight (> 0).
    pub weight: f64,
    /// The most this role may hold, if limited.
    pub quota_limit: Option<Resources>,
    /// What it holds.
    pub allocated: Resources,
}

impl Default for RoleAlloc {
    fn default() -> Self {
        RoleAlloc {
            weight: 1.0,
            quota_limit: None,
            allocated: Resources::default(),
        }
    }
}

/// The input of one allocation cycle.
pub struct Problem<'a> {
    /// The priority classes.
    pub classes: &'a PriorityClasses,
    /// All agents, by index.
    pub agents: &'a [AgentAlloc],
    /// All frameworks, by index.
    pub frameworks: &'a [FrameworkAlloc],
    /// All roles, by index.
    pub roles: &'a [RoleAlloc],
    /// The sum of all active agents' totals (the DRF denominator).
    pub cluster_total: &'a Resources,
    /// The current instant (for filters).
    pub now: Timestamp,
    /// Where the next-fit agent scan starts (rotated by the caller).
    pub start: usize,
    /// Whole-agent offers are not made of less than this.
    pub min_offer: &'a Resources,
}

/// One placement: an ask of a framework put on an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// Index of the ask in the framework's demand.
    pub ask: usize,
    /// Regular resources placed, with concrete ports.
    pub resources: Resources,
    /// Revocable cpus placed (zero for a regular placement).
    pub revocable: Scalar,
}

/// One offer decided by the allocator.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferDecision {
    /// To whom.
    pub framework: FrameworkIdx,
    /// Of which agent.
    pub agent: AgentIdx,
    /// At which class.
    pub class: ClassIdx,
    /// What is offered.
    pub resources: Resources,
    /// Revocable cpus offered besides (placements that accept revocable).
    pub revocable: Scalar,
    /// The demand placements it carries (empty for whole-agent offers).
    pub placements: Vec<Placement>,
}

/// The output of one allocation cycle.
#[derive(Clone, Debug, Default)]
pub struct Solution {
    /// Offers to make, at most one per (framework, agent, class).
    pub offers: Vec<OfferDecision>,
    /// Asks placed.
    pub placements: usize,
    /// Per framework and ask index: tasks that could not be placed.
    pub unplaced: Vec<(FrameworkIdx, usize, u32)>,
}

/// Runs one allocation cycle.
pub fn solve(p: &Problem<'_>) -> Solution {
    let mut st = CycleState::new(p);
    for class in p.classes.iter() {
        st.place_demand(class);
        st.offer_whole_agents(class);
    }
    st.place_revocable();
    st.finish()
}

/// Mutable state of one cycle, over the immutable problem.
struct CycleState<'p, 'a> {
    p: &'p Problem<'a>,
    /// Extra allocation per agent made this cycle.
    agent_taken: HashMap<AgentIdx, Resources>,
    /// Extra allocation per framework made this cycle.
    fw_taken: Vec<Resources>,
    /// Extra allocation per role made this cycle.
    role_taken: Vec<Resources>,
    /// Extra placements per framework and agent (for constraints).
    fw_agent_count: HashMap<(FrameworkIdx, AgentIdx), u32>,
    /// Offers being built, keyed by (framework, agent, class).
    offers: HashMap<(FrameworkIdx, AgentIdx, ClassIdx), OfferDecision>,
    order: Vec<(FrameworkIdx, AgentIdx, ClassIdx)>,
    cursor: usize,
    /// Upper bounds of any agent's free cpus and mem (they only shrink in a
    /// cycle), to skip asks that cannot fit anywhere without a scan.
    max_free_cpus: Scalar,
    max_free_mem: Scalar,
    placements: usize,
    unplaced: Vec<(FrameworkIdx, usize, u32)>,
    /// Shapes (without constraints or filters) that fit no agent this cycle.
    failed_shapes: Vec<Resources>,
    /// Extra revocable cpus lent per agent this cycle.
    revocable_taken: HashMap<AgentIdx, Scalar>,
}

impl<'p, 'a> CycleState<'p, 'a> {
    fn new(p: &'p Problem<'a>) -> Self {
        let mut max_free_cpus = Scalar::ZERO;
        let mut max_free_mem = Scalar::ZERO;
        for a in p.agents.iter().filter(|a| a.active) {
            max_free_cpus = max_free_cpus.max(a.total.cpus.saturating_sub(a.allocated.cpus));
            max_free_mem = max_free_mem.max(a.total.mem.saturating_sub(a.allocated.mem));
        }
        CycleState {
            p,
            agent_taken: HashMap::default(),
            fw_taken: vec![Resources::default(); p.frameworks.len()],
            role_taken: vec![Resources::default(); p.roles.len()],
            fw_agent_count: HashMap::default(),
            offers: HashMap::default(),
            order: Vec::new(),
            cursor: if p.agents.is_empty() {
                0
            } else {
                p.start % p.agents.len()
            },
            max_free_cpus,
            max_free_mem,
            placements: 0,
            unplaced: Vec::new(),
            failed_shapes: Vec::new(),
            revocable_taken: HashMap::default(),
        }
    }

    fn agent_free(&self, a: AgentIdx) -> Resources {
        let mut free = self.p.agents[a as usize].free();
        if let Some(t) = self.agent_taken.get(&a) {
            free.subtract_saturating(t);
        }
        free
    }

    fn fw_allocated(&self, f: FrameworkIdx) -> Resources {
        self.p.frameworks[f as usize]
            .allocated
            .plus(&self.fw_taken[f as usize])
    }

    fn role_allocated(&self, r: RoleIdx) -> Resources {
        self.p.roles[r as usize]
            .allocated
            .plus(&self.role_taken[r as usize])
    }

    fn sort_key(&self, f: FrameworkIdx) -> drf::ShareKey {
        let fw = &self.p.frameworks[f as usize];
        let role = &self.p.roles[fw.role as usize];
        drf::ShareKey::new(
            drf::weighted_share(
                &self.role_allocated(fw.role),
                self.p.cluster_total,
                role.weight,
            ),
            drf::weighted_share(&self.fw_allocated(f), self.p.cluster_total, 1.0),
            f,
        )
    }

    fn within_quota(&self, role: RoleIdx, extra: &Resources) -> bool {
        match &self.p.roles[role as usize].quota_limit {
            None => true,
            Some(limit) => {
                let after = self.role_allocated(role).plus(extra);
                after.cpus <= limit.cpus && after.mem <= limit.mem && after.disk <= limit.disk
            }
        }
    }

    fn take(
        &mut self,
        f: FrameworkIdx,
        a: AgentIdx,
        class: ClassIdx,
        res: Resources,
        revocable: Scalar,
        ask: Option<usize>,
    ) {
        let role = self.p.frameworks[f as usize].role;
        self.agent_taken.entry(a).or_default().add(&res);
        self.fw_taken[f as usize].add(&res);
        self.role_taken[role as usize].add(&res);
        let key = (f, a, class);
        let offer = self.offers.entry(key).or_insert_with(|| {
            self.order.push(key);
            OfferDecision {
                framework: f,
                agent: a,
                class,
                resources: Resources::default(),
                revocable: Scalar::ZERO,
                placements: Vec::new(),
            }
        });
        offer.resources.add(&res);
        offer.revocable += revocable;
        if !revocable.is_zero() {
            *self.revocable_taken.entry(a).or_default() += revocable;
        }
        if let Some(ask) = ask {
            offer.placements.push(Placement {
                ask,
                resources: res,
                revocable,
            });
            *self.fw_agent_count.entry((f, a)).or_default() += 1;
            self.placements += 1;
        }
    }

    /// Places pending asks of `class`, one task at a time, lowest share first.
    fn place_demand(&mut self, class: ClassIdx) {
        let p = self.p;
        // Remaining count per (framework, ask) for this class.
        let mut remaining: HashMap<(FrameworkIdx, usize), u32> = HashMap::default();
        let mut heap = BinaryHeap::new();
        for (fi, fw) in p.frameworks.iter().enumerate() {
            if !fw.active || fw.suppressed {
                continue;
            }
            let mut any = false;
            for (ai, ask) in fw.demand.iter().enumerate() {
                if ask.class == class && ask.count > 0 {
                    remaining.insert((fi as FrameworkIdx, ai), ask.count);
                    any = true;
                }
            }
            if any {
                heap.push(std::cmp::Reverse(self.sort_key(fi as FrameworkIdx)));
            }
        }
        while let Some(std::cmp::Reverse(key)) = heap.pop() {
            let f = key.framework;
            // Shares only grow within a cycle, so a stale key is a lower
            // bound: re-check it against the next best before serving.
            let fresh = self.sort_key(f);
            if fresh > key
                && let Some(std::cmp::Reverse(next)) = heap.peek()
                && fresh > *next
            {
                heap.push(std::cmp::Reverse(fresh));
                continue;
            }
            let fw = &p.frameworks[f as usize];
            // The framework's first ask in this class with tasks left.
            let next_ask = fw.demand.iter().enumerate().find(|(ai, a)| {
                a.class == class && remaining.get(&(f, *ai)).copied().unwrap_or(0) > 0
            });
            let Some((ai, ask)) = next_ask else { continue };
            match self.find_agent(f, ask) {
                Some((agent, res)) => {
                    self.take(f, agent, class, res, Scalar::ZERO, Some(ai));
                    if let Some(r) = remaining.get_mut(&(f, ai)) {
                        *r -= 1;
                    }
                }
                None => {
                    // Nothing fits this ask now: give up on it for the cycle.
                    if let Some(r) = remaining.remove(&(f, ai)) {
                        self.unplaced.push((f, ai, r));
                    }
                }
            }
            let more = fw.demand.iter().enumerate().any(|(ai, a)| {
                a.class == class && remaining.get(&(f, ai)).copied().unwrap_or(0) > 0
            });
            if more {
                heap.push(std::cmp::Reverse(self.sort_key(f)));
            }
        }
    }

    /// Finds an agent for one task of `ask` (next-fit from the cursor).
    fn find_agent(&mut self, f: FrameworkIdx, ask: &PendingAsk) -> Option<(AgentIdx, Resources)> {
        let p = self.p;
        let fw = &p.frameworks[f as usize];
        let want = &ask.resources;
        if want.cpus > self.max_free_cpus || want.mem > self.max_free_mem {
            return None;
        }
        if !self.within_quota(fw.role, want) {
            return None;
        }
        // Free capacity only shrinks within a cycle: an ask at least as large
        // as one that found no agent (for a framework filtering nothing,
        // without constraints) cannot fit either.
        let plain = ask.constraints.is_empty();
        if plain && self.failed_shapes.iter().any(|s| want.fits_shape(s)) {
            return None;
        }
        let unfiltered = !fw.filters.values().any(|&until| until > p.now);
        let n = p.agents.len();
        let want_ports = want.ports.count();
        for step in 0..n {
            let a = ((self.cursor + step) % n) as AgentIdx;
            let agent = &p.agents[a as usize];
            if !agent.active {
                continue;
            }
            // Cheap scalar check first; ports and constraints only if it passes.
            let taken = self.agent_taken.get(&a);
            let free_of = |t: Scalar, al: Scalar, tk: Option<Scalar>| {
                t.saturating_sub(al).saturating_sub(tk.unwrap_or_default())
            };
            if free_of(
                agent.total.cpus,
                agent.allocated.cpus,
                taken.map(|t| t.cpus),
            ) < want.cpus
                || free_of(agent.total.mem, agent.allocated.mem, taken.map(|t| t.mem)) < want.mem
                || free_of(
                    agent.total.disk,
                    agent.allocated.disk,
                    taken.map(|t| t.disk),
                ) < want.disk
            {
                continue;
            }
            if fw.filters_agent(a, p.now) {
                continue;
            }
            let mut res = want.clone();
            if want_ports > 0 {
                let free = self.agent_free(a);
                match free.ports.take_lowest(want_ports) {
                    Some(ports) => res.ports = ports,
                    None => continue,
                }
            }
            if !plain {
                let placed_here = fw.tasks_per_agent.get(&a).copied().unwrap_or(0)
                    + self.fw_agent_count.get(&(f, a)).copied().unwrap_or(0);
                if !constraints::allows(&ask.constraints, agent, placed_here, |other| {
                    self.count_on_value(f, other)
                }) {
                    continue;
                }
            }
            // Stay on this agent: the next ask tries it first, so one
            // framework's placements pack into few offers.
            self.cursor = a as usize;
            return Some((a, res));
        }
        if plain && unfiltered && want_ports == 0 {
            self.failed_shapes.push(want.clone());
        }
        None
    }

    /// For `GROUP_BY`: how many tasks of framework `f` run on agents whose
    /// field has the value `v` (given as a predicate over agents).
    fn count_on_value(&self, f: FrameworkIdx, same_group: &dyn Fn(&AgentAlloc) -> bool) -> u32 {
        let fw = &self.p.frameworks[f as usize];
        let mut total = 0;
        for (&a, &c) in &fw.tasks_per_agent {
            if same_group(&self.p.agents[a as usize]) {
                total += c;
            }
        }
        for (&(ff, a), &c) in &self.fw_agent_count {
            if ff == f && same_group(&self.p.agents[a as usize]) {
                total += c;
            }
        }
        total
    }

    /// Offers whole agents' free resources to frameworks without demand whose
    /// default class is `class`, lowest share first, Mesos-style.
    fn offer_whole_agents(&mut self, class: ClassIdx) {
        let p = self.p;
        let mut eligible: Vec<FrameworkIdx> = p
            .frameworks
            .iter()
            .enumerate()
            .filter(|(_, fw)| {
                fw.active && !fw.suppressed && fw.demand.is_empty() && fw.default_class == class
            })
            .map(|(i, _)| i as FrameworkIdx)
            .collect();
        if eligible.is_empty() {
            return;
        }
        let n = p.agents.len();
        for step in 0..n {
            let a = ((self.cursor + step) % n) as AgentIdx;
            if !p.agents[a as usize].active {
                continue;
            }
            let free = self.agent_free(a);
            if free.cpus < p.min_offer.cpus && free.mem < p.min_offer.mem {
                continue;
            }
            eligible.sort_by_key(|&f| self.sort_key(f));
            let chosen = eligible.iter().copied().find(|&f| {
                let fw = &p.frameworks[f as usize];
                !fw.filters_agent(a, p.now) && self.within_quota(fw.role, &free)
            });
            if let Some(f) = chosen {
                self.take(f, a, class, free, Scalar::ZERO, None);
            }
        }
    }

    fn finish(self) -> Solution {
        let mut offers = self.offers;
        Solution {
            offers: self.order.iter().filter_map(|k| offers.remove(k)).collect(),
            placements: self.placements,
            unplaced: self.unplaced,
        }
    }
}

#[cfg(test)]
mod tests;
