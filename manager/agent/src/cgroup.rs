//! cgroup v2: one cgroup per task (`/sys/fs/cgroup/strata/f-<framework>/t-<task>`)
//! with `cpu.max` and `memory.max` from the task's resources; the cgroup is
//! also how the whole process tree of a task is found and killed.
//!
//! Used only when the unified hierarchy is mounted at `/sys/fs/cgroup` and a
//! `strata` sub-cgroup with the cpu and memory controllers can be created
//! (root, or a delegated hierarchy). Otherwise the agent runs without limits
//! and kills tasks through their process group.

use nix::sys::signal::Signal;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use strata_proto::ids::{FrameworkId, TaskId};
use strata_proto::resources::Resources;

/// Where the unified hierarchy is expected.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup period for `cpu.max`, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// A usable `strata` cgroup.
#[derive(Debug, Clone)]
pub struct Cgroups {
    base: PathBuf,
}

/// Why cgroups are not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Unavailable {
    /// A lowercase explanation, for the startup log.
    pub reason: String,
}

fn unavailable(reason: String) -> Unavailable {
    Unavailable { reason }
}

impl Cgroups {
    /// Checks for cgroup v2 and sets up `<root>/strata` with the cpu and
    /// memory controllers delegated to its children.
    pub fn probe(root: &Path) -> Result<Cgroups, Unavailable> {
        let controllers_file = root.join("cgroup.controllers");
        let controllers = fs::read_to_string(&controllers_file).map_err(|e| {
            unavailable(format!(
                "no cgroup v2 hierarchy at {} ({e})",
                root.display()
            ))
        })?;
        for needed in ["cpu", "memory"] {
            if !controllers.split_whitespace().any(|c| c == needed) {
                return Err(unavailable(format!(
                    "the {needed} controller is not available (have: {})",
                    controllers.trim()
                )));
            }
        }
        enable_controllers(root)
            .map_err(|e| unavailable(format!("cannot enable cpu and memory at the root: {e}")))?;
        let base = root.join("strata");
        fs::create_dir_all(&base)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", base.display())))?;
        enable_controllers(&base).map_err(|e| {
            unavailable(format!(
                "cannot enable cpu and memory in {}: {e}",
                base.display()
            ))
        })?;
        Ok(Cgroups { base })
    }

    /// The cgroup of a task (not created).
    pub fn task_path(&self, framework_id: &FrameworkId, task_id: &TaskId) -> PathBuf {
        self.base
            .join(format!("f-{framework_id}"))
            .join(format!("t-{task_id}"))
    }

    /// Creates the cgroup of a task with limits from `resources`.
    pub fn create_task(
        &self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        resources: &Resources,
    ) -> io::Result<PathBuf> {
        let path = self.task_path(framework_id, task_id);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
            enable_controllers(parent)?;
        }
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        fs::write(path.join("cpu.max"), cpu_max(resources))?;
        fs::write(path.join("memory.max"), memory_max(resources))?;
        Ok(path)
    }
}

fn enable_controllers(dir: &Path) -> io::Result<()> {
    let current = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let have = |c: &str| current.split_whitespace().any(|x| x == c);
    if have("cpu") && have("memory") {
        return Ok(());
    }
    fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory")
}

/// The `cpu.max` value for these resources (`max` when cpus is zero).
pub fn cpu_max(resources: &Resources) -> String {
    let milli = resources.cpus.milli();
    if milli <= 0 {
        return format!("max {CPU_PERIOD_US}");
    }
    // quota = cpus * period, at least 1 ms as the kernel requires.
    let quota = (milli as u64 * CPU_PERIOD_US / 1000).max(1000);
    format!("{quota} {CPU_PERIOD_US}")
}

/// The `memory.max` value for these resources (`max` when mem is zero).
pub fn memory_max(resources: &Resources) -> String {
    let milli = resources.mem.milli();
    if milli <= 0 {
        return "max".to_owned();
    }
    // MiB with three decimals, in bytes.
    let bytes = (milli as u128 * 1024 * 1024 / 1000) as u64;
    bytes.to_string()
}

/// The pids in a cgroup.
pub fn procs(cgroup: &Path) -> Vec<i32> {
    fs::read_to_string(cgroup.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Sends `signal` to every process in the cgroup.
pub fn signal_all(cgroup: &Path, signal: Signal) {
    for pid in procs(cgroup) {
        super::process::signal_pid(pid, signal).ok();
    }
}

/// Kills everything in the cgroup: `cgroup.kill` where the kernel has it,
/// else SIGKILL to each process.
pub fn kill_all(cgroup: &Path) {
    if fs::write(cgroup.join("cgroup.kill"), "1").is_err() {
        signal_all(cgroup, Signal::SIGKILL);
    }
}

/// Whether the kernel OOM-killed a process of the cgroup.
pub fn oom_killed(cgroup: &Path) -> bool {
    fs::read_to_string(cgroup.join("memory.events"))
        .map(|t| {
            t.lines().any(|l| {
                let mut it = l.split_whitespace();
                it.next() == Some("oom_kill") && it.next().is_some_and(|n| n != "0")
            })
        })
        .unwrap_or(false)
}

/// Removes an empty task cgroup and its framework cgroup if that became
/// empty. Errors are ignored: a cgroup still holding processes stays.
pub fn remove(cgroup: &Path) {
    fs::remove_dir(cgroup).ok();
    if let Some(parent) = cgroup.parent() {
        fs::remove_dir(parent).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_resources() {
        let r = Resources::new(1.5, 256.0);
        assert_eq!(cpu_max(&r), "150000 100000");
        assert_eq!(memory_max(&r), (256u64 * 1024 * 1024).to_string());
        let none = Resources::default();
        assert_eq!(cpu_max(&none), "max 100000");
        assert_eq!(memory_max(&none), "max");
        assert_eq!(cpu_max(&Resources::new(0.001, 0.0)), "1000 100000");
    }

    #[test]
    fn probe_explains_why_cgroups_are_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let err = Cgroups::probe(dir.path()).unwrap_err();
        assert!(err.reason.starts_with("no cgroup v2 hierarchy"), "{err}");
        fs::write(dir.path().join("cgroup.controllers"), "cpuset io pids\n").unwrap();
        let err = Cgroups::probe(dir.path()).unwrap_err();
        assert!(err.reason.contains("cpu controller"), "{err}");
    }

    #[test]
    fn oom_events_are_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!oom_killed(dir.path()));
        fs::write(
            dir.path().join("memory.events"),
            "low 0\noom 1\noom_kill 0\n",
        )
        .unwrap();
        assert!(!oom_killed(dir.path()));
        fs::write(
            dir.path().join("memory.events"),
            "low 0\noom 1\noom_kill 2\n",
        )
        .unwrap();
        assert!(oom_killed(dir.path()));
    }
}
