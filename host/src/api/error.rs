//! One error shape for the whole API: `{"error": {"code": "RUN_NOT_FOUND", "message": "..."}}`
//! with a stable code. Internal details (SQL, paths) are logged, never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An API error: status, stable code, message for people.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `RUN_NOT_FOUND`.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// Seconds to wait, for 429s.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 404 with a `<KIND>_NOT_FOUND` code. Another tenant's object answers exactly like
    /// a missing one.
    pub fn not_found(code: &'static str, what: &str, id: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, format!("no {what} `{id}`"))
    }

    /// 400 `INVALID_REQUEST`.
    /// `204 No Content` when a delete found its object, else the 404 for it.
    pub fn deleted(
        found: bool,
        code: &'static str,
        what: &str,
        id: &str,
    ) -> Result<StatusCode, Self> {
        if found {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::not_found(code, what, id))
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    /// 429 with Retry-After.
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    /// 500, with the detail logged and hidden.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "something went wrong on the server; it has been logged",
        )
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as E;
        match e {
            E::SecretsDisabled => {
                tracing::warn!("a secret was used on a server without a secrets key");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SECRETS_DISABLED",
                    e.to_string(),
                )
            }
            // Ids and names are checked at the boundary; this is the backstop for text in
            // bodies, so that no database's encoding rules turn into a 500 (MAL-09).
            e if e.is_unstorable_text() => {
                tracing::warn!("the database refused a request's text: {e}");
                ApiError::bad_request(
                    "the request has text the database cannot store (a NUL character or \
                     bytes that are not UTF-8)",
                )
            }
            e => ApiError::internal(e),
        }
    }
}

/// An error's message without its `CODE: ` prefix (the code goes in its own field).
pub(super) fn without_code(e: &impl std::fmt::Display) -> String {
    let message = e.to_string();
    message
        .split_once(": ")
        .map(|(_, m)| m.to_string())
        .unwrap_or(message)
}

impl From<crate::runs::RunError> for ApiError {
    fn from(e: crate::runs::RunError) -> Self {
        use crate::runs::RunError as E;
        let message = without_code(&e);
        match e {
            E::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "RUN_NOT_FOUND", message),
            E::AlreadyFinished(..) => {
                ApiError::new(StatusCode::CONFLICT, "ALREADY_FINISHED", message)
            }
            E::NotWaiting(_) => ApiError::new(StatusCode::CONFLICT, "NOT_WAITING", message),
            E::NotPaused(..) => ApiError::new(StatusCode::CONFLICT, "NOT_PAUSED", message),
            E::InvalidAnswer(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_ANSWER", message)
            }
            E::InvalidPipeline(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PIPELINE", message)
            }
            E::InvalidInput(_) => ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message),
            E::TooManyQueued(_) => ApiError::too_many("TOO_MANY_QUEUED_RUNS", message, 5),
            E::StillActive(..) => ApiError::new(StatusCode::CONFLICT, "RUN_ACTIVE", message),
            E::UnknownStep(..) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_STEP", message)
            }
            E::StepNotReached(..) => {
                ApiError::new(StatusCode::CONFLICT, "STEP_NOT_REACHED", message)
            }
            E::InvalidFeedback(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID_FEEDBACK", message)
            }
            E::RestartLimit(..) => ApiError::new(StatusCode::CONFLICT, "RESTART_LIMIT", message),
            E::Store(e) => ApiError::from(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = super::types::ErrorBody {
            error: super::types::ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 3: a 401 names the scheme the client should use.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"corral\""),
            );
        }
        response
    }
}

/// Axum's own rejections (bad JSON, wrong content type, body too large) in our shape.
pub fn from_rejection(status: StatusCode, message: String) -> ApiError {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "BODY_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        _ => "INVALID_REQUEST",
    };
    ApiError::new(status, code, message)
}
