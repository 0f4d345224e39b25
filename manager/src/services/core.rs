//! The services scheduler's state machine, sans IO.
//!
//! [`Services`] holds the apps, their instances and deployments. Every input
//! is a method call with the current wall-clock time in milliseconds; the
//! effects it wants carried out (launches, kills, declines, demand, a
//! snapshot write) are appended to an outbox that the runner drains with
//! [`Services::drain`]. After each input the runner calls
//! [`Services::step`], which re-plans every app with [`plan::step`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use strata_proto::class::PriorityClasses;
use strata_proto::ids::{AgentId, OfferId, TaskId};
use strata_proto::pb::{Reason, TaskState};
use strata_sdk::{Ask, Offer, TaskInfo, TaskStatus};
use tracing::{info, warn};

use super::app::{AppDefinition, AppId};
use super::error::ServiceError;
use super::launch;
use super::plan::{self, Live, Target};
use super::view::iso8601;

pub use super::state::{Action, App, Deployment, Failure, Instance, Snapshot};

pub use strata_proto::time::Timestamp;

/// An instance that has run healthy this long after the last failure
/// resets the app's restart backoff.
pub const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// Something the runner must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Launch tasks on an offer.
    Launch {
        /// The offer used.
        offer: OfferId,
        /// The tasks.
        tasks: Vec<TaskInfo>,
    },
    /// Decline offers that no app can use now.
    Decline(Vec<OfferId>),
    /// Kill a task.
    Kill {
        /// The task.
        task: TaskId,
        /// Its agent, when known.
        agent: Option<AgentId>,
    },
    /// Replace the framework's demand (empty: suppress offers).
    Demand(Vec<Ask>),
    /// The state changed: write a snapshot.
    Persist,
}

/// The services scheduler's state.
pub struct Services {
    classes: PriorityClasses,
    apps: BTreeMap<AppId, App>,
    deployments: BTreeMap<String, Deployment>,
    seq: u64,
    last_version: Timestamp,
    outbox: Vec<Effect>,
    demand: Vec<Ask>,
    default_user: Option<String>,
    /// Agents being drained: their instances are replaced elsewhere.
    draining: BTreeSet<AgentId>,
}

impl Services {
    /// Empty state, or the state of a snapshot.
    pub fn new(classes: PriorityClasses, snapshot: Snapshot) -> Self {
        let apps = snapshot
            .apps
            .into_iter()
            .filter_map(|a| Some((AppId::parse(&a.def.id).ok()?, a)))
            .collect();
        Services {
            classes,
            apps,
            deployments: snapshot
                .deployments
                .into_iter()
                .map(|d| (d.id.clone(), d))
                .collect(),
            seq: snapshot.seq,
            last_version: snapshot.last_version,
            outbox: Vec::new(),
            demand: Vec::new(),
            default_user: None,
            draining: BTreeSet::new(),
        }
    }

    /// The user instances of apps that name none run as (Marathon's
    /// framework user: the manager's own).
    pub fn set_default_user(&mut self, user: Option<String>) {
        self.default_user = user;
    }

    /// An agent's drain began (`true`) or ended. Instances on a draining
    /// agent count as outdated: they are replaced elsewhere as in a rolling
    /// restart, within each app's upgrade strategy (never below
    /// `minimumHealthCapacity` healthy), and killed once replaced. The
    /// manager repeats every drain under way on each subscription, so this
    /// is not persisted.
    pub fn agent_drain(&mut self, agent: AgentId, draining: bool) {
        let changed = if draining {
            self.draining.insert(agent.clone())
        } else {
            self.draining.remove(&agent)
        };
        if changed {
            info!(agent_id = %agent, draining, "agent drain noted; its instances move");
        }
    }

    /// The state to persist.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            apps: self.apps.values().cloned().collect(),
            deployments: self.deployments.values().cloned().collect(),
            seq: self.seq,
            last_version: self.last_version,
        }
    }

    /// Takes the effects produced so far, in order.
    pub fn drain(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.outbox)
    }

    /// The apps.
    pub fn apps(&self) -> impl Iterator<Item = (&AppId, &App)> {
        self.apps.iter()
    }

    /// One app.
    pub fn app(&self, id: &AppId) -> Option<&App> {
        self.apps.get(id)
    }

    /// Open deployments.
    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.deployments.values()
    }

    /// The priority classes.
    pub fn classes(&self) -> &PriorityClasses {
        &self.classes
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}{:08x}", self.seq)
    }

    /// A new version: the time, made later than every earlier version.
    fn new_version(&mut self, now: Timestamp) -> String {
        self.last_version = now.max(self.last_version + Duration::from_millis(1));
        iso8601(self.last_version)
    }

    fn check_lock(&self, app: &App, force: bool) -> Result<(), ServiceError> {
        match &app.deployment {
            Some(d) if !force => Err(ServiceError::Locked {
                deployments: vec![d.clone()],
            }),
            _ => Ok(()),
        }
    }

    fn start_deployment(&mut self, app: &AppId, version: String, action: Action) -> String {
        let id = self.next_id("deployment-");
        if let Some(old) = self.apps[app].deployment.clone() {
            // A forced change supersedes the deployment holding the app.
            self.deployments.remove(&old);
        }
        self.deployments.insert(
            id.clone(),
            Deployment {
                id: id.clone(),
                app: app.clone(),
                version,
                action,
            },
        );
        if let Some(a) = self.apps.get_mut(app) {
            a.deployment = Some(id.clone());
        }
        info!(app_id = %app, deployment_id = %id, action = ?action, "deployment started");
        self.outbox.push(Effect::Persist);
        id
    }

    /// The app's id once its definition is valid and its service ports are
    /// used by no other app (each is forwarded on every agent).
    fn validated(&self, def: &AppDefinition) -> Result<AppId, ServiceError> {
        let id = def
            .validate(&self.classes)
            .map_err(|details| ServiceError::Invalid { details })?;
        let details: Vec<super::app::FieldError> = def
            .route_ports()
            .iter()
            .filter(|p| p.service_port != 0)
            .filter_map(|p| {
                let (other, _) = self.apps.iter().find(|(other, a)| {
                    **other != id
                        && !a.deleting
                        && a.def
                            .route_ports()
                            .iter()
                            .any(|q| q.service_port == p.service_port)
                })?;
                Some(super::app::FieldError {
                    path: "/portDefinitions".into(),
                    errors: vec![format!(
                        "service port {} is used by app {other}",
                        p.service_port
                    )],
                })
            })
            .collect();
        if details.is_empty() {
            Ok(id)
        } else {
            Err(ServiceError::Invalid { details })
        }
    }

    /// Creates an app; returns its id and deployment.
    pub fn create(
        &mut self,
        now: Timestamp,
        mut def: AppDefinition,
    ) -> Result<(AppId, String), ServiceError> {
        let id = self.validated(&def)?;
        if self.apps.contains_key(&id) {
            return Err(ServiceError::AppExists { id });
        }
        def.id = id.to_string();
        let version = self.new_version(now);
        def.version = Some(version.clone());
        self.apps.insert(
            id.clone(),
            App {
                def,
                config_version: version.clone(),
                instances: BTreeMap::new(),
                deployment: None,
                deleting: false,
                failures: 0,
                delay_until: Timestamp::ZERO,
                last_failure: None,
                scale_down_since: None,
                last_scaling: None,
            },
        );
        let d = self.start_deployment(&id, version, Action::StartApplication);
        Ok((id, d))
    }

    /// Replaces an app's definition (creating it if new). A change of
    /// more than `instances` replaces the instances (a rolling update).
    /// Returns the deployment id, the version, and whether it was created.
    pub fn put(
        &mut self,
        now: Timestamp,
        mut def: AppDefinition,
        force: bool,
    ) -> Result<(String, String, bool), ServiceError> {
        let id = self.validated(&def)?;
        let Some(app) = self.apps.get(&id) else {
            let (_, d) = self.create(now, def)?;
            let v = self.apps[&id].config_version.clone();
            return Ok((d, v, true));
        };
        if app.deleting {
            return Err(ServiceError::UnknownApp { id: id.to_string() });
        }
        self.check_lock(app, force)?;
        def.id = id.to_string();
        let replaces = app.def.config_differs(&def);
        let version = self.new_version(now);
        def.version = Some(version.clone());
        let app = self.app_mut(&id)?;
        app.def = def;
        app.scale_down_since = None;
        let action = if replaces {
            app.config_version = version.clone();
            // A new configuration gets a fresh start.
            app.failures = 0;
            app.delay_until = Timestamp::ZERO;
            Action::RestartApplication
        } else {
            Action::ScaleApplication
        };
        let d = self.start_deployment(&id, version.clone(), action);
        Ok((d, version, false))
    }

    /// Restarts every instance (a rolling replacement with the same
    /// definition).
    pub fn restart(
        &mut self,
        now: Timestamp,
        id: &AppId,
        force: bool,
    ) -> Result<(String, String), ServiceError> {
        let version = self.begin_change(now, id, force)?;
        let app = self.app_mut(id)?;
        app.config_version = version.clone();
        app.def.version = Some(version.clone());
        let d = self.start_deployment(id, version.clone(), Action::RestartApplication);
        Ok((d, version))
    }

    /// Deletes an app: its instances are killed, then it is forgotten.
    pub fn delete(
        &mut self,
        now: Timestamp,
        id: &AppId,
        force: bool,
    ) -> Result<(String, String), ServiceError> {
        let version = self.begin_change(now, id, force)?;
        self.app_mut(id)?.deleting = true;
        let d = self.start_deployment(id, version.clone(), Action::StopApplication);
        Ok((d, version))
    }

    /// Kills some of an app's instances; with `scale`, the app's instance
    /// count drops by as many (otherwise they are replaced).
    pub fn kill_tasks(
        &mut self,
        now: Timestamp,
        id: &AppId,
        tasks: &[TaskId],
        scale: bool,
    ) -> Result<Vec<Instance>, ServiceError> {
        let app = self.live_app(id)?;
        for t in tasks {
            if !app.instances.contains_key(t) {
                return Err(ServiceError::UnknownTask { id: t.to_string() });
            }
        }
        let mut killed = Vec::new();
        for t in tasks {
            if let Some(i) = self.kill_instance(id, t, "killed by an operator") {
                killed.push(i);
            }
        }
        if scale {
            let version = self.new_version(now);
            let app = self.app_mut(id)?;
            app.def.instances = app.def.instances.saturating_sub(killed.len() as u32);
            app.def.version = Some(version);
        }
        self.outbox.push(Effect::Persist);
        Ok(killed)
    }

    /// Cancels a deployment: the app keeps the definition it has and the
    /// deployment is dropped (`force`), as Marathon's `DELETE
    /// /v2/deployments/{id}?force=true` does.
    pub fn cancel_deployment(&mut self, id: &str) -> Result<(), ServiceError> {
        let d = self
            .deployments
            .remove(id)
            .ok_or_else(|| ServiceError::UnknownDeployment { id: id.into() })?;
        if let Some(a) = self.apps.get_mut(&d.app) {
            a.deployment = None;
        }
        self.outbox.push(Effect::Persist);
        Ok(())
    }

    /// Checks a live, unlocked (or forced) app and gives the change its
    /// version.
    fn begin_change(
        &mut self,
        now: Timestamp,
        id: &AppId,
        force: bool,
    ) -> Result<String, ServiceError> {
        let app = self.live_app(id)?;
        self.check_lock(app, force)?;
        Ok(self.new_version(now))
    }

    fn app_mut(&mut self, id: &AppId) -> Result<&mut App, ServiceError> {
        self.apps
            .get_mut(id)
            .ok_or_else(|| ServiceError::UnknownApp { id: id.to_string() })
    }

    fn live_app(&self, id: &AppId) -> Result<&App, ServiceError> {
        match self.apps.get(id) {
            Some(a) if !a.deleting => Ok(a),
            _ => Err(ServiceError::UnknownApp { id: id.to_string() }),
        }
    }

    fn kill_instance(&mut self, app: &AppId, task: &TaskId, why: &str) -> Option<Instance> {
        let i = self.apps.get_mut(app)?.instances.get_mut(task)?;
        if !i.killing {
            i.killing = true;
            info!(app_id = %app, task_id = %task, reason = why, "killing instance");
            self.outbox.push(Effect::Kill {
                task: task.clone(),
                agent: Some(i.agent_id.clone()),
            });
        }
        Some(i.clone())
    }

    fn find_task(&self, task: &TaskId) -> Option<AppId> {
        self.apps
            .iter()
            .find(|(_, a)| a.instances.contains_key(task))
            .map(|(id, _)| id.clone())
    }

    /// A task's status changed.
    pub fn status(&mut self, now: Timestamp, s: &TaskStatus) {
        let Some(app_id) = self.find_task(&s.task_id) else {
            if !s.is_terminal() {
                // Not ours (any more): an instance replaced while its agent
                // was unreachable, or left by an earlier manager.
                warn!(task_id = %s.task_id, state = s.state.as_str_name(), "killing an unknown task");
                self.outbox.push(Effect::Kill {
                    task: s.task_id.clone(),
                    agent: s.agent_id.clone(),
                });
            }
            return;
        };
        // `find_task` found the instance in this app.
        let Some(app) = self.apps.get_mut(&app_id) else {
            return;
        };
        let unreachable = s.state == TaskState::TaskUnreachable;
        if unreachable && app.def.unreachable_strategy.expunge_after_seconds > 0.0 {
            // Kept while its agent may come back (`unreachableStrategy`).
            if let Some(i) = app.instances.get_mut(&s.task_id) {
                if i.unreachable_since.is_none() {
                    info!(app_id = %app_id, task_id = %s.task_id, "instance unreachable; kept while its agent may come back");
                    i.unreachable_since = Some(now);
                }
                i.state = s.state;
                i.healthy = None;
                i.failures = 0;
            }
            self.outbox.push(Effect::Persist);
            return;
        }
        let gone = s.is_terminal() || unreachable;
        if !gone {
            let Some(i) = app.instances.get_mut(&s.task_id) else {
                return;
            };
            if i.unreachable_since.take().is_some() {
                info!(app_id = %app_id, task_id = %s.task_id, state = s.state.as_str_name(),
                    "instance reachable again");
            }
            i.state = s.state;
            if s.state == TaskState::TaskRunning && i.started_at.is_none() {
                i.started_at = Some(now);
            }
            self.outbox.push(Effect::Persist);
            return;
        }
        let Some(i) = app.instances.remove(&s.task_id) else {
            return;
        };
        let expected = i.killing && s.reason != Reason::Preempted;
        info!(app_id = %app_id, task_id = %s.task_id, state = s.state.as_str_name(),
            reason = s.reason.as_str_name(), expected, "instance ended");
        // The instance's own failures back off; losing its agent does not.
        let its_fault = matches!(
            s.state,
            TaskState::TaskFailed
                | TaskState::TaskFinished
                | TaskState::TaskError
                | TaskState::TaskKilled
        );
        if !expected && its_fault && !app.deleting {
            let delay = backoff_delay(&app.def, app.failures);
            app.failures += 1;
            app.delay_until = now + delay;
            app.last_failure = Some(Failure {
                task_id: s.task_id.clone(),
                state: s.state.as_str_name().to_owned(),
                message: s.message.clone(),
                at: now,
            });
        }
        // An unreachable instance is replaced now; should it come back,
        // its status names a task no app knows, and it is killed.
        self.outbox.push(Effect::Persist);
    }

    /// A health check's verdict on a task.
    pub fn health(&mut self, now: Timestamp, task: &TaskId, ok: bool, message: String) {
        let Some(app_id) = self.find_task(task) else {
            return;
        };
        let Some(app) = self.apps.get_mut(&app_id) else {
            return;
        };
        let Some(check) = app.def.health_checks.first().cloned() else {
            return;
        };
        let Some(i) = app.instances.get_mut(task) else {
            return;
        };
        if i.killing || i.state != TaskState::TaskRunning {
            return;
        }
        let before = i.healthy;
        i.last_check = Some(message);
        if ok {
            i.healthy = Some(true);
            i.ever_healthy = true;
            i.failures = 0;
        } else {
            let started = i.started_at.unwrap_or(now);
            let in_grace = !i.ever_healthy && now < started + secs(check.grace_period_seconds);
            if in_grace {
                return;
            }
            i.failures += 1;
            i.healthy = Some(false);
            let max = check.max_consecutive_failures;
            if max > 0 && i.failures >= max {
                let why = format!("failed {} health checks in a row", i.failures);
                self.kill_instance(&app_id, task, &why);
            }
        }
        let app = &self.apps[&app_id];
        if app.instances.get(task).map(|i| i.healthy) != Some(before) {
            self.outbox.push(Effect::Persist);
        }
    }

    /// New offers: launches what the apps want now, declines the rest.
    pub fn offers(&mut self, now: Timestamp, offers: Vec<Offer>) {
        let mut decline = Vec::new();
        for offer in offers {
            let mut remaining = offer.resources.clone();
            let mut tasks = Vec::new();
            let ids: Vec<AppId> = self.launch_order();
            for id in ids {
                loop {
                    let want = self.wanted_launches(&id, now);
                    if want == 0 {
                        break;
                    }
                    let app = &self.apps[&id];
                    if !launch::fits(app, &offer, &remaining) {
                        break;
                    }
                    let seq = self.next_id("");
                    let app = &self.apps[&id];
                    let Some((task, inst)) = launch::build(
                        &id,
                        app,
                        &offer,
                        &mut remaining,
                        &seq,
                        now,
                        self.default_user.as_deref(),
                    ) else {
                        break;
                    };
                    info!(app_id = %id, task_id = %task.task_id, agent_id = %offer.agent_id,
                        "launching instance");
                    let Some(app) = self.apps.get_mut(&id) else {
                        break;
                    };
                    app.instances.insert(inst.task_id.clone(), inst);
                    tasks.push(task);
                }
            }
            if tasks.is_empty() {
                decline.push(offer.id);
            } else {
                self.outbox.push(Effect::Launch {
                    offer: offer.id,
                    tasks,
                });
                self.outbox.push(Effect::Persist);
            }
        }
        if !decline.is_empty() {
            self.outbox.push(Effect::Decline(decline));
        }
        self.step(now);
    }

    /// Apps by class (highest first), then id.
    fn launch_order(&self) -> Vec<AppId> {
        let mut ids: Vec<(u8, AppId)> = self
            .apps
            .iter()
            .map(|(id, a)| {
                let class = self
                    .classes
                    .lookup(a.def.class())
                    .map(|c| c.0)
                    .unwrap_or(u8::MAX);
                (class, id.clone())
            })
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    fn target(&self, app: &App, now: Timestamp) -> Target {
        Target {
            instances: if app.deleting { 0 } else { app.def.instances },
            strategy: app.def.upgrade_strategy,
            kill_selection: app.def.kill_selection,
            backing_off: now < app.delay_until,
        }
    }

    fn plan_app(&self, id: &AppId, now: Timestamp) -> plan::Step<TaskId> {
        let app = &self.apps[id];
        let live: Vec<Live<TaskId>> = app
            .placed(now)
            .map(|i| Live {
                key: i.task_id.clone(),
                current: i.config_version == app.config_version
                    && !self.draining.contains(&i.agent_id),
                healthy: app.is_healthy(i),
                running: i.state == TaskState::TaskRunning,
                staged_at: i.staged_at,
            })
            .collect();
        plan::step(&self.target(app, now), &live)
    }

    /// How many instances of an app to launch on offers now.
    fn wanted_launches(&self, id: &AppId, now: Timestamp) -> u32 {
        self.plan_app(id, now).launch
    }

    /// Re-plans every app: kills what must go, finishes deployments that
    /// are done, applies the autoscaler's wish, and declares demand for the
    /// launches wanted now.
    pub fn step(&mut self, now: Timestamp) {
        let ids: Vec<AppId> = self.apps.keys().cloned().collect();
        let mut asks: BTreeMap<(String, String), Ask> = BTreeMap::new();
        for id in ids {
            self.expunge(&id, now);
            let plan = self.plan_app(&id, now);
            for t in &plan.kill {
                self.kill_instance(&id, t, "replaced by the app's plan");
            }
            self.reset_backoff(&id, now);
            let app = &self.apps[&id];
            if app.deleting && app.instances.is_empty() {
                info!(app_id = %id, "app deleted");
                if let Some(d) = &app.deployment {
                    self.deployments.remove(d);
                }
                self.apps.remove(&id);
                self.outbox.push(Effect::Persist);
                continue;
            }
            self.finish_deployment(&id);
            if plan.launch > 0 {
                let app = &self.apps[&id];
                let res = app.def.resources();
                let key = (app.def.class().to_owned(), format!("{id}"));
                let mut ask = Ask::new(app.def.class(), res, plan.launch);
                ask.constraints = app.def.sdk_constraints();
                asks.insert(key, ask);
            }
        }
        let asks: Vec<Ask> = asks.into_values().collect();
        if asks != self.demand {
            self.demand = asks.clone();
            self.outbox.push(Effect::Demand(asks));
        }
    }

    /// Forgets the app's instances unreachable for longer than its
    /// `expungeAfterSeconds` (one that comes back is then killed).
    fn expunge(&mut self, id: &AppId, now: Timestamp) {
        let Some(app) = self.apps.get_mut(id) else {
            return;
        };
        let after = secs(app.def.unreachable_strategy.expunge_after_seconds);
        let before = app.instances.len();
        app.instances.retain(|task, i| {
            let keep = i.unreachable_since.is_none_or(|since| now < since + after);
            if !keep {
                info!(app_id = %id, task_id = %task, "unreachable instance expunged");
            }
            keep
        });
        if app.instances.len() != before {
            self.outbox.push(Effect::Persist);
        }
    }

    fn reset_backoff(&mut self, id: &AppId, now: Timestamp) {
        let app = &self.apps[id];
        if app.failures == 0 {
            return;
        }
        let since = app.last_failure.as_ref().map_or(Timestamp::ZERO, |f| f.at);
        let recovered = app.live().any(|i| {
            app.is_healthy(i)
                && i.started_at
                    .is_some_and(|s| s >= since && now >= s + BACKOFF_RESET)
        });
        if recovered && let Some(app) = self.apps.get_mut(id) {
            app.failures = 0;
            app.delay_until = Timestamp::ZERO;
            self.outbox.push(Effect::Persist);
        }
    }

    fn finish_deployment(&mut self, id: &AppId) {
        let app = &self.apps[id];
        let Some(d) = app.deployment.clone() else {
            return;
        };
        let done = app
            .instances
            .values()
            .all(|i| !i.killing && i.config_version == app.config_version && app.is_healthy(i))
            && app.instances.len() == app.def.instances as usize;
        if done {
            info!(app_id = %id, deployment_id = %d, "deployment finished");
            self.deployments.remove(&d);
            if let Some(app) = self.apps.get_mut(id) {
                app.deployment = None;
            }
            self.outbox.push(Effect::Persist);
        }
    }

    /// The autoscaler's samples for an app: scales it when the policy asks
    /// for another count (down only after the cooldown).
    pub fn autoscale(&mut self, now: Timestamp, id: &AppId, samples: &[f64]) -> Option<u32> {
        let app = self.apps.get(id)?;
        if app.deleting || app.deployment.is_some() {
            return None;
        }
        let policy = app.policy()?;
        let current = app.def.instances;
        let want = policy.desired(current, samples);
        let app = self.apps.get_mut(id)?;
        if want >= current {
            app.scale_down_since = None;
        }
        let go = match want.cmp(&current) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => false,
            std::cmp::Ordering::Less => {
                let since = *app.scale_down_since.get_or_insert(now);
                now >= since + policy.cooldown
            }
        };
        if !go {
            return None;
        }
        info!(app_id = %id, from = current, to = want, "autoscaling");
        let mean = if samples.is_empty() {
            0.0
        } else {
            samples.iter().sum::<f64>() / samples.len() as f64
        };
        app.last_scaling = Some(super::state::Scaling {
            at: now,
            from: current,
            to: want,
            mean,
        });
        let mut def = app.def.clone();
        def.instances = want;
        self.put(now, def, true).ok()?;
        Some(want)
    }
}

pub use super::app::{backoff_delay, secs};
