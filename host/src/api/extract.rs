//! Path and query extractors whose every problem answers in the API's JSON error shape
//! (axum's own answer `text/plain`), and which refuse NUL and other control characters
//! in ids, names and query values at the boundary (MAL-09), so that no database ever
//! sees them: SQLite and Postgres answer alike.

use super::error::{ApiError, from_rejection};
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::{StatusCode, request::Parts};
use serde::de::DeserializeOwned;

/// Whether `s` has a control character (C0, DEL or C1).
pub(super) fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Whether a raw (still percent-encoded) query string has or encodes a control
/// character: the same test as [`has_control`], on the decoded text (C1 characters arrive
/// as two encoded bytes).
fn query_has_control(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let hex = |j: usize| bytes.get(j).and_then(|c| char::from(*c).to_digit(16));
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push(u8::try_from(hi * 16 + lo).unwrap_or(b'%'));
                i += 3;
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    has_control(&String::from_utf8_lossy(&decoded))
}

/// `axum::extract::Path`, with control characters refused and rejections in our shape.
pub(super) struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| from_rejection(StatusCode::BAD_REQUEST, e.body_text()))?;
        for (name, value) in &raw {
            if has_control(value) {
                return Err(ApiError::bad_request(format!(
                    "{name}: must not contain NUL or other control characters"
                )));
            }
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(from_rejection(
                bad_request_unless_server(e.status()),
                e.body_text(),
            )),
        }
    }
}

/// `axum::extract::Query`, with control characters refused and rejections in our shape.
pub(super) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.uri.query().is_some_and(query_has_control) {
            return Err(ApiError::bad_request(
                "query: values must not contain NUL or other control characters",
            ));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(from_rejection(
                StatusCode::BAD_REQUEST,
                format!("query: {}", e.body_text()),
            )),
        }
    }
}

/// A client's mistake is a 400 whatever axum calls it; a 500 stays a 500.
fn bad_request_unless_server(status: StatusCode) -> StatusCode {
    if status.is_server_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_found_raw_or_percent_encoded() {
        for bad in [
            "name=%00",
            "name=a%1fb",
            "a=%7F",
            "x=%0a",
            "x=%0D%0A",
            "x=%C2%85",
        ] {
            assert!(query_has_control(bad), "{bad}");
        }
        for ok in [
            "name=echo&version=1.0.0",
            "x=%20",
            "x=%",
            "x=%2",
            "x=%e2%82%ac",
            "x=%zz",
        ] {
            assert!(!query_has_control(ok), "{ok}");
        }
        assert!(has_control("a\0b") && has_control("\u{85}") && !has_control("é"));
    }
}
