//! The client commands: `strata run`, `strata status`, `strata local` with
//! its discovery file, and the shared token.

use std::time::{Duration, Instant};

use strata_manager::master::view::StateView;
use strata_sdk::{Scheduler, SdkError};

use crate::harness::{Env, LONG, ManagerSpec, framework_config, http, wait_for, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_output_and_exit_code() {
    let env = Env::new("run");
    let m = env.start_manager(ManagerSpec::default()).await;

    // No agent yet: waits --wait, then says so.
    let started = Instant::now();
    let out = env
        .cli(&["run", "--manager", &m.addr, "--wait", "1s", "--", "true"])
        .await;
    assert_ne!(out.code(), Some(0), "{out:?}");
    assert!(out.stderr.contains("no agent registered"), "{out:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(20),
        "--wait 1s took {took:?}"
    );

    let _agent = env.start_agent(&m.addr, &env.path("agent"), None).await;
    m.wait_registered_agents(1).await;

    let out = env
        .cli(&[
            "run",
            "--manager",
            &m.addr,
            "--",
            "sh",
            "-c",
            "echo hi; echo err >&2; exit 3",
        ])
        .await;
    assert_eq!(out.stdout, "hi\n", "{out:?}");
    assert!(out.stderr.contains("err"), "{out:?}");
    assert_eq!(out.code(), Some(3), "{out:?}");

    let out = env.cli(&["run", "--manager", &m.addr, "--", "true"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");

    // One argument runs through `sh -c`.
    let out = env
        .cli(&["run", "--manager", &m.addr, "--", "echo one; exit 0"])
        .await;
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (Some(0), "one\n"),
        "{out:?}"
    );

    // An ask no agent could ever hold is refused at once.
    let started = Instant::now();
    let out = env
        .cli(&["run", "--manager", &m.addr, "--cpus", "64", "--", "true"])
        .await;
    assert_ne!(out.code(), Some(0), "{out:?}");
    assert!(out.stderr.contains("no agent could ever hold"), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an impossible ask took {:?} to be refused",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_discovery_and_status() {
    let env = Env::new("local");
    let work = env.path("local");
    let work = work.display().to_string();
    let mut local = env.spawn(
        "local",
        &[
            "local",
            "--agents",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
            &work,
            "--resources",
            "cpus:3;mem:3072;ports:[31000-31299]",
        ],
    );
    let discovery = env.home().join("local.json");
    let d: serde_json::Value = wait_for("the discovery file", LONG, async || {
        let bytes = std::fs::read(&discovery).ok()?;
        serde_json::from_slice(&bytes).ok()
    })
    .await;
    assert_eq!(d["pid"].as_i64(), Some(i64::from(local.pid())), "{d}");
    let address = d["address"].as_str().expect("address").to_owned();
    assert!(address.starts_with("127.0.0.1:"), "{d}");
    // It says where things listen.
    local.wait_stdout("Ctrl-C stops it", LONG).await;
    let printed = local.stdout_text();
    assert!(
        printed.contains(&format!("manager  {address}")),
        "{printed}"
    );
    assert!(
        printed.contains("agent 0") && printed.contains("agent 1"),
        "{printed}"
    );
    assert!(
        printed.contains(&discovery.display().to_string()),
        "{printed}"
    );

    // Client commands elsewhere, with only STRATA_HOME to go by.
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = env.cli_in(&elsewhere, &["status", "--json"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let state: StateView = serde_json::from_str(&out.stdout).expect("status --json is the state");
    let registered = state
        .agents
        .iter()
        .filter(|a| a.state == "registered")
        .count();
    assert_eq!(registered, 2, "{:#?}", state.agents);

    let out = env.cli_in(&elsewhere, &["status"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout
            .starts_with(&format!("Leader m1 at {address} (epoch 1), leading since ")),
        "{out:?}"
    );
    assert!(out.stdout.contains("Agents (2)"), "{out:?}");
    assert_eq!(out.stdout.matches("registered").count(), 2, "{out:?}");

    let out = env.cli_in(&elsewhere, &["run", "--", "echo hi"]).await;
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (Some(0), "hi\n"),
        "{out:?}"
    );

    local.signal(libc::SIGINT);
    let status = local.wait_exit(LONG).await;
    assert_eq!(status.code(), Some(0), "strata local exited {status}");
    assert!(!discovery.exists(), "local.json is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_enforced() {
    let env = Env::new("token");
    let m = env
        .start_manager(ManagerSpec {
            token: Some("s3cret".into()),
            ..Default::default()
        })
        .await;

    // HTTP.
    assert_eq!(http("GET", &m.addr, "/health", None, None).await.0, 200);
    for path in ["/api/v1/state", "/api/v1/agents", "/metrics"] {
        assert_eq!(
            http("GET", &m.addr, path, None, None).await.0,
            401,
            "{path}"
        );
        assert_eq!(
            http("GET", &m.addr, path, Some("wrong"), None).await.0,
            401,
            "{path}"
        );
        assert_eq!(
            http("GET", &m.addr, path, Some("s3cret"), None).await.0,
            200,
            "{path}"
        );
    }

    // strata status.
    let out = env.cli(&["status", "--manager", &m.addr]).await;
    assert_ne!(out.code(), Some(0), "{out:?}");
    assert!(out.stderr.contains("401"), "{out:?}");
    let out = env
        .cli(&["status", "--manager", &m.addr, "--token", "s3cret"])
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("Agents (0)"), "{out:?}");

    // A framework without the token.
    let err = Scheduler::subscribe(framework_config(&m.addr, "no-token"))
        .await
        .expect_err("a framework without the token subscribed");
    assert!(matches!(err, SdkError::Unauthenticated { .. }), "{err:?}");

    // An agent with a wrong token is refused, and keeps being refused.
    let mut bad = env
        .start_agent(&m.addr, &env.path("bad-agent"), Some("wrong"))
        .await;
    bad.proc
        .wait_stderr("the manager refused the agent stream", LONG)
        .await;
    assert!(bad.proc.stderr_text().contains("Unauthenticated"));
    assert!(m.state().await.agents.is_empty());

    // The right token registers.
    let good = env
        .start_agent(&m.addr, &env.path("good-agent"), Some("s3cret"))
        .await;
    let agents = m.wait_registered_agents(1).await;
    assert_eq!(agents[0].address, good.addr);
    // The bad agent retried meanwhile and is still not registered.
    wait_until("a second refusal of the bad agent", LONG, async || {
        bad.proc
            .stderr_text()
            .matches("the manager refused the agent stream")
            .count()
            >= 2
    })
    .await;
    let state = m.state().await;
    assert_eq!(state.agents.len(), 1, "{:#?}", state.agents);
    assert_eq!(state.agents[0].address, good.addr);

    // With the token, clients work against the cluster.
    let out = env
        .cli(&[
            "run",
            "--manager",
            &m.addr,
            "--token",
            "s3cret",
            "--",
            "echo with-token",
        ])
        .await;
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (Some(0), "with-token\n"),
        "{out:?}"
    );
}

/// `strata run --id`: a run tried again is never run twice. Tried again
/// after it ended, it says so (exit 3); tried again while it runs (the
/// first client killed), it follows the task the first try launched to its
/// end and prints its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_an_id_runs_once_however_often_it_is_tried() {
    let env = Env::new("run-id");
    let m = env.start_manager(ManagerSpec::default()).await;
    let agent = env.start_agent(&m.addr, &env.path("agent"), None).await;
    m.wait_registered_agents(1).await;
    let launches = |id: &str| {
        let needle = format!("task_id={id} ");
        agent
            .proc
            .stderr_text()
            .lines()
            .filter(|l| l.contains("task launched") && l.contains(&needle))
            .count()
    };

    let run = ["run", "--manager", &m.addr, "--id", "once", "--", "echo hi"];
    let out = env.cli(&run).await;
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (Some(0), "hi\n"),
        "{out:?}"
    );
    let again = env.cli(&run).await;
    assert_eq!(again.code(), Some(3), "{again:?}");
    assert!(again.stderr.contains("ended before"), "{again:?}");
    assert_eq!(launches("once"), 1);

    // The first client dies while its task runs: the retry follows it.
    let slow = [
        "run",
        "--manager",
        &m.addr,
        "--id",
        "slow",
        "--",
        "sleep 2; echo done",
    ];
    let mut first = env.spawn("first-try", &slow);
    wait_until("the first try's task runs", LONG, async || {
        m.task("slow")
            .await
            .is_some_and(|t| t.state == "TASK_RUNNING")
    })
    .await;
    first.kill9();
    let out = env.cli(&slow).await;
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (Some(0), "done\n"),
        "{out:?}"
    );
    assert_eq!(launches("slow"), 1);

    // A bad id is refused before anything is launched.
    let out = env
        .cli(&[
            "run",
            "--manager",
            &m.addr,
            "--id",
            "no/slash",
            "--",
            "true",
        ])
        .await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("--id"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_are_created_listed_used_and_revoked_from_the_cli() {
    let env = Env::new("cli-principals");
    let m = env
        .start_manager(ManagerSpec {
            token: Some("root-secret".into()),
            ..ManagerSpec::default()
        })
        .await;
    let cli = |args: &[&str]| {
        let mut all = vec!["principals", "--manager", m.addr.as_str(), "--token"];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = async |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.cli(&refs).await
    };
    let out = run(cli(&["root-secret", "add", "etl"])).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let token = out.stdout.trim().to_owned();
    assert!(token.starts_with("etl."), "{token}");
    // The principal's token reads the cluster; it manages no principals.
    let state = env
        .cli(&["status", "--manager", &m.addr, "--token", &token])
        .await;
    assert_eq!(state.code(), Some(0), "{}", state.stderr);
    let out = run(cli(&[&token, "add", "x"])).await;
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    let out = run(cli(&["root-secret", "add", "etl"])).await;
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("exists"), "{}", out.stderr);
    let out = run(cli(&["root-secret"])).await;
    assert!(out.stdout.contains("etl"), "{}", out.stdout);
    assert!(!out.stdout.contains(&token[4..]), "no secret listed");
    let out = run(cli(&["root-secret", "revoke", "etl"])).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let state = env
        .cli(&["status", "--manager", &m.addr, "--token", &token])
        .await;
    assert_ne!(state.code(), Some(0), "a revoked token is refused");
}
