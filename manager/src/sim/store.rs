//! The simulator's store: the registry's records in memory, written as the
//! server writes them (every op of a round in one transaction, or none),
//! with injected faults: a window in which every write is refused (a full
//! disk, a store out of reach), after which the refused writes go first
//! with the next (as the server keeps them).

use std::collections::BTreeMap;

use strata_proto::ids::{AgentId, FrameworkId};

use crate::master::{
    AgentRecord, FrameworkRecord, PersistOp, RegistrySnapshot, RoleRecord, Timestamp,
};

/// The records and the fault window.
#[derive(Default)]
pub struct SimStore {
    agents: BTreeMap<AgentId, AgentRecord>,
    frameworks: BTreeMap<FrameworkId, FrameworkRecord>,
    roles: BTreeMap<String, RoleRecord>,
    removed: std::collections::BTreeSet<FrameworkId>,
    /// Writes refused, kept to go first with the next.
    unwritten: Vec<PersistOp>,
    /// Writes are refused before this time.
    refuse_until: Timestamp,
}

impl SimStore {
    /// Refuses writes until `until`.
    pub fn refuse_until(&mut self, until: Timestamp) {
        self.refuse_until = self.refuse_until.max(until);
    }

    /// Whether writes are refused at `now`.
    pub fn refusing(&self, now: Timestamp) -> bool {
        now < self.refuse_until
    }

    /// Writes the unwritten ops and `ops` in one transaction; false (and
    /// all kept for the next) when refused. Nothing to write always lands.
    pub fn write(&mut self, now: Timestamp, ops: Vec<PersistOp>) -> bool {
        self.unwritten.extend(ops);
        if self.unwritten.is_empty() {
            return true;
        }
        if self.refusing(now) {
            return false;
        }
        for op in std::mem::take(&mut self.unwritten) {
            match op {
                PersistOp::PutAgent(a) => {
                    self.agents.insert(a.id.clone(), a);
                }
                PersistOp::PutFramework(f) => {
                    self.frameworks.insert(f.id.clone(), f);
                }
                PersistOp::RemoveFramework(id) => {
                    self.frameworks.remove(&id);
                    self.removed.insert(id);
                }
                PersistOp::PutRole(r) => {
                    self.roles.insert(r.role.to_string(), r);
                }
            }
        }
        true
    }

    /// What a new leader loads: the committed records only (a deposed
    /// leader's refused writes are gone with it).
    pub fn load_as_new_leader(&mut self) -> RegistrySnapshot {
        self.unwritten.clear();
        RegistrySnapshot {
            agents: self.agents.values().cloned().collect(),
            frameworks: self.frameworks.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
            removed_frameworks: self.removed.iter().cloned().collect(),
        }
    }

    /// Whether a framework's record is stored.
    pub fn has_framework(&self, id: &FrameworkId) -> bool {
        self.frameworks.contains_key(id)
    }

    /// Whether an agent's record is stored.
    pub fn has_agent(&self, id: &AgentId) -> bool {
        self.agents.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refused_writes_go_first_with_the_next_and_die_with_the_leader() {
        let mut s = SimStore::default();
        let t0 = Timestamp::from_millis(1_000);
        let role = |r: &str| {
            PersistOp::PutRole(RoleRecord {
                role: strata_proto::ids::Role::new(r),
                weight: 1.0,
                quota: None,
            })
        };
        s.refuse_until(t0 + Duration::from_millis(500));
        assert!(!s.write(t0, vec![role("a")]));
        assert!(s.load_as_new_leader().roles.is_empty());
        assert!(!s.write(t0, vec![role("b")]));
        assert!(s.write(t0 + Duration::from_millis(500), vec![]));
        assert_eq!(
            s.load_as_new_leader().roles.len(),
            1,
            "b only: a died with its leader"
        );
    }
}
