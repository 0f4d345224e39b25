//! The server in-process: one address for gRPC and HTTP, tokens, message
//! size limits, the operator API and durability of roles across restarts.

use super::*;
use strata_proto::pb::scheduler_client::SchedulerClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(dir: &std::path::Path, token: Option<&str>) -> ManagerHandle {
    let mut cfg = ManagerConfig::new(dir.to_path_buf());
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.token = token.map(str::to_owned);
    spawn(cfg).await.expect("manager starts")
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn grpc_and_http_share_one_address_with_limits() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), None).await;
    let addr = m.address();
    let (status, body) = http(addr, "GET", "/health", None, "").await;
    assert_eq!((status, body.contains("ok")), (200, true));
    let (status, body) = http(addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    assert!(body.contains("strata_agents_registered 0"), "{body}");
    assert!(body.contains("# TYPE strata_offers_made_total counter"));

    // An oversized message is refused (tonic answers OUT_OF_RANGE with
    // "message length too large"), and the manager carries on.
    let mut client = SchedulerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_encoding_message_size(64 * 1024 * 1024);
    let huge = pb::Call {
        framework_id: "x".repeat(strata_proto::MAX_MESSAGE_BYTES + 1),
        ..Default::default()
    };
    let err = client.call(huge).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    assert!(err.message().contains("too large"));
    let err = client
        .call(pb::Call {
            framework_id: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("not subscribed"));
    m.shutdown().await;
}

#[tokio::test]
async fn tokens_are_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), Some("s3cret")).await;
    let addr = m.address();
    assert_eq!(http(addr, "GET", "/health", None, "").await.0, 200);
    assert_eq!(http(addr, "GET", "/api/v1/state", None, "").await.0, 401);
    assert_eq!(
        http(addr, "GET", "/api/v1/state", Some("wrong"), "")
            .await
            .0,
        401
    );
    assert_eq!(
        http(addr, "GET", "/api/v1/state", Some("s3cret"), "")
            .await
            .0,
        200
    );
    // Marathon's API is behind the same token, except `/ping`.
    assert_eq!(http(addr, "GET", "/v2/apps", None, "").await.0, 401);
    assert_eq!(
        http(addr, "GET", "/v2/apps", Some("s3cret"), "").await.0,
        200
    );
    assert_eq!(http(addr, "GET", "/ping", None, "").await.0, 200);
    let mut client = SchedulerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let err = client.call(pb::Call::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    m.shutdown().await;
    // A non-loopback address needs a token.
    let mut cfg = ManagerConfig::new(dir.path().join("other"));
    cfg.listen = SocketAddr::from(([0, 0, 0, 0], 0));
    assert!(matches!(
        spawn(cfg).await,
        Err(ServerError::TokenRequired { .. })
    ));
}

#[tokio::test]
async fn roles_are_validated_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), None).await;
    let addr = m.address();
    let (s, _) = http(
        addr,
        "PUT",
        "/api/v1/roles/eng",
        None,
        r#"{"weight": 2, "quota": "cpus:4;mem:8g"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = http(addr, "PUT", "/api/v1/roles/eng", None, r#"{"weight": -1}"#).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("invalid weight"));
    let (s, b) = http(
        addr,
        "PUT",
        "/api/v1/roles/eng",
        None,
        r#"{"quota": "gpus:1"}"#,
    )
    .await;
    assert_eq!(s, 400);
    assert!(b.contains("unknown resource"), "{b}");
    assert_eq!(
        http(addr, "PUT", "/api/v1/roles/eng", None, "{not json")
            .await
            .0,
        400
    );
    assert_eq!(
        http(addr, "PUT", "/api/v1/roles/eng", None, r#"{"wieght": 2}"#)
            .await
            .0,
        400
    );
    assert_eq!(
        http(addr, "PUT", "/api/v1/roles/a%2Fb", None, r#"{"weight": 2}"#)
            .await
            .0,
        400
    );
    m.shutdown().await;
    // A restarted manager remembers the role.
    let m = start(dir.path(), None).await;
    let (s, b) = http(m.address(), "GET", "/api/v1/roles", None, "").await;
    assert_eq!(s, 200);
    let roles: serde_json::Value = serde_json::from_str(&b).unwrap();
    let eng = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "eng")
        .expect("eng survives a restart");
    assert_eq!(eng["weight"], 2.0);
    assert_eq!(eng["quota"], "cpus:4;mem:8192;disk:0");
    m.shutdown().await;
}

/// Subscribes a framework called `name`; returns its handle and events.
async fn subscribe(
    addr: SocketAddr,
    name: &str,
) -> (strata_sdk::SchedulerHandle, strata_sdk::EventStream) {
    let fw = strata_sdk::FrameworkConfig::new(name);
    let mut sc = strata_sdk::SchedulerConfig::new(addr.to_string(), fw);
    sc.suppressed = true;
    strata_sdk::Scheduler::subscribe(sc)
        .await
        .expect("framework subscribes")
}

/// The ids of the frameworks the manager knows, by name.
async fn framework_ids(addr: SocketAddr) -> Vec<(String, String)> {
    let (s, b) = http(addr, "GET", "/api/v1/state", None, "").await;
    assert_eq!(s, 200, "{b}");
    let state: serde_json::Value = serde_json::from_str(&b).unwrap();
    let mut ids: Vec<(String, String)> = state["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_never_issued_twice_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), None).await;
    let addr = m.address();
    // One framework torn down (removed from the registry), one that stays.
    let (gone, _events) = subscribe(addr, "gone").await;
    let gone_id = gone.framework_id();
    gone.teardown().await.unwrap();
    let (kept, _kept_events) = subscribe(addr, "kept").await;
    let kept_id = kept.framework_id();
    assert_ne!(gone_id, kept_id);
    // Every id issued so far: the removed one and those still known (the
    // built-in services scheduler's among them).
    let mut issued: Vec<String> = framework_ids(addr)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    issued.push(gone_id.to_string());
    m.shutdown().await;

    // Restarted on its registry: the kept framework is recovered, and a new
    // one gets an id no earlier start issued.
    let m = start(dir.path(), None).await;
    let addr = m.address();
    let (fresh, _fresh_events) = subscribe(addr, "fresh").await;
    let fresh_id = fresh.framework_id();
    assert_ne!(
        fresh_id, gone_id,
        "a removed framework's id was issued again"
    );
    assert_ne!(
        fresh_id, kept_id,
        "a recovered framework's id was issued again"
    );
    assert!(
        !issued.contains(&fresh_id.to_string()),
        "{fresh_id} was issued before the restart: {issued:?}"
    );
    issued.push(fresh_id.to_string());
    let known = framework_ids(addr).await;
    assert!(
        known.contains(&("kept".into(), kept_id.to_string())),
        "{known:?}"
    );
    assert!(
        known.contains(&("fresh".into(), fresh_id.to_string())),
        "{known:?}"
    );
    // And again after a second restart.
    m.shutdown().await;
    let m = start(dir.path(), None).await;
    let (again, _again_events) = subscribe(m.address(), "again").await;
    let again_id = again.framework_id();
    assert!(
        !issued.contains(&again_id.to_string()),
        "{again_id} was issued before: {issued:?}"
    );
    m.shutdown().await;
}
