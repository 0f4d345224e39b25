//! Marathon-shaped JSON views of apps, tasks and deployments, with only the
//! keys Marathon's clients know.

use serde_json::{Value, json};
use strata_proto::pb::TaskState;

use super::app::AppId;
use super::core::{App, Deployment, Instance, Timestamp};

/// Milliseconds since the epoch as `2026-11-24T21:38:00.000Z`.
pub fn iso8601(at: Timestamp) -> String {
    at.iso8601()
}

/// An app with its counts, deployments and (with `tasks`) its tasks.
pub fn app(id: &AppId, a: &App, tasks: bool) -> Value {
    let mut v = serde_json::to_value(&a.def).unwrap_or_else(|_| json!({}));
    let live: Vec<&Instance> = a.instances.values().collect();
    let count = |f: &dyn Fn(&Instance) -> bool| live.iter().filter(|i| f(i)).count();
    let has_checks = !a.def.health_checks.is_empty();
    v["tasksStaged"] = json!(count(&|i| i.state != TaskState::TaskRunning));
    v["tasksRunning"] = json!(count(&|i| i.state == TaskState::TaskRunning));
    v["tasksHealthy"] = json!(if has_checks {
        count(&|i| a.is_healthy(i))
    } else {
        0
    });
    v["tasksUnhealthy"] = json!(count(&|i| i.healthy == Some(false)));
    v["deployments"] = json!(
        a.deployment
            .iter()
            .map(|d| json!({"id": d}))
            .collect::<Vec<_>>()
    );
    if let Some(f) = &a.last_failure {
        v["lastTaskFailure"] = json!({
            "appId": id.as_str(),
            "taskId": f.task_id.as_str(),
            "state": f.state,
            "message": f.message,
            "timestamp": iso8601(f.at),
            "version": a.def.version,
        });
    }
    if tasks {
        v["tasks"] = json!(live.iter().map(|i| task(id, a, i)).collect::<Vec<_>>());
    }
    v
}

/// One task (instance) of an app.
pub fn task(id: &AppId, a: &App, i: &Instance) -> Value {
    let mut t = json!({
        "id": i.task_id.as_str(),
        "appId": id.as_str(),
        "host": i.host,
        "ports": i.ports,
        "servicePorts": a.def.route_ports().iter().map(|p| p.service_port).collect::<Vec<_>>(),
        "ipAddresses": [],
        "slaveId": i.agent_id.as_str(),
        "stagedAt": iso8601(i.staged_at),
        "state": i.state.as_str_name(),
        "version": i.config_version,
    });
    if let Some(s) = i.started_at {
        t["startedAt"] = json!(iso8601(s));
    }
    if !a.def.health_checks.is_empty() {
        t["healthCheckResults"] = json!([{
            "taskId": i.task_id.as_str(),
            "alive": a.is_healthy(i),
            "consecutiveFailures": i.failures,
            "lastFailureCause": if i.healthy == Some(false) { i.last_check.clone() } else { None },
        }]);
    }
    t
}

/// One deployment.
pub fn deployment(d: &Deployment) -> Value {
    let action = json!({"action": d.action, "app": d.app.as_str()});
    json!({
        "id": d.id,
        "version": d.version,
        "affectedApps": [d.app.as_str()],
        "affectedPods": [],
        "steps": [{"actions": [action.clone()]}],
        "currentActions": [action],
        "currentStep": 1,
        "totalSteps": 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_marathons() {
        assert_eq!(
            iso8601(Timestamp::from_millis(0)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            iso8601(Timestamp::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            iso8601(Timestamp::from_millis(1_795_556_280_000)),
            "2026-11-24T21:38:00.000Z"
        );
    }
}
