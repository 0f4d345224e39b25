//! Tests of app definitions: parsing, defaults, validation, round trips.
use super::*;

fn app(json: &str) -> AppDefinition {
    parse(json.as_bytes()).unwrap()
}

#[test]
fn defaults_follow_marathon() {
    let a = app(r#"{"id":"/web","cmd":"sleep 1"}"#);
    assert_eq!((a.instances, a.cpus, a.mem, a.disk), (1, 1.0, 128.0, 0.0));
    assert_eq!(a.backoff_factor, 1.15);
    assert_eq!(a.upgrade_strategy, UpgradeStrategy::default());
    assert_eq!(a.kill_selection, KillSelection::YoungestFirst);
    assert_eq!(a.class(), "service");
    let id = a.validate(&PriorityClasses::default()).unwrap();
    assert_eq!(id.as_str(), "/web");
}

#[test]
fn an_app_without_port_definitions_gets_one_port() {
    // Marathon's common app: a command on $PORT0 and an HTTP check on
    // port index 0, with no port list.
    let a = app(r#"{"id":"/web","cmd":"serve $PORT0",
            "healthChecks":[{"protocol":"HTTP","path":"/health","portIndex":0}]}"#);
    assert_eq!(a.host_ports(), 1);
    assert_eq!(a.port_definitions[0].port, 0);
    assert_eq!(a.resources().ports.count(), 1);
    a.validate(&PriorityClasses::default()).unwrap();
    // `null` reads as absent; an empty list asks for no port.
    let a = app(r#"{"id":"/web","cmd":"serve","portDefinitions":null}"#);
    assert_eq!(a.host_ports(), 1);
    let a = app(r#"{"id":"/web","cmd":"serve","portDefinitions":[]}"#);
    assert_eq!(a.host_ports(), 0);
    let a = app(r#"{"id":"/web","cmd":"serve","portDefinitions":[],
            "healthChecks":[{"protocol":"HTTP","portIndex":0}]}"#);
    assert!(a.validate(&PriorityClasses::default()).is_err());
}

#[test]
fn ids_are_normalised_and_checked() {
    assert_eq!(AppId::parse("shop//web/").unwrap().as_str(), "/shop/web");
    assert_eq!(AppId::parse("/shop/web").unwrap().task_prefix(), "shop_web");
    assert!(AppId::parse("/Shop").is_err());
    assert!(AppId::parse("/-x").is_err());
    assert!(AppId::parse("//").is_err());
    assert!(AppId::parse("/a/../b").is_err());
}

#[test]
fn every_invalid_field_is_reported_at_its_path() {
    let a = app(r#"{"id":"/Bad","cmd":"x","args":["y"],"cpus":-1,"gpus":1,
            "labels":{"strata.class":"gold"},
            "healthChecks":[{"protocol":"UDP"},{"protocol":"HTTP","portIndex":2}],
            "constraints":[["hostname","SOMETIMES"],["rack","MAX_PER","x"]],
            "upgradeStrategy":{"minimumHealthCapacity":2}}"#);
    let errs = a.validate(&PriorityClasses::default()).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "/id",
        "/",
        "/cpus",
        "/gpus",
        "/labels/strata.class",
        "/healthChecks(0)/protocol",
        "/healthChecks(1)/portIndex",
        "/constraints(0)",
        "/constraints(1)",
        "/upgradeStrategy/minimumHealthCapacity",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
}

#[test]
fn a_wrongly_typed_field_is_reported_at_its_path() {
    let errs =
        parse(br#"{"id":"/a","cmd":"x","healthChecks":[{"intervalSeconds":"soon"}]}"#).unwrap_err();
    assert_eq!(errs[0].path, "/healthChecks(0)/intervalSeconds");
    let errs = parse(b"{not json").unwrap_err();
    assert_eq!(errs[0].path, "/");
}

#[test]
fn resources_count_host_ports_and_constraints_convert() {
    let a = app(r#"{"id":"/a","cmd":"x","cpus":0.5,"mem":64,
            "portDefinitions":[{"port":0},{"port":0}],
            "constraints":[["hostname","UNIQUE"],["rack","GROUP_BY","2"]]}"#);
    assert_eq!(a.resources().ports.count(), 2);
    let c = a.sdk_constraints();
    assert_eq!(c[0], Constraint::unique("hostname"));
    assert_eq!(c[1], Constraint::group_by("rack", 2));
    let mut b = a.clone();
    b.instances = 9;
    assert!(!a.config_differs(&b));
    b.cmd = Some("y".into());
    assert!(a.config_differs(&b));
}

#[test]
fn a_definition_round_trips_as_marathon_json() {
    let a = app(
        r#"{"id":"/a","container":{"type":"DOCKER","docker":{"image":"busybox"},
            "portMappings":[{"containerPort":80}]},
            "healthChecks":[{"protocol":"HTTP","path":"/"}]}"#,
    );
    let text = serde_json::to_string(&a).unwrap();
    assert!(text.contains(
        r#""portMappings":[{"containerPort":80,"hostPort":0,"servicePort":0,"protocol":"tcp"}]"#
    ));
    assert!(text.contains(r#""maxConsecutiveFailures":3"#));
    assert_eq!(parse(text.as_bytes()).unwrap(), a);
    a.validate(&PriorityClasses::default()).unwrap();
}

#[test]
fn unreachable_strategy_reads_as_marathon_writes_it() {
    let a = app(r#"{"id":"/web","cmd":"x"}"#);
    assert_eq!(
        (
            a.unreachable_strategy.inactive_after_seconds,
            a.unreachable_strategy.expunge_after_seconds
        ),
        (300.0, 600.0)
    );
    let a = app(r#"{"id":"/web","cmd":"x","unreachableStrategy":"disabled"}"#);
    assert_eq!(a.unreachable_strategy.expunge_after_seconds, 0.0);
    let a = app(r#"{"id":"/web","cmd":"x","unreachableStrategy":{"inactiveAfterSeconds":60}}"#);
    assert_eq!(
        (
            a.unreachable_strategy.inactive_after_seconds,
            a.unreachable_strategy.expunge_after_seconds
        ),
        (60.0, 600.0)
    );
    // It round-trips as the object.
    let text = serde_json::to_value(&a).unwrap();
    assert_eq!(
        text["unreachableStrategy"],
        serde_json::json!({"inactiveAfterSeconds": 60.0, "expungeAfterSeconds": 600.0})
    );
    assert!(parse(br#"{"id":"/web","cmd":"x","unreachableStrategy":"sometimes"}"#).is_err());
    let backwards = app(
        r#"{"id":"/web","cmd":"x","unreachableStrategy":{"inactiveAfterSeconds":60,"expungeAfterSeconds":10}}"#,
    );
    let errs = backwards.validate(&PriorityClasses::default()).unwrap_err();
    assert!(
        format!("{errs:?}").contains("/unreachableStrategy/expungeAfterSeconds"),
        "{errs:?}"
    );
}
