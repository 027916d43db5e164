//! Events: the in-process bus that delivers committed events, and subscriptions that
//! replay a run's log from the store and then follow live, with no gap and no duplicate.
//!
//! The bus never blocks a publisher: a subscriber that falls behind loses its place in
//! the broadcast channel and catches up from the store, which holds every event.

use crate::store::{Event, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Delivers committed events to any number of subscribers.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new(4096)
    }
}

impl Bus {
    /// A bus that buffers `capacity` events for slow subscribers before they must catch
    /// up from the store.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Bus { tx }
    }

    /// Publishes a committed event. Call only after the transaction that wrote it committed.
    pub fn publish(&self, event: Event) {
        // No receivers is fine: the event is in the store.
        let _ = self.tx.send(Arc::new(event));
    }

    /// A raw receiver of everything published from now on.
    pub fn receiver(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
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
    let mut live = bus.receiver();
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
                    Ok(Ok(event)) if event.run_id == run_id => {
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
                    Ok(Ok(_)) => {}
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Err(broadcast::error::RecvError::Closed)) => return,
                    Err(_quiet) => break,
                }
            }
        }
    });
    rx
}
