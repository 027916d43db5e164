//! Events: the in-process bus that delivers committed events, and subscriptions that
//! replay a run's log from the store and then follow live, with no gap and no duplicate.
//!
//! The bus never blocks a publisher: a subscriber that falls behind loses its place in
//! its run's channel and catches up from the store, which holds every event. Nobody polls
//! the store per subscriber: events committed in this process arrive through the bus, and
//! those committed by another process (another `corral serve` on the same Postgres, a
//! `corral run` on the same SQLite file) through one watcher per bus ([`watch`]), which
//! reads each new event once and publishes it here. When the watcher loses track (its
//! connection dropped, a read failed), every subscriber is told to resync from the store.

mod watch;
pub use watch::listener_name;

use crate::store::{Event, Store};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Delivers committed events to their subscribers: a run's subscribers get that run's
/// events and a tenant stream its tenant's, nothing else, so a quiet subscriber is never
/// woken by the rest of the process's traffic.
#[derive(Debug, Clone, Default)]
pub struct Bus {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    topics: Mutex<Topics>,
    /// The database other processes commit to, watched once a subscription exists.
    store: Option<Store>,
    /// The watcher's tasks, which stop with the bus.
    watcher: Mutex<Option<watch::Handles>>,
    /// Shared clocks for stream heartbeats, one per period.
    tickers: Mutex<HashMap<Duration, tokio::sync::watch::Sender<u64>>>,
    tokens: Mutex<Tokens>,
    /// Bumped when a token in use was found revoked.
    revocations: tokio::sync::watch::Sender<u64>,
    /// Asks the watcher to check the tokens in use (a new one, or a change seen).
    check_tokens: Arc<tokio::sync::Notify>,
    /// Store reads made by this bus's followers (not by its watcher).
    follower_reads: AtomicU64,
}

/// Token ids that open streams use, and which of them were found revoked.
#[derive(Debug, Default)]
struct Tokens {
    in_use: HashMap<String, usize>,
    revoked: HashSet<String>,
}

#[derive(Debug, Default)]
struct Topics {
    runs: HashMap<String, RunTopic>,
    tenants: HashMap<String, TenantTopic>,
}

/// A committed event with its JSON text, serialized once however many streams send it.
#[derive(Debug)]
pub struct Published {
    /// The event.
    pub event: Event,
    /// Its JSON (one line: control characters are escaped); `None` if it could not be
    /// serialized.
    pub json: Option<String>,
}

impl Published {
    fn new(event: Event) -> Arc<Published> {
        let json = serde_json::to_string(&event).ok();
        Arc::new(Published { event, json })
    }
}

impl std::ops::Deref for Published {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

/// What travels on a topic's channel.
#[derive(Debug, Clone)]
enum Delivery {
    Event(Arc<Published>),
    /// The watcher may have missed commits: re-read the store.
    Resync,
}

#[derive(Debug)]
struct RunTopic {
    tx: broadcast::Sender<Delivery>,
    /// The highest seq published to this topic (0: none yet): older ones are duplicates.
    published: i64,
}

#[derive(Debug)]
struct TenantTopic {
    tx: broadcast::Sender<Delivery>,
    /// Per run of the tenant, the highest seq published (duplicates dropped): the runs
    /// still going, and the last [`FINISHED_KEPT`] to finish, whose final event the
    /// watcher may still read again (reading ahead, or seeing this process's own commit).
    published: HashMap<String, i64>,
    /// The finished runs kept in `published`, oldest first.
    finished: VecDeque<String>,
}

/// Finished runs a tenant topic remembers, so that a final event seen again is dropped.
const FINISHED_KEPT: usize = 1024;

/// Events a run's subscribers may fall behind by before they catch up from the store
/// (a channel per run with subscribers: kept small, since a lagging reader loses nothing).
const RUN_BUFFER: usize = 64;
/// The same for a tenant stream, which sees every run of its tenant and cannot catch up.
const TENANT_BUFFER: usize = 4096;

/// Which topic a [`Subscription`] listens to.
#[derive(Debug, Clone)]
enum Topic {
    Run(String),
    Tenant(String),
}

/// A receiver of one topic's events; the topic is dropped with its last subscription.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Delivery>,
    topic: Topic,
    bus: Bus,
}

impl Subscription {
    /// The next event, or why there is none: `Lagged(n)`, this subscriber missed `n`
    /// events (0: an unknown number, the watcher lost track of other processes' commits);
    /// catch up from the store.
    pub async fn recv(&mut self) -> Result<Arc<Published>, broadcast::error::RecvError> {
        match self.rx.recv().await? {
            Delivery::Event(event) => Ok(event),
            Delivery::Resync => Err(broadcast::error::RecvError::Lagged(0)),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut topics = self.bus.topics();
        // This receiver still counts: it is the last one when the count is 1.
        match &self.topic {
            Topic::Run(k) => {
                if topics
                    .runs
                    .get(k)
                    .is_some_and(|t| t.tx.receiver_count() <= 1)
                {
                    topics.runs.remove(k);
                }
            }
            Topic::Tenant(k) => {
                if topics
                    .tenants
                    .get(k)
                    .is_some_and(|t| t.tx.receiver_count() <= 1)
                {
                    topics.tenants.remove(k);
                }
            }
        }
    }
}

impl Bus {
    /// An empty bus that sees only what is published to it.
    pub fn new() -> Self {
        Bus::default()
    }

    /// A bus that also delivers what other processes commit to `store`: from its first
    /// subscription on, one watcher (a Postgres `LISTEN`, or one SQLite poller) turns
    /// their commits into publications here.
    pub fn watching(store: Store) -> Self {
        Bus {
            inner: Arc::new(Inner {
                store: Some(store),
                ..Inner::default()
            }),
        }
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, Topics> {
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes a committed event to its run's and its tenant's subscribers. Call only
    /// after the transaction that wrote it committed. Never blocks. An event already
    /// published (the watcher and this process both saw it) is not sent again.
    pub fn publish(&self, event: Event) {
        let mut topics = self.topics();
        let topics = &mut *topics;
        let run = topics
            .runs
            .get_mut(&event.run_id)
            .filter(|t| event.seq > t.published);
        let tenant = topics.tenants.get_mut(&event.tenant_id).filter(|t| {
            t.published
                .get(&event.run_id)
                .is_none_or(|&seq| event.seq > seq)
        });
        if run.is_none() && tenant.is_none() {
            return;
        }
        let event = Published::new(event);
        // No receivers is fine: the event is in the store.
        if let Some(topic) = run {
            topic.published = event.seq;
            let _ = topic.tx.send(Delivery::Event(event.clone()));
        }
        if let Some(topic) = tenant {
            topic.published.insert(event.run_id.clone(), event.seq);
            if event.is_final() {
                // After a run's final event only copies of it come (soon), or, if it is
                // restarted, events with higher seqs, which pass a forgotten entry too:
                // so the oldest finished runs can be forgotten.
                topic.finished.push_back(event.run_id.clone());
                if topic.finished.len() > FINISHED_KEPT
                    && let Some(old) = topic.finished.pop_front()
                {
                    topic.published.remove(&old);
                }
            }
            let _ = topic.tx.send(Delivery::Event(event));
        }
    }

    /// Everything published for run `run_id` from now on.
    pub fn run_receiver(&self, run_id: &str) -> Subscription {
        self.subscribe(Topic::Run(run_id.to_string()))
    }

    /// Everything published for tenant `tenant_id`'s runs from now on.
    pub fn tenant_receiver(&self, tenant_id: &str) -> Subscription {
        self.subscribe(Topic::Tenant(tenant_id.to_string()))
    }

    fn subscribe(&self, topic: Topic) -> Subscription {
        self.start_watcher();
        let mut topics = self.topics();
        let rx = match &topic {
            Topic::Run(k) => match topics.runs.get(k) {
                Some(t) => t.tx.subscribe(),
                None => {
                    let (tx, rx) = broadcast::channel(RUN_BUFFER);
                    topics.runs.insert(k.clone(), RunTopic { tx, published: 0 });
                    rx
                }
            },
            Topic::Tenant(k) => match topics.tenants.get(k) {
                Some(t) => t.tx.subscribe(),
                None => {
                    let (tx, rx) = broadcast::channel(TENANT_BUFFER);
                    let topic = TenantTopic {
                        tx,
                        published: HashMap::new(),
                        finished: VecDeque::new(),
                    };
                    topics.tenants.insert(k.clone(), topic);
                    rx
                }
            },
        };
        drop(topics);
        Subscription {
            rx,
            topic,
            bus: self.clone(),
        }
    }

    /// How many store reads this bus's followers have made (not its watcher): for tests,
    /// which check that an idle subscriber makes none.
    pub fn follower_reads(&self) -> u64 {
        self.inner.follower_reads.load(Ordering::Relaxed)
    }

    /// How many runs and tenants have subscribers (for tests and metrics).
    pub fn topic_counts(&self) -> (usize, usize) {
        let topics = self.topics();
        (topics.runs.len(), topics.tenants.len())
    }

    /// Starts the watcher of other processes' commits now (once; it also starts by itself
    /// at the first subscription), if this bus has a store and a runtime to run it on.
    pub fn start_watcher(&self) {
        let Some(store) = &self.inner.store else {
            return;
        };
        let mut watcher = self
            .inner
            .watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if watcher.is_none() {
            *watcher = watch::start(
                store.clone(),
                Arc::downgrade(&self.inner),
                self.inner.check_tokens.clone(),
            );
        }
    }

    /// Where another process's events of run `run_id` (tenant `tenant_id`), seqs
    /// `first..=last`, should be read from (the seq after which they are new here), or
    /// `None` when nobody here follows them or they were all published already.
    fn wants(&self, run_id: &str, tenant_id: &str, first: i64, last: i64) -> Option<i64> {
        let topics = self.topics();
        // A topic that has published nothing since it was made has subscribers that read
        // the store after subscribing: what they may lack was committed after, and the
        // first such commit seen is this one, so reading from just before it suffices.
        let from_run = topics.runs.get(run_id).map(|t| {
            if t.published > 0 {
                t.published
            } else {
                first - 1
            }
        });
        let from_tenant = topics
            .tenants
            .get(tenant_id)
            .map(|t| t.published.get(run_id).copied().unwrap_or(first - 1));
        let from = match (from_run, from_tenant) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        (from < last).then_some(from.max(0))
    }

    /// Tells subscribers to re-read the store: the watcher may have missed commits.
    /// Tenant streams (live only) are told too unless `runs_only`.
    fn resync(&self, runs_only: bool) {
        let topics = self.topics();
        for topic in topics.runs.values() {
            let _ = topic.tx.send(Delivery::Resync);
        }
        if !runs_only {
            for topic in topics.tenants.values() {
                let _ = topic.tx.send(Delivery::Resync);
            }
        }
    }

    /// A clock shared by every stream of this bus with the same period: one timer, not
    /// one per stream. Its value goes up by one each `period`.
    pub fn ticker(&self, period: Duration) -> tokio::sync::watch::Receiver<u64> {
        let mut tickers = self
            .inner
            .tickers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = tickers.get(&period) {
            return tx.subscribe();
        }
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        tickers.insert(period, tx);
        let bus = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                let Some(bus) = bus.upgrade() else { return };
                let tickers = bus.tickers.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(tx) = tickers.get(&period) {
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        });
        rx
    }

    /// Watches token `token_id` for revocation while the returned guard lives: the
    /// watcher checks the tokens in use when it sees a change (any process's), never per
    /// stream on a timer.
    pub fn watch_token(&self, token_id: &str) -> TokenWatch {
        self.start_watcher();
        let first = {
            let mut tokens = self
                .inner
                .tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = tokens.in_use.entry(token_id.to_string()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            // Revoked between its check and now? The watcher looks once more.
            self.inner.check_tokens.notify_one();
        }
        TokenWatch {
            changes: self.inner.revocations.subscribe(),
            token_id: token_id.to_string(),
            bus: self.clone(),
        }
    }

    fn tokens_in_use(&self) -> Vec<String> {
        let tokens = self
            .inner
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tokens.in_use.keys().cloned().collect()
    }

    /// Records which of `checked` (the tokens in use when checked) are no longer live.
    fn tokens_checked(&self, checked: &[String], live: &HashSet<String>) {
        let mut changed = false;
        {
            let mut tokens = self
                .inner
                .tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for id in checked {
                if !live.contains(id) && tokens.in_use.contains_key(id) {
                    changed |= tokens.revoked.insert(id.clone());
                }
            }
        }
        if changed {
            self.inner
                .revocations
                .send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// A stream's hold on its token: [`TokenWatch::revoked`] turns true once the watcher
/// finds the token revoked or deleted.
#[derive(Debug)]
pub struct TokenWatch {
    changes: tokio::sync::watch::Receiver<u64>,
    token_id: String,
    bus: Bus,
}

impl TokenWatch {
    /// Waits until some token in use was found revoked (then check [`TokenWatch::revoked`]).
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether this token was found revoked.
    pub fn revoked(&self) -> bool {
        let tokens = self
            .bus
            .inner
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tokens.revoked.contains(&self.token_id)
    }
}

impl Drop for TokenWatch {
    fn drop(&mut self) {
        let mut tokens = self
            .bus
            .inner
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = tokens.in_use.get_mut(&self.token_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                tokens.in_use.remove(&self.token_id);
                tokens.revoked.remove(&self.token_id);
            }
        }
    }
}

/// Events read from the store at a time.
const PAGE: i64 = 500;
/// A failed store read is tried again after this.
const RETRY: Duration = Duration::from_millis(250);

/// One run's events after a position, in order, each once, ending after the final event
/// (the latest one: a restarted run has one per segment, and a replay reads through the
/// earlier ones):
/// the log replayed from the store, then live from the bus, back to the store after a gap,
/// a lag or a resync. No task of its own: whoever drives [`Follower::next`] runs it, and
/// while it waits it holds only its bus receiver.
#[derive(Debug)]
pub struct Follower {
    store: Store,
    live: Subscription,
    run_id: Arc<str>,
    last: i64,
    page: std::vec::IntoIter<Event>,
    /// The store may hold events this follower has not delivered.
    catch_up: bool,
    done: bool,
}

impl Follower {
    /// Follows run `run_id` after event `after` (0 = from the start).
    pub fn new(store: Store, bus: &Bus, run_id: &str, after: i64) -> Follower {
        // Subscribe to the bus before reading the log, so nothing committed in between is missed.
        let live = bus.run_receiver(run_id);
        Follower {
            store,
            live,
            run_id: Arc::from(run_id),
            last: after,
            page: Vec::new().into_iter(),
            catch_up: true,
            done: false,
        }
    }

    /// The next event, or `None` once the final one was delivered (or the bus is gone).
    /// Cancel-safe: dropping the future loses nothing (a store read is simply redone).
    pub async fn next(&mut self) -> Option<Arc<Published>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.page.next() {
                if event.seq <= self.last {
                    continue;
                }
                return Some(self.deliver(Published::new(event)));
            }
            if self.catch_up {
                self.read_store().await;
                continue;
            }
            match self.live.recv().await {
                Ok(event) => {
                    if event.seq <= self.last {
                        continue;
                    }
                    if event.seq != self.last + 1 {
                        self.catch_up = true;
                        continue;
                    }
                    return Some(self.deliver(event));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Whether the event just delivered was the run's last: its final event, with no
    /// more of its log after it.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn deliver(&mut self, event: Arc<Published>) -> Arc<Published> {
        self.last = event.seq;
        // A restarted run has a final event per segment: one replayed from the log with
        // more of the log after it (in this page, or in the next when the page was full)
        // is not the end. The stream ends at the final event that is the latest.
        self.done = event.is_final() && self.page.as_slice().is_empty() && !self.catch_up;
        event
    }

    /// One page of the log after `last`; at the end of the log, whether the run is over.
    /// State changes only after both reads, so a cancelled read changes nothing.
    async fn read_store(&mut self) {
        self.live
            .bus
            .inner
            .follower_reads
            .fetch_add(1, Ordering::Relaxed);
        // Boxed: the store's futures are large, and only a follower reading holds one.
        let read = Box::pin(self.store.events_after(&self.run_id, self.last, PAGE)).await;
        let page = match read {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!("event replay for {} failed: {e}", self.run_id);
                tokio::time::sleep(RETRY).await;
                return;
            }
        };
        // Nothing new and the run has ended: the caller has seen its final event already
        // (it resumed at or after it), so the stream is complete.
        let complete = page.is_empty() && {
            self.live
                .bus
                .inner
                .follower_reads
                .fetch_add(1, Ordering::Relaxed);
            let run = Box::pin(self.store.run(&self.run_id)).await;
            matches!(run, Ok(Some(run)) if run.is_terminal() && self.last >= run.next_seq - 1)
        };
        self.catch_up = i64::try_from(page.len()).unwrap_or(0) >= PAGE;
        self.done = complete;
        self.page = page.into_iter();
    }
}

/// Follows one run's events after `after` (0 = from the start), in order, each once.
/// The stream ends after the run's final event. Dropping the receiver stops the task.
pub fn subscribe(store: Store, bus: &Bus, run_id: String, after: i64) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(256);
    let mut follower = Follower::new(store, bus, &run_id, after);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                next = follower.next() => match next {
                    Some(event) => {
                        if tx.send(event.event.clone()).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(run: &str, tenant: &str, seq: i64) -> Event {
        Event {
            kind: "log".into(),
            run_id: run.into(),
            seq,
            ts: String::new(),
            payload: serde_json::Value::Null,
            tenant_id: tenant.into(),
        }
    }

    #[tokio::test]
    async fn a_subscriber_is_woken_only_by_its_own_run_or_tenant() {
        let bus = Bus::new();
        let mut run_a = bus.run_receiver("a");
        let mut tenant_t = bus.tenant_receiver("t");
        bus.publish(event("b", "u", 1));
        bus.publish(event("a", "t", 1));
        bus.publish(event("c", "t", 1));
        let got = run_a.recv().await.unwrap();
        assert_eq!(got.run_id, "a");
        assert!(
            run_a.rx.is_empty(),
            "run b's and c's events never reach run a"
        );
        assert_eq!(tenant_t.recv().await.unwrap().run_id, "a");
        assert_eq!(tenant_t.recv().await.unwrap().run_id, "c");
        assert!(
            tenant_t.rx.is_empty(),
            "tenant u's event never reaches tenant t"
        );
    }

    #[tokio::test]
    async fn an_event_published_twice_reaches_each_subscriber_once() {
        let bus = Bus::new();
        let mut run_a = bus.run_receiver("a");
        let mut tenant_t = bus.tenant_receiver("t");
        bus.publish(event("a", "t", 1));
        bus.publish(event("a", "t", 1));
        bus.publish(event("a", "t", 2));
        for rx in [&mut run_a, &mut tenant_t] {
            assert_eq!(rx.recv().await.unwrap().seq, 1);
            assert_eq!(rx.recv().await.unwrap().seq, 2);
            assert!(rx.rx.is_empty(), "the second copy of seq 1 was dropped");
        }
        // The watcher reads only what is new here.
        assert_eq!(bus.wants("a", "t", 2, 2), None);
        assert_eq!(bus.wants("a", "t", 3, 4), Some(2));
        assert_eq!(bus.wants("b", "u", 1, 1), None, "nobody follows run b");
    }

    #[tokio::test]
    async fn a_final_event_seen_again_is_not_sent_again() {
        let bus = Bus::new();
        let mut tenant_t = bus.tenant_receiver("t");
        let mut last = event("a", "t", 2);
        last.kind = "complete".into();
        last.payload = serde_json::json!({"all_done": true});
        bus.publish(event("a", "t", 1));
        bus.publish(last.clone());
        // The watcher, reading ahead or seeing this process's own commit, has it again.
        assert_eq!(bus.wants("a", "t", 2, 2), None);
        bus.publish(last);
        assert_eq!(tenant_t.recv().await.unwrap().seq, 1);
        assert!(tenant_t.recv().await.unwrap().is_final());
        assert!(tenant_t.rx.is_empty(), "the final event went out twice");
    }

    #[test]
    fn a_topic_goes_with_its_last_subscriber() {
        let bus = Bus::new();
        let first = bus.run_receiver("a");
        let second = bus.run_receiver("a");
        let tenant = bus.tenant_receiver("t");
        assert_eq!(bus.topic_counts(), (1, 1));
        drop(first);
        assert_eq!(
            bus.topic_counts(),
            (1, 1),
            "one subscriber of run a is left"
        );
        drop(second);
        drop(tenant);
        assert_eq!(bus.topic_counts(), (0, 0));
        // Publishing with no subscriber costs a lookup and allocates nothing.
        bus.publish(event("a", "t", 1));
        assert_eq!(bus.topic_counts(), (0, 0));
    }
}
