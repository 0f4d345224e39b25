//! An SDK framework that records its events.

#![allow(dead_code, unused_imports)]

use super::*;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_manager::master::view::{AgentView, StateView, TaskView};
use strata_proto::pb;
use strata_sdk::{
    Event, EventStream, Filters, FrameworkConfig, FrameworkId, Offer, Resources, Scheduler,
    SchedulerConfig, SchedulerHandle, TaskInfo, TaskState, TaskStatus,
};
use tokio::sync::mpsc;

// ---------------------------------------------------------------- SDK framework

/// A scheduler configuration for tests: failover timeout 60 s.
pub fn framework_config(addr: &str, name: &str) -> SchedulerConfig {
    let mut fw = FrameworkConfig::new(name);
    fw.failover_timeout = Duration::from_secs(60);
    SchedulerConfig::new(addr, fw)
}

/// A task of `script` with 0.1 cpus and 32 MiB.
pub fn shell_task(id: &str, script: &str) -> TaskInfo {
    strata_sdk::TaskBuilder::shell(id, script)
        .resources(Resources::new(0.1, 32.0))
        .build()
}

/// An SDK framework that records every event it reads (heartbeats aside).
pub struct Fw {
    /// Calls.
    pub handle: SchedulerHandle,
    /// Events not yet read.
    pub events: EventStream,
    /// Every event read so far, in order.
    pub seen: Vec<Event>,
    /// The framework id.
    pub id: FrameworkId,
}

impl Fw {
    /// Subscribes (panicking on failure) and reads the `Subscribed` event.
    pub async fn subscribe(config: SchedulerConfig) -> Fw {
        let name = config.framework.name.clone();
        let (handle, events) = Scheduler::subscribe(config)
            .await
            .unwrap_or_else(|e| panic!("framework {name} cannot subscribe: {e}"));
        let id = handle.framework_id();
        let mut fw = Fw {
            handle,
            events,
            seen: Vec::new(),
            id,
        };
        fw.expect("Subscribed", LONG, |e| {
            matches!(e, Event::Subscribed { .. }).then_some(())
        })
        .await;
        fw
    }

    fn recent(&self) -> String {
        let from = self.seen.len().saturating_sub(30);
        format!("{:#?}", &self.seen[from..])
    }

    /// Reads events until `f` picks one (events read are kept in `seen`).
    pub async fn expect<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Err(_) => panic!(
                    "framework {}: timed out after {timeout:?} waiting for {what}; recent events: {}",
                    self.id,
                    self.recent()
                ),
                Ok(None) => panic!(
                    "framework {}: the event stream ended while waiting for {what}; recent events: {}",
                    self.id,
                    self.recent()
                ),
                Ok(Some(e)) => {
                    let picked = f(&e);
                    if !matches!(e, Event::Heartbeat) {
                        self.seen.push(e);
                    }
                    if let Some(v) = picked {
                        return v;
                    }
                }
            }
        }
    }

    /// The states of every update read for `task`, in order.
    pub fn states_of(&self, task: &str) -> Vec<TaskState> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Update(s) if s.task_id.as_str() == task => Some(s.state),
                _ => None,
            })
            .collect()
    }

    /// Waits for an update putting `task` in `state` (one already read
    /// counts); panics if the task ends in another terminal state.
    pub async fn wait_state(&mut self, task: &str, state: TaskState) -> TaskStatus {
        let found = self.seen.iter().find_map(|e| match e {
            Event::Update(s) if s.task_id.as_str() == task && s.state == state => Some(s.clone()),
            _ => None,
        });
        if let Some(s) = found {
            return s;
        }
        self.next_state(task, state).await
    }

    /// Waits for a new update putting `task` in `state`.
    pub async fn next_state(&mut self, task: &str, state: TaskState) -> TaskStatus {
        let deadline = Instant::now() + LONG;
        let what = format!("task {task} to be {}", state.as_str_name());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let s = self
                .expect(&what, left, |e| match e {
                    Event::Update(s) if s.task_id.as_str() == task => Some(s.clone()),
                    _ => None,
                })
                .await;
            if s.state == state {
                return s;
            }
            if s.is_terminal() {
                panic!(
                    "waiting for {what}, it ended {} ({}): {:?}",
                    s.state.as_str_name(),
                    s.reason.as_str_name(),
                    s.message
                );
            }
        }
    }

    /// Launches `tasks` together on the first offer that holds them all
    /// (declining others), then suppresses offers. Returns the offer used.
    pub async fn launch(&mut self, tasks: Vec<TaskInfo>) -> Offer {
        self.handle.revive().await.expect("revive");
        let need = tasks
            .iter()
            .fold(Resources::default(), |acc, t| acc.plus(&t.resources));
        let offer = loop {
            let offers = self
                .expect(&format!("an offer holding {need}"), LONG, |e| match e {
                    Event::Offers(o) => Some(o.clone()),
                    _ => None,
                })
                .await;
            let mut chosen = None;
            for o in offers {
                if chosen.is_none() && o.fits(&need) {
                    chosen = Some(o);
                } else {
                    self.handle
                        .decline(vec![o.id.clone()], Some(Duration::ZERO))
                        .await
                        .expect("decline");
                }
            }
            if let Some(o) = chosen {
                break o;
            }
        };
        self.handle
            .accept(
                vec![offer.id.clone()],
                tasks,
                Filters::refuse(Duration::from_secs(1)),
            )
            .await
            .expect("accept");
        self.handle.suppress().await.expect("suppress");
        offer
    }
}
