//! A disk of its own for a test or a benchmark: a journaled ext4 (as a
//! host's disk is) on a loop device, mounted at a directory, and, asked
//! for, slow: its writes throttled for chosen processes by a cgroup v1
//! blkio controller (`blkio.throttle.write_iops_device`). Unmounted,
//! detached and removed when dropped. Needs root and loop devices.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted loop-device file system.
pub struct LoopDisk {
    /// Where it is mounted.
    pub dir: PathBuf,
    device: String,
    image: PathBuf,
    /// The blkio cgroup throttling it, once [`LoopDisk::throttle`]d.
    cgroup: Option<PathBuf>,
}

/// Runs a command; its trimmed standard output when it succeeds.
fn run(args: &[&str]) -> Option<String> {
    let out = Command::new(args[0]).args(&args[1..]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl LoopDisk {
    /// A `bytes` ext4 mounted at `dir` (its image beside it), or `None`
    /// where one cannot be made here.
    pub fn mount(dir: &Path, bytes: u64) -> Option<LoopDisk> {
        std::fs::create_dir_all(dir).ok()?;
        let image = dir.with_extension("img");
        std::fs::File::create(&image).ok()?.set_len(bytes).ok()?;
        let device = run(&["losetup", "--find", "--show", image.to_str()?])?;
        let disk = LoopDisk {
            dir: dir.to_owned(),
            device,
            image,
            cgroup: None,
        };
        run(&["mkfs.ext4", "-q", &disk.device])?;
        run(&["mount", &disk.device, dir.to_str()?])?;
        Some(disk)
    }

    /// Throttles the disk's writes to `iops` a second for the processes
    /// put under it ([`LoopDisk::slow_down`]); `None` without the blkio
    /// controller.
    pub fn throttle(mut self, iops: u32) -> Option<LoopDisk> {
        let blkio = Path::new("/sys/fs/cgroup/blkio");
        if !blkio.is_dir() {
            return None;
        }
        let numbers = run(&["lsblk", "-dno", "MAJ:MIN", &self.device])?.replace(' ', "");
        let name = self.device.rsplit('/').next().unwrap_or("loop");
        let cgroup = blkio.join(format!("strata-slow-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&cgroup).ok()?;
        self.cgroup = Some(cgroup.clone());
        std::fs::write(
            cgroup.join("blkio.throttle.write_iops_device"),
            format!("{numbers} {iops}"),
        )
        .ok()?;
        Some(self)
    }

    /// Puts process `pid` under the throttle (nothing when unthrottled).
    pub fn slow_down(&self, pid: i32) {
        if let Some(cg) = &self.cgroup {
            std::fs::write(cg.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("cannot throttle pid {pid}: {e}"));
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            Command::new(args[0]).args(&args[1..]).status().ok();
        };
        quiet(&["umount", "-l", self.dir.to_str().unwrap_or_default()]);
        quiet(&["losetup", "-d", &self.device]);
        if let Some(cg) = &self.cgroup {
            std::fs::remove_dir(cg).ok();
        }
        std::fs::remove_file(&self.image).ok();
    }
}
