//! One etcd member on free loopback ports (Debian's `etcd-server`), for the
//! tests of this crate and of the end-to-end suite: started with its data
//! under a given directory, killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{EtcdRegistry, EtcdUrl};

/// A running one-member etcd cluster.
pub struct EtcdMember {
    child: Child,
    /// Its client address, `IP:PORT` (`127.0.0.1` unless started elsewhere).
    pub addr: String,
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl EtcdMember {
    /// Starts a member with its data in `data_dir` and waits until it
    /// answers (at most 20 s); `Ok(None)` when there is no `etcd` on the
    /// PATH.
    pub async fn start(data_dir: &Path) -> std::io::Result<Option<EtcdMember>> {
        EtcdMember::start_in(data_dir, "127.0.0.1", &[]).await
    }

    /// Like [`EtcdMember::start`], listening on `ip`, started through
    /// `wrapper` (`ip netns exec NS`: a member on a host of its own).
    pub async fn start_in(
        data_dir: &Path,
        ip: &str,
        wrapper: &[String],
    ) -> std::io::Result<Option<EtcdMember>> {
        if Command::new("etcd").arg("--version").output().is_err() {
            return Ok(None);
        }
        let (client, peer) = (free_port()?, free_port()?);
        let initial = format!("n1=http://{ip}:{peer}");
        let member = EtcdMember::spawn(wrapper, "n1", data_dir, ip, (client, peer), &initial)?;
        EtcdMember::ready(&member.url("/probe"), Duration::from_secs(20)).await?;
        Ok(Some(member))
    }

    /// Starts a cluster of one member per host, each through its
    /// `wrapper` (`ip netns exec NS`) on its `ip` with etcd's usual ports
    /// (2379 for clients, 2380 for peers: each host is a namespace of its
    /// own), data under `data_dir/nN`, and waits until the cluster answers
    /// (at most 30 s); `Ok(None)` without `etcd` on the PATH.
    pub async fn start_cluster(
        data_dir: &Path,
        hosts: &[(String, Vec<String>)],
    ) -> std::io::Result<Option<Vec<EtcdMember>>> {
        if Command::new("etcd").arg("--version").output().is_err() {
            return Ok(None);
        }
        let initial: Vec<String> = hosts
            .iter()
            .enumerate()
            .map(|(i, (ip, _))| format!("n{}=http://{ip}:2380", i + 1))
            .collect();
        let mut members = Vec::new();
        for (i, (ip, wrapper)) in hosts.iter().enumerate() {
            let name = format!("n{}", i + 1);
            members.push(EtcdMember::spawn(
                wrapper,
                &name,
                &data_dir.join(&name),
                ip,
                (2379, 2380),
                &initial.join(","),
            )?);
        }
        let url = EtcdMember::cluster_url(&members, "/probe");
        EtcdMember::ready(&url, Duration::from_secs(30)).await?;
        Ok(Some(members))
    }

    /// Starts one member (not waiting for it) named `name` of the cluster
    /// `initial` (`n1=http://IP:PEER,…`), on `ip` with `(client, peer)`
    /// ports, through `wrapper`.
    fn spawn(
        wrapper: &[String],
        name: &str,
        data_dir: &Path,
        ip: &str,
        (client, peer): (u16, u16),
        initial: &str,
    ) -> std::io::Result<EtcdMember> {
        let client_url = format!("http://{ip}:{client}");
        let peer_url = format!("http://{ip}:{peer}");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg("etcd");
                c
            }
            None => Command::new("etcd"),
        };
        let child = command
            .args(["--name", name, "--data-dir"])
            .arg(data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", initial])
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(EtcdMember {
            child,
            addr: format!("{ip}:{client}"),
        })
    }

    /// Waits until the store at `url` answers, at most `within`.
    async fn ready(url: &EtcdUrl, within: Duration) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(r) = EtcdRegistry::connect(url).await
                && r.leader().await.is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("etcd did not answer within {within:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The store URL of a cluster of `members`, keys under `prefix`.
    pub fn cluster_url(members: &[EtcdMember], prefix: &str) -> EtcdUrl {
        EtcdUrl {
            endpoints: members
                .iter()
                .map(|m| format!("http://{}", m.addr))
                .collect(),
            prefix: prefix.to_owned(),
        }
    }

    /// What a test does with a start: the member, or `None` (the test
    /// returns, saying so) when there is no `etcd` on the PATH and
    /// `STRATA_REQUIRE_ETCD` is unset; a failure to start panics.
    pub fn or_skip(started: std::io::Result<Option<EtcdMember>>, test: &str) -> Option<EtcdMember> {
        match started {
            Ok(Some(m)) => Some(m),
            Ok(None) => {
                assert!(
                    std::env::var_os("STRATA_REQUIRE_ETCD").is_none(),
                    "{test}: no etcd on the PATH, and STRATA_REQUIRE_ETCD is set"
                );
                eprintln!("{test}: skipped: no etcd on the PATH (Debian: etcd-server)");
                None
            }
            Err(e) => panic!("{test}: cannot start etcd: {e}"),
        }
    }

    /// Its store URL with keys under `prefix`.
    pub fn url(&self, prefix: &str) -> EtcdUrl {
        EtcdUrl {
            endpoints: vec![format!("http://{}", self.addr)],
            prefix: prefix.to_owned(),
        }
    }
}
