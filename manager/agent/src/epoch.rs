//! The highest manager epoch this agent has registered with, kept across
//! restarts (`meta/manager_epoch`). A manager that registers the agent
//! with a lower epoch is a deposed leader (paused or cut off past its
//! lease, and not yet aware of it): the agent refuses it and looks for the
//! leader, so a deposed leader never commands it again.

use std::path::PathBuf;
use std::sync::Mutex;

use tracing::warn;

/// The highest epoch seen, in memory and on disk.
#[derive(Debug)]
pub(crate) struct EpochGuard {
    path: PathBuf,
    highest: Mutex<u64>,
}

impl EpochGuard {
    /// Loads the highest epoch recorded at `path` (0 when none is).
    pub(crate) fn load(path: PathBuf) -> EpochGuard {
        let highest = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        EpochGuard {
            path,
            highest: Mutex::new(highest),
        }
    }

    /// The highest epoch seen.
    pub(crate) fn highest(&self) -> u64 {
        *self.highest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a manager of `epoch` may command this agent: not lower than
    /// the highest seen. A higher one becomes the highest, durably (a
    /// failed write is logged; the agent still goes on with the new
    /// leader, which fencing in the store protects).
    pub(crate) fn admit(&self, epoch: u64) -> bool {
        let mut highest = self.highest.lock().unwrap_or_else(|e| e.into_inner());
        if epoch < *highest {
            return false;
        }
        if epoch > *highest {
            *highest = epoch;
            if let Err(e) =
                strata_proto::fsutil::write_atomic(&self.path, epoch.to_string().as_bytes())
            {
                warn!(path = %self.path.display(), error = %e,
                    "cannot record the manager's epoch");
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_epoch_is_refused_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manager_epoch");
        let g = EpochGuard::load(path.clone());
        assert_eq!(g.highest(), 0);
        assert!(g.admit(0));
        assert!(g.admit(7));
        assert!(g.admit(7), "the same leader again");
        assert!(!g.admit(6), "a deposed leader");
        let g = EpochGuard::load(path);
        assert_eq!(g.highest(), 7);
        assert!(!g.admit(3));
        assert!(g.admit(9));
    }
}
