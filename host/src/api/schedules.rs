//! Schedule routes: operators create and delete, viewers read; the tenant comes from the
//! token, and another tenant's schedule answers exactly like a missing one.

use super::AppState;
use super::auth::{Caller, Operator};
use super::error::ApiError;
use super::extract::Path;
use super::handlers::Body;
use super::types::{NewScheduleBody, Reply, ScheduleDetail, ScheduleList};
use crate::runs::pipeline;
use crate::runs::schedules::{ScheduleError, ScheduleRequest};
use crate::store::ScheduleRecord;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        let code = e.code();
        let message = super::error::without_code(&e);
        match e {
            ScheduleError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, code, message),
            ScheduleError::TooMany(_) => ApiError::new(StatusCode::CONFLICT, code, message),
            ScheduleError::InvalidCron(_)
            | ScheduleError::InvalidTimezone(_)
            | ScheduleError::InvalidPipeline(_)
            | ScheduleError::InvalidInput(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message)
            }
            ScheduleError::Store(e) => ApiError::from(e),
        }
    }
}

/// `POST /v1/schedules`: checks the expression, the time zone, the input and the pipeline
/// (as `POST /v1/runs` checks them) and stores the schedule; its first slot is the first
/// after now.
pub(super) async fn create_schedule(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Body(new): Body<NewScheduleBody>,
) -> Result<Reply<ScheduleRecord>, ApiError> {
    let store = state.runner.store();
    let (doc, pipeline_id) = match &new.pipeline {
        Value::String(id) => {
            let record = store
                .pipeline(&caller.tenant_id, id)
                .await?
                .ok_or_else(|| ApiError::not_found("PIPELINE_NOT_FOUND", "pipeline", id))?;
            (record.spec, Some(record.id))
        }
        Value::Object(_) => (new.pipeline.clone(), None),
        _ => {
            return Err(ApiError::bad_request(
                "pipeline: give a pipeline id or an inline pipeline object",
            ));
        }
    };
    // No base directory: plugins must be registered ones, never the server's files.
    let p = pipeline::parse_json(&doc.to_string(), None).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PIPELINE",
            format!("pipeline: {e}"),
        )
    })?;
    let input = new.input.to_string();
    let record = state
        .runner
        .create_schedule(
            &caller.tenant_id,
            &ScheduleRequest {
                pipeline: &p,
                pipeline_id,
                input: &input,
                cron: &new.cron,
                timezone: &new.timezone,
                overlap: new.overlap,
                catch_up: new.catch_up,
            },
        )
        .await?;
    Ok(Reply::created(record))
}

/// `GET /v1/schedules`.
pub(super) async fn list_schedules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ScheduleList>, ApiError> {
    let schedules = state.runner.store().schedules(&caller.tenant_id).await?;
    Ok(Json(ScheduleList { schedules }))
}

/// `GET /v1/schedules/{id}`: the schedule and its latest fires.
pub(super) async fn get_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ScheduleDetail>, ApiError> {
    let (schedule, fires) = state.runner.schedule(&caller.tenant_id, &id).await?;
    Ok(Json(ScheduleDetail { schedule, fires }))
}

/// `DELETE /v1/schedules/{id}`: no slot fires after it (its runs stay).
pub(super) async fn delete_schedule(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.runner.delete_schedule(&caller.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
