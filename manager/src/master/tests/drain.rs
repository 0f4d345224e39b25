//! Draining an agent: offers stop and are rescinded, frameworks are told
//! (again on subscription), what is left at the deadline is killed once,
//! the state goes DRAINING → DRAINED, and the drain survives a restart;
//! peers one protocol version behind are served (and not told of drains).

use super::*;

fn drains(events: &[event::Event]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            event::Event::Drain(d) => Some((d.agent_id.clone(), d.draining)),
            _ => None,
        })
        .collect()
}

fn drain_of(m: &Master, a: &AgentId, now: Timestamp) -> Option<String> {
    m.state_view(now)
        .agents
        .into_iter()
        .find(|v| v.id == a.as_str())
        .and_then(|v| v.drain)
}

#[test]
fn a_drained_agent_is_offered_nothing_and_loses_what_is_left_at_its_deadline() {
    let mut t = T::new();
    let a = t.agent(2.0);
    let f = t.framework();
    let offers = t.offers(&f.0);
    t.launch(&f, &offers[0], vec![task("t1", 1.0)]);
    // An offer of the rest is out when the drain begins (once the filter
    // on what the launch left unused has passed).
    t.now += Duration::from_secs(6);
    let out = t.offers(&f.0);
    assert_eq!(out.len(), 1);
    t.m.drain_agent(t.now, &a, Duration::from_secs(60)).unwrap();
    let actions = t.m.drain_actions();
    let events: Vec<event::Event> = actions
        .iter()
        .filter_map(|x| match x {
            Action::ToFramework { event, .. } => event.event.clone(),
            _ => None,
        })
        .collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, event::Event::Rescind(r) if r.offer_id == out[0].offer_id)),
        "{events:?}"
    );
    assert_eq!(drains(&events), vec![(a.to_string(), true)]);
    assert!(actions.iter().any(|x| matches!(
        x,
        Action::Persist(PersistOp::PutAgent(r)) if r.drain.is_some()
    )));
    assert!(kills(&actions).is_empty(), "killed before the deadline");
    assert_eq!(drain_of(&t.m, &a, t.now).as_deref(), Some("draining"));
    // Nothing more is offered there.
    assert!(t.offers(&f.0).is_empty());
    // A framework subscribing now hears of the drain.
    let g = t.m.subscribe(t.now, subscribe_req("")).unwrap();
    assert_eq!(drains(&t.events(&g.0)), vec![(a.to_string(), true)]);

    // The deadline: the task is killed, once, with the drain's reason.
    t.now += Duration::from_secs(61);
    t.m.agent_heartbeat(t.now, &a).unwrap();
    t.m.tick(t.now);
    let k = kills(&t.m.drain_actions());
    assert_eq!(k.len(), 1);
    assert_eq!(k[0].task_id, "t1");
    assert_eq!(k[0].reason, pb::Reason::AgentDrained as i32);
    t.m.tick(t.now + Duration::from_secs(1));
    assert!(kills(&t.m.drain_actions()).is_empty(), "killed twice");
    t.agent_says(&a, &f.0, "t1", pb::TaskState::TaskKilled, 1);
    assert_eq!(drain_of(&t.m, &a, t.now).as_deref(), Some("drained"));
    t.m.check_invariants().unwrap();

    // A restarted master keeps the drain (it is in the agent's record).
    let record = AgentRecord {
        id: a.clone(),
        hostname: "h".into(),
        address: "127.0.0.1:1".into(),
        resources: Resources::new(2.0, 4096.0),
        attributes: vec![],
        drain: Some(DrainRecord {
            since: t.now,
            deadline: t.now,
        }),
    };
    let snapshot = RegistrySnapshot {
        agents: vec![record],
        ..Default::default()
    };
    let mut m = Master::recover(cfg(), snapshot, t.now);
    m.agent_register(t.now, register(a.as_str(), 2.0, vec![]))
        .unwrap();
    let g = m.subscribe(t.now, subscribe_req("")).unwrap();
    m.drain_actions();
    m.allocate_now(t.now);
    let offered = m.drain_actions().into_iter().any(|x| {
        matches!(x, Action::ToFramework { framework, event: pb::Event { event: Some(event::Event::Offers(_)) } } if framework == g.0)
    });
    assert!(!offered, "a drained agent offered after a restart");

    // Undrained, it is offered again, and frameworks are told.
    m.undrain_agent(&a).unwrap();
    assert_eq!(
        m.undrain_agent(&a),
        Err(MasterError::NotDraining {
            agent_id: a.clone()
        })
    );
    m.allocate_now(t.now);
    let actions = m.drain_actions();
    assert!(actions.iter().any(|x| matches!(
        x,
        Action::ToFramework {
            event: pb::Event {
                event: Some(event::Event::Offers(_))
            },
            ..
        }
    )));
    assert!(actions.iter().any(|x| matches!(
        x,
        Action::ToFramework { event: pb::Event { event: Some(event::Event::Drain(d)) }, .. } if !d.draining
    )));
    m.check_invariants().unwrap();
}

#[test]
fn draining_an_unknown_agent_is_refused() {
    let mut t = T::new();
    let nobody = AgentId::new("nobody");
    assert_eq!(
        t.m.drain_agent(t.now, &nobody, Duration::ZERO),
        Err(MasterError::UnknownAgent {
            agent_id: nobody.clone()
        })
    );
    assert_eq!(
        MasterError::UnknownAgent { agent_id: nobody }.http_status(),
        404
    );
}

#[test]
fn peers_one_protocol_version_behind_are_served_in_theirs() {
    use strata_proto::{OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};
    assert_eq!(OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION - 1);
    let mut t = T::new();
    // An agent one version behind registers.
    let mut reg = register("", 2.0, vec![]);
    reg.protocol_version = OLDEST_PROTOCOL_VERSION;
    let a = t.m.agent_register(t.now, reg).unwrap();
    // So does a framework, answered in its own version.
    let mut req = subscribe_req("");
    req.protocol_version = OLDEST_PROTOCOL_VERSION;
    let old = t.m.subscribe(t.now, req).unwrap();
    let subscribed = t.events(&old.0).into_iter().find_map(|e| match e {
        event::Event::Subscribed(s) => Some(s.protocol_version),
        _ => None,
    });
    assert_eq!(subscribed, Some(OLDEST_PROTOCOL_VERSION));
    let new = t.framework();
    // Two behind is refused, naming both versions.
    let mut req = subscribe_req("");
    req.protocol_version = OLDEST_PROTOCOL_VERSION - 1;
    let err = t.m.subscribe(t.now, req).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("speaks {PROTOCOL_VERSION}")),
        "{err}"
    );
    // A drain is told to the framework that knows the event, not the old one.
    t.m.drain_agent(t.now, &a, Duration::from_secs(60)).unwrap();
    let actions = t.m.drain_actions();
    let told: Vec<&FrameworkId> = actions
        .iter()
        .filter_map(|x| match x {
            Action::ToFramework {
                framework,
                event:
                    pb::Event {
                        event: Some(event::Event::Drain(_)),
                    },
            } => Some(framework),
            _ => None,
        })
        .collect();
    assert_eq!(told, vec![&new.0]);
}
