//! Hosts with their own IP addresses on one machine: a [`Lan`] of network
//! namespaces joined by veth pairs to a bridge, made and removed by the
//! test. A process started on a [`Host`] (`Env::spawn_on`) sees only that
//! host's interfaces, so a cluster spread over hosts talks over real
//! routes, and a host can be cut off from another with iptables
//! ([`Host::cut_from`]). The test process itself reaches every host
//! through the bridge's own address.
//!
//! Needs root and `ip`/`iptables`. Without them a test skips itself, saying
//! so, unless `STRATA_REQUIRE_NETNS` is set (as `.ci/run` sets it), where it
//! fails instead.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One host of a [`Lan`]: a network namespace with one interface.
#[derive(Clone, Debug)]
pub struct Host {
    /// The namespace (`ip netns exec NAME …`).
    pub netns: String,
    /// Its address on the LAN.
    pub ip: Ipv4Addr,
}

impl Host {
    /// `ip:port` on this host.
    pub fn addr(&self, port: u16) -> String {
        format!("{}:{port}", self.ip)
    }

    /// Drops every packet between this host and `other`, both ways (a
    /// partition), until [`Host::heal_from`].
    pub fn cut_from(&self, other: &Host) {
        for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            run(&self.in_ns(&[
                "iptables",
                "-A",
                chain,
                dir,
                &other.ip.to_string(),
                "-j",
                "DROP",
            ]));
        }
    }

    /// Undoes [`Host::cut_from`].
    pub fn heal_from(&self, other: &Host) {
        for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            run(&self.in_ns(&[
                "iptables",
                "-D",
                chain,
                dir,
                &other.ip.to_string(),
                "-j",
                "DROP",
            ]));
        }
    }

    /// `ip netns exec NETNS args…`.
    pub fn in_ns(&self, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = ["ip", "netns", "exec", &self.netns]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }
}

/// Hosts on one bridge, `10.213.N.1…` (`N` distinct per live LAN on this
/// machine, held by a file lock, so parallel test processes never share a
/// subnet); the bridge itself is `10.213.N.254`, this test process's way
/// in. Dropping it removes the namespaces, the bridge and its firewall
/// rule; drop it after the [`super::Env`] whose processes ran on it.
pub struct Lan {
    index: u32,
    hosts: Vec<Host>,
    _lock: std::fs::File,
}

impl Lan {
    /// A LAN of `n` hosts, or `None` (the test should return) where network
    /// namespaces cannot be made and `STRATA_REQUIRE_NETNS` is unset.
    pub fn new(test: &str, n: usize) -> Option<Lan> {
        assert!((1..=16).contains(&n), "1 to 16 hosts");
        if let Some(why) = unusable() {
            assert!(
                std::env::var_os("STRATA_REQUIRE_NETNS").is_none(),
                "{test}: network namespaces are needed ({why}), and STRATA_REQUIRE_NETNS is set"
            );
            eprintln!("{test}: skipped: network namespaces are not available here ({why})");
            return None;
        }
        let (index, lock) = claim_index();
        let lan = Lan {
            index,
            hosts: (0..n)
                .map(|i| Host {
                    netns: format!("st{index}h{i}"),
                    ip: Ipv4Addr::new(10, 213, index as u8, i as u8 + 1),
                })
                .collect(),
            _lock: lock,
        };
        lan.remove();
        let bridge = lan.bridge();
        run_all(&[
            vec!["ip", "link", "add", &bridge, "type", "bridge"],
            vec![
                "ip",
                "addr",
                "add",
                &format!("10.213.{index}.254/24"),
                "dev",
                &bridge,
            ],
            vec!["ip", "link", "set", &bridge, "up"],
        ]);
        // Docker's FORWARD policy drops bridged traffic it does not know.
        run(&lan.forward_rule("-I"));
        for (i, h) in lan.hosts.iter().enumerate() {
            let veth = format!("st{index}v{i}");
            let ip = format!("{}/24", h.ip);
            run_all(&[
                vec!["ip", "netns", "add", &h.netns],
                vec![
                    "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                    &h.netns,
                ],
                vec!["ip", "link", "set", &veth, "master", &bridge, "up"],
                vec!["ip", "-n", &h.netns, "addr", "add", &ip, "dev", "eth0"],
                vec!["ip", "-n", &h.netns, "link", "set", "eth0", "up"],
                vec!["ip", "-n", &h.netns, "link", "set", "lo", "up"],
            ]);
        }
        Some(lan)
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    fn bridge(&self) -> String {
        format!("st{}br", self.index)
    }

    fn forward_rule(&self, op: &str) -> Vec<String> {
        let b = self.bridge();
        [
            "iptables", op, "FORWARD", "-i", &b, "-o", &b, "-j", "ACCEPT",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Removes whatever a LAN of this index left (also a crashed run's).
    /// Each veth goes first, explicitly: the kernel tears a deleted
    /// namespace down in the background (and not at all while a process
    /// still runs in it), so its pair could outlive `ip netns del` and make
    /// the next LAN of this index fail with "File exists"; deleting one end
    /// removes both, at once.
    fn remove(&self) {
        for i in 0..16 {
            quiet(&["ip", "link", "del", &format!("st{}v{i}", self.index)]);
            quiet(&["ip", "netns", "del", &format!("st{}h{i}", self.index)]);
        }
        quiet(&["ip", "link", "del", &self.bridge()]);
        let rule = self.forward_rule("-D");
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        while quiet(&rule) {}
    }
}

impl std::ops::Index<usize> for Lan {
    type Output = Host;
    fn index(&self, i: usize) -> &Host {
        &self.hosts[i]
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Why this process cannot make namespaces (it must be root, and `ip
/// netns` and iptables must work), if it cannot.
fn unusable() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    let probe = format!("st-probe-{}", std::process::id());
    if !quiet(&["ip", "netns", "add", &probe]) {
        return Some("`ip netns add` fails");
    }
    quiet(&["ip", "netns", "del", &probe]);
    if !quiet(&["iptables", "-S", "FORWARD"]) {
        return Some("iptables does not work");
    }
    None
}

/// A LAN index no other live test process holds (a file lock the kernel
/// drops when the process exits).
fn claim_index() -> (u32, std::fs::File) {
    static NEXT: Mutex<u32> = Mutex::new(0);
    let dir = std::env::temp_dir().join("strata-it-lans");
    std::fs::create_dir_all(&dir).expect("lan lock directory");
    let start = std::process::id() % 200;
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    for k in 0..200 {
        let index = 1 + (start + *next + k) % 200;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{index}.lock")))
            .expect("lan lock file");
        if lock.try_lock().is_ok() {
            *next += k + 1;
            return (index, lock);
        }
    }
    panic!("no free LAN index in 1-200")
}

fn run_all(cmds: &[Vec<&str>]) {
    for c in cmds {
        run(c);
    }
}

/// Runs a command; panics with its output if it fails.
fn run<S: AsRef<str>>(argv: &[S]) {
    let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command, ignoring its output; whether it succeeded.
fn quiet(argv: &[&str]) -> bool {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
