//! What running tasks use: cpu time and resident memory from `/proc`.
//!
//! Every sampling interval the agent reads `/proc/<pid>/stat` of every
//! process once and sums, per task, over its process tree: for a process
//! task, every descendant of its supervisor (a subreaper, so even orphans
//! stay under it); for a Docker task, the container's init process and its
//! descendants. Cpu use is the growth of user + system time between two
//! samples divided by the time between them; a process that appeared since
//! the last sample counts with all its time. The manager lends what tasks
//! hold but leave idle (revocable cpus) from these figures, and the
//! services scheduler's `cpu` autoscaling metric reads them.
//!
//! Works without cgroups (as on this kind of machine) and with them.

use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use std::path::Path;
use strata_proto::ids::{FrameworkId, TaskId};

pub use crate::process::{ProcStat, parse_stat};

/// Reads every process under `proc_root` (normally `/proc`). Processes
/// that end while being read are skipped.
pub fn scan(proc_root: &Path) -> Vec<ProcStat> {
    let Ok(all) = procfs::process::all_processes_with_root(proc_root) else {
        return Vec::new();
    };
    all.filter_map(|p| Some(p.ok()?.stat().ok()?.into()))
        .collect()
}

/// Where a task's processes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// Every descendant of this process, not itself (a supervisor).
    Below(i32),
    /// This process and its descendants (a container's init).
    At(i32),
}

/// The processes of the tree at `root`.
pub fn tree(procs: &[ProcStat], root: Root) -> Vec<&ProcStat> {
    let mut children: HashMap<i32, Vec<usize>> = HashMap::default();
    for (i, p) in procs.iter().enumerate() {
        children.entry(p.ppid).or_default().push(i);
    }
    let (start, include) = match root {
        Root::Below(pid) => (pid, false),
        Root::At(pid) => (pid, true),
    };
    let mut out = Vec::new();
    if include && let Some(p) = procs.iter().find(|p| p.pid == start) {
        out.push(p);
    }
    // A pid reused during the scan could make a cycle: visit each once.
    let mut seen: rustc_hash::FxHashSet<i32> = Default::default();
    let mut stack = vec![start];
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        for &i in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            out.push(&procs[i]);
            stack.push(procs[i].pid);
        }
    }
    out
}

/// What one task used over the last interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskUsage {
    /// The framework.
    pub framework_id: FrameworkId,
    /// The task.
    pub task_id: TaskId,
    /// Cpus used on average over the interval.
    pub cpus_used: f64,
    /// Resident memory now, MiB.
    pub mem_rss_mib: f64,
    /// Processes in the task's tree.
    pub processes: usize,
    /// When it was taken (seconds since the epoch).
    pub timestamp: f64,
}

/// The previous sample of one task: its processes' ticks.
#[derive(Debug, Default)]
struct Previous {
    at: f64,
    ticks: HashMap<(i32, u64), u64>,
}

/// Turns successive scans into per-task usage.
#[derive(Debug)]
pub struct Sampler {
    previous: HashMap<(FrameworkId, TaskId), Previous>,
    ticks_per_sec: f64,
    page_mib: f64,
}

impl Default for Sampler {
    fn default() -> Self {
        // SAFETY: sysconf has no memory arguments.
        let (tps, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Sampler {
            previous: HashMap::default(),
            ticks_per_sec: if tps > 0 { tps as f64 } else { 100.0 },
            page_mib: if page > 0 { page as f64 } else { 4096.0 } / (1024.0 * 1024.0),
        }
    }
}

impl Sampler {
    /// Usage of each task in `tasks` ((framework, task), root) at `now`
    /// (seconds) from one scan. A task's first sample only sets its
    /// baseline and yields nothing; tasks not given are forgotten.
    pub fn sample(
        &mut self,
        now: f64,
        tasks: &[((FrameworkId, TaskId), Root)],
        procs: &[ProcStat],
    ) -> Vec<TaskUsage> {
        let mut out = Vec::new();
        let mut next: HashMap<(FrameworkId, TaskId), Previous> = HashMap::default();
        for (key, root) in tasks {
            let members = tree(procs, *root);
            let ticks: HashMap<(i32, u64), u64> = members
                .iter()
                .map(|p| ((p.pid, p.start_time), p.ticks))
                .collect();
            if let Some(prev) = self.previous.get(key)
                && now > prev.at
            {
                let grown: u64 = ticks
                    .iter()
                    .map(|(k, &t)| t.saturating_sub(prev.ticks.get(k).copied().unwrap_or(0)))
                    .sum();
                out.push(TaskUsage {
                    framework_id: key.0.clone(),
                    task_id: key.1.clone(),
                    cpus_used: grown as f64 / self.ticks_per_sec / (now - prev.at),
                    mem_rss_mib: members.iter().map(|p| p.rss_pages).sum::<u64>() as f64
                        * self.page_mib,
                    processes: members.len(),
                    timestamp: now,
                });
            }
            next.insert(key.clone(), Previous { at: now, ticks });
        }
        self.previous = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, ticks: u64) -> ProcStat {
        ProcStat {
            pid,
            state: 'S',
            ppid,
            pgrp: pid,
            ticks,
            start_time: pid as u64,
            rss_pages: 256,
        }
    }

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let line = "4242 (my (odd) prog) S 17 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 3 1 20 0 1 0 987654 10000000 300 18446744073709551615 \
                    0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 4242,
                state: 'S',
                ppid: 17,
                pgrp: 4242,
                ticks: 300,
                start_time: 987654,
                rss_pages: 300,
            }
        );
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("12 (x) S 1").is_none());
    }

    #[test]
    fn our_own_process_is_found_under_our_parent() {
        let procs = scan(Path::new("/proc"));
        let me = std::process::id() as i32;
        let mine = procs.iter().find(|p| p.pid == me).expect("self in /proc");
        let under = tree(&procs, Root::Below(mine.ppid));
        assert!(under.iter().any(|p| p.pid == me));
        assert!(!under.iter().any(|p| p.pid == mine.ppid));
        assert!(tree(&procs, Root::At(me)).iter().any(|p| p.pid == me));
    }

    #[test]
    fn cpu_is_growth_over_time_and_new_processes_count_whole() {
        let key = (FrameworkId::new("f"), TaskId::new("t"));
        let tasks = vec![(key.clone(), Root::Below(10))];
        let mut s = Sampler {
            ticks_per_sec: 100.0,
            ..Sampler::default()
        };
        // Supervisor 10, task 11 with a child 12; 13 is someone else's.
        let first = vec![p(10, 1, 5), p(11, 10, 100), p(12, 11, 0), p(13, 1, 50)];
        assert!(s.sample(0.0, &tasks, &first).is_empty(), "a baseline");
        // Over 2 s: 11 used 150 ticks, 12 ended, 14 appeared with 50.
        let second = vec![p(10, 1, 900), p(11, 10, 250), p(14, 11, 50), p(13, 1, 500)];
        let u = s.sample(2.0, &tasks, &second);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].cpus_used, 1.0, "(150 + 50) ticks / 100 / 2 s");
        assert_eq!(u[0].processes, 2);
        assert!(u[0].mem_rss_mib > 0.0);
        // A task no longer given is forgotten.
        assert!(s.sample(4.0, &[], &second).is_empty());
        assert!(s.sample(6.0, &tasks, &second).is_empty());
    }
}
