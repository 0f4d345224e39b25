//! The fault suite's long loop: three etcd members, three managers and
//! three agents, each on a host of its own, under a service app with an
//! HTTP health check, a framework's stream of tasks with idempotent ids, a
//! stream of `strata run --id` clients (each tried again with its id until
//! it ends) and TPC-H queries run again and again, while twenty faults
//! follow one another:
//! the leader killed (`-9`), paused past its lease (SIGSTOP, SIGCONT), cut
//! off from etcd; an agent cut off from the managers and healed, an agent
//! killed and restarted. A deposed or killed manager comes back as a
//! standby, as a process supervisor would start it again.
//!
//! Every run checks and prints: no task the stream saw running was lost,
//! no task ran twice (each appends its id to a shared file when it
//! starts; each `strata run` task was launched once, by the agents' logs), the service's healthy count as its leader reported it (never
//! zero), every TPC-H result equal to single-process DataFusion's, and the
//! leader and the agents agree on the tasks once it is quiet.
//!
//! Ignored in the test run (minutes): `cargo nextest run -p strata
//! --features etcd --test it --run-ignored only -E 'test(faults::)'
//! --no-capture` (as root, with `etcd` installed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use strata_framework::driver::{ClusterSource, Driver, DriverConfig, ExecutorSource};
use strata_framework::session::Session;
use strata_framework::tpch;
use strata_sdk::{AgentId, Event, Resources, Scheduler, TaskBuilder, TaskState};
use tokio::sync::watch;

use crate::harness::*;
use crate::services::{app, request, settled};

const TOKEN: &str = "faults-secret";
const ROUNDS: usize = 20;
/// Hosts: etcd members, then managers, then agents.
const ETCD: [usize; 3] = [0, 1, 2];
const MANAGERS: [usize; 3] = [3, 4, 5];
const AGENTS: [usize; 3] = [6, 7, 8];

/// The cluster under test.
struct Cluster {
    lan: Lan,
    env: Env,
    store: String,
    /// By host index in [`MANAGERS`] order.
    managers: Vec<Manager>,
    agents: Vec<Agent>,
    list: String,
}

impl Cluster {
    fn manager_spec(&self, i: usize) -> ManagerSpec {
        let host = &self.lan[MANAGERS[i]];
        ManagerSpec {
            listen: host.addr(5050),
            token: Some(TOKEN.into()),
            host: Some(host.clone()),
            work_dir: Some(self.env.path(&format!("manager-{i}"))),
            agent_timeout: "3s".into(),
            extra: vec![
                "--store".into(),
                self.store.clone(),
                "--lease-ttl".into(),
                "2s".into(),
            ],
            ..ManagerSpec::default()
        }
    }

    async fn start_agent(&self, i: usize) -> Agent {
        let host = &self.lan[AGENTS[i]];
        let mut agent = self
            .env
            .start_agent_with(
                &self.list,
                &self.env.path(&format!("agent-{i}")),
                AgentSpec {
                    listen: "0.0.0.0:5051".into(),
                    token: Some(TOKEN.into()),
                    host: Some(host.clone()),
                    // The same ports when it starts again: its host is its own.
                    resources: Some(format!("{AGENT_RESOURCES};ports:[31000-31099]")),
                    ..AgentSpec::default()
                },
            )
            .await;
        agent.addr = host.addr(5051);
        agent
    }

    /// The manager that serves its API, once one does.
    async fn leader(&self) -> usize {
        wait_for("a leading manager", LONG, async || {
            for (i, m) in self.managers.iter().enumerate() {
                if m.leads().await {
                    return Some(i);
                }
            }
            None
        })
        .await
    }

    /// A new leader other than `old`.
    async fn leader_other_than(&self, old: usize) -> usize {
        wait_for("a new leader", LONG, async || {
            for (i, m) in self.managers.iter().enumerate() {
                if i != old && m.leads().await {
                    return Some(i);
                }
            }
            None
        })
        .await
    }

    /// Starts manager `i` again (it exited or was killed) as a standby.
    async fn restart_manager(&mut self, i: usize) {
        self.managers[i] = self.env.start_manager(self.manager_spec(i)).await;
    }

    /// Waits until the cluster is whole: a leader with the three agents
    /// and the service at its two healthy instances.
    async fn settle(&self) -> usize {
        let l = self.leader().await;
        self.managers[l].wait_registered_agents(3).await;
        settled(&self.managers[l], "/web", 2).await;
        l
    }
}

/// One fault and the recovery from it; returns what happened.
async fn inject(c: &mut Cluster, round: usize) -> String {
    let l = c.leader().await;
    let started = Instant::now();
    match round % 5 {
        0 => {
            c.managers[l].proc.kill9();
            let new = c.leader_other_than(l).await;
            let took = started.elapsed();
            c.restart_manager(l).await;
            format!("leader {l} killed (-9): manager {new} leads after {took:?}")
        }
        1 => {
            c.managers[l].proc.signal(libc::SIGSTOP);
            let new = c.leader_other_than(l).await;
            let took = started.elapsed();
            c.managers[l].proc.signal(libc::SIGCONT);
            let exit = c.managers[l].proc.wait_exit(LONG).await;
            assert_eq!(exit.code(), Some(1), "a deposed leader exits 1");
            c.restart_manager(l).await;
            format!(
                "leader {l} paused past its lease: manager {new} leads after {took:?}; the old one exited on resuming"
            )
        }
        2 => {
            let host = c.lan[MANAGERS[l]].clone();
            for e in ETCD {
                host.cut_from(&c.lan[e]);
            }
            let exit = c.managers[l].proc.wait_exit(LONG).await;
            let stepped_down = started.elapsed();
            assert_eq!(exit.code(), Some(1), "a leader cut off from etcd exits 1");
            let new = c.leader_other_than(l).await;
            for e in ETCD {
                host.heal_from(&c.lan[e]);
            }
            c.restart_manager(l).await;
            format!(
                "leader {l} cut off from etcd: stepped down after {stepped_down:?}, manager {new} leads"
            )
        }
        3 => {
            let a = round % AGENTS.len();
            let host = c.lan[AGENTS[a]].clone();
            for m in MANAGERS {
                host.cut_from(&c.lan[m]);
            }
            let id = agent_id_of(c, l, a).await;
            wait_until("the cut-off agent is unreachable", LONG, async || {
                c.managers[l]
                    .state()
                    .await
                    .agents
                    .iter()
                    .any(|x| x.id == id && x.state != "registered")
            })
            .await;
            let took = started.elapsed();
            for m in MANAGERS {
                host.heal_from(&c.lan[m]);
            }
            format!("agent {a} cut off from the managers: unreachable after {took:?}, healed")
        }
        _ => {
            let a = round % AGENTS.len();
            c.agents[a].proc.kill9();
            c.agents[a] = c.start_agent(a).await;
            format!("agent {a} killed (-9) and restarted")
        }
    }
}

/// The id of agent `a` as the leader `l` knows it (by its address).
async fn agent_id_of(c: &Cluster, l: usize, a: usize) -> String {
    let addr = c.lan[AGENTS[a]].addr(5051);
    c.managers[l]
        .state()
        .await
        .agents
        .into_iter()
        .find(|x| x.address == addr)
        .map(|x| x.id)
        .unwrap_or_else(|| panic!("no agent at {addr}"))
}

/// What the stream of tasks saw.
#[derive(Debug, Default)]
struct StreamReport {
    launched: usize,
    finished: usize,
    /// Launched again with the same id after the manager said it never
    /// reached an agent (dropped, gone).
    relaunched: usize,
    /// Seen running, then ended otherwise than finished.
    lost: Vec<String>,
    /// Never seen to end.
    unfinished: Vec<String>,
    /// From first launch to the end, per task.
    turnaround: Vec<Duration>,
}

/// A framework launching short tasks (`echo $STRATA_TASK_ID >> FILE;
/// sleep 1`), four at a time, until `stop`; then waits for them to end.
/// After each (re-)subscription it reconciles the tasks it has not seen
/// end, with their agents; a task the manager says never reached its
/// agent is launched again with the same id.
async fn stream(
    list: String,
    file: std::path::PathBuf,
    mut stop: watch::Receiver<bool>,
) -> StreamReport {
    let shape = Resources::new(0.05, 16.0);
    let mut cfg = framework_config(&list, "stream");
    cfg.token = Some(TOKEN.into());
    cfg.demand = vec![strata_sdk::Ask::new("batch", shape.clone(), 4)];
    let (handle, mut events) = Scheduler::subscribe(cfg)
        .await
        .expect("the stream subscribes");
    let mut report = StreamReport::default();
    // Task id -> (agent, latest state, seen running).
    let mut tasks: BTreeMap<String, (AgentId, TaskState, bool)> = BTreeMap::new();
    let mut queue: Vec<String> = Vec::new();
    // When each task was first launched.
    let mut started: HashMap<String, Instant> = HashMap::new();
    let mut next = 0usize;
    let mut stopping = false;
    let deadline_after_stop = Duration::from_secs(90);
    let mut stop_at: Option<Instant> = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    loop {
        let open = tasks.values().filter(|t| !t.1.is_terminal()).count();
        if stopping && open == 0 {
            break;
        }
        if stop_at.is_some_and(|t| t.elapsed() > deadline_after_stop) {
            break;
        }
        let event = tokio::select! {
            e = events.next() => e,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                stop_at = Some(Instant::now());
                continue;
            }
            _ = ticker.tick() => {
                // Ask after tasks whose fate is unknown for a while (an
                // accepted launch the leader died before passing on).
                let stale: Vec<_> = tasks
                    .iter()
                    .filter(|(id, t)| {
                        t.1 == TaskState::TaskStaging
                            && started.get(*id).is_some_and(|at| at.elapsed() > Duration::from_secs(5))
                    })
                    .map(|(id, t)| (strata_sdk::TaskId::new(id.clone()), Some(t.0.clone())))
                    .collect();
                if !stale.is_empty() {
                    handle.reconcile(stale).await.ok();
                }
                continue;
            }
        };
        let Some(event) = event else { break };
        match event {
            Event::Offers(offers) => {
                for offer in offers {
                    let mut launch = Vec::new();
                    let mut left = offer.resources.clone();
                    let open = tasks.values().filter(|t| !t.1.is_terminal()).count();
                    while !stopping && open + launch.len() < 4 && left.subtract(&shape) {
                        let id = queue.pop().unwrap_or_else(|| {
                            next += 1;
                            format!("s-{next}")
                        });
                        let script = format!("echo $STRATA_TASK_ID >> {}; sleep 1", file.display());
                        tasks.insert(
                            id.clone(),
                            (offer.agent_id.clone(), TaskState::TaskStaging, false),
                        );
                        started.entry(id.clone()).or_insert_with(Instant::now);
                        launch.push(
                            TaskBuilder::shell(id, script)
                                .resources(shape.clone())
                                .user("root")
                                .build(),
                        );
                    }
                    report.launched += launch.len();
                    if launch.is_empty() {
                        handle
                            .decline(vec![offer.id.clone()], Some(Duration::from_millis(500)))
                            .await
                            .ok();
                    } else {
                        let ids: Vec<String> =
                            launch.iter().map(|t| t.task_id.to_string()).collect();
                        if handle.launch(offer.id.clone(), launch).await.is_err() {
                            // Not accepted (the leader went): launched
                            // again, same ids, on a later offer.
                            for id in ids {
                                tasks.remove(&id);
                                report.launched -= 1;
                                queue.push(id);
                            }
                        }
                    }
                }
            }
            Event::Subscribed { .. } => {
                let open: Vec<_> = tasks
                    .iter()
                    .filter(|(_, t)| !t.1.is_terminal())
                    .map(|(id, t)| (strata_sdk::TaskId::new(id.clone()), Some(t.0.clone())))
                    .collect();
                if !open.is_empty() {
                    handle.reconcile(open).await.ok();
                }
            }
            Event::Update(s) => {
                let id = s.task_id.to_string();
                let Some(t) = tasks.get_mut(&id) else {
                    continue;
                };
                if t.1.is_terminal() {
                    continue;
                }
                let state = s.state;
                t.1 = state;
                let ran = t.2 || state == TaskState::TaskRunning;
                t.2 = ran;
                match state {
                    TaskState::TaskFinished => report.finished += 1,
                    TaskState::TaskDropped | TaskState::TaskGone if !ran => {
                        // It never reached an agent: the same id again.
                        tasks.remove(&id);
                        report.relaunched += 1;
                        report.launched -= 1;
                        queue.push(id.clone());
                    }
                    s if s.is_terminal() => report.lost.push(format!("{id}: {s:?}")),
                    _ => {}
                }
                if state.is_terminal() {
                    if let Some(at) = started.get(&id) {
                        report.turnaround.push(at.elapsed());
                    }
                    // Demand is what is wanted now: the free places.
                    let open = tasks.values().filter(|t| !t.1.is_terminal()).count();
                    if !stopping && open < 4 {
                        let ask = strata_sdk::Ask::new("batch", shape.clone(), (4 - open) as u32);
                        handle.declare_demand(vec![ask]).await.ok();
                    }
                }
            }
            _ => {}
        }
    }
    report.unfinished = tasks
        .iter()
        .filter(|(_, t)| !t.1.is_terminal())
        .map(|(id, t)| format!("{id}: {:?}", t.1))
        .collect();
    handle.teardown().await.ok();
    report
}

/// What the stream of `strata run --id` clients saw.
#[derive(Debug, Default)]
struct RunReport {
    /// Runs that ended (exit 0, or 3: it ended before, under a retry).
    done: usize,
    /// Client invocations, retries included.
    tries: usize,
    /// Runs given up after their tries.
    failed: Vec<String>,
}

/// `strata run --id r-N` one run after another until `stop`, as a client
/// with a retry loop would: a try that fails (a leader gone mid-run) is
/// tried again with the same id until it exits 0, or 3 (it had ended).
async fn run_stream(
    list: String,
    home: std::path::PathBuf,
    stop: watch::Receiver<bool>,
) -> RunReport {
    let mut report = RunReport::default();
    let mut n = 0;
    while !*stop.borrow() {
        n += 1;
        let id = format!("r-{n}");
        let mut ended = false;
        // A failed try is tried again at most every 300 ms.
        let mut pace = tokio::time::interval(Duration::from_millis(300));
        for _ in 0..30 {
            pace.tick().await;
            report.tries += 1;
            let out = tokio::process::Command::new(STRATA)
                .args(["run", "--manager", &list, "--token", TOKEN, "--id", &id])
                .args([
                    "--cpus", "0.05", "--mem", "16", "--wait", "20s", "--", "true",
                ])
                .env("STRATA_HOME", &home)
                .env("STRATA_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .expect("strata run starts");
            if matches!(out.status.code(), Some(0) | Some(3)) {
                ended = true;
                break;
            }
        }
        if ended {
            report.done += 1;
        } else {
            report.failed.push(id);
        }
    }
    report
}

/// TPC-H queries 1, 3, 6 and 12 again and again on executors of the
/// cluster until `stop`; each result compared with single-process
/// DataFusion's. Returns (queries that matched, failures).
async fn tpch_loop(
    list: String,
    data: std::path::PathBuf,
    stop: watch::Receiver<bool>,
) -> (usize, Vec<String>) {
    let reference = SessionContext::new();
    tpch::register_parquet(&reference, &data).await.unwrap();
    let mut source = ClusterSource::new(list, STRATA);
    source.name = "faults-tpch".into();
    source.token = Some(TOKEN.into());
    let mut config = DriverConfig::new(ExecutorSource::Cluster(Box::new(source)));
    config.executors.min = 2;
    config.executors.max = 2;
    config.executors.cpus = 0.5;
    config.executors.mem_mib = 512.0;
    let driver = Arc::new(Driver::start(config).await.expect("the driver starts"));
    let session = Session::new(driver.clone(), 4).unwrap();
    tpch::register_parquet(session.context(), &data)
        .await
        .unwrap();
    let (mut matched, mut failures) = (0, Vec::new());
    'outer: loop {
        for q in [1, 3, 6, 12] {
            if *stop.borrow() {
                break 'outer;
            }
            let sql = tpch::statements(q).remove(0);
            let expected = reference.sql(&sql).await.unwrap().collect().await.unwrap();
            let got = async {
                let df = session
                    .context()
                    .sql(&sql)
                    .await
                    .map_err(|e| e.to_string())?;
                let job = session
                    .submit_dataframe(df)
                    .await
                    .map_err(|e| e.to_string())?;
                let out = tokio::time::timeout(Duration::from_secs(120), job.result())
                    .await
                    .map_err(|_| "no result within 120 s".to_owned())?
                    .map_err(|e| e.to_string())?;
                strata_framework::compare::same_rows(&expected, &out.batches)
                    .map_err(|e| e.to_string())
            }
            .await;
            match got {
                Ok(()) => matched += 1,
                Err(e) => failures.push(format!("q{q}: {e}")),
            }
        }
    }
    driver.shutdown().await;
    (matched, failures)
}

/// Samples the service's healthy count on whichever manager leads, every
/// 200 ms, until `stop`: (samples, the lowest count seen, when it was
/// below the instance count and what it was).
async fn watch_service(
    list: String,
    stop: watch::Receiver<bool>,
) -> (usize, u64, Vec<(Duration, u64)>) {
    let managers: Vec<String> = list.split(',').map(str::to_owned).collect();
    let (mut samples, mut lowest, mut low) = (0, u64::MAX, Vec::new());
    let t0 = Instant::now();
    // A sample every 200 ms.
    let mut every = tokio::time::interval(Duration::from_millis(200));
    while !*stop.borrow() {
        every.tick().await;
        for m in &managers {
            let got = strata_sdk::http::request(
                "GET",
                m,
                "/v2/apps/web",
                Some(TOKEN),
                None,
                Duration::from_secs(1),
            )
            .await;
            if let Ok((200, _, body)) = got {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(h) = v["app"]["tasksHealthy"].as_u64() {
                    samples += 1;
                    lowest = lowest.min(h);
                    if h < 2 {
                        low.push((t0.elapsed(), h));
                    }
                }
                break;
            }
        }
    }
    (samples, lowest, low)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the fault suite's long loop (minutes)"]
async fn twenty_faults_under_load_lose_nothing_and_run_nothing_twice() {
    let Some(lan) = Lan::new("faults", 9) else {
        return;
    };
    let env = Env::new("faults");
    let Some(etcd) = start_etcd_cluster(&env, "faults", &[&lan[0], &lan[1], &lan[2]]).await else {
        return;
    };
    let endpoints: Vec<String> = etcd.iter().map(|m| m.addr.clone()).collect();
    let list = MANAGERS
        .iter()
        .map(|&m| lan[m].addr(5050))
        .collect::<Vec<_>>()
        .join(",");
    let mut c = Cluster {
        store: format!("etcd://{}/faults", endpoints.join(",")),
        lan,
        env,
        managers: Vec::new(),
        agents: Vec::new(),
        list,
    };
    for i in 0..MANAGERS.len() {
        let m = c.env.start_manager(c.manager_spec(i)).await;
        c.managers.push(m);
    }
    for i in 0..AGENTS.len() {
        let a = c.start_agent(i).await;
        c.agents.push(a);
    }
    let l = c.leader().await;
    c.managers[l].wait_registered_agents(3).await;
    let web = serde_json::json!({
        "id": "/web",
        "cmd": format!("exec {STRATA} web --port $PORT0 --bind 0.0.0.0"),
        "instances": 2, "cpus": 0.25, "mem": 64,
        "constraints": [["hostname", "UNIQUE"]],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 30,
            "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 3}],
        "upgradeStrategy": {"minimumHealthCapacity": 0.5},
        "backoffSeconds": 0.2
    });
    let (code, _, v) = request(&c.managers[l], "POST", "/v2/apps", Some(web)).await;
    assert_eq!(code, 201, "{v}");
    settled(&c.managers[l], "/web", 2).await;

    let data = c.env.path("tpch");
    tpch::generate_parquet(0.02, &data).unwrap();
    let launches = c.env.path("launches");
    std::fs::write(&launches, "").unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stream = tokio::spawn(stream(c.list.clone(), launches.clone(), stop_rx.clone()));
    let queries = tokio::spawn(tpch_loop(c.list.clone(), data, stop_rx.clone()));
    let runs = tokio::spawn(run_stream(
        c.list.clone(),
        c.env.home().to_owned(),
        stop_rx.clone(),
    ));
    let health = tokio::spawn(watch_service(c.list.clone(), stop_rx));

    let started = Instant::now();
    for round in 0..ROUNDS {
        let what = inject(&mut c, round).await;
        let l = c.settle().await;
        eprintln!(
            "round {round}: {what}; whole again (manager {l} leads) at {:?}",
            started.elapsed()
        );
    }
    stop_tx.send(true).unwrap();
    let report = stream.await.unwrap();
    let run_report = runs.await.unwrap();
    let (matched, failures) = queries.await.unwrap();
    let (samples, lowest, low) = health.await.unwrap();

    // Each task appended its id once when it started.
    let text = std::fs::read_to_string(&launches).unwrap();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for id in text.lines() {
        *runs.entry(id).or_default() += 1;
    }
    let twice: BTreeSet<&str> = runs
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    // Each `strata run --id` task was launched once, by every agent's log
    // (every incarnation's).
    let logs = c.env.dump_logs();
    let mut run_launches: HashMap<String, usize> = HashMap::new();
    for line in logs.lines().filter(|l| l.contains("task launched")) {
        if let Some(id) = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("task_id=r-"))
        {
            *run_launches.entry(format!("r-{id}")).or_default() += 1;
        }
    }
    let runs_twice: Vec<&String> = run_launches
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    // Quiet: the leader and the agents hold the same tasks.
    let l = c.settle().await;
    let quiet = wait_explained("the leader and the agents to agree", LONG, async || {
        let tasks = c.managers[l].state().await.tasks;
        let held: BTreeSet<String> = tasks
            .iter()
            .filter(|t| t.state == "TASK_RUNNING")
            .map(|t| t.id.clone())
            .collect();
        let mut on_agents = BTreeSet::new();
        for a in &c.agents {
            for t in a.tasks().await {
                if t["state"] == "TASK_RUNNING" {
                    on_agents.insert(t["task_id"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        if held == on_agents {
            return Ok(held);
        }
        let all: Vec<String> = tasks
            .iter()
            .map(|t| format!("{} {} {} {}", t.id, t.state, t.reason, t.agent_id))
            .collect();
        Err(format!(
            "leader {held:?}, agents {on_agents:?}; the leader's tasks: {all:?}"
        ))
    })
    .await;
    let web_tasks = app(&c.managers[l], "/web").await["tasks"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    eprintln!(
        "{ROUNDS} faults in {:?}: stream launched {} tasks ({} finished, {} launched again after never reaching an agent, {} lost, {} unfinished, {} ran twice); \
         {matched} TPC-H results equal to DataFusion's, {} failed; service healthy count never below {lowest} ({samples} samples); \
         quiet: leader and agents agree on {} running tasks, /web at {web_tasks}",
        started.elapsed(),
        report.launched,
        report.finished,
        report.relaunched,
        report.lost.len(),
        report.unfinished.len(),
        twice.len(),
        failures.len(),
        quiet.len(),
    );
    let mut turnaround = report.turnaround.clone();
    turnaround.sort();
    let q = |p: f64| {
        turnaround
            .get(((turnaround.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    eprintln!(
        "stream task launch-to-end (each sleeps 1 s): p50 {:?}, p99 {:?}, max {:?}; service below 2 healthy at {low:?}",
        q(0.5),
        q(0.99),
        turnaround.last().copied().unwrap_or_default()
    );
    eprintln!(
        "strata run --id stream: {} runs ended after {} client tries, {} given up, {} launched twice",
        run_report.done,
        run_report.tries,
        run_report.failed.len(),
        runs_twice.len()
    );
    assert!(
        runs_twice.is_empty(),
        "strata run tasks launched twice: {runs_twice:?}"
    );
    assert!(run_report.failed.is_empty(), "{run_report:?}");
    assert!(run_report.done > 0, "{run_report:?}");
    assert!(
        report.lost.is_empty(),
        "tasks lost after running: {:?}",
        report.lost
    );
    assert!(
        report.unfinished.is_empty(),
        "tasks never ended: {:?}",
        report.unfinished
    );
    assert!(twice.is_empty(), "tasks that ran twice: {twice:?}");
    assert_eq!(report.finished, report.launched, "{report:?}");
    assert!(failures.is_empty(), "TPC-H failures: {failures:?}");
    assert!(matched > 0, "no TPC-H query completed");
    assert!(lowest >= 1, "the service lost every healthy instance");
    assert_eq!(web_tasks, 2);
}
