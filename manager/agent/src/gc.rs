//! Sandbox garbage collection.
//!
//! A sandbox is removed once its task is done (terminal update acknowledged,
//! so no checkpoint is left in `meta/` and the agent no longer holds it) and
//! it ended more than `sandbox_retention` ago: the age is that of the
//! sandbox's `exit_status.json`, or of the directory when there is none.
//! Framework directories left empty are removed too. The GC runs at startup
//! (after recovery, which also covers sandboxes left by a crash) and then
//! every `gc_interval`.

use super::core::Shared;
use super::layout::{Layout, files};
use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strata_proto::ids::{FrameworkId, TaskId};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// One sandbox found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxEntry {
    /// `sandboxes/<framework_id>/<task_id>`.
    pub path: PathBuf,
    /// When the task ended (or the directory last changed).
    pub ended_at: SystemTime,
    /// Whether the task is still held by the agent (running or with
    /// unacknowledged updates).
    pub live: bool,
}

/// The sandboxes to remove: not live and ended more than `retention` before
/// `now`.
pub fn select_expired(
    entries: &[SandboxEntry],
    now: SystemTime,
    retention: Duration,
) -> Vec<PathBuf> {
    entries
        .iter()
        .filter(|e| !e.live)
        .filter(|e| {
            now.duration_since(e.ended_at)
                .is_ok_and(|age| age >= retention)
        })
        .map(|e| e.path.clone())
        .collect()
}

/// Lists every sandbox; `live` holds the tasks the agent holds.
fn scan(layout: &Layout, live: &HashSet<(FrameworkId, TaskId)>) -> Vec<SandboxEntry> {
    let mut out = Vec::new();
    let Ok(frameworks) = fs::read_dir(layout.sandboxes_dir()) else {
        return out;
    };
    for fw in frameworks.flatten() {
        let fw_name = fw.file_name().to_string_lossy().into_owned();
        let Ok(tasks) = fs::read_dir(fw.path()) else {
            continue;
        };
        for t in tasks.flatten() {
            if !t.file_type().is_ok_and(|ft| ft.is_dir()) {
                continue;
            }
            let task_name = t.file_name().to_string_lossy().into_owned();
            let path = t.path();
            let key = (
                FrameworkId::new(fw_name.clone()),
                TaskId::new(task_name.clone()),
            );
            let is_live = live.contains(&key) || layout.task_meta_dir(&key.0, &key.1).exists();
            let ended_at = fs::symlink_metadata(path.join(files::EXIT_STATUS))
                .or_else(|_| fs::symlink_metadata(&path))
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| SystemTime::now());
            out.push(SandboxEntry {
                path,
                ended_at,
                live: is_live,
            });
        }
    }
    out
}

/// One collection: removes expired sandboxes and empty framework dirs;
/// returns how many sandboxes were removed.
pub(crate) fn collect(
    layout: &Layout,
    live: &HashSet<(FrameworkId, TaskId)>,
    retention: Duration,
) -> usize {
    let entries = scan(layout, live);
    let expired = select_expired(&entries, SystemTime::now(), retention);
    let mut removed = 0;
    for path in &expired {
        match fs::remove_dir_all(path) {
            Ok(()) => {
                removed += 1;
                info!(sandbox = %path.display(), "sandbox removed");
            }
            Err(e) => warn!(sandbox = %path.display(), error = %e, "cannot remove sandbox"),
        }
    }
    if let Ok(frameworks) = fs::read_dir(layout.sandboxes_dir()) {
        for fw in frameworks.flatten() {
            // Fails unless empty, which is what we want.
            if fs::remove_dir(fw.path()).is_ok() {
                debug!(dir = %fw.path().display(), "empty framework sandbox dir removed");
            }
        }
    }
    removed
}

fn live_tasks(shared: &Shared) -> HashSet<(FrameworkId, TaskId)> {
    shared
        .tasks
        .lock()
        .map(|t| {
            t.iter()
                .map(|s| (s.framework_id.clone(), s.task_id.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Collects now and then every `interval` until `shutdown`.
pub(crate) async fn run(
    shared: Arc<Shared>,
    retention: Duration,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = interval.max(Duration::from_millis(10));
    loop {
        let layout = shared.layout.clone();
        let live = live_tasks(&shared);
        tokio::task::spawn_blocking(move || collect(&layout, &live, retention))
            .await
            .ok();
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_age_skips_live_sandboxes() {
        let now = SystemTime::now();
        let h = Duration::from_secs(3600);
        let e = |p: &str, age: Duration, live: bool| SandboxEntry {
            path: p.into(),
            ended_at: now - age,
            live,
        };
        let entries = vec![
            e("old", 3 * h, false),
            e("young", h / 2, false),
            e("old-live", 5 * h, true),
            e("exactly", 2 * h, false),
        ];
        assert_eq!(
            select_expired(&entries, now, 2 * h),
            vec![PathBuf::from("old"), PathBuf::from("exactly")]
        );
        // A clock that went backwards never removes anything.
        let future = vec![SandboxEntry {
            path: "f".into(),
            ended_at: now + h,
            live: false,
        }];
        assert!(select_expired(&future, now, Duration::ZERO).is_empty());
    }

    #[test]
    fn collection_removes_done_sandboxes_and_empty_framework_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        for (fw, t) in [
            ("f1", "done"),
            ("f1", "held"),
            ("f1", "checkpointed"),
            ("f2", "done"),
        ] {
            let sb = l.sandbox_dir(&fw.into(), &t.into());
            fs::create_dir_all(&sb).unwrap();
            fs::write(sb.join(files::EXIT_STATUS), b"{}").unwrap();
        }
        fs::create_dir_all(l.task_meta_dir(&"f1".into(), &"checkpointed".into())).unwrap();
        let live: HashSet<_> = [("f1".into(), "held".into())].into();
        // Young sandboxes are kept.
        assert_eq!(collect(&l, &live, Duration::from_secs(3600)), 0);
        assert_eq!(collect(&l, &live, Duration::ZERO), 2);
        assert!(!l.sandbox_dir(&"f1".into(), &"done".into()).exists());
        assert!(l.sandbox_dir(&"f1".into(), &"held".into()).exists());
        assert!(l.sandbox_dir(&"f1".into(), &"checkpointed".into()).exists());
        assert!(!l.sandboxes_dir().join("f2").exists());
    }
}
