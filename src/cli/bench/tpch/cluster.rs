//! The Strata side of the bench: the cluster's daemons as child processes
//! ([`Daemon`]), the driver in this process, and [`ClusterRun`], which runs
//! queries on them under the memory, disk and time guards.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use datafusion::arrow::record_batch::RecordBatch;
use strata_framework::driver::Driver;
use strata_framework::driver::dag::StageMetrics;
use strata_framework::session::{Prepared, Session};
use strata_framework::tpch;

use crate::cli::batch::ExecutorOpts;

use super::super::procfs::reset_peak_rss;
use super::sampler::{ProcPeak, Sampler, read_peak};
use super::{ClusterQuery, DAEMON_WAIT, QueryRun, TpchArgs};

/// A daemon child (`strata manager` or `strata agent`), its output in a
/// log file. Dropping it kills it.
struct Daemon {
    role: String,
    child: std::process::Child,
    log: PathBuf,
    stopped: bool,
}

impl Daemon {
    /// Starts `strata args…` with its output in `log`, and waits for the
    /// line that starts with `ready` (the rest of whose first word is
    /// returned: the address).
    async fn start(
        role: &str,
        exe: &Path,
        args: &[String],
        home: &Path,
        log: PathBuf,
        ready: &str,
    ) -> anyhow::Result<(Daemon, String)> {
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(args);
        die_with_parent(&mut cmd);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("STRATA_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .env("STRATA_HOME", home)
            .env("STRATA_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {} {}", exe.display(), args.join(" ")))?;
        let mut d = Daemon {
            role: role.to_owned(),
            child,
            log,
            stopped: false,
        };
        let deadline = Instant::now() + DAEMON_WAIT;
        loop {
            let text = std::fs::read_to_string(&d.log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split(ready).nth(1))
                .and_then(|r| r.split_whitespace().next())
            {
                return Ok((d, addr.to_owned()));
            }
            if let Some(status) = d.child.try_wait()? {
                d.stopped = true;
                bail!(
                    "{role} exited ({status}) before it was ready; its log ({}):\n{}",
                    d.log.display(),
                    tail(&text)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{role} did not print {ready:?} within {DAEMON_WAIT:?}; its log ({}):\n{}",
                    d.log.display(),
                    tail(&text)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL if it has not exited within [`DAEMON_WAIT`].
    async fn stop(&mut self) {
        if self.stopped {
            return;
        }
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + DAEMON_WAIT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                self.stopped = true;
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("warning: {} did not stop on SIGTERM; killing it", self.role);
        self.child.kill().ok();
        self.child.wait().ok();
        self.stopped = true;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.stopped {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// Has the child get SIGTERM when this process dies, so that no daemon
/// outlives a bench that was killed. (The signal follows the spawning
/// thread: children are spawned from the runtime's worker threads, which
/// live as long as the process.)
pub(super) fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a process this bench started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The cluster of one bench run.
pub(super) struct ClusterRun {
    manager: Daemon,
    agents: Vec<Daemon>,
    address: String,
    opts: ExecutorOpts,
    settings: Vec<(String, String)>,
    driver: Arc<Driver>,
    session: Session,
    sampler: Sampler,
}

/// Why a query on the cluster was stopped by the bench.
struct Stopped(String);

impl ClusterRun {
    pub(super) async fn start(
        a: &TpchArgs,
        exe: &Path,
        work: &Path,
        data: &Path,
    ) -> anyhow::Result<ClusterRun> {
        // The driver's peak should cover the cluster run only.
        reset_peak_rss();
        let t = Instant::now();
        let s = |x: &str| x.to_owned();
        let (manager, address) = Daemon::start(
            "manager",
            exe,
            &[
                s("manager"),
                s("--listen"),
                s("127.0.0.1:0"),
                s("--work-dir"),
                work.join("manager").display().to_string(),
                s("--allocation-interval"),
                s("100ms"),
            ],
            work,
            work.join("manager.log"),
            "strata manager listening on ",
        )
        .await?;
        let agent_mem = a.executor_mem.ceil() + 512.0;
        let mut agents = Vec::new();
        for i in 0..2 {
            let (agent, _) = Daemon::start(
                &format!("agent-{i}"),
                exe,
                &[
                    s("agent"),
                    s("--manager"),
                    address.clone(),
                    s("--listen"),
                    s("127.0.0.1:0"),
                    s("--work-dir"),
                    work.join(format!("agent-{i}")).display().to_string(),
                    s("--resources"),
                    format!(
                        "cpus:1;mem:{agent_mem};disk:100000;ports:[{}-{}]",
                        31000 + 100 * i,
                        31099 + 100 * i
                    ),
                ],
                work,
                work.join(format!("agent-{i}.log")),
                "strata agent serving on ",
            )
            .await?;
            agents.push(agent);
        }
        wait_registered(&address, 2).await?;
        eprintln!(
            "cluster up in {:.0} ms: manager {address} (pid {}), agents pids {}, {}",
            t.elapsed().as_secs_f64() * 1000.0,
            manager.pid(),
            agents[0].pid(),
            agents[1].pid()
        );
        let opts = ExecutorOpts {
            executors: 2,
            executor_cpus: 1.0,
            executor_mem: a.executor_mem,
            partitions: Some(a.partitions),
            role: "*".into(),
            class: "batch".into(),
            revocable: false,
            executor_wait: Duration::from_secs(60),
        };
        let (driver, session) = start_driver(&opts, &a.settings, &address, work).await?;
        tpch::register_parquet(session.context(), data).await?;
        let daemons: Vec<u32> = std::iter::once(manager.pid())
            .chain(agents.iter().map(Daemon::pid))
            .collect();
        let limit_mib = a.executor_rss_limit.unwrap_or(a.executor_mem * 1.5);
        Ok(ClusterRun {
            manager,
            agents,
            address,
            opts,
            settings: a.settings.clone(),
            driver,
            session,
            sampler: Sampler {
                seen: BTreeMap::new(),
                executors_seen: 0,
                rss_limit: (limit_mib * 1024.0 * 1024.0) as u64,
                daemons,
                work: work.to_path_buf(),
                total_peak: 0,
            },
        })
    }

    /// Runs query `n` (a warm-up run, then the timed runs); returns its
    /// figures.
    pub(super) async fn run_query(
        &mut self,
        a: &TpchArgs,
        n: usize,
        data: &Path,
    ) -> anyhow::Result<ClusterQuery> {
        let mut q = ClusterQuery {
            run: QueryRun {
                query: n,
                ..QueryRun::default()
            },
            batches: Vec::new(),
            stages: Vec::new(),
            job_ms: 0.0,
        };
        for i in 0..=a.runs {
            let label = if i == 0 {
                "warm-up".to_owned()
            } else {
                format!("run {i}/{}", a.runs)
            };
            eprint!("strata     q{n:<2} {label} …");
            let t = Instant::now();
            match self.guarded_query(n, a.query_timeout).await {
                Ok(Ok((batches, stages, job))) => {
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    eprintln!(" {ms:.0} ms");
                    if i == 0 {
                        q.run.warmup_ms = ms;
                    } else {
                        q.run.runs_ms.push(ms);
                        if q.run.runs_ms.len() == 1 || ms < q.run.best_ms {
                            q.run.best_ms = ms;
                            q.stages = stages;
                            q.job_ms = job.as_secs_f64() * 1000.0;
                        }
                    }
                    q.run.rows = batches.iter().map(RecordBatch::num_rows).sum();
                    q.batches = batches;
                }
                Ok(Err(e)) => {
                    eprintln!(" failed");
                    q.run.error = Some(format!("{e:#}"));
                    break;
                }
                Err(Stopped(why)) => {
                    eprintln!(" stopped: {why}");
                    q.run.error = Some(format!("stopped by the bench: {why}"));
                    eprintln!("restarting the driver and its executors");
                    self.restart(data).await?;
                    break;
                }
            }
        }
        self.sample().await;
        Ok(q)
    }

    /// Runs query `n`, watching the executors' memory and the time.
    async fn guarded_query(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> Result<anyhow::Result<(Vec<RecordBatch>, Vec<StageMetrics>, Duration)>, Stopped> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let query = query(&self.session, n);
        tokio::pin!(query);
        loop {
            tokio::select! {
                r = &mut query => return Ok(r),
                _ = tick.tick() => {
                    if let Some(why) = self.sampler.sample(&self.driver, true).await {
                        return Err(Stopped(why));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Stopped(format!("still running after {timeout:?} (--query-timeout)")));
                }
            }
        }
    }

    /// Reads the cluster's figures now.
    async fn sample(&mut self) {
        self.sampler.sample(&self.driver, false).await;
    }

    /// Replaces the driver (and so its executors) after a stopped query.
    async fn restart(&mut self, data: &Path) -> anyhow::Result<()> {
        self.sample().await;
        self.driver.shutdown().await;
        let work = self.agents[0]
            .log
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let (driver, session) =
            start_driver(&self.opts, &self.settings, &self.address, &work).await?;
        tpch::register_parquet(session.context(), data).await?;
        self.driver = driver;
        self.session = session;
        self.sample().await;
        Ok(())
    }

    /// Every cluster process's peak memory, now (executors that have
    /// exited with the figures last read), and the sampled peak of their
    /// summed resident memory.
    pub(super) async fn peaks(&mut self) -> (Vec<ProcPeak>, u64) {
        self.sample().await;
        let mut out = vec![read_peak("manager".into(), self.manager.pid())];
        for a in &self.agents {
            out.push(read_peak(a.role.clone(), a.pid()));
        }
        let mut seen: Vec<&ProcPeak> = self.sampler.seen.values().collect();
        seen.sort_by_key(|p| {
            let (kind, n) = p.role.rsplit_once('-').unwrap_or((&p.role, ""));
            (p.exited, kind.to_owned(), n.parse::<usize>().unwrap_or(0))
        });
        out.extend(seen.into_iter().cloned());
        out.push(read_peak(
            "driver (this process)".into(),
            std::process::id(),
        ));
        (out, self.sampler.total_peak)
    }

    pub(super) async fn stop(mut self) {
        self.driver.shutdown().await;
        for a in &mut self.agents {
            a.stop().await;
        }
        self.manager.stop().await;
    }
}

/// Starts a driver, waits for its executors, and opens a session with
/// `settings`.
async fn start_driver(
    opts: &ExecutorOpts,
    settings: &[(String, String)],
    address: &str,
    work: &Path,
) -> anyhow::Result<(Arc<Driver>, Session)> {
    let t = Instant::now();
    let driver = crate::cli::batch::start_driver(opts, address, None, "strata-bench-tpch")
        .await
        .with_context(|| format!("starting executors (logs under {})", work.display()))?;
    crate::cli::batch::announce_executors(&driver, t).await;
    let session = Session::new(driver.clone(), opts.partitions()).and_then(|s| {
        for (k, v) in settings {
            s.set(k, v)?;
        }
        Ok(s)
    });
    match session {
        Ok(s) => Ok((driver, s)),
        Err(e) => {
            driver.shutdown().await;
            Err(e.into())
        }
    }
}

/// Runs every statement of query `n` on the cluster; returns the rows,
/// stages and job time of its query statement.
async fn query(
    session: &Session,
    n: usize,
) -> anyhow::Result<(Vec<RecordBatch>, Vec<StageMetrics>, Duration)> {
    let mut result = (Vec::new(), Vec::new(), Duration::ZERO);
    for sql in tpch::statements(n) {
        for statement in session.parse(&sql)? {
            match session.prepare(statement).await? {
                Prepared::Done => {}
                Prepared::Rows(_, b) => result = (b, Vec::new(), Duration::ZERO),
                Prepared::Job(job) => {
                    let o = job.result().await?;
                    result = (o.batches, o.stages, o.elapsed);
                }
            }
        }
    }
    Ok(result)
}

/// Waits until `n` agents have registered with the manager at `address`.
async fn wait_registered(address: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + DAEMON_WAIT;
    loop {
        let registered = match strata_sdk::http::get(address, "/api/v1/agents", None, DAEMON_WAIT)
            .await
        {
            Ok(body) => serde_json::from_slice::<Vec<serde_json::Value>>(&body)
                .map(|v| {
                    v.iter()
                        .filter(|a| a.get("state").and_then(|s| s.as_str()) == Some("registered"))
                        .count()
                })
                .unwrap_or(0),
            Err(_) => 0,
        };
        if registered >= n {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{registered} of {n} agents registered with the manager within {DAEMON_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
