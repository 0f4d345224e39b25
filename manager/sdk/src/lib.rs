//! # strata-sdk: write a Strata framework
//!
//! A *framework* is a program that runs tasks on a Strata cluster: Strata's
//! own `strata run`, the batch driver, the services scheduler, or yours. It
//! talks to the manager over the gRPC `Scheduler` service; this crate is the
//! client side of that protocol, typed and with the bookkeeping done.
//!
//! ## The model (Mesos's two-level scheduling)
//!
//! * **Subscribe.** [`Scheduler::subscribe`] registers the framework (or
//!   fails over to an existing one) and returns a [`SchedulerHandle`] to make
//!   calls and an [`EventStream`] of [`Event`]s. The first event is
//!   [`Event::Subscribed`], carrying the framework id.
//! * **Offers.** The manager decides *how much* each framework gets (DRF
//!   across roles and frameworks); the framework decides *what runs where*.
//!   It receives [`Event::Offers`]: each [`Offer`] is one agent's free
//!   resources, usable once. Answer every offer: [`launch`] tasks on it,
//!   [`accept`] several offers of one agent at once, or [`decline`] it,
//!   optionally refusing those resources for a while. Resources an accept
//!   leaves unused are declined. An offer may be withdrawn
//!   ([`Event::Rescind`]) before it is used.
//! * **Demand.** Instead of waiting for whatever is offered, declare what
//!   you need with [`declare_demand`]: task-shaped [`Ask`]s (resources per
//!   task, a count, [`Constraint`]s). The manager shapes offers to it and
//!   stops offering once it is met. [`suppress`] stops offers altogether
//!   and [`revive`] resumes them; a framework with nothing to run should
//!   suppress, or it keeps being offered resources that others need.
//! * **Priority classes.** Every ask, offer and task has a class (by
//!   default `system` > `service` > `batch` > `best-effort`). Offers are
//!   made per class, highest first; a task may not be launched at a class
//!   above that of the offer it uses. A pending ask of a high class that
//!   does not fit may preempt tasks at least 10 below it: they end
//!   `TASK_KILLED` with reason `REASON_PREEMPTED`. Batch work may also use
//!   *revocable* resources ([`Offer::revocable`]): capacity allocated to
//!   services but idle, taken back when they need it.
//! * **Status updates and acknowledgements.** Task state changes arrive as
//!   [`Event::Update`] with a [`TaskStatus`]. An update that carries a
//!   `uuid` is retried by its agent until the framework acknowledges it, so
//!   it may arrive more than once; the SDK drops duplicates (remembering
//!   the last 100 000 uuids) and acknowledges them again silently. With
//!   [`SchedulerConfig::auto_acknowledge`] (the default) the SDK
//!   acknowledges each update as soon as it is handed to the stream; turn
//!   it off to [`acknowledge`] once the update has been acted on.
//!   [`reconcile`] asks for the latest state of tasks at any time.
//! * **Failover.** The manager sends heartbeats; after three intervals
//!   without any event the SDK considers the connection lost, emits
//!   [`Event::Disconnected`] and rescinds the outstanding offers. With
//!   [`SchedulerConfig::reconnect`] (the default) it re-subscribes with the
//!   same framework id, with backoff, repeating the current demand, and a
//!   new [`Event::Subscribed`] follows. The framework's tasks keep running
//!   meanwhile, for up to its failover timeout (a week by default); a new
//!   process can also take the framework over by subscribing with
//!   [`FrameworkConfig::framework_id`] set. [`teardown`] ends the framework
//!   and kills its tasks.
//!
//! Errors are [`SdkError`]s, mapped from the manager's gRPC statuses. A
//! malformed event from the manager never panics: it becomes an
//! [`Event::Error`] (and a malformed offer is declined).
//!
//! [`launch`]: SchedulerHandle::launch
//! [`accept`]: SchedulerHandle::accept
//! [`decline`]: SchedulerHandle::decline
//! [`declare_demand`]: SchedulerHandle::declare_demand
//! [`suppress`]: SchedulerHandle::suppress
//! [`revive`]: SchedulerHandle::revive
//! [`acknowledge`]: SchedulerHandle::acknowledge
//! [`reconcile`]: SchedulerHandle::reconcile
//! [`teardown`]: SchedulerHandle::teardown
//!
//! ## Example: run `echo hello` three times
//!
//! ```no_run
//! use std::time::Duration;
//! use strata_sdk::{
//!     Ask, Event, FrameworkConfig, Resources, Scheduler, SchedulerConfig, SdkError, TaskBuilder,
//! };
//!
//! #[tokio::main]
//! async fn main() -> Result<(), SdkError> {
//!     let config = SchedulerConfig::new("127.0.0.1:5050", FrameworkConfig::new("hello"));
//!     let (handle, mut events) = Scheduler::subscribe(config).await?;
//!
//!     let total = 3;
//!     let per_task = Resources::new(0.1, 32.0);
//!     handle
//!         .declare_demand(vec![Ask::new("batch", per_task.clone(), total)])
//!         .await?;
//!
//!     let (mut launched, mut ended) = (0, 0);
//!     while let Some(event) = events.next().await {
//!         match event {
//!             Event::Offers(offers) => {
//!                 for offer in offers {
//!                     // Pack as many of the remaining tasks as fit on this offer.
//!                     let mut left = offer.resources.clone();
//!                     let mut tasks = Vec::new();
//!                     while launched < total && left.subtract(&per_task) {
//!                         launched += 1;
//!                         let task = TaskBuilder::shell(format!("hello-{launched}"), "echo hello")
//!                             .resources(per_task.clone())
//!                             .build();
//!                         tasks.push(task);
//!                     }
//!                     if tasks.is_empty() {
//!                         // Not needed: let others have it for a minute.
//!                         handle
//!                             .decline(vec![offer.id], Some(Duration::from_secs(60)))
//!                             .await?;
//!                     } else {
//!                         handle.launch(offer.id, tasks).await?;
//!                     }
//!                 }
//!                 if launched == total {
//!                     // Everything is placed: stop receiving offers.
//!                     handle.suppress().await?;
//!                 }
//!             }
//!             Event::Update(status) => {
//!                 println!("{} is {}", status.task_id, status.state);
//!                 if status.is_terminal() {
//!                     ended += 1;
//!                     if ended == total {
//!                         handle.teardown().await?;
//!                     }
//!                 }
//!             }
//!             Event::Disconnected { reason } => eprintln!("lost the manager: {reason}"),
//!             Event::Error(message) => eprintln!("error: {message}"),
//!             _ => {}
//!         }
//!     }
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

mod client;
mod config;
pub mod dedup;
mod driver;
mod error;
mod event;
pub mod http;
mod one_task;
mod task;

pub use client::{EventStream, Scheduler, SchedulerHandle};
pub use config::{
    Connector, DEFAULT_FAILOVER_TIMEOUT, DEFAULT_ROLE, FrameworkConfig, SchedulerConfig,
    StreamFactory,
};
pub use error::SdkError;
pub use event::{ConversionError, Event, Offer, TaskStatus};
pub use one_task::{End, LaunchError, Launched, Notice, OneTask, OneTaskOptions, Until};
pub use task::{
    Ask, Command, Constraint, Docker, Filters, Operator, PortMapping, TaskBuilder, TaskInfo, Uri,
};

/// The wire protocol crate, re-exported so a framework needs no direct
/// dependency on it.
pub use strata_proto as proto;
pub use strata_proto::ids::{AgentId, FrameworkId, OfferId, Role, TaskId};
pub use strata_proto::pb::{Reason, Source, TaskState};
pub use strata_proto::resources::{Ranges, Resources, Scalar};
