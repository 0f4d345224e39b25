//! The agent's configuration.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use strata_proto::resources::{Ranges, Resources, Scalar};

/// How long sandboxes of finished tasks are kept by default: a week.
pub const DEFAULT_SANDBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default HTTP API address.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5051);

/// The ports an agent offers by default (as Mesos).
pub const DEFAULT_PORTS: (u64, u64) = (31000, 32000);

/// How an agent runs. Build one with [`AgentConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The manager's address, `host:port` (gRPC over h2c).
    pub manager: String,
    /// Where the agent's HTTP API binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The `host:port` advertised to the manager; default: the bound address
    /// (with the hostname when bound to an unspecified address).
    pub advertise: Option<String>,
    /// Holds `meta/` (checkpoints) and `sandboxes/`.
    pub work_dir: PathBuf,
    /// The resources advertised to the manager.
    pub resources: Resources,
    /// Attributes advertised to the manager (`rack`, `zone` …).
    pub attributes: Vec<(String, String)>,
    /// This node's hostname.
    pub hostname: String,
    /// Shared secret: sent to the manager as `authorization: Bearer <token>`
    /// and required on the agent's HTTP API (except `GET /health`).
    pub token: Option<String>,
    /// The user tasks run as when the agent runs as root (a task's
    /// `CommandInfo.user` wins); `None` means `nobody` under root.
    pub task_user: Option<String>,
    /// The argv prefix that starts a supervisor, e.g. `[current_exe, "supervise"]`;
    /// the agent appends `--launch <file>`.
    pub supervisor: Vec<String>,
    /// Sandboxes of finished and acknowledged tasks are removed this long
    /// after the task ended.
    pub sandbox_retention: Duration,
    /// How often the sandbox GC runs.
    pub gc_interval: Duration,
    /// The first retry interval of an unacknowledged status update (it
    /// doubles, up to 30 times this).
    pub status_retry: Duration,
    /// The first reconnection delay (it doubles, up to 5 s).
    pub reconnect_backoff: Duration,
    /// Heartbeat interval until the manager tells its own at registration.
    pub heartbeat_interval: Duration,
    /// How often task supervisors are polled for exits.
    pub poll_interval: Duration,
    /// How often running tasks' usage is measured and reported.
    pub usage_interval: Duration,
    /// The Docker Engine that runs Docker tasks, `unix:///path` (only unix
    /// sockets are supported).
    pub docker_host: String,
    /// Forward the apps' service ports to their healthy instances
    /// ([`crate::proxy`]), as marathon-lb does.
    pub service_ports: bool,
}

impl AgentConfig {
    /// A configuration with defaults: API on `127.0.0.1:5051`, this host's
    /// resources ([`detect_resources`]) and hostname, no token, supervisor
    /// `[current_exe, "supervise"]`, sandboxes kept a week (GC every
    /// minute), status retry 1 s, reconnect backoff 200 ms, heartbeat 1 s,
    /// exit polling every 100 ms, usage measured every 2 s, Docker at `DOCKER_HOST` or
    /// `unix:///var/run/docker.sock`, service ports forwarded.
    pub fn new(manager: impl Into<String>, work_dir: PathBuf) -> Self {
        let exe = std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "strata".to_owned());
        let resources = detect_resources(&work_dir);
        AgentConfig {
            manager: manager.into(),
            listen: DEFAULT_LISTEN,
            advertise: None,
            work_dir,
            resources,
            attributes: Vec::new(),
            hostname: hostname(),
            token: None,
            task_user: None,
            supervisor: vec![exe, "supervise".to_owned()],
            sandbox_retention: DEFAULT_SANDBOX_RETENTION,
            gc_interval: Duration::from_secs(60),
            status_retry: Duration::from_secs(1),
            reconnect_backoff: Duration::from_millis(200),
            heartbeat_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(100),
            usage_interval: Duration::from_secs(2),
            docker_host: super::docker::host_from_env(),
            service_ports: true,
        }
    }
}

/// This host's name (from the kernel), `localhost` if unknown.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the kernel NUL-terminates
    // the name when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if rc == 0 && !h.is_empty() => h.to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// This host's resources: every CPU, the physical memory less 1 GiB kept
/// for the system (at least half of it offered), the free disk space of the
/// file system holding `work_dir` (or its nearest existing ancestor), and
/// ports 31000-32000.
pub fn detect_resources(work_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_mib = total_memory_mib().unwrap_or(1024);
    let offered_mem = mem_mib.saturating_sub(1024).max(mem_mib / 2);
    let disk_mib = free_disk_mib(work_dir).unwrap_or(0);
    Resources {
        cpus: Scalar::from_units(cpus as i64),
        mem: Scalar::from_units(offered_mem as i64),
        disk: Scalar::from_units(disk_mib as i64),
        ports: Ranges::from_ranges([DEFAULT_PORTS]),
    }
}

fn total_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn free_disk_mib(path: &Path) -> Option<u64> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let st = nix::sys::statvfs::statvfs(p).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64 / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sane() {
        let c = AgentConfig::new("127.0.0.1:5050", PathBuf::from("/tmp/x"));
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert!(c.resources.cpus >= Scalar::from_units(1));
        assert!(!c.resources.mem.is_zero());
        assert_eq!(c.resources.ports.count(), 1001);
        assert_eq!(c.supervisor.len(), 2);
        assert_eq!(c.supervisor[1], "supervise");
        assert!(!c.hostname.is_empty());
        assert_eq!(c.status_retry, Duration::from_secs(1));
    }
}
