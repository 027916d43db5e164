//! The web dashboard: a static shell and a little vanilla JS, compiled into the binary.
//!
//! `GET /` is the page, `GET /ui/{file}` its assets. Nothing is fetched from elsewhere at
//! run time; the page talks to the REST API and SSE streams with the session cookie. These
//! routes are not API, so they are not in [`super::ROUTES`] or `/openapi.json`.

use super::AppState;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The security headers of every UI response. No inline script or style is allowed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'self'";

const INDEX: &str = include_str!("ui/index.html");

/// The assets: name, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("ui/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("ui/favicon.svg"),
    ),
];

/// The dashboard's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{file}", get(asset))
}

async fn index() -> Response {
    // The shell is tiny and names its assets without a version, so it is never cached.
    page(
        StatusCode::OK,
        "text/html; charset=utf-8",
        "no-cache",
        INDEX,
    )
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => page(StatusCode::OK, kind, "no-cache", body),
        None => page(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "no-store",
            "not found\n",
        ),
    }
}

fn page(
    status: StatusCode,
    kind: &'static str,
    cache: &'static str,
    body: &'static str,
) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}
