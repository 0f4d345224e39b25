//! The UI's login: with a token configured, a page asks for it and keeps
//! it in an HTTP-only, same-site cookie; API clients may send the
//! `authorization` header instead.

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, extract::rejection::FormRejection};
use maud::html;
use serde::Deserialize;

use super::{Section, Ui, enc, page};
use crate::auth::acl::{Action, Subject};

/// The cookie holding the token.
pub(super) const COOKIE: &str = "strata_token";

/// The token a request carries in its cookie.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Who a page's request comes from: its `authorization` header's, or its
/// cookie's token's.
fn subject(ui: &Ui, headers: &HeaderMap) -> Option<Subject> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let access = &ui.core.access;
    if header.is_some() {
        return access.authenticate(header);
    }
    match cookie_token(headers) {
        Some(t) => access.authenticate(Some(&format!("Bearer {t}"))),
        None => access.authenticate(None),
    }
}

/// Pages ask for the token: a request without it is sent to `/login`,
/// which sends it back here.
pub(super) async fn require(State(ui): State<Ui>, mut req: Request, next: Next) -> Response {
    if let Some(who) = subject(&ui, req.headers()) {
        // A section of the UI is one of `view_ui`'s objects.
        let section = match req.uri().path().split('/').nth(1) {
            Some("") | None => "cluster",
            Some(s) => s,
        };
        if let Err(denied) = ui.core.access.check(&who, Action::ViewUi, section) {
            return super::error_page(StatusCode::FORBIDDEN, &denied.to_string());
        }
        req.extensions_mut().insert(who);
        return next.run(req).await;
    }
    let here = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    Redirect::to(&format!("/login?next={}", enc(here))).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Where to go after logging in: a path of this server only.
fn local(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n
        }
        _ => "/",
    }
}

fn login_page(next: &str, failed: bool) -> Response {
    let mut r = page(
        "Log in",
        Section::None,
        false,
        html! {
            @if failed { p.error { "That is not the cluster's token." } }
            form.login method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" autofocus;
                button type="submit" { "Log in" }
            }
            p.muted { "The cluster's token (" code { "--token" } "), or a principal's (" code { "strata principals add" } ")." }
        },
    );
    if failed {
        *r.status_mut() = StatusCode::UNAUTHORIZED;
    }
    r
}

/// `GET /login`.
pub(super) async fn form(Query(q): Query<LoginQuery>) -> Response {
    login_page(local(q.next.as_deref()), false)
}

#[derive(Debug, Deserialize)]
pub(super) struct Credentials {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: the token checked, kept in a cookie.
pub(super) async fn submit(
    State(ui): State<Ui>,
    form: Result<Form<Credentials>, FormRejection>,
) -> Response {
    let Ok(Form(c)) = form else {
        return login_page("/", true);
    };
    let next = local(c.next.as_deref()).to_owned();
    let ok = ui
        .core
        .access
        .authenticate(Some(&format!("Bearer {}", c.token)))
        .is_some();
    // A token is sent back as typed only if it is a cookie's value.
    let cookie_safe = c
        .token
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'));
    if !ok || !cookie_safe {
        return login_page(&next, true);
    }
    let mut r = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        c.token
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /logout`: the cookie cleared.
pub(super) async fn logout() -> Response {
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("strata_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}
