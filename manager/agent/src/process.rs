//! Processes: signalling process groups, reading `/proc`, and the
//! SIGTERM-then-SIGKILL escalation of a kill.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::time::{Duration, Instant};

/// What `/proc/<pid>/stat` says about a process (read by the `procfs`
/// crate, the one parser of it in Strata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Its pid.
    pub pid: i32,
    /// One-letter state (`R`, `S`, `Z` …).
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
    /// User plus system time, in clock ticks.
    pub ticks: u64,
    /// Start time in clock ticks since boot (tells a reused pid apart).
    pub start_time: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

impl ProcStat {
    /// Whether the process has exited (a zombie or dead entry).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

impl From<procfs::process::Stat> for ProcStat {
    fn from(s: procfs::process::Stat) -> Self {
        ProcStat {
            pid: s.pid,
            state: s.state,
            ppid: s.ppid,
            pgrp: s.pgrp,
            ticks: s.utime.saturating_add(s.stime),
            start_time: s.starttime,
            rss_pages: s.rss,
        }
    }
}

/// Parses the text of `/proc/<pid>/stat`; `None` if it is malformed.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    use procfs::FromRead;
    procfs::process::Stat::from_read(text.as_bytes())
        .ok()
        .map(ProcStat::from)
}

/// Reads `/proc/<pid>/stat`; `None` if there is no such process.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some(stat.into())
}

/// The arguments of a process, from `/proc/<pid>/cmdline`.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    if pid <= 0 {
        return None;
    }
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Whether `pid` is a live (not zombie) process that is still the one we
/// started: same start time when known, and `needle` among its arguments
/// when given (so a reused pid is not mistaken for it). A process whose
/// arguments read empty is in the middle of its `exec` (a `posix_spawn`
/// returns before the new program's arguments are in place) and counts as
/// the one started.
pub fn is_alive(pid: i32, start_time: Option<u64>, needle: Option<&str>) -> bool {
    let Some(stat) = proc_stat(pid) else {
        return false;
    };
    if stat.is_dead() {
        return false;
    }
    if let Some(t) = start_time
        && stat.start_time != t
    {
        return false;
    }
    match needle {
        Some(n) => cmdline(pid).is_some_and(|args| args.is_empty() || args.iter().any(|a| a == n)),
        None => true,
    }
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(st) = proc_stat(pid)
            && st.pgrp == pgid
            && !st.is_dead()
        {
            out.push(pid);
        }
    }
    out
}

/// Live (non-zombie) children of `ppid`.
pub fn live_children(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(st) = proc_stat(pid)
            && st.ppid == ppid
            && !st.is_dead()
        {
            out.push(pid);
        }
    }
    out
}

/// Sends `signal` to every process of group `pgid`. Returns `false` when
/// the group no longer exists. Refuses groups 0 and 1 (which would mean "my
/// group" and "everyone").
pub fn signal_group(pgid: i32, signal: Signal) -> std::io::Result<bool> {
    if pgid <= 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    match kill(Pid::from_raw(-pgid), signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// Sends `signal` to one process; `false` when it does not exist.
pub fn signal_pid(pid: i32, signal: Signal) -> std::io::Result<bool> {
    if pid <= 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        ));
    }
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// Resident memory of this process in bytes, from `/proc/self/statm`.
pub fn self_rss_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096))
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// One step of a kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillStep {
    /// Ask politely (SIGTERM).
    Term,
    /// Insist (SIGKILL).
    Kill,
}

impl KillStep {
    /// The signal for this step.
    pub fn signal(self) -> Signal {
        match self {
            KillStep::Term => Signal::SIGTERM,
            KillStep::Kill => Signal::SIGKILL,
        }
    }
}

/// The escalation of one kill: SIGTERM as soon as the target is known, then
/// SIGKILL once the grace period has passed since the kill was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalation {
    /// SIGKILL is due at this instant.
    kill_at: Instant,
    term_sent: bool,
    kill_sent: bool,
}

impl Escalation {
    /// A kill asked for at `requested`, with `grace` before SIGKILL.
    pub fn new(requested: Instant, grace: Duration) -> Self {
        Escalation {
            kill_at: requested + grace,
            term_sent: false,
            kill_sent: false,
        }
    }

    /// The step due at `now`, if any; it is recorded as sent.
    pub fn due(&mut self, now: Instant) -> Option<KillStep> {
        if self.kill_sent {
            None
        } else if now >= self.kill_at {
            self.kill_sent = true;
            self.term_sent = true;
            Some(KillStep::Kill)
        } else if !self.term_sent {
            self.term_sent = true;
            Some(KillStep::Term)
        } else {
            None
        }
    }

    /// Forgets that the last step was sent (the target was not known yet),
    /// so it is tried again.
    pub fn retry(&mut self, step: KillStep) {
        match step {
            KillStep::Term => self.term_sent = false,
            KillStep::Kill => self.kill_sent = false,
        }
    }

    /// Brings SIGKILL forward to `kill_at` if that is earlier.
    pub fn shorten(&mut self, kill_at: Instant) {
        if kill_at < self.kill_at {
            self.kill_at = kill_at;
            self.kill_sent = false;
        }
    }

    /// When SIGKILL is due.
    pub fn kill_at(&self) -> Instant {
        self.kill_at
    }

    /// Whether SIGKILL was sent.
    pub fn kill_sent(&self) -> bool {
        self.kill_sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};

    fn spawn_group(script: &str) -> Child {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    }

    /// Drives an escalation against a real process group until every member
    /// is gone, reaping the direct child; returns the steps sent.
    fn kill_until_gone(child: &mut Child, grace: Duration) -> Vec<KillStep> {
        let pgid = child.id() as i32;
        let mut esc = Escalation::new(Instant::now(), grace);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut steps = Vec::new();
        loop {
            child.try_wait().ok();
            if let Some(step) = esc.due(Instant::now()) {
                signal_group(pgid, step.signal()).unwrap();
                steps.push(step);
            }
            if live_group_members(pgid).is_empty() {
                return steps;
            }
            assert!(Instant::now() < deadline, "group {pgid} survived the kill");
            std::thread::sleep(Duration::from_millis(5)); // poll interval
        }
    }

    /// Waits (with a deadline) until `n` `sleep` processes of the group run.
    fn wait_sleepers(pgid: i32, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sleepers = live_group_members(pgid)
                .into_iter()
                .filter(|p| cmdline(*p).is_some_and(|a| a.first().is_some_and(|c| c == "sleep")))
                .count();
            if sleepers >= n {
                return;
            }
            assert!(Instant::now() < deadline, "group never had {n} sleepers");
            std::thread::sleep(Duration::from_millis(5)); // poll interval
        }
    }

    #[test]
    fn sigterm_kills_the_whole_group_including_background_children() {
        let mut child = spawn_group("sleep 100 & sleep 100");
        let pgid = child.id() as i32;
        wait_sleepers(pgid, 2);
        let steps = kill_until_gone(&mut child, Duration::from_secs(30));
        assert_eq!(steps, vec![KillStep::Term]);
        child.wait().ok();
    }

    #[test]
    fn sigkill_follows_the_grace_period_when_sigterm_is_ignored() {
        // The shell and both sleeps ignore SIGTERM (an ignored signal stays
        // ignored across exec).
        let mut child = spawn_group("trap '' TERM; sleep 100 & sleep 100");
        let pgid = child.id() as i32;
        wait_sleepers(pgid, 2);
        let started = Instant::now();
        let steps = kill_until_gone(&mut child, Duration::from_millis(300));
        assert_eq!(steps, vec![KillStep::Term, KillStep::Kill]);
        assert!(started.elapsed() >= Duration::from_millis(300));
        child.wait().ok();
    }

    #[test]
    fn escalation_steps() {
        let t0 = Instant::now();
        let mut e = Escalation::new(t0, Duration::from_secs(3));
        assert_eq!(e.due(t0), Some(KillStep::Term));
        assert_eq!(e.due(t0 + Duration::from_secs(1)), None);
        assert_eq!(e.due(t0 + Duration::from_secs(3)), Some(KillStep::Kill));
        assert!(e.kill_sent());
        assert_eq!(e.due(t0 + Duration::from_secs(9)), None);
        // A kill resumed after its grace went straight to SIGKILL.
        let mut late = Escalation::new(t0, Duration::ZERO);
        assert_eq!(late.due(t0), Some(KillStep::Kill));
        let mut e = Escalation::new(t0, Duration::from_secs(3));
        assert_eq!(e.due(t0), Some(KillStep::Term));
        e.retry(KillStep::Term);
        assert_eq!(e.due(t0), Some(KillStep::Term));
        // A second, quicker kill brings SIGKILL forward, never back.
        e.shorten(t0 + Duration::from_secs(10));
        assert_eq!(e.kill_at(), t0 + Duration::from_secs(3));
        e.shorten(t0);
        assert_eq!(e.due(t0), Some(KillStep::Kill));
    }

    #[test]
    fn stat_parsing_and_liveness() {
        let st = parse_stat(
            "42 (a (weird) name) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0 \
             0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
        )
        .unwrap();
        assert_eq!(
            st,
            ProcStat {
                pid: 42,
                state: 'S',
                ppid: 1,
                pgrp: 42,
                ticks: 0,
                start_time: 12345,
                rss_pages: 0,
            }
        );
        let me = std::process::id() as i32;
        let mine = proc_stat(me).unwrap();
        assert!(is_alive(me, Some(mine.start_time), None));
        assert!(!is_alive(me, Some(mine.start_time + 1), None));
        assert!(!is_alive(me, None, Some("--no-such-argument-anywhere")));
        assert!(self_rss_bytes().unwrap() > 0);
        assert!(signal_group(1, Signal::SIGTERM).is_err());
        assert!(signal_group(0, Signal::SIGTERM).is_err());
    }
}
