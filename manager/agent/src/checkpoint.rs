//! Checkpoints: small JSON files written atomically (a temporary file
//! renamed over the old one), so that a crash of the agent or of a
//! supervisor leaves either the old or the new version of a file, never a
//! torn one.
//!
//! A task's checkpoints are not flushed to disk: they describe processes
//! that die with the host, and an agent that finds the host rebooted since
//! it wrote them discards them unread ([`super::recovery`]). What must
//! outlive a reboot, the agent's id, is written durably (fsync of the file
//! and of its directory).
//!
//! Protobuf messages (`TaskInfo`, `TaskStatus`) are stored as hex-encoded
//! protobuf bytes inside the JSON, next to a few readable fields for
//! operators, so that a checkpoint survives additions to the protocol.

use super::error::AgentError;
use super::layout::files;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;
use strata_proto::ids::{FrameworkId, TaskId};
use strata_proto::pb;

// The workspace's atomic writers: a fresh temporary file beside the
// target, created exclusively (so never through a symlink), renamed over
// it; `write_atomic` also fsyncs the file and the directory.
pub use strata_proto::fsutil::{replace_atomic, write_atomic};

/// Serialises `value` as pretty JSON and writes it atomically, for this
/// boot (a task's checkpoint: see the [module](self) docs).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), AgentError> {
    replace_atomic(path, &to_json(path, value)?).map_err(|e| AgentError::io("writing", path, e))
}

/// Serialises `value` as pretty JSON and writes it atomically and durably
/// (what must outlive a reboot).
pub fn write_json_durable<T: Serialize>(path: &Path, value: &T) -> Result<(), AgentError> {
    write_atomic(path, &to_json(path, value)?).map_err(|e| AgentError::io("writing", path, e))
}

fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, AgentError> {
    serde_json::to_vec_pretty(value).map_err(|e| AgentError::CorruptCheckpoint {
        path: path.to_owned(),
        reason: format!("cannot serialise: {e}"),
    })
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, AgentError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AgentError::io("reading", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AgentError::CorruptCheckpoint {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// Lower-case hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses hex (either case); `None` on odd length or a non-hex digit.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    t.chunks(2)
        .map(|p| Some((digit(p[0])? << 4 | digit(p[1])?) as u8))
        .collect()
}

fn decode_message<M: Message + Default>(path: &Path, hex: &str) -> Result<M, AgentError> {
    let bytes = hex_decode(hex).ok_or_else(|| AgentError::CorruptCheckpoint {
        path: path.to_owned(),
        reason: "protobuf field is not hex".to_owned(),
    })?;
    M::decode(bytes.as_slice()).map_err(|e| AgentError::CorruptCheckpoint {
        path: path.to_owned(),
        reason: format!("bad protobuf: {e}"),
    })
}

/// `meta/agent.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCheckpoint {
    /// The id the manager assigned.
    pub agent_id: String,
    /// When it was written (unix seconds).
    pub registered_at: f64,
}

/// `task.json`: the task as it was asked to run, written before launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    /// The owning framework.
    pub framework_id: FrameworkId,
    /// The task id (readable copy).
    pub task_id: TaskId,
    /// The task name (readable copy).
    #[serde(default)]
    pub name: String,
    /// When the agent accepted the task (unix seconds).
    pub accepted_at: f64,
    /// The `TaskInfo`, hex-encoded protobuf.
    pub task_info: String,
}

impl TaskCheckpoint {
    /// A checkpoint of `task` for `framework_id`.
    pub fn new(framework_id: &FrameworkId, task: &pb::TaskInfo, accepted_at: f64) -> Self {
        TaskCheckpoint {
            framework_id: framework_id.clone(),
            task_id: TaskId::new(task.task_id.clone()),
            name: task.name.clone(),
            accepted_at,
            task_info: hex_encode(&task.encode_to_vec()),
        }
    }

    /// Decodes the stored `TaskInfo`.
    pub fn task_info(&self, path: &Path) -> Result<pb::TaskInfo, AgentError> {
        decode_message(path, &self.task_info)
    }
}

/// One status update as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredStatus {
    /// The state (readable copy).
    pub state: String,
    /// The `TaskStatus`, hex-encoded protobuf.
    pub status: String,
}

impl StoredStatus {
    /// Stores `status`.
    pub fn new(status: &pb::TaskStatus) -> Self {
        StoredStatus {
            state: status.state().wire_name().to_owned(),
            status: hex_encode(&status.encode_to_vec()),
        }
    }

    /// Decodes the stored `TaskStatus`.
    pub fn decode(&self, path: &Path) -> Result<pb::TaskStatus, AgentError> {
        decode_message(path, &self.status)
    }
}

/// `updates.json`: the latest state of the task and the updates not yet
/// acknowledged, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdatesCheckpoint {
    /// The latest state generated (wire name), `TASK_STAGING` until the
    /// first update.
    pub latest_state: String,
    /// Unacknowledged updates, oldest first.
    #[serde(default)]
    pub pending: Vec<StoredStatus>,
}

/// `kill.json`: a kill that was asked for and may still be in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillCheckpoint {
    /// The reason for the final update (wire name).
    pub reason: String,
    /// Seconds between SIGTERM and SIGKILL.
    pub grace_seconds: f64,
    /// When the kill was asked for (unix seconds).
    pub requested_at: f64,
}

/// Everything checkpointed for one task, as read back at recovery.
#[derive(Debug)]
pub struct RecoveredTask {
    /// The framework (from the directory name).
    pub framework_id: FrameworkId,
    /// The task id (from the directory name).
    pub task_id: TaskId,
    /// The task, if `task.json` was readable.
    pub task: Result<(TaskCheckpoint, pb::TaskInfo), AgentError>,
    /// The update queue (empty when absent).
    pub updates: Result<(pb::TaskState, Vec<pb::TaskStatus>), AgentError>,
    /// A kill in progress.
    pub kill: Option<KillCheckpoint>,
}

/// Reads the checkpoint of one task from its meta dir. Never fails: what
/// cannot be read is reported in the fields.
pub fn read_task_dir(dir: &Path, framework_id: &FrameworkId, task_id: &TaskId) -> RecoveredTask {
    let task_path = dir.join(files::TASK);
    let task = match read_json::<TaskCheckpoint>(&task_path) {
        Ok(Some(cp)) => cp.task_info(&task_path).map(|info| (cp, info)),
        Ok(None) => Err(AgentError::CorruptCheckpoint {
            path: task_path.clone(),
            reason: "it is missing".into(),
        }),
        Err(e) => Err(e),
    };
    let updates_path = dir.join(files::UPDATES);
    let updates = match read_json::<UpdatesCheckpoint>(&updates_path) {
        Ok(None) => Ok((pb::TaskState::TaskStaging, Vec::new())),
        Ok(Some(cp)) => decode_updates(&updates_path, &cp),
        Err(e) => Err(e),
    };
    let kill = read_json::<KillCheckpoint>(&dir.join(files::KILL))
        .ok()
        .flatten();
    RecoveredTask {
        framework_id: framework_id.clone(),
        task_id: task_id.clone(),
        task,
        updates,
        kill,
    }
}

fn decode_updates(
    path: &Path,
    cp: &UpdatesCheckpoint,
) -> Result<(pb::TaskState, Vec<pb::TaskStatus>), AgentError> {
    let latest = pb::TaskState::from_str_name(&cp.latest_state).ok_or_else(|| {
        AgentError::CorruptCheckpoint {
            path: path.to_owned(),
            reason: format!("unknown state {:?}", cp.latest_state),
        }
    })?;
    let pending = cp
        .pending
        .iter()
        .map(|s| s.decode(path))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((latest, pending))
}

/// Lists the sub-directories of `dir` whose names are valid ids (others are
/// logged by the caller through the second list).
pub fn list_dirs(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return (good, bad);
    };
    for entry in entries.flatten() {
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) if super::layout::validate_id("directory", &name).is_ok() => good.push(name),
            Ok(name) => bad.push(name),
            Err(name) => bad.push(name.to_string_lossy().into_owned()),
        }
    }
    good.sort();
    bad.sort();
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> pb::TaskInfo {
        pb::TaskInfo {
            task_id: "t1".into(),
            name: "web".into(),
            command: Some(pb::CommandInfo {
                value: "echo hi".into(),
                shell: true,
                ..Default::default()
            }),
            resources: strata_proto::resources::Resources::new(0.5, 64.0).to_proto(false),
            ..Default::default()
        }
    }

    #[test]
    fn hex_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(&hex_encode(&bytes)).unwrap(), bytes);
        assert_eq!(hex_decode("0A"), Some(vec![10]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }

    #[test]
    fn task_and_updates_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let info = task();
        write_json(
            &d.join(files::TASK),
            &TaskCheckpoint::new(&"fw".into(), &info, 12.5),
        )
        .unwrap();
        let status = pb::TaskStatus {
            task_id: "t1".into(),
            state: pb::TaskState::TaskRunning as i32,
            uuid: strata_proto::ids::new_update_uuid(),
            message: "pid 7".into(),
            ..Default::default()
        };
        let updates = UpdatesCheckpoint {
            latest_state: "TASK_RUNNING".into(),
            pending: vec![StoredStatus::new(&status)],
        };
        write_json(&d.join(files::UPDATES), &updates).unwrap();
        let kill = KillCheckpoint {
            reason: "REASON_PREEMPTED".into(),
            grace_seconds: 5.0,
            requested_at: 100.0,
        };
        write_json(&d.join(files::KILL), &kill).unwrap();

        let r = read_task_dir(d, &"fw".into(), &"t1".into());
        let (cp, back) = r.task.unwrap();
        assert_eq!(back, info);
        assert_eq!(cp.accepted_at, 12.5);
        let (latest, pending) = r.updates.unwrap();
        assert_eq!(latest, pb::TaskState::TaskRunning);
        assert_eq!(pending, vec![status]);
        assert_eq!(r.kill, Some(kill));
    }

    #[test]
    fn agent_checkpoint_round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.json");
        assert_eq!(read_json::<AgentCheckpoint>(&p).unwrap(), None);
        let cp = AgentCheckpoint {
            agent_id: "agent-1".into(),
            registered_at: 1.0,
        };
        write_json(&p, &cp).unwrap();
        assert_eq!(read_json::<AgentCheckpoint>(&p).unwrap(), Some(cp));
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn corrupt_checkpoints_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join(files::TASK), b"{not json").unwrap();
        fs::write(
            d.join(files::UPDATES),
            br#"{"latest_state":"TASK_BOGUS","pending":[]}"#,
        )
        .unwrap();
        let r = read_task_dir(d, &"fw".into(), &"t1".into());
        assert!(r.task.is_err());
        assert!(r.updates.unwrap_err().to_string().contains("TASK_BOGUS"));
        let empty = tempfile::tempdir().unwrap();
        let r = read_task_dir(empty.path(), &"fw".into(), &"t1".into());
        assert!(r.task.unwrap_err().to_string().contains("missing"));
        assert_eq!(r.updates.unwrap(), (pb::TaskState::TaskStaging, vec![]));
    }

    #[test]
    fn write_atomic_does_not_follow_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        fs::write(&target, b"keep").unwrap();
        let p = dir.path().join("exit_status.json");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        replace_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }
}
