//! The built-in services scheduler on a real cluster: Marathon's `/v2` API
//! deploys the packaged `strata web` service, health checks replace a
//! failing instance, a killed instance is restarted, a rolling update keeps
//! the healthy minimum, and a service preempts batch tasks.

use std::time::Duration;

use serde_json::{Value, json};
use strata_sdk::{Ask, Event, Resources, TaskBuilder, TaskState};

use crate::harness::*;

pub(crate) async fn request(
    m: &Manager,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Vec<(String, String)>, Value) {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    let (code, headers, body) = strata_sdk::http::request(
        method,
        &m.addr,
        path,
        m.token.as_deref(),
        bytes.as_deref(),
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (code, headers, v)
}

pub(crate) async fn app(m: &Manager, id: &str) -> Value {
    let (code, _, v) = request(m, "GET", &format!("/v2/apps{id}"), None).await;
    assert_eq!(code, 200, "{v}");
    v["app"].clone()
}

/// Waits until the app has `n` healthy instances and no deployment.
pub(crate) async fn settled(m: &Manager, id: &str, n: u64) -> Value {
    wait_for(
        &format!("{id} with {n} healthy instances"),
        LONG,
        async || {
            let a = app(m, id).await;
            let tasks = a["tasks"].as_array().map(Vec::len).unwrap_or(0) as u64;
            (a["tasksHealthy"] == n && tasks == n && a["deployments"] == json!([])).then_some(a)
        },
    )
    .await
}

pub(crate) fn web_app(id: &str, instances: u32) -> Value {
    json!({
        "id": id,
        "cmd": format!("exec {STRATA} web --port $PORT0 --bind 127.0.0.1"),
        "instances": instances,
        "cpus": 0.25,
        "mem": 64,
        "portDefinitions": [{"port": 0}],
        "healthChecks": [{
            "protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 30,
            "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 2
        }],
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5},
        "backoffSeconds": 0.2
    })
}

fn task_addr(t: &Value) -> String {
    format!("127.0.0.1:{}", t["ports"][0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_api_deploys_scales_heals_updates_and_deletes_an_app() {
    let env = Env::new("services-api");
    let m = env.start_manager(ManagerSpec::default()).await;
    let _a = env.start_agent(&m.addr, &env.path("agent0"), None).await;
    let _b = env.start_agent(&m.addr, &env.path("agent1"), None).await;
    m.wait_registered_agents(2).await;

    // Bad input: clear errors, nothing created.
    let (code, _, v) = request(
        &m,
        "POST",
        "/v2/apps",
        Some(json!({"id": "/bad", "cmd": "x", "cpus": -1})),
    )
    .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["details"][0]["path"], "/cpus");
    let (code, _, _) =
        strata_sdk::http::request("POST", &m.addr, "/v2/apps", None, Some(b"{nope"), LONG)
            .await
            .unwrap();
    assert_eq!(code, 400);
    let (code, _, _) = request(&m, "GET", "/v2/apps/nope", None).await;
    assert_eq!(code, 404);

    // Deploy: 201 with a Location and a deployment id.
    let (code, headers, v) = request(&m, "POST", "/v2/apps", Some(web_app("/shop/web", 2))).await;
    assert_eq!(code, 201, "{v}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "location" && v == "/v2/apps/shop/web")
    );
    assert!(headers.iter().any(|(k, _)| k == "marathon-deployment-id"));
    assert_eq!(v["deployments"].as_array().map(Vec::len), Some(1));
    let (code, _, _) = request(&m, "POST", "/v2/apps", Some(web_app("/shop/web", 1))).await;
    assert_eq!(code, 409, "a second app with the same id");
    let a = settled(&m, "/shop/web", 2).await;
    for t in a["tasks"].as_array().unwrap() {
        let (code, body) = http("GET", &task_addr(t), "/", None, None).await;
        assert_eq!(code, 200);
        assert!(String::from_utf8_lossy(&body).starts_with("hello from shop_web."));
        assert_eq!(t["state"], "TASK_RUNNING");
    }
    // The manager's own state shows the instances as service-class tasks.
    let st = m.state().await;
    let services: Vec<_> = st
        .tasks
        .iter()
        .filter(|t| t.id.starts_with("shop_web."))
        .collect();
    assert_eq!(services.len(), 2);

    // Scale up through the CLI.
    let out = env
        .cli(&["apps", "--manager", &m.addr, "scale", "/shop/web", "3"])
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let a = settled(&m, "/shop/web", 3).await;
    let out = env.cli(&["apps", "--manager", &m.addr]).await;
    assert!(out.stdout.contains("/shop/web"), "{}", out.stdout);

    // An instance failing its health checks is killed and replaced.
    let sick = a["tasks"][0].clone();
    let (code, _) = http("POST", &task_addr(&sick), "/fail", None, Some(b"")).await;
    assert_eq!(code, 200);
    wait_until("the failing instance to be replaced", LONG, async || {
        let a = app(&m, "/shop/web").await;
        let ids: Vec<&str> = a["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["id"].as_str())
            .collect();
        !ids.contains(&sick["id"].as_str().unwrap()) && a["tasksHealthy"] == 3
    })
    .await;

    // A killed instance is restarted.
    let a = settled(&m, "/shop/web", 3).await;
    let victim = a["tasks"][1]["id"].as_str().unwrap().to_owned();
    let pids = env.task_processes(&victim);
    assert!(!pids.is_empty());
    for p in pids {
        signal(p, libc::SIGKILL);
    }
    wait_until("the killed instance to be restarted", LONG, async || {
        let a = app(&m, "/shop/web").await;
        let ids: Vec<&str> = a["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["id"].as_str())
            .collect();
        !ids.contains(&victim.as_str()) && a["tasksHealthy"] == 3
    })
    .await;
    let a = app(&m, "/shop/web").await;
    assert_eq!(a["lastTaskFailure"]["taskId"], victim.as_str());

    // A rolling update: never fewer than 3 healthy; a concurrent change is
    // refused while it runs (409) unless forced.
    let old_version = a["version"].clone();
    let mut changed = web_app("/shop/web", 3);
    changed["env"] = json!({"COLOR": "blue"});
    let (code, _, v) = request(&m, "PUT", "/v2/apps/shop/web", Some(changed)).await;
    assert_eq!(code, 200, "{v}");
    assert!(v["deploymentId"].is_string());
    let (code, _, v) = request(
        &m,
        "PUT",
        "/v2/apps/shop/web",
        Some(json!({"instances": 4})),
    )
    .await;
    assert_eq!(code, 409, "{v}");
    assert_eq!(v["deployments"].as_array().map(Vec::len), Some(1));
    let mut least = u64::MAX;
    let a = wait_for("the rolling update to finish", LONG, async || {
        let a = app(&m, "/shop/web").await;
        least = least.min(a["tasksHealthy"].as_u64().unwrap_or(0));
        let new = a["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["version"] == a["version"]);
        (a["deployments"] == json!([]) && new && a["tasksHealthy"] == 3).then_some(a)
    })
    .await;
    assert_ne!(a["version"], old_version);
    assert!(
        least >= 3,
        "healthy instances fell to {least} during the update"
    );
    let (code, _, v) = request(&m, "GET", "/v2/deployments", None).await;
    assert_eq!((code, v), (200, json!([])));
    let (_, _, v) = request(&m, "GET", "/v2/tasks", None).await;
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(3));
    let (code, _, v) = request(&m, "GET", "/v2/info", None).await;
    assert_eq!(code, 200);
    assert_eq!(v["name"], "strata");
    let (code, body) = http("GET", &m.addr, "/ping", None, None).await;
    assert_eq!((code, body), (200, b"pong".to_vec()));

    // Delete: every instance goes, then the app.
    let (code, _, _) = request(&m, "DELETE", "/v2/apps/shop/web", None).await;
    assert_eq!(code, 200);
    wait_until("the app to be gone", LONG, async || {
        request(&m, "GET", "/v2/apps/shop/web", None).await.0 == 404
    })
    .await;
    wait_until("its tasks to end", LONG, async || {
        m.state()
            .await
            .tasks
            .iter()
            .all(|t| !t.id.starts_with("shop_web."))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_preempts_batch_tasks_and_batch_takes_the_room_back() {
    let env = Env::new("services-preempt");
    let spec = ManagerSpec {
        preemption_grace: Some("1s".into()),
        ..ManagerSpec::default()
    };
    let m = env.start_manager(spec).await;
    let _a = env.start_agent(&m.addr, &env.path("agent0"), None).await;
    let _b = env.start_agent(&m.addr, &env.path("agent1"), None).await;
    m.wait_registered_agents(2).await;

    // Batch fills the cluster: 8 tasks of half a cpu on 4 cpus.
    let mut batch = Fw::subscribe(framework_config(&m.addr, "batch")).await;
    batch
        .handle
        .declare_demand(vec![Ask::new("batch", Resources::new(0.5, 64.0), 8)])
        .await
        .unwrap();
    let mut launched = 0;
    while launched < 8 {
        let offers = batch
            .expect("batch offers", LONG, |e| match e {
                Event::Offers(o) => Some(o.clone()),
                _ => None,
            })
            .await;
        for o in offers {
            let n = (o.resources.cpus.as_f64() / 0.5).floor() as usize;
            let tasks: Vec<_> = (0..n.min(8 - launched))
                .map(|i| {
                    TaskBuilder::shell(format!("b{}", launched + i), "sleep 600")
                        .resources(Resources::new(0.5, 64.0))
                        .class("batch")
                        .build()
                })
                .collect();
            launched += tasks.len();
            batch
                .handle
                .accept(vec![o.id.clone()], tasks, strata_sdk::Filters::default())
                .await
                .unwrap();
        }
    }
    for i in 0..8 {
        batch
            .wait_state(&format!("b{i}"), TaskState::TaskRunning)
            .await;
    }
    batch.handle.declare_demand(vec![]).await.unwrap();
    batch.handle.suppress().await.unwrap();

    // A service of 2 half-cpu instances: the manager preempts 2 batch tasks.
    let t0 = std::time::Instant::now();
    let mut svc = web_app("/api", 2);
    svc["cpus"] = json!(0.5);
    let (code, _, v) = request(&m, "POST", "/v2/apps", Some(svc)).await;
    assert_eq!(code, 201, "{v}");
    settled(&m, "/api", 2).await;
    let preempted: Vec<String> = batch
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::Update(s) if s.reason == strata_sdk::Reason::Preempted => {
                Some(s.task_id.to_string())
            }
            _ => None,
        })
        .collect();
    let mut preempted = preempted;
    while preempted.len() < 2 {
        let s = batch
            .expect("a preempted batch task", LONG, |e| match e {
                Event::Update(s) if s.state == TaskState::TaskKilled => Some(s.clone()),
                _ => None,
            })
            .await;
        assert_eq!(s.reason, strata_sdk::Reason::Preempted, "{s:?}");
        preempted.push(s.task_id.to_string());
    }
    assert_eq!(preempted.len(), 2);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(10) + Duration::from_secs(1),
        "took {took:?}"
    );

    // The service scales back down: batch is offered the room again.
    let (code, _, _) = request(&m, "PUT", "/v2/apps/api", Some(json!({"instances": 0}))).await;
    assert_eq!(code, 200);
    batch
        .handle
        .declare_demand(vec![Ask::new("batch", Resources::new(0.5, 64.0), 2)])
        .await
        .unwrap();
    let room = batch
        .expect("offers of the freed room", LONG, |e| match e {
            Event::Offers(o) => Some(o.iter().map(|o| o.resources.cpus.as_f64()).sum::<f64>()),
            _ => None,
        })
        .await;
    assert!(room >= 0.5, "offered {room} cpus");
}

/// Blue/green as the README describes it: the new version as a second app
/// beside the old, scaled up while the old is scaled down, then the old
/// deleted; the service never has fewer healthy instances than it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_switch_keeps_the_service_up() {
    let env = Env::new("services-blue-green");
    let m = env.start_manager(ManagerSpec::default()).await;
    let _a = env.start_agent(&m.addr, &env.path("agent0"), None).await;
    let _b = env.start_agent(&m.addr, &env.path("agent1"), None).await;
    m.wait_registered_agents(2).await;
    let (blue, green) = ("/shop/web-blue", "/shop/web-green");
    let (code, _, v) = request(&m, "POST", "/v2/apps", Some(web_app(blue, 2))).await;
    assert_eq!(code, 201, "{v}");
    settled(&m, blue, 2).await;
    // Healthy instances of both colours, and the fewest seen so far.
    let mut least = u64::MAX;
    let observe = async |least: &mut u64| {
        let healthy = |a: &Value| a["tasksHealthy"].as_u64().unwrap_or(0);
        let b = app(&m, blue).await;
        let g = match request(&m, "GET", &format!("/v2/apps{green}"), None).await {
            (200, _, v) => v["app"].clone(),
            _ => Value::Null,
        };
        *least = (*least).min(healthy(&b) + healthy(&g));
        (b, g)
    };

    // Green beside blue, then scaled across with the CLI.
    let (code, _, v) = request(&m, "POST", "/v2/apps", Some(web_app(green, 1))).await;
    assert_eq!(code, 201, "{v}");
    wait_for("green healthy beside blue", LONG, async || {
        let (_, g) = observe(&mut least).await;
        (g["tasksHealthy"] == 1).then_some(())
    })
    .await;
    let scale = async |id: &str, n: &str| {
        let out = env
            .cli(&["apps", "--manager", &m.addr, "scale", id, n])
            .await;
        assert_eq!(out.code(), Some(0), "{}", out.stderr);
    };
    scale(green, "2").await;
    wait_for("green at 2 healthy", LONG, async || {
        let (_, g) = observe(&mut least).await;
        (g["tasksHealthy"] == 2).then_some(())
    })
    .await;
    scale(blue, "0").await;
    wait_for("blue drained", LONG, async || {
        let (b, _) = observe(&mut least).await;
        (b["tasks"].as_array().is_some_and(Vec::is_empty) && b["deployments"] == json!([]))
            .then_some(())
    })
    .await;
    let (code, _, _) = request(&m, "DELETE", &format!("/v2/apps{blue}"), None).await;
    assert_eq!(code, 200);
    wait_until("blue gone", LONG, async || {
        request(&m, "GET", &format!("/v2/apps{blue}"), None).await.0 == 404
    })
    .await;
    assert!(
        least >= 2,
        "healthy instances fell to {least} during the switch"
    );
    // Green serves.
    let g = settled(&m, green, 2).await;
    for t in g["tasks"].as_array().unwrap() {
        let (code, body) = http("GET", &task_addr(t), "/", None, None).await;
        assert_eq!(code, 200);
        assert!(
            String::from_utf8_lossy(&body).contains("green"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// marathon-python (a real Marathon client, installed by `.ci/run`) parses
/// every answer of the API into its models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marathon_client_drives_the_api() {
    let env = Env::new("services-marathon-python");
    let m = env.start_manager(ManagerSpec::default()).await;
    let _a = env.start_agent(&m.addr, &env.path("agent0"), None).await;
    m.wait_registered_agents(1).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/marathon_client.py");
    let url = format!("http://{}", m.addr);
    let out = tokio::process::Command::new("python3")
        .args([script, &url, STRATA])
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'marathon'"),
        "marathon-python is missing: pip install marathon (.ci/run installs it)"
    );
    assert!(
        out.status.success(),
        "marathon-python failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The acceptance run: a TPC-H job fills the cluster; a service with an
/// HTTP health check is scaled from 2 to 6 instances with a preemption
/// grace of 3 s, preempting batch executors; it never drops below its
/// healthy minimum; when it scales down, batch gets the room back and the
/// job completes with the same results as single-process DataFusion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_scales_up_through_a_tpch_job_which_still_completes() {
    let mut svc = web_app("/acceptance", 2);
    svc["cpus"] = json!(0.5);
    acceptance("services-acceptance", svc).await;
}

/// The same with the service in a Docker container: busybox's `httpd` in
/// an image built locally by `scripts/docker-test-image.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_service_scales_up_through_a_tpch_job_which_still_completes() {
    if !docker_engine_present() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/docker-test-image.sh");
    let out = std::process::Command::new(script)
        .output()
        .expect("the image script runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svc = json!({
        "id": "/acceptance",
        "cmd": "exec httpd -f -p 8080 -h /www",
        "instances": 2,
        "cpus": 0.5,
        "mem": 32,
        "container": {
            "type": "DOCKER",
            "docker": {"image": "strata-test/busybox:latest"},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}]
        },
        "healthChecks": [{
            "protocol": "HTTP", "path": "/index.html", "gracePeriodSeconds": 30,
            "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 2
        }],
        "backoffSeconds": 0.2
    });
    acceptance("services-acceptance-docker", svc).await;
}

async fn acceptance(name: &str, mut svc: Value) {
    use datafusion::prelude::SessionContext;
    use strata_framework::driver::{ClusterSource, Driver, DriverConfig, ExecutorSource};
    use strata_framework::session::Session;
    use strata_framework::tpch;

    const GRACE: Duration = Duration::from_secs(3);
    let env = Env::new(name);
    let data = env.path("tpch");
    tpch::generate_parquet(0.1, &data).unwrap();
    let spec = ManagerSpec {
        preemption_grace: Some("3s".into()),
        ..ManagerSpec::default()
    };
    let m = env.start_manager(spec).await;
    let _a = env.start_agent(&m.addr, &env.path("agent0"), None).await;
    let _b = env.start_agent(&m.addr, &env.path("agent1"), None).await;
    m.wait_registered_agents(2).await;

    // Batch: two 2-cpu executors fill both agents' cpus.
    let mut source = ClusterSource::new(m.addr.clone(), STRATA);
    source.name = "it-tpch".into();
    let mut config = DriverConfig::new(ExecutorSource::Cluster(Box::new(source)));
    config.executors.min = 2;
    config.executors.max = 2;
    config.executors.cpus = 2.0;
    config.executors.mem_mib = 640.0;
    let d = std::sync::Arc::new(Driver::start(config).await.expect("driver starts"));
    d.wait_for_executors(2, LONG)
        .await
        .expect("executors start");
    let session = Session::new(d.clone(), 4).unwrap();
    tpch::register_parquet(session.context(), &data)
        .await
        .unwrap();
    let job = tokio::spawn(async move {
        let mut results = Vec::new();
        for n in 1..=22 {
            let mut got = Ok(Vec::new());
            for s in tpch::statements(n) {
                let r = session.query(&s).await.map_err(|e| format!("q{n}: {e}"));
                if s.trim_start().to_lowercase().starts_with("select") || r.is_err() {
                    got = r;
                }
            }
            results.push((n, got));
        }
        results
    });

    // The service: 2 instances of half a cpu, then 6.
    svc["upgradeStrategy"] = json!({"minimumHealthCapacity": 1, "maximumOverCapacity": 1});
    let t0 = std::time::Instant::now();
    let (code, _, v) = request(&m, "POST", "/v2/apps", Some(svc)).await;
    assert_eq!(code, 201, "{v}");
    settled(&m, "/acceptance", 2).await;
    let first = t0.elapsed();
    assert!(
        first < Duration::from_secs(10) + GRACE,
        "2 instances took {first:?}"
    );

    let t1 = std::time::Instant::now();
    let (code, _, v) = request(
        &m,
        "PUT",
        "/v2/apps/acceptance",
        Some(json!({"instances": 6})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let mut least = u64::MAX;
    wait_for(
        "6 healthy instances",
        Duration::from_secs(10) + GRACE + Duration::from_secs(5),
        async || {
            let a = app(&m, "/acceptance").await;
            let healthy = a["tasksHealthy"].as_u64().unwrap_or(0);
            least = least.min(healthy);
            (healthy == 6).then_some(())
        },
    )
    .await;
    let scaled = t1.elapsed();
    println!("2 healthy instances after {first:?}; 6 after a further {scaled:?}");
    assert!(
        scaled < Duration::from_secs(10) + GRACE,
        "2 → 6 took {scaled:?}"
    );
    assert!(least >= 2, "healthy instances fell to {least}");
    let preempted = m.state().await;
    assert!(
        preempted
            .tasks
            .iter()
            .filter(|t| t.id.contains("-exec-"))
            .count()
            < 2,
        "an executor was preempted"
    );

    // The service scales down: batch gets its executors back and finishes.
    let (code, _, _) = request(
        &m,
        "PUT",
        "/v2/apps/acceptance",
        Some(json!({"instances": 0})),
    )
    .await;
    assert_eq!(code, 200);
    d.wait_for_executors(2, LONG * 4)
        .await
        .expect("executors come back");
    let results = tokio::time::timeout(Duration::from_secs(600), job)
        .await
        .expect("the job finishes")
        .unwrap();
    d.shutdown().await;
    let reference = SessionContext::new();
    tpch::register_parquet(&reference, &data).await.unwrap();
    let mut failures = Vec::new();
    for (n, got) in results {
        let mut expected = Vec::new();
        for s in tpch::statements(n) {
            let b = reference.sql(&s).await.unwrap().collect().await.unwrap();
            if s.trim_start().to_lowercase().starts_with("select") {
                expected = b;
            }
        }
        match got {
            Ok(got) => {
                if let Err(e) = strata_framework::compare::same_rows(&expected, &got) {
                    failures.push(format!("q{n}: {e}"));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Whether the Docker Engine's socket is there. Without it a Docker test
/// skips itself, saying so, unless `STRATA_REQUIRE_DOCKER` is set (as
/// `.ci/run` sets it, where the engine is expected): then it fails.
fn docker_engine_present() -> bool {
    let socket = "/var/run/docker.sock";
    if std::path::Path::new(socket).exists() {
        return true;
    }
    assert!(
        std::env::var_os("STRATA_REQUIRE_DOCKER").is_none(),
        "no Docker Engine at {socket}, and STRATA_REQUIRE_DOCKER is set"
    );
    println!("skipping: no Docker Engine at {socket}");
    false
}
