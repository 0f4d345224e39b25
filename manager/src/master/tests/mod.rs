//! Unit tests of the master: one behaviour each, in simulated time.

use super::*;
use strata_proto::pb::{agent_message, call, event, manager_message};

/// `n` milliseconds.
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct T {
    m: Master,
    now: Timestamp,
}

fn cfg() -> MasterConfig {
    MasterConfig {
        instance: "t".into(),
        agent_timeout: ms(5_000),
        offer_timeout: ms(10_000),
        default_failover_timeout: ms(3_000),
        default_refuse: ms(1_000),
        update_retry: ms(2_000),
        ..MasterConfig::default()
    }
}

fn agent_info(cpus: f64, mem: f64) -> pb::AgentInfo {
    pb::AgentInfo {
        hostname: "h".into(),
        address: "127.0.0.1:1".into(),
        resources: Resources::new(cpus, mem).to_proto(false),
        attributes: vec![],
    }
}

fn register(id: &str, cpus: f64, tasks: Vec<pb::AgentTask>) -> agent_message::Register {
    agent_message::Register {
        protocol_version: strata_proto::PROTOCOL_VERSION,
        agent_id: id.into(),
        info: Some(agent_info(cpus, 4096.0)),
        tasks,
    }
}

fn subscribe_req(id: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        protocol_version: strata_proto::PROTOCOL_VERSION,
        framework: Some(pb::FrameworkInfo {
            framework_id: id.into(),
            name: "f".into(),
            ..Default::default()
        }),
        demand: vec![],
        suppressed: false,
    }
}

/// An ask for `count` instances of `cpus` × `mem` MiB in `class`.
fn ask(class: &str, cpus: f64, mem: f64, count: u32) -> pb::Ask {
    pb::Ask {
        priority_class: class.into(),
        resources: Resources::new(cpus, mem).to_proto(false),
        count,
        ..Default::default()
    }
}

fn task(id: &str, cpus: f64) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: id.into(),
        resources: Resources::new(cpus, 64.0).to_proto(false),
        command: Some(pb::CommandInfo {
            value: "true".into(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl T {
    fn new() -> T {
        T {
            m: Master::new(cfg()),
            now: Timestamp::from_millis(1_000),
        }
    }

    fn agent(&mut self, cpus: f64) -> AgentId {
        let id = self
            .m
            .agent_register(self.now, register("", cpus, vec![]))
            .unwrap();
        self.m.drain_actions();
        id
    }

    fn framework(&mut self) -> (FrameworkId, StreamId) {
        let r = self.m.subscribe(self.now, subscribe_req("")).unwrap();
        self.m.drain_actions();
        r
    }

    /// Declares `asks` as framework `f`'s demand.
    fn demand(
        &mut self,
        f: &(FrameworkId, StreamId),
        asks: Vec<pb::Ask>,
    ) -> Result<(), MasterError> {
        self.call(f, call::Call::Demand(call::Demand { asks }))
    }

    fn call(&mut self, f: &(FrameworkId, StreamId), c: call::Call) -> Result<(), MasterError> {
        self.m.call(
            self.now,
            pb::Call {
                framework_id: f.0.to_string(),
                stream_id: f.1.to_string(),
                call: Some(c),
            },
        )
    }

    /// Runs a cycle and returns the offers made to `f`.
    fn offers(&mut self, f: &FrameworkId) -> Vec<pb::Offer> {
        self.m.allocate_now(self.now);
        self.events(f)
            .into_iter()
            .filter_map(|e| match e {
                event::Event::Offers(o) => Some(o.offers),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn events(&mut self, f: &FrameworkId) -> Vec<event::Event> {
        self.m
            .drain_actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::ToFramework { framework, event } if framework == *f => event.event,
                _ => None,
            })
            .collect()
    }

    fn updates(actions: &[Action]) -> Vec<pb::TaskStatus> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ToFramework {
                    event:
                        pb::Event {
                            event: Some(event::Event::Update(u)),
                        },
                    ..
                } => u.status.clone(),
                _ => None,
            })
            .collect()
    }

    fn launch(
        &mut self,
        f: &(FrameworkId, StreamId),
        offer: &pb::Offer,
        tasks: Vec<pb::TaskInfo>,
    ) -> Vec<Action> {
        self.call(
            f,
            call::Call::Accept(call::Accept {
                offer_ids: vec![offer.offer_id.clone()],
                operations: vec![call::Operation {
                    operation: Some(call::operation::Operation::Launch(call::Launch { tasks })),
                }],
                filters: None,
            }),
        )
        .unwrap();
        self.m.drain_actions()
    }

    fn agent_says(
        &mut self,
        agent: &AgentId,
        f: &FrameworkId,
        task: &str,
        state: pb::TaskState,
        uuid: u8,
    ) {
        self.m
            .agent_update(
                self.now,
                agent,
                agent_message::StatusUpdate {
                    framework_id: f.to_string(),
                    status: Some(pb::TaskStatus {
                        task_id: task.into(),
                        state: state as i32,
                        uuid: vec![uuid; 16],
                        ..Default::default()
                    }),
                },
            )
            .unwrap();
    }
}

#[test]
fn launch_validation_errors_and_drops() {
    let mut t = T::new();
    let a = t.agent(2.0);
    let f = t.framework();
    let offers = t.offers(&f.0);
    assert_eq!(offers.len(), 1);
    let mut big = task("big", 3.0);
    big.priority_class = "batch".into();
    let mut gpus = task("gpus", 1.0);
    gpus.resources.push(pb::Resource {
        name: "gpus".into(),
        scalar: 1.0,
        ..Default::default()
    });
    let mut nan = task("nan", 1.0);
    nan.resources[0].scalar = f64::NAN;
    let mut above = task("above", 0.1);
    above.priority_class = "system".into();
    let actions = t.launch(
        &f,
        &offers[0],
        vec![
            task("ok", 1.0),
            task("ok", 0.5),
            big,
            gpus,
            nan,
            above,
            task("bad/id", 0.1),
        ],
    );
    let ups = T::updates(&actions);
    let state_of = |id: &str| {
        ups.iter()
            .find(|s| s.task_id == id)
            .map(|s| (s.state(), s.message.clone()))
    };
    assert_eq!(ups.len(), 6, "{ups:?}");
    assert!(state_of("big").unwrap().1.contains("offers hold only"));
    assert!(state_of("gpus").unwrap().1.contains("unknown resource"));
    assert!(state_of("nan").unwrap().1.contains("invalid amount"));
    assert!(state_of("above").unwrap().1.contains("above the offer"));
    assert!(state_of("bad/id").unwrap().1.contains("invalid task id"));
    assert!(
        ups.iter()
            .all(|s| s.state() == pb::TaskState::TaskError && !s.uuid.is_empty())
    );
    // The valid task was sent to the agent.
    let runs: Vec<String> = actions
        .iter()
        .filter_map(|x| match x {
            Action::ToAgent {
                agent,
                message:
                    pb::ManagerMessage {
                        message: Some(manager_message::Message::RunTask(r)),
                    },
            } if *agent == a => r.task.as_ref().map(|t| t.task_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(runs, vec!["ok".to_owned()]);
    // The same offer again: dropped.
    let actions = t.launch(&f, &offers[0], vec![task("late", 0.1)]);
    let ups = T::updates(&actions);
    assert_eq!(ups[0].state(), pb::TaskState::TaskDropped);
    t.m.check_invariants().unwrap();
}

#[test]
fn a_constraint_with_an_unknown_operator_is_refused() {
    let mut t = T::new();
    t.agent(2.0);
    let f = t.framework();
    let constrained = |operator: i32| {
        let mut a = ask("batch", 1.0, 1.0, 1);
        a.constraints.push(pb::Constraint {
            field: "hostname".into(),
            operator,
            value: String::new(),
        });
        a
    };
    let err = t.demand(&f, vec![constrained(99)]).unwrap_err();
    assert_eq!(
        err,
        MasterError::UnknownConstraintOperator {
            field: "hostname".into(),
            operator: 99
        }
    );
    assert_eq!(err.grpc_code(), tonic::Code::InvalidArgument);
    assert_eq!(err.http_status(), 400);
    // Not read as UNIQUE (the zero value): a known operator is taken.
    let unique = pb::constraint::Operator::Unique as i32;
    t.demand(&f, vec![constrained(unique)]).unwrap();
}

#[test]
fn bad_protocol_version_and_impossible_ask() {
    let mut t = T::new();
    let mut req = subscribe_req("");
    req.protocol_version = 99;
    assert!(matches!(
        t.m.subscribe(t.now, req),
        Err(MasterError::ProtocolVersion { theirs: 99, .. })
    ));
    let mut reg = register("", 1.0, vec![]);
    reg.protocol_version = 7;
    assert!(t.m.agent_register(t.now, reg).is_err());
    t.agent(2.0);
    let f = t.framework();
    let err = t.demand(&f, vec![ask("batch", 64.0, 1.0, 1)]).unwrap_err();
    assert!(err.to_string().contains("can never be placed"), "{err}");
    // A stale stream id is refused.
    let stale = (f.0.clone(), StreamId::new("nope"));
    assert!(matches!(
        t.call(&stale, call::Call::Revive(call::Revive {})),
        Err(MasterError::StaleStream { .. })
    ));
}

#[test]
fn unreachable_agent_returns_and_tasks_run_again() {
    let mut t = T::new();
    let a = t.agent(2.0);
    let f = t.framework();
    let offers = t.offers(&f.0);
    t.launch(&f, &offers[0], vec![task("t1", 1.0)]);
    t.agent_says(&a, &f.0, "t1", pb::TaskState::TaskRunning, 1);
    t.m.drain_actions();
    // Silence past the agent timeout.
    t.now += ms(6_000);
    t.m.tick(t.now);
    let ups = T::updates(&t.m.drain_actions());
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state(), pb::TaskState::TaskUnreachable);
    assert_eq!(ups[0].reason(), pb::Reason::AgentUnreachable);
    // It comes back with the task running: reported running again, once.
    let info = task("t1", 1.0);
    t.m.agent_register(
        t.now,
        register(
            a.as_str(),
            2.0,
            vec![pb::AgentTask {
                framework_id: f.0.to_string(),
                task: Some(info),
                state: pb::TaskState::TaskRunning as i32,
            }],
        ),
    )
    .unwrap();
    let ups = T::updates(&t.m.drain_actions());
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state(), pb::TaskState::TaskRunning);
    let tasks = t.m.state_view(t.now).tasks;
    assert_eq!(tasks.len(), 1, "never duplicated");
    assert_eq!(
        tasks[0].state, "TASK_RUNNING",
        "the master's own view runs too"
    );
    // And reconciliation answers running.
    t.call(&f, call::Call::Reconcile(call::Reconcile { tasks: vec![] }))
        .unwrap();
    let ups = T::updates(&t.m.drain_actions());
    assert_eq!(ups[0].state(), pb::TaskState::TaskRunning);
    t.m.check_invariants().unwrap();
}

#[test]
fn task_missing_after_reregistration_is_gone() {
    let mut t = T::new();
    let a = t.agent(2.0);
    let f = t.framework();
    let offers = t.offers(&f.0);
    t.launch(&f, &offers[0], vec![task("t1", 1.0)]);
    t.m.agent_disconnected(t.now, &a);
    t.m.agent_register(t.now, register(a.as_str(), 2.0, vec![]))
        .unwrap();
    let ups = T::updates(&t.m.drain_actions());
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state(), pb::TaskState::TaskGone);
    assert_eq!(
        t.m.agent_free(&a).unwrap().cpus,
        Resources::new(2.0, 0.0).cpus
    );
}

#[test]
fn agent_back_with_fewer_resources_kills_newest_tasks() {
    let mut t = T::new();
    let a = t.agent(4.0);
    let f = t.framework();
    let offers = t.offers(&f.0);
    t.launch(&f, &offers[0], vec![task("old", 2.0)]);
    t.now += ms(1_100); // past the filter on what the first accept left
    let offers = t.offers(&f.0);
    t.launch(&f, &offers[0], vec![task("new", 2.0)]);
    let reported = |id: &str| pb::AgentTask {
        framework_id: f.0.to_string(),
        task: Some(task(id, 2.0)),
        state: pb::TaskState::TaskRunning as i32,
    };
    t.m.agent_register(
        t.now,
        register(a.as_str(), 2.0, vec![reported("old"), reported("new")]),
    )
    .unwrap();
    let actions = t.m.drain_actions();
    let kills: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::ToAgent {
                message:
                    pb::ManagerMessage {
                        message: Some(manager_message::Message::KillTask(k)),
                    },
                ..
            } => Some(k.task_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(kills, vec!["new"]);
    // No offer is made on the over-committed agent.
    assert!(t.offers(&f.0).is_empty());
}

#[test]
fn framework_failover_timeout_kills_tasks() {
    let mut t = T::new();
    let a = t.agent(2.0);
    let f = t.framework();
    let offers = t.offers(&f.0);
    t.launch(&f, &offers[0], vec![task("t1", 1.0)]);
    t.m.framework_disconnected(t.now, &f.0, &f.1);
    // Within the timeout it may come back.
    t.now += ms(1_000);
    t.m.tick(t.now);
    assert!(
        t.m.drain_actions()
            .iter()
            .all(|a| !matches!(a, Action::ToAgent { .. }))
    );
    // After it, its tasks are killed and it may not come back.
    t.now += ms(3_000);
    t.m.tick(t.now);
    let actions = t.m.drain_actions();
    assert!(actions.iter().any(|x| matches!(x, Action::ToAgent { agent, message: pb::ManagerMessage { message: Some(manager_message::Message::ShutdownFramework(_)) } } if *agent == a)));
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, Action::Persist(PersistOp::RemoveFramework(id)) if *id == f.0))
    );
    assert!(matches!(
        t.m.subscribe(t.now, subscribe_req(f.0.as_str())),
        Err(MasterError::FrameworkRemoved { .. })
    ));
    assert_eq!(t.m.agent_free(&a).unwrap().cpus.milli(), 2_000);
    // Nor under the next leader, which knows it from the registry only.
    let snapshot = RegistrySnapshot {
        removed_frameworks: vec![f.0.clone()],
        ..Default::default()
    };
    let mut next = Master::recover(cfg(), snapshot, t.now);
    assert!(matches!(
        next.subscribe(t.now, subscribe_req(f.0.as_str())),
        Err(MasterError::FrameworkRemoved { .. })
    ));
}

#[test]
fn failover_within_timeout_keeps_tasks_and_resends_unacked() {
    let mut t = T::new();
    let a = t.agent(2.0);
    let mut req = subscribe_req("");
    req.framework.as_mut().unwrap().failover_timeout_seconds = 60.0;
    let f = t.m.subscribe(t.now, req.clone()).unwrap();
    t.m.drain_actions();
    let offers = t.offers(&f.0);
    t.launch(&f, &offers[0], vec![task("t1", 1.0)]);
    t.m.framework_disconnected(t.now, &f.0, &f.1);
    // The agent becomes unreachable while the framework is away: the
    // manager's update is kept for it.
    t.now += ms(6_000);
    t.m.tick(t.now);
    t.m.drain_actions();
    req.framework.as_mut().unwrap().framework_id = f.0.to_string();
    let f2 = t.m.subscribe(t.now, req).unwrap();
    assert_eq!(f2.0, f.0);
    let ups = T::updates(&t.m.drain_actions());
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state(), pb::TaskState::TaskUnreachable);
    // Re-sent until acknowledged.
    t.now += ms(2_500);
    t.m.tick(t.now);
    assert_eq!(T::updates(&t.m.drain_actions()).len(), 1);
    t.call(
        &f2,
        call::Call::Acknowledge(call::Acknowledge {
            agent_id: a.to_string(),
            task_id: "t1".into(),
            uuid: ups[0].uuid.clone(),
        }),
    )
    .unwrap();
    t.now += ms(2_500);
    t.m.tick(t.now);
    assert!(T::updates(&t.m.drain_actions()).is_empty());
}

#[test]
fn decline_filters_and_offer_timeout() {
    let mut t = T::new();
    t.agent(2.0);
    let f = t.framework();
    let offers = t.offers(&f.0);
    assert_eq!(offers.len(), 1);
    t.call(
        &f,
        call::Call::Decline(call::Decline {
            offer_ids: vec![offers[0].offer_id.clone()],
            filters: Some(pb::Filters {
                refuse_seconds: Some(5.0),
            }),
        }),
    )
    .unwrap();
    t.now += ms(4_000);
    assert!(t.offers(&f.0).is_empty(), "filtered for 5 s");
    t.now += ms(2_000);
    let offers = t.offers(&f.0);
    assert_eq!(offers.len(), 1);
    // Not answered: rescinded after the offer timeout.
    t.now += ms(10_001);
    t.m.tick(t.now);
    let events = t.events(&f.0);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, event::Event::Rescind(r) if r.offer_id == offers[0].offer_id))
    );
    assert_eq!(t.m.outstanding_offers(), 0);
}

#[test]
fn recovered_master_adopts_running_tasks_without_loss() {
    let mut t = T::new();
    let a = t.agent(2.0);
    let f = t.framework();
    let offers = t.offers(&f.0);
    t.launch(&f, &offers[0], vec![task("t1", 1.0)]);
    let snapshot = RegistrySnapshot {
        agents: vec![AgentRecord {
            id: a.clone(),
            hostname: "h".into(),
            address: "127.0.0.1:1".into(),
            resources: Resources::new(2.0, 4096.0),
            attributes: vec![],
            drain: None,
        }],
        frameworks: vec![FrameworkRecord {
            id: f.0.clone(),
            name: "f".into(),
            user: String::new(),
            role: Role::new("*"),
            default_class: String::new(),
            failover_timeout_ms: 60_000,
            hostname: String::new(),
            labels: Default::default(),
            principal: String::new(),
        }],
        roles: vec![],
        removed_frameworks: vec![],
    };
    let mut m = Master::recover(cfg(), snapshot, t.now);
    // The agent comes back with its task; the framework re-subscribes.
    m.agent_register(
        t.now,
        register(
            a.as_str(),
            2.0,
            vec![pb::AgentTask {
                framework_id: f.0.to_string(),
                task: Some(task("t1", 1.0)),
                state: pb::TaskState::TaskRunning as i32,
            }],
        ),
    )
    .unwrap();
    m.subscribe(t.now, subscribe_req(f.0.as_str())).unwrap();
    let actions = m.drain_actions();
    assert!(
        T::updates(&actions).is_empty(),
        "no task reported lost: {actions:?}"
    );
    let view = m.state_view(t.now);
    assert_eq!(view.tasks.len(), 1);
    assert_eq!(view.tasks[0].state, "TASK_RUNNING");
    assert_eq!(m.agent_free(&a).unwrap().cpus.milli(), 1_000);
    m.check_invariants().unwrap();
}

#[test]
fn acknowledged_terminal_task_is_forgotten_and_reconciled() {
    let mut t = T::new();
    let a = t.agent(2.0);
    let f = t.framework();
    let offers = t.offers(&f.0);
    t.launch(&f, &offers[0], vec![task("t1", 1.0)]);
    t.agent_says(&a, &f.0, "t1", pb::TaskState::TaskFinished, 9);
    let ups = T::updates(&t.m.drain_actions());
    assert_eq!(ups[0].state(), pb::TaskState::TaskFinished);
    // Explicit reconciliation answers the terminal state before the ack.
    t.call(
        &f,
        call::Call::Reconcile(call::Reconcile {
            tasks: vec![call::reconcile::Task {
                task_id: "t1".into(),
                agent_id: a.to_string(),
            }],
        }),
    )
    .unwrap();
    let ups = T::updates(&t.m.drain_actions());
    assert_eq!(ups[0].state(), pb::TaskState::TaskFinished);
    assert_eq!(ups[0].reason(), pb::Reason::Reconciliation);
    t.call(
        &f,
        call::Call::Acknowledge(call::Acknowledge {
            agent_id: a.to_string(),
            task_id: "t1".into(),
            uuid: vec![9; 16],
        }),
    )
    .unwrap();
    let actions = t.m.drain_actions();
    assert!(actions.iter().any(|x| matches!(
        x,
        Action::ToAgent {
            message: pb::ManagerMessage {
                message: Some(manager_message::Message::Ack(_))
            },
            ..
        }
    )));
    assert!(t.m.state_view(t.now).tasks.is_empty());
    // Unknown now, on a registered agent: gone.
    t.call(
        &f,
        call::Call::Reconcile(call::Reconcile {
            tasks: vec![call::reconcile::Task {
                task_id: "t1".into(),
                agent_id: a.to_string(),
            }],
        }),
    )
    .unwrap();
    assert_eq!(
        T::updates(&t.m.drain_actions())[0].state(),
        pb::TaskState::TaskGone
    );
}

/// The kill messages among `actions`.
fn kills(actions: &[Action]) -> Vec<manager_message::KillTask> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToAgent {
                message:
                    pb::ManagerMessage {
                        message: Some(manager_message::Message::KillTask(k)),
                    },
                ..
            } => Some(k.clone()),
            _ => None,
        })
        .collect()
}

mod drain;
mod preemption;
mod revocable;
