//! Finding the manager: `--manager`, else `STRATA_MANAGER`, else the
//! discovery file of `strata local` (`$STRATA_HOME/local.json`, with
//! `STRATA_HOME` defaulting to `~/.strata`), else `127.0.0.1:5050`.
//!
//! The discovery file holds the address, the token and the pid of the
//! `strata local` process; a file whose pid is no longer alive is stale and
//! ignored (with a note on stderr).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The default manager address.
pub const DEFAULT_MANAGER: &str = "127.0.0.1:5050";

/// The contents of `local.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    /// The manager's address.
    pub address: String,
    /// The shared token, if the cluster uses one.
    pub token: Option<String>,
    /// The pid of the `strata local` process.
    pub pid: u32,
    /// The Flight SQL address of its SQL gateway (`strata local
    /// --gateway`), if it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// `$STRATA_HOME`, else `~/.strata`.
pub fn strata_home() -> PathBuf {
    if let Some(h) = std::env::var_os("STRATA_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".strata")
}

/// The path of the discovery file.
pub fn discovery_path() -> PathBuf {
    strata_home().join("local.json")
}

/// Writes the discovery file atomically.
pub fn write(d: &Discovery) -> std::io::Result<PathBuf> {
    let path = discovery_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // It holds the token: only its owner may read it.
    let body = serde_json::to_vec_pretty(d).map_err(std::io::Error::other)?;
    strata_proto::fsutil::write_atomic_mode(&path, &body, 0o600)?;
    Ok(path)
}

/// Removes the discovery file if it still names this process.
pub fn remove_if_ours() {
    if let Some(d) = read_file()
        && d.pid == std::process::id()
    {
        std::fs::remove_file(discovery_path()).ok();
    }
}

fn read_file() -> Option<Discovery> {
    let bytes = std::fs::read(discovery_path()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn pid_alive(pid: u32) -> bool {
    // Signal 0 checks existence without sending anything.
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The Flight SQL address of the gateway of a live `strata local
/// --gateway`, if there is one.
pub fn local_gateway() -> Option<String> {
    read_file().filter(|d| pid_alive(d.pid))?.gateway
}

/// Where the manager is and which token to use.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    /// Token.
    pub token: Option<String>,
}

/// Resolves the manager from a flag, the environment, the discovery file or
/// the default. `token` (flag or `STRATA_TOKEN`) wins over the file's.
pub fn resolve(flag: Option<&str>, token: Option<&str>) -> Target {
    let token = token.map(str::to_owned);
    if let Some(a) = flag.filter(|a| !a.is_empty()) {
        return Target {
            address: a.to_owned(),
            token,
        };
    }
    if let Ok(a) = std::env::var("STRATA_MANAGER")
        && !a.is_empty()
    {
        return Target { address: a, token };
    }
    if let Some(d) = read_file() {
        if pid_alive(d.pid) {
            return Target {
                address: d.address,
                token: token.or(d.token),
            };
        }
        eprintln!(
            "note: ignoring stale {} (process {} is gone)",
            discovery_path().display(),
            d.pid
        );
    }
    Target {
        address: DEFAULT_MANAGER.to_owned(),
        token,
    }
}
