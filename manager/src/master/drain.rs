//! Maintenance: draining an agent (Mesos' `DRAIN_AGENT`).
//!
//! A drain stops offers on the agent at once and rescinds those out; every
//! framework is told (a `Drain` event, repeated to a framework that
//! subscribes later), so a services scheduler moves its instances away
//! within its disruption budget and a batch driver stops placing work
//! there. Tasks may finish until the deadline; at the deadline the master
//! kills what is left, with the preemption grace and `REASON_AGENT_DRAINED`.
//! The agent is *draining* while tasks remain and *drained* after. The
//! drain is part of the agent's registry record, so it survives a restart
//! and a failover; an undrain makes the agent offerable again.

use std::time::Duration;

use strata_proto::ids::{AgentId, TaskId};
use strata_proto::pb::{self, Reason};
use tracing::info;

use super::records::DrainRecord;
use super::{Action, Master, MasterError, PersistOp, Timestamp};
use crate::allocator::AgentIdx;

/// Where a drain stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainState {
    /// Tasks remain on the agent.
    Draining,
    /// Nothing runs there any more.
    Drained,
}

impl DrainState {
    /// `draining` or `drained`.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainState::Draining => "draining",
            DrainState::Drained => "drained",
        }
    }
}

impl Master {
    fn agent_idx(&self, agent: &AgentId) -> Result<AgentIdx, MasterError> {
        self.agent_index
            .get(agent)
            .copied()
            .ok_or_else(|| MasterError::UnknownAgent {
                agent_id: agent.clone(),
            })
    }

    /// Starts draining `agent`: no offers from now, what is left at
    /// `now + deadline` is killed. Draining a draining agent sets its new
    /// deadline.
    pub fn drain_agent(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        deadline: Duration,
    ) -> Result<DrainRecord, MasterError> {
        let idx = self.agent_idx(agent)?;
        let since = self.agents[idx as usize].drain.map_or(now, |d| d.since);
        let drain = DrainRecord {
            since,
            deadline: now + deadline,
        };
        info!(agent_id = %agent, deadline_s = deadline.as_secs_f64(), "agent draining");
        self.set_drain(idx, Some(drain));
        self.rescind_agent_offers(idx);
        self.set_agent_active(idx, false);
        self.tell_drain(idx, None);
        // A deadline of zero kills at once.
        self.drain_deadlines(now);
        Ok(drain)
    }

    /// Ends the drain of `agent`: it is offered again.
    pub fn undrain_agent(&mut self, agent: &AgentId) -> Result<(), MasterError> {
        let idx = self.agent_idx(agent)?;
        if self.agents[idx as usize].drain.is_none() {
            return Err(MasterError::NotDraining {
                agent_id: agent.clone(),
            });
        }
        info!(agent_id = %agent, "agent undrained");
        self.set_drain(idx, None);
        let registered = self.agents[idx as usize].state == super::AgentState::Registered;
        self.set_agent_active(idx, registered);
        self.tell_drain(idx, None);
        Ok(())
    }

    fn set_drain(&mut self, idx: AgentIdx, drain: Option<DrainRecord>) {
        let e = &mut self.agents[idx as usize];
        e.drain = drain;
        e.drain_killed = false;
        let a = &self.alloc_agents[idx as usize];
        let record = super::AgentRecord {
            id: e.id.clone(),
            hostname: a.hostname.clone(),
            address: e.address.clone(),
            resources: a.total.clone(),
            attributes: a.attributes.clone(),
            drain,
        };
        self.outbox
            .push(Action::Persist(PersistOp::PutAgent(record)));
        self.dirty = true;
    }

    /// Where the drain of an agent stands (`None`: not draining).
    pub(super) fn drain_state(&self, idx: AgentIdx) -> Option<DrainState> {
        let e = &self.agents[idx as usize];
        e.drain?;
        let busy = e
            .tasks
            .iter()
            .any(|k| self.tasks.get(k).is_some_and(|t| !t.released));
        Some(if busy {
            DrainState::Draining
        } else {
            DrainState::Drained
        })
    }

    /// Tells frameworks of a drain or its end: `fw` alone (it just
    /// subscribed), or every connected one.
    pub(super) fn tell_drain(&mut self, idx: AgentIdx, fw: Option<usize>) {
        let e = &self.agents[idx as usize];
        let event = pb::Event {
            event: Some(pb::event::Event::Drain(pb::event::Drain {
                agent_id: e.id.to_string(),
                draining: e.drain.is_some(),
                deadline: e.drain.map_or(0.0, |d| d.deadline.as_secs_f64()),
            })),
        };
        let targets: Vec<usize> = match fw {
            Some(f) => vec![f],
            None => (0..self.frameworks.len())
                .filter(|&f| self.frameworks[f].connected)
                .collect(),
        };
        // Frameworks of protocol 1 know no drains (they would read an
        // empty event); they learn of the kills at the deadline.
        let targets = targets
            .into_iter()
            .filter(|&f| self.frameworks[f].version >= strata_proto::DRAIN_PROTOCOL_VERSION);
        for f in targets {
            self.outbox.push(Action::ToFramework {
                framework: self.frameworks[f].id.clone(),
                event: event.clone(),
            });
        }
    }

    /// Tells a framework that just subscribed of every drain under way.
    pub(super) fn tell_drains_to(&mut self, fw: usize) {
        for idx in 0..self.agents.len() {
            if self.agents[idx].drain.is_some() {
                self.tell_drain(idx as AgentIdx, Some(fw));
            }
        }
    }

    /// Kills what is left on agents whose drain deadline has passed (once
    /// per drain; the tasks' ends come back as their status updates).
    pub(super) fn drain_deadlines(&mut self, now: Timestamp) {
        for idx in 0..self.agents.len() {
            let e = &self.agents[idx];
            let Some(drain) = e.drain else { continue };
            if e.drain_killed || now < drain.deadline {
                continue;
            }
            self.agents[idx].drain_killed = true;
            let victims: Vec<(u32, TaskId)> = self.agents[idx]
                .tasks
                .iter()
                .filter(|k| {
                    self.tasks
                        .get(*k)
                        .is_some_and(|t| !t.released && !t.kill_requested)
                })
                .cloned()
                .collect();
            info!(agent_id = %self.agents[idx].id, tasks = victims.len(),
                "drain deadline passed; killing what is left");
            let grace = self.cfg.preemption_grace.as_secs_f64();
            for key in victims {
                if let Some(t) = self.tasks.get_mut(&key) {
                    t.kill_requested = true;
                }
                self.push_kill(
                    idx as AgentIdx,
                    key.0,
                    &key.1,
                    Some(grace),
                    Reason::AgentDrained,
                );
            }
        }
    }
}
