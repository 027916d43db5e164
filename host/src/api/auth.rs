//! Who is calling: the tenant and role come from the bearer token, and only from it.

use super::{AppState, error::ApiError};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{StatusCode, header, request::Parts};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

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
                    "this needs a {} token; yours is {}",
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
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
            return Ok(Caller {
                role: Role::parse(&t.role).unwrap_or(Role::Viewer),
                tenant_id: t.tenant_id,
                token_id: t.id,
            });
        }
        if state.auth_failures.blocked(ip) {
            // The token is never logged, only the address.
            tracing::warn!(%ip, "authentication failure from a throttled address: 429");
            return Err(ApiError::too_many(
                "TOO_MANY_AUTH_FAILURES",
                "too many requests with bad tokens from this address; wait and retry",
                60,
            ));
        }
        state.auth_failures.record(ip);
        tracing::warn!(%ip, "authentication failure: 401");
        let message = if token.is_none() {
            "send `Authorization: Bearer <token>`"
        } else {
            "the token is not valid (unknown or revoked)"
        };
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            message,
        ))
    }
}
