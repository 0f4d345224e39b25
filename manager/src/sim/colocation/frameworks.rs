//! The two simulated frameworks: a service framework (class `service`)
//! that keeps each app at its wanted instance count, and a batch framework
//! (class `batch`) that runs jobs' tasks and re-queues those preempted.
//!
//! Both declare their pending tasks as demand (one ask per task shape),
//! accept the offers the allocator shapes for them, acknowledge every
//! update, and suppress offers when they want nothing. The batch framework
//! may also accept revocable cpus (those services hold but leave idle):
//! its asks accept them, and it launches a task on them, with regular
//! memory, when an offer's regular cpus are too few; a task revoked
//! (`REASON_RESOURCES_REVOKED`) is re-queued like a preempted one.

use std::cmp::Reverse;
use std::collections::VecDeque;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use strata_proto::ids::{FrameworkId, StreamId, TaskId};
use strata_proto::pb::{self, Reason, TaskState, call};
use strata_proto::resources::Resources;

use super::workload::{App, Job};
use super::{at, elapsed_ms};
use crate::master::Timestamp;

/// A subscribed framework's ids.
pub(super) struct Handle {
    pub id: FrameworkId,
    pub stream: StreamId,
}

impl Handle {
    fn wrap(&self, c: call::Call) -> pb::Call {
        pb::Call {
            framework_id: self.id.to_string(),
            stream_id: self.stream.to_string(),
            call: Some(c),
        }
    }
}

/// The subscription of a framework of `class` that wants nothing yet.
pub(super) fn subscribe_request(name: &str, class: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        protocol_version: strata_proto::PROTOCOL_VERSION,
        framework: Some(pb::FrameworkInfo {
            name: name.into(),
            user: "sim".into(),
            role: "*".into(),
            default_class: class.into(),
            ..Default::default()
        }),
        demand: vec![],
        suppressed: true,
    }
}

/// The framework's copy of the demand the master holds for it: declared
/// counts minus launches, consumed as the master consumes them (the first
/// ask with tasks left whose shape the launched task covers).
#[derive(Default)]
struct Declared {
    asks: Vec<(Resources, u32)>,
    /// Whether the asks accept revocable cpus.
    accept_revocable: bool,
}

impl Declared {
    fn launched(&mut self, res: &Resources) {
        if let Some(a) = self
            .asks
            .iter_mut()
            .find(|(shape, n)| *n > 0 && res.fits_shape(shape))
        {
            a.1 -= 1;
        }
    }

    /// Declares `want` (shape, count; the allocator serves asks in this
    /// order) if the master's copy differs; suppresses offers when nothing
    /// is wanted.
    fn update(
        &mut self,
        handle: &Handle,
        class: &str,
        mut want: Vec<(Resources, u32)>,
        out: &mut Vec<pb::Call>,
    ) {
        want.retain(|(_, n)| *n > 0);
        self.asks.retain(|(_, n)| *n > 0);
        if want == self.asks {
            return;
        }
        let asks = want
            .iter()
            .map(|(shape, n)| pb::Ask {
                priority_class: class.into(),
                resources: shape.to_proto(false),
                count: *n,
                accept_revocable: self.accept_revocable,
                ..Default::default()
            })
            .collect();
        out.push(handle.wrap(call::Call::Demand(call::Demand { asks })));
        if want.is_empty() {
            out.push(handle.wrap(call::Call::Suppress(call::Suppress {})));
        }
        self.asks = want;
    }
}

fn task_info(id: &TaskId, shape: &Resources, command: String, class: &str) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: id.to_string(),
        name: id.to_string(),
        resources: shape.to_proto(false),
        command: Some(pb::CommandInfo {
            value: command,
            shell: true,
            ..Default::default()
        }),
        priority_class: class.into(),
        ..Default::default()
    }
}

/// Accepts `offer` launching `tasks` (declining it if there are none); no
/// refuse filter either way, so the rest of the agent is offered again.
fn answer_offer(handle: &Handle, offer: &pb::Offer, tasks: Vec<pb::TaskInfo>) -> pb::Call {
    let filters = Some(pb::Filters {
        refuse_seconds: Some(0.0),
    });
    if tasks.is_empty() {
        return handle.wrap(call::Call::Decline(call::Decline {
            offer_ids: vec![offer.offer_id.clone()],
            filters,
        }));
    }
    handle.wrap(call::Call::Accept(call::Accept {
        offer_ids: vec![offer.offer_id.clone()],
        operations: vec![call::Operation {
            operation: Some(call::operation::Operation::Launch(call::Launch { tasks })),
        }],
        filters,
    }))
}

fn ack(handle: &Handle, s: &pb::TaskStatus, out: &mut Vec<pb::Call>) {
    if !s.uuid.is_empty() {
        out.push(handle.wrap(call::Call::Acknowledge(call::Acknowledge {
            agent_id: s.agent_id.clone(),
            task_id: s.task_id.clone(),
            uuid: s.uuid.clone(),
        })));
    }
}

struct AppRun {
    app: App,
    wanted: u32,
    /// Instances reported running, oldest first.
    running: Vec<TaskId>,
    /// Instances launched and not yet running.
    starting: Vec<TaskId>,
    /// Since when each missing instance (wanted, not running) has been
    /// wanted, oldest first.
    waiting: VecDeque<Timestamp>,
}

impl AppRun {
    fn missing(&self) -> usize {
        (self.wanted as usize).saturating_sub(self.running.len())
    }
}

/// The service framework: keeps every app at the instance count its
/// diurnal curve wants, scaling up through demand and down by killing
/// its newest instances.
pub(super) struct ServiceFw {
    pub handle: Handle,
    apps: Vec<AppRun>,
    tasks: HashMap<TaskId, usize>,
    killing: HashSet<TaskId>,
    declared: Declared,
    next: u64,
    base: Timestamp,
    day_ms: u64,
    window: (Timestamp, Timestamp),
    /// Per instance wanted in the window: how long until it ran (ms).
    pub waits: Vec<u64>,
    /// Instance-milliseconds wanted in the window.
    pub wanted_ms: u128,
    /// Instance-milliseconds wanted but not running in the window.
    pub missing_ms: u128,
    /// Instances that ended without being killed by the framework.
    pub lost: u64,
}

impl ServiceFw {
    /// A framework for `apps`; times are `base` + milliseconds of the run.
    pub fn new(
        handle: Handle,
        apps: &[App],
        base: Timestamp,
        day_ms: u64,
        window: (u64, u64),
    ) -> Self {
        ServiceFw {
            handle,
            apps: apps
                .iter()
                .map(|a| AppRun {
                    app: a.clone(),
                    wanted: 0,
                    running: Vec::new(),
                    starting: Vec::new(),
                    waiting: VecDeque::new(),
                })
                .collect(),
            tasks: HashMap::default(),
            killing: HashSet::default(),
            declared: Declared::default(),
            next: 0,
            base,
            day_ms,
            window: (at(base, window.0), at(base, window.1)),
            waits: Vec::new(),
            wanted_ms: 0,
            missing_ms: 0,
            lost: 0,
        }
    }

    /// Follows the curves at `now`: kills surplus instances (not yet
    /// running ones first, then the newest), tracks missing instances and
    /// declares demand for them.
    pub fn step(&mut self, now: Timestamp) -> Vec<pb::Call> {
        let mut out = Vec::new();
        let t = elapsed_ms(now, self.base);
        let mut want: Vec<(Resources, u32)> = Vec::new();
        for a in &mut self.apps {
            a.wanted = a.app.wanted(t, self.day_ms);
            while a.running.len() + a.starting.len() > a.wanted as usize {
                let tid = a
                    .starting
                    .pop()
                    .or_else(|| a.running.pop())
                    .expect("nonempty");
                out.push(self.handle.wrap(call::Call::Kill(call::Kill {
                    task_id: tid.to_string(),
                    agent_id: String::new(),
                })));
                self.killing.insert(tid);
            }
            let missing = a.missing();
            while a.waiting.len() < missing {
                a.waiting.push_back(now);
            }
            while a.waiting.len() > missing {
                a.waiting.pop_back();
            }
        }
        for ai in self.by_age() {
            let a = &self.apps[ai];
            let pending = a.wanted - (a.running.len() + a.starting.len()) as u32;
            match want.iter_mut().find(|(s, _)| *s == a.app.shape) {
                Some(w) => w.1 += pending,
                None => want.push((a.app.shape.clone(), pending)),
            }
        }
        self.declared
            .update(&self.handle, "service", want, &mut out);
        out
    }

    /// Apps with instances to launch, the one waiting longest first (then
    /// the largest shape): the order of the asks, so the allocator gives
    /// room to the instance that has waited longest, and the room a
    /// preemption frees goes to the instance it was freed for.
    fn by_age(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.apps.len())
            .filter(|&i| {
                let a = &self.apps[i];
                a.running.len() + a.starting.len() < a.wanted as usize
            })
            .collect();
        // Stable: equal keys keep the apps' order.
        order.sort_by_key(|&i| {
            let a = &self.apps[i];
            // The oldest want not yet covered by a launched instance.
            let since = a
                .waiting
                .get(a.starting.len())
                .copied()
                .unwrap_or(Timestamp::MAX);
            (since, Reverse((a.app.shape.cpus, a.app.shape.mem)))
        });
        order
    }

    /// Counts wanted and missing instances for the step from `now`.
    pub fn measure(&mut self, now: Timestamp, step_ms: u64) {
        if now < self.window.0 || now >= self.window.1 {
            return;
        }
        for a in &self.apps {
            self.wanted_ms += u128::from(a.wanted) * u128::from(step_ms);
            self.missing_ms += a.missing() as u128 * u128::from(step_ms);
        }
    }

    /// Instances still missing at the end count as waiting until `now`.
    pub fn finish(&mut self, now: Timestamp) {
        for a in &mut self.apps {
            for since in a.waiting.drain(..) {
                if since >= self.window.0 && since < self.window.1 {
                    self.waits.push(elapsed_ms(now, since));
                }
            }
        }
    }

    /// Launches missing instances on offers, the longest waiting first.
    pub fn offers(&mut self, offers: &[pb::Offer]) -> Vec<pb::Call> {
        let mut out = Vec::new();
        for offer in offers {
            let mut left = Resources::from_proto(&offer.resources).unwrap_or_default();
            let mut tasks = Vec::new();
            for ai in self.by_age() {
                let a = &mut self.apps[ai];
                while a.running.len() + a.starting.len() < a.wanted as usize
                    && left.subtract(&a.app.shape)
                {
                    self.next += 1;
                    let tid = TaskId::new(format!("s{ai}-{}", self.next));
                    // Spread the instances' swings over the period.
                    let phase = (self.next as f64 * 0.618_033_988_75).fract();
                    let cmd = format!("serve {} {} {phase:.4}", a.app.usage, a.app.usage_swing);
                    tasks.push(task_info(&tid, &a.app.shape, cmd, "service"));
                    self.declared.launched(&a.app.shape);
                    a.starting.push(tid.clone());
                    self.tasks.insert(tid, ai);
                }
            }
            out.push(answer_offer(&self.handle, offer, tasks));
        }
        out
    }

    /// Handles a status update.
    pub fn update(&mut self, now: Timestamp, s: &pb::TaskStatus) -> Vec<pb::Call> {
        let mut out = Vec::new();
        ack(&self.handle, s, &mut out);
        let tid = TaskId::new(s.task_id.clone());
        let Some(&ai) = self.tasks.get(&tid) else {
            return out;
        };
        let a = &mut self.apps[ai];
        if s.state() == TaskState::TaskRunning {
            if let Some(i) = a.starting.iter().position(|x| *x == tid) {
                a.starting.remove(i);
                a.running.push(tid);
                if a.waiting.len() > a.missing()
                    && let Some(since) = a.waiting.pop_front()
                    && since >= self.window.0
                    && since < self.window.1
                {
                    self.waits.push(elapsed_ms(now, since));
                }
            }
        } else if s.state().is_terminal() {
            self.tasks.remove(&tid);
            if !self.killing.remove(&tid) {
                self.lost += 1;
                a.starting.retain(|x| *x != tid);
                a.running.retain(|x| *x != tid);
            }
        }
        out
    }
}

/// A job's progress.
struct JobRun {
    job: Job,
    /// Tasks not finished yet.
    left: u32,
    finished_at: Option<Timestamp>,
}

/// The batch framework: submits jobs as they arrive, runs their tasks
/// oldest job first, and re-queues a task that dies before finishing
/// (its work is lost: it starts again from zero).
pub(super) struct BatchFw {
    pub handle: Handle,
    shapes: Vec<Resources>,
    jobs: Vec<JobRun>,
    arrived: usize,
    /// Jobs before this one have all finished.
    first_unfinished: usize,
    /// Per shape: tasks waiting to run, as (job, task).
    queues: Vec<VecDeque<(u32, u32)>>,
    /// Tasks launched: (job, task, launched or running since, on
    /// revocable cpus).
    running: HashMap<TaskId, (u32, u32, Timestamp, bool)>,
    declared: Declared,
    next: u64,
    base: Timestamp,
    /// Tasks killed by preemption.
    pub preempted: u64,
    /// Tasks killed because the cpus they borrowed were revoked.
    pub revoked: u64,
    /// Cpu-milliseconds of work lost to preemption and revocation.
    pub lost_cpu_ms: f64,
    /// Cpu-milliseconds of tasks that finished.
    pub done_cpu_ms: f64,
    /// Of those, cpu-milliseconds that ran on revocable cpus.
    pub revocable_cpu_ms: f64,
    /// Tasks that ended otherwise than finished, preempted or revoked.
    pub failed: u64,
}

impl BatchFw {
    /// A framework for `jobs` (in arrival order) of `shapes`; with
    /// `revocable`, it also runs tasks on revocable cpus.
    pub fn new(
        handle: Handle,
        shapes: &[Resources],
        jobs: &[Job],
        base: Timestamp,
        revocable: bool,
    ) -> Self {
        BatchFw {
            handle,
            shapes: shapes.to_vec(),
            jobs: jobs
                .iter()
                .map(|j| JobRun {
                    left: j.task_ms.len() as u32,
                    job: j.clone(),
                    finished_at: None,
                })
                .collect(),
            arrived: 0,
            first_unfinished: 0,
            queues: vec![VecDeque::new(); shapes.len()],
            running: HashMap::default(),
            declared: Declared {
                asks: Vec::new(),
                accept_revocable: revocable,
            },
            next: 0,
            base,
            preempted: 0,
            revoked: 0,
            lost_cpu_ms: 0.0,
            done_cpu_ms: 0.0,
            revocable_cpu_ms: 0.0,
            failed: 0,
        }
    }

    /// Submits the jobs that have arrived by `now` and declares demand for
    /// every task waiting to run.
    pub fn step(&mut self, now: Timestamp) -> Vec<pb::Call> {
        while let Some(j) = self.jobs.get(self.arrived)
            && at(self.base, j.job.arrival_ms) <= now
        {
            let q = &mut self.queues[j.job.shape];
            for t in 0..j.job.task_ms.len() as u32 {
                q.push_back((self.arrived as u32, t));
            }
            self.arrived += 1;
        }
        let mut want: Vec<(Resources, u32)> = self
            .shapes
            .iter()
            .zip(&self.queues)
            .map(|(s, q)| (s.clone(), q.len() as u32))
            .collect();
        // Largest shapes first, so a launch never counts against a larger ask.
        want.sort_by_key(|w| Reverse((w.0.cpus, w.0.mem)));
        let mut out = Vec::new();
        self.declared.update(&self.handle, "batch", want, &mut out);
        out
    }

    /// Launches waiting tasks on offers, the oldest job's first among the
    /// shapes that still fit: on regular resources, or on revocable cpus
    /// with regular memory when the regular cpus are too few.
    pub fn offers(&mut self, now: Timestamp, offers: &[pb::Offer]) -> Vec<pb::Call> {
        let mut out = Vec::new();
        for offer in offers {
            let (mut left, mut lent) =
                Resources::from_proto_split(&offer.resources).unwrap_or_default();
            let mut tasks = Vec::new();
            loop {
                // Where a shape fits: `Some(false)` regular, `Some(true)` on
                // revocable cpus.
                let fits = |shape: &Resources| {
                    if left.fits_shape(shape) {
                        Some(false)
                    } else {
                        let mut rest = shape.clone();
                        rest.cpus = Default::default();
                        (self.declared.accept_revocable
                            && lent.cpus >= shape.cpus
                            && left.fits_shape(&rest))
                        .then_some(true)
                    }
                };
                let next = self
                    .queues
                    .iter()
                    .enumerate()
                    .filter_map(|(s, q)| Some((s, q.front()?.0, fits(&self.shapes[s])?)))
                    .min_by_key(|&(_, job, _)| job);
                let Some((s, _, on_lent)) = next else { break };
                let (job, task) = self.queues[s].pop_front().expect("nonempty");
                let shape = &self.shapes[s];
                self.next += 1;
                let tid = TaskId::new(format!("b{job}-{task}-{}", self.next));
                let ms = self.jobs[job as usize].job.task_ms[task as usize];
                let cmd = format!("sleep {}.{:03}", ms / 1_000, ms % 1_000);
                let mut info = task_info(&tid, shape, cmd, "batch");
                if on_lent {
                    let mut regular = shape.clone();
                    regular.cpus = Default::default();
                    left.subtract(&regular);
                    let cpus = Resources {
                        cpus: shape.cpus,
                        ..Resources::default()
                    };
                    lent.subtract(&cpus);
                    info.resources = regular.to_proto(false);
                    info.resources.extend(cpus.to_proto(true));
                } else {
                    left.subtract(shape);
                }
                tasks.push(info);
                self.declared.launched(shape);
                self.running.insert(tid, (job, task, now, on_lent));
            }
            out.push(answer_offer(&self.handle, offer, tasks));
        }
        out
    }

    /// Handles a status update.
    pub fn update(&mut self, now: Timestamp, s: &pb::TaskStatus) -> Vec<pb::Call> {
        let mut out = Vec::new();
        ack(&self.handle, s, &mut out);
        let tid = TaskId::new(s.task_id.clone());
        if s.state() == TaskState::TaskRunning {
            if let Some(r) = self.running.get_mut(&tid) {
                r.2 = now;
            }
            return out;
        }
        if !s.state().is_terminal() {
            return out;
        }
        let Some((job, task, since, on_lent)) = self.running.remove(&tid) else {
            return out;
        };
        let j = &mut self.jobs[job as usize];
        let shape = j.job.shape;
        let cpu_ms = self.shapes[shape].cpus.as_f64() * elapsed_ms(now, since) as f64;
        if s.state() == TaskState::TaskFinished {
            j.left -= 1;
            if j.left == 0 {
                j.finished_at = Some(now);
            }
            self.done_cpu_ms += cpu_ms;
            if on_lent {
                self.revocable_cpu_ms += cpu_ms;
            }
            return out;
        }
        match s.reason() {
            Reason::Preempted => self.preempted += 1,
            Reason::ResourcesRevoked => self.revoked += 1,
            _ => self.failed += 1,
        }
        if matches!(s.reason(), Reason::Preempted | Reason::ResourcesRevoked) {
            self.lost_cpu_ms += cpu_ms;
        }
        // It runs again from zero, ahead of younger jobs' tasks.
        self.queues[shape].push_front((job, task));
        out
    }

    /// Per job arriving in `[from, to)` (run milliseconds): its completion
    /// time, or how long it has waited by `now` if unfinished (`false`).
    pub fn completions(&self, from: u64, to: u64, now: Timestamp) -> Vec<(u64, u64, bool)> {
        self.jobs
            .iter()
            .filter(|j| j.job.arrival_ms >= from && j.job.arrival_ms < to)
            .map(|j| {
                let arrived = at(self.base, j.job.arrival_ms);
                match j.finished_at {
                    Some(f) => (elapsed_ms(f, arrived), j.job.ideal_ms(), true),
                    None => (elapsed_ms(now, arrived), j.job.ideal_ms(), false),
                }
            })
            .collect()
    }

    /// Whether every job arriving before `to` (run milliseconds) has finished.
    pub fn done_before(&mut self, to: u64) -> bool {
        while self
            .jobs
            .get(self.first_unfinished)
            .is_some_and(|j| j.finished_at.is_some())
        {
            self.first_unfinished += 1;
        }
        self.jobs
            .get(self.first_unfinished)
            .is_none_or(|j| j.job.arrival_ms >= to)
    }
}
