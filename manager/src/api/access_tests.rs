//! Principals, ACLs and the audit log through the manager's real APIs on
//! an in-process manager: HTTP (roles, drains, principals), gRPC
//! subscriptions through the SDK, the Mesos API, the web UI.

use std::net::SocketAddr;

use serde_json::Value;

use super::test_http::http;
use crate::auth::acl::Acls;
use crate::auth::audit::AuditEntry;

const ACLS: &str = r#"{
  "register_frameworks": [{"principals": ["etl", "etl2"], "objects": ["analytics"]}],
  "run_tasks": [{"principals": "ANY", "objects": ["root", "nobody"]}],
  "update_roles": [{"principals": ["ops"], "objects": "ANY"}],
  "manage_agents": [{"principals": ["ops"], "objects": "ANY"}],
  "teardown_frameworks": [{"principals": ["ops"], "objects": ["etl"]}],
  "manage_apps": [{"principals": ["ops"], "objects": ["/web/"]}],
  "view_ui": [{"principals": ["etl"], "objects": ["jobs"]}]
}"#;

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}\r\n")
}

async fn add(addr: SocketAddr, name: &str) -> String {
    let (status, _, body) = http(
        addr,
        "POST",
        "/api/v1/principals",
        &format!("{}Content-Type: application/json\r\n", bearer("root")),
        &format!("{{\"name\": \"{name}\"}}"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

async fn subscribe(addr: SocketAddr, token: &str, role: &str) -> Result<(), String> {
    let (handle, _events) = subscribe_as(addr, token, role, None).await?;
    handle.teardown().await.ok();
    Ok(())
}

/// A subscription (to framework `id`, when given), kept.
async fn subscribe_as(
    addr: SocketAddr,
    token: &str,
    role: &str,
    id: Option<&str>,
) -> Result<(strata_sdk::SchedulerHandle, strata_sdk::EventStream), String> {
    let mut fw = strata_sdk::FrameworkConfig::new("acl-test");
    fw.role = strata_sdk::Role::new(role);
    fw.framework_id = id.map(strata_sdk::FrameworkId::new);
    let mut cfg = strata_sdk::SchedulerConfig::new(addr.to_string(), fw);
    cfg.token = Some(token.to_owned());
    strata_sdk::Scheduler::subscribe(cfg)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_act_within_their_acls_and_every_decision_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::server::ManagerConfig::new(dir.path().to_path_buf());
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.token = Some("root".into());
    cfg.acls = Some(Acls::parse(ACLS.as_bytes()).unwrap());
    let m = crate::server::spawn(cfg).await.unwrap();
    let addr = m.address();

    let etl = add(addr, "etl").await;
    let ops = add(addr, "ops").await;
    // Only the operator manages principals; a name is taken once.
    let (status, _, _) = http(
        addr,
        "POST",
        "/api/v1/principals",
        &format!("{}Content-Type: application/json\r\n", bearer(&ops)),
        "{\"name\": \"x\"}",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = http(
        addr,
        "POST",
        "/api/v1/principals",
        &format!("{}Content-Type: application/json\r\n", bearer("root")),
        "{\"name\": \"etl\"}",
    )
    .await;
    assert_eq!(status, 409);
    let (_, _, body) = http(addr, "GET", "/api/v1/principals", &bearer("root"), "").await;
    assert!(
        !body.contains(etl.split_once('.').unwrap().1),
        "no secret listed: {body}"
    );
    assert!(
        body.contains("\"etl\"") && body.contains("\"ops\""),
        "{body}"
    );

    // Any principal reads; only ops changes roles and drains.
    let (status, _, _) = http(addr, "GET", "/api/v1/state", &bearer(&etl), "").await;
    assert_eq!(status, 200);
    let json = "Content-Type: application/json\r\n";
    let role = "{\"weight\": 2}";
    let (status, _, body) = http(
        addr,
        "PUT",
        "/api/v1/roles/analytics",
        &format!("{}{json}", bearer(&etl)),
        role,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("update_roles"), "{body}");
    let (status, _, body) = http(
        addr,
        "PUT",
        "/api/v1/roles/analytics",
        &format!("{}{json}", bearer(&ops)),
        role,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = http(addr, "POST", "/api/v1/agents/a1/undrain", &bearer(&etl), "").await;
    assert_eq!(status, 403);

    // Frameworks: etl in its role only, over gRPC and the Mesos API.
    subscribe(addr, &etl, "analytics").await.unwrap();
    let refused = subscribe(addr, &etl, "web").await.unwrap_err();
    assert!(refused.contains("register_frameworks"), "{refused}");
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("etl:{etl}"));
    let (status, _, body) = http(
        addr,
        "POST",
        "/api/v1/scheduler",
        &format!("Authorization: Basic {basic}\r\n{json}"),
        r#"{"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "etl", "name": "m", "roles": ["web"]}}}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // Apps: ops changes those under /web/ only; anyone reads.
    let app = |id: &str| {
        format!(
            "{{\"id\": \"{id}\", \"cmd\": \"sleep 1d\", \"instances\": 0, \"cpus\": 0.1, \"mem\": 16}}"
        )
    };
    let (status, _, body) = http(
        addr,
        "POST",
        "/v2/apps",
        &format!("{}{json}", bearer(&ops)),
        &app("/web/api"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = http(
        addr,
        "POST",
        "/v2/apps",
        &format!("{}{json}", bearer(&ops)),
        &app("shop"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("manage_apps") && body.contains("/shop"),
        "{body}"
    );
    let (status, _, _) = http(addr, "DELETE", "/v2/apps/web/api", &bearer(&etl), "").await;
    assert_eq!(status, 403);
    let (status, _, _) = http(addr, "GET", "/v2/apps", &bearer(&etl), "").await;
    assert_eq!(status, 200);
    let (status, _, body) = http(
        addr,
        "DELETE",
        "/v2/apps/web/api?force=true",
        &bearer(&ops),
        "",
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");

    // A framework is taken over by its own principal only (or the
    // operator), and the state names its principal.
    let etl2 = add(addr, "etl2").await;
    let (first, events) = subscribe_as(addr, &etl, "analytics", None).await.unwrap();
    let id = first.framework_id().to_string();
    drop((first, events));
    let Err(refused) = subscribe_as(addr, &etl2, "analytics", Some(&id)).await else {
        panic!("another principal takes no framework over");
    };
    assert!(refused.contains("not subscribed by principal"), "{refused}");
    // Nor calls for it, whatever stream id is guessed.
    let etl2_basic = base64::engine::general_purpose::STANDARD.encode(format!("etl2:{etl2}"));
    let teardown = format!(r#"{{"type": "TEARDOWN", "framework_id": {{"value": "{id}"}}}}"#);
    let (status, _, body) = http(
        addr,
        "POST",
        "/api/v1/scheduler",
        &format!("Authorization: Basic {etl2_basic}\r\nMesos-Stream-Id: stream-m1-1\r\n{json}"),
        &teardown,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not subscribed by principal"), "{body}");
    // A job's report comes from its framework's principal only.
    let report = format!(
        r#"{{"id": "job-1-x", "framework_id": "{id}", "state": "running", "submitted_at": 1}}"#
    );
    let (status, _, body) = http(
        addr,
        "PUT",
        "/api/v1/jobs/job-1-x",
        &format!("{}{json}", bearer(&etl2)),
        &report,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = http(
        addr,
        "PUT",
        "/api/v1/jobs/job-1-x",
        &format!("{}{json}", bearer(&etl)),
        &report,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A launch as a user run_tasks does not permit is refused before it
    // reaches the master.
    let launch = format!(
        r#"{{"type": "ACCEPT", "framework_id": {{"value": "{id}"}}, "accept": {{"offer_ids": [{{"value": "o1"}}],
            "operations": [{{"type": "LAUNCH", "launch": {{"task_infos": [{{"name": "t", "task_id": {{"value": "t1"}},
            "agent_id": {{"value": "a1"}}, "resources": [], "command": {{"value": "true", "user": "daemon"}}}}]}}}}]}}}}"#
    );
    let etl_basic = base64::engine::general_purpose::STANDARD.encode(format!("etl:{etl}"));
    let (status, _, body) = http(
        addr,
        "POST",
        "/api/v1/scheduler",
        &format!("Authorization: Basic {etl_basic}\r\nMesos-Stream-Id: stream-m1-1\r\n{json}"),
        &launch,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("run_tasks") && body.contains("daemon"),
        "{body}"
    );
    let (again, _events) = subscribe_as(addr, &etl, "analytics", Some(&id))
        .await
        .unwrap();
    let (_, _, state) = http(addr, "GET", "/api/v1/frameworks", &bearer("root"), "").await;
    let fws: Value = serde_json::from_str(&state).unwrap();
    let mine = fws
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id.as_str())
        .unwrap();
    assert_eq!(mine["principal"], "etl", "{mine}");
    // An operator's teardown, by the framework's principal.
    let down = format!("/api/v1/frameworks/{id}/teardown");
    let (status, _, _) = http(addr, "POST", &down, &bearer(&etl2), "").await;
    assert_eq!(status, 403);
    let services = fws
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "strata-services")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, body) = http(
        addr,
        "POST",
        &format!("/api/v1/frameworks/{services}/teardown"),
        &bearer(&ops),
        "",
    )
    .await;
    assert_eq!(status, 403, "ops may tear down etl's only: {body}");
    let (status, _, body) = http(addr, "POST", &down, &bearer(&ops), "").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = http(
        addr,
        "POST",
        "/api/v1/frameworks/nope/teardown",
        &bearer("root"),
        "",
    )
    .await;
    assert_eq!(status, 404);
    drop(again);

    // The UI: etl sees the jobs only.
    let (status, _, _) = http(
        addr,
        "GET",
        "/jobs",
        &format!("Cookie: strata_token={etl}\r\n"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = http(
        addr,
        "GET",
        "/",
        &format!("Cookie: strata_token={etl}\r\n"),
        "",
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // A revoked principal's token is refused everywhere.
    let (status, _, _) = http(
        addr,
        "DELETE",
        "/api/v1/principals/etl",
        &bearer("root"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = http(addr, "GET", "/api/v1/state", &bearer(&etl), "").await;
    assert_eq!(status, 401);
    assert!(subscribe(addr, &etl, "analytics").await.is_err());
    m.shutdown().await;

    // Kept across a restart, hashed.
    let kept = std::fs::read_to_string(dir.path().join("principals.json")).unwrap();
    assert!(!kept.contains(ops.split_once('.').unwrap().1));
    let log = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let entries: Vec<AuditEntry> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |who: &str, action: &str, object: &str, result: &str| {
        entries.iter().any(|e| {
            e.principal == who
                && e.action == action
                && e.object == object
                && e.result.starts_with(result)
        })
    };
    assert!(
        has("operator", "create_principal", "etl", "allowed"),
        "{log}"
    );
    assert!(
        has("operator", "create_principal", "etl", "failed"),
        "{log}"
    );
    assert!(has("etl", "update_roles", "analytics", "denied"), "{log}");
    assert!(has("ops", "update_roles", "analytics", "allowed"), "{log}");
    assert!(has("etl", "manage_agents", "a1", "denied"), "{log}");
    assert!(
        has("etl", "register_frameworks", "analytics", "allowed"),
        "{log}"
    );
    assert!(has("etl", "register_frameworks", "web", "denied"), "{log}");
    assert!(
        has("operator", "revoke_principal", "etl", "allowed"),
        "{log}"
    );
    assert!(has("ops", "manage_apps", "/web/api", "allowed"), "{log}");
    assert!(has("etl2", "take_over_framework", &id, "denied"), "{log}");
    assert!(has("etl", "run_tasks", "daemon", "denied"), "{log}");
    assert!(has("ops", "teardown_frameworks", "etl", "allowed"), "{log}");
    assert!(
        has("ops", "teardown_frameworks", "operator", "denied"),
        "{log}"
    );
    assert!(has("ops", "manage_apps", "/shop", "denied"), "{log}");
}

#[test]
fn marathon_changes_name_their_apps() {
    use super::http::changed_apps;
    assert_eq!(changed_apps("/v2/apps/web/api", b""), ["/web/api"]);
    assert_eq!(changed_apps("/v2/apps/web/restart", b""), ["/web"]);
    assert_eq!(changed_apps("/v2/apps", br#"{"id": "shop"}"#), ["/shop"]);
    assert_eq!(
        changed_apps("/v2/apps", br#"[{"id": "/a"}, {"id": "b/"}]"#),
        ["/a", "/b"]
    );
    assert_eq!(changed_apps("/v2/deployments/d1", b""), ["/"]);
    // A body without an id names the root, which only "ANY" or "/" covers.
    assert_eq!(changed_apps("/v2/apps", b"{nope"), ["/"]);
}
