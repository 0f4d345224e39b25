//! Helpers on the generated task-state and reason enums.

use crate::pb::{Reason, TaskState};

impl TaskState {
    /// Whether no further update can follow (Mesos's terminal states).
    /// `TASK_LOST` and `TASK_UNREACHABLE` are not terminal: the task may be
    /// seen running again when its agent returns.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::TaskFinished
                | TaskState::TaskFailed
                | TaskState::TaskKilled
                | TaskState::TaskError
                | TaskState::TaskDropped
                | TaskState::TaskGone
                | TaskState::TaskGoneByOperator
        )
    }

    /// Whether the task holds its resources on an agent in this state.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            TaskState::TaskStaging
                | TaskState::TaskStarting
                | TaskState::TaskRunning
                | TaskState::TaskKilling
                | TaskState::TaskUnreachable
        )
    }

    /// The wire name, e.g. `TASK_RUNNING`.
    pub fn wire_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl Reason {
    /// The wire name, e.g. `REASON_PREEMPTED`.
    pub fn wire_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_mesos() {
        assert_eq!(TaskState::TaskRunning.wire_name(), "TASK_RUNNING");
        assert_eq!(
            TaskState::TaskGoneByOperator.wire_name(),
            "TASK_GONE_BY_OPERATOR"
        );
        assert_eq!(Reason::Preempted.wire_name(), "REASON_PREEMPTED");
        assert!(TaskState::TaskFinished.is_terminal());
        assert!(!TaskState::TaskLost.is_terminal());
        assert!(!TaskState::TaskUnreachable.is_terminal());
    }
}
