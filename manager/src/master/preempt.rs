//! Preemption: the mechanism around the pure victim selection in
//! [`allocator::preemption`](crate::allocator::preemption).
//!
//! After an allocation cycle leaves asks unplaced, each unplaced ask of a
//! class that may preempt something gets room planned for it on agents its
//! constraints admit: first room that is free or already being freed by
//! earlier preemptions, then victims — running tasks, or resources offered
//! to other frameworks — of classes at least
//! [`PREEMPTION_GAP`](strata_proto::class::PREEMPTION_GAP) below. Victim
//! tasks are killed with the preemption grace period (SIGTERM, then SIGKILL
//! after the grace) and reason `REASON_PREEMPTED`; victim offers are
//! rescinded at once. While a victim dies, its resources count as room
//! being freed, so later cycles do not preempt again for the same ask.
//!
//! A decision compares the agents already freeing room and the first
//! [`PREEMPTION_SAMPLE`] agents (from a rotating cursor) that could make
//! room, not every agent: the victims are the best on those agents.
//! Within one decision, room that is free or being freed is promised to
//! one ask (the first that plans on it), so two asks never wait on the same
//! victims. No search is made for an ask when no task or offer of a class
//! it may preempt exists (the master counts them per class), which would
//! otherwise look at every agent each cycle for a batch backlog.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_proto::ids::OfferId;
use strata_proto::pb::Reason;
use tracing::info;

use strata_proto::class::ClassIdx;
use strata_proto::resources::Resources;

use super::{AgentState, Master, TaskKey, Timestamp};

/// How many agents that could make room a preemption decision compares
/// (besides those already freeing room). Kubernetes' scheduler samples at
/// least 100 candidate nodes the same way.
pub const PREEMPTION_SAMPLE: usize = 100;
use crate::allocator::constraints;
use crate::allocator::preemption::{self, AgentCandidates, Candidate};
use crate::allocator::{AgentIdx, FrameworkIdx};

/// Something that can be taken back to make room (borrowed from the
/// master's tables while a plan is made, so planning allocates little).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Victim<'a> {
    /// A running task: killed after the grace period.
    Task(&'a TaskKey),
    /// Resources offered to another framework: rescinded.
    Offer(&'a OfferId),
}

/// Room promised to asks during one preemption decision, per agent.
type Claims = BTreeMap<AgentIdx, Resources>;

/// Free room plus everything that could be taken back on a candidate agent.
fn room_of<K>(a: &AgentCandidates<K>) -> Resources {
    let mut room = a.free.clone();
    for t in &a.tasks {
        room.add(&t.resources);
    }
    room
}

/// A victim once the plan is made.
enum Chosen {
    Task(TaskKey),
    Offer(OfferId),
}

impl Master {
    /// Plans and starts preemptions for the asks the last cycle left
    /// unplaced. Returns how many victims were chosen.
    pub(super) fn preempt_for(
        &mut self,
        now: Timestamp,
        unplaced: &[(FrameworkIdx, usize, u32)],
    ) -> usize {
        let classes = &self.cfg.classes;
        let Some(lowest) = classes.iter().last() else {
            return 0;
        };
        self.forget_finished_preemptions();
        let mut chosen = 0;
        // Room promised to earlier asks of this decision, per agent: room
        // that is free or being freed serves one ask only, the first (the
        // allocator serves them in the same order once the room is free).
        let mut claimed: Claims = BTreeMap::new();
        for &(f, ai, count) in unplaced {
            let Some(ask) = self.alloc_fws[f as usize].demand.get(ai) else {
                continue;
            };
            if !self.cfg.classes.may_preempt(ask.class, lowest) {
                continue;
            }
            // Nothing this ask could take back exists: no search (it would
            // look at every agent and find nothing).
            let preemptible =
                self.live_by_class.iter().enumerate().any(|(c, &n)| {
                    n > 0 && self.cfg.classes.may_preempt(ask.class, ClassIdx(c as u8))
                });
            if !preemptible {
                continue;
            }
            // Each ask sees the room earlier victims are freeing, less what
            // earlier asks of this decision were promised.
            let (victims, cursor) = self.plan_for(now, f, ai, count, &mut claimed);
            self.preempt_cursor = cursor;
            chosen += victims.len();
            for v in victims {
                self.take_back(now, f, v);
            }
        }
        chosen
    }

    /// The victims that make room for `count` tasks of ask `ai` of `f`,
    /// and where the next search starts.
    fn plan_for(
        &self,
        now: Timestamp,
        f: FrameworkIdx,
        ai: usize,
        count: u32,
        claimed: &mut Claims,
    ) -> (Vec<Chosen>, usize) {
        let ask = &self.alloc_fws[f as usize].demand[ai];
        let fa = &self.alloc_fws[f as usize];
        let alloc_agents = &self.alloc_agents;
        let allowed = |a: AgentIdx| {
            let placed = fa.tasks_per_agent.get(&a).copied().unwrap_or(0);
            constraints::allows(
                &ask.constraints,
                &alloc_agents[a as usize],
                placed,
                |pred| {
                    fa.tasks_per_agent
                        .iter()
                        .filter(|(agent, _)| pred(&alloc_agents[**agent as usize]))
                        .map(|(_, n)| *n)
                        .sum()
                },
            )
        };
        let (mut agents, cursor) =
            self.preemption_candidates(now, f, ask.class, &ask.resources, &allowed, claimed);
        let room_before: Vec<Resources> = agents.iter().map(room_of).collect();
        let plan = preemption::plan(
            &self.cfg.classes,
            ask.class,
            &ask.resources,
            count,
            &mut agents,
            allowed,
        );
        // What the plan put on each agent (in free room or in room its
        // victims free) is promised to this ask.
        for (a, before) in agents.iter().zip(room_before) {
            let mut taken = before;
            taken.subtract_saturating(&room_of(a));
            if !taken.is_empty() {
                claimed.entry(a.agent).or_default().add(&taken);
            }
        }
        let chosen = plan
            .into_iter()
            .flat_map(|v| v.tasks)
            .map(|v| match v {
                Victim::Task(k) => Chosen::Task(k.clone()),
                Victim::Offer(id) => Chosen::Offer(id.clone()),
            })
            .collect();
        (chosen, cursor)
    }

    /// Agents with preemptions in flight no longer once their victims
    /// are gone.
    fn forget_finished_preemptions(&mut self) {
        let tasks = &self.tasks;
        let agents = &self.agents;
        self.preempting_agents.retain(|&a| {
            agents[a as usize].tasks.iter().any(|k| {
                tasks
                    .get(k)
                    .is_some_and(|t| t.preempted_at.is_some() && !t.released)
            })
        });
    }

    /// The agents a plan looks at, with their room (free plus what dying
    /// victims will free) and what could be taken back there for framework
    /// `f`: other frameworks' running tasks and offers of classes `class`
    /// may preempt. Agents with preemptions in flight always come first;
    /// then agents from a rotating cursor until [`PREEMPTION_SAMPLE`] of
    /// them could make room (as Kubernetes' scheduler samples candidate
    /// nodes), so a decision costs the same on 100 or 10,000 agents.
    /// Returns the candidates and where the next search starts.
    fn preemption_candidates(
        &self,
        now: Timestamp,
        f: FrameworkIdx,
        class: ClassIdx,
        need: &Resources,
        allowed: &dyn Fn(AgentIdx) -> bool,
        claimed: &Claims,
    ) -> (Vec<AgentCandidates<Victim<'_>>>, usize) {
        let mut out = Vec::new();
        for &a in &self.preempting_agents {
            if let Some(c) = self.candidates_on(now, a, f, class, claimed) {
                out.push(c);
            }
        }
        let n = self.agents.len();
        let mut viable = 0;
        let mut step = 0;
        while step < n && viable < PREEMPTION_SAMPLE {
            let a = ((self.preempt_cursor + step) % n) as AgentIdx;
            step += 1;
            if self.preempting_agents.contains(&a) || !allowed(a) {
                continue;
            }
            let Some(c) = self.candidates_on(now, a, f, class, claimed) else {
                continue;
            };
            let mut room = c.free.clone();
            for t in &c.tasks {
                room.add(&t.resources);
            }
            if room.fits_shape(need) {
                viable += 1;
                out.push(c);
            }
        }
        (out, (self.preempt_cursor + step) % n.max(1))
    }

    /// One registered agent's room (less what is `claimed` there) and
    /// victims for framework `f`.
    fn candidates_on(
        &self,
        now: Timestamp,
        agent: AgentIdx,
        f: FrameworkIdx,
        class: ClassIdx,
        claimed: &Claims,
    ) -> Option<AgentCandidates<Victim<'_>>> {
        let classes = &self.cfg.classes;
        let a = &self.agents[agent as usize];
        if a.state != AgentState::Registered {
            return None;
        }
        let mut free = self.alloc_agents[agent as usize].free();
        let mut tasks = Vec::new();
        for key in &a.tasks {
            let Some(t) = self.tasks.get(key) else {
                continue;
            };
            if t.released {
                continue;
            }
            if t.preempted_at.is_some() {
                free.add(&t.resources);
                continue;
            }
            if t.kill_requested || t.framework == f || !classes.may_preempt(class, t.class) {
                continue;
            }
            tasks.push(Candidate {
                key: Victim::Task(key),
                class: t.class,
                resources: t.resources.clone(),
                running: now - t.launched_at,
            });
        }
        for id in &a.offers {
            let o = &self.offers[id];
            if o.framework == f || !classes.may_preempt(class, o.class) {
                continue;
            }
            tasks.push(Candidate {
                key: Victim::Offer(id),
                class: o.class,
                resources: o.resources.clone(),
                running: Duration::ZERO,
            });
        }
        if let Some(c) = claimed.get(&agent) {
            free.subtract_saturating(c);
        }
        Some(AgentCandidates { agent, free, tasks })
    }

    fn take_back(&mut self, now: Timestamp, preemptor: FrameworkIdx, victim: Chosen) {
        let by = self.frameworks[preemptor as usize].id.clone();
        match victim {
            Chosen::Offer(id) => {
                if !self.offers.contains_key(&id) {
                    return;
                }
                info!(offer_id = %id, by = %by, "offer rescinded for preemption");
                self.counters.offers_preempted += 1;
                self.rescind(&id);
            }
            Chosen::Task(key) => {
                let grace = self.cfg.preemption_grace.as_secs_f64();
                let Some(t) = self.tasks.get_mut(&key) else {
                    return;
                };
                t.kill_requested = true;
                t.preempted_at = Some(now);
                let (agent, fw) = (t.agent, t.framework);
                self.preempting_agents.insert(agent);
                self.counters.tasks_preempted += 1;
                info!(task_id = %key.1, framework_id = %self.frameworks[fw as usize].id,
                    by = %by, grace_secs = grace, "task preempted");
                self.push_kill(agent, fw, &key.1, Some(grace), Reason::Preempted);
                self.note_takeback(now, "preempted", &key, Some(by.to_string()));
            }
        }
    }
}
