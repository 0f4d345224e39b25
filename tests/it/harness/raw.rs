//! A scheduler speaking the wire protocol directly.

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

// ---------------------------------------------------------------- raw gRPC

/// A scheduler speaking the wire protocol directly (for requests the SDK
/// would never send).
pub struct Raw {
    client: pb::scheduler_client::SchedulerClient<tonic::transport::Channel>,
    /// The framework id.
    pub framework_id: String,
    /// The current stream id.
    pub stream_id: String,
    rx: mpsc::UnboundedReceiver<pb::Event>,
    /// Offers read and not yet used.
    backlog: VecDeque<pb::event::Event>,
    /// Every event read (heartbeats aside).
    pub seen: Vec<pb::Event>,
}

/// A `FrameworkInfo` for a raw subscription.
pub fn raw_framework(name: &str) -> pb::FrameworkInfo {
    pb::FrameworkInfo {
        name: name.into(),
        user: std::env::var("USER").unwrap_or_default(),
        role: "*".into(),
        default_class: "batch".into(),
        failover_timeout_seconds: 60.0,
        hostname: "localhost".into(),
        ..Default::default()
    }
}

/// A raw resource.
pub fn resource(name: &str, scalar: f64) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        scalar,
        ranges: vec![],
        revocable: false,
    }
}

/// A raw shell task.
pub fn raw_task(id: &str, script: &str, resources: Vec<pb::Resource>) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: id.into(),
        name: id.into(),
        resources,
        command: Some(pb::CommandInfo {
            value: script.into(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Raw {
    /// Connects to the manager's gRPC endpoint.
    pub async fn connect(
        addr: &str,
    ) -> pb::scheduler_client::SchedulerClient<tonic::transport::Channel> {
        pb::scheduler_client::SchedulerClient::connect(format!("http://{addr}"))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
    }

    /// Subscribes with `req`; returns the refusal, or the subscription.
    pub async fn subscribe(addr: &str, req: pb::SubscribeRequest) -> Result<Raw, tonic::Status> {
        let mut client = Raw::connect(addr).await;
        let mut stream = client.subscribe(req).await?.into_inner();
        let first = tokio::time::timeout(LONG, stream.message())
            .await
            .expect("no Subscribed event in time")?
            .expect("the stream ended before Subscribed");
        let Some(pb::event::Event::Subscribed(s)) = first.event else {
            panic!("first event is not Subscribed: {first:?}");
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(e)) = stream.message().await {
                if tx.send(e).is_err() {
                    break;
                }
            }
        });
        Ok(Raw {
            client,
            framework_id: s.framework_id,
            stream_id: s.stream_id,
            rx,
            backlog: VecDeque::new(),
            seen: Vec::new(),
        })
    }

    /// Makes a call on the subscription.
    pub async fn call(&mut self, call: pb::call::Call) -> Result<(), tonic::Status> {
        let req = pb::Call {
            framework_id: self.framework_id.clone(),
            stream_id: self.stream_id.clone(),
            call: Some(call),
        };
        self.client.call(req).await.map(|_| ())
    }

    /// Accepts `offer_ids` launching `tasks`; unused resources are offered
    /// again at once.
    pub async fn accept(
        &mut self,
        offer_ids: Vec<String>,
        tasks: Vec<pb::TaskInfo>,
    ) -> Result<(), tonic::Status> {
        self.call(pb::call::Call::Accept(pb::call::Accept {
            offer_ids,
            operations: vec![pb::call::Operation {
                operation: Some(pb::call::operation::Operation::Launch(pb::call::Launch {
                    tasks,
                })),
            }],
            filters: Some(pb::Filters {
                refuse_seconds: Some(0.0),
            }),
        }))
        .await
    }

    /// Takes the first event `f` picks: from the backlog of offers read
    /// earlier, else from the stream. Updates are acknowledged as they are
    /// read; offers not picked are kept for later (never silently held).
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&pb::event::Event) -> Option<T>,
    ) -> T {
        if let Some(i) = self.backlog.iter().position(|e| f(e).is_some()) {
            let e = self.backlog.remove(i).expect("index in range");
            return f(&e).expect("picked before");
        }
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            let e = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => panic!(
                    "timed out waiting for {what}; events: {:#?}",
                    &self.seen[self.seen.len().saturating_sub(20)..]
                ),
                Ok(None) => panic!("the event stream ended while waiting for {what}"),
                Ok(Some(e)) => e,
            };
            let Some(inner) = e.event.clone() else {
                continue;
            };
            if let pb::event::Event::Update(u) = &inner
                && let Some(s) = &u.status
                && !s.uuid.is_empty()
            {
                let ack = pb::call::Call::Acknowledge(pb::call::Acknowledge {
                    agent_id: s.agent_id.clone(),
                    task_id: s.task_id.clone(),
                    uuid: s.uuid.clone(),
                });
                self.call(ack).await.expect("acknowledge");
            }
            if !matches!(inner, pb::event::Event::Heartbeat(_)) {
                self.seen.push(e);
            }
            if let Some(v) = f(&inner) {
                return v;
            }
            if matches!(inner, pb::event::Event::Offers(_)) {
                self.backlog.push_back(inner);
            }
        }
    }

    /// The next offer (the others of its batch are kept for later).
    pub async fn next_offer(&mut self) -> pb::Offer {
        let mut offers = self
            .expect("an offer", |e| match e {
                pb::event::Event::Offers(o) if !o.offers.is_empty() => Some(o.offers.clone()),
                _ => None,
            })
            .await;
        let first = offers.remove(0);
        if !offers.is_empty() {
            self.backlog
                .push_front(pb::event::Event::Offers(pb::event::Offers { offers }));
        }
        first
    }

    /// Waits for an update of `task` with `state`; panics on another
    /// terminal state.
    pub async fn wait_state(&mut self, task: &str, state: pb::TaskState) -> pb::TaskStatus {
        loop {
            let s = self
                .expect(
                    &format!("task {task} to be {}", state.as_str_name()),
                    |e| match e {
                        pb::event::Event::Update(u) => {
                            u.status.clone().filter(|s| s.task_id == task)
                        }
                        _ => None,
                    },
                )
                .await;
            if s.state == state as i32 {
                return s;
            }
            let got = pb::TaskState::try_from(s.state).unwrap_or_default();
            if got.is_terminal() {
                panic!(
                    "waiting for task {task} to be {}, it ended {}: {:?}",
                    state.as_str_name(),
                    got.as_str_name(),
                    s.message
                );
            }
        }
    }
}
