//! One task, one framework: [`OneTask`] subscribes a framework, launches a
//! single task on the first offer that holds it, and follows the task's
//! statuses until it runs or ends. It is the client of `strata run` (a
//! command, followed to its end) and of `strata submit` (a job's driver,
//! followed until it runs or has taken the framework over).
//!
//! ```no_run
//! use std::time::Duration;
//! use strata_sdk::{
//!     Ask, FrameworkConfig, OneTask, OneTaskOptions, Resources, SchedulerConfig, TaskBuilder,
//!     Until,
//! };
//!
//! # async fn f() -> Result<(), strata_sdk::LaunchError> {
//! let res = Resources::new(0.5, 64.0);
//! let config = SchedulerConfig::new("127.0.0.1:5050", FrameworkConfig::new("once"));
//! let mut one = OneTask::subscribe(config, Ask::new("batch", res.clone(), 1)).await?;
//! let task = TaskBuilder::shell("once-1", "echo hi").resources(res).build();
//! let launched = one
//!     .follow(task, &OneTaskOptions::new(Duration::from_secs(30), Until::Ended), |_| {})
//!     .await?;
//! println!("{:?}", launched.end);
//! one.teardown().await;
//! # Ok(()) }
//! ```

use std::time::Duration;

use strata_proto::ids::{FrameworkId, TaskId};
use strata_proto::pb::TaskState;
use strata_proto::resources::Resources;
use tokio::time::Instant;

use crate::{
    Ask, Event, EventStream, Offer, Scheduler, SchedulerConfig, SchedulerHandle, SdkError,
};
use crate::{TaskInfo, TaskStatus};

/// How long a declined offer's resources are refused.
const REFUSE: Duration = Duration::from_secs(30);

/// How far [`OneTask::follow`] follows the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Until it runs, or until another scheduler has taken the framework
    /// over (the subscription closes after the launch).
    Running,
    /// Until it ends.
    Ended,
}

/// How [`OneTask::follow`] places and follows its task.
#[derive(Clone, Debug)]
pub struct OneTaskOptions {
    /// How long the task may take to be placed; following
    /// [`Until::Running`], also to start.
    pub wait: Duration,
    /// How far to follow the task.
    pub until: Until,
    /// Ports to take from the offer (the lowest it holds) and give the
    /// task, replacing those of its resources.
    pub ports: u64,
}

impl OneTaskOptions {
    /// Options without ports.
    pub fn new(wait: Duration, until: Until) -> Self {
        OneTaskOptions {
            wait,
            until,
            ports: 0,
        }
    }
}

/// What happened while following the task, for the caller to show.
#[derive(Debug)]
pub enum Notice<'a> {
    /// The task is about to be launched on this offer.
    Launching(&'a Offer),
    /// A status of the task.
    Update(&'a TaskStatus),
    /// An error the manager reported, or a call that failed without ending
    /// the launch (a decline).
    Warning(&'a str),
}

/// How the followed task stands when [`OneTask::follow`] returns.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// It runs.
    Running,
    /// Another scheduler took the framework over after the launch.
    HandedOver,
    /// It ended with this status.
    Ended(TaskStatus),
}

/// A launched task and how it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Launched {
    /// The HTTP address of its agent (sandbox files), when the offer named
    /// one.
    pub agent_address: Option<String>,
    /// How it stands.
    pub end: End,
}

/// Why one task could not be launched or followed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The framework could not subscribe.
    #[error("subscribing: {0}")]
    Subscribe(#[source] SdkError),
    /// No offer held the task in time.
    #[error("the task ({resources}) could not be placed within {wait:?} (the cluster may be full)")]
    NotPlaced {
        /// The task's resources.
        resources: Resources,
        /// How long it waited.
        wait: Duration,
    },
    /// The task was launched but did not start in time.
    #[error("the task did not start within {wait:?}")]
    NotStarted {
        /// How long it waited.
        wait: Duration,
    },
    /// The manager closed the subscription.
    #[error("the manager closed the subscription")]
    Closed,
    /// The launch call failed.
    #[error("launching the task: {0}")]
    Launch(#[source] SdkError),
    /// The offer that held the task's resources had too few ports.
    #[error("the offer lacks {0} ports")]
    NoPorts(u64),
    /// The task ended before it ran (following [`Until::Running`]).
    #[error("the task ended {}", .0.describe())]
    Ended(Box<TaskStatus>),
}

/// A framework subscribed to launch one task.
pub struct OneTask {
    handle: SchedulerHandle,
    events: EventStream,
    /// Offers read while asking about the task, used first when launching.
    held: Vec<Offer>,
    /// Acknowledge every update of the task but its last, so the manager
    /// keeps telling its end until the framework is torn down.
    keep_end: bool,
}

impl OneTask {
    /// Subscribes the framework of `config`, asking for `ask` (the task's
    /// shape; it replaces the configuration's demand).
    pub async fn subscribe(mut config: SchedulerConfig, ask: Ask) -> Result<OneTask, LaunchError> {
        config.demand = vec![ask];
        let (handle, events) = Scheduler::subscribe(config)
            .await
            .map_err(LaunchError::Subscribe)?;
        Ok(OneTask {
            handle,
            events,
            held: Vec::new(),
            keep_end: false,
        })
    }

    /// [`OneTask::subscribe`] for a run that may be tried again under the
    /// same framework id: the task's final update is left unacknowledged,
    /// so until the framework is torn down the manager answers it to
    /// [`OneTask::status_of`] (a run that ended is never launched again).
    pub async fn subscribe_keeping_end(
        mut config: SchedulerConfig,
        ask: Ask,
    ) -> Result<OneTask, LaunchError> {
        config.auto_acknowledge = false;
        let mut one = OneTask::subscribe(config, ask).await?;
        one.keep_end = true;
        Ok(one)
    }

    /// What the manager knows of the task `task_id` of this framework (an
    /// explicit reconciliation), or `None` when it has not answered within
    /// `wait`. Offers read meanwhile are kept for the launch.
    pub async fn status_of(
        &mut self,
        task_id: &TaskId,
        wait: Duration,
    ) -> Result<Option<TaskStatus>, LaunchError> {
        self.handle
            .reconcile(vec![(task_id.clone(), None)])
            .await
            .map_err(LaunchError::Launch)?;
        let deadline = Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err(LaunchError::Closed),
                Ok(Some(Event::Offers(offers))) => self.held.extend(offers),
                Ok(Some(Event::Update(s))) if s.task_id == *task_id => return Ok(Some(s)),
                Ok(Some(_)) => {}
            }
        }
    }

    /// Follows the task `task_id`, launched earlier (by an earlier run of
    /// this framework), as [`OneTask::follow`] does after its launch.
    pub async fn attach(
        &mut self,
        task_id: &TaskId,
        options: &OneTaskOptions,
        notice: impl FnMut(Notice<'_>),
    ) -> Result<Launched, LaunchError> {
        self.handle.suppress().await.ok();
        let result = self
            .follow_inner(task_id.clone(), Resources::default(), None, options, notice)
            .await;
        if result.is_err() {
            self.handle.teardown().await.ok();
        }
        result
    }

    /// The framework's id.
    pub fn framework_id(&self) -> FrameworkId {
        self.handle.framework_id()
    }

    /// Launches `task` on the first offer that holds its resources
    /// (declining the others) and follows its statuses as `options` say,
    /// telling `notice` what happens. On an error the framework is torn
    /// down.
    pub async fn follow(
        &mut self,
        task: TaskInfo,
        options: &OneTaskOptions,
        notice: impl FnMut(Notice<'_>),
    ) -> Result<Launched, LaunchError> {
        let (task_id, resources) = (task.task_id.clone(), task.resources.clone());
        let result = self
            .follow_inner(task_id, resources, Some(task), options, notice)
            .await;
        if result.is_err() {
            self.handle.teardown().await.ok();
        }
        result
    }

    async fn follow_inner(
        &mut self,
        task_id: TaskId,
        resources: Resources,
        mut task: Option<TaskInfo>,
        options: &OneTaskOptions,
        mut notice: impl FnMut(Notice<'_>),
    ) -> Result<Launched, LaunchError> {
        let mut agent_address: Option<String> = None;
        let deadline = Instant::now() + options.wait;
        loop {
            let launched = task.is_none();
            let timed = !launched || options.until == Until::Running;
            let next = if !self.held.is_empty() {
                Ok(Some(Event::Offers(std::mem::take(&mut self.held))))
            } else if timed {
                tokio::time::timeout_at(deadline, self.events.next()).await
            } else {
                Ok(self.events.next().await)
            };
            let event = match next {
                Err(_) if launched => return Err(LaunchError::NotStarted { wait: options.wait }),
                Err(_) => {
                    return Err(LaunchError::NotPlaced {
                        resources,
                        wait: options.wait,
                    });
                }
                Ok(None) | Ok(Some(Event::Disconnected { .. }))
                    if launched && options.until == Until::Running =>
                {
                    return Ok(Launched {
                        agent_address,
                        end: End::HandedOver,
                    });
                }
                Ok(None) => return Err(LaunchError::Closed),
                Ok(Some(e)) => e,
            };
            match event {
                Event::Offers(offers) => {
                    for offer in offers {
                        match task.take_if(|t| offer.fits(&t.resources)) {
                            Some(t) => {
                                agent_address = offer.agent_address.clone();
                                self.launch(&offer, t, options.ports, &mut notice).await?;
                            }
                            None => self.decline(&offer, &mut notice).await,
                        }
                    }
                }
                Event::Update(s) if s.task_id == task_id => {
                    notice(Notice::Update(&s));
                    if self.keep_end
                        && !s.is_terminal()
                        && s.uuid.is_some()
                        && let Err(e) = self.handle.acknowledge(&s).await
                    {
                        notice(Notice::Warning(&e.to_string()));
                    }
                    if options.until == Until::Running && s.state == TaskState::TaskRunning {
                        return Ok(Launched {
                            agent_address,
                            end: End::Running,
                        });
                    }
                    if s.is_terminal() {
                        if options.until == Until::Running {
                            return Err(LaunchError::Ended(Box::new(s)));
                        }
                        return Ok(Launched {
                            agent_address,
                            end: End::Ended(s),
                        });
                    }
                }
                Event::Error(e) => notice(Notice::Warning(&e)),
                _ => {}
            }
        }
    }

    async fn launch(
        &self,
        offer: &Offer,
        mut task: TaskInfo,
        ports: u64,
        notice: &mut impl FnMut(Notice<'_>),
    ) -> Result<(), LaunchError> {
        if ports > 0 {
            task.resources.ports = offer.pick_ports(ports).ok_or(LaunchError::NoPorts(ports))?;
        }
        notice(Notice::Launching(offer));
        self.handle
            .launch(offer.id.clone(), vec![task])
            .await
            .map_err(LaunchError::Launch)?;
        self.handle.suppress().await.ok();
        Ok(())
    }

    async fn decline(&self, offer: &Offer, notice: &mut impl FnMut(Notice<'_>)) {
        if let Err(e) = self
            .handle
            .decline(vec![offer.id.clone()], Some(REFUSE))
            .await
        {
            notice(Notice::Warning(&e.to_string()));
        }
    }

    /// Ends the framework (and so its task), ignoring a failure.
    pub async fn teardown(self) {
        self.handle.teardown().await.ok();
    }

    /// Closes the subscription without ending the framework: its task
    /// keeps running, and another scheduler may take it over within its
    /// failover timeout.
    pub fn leave(self) {
        drop(self.events);
        drop(self.handle);
    }
}
