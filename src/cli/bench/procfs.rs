//! What the benchmarks read of processes and the machine in `/proc`:
//! peak and current resident memory, CPU time, parents and command lines,
//! and the resident pages of mapped files counted once across processes.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

/// A process's peak resident memory (`VmHWM`), bytes.
pub(super) fn peak_rss(pid: u32) -> Option<u64> {
    status_kib(&format!("/proc/{pid}/status"), "VmHWM:").map(|k| k * 1024)
}

/// A process's current resident memory of one kind (`RssAnon:`,
/// `RssFile:`), bytes.
pub(super) fn rss_kind(pid: u32, field: &str) -> u64 {
    status_kib(&format!("/proc/{pid}/status"), field).map_or(0, |k| k * 1024)
}

pub(super) fn status_kib(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resets this process's `VmHWM` to its current resident size.
pub(super) fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!(
            "warning: cannot reset this process's peak memory ({e}); the driver's figure includes what ran before the cluster"
        );
    }
}

/// Bytes free (for unprivileged users) on the file system of `path`.
pub(super) fn free_disk(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) with a valid C string and a zeroed out-struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// CPU time (user + system) of a process, seconds.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    Some(stat.utime.saturating_add(stat.stime) as f64 / clock_ticks())
}

pub(super) fn clock_ticks() -> f64 {
    procfs::ticks_per_second().max(1) as f64
}

/// CPU time the whole machine has used (not idle, not waiting), seconds.
pub(super) fn machine_cpu_seconds() -> f64 {
    use procfs::CurrentSI;
    let Ok(stat) = procfs::KernelStats::current() else {
        return 0.0;
    };
    let t = &stat.total;
    // Guest time is counted in user time already.
    let busy = t.user + t.nice + t.system + t.irq.unwrap_or(0) + t.softirq.unwrap_or(0);
    busy as f64 / clock_ticks()
}

/// The fraction of the machine's CPUs busy over `over`.
pub(super) fn cpu_busy(over: Duration) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let before = machine_cpu_seconds();
    std::thread::sleep(over);
    (machine_cpu_seconds() - before) / (over.as_secs_f64() * cpus)
}

pub(super) fn parent_pid(pid: u32) -> Option<u32> {
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    u32::try_from(stat.ppid).ok()
}

pub(super) fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The bytes of the files mapped by `pids` that are resident, each page
/// counted once however many of the processes map it (their binary's
/// code above all: every process of a cluster maps the same `strata`).
/// Reads `/proc/PID/maps` and `/proc/PID/pagemap`; processes that cannot
/// be read are skipped.
pub(super) fn resident_file_bytes(pids: &[u32]) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let mut pages: HashSet<(String, u64, u64)> = HashSet::new();
    for pid in pids {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let Ok(pagemap) = std::fs::File::open(format!("/proc/{pid}/pagemap")) else {
            continue;
        };
        for line in maps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(range), Some(offset), Some(dev), Some(inode)) =
                (f.first(), f.get(2), f.get(3), f.get(4))
            else {
                continue;
            };
            let Ok(inode) = inode.parse::<u64>() else {
                continue;
            };
            let Some((start, end)) = range.split_once('-') else {
                continue;
            };
            let (Ok(start), Ok(end), Ok(offset)) = (
                u64::from_str_radix(start, 16),
                u64::from_str_radix(end, 16),
                u64::from_str_radix(offset, 16),
            ) else {
                continue;
            };
            if inode == 0 || end <= start {
                continue;
            }
            let n = ((end - start) / page) as usize;
            let mut entries = vec![0u8; n * 8];
            if pagemap
                .read_exact_at(&mut entries, start / page * 8)
                .is_err()
            {
                continue;
            }
            for (i, e) in entries.chunks_exact(8).enumerate() {
                let Ok(e) = <[u8; 8]>::try_from(e).map(u64::from_le_bytes) else {
                    continue;
                };
                if e >> 63 == 1 {
                    pages.insert((dev.to_string(), inode, offset / page + i as u64));
                }
            }
        }
    }
    pages.len() as u64 * page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_counted_twice_has_its_file_pages_once() {
        let me = std::process::id();
        let once = resident_file_bytes(&[me]);
        assert!(once > 0, "this test binary's code is resident");
        // Counted twice, the pages are not doubled (pages may come and go
        // between the two reads, so not exactly equal).
        let twice = resident_file_bytes(&[me, me]);
        assert!(twice.abs_diff(once) < once / 10, "{twice} vs {once}");
        let file = status_kib(&format!("/proc/{me}/status"), "RssFile:").unwrap() * 1024;
        // Near the kernel's own count; tests running beside this one fault
        // pages in and out, so only the order of magnitude is checked.
        assert!(once.abs_diff(file) < file / 2, "{once} vs RssFile {file}");
    }
}
