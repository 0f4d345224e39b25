//! The driver's core: the actor that owns the executors' links, the jobs
//! and the [`TaskScheduler`], handles [`Command`]s, carries out the
//! scheduler's decisions and sizes the executor pool.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use strata_executor::runtime::{ExecutorConfig, ExecutorHandle, Straggle};
use strata_executor::shuffle::ShuffleWriterExec;
use strata_executor::shuffle_service::{ShuffleTicket, fetch};
use strata_proto::exec::driver_message::Kind as Msg;
use strata_proto::exec::{
    CancelTasks, DriverMessage, EndJob, LaunchTasks, MapOutput, Registered, Shutdown, StageInput,
    StagePlan, TaskKey, TaskOutcome, TaskSpec,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, Span, debug, info, info_span, warn};

use super::cluster::LauncherCmd;
use super::dag::{
    Effect, ExecutorId, JobId, JobState, Launch, Outcome, PartitionId, StageId, StageSpec, TaskRef,
    TaskScheduler,
};
use super::report::{JobRecord, Reporter, StageRoot};
use super::{
    Command, DriverConfig, DriverError, ExecutorInfo, JobOutput, JobPhase, JobProgress, link,
};
use crate::planner::JobPlan;

pub(super) enum Launcher {
    InProcess {
        dir: PathBuf,
        driver: String,
        slots: u32,
        mem_bytes: u64,
        straggle: Vec<Straggle>,
        running: HashMap<ExecutorId, ExecutorHandle>,
        next: u64,
    },
    Cluster(mpsc::UnboundedSender<LauncherCmd>),
}

pub(super) struct Link {
    tx: mpsc::Sender<link::Outbound>,
    conn: u64,
    plans: HashSet<(JobId, StageId)>,
    info: ExecutorInfo,
}

pub(super) struct JobEntry {
    plan: JobPlan,
    schema: SchemaRef,
    progress: watch::Sender<JobProgress>,
    result: Option<oneshot::Sender<Result<JobOutput, DriverError>>>,
    /// Where its result rows go ([`super::JobStream`]).
    rows: mpsc::Sender<RecordBatch>,
    /// Final partitions delivered whole, in order: a fetch after a lost
    /// executor starts after them.
    delivered: Arc<AtomicUsize>,
    submitted: Instant,
    fetching: bool,
    /// Its report for the manager.
    record: JobRecord,
}

pub(super) struct Core {
    pub(super) config: DriverConfig,
    pub(super) sched: TaskScheduler,
    pub(super) links: HashMap<ExecutorId, Link>,
    pub(super) jobs: HashMap<JobId, JobEntry>,
    pub(super) launcher: Launcher,
    pub(super) want: usize,
    pub(super) launch_failures: u32,
    pub(super) last_launch_error: Option<String>,
    pub(super) idle_since: HashMap<ExecutorId, Instant>,
    pub(super) executors_tx: watch::Sender<usize>,
    pub(super) server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    pub(super) core_tx: mpsc::UnboundedSender<Command>,
    /// Sends job reports to the manager (a cluster's driver).
    pub(super) reporter: Option<Reporter>,
}

/// Final partitions fetched from executors at once (each is held whole
/// until it is delivered, so this bounds what a streamed result holds).
const RESULT_FETCHES: usize = 4;

/// A task's key on the wire, where stages and partitions are `u32`.
fn key(t: &TaskRef) -> TaskKey {
    TaskKey {
        job: t.job.to_string(),
        stage: t.stage.get(),
        partition: t.partition.get(),
        attempt: t.attempt,
    }
}

impl Core {
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        self.sched = TaskScheduler::new(self.config.policy.clone());
        self.rescale().await;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    if let Command::Shutdown(done) = cmd {
                        self.shutdown().await;
                        done.send(()).ok();
                        return;
                    }
                    self.handle(cmd).await;
                    // Drain what else is queued before scheduling once.
                    while let Ok(cmd) = rx.try_recv() {
                        if let Command::Shutdown(done) = cmd {
                            self.shutdown().await;
                            done.send(()).ok();
                            return;
                        }
                        self.handle(cmd).await;
                    }
                    self.schedule(false).await;
                }
                _ = tick.tick() => {
                    self.schedule(true).await;
                    self.release_idle().await;
                    self.release_retired().await;
                    self.check_starved();
                }
            }
        }
        self.shutdown().await;
    }

    /// Handles one command, in its job's span when it is about one job
    /// (so that a job's lines can be followed).
    async fn handle(&mut self, cmd: Command) {
        let span = match cmd.job() {
            Some(job) => info_span!("job", job_id = %job),
            None => Span::none(),
        };
        self.handle_command(cmd).instrument(span).await;
    }

    async fn handle_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Submit {
                id,
                plan,
                schema,
                progress,
                result,
                rows,
            } => {
                let mut specs = Vec::new();
                let mut roots = Vec::new();
                let last = plan.stages.len() - 1;
                for (i, s) in plan.stages.iter().enumerate() {
                    let root = if i == last {
                        // The final stage writes its partitions whole.
                        Arc::new(ShuffleWriterExec::new(
                            s.plan.clone(),
                            strata_executor::shuffle::ShuffleLocation {
                                root: PathBuf::new(),
                                job: plan.job.clone(),
                                stage: s.id,
                            },
                            None,
                        ))
                            as Arc<dyn datafusion::physical_plan::ExecutionPlan>
                    } else {
                        s.plan.clone()
                    };
                    let bytes = match strata_executor::codec::plan_to_bytes(root.clone()) {
                        Ok(b) => b,
                        Err(e) => {
                            result.send(Err(DriverError::Plan(e))).ok();
                            return;
                        }
                    };
                    specs.push(StageSpec {
                        id: s.id,
                        inputs: s.inputs.clone(),
                        tasks: s.tasks as u32,
                        plan: Arc::new(bytes),
                    });
                    roots.push(root);
                }
                let record = JobRecord::new(
                    id.as_str(),
                    &plan.description,
                    &plan
                        .stages
                        .iter()
                        .zip(&roots)
                        .map(|(s, root)| StageRoot {
                            stage: s.id.get(),
                            inputs: s.inputs.iter().map(|i| i.get()).collect(),
                            partitions: s.tasks as u32,
                            root,
                        })
                        .collect::<Vec<_>>(),
                );
                info!(job = %id, stages = specs.len(), "job submitted");
                self.sched.submit(id.clone(), specs);
                self.jobs.insert(
                    id,
                    JobEntry {
                        plan,
                        schema,
                        progress,
                        result: Some(result),
                        rows,
                        delivered: Arc::new(AtomicUsize::new(0)),
                        submitted: now,
                        fetching: false,
                        record,
                    },
                );
            }
            Command::Cancel(id) => {
                let effects = self.sched.abort(&id, JobState::Cancelled);
                self.apply(effects).await;
                self.end_job(&id, Err(DriverError::Cancelled(id.to_string())))
                    .await;
            }
            Command::ExecutorUp { reg, tx, conn } => {
                let id = ExecutorId::new(reg.executor_id.clone());
                if self.links.contains_key(&id) {
                    // A reconnection: its earlier incarnation's work is gone.
                    self.sched.remove_executor(&id);
                }
                let info = ExecutorInfo {
                    id: id.clone(),
                    flight_address: reg.flight_address.clone(),
                    slots: reg.slots.max(1),
                    pid: reg.pid,
                    host: reg.host.clone(),
                };
                info!(executor = %id, flight = %reg.flight_address, slots = reg.slots, "executor registered");
                tx.send(Ok(DriverMessage {
                    kind: Some(Msg::Registered(Registered {})),
                }))
                .await
                .ok();
                self.sched
                    .add_executor(id.clone(), reg.flight_address, reg.slots);
                self.links.insert(
                    id.clone(),
                    Link {
                        tx,
                        conn,
                        plans: HashSet::new(),
                        info,
                    },
                );
                self.idle_since.insert(id, now);
                self.launch_failures = 0;
                self.executors_tx.send_replace(self.links.len());
            }
            Command::ExecutorDown { id, conn } => {
                if self.links.get(&id).is_some_and(|l| l.conn == conn) {
                    warn!(executor = %id, "executor lost");
                    self.lose_executor(&id).await;
                }
            }
            Command::ExecutorTaskEnded { id, message } => {
                if self.links.contains_key(&id) {
                    warn!(executor = %id, %message, "executor ended");
                    self.lose_executor(&id).await;
                } else {
                    warn!(executor = %id, %message, "executor ended before registering");
                    self.launch_failures += 1;
                    self.last_launch_error = Some(message);
                }
                self.rescale().await;
            }
            Command::Retire(ids) => {
                for id in ids {
                    if self.sched.retire_executor(&id) {
                        info!(executor = %id, "executor retiring: its agent is being drained");
                    }
                }
            }
            Command::ClusterLost(why) => {
                self.fail_all(&format!("lost the cluster: {why}")).await;
            }
            Command::Statuses { id, statuses } => {
                for s in statuses {
                    let Some(k) = &s.key else { continue };
                    if let Some(e) = self.jobs.get_mut(&JobId::new(k.job.clone())) {
                        e.record.status(&s);
                    }
                    let Some(k) = s.key else { continue };
                    let task = TaskRef {
                        job: JobId::new(k.job),
                        stage: StageId::new(k.stage),
                        partition: PartitionId::new(k.partition),
                        attempt: k.attempt,
                    };
                    let outcome = match TaskOutcome::try_from(s.outcome) {
                        Ok(TaskOutcome::Finished) => Outcome::Finished {
                            partition_bytes: s
                                .partition_bytes
                                .into_iter()
                                .map(|p| (PartitionId::new(p.partition), p.bytes))
                                .collect(),
                            rows: s.rows,
                            bytes: s.bytes,
                        },
                        Ok(TaskOutcome::FetchFailed) => Outcome::FetchFailed {
                            stage: StageId::new(s.failed_stage),
                            executor: ExecutorId::new(s.failed_executor),
                            error: s.error,
                        },
                        Ok(TaskOutcome::Cancelled) => Outcome::Cancelled,
                        Ok(TaskOutcome::QueryError) => Outcome::QueryError(s.error),
                        _ => {
                            debug!(task = ?task, error = %s.error, "task failed");
                            Outcome::Failed(s.error)
                        }
                    };
                    let effects = self.sched.on_status(&id, &task, outcome, now);
                    self.apply(effects).await;
                }
            }
            Command::Fetched { job, result } => match result {
                Ok(()) => {
                    let stages = self.sched.metrics(&job);
                    self.sched.finish(&job);
                    if let Some(entry) = self.jobs.get(&job) {
                        let out = JobOutput {
                            job: job.clone(),
                            batches: Vec::new(),
                            schema: entry.schema.clone(),
                            stages,
                            elapsed: entry.submitted.elapsed(),
                        };
                        info!(job = %job, elapsed = ?out.elapsed, "job succeeded");
                        self.end_job(&job, Ok(out)).await;
                    }
                }
                Err((executor, error)) => {
                    warn!(job = %job, %executor, %error, "cannot fetch results; treating the executor as lost");
                    if let Some(e) = self.jobs.get_mut(&job) {
                        e.fetching = false;
                    }
                    if self.links.contains_key(&executor) {
                        self.lose_executor(&executor).await;
                    }
                }
            },
            Command::Executors(reply) => {
                let mut v: Vec<ExecutorInfo> =
                    self.links.values().map(|l| l.info.clone()).collect();
                v.sort_by(|a, b| a.id.cmp(&b.id));
                reply.send(v).ok();
            }
            Command::Shutdown(_) => {}
        }
    }

    async fn lose_executor(&mut self, id: &ExecutorId) {
        self.sched.remove_executor(id);
        if let Some(l) = self.links.remove(id) {
            l.tx.try_send(Err(tonic::Status::unavailable("executor written off")))
                .ok();
        }
        self.idle_since.remove(id);
        self.executors_tx.send_replace(self.links.len());
        match &mut self.launcher {
            Launcher::Cluster(tx) => {
                tx.send(LauncherCmd::Kill(id.clone())).ok();
            }
            Launcher::InProcess { running, .. } => {
                if let Some(h) = running.remove(id) {
                    h.shutdown();
                }
            }
        }
        // Jobs whose outputs were ready may need them again.
        let ids: Vec<JobId> = self.jobs.keys().cloned().collect();
        for j in ids {
            if self.sched.state(&j) == Some(&JobState::Running)
                && let Some(e) = self.jobs.get_mut(&j)
            {
                e.fetching = false;
            }
        }
    }

    async fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Cancel(executor, task) => {
                    if let Some(l) = self.links.get(&executor) {
                        l.tx.send(Ok(DriverMessage {
                            kind: Some(Msg::Cancel(CancelTasks {
                                tasks: vec![key(&task)],
                            })),
                        }))
                        .await
                        .ok();
                    }
                }
                Effect::OutputsReady(job) => self.fetch_results(job),
                Effect::JobFailed(job, why) => {
                    warn!(job = %job, error = %why, "job failed");
                    self.end_job(
                        &job,
                        Err(DriverError::JobFailed {
                            job: job.to_string(),
                            message: why,
                        }),
                    )
                    .await;
                }
            }
        }
    }

    fn fetch_results(&mut self, job: JobId) {
        let Some(entry) = self.jobs.get_mut(&job) else {
            return;
        };
        let Some(outputs) = self.sched.final_outputs(&job) else {
            return;
        };
        let Some(stage) = entry.plan.final_stage().map(|s| s.id) else {
            return;
        };
        entry.fetching = true;
        let core = self.core_tx.clone();
        let (rows, delivered) = (entry.rows.clone(), entry.delivered.clone());
        let mut outputs = outputs;
        outputs.sort_by_key(|(p, _, _)| *p);
        let from = delivered.load(Ordering::SeqCst);
        outputs.retain(|(p, _, _)| p.index() >= from);
        tokio::spawn(async move {
            use futures::StreamExt;
            let job_name = job.to_string();
            // A few fetches at once, each partition sent whole, in order.
            let mut fetches = futures::stream::iter(outputs)
                .map(|(p, executor, flight)| {
                    let ticket = ShuffleTicket {
                        job: job_name.clone(),
                        stage,
                        partition: p,
                        maps: Some(vec![p]),
                    };
                    async move { (p, executor, fetch(&flight, &ticket).await) }
                })
                .buffered(RESULT_FETCHES);
            while let Some((p, executor, result)) = fetches.next().await {
                match result {
                    Ok(batches) => {
                        for batch in batches {
                            if rows.send(batch).await.is_err() {
                                // The reader is gone: nobody wants the rest.
                                core.send(Command::Cancel(job)).ok();
                                return;
                            }
                        }
                        delivered.store(p.index() + 1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        core.send(Command::Fetched {
                            job,
                            result: Err((executor, e.to_string())),
                        })
                        .ok();
                        return;
                    }
                }
            }
            core.send(Command::Fetched {
                job,
                result: Ok(()),
            })
            .ok();
        });
    }

    async fn end_job(&mut self, job: &JobId, result: Result<JobOutput, DriverError>) {
        let Some(mut entry) = self.jobs.remove(job) else {
            return;
        };
        let state = match &result {
            Ok(_) => JobPhase::Succeeded,
            Err(DriverError::Cancelled(_)) => JobPhase::Cancelled,
            Err(_) => JobPhase::Failed,
        };
        entry.progress.send_modify(|p| p.state = state);
        entry.record.stages(&self.sched.metrics(job));
        entry.record.executors(self.links.values().map(|l| &l.info));
        entry
            .record
            .phase(state, result.as_ref().err().map(|e| e.to_string()));
        if let (Some(reporter), Some(report)) = (&self.reporter, entry.record.due(Instant::now())) {
            reporter.send(report);
        }
        if let Some(tx) = entry.result.take() {
            tx.send(result).ok();
        }
        for l in self.links.values_mut() {
            l.plans.retain(|(j, _)| j != job);

            l.tx.send(Ok(DriverMessage {
                kind: Some(Msg::EndJob(EndJob {
                    job: job.to_string(),
                })),
            }))
            .await
            .ok();
        }
    }

    async fn fail_all(&mut self, why: &str) {
        let ids: Vec<JobId> = self.jobs.keys().cloned().collect();
        for id in ids {
            let effects = self.sched.abort(&id, JobState::Failed(why.into()));
            self.apply(effects).await;
            self.end_job(
                &id,
                Err(DriverError::JobFailed {
                    job: id.to_string(),
                    message: why.into(),
                }),
            )
            .await;
        }
    }

    /// Jobs fail when no executor can be had.
    fn check_starved(&mut self) {
        if !self.links.is_empty() || self.jobs.is_empty() {
            return;
        }
        let waited_too_long = self
            .jobs
            .values()
            .any(|j| j.submitted.elapsed() > self.config.executor_wait);
        if self.launch_failures >= 3 || waited_too_long {
            let why = match &self.last_launch_error {
                Some(e) => format!(
                    "no executor could start ({} attempts); last: {e}",
                    self.launch_failures
                ),
                None => format!(
                    "no executor registered within {:?} (is the cluster full, or are executors of {} cpus and {} MiB larger than any agent?)",
                    self.config.executor_wait,
                    self.config.executors.cpus,
                    self.config.executors.mem_mib
                ),
            };
            let tx = self.core_tx.clone();
            tx.send(Command::ClusterLost(why)).ok();
            self.launch_failures = 0;
        }
    }

    /// Sends launches, then recomputes the executors wanted.
    async fn schedule(&mut self, speculate: bool) {
        let now = Instant::now();
        let mut launches = self.sched.assign(now);
        if speculate {
            launches.extend(self.sched.speculate(now));
        }
        if !launches.is_empty() {
            self.send_launches(launches).await;
        }
        // Progress of every active job.
        for (id, entry) in &mut self.jobs {
            let stages = self.sched.metrics(id);
            let state = match self.sched.state(id) {
                Some(JobState::OutputsReady) => JobPhase::Fetching,
                _ => JobPhase::Running,
            };
            entry.record.stages(&stages);
            entry.record.phase(state, None);
            entry.record.executors(self.links.values().map(|l| &l.info));
            if let (Some(reporter), Some(report)) = (&self.reporter, entry.record.due(now)) {
                reporter.send(report);
            }
            entry.progress.send_if_modified(|p| {
                if p.stages != stages || p.state != state {
                    p.stages = stages.clone();
                    p.state = state;
                    true
                } else {
                    false
                }
            });
        }
        for id in self.links.keys() {
            if self.sched.busy(id) > 0 {
                self.idle_since.remove(id);
            } else {
                self.idle_since.entry(id.clone()).or_insert(now);
            }
        }
        self.rescale().await;
    }

    async fn send_launches(&mut self, launches: Vec<Launch>) {
        let mut per: HashMap<ExecutorId, LaunchTasks> = HashMap::new();
        for l in launches {
            let Some(link) = self.links.get_mut(&l.executor) else {
                continue;
            };
            if let Some(job) = self.jobs.get_mut(&l.task.job) {
                job.record
                    .launched(&l.task, l.executor.as_str(), l.speculative);
            }
            let msg = per.entry(l.executor.clone()).or_default();
            let pk = (l.task.job.clone(), l.task.stage);
            if link.plans.insert(pk) {
                let memory_limit = self
                    .jobs
                    .get(&l.task.job)
                    .map_or(0, |j| j.plan.memory_limit);
                msg.plans.push(StagePlan {
                    job: l.task.job.to_string(),
                    stage: l.task.stage.get(),
                    plan: (*l.plan).clone(),
                    memory_limit,
                });
            }
            msg.tasks.push(TaskSpec {
                key: Some(key(&l.task)),
                inputs: l
                    .inputs
                    .into_iter()
                    .map(|(stage, outs)| StageInput {
                        stage: stage.get(),
                        outputs: outs
                            .into_iter()
                            .map(|(m, e, flight)| MapOutput {
                                map_partition: m.get(),
                                executor_id: e.into_string(),
                                flight_address: flight,
                            })
                            .collect(),
                    })
                    .collect(),
            });
        }
        for (id, msg) in per {
            if let Some(link) = self.links.get(&id) {
                let sent = link
                    .tx
                    .send(Ok(DriverMessage {
                        kind: Some(Msg::Launch(msg)),
                    }))
                    .await;
                if sent.is_err() {
                    self.lose_executor(&id).await;
                }
            }
        }
    }

    /// Executors wanted: enough slots for the outstanding tasks, within bounds.
    async fn rescale(&mut self) {
        let p = &self.config.executors;
        let slots = p.slots().max(1) as usize;
        let outstanding = self.sched.outstanding() as usize;
        let want = outstanding.div_ceil(slots).clamp(p.min, p.max.max(p.min));
        if want == self.want && !matches!(self.launcher, Launcher::InProcess { .. }) {
            return;
        }
        self.want = want;
        match &mut self.launcher {
            Launcher::Cluster(tx) => {
                tx.send(LauncherCmd::Want(want)).ok();
            }
            Launcher::InProcess {
                dir,
                driver,
                slots,
                mem_bytes,
                straggle,
                running,
                next,
            } => {
                while running.len() < want {
                    *next += 1;
                    let id = ExecutorId::new(format!("local-exec-{next}"));
                    let mut cfg =
                        ExecutorConfig::new(driver.clone(), id.to_string(), dir.join(id.as_str()));
                    cfg.slots = *slots as usize;
                    cfg.memory_bytes = *mem_bytes;
                    cfg.straggle = straggle.clone();
                    match strata_executor::runtime::start(cfg).await {
                        Ok(h) => {
                            running.insert(id, h);
                        }
                        Err(e) => {
                            self.launch_failures += 1;
                            self.last_launch_error = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Releases executors idle past the timeout while more than wanted run.
    async fn release_idle(&mut self) {
        let timeout = self.config.executors.idle_timeout;
        let mut live = self.links.len();
        let idle: Vec<ExecutorId> = self
            .idle_since
            .iter()
            .filter(|(_, t)| t.elapsed() >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            if live <= self.want {
                break;
            }
            info!(executor = %id, "releasing an idle executor");
            self.let_go(&id, "idle").await;
            live -= 1;
        }
    }

    /// Lets go of retiring executors that run nothing any more, and
    /// launches replacements for the work left.
    async fn release_retired(&mut self) {
        let retired = self.sched.retired_idle();
        if retired.is_empty() {
            return;
        }
        for id in retired {
            info!(executor = %id, "releasing a retired executor");
            self.let_go(&id, "its agent is being drained").await;
        }
        self.rescale().await;
    }

    /// Tells an executor to shut down, and writes it off.
    async fn let_go(&mut self, id: &ExecutorId, reason: &str) {
        if let Some(l) = self.links.get(id) {
            l.tx.send(Ok(DriverMessage {
                kind: Some(Msg::Shutdown(Shutdown {
                    reason: reason.into(),
                })),
            }))
            .await
            .ok();
        }
        self.lose_executor(id).await;
    }

    async fn shutdown(&mut self) {
        self.fail_all("the driver is shutting down").await;
        // The last reports land before the driver's process may exit.
        if let Some(r) = &self.reporter {
            r.flush(Duration::from_secs(3)).await;
        }
        for l in self.links.values() {
            l.tx.send(Ok(DriverMessage {
                kind: Some(Msg::Shutdown(Shutdown {
                    reason: "driver shutting down".into(),
                })),
            }))
            .await
            .ok();
        }
        match &mut self.launcher {
            Launcher::Cluster(tx) => {
                let (done, wait) = oneshot::channel();
                if tx.send(LauncherCmd::Shutdown(done)).is_ok() {
                    tokio::time::timeout(Duration::from_secs(10), wait)
                        .await
                        .ok();
                }
            }
            Launcher::InProcess { running, .. } => {
                for (_, h) in running.drain() {
                    h.shutdown();
                    tokio::time::timeout(Duration::from_secs(5), h.join())
                        .await
                        .ok();
                }
            }
        }
        self.links.clear();
        self.server.abort();
    }
}
