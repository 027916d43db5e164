//! The HTTP/1 accept loop of `corral serve`, with the connection bounds that keep slow or
//! idle clients from holding the server (RES-18):
//!
//! - request headers must arrive within `header_read` of the connection opening, or of the
//!   first byte of the next request on a kept-alive connection;
//! - a request body must arrive within `body_read` of its headers (a body that does not
//!   answers 400 and the connection closes);
//! - a kept-alive connection between requests closes after `idle`;
//! - one address holds at most `max_per_address` connections; more are closed at accept.
//!
//! A request is in flight until its response body has been sent, so an SSE stream is never
//! idle: streams keep their own bounds (per-tenant cap, heartbeats, shutdown, revocation).

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bounds on every client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time for a request's headers to arrive.
    pub header_read: Duration,
    /// Time for a request's body to arrive, from its headers.
    pub body_read: Duration,
    /// Time a kept-alive connection may wait between requests.
    pub idle: Duration,
    /// Open connections per client address.
    pub max_per_address: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            max_per_address: 64,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections
/// finish (each is told to close after its current request) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let stop = CancellationToken::new();
    let slots = AddressSlots::default();
    // Every connection task holds a sender; when all are gone, every connection is closed.
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = slots.take(addr.ip(), limits.max_per_address) else {
            tracing::warn!(
                ip = %addr.ip(),
                limit = limits.max_per_address,
                "connection refused: too many open connections from this address"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, stop, open) = (app.clone(), stop.clone(), open_tx.clone());
        tokio::spawn(async move {
            serve_connection(stream, addr, app, limits, stop).await;
            drop((slot, open));
        });
    }
    drop(listener);
    stop.cancel();
    drop(open_tx);
    let _ = open_rx.recv().await;
}

/// Open connections per address; a [`Slot`] gives its place back when dropped.
#[derive(Clone, Default)]
struct AddressSlots(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct Slot {
    slots: AddressSlots,
    ip: IpAddr,
}

impl AddressSlots {
    fn take(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a connection is doing, for its watchdog.
struct Activity {
    /// Requests whose response has not been fully sent.
    in_flight: usize,
    /// When the next request's first byte arrived, while it has no request in flight.
    head_started: Option<Instant>,
    /// When the connection last finished a response (or opened).
    last_done: Instant,
    /// Whether a request was ever received.
    served: bool,
}

type Shared = Arc<Mutex<Activity>>;

fn lock(a: &Shared) -> std::sync::MutexGuard<'_, Activity> {
    a.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the watchdog decides.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Fine,
    /// Between requests for too long: close gracefully.
    Idle,
    /// Headers too slow: drop the connection.
    SlowHeaders,
}

fn verdict(a: &Activity, limits: &ConnectionLimits, now: Instant) -> Verdict {
    if a.in_flight > 0 {
        return Verdict::Fine;
    }
    if let Some(started) = a.head_started {
        if now.duration_since(started) >= limits.header_read {
            return Verdict::SlowHeaders;
        }
        return Verdict::Fine;
    }
    let waited = now.duration_since(a.last_done);
    // A new connection must send its first request within the header timeout.
    if !a.served && waited >= limits.header_read {
        return Verdict::SlowHeaders;
    }
    if waited >= limits.idle {
        return Verdict::Idle;
    }
    Verdict::Fine
}

async fn serve_connection(
    stream: TcpStream,
    addr: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let activity: Shared = Arc::new(Mutex::new(Activity {
        in_flight: 0,
        head_started: None,
        last_done: Instant::now(),
        served: false,
    }));
    // Told when a response finishes, so the watchdog sleeps while requests are in flight
    // (an SSE stream can be in flight for hours: its connection then has no timer).
    let finished = Arc::new(tokio::sync::Notify::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let (activity, finished) = (activity.clone(), finished.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let busy = Busy::start(activity.clone(), finished.clone());
            let mut req = req.map(|body| TimedBody::new(body, limits.body_read));
            req.extensions_mut().insert(ConnectInfo(addr));
            let mut app = app.clone();
            async move {
                use tower_service::Service;
                let response = app.call(req).await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| BusyBody { body, _busy: busy }),
                )
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let tick = (limits.header_read.min(limits.idle) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        let busy = lock(&activity).in_flight > 0;
        tokio::select! {
            done = connection.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(ip = %addr.ip(), "connection ended: {e}");
                }
                return;
            }
            () = stop.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            // A permit left by a response that finished meanwhile wakes this at once.
            () = finished.notified(), if busy => {}
            _ = ticks.tick(), if !busy => {
                let v = verdict(&lock(&activity), &limits, Instant::now());
                match v {
                    Verdict::Fine => {}
                    Verdict::Idle if !closing => {
                        tracing::debug!(ip = %addr.ip(), "closing an idle connection");
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    // Already closing gracefully and still between requests: close now.
                    Verdict::Idle => return,
                    Verdict::SlowHeaders => {
                        tracing::debug!(ip = %addr.ip(), "closing a connection: headers too slow");
                        return;
                    }
                }
            }
        }
    }
}

/// The TCP stream, noting when a new request's first byte arrives.
struct Tracked {
    inner: TcpStream,
    activity: Shared,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let mut a = lock(&self.activity);
            if a.in_flight == 0 && a.head_started.is_none() {
                a.head_started = Some(Instant::now());
            }
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request in flight, from its headers until its response body is dropped; then it
/// wakes the connection's watchdog.
struct Busy(Shared, Arc<tokio::sync::Notify>);

impl Busy {
    fn start(activity: Shared, finished: Arc<tokio::sync::Notify>) -> Busy {
        {
            let mut a = lock(&activity);
            a.in_flight += 1;
            a.head_started = None;
            a.served = true;
        }
        Busy(activity, finished)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut a = lock(&self.0);
            a.in_flight = a.in_flight.saturating_sub(1);
            a.last_done = Instant::now();
        }
        self.1.notify_one();
    }
}

/// A response body that keeps its request in flight (until it is dropped).
struct BusyBody {
    body: axum::body::Body,
    _busy: Busy,
}

impl Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails when it has not all arrived within its time.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration) -> TimedBody {
        TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

/// The body did not arrive in time.
#[derive(Debug)]
struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTimeout {}

impl Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(in_flight: usize, head: Option<u64>, done_ago: u64, served: bool) -> Activity {
        let now = Instant::now();
        Activity {
            in_flight,
            head_started: head.map(|s| now - Duration::from_secs(s)),
            last_done: now - Duration::from_secs(done_ago),
            served,
        }
    }

    #[test]
    fn the_watchdog_closes_slow_headers_and_idle_connections_but_never_busy_ones() {
        let limits = ConnectionLimits::default();
        let v = |a: Activity| verdict(&a, &limits, Instant::now());
        // A request in flight (an SSE stream, say) is never cut, however long.
        assert_eq!(v(activity(1, None, 3600, true)), Verdict::Fine);
        // Headers started 11 s ago and not done.
        assert_eq!(v(activity(0, Some(11), 11, true)), Verdict::SlowHeaders);
        assert_eq!(v(activity(0, Some(2), 30, true)), Verdict::Fine);
        // A new connection that sent nothing for 11 s.
        assert_eq!(v(activity(0, None, 11, false)), Verdict::SlowHeaders);
        // Kept alive after a response: idle after 60 s, not after 10.
        assert_eq!(v(activity(0, None, 30, true)), Verdict::Fine);
        assert_eq!(v(activity(0, None, 61, true)), Verdict::Idle);
    }

    #[test]
    fn an_address_gets_at_most_its_slots_and_gets_them_back() {
        let slots = AddressSlots::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let held: Vec<Slot> = (0..3).filter_map(|_| slots.take(ip, 3)).collect();
        assert_eq!(held.len(), 3);
        assert!(slots.take(ip, 3).is_none());
        assert!(
            slots.take([10, 0, 0, 2].into(), 3).is_some(),
            "others unaffected"
        );
        drop(held);
        assert!(slots.take(ip, 3).is_some());
    }
}
