//! Strata across hosts: the manager, each agent and the client on a host of
//! its own, with its own IP address (network namespaces on a bridge, see
//! [`crate::harness::Lan`]). Nothing here is reachable over a shared
//! loopback: tasks' output is read through the agents' advertised
//! addresses, executors dial their driver's routable address and fetch
//! shuffle data from each other's. Partitions of the fault suite cut one
//! host off from another with iptables.

use std::time::Duration;

use crate::harness::*;

/// The cluster's shared secret (required off loopback).
const TOKEN: &str = "hosts-secret";

/// A manager on host 0 (with `extra` flags) and agents on hosts 1 and 2:
/// the first as the README writes it (every interface, an advertised
/// address), the second with no address given (it finds the one the
/// manager routes back to).
async fn cluster_on(env: &Env, lan: &Lan, extra: &[&str]) -> (Manager, Vec<Agent>) {
    let m = env
        .start_manager(ManagerSpec {
            listen: lan[0].addr(0),
            token: Some(TOKEN.into()),
            host: Some(lan[0].clone()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            ..ManagerSpec::default()
        })
        .await;
    let a1 = env
        .start_agent_with(
            &m.addr,
            &env.path("agent-1"),
            AgentSpec {
                listen: "0.0.0.0:5051".into(),
                advertise: Some(lan[1].addr(5051)),
                token: Some(TOKEN.into()),
                host: Some(lan[1].clone()),
                ..AgentSpec::default()
            },
        )
        .await;
    let mut a2 = env
        .start_agent_with(
            &m.addr,
            &env.path("agent-2"),
            AgentSpec {
                listen: "0.0.0.0:5051".into(),
                token: Some(TOKEN.into()),
                host: Some(lan[2].clone()),
                ..AgentSpec::default()
            },
        )
        .await;
    a2.addr = lan[2].addr(5051);
    let mut advertised: Vec<String> = m
        .wait_registered_agents(2)
        .await
        .into_iter()
        .map(|a| a.address)
        .collect();
    advertised.sort();
    assert_eq!(advertised, vec![lan[1].addr(5051), lan[2].addr(5051)]);
    (m, vec![a1, a2])
}

/// Two CSV files of `rows` rows each (`k = i % 5`, `v = i`) under `dir`,
/// and the script's DDL over them.
fn numbers(env: &Env, rows: u32) -> String {
    let dir = env.path("numbers");
    std::fs::create_dir_all(&dir).unwrap();
    for f in 0..2 {
        let mut body = String::from("k,v\n");
        for i in 0..rows {
            body.push_str(&format!("{},{}\n", i % 5, i));
        }
        std::fs::write(dir.join(format!("part-{f}.csv")), body).unwrap();
    }
    format!(
        "CREATE EXTERNAL TABLE numbers (k INT, v BIGINT) STORED AS CSV LOCATION '{}/' \
         OPTIONS ('format.has_header' 'true');",
        dir.display()
    )
}

/// The expected `k,n,total` lines of the grouped query over [`numbers`].
fn expected(rows: u32) -> String {
    let mut out = String::from("k,n,total\n");
    for k in 0..5u64 {
        let vs: Vec<u64> = (0..rows as u64).filter(|i| i % 5 == k).collect();
        out.push_str(&format!(
            "{k},{},{}\n",
            2 * vs.len(),
            2 * vs.iter().sum::<u64>()
        ));
    }
    out
}

const GROUPED: &str = "SELECT k, count(*) AS n, sum(v) AS total FROM numbers GROUP BY k ORDER BY k";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_other_hosts_run_tasks_executors_and_shuffles() {
    let Some(lan) = Lan::new("hosts", 3) else {
        return;
    };
    let env = Env::new("hosts");
    let (m, _agents) = cluster_on(&env, &lan, &[]).await;
    let client = Some(&lan[0]);

    // A task's output is read from its sandbox through its agent's
    // advertised address; the task is told where the agent's own
    // `strata` is (tasks run as `nobody` here, which cannot run it from the
    // build directory; executors below run it as the driver's user).
    let out = env
        .cli_on(
            client,
            env.home(),
            &[
                "run",
                "--manager",
                &m.addr,
                "--token",
                TOKEN,
                "--",
                "sh",
                "-c",
                "echo \"bin=$STRATA_BIN\"; hostname -I",
            ],
        )
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains(&format!("bin={STRATA}\n")), "{out:?}");
    assert!(
        [1, 2]
            .iter()
            .any(|&i| out.stdout.contains(&lan[i].ip.to_string())),
        "the task ran on an agent's host: {out:?}"
    );

    // A query whose executors (2 cpus each, so one per agent) run on two
    // other hosts than their driver: they dial the driver's routable
    // address, exchange shuffle data with each other, and the driver
    // fetches the final stage from them.
    let rows = 2_000;
    let script = format!("{} {GROUPED}", numbers(&env, rows));
    let out = env
        .cli_on(
            client,
            env.home(),
            &[
                "sql",
                "--manager",
                &m.addr,
                "--token",
                TOKEN,
                "--executors",
                "2",
                "--executor-cpus",
                "2",
                "--executor-mem",
                "256",
                "--format",
                "csv",
                "-e",
                &script,
            ],
        )
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, expected(rows));

    // A submitted job: its driver is a task on one agent's host, its
    // executors on the others' (1 cpu each, beside it or not), all started
    // from each agent's own `strata`.
    let path = env.path("grouped.sql");
    std::fs::write(&path, format!("{}\n{GROUPED};\n", numbers(&env, rows))).unwrap();
    let path = path.display().to_string();
    let args =
        crate::jobs::submit_args(&m, &["--token", TOKEN, "--format", "csv", "--wait", &path]);
    let out = env.cli_on(client, env.home(), &args).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains(&expected(rows)), "{out:?}");
    wait_until("every task of the cluster ended", LONG, async || {
        m.state().await.tasks.is_empty()
    })
    .await;
}

/// Manager `i` on `host`, on the etcd `store`, with a 2 s lease.
#[cfg(feature = "etcd")]
fn manager_on_etcd(env: &Env, host: &Host, i: usize, store: &str) -> ManagerSpec {
    manager_on_etcd_with_lease(env, host, i, store, "2s")
}

/// [`manager_on_etcd`] with a lease of `ttl`.
fn manager_on_etcd_with_lease(
    env: &Env,
    host: &Host,
    i: usize,
    store: &str,
    ttl: &str,
) -> ManagerSpec {
    ManagerSpec {
        listen: host.addr(5050),
        token: Some(TOKEN.into()),
        host: Some(host.clone()),
        work_dir: Some(env.path(&format!("manager-{i}"))),
        extra: vec![
            "--store".into(),
            store.to_owned(),
            "--lease-ttl".into(),
            ttl.into(),
        ],
        ..ManagerSpec::default()
    }
}

/// A partition of the fault suite: etcd, two managers and an agent each on
/// a host of its own; the leader's host is cut off from etcd's (iptables
/// DROP both ways). The leader stops acting within its lease and exits;
/// the standby on the other host leads and the agent follows it.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_steps_down_and_the_standby_leads() {
    let Some(lan) = Lan::new("hosts-etcd", 4) else {
        return;
    };
    let env = Env::new("hosts-etcd");
    let Some(etcd) = start_etcd_in(&env, "hosts-etcd", Some(&lan[0])).await else {
        return;
    };
    let store = format!("etcd://{}/cut", etcd.addr);
    let manager_on = |i: usize| manager_on_etcd(&env, &lan[i], i, &store);
    let mut a = env.start_manager(manager_on(1)).await;
    wait_until("the manager on host 1 leads", LONG, async || {
        a.leads().await
    })
    .await;
    let b = env.start_manager(manager_on(2)).await;
    let _agent = env
        .start_agent_with(
            &format!("{},{}", a.addr, b.addr),
            &env.path("agent"),
            AgentSpec {
                listen: "0.0.0.0:5051".into(),
                token: Some(TOKEN.into()),
                host: Some(lan[3].clone()),
                ..AgentSpec::default()
            },
        )
        .await;
    a.wait_registered_agents(1).await;

    let cut = std::time::Instant::now();
    lan[1].cut_from(&lan[0]);
    let exit = a.proc.wait_exit(LONG).await;
    let stepped_down = cut.elapsed();
    assert_eq!(exit.code(), Some(1), "a leader cut off from etcd exits 1");
    wait_until("the standby leads", LONG, async || b.leads().await).await;
    let standby_leads = cut.elapsed();
    b.wait_registered_agents(1).await;
    let agent_back = cut.elapsed();
    lan[1].heal_from(&lan[0]);
    eprintln!(
        "leader cut off from etcd: stepped down (exited) after {stepped_down:?}; standby leads after {standby_leads:?}; agent with it after {agent_back:?}"
    );
}

/// A partition of the fault suite: the leading manager is cut off from
/// every agent but still reaches etcd and the standby. It keeps its lease
/// (the standby never leads), marks the agents unreachable, and the agents
/// keep their tasks running, trying every manager they know (the standby
/// only names the leader). The service's instance keeps its place (the
/// default `unreachableStrategy`, as Marathon's: 300 s before a
/// replacement). On heal the agents re-register with the leader and their
/// tasks are reconciled: the instance is the one that ran all along, at
/// the app's count, and no task ran twice.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_agents_keeps_leading_and_reconciles_them_on_heal() {
    let Some(lan) = Lan::new("hosts-lcut", 5) else {
        return;
    };
    let env = Env::new("hosts-lcut");
    let Some(etcd) = start_etcd_in(&env, "hosts-lcut", Some(&lan[0])).await else {
        return;
    };
    let store = format!("etcd://{}/lcut", etcd.addr);
    let manager_on = |i: usize| ManagerSpec {
        agent_timeout: "2s".into(),
        ..manager_on_etcd(&env, &lan[i], i, &store)
    };
    let a = env.start_manager(manager_on(1)).await;
    wait_until("the manager on host 1 leads", LONG, async || {
        a.leads().await
    })
    .await;
    let b = env.start_manager(manager_on(2)).await;
    let managers = format!("{},{}", a.addr, b.addr);
    let agent_on = |i: usize| AgentSpec {
        listen: "0.0.0.0:5051".into(),
        token: Some(TOKEN.into()),
        host: Some(lan[i].clone()),
        ..AgentSpec::default()
    };
    let mut agents = Vec::new();
    for i in [3, 4] {
        let mut agent = env
            .start_agent_with(&managers, &env.path(&format!("agent-{i}")), agent_on(i))
            .await;
        agent.addr = lan[i].addr(5051);
        agents.push(agent);
    }
    a.wait_registered_agents(2).await;
    let app = serde_json::json!({
        "id": "/web",
        "cmd": format!("exec {STRATA} web --port $PORT0 --bind 0.0.0.0"),
        "instances": 1, "cpus": 0.25, "mem": 64,
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 30,
            "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 2}],
        "backoffSeconds": 0.2
    });
    let (code, _, v) = crate::services::request(&a, "POST", "/v2/apps", Some(app)).await;
    assert_eq!(code, 201, "{v}");
    let before = crate::services::settled(&a, "/web", 1).await;
    let task = before["tasks"][0]["id"].as_str().unwrap().to_owned();
    let mut pid = None;
    for ag in &agents {
        if ag
            .tasks()
            .await
            .iter()
            .any(|t| t["task_id"] == task.as_str())
        {
            pid = Some(ag.task_pid(&task).await);
        }
    }
    let pid = pid.expect("an agent runs the instance");

    let cut = std::time::Instant::now();
    for i in [3, 4] {
        lan[1].cut_from(&lan[i]);
    }
    wait_until(
        "the leader marks both agents unreachable",
        LONG,
        async || {
            let state = a.state().await;
            state.agents.len() == 2 && state.agents.iter().all(|ag| ag.state != "registered")
        },
    )
    .await;
    let unreachable_after = cut.elapsed();
    assert!(a.leads().await, "the leader still holds its lease");
    assert!(
        !b.leads().await,
        "the standby never leads while the leader holds the lease"
    );
    assert!(
        pid_alive(pid),
        "the instance keeps running on its cut-off agent"
    );

    let heal = std::time::Instant::now();
    for i in [3, 4] {
        lan[1].heal_from(&lan[i]);
    }
    a.wait_registered_agents(2).await;
    let back_after = heal.elapsed();
    let after = crate::services::settled(&a, "/web", 1).await;
    assert_eq!(
        after["tasks"][0]["id"],
        task.as_str(),
        "the instance that ran through the partition is kept: {after}"
    );
    assert!(pid_alive(pid), "the same process, never restarted");
    let web_tasks: Vec<String> = a
        .state()
        .await
        .tasks
        .into_iter()
        .map(|t| t.id)
        .filter(|id| id.starts_with("web."))
        .collect();
    assert_eq!(
        web_tasks,
        vec![task.clone()],
        "no second instance was launched"
    );
    eprintln!(
        "leader cut off from its agents: unreachable after {unreachable_after:?}; re-registered {back_after:?} after the heal"
    );
}

/// A partition of the fault suite: an agent holding a service's instance
/// is cut off from the manager. The instance is replaced on another host
/// at once (`unreachableStrategy` with `inactiveAfterSeconds` 0); when the
/// partition heals the agent comes back with its task, and the app is
/// brought back to one instance (the extra killed), never two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_and_healed_has_its_service_replaced_then_the_extra_killed() {
    let Some(lan) = Lan::new("hosts-cut", 3) else {
        return;
    };
    let env = Env::new("hosts-cut");
    let m = env
        .start_manager(ManagerSpec {
            listen: lan[0].addr(0),
            token: Some(TOKEN.into()),
            host: Some(lan[0].clone()),
            agent_timeout: "3s".into(),
            ..ManagerSpec::default()
        })
        .await;
    let agent_on = |i: usize| AgentSpec {
        listen: "0.0.0.0:5051".into(),
        token: Some(TOKEN.into()),
        host: Some(lan[i].clone()),
        ..AgentSpec::default()
    };
    let _a1 = env
        .start_agent_with(&m.addr, &env.path("agent-1"), agent_on(1))
        .await;
    let first = m.wait_registered_agents(1).await[0].id.clone();
    // Reachable from the manager's host: every interface of the agent's.
    let app = serde_json::json!({
        "id": "/web",
        "cmd": format!("exec {STRATA} web --port $PORT0 --bind 0.0.0.0"),
        "instances": 1, "cpus": 0.25, "mem": 64,
        "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 30,
            "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 2}],
        "backoffSeconds": 0.2,
        "unreachableStrategy": {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 60}
    });
    let (code, _, v) = crate::services::request(&m, "POST", "/v2/apps", Some(app)).await;
    assert_eq!(code, 201, "{v}");
    let before = crate::services::settled(&m, "/web", 1).await;
    assert_eq!(before["tasks"][0]["slaveId"], first.as_str());
    let _a2 = env
        .start_agent_with(&m.addr, &env.path("agent-2"), agent_on(2))
        .await;
    m.wait_registered_agents(2).await;

    // Cut: the instance is replaced on the other host.
    lan[1].cut_from(&lan[0]);
    let replaced = wait_for("a healthy replacement on host 2", LONG, async || {
        let a = crate::services::app(&m, "/web").await;
        a["tasks"]
            .as_array()?
            .iter()
            .find(|t| {
                t["slaveId"] != first.as_str()
                    && t["healthCheckResults"][0]["alive"] == serde_json::json!(true)
            })
            .cloned()
    })
    .await;
    // Heal: the agent comes back with its task, and one of the two goes.
    lan[1].heal_from(&lan[0]);
    m.wait_registered_agents(2).await;
    let after = crate::services::settled(&m, "/web", 1).await;
    let kept = after["tasks"][0]["id"].clone();
    assert!(
        kept == before["tasks"][0]["id"] || kept == replaced["id"],
        "{after}"
    );
    let gone = if kept == before["tasks"][0]["id"] {
        replaced["id"].as_str().unwrap().to_owned()
    } else {
        before["tasks"][0]["id"].as_str().unwrap().to_owned()
    };
    wait_until("the extra instance ends", LONG, async || {
        m.task(&gone).await.is_none()
    })
    .await;
}

/// `dig @SERVER ARGS…` (Debian's bind9-dnsutils), one try of 2 s: its
/// output.
fn dig(server: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("dig")
        .arg(format!("@{server}"))
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("dig (Debian's bind9-dnsutils) cannot run: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short`'s answer lines, sorted.
fn dig_short(server: &str, name: &str, rtype: &str) -> Vec<String> {
    let mut lines: Vec<String> = dig(server, &["+short", name, rtype])
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect();
    lines.sort();
    lines
}

/// `GET http://ADDR/` through a service port: the body, or why not.
async fn get_via(addr: &str) -> Result<String, String> {
    match strata_sdk::http::request("GET", addr, "/", None, None, Duration::from_secs(5)).await {
        Ok((200, _, body)) => Ok(String::from_utf8_lossy(&body).into_owned()),
        Ok((code, _, body)) => Err(format!("{code}: {}", String::from_utf8_lossy(&body))),
        Err(e) => Err(e.to_string()),
    }
}

/// Apps are reached by name and by a fixed port from anywhere: the manager
/// answers DNS (asked with dig, over UDP and TCP) with the healthy
/// instance's agent and host port, and every agent — the one running the
/// instance and the one that runs none — forwards the app's service port
/// to it (as Mesos-DNS and marathon-lb do). When the app goes, so do its
/// name and its port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_reached_by_dns_name_and_by_service_port_on_any_agent() {
    let Some(lan) = Lan::new("hosts-dns", 3) else {
        return;
    };
    let env = Env::new("hosts-dns");
    // Port 53: the manager's host is a namespace of its own.
    let dns = lan[0].ip.to_string();
    let (m, _agents) = cluster_on(&env, &lan, &["--dns-listen", &lan[0].addr(53)]).await;
    let agents: std::collections::BTreeMap<String, String> = m
        .wait_registered_agents(2)
        .await
        .into_iter()
        .map(|a| {
            (
                a.id.to_string(),
                a.address.split(':').next().unwrap().to_owned(),
            )
        })
        .collect();
    let app = serde_json::json!({
        "id": "/web",
        "cmd": format!("exec {STRATA} web --port $PORT0 --bind 0.0.0.0"),
        "instances": 1, "cpus": 0.25, "mem": 64,
        "portDefinitions": [{"port": 10101, "name": "http"}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 30,
            "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 2}]
    });
    let (code, _, v) = crate::services::request(&m, "POST", "/v2/apps", Some(app)).await;
    assert_eq!(code, 201, "{v}");
    let a = crate::services::settled(&m, "/web", 1).await;
    let task = &a["tasks"][0];
    let (task_id, agent_id) = (
        task["id"].as_str().unwrap(),
        task["slaveId"].as_str().unwrap(),
    );
    let host_port = task["ports"][0].as_u64().unwrap();
    assert_eq!(task["servicePorts"], serde_json::json!([10101]));
    let ip = agents[agent_id].clone();

    // DNS: the app's name, its SRV records (all ports and the named one),
    // the agent they name, the leader; over UDP and TCP.
    wait_until("the app's name resolves", LONG, async || {
        dig_short(&dns, "web.marathon.strata", "A") == vec![ip.clone()]
    })
    .await;
    let srv = vec![format!("0 0 {host_port} {agent_id}.agents.strata.")];
    assert_eq!(dig_short(&dns, "_web._tcp.marathon.strata", "SRV"), srv);
    assert_eq!(
        dig_short(&dns, "_http._web._tcp.marathon.strata", "SRV"),
        srv
    );
    assert_eq!(
        dig_short(&dns, &format!("{agent_id}.agents.strata"), "A"),
        vec![ip.clone()]
    );
    assert_eq!(dig_short(&dns, "leader.strata", "A"), vec![dns.clone()]);
    let over_tcp = dig(&dns, &["+tcp", "web.marathon.strata", "A"]);
    assert!(over_tcp.contains(&format!("IN\tA\t{ip}")), "{over_tcp}");
    assert!(
        over_tcp.contains("flags: qr aa"),
        "authoritative: {over_tcp}"
    );
    let nx = dig(&dns, &["nothing.marathon.strata", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    let refused = dig(&dns, &["example.com", "A"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");

    // The service port, on every agent's address.
    for host in [&lan[1], &lan[2]] {
        let via = host.addr(10101);
        let body = wait_for(&format!("the service port on {via}"), LONG, async || {
            get_via(&via).await.ok()
        })
        .await;
        assert_eq!(body, format!("hello from {task_id}\n"), "through {via}");
    }

    // The app goes: its name and its port with it.
    let (code, _, v) = crate::services::request(&m, "DELETE", "/v2/apps/web", None).await;
    assert_eq!(code, 200, "{v}");
    wait_until("the name is gone", LONG, async || {
        dig(&dns, &["web.marathon.strata", "A"]).contains("status: NXDOMAIN")
    })
    .await;
    for host in [&lan[1], &lan[2]] {
        let via = host.addr(10101);
        wait_until(
            &format!("the service port on {via} closes"),
            LONG,
            async || get_via(&via).await.is_err(),
        )
        .await;
    }
}

/// Three etcd members, two managers and an agent, each on a host of its
/// own, as the README installs them. Losing an etcd member (kill -9) costs
/// nothing: the quorum of two keeps the leader's lease and writes. Then
/// the leading manager is killed: the standby leads on the two members
/// left, and the agent and its running task follow it.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_etcd_members_lose_one_and_the_managers_fail_over_on_the_rest() {
    let Some(lan) = Lan::new("hosts-etcd3", 6) else {
        return;
    };
    let env = Env::new("hosts-etcd3");
    let Some(mut etcd) =
        start_etcd_cluster(&env, "hosts-etcd3", &[&lan[0], &lan[1], &lan[2]]).await
    else {
        return;
    };
    let endpoints: Vec<String> = etcd.iter().map(|m| m.addr.clone()).collect();
    let store = format!("etcd://{}/three", endpoints.join(","));
    // A lease of 6 s: the leader's keep-alive must move to another member
    // when its own dies, which under a loaded machine took past 2 s.
    let manager_on = |i: usize| {
        let mut spec = manager_on_etcd(&env, &lan[i], i, &store);
        if let Some(ttl) = spec
            .extra
            .iter_mut()
            .skip_while(|a| *a != "--lease-ttl")
            .nth(1)
        {
            *ttl = "6s".into();
        }
        spec
    };
    let a = env.start_manager(manager_on(3)).await;
    wait_until("the manager on host 3 leads", LONG, async || {
        a.leads().await
    })
    .await;
    let b = env.start_manager(manager_on(4)).await;
    let _agent = env
        .start_agent_with(
            &format!("{},{}", a.addr, b.addr),
            &env.path("agent"),
            AgentSpec {
                listen: "0.0.0.0:5051".into(),
                token: Some(TOKEN.into()),
                host: Some(lan[5].clone()),
                ..AgentSpec::default()
            },
        )
        .await;
    a.wait_registered_agents(1).await;
    let app = serde_json::json!({
        "id": "/web",
        "cmd": format!("exec {STRATA} web --port $PORT0 --bind 0.0.0.0"),
        "instances": 1, "cpus": 0.25, "mem": 64,
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 30,
            "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 2}]
    });
    let (code, _, v) = crate::services::request(&a, "POST", "/v2/apps", Some(app)).await;
    assert_eq!(code, 201, "{v}");
    let task = crate::services::settled(&a, "/web", 1).await["tasks"][0]["id"].clone();

    // One etcd member dies: the leader keeps leading and writing.
    drop(etcd.remove(0));
    let (code, _, v) = crate::services::request(
        &a,
        "PUT",
        "/v2/apps/web",
        Some(serde_json::json!({"instances": 2})),
    )
    .await;
    // While etcd elects a new raft leader a write may time out: the API
    // says so (503) and the change is stored when it can be.
    assert!(
        code == 200 || code == 503,
        "a write with one etcd member gone: {code} {v}"
    );
    crate::services::settled(&a, "/web", 2).await;
    assert!(a.leads().await, "the leader kept its lease on two members");

    // The leader dies: the standby leads on the two members left, with the
    // app (scaled to two: the write landed) and its running instances (the
    // first one among them).
    a.proc.signal(libc::SIGKILL);
    wait_until("the standby leads", LONG, async || b.leads().await).await;
    b.wait_registered_agents(1).await;
    let after = crate::services::settled(&b, "/web", 2).await;
    let ids: Vec<&serde_json::Value> = after["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert!(ids.contains(&&task), "{after}");
}
