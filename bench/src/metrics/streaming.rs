//! Metric 7, streaming: one run's events to 1, 100, 1000 and 10,000 SSE subscribers
//! (quick mode: 1 and 50), over real HTTP on loopback.
//!
//! Corral's side is its real HTTP API (`corral::api::router`, served by
//! `corral::api::server::serve`, the accept loop of `corral serve`, on 127.0.0.1:0,
//! SQLite in a fresh directory), with every
//! subscriber a real HTTP client (reqwest) on `GET /v1/runs/{id}/events` with a
//! bearer token. Events are committed the way the runner commits a guest's log lines:
//! `Store::commit` of a `log` event, then `Bus::publish` (what `Runner::commit` does).
//! The baseline is a plain axum SSE endpoint fed by a raw tokio broadcast channel, each
//! event first written with raw sqlx (`raw.rs`: the same event insert and `next_seq`
//! bump in one transaction, same SQLite settings, a second fresh database) and
//! serialized once; the same clients read it the same way. The ratio is Corral's
//! delivery path and its store against the least a durable SSE fan-out does.
//!
//! Each round opens a new stream (a new run), connects the subscribers and waits until
//! each has its first event, then:
//! - a burst: B events committed back to back; events/s delivered = subscribers x B /
//!   time from the first commit until every subscriber has every event;
//! - lock-step: L events, each committed once every subscriber has the previous one;
//!   commit -> client receipt latency (p50: median of per-round medians, p99 of all);
//! - the final event, after which both servers close the stream.
//!
//! Memory per idle subscriber: the server alone runs in a child process
//! (`corral-bench --stream-probe corral|baseline`), and its RSS (`VmRSS`) is read before
//! and after the subscribers of the largest count connect and sit idle; the difference
//! divided by the count. The clients live in this process, so they are not counted. The
//! server's CPU use while they sit idle (nothing is published) goes in `params`.

use super::{Metric, Rows};
use crate::Ctx;
use crate::db::{FreshDb, Kind, with_two};
use crate::harness::{Plan, Row, Samples, Unit, side_by_side, us};
use crate::raw::{self, RawDb, RawRun, Template};
use anyhow::Context as _;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use corral::api::{ApiConfig, AppState};
use corral::engine::{Engine, EngineConfig};
use corral::runs::{Runner, RunnerConfig};
use corral::store::{Change, Event, NewRun, RunRef, Store};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, broadcast};

/// The metric.
pub const METRIC: Metric = Metric {
    name: "streaming",
    rows: &[
        "streaming_1",
        "streaming_1_p50",
        "streaming_1_p99",
        "streaming_idle_kib",
    ],
    more_rows,
    run: run_boxed,
};

fn more_rows(ctx: &Ctx) -> Vec<String> {
    let cross_node = ctx
        .postgres
        .as_ref()
        .map(|_| "streaming_cross_node_p99".to_string());
    counts(ctx)
        .iter()
        .filter(|&&s| s != 1)
        .flat_map(|s| {
            [
                format!("streaming_{s}"),
                format!("streaming_{s}_p50"),
                format!("streaming_{s}_p99"),
            ]
        })
        .chain(cross_node)
        .collect()
}

fn run_boxed(ctx: &Ctx) -> Rows<'_> {
    Box::pin(run(ctx))
}

/// Subscriber counts.
fn counts(ctx: &Ctx) -> &'static [usize] {
    ctx.pick(&[1, 50], &[1, 100, 1000, 10_000])
}

/// The largest count measured with server and clients in one process; larger ones (10,000
/// takes over 20,000 sockets, more than a process may open here) run the server in the
/// probe child, with the clients here.
const IN_PROCESS: usize = 1000;

/// File descriptors the largest count needs in one process: its clients' sockets and the
/// server's (each side of 10,000 connections), and some to spare.
const FD_LIMIT: u64 = 65_536;

/// Raises this process's open-file limit towards `want` (the hard limit too, when allowed,
/// as for root); returns the soft limit in force.
fn raise_fd_limit(want: u64) -> u64 {
    use rlimit::Resource;
    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    if hard < want && Resource::NOFILE.set(want, want).is_ok() {
        return want;
    }
    let _ = Resource::NOFILE.set(hard.min(want), hard);
    Resource::NOFILE.get().map_or(soft, |(s, _)| s)
}

/// How much to measure at one subscriber count.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    rounds: usize,
    burst: usize,
    lockstep: usize,
}

fn sizes(ctx: &Ctx, subscribers: usize) -> Sizes {
    let (rounds, burst, lockstep) = match subscribers {
        1 => ctx.pick((3, 100, 30), (8, 300, 100)),
        s if s <= 100 => ctx.pick((3, 40, 15), (5, 100, 40)),
        s if s <= 1000 => ctx.pick((3, 20, 10), (3, 30, 20)),
        _ => ctx.pick((2, 5, 5), (2, 10, 10)),
    };
    Sizes {
        rounds,
        burst,
        lockstep,
    }
}

/// Connecting, and waiting for any one event, give up after this.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Subscribers connected before the idle-memory baseline is read (first connections
/// initialise pools and caches that are not per subscriber).
const WARM_SUBSCRIBERS: usize = 8;

async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let fds = raise_fd_limit(FD_LIMIT);
    let largest = counts(ctx).iter().copied().max().unwrap_or(1) as u64;
    anyhow::ensure!(
        fds >= largest + 1024,
        "{largest} subscribers need about {} open files; the limit is {fds} (raise `ulimit -n`)",
        largest + 1024
    );
    let mut rows = with_two(Kind::Sqlite, &ctx.work, None, async |corral_db, raw_db| {
        let corral = Server::corral(ctx.corral(None)?, corral_db).await?;
        let plain = Server::plain(raw_db).await?;
        let servers = [corral, plain];
        let result = measure(ctx, &servers).await;
        for s in servers {
            s.stop().await;
        }
        result
    })
    .await?;
    rows.extend(idle_memory(ctx).await?);
    match &ctx.postgres {
        Some(server) => rows.push(cross_node(ctx, server).await?),
        None => eprintln!(
            "   note: {} is not set: streaming_cross_node_p99 skipped",
            crate::db::POSTGRES_ENV
        ),
    }
    Ok(rows)
}

async fn measure(ctx: &Ctx, servers: &[Server; 2]) -> anyhow::Result<Vec<Row>> {
    let http = reqwest::Client::builder().build()?;
    // Warm-up: first connections, pools, caches.
    for server in servers {
        round(
            server,
            &http,
            4,
            Sizes {
                rounds: 1,
                burst: 10,
                lockstep: 5,
            },
        )
        .await?;
    }
    let mut rows = Vec::new();
    for &subscribers in counts(ctx).iter().filter(|&&s| s <= IN_PROCESS) {
        let size = sizes(ctx, subscribers);
        let mut latency = [Samples::default(), Samples::default()];
        let mut burst_latency = [Samples::default(), Samples::default()];
        let mut commit = [Samples::default(), Samples::default()];
        let plan = Plan::new(size.rounds, 1, 0);
        let samples = side_by_side(2, plan, async |i| {
            let server = servers
                .get(i)
                .ok_or_else(|| anyhow::anyhow!("no server {i}"))?;
            let r = round(server, &http, subscribers, size).await?;
            if let (Some(l), Some(b), Some(c)) = (
                latency.get_mut(i),
                burst_latency.get_mut(i),
                commit.get_mut(i),
            ) {
                l.push_batch(&r.lockstep);
                b.push_batch(&r.burst_latency);
                c.push_batch(&r.commits);
            }
            Ok(r.burst)
        })
        .await?;
        let [corral, baseline] = samples.as_slice() else {
            anyhow::bail!("expected two contenders");
        };
        let deliveries = (subscribers * size.burst) as f64;
        let rate = |s: &Samples| s.median().map(|d| deliveries / d.as_secs_f64());
        let ms = |d: Option<Duration>| crate::harness::ms(d);
        let params = json!({
            "subscribers": subscribers,
            "rounds": size.rounds,
            "burst_events": size.burst,
            "lockstep_events": size.lockstep,
            "database": "sqlite",
            "corral": "corral::api::router served by axum on 127.0.0.1:0; GET /v1/runs/{id}/events with a bearer token; events: Store::commit (log event) + Bus::publish",
            "baseline": "plain axum SSE endpoint on 127.0.0.1:0 fed by a tokio broadcast channel; each event first written with raw sqlx (event insert + next_seq bump, one transaction, same SQLite settings), serialized once",
            "clients": "reqwest, one HTTP/1.1 connection per subscriber, in this process; frames parsed for their id only",
            "rate": "events/s delivered in the burst: subscribers x burst events / (first commit -> last subscriber has the last event), median round",
            "latency": "lock-step events: commit returned -> frame read by the client",
            "burst_latency_ms": {
                "corral_p50": ms(burst_latency[0].median()),
                "corral_p99": ms(burst_latency[0].p99()),
                "baseline_p50": ms(burst_latency[1].median()),
                "baseline_p99": ms(burst_latency[1].p99()),
            },
            "commit_us": {
                "corral_p50": us(commit[0].median()),
                "baseline_p50": us(commit[1].median()),
            },
        });
        let [corral_lat, baseline_lat] = &latency;
        rows.push(Row::rate(
            format!("streaming_{subscribers}"),
            rate(corral),
            rate(baseline),
            params.clone(),
        ));
        rows.push(Row::cost(
            format!("streaming_{subscribers}_p50"),
            Unit::Millis,
            corral_lat.median(),
            baseline_lat.median(),
            params.clone(),
        ));
        rows.push(Row::cost(
            format!("streaming_{subscribers}_p99"),
            Unit::Millis,
            corral_lat.p99(),
            baseline_lat.p99(),
            params,
        ));
    }
    Ok(rows)
}

/// What one round measured.
struct RoundResult {
    /// The burst's time.
    burst: Duration,
    /// Every subscriber's latency of every lock-step event.
    lockstep: Vec<Duration>,
    /// Every subscriber's latency of every burst event.
    burst_latency: Vec<Duration>,
    /// How long each commit took (server side, before publication).
    commits: Vec<Duration>,
}

async fn round(
    server: &Server,
    http: &reqwest::Client,
    subscribers: usize,
    size: Sizes,
) -> anyhow::Result<RoundResult> {
    let mut stream = server.open_stream().await?;
    let hub = Arc::new(Hub::default());
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..subscribers {
        clients.spawn(client(
            http.clone(),
            stream.url.clone(),
            server.token(),
            hub.clone(),
        ));
    }
    let n = subscribers as u64;
    wait_or_fail(&hub, &hub.ready, n, &mut clients).await?;

    let mut committed: HashMap<i64, Instant> = HashMap::new();
    let mut commits = Vec::new();
    let burst_events = size.burst as u64;
    hub.target.store(n * burst_events, Ordering::SeqCst);
    let started = Instant::now();
    for k in 0..size.burst {
        let t = Instant::now();
        let (seq, at) = server.emit(&mut stream, k).await?;
        commits.push(at.saturating_duration_since(t));
        committed.insert(seq, at);
    }
    wait_or_fail(&hub, &hub.received, n * burst_events, &mut clients).await?;
    let burst = started.elapsed();

    let mut lockstep_seqs = HashSet::new();
    for j in 1..=size.lockstep as u64 {
        let target = n * (burst_events + j);
        hub.target.store(target, Ordering::SeqCst);
        let t = Instant::now();
        let (seq, at) = server.emit(&mut stream, size.burst + j as usize).await?;
        commits.push(at.saturating_duration_since(t));
        committed.insert(seq, at);
        lockstep_seqs.insert(seq);
        wait_or_fail(&hub, &hub.received, target, &mut clients).await?;
    }
    server.close_stream(&mut stream).await?;

    let mut lockstep = Vec::with_capacity(subscribers * size.lockstep);
    let mut burst_latency = Vec::with_capacity(subscribers * size.burst);
    while let Some(done) = tokio::time::timeout(TIMEOUT, clients.join_next())
        .await
        .map_err(|_| anyhow::anyhow!("a stream did not end after the final event"))?
    {
        for (seq, at) in done?? {
            if let Some(c) = committed.get(&seq) {
                let d = at.saturating_duration_since(*c);
                if lockstep_seqs.contains(&seq) {
                    lockstep.push(d);
                } else {
                    burst_latency.push(d);
                }
            }
        }
    }
    anyhow::ensure!(
        lockstep.len() == subscribers * size.lockstep
            && burst_latency.len() == subscribers * size.burst,
        "some subscriber missed events ({} of {} lock-step, {} of {} burst)",
        lockstep.len(),
        subscribers * size.lockstep,
        burst_latency.len(),
        subscribers * size.burst
    );
    Ok(RoundResult {
        burst,
        lockstep,
        burst_latency,
        commits,
    })
}

/// Waits until `field` reaches `at_least`; a client that fails meanwhile fails this.
async fn wait_or_fail(
    hub: &Hub,
    field: &AtomicU64,
    at_least: u64,
    clients: &mut tokio::task::JoinSet<anyhow::Result<Vec<(i64, Instant)>>>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let notified = hub.notify.notified();
        if field.load(Ordering::SeqCst) >= at_least {
            return Ok(());
        }
        tokio::select! {
            _ = notified => {}
            Some(done) = clients.join_next() => {
                done??;
                anyhow::bail!("a subscriber's stream ended early");
            }
            _ = tokio::time::sleep_until(deadline) => {
                anyhow::bail!(
                    "timed out: {} of {at_least} frames arrived",
                    field.load(Ordering::SeqCst)
                );
            }
        }
    }
}

/// What the clients report to the generator.
#[derive(Default)]
struct Hub {
    /// Subscribers that have their first event (they are following the stream).
    ready: AtomicU64,
    /// Frames after the first, over all subscribers.
    received: AtomicU64,
    /// `received` the generator waits for.
    target: AtomicU64,
    notify: Notify,
}

impl Hub {
    fn saw(&self, seq: i64) {
        if seq == 1 {
            self.ready.fetch_add(1, Ordering::SeqCst);
            self.notify.notify_one();
        } else {
            let n = self.received.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.target.load(Ordering::SeqCst) {
                self.notify.notify_one();
            }
        }
    }
}

/// One subscriber: reads the stream to its end; every frame's id (the event's seq) and
/// when its bytes arrived.
async fn client(
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    hub: Arc<Hub>,
) -> anyhow::Result<Vec<(i64, Instant)>> {
    let mut request = http.get(&url);
    if let Some(token) = &token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("GET {url}: {status} {body}");
    }
    let mut body = response.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let at = Instant::now();
        buf.extend_from_slice(&chunk);
        while let Some(frame) = next_frame(&mut buf) {
            if let Some(seq) = frame_id(&frame) {
                got.push((seq, at));
                hub.saw(seq);
            }
        }
    }
    Ok(got)
}

/// The first complete SSE frame in `buf`, taken out of it.
fn next_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buf.windows(2).position(|w| w == b"\n\n")?;
    Some(buf.drain(..end + 2).collect())
}

/// The `id:` of an SSE frame.
fn frame_id(frame: &[u8]) -> Option<i64> {
    std::str::from_utf8(frame)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The pipeline name and spec of the streams' runs (never executed).
const SPEC: &str = r#"{"name":"bench","steps":[{"name":"echo","plugin":"echo"}]}"#;

/// A guest log line, as the runner commits it (executor.rs `commit_guest_events`).
fn log_payload(n: usize) -> Value {
    json!({
        "step_id": "echo",
        "level": "info",
        "source": "log",
        "message": format!("bench event {n}: the quick brown fox jumps over the lazy dog"),
    })
}

/// The run's final event (executor.rs `finish`).
fn final_payload(run_id: &str) -> Value {
    json!({
        "run_id": run_id,
        "all_done": true,
        "status": "succeeded",
        "error": false,
        "fuel_used": 0,
    })
}

/// What the raw writer needs to create the baseline's runs.
fn stream_template() -> Template {
    Template {
        pipeline_name: "bench".into(),
        spec: SPEC.into(),
        input: raw::INPUT.into(),
        output: raw::INPUT.into(),
        step: "echo".into(),
        agent: "echo".into(),
        fuel: 0,
        queued: json!({"pipeline": "bench", "steps": [{"step_id": "echo", "agent_type": "echo"}]}),
        started: Value::Null,
        guest: Vec::new(),
        step_done: Value::Null,
        finished: Value::Null,
    }
}

/// One event as the baseline sends it.
struct Frame {
    seq: i64,
    json: String,
    last: bool,
}

/// The baseline's current stream: new subscribers get `first`, then what is sent.
#[derive(Clone)]
struct Channel {
    tx: broadcast::Sender<Arc<Frame>>,
    first: Arc<Frame>,
}

struct PlainState {
    current: std::sync::Mutex<Option<Channel>>,
}

/// The baseline's SSE endpoint.
async fn plain_events(
    State(state): State<Arc<PlainState>>,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let channel = state
        .current
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let start = channel.map(|c| (Some(c.first.clone()), Some(c.tx.subscribe())));
    let (first, rx) = start.unwrap_or((None, None));
    let stream = futures::stream::unfold((first, rx, false), |(first, rx, done)| async move {
        if done {
            return None;
        }
        let mut rx = rx?;
        let frame = match first {
            Some(f) => f,
            None => loop {
                match rx.recv().await {
                    Ok(f) => break f,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
        };
        let event = SseEvent::default()
            .id(frame.seq.to_string())
            .data(&frame.json);
        Some((Ok(event), (None, Some(rx), frame.last)))
    });
    Sse::new(stream)
}

/// A server under test.
enum Server {
    Corral {
        url: String,
        token: String,
        tenant: String,
        store: Store,
        runner: Runner,
        task: tokio::task::JoinHandle<()>,
    },
    Plain {
        url: String,
        raw: RawDb,
        state: Arc<PlainState>,
        template: Box<Template>,
        task: tokio::task::JoinHandle<()>,
    },
}

/// One run's stream.
struct Stream {
    url: String,
    corral: Option<RunRef>,
    plain: Option<(RawRun, broadcast::Sender<Arc<Frame>>)>,
}

async fn listen() -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

impl Server {
    /// Corral's API on `db`, as `corral serve` builds it (without the scheduler: the
    /// streams' runs are never executed), with room for every subscriber on one tenant.
    async fn corral(engine: Engine, db: &FreshDb) -> anyhow::Result<Server> {
        let store = Store::open(&db.url).await?;
        let tenant = store.ensure_tenant("bench").await?;
        let (_, token) = store.create_token(&tenant, "viewer", "bench").await?;
        let runner = Runner::new(engine, store.clone(), RunnerConfig::default());
        let state = AppState::new(
            runner.clone(),
            ApiConfig {
                max_streams_per_tenant: 1_000_000,
                ..ApiConfig::default()
            },
        );
        let app = corral::api::router(state);
        let (listener, url) = listen().await?;
        // `corral serve`'s own accept loop and connection settings, with room for every
        // subscriber on one address.
        let limits = corral::api::server::ConnectionLimits {
            max_per_address: usize::MAX,
            ..Default::default()
        };
        let task = tokio::spawn(corral::api::server::serve(
            listener,
            app,
            limits,
            std::future::pending(),
        ));
        Ok(Server::Corral {
            url,
            token,
            tenant,
            store,
            runner,
            task,
        })
    }

    /// The baseline on `db`.
    async fn plain(db: &FreshDb) -> anyhow::Result<Server> {
        let raw = RawDb::open(db).await?;
        let state = Arc::new(PlainState {
            current: std::sync::Mutex::new(None),
        });
        let app = axum::Router::new()
            .route("/events", axum::routing::get(plain_events))
            .with_state(state.clone());
        let (listener, url) = listen().await?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("   baseline server: {e}");
            }
        });
        Ok(Server::Plain {
            url,
            raw,
            state,
            template: Box::new(stream_template()),
            task,
        })
    }

    fn token(&self) -> Option<String> {
        match self {
            Server::Corral { token, .. } => Some(token.clone()),
            Server::Plain { .. } => None,
        }
    }

    /// A new run, queued (its `queued` event is seq 1), and its stream's URL.
    async fn open_stream(&self) -> anyhow::Result<Stream> {
        match self {
            Server::Corral {
                url,
                tenant,
                store,
                runner,
                ..
            } => {
                let (run, event) = store
                    .create_run(&NewRun {
                        tenant_id: tenant.clone(),
                        pipeline_id: None,
                        pipeline_name: "bench".into(),
                        spec: SPEC.into(),
                        input: raw::INPUT.into(),
                        steps: vec![("echo".into(), "echo".into())],
                    })
                    .await?;
                runner.bus().publish(event);
                Ok(Stream {
                    url: format!("{url}/v1/runs/{}/events", run.id),
                    corral: Some(run.as_ref()),
                    plain: None,
                })
            }
            Server::Plain {
                url,
                raw,
                state,
                template,
                ..
            } => {
                let run = raw.create_run(template).await?;
                let first = Arc::new(Frame {
                    seq: 1,
                    json: event_json(&run.id, 1, "queued", &template.queued)?,
                    last: false,
                });
                let (tx, _) = broadcast::channel(4096);
                *state
                    .current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Channel {
                    tx: tx.clone(),
                    first,
                });
                Ok(Stream {
                    url: format!("{url}/events"),
                    corral: None,
                    plain: Some((run, tx)),
                })
            }
        }
    }

    /// Commits and publishes log event `n`: its seq, and when the commit returned.
    async fn emit(&self, stream: &mut Stream, n: usize) -> anyhow::Result<(i64, Instant)> {
        self.send(stream, "log", log_payload(n), false).await
    }

    /// The final event (and the run's end); the stream closes after it.
    async fn close_stream(&self, stream: &mut Stream) -> anyhow::Result<()> {
        self.send(stream, "complete", Value::Null, true).await?;
        Ok(())
    }

    async fn send(
        &self,
        stream: &mut Stream,
        kind: &str,
        payload: Value,
        last: bool,
    ) -> anyhow::Result<(i64, Instant)> {
        match (self, &stream.corral, &mut stream.plain) {
            (Server::Corral { store, runner, .. }, Some(run), _) => {
                let (changes, payload) = if last {
                    (
                        vec![
                            Change::RunFinish {
                                status: "succeeded",
                                output: Some(raw::INPUT.into()),
                                error_code: None,
                                error_message: None,
                            },
                            Change::SkipRemaining,
                        ],
                        final_payload(&run.id),
                    )
                } else {
                    (Vec::new(), payload)
                };
                let event = store
                    .commit(run, &changes, Some((kind, payload)))
                    .await?
                    .flatten()
                    .ok_or_else(|| anyhow::anyhow!("the commit wrote no event"))?;
                let at = Instant::now();
                let seq = event.seq;
                runner.bus().publish(event);
                Ok((seq, at))
            }
            (Server::Plain { raw, .. }, _, Some((run, tx))) => {
                let (seq, payload) = if last {
                    let payload = final_payload(&run.id);
                    (raw.finish(run, raw::INPUT, &payload).await?, payload)
                } else {
                    (raw.append(run, kind, &payload.to_string()).await?, payload)
                };
                let at = Instant::now();
                let json = event_json(&run.id, seq, kind, &payload)?;
                // No subscriber is fine, as on Corral's bus.
                let _ = tx.send(Arc::new(Frame { seq, json, last }));
                Ok((seq, at))
            }
            _ => anyhow::bail!("a stream of another server"),
        }
    }

    async fn stop(self) {
        match self {
            Server::Corral { task, .. } | Server::Plain { task, .. } => {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// An event in Corral's wire format.
fn event_json(run_id: &str, seq: i64, kind: &str, payload: &Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&Event {
        kind: kind.to_string(),
        run_id: run_id.to_string(),
        seq,
        ts: corral::store::rfc3339_now(),
        payload: payload.clone(),
        tenant_id: String::new(),
    })?)
}

/// Memory per idle subscriber at the largest count, Corral against the baseline, each
/// server alone in a child process.
async fn idle_memory(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let subscribers = counts(ctx).iter().copied().max().unwrap_or(1);
    // Above the in-process counts, the probe also measures delivery.
    let events = (subscribers > IN_PROCESS).then(|| sizes(ctx, subscribers));
    let mut delivery = [ProbeEvents::default(), ProbeEvents::default()];
    let repeats = ctx.pick(1, 3);
    let idle = ctx.pick(Duration::from_secs(1), Duration::from_secs(2));
    let mut kib: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for r in 0..repeats {
        for k in 0..2 {
            let i = (r + k) % 2;
            let kind = if i == 0 { "corral" } else { "baseline" };
            let probe = probe_once(kind, subscribers, idle, events).await?;
            if let (Some(k), Some(c), Some(d)) =
                (kib.get_mut(i), cpu.get_mut(i), delivery.get_mut(i))
            {
                k.push(probe.kib_per_subscriber);
                c.push(probe.idle_cpu_percent);
                d.lockstep.extend(probe.events.lockstep);
                d.bursts.extend(probe.events.bursts);
            }
        }
    }
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let [corral, baseline] = &kib;
    let [corral_cpu, baseline_cpu] = &cpu;
    let mut rows = Vec::new();
    if let Some(size) = events {
        rows.extend(probe_rows(subscribers, size, &delivery));
    }
    rows.push(Row::amount(
        "streaming_idle_kib",
        Unit::KiB,
        med(corral),
        med(baseline),
        json!({
            "subscribers": subscribers,
            "repeats": repeats,
            "warm_subscribers": WARM_SUBSCRIBERS,
            "corral_kib_each_probe": corral,
            "baseline_kib_each_probe": baseline,
            "idle_cpu_percent_of_one_core": {
                "corral": med(corral_cpu),
                "baseline": med(baseline_cpu),
                "window_s": idle.as_secs_f64(),
            },
            "measure": "server alone in a child process (corral-bench --stream-probe): VmRSS after the subscribers connected and got their first event, minus VmRSS before, divided by the subscribers (clients not counted)",
        }),
    ));
    Ok(rows)
}

/// Delivery measured by a probe: the burst times and the lock-step latencies.
#[derive(Default)]
struct ProbeEvents {
    bursts: Vec<Duration>,
    lockstep: Vec<Duration>,
}

/// The `streaming_{N}` rows of a count measured through the probe.
fn probe_rows(subscribers: usize, size: Sizes, delivery: &[ProbeEvents; 2]) -> Vec<Row> {
    let [corral, baseline] = delivery;
    let deliveries = (subscribers * size.burst) as f64;
    let rate =
        |d: &ProbeEvents| crate::harness::median(&d.bursts).map(|t| deliveries / t.as_secs_f64());
    let params = json!({
        "subscribers": subscribers,
        "burst_events": size.burst,
        "lockstep_events": size.lockstep,
        "database": "sqlite",
        "where": "the server (Corral or the baseline, as in the smaller counts) in the probe child process, the clients in this one: one process may not open the 20,000+ sockets both sides need",
        "latency": "lock-step events: the child's wall clock after the commit returned -> this process's wall clock when the frame arrived",
        "rate": "subscribers x burst events / (burst command sent -> every subscriber has every event), median over the probes",
    });
    vec![
        Row::rate(
            format!("streaming_{subscribers}"),
            rate(corral),
            rate(baseline),
            params.clone(),
        ),
        Row::cost(
            format!("streaming_{subscribers}_p50"),
            Unit::Millis,
            crate::harness::median(&corral.lockstep),
            crate::harness::median(&baseline.lockstep),
            params.clone(),
        ),
        Row::cost(
            format!("streaming_{subscribers}_p99"),
            Unit::Millis,
            crate::harness::percentile(&corral.lockstep, 0.99),
            crate::harness::percentile(&baseline.lockstep, 0.99),
            params,
        ),
    ]
}

/// What one probe measured.
struct Probe {
    kib_per_subscriber: f64,
    /// CPU time used by the server over the idle window, in percent of one core.
    idle_cpu_percent: f64,
    events: ProbeEvents,
}

/// Microseconds since the Unix epoch: the clock both processes share.
fn wall_micros(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// One child process serving one stream: KiB of RSS per idle subscriber, and the CPU
/// the server uses while they sit idle for `idle`.
async fn probe_once(
    kind: &str,
    subscribers: usize,
    idle: Duration,
    events: Option<Sizes>,
) -> anyhow::Result<Probe> {
    raise_fd_limit(FD_LIMIT);
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["--stream-probe", kind])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the stream probe")?;
    let result = async {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut next_line = async || -> anyhow::Result<String> {
            tokio::time::timeout(TIMEOUT, lines.next_line())
                .await
                .map_err(|_| anyhow::anyhow!("the stream probe did not answer"))??
                .ok_or_else(|| anyhow::anyhow!("the stream probe exited"))
        };
        let ready = next_line().await?;
        let mut words = ready.split_whitespace();
        let (Some("READY"), Some(url), Some(token)) = (words.next(), words.next(), words.next())
        else {
            anyhow::bail!("the stream probe said `{ready}`");
        };
        let token = (token != "-").then(|| token.to_string());
        let http = reqwest::Client::builder().build()?;
        let hub = Arc::new(Hub::default());
        let mut clients = tokio::task::JoinSet::new();
        let connect = |clients: &mut tokio::task::JoinSet<_>, n: usize| {
            for _ in 0..n {
                clients.spawn(client(
                    http.clone(),
                    url.to_string(),
                    token.clone(),
                    hub.clone(),
                ));
            }
        };
        connect(&mut clients, WARM_SUBSCRIBERS);
        wait_or_fail(&hub, &hub.ready, WARM_SUBSCRIBERS as u64, &mut clients).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stdin.write_all(b"rss\n").await?;
        let before: u64 = next_line().await?.trim().parse()?;
        connect(&mut clients, subscribers);
        wait_or_fail(
            &hub,
            &hub.ready,
            (WARM_SUBSCRIBERS + subscribers) as u64,
            &mut clients,
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stdin.write_all(b"rss\n").await?;
        let after: u64 = next_line().await?.trim().parse()?;
        // CPU the server spends on idle subscribers (nothing is published meanwhile).
        stdin.write_all(b"cpu\n").await?;
        let cpu_before: u64 = next_line().await?.trim().parse()?;
        let t = Instant::now();
        tokio::time::sleep(idle).await;
        stdin.write_all(b"cpu\n").await?;
        let cpu_after: u64 = next_line().await?.trim().parse()?;
        let cpu_percent = cpu_after.saturating_sub(cpu_before) as f64 / t.elapsed().as_secs_f64();
        let mut delivery = ProbeEvents::default();
        if let Some(size) = events {
            // Instants here to the wall clock the child reports its commits in.
            let anchor = (Instant::now(), std::time::SystemTime::now());
            let wall = |at: Instant| wall_micros(anchor.1 + at.saturating_duration_since(anchor.0));
            let n = (WARM_SUBSCRIBERS + subscribers) as u64;
            let burst = size.burst as u64;
            hub.target.store(n * burst, Ordering::SeqCst);
            let t = Instant::now();
            stdin
                .write_all(format!("burst {burst}\n").as_bytes())
                .await?;
            wait_or_fail(&hub, &hub.received, n * burst, &mut clients).await?;
            delivery.bursts.push(t.elapsed());
            for _ in 0..burst {
                next_line().await?;
            }
            let mut committed: HashMap<i64, i64> = HashMap::new();
            for j in 1..=size.lockstep as u64 {
                let target = n * (burst + j);
                hub.target.store(target, Ordering::SeqCst);
                stdin.write_all(b"emit\n").await?;
                let line = next_line().await?;
                let mut words = line.split_whitespace().map(str::parse::<i64>);
                let (Some(Ok(seq)), Some(Ok(micros))) = (words.next(), words.next()) else {
                    anyhow::bail!("the stream probe said `{line}`");
                };
                committed.insert(seq, micros);
                wait_or_fail(&hub, &hub.received, target, &mut clients).await?;
            }
            stdin.write_all(b"close\n").await?;
            next_line().await?;
            while let Some(done) = tokio::time::timeout(TIMEOUT, clients.join_next())
                .await
                .map_err(|_| anyhow::anyhow!("a stream did not end after the final event"))?
            {
                for (seq, at) in done?? {
                    if let Some(c) = committed.get(&seq) {
                        let micros = wall(at).saturating_sub(*c).max(0);
                        delivery
                            .lockstep
                            .push(Duration::from_micros(micros.unsigned_abs()));
                    }
                }
            }
        }
        clients.abort_all();
        drop(stdin);
        Ok(Probe {
            kib_per_subscriber: after.saturating_sub(before) as f64 / subscribers as f64,
            idle_cpu_percent: cpu_percent,
            events: delivery,
        })
    }
    .await;
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    result
}

/// CPU time this process has used (user + system), in clock ticks (1/100 s).
fn cpu_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // After the command name in parentheses: state (field 3) ... utime (14), stime (15).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (field(11), field(12)) {
        (Some(user), Some(system)) => Ok(user + system),
        _ => anyhow::bail!("cannot read CPU times from /proc/self/stat"),
    }
}

/// This process's resident set, KiB.
fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))
}

/// `corral-bench --stream-probe corral|baseline`: serves one stream on 127.0.0.1:0,
/// prints `READY URL TOKEN` (`-`: no token), then answers each `rss` line on stdin with
/// its VmRSS in KiB and each `cpu` line with its CPU time in clock ticks; `burst N`,
/// `emit` and `close` commit N log events, one, or the final event, each answered with
/// `SEQ MICROS` (the wall clock after its commit); until stdin closes.
pub async fn probe(kind: &str) -> anyhow::Result<()> {
    raise_fd_limit(FD_LIMIT);
    let work = tempfile::Builder::new()
        .prefix("corral-bench-probe-")
        .tempdir()?;
    let db = FreshDb::sqlite(work.path())?;
    let server = match kind {
        "corral" => {
            let engine = Engine::new(EngineConfig {
                scratch_root: work.path().join("scratch"),
                ..EngineConfig::default()
            })?;
            Server::corral(engine, &db).await?
        }
        "baseline" => Server::plain(&db).await?,
        other => anyhow::bail!("no stream probe `{other}` (corral or baseline)"),
    };
    let mut stream = server.open_stream().await?;
    println!(
        "READY {} {}",
        stream.url,
        server.token().unwrap_or_else(|| "-".into())
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut emitted = 0;
    // Each event: its seq and the wall clock (µs) when its commit returned.
    let report = |seq: i64| println!("{seq} {}", wall_micros(std::time::SystemTime::now()));
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("rss"), _) => println!("{}", rss_kib()?),
            (Some("cpu"), _) => println!("{}", cpu_ticks()?),
            (Some("burst"), Some(n)) => {
                let mut seqs = Vec::new();
                for _ in 0..n.parse::<usize>()? {
                    seqs.push(server.emit(&mut stream, emitted).await?.0);
                    emitted += 1;
                }
                for seq in seqs {
                    report(seq);
                }
            }
            (Some("emit"), _) => {
                let (seq, _) = server.emit(&mut stream, emitted).await?;
                emitted += 1;
                report(seq);
            }
            (Some("close"), _) => {
                server.close_stream(&mut stream).await?;
                report(0);
            }
            _ => {}
        }
    }
    server.stop().await;
    drop(db);
    Ok(())
}

/// Cross-node delivery: two real `corral serve` processes (the release binary beside
/// this one) on one fresh Postgres schema. Runs are submitted to node A over HTTP; a
/// tenant stream on node B and one on node A itself read each run's `queued` event. The
/// latency is from A's `201 Created` (the event is committed by then) to the frame's
/// arrival; the baseline is the same latency on A's own stream (same-node delivery).
async fn cross_node(ctx: &Ctx, server: &str) -> anyhow::Result<Row> {
    let db = FreshDb::postgres(server).await?;
    let result = cross_node_on(ctx, &db).await;
    let removed = db.remove().await;
    let row = result?;
    removed?;
    Ok(row)
}

/// One `corral serve` child process.
struct Node {
    url: String,
    /// The admin token it printed (on the first start on an empty database).
    admin_token: Option<String>,
    _child: tokio::process::Child,
}

impl Node {
    async fn start(
        exe: &std::path::Path,
        db: &str,
        data: &std::path::Path,
    ) -> anyhow::Result<Node> {
        let mut child = tokio::process::Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("CORRAL_DATA_DIR", data)
            .env("CORRAL_DATABASE_URL", db)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        // Before it listens, the server prints on stderr either the first start's admin
        // token or (logged at info) that it printed none.
        let mut errors = BufReader::new(stderr).lines();
        let mut admin_token = None;
        loop {
            let line = tokio::time::timeout(TIMEOUT, errors.next_line())
                .await
                .map_err(|_| anyhow::anyhow!("corral serve did not start"))??
                .ok_or_else(|| anyhow::anyhow!("corral serve exited"))?;
            let line = line.trim();
            if line.starts_with("crl_") {
                admin_token = Some(line.to_string());
                break;
            }
            if line.contains("no token is printed") {
                break;
            }
        }
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = tokio::time::timeout(TIMEOUT, lines.next_line())
                .await
                .map_err(|_| anyhow::anyhow!("corral serve did not start"))??
                .ok_or_else(|| anyhow::anyhow!("corral serve exited"))?;
            if let Some(url) = line.trim().strip_prefix("corral listening on ") {
                break url.to_string();
            }
        };
        // Keep draining both so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        tokio::spawn(async move { while let Ok(Some(_)) = errors.next_line().await {} });
        Ok(Node {
            url,
            admin_token,
            _child: child,
        })
    }
}

/// A tenant stream: reports each `queued` event's run id and when its frame arrived.
async fn tenant_client(
    http: reqwest::Client,
    url: String,
    token: String,
    node: usize,
    seen: tokio::sync::mpsc::UnboundedSender<(usize, String, Instant)>,
) -> anyhow::Result<()> {
    let response = http.get(&url).bearer_auth(&token).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    let mut body = response.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let at = Instant::now();
        buf.extend_from_slice(&chunk);
        while let Some(frame) = next_frame(&mut buf) {
            let text = String::from_utf8_lossy(&frame);
            for data in text.lines().filter_map(|l| l.strip_prefix("data:")) {
                let Ok(event) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                if event.get("type").and_then(Value::as_str) == Some("queued")
                    && let Some(run) = event.get("run_id").and_then(Value::as_str)
                {
                    let _ = seen.send((node, run.to_string(), at));
                }
            }
        }
    }
    Ok(())
}

async fn cross_node_on(ctx: &Ctx, db: &FreshDb) -> anyhow::Result<Row> {
    let exe = std::env::current_exe()?.with_file_name("corral");
    anyhow::ensure!(
        exe.exists(),
        "{} is missing (cargo build --release -p corral; `cargo xtask bench` builds it)",
        exe.display()
    );
    let data = [
        tempfile::tempdir_in(&ctx.work)?,
        tempfile::tempdir_in(&ctx.work)?,
    ];
    let a = Node::start(&exe, &db.url, data[0].path()).await?;
    let b = Node::start(&exe, &db.url, data[1].path()).await?;
    let token = a
        .admin_token
        .clone()
        .ok_or_else(|| anyhow::anyhow!("node A printed no admin token"))?;
    let http = reqwest::Client::builder().build()?;
    let wasm = std::fs::read(ctx.plugins.join("echo.wasm"))?;
    let uploaded: Value = http
        .post(format!("{}/v1/plugins", a.url))
        .bearer_auth(&token)
        .header("content-type", "application/wasm")
        .body(wasm)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let plugin = format!(
        "{}@{}",
        uploaded
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("echo"),
        uploaded
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    let submit = json!({
        "pipeline": {"name": "cross", "steps": [{"name": "echo", "plugin": plugin, "config": {}}]},
        "input": {},
    });
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = tokio::task::JoinSet::new();
    for (node, url) in [&a.url, &b.url].into_iter().enumerate() {
        let url = format!("{url}/v1/events");
        clients.spawn(tenant_client(
            http.clone(),
            url,
            token.clone(),
            node,
            tx.clone(),
        ));
    }
    // Timed from the request's start: the commit happens inside it, so this bounds
    // commit -> receipt from above (B's frame often arrives before A's answer does).
    let post = async || -> anyhow::Result<(String, Instant, Duration)> {
        let at = Instant::now();
        let created: Value = http
            .post(format!("{}/v1/runs", a.url))
            .bearer_auth(&token)
            .json(&submit)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let answered = at.elapsed();
        let run = created
            .get("run_id")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("no run_id in {created}"))?;
        Ok((run.to_string(), at, answered))
    };
    // Both streams are open once each has seen one run of its own.
    let deadline = Instant::now() + TIMEOUT;
    let mut ready = [false, false];
    while ready != [true, true] {
        anyhow::ensure!(Instant::now() < deadline, "the tenant streams did not open");
        post().await?;
        let wait = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                got = seen.recv() => match got {
                    Some((node, _, _)) => if let Some(r) = ready.get_mut(node) { *r = true },
                    None => anyhow::bail!("the tenant streams closed"),
                },
                () = &mut wait => break,
            }
        }
    }
    let rounds = ctx.pick(30, 300);
    let mut latency = [Vec::new(), Vec::new()];
    let mut submits = Vec::new();
    for _ in 0..rounds {
        let (run, at, answered) = post().await?;
        submits.push(answered);
        let mut got = [false, false];
        while got != [true, true] {
            let (node, id, when) = tokio::time::timeout(TIMEOUT, seen.recv())
                .await
                .map_err(|_| anyhow::anyhow!("run {run}'s queued event did not reach both nodes"))?
                .ok_or_else(|| anyhow::anyhow!("the tenant streams closed"))?;
            if id != run {
                continue;
            }
            if let (Some(g), Some(l)) = (got.get_mut(node), latency.get_mut(node)) {
                *g = true;
                l.push(when.saturating_duration_since(at));
            }
        }
    }
    clients.abort_all();
    let [same, cross] = &latency;
    Ok(Row::cost(
        "streaming_cross_node_p99",
        Unit::Millis,
        crate::harness::percentile(cross, 0.99),
        crate::harness::percentile(same, 0.99),
        json!({
            "rounds": rounds,
            "nodes": "two `corral serve` processes (target/release/corral) on one fresh Postgres schema, default settings",
            "corral": "tenant stream (GET /v1/events) on node B; runs submitted to node A (POST /v1/runs); latency from sending the POST to A (its queued event commits inside it) to B's frame: an upper bound on commit -> receipt",
            "submit_p50_ms": crate::harness::ms(crate::harness::median(&submits)),
            "baseline": "the same on node A's own tenant stream (same-node delivery through A's bus)",
            "cross_node_p50_ms": crate::harness::ms(crate::harness::median(cross)),
            "same_node_p50_ms": crate::harness::ms(crate::harness::median(same)),
            "database": db.location(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::frame_id;

    #[test]
    fn frame_ids_are_read_whatever_the_line_order() {
        assert_eq!(frame_id(b"data: {}\nid: 7\n\n"), Some(7));
        assert_eq!(frame_id(b"id:12\ndata: x\n\n"), Some(12));
        assert_eq!(frame_id(b"data: {\"type\":\"heartbeat\"}\n\n"), None);
    }
}
