//! Victim selection for preemption (policy), a pure function.
//!
//! When an ask of a high class fits nowhere, the manager may free room for
//! it on *one* agent by preempting tasks of classes at least
//! [`PREEMPTION_GAP`](strata_proto::class::PREEMPTION_GAP) below it. Among
//! the agents where that would work, the choice minimises, in order: the
//! highest class among the victims, the number of victims, and the work
//! lost (the victims' running time weighted by their dominant resource).
//! Within a class no task is ever preempted.
//!
//! The allocator reports unplaced asks in [`Solution::unplaced`](super::Solution);
//! the mechanism that kills victims after a grace period (with
//! `REASON_PREEMPTED`) uses this function.

use std::time::Duration;
use strata_proto::class::{ClassIdx, PriorityClasses};
use strata_proto::resources::Resources;

use super::AgentIdx;

/// A running task that could be preempted.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate<K> {
    /// The caller's key for the task.
    pub key: K,
    /// Its class.
    pub class: ClassIdx,
    /// What it holds.
    pub resources: Resources,
    /// How long it has run.
    pub running: Duration,
}

/// One agent's free resources and its preemptible tasks.
#[derive(Clone, Debug)]
pub struct AgentCandidates<K> {
    /// The agent.
    pub agent: AgentIdx,
    /// What is free there now.
    pub free: Resources,
    /// Its running tasks.
    pub tasks: Vec<Candidate<K>>,
}

/// The chosen victims.
#[derive(Clone, Debug, PartialEq)]
pub struct Victims<K> {
    /// The agent where room is made.
    pub agent: AgentIdx,
    /// The tasks to preempt.
    pub tasks: Vec<K>,
}

/// Chooses victims for one task of class `class` needing `need`, or `None`
/// if no agent can make room by preempting lower classes.
pub fn select_victims<K: Clone>(
    classes: &PriorityClasses,
    class: ClassIdx,
    need: &Resources,
    agents: &[AgentCandidates<K>],
) -> Option<Victims<K>> {
    select_among(classes, class, need, agents, |_| true)
}

fn select_among<K: Clone>(
    classes: &PriorityClasses,
    class: ClassIdx,
    need: &Resources,
    agents: &[AgentCandidates<K>],
    allowed: impl Fn(AgentIdx) -> bool,
) -> Option<Victims<K>> {
    let mut best: Option<((i32, usize, u128), Victims<K>)> = None;
    for a in agents.iter().filter(|a| allowed(a.agent)) {
        if a.free.fits_shape(need) {
            // Room without preemption: nothing to do here.
            return None;
        }
        let mut eligible: Vec<&Candidate<K>> = a
            .tasks
            .iter()
            .filter(|t| classes.may_preempt(class, t.class))
            .collect();
        // Lowest class first, then the least work lost.
        eligible.sort_by_key(|t| (std::cmp::Reverse(t.class), work(t)));
        let mut room = a.free.clone();
        let mut chosen: Vec<&Candidate<K>> = Vec::new();
        for t in eligible {
            if room.fits_shape(need) {
                break;
            }
            room.add(&t.resources);
            chosen.push(t);
        }
        if !room.fits_shape(need) || chosen.is_empty() {
            continue;
        }
        let top_class = chosen
            .iter()
            .map(|t| classes.get(t.class).value)
            .max()
            .unwrap_or(i32::MIN);
        let lost: u128 = chosen.iter().map(|t| work(t)).sum();
        let score = (top_class, chosen.len(), lost);
        if best.as_ref().is_none_or(|(s, _)| score < *s) {
            best = Some((
                score,
                Victims {
                    agent: a.agent,
                    tasks: chosen.into_iter().map(|t| t.key.clone()).collect(),
                },
            ));
        }
    }
    best.map(|(_, v)| v)
}

/// Plans room for `count` tasks of class `class` needing `need` each.
///
/// Each task first takes room that is free (or being freed by earlier
/// preemptions) on an agent `allowed` admits; only when there is none are
/// victims chosen with [`select_victims`]. The candidates are updated as
/// the plan goes: chosen victims leave their agent's task list and the
/// room they free (less what the planned task takes) joins its free
/// resources. Stops at the first task no agent can make room for.
pub fn plan<K: Clone + PartialEq>(
    classes: &PriorityClasses,
    class: ClassIdx,
    need: &Resources,
    count: u32,
    agents: &mut [AgentCandidates<K>],
    allowed: impl Fn(AgentIdx) -> bool,
) -> Vec<Victims<K>> {
    let mut out = Vec::new();
    for _ in 0..count {
        if let Some(a) = agents
            .iter_mut()
            .find(|a| allowed(a.agent) && a.free.fits_shape(need))
        {
            a.free.subtract_saturating(need);
            continue;
        }
        let Some(v) = select_among(classes, class, need, agents, &allowed) else {
            break;
        };
        // The victims were chosen among these agents.
        let Some(a) = agents.iter_mut().find(|a| a.agent == v.agent) else {
            break;
        };
        let mut freed = a.free.clone();
        a.tasks.retain(|t| {
            let victim = v.tasks.contains(&t.key);
            if victim {
                freed.add(&t.resources);
            }
            !victim
        });
        freed.subtract_saturating(need);
        a.free = freed;
        out.push(v);
    }
    out
}

fn work<K>(t: &Candidate<K>) -> u128 {
    let weight = (t.resources.cpus.milli().max(0) as u128)
        .max(t.resources.mem.milli().max(0) as u128 / 1024);
    t.running.as_millis() * weight.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(key: u32, class: &str, cpus: f64, ms: u64) -> Candidate<u32> {
        let classes = PriorityClasses::default();
        Candidate {
            key,
            class: classes.lookup(class).unwrap(),
            resources: Resources::new(cpus, 0.0),
            running: Duration::from_millis(ms),
        }
    }

    #[test]
    fn prefers_lowest_class_then_fewest_then_least_work() {
        let classes = PriorityClasses::default();
        let service = classes.lookup("service").unwrap();
        let need = Resources::new(2.0, 0.0);
        let agents = vec![
            AgentCandidates {
                agent: 0,
                free: Resources::default(),
                tasks: vec![cand(1, "batch", 2.0, 10)],
            },
            AgentCandidates {
                agent: 1,
                free: Resources::default(),
                tasks: vec![
                    cand(2, "best-effort", 1.0, 5),
                    cand(3, "best-effort", 1.0, 5),
                ],
            },
            AgentCandidates {
                agent: 2,
                free: Resources::default(),
                tasks: vec![cand(4, "best-effort", 2.0, 100)],
            },
        ];
        let v = select_victims(&classes, service, &need, &agents).unwrap();
        // best-effort beats batch; one victim beats two.
        assert_eq!(
            v,
            Victims {
                agent: 2,
                tasks: vec![4]
            }
        );
    }

    #[test]
    fn never_within_a_class_nor_when_room_exists() {
        let classes = PriorityClasses::default();
        let batch = classes.lookup("batch").unwrap();
        let need = Resources::new(1.0, 0.0);
        let agents = vec![AgentCandidates {
            agent: 0,
            free: Resources::default(),
            tasks: vec![cand(1, "batch", 4.0, 1)],
        }];
        assert_eq!(select_victims(&classes, batch, &need, &agents), None);
        let agents = vec![AgentCandidates {
            agent: 0,
            free: Resources::new(1.0, 0.0),
            tasks: vec![cand(1, "best-effort", 4.0, 1)],
        }];
        assert_eq!(select_victims(&classes, batch, &need, &agents), None);
    }

    #[test]
    fn a_plan_uses_room_being_freed_before_choosing_more_victims() {
        let classes = PriorityClasses::default();
        let service = classes.lookup("service").unwrap();
        let need = Resources::new(1.0, 0.0);
        let mut agents = vec![
            AgentCandidates {
                agent: 0,
                // One cpu already being freed by an earlier preemption.
                free: Resources::new(1.0, 0.0),
                tasks: vec![cand(1, "batch", 2.0, 10)],
            },
            AgentCandidates {
                agent: 1,
                free: Resources::default(),
                tasks: vec![cand(2, "batch", 1.0, 5), cand(3, "service", 4.0, 5)],
            },
        ];
        let plan = plan(&classes, service, &need, 4, &mut agents, |_| true);
        // First task: the free cpu. Second: one victim on agent 1 (less
        // work lost). Third: agent 0's victim, whose second cpu serves the
        // fourth. A service task is never chosen.
        assert_eq!(
            plan,
            vec![
                Victims {
                    agent: 1,
                    tasks: vec![2]
                },
                Victims {
                    agent: 0,
                    tasks: vec![1]
                },
            ]
        );
        assert!(agents[0].tasks.is_empty());
        assert_eq!(agents[1].tasks.len(), 1);
        // A fifth task finds nothing more to preempt.
        let more = super::plan(&classes, service, &need, 1, &mut agents, |_| true);
        assert!(more.is_empty());
    }

    #[test]
    fn a_plan_respects_the_agents_allowed() {
        let classes = PriorityClasses::default();
        let service = classes.lookup("service").unwrap();
        let need = Resources::new(1.0, 0.0);
        let mut agents = vec![
            AgentCandidates {
                agent: 0,
                free: Resources::new(1.0, 0.0),
                tasks: vec![],
            },
            AgentCandidates {
                agent: 1,
                free: Resources::default(),
                tasks: vec![cand(7, "best-effort", 1.0, 5)],
            },
        ];
        let plan = plan(&classes, service, &need, 1, &mut agents, |a| a == 1);
        assert_eq!(
            plan,
            vec![Victims {
                agent: 1,
                tasks: vec![7]
            }]
        );
    }
}
