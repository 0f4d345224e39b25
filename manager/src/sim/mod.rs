//! A deterministic simulator of a whole cluster around the real [`Master`].
//!
//! Simulated agents run simulated tasks (each finishes after a drawn
//! duration), send status updates with uuids and retry them until
//! acknowledged; simulated frameworks declare demand, accept offers, launch
//! tasks and acknowledge updates. Time is simulated (100 ms steps) and every
//! random choice comes from one seeded generator, so a seed replays a run
//! exactly. Faults are injected: agents lose their link and come back (some
//! before the agent timeout, some after), frameworks fail over (some
//! within their failover timeout, some after it), the leading master dies
//! and a new one takes over from what its store holds (every agent and
//! framework re-registers with it after an election), and the store
//! refuses writes for a while (a round whose write fails sends none of its
//! messages: every agent or framework that misses one is disconnected, as
//! the server does, and comes back to be reconciled).
//!
//! After every step the simulator checks the master's invariants and its
//! own: no resource offered twice at once, allocations within agents'
//! totals, offers in class order, DRF gaps bounded. At the end it heals every
//! fault, drains, and checks that every launched task reached a terminal
//! state that its framework was told about (or that its framework was
//! removed and the task killed), that no task was launched twice, and that
//! the store holds every agent and framework the master knows.
//!
//! [`colocation`] runs a mixed workload of services and batch jobs on one
//! shared pool against two separate pools, to measure the agents sharing
//! saves (no faults there: the figures are about capacity).

mod actors;
pub mod colocation;
mod store;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap as HashMap;
use std::time::Duration;
use strata_proto::ids::{AgentId, FrameworkId, TaskId};
use strata_proto::pb;
use strata_proto::resources::Resources;

use crate::master::{Action, Master, MasterConfig, Timestamp};
pub use actors::{SimAgent, SimFramework};
pub use store::SimStore;

/// Settings of a simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed; the same seed replays the same run.
    pub seed: u64,
    /// Number of agents.
    pub agents: usize,
    /// Number of frameworks (half at `service`, half at `batch`).
    pub frameworks: usize,
    /// Steps of 100 ms with faults.
    pub steps: usize,
    /// Per step, the chance that one agent loses its link.
    pub agent_fault_rate: f64,
    /// Per step, the chance that one framework disconnects.
    pub framework_fault_rate: f64,
    /// Tasks each framework keeps wanting.
    pub demand_per_framework: u32,
    /// Task duration range in milliseconds.
    pub task_ms: (u64, u64),
    /// Per step, the chance that the leading master dies and another takes
    /// over from the store.
    pub leader_fault_rate: f64,
    /// Per step, the chance that the store starts refusing writes for a
    /// while (0.2 to 3 s).
    pub store_fault_rate: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            agents: 1_000,
            frameworks: 6,
            steps: 1_500,
            agent_fault_rate: 0.05,
            framework_fault_rate: 0.005,
            demand_per_framework: 400,
            task_ms: (500, 20_000),
            leader_fault_rate: 0.0,
            store_fault_rate: 0.0,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Tasks launched.
    pub launched: u64,
    /// Tasks whose terminal state reached their framework.
    pub terminal_seen: u64,
    /// Agent link losses injected.
    pub agent_faults: u64,
    /// Framework disconnects injected.
    pub framework_faults: u64,
    /// Leader failovers injected.
    pub failovers: u64,
    /// Store outages injected.
    pub store_faults: u64,
    /// Rounds whose write the store refused (their messages withheld).
    pub rounds_refused: u64,
    /// Frameworks removed after their failover timeout.
    pub frameworks_removed: u64,
    /// Allocation cycles run.
    pub cycles: u64,
}

/// A simulation failure: the seed and what broke.
#[derive(Debug, thiserror::Error)]
#[error("simulation seed {seed} failed at t={at}: {what}")]
pub struct SimFailure {
    /// The seed that reproduces it.
    pub seed: u64,
    /// Simulated time.
    pub at: Timestamp,
    /// The broken invariant.
    pub what: String,
}

/// The simulator.
pub struct Sim {
    cfg: SimConfig,
    /// The master under test (the current leader).
    pub master: Master,
    master_cfg: MasterConfig,
    /// The leader's term: each failover starts the next.
    term: u64,
    store: SimStore,
    /// Every task launch an agent received, to catch one launched twice.
    launches: HashMap<(FrameworkId, TaskId), usize>,
    now: Timestamp,
    rng: StdRng,
    agents: Vec<SimAgent>,
    agent_by_id: HashMap<AgentId, usize>,
    frameworks: Vec<SimFramework>,
    fw_by_id: HashMap<FrameworkId, usize>,
    report: SimReport,
    faults: bool,
    /// Offers made in the current step: (framework, class value, agent, resources).
    step_offers: Vec<(usize, String, AgentId, Resources)>,
}

const STEP: Duration = Duration::from_millis(100);

impl Sim {
    /// A simulator with agents registered and frameworks subscribed.
    pub fn new(cfg: SimConfig) -> Result<Sim, SimFailure> {
        let master_cfg = MasterConfig {
            instance: "sim".into(),
            agent_timeout: Duration::from_millis(5_000),
            framework_heartbeat_interval: Duration::from_millis(2_000),
            offer_timeout: Duration::from_millis(10_000),
            default_failover_timeout: Duration::from_millis(8_000),
            default_refuse: Duration::from_millis(1_000),
            update_retry: Duration::from_millis(2_000),
            ..MasterConfig::default()
        };
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(cfg.seed),
            master: Master::new(master_cfg.clone()),
            master_cfg,
            term: 0,
            store: SimStore::default(),
            launches: HashMap::default(),
            now: Timestamp::from_millis(1_000_000),
            agents: Vec::new(),
            agent_by_id: HashMap::default(),
            frameworks: Vec::new(),
            fw_by_id: HashMap::default(),
            report: SimReport::default(),
            faults: true,
            step_offers: Vec::new(),
            cfg,
        };
        for i in 0..sim.cfg.agents {
            let cpus = [2.0, 4.0, 8.0][i % 3];
            let mem = cpus * 2048.0;
            sim.agents.push(SimAgent::new(i, Resources::new(cpus, mem)));
            sim.register_agent(i)?;
        }
        for i in 0..sim.cfg.frameworks {
            let class = if i % 2 == 0 { "service" } else { "batch" };
            sim.frameworks
                .push(SimFramework::new(i, class, sim.cfg.demand_per_framework));
            sim.subscribe_framework(i)?;
        }
        sim.deliver()?;
        Ok(sim)
    }

    fn fail(&self, what: impl Into<String>) -> SimFailure {
        SimFailure {
            seed: self.cfg.seed,
            at: self.now,
            what: what.into(),
        }
    }

    fn register_agent(&mut self, i: usize) -> Result<(), SimFailure> {
        let reg = self.agents[i].register_message();
        let id = self
            .master
            .agent_register(self.now, reg)
            .map_err(|e| self.fail(format!("register: {e}")))?;
        self.agents[i].id = Some(id.clone());
        self.agents[i].connected = true;
        self.agent_by_id.insert(id, i);
        Ok(())
    }

    fn subscribe_framework(&mut self, i: usize) -> Result<(), SimFailure> {
        let req = self.frameworks[i].subscribe_request();
        let (id, stream) = self
            .master
            .subscribe(self.now, req)
            .map_err(|e| self.fail(format!("subscribe: {e}")))?;
        let f = &mut self.frameworks[i];
        f.id = Some(id.clone());
        f.stream = Some(stream);
        f.connected = true;
        self.fw_by_id.insert(id, i);
        Ok(())
    }

    /// Runs the configured steps with faults, then heals and drains, then
    /// checks that nothing was lost.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        for _ in 0..self.cfg.steps {
            self.step()?;
        }
        // Heal: no more faults, everyone reconnects, no new demand.
        self.faults = false;
        for f in &mut self.frameworks {
            f.want = 0;
            f.down_until = Timestamp::ZERO;
        }
        for a in &mut self.agents {
            a.down_until = Timestamp::ZERO;
        }
        // (A framework the master removed meanwhile learns it here.)
        self.reconnect_due()?;
        for i in 0..self.frameworks.len() {
            if !self.frameworks[i].removed && self.frameworks[i].connected {
                let call = self.frameworks[i].demand_call(0);
                self.call(i, call)?;
            }
        }
        let drain_steps =
            (Duration::from_millis(self.cfg.task_ms.1).div_duration_f64(STEP)) as usize + 400;
        for _ in 0..drain_steps {
            self.step()?;
        }
        self.check_nothing_lost()?;
        self.check_store_agrees()?;
        self.report.cycles = self.master.counters().allocation_cycles;
        Ok(self.report)
    }

    /// One step of 100 ms.
    pub fn step(&mut self) -> Result<(), SimFailure> {
        self.now += STEP;
        if self.faults {
            self.inject_faults()?;
        }
        self.reconnect_due()?;
        // Agents: finish tasks, send updates and heartbeats.
        for i in 0..self.agents.len() {
            if !self.agents[i].connected {
                self.agents[i].finish_due(self.now);
                continue;
            }
            let id = self.agents[i].id.clone().expect("registered");
            let msgs = self.agents[i].outgoing(self.now);
            for m in msgs {
                let r = match m {
                    pb::agent_message::Message::Update(u) => {
                        self.master.agent_update(self.now, &id, u)
                    }
                    pb::agent_message::Message::Heartbeat(_) => {
                        self.master.agent_heartbeat(self.now, &id)
                    }
                    pb::agent_message::Message::Usage(u) => {
                        self.master.agent_usage(self.now, &id, u)
                    }
                    pb::agent_message::Message::Register(_) => Ok(()),
                };
                if let Err(e) = r {
                    return Err(self.fail(format!("agent {id} message refused: {e}")));
                }
            }
        }
        self.master.tick(self.now);
        self.deliver()?;
        let before = self.drf_gaps();
        self.step_offers.clear();
        if self.master.allocate(self.now).is_some() {
            self.deliver()?;
            self.check_class_order()?;
            self.check_drf(&before)?;
        } else {
            self.deliver()?;
        }
        self.master
            .check_invariants()
            .map_err(|e| self.fail(e.to_string()))?;
        Ok(())
    }

    fn inject_faults(&mut self) -> Result<(), SimFailure> {
        if self.cfg.leader_fault_rate > 0.0 && self.rng.random_bool(self.cfg.leader_fault_rate) {
            self.fail_over();
        }
        if self.cfg.store_fault_rate > 0.0 && self.rng.random_bool(self.cfg.store_fault_rate) {
            self.report.store_faults += 1;
            let window = Duration::from_millis(self.rng.random_range(200..3_000));
            self.store.refuse_until(self.now + window);
        }
        if self.rng.random_bool(self.cfg.agent_fault_rate) {
            let i = self.rng.random_range(0..self.agents.len());
            if self.agents[i].connected {
                self.report.agent_faults += 1;
                // Half come back before the agent timeout, half after it.
                let down = if self.rng.random_bool(0.5) {
                    self.rng.random_range(200..3_000)
                } else {
                    self.rng.random_range(6_000..15_000)
                };
                self.agents[i].connected = false;
                self.agents[i].down_until = self.now + Duration::from_millis(down);
                // With store faults on, some come back at another address:
                // their re-registration is a write the store may refuse.
                if self.cfg.store_fault_rate > 0.0 && self.rng.random_bool(0.5) {
                    self.agents[i].moves += 1;
                }
                let id = self.agents[i].id.clone().expect("registered");
                self.master.agent_disconnected(self.now, &id);
            }
        }
        if self.rng.random_bool(self.cfg.framework_fault_rate) {
            let i = self.rng.random_range(0..self.frameworks.len());
            let f = &mut self.frameworks[i];
            if f.connected && !f.removed {
                self.report.framework_faults += 1;
                let down = if self.rng.random_bool(0.7) {
                    self.rng.random_range(500..6_000)
                } else {
                    self.rng.random_range(9_000..12_000)
                };
                f.connected = false;
                f.down_until = self.now + Duration::from_millis(down);
                f.offers.clear();
                let (id, stream) = (
                    f.id.clone().expect("subscribed"),
                    f.stream.clone().expect("stream"),
                );
                self.master.framework_disconnected(self.now, &id, &stream);
            }
        }
        Ok(())
    }

    fn reconnect_due(&mut self) -> Result<(), SimFailure> {
        for i in 0..self.agents.len() {
            let a = &self.agents[i];
            if !a.connected && a.down_until <= self.now {
                self.register_agent(i)?;
            }
        }
        for i in 0..self.frameworks.len() {
            let f = &self.frameworks[i];
            if !f.connected && !f.removed && f.down_until <= self.now {
                match self.master.subscribe(self.now, f.subscribe_request()) {
                    Ok((id, stream)) => {
                        let f = &mut self.frameworks[i];
                        f.stream = Some(stream);
                        f.connected = true;
                        debug_assert_eq!(f.id.as_ref(), Some(&id));
                    }
                    Err(crate::master::MasterError::FrameworkRemoved { .. }) => {
                        self.report.frameworks_removed += 1;
                        self.frameworks[i].removed = true;
                    }
                    Err(e) => return Err(self.fail(format!("re-subscribe: {e}"))),
                }
            }
        }
        Ok(())
    }

    fn call(&mut self, i: usize, call: pb::Call) -> Result<(), SimFailure> {
        self.master
            .call(self.now, call)
            .map_err(|e| self.fail(format!("framework {i} call refused: {e}")))
    }

    /// Delivers actions until the master has nothing more to say.
    fn deliver(&mut self) -> Result<(), SimFailure> {
        for _ in 0..64 {
            let actions = self.master.drain_actions();
            if actions.is_empty() {
                return Ok(());
            }
            let ops: Vec<crate::master::PersistOp> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::Persist(op) => Some(op.clone()),
                    _ => None,
                })
                .collect();
            if !self.store.write(self.now, ops) {
                self.skip_round(&actions);
                continue;
            }
            for a in actions {
                match a {
                    Action::Persist(_) => {}
                    Action::ToAgent { agent, message } => {
                        let Some(&i) = self.agent_by_id.get(&agent) else {
                            continue;
                        };
                        if self.agents[i].connected {
                            self.check_launched_once(i, &message)?;
                            self.agents[i].receive(
                                self.now,
                                message,
                                &mut self.rng,
                                self.cfg.task_ms,
                            );
                        }
                    }
                    Action::ToFramework { framework, event } => {
                        let Some(&i) = self.fw_by_id.get(&framework) else {
                            continue;
                        };
                        if !self.frameworks[i].connected {
                            continue;
                        }
                        if let Some(pb::event::Event::Offers(o)) = &event.event {
                            for offer in &o.offers {
                                let r = Resources::from_proto(&offer.resources)
                                    .map_err(|e| self.fail(e.to_string()))?;
                                self.step_offers.push((
                                    i,
                                    offer.priority_class.clone(),
                                    AgentId::new(offer.agent_id.clone()),
                                    r,
                                ));
                            }
                        }
                        let calls = self.frameworks[i].receive(event, &mut self.report);
                        for c in calls {
                            self.call(i, c)?;
                        }
                    }
                    Action::CloseStream { framework, .. } => {
                        if let Some(&i) = self.fw_by_id.get(&framework)
                            && self.frameworks[i].connected
                            && self.master_removed(&framework)
                        {
                            self.frameworks[i].connected = false;
                            self.frameworks[i].removed = true;
                            self.report.frameworks_removed += 1;
                        }
                    }
                }
            }
        }
        Err(self.fail("actions did not quiesce within 64 rounds"))
    }

    /// A round whose write was refused: its messages are not sent, and
    /// every agent and framework that misses one is disconnected (it comes
    /// back next step), as the server does.
    fn skip_round(&mut self, actions: &[Action]) {
        self.report.rounds_refused += 1;
        let back = self.now + STEP;
        for a in actions {
            match a {
                Action::ToAgent { agent, .. } => {
                    let Some(&i) = self.agent_by_id.get(agent) else {
                        continue;
                    };
                    if self.agents[i].connected {
                        self.agents[i].connected = false;
                        self.agents[i].down_until = back;
                        self.master.agent_disconnected(self.now, agent);
                    }
                }
                Action::ToFramework { framework, .. } => {
                    let Some(&i) = self.fw_by_id.get(framework) else {
                        continue;
                    };
                    let f = &mut self.frameworks[i];
                    if f.connected && !f.removed {
                        f.connected = false;
                        f.down_until = back;
                        f.offers.clear();
                        if let Some(stream) = f.stream.clone() {
                            self.master
                                .framework_disconnected(self.now, framework, &stream);
                        }
                    }
                }
                Action::Persist(_) | Action::CloseStream { .. } => {}
            }
        }
    }

    /// The leader dies: the next one recovers from what the store holds,
    /// and every agent and framework finds it after an election.
    fn fail_over(&mut self) {
        self.report.failovers += 1;
        self.term += 1;
        let mut cfg = self.master_cfg.clone();
        cfg.instance = format!("sim{}", self.term);
        cfg.epoch = self.term;
        let snapshot = self.store.load_as_new_leader();
        self.master = Master::recover(cfg, snapshot, self.now);
        let election = self.now + Duration::from_millis(self.rng.random_range(500..3_000));
        for a in &mut self.agents {
            a.connected = false;
            let jitter = Duration::from_millis(self.rng.random_range(0..1_000));
            a.down_until = a.down_until.max(election + jitter);
        }
        for f in &mut self.frameworks {
            if f.removed {
                continue;
            }
            f.connected = false;
            f.offers.clear();
            let jitter = Duration::from_millis(self.rng.random_range(0..1_000));
            f.down_until = f.down_until.max(election + jitter);
        }
    }

    /// No task is launched twice (task ids are never reused).
    fn check_launched_once(
        &mut self,
        agent: usize,
        m: &pb::ManagerMessage,
    ) -> Result<(), SimFailure> {
        let Some(pb::manager_message::Message::RunTask(r)) = &m.message else {
            return Ok(());
        };
        let Some(t) = &r.task else { return Ok(()) };
        let key = (
            FrameworkId::new(r.framework_id.clone()),
            TaskId::new(t.task_id.clone()),
        );
        if let Some(first) = self.launches.insert(key.clone(), agent) {
            return Err(self.fail(format!(
                "task {} of {} launched twice (agents {first} and {agent})",
                key.1, key.0
            )));
        }
        Ok(())
    }

    /// After quiet, the store holds every agent registered with the master
    /// and every framework it still serves.
    fn check_store_agrees(&self) -> Result<(), SimFailure> {
        for a in self.agents.iter().filter(|a| a.connected) {
            let id = a.id.as_ref().expect("registered");
            if !self.store.has_agent(id) {
                return Err(self.fail(format!("agent {id} is registered but not stored")));
            }
        }
        for f in self.frameworks.iter().filter(|f| !f.removed) {
            let id = f.id.as_ref().expect("subscribed");
            if !self.store.has_framework(id) {
                return Err(self.fail(format!("framework {id} is served but not stored")));
            }
        }
        Ok(())
    }

    fn master_removed(&self, id: &FrameworkId) -> bool {
        self.master.framework_share(id).is_none()
    }

    /// Per class, the gap between the highest and lowest share among
    /// backlogged frameworks.
    fn drf_gaps(&self) -> HashMap<String, f64> {
        let mut by_class: HashMap<String, (f64, f64)> = HashMap::default();
        for f in self.frameworks.iter().filter(|f| f.connected && !f.removed) {
            let id = f.id.as_ref().expect("subscribed");
            if self.master.pending_tasks(id) == 0 {
                continue;
            }
            let Some(s) = self.master.framework_share(id) else {
                continue;
            };
            let e = by_class
                .entry(f.class.clone())
                .or_insert((f64::MAX, f64::MIN));
            e.0 = e.0.min(s);
            e.1 = e.1.max(s);
        }
        by_class
            .into_iter()
            .map(|(k, (lo, hi))| (k, hi - lo))
            .collect()
    }

    /// Allocation never widens the DRF gap between backlogged frameworks of
    /// a class beyond two tasks' dominant share.
    fn check_drf(&self, before: &HashMap<String, f64>) -> Result<(), SimFailure> {
        let total = self.master.cluster_total();
        let task = actors::TASK_SHAPE();
        let bound = 2.0 * crate::allocator::drf::weighted_share(&task, &total, 1.0) + 1e-9;
        for (class, gap) in self.drf_gaps() {
            let was = before.get(&class).copied().unwrap_or(0.0);
            if gap > bound && gap > was + 1e-9 {
                return Err(self.fail(format!(
                    "drf gap in class {class} widened from {was:.4} to {gap:.4} (bound {bound:.4})"
                )));
            }
        }
        Ok(())
    }

    /// An offer of a lower class is never made while a higher-class
    /// framework with pending demand could have used it.
    fn check_class_order(&self) -> Result<(), SimFailure> {
        let task = actors::TASK_SHAPE();
        for (fi, class, agent, res) in &self.step_offers {
            if class != "batch" {
                continue;
            }
            for (gi, g) in self.frameworks.iter().enumerate() {
                if gi == *fi || g.class != "service" || !g.connected || g.removed {
                    continue;
                }
                let gid = g.id.as_ref().expect("subscribed");
                if self.master.pending_tasks(gid) == 0 || self.master.filters(gid, agent, self.now)
                {
                    continue;
                }
                let mut room = self.master.agent_free(agent).unwrap_or_default();
                room.add(res);
                if room.fits_shape(&task) {
                    return Err(self.fail(format!(
                        "batch offer on {agent} while service framework {gi} had pending demand that fits"
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_nothing_lost(&self) -> Result<(), SimFailure> {
        for f in &self.frameworks {
            for tid in &f.launched {
                if f.removed {
                    // Its tasks were killed: no agent may still run them.
                    let fid = f.id.as_ref().expect("subscribed");
                    if self.agents.iter().any(|a| a.runs(fid, tid)) {
                        return Err(
                            self.fail(format!("task {tid} of removed framework {fid} still runs"))
                        );
                    }
                    continue;
                }
                if !f.terminal.contains(tid) {
                    let running = self
                        .agents
                        .iter()
                        .any(|a| a.runs(f.id.as_ref().expect("id"), tid));
                    return Err(self.fail(format!(
                        "task {tid} of framework {} never reached a terminal state it was told about (still running on an agent: {running})",
                        f.index
                    )));
                }
            }
        }
        Ok(())
    }

    /// The report so far.
    pub fn report(&self) -> &SimReport {
        &self.report
    }
}

/// The id a simulated framework gives its n-th task.
pub(crate) fn task_id(framework: usize, n: u64) -> TaskId {
    TaskId::new(format!("f{framework}-t{n}"))
}

#[cfg(test)]
mod tests;
