//! One log line per HTTP request: method, the matched route's template (`/v1/runs/{id}`,
//! never the raw path or query, which could carry ids or secrets a client put there),
//! status, latency to the response's headers (for a stream, its start), the client's address
//! and, once a token or session authenticated it, the tenant. Headers are never logged,
//! so neither is a token or a cookie.

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Where the authentication extractors leave the caller's tenant for the request's line.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestTenant(Arc<OnceLock<String>>);

/// Notes the authenticated tenant of the request `parts` belongs to (first one wins).
pub(crate) fn note_tenant(parts: &Parts, tenant_id: &str) {
    if let Some(slot) = parts.extensions.get::<RequestTenant>() {
        let _ = slot.0.set(tenant_id.to_string());
    }
}

/// The middleware: logs each request once its response's headers are ready.
pub async fn log_requests(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let tenant = RequestTenant::default();
    req.extensions_mut().insert(tenant.clone());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    // Milliseconds, to the microsecond.
    let latency_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    let route = route.as_deref().unwrap_or("(unmatched)");
    let client = client.map(tracing::field::display);
    let tenant = tenant.0.get().map(tracing::field::display);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                method = %method,
                route = %route,
                status,
                latency_ms,
                tenant,
                client,
                "request"
            )
        };
    }
    match status {
        500.. => line!(error),
        429 => line!(warn),
        _ => line!(info),
    }
    response
}
