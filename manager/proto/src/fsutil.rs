//! Durable, atomic file writes: the one way Strata replaces a small file
//! that must survive a crash whole (the agent's checkpoints, the services
//! scheduler's `services.json`, a job's `job.json`, the discovery file).
//!
//! [`write_atomic`] writes a fresh temporary file in the same directory
//! (created exclusively, so never through a symlink), fsyncs it, renames it
//! over the target and fsyncs the directory, so that a crash leaves either
//! the old or the new content, never a torn file, and a write that returned
//! `Ok` is on disk. Every error is returned; the temporary file is removed
//! when the write fails before the rename.
//!
//! [`replace_atomic`] is the same without the two fsyncs: a crash of the
//! writing process still leaves the old or the new content (the page cache
//! outlives the process), but a crash of the host may leave neither. It is
//! for state that dies with the host anyway: the agent's per-task
//! checkpoints, which an agent discards after a reboot (its tasks died with
//! the host), so the launch of a task costs no disk flush.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Tells apart the temporary files of concurrent writes in one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically and durably, as a file of mode
/// `0o644` (less the umask). See the [module](self) documentation.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with the new file's permission bits (less the umask) on
/// Unix; `0o600` for a file only its owner may read. The file has these
/// permissions from its creation on, so no other user can open it while it
/// is written.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, true)?;
    // Make the rename itself durable.
    sync_dir(parent_dir(path))
}

/// Replaces `path` with `bytes` atomically for the processes of this boot,
/// without flushing anything to disk (see the [module](self) docs): for
/// state that a host crash makes worthless anyway.
pub fn replace_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, 0o644, false)
}

/// Writes a fresh temporary file (fsynced when `sync`) and renames it over
/// `path`.
fn replace(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = temporary_path(dir, path)?;
    let written = write_new(&tmp, bytes, mode, sync).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // Best effort: the write already failed, and a leftover temporary
        // file is harmless (its name is never read).
        fs::remove_file(&tmp).ok();
        return Err(e);
    }
    Ok(())
}

/// Fsyncs a directory, making the creation, renaming or removal of its
/// entries durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A fresh hidden name beside the target: `.{name}.tmp.{pid}.{n}`.
fn temporary_path(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    Ok(dir.join(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Creates `tmp` (it must not exist), writes `bytes` and, when `sync`,
/// fsyncs it.
fn write_new(tmp: &Path, bytes: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(tmp)?;
    f.write_all(bytes)?;
    if sync { f.sync_all() } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_and_replaces_leaving_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomic(&path, b"two, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two, longer");
        replace_atomic(&path, b"three").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert_eq!(entries(dir.path()), ["state.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_mode_holds_from_creation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.json");
        write_atomic_mode(&path, b"token", 0o600).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }

    #[test]
    fn a_failed_write_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing").join("state.json");
        assert!(write_atomic(&missing, b"x").is_err());
        // The target is a directory: the rename fails, the temporary file
        // is removed.
        let target = dir.path().join("taken");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"x").unwrap();
        assert!(write_atomic(&target, b"x").is_err());
        assert_eq!(entries(dir.path()), ["taken"]);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let e = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("job.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/job.json")), Path::new("a"));
    }
}
