//! The audit log: every decision that changes the cluster, one JSON object
//! per line (`time`, `principal`, `action`, `object`, `result`), appended
//! to a file and flushed before the change is answered.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use strata_proto::time::Timestamp;

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (ISO 8601, UTC).
    pub time: String,
    /// Who: a principal's name, `operator` (the cluster's token) or
    /// `anonymous`.
    pub principal: String,
    /// What (an ACL action, or `create_principal`, `revoke_principal`).
    pub action: String,
    /// On what.
    pub object: String,
    /// `allowed`, `denied`, or `failed: <why>`.
    pub result: String,
}

/// An append-only JSON-lines file.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Opens (or creates) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry (one `write` of the whole line) and flushes it.
    pub fn record(
        &self,
        at: Timestamp,
        principal: &str,
        action: &str,
        object: &str,
        result: &str,
    ) -> std::io::Result<()> {
        let entry = AuditEntry {
            time: at.iso8601(),
            principal: principal.to_owned(),
            action: action.to_owned(),
            object: object.to_owned(),
            result: result.to_owned(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)?;
        f.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let at = Timestamp::from_millis(1_795_556_280_000);
        log.record(at, "ops", "update_roles", "analytics", "allowed")
            .unwrap();
        log.record(at, "intern", "teardown_frameworks", "m1-0001", "denied")
            .unwrap();
        drop(log);
        // Reopened, it appends.
        AuditLog::open(&path)
            .unwrap()
            .record(at, "operator", "create_principal", "etl", "allowed")
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let entries: Vec<AuditEntry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].time, "2026-11-24T21:38:00.000Z");
        assert_eq!(entries[1].result, "denied");
        assert_eq!(entries[2].principal, "operator");
    }
}
