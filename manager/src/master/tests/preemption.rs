//! Priority classes: a service ask preempts batch tasks (once, for the
//! room it needs), and batch never preempts batch.

use super::*;

#[test]
fn a_service_ask_preempts_batch_once_and_gets_the_room() {
    let mut t = T::new();
    let a = t.agent(4.0);
    let batch = t.framework();
    let offers = t.offers(&batch.0);
    let tasks: Vec<pb::TaskInfo> = (0..4)
        .map(|i| {
            let mut x = task(&format!("b{i}"), 1.0);
            x.priority_class = "batch".into();
            x
        })
        .collect();
    t.launch(&batch, &offers[0], tasks);
    for i in 0..4u8 {
        t.agent_says(
            &a,
            &batch.0,
            &format!("b{i}"),
            pb::TaskState::TaskRunning,
            i + 1,
        );
        t.now += ms(1_000);
    }
    t.m.drain_actions();
    // The batch framework no longer wants offers.
    t.call(&batch, call::Call::Suppress(call::Suppress {}))
        .unwrap();
    let service = t.framework();
    t.demand(&service, vec![ask("service", 1.0, 64.0, 2)])
        .unwrap();
    t.m.allocate_now(t.now);
    let k = kills(&t.m.drain_actions());
    // Two batch tasks go, with the grace.
    let mut victims: Vec<String> = k.iter().map(|k| k.task_id.clone()).collect();
    victims.sort();
    victims.dedup();
    assert_eq!(victims.len(), 2, "{victims:?}");
    assert!(
        k.iter().all(
            |k| k.reason == pb::Reason::Preempted as i32 && k.grace_period_seconds == Some(5.0)
        )
    );
    assert_eq!(t.m.counters().tasks_preempted, 2);
    t.m.check_invariants().unwrap();
    // While the victims die, later cycles preempt nothing more.
    t.now += ms(1_000);
    t.m.allocate_now(t.now);
    assert!(kills(&t.m.drain_actions()).is_empty());
    // Once they are gone, the service is offered their room.
    for (i, v) in victims.iter().enumerate() {
        t.agent_says(&a, &batch.0, v, pb::TaskState::TaskKilled, 10 + i as u8);
    }
    t.m.drain_actions();
    let offers = t.offers(&service.0);
    assert_eq!(offers.len(), 1);
    let offered = Resources::from_proto(&offers[0].resources).unwrap();
    assert_eq!(offered.cpus, Resources::new(2.0, 0.0).cpus);
    assert_eq!(offers[0].priority_class, "service");
    t.m.check_invariants().unwrap();
}

#[test]
fn asks_of_one_decision_do_not_share_the_room_victims_free() {
    let mut t = T::new();
    t.agent(2.0);
    t.agent(2.0);
    let batch = t.framework();
    let offers = t.offers(&batch.0);
    assert_eq!(offers.len(), 2);
    let mut on_agent = std::collections::BTreeMap::new();
    for (n, o) in offers.iter().enumerate() {
        let tasks: Vec<pb::TaskInfo> = (0..2)
            .map(|i| {
                let id = format!("b{}", 2 * n + i);
                on_agent.insert(id.clone(), AgentId::new(o.agent_id.clone()));
                let mut x = task(&id, 1.0);
                x.priority_class = "batch".into();
                x
            })
            .collect();
        t.launch(&batch, o, tasks);
    }
    t.call(&batch, call::Call::Suppress(call::Suppress {}))
        .unwrap();
    t.m.drain_actions();
    // A 2-cpu and a 1-cpu instance, on a cluster full of batch tasks.
    let service = t.framework();
    let asks = vec![ask("service", 2.0, 64.0, 1), ask("service", 1.0, 64.0, 1)];
    t.demand(&service, asks).unwrap();
    t.m.allocate_now(t.now);
    // The second ask does not count on the room the first ask's victims
    // free: it gets a victim of its own, on the other agent.
    let k = kills(&t.m.drain_actions());
    let mut victims: Vec<String> = k.iter().map(|k| k.task_id.clone()).collect();
    victims.sort();
    victims.dedup();
    assert_eq!(victims.len(), 3, "{victims:?}");
    t.m.check_invariants().unwrap();
    // Later cycles preempt nothing more while they die.
    t.now += ms(1_000);
    t.m.allocate_now(t.now);
    assert!(kills(&t.m.drain_actions()).is_empty());
    // Once they are gone, both instances are offered room at once.
    for (i, v) in victims.iter().enumerate() {
        t.agent_says(
            &on_agent[v],
            &batch.0,
            v,
            pb::TaskState::TaskKilled,
            20 + i as u8,
        );
    }
    t.m.drain_actions();
    let offered: f64 = t
        .offers(&service.0)
        .iter()
        .map(|o| Resources::from_proto(&o.resources).unwrap().cpus.as_f64())
        .sum();
    assert_eq!(offered, 3.0);
    t.m.check_invariants().unwrap();
}

#[test]
fn a_service_ask_takes_back_an_offer_made_to_batch() {
    let mut t = T::new();
    t.agent(2.0);
    let batch = t.framework();
    // The batch framework holds the whole agent in an offer; no task runs.
    assert_eq!(t.offers(&batch.0).len(), 1);
    let service = t.framework();
    t.demand(&service, vec![ask("service", 1.0, 64.0, 1)])
        .unwrap();
    t.m.drain_actions();
    t.m.allocate_now(t.now);
    assert_eq!(t.m.counters().offers_preempted, 1);
    assert!(
        t.events(&batch.0)
            .iter()
            .any(|e| matches!(e, event::Event::Rescind(_)))
    );
    t.m.check_invariants().unwrap();
    // The room is the service's in the next cycle.
    t.now += ms(1_000);
    assert_eq!(t.offers(&service.0).len(), 1);
}

#[test]
fn a_batch_ask_never_preempts_batch() {
    let mut t = T::new();
    let a = t.agent(2.0);
    let f1 = t.framework();
    let offers = t.offers(&f1.0);
    let mut x = task("b0", 2.0);
    x.priority_class = "batch".into();
    t.launch(&f1, &offers[0], vec![x]);
    t.agent_says(&a, &f1.0, "b0", pb::TaskState::TaskRunning, 1);
    let f2 = t.framework();
    t.demand(&f2, vec![ask("batch", 1.0, 64.0, 1)]).unwrap();
    t.m.drain_actions();
    t.m.allocate_now(t.now);
    assert!(kills(&t.m.drain_actions()).is_empty());
    assert_eq!(t.m.counters().tasks_preempted, 0);
}
