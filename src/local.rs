//! A whole cluster in one process: a manager and `n` agents on loopback,
//! each agent with its share of the machine. Used by `strata local`,
//! `strata demo`, the end-to-end benchmarks and tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use strata_agent::{self as agent, AgentConfig, AgentHandle};
use strata_manager::server::{self, ManagerConfig, ManagerHandle};
use strata_proto::resources::{Ranges, Resources, Scalar};

/// How to start a local cluster.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Number of agents.
    pub agents: usize,
    /// Where the registry, agents' checkpoints and sandboxes go.
    pub work_dir: PathBuf,
    /// The manager's address (port 0: ephemeral).
    pub listen: SocketAddr,
    /// Shared token.
    pub token: Option<String>,
    /// Resources of the whole machine to split among the agents (detected
    /// when `None`).
    pub machine: Option<Resources>,
    /// The argv prefix that starts a task supervisor (`[strata, supervise]`).
    pub supervisor: Option<Vec<String>>,
    /// The manager's preemption grace period (its default when `None`).
    pub preemption_grace: Option<std::time::Duration>,
}

impl LocalOptions {
    /// Defaults: `n` agents, manager on `127.0.0.1:5050`.
    pub fn new(agents: usize, work_dir: PathBuf) -> Self {
        LocalOptions {
            agents,
            work_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 5050)),
            token: None,
            machine: None,
            supervisor: None,
            preemption_grace: None,
        }
    }
}

/// A running local cluster.
pub struct LocalCluster {
    /// The manager.
    pub manager: ManagerHandle,
    /// The agents.
    pub agents: Vec<AgentHandle>,
    /// The cpus each agent offers (its share of the machine).
    pub agent_cpus: f64,
}

/// Why a local cluster did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The manager failed.
    #[error("manager: {0}")]
    Manager(#[from] server::ServerError),
    /// An agent failed.
    #[error("agent {index}: {source}")]
    Agent {
        /// Which agent.
        index: usize,
        /// Why.
        #[source]
        source: agent::AgentError,
    },
    /// Zero agents asked for.
    #[error("a local cluster needs at least one agent")]
    NoAgents,
}

/// Splits the machine's resources into `n` equal agents, ports in disjoint
/// blocks.
pub fn split_machine(machine: &Resources, n: usize) -> Vec<Resources> {
    let n = n.max(1) as i64;
    let ports: Vec<u64> = machine.ports.values().collect();
    let per = ports.len() / n as usize;
    (0..n)
        .map(|i| {
            let block = &ports[(i as usize * per)..((i as usize + 1) * per)];
            Resources {
                cpus: Scalar::from_milli(machine.cpus.milli() / n),
                mem: Scalar::from_milli(machine.mem.milli() / n),
                disk: Scalar::from_milli(machine.disk.milli() / n),
                ports: Ranges::from_ranges(block.iter().map(|&p| (p, p))),
            }
        })
        .collect()
}

/// The name of the user running this process.
fn current_user() -> String {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return "root".to_owned();
    }
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "nobody".to_owned())
}

impl LocalCluster {
    /// Starts the manager, then the agents, and waits until every agent has
    /// registered.
    pub async fn start(opts: LocalOptions) -> Result<LocalCluster, LocalError> {
        if opts.agents == 0 {
            return Err(LocalError::NoAgents);
        }
        let mut mcfg = ManagerConfig::new(opts.work_dir.join("manager"));
        mcfg.listen = opts.listen;
        mcfg.token = opts.token.clone();
        if let Some(g) = opts.preemption_grace {
            mcfg.master.preemption_grace = g;
        }
        let manager = server::spawn(mcfg).await?;
        let address = manager.address().to_string();
        let machine = opts
            .machine
            .clone()
            .unwrap_or_else(|| agent::config::detect_resources(&opts.work_dir));
        let shares = split_machine(&machine, opts.agents);
        let agent_cpus = shares.first().map_or(0.0, |s| s.cpus.as_f64());
        let mut agents = Vec::new();
        for (i, share) in shares.into_iter().enumerate() {
            let mut cfg =
                AgentConfig::new(address.clone(), opts.work_dir.join(format!("agent-{i}")));
            cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            cfg.resources = share;
            cfg.token = opts.token.clone();
            cfg.attributes = vec![("agent".into(), i.to_string())];
            cfg.hostname = format!("{}-agent{i}", cfg.hostname);
            if let Some(s) = &opts.supervisor {
                cfg.supervisor = s.clone();
            }
            // A local cluster runs tasks as the user who started it (an
            // agent of a real cluster, run as root, uses `nobody`).
            cfg.task_user = Some(current_user());
            let handle = agent::spawn(cfg)
                .await
                .map_err(|source| LocalError::Agent { index: i, source })?;
            agents.push(handle);
        }
        for (i, a) in agents.iter().enumerate() {
            a.wait_registered(Duration::from_secs(30))
                .await
                .map_err(|source| LocalError::Agent { index: i, source })?;
        }
        Ok(LocalCluster {
            manager,
            agents,
            agent_cpus,
        })
    }

    /// The manager's address.
    pub fn address(&self) -> SocketAddr {
        self.manager.address()
    }

    /// Stops the agents (their tasks keep running under their supervisors
    /// and are recovered by the next agent on the same work dir), then the
    /// manager.
    pub async fn shutdown(self) {
        for a in self.agents {
            a.shutdown().await;
        }
        self.manager.shutdown().await;
    }

    /// Stops everything: kills every task (waiting up to `wait`), then
    /// stops the agents and the manager.
    pub async fn shutdown_with_tasks(self, wait: Duration) {
        let stops = self.agents.into_iter().map(|a| a.shutdown_with_tasks(wait));
        futures::future::join_all(stops).await;
        self.manager.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_even_and_disjoint() {
        let m = Resources::parse("cpus:4;mem:8192;disk:100;ports:[31000-32000]").unwrap();
        let parts = split_machine(&m, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].cpus, Scalar::from_milli(1333));
        let mut all = Ranges::empty();
        for p in &parts {
            assert_eq!(p.ports.count(), 333);
            assert_eq!(all.difference(&p.ports), all);
            all = all.union(&p.ports);
        }
    }
}
