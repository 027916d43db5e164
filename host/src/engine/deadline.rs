//! A wall-clock deadline that can be paused, shared between the engine (which stops the
//! guest when it passes) and the host functions (which pause it while a step waits for a
//! person: waiting for an answer does not use the step's wall clock).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A pausable deadline. Clones share the same clock.
#[derive(Debug, Clone)]
pub struct Deadline {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

#[derive(Debug)]
struct State {
    at: Instant,
    paused_at: Option<Instant>,
    pauses: u32,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: Duration) -> Self {
        let now = Instant::now();
        Deadline {
            state: Arc::new(Mutex::new(State {
                at: now
                    .checked_add(limit)
                    .unwrap_or(now + Duration::from_secs(86_400 * 365)),
                paused_at: None,
                pauses: 0,
            })),
            changed: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the clock (nested pauses are counted).
    pub fn pause(&self) {
        let mut s = self.lock();
        if s.pauses == 0 {
            s.paused_at = Some(Instant::now());
        }
        s.pauses = s.pauses.saturating_add(1);
        drop(s);
        self.changed.notify_waiters();
    }

    /// Restarts the clock; the deadline moves later by the time spent paused.
    pub fn resume(&self) {
        let mut s = self.lock();
        s.pauses = s.pauses.saturating_sub(1);
        if s.pauses == 0
            && let Some(paused_at) = s.paused_at.take()
        {
            s.at += paused_at.elapsed();
        }
        drop(s);
        self.changed.notify_waiters();
    }

    /// Whether the deadline has passed (never while paused).
    pub fn expired(&self) -> bool {
        let s = self.lock();
        s.pauses == 0 && Instant::now() >= s.at
    }

    /// Resolves once the deadline has passed.
    pub async fn wait(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (at, paused) = {
                let s = self.lock();
                (s.at, s.pauses > 0)
            };
            if paused {
                changed.await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {
                    if self.expired() {
                        return;
                    }
                }
                _ = changed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paused_deadline_does_not_expire_and_resumes_later() {
        let d = Deadline::after(Duration::from_millis(50));
        d.pause();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!d.expired());
        d.resume();
        assert!(!d.expired(), "the paused time is added back");
        tokio::time::timeout(Duration::from_secs(10), d.wait())
            .await
            .unwrap();
        assert!(d.expired());
    }
}
