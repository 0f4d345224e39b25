//! The services state machine, driven by hand: offers, statuses, health
//! verdicts and time are inputs; effects are checked.

use strata_proto::class::PriorityClasses;
use strata_proto::ids::{AgentId, OfferId, TaskId};
use strata_proto::pb::{Reason, Source, TaskState};
use strata_proto::resources::{Ranges, Resources};
use strata_sdk::{Offer, TaskStatus};

use super::app::{AppId, parse};
use super::core::{Effect, Services, Snapshot, Timestamp};
use std::time::Duration;

/// `n` milliseconds.
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
use super::error::ServiceError;

struct T {
    s: Services,
    now: Timestamp,
    offers: u32,
}

fn offer(n: u32, agent: &str, cpus: f64) -> Offer {
    Offer {
        id: OfferId::new(format!("o{n}")),
        agent_id: AgentId::new(agent),
        hostname: format!("host-{agent}"),
        resources: Resources::new(cpus, 4096.0).with_ports(Ranges::from_ranges([(31000, 31099)])),
        revocable: Resources::default(),
        attributes: vec![],
        class: "service".into(),
        agent_address: Some("127.0.0.1:5051".into()),
    }
}

fn status(task: &TaskId, state: TaskState, reason: Reason) -> TaskStatus {
    TaskStatus {
        task_id: task.clone(),
        agent_id: None,
        state,
        reason,
        source: Source::Agent,
        message: format!("{state:?}"),
        uuid: None,
        timestamp: None,
        exit_code: None,
        healthy: None,
    }
}

impl T {
    fn new() -> T {
        T {
            s: Services::new(PriorityClasses::default(), Snapshot::default()),
            now: Timestamp::from_millis(1_000_000),
            offers: 0,
        }
    }

    fn create(&mut self, json: &str) -> AppId {
        let def = parse(json.as_bytes()).unwrap();
        let (id, _) = self.s.create(self.now, def).unwrap();
        self.s.step(self.now);
        id
    }

    /// The demand declared by the last step, as (class, count) pairs.
    fn demand(&mut self) -> Option<Vec<(String, u32)>> {
        self.s.drain().into_iter().rev().find_map(|e| match e {
            Effect::Demand(asks) => Some(asks.iter().map(|a| (a.class.clone(), a.count)).collect()),
            _ => None,
        })
    }

    /// Offers one agent's resources; returns the launched task ids.
    fn offer(&mut self, agent: &str, cpus: f64) -> Vec<TaskId> {
        self.offers += 1;
        self.s
            .offers(self.now, vec![offer(self.offers, agent, cpus)]);
        self.launched()
    }

    fn launched(&mut self) -> Vec<TaskId> {
        self.s
            .drain()
            .into_iter()
            .flat_map(|e| match e {
                Effect::Launch { tasks, .. } => tasks.into_iter().map(|t| t.task_id).collect(),
                _ => vec![],
            })
            .collect()
    }

    fn kills(&mut self) -> Vec<TaskId> {
        self.s
            .drain()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Kill { task, .. } => Some(task),
                _ => None,
            })
            .collect()
    }

    fn says(&mut self, task: &TaskId, state: TaskState) {
        self.s
            .status(self.now, &status(task, state, Reason::Unspecified));
        self.s.step(self.now);
    }
}

#[test]
fn an_app_is_deployed_on_offers_with_its_ports_and_env() {
    let mut t = T::new();
    let id = t.create(
        r#"{"id":"/web","cmd":"serve","instances":2,"cpus":1,"mem":64,
            "portDefinitions":[{"port":0}],"env":{"MODE":"prod"}}"#,
    );
    assert_eq!(t.demand(), Some(vec![("service".into(), 2)]));
    t.offers += 1;
    t.s.offers(t.now, vec![offer(t.offers, "a1", 4.0)]);
    let effects = t.s.drain();
    let tasks: Vec<_> = effects
        .iter()
        .flat_map(|e| match e {
            Effect::Launch { tasks, .. } => tasks.clone(),
            _ => vec![],
        })
        .collect();
    assert_eq!(tasks.len(), 2);
    let env = &tasks[0].command.env;
    assert_eq!(env["MODE"], "prod");
    assert_eq!(env["PORT0"], "31000");
    assert_eq!(env["MARATHON_APP_ID"], "/web");
    assert_eq!(tasks[1].command.env["PORT0"], "31001");
    assert_eq!(tasks[0].class.as_deref(), Some("service"));
    assert!(tasks[0].task_id.as_str().starts_with("web."));
    // Nothing more is wanted: demand drops to none.
    assert!(effects.contains(&Effect::Demand(vec![])));
    let app = t.s.app(&id).unwrap();
    assert!(app.deployment.is_some());
    for task in tasks.iter().map(|x| x.task_id.clone()) {
        t.says(&task, TaskState::TaskRunning);
    }
    assert!(
        t.s.app(&id).unwrap().deployment.is_none(),
        "deployment done"
    );
    assert_eq!(t.s.deployments().count(), 0);
}

#[test]
fn a_failed_instance_is_restarted_after_its_backoff() {
    let mut t = T::new();
    let id = t.create(r#"{"id":"/w","cmd":"x","backoffSeconds":2,"backoffFactor":2}"#);
    let first = t.offer("a1", 2.0);
    t.says(&first[0], TaskState::TaskRunning);
    t.says(&first[0], TaskState::TaskFailed);
    let app = t.s.app(&id).unwrap();
    assert_eq!(app.last_failure.as_ref().unwrap().state, "TASK_FAILED");
    assert_eq!(app.delay_until, t.now + ms(2_000));
    // Backing off: an offer now launches nothing.
    t.s.drain();
    assert!(t.offer("a1", 2.0).is_empty());
    t.now += ms(2_000);
    t.s.step(t.now);
    let again = t.offer("a1", 2.0);
    assert_eq!(again.len(), 1);
    // A second failure doubles the delay.
    t.says(&again[0], TaskState::TaskFailed);
    assert_eq!(t.s.app(&id).unwrap().delay_until, t.now + ms(4_000));
}

#[test]
fn an_instance_failing_its_checks_is_killed_and_replaced_without_backoff() {
    let mut t = T::new();
    let id = t.create(
        r#"{"id":"/h","cmd":"x","portDefinitions":[{"port":0}],
            "healthChecks":[{"protocol":"HTTP","gracePeriodSeconds":5,
              "intervalSeconds":1,"maxConsecutiveFailures":2}]}"#,
    );
    let task = t.offer("a1", 2.0)[0].clone();
    t.says(&task, TaskState::TaskRunning);
    // Failures inside the grace period do not count.
    t.s.health(t.now, &task, false, "refused".into());
    assert!(t.kills().is_empty());
    assert_eq!(t.s.app(&id).unwrap().instances[&task].failures, 0);
    t.now += ms(6_000);
    t.s.health(t.now, &task, false, "refused".into());
    assert!(t.kills().is_empty());
    t.s.health(t.now, &task, false, "refused".into());
    assert_eq!(t.kills(), vec![task.clone()]);
    t.s.status(
        t.now,
        &status(&task, TaskState::TaskKilled, Reason::KilledByFramework),
    );
    t.s.step(t.now);
    let app = t.s.app(&id).unwrap();
    assert_eq!(
        app.delay_until,
        Timestamp::ZERO,
        "no backoff for our own kill"
    );
    assert_eq!(t.offer("a1", 2.0).len(), 1, "replaced");
}

#[test]
fn a_rolling_update_keeps_healthy_capacity_and_finishes() {
    let mut t = T::new();
    let id = t.create(
        r#"{"id":"/r","cmd":"v1","instances":2,"cpus":1,
            "upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":0}}"#,
    );
    let v1 = t.offer("a1", 8.0);
    for x in &v1 {
        t.says(x, TaskState::TaskRunning);
    }
    assert!(t.s.app(&id).unwrap().deployment.is_none());
    // While a deployment holds the app, a change is refused unless forced.
    let mut def = t.s.app(&id).unwrap().def.clone();
    def.cmd = Some("v2".into());
    t.s.put(t.now, def.clone(), false).unwrap();
    let mut again = def.clone();
    again.instances = 5;
    assert!(matches!(
        t.s.put(t.now, again, false),
        Err(ServiceError::Locked { .. })
    ));
    t.s.step(t.now);
    t.s.drain();
    // One new instance at a time; no old one killed before it is healthy.
    let n1 = t.offer("a1", 8.0);
    assert_eq!(n1.len(), 1);
    assert!(t.kills().is_empty());
    t.says(&n1[0], TaskState::TaskRunning);
    let k = t.kills();
    assert_eq!(k.len(), 1);
    assert!(v1.contains(&k[0]));
    t.says(&k[0], TaskState::TaskKilled);
    let n2 = t.offer("a1", 8.0);
    assert_eq!(n2.len(), 1);
    t.says(&n2[0], TaskState::TaskRunning);
    let k2 = t.kills();
    assert_eq!(k2.len(), 1);
    t.says(&k2[0], TaskState::TaskKilled);
    let app = t.s.app(&id).unwrap();
    assert!(app.deployment.is_none(), "deployment finished");
    assert_eq!(app.instances.len(), 2);
    assert!(
        app.instances
            .values()
            .all(|i| i.config_version == app.config_version)
    );
}

#[test]
fn scaling_deleting_and_unknown_tasks() {
    let mut t = T::new();
    let id = t.create(r#"{"id":"/s","cmd":"x","instances":3,"cpus":0.5}"#);
    let all = t.offer("a1", 8.0);
    assert_eq!(all.len(), 3);
    for x in &all {
        t.says(x, TaskState::TaskRunning);
    }
    // Scale down to one: the two youngest go.
    let mut def = t.s.app(&id).unwrap().def.clone();
    def.instances = 1;
    t.s.put(t.now, def, false).unwrap();
    t.s.step(t.now);
    let mut k = t.kills();
    k.sort();
    assert_eq!(k.len(), 2);
    // Delete: the rest go, then the app is forgotten.
    t.s.delete(t.now, &id, true).unwrap();
    t.s.step(t.now);
    assert_eq!(t.kills().len(), 1);
    for x in &all {
        t.says(x, TaskState::TaskKilled);
    }
    assert!(t.s.app(&id).is_none());
    assert!(matches!(
        t.s.delete(t.now, &id, false),
        Err(ServiceError::UnknownApp { .. })
    ));
    // A running task no app knows is killed.
    t.says(&TaskId::new("stray.1"), TaskState::TaskRunning);
    assert_eq!(t.kills(), vec![TaskId::new("stray.1")]);
}

#[test]
fn an_unreachable_instance_is_replaced_and_a_snapshot_restores_the_state() {
    let mut t = T::new();
    let id = t
        .create(r#"{"id":"/u","cmd":"x","instances":1,"cpus":1,"unreachableStrategy":"disabled"}"#);
    let first = t.offer("a1", 2.0);
    t.says(&first[0], TaskState::TaskRunning);
    t.says(&first[0], TaskState::TaskUnreachable);
    let second = t.offer("a2", 2.0);
    assert_eq!(second.len(), 1);
    let snap = t.s.snapshot();
    let text = serde_json::to_string(&snap).unwrap();
    let back: Snapshot = serde_json::from_str(&text).unwrap();
    let restored = Services::new(PriorityClasses::default(), back);
    let app = restored.app(&id).unwrap();
    assert_eq!(app.instances.len(), 1);
    assert!(app.instances.contains_key(&second[0]));
}

#[test]
fn an_app_that_cannot_fit_an_offer_declines_it() {
    let mut t = T::new();
    t.create(r#"{"id":"/big","cmd":"x","cpus":4}"#);
    t.s.drain();
    t.s.offers(t.now, vec![offer(1, "a1", 2.0)]);
    let e = t.s.drain();
    assert!(
        e.contains(&Effect::Decline(vec![OfferId::new("o1")])),
        "{e:?}"
    );
}

#[test]
fn hostname_unique_spreads_instances() {
    let mut t = T::new();
    t.create(
        r#"{"id":"/u","cmd":"x","instances":2,"cpus":1,"constraints":[["hostname","UNIQUE"]]}"#,
    );
    assert_eq!(t.offer("a1", 8.0).len(), 1);
    assert_eq!(t.offer("a1", 8.0).len(), 0);
    assert_eq!(t.offer("a2", 8.0).len(), 1);
}

#[test]
fn a_drained_agents_instances_move_within_the_upgrade_strategy() {
    let mut t = T::new();
    let id = t.create(
        r#"{"id":"/d","cmd":"serve","instances":2,"cpus":1,
            "upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":0}}"#,
    );
    let on_a1 = t.offer("a1", 1.0);
    let on_a2 = t.offer("a2", 1.0);
    for x in on_a1.iter().chain(&on_a2) {
        t.says(x, TaskState::TaskRunning);
    }
    t.s.drain();
    // a1 drains: one replacement is asked for, nothing is killed while
    // the app would fall below its healthy minimum.
    t.s.agent_drain(AgentId::new("a1"), true);
    t.s.step(t.now);
    assert_eq!(t.demand(), Some(vec![("service".into(), 1)]));
    let moved = t.offer("a3", 1.0);
    assert_eq!(moved.len(), 1);
    assert!(t.kills().is_empty(), "killed before its replacement ran");
    // Once the replacement is healthy, the drained instance goes, and
    // only it.
    t.says(&moved[0], TaskState::TaskRunning);
    assert_eq!(t.kills(), on_a1);
    t.says(&on_a1[0], TaskState::TaskKilled);
    t.s.step(t.now);
    assert!(t.kills().is_empty());
    let app = t.s.app(&id).unwrap();
    let mut agents: Vec<&str> = app
        .instances
        .values()
        .map(|i| i.agent_id.as_str())
        .collect();
    agents.sort();
    assert_eq!(agents, ["a2", "a3"]);
    // An undrained agent's instances are current again: nothing moves.
    t.s.agent_drain(AgentId::new("a2"), true);
    t.s.agent_drain(AgentId::new("a2"), false);
    t.s.step(t.now);
    assert!(t.kills().is_empty());
    assert_eq!(t.demand(), None);
}

#[test]
fn the_route_table_holds_only_healthy_instances_and_service_ports() {
    let mut t = T::new();
    t.create(
        r#"{"id":"/shop/api","cmd":"x","instances":2,
            "portDefinitions":[{"port":10101,"name":"http"},{"port":0}],
            "healthChecks":[{"protocol":"HTTP","portIndex":0}]}"#,
    );
    let tasks = t.offer("a1", 2.0);
    assert_eq!(tasks.len(), 2);
    let table = super::routes::table(&t.s);
    let app = &table.apps[0];
    assert_eq!(
        (app.id.as_str(), app.name.as_str()),
        ("/shop/api", "api-shop")
    );
    assert_eq!(
        app.ports.iter().map(|p| p.service_port).collect::<Vec<_>>(),
        vec![10101, 0]
    );
    assert!(
        app.backends.is_empty(),
        "staging instances are not routed to"
    );
    for task in &tasks {
        t.says(task, TaskState::TaskRunning);
    }
    assert!(
        super::routes::table(&t.s).apps[0].backends.is_empty(),
        "not yet healthy"
    );
    t.s.health(t.now, &tasks[0], true, "200".into());
    let table = super::routes::table(&t.s);
    let backends = &table.apps[0].backends;
    assert_eq!(backends.len(), 1);
    assert_eq!(backends[0].task_id, tasks[0].as_str());
    assert_eq!(backends[0].agent_id, "a1");
    assert_eq!(backends[0].ip, "127.0.0.1");
    assert_eq!(backends[0].ports.len(), 2);
    assert_eq!(
        table.service_ports()[0].backends,
        vec![format!("127.0.0.1:{}", backends[0].ports[0])]
    );
    let before = table.version.clone();
    t.s.health(t.now, &tasks[1], true, "200".into());
    assert_ne!(super::routes::table(&t.s).version, before);
}

#[test]
fn a_service_port_belongs_to_one_app() {
    let mut t = T::new();
    t.create(r#"{"id":"/a","cmd":"x","portDefinitions":[{"port":10101}]}"#);
    let taken = parse(br#"{"id":"/b","cmd":"x","portDefinitions":[{"port":10101}]}"#).unwrap();
    match t.s.create(t.now, taken) {
        Err(ServiceError::Invalid { details }) => {
            assert!(
                details[0].errors[0].contains("used by app /a"),
                "{details:?}"
            );
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    // The app itself may keep it when it changes; twice in one app is not.
    let same = parse(br#"{"id":"/a","cmd":"y","portDefinitions":[{"port":10101}]}"#).unwrap();
    t.s.put(t.now, same, true).unwrap();
    let twice =
        parse(br#"{"id":"/c","cmd":"x","portDefinitions":[{"port":10102},{"port":10102}]}"#)
            .unwrap();
    assert!(matches!(
        t.s.create(t.now, twice),
        Err(ServiceError::Invalid { .. })
    ));
}

#[test]
fn an_unreachable_instance_keeps_its_place_then_is_replaced_then_expunged() {
    let mut t = T::new();
    t.create(
        r#"{"id":"/u","cmd":"x","instances":1,"cpus":1,
            "unreachableStrategy":{"inactiveAfterSeconds":60,"expungeAfterSeconds":120}}"#,
    );
    let first = t.offer("a1", 2.0);
    t.says(&first[0], TaskState::TaskRunning);
    t.says(&first[0], TaskState::TaskUnreachable);
    // Within inactiveAfterSeconds: no replacement, and back it runs on.
    t.now += Duration::from_secs(30);
    t.s.step(t.now);
    assert!(t.offer("a2", 2.0).is_empty());
    t.says(&first[0], TaskState::TaskRunning);
    assert!(t.kills().is_empty());
    assert!(
        t.s.apps()
            .all(|(_, a)| a.instances[&first[0]].unreachable_since.is_none())
    );

    // Unreachable again, past inactiveAfterSeconds: a replacement; back
    // before expungeAfterSeconds, one of the two goes (the app's count).
    t.says(&first[0], TaskState::TaskUnreachable);
    t.now += Duration::from_secs(61);
    t.s.step(t.now);
    let second = t.offer("a2", 2.0);
    assert_eq!(second.len(), 1);
    t.says(&second[0], TaskState::TaskRunning);
    t.says(&first[0], TaskState::TaskRunning);
    t.s.step(t.now);
    assert_eq!(t.kills().len(), 1);

    // Past expungeAfterSeconds it is forgotten: it is killed should it
    // come back.
    let third_app = t.create(
        r#"{"id":"/v","cmd":"x","instances":1,"cpus":1,
            "unreachableStrategy":{"inactiveAfterSeconds":0,"expungeAfterSeconds":10}}"#,
    );
    let v = t.offer("a3", 2.0);
    t.says(&v[0], TaskState::TaskRunning);
    t.says(&v[0], TaskState::TaskUnreachable);
    t.now += Duration::from_secs(11);
    t.s.step(t.now);
    assert!(!t.s.app(&third_app).unwrap().instances.contains_key(&v[0]));
    t.says(&v[0], TaskState::TaskRunning);
    assert!(t.kills().contains(&v[0]));
}
