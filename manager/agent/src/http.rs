//! The agent's HTTP API (axum):
//!
//! * `GET /health`: `{"status":"ok","agent_id":…,"registered":…,"cgroups":…,"tasks":N}`
//!   (never needs the token);
//! * `GET /v1/tasks`: the tasks the agent holds, with their state;
//! * `GET /v1/sandbox/{framework_id}/{task_id}/{file}?offset=&length=`: raw
//!   bytes of a file directly in a task's sandbox (`stdout`, `stderr` …), at
//!   most 4 MiB per request, with the file's size in `x-strata-file-size`;
//! * `GET /metrics`: Prometheus text.
//!
//! When a token is configured every route but `/health` requires
//! `authorization: Bearer <token>` (401 otherwise).

use super::core::{Shared, TaskSummary};
use super::layout::{validate_file_name, validate_id};
use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use strata_proto::ids::{FrameworkId, TaskId};

/// The most bytes one sandbox read returns.
pub const MAX_READ_BYTES: u64 = 4 * 1024 * 1024;

/// The response header carrying a sandbox file's total size.
pub const FILE_SIZE_HEADER: &str = "x-strata-file-size";

/// The API's routes over the shared state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/tasks", get(tasks))
        .route("/v1/usage", get(usage))
        .route(
            "/v1/sandbox/{framework_id}/{task_id}/{file}",
            get(sandbox_file),
        )
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

async fn auth(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(token) = &shared.token
        && request.uri().path() != "/health"
    {
        let expected = strata_proto::bearer(token);
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !strata_proto::same_secret(given, &expected) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    next.run(request).await
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let link = shared.link.borrow().clone();
    let agent_id = link.agent_id.as_ref().map(|a| a.to_string());
    let tasks = shared.tasks.lock().map(|t| t.len()).unwrap_or(0);
    axum::Json(serde_json::json!({
        "status": "ok",
        "agent_id": agent_id,
        "registered": link.registered,
        "cgroups": shared.cgroups,
        "tasks": tasks,
    }))
    .into_response()
}

async fn tasks(State(shared): State<Arc<Shared>>) -> Response {
    let list: Vec<TaskSummary> = shared.tasks.lock().map(|t| t.clone()).unwrap_or_default();
    axum::Json(list).into_response()
}

/// What running tasks used over the last sampling interval.
async fn usage(State(shared): State<Arc<Shared>>) -> Response {
    let list = shared.usage.lock().map(|u| u.clone()).unwrap_or_default();
    axum::Json(list).into_response()
}

/// Query of a sandbox read.
#[derive(Debug, Deserialize)]
struct ReadQuery {
    offset: Option<u64>,
    length: Option<u64>,
}

async fn sandbox_file(
    State(shared): State<Arc<Shared>>,
    UrlPath((framework_id, task_id, file)): UrlPath<(FrameworkId, TaskId, String)>,
    Query(q): Query<ReadQuery>,
) -> Response {
    if let Err(e) = validate_id("framework", framework_id.as_str())
        .and_then(|()| validate_id("task", task_id.as_str()))
        .and_then(|()| validate_file_name(&file))
    {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let path = shared
        .layout
        .sandbox_dir(&framework_id, &task_id)
        .join(&file);
    let offset = q.offset.unwrap_or(0);
    let length = q.length.unwrap_or(MAX_READ_BYTES).min(MAX_READ_BYTES);
    let read = tokio::task::spawn_blocking(move || read_range(&path, offset, length)).await;
    match read {
        Ok(Ok((size, bytes))) => {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(FILE_SIZE_HEADER, HeaderValue::from(size));
            (StatusCode::OK, headers, bytes).into_response()
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => error(
            StatusCode::NOT_FOUND,
            format!(
                "no file {file:?} in the sandbox of task {:?}",
                task_id.as_str()
            ),
        ),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Reads up to `length` bytes at `offset` of a regular file (never through
/// a symlink); returns the file's size and the bytes.
fn read_range(path: &std::path::Path, offset: u64, length: u64) -> std::io::Result<(u64, Vec<u8>)> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "the file is a symlink")
            } else {
                e
            }
        })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let size = meta.len();
    if offset >= size {
        return Ok((size, Vec::new()));
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(length.min(size - offset) as usize);
    f.take(length).read_to_end(&mut buf)?;
    Ok((size, buf))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut by_state: BTreeMap<String, usize> = [
        "TASK_STAGING",
        "TASK_RUNNING",
        "TASK_FINISHED",
        "TASK_FAILED",
        "TASK_KILLED",
        "TASK_ERROR",
    ]
    .into_iter()
    .map(|s| (s.to_owned(), 0))
    .collect();
    if let Ok(tasks) = shared.tasks.lock() {
        for t in tasks.iter() {
            *by_state.entry(t.state.clone()).or_default() += 1;
        }
    }
    let mut out = String::new();
    writeln!(
        out,
        "# HELP strata_agent_tasks Tasks held by the agent, by latest state."
    )
    .ok();
    writeln!(out, "# TYPE strata_agent_tasks gauge").ok();
    for (state, n) in &by_state {
        writeln!(out, "strata_agent_tasks{{state=\"{state}\"}} {n}").ok();
    }
    let gauges = [
        (
            "strata_agent_status_updates_pending",
            "Status updates not yet acknowledged.",
            shared.pending_updates.load(Ordering::Relaxed) as u64,
        ),
        (
            "strata_agent_registered",
            "Whether the agent is registered with the manager.",
            u64::from(shared.link.borrow().registered),
        ),
        (
            "strata_agent_cgroups",
            "Whether task limits are enforced with cgroup v2.",
            u64::from(shared.cgroups),
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory of the agent process.",
            super::process::self_rss_bytes().unwrap_or(0),
        ),
    ];
    for (name, help, value) in gauges {
        writeln!(out, "# HELP {name} {help}").ok();
        writeln!(out, "# TYPE {name} gauge").ok();
        writeln!(out, "{name} {value}").ok();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use tower::ServiceExt;

    fn shared(dir: &std::path::Path, token: Option<&str>) -> Arc<Shared> {
        let (link, _) = tokio::sync::watch::channel(Default::default());
        Arc::new(Shared {
            link,
            cgroups: false,
            tasks: Mutex::new(vec![TaskSummary {
                framework_id: "fw".into(),
                task_id: "t1".into(),
                name: "web".into(),
                state: "TASK_RUNNING".into(),
                pid: Some(42),
                pending_updates: 1,
                sandbox: None,
            }]),
            usage: Mutex::new(Vec::new()),
            pending_updates: AtomicUsize::new(1),
            layout: Layout::new(dir),
            token: token.map(str::to_owned),
        })
    }

    async fn get(app: &Router, uri: &str, auth: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = axum::http::Request::builder().uri(uri);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    #[tokio::test]
    async fn token_guards_everything_but_health() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(shared(dir.path(), Some("s3cret")));
        let (s, _, body) = get(&app, "/health", None).await;
        assert_eq!(s, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["cgroups"], false);
        assert_eq!(v["tasks"], 1);
        assert_eq!(
            get(&app, "/v1/tasks", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(&app, "/metrics", Some("Bearer nope")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (s, _, body) = get(&app, "/v1/tasks", Some("Bearer s3cret")).await;
        assert_eq!(s, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v[0]["state"], "TASK_RUNNING");
        assert_eq!(v[0]["pid"], 42);
    }

    #[tokio::test]
    async fn sandbox_files_are_served_in_ranges_without_traversal() {
        let dir = tempfile::tempdir().unwrap();
        let sb = Layout::new(dir.path()).sandbox_dir(&"fw".into(), &"t1".into());
        std::fs::create_dir_all(&sb).unwrap();
        std::fs::write(sb.join("stdout"), b"hello world").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), sb.join("link")).unwrap();
        let app = router(shared(dir.path(), None));

        let (s, h, body) = get(&app, "/v1/sandbox/fw/t1/stdout", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, b"hello world");
        assert_eq!(h[FILE_SIZE_HEADER], "11");
        let (_, _, body) = get(&app, "/v1/sandbox/fw/t1/stdout?offset=6&length=3", None).await;
        assert_eq!(body, b"wor");
        let (s, h, body) = get(&app, "/v1/sandbox/fw/t1/stdout?offset=50", None).await;
        assert_eq!((s, body.len()), (StatusCode::OK, 0));
        assert_eq!(h[FILE_SIZE_HEADER], "11");
        assert_eq!(
            get(&app, "/v1/sandbox/fw/t1/stderr", None).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&app, "/v1/sandbox/fw/nope/stdout", None).await.0,
            StatusCode::NOT_FOUND
        );
        for bad in [
            "/v1/sandbox/fw/t1/..",
            "/v1/sandbox/fw/t1/%2e%2e",
            "/v1/sandbox/fw/..%2F..%2Fsecret/x",
            "/v1/sandbox/fw/t1/link",
            "/v1/sandbox/fw/t1/stdout?offset=-1",
        ] {
            let s = get(&app, bad, None).await.0;
            assert!(
                s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
                "{bad}: {s}"
            );
        }
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(shared(dir.path(), None));
        let (s, _, body) = get(&app, "/metrics", None).await;
        assert_eq!(s, StatusCode::OK);
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains("strata_agent_tasks{state=\"TASK_RUNNING\"} 1"),
            "{text}"
        );
        assert!(text.contains("strata_agent_tasks{state=\"TASK_FAILED\"} 0"));
        assert!(text.contains("strata_agent_status_updates_pending 1"));
        assert!(text.contains("strata_agent_registered 0"));
        assert!(text.contains("process_resident_memory_bytes "));
    }
}
