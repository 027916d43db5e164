//! The one watcher per bus of what other processes commit, so that no subscriber polls:
//!
//! - Postgres: one `LISTEN` connection on the schema's channel. A trigger notifies every
//!   event insert inside its transaction (migration 0007), so a notification arrives
//!   exactly when an event committed, on whichever host.
//! - SQLite: one connection of its own polls `PRAGMA data_version` (it changes when any
//!   other connection, of this process or another, committed) and then reads the heads of
//!   the new events by row id (only the last row id while nobody here subscribes).
//!
//! Either way the watcher reads the new events of the runs and tenants someone here
//! follows, once per topic, and publishes them on the bus (which drops what this process
//! published itself). Whenever it may have missed something (it started, its connection
//! dropped, a read failed) it tells every subscriber to resync from the store.

use super::{Bus, Inner};
use crate::store::watch as db;
use crate::store::{Backend, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// The watcher's tasks, stopped when the bus goes.
#[derive(Debug)]
pub(super) struct Handles(Vec<tokio::task::AbortHandle>);

impl Drop for Handles {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// How often the SQLite poller asks whether anything was committed.
const POLL: Duration = Duration::from_millis(50);
/// After a failure, the wait before connecting again.
const BACKOFF: Duration = Duration::from_millis(500);
/// Event heads read at a time (SQLite).
const HEADS: i64 = 1000;
/// Events read at a time for one run.
const PAGE: i64 = 500;

/// Starts the watcher of `store` for the bus `inner` (None outside a tokio runtime: then
/// the bus sees only what this process publishes).
pub(super) fn start(store: Store, inner: Weak<Inner>, tokens: Arc<Notify>) -> Option<Handles> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let events = match store.backend() {
        Backend::Sqlite => rt.spawn(sqlite(store.clone(), inner.clone())),
        Backend::Postgres => rt.spawn(postgres(store.clone(), inner.clone())),
    };
    let checker = rt.spawn(check_tokens(store, inner, tokens));
    Some(Handles(vec![events.abort_handle(), checker.abort_handle()]))
}

fn bus(inner: &Weak<Inner>) -> Option<Bus> {
    inner.upgrade().map(|inner| Bus { inner })
}

/// Runs `session` again after each failure (with a resync), until the bus goes.
async fn supervise<F, Fut>(inner: Weak<Inner>, mut session: F)
where
    F: FnMut(Weak<Inner>, bool) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut first = true;
    loop {
        match session(inner.clone(), first).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("event watcher: {e}; reconnecting"),
        }
        first = false;
        tokio::time::sleep(BACKOFF).await;
        if inner.strong_count() == 0 {
            return;
        }
    }
}

/// Once connected: what was committed before is in the store, what comes after will be
/// seen, so whoever followed something meanwhile re-reads the store. At the very first
/// start only run streams need to (tenant streams are live from their start anyway).
fn connected(inner: &Weak<Inner>, first: bool) -> Option<Bus> {
    let bus = bus(inner)?;
    bus.resync(first);
    bus.inner.check_tokens.notify_one();
    Some(bus)
}

async fn sqlite(store: Store, inner: Weak<Inner>) {
    supervise(inner, |inner, first| sqlite_session(&store, inner, first)).await;
}

async fn sqlite_session(store: &Store, inner: Weak<Inner>, first: bool) -> Result<(), StoreError> {
    let mut conn = db::sqlite_connect(store.url()).await?;
    let mut version = db::sqlite_data_version(&mut conn).await?;
    let mut after = db::sqlite_last_rowid(&mut conn).await?;
    if connected(&inner, first).is_none() {
        return Ok(());
    }
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(bus) = bus(&inner) else {
            return Ok(());
        };
        let now = db::sqlite_data_version(&mut conn).await?;
        if now == version {
            continue;
        }
        version = now;
        bus.inner.check_tokens.notify_one();
        if bus.topic_counts() == (0, 0) {
            // Nobody here follows anything: skip the new events rather than read their
            // heads. The last row id is read before looking again, so whoever subscribes
            // after that look reads the store after every event skipped.
            let last = db::sqlite_last_rowid(&mut conn).await?;
            if bus.topic_counts() == (0, 0) {
                after = last;
                continue;
            }
        }
        loop {
            let heads = db::sqlite_heads_after(&mut conn, after, HEADS).await?;
            let full = i64::try_from(heads.len()).unwrap_or(0) >= HEADS;
            if let Some(head) = heads.last() {
                after = head.rowid;
            }
            deliver(
                store,
                &bus,
                heads.into_iter().map(|h| (h.run_id, h.tenant_id, h.seq)),
            )
            .await;
            if !full {
                break;
            }
        }
    }
}

async fn postgres(store: Store, inner: Weak<Inner>) {
    supervise(inner, |inner, first| postgres_session(&store, inner, first)).await;
}

/// The `application_name` of the watcher's connection on channel `channel`.
pub fn listener_name(channel: &str) -> String {
    format!("corral watch {channel}")
}

async fn postgres_session(
    store: &Store,
    inner: Weak<Inner>,
    first: bool,
) -> Result<(), StoreError> {
    use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
    let channel = store
        .notify_channel()
        .await?
        .ok_or_else(|| StoreError::Corrupt("no notification channel".into()))?;
    let options: PgConnectOptions = store.url().parse()?;
    // A pool of one, which PgListener uses to reconnect.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.application_name(&listener_name(&channel)))
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(&channel).await?;
    if connected(&inner, first).is_none() {
        return Ok(());
    }
    loop {
        let notification = listener.try_recv().await?;
        let Some(bus) = bus(&inner) else {
            return Ok(());
        };
        let Some(notification) = notification else {
            // The connection dropped and is back (listening again): whatever was
            // notified in between is lost, so everyone re-reads the store.
            tracing::warn!("event watcher: the listen connection dropped; resyncing");
            bus.resync(false);
            bus.inner.check_tokens.notify_one();
            continue;
        };
        let mut words = notification.payload().split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("e"), Some(run), Some(tenant), Some(seq)) => {
                let Ok(seq) = seq.parse::<i64>() else {
                    continue;
                };
                let head = (run.to_string(), tenant.to_string(), seq);
                deliver(store, &bus, std::iter::once(head)).await;
            }
            (Some("t"), ..) => bus.inner.check_tokens.notify_one(),
            _ => {}
        }
    }
}

/// Reads and publishes the events named by `heads` (run, tenant, seq) that someone here
/// follows and has not had yet: one read per run, however many subscribers it has. A read
/// that fails sends everyone back to the store.
async fn deliver(store: &Store, bus: &Bus, heads: impl Iterator<Item = (String, String, i64)>) {
    let mut runs: Vec<(String, String, i64, i64)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (run, tenant, seq) in heads {
        match index.get(&run).and_then(|&i| runs.get_mut(i)) {
            Some(entry) => {
                entry.2 = entry.2.min(seq);
                entry.3 = entry.3.max(seq);
            }
            None => {
                index.insert(run.clone(), runs.len());
                runs.push((run, tenant, seq, seq));
            }
        }
    }
    for (run, tenant, first, last) in runs {
        let Some(mut from) = bus.wants(&run, &tenant, first, last) else {
            continue;
        };
        loop {
            let page = match store.events_after(&run, from, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!("event watcher: reading run {run} failed: {e}; resyncing");
                    bus.resync(false);
                    return;
                }
            };
            let full = i64::try_from(page.len()).unwrap_or(0) >= PAGE;
            for event in page {
                from = event.seq;
                bus.publish(event);
            }
            if !full {
                break;
            }
        }
    }
}

/// Checks the tokens open streams use whenever asked (a new token, a change seen): one
/// query for all of them, never a timer per stream.
async fn check_tokens(store: Store, inner: Weak<Inner>, asked: Arc<Notify>) {
    loop {
        asked.notified().await;
        let Some(bus) = bus(&inner) else {
            return;
        };
        let ids = bus.tokens_in_use();
        if ids.is_empty() {
            continue;
        }
        match store.live_tokens(&ids).await {
            Ok(live) => bus.tokens_checked(&ids, &live),
            Err(e) => {
                tracing::warn!("token check failed: {e}");
                drop(bus);
                tokio::time::sleep(BACKOFF).await;
                asked.notify_one();
            }
        }
    }
}
