//! `strata manager`, `strata agent` and `strata local`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use strata_agent::{self as agent, AgentConfig};
use strata_manager::master::MasterConfig;
use strata_manager::server::{self, ManagerConfig};
use strata_proto::class::{PriorityClass, PriorityClasses};
use strata_proto::resources::{Resources, parse_attributes};
use strata_proto::units::format_duration;

use super::{parse_duration, read_config};
use crate::discovery::{self, Discovery};
use crate::local::{LocalCluster, LocalOptions};

/// Arguments of `strata manager`.
#[derive(clap::Args, Debug)]
pub struct ManagerArgs {
    #[arg(long, env = "STRATA_LISTEN", help = with_default(
        "Address to serve gRPC and HTTP on",
        ManagerConfig::new(PathBuf::new()).listen,
    ))]
    listen: Option<SocketAddr>,
    /// Directory for the registry [default: $STRATA_HOME/manager].
    #[arg(long, env = "STRATA_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Shared secret required of agents, frameworks and clients (required for a non-loopback address).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// TOML file with any of: listen, work_dir, token, agent_timeout, offer_timeout, failover_timeout, allocation_interval, classes, preemption_grace, revocable_window, services (true or false), store, advertise, lease_ttl, dns_listen, dns_domain, dns_ttl, job_history, acls, audit_log.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_parser = parse_duration, help = with_default_of(
        "An agent silent this long is unreachable",
        MasterConfig::default().agent_timeout,
    ))]
    agent_timeout: Option<Duration>,
    #[arg(long, value_parser = parse_duration, help = with_default_of(
        "Outstanding offers are rescinded after this long",
        MasterConfig::default().offer_timeout,
    ))]
    offer_timeout: Option<Duration>,
    #[arg(long, value_parser = parse_duration, help = with_default_of(
        "Failover timeout of frameworks that set none",
        MasterConfig::default().default_failover_timeout,
    ))]
    failover_timeout: Option<Duration>,
    #[arg(long, value_parser = parse_duration, help = with_default_of(
        "Allocation runs at least this often",
        MasterConfig::default().allocation_interval,
    ))]
    allocation_interval: Option<Duration>,
    /// Priority classes, e.g. `system=1000,service=100,batch=10,best-effort=0`.
    #[arg(long)]
    classes: Option<String>,
    #[arg(long, value_parser = parse_duration, help = with_default_of(
        "Time a preempted task gets between SIGTERM and SIGKILL",
        MasterConfig::default().preemption_grace,
    ))]
    preemption_grace: Option<Duration>,
    #[arg(long, value_parser = parse_duration, help = with_default_of(
        "Idle cpus of running tasks are lent as revocable by their peak use over this window; `0s` lends none",
        MasterConfig::default().revocable.window,
    ))]
    revocable_window: Option<Duration>,
    /// Do not run the built-in services scheduler (Marathon's `/v2` API).
    #[arg(long)]
    no_services: bool,
    /// Where the registry is kept: `local` (redb under the work directory,
    /// one manager) or `etcd://H1:2379,H2:2379[/prefix]` (several managers,
    /// one leads; the others send clients to it) [default: local].
    #[arg(long, env = "STRATA_STORE")]
    store: Option<String>,
    /// The `host:port` clients are sent to when this manager leads
    /// [default: the bound address].
    #[arg(long, env = "STRATA_ADVERTISE")]
    advertise: Option<String>,
    /// With a shared store, the leader's lease: how long a dead leader keeps
    /// the leadership [default: 5s].
    #[arg(long, value_parser = parse_duration)]
    lease_ttl: Option<Duration>,
    /// Answer DNS for the apps on this address, UDP and TCP (e.g.
    /// `0.0.0.0:53`): `APP.marathon.DOMAIN` (A), `_APP._tcp.marathon.DOMAIN`
    /// (SRV), `leader.DOMAIN` [default: no DNS].
    #[arg(long, env = "STRATA_DNS_LISTEN")]
    dns_listen: Option<SocketAddr>,
    /// The domain the DNS answers for [default: strata].
    #[arg(long)]
    dns_domain: Option<String>,
    /// Seconds DNS answers may be cached [default: 5].
    #[arg(long)]
    dns_ttl: Option<u32>,
    #[arg(long, help = with_default(
        "Finished batch jobs the job history keeps for the web UI and `/api/v1/jobs`",
        strata_manager::jobs::DEFAULT_KEPT,
    ))]
    job_history: Option<usize>,
    /// ACLs (a JSON file, Mesos-style): who may register frameworks in
    /// which roles, run tasks as which users, change roles, drain agents,
    /// see which pages of the UI. With them, what they do not permit is
    /// denied (the cluster's token excepted) [default: no ACLs].
    #[arg(long)]
    acls: Option<PathBuf>,
    /// The audit log: every decision that changes the cluster, as JSON
    /// lines [default: audit.jsonl in the work directory].
    #[arg(long)]
    audit_log: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ManagerFile {
    listen: Option<SocketAddr>,
    work_dir: Option<PathBuf>,
    token: Option<String>,
    agent_timeout: Option<String>,
    offer_timeout: Option<String>,
    failover_timeout: Option<String>,
    allocation_interval: Option<String>,
    classes: Option<String>,
    preemption_grace: Option<String>,
    revocable_window: Option<String>,
    services: Option<bool>,
    store: Option<String>,
    advertise: Option<String>,
    lease_ttl: Option<String>,
    dns_listen: Option<SocketAddr>,
    dns_domain: Option<String>,
    dns_ttl: Option<u32>,
    job_history: Option<usize>,
    acls: Option<PathBuf>,
    audit_log: Option<PathBuf>,
}

/// A flag's help ending in its default, taken from the library that
/// applies it (one source of defaults: the help cannot drift from it).
fn with_default(text: &str, default: impl std::fmt::Display) -> String {
    format!("{text} [default: {default}]")
}

/// [`with_default`] for a default in milliseconds, shown as a duration.
fn with_default_of(text: &str, default: Duration) -> String {
    with_default(text, format_duration(default))
}

fn parse_classes(text: &str) -> anyhow::Result<PriorityClasses> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .with_context(|| format!("class {part:?}: expected name=value"))?;
        let value: i32 = value
            .trim()
            .parse()
            .with_context(|| format!("class {part:?}: value must be an integer"))?;
        out.push(PriorityClass {
            name: name.trim().to_owned(),
            value,
        });
    }
    if out.is_empty() {
        bail!("no priority classes given");
    }
    Ok(PriorityClasses::new(out))
}

fn file_duration(v: Option<String>, what: &str) -> anyhow::Result<Option<Duration>> {
    v.map(|s| parse_duration(&s).map_err(|e| anyhow::anyhow!("{what}: {e}")))
        .transpose()
}

/// Builds the manager's configuration from flags, environment and file.
fn manager_config(a: ManagerArgs) -> anyhow::Result<ManagerConfig> {
    let f: ManagerFile = read_config(a.config.as_ref())?;
    let work_dir = a
        .work_dir
        .or(f.work_dir)
        .unwrap_or_else(|| discovery::strata_home().join("manager"));
    let mut cfg = ManagerConfig::new(work_dir);
    if let Some(l) = a.listen.or(f.listen) {
        cfg.listen = l;
    }
    cfg.token = a.token.or(f.token);
    let m = &mut cfg.master;
    if let Some(d) = a
        .agent_timeout
        .or(file_duration(f.agent_timeout, "agent_timeout")?)
    {
        m.agent_timeout = d;
    }
    if let Some(d) = a
        .offer_timeout
        .or(file_duration(f.offer_timeout, "offer_timeout")?)
    {
        m.offer_timeout = d;
    }
    if let Some(d) = a
        .failover_timeout
        .or(file_duration(f.failover_timeout, "failover_timeout")?)
    {
        m.default_failover_timeout = d.max(Duration::from_millis(1));
    }
    if let Some(d) = a
        .allocation_interval
        .or(file_duration(f.allocation_interval, "allocation_interval")?)
    {
        m.allocation_interval = d.max(Duration::from_millis(10));
    }
    if let Some(c) = a.classes.or(f.classes) {
        m.classes = parse_classes(&c)?;
    }
    if let Some(d) = a
        .preemption_grace
        .or(file_duration(f.preemption_grace, "preemption_grace")?)
    {
        m.preemption_grace = d;
    }
    if let Some(d) = a
        .revocable_window
        .or(file_duration(f.revocable_window, "revocable_window")?)
    {
        m.revocable.window = d;
        m.revocable.enabled = !d.is_zero();
    }
    cfg.services = !a.no_services && f.services.unwrap_or(true);
    if let Some(store) = a.store.or(f.store) {
        cfg.store = store.parse()?;
    }
    cfg.advertise = a.advertise.or(f.advertise);
    if let Some(d) = a.lease_ttl.or(file_duration(f.lease_ttl, "lease_ttl")?) {
        cfg.lease_ttl = d.max(Duration::from_secs(1));
    }
    if let Some(listen) = a.dns_listen.or(f.dns_listen) {
        let mut dns = strata_manager::services::dns::DnsConfig::new(listen);
        if let Some(d) = a.dns_domain.or(f.dns_domain) {
            dns.domain = d;
        }
        if let Some(t) = a.dns_ttl.or(f.dns_ttl) {
            dns.ttl = t;
        }
        cfg.dns = Some(dns);
    }
    if let Some(n) = a.job_history.or(f.job_history) {
        cfg.job_history = n;
    }
    if let Some(path) = a.acls.or(f.acls) {
        let bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read the ACLs {}", path.display()))?;
        let acls = strata_manager::auth::acl::Acls::parse(&bytes)
            .with_context(|| format!("the ACLs {} are not valid", path.display()))?;
        cfg.acls = Some(acls);
    }
    cfg.audit_log = a.audit_log.or(f.audit_log);
    Ok(cfg)
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    ctrl_c.await.ok();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// `strata manager`.
pub async fn manager(a: ManagerArgs) -> anyhow::Result<ExitCode> {
    let cfg = manager_config(a)?;
    let handle = server::spawn(cfg).await?;
    eprintln!(
        "strata manager listening on {} (grpc and http)",
        handle.address()
    );
    tokio::select! {
        _ = wait_for_signal() => {
            eprintln!("stopping");
            handle.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        _ = handle.deposed() => {
            eprintln!("error: this manager lost its leadership and stopped acting; restart it to stand by");
            handle.shutdown().await;
            Ok(ExitCode::from(1))
        }
    }
}

/// Arguments of `strata agent`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    #[arg(long, env = "STRATA_MANAGER", help = with_default(
        "Manager address (host:port), or every manager (H1:PORT,H2:PORT,…): the agent finds the leader",
        crate::discovery::DEFAULT_MANAGER,
    ))]
    manager: Option<String>,
    #[arg(long, env = "STRATA_AGENT_LISTEN", help = with_default(
        "Address of the agent's HTTP API (sandbox files, health)",
        agent::DEFAULT_LISTEN,
    ))]
    listen: Option<SocketAddr>,
    /// Address advertised to the manager [default: the bound address].
    #[arg(long)]
    advertise: Option<String>,
    /// Directory for checkpoints and sandboxes [default: $STRATA_HOME/agent].
    #[arg(long, env = "STRATA_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Resources to advertise, e.g. `cpus:4;mem:8192;disk:10000;ports:[31000-32000]` [default: detected].
    #[arg(long, env = "STRATA_RESOURCES")]
    resources: Option<String>,
    /// Attributes, e.g. `rack:r1;zone:a`.
    #[arg(long, env = "STRATA_ATTRIBUTES")]
    attributes: Option<String>,
    /// The host name the agent registers with (what `hostname` constraints
    /// match) [default: the machine's].
    #[arg(long)]
    hostname: Option<String>,
    /// Shared secret token.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// User that tasks run as when the agent runs as root [default: nobody].
    #[arg(long)]
    task_user: Option<String>,
    #[arg(long, value_parser = parse_duration, help = with_default(
        "Remove sandboxes of finished tasks after this long",
        format_duration(agent::DEFAULT_SANDBOX_RETENTION),
    ))]
    sandbox_retention: Option<Duration>,
    /// Do not forward the apps' service ports (by default every agent
    /// listens on them and forwards to healthy instances, as marathon-lb).
    #[arg(long)]
    no_service_ports: bool,
    /// TOML file with any of: manager, listen, advertise, work_dir, resources, attributes, hostname, token, task_user, sandbox_retention, service_ports (true or false).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    manager: Option<String>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    work_dir: Option<PathBuf>,
    resources: Option<String>,
    attributes: Option<String>,
    hostname: Option<String>,
    token: Option<String>,
    task_user: Option<String>,
    sandbox_retention: Option<String>,
    service_ports: Option<bool>,
}

/// `strata agent`.
pub async fn agent(a: AgentArgs) -> anyhow::Result<ExitCode> {
    let f: AgentFile = read_config(a.config.as_ref())?;
    let manager = a
        .manager
        .or(f.manager)
        .unwrap_or_else(|| discovery::DEFAULT_MANAGER.to_owned());
    let work_dir = a
        .work_dir
        .or(f.work_dir)
        .unwrap_or_else(|| discovery::strata_home().join("agent"));
    let mut cfg = AgentConfig::new(manager, work_dir.clone());
    if let Some(l) = a.listen.or(f.listen) {
        cfg.listen = l;
    }
    cfg.advertise = a.advertise.or(f.advertise);
    if let Some(r) = a.resources.or(f.resources) {
        // Given resources override the detected ones dimension by dimension.
        let given = Resources::parse(&r)?;
        let detected = cfg.resources.clone();
        let lower = r.to_ascii_lowercase();
        cfg.resources = Resources {
            cpus: if lower.contains("cpus") {
                given.cpus
            } else {
                detected.cpus
            },
            mem: if lower.contains("mem") {
                given.mem
            } else {
                detected.mem
            },
            disk: if lower.contains("disk") {
                given.disk
            } else {
                detected.disk
            },
            ports: if lower.contains("ports") {
                given.ports
            } else {
                detected.ports
            },
        };
    }
    if let Some(at) = a.attributes.or(f.attributes) {
        cfg.attributes = parse_attributes(&at)?;
    }
    if let Some(h) = a.hostname.or(f.hostname) {
        if h.trim().is_empty() {
            anyhow::bail!("--hostname must not be empty");
        }
        cfg.hostname = h;
    }
    cfg.token = a.token.or(f.token);
    cfg.service_ports = !a.no_service_ports && f.service_ports.unwrap_or(true);
    if let Some(u) = a.task_user.or(f.task_user) {
        cfg.task_user = Some(u);
    }
    if let Some(d) = a
        .sandbox_retention
        .or(file_duration(f.sandbox_retention, "sandbox_retention")?)
    {
        cfg.sandbox_retention = d;
    }
    let handle = agent::spawn(cfg).await?;
    eprintln!(
        "strata agent serving on {} (work dir {}); registering with the manager",
        handle.address(),
        work_dir.display()
    );
    wait_for_signal().await;
    eprintln!("stopping (tasks keep running under their supervisors)");
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `strata local`.
#[derive(clap::Args, Debug)]
pub struct LocalArgs {
    /// Number of agents.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Manager address.
    #[arg(long, default_value = crate::discovery::DEFAULT_MANAGER)]
    listen: SocketAddr,
    /// Directory for the cluster's state [default: $STRATA_HOME/local].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Shared secret token.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Resources of the machine to split among the agents [default: detected].
    #[arg(long)]
    resources: Option<String>,
    #[arg(long, value_parser = parse_duration, help = with_default_of(
        "Time a preempted task gets between SIGTERM and SIGKILL",
        MasterConfig::default().preemption_grace,
    ))]
    preemption_grace: Option<Duration>,
    /// Also start a SQL gateway on the cluster (PostgreSQL wire protocol).
    #[arg(long)]
    gateway: bool,
    #[command(flatten)]
    serve: super::gateway::ServeOpts,
    #[command(flatten)]
    executors: super::batch::ExecutorOpts,
}

/// `strata local`.
pub async fn local(a: LocalArgs) -> anyhow::Result<ExitCode> {
    let work_dir = a
        .work_dir
        .unwrap_or_else(|| discovery::strata_home().join("local"));
    let mut opts = LocalOptions::new(a.agents, work_dir.clone());
    opts.listen = a.listen;
    opts.token = a.token.clone();
    let opts_token = a.token.clone();
    if let Some(r) = &a.resources {
        opts.machine = Some(Resources::parse(r)?);
    }
    opts.preemption_grace = a.preemption_grace;
    let cluster = LocalCluster::start(opts).await?;
    let address = cluster.address().to_string();
    let mut found = Discovery {
        address: address.clone(),
        token: a.token,
        pid: std::process::id(),
        gateway: None,
    };
    let path = discovery::write(&found).context("cannot write the discovery file")?;
    println!("strata local cluster");
    println!("  manager  {address} (grpc and http: http://{address}/api/v1/state)");
    for (i, ag) in cluster.agents.iter().enumerate() {
        let id = ag.agent_id().map(|i| i.to_string()).unwrap_or_default();
        println!("  agent {i}  {} ({id})", ag.address());
    }
    println!("  state    {}", work_dir.display());
    println!("  discovery file {}", path.display());
    let gateway = if a.gateway {
        // An executor larger than an agent could never be placed (three
        // agents on two cores hold 0.666 cpus each): the gateway's
        // executors are at most an agent's cpus.
        let mut executors = a.executors.clone();
        if executors.executor_cpus > cluster.agent_cpus && cluster.agent_cpus > 0.0 {
            executors.executor_cpus = (cluster.agent_cpus * 100.0).floor() / 100.0;
        }
        let started = a
            .serve
            .start(&executors, &address, opts_token.as_deref())
            .await;
        let (driver, handle) = match started {
            Ok(g) => g,
            Err(e) => {
                discovery::remove_if_ours();
                cluster.shutdown_with_tasks(Duration::from_secs(10)).await;
                return Err(e.context("starting the gateway"));
            }
        };
        println!("  gateway  postgresql {}", handle.pg_addr());
        if let Some(flight) = handle.flight_addr() {
            println!("  gateway  flight sql {flight} (ADBC: grpc://{flight})");
            // `strata sql`'s shell finds the gateway here.
            found.gateway = Some(flight.to_string());
            discovery::write(&found).context("cannot write the discovery file")?;
        }
        println!(
            "  connect  {}   (or strata sql)",
            super::gateway::connect_hint(&handle, &a.serve.database)
        );
        Some((driver, handle))
    } else {
        None
    };
    println!("Client commands (strata run, strata status) now find this cluster. Ctrl-C stops it.");
    wait_for_signal().await;
    if let Some((driver, handle)) = gateway {
        handle.shutdown().await;
        driver.shutdown().await;
    }
    eprintln!("stopping the local cluster and its tasks");
    discovery::remove_if_ours();
    cluster.shutdown_with_tasks(Duration::from_secs(10)).await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_parse() {
        let c = parse_classes("gold=50, bronze=5").unwrap();
        assert_eq!(c.names(), vec!["gold", "bronze"]);
        assert!(parse_classes("gold").is_err());
        assert!(parse_classes("").is_err());
    }
}
