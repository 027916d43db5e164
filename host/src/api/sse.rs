//! Server-sent events. A run's stream replays its log (from `Last-Event-ID`, header or
//! `?last_event_id=`) and follows live with no gap and no duplicate, sends a heartbeat after
//! 15 s of silence, and closes after the final event. A slow client only slows its own
//! stream: the run and other subscribers never wait for it (it catches up from the log).

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Path, Query};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often an open stream checks that its token is still valid.
const REVOCATION_CHECK: Duration = Duration::from_millis(500);
/// SSE frames buffered per client before the stream's own reader waits.
const CLIENT_BUFFER: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    last_event_id: Option<String>,
}

/// Counts a tenant's open streams; the count drops when the stream ends.
struct StreamSlot {
    state: AppState,
    tenant_id: String,
}

impl StreamSlot {
    fn take(state: &AppState, tenant_id: &str) -> Result<StreamSlot, ApiError> {
        let mut streams = state
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = streams.entry(tenant_id.to_string()).or_insert(0);
        if *open >= state.config.max_streams_per_tenant {
            return Err(ApiError::too_many(
                "TOO_MANY_STREAMS",
                format!("this tenant already has {open} open streams"),
                5,
            ));
        }
        *open += 1;
        Ok(StreamSlot {
            state: state.clone(),
            tenant_id: tenant_id.to_string(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .state
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = streams.get_mut(&self.tenant_id) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.tenant_id);
            }
        }
    }
}

fn heartbeat() -> SseEvent {
    SseEvent::default().data(r#"{"type":"heartbeat"}"#)
}

fn sse_response(rx: mpsc::Receiver<SseEvent>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    let mut response = Sse::new(Box::pin(stream)
        as std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>>)
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

pub(super) async fn run_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = state
        .runner
        .store()
        .run_for_tenant(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("RUN_NOT_FOUND", "run", &id))?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.last_event_id);
    let after = match last.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(text) => {
            let seq: i64 = text.parse().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_LAST_EVENT_ID",
                    format!("`{text}` is not an event id of this run"),
                )
            })?;
            if seq < 0 || seq >= run.next_seq {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_LAST_EVENT_ID",
                    format!("run `{id}` has no event {seq}"),
                ));
            }
            seq
        }
    };
    let slot = StreamSlot::take(&state, &caller.tenant_id)?;
    let events =
        crate::events::subscribe(state.runner.store().clone(), state.runner.bus(), id, after);
    Ok(pump(state, caller, slot, Source::Run(events)))
}

/// Where a stream's events come from.
enum Source {
    /// One run: its log replayed, then live; ends after the final event.
    Run(mpsc::Receiver<crate::store::Event>),
    /// Every run of a tenant, live.
    Tenant(crate::events::Subscription, String),
}

/// What a source yields next.
enum Next {
    /// A frame, and whether it is the last.
    Frame(SseEvent, bool),
    /// Nothing for this client.
    Skip,
    /// The source is done.
    End,
}

impl Source {
    async fn next(&mut self) -> Next {
        match self {
            Source::Run(events) => {
                let Some(event) = events.recv().await else {
                    return Next::End;
                };
                let is_final = event.is_final();
                // Event JSON is one line (control characters are escaped), so it can never
                // inject a second SSE event.
                match serde_json::to_string(&event) {
                    Ok(data) => Next::Frame(
                        SseEvent::default().id(event.seq.to_string()).data(data),
                        is_final,
                    ),
                    Err(_) => Next::End,
                }
            }
            Source::Tenant(live, tenant_id) => match live.recv().await {
                Ok(event) if &event.tenant_id == tenant_id => {
                    match serde_json::to_string(&*event) {
                        Ok(data) => Next::Frame(SseEvent::default().data(data), false),
                        Err(_) => Next::End,
                    }
                }
                Ok(_) => Next::Skip,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let note = serde_json::json!({"type": "resync", "missed": n}).to_string();
                    Next::Frame(SseEvent::default().data(note), false)
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => Next::End,
            },
        }
    }
}

/// Moves a source's frames to the client, with heartbeats after silence; stops when the
/// source ends, the client goes, the token is revoked or the server shuts down.
fn pump(state: AppState, caller: Caller, slot: StreamSlot, mut source: Source) -> Response {
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let heartbeat_every = state.config.heartbeat;
    tokio::spawn(async move {
        let _slot = slot;
        let mut check = tokio::time::interval(REVOCATION_CHECK);
        let mut silence = Box::pin(tokio::time::sleep(heartbeat_every));
        crate::metrics::global().open_streams_add(1);
        loop {
            tokio::select! {
                next = source.next() => match next {
                    Next::Frame(frame, last) => {
                        if tx.send(frame).await.is_err() || last {
                            break;
                        }
                        silence.as_mut().reset(tokio::time::Instant::now() + heartbeat_every);
                    }
                    Next::Skip => {}
                    Next::End => break,
                },
                _ = &mut silence => {
                    if tx.send(heartbeat()).await.is_err() {
                        break;
                    }
                    silence.as_mut().reset(tokio::time::Instant::now() + heartbeat_every);
                }
                _ = check.tick() => {
                    if !matches!(state.runner.store().token_live(&caller.token_id).await, Ok(true)) {
                        break;
                    }
                }
                _ = tx.closed() => break,
                _ = state.shutdown.cancelled() => break,
            }
        }
        crate::metrics::global().open_streams_add(-1);
    });
    sse_response(rx)
}

pub(super) async fn tenant_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if headers.contains_key("last-event-id") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_LAST_EVENT_ID",
            "the tenant stream is live only; resume a run's stream at /v1/runs/{id}/events",
        ));
    }
    let slot = StreamSlot::take(&state, &caller.tenant_id)?;
    let live = state.runner.bus().tenant_receiver(&caller.tenant_id);
    let tenant_id = caller.tenant_id.clone();
    Ok(pump(state, caller, slot, Source::Tenant(live, tenant_id)))
}
