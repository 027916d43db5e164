//! Who is calling: the tenant and role come from the bearer token, and only from it, or
//! from a browser session made from a token (`POST /v1/session`), which has exactly its
//! token's tenant and role. A bearer header, when present, wins over a session cookie.
//!
//! With the cookie, a request whose method is not GET, HEAD or OPTIONS must carry the
//! session's CSRF token in `X-CSRF-Token`, and a request with an `Origin` must come from
//! the server's own origin or a listed CORS origin: a page elsewhere cannot use the cookie.

use super::{AppState, error::ApiError};
use crate::store::SessionRecord;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header, request::Parts};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub(super) const SESSION_COOKIE: &str = "corral_session";

/// The header that carries a session's CSRF token.
pub(super) const CSRF_HEADER: &str = "x-csrf-token";

/// Token roles, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read and stream.
    Viewer,
    /// Plugins, pipelines and runs.
    Operator,
    /// Tenant settings and tokens.
    Admin,
}

impl Role {
    /// Parses `admin`, `operator` or `viewer`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    /// `a` or `an`, for the role's name.
    fn article(self) -> &'static str {
        match self {
            Role::Admin | Role::Operator => "an",
            Role::Viewer => "a",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant, from the token.
    pub tenant_id: String,
    /// The token's role.
    pub role: Role,
    /// The token's id (to notice revocation on long-lived streams).
    pub token_id: String,
    /// When the browser session this caller came by expires (milliseconds since the
    /// epoch); `None` for a bearer token. Long-lived streams end then.
    pub session_expires_at: Option<i64>,
    /// The browser session's key (the hash of its cookie value), so long-lived streams
    /// end when it is logged out; `None` for a bearer token.
    pub session: Option<String>,
}

impl Caller {
    /// What a long-lived stream watches: the session it came by (gone when logged out,
    /// expired or its token revoked), else its token.
    pub fn watch_key(&self) -> String {
        match &self.session {
            Some(hash) => format!("{}{hash}", crate::store::SESSION_KEY),
            None => self.token_id.clone(),
        }
    }
}

impl Caller {
    /// 403 unless the caller's role is at least `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!(
                    "this needs {} {} token; yours is {}",
                    needed.article(),
                    needed.as_str(),
                    self.role.as_str()
                ),
            ))
        }
    }
}

/// A caller with at least the operator role. As an extractor it runs before the body is
/// read, so a viewer gets 403 whatever it sent.
#[derive(Debug, Clone)]
pub struct Operator(pub Caller);

/// A caller with the admin role (see [`Operator`]).
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Role::Operator)?;
        Ok(Operator(caller))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Role::Admin)?;
        Ok(Admin(caller))
    }
}

/// Bad-token attempts per client address within a window before answers turn into 429s.
pub(crate) struct AuthFailures {
    window: Duration,
    limit: u32,
    seen: std::sync::Mutex<std::collections::HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthFailures {
    pub(super) fn new(limit: u32, window: Duration) -> Self {
        AuthFailures {
            window,
            limit,
            seen: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The answer to a failed authentication from `ip`: 429 while the address is
    /// throttled, else 401, counted. Only the address is logged, never the credential.
    pub(super) fn refuse(&self, ip: IpAddr, message: &'static str) -> ApiError {
        self.refuse_because(ip, "token not valid", message)
    }

    /// [`AuthFailures::refuse`], logging `reason` (what was wrong, never what was sent).
    fn refuse_because(&self, ip: IpAddr, reason: &'static str, message: &'static str) -> ApiError {
        if self.blocked(ip) {
            tracing::warn!(
                client = %ip,
                reason,
                status = 429,
                "authentication failure from a throttled address"
            );
            return ApiError::too_many(
                "TOO_MANY_AUTH_FAILURES",
                "too many requests with bad tokens from this address; wait and retry",
                60,
            );
        }
        self.record(ip);
        tracing::warn!(client = %ip, reason, status = 401, "authentication failure");
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    fn blocked(&self, ip: IpAddr) -> bool {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.get(&ip)
            .is_some_and(|(since, n)| since.elapsed() < self.window && *n >= self.limit)
    }

    fn record(&self, ip: IpAddr) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: forget stale entries when the map grows.
        if seen.len() > 10_000 {
            let window = self.window;
            seen.retain(|_, (since, _)| since.elapsed() < window);
        }
        let entry = seen.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// The client's address (the TCP peer).
pub(super) fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The client's address, as an extractor.
pub(super) struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

/// What the request's cookies say about a session.
enum SessionCookie {
    /// No session cookie.
    Absent,
    /// One well-formed session cookie value.
    One(String),
    /// A malformed value, or more than one session cookie (one set by another site of the
    /// same domain, say): never guessed between.
    Bad,
}

/// The length of a session cookie's value: 32 random bytes, hex.
const SESSION_VALUE_LEN: usize = 64;

fn session_cookie(headers: &HeaderMap) -> SessionCookie {
    let mut found = SessionCookie::Absent;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((name, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if name.trim() != SESSION_COOKIE {
                continue;
            }
            let v = v.trim();
            let well_formed =
                v.len() == SESSION_VALUE_LEN && v.bytes().all(|b| b.is_ascii_hexdigit());
            found = match found {
                SessionCookie::Absent if well_formed => SessionCookie::One(v.to_string()),
                _ => SessionCookie::Bad,
            };
        }
    }
    found
}

/// A new session cookie value: 256 random bits, hex.
pub(super) fn new_session_value() -> String {
    let bits: [u8; 32] = rand::random();
    hex::encode(bits)
}

/// A session's CSRF token, derived from its cookie value (HMAC-SHA256 keyed by it), so it
/// is stored nowhere and a page that cannot read the cookie cannot compute it.
pub(super) fn csrf_token(session_value: &str) -> String {
    use hmac::{Hmac, Mac};
    match Hmac::<sha2::Sha256>::new_from_slice(session_value.as_bytes()) {
        Ok(mut mac) => {
            mac.update(b"corral session csrf token");
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC takes a key of any length; this cannot happen.
        Err(_) => String::new(),
    }
}

/// Whether the request reached the server over TLS (as a proxy in front of it says), or
/// the operator said the server is only reached so (`cookie_secure`).
pub(super) fn over_tls(headers: &HeaderMap, state: &AppState) -> bool {
    state.config.cookie_secure
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// Whether `origin` may use the session: the server's own origin (scheme from
/// [`over_tls`], host from `Host`) or a listed CORS origin.
fn origin_allowed(origin: &str, headers: &HeaderMap, uri: &Uri, state: &AppState) -> bool {
    let origin = origin.trim().to_ascii_lowercase();
    if state.config.cors_origins.contains(&origin) {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()));
    let Some(host) = host else { return false };
    let scheme = if over_tls(headers, state) {
        "https"
    } else {
        "http"
    };
    let own = super::cors::normalize_origin(&format!("{scheme}://{}", host.trim()));
    own.is_ok_and(|own| own == origin)
}

/// 403 unless a request with an `Origin` header comes from an allowed origin.
pub(super) fn check_origin(
    headers: &HeaderMap,
    uri: &Uri,
    state: &AppState,
) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    match origin.to_str() {
        Ok(origin) if origin_allowed(origin, headers, uri, state) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ORIGIN_NOT_ALLOWED",
            "this origin may not use a session here (not the server's own origin, and not \
             in its cors_origins)",
        )),
    }
}

/// The checks a request made with the session cookie must pass: its origin, and for a
/// method that is not GET, HEAD or OPTIONS the session's CSRF token.
fn check_csrf(parts: &Parts, state: &AppState, session_value: &str) -> Result<(), ApiError> {
    check_origin(&parts.headers, &parts.uri, state)?;
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let sent = parts
        .headers
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let want = csrf_token(session_value);
    if bool::from(subtle::ConstantTimeEq::ct_eq(sent, want.as_bytes())) && !want.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "CSRF_TOKEN_INVALID",
        "a request made with the session cookie must send the session's csrf_token in \
         X-CSRF-Token",
    ))
}

/// The caller a live session stands for.
fn session_caller(record: &SessionRecord) -> Caller {
    Caller {
        tenant_id: record.tenant_id.clone(),
        role: Role::parse(&record.role).unwrap_or(Role::Viewer),
        token_id: record.token_id.clone(),
        session_expires_at: Some(record.expires_at),
        session: Some(record.hash.clone()),
    }
}

/// A caller authenticated by the session cookie only (the `/v1/session` routes): the
/// session, its cookie value and the caller it stands for.
pub(super) struct Session {
    pub record: SessionRecord,
    pub value: String,
}

/// The session the request's cookie stands for: `None` when no session cookie was sent;
/// a malformed, unknown, expired or revoked one is refused (and counted by the bad-token
/// throttle), and a request that fails the origin or CSRF checks is refused.
async fn session_from_cookie(parts: &Parts, state: &AppState) -> Result<Option<Session>, ApiError> {
    let ip = client_ip(parts);
    let value = match session_cookie(&parts.headers) {
        SessionCookie::Absent => return Ok(None),
        SessionCookie::Bad => {
            return Err(state.auth_failures.refuse_because(
                ip,
                "malformed or repeated session cookie",
                SESSION_INVALID,
            ));
        }
        SessionCookie::One(value) => value,
    };
    let Some(record) = state.runner.store().session(&value).await? else {
        return Err(state.auth_failures.refuse_because(
            ip,
            "session unknown, expired or revoked",
            SESSION_INVALID,
        ));
    };
    check_csrf(parts, state, &value)?;
    super::logging::note_tenant(parts, &record.tenant_id);
    Ok(Some(Session { record, value }))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Nothing was presented, so nothing is guessed: a plain 401, not counted.
        session_from_cookie(parts, state).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "no session: log in with POST /v1/session",
            )
        })
    }
}

const SESSION_INVALID: &str =
    "the session is not valid (unknown, expired, or its token was revoked); log in again";

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = client_ip(parts);
        if !parts.headers.contains_key(header::AUTHORIZATION)
            && let Some(session) = session_from_cookie(parts, state).await?
        {
            return Ok(session_caller(&session.record));
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_start().split_once(' '))
            // RFC 9110 11.1: the scheme is case-insensitive (`bearer`, `BEARER`).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty() && t.len() <= 256);
        // A valid token is always accepted, whatever else came from its address (API-09):
        // the throttle only answers for failed attempts, so another client on the same
        // address (a NAT, a proxy) cannot lock a user out by sending bad tokens.
        let found = match token {
            Some(token) => {
                let hash = crate::store::token_hash(token);
                state.runner.store().token_by_hash(&hash).await?
            }
            None => None,
        };
        if let Some(t) = found {
            super::logging::note_tenant(parts, &t.tenant_id);
            return Ok(Caller {
                role: Role::parse(&t.role).unwrap_or(Role::Viewer),
                tenant_id: t.tenant_id,
                token_id: t.id,
                session_expires_at: None,
                session: None,
            });
        }
        let (reason, message) = if token.is_none() {
            (
                "no bearer token",
                "send `Authorization: Bearer <token>` (or log in with POST /v1/session)",
            )
        } else {
            (
                "token unknown or revoked",
                "the token is not valid (unknown or revoked)",
            )
        };
        Err(state.auth_failures.refuse_because(ip, reason, message))
    }
}
