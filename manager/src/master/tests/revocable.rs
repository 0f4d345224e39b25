//! Revocable capacity: idle cpus of services lent to batch, and revoked
//! when the services need them.

use super::*;

/// A framework whose whole-agent offers are of the `service` class.
fn service_framework(t: &mut T) -> (FrameworkId, StreamId) {
    let mut req = subscribe_req("");
    req.framework.as_mut().unwrap().default_class = "service".into();
    let r = t.m.subscribe(t.now, req).unwrap();
    t.m.drain_actions();
    r
}

fn usage(t: &mut T, agent: &AgentId, f: &FrameworkId, task: &str, cpus: f64) {
    t.m.agent_usage(
        t.now,
        agent,
        agent_message::Usage {
            tasks: vec![pb::TaskUsage {
                framework_id: f.to_string(),
                task_id: task.into(),
                cpus,
                mem: 50.0,
            }],
        },
    )
    .unwrap();
}

fn revocable_task(id: &str, cpus: f64) -> pb::TaskInfo {
    let mut x = task(id, 0.0);
    x.resources = Resources::new(0.0, 256.0).to_proto(false);
    x.resources.extend(Resources::new(cpus, 0.0).to_proto(true));
    x.priority_class = "batch".into();
    x
}

fn lent(t: &T) -> (f64, f64) {
    let v = t.m.state_view(t.now);
    (v.agents[0].cpus_lent, v.agents[0].cpus_revocable_allocated)
}

/// A 4-cpu agent fully held by one idle service task; returns the agent,
/// the service framework and a batch framework asking for two 1-cpu tasks
/// that accept revocable cpus.
fn idle_service(t: &mut T) -> (AgentId, (FrameworkId, StreamId), (FrameworkId, StreamId)) {
    let a = t.agent(4.0);
    let s = service_framework(t);
    let offers = t.offers(&s.0);
    let mut x = task("s0", 4.0);
    x.priority_class = "service".into();
    t.launch(&s, &offers[0], vec![x]);
    t.agent_says(&a, &s.0, "s0", pb::TaskState::TaskRunning, 1);
    t.call(&s, call::Call::Suppress(call::Suppress {})).unwrap();
    t.m.drain_actions();
    let b = t.framework();
    t.demand(
        &b,
        vec![pb::Ask {
            accept_revocable: true,
            ..ask("batch", 1.0, 256.0, 2)
        }],
    )
    .unwrap();
    t.m.drain_actions();
    (a, s, b)
}

#[test]
fn idle_service_cpus_are_lent_to_batch_then_revoked_when_used() {
    let mut t = T::new();
    let (a, s, b) = idle_service(&mut t);
    // Nothing is lent before the task has been measured a while.
    assert!(t.offers(&b.0).is_empty());
    for _ in 0..5 {
        usage(&mut t, &a, &s.0, "s0", 0.2);
        t.now += ms(2_000);
    }
    assert_eq!(lent(&t), (3.7, 0.0), "4 − 0.2 × 1.25, rounded down");
    let offers = t.offers(&b.0);
    assert_eq!(offers.len(), 1, "{offers:?}");
    let (regular, revocable) = Resources::from_proto_split(&offers[0].resources).unwrap();
    assert_eq!(revocable, Resources::new(2.0, 0.0));
    assert_eq!(regular, Resources::new(0.0, 512.0));
    t.launch(&b, &offers[0], vec![revocable_task("b0", 1.0)]);
    t.now += ms(1_000);
    let offers = t.offers(&b.0);
    assert_eq!(offers.len(), 1, "the second task is offered again");
    t.launch(&b, &offers[0], vec![revocable_task("b1", 1.0)]);
    t.agent_says(&a, &b.0, "b0", pb::TaskState::TaskRunning, 2);
    t.agent_says(&a, &b.0, "b1", pb::TaskState::TaskRunning, 3);
    t.m.drain_actions();
    assert_eq!(lent(&t), (3.7, 2.0));
    t.m.check_invariants().unwrap();
    // The service gets busy: 4 − 2.0 × 1.25 = 1.5 covers one borrower; the
    // newer one is revoked, with the grace.
    usage(&mut t, &a, &s.0, "s0", 2.0);
    let k = kills(&t.m.drain_actions());
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(k[0].task_id, "b1");
    assert_eq!(k[0].reason, pb::Reason::ResourcesRevoked as i32);
    assert_eq!(k[0].grace_period_seconds, Some(5.0));
    assert_eq!(t.m.counters().tasks_revoked, 1);
    // Once more of the same revokes nothing more.
    t.now += ms(2_000);
    usage(&mut t, &a, &s.0, "s0", 2.0);
    assert!(kills(&t.m.drain_actions()).is_empty());
    t.agent_says(&a, &b.0, "b1", pb::TaskState::TaskKilled, 4);
    t.m.drain_actions();
    assert_eq!(lent(&t), (1.5, 1.0));
    t.m.check_invariants().unwrap();
    // The service ends: its cpus are free, nothing is lent, the last
    // borrower is revoked.
    t.agent_says(&a, &s.0, "s0", pb::TaskState::TaskFinished, 5);
    let k = kills(&t.m.drain_actions());
    assert_eq!(
        k.iter().map(|k| k.task_id.as_str()).collect::<Vec<_>>(),
        ["b0"]
    );
    assert_eq!(lent(&t).0, 0.0);
    t.m.check_invariants().unwrap();
}

#[test]
fn only_asks_that_accept_revocable_and_classes_below_borrow() {
    let mut t = T::new();
    let (a, s, b) = idle_service(&mut t);
    // Regular-only batch demand and service demand.
    t.demand(&b, vec![ask("batch", 1.0, 256.0, 2)]).unwrap();
    let s2 = t.framework();
    t.demand(
        &s2,
        vec![pb::Ask {
            accept_revocable: true,
            ..ask("service", 1.0, 256.0, 1)
        }],
    )
    .unwrap();
    t.m.drain_actions();
    for _ in 0..5 {
        usage(&mut t, &a, &s.0, "s0", 0.2);
        t.now += ms(2_000);
    }
    assert_eq!(lent(&t).0, 3.7);
    t.m.allocate_now(t.now);
    let actions = t.m.drain_actions();
    assert!(
        !actions.iter().any(|x| matches!(
            x,
            Action::ToFramework {
                event: pb::Event {
                    event: Some(event::Event::Offers(_))
                },
                ..
            }
        )),
        "{actions:?}"
    );
}

#[test]
fn revocable_cpus_are_checked_on_launch() {
    let mut t = T::new();
    let (a, s, b) = idle_service(&mut t);
    for _ in 0..5 {
        usage(&mut t, &a, &s.0, "s0", 0.2);
        t.now += ms(2_000);
    }
    let offers = t.offers(&b.0);
    // More revocable cpus than offered, and revocable mem.
    let mut too_much = revocable_task("x0", 3.0);
    too_much.task_id = "x0".into();
    let mut rev_mem = revocable_task("x1", 1.0);
    rev_mem.resources = Resources::new(1.0, 64.0).to_proto(true);
    let actions = t.launch(&b, &offers[0], vec![too_much, rev_mem]);
    let ups = T::updates(&actions);
    assert_eq!(ups.len(), 2);
    assert!(ups.iter().all(|u| u.state() == pb::TaskState::TaskError));
    assert!(
        ups[0].message.contains("revocable cpus"),
        "{}",
        ups[0].message
    );
    assert!(
        ups[1].message.contains("only cpus can be revocable"),
        "{}",
        ups[1].message
    );
    t.m.check_invariants().unwrap();
    assert_eq!(lent(&t), (3.7, 0.0));
}
