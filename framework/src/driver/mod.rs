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

mod actor;
pub mod cluster;
pub mod dag;
mod link;
mod report;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use strata_executor::runtime::Straggle;
use strata_proto::exec::executor_link_server::ExecutorLinkServer;
use strata_proto::exec::{Register, TaskStatus};
use strata_sdk::Resources;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;

use actor::{Core, Launcher};
pub use cluster::ClusterSource;
use dag::{ExecutorId, JobId, StageMetrics, TaskScheduler};
pub use stream::JobStream;

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
    /// Where the `ExecutorLink` service binds. Default: any free port on
    /// this host's address toward its manager (see
    /// [`strata_proto::net::local_ip_toward`]: loopback for a cluster on
    /// loopback, the routable interface for one across hosts), or on
    /// loopback for in-process executors.
    pub bind: Option<SocketAddr>,
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
            bind: None,
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

/// Where a job of the driver is (`queued`, `running`, `fetching`,
/// `succeeded`, `failed` or `cancelled` when shown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobPhase {
    /// Submitted, not yet scheduled.
    Queued,
    /// Running stages.
    Running,
    /// Every final partition is done; the driver is fetching them.
    Fetching,
    /// Done.
    Succeeded,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl JobPhase {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobPhase::Succeeded | JobPhase::Failed | JobPhase::Cancelled
        )
    }

    /// Its name, in lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Queued => "queued",
            JobPhase::Running => "running",
            JobPhase::Fetching => "fetching",
            JobPhase::Succeeded => "succeeded",
            JobPhase::Failed => "failed",
            JobPhase::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's progress.
#[derive(Clone, Debug)]
pub struct JobProgress {
    /// The job.
    pub job: JobId,
    /// Where it is.
    pub state: JobPhase,
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
    rows: mpsc::Receiver<RecordBatch>,
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
        self.core.send(Command::Cancel(self.id.clone())).ok();
    }

    /// What cancels it, apart from the handle (a session keeps it while
    /// it waits for the result).
    pub fn canceller(&self) -> JobCanceller {
        JobCanceller {
            id: self.id.clone(),
            core: self.core.clone(),
        }
    }

    /// Waits for its results, all of them collected.
    pub async fn result(self) -> Result<JobOutput, DriverError> {
        use futures::StreamExt;
        let mut stream = self.stream();
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(batch?);
        }
        let mut output = stream.into_output().ok_or(DriverError::Stopped)?;
        output.batches = batches;
        Ok(output)
    }

    /// Its result rows as they are fetched from the executors, partition
    /// by partition ([`JobStream`]); dropping the stream before its end
    /// cancels the job.
    pub fn stream(self) -> JobStream {
        JobStream::new(self.id, self.rows, self.result)
    }
}

/// Cancels a job from elsewhere than its [`JobHandle`].
#[derive(Clone)]
pub struct JobCanceller {
    id: JobId,
    core: mpsc::UnboundedSender<Command>,
}

impl JobCanceller {
    /// Cancels the job (nothing if it has ended).
    pub fn cancel(&self) {
        self.core.send(Command::Cancel(self.id.clone())).ok();
    }

    /// The job.
    pub fn id(&self) -> &JobId {
        &self.id
    }
}

/// Cancels its job when dropped — the wait for the job was given up (a
/// cancel request, a closed connection, a timeout) — unless disarmed.
pub struct CancelOnDrop(Option<JobCanceller>);

impl CancelOnDrop {
    /// Cancels `job` when dropped.
    pub fn new(job: JobCanceller) -> CancelOnDrop {
        CancelOnDrop(Some(job))
    }

    /// The job ended: nothing to cancel.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            tracing::info!(job = %c.id(), "job cancelled: its wait was dropped");
            c.cancel();
        }
    }
}

pub(crate) enum Command {
    Submit {
        id: JobId,
        plan: JobPlan,
        schema: SchemaRef,
        progress: watch::Sender<JobProgress>,
        result: oneshot::Sender<Result<JobOutput, DriverError>>,
        rows: mpsc::Sender<RecordBatch>,
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
    /// These executors' agent is being drained: no new attempts go to
    /// them, and each is let go once idle (its outputs re-run where still
    /// needed, ahead of the drain's deadline).
    Retire(Vec<ExecutorId>),
    Fetched {
        job: JobId,
        /// Every final partition was delivered, or an executor's could
        /// not be fetched.
        result: Result<(), (ExecutorId, String)>,
    },
    Executors(oneshot::Sender<Vec<ExecutorInfo>>),
    Shutdown(oneshot::Sender<()>),
}

impl Command {
    /// The job a command is about, if one: its handling runs in that job's
    /// tracing span.
    pub(crate) fn job(&self) -> Option<&JobId> {
        match self {
            Command::Submit { id, .. } | Command::Cancel(id) => Some(id),
            Command::Fetched { job, .. } => Some(job),
            _ => None,
        }
    }
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
        let bind = match (config.bind, &config.source) {
            (Some(bind), _) => bind,
            (None, ExecutorSource::InProcess(_)) => SocketAddr::from(([127, 0, 0, 1], 0)),
            (None, ExecutorSource::Cluster(source)) => {
                let first = strata_proto::net::first_manager(&source.manager);
                let ip = strata_proto::net::local_ip_toward(first).map_err(|e| {
                    DriverError::Setup(format!(
                        "finding this host's address toward the manager {}: {e}",
                        source.manager
                    ))
                })?;
                SocketAddr::new(ip, 0)
            }
        };
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| DriverError::Setup(format!("binding {bind}: {e}")))?;
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
        // Jobs are reported to the manager of a cluster's driver.
        let mut reporter = None;
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
                        id.to_string(),
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
                let (tx, framework_id) =
                    cluster::start((**source).clone(), resources, args, core_tx.clone()).await?;
                reporter = Some(report::Reporter::spawn(
                    source.manager.clone(),
                    source.token.clone(),
                    framework_id,
                    source.name.clone(),
                ));
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
            reporter,
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
        let id = JobId::new(plan.job.clone());
        let schema = plan
            .final_stage()
            .ok_or_else(|| DriverError::Setup(format!("job {id} has no stages")))?
            .plan
            .schema();
        let (progress_tx, progress) = watch::channel(JobProgress {
            job: id.clone(),
            state: JobPhase::Queued,
            stages: Vec::new(),
        });
        let (result_tx, result) = oneshot::channel();
        let (rows_tx, rows) = mpsc::channel(stream::RESULT_BUFFER);
        self.core
            .send(Command::Submit {
                id: id.clone(),
                plan,
                schema,
                progress: progress_tx,
                result: result_tx,
                rows: rows_tx,
            })
            .map_err(|_| DriverError::Stopped)?;
        Ok(JobHandle {
            id,
            progress,
            result,
            rows,
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
            rx.await.ok();
        }
    }
}
