//! A real etcd member for the high-availability tests (Debian's
//! `etcd-server`), on free loopback ports, its data under the test's temp
//! dir. Skipped, saying so, when there is no `etcd` on the PATH, unless
//! `STRATA_REQUIRE_ETCD` is set (as `.ci/run` sets it).

use super::*;

/// One etcd member, killed on drop.
pub struct EtcdMember {
    child: Child,
    /// Its client address, `127.0.0.1:PORT`.
    pub addr: String,
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl EtcdMember {
    /// Starts a one-member cluster under `env` and waits until it is
    /// healthy; `None` (the test should return) without etcd.
    pub async fn start(env: &Env, test: &str) -> Option<EtcdMember> {
        if Command::new("etcd").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("STRATA_REQUIRE_ETCD").is_none(),
                "{test}: no etcd on the PATH, and STRATA_REQUIRE_ETCD is set"
            );
            eprintln!("{test}: skipped: no etcd on the PATH (Debian: etcd-server)");
            return None;
        }
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "n1", "--data-dir"])
            .arg(env.path("etcd"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("n1={peer_url}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start etcd");
        let member = EtcdMember {
            child,
            addr: format!("127.0.0.1:{client}"),
        };
        wait_until("etcd healthy", LONG, async || {
            strata_sdk::http::request(
                "GET",
                &member.addr,
                "/health",
                None,
                None,
                Duration::from_secs(1),
            )
            .await
            .is_ok_and(|(status, _, body)| {
                status == 200 && String::from_utf8_lossy(&body).contains("true")
            })
        })
        .await;
        Some(member)
    }
}
