//! Frameworks: subscription, failover, removal, and the dispatch of calls.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::BTreeMap;

use strata_proto::ids::{FrameworkId, Role, StreamId, TaskId};
use strata_proto::pb::{self, Reason, call};
use strata_proto::resources::Resources;
use tracing::info;

use std::time::Duration;

use super::{
    Action, FrameworkEntry, FrameworkRecord, Master, MasterError, PersistOp, Timestamp, validate_id,
};
use crate::allocator::{Constraint, ConstraintOp, FrameworkAlloc, FrameworkIdx, PendingAsk};

impl Master {
    pub(super) fn insert_framework(&mut self, rec: FrameworkRecord) -> FrameworkIdx {
        let role = self.role_idx(&rec.role);
        let default_class = self
            .cfg
            .classes
            .lookup(&rec.default_class)
            .unwrap_or_else(|_| {
                self.cfg
                    .classes
                    .lookup("")
                    .unwrap_or(strata_proto::class::ClassIdx(0))
            });
        let idx = self.frameworks.len() as FrameworkIdx;
        self.fw_index.insert(rec.id.clone(), idx);
        self.frameworks.push(FrameworkEntry {
            id: rec.id.clone(),
            failover_timeout: Duration::from_millis(rec.failover_timeout_ms),
            record: rec,
            stream: None,
            connected: false,
            disconnected_at: None,
            removed: false,
            tasks: HashSet::default(),
            offers: HashSet::default(),
            unacked: BTreeMap::new(),
            version: strata_proto::PROTOCOL_VERSION,
            last_heartbeat: Timestamp::ZERO,
            declared: Vec::new(),
            offered: Vec::new(),
            demand_gen: 0,
        });
        self.alloc_fws.push(FrameworkAlloc {
            active: false,
            role,
            suppressed: false,
            default_class,
            demand: Vec::new(),
            filters: HashMap::default(),
            allocated: Resources::default(),
            tasks_per_agent: HashMap::default(),
        });
        idx
    }

    /// A framework subscribes (first time or failover). Returns its id and
    /// the new stream id; the caller binds the stream before carrying out the
    /// actions (the first of which for this framework is `Subscribed`).
    pub fn subscribe(
        &mut self,
        now: Timestamp,
        req: pb::SubscribeRequest,
    ) -> Result<(FrameworkId, StreamId), MasterError> {
        let version =
            strata_proto::negotiate(req.protocol_version).ok_or(MasterError::ProtocolVersion {
                ours: strata_proto::PROTOCOL_VERSION,
                theirs: req.protocol_version,
            })?;
        let info = req
            .framework
            .ok_or(MasterError::MissingField { field: "framework" })?;
        let role = if info.role.is_empty() {
            "*".to_owned()
        } else {
            info.role.clone()
        };
        if role != "*" {
            validate_id("role", &role)?;
        }
        self.cfg.classes.lookup(&info.default_class)?;
        let failover =
            if info.failover_timeout_seconds.is_finite() && info.failover_timeout_seconds > 0.0 {
                Duration::from_secs_f64(info.failover_timeout_seconds.min(3.0e7))
                    .min(self.cfg.max_failover_timeout)
            } else {
                self.cfg.default_failover_timeout
            };
        let demand = self.parse_demand(&req.demand)?;
        let id = if info.framework_id.is_empty() {
            FrameworkId::new(self.next_id("fw"))
        } else {
            validate_id("framework", &info.framework_id)?;
            FrameworkId::new(info.framework_id.clone())
        };
        let record = FrameworkRecord {
            id: id.clone(),
            name: info.name,
            user: info.user,
            role: Role::new(role),
            default_class: info.default_class,
            failover_timeout_ms: u64::try_from(failover.as_millis()).unwrap_or(u64::MAX),
            hostname: info.hostname,
            labels: info.labels.into_iter().collect(),
            principal: info.principal,
        };
        if self.removed_frameworks.contains(&id) {
            return Err(MasterError::FrameworkRemoved { framework_id: id });
        }
        let idx = match self.fw_index.get(&id).copied() {
            Some(idx) => {
                let fw = &self.frameworks[idx as usize];
                if fw.removed {
                    return Err(MasterError::FrameworkRemoved { framework_id: id });
                }
                if fw.record.role != record.role && !fw.tasks.is_empty() {
                    return Err(MasterError::RoleChange {
                        framework_id: id,
                        from: fw.record.role.clone(),
                        to: record.role,
                    });
                }
                if let Some(old) = fw.stream.clone() {
                    self.outbox.push(Action::CloseStream {
                        framework: id.clone(),
                        stream: old,
                    });
                }
                info!(framework_id = %id, "framework re-subscribed");
                self.rescind_framework_offers(idx);
                if self.frameworks[idx as usize].record != record {
                    let role = self.role_idx(&record.role);
                    self.alloc_fws[idx as usize].role = role;
                    self.alloc_fws[idx as usize].default_class =
                        self.cfg.classes.lookup(&record.default_class)?;
                    self.frameworks[idx as usize].failover_timeout = failover;
                    self.frameworks[idx as usize].record = record.clone();
                    self.outbox
                        .push(Action::Persist(PersistOp::PutFramework(record)));
                }
                idx
            }
            None => {
                info!(framework_id = %id, name = %record.name, role = %record.role, "framework subscribed");
                self.outbox
                    .push(Action::Persist(PersistOp::PutFramework(record.clone())));
                self.insert_framework(record)
            }
        };
        let stream = StreamId::new(self.next_id("stream"));
        let fw = &mut self.frameworks[idx as usize];
        fw.stream = Some(stream.clone());
        fw.connected = true;
        fw.disconnected_at = None;
        fw.last_heartbeat = now;
        fw.version = version;
        self.alloc_fws[idx as usize].active = true;
        self.alloc_fws[idx as usize].suppressed = req.suppressed && demand.is_empty();
        self.set_demand(idx, demand);
        self.outbox.push(Action::ToFramework {
            framework: id.clone(),
            event: pb::Event {
                event: Some(pb::event::Event::Subscribed(pb::event::Subscribed {
                    framework_id: id.to_string(),
                    heartbeat_interval_seconds: self.cfg.framework_heartbeat_interval.as_secs_f64(),
                    // The version spoken on this stream: an older framework
                    // gets its own.
                    protocol_version: version,
                    stream_id: stream.to_string(),
                })),
            },
        });
        // Re-send updates it has not acknowledged.
        let pending: Vec<pb::TaskStatus> = self.frameworks[idx as usize]
            .unacked
            .values()
            .map(|(_, s)| s.clone())
            .collect();
        for status in pending {
            self.push_update_event(idx, status);
        }
        self.tell_drains_to(idx as usize);
        self.dirty = true;
        Ok((id, stream))
    }

    /// A framework's subscription stream closed.
    pub fn framework_disconnected(
        &mut self,
        now: Timestamp,
        framework: &FrameworkId,
        stream: &StreamId,
    ) {
        let Some(&idx) = self.fw_index.get(framework) else {
            return;
        };
        let fw = &mut self.frameworks[idx as usize];
        if fw.stream.as_ref() != Some(stream) || !fw.connected {
            return;
        }
        info!(framework_id = %framework, "framework disconnected");
        fw.connected = false;
        fw.disconnected_at = Some(now);
        fw.stream = None;
        self.alloc_fws[idx as usize].active = false;
        self.rescind_framework_offers(idx);
    }

    /// Handles a call from a framework.
    pub fn call(&mut self, now: Timestamp, c: pb::Call) -> Result<(), MasterError> {
        let fid = FrameworkId::new(c.framework_id);
        let idx = *self
            .fw_index
            .get(&fid)
            .ok_or_else(|| MasterError::NotSubscribed {
                framework_id: fid.clone(),
            })?;
        let fw = &self.frameworks[idx as usize];
        if fw.removed {
            return Err(MasterError::FrameworkRemoved { framework_id: fid });
        }
        if fw.stream.as_ref().map(StreamId::as_str) != Some(c.stream_id.as_str()) {
            return Err(MasterError::StaleStream {
                framework_id: fid,
                stream_id: StreamId::new(c.stream_id),
            });
        }
        match c.call.ok_or(MasterError::EmptyCall)? {
            call::Call::Accept(a) => self.accept(now, idx, a),
            call::Call::Decline(d) => {
                let refuse = self.refuse_for(d.filters.as_ref());
                for id in d.offer_ids {
                    self.decline_offer(now, idx, &id.into(), refuse);
                }
                Ok(())
            }
            call::Call::Suppress(_) => {
                self.alloc_fws[idx as usize].suppressed = true;
                Ok(())
            }
            call::Call::Revive(_) => {
                let a = &mut self.alloc_fws[idx as usize];
                a.suppressed = false;
                a.filters.clear();
                self.dirty = true;
                Ok(())
            }
            call::Call::Demand(d) => {
                let demand = self.parse_demand(&d.asks)?;
                if !demand.is_empty() {
                    self.alloc_fws[idx as usize].suppressed = false;
                }
                self.set_demand(idx, demand);
                self.dirty = true;
                Ok(())
            }
            call::Call::Kill(k) => self.kill(now, idx, k),
            call::Call::Acknowledge(a) => self.acknowledge(idx, a),
            call::Call::Reconcile(r) => {
                self.reconcile(now, idx, r);
                Ok(())
            }
            call::Call::Teardown(_) => {
                info!(framework_id = %self.frameworks[idx as usize].id, "framework teardown");
                self.remove_framework(now, idx, Reason::FrameworkRemoved);
                Ok(())
            }
        }
    }

    /// How long resources declined with `filters` stay filtered: the
    /// framework's `refuse_seconds` (capped at about a year), else the
    /// default.
    pub(super) fn refuse_for(&self, filters: Option<&pb::Filters>) -> Duration {
        match filters.and_then(|f| f.refuse_seconds) {
            Some(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s.min(3.0e7)),
            _ => self.cfg.default_refuse,
        }
    }

    pub(super) fn parse_demand(&self, asks: &[pb::Ask]) -> Result<Vec<PendingAsk>, MasterError> {
        let largest = self.largest_agent();
        let mut out = Vec::with_capacity(asks.len());
        for a in asks {
            let resources = Resources::from_proto(&a.resources)?;
            if let Some(l) = &largest
                && !self.any_agent_fits(&resources)
            {
                return Err(MasterError::ImpossibleAsk {
                    ask: resources.to_string(),
                    largest: l.to_string(),
                });
            }
            out.push(PendingAsk {
                class: self.cfg.classes.lookup(&a.priority_class)?,
                resources,
                count: a.count,
                constraints: a
                    .constraints
                    .iter()
                    .map(constraint_from_proto)
                    .collect::<Result<_, _>>()?,
                accept_revocable: a.accept_revocable,
            });
        }
        Ok(out)
    }

    /// Whether some registered agent's total could ever hold `res`.
    pub fn any_agent_fits(&self, res: &Resources) -> bool {
        self.alloc_agents
            .iter()
            .zip(&self.agents)
            .any(|(a, e)| e.state == super::AgentState::Registered && a.total.fits_shape(res))
    }

    fn set_demand(&mut self, idx: FrameworkIdx, demand: Vec<PendingAsk>) {
        let fw = &mut self.frameworks[idx as usize];
        fw.demand_gen += 1;
        fw.offered = vec![0; demand.len()];
        fw.declared = demand;
        self.sync_demand(idx);
    }

    /// Pending demand for the allocator: declared minus what outstanding
    /// offers already carry.
    pub(super) fn sync_demand(&mut self, idx: FrameworkIdx) {
        let fw = &self.frameworks[idx as usize];
        let demand: Vec<PendingAsk> = fw
            .declared
            .iter()
            .zip(&fw.offered)
            .map(|(a, &o)| PendingAsk {
                count: a.count.saturating_sub(o),
                ..a.clone()
            })
            .collect();
        self.alloc_fws[idx as usize].demand = demand;
    }

    /// The principal that subscribed a framework (empty: the operator or
    /// an anonymous caller), if it is known.
    pub fn framework_principal(&self, id: &FrameworkId) -> Option<&str> {
        let idx = *self.fw_index.get(id)?;
        Some(self.frameworks[idx as usize].record.principal.as_str())
    }

    /// An operator tears a framework down (`POST
    /// /api/v1/frameworks/{id}/teardown`): removed as by its own teardown.
    pub fn teardown_framework(
        &mut self,
        now: Timestamp,
        id: &FrameworkId,
    ) -> Result<(), MasterError> {
        let idx = *self
            .fw_index
            .get(id)
            .ok_or_else(|| MasterError::UnknownFramework {
                framework_id: id.clone(),
            })?;
        if self.frameworks[idx as usize].removed {
            return Err(MasterError::FrameworkRemoved {
                framework_id: id.clone(),
            });
        }
        info!(framework_id = %id, "framework torn down by an operator");
        self.remove_framework(now, idx, Reason::FrameworkRemoved);
        Ok(())
    }

    /// Removes a framework: its offers are rescinded, its tasks killed, and
    /// its id may not subscribe again.
    pub(super) fn remove_framework(&mut self, now: Timestamp, idx: FrameworkIdx, reason: Reason) {
        let id = self.frameworks[idx as usize].id.clone();
        if self.frameworks[idx as usize].removed {
            return;
        }
        self.counters.frameworks_removed += 1;
        self.rescind_framework_offers(idx);
        if let Some(stream) = self.frameworks[idx as usize].stream.take() {
            self.outbox.push(Action::CloseStream {
                framework: id.clone(),
                stream,
            });
        }
        let fw = &mut self.frameworks[idx as usize];
        fw.removed = true;
        fw.connected = false;
        fw.unacked.clear();
        fw.declared.clear();
        fw.offered.clear();
        self.alloc_fws[idx as usize].active = false;
        self.alloc_fws[idx as usize].demand.clear();
        self.outbox
            .push(Action::Persist(PersistOp::RemoveFramework(id.clone())));
        // Kill every task: once per agent, the agent kills them all.
        let tasks: Vec<TaskId> = self.frameworks[idx as usize]
            .tasks
            .iter()
            .cloned()
            .collect();
        let mut agents = HashSet::default();
        for tid in tasks {
            let key = (idx, tid);
            let Some(t) = self.tasks.get_mut(&key) else {
                continue;
            };
            t.kill_requested = true;
            if t.released {
                self.forget_task(&key);
                continue;
            }
            agents.insert(t.agent);
            let mut status = t.status.clone();
            status.set_state(pb::TaskState::TaskKilled);
            status.set_reason(reason);
            status.message = "framework removed".into();
            self.apply_terminal(now, &key, status);
        }
        for a in agents {
            if self.agents[a as usize].state == super::AgentState::Registered {
                self.outbox.push(Action::ToAgent {
                    agent: self.agents[a as usize].id.clone(),
                    message: pb::ManagerMessage {
                        message: Some(pb::manager_message::Message::ShutdownFramework(
                            pb::manager_message::ShutdownFramework {
                                framework_id: id.to_string(),
                            },
                        )),
                    },
                });
            }
        }
        self.dirty = true;
    }

    /// Heartbeats, failover timeouts and re-sends of unacknowledged updates.
    pub(super) fn tick_frameworks(&mut self, now: Timestamp) {
        for idx in 0..self.frameworks.len() as FrameworkIdx {
            let fw = &self.frameworks[idx as usize];
            if fw.removed {
                continue;
            }
            if !fw.connected {
                if let Some(since) = fw.disconnected_at
                    && now >= since + fw.failover_timeout
                {
                    info!(framework_id = %fw.id, "framework failover timeout; removing it");
                    self.remove_framework(now, idx, Reason::FrameworkFailoverTimeout);
                }
                continue;
            }
            if now >= fw.last_heartbeat + self.cfg.framework_heartbeat_interval {
                let id = fw.id.clone();
                self.frameworks[idx as usize].last_heartbeat = now;
                self.outbox.push(Action::ToFramework {
                    framework: id,
                    event: pb::Event {
                        event: Some(pb::event::Event::Heartbeat(pb::event::Heartbeat {})),
                    },
                });
            }
            let retry = self.cfg.update_retry;
            let due: Vec<pb::TaskStatus> = self.frameworks[idx as usize]
                .unacked
                .values_mut()
                .filter(|(sent, _)| now >= *sent + retry)
                .map(|(sent, s)| {
                    *sent = now;
                    s.clone()
                })
                .collect();
            for s in due {
                self.push_update_event(idx, s);
            }
        }
    }

    /// Runs timers: agent health, framework timers, offer timeouts.
    pub fn tick(&mut self, now: Timestamp) {
        self.check_agent_health(now);
        self.drain_deadlines(now);
        self.tick_frameworks(now);
        self.expire_offers(now);
    }
}

/// A wire constraint as the allocator's. An operator this manager does not
/// know (a newer peer's, or garbage) is refused, never read as another.
pub(super) fn constraint_from_proto(c: &pb::Constraint) -> Result<Constraint, MasterError> {
    use pb::constraint::Operator;
    let op = match Operator::try_from(c.operator) {
        Ok(Operator::Unique) => ConstraintOp::Unique,
        Ok(Operator::Cluster) => ConstraintOp::Cluster,
        Ok(Operator::GroupBy) => ConstraintOp::GroupBy,
        Ok(Operator::Like) => ConstraintOp::Like,
        Ok(Operator::Unlike) => ConstraintOp::Unlike,
        Ok(Operator::MaxPer) => ConstraintOp::MaxPer,
        Err(_) => {
            return Err(MasterError::UnknownConstraintOperator {
                field: c.field.clone(),
                operator: c.operator,
            });
        }
    };
    Ok(Constraint {
        field: c.field.clone(),
        op,
        value: c.value.clone(),
    })
}
