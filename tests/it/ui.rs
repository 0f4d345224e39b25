//! The manager's web UI in a real headless browser (Debian's chromium
//! driven by Selenium): on a cluster with a token, a service app and a
//! finished TPC-H job, every page loads without console errors and shows
//! what the API shows, and the links lead from the job list to a job, a
//! stage, an executor's task and its stderr. Screenshots of each page are
//! kept (in `$STRATA_TEST_ARTIFACTS/ui`, or the test's directory).

use std::path::PathBuf;

use serde_json::Value;
use strata_framework::tpch;

use crate::gateway::{python_check, tpch_ddl};
use crate::harness::*;
use crate::services::{request, settled, web_app};

const TOKEN: &str = "ui-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_follows_a_tpch_job_from_the_job_list_to_an_executors_stderr() {
    let env = Env::new("web-ui");
    let data = env.path("tpch");
    tpch::generate_parquet(0.01, &data).unwrap();
    let m = env
        .start_manager(ManagerSpec {
            token: Some(TOKEN.into()),
            ..ManagerSpec::default()
        })
        .await;
    let _a0 = env
        .start_agent(&m.addr, &env.path("agent0"), Some(TOKEN))
        .await;
    let _a1 = env
        .start_agent(&m.addr, &env.path("agent1"), Some(TOKEN))
        .await;
    m.wait_registered_agents(2).await;

    // A service, healthy.
    let (code, _, v) = request(&m, "POST", "/v2/apps", Some(web_app("/web", 1))).await;
    assert_eq!(code, 201, "{v}");
    settled(&m, "/web", 1).await;

    // A TPC-H query (q3: scans, two joins, an aggregation, a sort) run by
    // `strata sql`, whose driver then exits.
    let script = format!(
        "{};\n{};\n",
        tpch_ddl(&data),
        tpch::statements(3).join(";\n")
    );
    let out = env
        .cli_with_input(
            &[
                "sql",
                "--manager",
                &m.addr,
                "--token",
                TOKEN,
                "--executors",
                "2",
                "--executor-mem",
                "256m",
            ],
            &script,
        )
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);

    // The manager kept the job after its driver left.
    let (code, _, jobs) = request(&m, "GET", "/api/v1/jobs", None).await;
    assert_eq!(code, 200, "{jobs}");
    let job = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|j| j["stages"].as_u64())
        .cloned()
        .unwrap_or_else(|| panic!("no job in the history: {jobs}"));
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(job["stages"].as_u64().unwrap() >= 3, "{job}");
    assert!(
        job["description"].as_str().unwrap().contains("l_orderkey"),
        "{job}"
    );
    let id = job["id"].as_str().unwrap();
    let (_, _, report) = request(&m, "GET", &format!("/api/v1/jobs/{id}"), None).await;
    let stages = report["stages"].as_array().unwrap();
    for s in stages {
        assert_eq!(s["done"], s["partitions"], "{s}");
        let attempts = s["attempts"].as_array().unwrap();
        assert!(attempts.iter().any(|a| a["state"] == "finished"), "{s}");
    }
    // Per-operator metrics came back from the executors: the scans'
    // output rows add up to something.
    let rows: u64 = stages
        .iter()
        .flat_map(|s| s["operators"].as_array().unwrap())
        .filter(|o| o["name"].as_str().unwrap().starts_with("DataSourceExec"))
        .filter_map(|o| o["output_rows"].as_u64())
        .sum();
    assert!(rows > 0, "no scan rows in {report}");
    assert!(!report["executors"].as_array().unwrap().is_empty());

    let shots = match std::env::var_os("STRATA_TEST_ARTIFACTS") {
        Some(dir) => PathBuf::from(dir).join("ui"),
        None => env.path("screenshots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let base = format!("http://{}", m.addr);
    let (status, stdout, stderr) = python_check(
        "ui_browser.py",
        &[&base, TOKEN, &shots.display().to_string(), "/web"],
    )
    .await;
    assert!(status.success(), "{stdout}\n{stderr}");
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(seen["job"], id, "{seen}");
    for page in [
        "login",
        "cluster",
        "tasks",
        "services",
        "jobs",
        "job",
        "stage",
        "task-stderr",
    ] {
        let png = shots.join(format!("{page}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", png.display());
    }
}
