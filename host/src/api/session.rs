//! Browser sessions: `POST /v1/session` exchanges a token for an `HttpOnly`,
//! `SameSite=Strict` cookie (so a page never holds the token, and no token goes in a URL);
//! `GET` says who the session is, `DELETE` logs out. A session has exactly its token's
//! tenant and role, dies with the token, and expires after `session_ttl_secs`.

use super::AppState;
use super::auth::{
    ClientIp, SESSION_COOKIE, Session, check_origin, csrf_token, new_session_value, over_tls,
};
use super::error::ApiError;
use super::handlers::Body;
use super::types::{Login, NoContent, Reply, SessionInfo};
use crate::store::SessionRecord;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use std::time::{Duration, UNIX_EPOCH};

/// What the session routes answer: who the session is and its CSRF token.
fn describe(record: &SessionRecord, value: &str) -> SessionInfo {
    let expires = UNIX_EPOCH + Duration::from_millis(u64::try_from(record.expires_at).unwrap_or(0));
    SessionInfo {
        tenant: record.tenant_name.clone(),
        role: record.role.clone(),
        token_id: record.token_id.clone(),
        csrf_token: csrf_token(value),
        expires_at: humantime::format_rfc3339_seconds(expires).to_string(),
    }
}

/// The `Set-Cookie` value for `value` living `max_age` seconds (0 clears it).
fn cookie(value: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

fn private<T>(reply: Reply<T>) -> Reply<T> {
    // The answer carries the CSRF token: no cache may keep it.
    reply.header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

const BAD_TOKEN: &str = "the token is not valid (unknown or revoked)";

/// `POST /v1/session {"token"}`: 201 with the session and its cookie. A bad token is
/// counted by the same throttle as bad bearer tokens.
pub(super) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    uri: Uri,
    Body(login): Body<Login>,
) -> Result<Reply<SessionInfo>, ApiError> {
    // A page elsewhere must not log a browser in to an account of its choosing.
    check_origin(&headers, &uri, &state)?;
    let token = login.token.trim();
    if token.is_empty() || token.len() > 256 {
        return Err(state.auth_failures.refuse(ip, BAD_TOKEN));
    }
    let store = state.runner.store();
    let Some(found) = store
        .token_by_hash(&crate::store::token_hash(token))
        .await?
    else {
        return Err(state.auth_failures.refuse(ip, BAD_TOKEN));
    };
    let value = new_session_value();
    let ttl = state.config.session_ttl.as_secs().max(1);
    let ttl_ms = i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX);
    store.create_session(&found.id, &value, ttl_ms).await?;
    // Read back through the same lookup every request uses (a token revoked meanwhile
    // has no session).
    let Some(record) = store.session(&value).await? else {
        return Err(state.auth_failures.refuse(ip, BAD_TOKEN));
    };
    let mut reply = Reply::created(describe(&record, &value));
    if let Some(c) = cookie(&value, ttl, over_tls(&headers, &state)) {
        reply = reply.header(header::SET_COOKIE, c);
    }
    Ok(private(reply))
}

/// `GET /v1/session`: the session the cookie names, with the same CSRF token.
pub(super) async fn current(session: Session) -> Reply<SessionInfo> {
    private(Reply::new(
        StatusCode::OK,
        describe(&session.record, &session.value),
    ))
}

/// `DELETE /v1/session`: logs out (needs the CSRF token); the cookie is cleared.
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
) -> Result<NoContent, ApiError> {
    state.runner.store().delete_session(&session.value).await?;
    let cleared = cookie("", 0, over_tls(&headers, &state));
    Ok(NoContent(
        cleared
            .map(|c| (header::SET_COOKIE, c))
            .into_iter()
            .collect(),
    ))
}
