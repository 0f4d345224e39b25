//! The web UI over HTTP on an in-process manager: pages render what the
//! API holds, the job history feeds the job pages, and a token guards the
//! pages behind a login and a cookie. (The browser test is end to end:
//! `tests/it/ui.rs`.)

use serde_json::json;

use super::{Pager, bytes, enc, millis};

use crate::api::test_http::{http, start};

fn report() -> serde_json::Value {
    json!({
        "id": "job-7-abc",
        "framework_id": "m1-0009",
        "driver": "strata-sql",
        "description": "select l_returnflag, count(*) from lineitem group by 1",
        "state": "succeeded",
        "submitted_at": 1_795_556_280_000u64,
        "ended_at": 1_795_556_281_500u64,
        "stages": [
            {"stage": 0, "inputs": [], "partitions": 2, "done": 2, "running": 0, "launched": 3,
             "failed": 0, "recomputed": 0, "speculative": 1, "speculative_wins": 0,
             "rows": 8, "bytes": 4096, "elapsed_ms": 900,
             "operators": [{"depth": 0, "name": "ShuffleWriterExec", "output_rows": 8},
                           {"depth": 1, "name": "AggregateExec: mode=Partial", "output_rows": 8, "elapsed_compute_ns": 3000000}],
             "attempts": [{"partition": 0, "attempt": 0, "executor": "m1-0009-exec-1", "state": "finished", "rows": 4},
                          {"partition": 1, "attempt": 0, "executor": "m1-0009-exec-1", "state": "finished", "rows": 4},
                          {"partition": 1, "attempt": 1, "executor": "m1-0009-exec-2", "state": "cancelled", "speculative": true}]},
            {"stage": 1, "inputs": [0], "partitions": 1, "done": 1, "running": 0, "launched": 1,
             "failed": 0, "recomputed": 0, "speculative": 0, "speculative_wins": 0,
             "rows": 4, "bytes": 512, "elapsed_ms": 100, "operators": [], "attempts": []}
        ],
        "executors": [{"id": "m1-0009-exec-1", "host": "127.0.0.1", "slots": 2, "flight_address": "127.0.0.1:4000"}]
    })
}

#[tokio::test]
async fn pages_show_the_cluster_and_the_job_history() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), None).await;
    let addr = m.address();

    let (status, head, body) = http(addr, "GET", "/", "", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    for id in [
        "id=\"agents\"",
        "id=\"roles\"",
        "id=\"frameworks\"",
        "id=\"classes\"",
    ] {
        assert!(body.contains(id), "{id} missing");
    }
    assert!(body.contains("service"), "the classes are listed");

    // A driver's report, as drivers send it.
    let r = report();
    let (status, _, body) = http(
        addr,
        "PUT",
        "/api/v1/jobs/job-7-abc",
        "Content-Type: application/json\r\n",
        &r.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A report sent to another job's path, or malformed, is refused.
    let (status, _, body) = http(
        addr,
        "PUT",
        "/api/v1/jobs/job-8",
        "Content-Type: application/json\r\n",
        &r.to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("not \\\"job-8\\\""), "{body}");
    let (status, _, _) = http(
        addr,
        "PUT",
        "/api/v1/jobs/job-8",
        "Content-Type: application/json\r\n",
        "{\"id\": 3}",
    )
    .await;
    assert_eq!(status, 400);

    let (status, _, body) = http(addr, "GET", "/api/v1/jobs?state=succeeded", "", "").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["jobs"][0]["partitions_done"], 3);
    let (_, _, body) = http(addr, "GET", "/api/v1/jobs/job-7-abc", "", "").await;
    type Report = strata_proto::jobs::JobReport;
    assert_eq!(
        serde_json::from_str::<Report>(&body).unwrap(),
        serde_json::from_value::<Report>(r.clone()).unwrap()
    );

    let (status, _, body) = http(addr, "GET", "/jobs", "", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("href=\"/jobs/job-7-abc\""), "{body}");
    assert!(body.contains("3 / 3"), "tasks done: {body}");
    let (status, _, body) = http(addr, "GET", "/jobs?state=failed", "", "").await;
    assert_eq!(status, 200);
    assert!(!body.contains("job-7-abc"), "filtered out");

    let (status, _, body) = http(addr, "GET", "/jobs/job-7-abc", "", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("<svg id=\"stage-graph\""), "{body}");
    assert!(body.contains("href=\"/jobs/job-7-abc/stages/1\""));
    assert!(body.contains("AggregateExec: mode=Partial"));
    assert!(body.contains("href=\"/tasks/m1-0009/m1-0009-exec-1\""));
    assert!(body.contains("lineitem group by 1"));

    let (status, _, body) = http(addr, "GET", "/jobs/job-7-abc/stages/0", "", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("id=\"attempts\""));
    assert!(body.contains("speculative"));
    assert!(body.contains("3.00 ms"), "operator compute time: {body}");

    let (status, _, _) = http(addr, "GET", "/jobs/job-7-abc/stages/5", "", "").await;
    assert_eq!(status, 404);
    let (status, _, body) = http(addr, "GET", "/jobs/nope", "", "").await;
    assert_eq!(status, 404);
    assert!(body.contains("no job"), "{body}");

    for page in ["/tasks", "/tasks?state=TASK_RUNNING&page=3", "/services"] {
        let (status, _, body) = http(addr, "GET", page, "", "").await;
        assert_eq!(status, 200, "{page}: {body}");
    }
    let (status, _, _) = http(addr, "GET", "/tasks/fw/t1", "", "").await;
    assert_eq!(status, 404);
    let (status, head, _) = http(addr, "GET", "/ui/strata.css", "", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/css"));
    m.shutdown().await;
}

#[tokio::test]
async fn with_a_token_pages_ask_for_it_and_keep_it_in_a_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path(), Some("s3cret")).await;
    let addr = m.address();

    let (status, head, _) = http(addr, "GET", "/jobs?state=failed", "", "").await;
    assert_eq!(status, 303);
    assert!(
        head.contains("location: /login?next=%2fjobs%3fstate%3dfailed"),
        "{head}"
    );
    let (status, _, body) = http(addr, "GET", "/login?next=/jobs", "", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("type=\"password\""));
    // Assets and the login page need no token; the API still does.
    let (status, _, _) = http(addr, "GET", "/ui/strata.js", "", "").await;
    assert_eq!(status, 200);
    let (status, _, _) = http(addr, "GET", "/api/v1/jobs", "", "").await;
    assert_eq!(status, 401);

    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let (status, head, body) = http(addr, "POST", "/login", form, "token=wrong&next=%2Fjobs").await;
    assert_eq!(status, 401);
    assert!(!head.contains("set-cookie"));
    assert!(body.contains("not the cluster"));
    // Only paths of this server are followed after a login.
    let (status, head, _) = http(
        addr,
        "POST",
        "/login",
        form,
        "token=s3cret&next=%2F%2Fevil.example",
    )
    .await;
    assert_eq!(status, 303);
    assert!(head.lines().any(|l| l.trim() == "location: /"), "{head}");
    let (status, head, _) = http(addr, "POST", "/login", form, "token=s3cret&next=%2Fjobs").await;
    assert_eq!(status, 303);
    assert!(head.contains("location: /jobs"), "{head}");
    assert!(
        head.contains("set-cookie: strata_token=s3cret; path=/; httponly; samesite=strict"),
        "{head}"
    );

    let (status, _, _) = http(addr, "GET", "/", "Cookie: strata_token=s3cret\r\n", "").await;
    assert_eq!(status, 200);
    let (status, _, _) = http(addr, "GET", "/", "Cookie: strata_token=nope\r\n", "").await;
    assert_eq!(status, 303);
    let (status, _, _) = http(addr, "GET", "/", "Authorization: Bearer s3cret\r\n", "").await;
    assert_eq!(status, 200);
    let (status, head, _) = http(addr, "GET", "/logout", "", "").await;
    assert_eq!(status, 303);
    assert!(head.contains("max-age=0"), "{head}");
    m.shutdown().await;
}

#[test]
fn figures_read_as_people_write_them() {
    assert_eq!(bytes(512), "512 B");
    assert_eq!(bytes(1536), "1.5 KiB");
    assert_eq!(bytes(3 << 30), "3.0 GiB");
    assert_eq!(millis(850), "850 ms");
    assert_eq!(millis(12_345), "12.3 s");
    assert_eq!(millis(245_000), "4 min 05 s");
    assert_eq!(enc("/web app?x=1"), "%2Fweb%20app%3Fx%3D1");
}

#[test]
fn a_pager_slices_and_links() {
    let p = Pager::new(Some(2), 250);
    assert_eq!(p.range(), 200..250);
    let links = p.links("/tasks?").into_string();
    assert!(links.contains("href=\"/tasks?page=1\""), "{links}");
    assert!(!links.contains("next"), "{links}");
    assert!(links.contains("201–250 of 250"), "{links}");
    // A page past the end shows the last one.
    assert_eq!(Pager::new(Some(99), 250).range(), 200..250);
    assert_eq!(Pager::new(None, 0).range(), 0..0);
}
