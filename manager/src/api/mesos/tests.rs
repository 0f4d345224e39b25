//! Mesos's JSON read and written, and the API's answers to bad calls on a
//! real manager in-process. A real Mesos framework library drives it end
//! to end in `tests/it/mesos_api.rs`.

use std::net::SocketAddr;

use serde_json::{Value, json};
use strata_proto::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn call(v: Value) -> calls::Call {
    calls::parse(v.to_string().as_bytes()).expect("a call")
}

#[test]
fn a_subscribe_becomes_a_batch_framework_unless_labelled() {
    let req = call(json!({
        "type": "SUBSCRIBE",
        "subscribe": { "framework_info": {
            "user": "alice", "name": "etl", "failover_timeout": 100,
            "roles": ["analytics"], "capabilities": [{"type": "MULTI_ROLE"}],
            "checkpoint": true,
        }},
    }))
    .into_subscribe()
    .unwrap();
    assert!(!req.partition_aware);
    let req = req.req;
    let f = req.framework.unwrap();
    assert_eq!(
        (f.name.as_str(), f.user.as_str(), f.role.as_str()),
        ("etl", "alice", "analytics")
    );
    assert_eq!(f.default_class, "batch");
    assert_eq!(f.failover_timeout_seconds, 100.0);
    assert!(f.framework_id.is_empty());
    assert_eq!(req.protocol_version, strata_proto::PROTOCOL_VERSION);

    // Re-subscription names its id; a label picks the class.
    let f = call(json!({
        "type": "SUBSCRIBE",
        "framework_id": {"value": "fw-7"},
        "subscribe": { "framework_info": {
            "user": "u", "name": "web", "id": {"value": "fw-7"}, "role": "web",
            "labels": {"labels": [{"key": MESOS_CLASS_LABEL, "value": "service"}]},
        }},
    }))
    .into_subscribe()
    .unwrap()
    .req
    .framework
    .unwrap();
    assert_eq!(
        (
            f.framework_id.as_str(),
            f.role.as_str(),
            f.default_class.as_str()
        ),
        ("fw-7", "web", "service")
    );

    let err = |v: Value| call(v).into_subscribe().unwrap_err().to_string();
    let two_roles = err(json!({"type": "SUBSCRIBE", "subscribe": {"framework_info":
        {"user": "u", "name": "n", "roles": ["a", "b"]}}}));
    assert!(two_roles.contains("several roles (a, b"), "{two_roles}");
    let ids = err(json!({"type": "SUBSCRIBE", "framework_id": {"value": "x"},
        "subscribe": {"framework_info": {"user": "u", "name": "n", "id": {"value": "y"}}}}));
    assert!(ids.contains("differs"), "{ids}");
    let missing = err(json!({"type": "SUBSCRIBE"}));
    assert!(missing.contains("needs its 'subscribe'"), "{missing}");
}

fn launch(task: Value) -> Value {
    json!({
        "type": "ACCEPT",
        "framework_id": {"value": "fw-1"},
        "accept": {
            "offer_ids": [{"value": "o-1"}],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
            "filters": {"refuse_seconds": 7.5},
        },
    })
}

#[test]
fn an_accept_with_launch_becomes_strata_tasks() {
    let c = call(launch(json!({
        "name": "t", "task_id": {"value": "t-1"}, "agent_id": {"value": "a-1"},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}, "role": "*",
             "allocation_info": {"role": "*"}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]}},
        ],
        "command": {
            "value": "echo hi",
            "environment": {"variables": [{"name": "A", "value": "1"}]},
            "uris": [{"value": "http://x/tool", "executable": true}],
        },
        "data": "aGk=",
        "labels": {"labels": [{"key": MESOS_CLASS_LABEL, "value": "service"}]},
        "kill_policy": {"grace_period": {"nanoseconds": 2_500_000_000i64}},
    })))
    .into_call("s-1".into())
    .unwrap();
    assert_eq!(
        (c.framework_id.as_str(), c.stream_id.as_str()),
        ("fw-1", "s-1")
    );
    let Some(pb::call::Call::Accept(a)) = c.call else {
        panic!("an accept")
    };
    assert_eq!(a.offer_ids, vec!["o-1"]);
    assert_eq!(a.filters.unwrap().refuse_seconds, Some(7.5));
    let Some(pb::call::operation::Operation::Launch(l)) = &a.operations[0].operation else {
        panic!("a launch")
    };
    let t = &l.tasks[0];
    assert_eq!((t.task_id.as_str(), t.agent_id.as_str()), ("t-1", "a-1"));
    assert_eq!(t.priority_class, "service");
    assert_eq!(t.kill_policy.as_ref().unwrap().grace_period_seconds, 2.5);
    let cmd = t.command.as_ref().unwrap();
    assert!(cmd.shell, "Mesos's shell defaults to true");
    assert_eq!(cmd.environment["A"], "1");
    assert!(cmd.uris[0].executable);
    assert_eq!(t.resources[0].scalar, 0.5);
    assert_eq!(t.resources[2].ranges[0].end, 31001);

    // A Docker task keeps its image and ports.
    let c = call(launch(json!({
        "name": "d", "task_id": {"value": "t-2"}, "agent_id": {"value": "a-1"},
        "command": {"shell": false, "arguments": ["x"]},
        "container": {"type": "DOCKER", "docker": {"image": "img:1",
            "port_mappings": [{"host_port": 31000, "container_port": 80}]}},
    })))
    .into_call("s".into())
    .unwrap();
    let Some(pb::call::Call::Accept(a)) = c.call else {
        panic!()
    };
    let Some(pb::call::operation::Operation::Launch(l)) = &a.operations[0].operation else {
        panic!()
    };
    let d = l.tasks[0].container.as_ref().unwrap();
    assert_eq!(d.r#type, pb::container_info::Type::Docker as i32);
    assert_eq!(
        d.docker.as_ref().unwrap().port_mappings[0].container_port,
        80
    );
    assert_eq!(l.tasks[0].priority_class, "", "the offer's class");
}

#[test]
fn what_strata_cannot_do_is_refused_by_name() {
    let base = || {
        json!({"name": "t", "task_id": {"value": "t-1"}, "agent_id": {"value": "a"},
            "command": {"value": "true"}})
    };
    let refused = |patch: Value| {
        let mut t = base();
        for (k, v) in patch.as_object().unwrap() {
            t[k] = v.clone();
        }
        call(launch(t))
            .into_call("s".into())
            .unwrap_err()
            .to_string()
    };
    for (patch, words) in [
        (
            json!({"executor": {"executor_id": {"value": "e"}}}),
            "custom executor",
        ),
        (json!({"health_check": {"type": "HTTP"}}), "health check"),
        (
            json!({"container": {"type": "MESOS", "mesos": {"image": {"type": "DOCKER"}}}}),
            "Mesos containerizer",
        ),
        (
            json!({"command": {"value": "x", "uris": [{"value": "http://h/a.tar.gz"}]}}),
            "extracting the archive",
        ),
        (
            json!({"resources": [{"name": "disk", "type": "SCALAR", "scalar": {"value": 1},
                "disk": {"persistence": {"id": "p"}}}]}),
            "persistent",
        ),
        (
            json!({"resources": [{"name": "x", "type": "SET", "set": {"item": ["a"]}}]}),
            "SET is not supported",
        ),
        (json!({"command": null}), "needs a command"),
        (json!({"agent_id": {"value": ""}}), "needs the agent_id"),
    ] {
        let e = refused(patch.clone());
        assert!(e.contains(words), "{patch}: {e}");
    }
    let e = call(
        json!({"type": "ACCEPT", "framework_id": {"value": "f"}, "accept": {
        "offer_ids": [], "operations": [{"type": "RESERVE", "reserve": {}}]}}),
    )
    .into_call("s".into())
    .unwrap_err()
    .to_string();
    assert!(e.contains("the RESERVE operation is not supported"), "{e}");
    let e = call(json!({"type": "MESSAGE", "framework_id": {"value": "f"}}))
        .into_call("s".into())
        .unwrap_err()
        .to_string();
    assert!(e.contains("the MESSAGE call"), "{e}");
    let e = calls::parse(br#"{"type": "KILL", "kill": {"task_id": 3}}"#)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("malformed call: kill.task_id"), "{e}");
    let e = call(
        json!({"type": "ACKNOWLEDGE", "framework_id": {"value": "f"},
        "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "!!"}}),
    )
    .into_call("s".into())
    .unwrap_err()
    .to_string();
    assert!(e.contains("acknowledge.uuid: not base64"), "{e}");
}

fn master() -> events::MasterInfo {
    events::MasterInfo {
        hostname: "10.0.0.1".into(),
        port: 5050,
    }
}

#[test]
fn events_are_written_in_mesos_shapes() {
    use pb::event::Event as E;
    let to = events::Audience {
        role: "web".into(),
        partition_aware: false,
        master: master(),
    };
    let ev = |e: E| events::event(pb::Event { event: Some(e) }, &to).expect("an event");
    let offers = ev(E::Offers(pb::event::Offers {
        offers: vec![pb::Offer {
            offer_id: "o-1".into(),
            framework_id: "fw".into(),
            agent_id: "a-1".into(),
            hostname: "h1".into(),
            resources: vec![
                pb::Resource {
                    name: "cpus".into(),
                    scalar: 2.0,
                    ranges: vec![],
                    revocable: true,
                },
                pb::Resource {
                    name: "ports".into(),
                    scalar: 0.0,
                    ranges: vec![pb::Range {
                        begin: 31000,
                        end: 31010,
                    }],
                    revocable: false,
                },
            ],
            attributes: vec![pb::Attribute {
                name: "rack".into(),
                value: "r1".into(),
            }],
            priority_class: "batch".into(),
            agent_address: "10.0.0.2:5051".into(),
        }],
    }));
    let o = &offers["offers"]["offers"][0];
    assert_eq!(offers["type"], "OFFERS");
    assert_eq!(o["id"]["value"], "o-1");
    assert_eq!(o["agent_id"]["value"], "a-1");
    assert_eq!(o["resources"][0]["scalar"]["value"], 2.0);
    assert_eq!(o["resources"][0]["revocable"], json!({}));
    assert_eq!(o["resources"][0]["allocation_info"]["role"], "web");
    assert_eq!(o["resources"][1]["ranges"]["range"][0]["end"], 31010);
    assert!(o["resources"][1].get("revocable").is_none());
    assert_eq!(o["attributes"][0]["text"]["value"], "r1");
    assert_eq!(o["url"]["address"]["port"], 5051);

    let update = ev(E::Update(pb::event::Update {
        status: Some(pb::TaskStatus {
            task_id: "t-1".into(),
            agent_id: "a-1".into(),
            state: pb::TaskState::TaskKilled as i32,
            reason: pb::Reason::Preempted as i32,
            source: pb::Source::Manager as i32,
            uuid: vec![1; 16],
            timestamp: 12.5,
            exit_code: Some(143),
            ..Default::default()
        }),
    }));
    let s = &update["update"]["status"];
    assert_eq!(s["state"], "TASK_KILLED");
    assert_eq!(s["reason"], "REASON_CONTAINER_PREEMPTED");
    assert_eq!(s["source"], "SOURCE_MASTER");
    assert_eq!(s["uuid"], "AQEBAQEBAQEBAQEBAQEBAQ==");
    assert_eq!(s["message"], "Command exited with status 143");

    let sub = ev(E::Subscribed(pb::event::Subscribed {
        framework_id: "fw-1".into(),
        heartbeat_interval_seconds: 15.0,
        protocol_version: 2,
        stream_id: "s".into(),
    }));
    assert_eq!(sub["subscribed"]["framework_id"]["value"], "fw-1");
    assert_eq!(sub["subscribed"]["master_info"]["version"], MESOS_VERSION);
    assert_eq!(sub["subscribed"]["master_info"]["ip"], 0x0100_000a);
    assert_eq!(
        ev(E::Heartbeat(pb::event::Heartbeat {})),
        json!({"type": "HEARTBEAT"})
    );
    let drain = pb::Event {
        event: Some(E::Drain(pb::event::Drain::default())),
    };
    assert!(events::event(drain, &to).is_none());

    // Partition states are TASK_LOST to a framework not PARTITION_AWARE,
    // as Mesos tells them; a kill by the framework gives no reason.
    let update = |state: pb::TaskState, reason: pb::Reason, to: &events::Audience| {
        let s = pb::TaskStatus {
            task_id: "t".into(),
            state: state as i32,
            reason: reason as i32,
            ..Default::default()
        };
        let e = pb::Event {
            event: Some(E::Update(pb::event::Update { status: Some(s) })),
        };
        events::event(e, to).unwrap()["update"]["status"].clone()
    };
    let lost = update(
        pb::TaskState::TaskUnreachable,
        pb::Reason::AgentUnreachable,
        &to,
    );
    assert_eq!(lost["state"], "TASK_LOST");
    assert_eq!(lost["reason"], "REASON_AGENT_DISCONNECTED");
    let aware = events::Audience {
        partition_aware: true,
        ..to.clone()
    };
    let s = update(
        pb::TaskState::TaskUnreachable,
        pb::Reason::AgentUnreachable,
        &aware,
    );
    assert_eq!(s["state"], "TASK_UNREACHABLE");
    let s = update(
        pb::TaskState::TaskKilled,
        pb::Reason::KilledByFramework,
        &to,
    );
    assert!(s.get("reason").is_none(), "{s}");

    let rec = events::record(&json!({"type": "HEARTBEAT"}));
    assert_eq!(&rec[..], b"20\n{\"type\":\"HEARTBEAT\"}");
}

// ---------------------------------------------------------------- over HTTP

use crate::api::test_http::start;

/// Sends one request; returns the connection for reading a stream.
async fn send(addr: SocketAddr, headers: &str, body: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /api/v1/scheduler HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// A whole response: status and body.
async fn post(addr: SocketAddr, headers: &str, body: Value) -> (u16, String) {
    let mut s = send(addr, headers, &body.to_string()).await;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned(),
    )
}

/// Reads a subscription's response until its head and first event are in;
/// returns the head and the connection, still open.
async fn subscribed(addr: SocketAddr, auth: &str, body: Value) -> (String, tokio::net::TcpStream) {
    let mut s = send(addr, auth, &body.to_string()).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&buf).contains("\"SUBSCRIBED\"") {
            return (String::from_utf8_lossy(&buf).into_owned(), s);
        }
    }
}

fn stream_id(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("mesos-stream-id: ")
                .map(|_| l["mesos-stream-id: ".len()..].trim().to_owned())
        })
        .expect("a Mesos-Stream-Id header")
}

#[tokio::test]
async fn bad_calls_get_clear_answers_and_good_ones_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), Some("s3cret")).await;
    let addr = m.address();
    let json = "Content-Type: application/json\r\n";
    // Basic with the token as the password, as Mesos libraries send it.
    let basic = format!("{json}Authorization: Basic {}\r\n", {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("etl:s3cret")
    });
    let sub = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info":
        {"user": "u", "name": "mesos-test"}}});

    let (code, body) = post(addr, json, sub.clone()).await;
    assert_eq!(code, 401, "{body}");
    let wrong = format!("{json}Authorization: Basic {}\r\n", "ZXRsOm5vcGU=");
    assert_eq!(post(addr, &wrong, sub.clone()).await.0, 401);
    let (code, body) = post(
        addr,
        &format!("{basic}Accept: application/x-protobuf\r\n"),
        sub.clone(),
    )
    .await;
    assert_eq!(code, 406, "{body}");
    let (code, body) = post(addr, &basic, json!({"type": "SUBSCRIBE", "subscribe": 3})).await;
    assert_eq!(code, 400);
    assert!(body.contains("malformed call: subscribe"), "{body}");

    let (head, _stream) = subscribed(addr, &basic, sub).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let sid = stream_id(&head);

    // A client that asks for RecordIO by name (Mesos ≥ 1.2) gets it so named.
    let (rio, _rio_stream) = subscribed(
        addr,
        &format!("{basic}Accept: application/recordio\r\nMessage-Accept: application/json\r\n"),
        json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "rio"}}}),
    )
    .await;
    let rio = rio.to_ascii_lowercase();
    assert!(rio.contains("content-type: application/recordio"), "{rio}");
    assert!(
        rio.contains("message-content-type: application/json"),
        "{rio}"
    );
    let fid = head
        .split("\"framework_id\":{\"value\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a framework id")
        .to_owned();
    let with_stream = format!("{basic}Mesos-Stream-Id: {sid}\r\n");
    let revive = json!({"type": "REVIVE", "framework_id": {"value": fid}});

    let (code, body) = post(addr, &basic, revive.clone()).await;
    assert_eq!(code, 400);
    assert!(
        body.contains("missing the Mesos-Stream-Id header"),
        "{body}"
    );
    let (code, body) = post(
        addr,
        &format!("{basic}Mesos-Stream-Id: nope\r\n"),
        revive.clone(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = post(
        addr,
        &with_stream,
        json!({"type": "SHUTDOWN", "framework_id": {"value": fid}}),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        body.contains("the SHUTDOWN call is not supported"),
        "{body}"
    );
    let (code, body) = post(
        addr,
        &with_stream,
        json!({"type": "REVIVE", "framework_id": {"value": "fw-unknown"}}),
    )
    .await;
    assert_eq!(code, 403, "{body}");

    assert_eq!(post(addr, &with_stream, revive.clone()).await.0, 202);
    let teardown = json!({"type": "TEARDOWN", "framework_id": {"value": fid}});
    assert_eq!(post(addr, &with_stream, teardown).await.0, 202);
    let (code, body) = post(addr, &with_stream, revive).await;
    assert_eq!(code, 403, "a removed framework: {body}");

    // `/version` answers without the token, Mesos's version first.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"version\":\"1.11.0\""), "{out}");
}
