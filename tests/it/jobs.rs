//! `strata submit` and `strata jobs` on a real cluster: a job's driver runs
//! as a task, takes the submitting framework over, runs a SQL script on
//! executors, records its progress in `job.json`; jobs are listed, cancelled,
//! survive (or not) a `kill -9` of their driver.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// `strata submit` with small driver and executors, then `extra`.
pub(crate) fn submit_args<'a>(m: &'a Manager, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "submit",
        "--manager",
        &m.addr,
        "--executors",
        "2",
        "--executor-cpus",
        "1",
        "--executor-mem",
        "256",
        "--driver-cpus",
        "0.25",
        "--driver-mem",
        "128",
    ];
    args.extend_from_slice(extra);
    args
}

/// Writes `people.csv` and a script over it; returns the script's path.
fn people_script(env: &Env, file: &str, query: &str) -> String {
    let csv = env.path("people.csv");
    std::fs::write(&csv, "name,age\nada,36\nalan,41\ngrace,85\n").unwrap();
    let sql = format!(
        "CREATE EXTERNAL TABLE people STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true');\n{query}\n",
        csv.display()
    );
    let path = env.path(file);
    std::fs::write(&path, sql).unwrap();
    path.display().to_string()
}

/// A script that runs for a while: a count over a `ways`-way cross join
/// of a table of `rows` numbers (`rows^ways` rows; a billion take some
/// seconds).
fn slow_script(env: &Env, file: &str, rows: u32, ways: usize) -> String {
    let csv = env.path(&format!("numbers{rows}.csv"));
    let mut body = String::from("n\n");
    for i in 0..rows {
        body.push_str(&format!("{i}\n"));
    }
    std::fs::write(&csv, body).unwrap();
    let tables: Vec<String> = (0..ways).map(|i| format!("numbers t{i}")).collect();
    let sum: Vec<String> = (0..ways).map(|i| format!("t{i}.n")).collect();
    let sql = format!(
        "CREATE EXTERNAL TABLE numbers STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true');\n\
         SELECT count(*) AS n FROM {} WHERE {} >= 0;\n",
        csv.display(),
        tables.join(", "),
        sum.join(" + ")
    );
    let path = env.path(file);
    std::fs::write(&path, sql).unwrap();
    path.display().to_string()
}

/// A script that runs far longer than the tests that kill it.
fn endless_script(env: &Env) -> String {
    slow_script(env, "endless.sql", 500, 4)
}

/// Every job, as `strata jobs --all --json` reports them.
async fn jobs(env: &Env, m: &Manager) -> Vec<Value> {
    let out = env
        .cli(&["jobs", "--manager", &m.addr, "--all", "--json"])
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The job `id`, as `strata jobs` reports it.
async fn job(env: &Env, m: &Manager, id: &str) -> Option<Value> {
    jobs(env, m).await.into_iter().find(|j| j["id"] == id)
}

/// Waits until job `id` satisfies `cond`; returns it.
async fn wait_job(
    env: &Env,
    m: &Manager,
    id: &str,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(&format!("job {id}: {what}"), timeout, async || {
        job(env, m, id).await.filter(|j| cond(j))
    })
    .await
}

/// Running, with its query's tasks launched.
fn running_its_query(j: &Value) -> bool {
    j["state"] == "running" && j["tasks"].as_u64().unwrap_or(0) > 0
}

/// Waits until the manager holds no active task of framework `fid`.
async fn wait_no_tasks(m: &Manager, fid: &str, timeout: Duration) {
    wait_until(&format!("no task of {fid} left"), timeout, async || {
        m.state().await.tasks.iter().all(|t| t.framework_id != fid)
    })
    .await;
}

/// The job id in `submitted job <id>` of a `--wait` submission's stderr.
fn submitted_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.split("submitted job ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job id in {stderr}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_prints_the_results_and_the_job_is_listed_as_succeeded() {
    let env = Env::new("jobs-wait");
    let (m, _agents) = env.start_cluster(2).await;
    let script = people_script(
        &env,
        "people.sql",
        "SELECT name, age FROM people WHERE age > 40 ORDER BY age;",
    );
    let out = env
        .cli(&submit_args(&m, &["--wait", "--format", "csv", &script]))
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "name,age\nalan,41\ngrace,85\n");
    let id = submitted_id(&out.stderr);
    assert!(id.starts_with("job-"), "{id}");

    let j = job(&env, &m, &id).await.expect("the job is listed");
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["name"], "people", "{j}");
    assert!(j["stages"].as_u64().unwrap() >= 1, "{j}");
    assert_eq!(j["tasks_done"], j["tasks"], "{j}");
    assert_eq!(j["restarts"], 0, "{j}");
    let table = env.cli(&["jobs", "--manager", &m.addr]).await;
    assert_eq!(table.code(), Some(0), "{}", table.stderr);
    let row = table
        .stdout
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{id} not in\n{}", table.stdout));
    assert!(row.contains("succeeded") && row.contains("people"), "{row}");
    // Its driver and executors are gone, their resources returned.
    let fid = j["framework_id"].as_str().unwrap().to_owned();
    wait_no_tasks(&m, &fid, LONG).await;

    // A packaged job, with its arguments after its name.
    let text = env.path("words.txt");
    std::fs::write(&text, "The cat saw the dog.\nthe end\n").unwrap();
    let text = text.display().to_string();
    let out = env
        .cli(&submit_args(
            &m,
            &["--wait", "--format", "csv", "wordcount", &text],
        ))
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "word,count\nthe,3\ncat,1\ndog,1\nend,1\nsaw,1\n"
    );
    let j = job(&env, &m, &submitted_id(&out.stderr)).await.unwrap();
    assert_eq!(
        (&j["state"], &j["name"]),
        (&"succeeded".into(), &"wordcount".into()),
        "{j}"
    );

    // Clear errors, nothing started.
    let out = env.cli(&submit_args(&m, &["wordcount-nope"])).await;
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .contains("unknown job \"wordcount-nope\"; packaged jobs:"),
        "{}",
        out.stderr
    );
    let missing = env.path("missing.sql").display().to_string();
    let out = env.cli(&submit_args(&m, &[&missing])).await;
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);
    let out = env.cli(&submit_args(&m, &["./a.out"])).await;
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("cannot read ./a.out"), "{}", out.stderr);
    // A script over 128 KiB (what one environment variable may hold)
    // reaches the driver split over several; one over 1 MiB is refused.
    let comment = format!("-- {}\n", "x".repeat(1000));
    let script = std::fs::read_to_string(people_script(
        &env,
        "count.sql",
        "SELECT count(*) AS n FROM people;",
    ))
    .unwrap();
    let big = env.path("big.sql");
    std::fs::write(&big, format!("{}{script}", comment.repeat(300))).unwrap();
    let big = big.display().to_string();
    let out = env
        .cli(&submit_args(&m, &["--wait", "--format", "csv", &big]))
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "n\n3\n");
    let huge = env.path("huge.sql");
    std::fs::write(&huge, format!("{}{script}", comment.repeat(1100))).unwrap();
    let out = env
        .cli(&submit_args(&m, &[&huge.display().to_string()]))
        .await;
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("at most 1048576 bytes"),
        "{}",
        out.stderr
    );
    // A failing script: exit 1, the error shown and recorded.
    let bad = people_script(&env, "bad.sql", "SELECT height FROM people;");
    let out = env.cli(&submit_args(&m, &["--wait", &bad])).await;
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("height"), "{}", out.stderr);
    let j = job(&env, &m, &submitted_id(&out.stderr)).await.unwrap();
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["error"].as_str().unwrap().contains("height"), "{j}");
    wait_until("every task gone", LONG, async || {
        m.state().await.tasks.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_listed_and_cancelled() {
    let env = Env::new("jobs-cancel");
    let (m, _agents) = env.start_cluster(2).await;
    let script = endless_script(&env);
    let out = env.cli(&submit_args(&m, &[&script])).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let id = out.stdout.trim().to_owned();
    assert!(id.starts_with("job-"), "{}", out.stdout);
    let j = wait_job(&env, &m, &id, "running its query", LONG, running_its_query).await;
    let fid = j["framework_id"].as_str().unwrap().to_owned();
    let table = env.cli(&["jobs", "--manager", &m.addr]).await;
    let row = table
        .stdout
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{id} not in\n{}", table.stdout));
    assert!(row.contains("running") && row.contains("endless"), "{row}");

    let out = env
        .cli(&["jobs", "cancel", &id, "--manager", &m.addr])
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), format!("cancelled {id}"));
    // The driver and its executors are killed; their resources return.
    wait_no_tasks(&m, &fid, LONG).await;
    wait_until("the cluster's resources all free", LONG, async || {
        m.state()
            .await
            .agents
            .iter()
            .all(|a| a.cpus_allocated == 0.0 && a.mem_allocated == 0.0)
    })
    .await;
    let j = wait_job(&env, &m, &id, "cancelled", LONG, |j| {
        j["state"] == "cancelled"
    })
    .await;
    assert!(j["error"].is_string(), "{j}");
    assert!(
        m.state().await.frameworks.iter().all(|f| f.id != fid),
        "the framework is gone"
    );

    // Cancelling again, or an unknown job, fails clearly.
    let out = env
        .cli(&["jobs", "cancel", &id, "--manager", &m.addr])
        .await;
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("already ended"), "{}", out.stderr);
    let out = env
        .cli(&["jobs", "--manager", &m.addr, "cancel", "job-nope"])
        .await;
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("unknown job \"job-nope\""),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_driver_is_killed_fails_and_its_executors_end() {
    let env = Env::new("jobs-kill");
    let (m, _agents) = env.start_cluster(2).await;
    let script = endless_script(&env);
    // The framework outlives its driver by 2 s: then its executors are killed.
    let out = env
        .cli(&submit_args(&m, &["--failover-timeout", "2s", &script]))
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let id = out.stdout.trim().to_owned();
    let j = wait_job(&env, &m, &id, "running its query", LONG, running_its_query).await;
    let fid = j["framework_id"].as_str().unwrap().to_owned();
    let executors = m
        .state()
        .await
        .tasks
        .iter()
        .filter(|t| t.framework_id == fid && t.id != id)
        .count();
    assert_eq!(executors, 2, "two executors run");
    let pids = env.task_processes(&id);
    assert!(!pids.is_empty(), "the driver's process");
    for pid in pids {
        signal(pid, libc::SIGKILL);
    }
    let j = wait_job(&env, &m, &id, "failed", LONG, |j| j["state"] == "failed").await;
    // The driver's end (killed by a signal) may reach the manager after
    // the framework's failover timeout has already killed the task.
    let error = j["error"].as_str().unwrap();
    assert!(
        error.contains("without recording an outcome")
            && (error.contains("TASK_FAILED") || error.contains("FAILOVER_TIMEOUT")),
        "{j}"
    );
    wait_no_tasks(&m, &fid, LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_driver_killed_once_is_restarted_and_the_job_succeeds() {
    let env = Env::new("jobs-supervise");
    let (m, _agents) = env.start_cluster(2).await;
    let script = slow_script(&env, "slow.sql", 1000, 3);
    let args = submit_args(&m, &["--supervise", "--wait", "--format", "csv", &script]);
    let mut submit = env.spawn("submit", &args);
    let line = submit.wait_stderr("submitted job ", LONG).await;
    let id = submitted_id(&line);
    wait_job(&env, &m, &id, "running its query", LONG, running_its_query).await;
    // The driver is the child of the supervising process.
    let drivers: Vec<i32> = env
        .task_processes(&id)
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
            cmdline.contains("job-driver") && !cmdline.contains("--supervise")
        })
        .collect();
    assert_eq!(drivers.len(), 1, "one driver process");
    signal(drivers[0], libc::SIGKILL);
    let status = submit.wait_exit(Duration::from_secs(120)).await;
    assert!(status.success(), "{}", submit.stderr_text());
    assert_eq!(submit.stdout_text(), "n\n1000000000\n");
    let j = job(&env, &m, &id).await.unwrap();
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["restarts"], 1, "{j}");
    let fid = j["framework_id"].as_str().unwrap().to_owned();
    wait_no_tasks(&m, &fid, LONG).await;
}

/// The example job binary (`jobs/examples/letters.rs`): counts letters
/// with a mapper that `strata` itself does not know.
const LETTERS: &str = env!("CARGO_BIN_EXE_strata-letters");

/// Serves `file` over HTTP at `/bin/<name>` (404 elsewhere); returns the
/// address and a count of the downloads served.
async fn serve_binary(
    file: &str,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let body = std::sync::Arc::new(std::fs::read(file).unwrap());
    let name = std::path::Path::new(file)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let served = std::sync::Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let server = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (body, name, count) = (body.clone(), name.clone(), count.clone());
            tokio::spawn(async move {
                let (r, mut w) = conn.into_split();
                let mut lines = BufReader::new(r).lines();
                let Ok(Some(request)) = lines.next_line().await else {
                    return;
                };
                while let Ok(Some(l)) = lines.next_line().await {
                    if l.is_empty() {
                        break;
                    }
                }
                let wanted = format!("GET /bin/{name} ");
                if request.starts_with(&wanted) {
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = w.write_all(head.as_bytes()).await;
                    let _ = w.write_all(&body).await;
                    count.fetch_add(1, Ordering::SeqCst);
                } else {
                    let _ = w
                        .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        .await;
                }
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, served, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_binary_runs_as_its_own_driver_and_executors() {
    let env = Env::new("jobs-binary");
    let (m, _agents) = env.start_cluster(2).await;
    let text = env.path("letters.txt");
    std::fs::write(&text, "Abc, ab!\nA\n\ncab\n").unwrap();
    let text = text.display().to_string();
    let expected = "letter,count\na,4\nb,3\nc,2\n";

    // By itself, with in-process executors.
    let local = tokio::process::Command::new(LETTERS)
        .args(["--format", "csv", &text])
        .output()
        .await
        .unwrap();
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&local.stdout), expected);

    // Submitted by path: the agents copy it into the driver's sandbox and
    // every executor's. The mapper exists only in the binary, so executors
    // that were `strata` would fail the job.
    let out = env
        .cli(&submit_args(
            &m,
            &["--wait", "--format", "csv", LETTERS, &text],
        ))
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, expected);
    let j = job(&env, &m, &submitted_id(&out.stderr)).await.unwrap();
    assert_eq!(
        (&j["state"], &j["name"]),
        (&"succeeded".into(), &"strata-letters".into()),
        "{j}"
    );

    // Submitted by URL: fetched over HTTP by the driver's agent and by the
    // executors' (three downloads).
    let (addr, served, server) = serve_binary(LETTERS).await;
    let url = format!("http://{addr}/bin/strata-letters");
    let out = env
        .cli(&submit_args(
            &m,
            &["--wait", "--format", "csv", &url, &text],
        ))
        .await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, expected);
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 3);

    // A URL that cannot be fetched fails the submission clearly.
    let missing = format!("http://{addr}/bin/nope");
    let out = env.cli(&submit_args(&m, &[&missing, &text])).await;
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot fetch") && out.stderr.contains("404"),
        "{}",
        out.stderr
    );
    // So does the job's own usage error, recorded as the job's failure.
    let out = env.cli(&submit_args(&m, &["--wait", LETTERS])).await;
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("usage: strata-letters INPUT"),
        "{}",
        out.stderr
    );
    server.abort();
    wait_until("every task gone", LONG, async || {
        m.state().await.tasks.is_empty()
    })
    .await;
}
