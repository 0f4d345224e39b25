//! Killing a task: SIGTERM to its process group (and cgroup), SIGKILL
//! after the grace period, `TASK_KILLED` whatever the exit.

use super::checkpoint::{KillCheckpoint, write_json};
use super::containerizer::{ContainerRecord, Containerizer, Signalled};
use super::core::{Core, KillState, TaskKey};
use super::layout::files;
use super::process::Escalation;
use super::supervisor::unix_now;
use std::time::{Duration, Instant};
use strata_proto::ids::{FrameworkId, TaskId};
use strata_proto::pb::{self, Reason, TaskState};
use tracing::{debug, error, info, warn};

/// The default grace between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);

/// The longest grace accepted.
pub const MAX_KILL_GRACE: Duration = Duration::from_secs(24 * 3600);

impl Core {
    /// Handles `KillTask` (and each task of `ShutdownFramework`).
    pub(super) fn kill_task(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        grace: Option<f64>,
        reason: Reason,
    ) {
        let key: TaskKey = (framework_id.clone(), task_id.clone());
        let Some(t) = self.tasks.get_mut(&key) else {
            warn!(%framework_id, %task_id, "kill for an unknown task ignored");
            return;
        };
        if t.state.is_terminal() {
            debug!(%framework_id, %task_id, state = %t.state, "kill for a finished task ignored");
            return;
        }
        let grace = kill_grace(grace, t.info.kill_policy.as_ref());
        let reason = if reason == Reason::Unspecified {
            Reason::KilledByFramework
        } else {
            reason
        };
        let now = Instant::now();
        if let Some(k) = &mut t.kill {
            // A second kill may only make it quicker (a preemption grace).
            k.escalation.shorten(now + grace);
            self.step_kill(&key);
            return;
        }
        info!(%framework_id, %task_id,
            grace_seconds = grace.as_secs_f64(),
            reason = reason.wire_name(),
            "killing task"
        );
        if let Some(dir) = &t.meta_dir {
            let cp = KillCheckpoint {
                reason: reason.wire_name().to_owned(),
                grace_seconds: grace.as_secs_f64(),
                requested_at: unix_now(),
            };
            if let Err(e) = write_json(&dir.join(files::KILL), &cp) {
                error!(%framework_id, %task_id, error = %e, "cannot checkpoint the kill");
            }
        }
        t.kill = Some(KillState {
            reason,
            escalation: Escalation::new(now, grace),
        });
        if t.container.is_none() {
            self.update(
                &key,
                TaskState::TaskKilled,
                reason,
                "task killed before it was launched".into(),
                None,
            );
            return;
        }
        self.step_kill(&key);
    }

    /// Sends the kill signal that is due, if any.
    pub(super) fn step_kill(&mut self, key: &TaskKey) {
        let now = Instant::now();
        let Some(t) = self.tasks.get_mut(key) else {
            return;
        };
        let (Some(kill), Some(record)) = (&mut t.kill, &t.container) else {
            return;
        };
        let Some(step) = kill.escalation.due(now) else {
            return;
        };
        let c: &dyn Containerizer = match record {
            ContainerRecord::Process { .. } => self.process.as_ref(),
            ContainerRecord::Docker { .. } => &self.docker,
        };
        match c.signal(record, step) {
            Signalled::Sent => {
                info!(task_id = %t.info.task_id, signal = ?step, "signal sent to the task");
            }
            Signalled::NotYet => kill.escalation.retry(step),
            Signalled::Gone => debug!(task_id = %t.info.task_id, "nothing left to signal"),
        }
    }
}

/// The grace between SIGTERM and SIGKILL: the kill's override when valid,
/// else the task's kill policy when positive, else 3 s (at most a day).
pub fn kill_grace(override_seconds: Option<f64>, policy: Option<&pb::KillPolicy>) -> Duration {
    let valid = |s: f64| s.is_finite() && s >= 0.0;
    let seconds = match override_seconds {
        Some(s) if valid(s) => Some(s),
        _ => policy
            .map(|p| p.grace_period_seconds)
            .filter(|s| valid(*s) && *s > 0.0),
    };
    seconds
        .map(|s| Duration::from_secs_f64(s.min(MAX_KILL_GRACE.as_secs_f64())))
        .unwrap_or(DEFAULT_KILL_GRACE)
}

/// The escalation of a kill found in a checkpoint, asked for at
/// `requested_at` (unix seconds): overdue kills go straight to SIGKILL.
pub(crate) fn resumed_escalation(requested_at: f64, grace: Duration) -> Escalation {
    let elapsed = (unix_now() - requested_at).max(0.0);
    let now = Instant::now();
    let requested = now
        .checked_sub(Duration::from_secs_f64(
            elapsed.min(MAX_KILL_GRACE.as_secs_f64()),
        ))
        .unwrap_or(now);
    Escalation::new(requested, grace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::KillStep;

    #[test]
    fn kill_grace_prefers_the_override_then_the_policy() {
        let policy = pb::KillPolicy {
            grace_period_seconds: 10.0,
        };
        assert_eq!(kill_grace(None, None), DEFAULT_KILL_GRACE);
        assert_eq!(kill_grace(None, Some(&policy)), Duration::from_secs(10));
        assert_eq!(
            kill_grace(Some(1.5), Some(&policy)),
            Duration::from_millis(1500)
        );
        assert_eq!(kill_grace(Some(0.0), Some(&policy)), Duration::ZERO);
        assert_eq!(
            kill_grace(Some(f64::NAN), Some(&policy)),
            Duration::from_secs(10)
        );
        assert_eq!(kill_grace(Some(-1.0), None), DEFAULT_KILL_GRACE);
        let zero = pb::KillPolicy {
            grace_period_seconds: 0.0,
        };
        assert_eq!(kill_grace(None, Some(&zero)), DEFAULT_KILL_GRACE);
        assert_eq!(kill_grace(Some(1e12), None), MAX_KILL_GRACE);
    }

    #[test]
    fn a_kill_asked_for_long_ago_goes_straight_to_sigkill() {
        let mut e = resumed_escalation(unix_now() - 60.0, Duration::from_secs(3));
        assert_eq!(e.due(Instant::now()), Some(KillStep::Kill));
        let mut e = resumed_escalation(unix_now(), Duration::from_secs(30));
        assert_eq!(e.due(Instant::now()), Some(KillStep::Term));
    }
}
