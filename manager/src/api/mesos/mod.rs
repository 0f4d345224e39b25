//! The Mesos v1 scheduler HTTP API, so frameworks written for Mesos run on
//! Strata: `POST /api/v1/scheduler` with JSON calls.
//!
//! A `SUBSCRIBE` is answered `200` with a chunked body of RecordIO-framed
//! JSON events (`<length>\n<json>`…) and the `Mesos-Stream-Id` header; every
//! other call goes on another connection, carries that header and is
//! answered `202 Accepted`. Calls are read into Strata's own protocol
//! (`calls.rs`) and handed to the core exactly as the gRPC `Scheduler`
//! service hands them, and the core's events are written back as Mesos's
//! (`events.rs`): a Mesos framework is just another framework to the
//! master, under DRF, priority classes (its tasks are `batch` unless its
//! framework's or a task's `strata.priority_class` label says otherwise),
//! preemption and revocation.
//!
//! Served calls: SUBSCRIBE, ACCEPT (LAUNCH), DECLINE, ACKNOWLEDGE, KILL,
//! RECONCILE, REVIVE, SUPPRESS, TEARDOWN. Events: SUBSCRIBED, OFFERS,
//! RESCIND, UPDATE, FAILURE, ERROR, HEARTBEAT. Anything else is refused
//! with `400` naming it. Only JSON is spoken (not Mesos's protobuf
//! encoding). With a token configured, a call authenticates with
//! `Authorization: Bearer <token>` or with HTTP Basic whose password is the
//! token (how Mesos libraries send a principal and secret).

mod calls;
mod events;

use std::convert::Infallible;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::inbox::{CoreHandle, Input};
use crate::master::MasterError;

pub use calls::CallError;

/// The Mesos version the API speaks, as `GET /version` reports it.
pub const MESOS_VERSION: &str = "1.11.0";

/// A framework or task label naming the priority class of a Mesos
/// framework's tasks (default `batch`).
pub const MESOS_CLASS_LABEL: &str = "strata.priority_class";

/// The header that ties calls to their subscription.
pub const STREAM_ID_HEADER: &str = "mesos-stream-id";

/// `POST /api/v1/scheduler`.
pub(super) fn routes() -> Router<CoreHandle> {
    Router::new().route("/api/v1/scheduler", post(scheduler))
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

fn bad_call(e: CallError) -> Response {
    text(StatusCode::BAD_REQUEST, e.to_string())
}

/// The core's refusal in Mesos's words: a call from a framework that is
/// not subscribed is forbidden, one on a stale stream is a bad request.
fn refused(e: MasterError) -> Response {
    let status = match &e {
        MasterError::NotSubscribed { .. } | MasterError::FrameworkRemoved { .. } => {
            StatusCode::FORBIDDEN
        }
        MasterError::StaleStream { .. } => StatusCode::BAD_REQUEST,
        other => StatusCode::from_u16(other.http_status()).unwrap_or(StatusCode::CONFLICT),
    };
    text(status, e.to_string())
}

fn shutting_down<T>(_: T) -> Response {
    text(StatusCode::SERVICE_UNAVAILABLE, "manager is shutting down")
}

/// How the event stream is framed for the client: Mesos ≥ 1.2 lets a client
/// ask for `application/recordio` with JSON messages; older ones ask for
/// `application/json` and get RecordIO all the same.
#[derive(Clone, Copy, Debug, PartialEq)]
enum StreamType {
    Json,
    RecordIo,
}

/// Checks that the request is JSON and that JSON is wanted back.
fn check_media(headers: &HeaderMap) -> Result<StreamType, (StatusCode, &'static str)> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let json = |v: &str| v.contains("application/json") || v.contains("*/*");
    if let Some(ct) = headers.get(header::CONTENT_TYPE)
        && !ct.to_str().is_ok_and(json)
    {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Strata's Mesos API reads application/json only (not protobuf)",
        ));
    }
    let accept = value(header::ACCEPT.as_str());
    if accept.is_some_and(|a| a.contains("application/recordio")) {
        return if value("message-accept").is_none_or(json) {
            Ok(StreamType::RecordIo)
        } else {
            Err((
                StatusCode::NOT_ACCEPTABLE,
                "Strata's Mesos API frames JSON messages only (Message-Accept: application/json)",
            ))
        };
    }
    if accept.is_some_and(|a| !json(a)) {
        return Err((
            StatusCode::NOT_ACCEPTABLE,
            "Strata's Mesos API answers application/json only (not protobuf)",
        ));
    }
    Ok(StreamType::Json)
}

async fn scheduler(
    State(core): State<CoreHandle>,
    subject: Option<axum::Extension<crate::auth::acl::Subject>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let stream_type = match check_media(&headers) {
        Ok(t) => t,
        Err((status, message)) => return text(status, message),
    };
    let call = match calls::parse(&body) {
        Ok(c) => c,
        Err(e) => return bad_call(e),
    };
    let subject = subject.map_or(crate::auth::acl::Subject::Anonymous, |s| s.0);
    if call.kind == "SUBSCRIBE" {
        return subscribe(core, &subject, &headers, stream_type, call).await;
    }
    let Some(stream) = headers.get(STREAM_ID_HEADER).and_then(|v| v.to_str().ok()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "missing the Mesos-Stream-Id header (the one SUBSCRIBE answered with)",
        );
    };
    let call = match call.into_call(stream.to_owned()) {
        Ok(c) => c,
        Err(e) => return bad_call(e),
    };
    let (reply, wait) = oneshot::channel();
    if let Err(denied) = super::may_launch(&core, &subject, &call) {
        return text(StatusCode::FORBIDDEN, denied.to_string());
    }
    let caller = subject;
    if let Err(e) = core
        .tx
        .send(Input::Call {
            call,
            caller,
            reply,
        })
        .await
    {
        return shutting_down(e);
    }
    match wait.await {
        Ok(Ok(())) => StatusCode::ACCEPTED.into_response(),
        Ok(Err(e)) => refused(e),
        Err(e) => shutting_down(e),
    }
}

/// The address the client reached the manager at, for `master_info`.
fn master_info(headers: &HeaderMap) -> events::MasterInfo {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let (hostname, port) = match host.rsplit_once(':') {
        Some((h, p)) if !host.ends_with(']') => (h, p.parse().unwrap_or(80)),
        _ => (host, 80),
    };
    events::MasterInfo {
        hostname: hostname
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    }
}

/// A stream of RecordIO records, in the framing the client asked for.
fn stream_response(
    stream_type: StreamType,
    stream_id: Option<&str>,
    body: impl futures::Stream<Item = Bytes> + Send + 'static,
) -> Response {
    let mut resp = Body::from_stream(body.map(Ok::<_, Infallible>)).into_response();
    let h = resp.headers_mut();
    let json = header::HeaderValue::from_static("application/json");
    match stream_type {
        StreamType::Json => {
            h.insert(header::CONTENT_TYPE, json);
        }
        StreamType::RecordIo => {
            h.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/recordio"),
            );
            h.insert("message-content-type", json);
        }
    }
    if let Some(id) = stream_id.and_then(|s| header::HeaderValue::from_str(s).ok()) {
        h.insert(STREAM_ID_HEADER, id);
    }
    resp
}

async fn subscribe(
    core: CoreHandle,
    subject: &crate::auth::acl::Subject,
    headers: &HeaderMap,
    stream_type: StreamType,
    call: calls::Call,
) -> Response {
    let mut sub = match call.into_subscribe() {
        Ok(s) => s,
        Err(e) => return bad_call(e),
    };
    if let Err(denied) = super::may_subscribe(&core, subject, &mut sub.req) {
        return text(StatusCode::FORBIDDEN, denied.to_string());
    }
    let audience = events::Audience {
        role: sub
            .req
            .framework
            .as_ref()
            .map(|f| f.role.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "*".to_owned()),
        partition_aware: sub.partition_aware,
        master: master_info(headers),
    };
    let (tx, rx) = mpsc::channel(super::grpc::STREAM_BUFFER);
    let (reply, wait) = oneshot::channel();
    let req = sub.req;
    let caller = subject.clone();
    if let Err(e) = core
        .tx
        .send(Input::Subscribe {
            req,
            caller,
            tx,
            reply,
        })
        .await
    {
        return shutting_down(e);
    }
    let (framework, stream) = match wait.await {
        Ok(Ok(ids)) => ids,
        // As Mesos: a removed framework's subscription is answered with an
        // ERROR event, and the stream ends.
        Ok(Err(e @ MasterError::FrameworkRemoved { .. })) => {
            let error = events::record(&events::error(&e.to_string()));
            return stream_response(stream_type, None, futures::stream::iter([error]));
        }
        Ok(Err(e)) => {
            super::audit_refused_takeover(&core, subject, &e);
            return refused(e);
        }
        Err(e) => return shutting_down(e),
    };
    info!(framework_id = %framework, "mesos framework subscribed over http");
    let stream_header = stream.to_string();
    let events = super::grpc::EventStream::new(rx, framework, stream, core.tx.clone());
    // An error (the framework failed over elsewhere or was removed) is
    // the stream's last item: the core drops its sender with it, and the
    // client gets Mesos's ERROR event before the end.
    let body = events.filter_map(move |item| {
        std::future::ready(match item {
            Ok(ev) => events::event(ev, &audience).map(|v| events::record(&v)),
            Err(status) => Some(events::record(&events::error(status.message()))),
        })
    });
    stream_response(stream_type, Some(&stream_header), body)
}

#[cfg(test)]
mod tests;
