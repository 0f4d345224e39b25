//! The batch driver: a framework that gets executors (from a Strata
//! cluster through the scheduler SDK, or in this process), schedules jobs'
//! stages and tasks on them, and collects the results.
//!
//! The driver is one actor (its *core*) fed by commands: job submissions
//! and cancellations from [`Driver`]'s methods, registrations, statuses
//! and stream ends from the `ExecutorLink` service (`link.rs`), executor
//! task ends from the launcher ([`cluster`]), result fetches, and a timer
//! for speculation and idle executors. Its decisions come from the pure
//! [`dag::TaskScheduler`].
//!
//! Executors are coarse-grained and sized by [`ExecutorPolicy`]: the core
//! wants `ceil(outstanding tasks / slots per executor)` of them, within
//! `min..=max`, and releases executors idle past the idle timeout.

pub mod cluster;
pub mod dag;
mod link;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use strata_executor::runtime::{ExecutorConfig, ExecutorHandle, Straggle};
use strata_executor::shuffle::ShuffleWriterExec;
use strata_executor::shuffle_service::{ShuffleTicket, fetch};
use strata_proto::exec::driver_message::Kind as Msg;
use strata_proto::exec::executor_link_server::ExecutorLinkServer;
use strata_proto::exec::{
    CancelTasks, DriverMessage, EndJob, LaunchTasks, MapOutput, Register, Registered, Shutdown,
    StageInput, StagePlan, TaskKey, TaskOutcome, TaskSpec, TaskStatus,
};
use strata_sdk::Resources;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

pub use cluster::ClusterSource;
use cluster::LauncherCmd;
use dag::{
    Effect, ExecutorId, JobId, JobState, Launch, Outcome, StageMetrics, StageSpec, TaskRef,
    TaskScheduler,
};

use crate::planner::JobPlan;

/// Where executors come from.
#[derive(Clone, Debug)]
pub enum ExecutorSource {
    /// Executors run in this process (tests, embedded use); each gets a
    /// work directory under this one.
    InProcess(PathBuf),
    /// Executors are tasks on a Strata cluster.
    Cluster(Box<ClusterSource>),
}

/// How many executors, and how big.
#[derive(Clone, Debug)]
pub struct ExecutorPolicy {
    /// Executors kept even when idle.
    pub min: usize,
    /// Executors at most.
    pub max: usize,
    /// CPUs per executor (its task slots: rounded up, at least 1).
    pub cpus: f64,
    /// Memory per executor, MiB (its DataFusion memory pool).
    pub mem_mib: f64,
    /// An executor idle this long above `min` is released.
    pub idle_timeout: Duration,
}

impl Default for ExecutorPolicy {
    fn default() -> Self {
        ExecutorPolicy {
            min: 2,
            max: 2,
            cpus: 1.0,
            mem_mib: 1024.0,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

impl ExecutorPolicy {
    fn slots(&self) -> u32 {
        (self.cpus.ceil() as u32).max(1)
    }
}

/// A driver's configuration.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Where executors come from.
    pub source: ExecutorSource,
    /// How many and how big.
    pub executors: ExecutorPolicy,
    /// Where the `ExecutorLink` service binds.
    pub bind: SocketAddr,
    /// The host executors reach the driver at (default: the bind IP).
    pub advertise_host: Option<String>,
    /// Retries and speculation.
    pub policy: dag::Policy,
    /// Fault injection passed to executors (tests).
    pub straggle: Vec<Straggle>,
    /// How long a job waits for a first executor before failing.
    pub executor_wait: Duration,
}

impl DriverConfig {
    /// A driver taking executors from `source`.
    pub fn new(source: ExecutorSource) -> Self {
        DriverConfig {
            source,
            executors: ExecutorPolicy::default(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_host: None,
            policy: dag::Policy::default(),
            straggle: Vec::new(),
            executor_wait: Duration::from_secs(60),
        }
    }
}

/// Why a driver or a job failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The driver could not start.
    #[error("driver setup failed: {0}")]
    Setup(String),
    /// The cluster could not be used.
    #[error("cluster: {0}")]
    Cluster(String),
    /// No executor could be started.
    #[error("no executors: {0}")]
    NoExecutors(String),
    /// The job failed.
    #[error("job {job} failed: {message}")]
    JobFailed {
        /// The job.
        job: String,
        /// Why.
        message: String,
    },
    /// The job was cancelled.
    #[error("job {0} was cancelled")]
    Cancelled(String),
    /// The job's plan could not be prepared.
    #[error(transparent)]
    Plan(#[from] datafusion::common::DataFusionError),
    /// The driver stopped.
    #[error("the driver has stopped")]
    Stopped,
}

/// A running executor, as the driver knows it.
#[derive(Clone, Debug)]
pub struct ExecutorInfo {
    /// Its id.
    pub id: ExecutorId,
    /// Its Flight address.
    pub flight_address: String,
    /// Its task slots.
    pub slots: u32,
    /// Its process id.
    pub pid: u32,
    /// Its host.
    pub host: String,
}

/// A job's progress.
#[derive(Clone, Debug)]
pub struct JobProgress {
    /// The job.
    pub job: JobId,
    /// Running, fetching, succeeded, failed or cancelled.
    pub state: String,
    /// Per-stage figures.
    pub stages: Vec<StageMetrics>,
}

/// A finished job's results.
#[derive(Debug)]
pub struct JobOutput {
    /// The job.
    pub job: JobId,
    /// The result rows, partition by partition.
    pub batches: Vec<RecordBatch>,
    /// The result schema.
    pub schema: SchemaRef,
    /// Per-stage figures.
    pub stages: Vec<StageMetrics>,
    /// From submission to results.
    pub elapsed: Duration,
}

/// A submitted job.
pub struct JobHandle {
    id: JobId,
    progress: watch::Receiver<JobProgress>,
    result: oneshot::Receiver<Result<JobOutput, DriverError>>,
    core: mpsc::UnboundedSender<Command>,
}

impl JobHandle {
    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Its progress, updated as tasks end.
    pub fn progress(&self) -> watch::Receiver<JobProgress> {
        self.progress.clone()
    }

    /// Cancels it: running tasks are cancelled and the result is an error.
    pub fn cancel(&self) {
        let _ = self.core.send(Command::Cancel(self.id.clone()));
    }

    /// Waits for its results.
    pub async fn result(self) -> Result<JobOutput, DriverError> {
        self.result.await.map_err(|_| DriverError::Stopped)?
    }
}

pub(crate) enum Command {
    Submit {
        id: JobId,
        plan: JobPlan,
        schema: SchemaRef,
        progress: watch::Sender<JobProgress>,
        result: oneshot::Sender<Result<JobOutput, DriverError>>,
    },
    Cancel(JobId),
    ExecutorUp {
        reg: Register,
        tx: mpsc::Sender<link::Outbound>,
        conn: u64,
    },
    ExecutorDown {
        id: ExecutorId,
        conn: u64,
    },
    Statuses {
        id: ExecutorId,
        statuses: Vec<TaskStatus>,
    },
    ExecutorTaskEnded {
        id: ExecutorId,
        message: String,
    },
    ClusterLost(String),
    Fetched {
        job: JobId,
        result: Result<Vec<RecordBatch>, (ExecutorId, String)>,
    },
    Executors(oneshot::Sender<Vec<ExecutorInfo>>),
    Shutdown(oneshot::Sender<()>),
}

/// A running driver.
pub struct Driver {
    core: mpsc::UnboundedSender<Command>,
    address: SocketAddr,
    next_job: AtomicU64,
    executors: watch::Receiver<usize>,
}

impl Driver {
    /// Starts the driver: its `ExecutorLink` service, and its executors'
    /// source (subscribing to the cluster's manager when there is one).
    pub async fn start(config: DriverConfig) -> Result<Driver, DriverError> {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|e| DriverError::Setup(format!("binding {}: {e}", config.bind)))?;
        let address = listener
            .local_addr()
            .map_err(|e| DriverError::Setup(e.to_string()))?;
        let host = config
            .advertise_host
            .clone()
            .unwrap_or_else(|| address.ip().to_string());
        let advertised = format!("{host}:{}", address.port());
        let (core_tx, core_rx) = mpsc::unbounded_channel();
        let service = link::LinkService {
            core: core_tx.clone(),
            next_conn: AtomicU64::new(1),
        };
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(
                ExecutorLinkServer::new(service)
                    .max_decoding_message_size(256 << 20)
                    .max_encoding_message_size(256 << 20),
            )
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            );
        let server = tokio::spawn(server);
        let slots = config.executors.slots();
        let mem_bytes = (config.executors.mem_mib * 1024.0 * 1024.0) as u64;
        let straggle: Vec<String> = config
            .straggle
            .iter()
            .map(|s| format!("{}:{}:{}", s.stage, s.partition, s.delay.as_millis()))
            .collect();
        let launcher = match &config.source {
            ExecutorSource::InProcess(dir) => Launcher::InProcess {
                dir: dir.clone(),
                driver: advertised.clone(),
                slots,
                mem_bytes,
                straggle: config.straggle.clone(),
                running: HashMap::new(),
                next: 0,
            },
            ExecutorSource::Cluster(source) => {
                let driver = advertised.clone();
                let args = move |id: &ExecutorId| {
                    let mut a = vec![
                        "--driver".to_owned(),
                        driver.clone(),
                        "--id".to_owned(),
                        id.0.clone(),
                        "--slots".to_owned(),
                        slots.to_string(),
                        "--memory-bytes".to_owned(),
                        mem_bytes.to_string(),
                    ];
                    for s in &straggle {
                        a.push("--straggle".into());
                        a.push(s.clone());
                    }
                    a
                };
                let resources = Resources::new(config.executors.cpus, config.executors.mem_mib);
                let tx =
                    cluster::start((**source).clone(), resources, args, core_tx.clone()).await?;
                Launcher::Cluster(tx)
            }
        };
        let (executors_tx, executors) = watch::channel(0);
        let core = Core {
            config,
            sched: TaskScheduler::default(),
            links: HashMap::new(),
            jobs: HashMap::new(),
            launcher,
            want: 0,
            launch_failures: 0,
            last_launch_error: None,
            idle_since: HashMap::new(),
            executors_tx,
            server,
            core_tx: core_tx.clone(),
        };
        tokio::spawn(core.run(core_rx));
        info!(address = %advertised, "driver listening for executors");
        Ok(Driver {
            core: core_tx,
            address,
            next_job: AtomicU64::new(1),
            executors,
        })
    }

    /// The address of its `ExecutorLink` service.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Submits a job cut into stages. The final stage's output is written
    /// like a map stage's (one output per partition) and fetched by the
    /// driver when every partition is done.
    pub fn submit(&self, plan: JobPlan) -> Result<JobHandle, DriverError> {
        let id = JobId(plan.job.clone());
        let schema = plan.final_stage().plan.schema();
        let (progress_tx, progress) = watch::channel(JobProgress {
            job: id.clone(),
            state: "queued".into(),
            stages: Vec::new(),
        });
        let (result_tx, result) = oneshot::channel();
        self.core
            .send(Command::Submit {
                id: id.clone(),
                plan,
                schema,
                progress: progress_tx,
                result: result_tx,
            })
            .map_err(|_| DriverError::Stopped)?;
        Ok(JobHandle {
            id,
            progress,
            result,
            core: self.core.clone(),
        })
    }

    /// A fresh job id (`job-N-<random>`), unique across drivers sharing
    /// executors' disks.
    pub fn next_job_id(&self) -> String {
        let n = self
            .next_job
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r: u32 = std::process::id() ^ (Instant::now().elapsed().subsec_nanos());
        format!("job-{n}-{:08x}", r.wrapping_mul(2654435761) ^ (n as u32))
    }

    /// The registered executors.
    pub async fn executors(&self) -> Vec<ExecutorInfo> {
        let (tx, rx) = oneshot::channel();
        if self.core.send(Command::Executors(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Waits until `n` executors are registered, for at most `timeout`.
    pub async fn wait_for_executors(&self, n: usize, timeout: Duration) -> Result<(), DriverError> {
        let mut rx = self.executors.clone();
        let r = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(DriverError::Stopped),
            Err(_) => Err(DriverError::NoExecutors(format!(
                "{} of {n} executors registered within {timeout:?}",
                *self.executors.borrow()
            ))),
        }
    }

    /// Stops the driver: executors are shut down (and their cluster tasks
    /// ended), running jobs fail.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.core.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

enum Launcher {
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

struct Link {
    tx: mpsc::Sender<link::Outbound>,
    conn: u64,
    plans: HashSet<(JobId, u32)>,
    info: ExecutorInfo,
}

struct JobEntry {
    plan: JobPlan,
    schema: SchemaRef,
    progress: watch::Sender<JobProgress>,
    result: Option<oneshot::Sender<Result<JobOutput, DriverError>>>,
    submitted: Instant,
    fetching: bool,
}

struct Core {
    config: DriverConfig,
    sched: TaskScheduler,
    links: HashMap<ExecutorId, Link>,
    jobs: HashMap<JobId, JobEntry>,
    launcher: Launcher,
    want: usize,
    launch_failures: u32,
    last_launch_error: Option<String>,
    idle_since: HashMap<ExecutorId, Instant>,
    executors_tx: watch::Sender<usize>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    core_tx: mpsc::UnboundedSender<Command>,
}

/// Final partitions fetched from executors at once.
const RESULT_FETCHES: usize = 8;

fn key(t: &TaskRef) -> TaskKey {
    TaskKey {
        job: t.job.0.clone(),
        stage: t.stage,
        partition: t.partition,
        attempt: t.attempt,
    }
}

impl Core {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
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
                        let _ = done.send(());
                        return;
                    }
                    self.handle(cmd).await;
                    // Drain what else is queued before scheduling once.
                    while let Ok(cmd) = rx.try_recv() {
                        if let Command::Shutdown(done) = cmd {
                            self.shutdown().await;
                            let _ = done.send(());
                            return;
                        }
                        self.handle(cmd).await;
                    }
                    self.schedule(false).await;
                }
                _ = tick.tick() => {
                    self.schedule(true).await;
                    self.release_idle().await;
                    self.check_starved();
                }
            }
        }
        self.shutdown().await;
    }

    async fn handle(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Submit {
                id,
                plan,
                schema,
                progress,
                result,
            } => {
                let mut specs = Vec::new();
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
                    let bytes = match strata_executor::codec::plan_to_bytes(root) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = result.send(Err(DriverError::Plan(e)));
                            return;
                        }
                    };
                    specs.push(StageSpec {
                        id: s.id,
                        inputs: s.inputs.clone(),
                        tasks: s.tasks as u32,
                        plan: Arc::new(bytes),
                    });
                }
                info!(job = %id, stages = specs.len(), "job submitted");
                self.sched.submit(id.clone(), specs);
                self.jobs.insert(
                    id,
                    JobEntry {
                        plan,
                        schema,
                        progress,
                        result: Some(result),
                        submitted: now,
                        fetching: false,
                    },
                );
            }
            Command::Cancel(id) => {
                let effects = self.sched.abort(&id, JobState::Cancelled);
                self.apply(effects).await;
                self.end_job(&id, Err(DriverError::Cancelled(id.0.clone())))
                    .await;
            }
            Command::ExecutorUp { reg, tx, conn } => {
                let id = ExecutorId(reg.executor_id.clone());
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
                let _ = tx
                    .send(Ok(DriverMessage {
                        kind: Some(Msg::Registered(Registered {})),
                    }))
                    .await;
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
            Command::ClusterLost(why) => {
                self.fail_all(&format!("lost the cluster: {why}")).await;
            }
            Command::Statuses { id, statuses } => {
                for s in statuses {
                    let Some(k) = s.key else { continue };
                    let task = TaskRef {
                        job: JobId(k.job),
                        stage: k.stage,
                        partition: k.partition,
                        attempt: k.attempt,
                    };
                    let outcome = match TaskOutcome::try_from(s.outcome) {
                        Ok(TaskOutcome::Finished) => Outcome::Finished {
                            partition_bytes: s
                                .partition_bytes
                                .into_iter()
                                .map(|p| (p.partition, p.bytes))
                                .collect(),
                            rows: s.rows,
                            bytes: s.bytes,
                        },
                        Ok(TaskOutcome::FetchFailed) => Outcome::FetchFailed {
                            stage: s.failed_stage,
                            executor: ExecutorId(s.failed_executor),
                            error: s.error,
                        },
                        Ok(TaskOutcome::Cancelled) => Outcome::Cancelled,
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
                Ok(batches) => {
                    let stages = self.sched.metrics(&job);
                    self.sched.finish(&job);
                    if let Some(entry) = self.jobs.get(&job) {
                        let out = JobOutput {
                            job: job.clone(),
                            batches,
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
                let _ = reply.send(v);
            }
            Command::Shutdown(_) => {}
        }
    }

    async fn lose_executor(&mut self, id: &ExecutorId) {
        self.sched.remove_executor(id);
        if let Some(l) = self.links.remove(id) {
            let _ =
                l.tx.try_send(Err(tonic::Status::unavailable("executor written off")));
        }
        self.idle_since.remove(id);
        self.executors_tx.send_replace(self.links.len());
        match &mut self.launcher {
            Launcher::Cluster(tx) => {
                let _ = tx.send(LauncherCmd::Kill(id.clone()));
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
                        let _ =
                            l.tx.send(Ok(DriverMessage {
                                kind: Some(Msg::Cancel(CancelTasks {
                                    tasks: vec![key(&task)],
                                })),
                            }))
                            .await;
                    }
                }
                Effect::OutputsReady(job) => self.fetch_results(job),
                Effect::JobFailed(job, why) => {
                    warn!(job = %job, error = %why, "job failed");
                    self.end_job(
                        &job,
                        Err(DriverError::JobFailed {
                            job: job.0.clone(),
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
        entry.fetching = true;
        let stage = entry.plan.final_stage().id;
        let core = self.core_tx.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            let job_name = job.0.clone();
            // A few fetches at once, results kept in partition order.
            let mut fetches = futures::stream::iter(outputs)
                .map(|(p, executor, flight)| {
                    let ticket = ShuffleTicket {
                        job: job_name.clone(),
                        stage,
                        partition: p,
                        maps: Some(vec![p]),
                    };
                    async move { (executor, fetch(&flight, &ticket).await) }
                })
                .buffered(RESULT_FETCHES);
            let mut batches = Vec::new();
            while let Some((executor, result)) = fetches.next().await {
                match result {
                    Ok(b) => batches.extend(b),
                    Err(e) => {
                        let _ = core.send(Command::Fetched {
                            job,
                            result: Err((executor, e.to_string())),
                        });
                        return;
                    }
                }
            }
            let _ = core.send(Command::Fetched {
                job,
                result: Ok(batches),
            });
        });
    }

    async fn end_job(&mut self, job: &JobId, result: Result<JobOutput, DriverError>) {
        let Some(mut entry) = self.jobs.remove(job) else {
            return;
        };
        let state = match &result {
            Ok(_) => "succeeded",
            Err(DriverError::Cancelled(_)) => "cancelled",
            Err(_) => "failed",
        };
        entry.progress.send_modify(|p| p.state = state.into());
        if let Some(tx) = entry.result.take() {
            let _ = tx.send(result);
        }
        for l in self.links.values_mut() {
            l.plans.retain(|(j, _)| j != job);
            let _ =
                l.tx.send(Ok(DriverMessage {
                    kind: Some(Msg::EndJob(EndJob { job: job.0.clone() })),
                }))
                .await;
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
                    job: id.0.clone(),
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
            let _ = tx.send(Command::ClusterLost(why));
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
        for (id, entry) in &self.jobs {
            let stages = self.sched.metrics(id);
            let state = match self.sched.state(id) {
                Some(JobState::OutputsReady) => "fetching",
                _ => "running",
            };
            entry.progress.send_if_modified(|p| {
                if p.stages != stages || p.state != state {
                    p.stages = stages.clone();
                    p.state = state.into();
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
            let msg = per.entry(l.executor.clone()).or_default();
            let pk = (l.task.job.clone(), l.task.stage);
            if link.plans.insert(pk) {
                msg.plans.push(StagePlan {
                    job: l.task.job.0.clone(),
                    stage: l.task.stage,
                    plan: (*l.plan).clone(),
                });
            }
            msg.tasks.push(TaskSpec {
                key: Some(key(&l.task)),
                inputs: l
                    .inputs
                    .into_iter()
                    .map(|(stage, outs)| StageInput {
                        stage,
                        outputs: outs
                            .into_iter()
                            .map(|(m, e, flight)| MapOutput {
                                map_partition: m,
                                executor_id: e.0,
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
                let _ = tx.send(LauncherCmd::Want(want));
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
                    let id = ExecutorId(format!("local-exec-{next}"));
                    let mut cfg =
                        ExecutorConfig::new(driver.clone(), id.0.clone(), dir.join(&id.0));
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
            if let Some(l) = self.links.get(&id) {
                let _ =
                    l.tx.send(Ok(DriverMessage {
                        kind: Some(Msg::Shutdown(Shutdown {
                            reason: "idle".into(),
                        })),
                    }))
                    .await;
            }
            self.lose_executor(&id).await;
            live -= 1;
        }
    }

    async fn shutdown(&mut self) {
        self.fail_all("the driver is shutting down").await;
        for l in self.links.values() {
            let _ =
                l.tx.send(Ok(DriverMessage {
                    kind: Some(Msg::Shutdown(Shutdown {
                        reason: "driver shutting down".into(),
                    })),
                }))
                .await;
        }
        match &mut self.launcher {
            Launcher::Cluster(tx) => {
                let (done, wait) = oneshot::channel();
                if tx.send(LauncherCmd::Shutdown(done)).is_ok() {
                    let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
                }
            }
            Launcher::InProcess { running, .. } => {
                for (_, h) in running.drain() {
                    h.shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), h.join()).await;
                }
            }
        }
        self.links.clear();
        self.server.abort();
    }
}
