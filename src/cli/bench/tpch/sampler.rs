//! The cluster's processes watched while queries run ([`Sampler`]): their
//! peak memory ([`ProcPeak`]), and the guards that stop a query when an
//! executor, the machine's memory or the shuffle disk runs short.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use strata_framework::driver::Driver;

use super::super::procfs::{
    cmdline, cpu_seconds, free_disk, parent_pid, peak_rss, rss_kind, status_kib,
};
use super::MIN_FREE_DISK;
use super::report::mib_bytes;

/// A process's peak memory.
#[derive(Serialize, Debug, Clone)]
pub(super) struct ProcPeak {
    pub(super) role: String,
    pub(super) pid: u32,
    pub(super) peak_rss_bytes: u64,
    /// Resident memory when the peak was read: anonymous (heap) and
    /// file-backed (mostly the binary's pages, shared between processes).
    pub(super) rss_anon_bytes: u64,
    pub(super) rss_file_bytes: u64,
    /// It exited before the end of the run (an executor replaced after a
    /// failure): shown, but not in the cluster's sum.
    pub(super) exited: bool,
    /// CPU time it used (user + system), seconds.
    pub(super) cpu_s: f64,
}

/// Watches the cluster's processes while queries run.
pub(super) struct Sampler {
    /// Executors (and their supervisors) seen so far, by pid, with the
    /// figures last read: executors replaced during the run are kept.
    pub(super) seen: BTreeMap<u32, ProcPeak>,
    /// How many executors have been seen (to name them).
    pub(super) executors_seen: usize,
    /// An executor's resident memory that stops a query, bytes.
    pub(super) rss_limit: u64,
    /// The manager's and agents' pids.
    pub(super) daemons: Vec<u32>,
    /// The directory of the executors' sandboxes (shuffle files).
    pub(super) work: PathBuf,
    /// The largest summed resident memory of the cluster's processes
    /// (driver included) seen at a sample.
    pub(super) total_peak: u64,
}

impl Sampler {
    /// Reads the figures of the driver's executors (and of the processes
    /// between each and its agent: its supervisor) and the cluster's
    /// summed resident memory. With `guard`, returns why the running
    /// query must stop if an executor's resident memory exceeds the limit
    /// or the machine is nearly out of memory.
    pub(super) async fn sample(&mut self, driver: &Driver, guard: bool) -> Option<String> {
        let mut executors = driver.executors().await;
        executors.sort_by_key(|e| e.id.to_string());
        let mut stop = None;
        for e in &executors {
            if !self.seen.contains_key(&e.pid) {
                let i = self.executors_seen;
                self.executors_seen += 1;
                self.seen
                    .insert(e.pid, read_peak(format!("executor-{i}"), e.pid));
                let mut p = parent_pid(e.pid);
                while let Some(pid) = p.filter(|&p| p > 1 && !self.daemons.contains(&p)) {
                    if pid == std::process::id() || self.seen.contains_key(&pid) {
                        break;
                    }
                    let role = if cmdline(pid).contains("supervise") {
                        format!("supervisor-{i}")
                    } else {
                        format!("task-wrapper-{i}")
                    };
                    self.seen.insert(pid, read_peak(role, pid));
                    p = parent_pid(pid);
                }
            }
            let rss = rss_kind(e.pid, "VmRSS:");
            if guard && rss > self.rss_limit && stop.is_none() {
                stop = Some(format!(
                    "executor {} (pid {}) reached {} resident, over the limit of {} (--executor-rss-limit)",
                    e.id,
                    e.pid,
                    mib_bytes(rss),
                    mib_bytes(self.rss_limit)
                ));
            }
        }
        // Refresh what is still alive; keep the last figures of the rest.
        let mut total = 0;
        for (pid, p) in self.seen.iter_mut() {
            match peak_rss(*pid) {
                Some(hwm) if !p.exited => {
                    *p = ProcPeak {
                        peak_rss_bytes: hwm.max(p.peak_rss_bytes),
                        ..read_peak(p.role.clone(), *pid)
                    };
                    total += rss_kind(*pid, "VmRSS:");
                }
                _ => p.exited = true,
            }
        }
        for pid in self.daemons.iter().copied().chain([std::process::id()]) {
            total += rss_kind(pid, "VmRSS:");
        }
        self.total_peak = self.total_peak.max(total);
        if guard
            && stop.is_none()
            && let Some(avail) = status_kib("/proc/meminfo", "MemAvailable:")
            && avail < 1024 * 1024
        {
            stop = Some(format!(
                "the machine has only {} MiB of memory available",
                avail / 1024
            ));
        }
        if guard
            && stop.is_none()
            && let Some(free) = free_disk(&self.work)
            && free < MIN_FREE_DISK
        {
            stop = Some(format!(
                "only {} left on the disk of {} (shuffle files)",
                mib_bytes(free),
                self.work.display()
            ));
        }
        stop
    }
}

/// A process's memory figures now.
pub(super) fn read_peak(role: String, pid: u32) -> ProcPeak {
    ProcPeak {
        role,
        pid,
        peak_rss_bytes: peak_rss(pid).unwrap_or(0),
        rss_anon_bytes: rss_kind(pid, "RssAnon:"),
        rss_file_bytes: rss_kind(pid, "RssFile:"),
        exited: false,
        cpu_s: cpu_seconds(pid).unwrap_or(0.0),
    }
}
