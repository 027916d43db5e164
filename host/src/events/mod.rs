//! Events: the in-process bus that delivers committed events, and subscriptions that
//! replay a run's log from the store and then follow live, with no gap and no duplicate.
//!
//! The bus never blocks a publisher: a subscriber that falls behind loses its place in
//! its run's channel and catches up from the store, which holds every event.

use crate::store::{Event, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Delivers committed events to their subscribers: a run's subscribers get that run's
/// events and a tenant stream its tenant's, nothing else, so a quiet subscriber is never
/// woken by the rest of the process's traffic.
#[derive(Debug, Clone, Default)]
pub struct Bus {
    topics: Arc<Mutex<Topics>>,
}

#[derive(Debug, Default)]
struct Topics {
    runs: HashMap<String, broadcast::Sender<Arc<Event>>>,
    tenants: HashMap<String, broadcast::Sender<Arc<Event>>>,
}

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
    rx: broadcast::Receiver<Arc<Event>>,
    topic: Topic,
    topics: Arc<Mutex<Topics>>,
}

impl Subscription {
    /// The next event, or why there is none (lagged: catch up from the store).
    pub async fn recv(&mut self) -> Result<Arc<Event>, broadcast::error::RecvError> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let map = match &self.topic {
            Topic::Run(_) => &mut topics.runs,
            Topic::Tenant(_) => &mut topics.tenants,
        };
        let key = match &self.topic {
            Topic::Run(k) | Topic::Tenant(k) => k,
        };
        // This receiver still counts: it is the last one when the count is 1.
        if map.get(key).is_some_and(|tx| tx.receiver_count() <= 1) {
            map.remove(key);
        }
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Bus::default()
    }

    /// Publishes a committed event to its run's and its tenant's subscribers. Call only
    /// after the transaction that wrote it committed. Never blocks.
    pub fn publish(&self, event: Event) {
        let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let run = topics.runs.get(&event.run_id);
        let tenant = topics.tenants.get(&event.tenant_id);
        if run.is_none() && tenant.is_none() {
            return;
        }
        let event = Arc::new(event);
        // No receivers is fine: the event is in the store.
        if let Some(tx) = run {
            let _ = tx.send(event.clone());
        }
        if let Some(tx) = tenant {
            let _ = tx.send(event);
        }
    }

    /// Everything published for run `run_id` from now on.
    pub fn run_receiver(&self, run_id: &str) -> Subscription {
        self.subscribe(Topic::Run(run_id.to_string()), RUN_BUFFER)
    }

    /// Everything published for tenant `tenant_id`'s runs from now on.
    pub fn tenant_receiver(&self, tenant_id: &str) -> Subscription {
        self.subscribe(Topic::Tenant(tenant_id.to_string()), TENANT_BUFFER)
    }

    fn subscribe(&self, topic: Topic, capacity: usize) -> Subscription {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, key) = match &topic {
            Topic::Run(k) => (&mut topics.runs, k),
            Topic::Tenant(k) => (&mut topics.tenants, k),
        };
        let rx = match map.get(key) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(capacity);
                map.insert(key.clone(), tx);
                rx
            }
        };
        drop(topics);
        Subscription {
            rx,
            topic,
            topics: self.topics.clone(),
        }
    }

    /// How many runs and tenants have subscribers (for tests and metrics).
    pub fn topic_counts(&self) -> (usize, usize) {
        let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        (topics.runs.len(), topics.tenants.len())
    }
}

/// How often a subscriber re-reads the store when the bus is quiet: this is how events
/// written by another process (a `corral run` next to a `corral events --follow`) arrive.
const POLL: Duration = Duration::from_millis(250);
/// Events read from the store at a time.
const PAGE: i64 = 500;

/// Follows one run's events after `after` (0 = from the start), in order, each once.
/// The stream ends after the run's final event. Dropping the receiver stops the task.
pub fn subscribe(store: Store, bus: &Bus, run_id: String, after: i64) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(256);
    // Subscribe to the bus before reading the log, so nothing committed in between is missed.
    let mut live = bus.run_receiver(&run_id);
    tokio::spawn(async move {
        let mut last = after;
        loop {
            // Catch up from the log.
            loop {
                let page = match store.events_after(&run_id, last, PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!("event replay for {run_id} failed: {e}");
                        tokio::time::sleep(POLL).await;
                        continue;
                    }
                };
                let full = i64::try_from(page.len()).unwrap_or(0) == PAGE;
                // Nothing new and the run has ended: the caller has seen its final event
                // already (it resumed at or after it), so the stream is complete.
                if page.is_empty()
                    && let Ok(Some(run)) = store.run(&run_id).await
                    && run.is_terminal()
                    && last >= run.next_seq - 1
                {
                    return;
                }
                for event in page {
                    last = event.seq;
                    let is_final = event.is_final();
                    if tx.send(event).await.is_err() || is_final {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            // Follow live until a gap, a lag or a quiet spell sends us back to the log.
            loop {
                match tokio::time::timeout(POLL, live.recv()).await {
                    Ok(Ok(event)) => {
                        if event.seq <= last {
                            continue;
                        }
                        if event.seq != last + 1 {
                            break;
                        }
                        last = event.seq;
                        let is_final = event.is_final();
                        if tx.send(Event::clone(&event)).await.is_err() || is_final {
                            return;
                        }
                    }
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Err(broadcast::error::RecvError::Closed)) => return,
                    Err(_quiet) => break,
                }
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
