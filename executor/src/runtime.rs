//! The executor process: registers with its driver over one
//! `ExecutorLink` stream, runs the tasks it is sent, reports their
//! statuses, and serves its shuffle output over Arrow Flight.
//!
//! * Up to `slots` tasks run at once; the driver sends no more than that,
//!   and a local semaphore holds any surplus.
//! * A stage's plan arrives once; each task decodes its own copy (operators
//!   such as hash joins keep per-instance state that tasks must not share).
//! * Statuses are batched: whatever finished while the last batch was being
//!   sent goes in the next message.
//! * When the stream breaks, running tasks are abandoned (the driver counts
//!   them lost) and the executor dials again; after `driver_timeout` without
//!   a driver it exits by itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;
use strata_proto::exec::driver_message::Kind as DriverKind;
use strata_proto::exec::executor_link_client::ExecutorLinkClient;
use strata_proto::exec::executor_message::Kind as ExecKind;
use strata_proto::exec::{
    ExecutorMessage, Heartbeat, LaunchTasks, Register, TaskKey, TaskOutcome, TaskSpec, TaskStatus,
    TaskStatuses,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::codec::plan_from_bytes;
use crate::engine;
use crate::functions::WithJobFunctions;
use crate::ids::{PartitionId, StageId};
use crate::memory::QueryPool;
use crate::shuffle::{MapOutputLocation, ShuffleEnv, ShuffleWriterExec};
use crate::shuffle_service::ShuffleService;

/// How an executor is set up.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// The driver's `ExecutorLink` address (`host:port` or a URL).
    pub driver: String,
    /// The id its driver gave it.
    pub executor_id: String,
    /// Tasks run at once (its cpus).
    pub slots: usize,
    /// The memory pool shared by its tasks, bytes.
    pub memory_bytes: u64,
    /// Its work directory: shuffle files under `shuffle/`, spills under `spill/`.
    pub work_dir: PathBuf,
    /// Where its Flight service binds (port 0: any free port). Default: any
    /// free port on this host's address toward its driver (loopback when
    /// the driver is on loopback; the routable interface across hosts), so
    /// executors on other hosts can fetch its shuffle output.
    pub flight_bind: Option<SocketAddr>,
    /// The host other processes reach it at (default: the bind address's IP).
    pub advertise_host: Option<String>,
    /// How long it waits for a lost driver before exiting.
    pub driver_timeout: Duration,
    /// Fault injection for tests: first attempts of these tasks are delayed.
    pub straggle: Vec<Straggle>,
}

impl ExecutorConfig {
    /// A config with defaults: one slot, 512 MiB, Flight on this host's
    /// address toward the driver.
    pub fn new(
        driver: impl Into<String>,
        executor_id: impl Into<String>,
        work_dir: PathBuf,
    ) -> Self {
        ExecutorConfig {
            driver: driver.into(),
            executor_id: executor_id.into(),
            slots: 1,
            memory_bytes: 512 << 20,
            work_dir,
            flight_bind: None,
            advertise_host: None,
            driver_timeout: Duration::from_secs(30),
            straggle: Vec::new(),
        }
    }
}

/// Delays the first attempt of one task: how tests make a straggler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Straggle {
    /// The stage.
    pub stage: StageId,
    /// The partition.
    pub partition: PartitionId,
    /// The delay.
    pub delay: Duration,
}

/// A `--straggle` value that is not `STAGE:PARTITION:MILLIS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid straggler {0:?}: expected STAGE:PARTITION:MILLIS")]
pub struct InvalidStraggle(pub String);

impl std::str::FromStr for Straggle {
    type Err = InvalidStraggle;
    /// `STAGE:PARTITION:MILLIS`.
    fn from_str(s: &str) -> Result<Self, InvalidStraggle> {
        let bad = || InvalidStraggle(s.to_owned());
        let mut it = s.split(':');
        let (Some(a), Some(b), Some(c), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        Ok(Straggle {
            stage: a.parse().map_err(|_| bad())?,
            partition: b.parse().map_err(|_| bad())?,
            delay: Duration::from_millis(c.parse().map_err(|_| bad())?),
        })
    }
}

/// Why an executor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// Its work directory or Flight port could not be set up.
    #[error("executor setup failed: {0}")]
    Setup(String),
    /// No driver answered for longer than the driver timeout.
    #[error("driver at {driver} unreachable for {waited:?}: {last_error}")]
    DriverGone {
        /// The driver.
        driver: String,
        /// How long it waited.
        waited: Duration,
        /// The last error seen.
        last_error: String,
    },
    /// The driver refused the registration.
    #[error("driver refused registration: {0}")]
    Refused(String),
}

/// A running executor.
pub struct ExecutorHandle {
    flight_address: String,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ExecutorError>>,
}

impl ExecutorHandle {
    /// Its Flight address.
    pub fn flight_address(&self) -> &str {
        &self.flight_address
    }

    /// Asks it to stop.
    pub fn shutdown(&self) {
        self.shutdown.send(true).ok();
    }

    /// Waits for it to stop.
    pub async fn join(self) -> Result<(), ExecutorError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ExecutorError::Setup(format!("executor task panicked: {e}"))),
        }
    }
}

/// Starts an executor in this process (its Flight service and its driver
/// link) and returns at once.
pub async fn start(config: ExecutorConfig) -> Result<ExecutorHandle, ExecutorError> {
    let setup =
        |what: &str, e: &dyn std::fmt::Display| ExecutorError::Setup(format!("{what}: {e}"));
    let shuffle_root = config.work_dir.join("shuffle");
    let spill_dir = config.work_dir.join("spill");
    for d in [&shuffle_root, &spill_dir] {
        std::fs::create_dir_all(d).map_err(|e| setup(&format!("creating {}", d.display()), &e))?;
    }
    let flight_bind = match config.flight_bind {
        Some(bind) => bind,
        None => {
            let ip = strata_proto::net::local_ip_toward(&config.driver).map_err(|e| {
                setup(
                    &format!(
                        "finding this host's address toward the driver {}",
                        config.driver
                    ),
                    &e,
                )
            })?;
            SocketAddr::new(ip, 0)
        }
    };
    let listener = tokio::net::TcpListener::bind(flight_bind)
        .await
        .map_err(|e| setup(&format!("binding {flight_bind}"), &e))?;
    let local = listener
        .local_addr()
        .map_err(|e| setup("flight address", &e))?;
    let host = config
        .advertise_host
        .clone()
        .unwrap_or_else(|| local.ip().to_string());
    let flight_address = format!("{host}:{}", local.port());
    let runtime =
        engine::runtime_env(config.memory_bytes, &spill_dir).map_err(|e| setup("runtime", &e))?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            ShuffleService::new(&shuffle_root)
                .into_server()
                .max_encoding_message_size(64 << 20),
        )
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        );
    let server = tokio::spawn(server);
    let ex = Executor {
        config: Arc::new(config),
        flight_address: flight_address.clone(),
        shuffle_root,
        runtime,
        shutdown: shutdown_rx,
    };
    let task = tokio::spawn(async move {
        let r = ex.run().await;
        server.abort();
        r
    });
    Ok(ExecutorHandle {
        flight_address,
        shutdown,
        task,
    })
}

/// Runs an executor until its driver shuts it down or is gone.
pub async fn run(config: ExecutorConfig) -> Result<(), ExecutorError> {
    start(config).await?.join().await
}

struct Executor {
    config: Arc<ExecutorConfig>,
    flight_address: String,
    shuffle_root: PathBuf,
    runtime: Arc<RuntimeEnv>,
    shutdown: watch::Receiver<bool>,
}

enum Exit {
    Shutdown,
    Lost(String),
}

impl Executor {
    async fn run(mut self) -> Result<(), ExecutorError> {
        let mut lost_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session().await {
                Exit::Shutdown => return Ok(()),
                Exit::Lost(e) => {
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.config.driver_timeout {
                        return Err(ExecutorError::DriverGone {
                            driver: self.config.driver.clone(),
                            waited: since.elapsed(),
                            last_error: e,
                        });
                    }
                    if let Some(reason) = e.strip_prefix("refused: ") {
                        return Err(ExecutorError::Refused(reason.to_owned()));
                    }
                    warn!(driver = %self.config.driver, error = %e, "driver link lost; dialling again");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.changed() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One connection to the driver, from registration to loss.
    async fn session(&mut self) -> Exit {
        let url = if self.config.driver.contains("://") {
            self.config.driver.clone()
        } else {
            format!("http://{}", self.config.driver)
        };
        let endpoint = match tonic::transport::Endpoint::from_shared(url) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(10)),
            Err(e) => return Exit::Lost(format!("bad driver address: {e}")),
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return Exit::Lost(e.to_string()),
        };
        let mut client = ExecutorLinkClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let (out, out_rx) = mpsc::channel::<ExecutorMessage>(64);
        let register = ExecutorMessage {
            kind: Some(ExecKind::Register(Register {
                version: strata_proto::PROTOCOL_VERSION,
                executor_id: self.config.executor_id.clone(),
                flight_address: self.flight_address.clone(),
                slots: self.config.slots.max(1) as u32,
                memory_bytes: self.config.memory_bytes,
                pid: std::process::id(),
                host: hostname(),
            })),
        };
        out.send(register).await.ok();
        let mut inbound = match client.attach(ReceiverStream::new(out_rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                return Exit::Lost(format!("refused: {}", s.message()));
            }
            Err(e) => return Exit::Lost(e.to_string()),
        };
        info!(executor = %self.config.executor_id, driver = %self.config.driver, flight = %self.flight_address, "executor attached");
        let base = self.base_state();
        let slots = Arc::new(Semaphore::new(self.config.slots.max(1)));
        let (status_tx, mut status_rx) = mpsc::unbounded_channel::<TaskStatus>();
        let mut plans: HashMap<(String, StageId), KeptPlan> = HashMap::new();
        let mut running: HashMap<KeyId, AbortHandle> = HashMap::new();
        let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
        let slots_n = self.config.slots.max(1);
        let mut pending: Vec<TaskStatus> = Vec::new();
        let mut linger: Option<tokio::time::Instant> = None;
        let exit = loop {
            tokio::select! {
                msg = inbound.message() => {
                    let msg = match msg {
                        Ok(Some(m)) => m,
                        Ok(None) => break Exit::Lost("driver closed the stream".into()),
                        Err(e) => break Exit::Lost(e.to_string()),
                    };
                    match msg.kind {
                        Some(DriverKind::Registered(_)) => debug!("registered"),
                        Some(DriverKind::Launch(l)) => {
                            self.launch(l, &mut plans, &mut running, &base, &slots, &status_tx);
                        }
                        Some(DriverKind::Cancel(c)) => {
                            for key in c.tasks {
                                if let Some(h) = running.remove(&KeyId::of(&key)) {
                                    h.abort();
                                    status_tx.send(status(key, TaskOutcome::Cancelled, Instant::now())).ok();
                                }
                            }
                        }
                        Some(DriverKind::EndJob(e)) => {
                            plans.retain(|(job, _), _| *job != e.job);
                            remove_job_files(&self.shuffle_root, &e.job);
                            if running.is_empty() {
                                release_free_memory();
                            }
                        }
                        Some(DriverKind::Shutdown(s)) => {
                            info!(reason = %s.reason, "driver shut the executor down");
                            break Exit::Shutdown;
                        }
                        None => {}
                    }
                }
                Some(first) = status_rx.recv() => {
                    pending.push(first);
                    while let Ok(s) = status_rx.try_recv() {
                        pending.push(s);
                    }
                    for s in &pending {
                        if let Some(k) = &s.key {
                            running.remove(&KeyId::of(k));
                        }
                    }
                    // A slot with nothing queued for it, or a full batch:
                    // tell the driver now. Otherwise the queue keeps the
                    // slots busy, and statuses wait a moment to share a
                    // message.
                    if running.len() < slots_n || pending.len() >= STATUS_BATCH {
                        if !flush(&out, &mut pending).await {
                            break Exit::Lost("stream to the driver closed".into());
                        }
                        linger = None;
                    } else if linger.is_none() {
                        linger = Some(tokio::time::Instant::now() + STATUS_LINGER);
                    }
                }
                _ = sleep_until_some(linger) => {
                    linger = None;
                    if !flush(&out, &mut pending).await {
                        break Exit::Lost("stream to the driver closed".into());
                    }
                }
                _ = heartbeat.tick() => {
                    let msg = ExecutorMessage { kind: Some(ExecKind::Heartbeat(Heartbeat {})) };
                    if out.send(msg).await.is_err() {
                        break Exit::Lost("stream to the driver closed".into());
                    }
                }
                _ = self.shutdown.changed() => break Exit::Shutdown,
            }
        };
        for (_, h) in running.drain() {
            h.abort();
        }
        exit
    }

    fn base_state(&self) -> Arc<TaskContext> {
        let state = SessionStateBuilder::new()
            .with_config(engine::session_config(self.config.slots))
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .with_job_functions()
            .build();
        state.task_ctx()
    }

    fn launch(
        &self,
        l: LaunchTasks,
        plans: &mut HashMap<(String, StageId), KeptPlan>,
        running: &mut HashMap<KeyId, AbortHandle>,
        base: &Arc<TaskContext>,
        slots: &Arc<Semaphore>,
        status_tx: &mpsc::UnboundedSender<TaskStatus>,
    ) {
        for p in l.plans {
            // A job with a memory limit shares one cap among its stages.
            let runtime = (p.memory_limit > 0).then(|| {
                plans
                    .iter()
                    .find(|((job, _), e)| *job == p.job && e.runtime.is_some())
                    .and_then(|(_, e)| e.runtime.clone())
                    .unwrap_or_else(|| {
                        let base = base.runtime_env();
                        let pool = Arc::new(QueryPool::new(
                            base.memory_pool.clone(),
                            &p.job,
                            usize::try_from(p.memory_limit).unwrap_or(usize::MAX),
                        ));
                        pool.runtime(&base)
                    })
            });
            let plan = KeptPlan {
                bytes: Arc::new(p.plan),
                runtime,
            };
            plans.insert((p.job, StageId::new(p.stage)), plan);
        }
        for spec in l.tasks {
            let Some(key) = spec.key.clone() else {
                continue;
            };
            let (stage, partition) = (StageId::new(key.stage), PartitionId::new(key.partition));
            let Some(KeptPlan {
                bytes: plan,
                runtime,
            }) = plans.get(&(key.job.clone(), stage)).cloned()
            else {
                let mut s = status(key, TaskOutcome::Failed, Instant::now());
                s.error = "executor has no plan for this task's stage".into();
                status_tx.send(s).ok();
                continue;
            };
            let id = KeyId::of(&key);
            let ctx = TaskCtx {
                runtime: runtime.unwrap_or_else(|| base.runtime_env()),
                base: base.clone(),
                root: self.shuffle_root.clone(),
                executor_id: self.config.executor_id.clone(),
                straggle: self
                    .config
                    .straggle
                    .iter()
                    .find(|s| s.stage == stage && s.partition == partition && key.attempt == 0)
                    .map(|s| s.delay),
            };
            let slots = slots.clone();
            let tx = status_tx.clone();
            // A task's lines carry its ids, so that one job's lines can be
            // pulled out of every executor's log.
            let span = info_span!(
                "task",
                job_id = %key.job,
                stage = key.stage,
                partition = key.partition,
                attempt = key.attempt,
            );
            let handle = tokio::spawn(
                async move {
                    let _permit = slots.acquire_owned().await;
                    debug!("task started");
                    let s = run_task(spec, plan, ctx).await;
                    debug!(
                        outcome = s.outcome,
                        elapsed_micros = s.elapsed_micros,
                        "task ended"
                    );
                    tx.send(s).ok();
                }
                .instrument(span),
            );
            running.insert(id, handle.abort_handle());
        }
    }
}

/// Statuses sent in one message at most before the executor stops
/// waiting for more.
const STATUS_BATCH: usize = 8;

/// How long a status may wait for others to share its message while the
/// executor's slots are all busy.
const STATUS_LINGER: Duration = Duration::from_millis(2);

/// Sends the pending statuses as one message; false if the stream is gone.
async fn flush(out: &mpsc::Sender<ExecutorMessage>, pending: &mut Vec<TaskStatus>) -> bool {
    if pending.is_empty() {
        return true;
    }
    let statuses = std::mem::take(pending);
    let msg = ExecutorMessage {
        kind: Some(ExecKind::Statuses(TaskStatuses { statuses })),
    };
    out.send(msg).await.is_ok()
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A task's identity as a map key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct KeyId(String, StageId, PartitionId, u32);

impl KeyId {
    fn of(k: &TaskKey) -> KeyId {
        KeyId(
            k.job.clone(),
            StageId::new(k.stage),
            PartitionId::new(k.partition),
            k.attempt,
        )
    }
}

/// A stage's plan as the executor keeps it.
#[derive(Clone)]
struct KeptPlan {
    /// datafusion-proto bytes.
    bytes: Arc<Vec<u8>>,
    /// The runtime its tasks run with when its job has a memory limit of
    /// its own ([`QueryPool`]).
    runtime: Option<Arc<RuntimeEnv>>,
}

struct TaskCtx {
    base: Arc<TaskContext>,
    /// The executor's runtime, or its job's capped one.
    runtime: Arc<RuntimeEnv>,
    root: PathBuf,
    executor_id: String,
    straggle: Option<Duration>,
}

fn status(key: TaskKey, outcome: TaskOutcome, started: Instant) -> TaskStatus {
    TaskStatus {
        key: Some(key),
        outcome: outcome as i32,
        elapsed_micros: started.elapsed().as_micros() as u64,
        ..Default::default()
    }
}

/// Runs one task attempt to its status.
async fn run_task(spec: TaskSpec, plan: Arc<Vec<u8>>, ctx: TaskCtx) -> TaskStatus {
    let started = Instant::now();
    let key = spec.key.clone().unwrap_or_default();
    if let Some(d) = ctx.straggle {
        tokio::time::sleep(d).await;
    }
    let inputs = spec
        .inputs
        .iter()
        .map(|i| {
            let outs = i
                .outputs
                .iter()
                .map(|o| MapOutputLocation {
                    map_partition: PartitionId::new(o.map_partition),
                    executor_id: o.executor_id.clone(),
                    flight_address: o.flight_address.clone(),
                })
                .collect();
            (StageId::new(i.stage), outs)
        })
        .collect();
    let env = Arc::new(ShuffleEnv {
        root: ctx.root,
        executor_id: ctx.executor_id,
        attempt: key.attempt,
        inputs,
        fetch_failure: Default::default(),
    });
    let config: SessionConfig = ctx
        .base
        .session_config()
        .clone()
        .with_extension(env.clone());
    let b = &ctx.base;
    let task_ctx = Arc::new(TaskContext::new(
        Some(format!(
            "{}/s{}/p{}/a{}",
            key.job, key.stage, key.partition, key.attempt
        )),
        b.session_id(),
        config,
        b.scalar_functions().clone(),
        b.higher_order_functions().clone(),
        b.aggregate_functions().clone(),
        b.window_functions().clone(),
        ctx.runtime.clone(),
    ));
    let mut decoded = None;
    let result = async {
        let plan = plan_from_bytes(&plan, &task_ctx)?;
        decoded = Some(plan.clone());
        let writer = plan.downcast_ref::<ShuffleWriterExec>().ok_or_else(|| {
            datafusion::common::DataFusionError::Internal(
                "a task's plan must end in a shuffle writer".into(),
            )
        })?;
        writer
            .write(PartitionId::new(key.partition), task_ctx.clone())
            .await
    }
    .await;
    let mut s = status(key, TaskOutcome::Finished, started);
    match result {
        Ok(w) => {
            if let Some(plan) = &decoded {
                operator_metrics(plan.as_ref(), &mut s.operators);
            }
            s.rows = w.rows;
            s.bytes = w.bytes;
            s.partition_bytes = w
                .partition_bytes
                .into_iter()
                .map(|(partition, bytes)| strata_proto::exec::PartitionBytes {
                    partition: partition.get(),
                    bytes,
                })
                .collect();
        }
        Err(e) => {
            let fetch = env
                .fetch_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match fetch {
                Some((stage, executor)) => {
                    s.outcome = TaskOutcome::FetchFailed as i32;
                    s.failed_stage = stage.get();
                    s.failed_executor = executor;
                }
                None if is_query_error(&e) => s.outcome = TaskOutcome::QueryError as i32,
                None => s.outcome = TaskOutcome::Failed as i32,
            }
            s.error = e.to_string();
        }
    }
    s
}

/// The metrics of a task's plan, its operators in pre-order (the order
/// the driver lists the stage's operators in).
fn operator_metrics(
    plan: &dyn datafusion::physical_plan::ExecutionPlan,
    out: &mut Vec<strata_proto::exec::OperatorMetrics>,
) {
    let m = plan.metrics();
    out.push(strata_proto::exec::OperatorMetrics {
        output_rows: m.as_ref().and_then(|m| m.output_rows()).map(|v| v as u64),
        elapsed_compute_nanos: m
            .as_ref()
            .and_then(|m| m.elapsed_compute())
            .map(|v| v as u64),
        spilled_bytes: m.as_ref().and_then(|m| m.spilled_bytes()).map(|v| v as u64),
    });
    for child in plan.children() {
        operator_metrics(child.as_ref(), out);
    }
}

/// Whether a task's error is the query's own — the same on any executor
/// and attempt: a value that does not cast or parse, a division by zero,
/// the query over its memory limit — so that another attempt would only
/// repeat it.
fn is_query_error(e: &datafusion::common::DataFusionError) -> bool {
    use datafusion::arrow::error::ArrowError;
    use datafusion::common::DataFusionError;
    match e.find_root() {
        DataFusionError::ResourcesExhausted(m) => m.contains(crate::memory::QUERY_LIMIT_EXCEEDED),
        DataFusionError::ArrowError(a, _) => matches!(
            a.as_ref(),
            ArrowError::DivideByZero | ArrowError::CastError(_) | ArrowError::ParseError(_)
        ),
        _ => false,
    }
}

fn remove_job_files(root: &std::path::Path, job: &str) {
    if job.is_empty() || job.contains('/') || job.starts_with('.') {
        return;
    }
    let dir = root.join(job);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %dir.display(), error = %e, "cannot remove a job's shuffle files");
    }
}

/// Hands the heap's free memory back to the system between jobs: glibc's
/// allocator keeps what a job's hash tables and batches freed, and an
/// executor that ran a large job would otherwise stay that large.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}
