//! Server-sent events. A run's stream replays its log (from `Last-Event-ID`, header or
//! `?last_event_id=`) and follows live with no gap and no duplicate, sends a heartbeat after
//! 15 to 22 s of silence (one clock shared by all streams), and closes after the final
//! event; a reconnect from at or after a finished run's final event answers 204, which
//! tells a browser's `EventSource` to stop. A restarted run has a final event per segment:
//! its stream closes after the latest, a replay reads through the earlier ones, and a
//! reconnect after an old one reopens the stream at the `restarted` event. The first frame of every stream carries
//! `retry: 3000`, the reconnection delay for browsers. A slow client only slows its own stream: the run and other subscribers never wait
//! for it (it catches up from the log). An open stream is only its response body: no task,
//! no channel, no timer of its own, and no store query while it is idle.

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Path, Query};
use super::types::{Notice, StreamQuery};
use crate::events::{Follower, Subscription, TokenWatch};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

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

/// The reconnection delay a stream's first frame gives browsers (`retry:`).
const RETRY: Duration = Duration::from_millis(3000);

fn heartbeat() -> SseEvent {
    SseEvent::default().data(
        Notice {
            kind: "heartbeat",
            missed: None,
        }
        .to_data(),
    )
}

fn sse_response(live: Live) -> Response {
    // The stream is the body hyper polls: an open stream costs no task, no channel and
    // no timer of its own.
    let stream = futures::stream::unfold(live, |mut live| async move {
        let frame = live.next().await?;
        Some((Ok::<_, Infallible>(frame), live))
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
    // The client has the final event: nothing follows it unless the run is restarted
    // (then the run is live again, or has a later final event, and the stream reopens
    // here at the `restarted` event), and 204 is how SSE says "do not reconnect" (SSE-08).
    if run.is_terminal() && after >= run.last_seq {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let slot = StreamSlot::take(&state, &caller.tenant_id)?;
    let follower = Follower::new(state.runner.store().clone(), state.runner.bus(), &id, after);
    let source = Source::Run(Box::new(follower));
    Ok(sse_response(Live::new(state, &caller, slot, source)))
}

/// Where a stream's events come from.
enum Source {
    /// One run: its log replayed, then live; ends after the final event.
    Run(Box<Follower>),
    /// Every run of a tenant, live.
    Tenant(Subscription),
}

/// What a source yields next.
enum Next {
    /// A frame, and whether it is the last.
    Frame(SseEvent, bool),
    /// The source is done.
    End,
}

impl Source {
    /// Cancel-safe, as its two sources are.
    async fn next(&mut self) -> Next {
        match self {
            Source::Run(follower) => {
                let Some(event) = follower.next().await else {
                    return Next::End;
                };
                // The follower knows whether this final event is the latest (a restarted
                // run's replay reads through its earlier segments' final events).
                let is_final = event.is_final() && follower.is_done();
                // Event JSON is one line (control characters are escaped), so it can never
                // inject a second SSE event.
                match &event.json {
                    Some(data) => Next::Frame(
                        SseEvent::default().id(event.seq.to_string()).data(data),
                        is_final,
                    ),
                    None => Next::End,
                }
            }
            // The bus gives a tenant stream only its tenant's events.
            Source::Tenant(live) => match live.recv().await {
                Ok(event) => match &event.json {
                    Some(data) => Next::Frame(SseEvent::default().data(data), false),
                    None => Next::End,
                },
                Err(RecvError::Lagged(n)) => {
                    // 0: the watcher of other hosts' commits lost track for a while.
                    let note = Notice {
                        kind: "resync",
                        missed: (n > 0).then_some(n),
                    };
                    Next::Frame(SseEvent::default().data(note.to_data()), false)
                }
                Err(RecvError::Closed) => Next::End,
            },
        }
    }
}

/// Heartbeat clock ticks per heartbeat period: a heartbeat goes after 2 to 3 ticks of
/// silence, so between one and one and a half periods.
const TICKS_PER_HEARTBEAT: u32 = 2;
const QUIET_TICKS: u8 = 3;

/// An open stream, polled by hyper as the response body: frames from its source, a
/// heartbeat after silence; it stops when the source ends, the client goes (hyper drops
/// the body), the token is revoked or the server shuts down.
struct Live {
    state: AppState,
    _slot: StreamSlot,
    token: TokenWatch,
    /// The bus's shared heartbeat clock.
    ticks: tokio::sync::watch::Receiver<u64>,
    /// Ticks since the last frame.
    quiet: u8,
    source: Source,
    done: bool,
    /// No frame sent yet (the first carries `retry:`).
    first: bool,
    /// When the caller's browser session expires: the stream ends then.
    expires: Option<tokio::time::Instant>,
}

impl Live {
    fn new(state: AppState, caller: &Caller, slot: StreamSlot, source: Source) -> Live {
        let bus = state.runner.bus();
        let period = (state.config.heartbeat / TICKS_PER_HEARTBEAT).max(Duration::from_millis(1));
        let (token, ticks) = (bus.watch_token(&caller.watch_key()), bus.ticker(period));
        crate::metrics::global().open_streams_add(1);
        let expires = caller.session_expires_at.map(|at| {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let left = u64::try_from(at.saturating_sub(now_ms)).unwrap_or(0);
            tokio::time::Instant::now() + Duration::from_millis(left)
        });
        Live {
            expires,
            state,
            _slot: slot,
            token,
            ticks,
            quiet: 0,
            source,
            done: false,
            first: true,
        }
    }

    async fn next(&mut self) -> Option<SseEvent> {
        let frame = self.next_frame().await?;
        Some(if std::mem::take(&mut self.first) {
            frame.retry(RETRY)
        } else {
            frame
        })
    }

    async fn next_frame(&mut self) -> Option<SseEvent> {
        if self.done || self.token.revoked() {
            return None;
        }
        loop {
            tokio::select! {
                biased;
                () = self.state.shutdown.cancelled() => return None,
                () = sleep_until(self.expires) => return None,
                () = self.token.changed() => {
                    if self.token.revoked() {
                        return None;
                    }
                }
                _ = self.ticks.changed() => {
                    self.quiet = self.quiet.saturating_add(1);
                    if self.quiet >= QUIET_TICKS {
                        self.quiet = 0;
                        return Some(heartbeat());
                    }
                }
                next = self.source.next() => match next {
                    Next::Frame(frame, last) => {
                        self.quiet = 0;
                        self.done = last;
                        return Some(frame);
                    }
                    Next::End => return None,
                },
            }
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        crate::metrics::global().open_streams_add(-1);
    }
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
    let source = Source::Tenant(state.runner.bus().tenant_receiver(&caller.tenant_id));
    Ok(sse_response(Live::new(state, &caller, slot, source)))
}
