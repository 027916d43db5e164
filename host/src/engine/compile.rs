//! Compile slots shared fairly between tenants (SECURITY-CASES RES-19).
//!
//! Compiling a component is CPU-heavy and cannot be interrupted, so the host runs a few
//! at a time: `slots` compiles at once in all, **at most one per tenant**, and tenants
//! waiting for a slot are served in turn (round-robin), not in arrival order. However many
//! uploads one tenant queues, another tenant's upload waits for at most one slot to come
//! free per tenant ahead of it in the turn, never for the first tenant's whole backlog.
//!
//! A slot is held by a [`SlotGuard`] for as long as the compile really runs: when a caller
//! stops waiting (its request timed out or went away) the compile finishes in the
//! background and only then gives its slot back, so the count stays true.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;

/// The compile slots of one engine.
#[derive(Debug)]
pub struct CompileSlots {
    state: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    free: usize,
    /// Tenants with a compile running (at most one each).
    running: HashSet<String>,
    /// Tenants with callers waiting, in the order they are served.
    turn: VecDeque<String>,
    /// Each waiting tenant's callers, first come first served within the tenant.
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
}

impl Slots {
    /// Hands free slots to the next tenants in turn that have nothing running.
    fn dispatch(&mut self) {
        let mut i = 0;
        while self.free > 0 && i < self.turn.len() {
            let Some(tenant) = self.turn.get(i).cloned() else {
                break;
            };
            if self.running.contains(&tenant) {
                i += 1;
                continue;
            }
            let mut granted = false;
            if let Some(queue) = self.waiting.get_mut(&tenant) {
                // A caller that gave up while waiting dropped its receiver: skip it.
                while let Some(tx) = queue.pop_front() {
                    if tx.send(()).is_ok() {
                        granted = true;
                        break;
                    }
                }
            }
            let more = self.waiting.get(&tenant).is_some_and(|q| !q.is_empty());
            let _ = self.turn.remove(i);
            if more {
                // Served (or skipped): to the back of the turn.
                self.turn.push_back(tenant.clone());
            } else {
                self.waiting.remove(&tenant);
            }
            if granted {
                self.free -= 1;
                self.running.insert(tenant);
            }
        }
    }
}

impl CompileSlots {
    /// `slots` compiles at once (at least one).
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(CompileSlots {
            state: Mutex::new(Slots {
                free: slots.max(1),
                ..Slots::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a slot for `tenant`: one is free and the tenant has no compile running,
    /// and it is the tenant's turn.
    pub async fn acquire(self: &Arc<Self>, tenant: &str) -> SlotGuard {
        loop {
            let rx = {
                let mut s = self.lock();
                if s.free > 0 && !s.running.contains(tenant) && !s.waiting.contains_key(tenant) {
                    s.free -= 1;
                    s.running.insert(tenant.to_string());
                    return self.guard(tenant);
                }
                let (tx, rx) = oneshot::channel();
                s.waiting
                    .entry(tenant.to_string())
                    .or_default()
                    .push_back(tx);
                if !s.turn.iter().any(|t| t == tenant) {
                    s.turn.push_back(tenant.to_string());
                }
                rx
            };
            let mut waiter = Waiter {
                slots: self.clone(),
                tenant: tenant.to_string(),
                rx: Some(rx),
            };
            let granted = match waiter.rx.as_mut() {
                Some(rx) => rx.await.is_ok(),
                None => false,
            };
            waiter.rx = None;
            if granted {
                return self.guard(tenant);
            }
        }
    }

    fn guard(self: &Arc<Self>, tenant: &str) -> SlotGuard {
        SlotGuard {
            slots: self.clone(),
            tenant: tenant.to_string(),
        }
    }

    fn release(&self, tenant: &str) {
        let mut s = self.lock();
        s.free += 1;
        s.running.remove(tenant);
        // The tenant just had its turn: others waiting go before its next compile.
        if let Some(i) = s.turn.iter().position(|t| t == tenant)
            && let Some(t) = s.turn.remove(i)
        {
            s.turn.push_back(t);
        }
        s.dispatch();
    }

    /// Compiles running now.
    pub fn running(&self) -> usize {
        self.lock().running.len()
    }

    /// Callers waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.values().map(VecDeque::len).sum()
    }
}

/// A held compile slot; dropping it gives the slot to the next tenant in turn.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Arc<CompileSlots>,
    tenant: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.release(&self.tenant);
    }
}

/// A caller waiting for a slot. If it is dropped (the caller gave up) after a slot was
/// handed to it, the slot goes back.
struct Waiter {
    slots: Arc<CompileSlots>,
    tenant: String,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        // Under the lock, so no slot can be handed over between the look and the drop.
        let handed = {
            let _s = self.slots.lock();
            let handed = rx.try_recv().is_ok();
            drop(rx);
            handed
        };
        if handed {
            self.slots.release(&self.tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fake slow compile: holds a slot until told to finish.
    async fn job(
        slots: Arc<CompileSlots>,
        tenant: &'static str,
        done: Arc<tokio::sync::Notify>,
        log: Arc<Mutex<Vec<&'static str>>>,
    ) {
        let _slot = slots.acquire(tenant).await;
        log.lock().unwrap().push(tenant);
        done.notified().await;
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn res_19_one_tenant_holding_slots_does_not_block_another_beyond_one_slot() {
        let slots = CompileSlots::new(2);
        let log = Arc::new(Mutex::new(Vec::new()));
        let finish = Arc::new(tokio::sync::Notify::new());
        // Tenant a queues ten slow compiles; it gets one slot, never both.
        let mut a = Vec::new();
        for _ in 0..10 {
            a.push(tokio::spawn(job(
                slots.clone(),
                "a",
                finish.clone(),
                log.clone(),
            )));
        }
        settle().await;
        assert_eq!(slots.running(), 1, "one tenant, one slot");
        assert_eq!(slots.waiting(), 9);
        // Tenant b starts at once on the free slot, though a's backlog came first.
        let b = tokio::spawn(job(slots.clone(), "b", finish.clone(), log.clone()));
        settle().await;
        assert_eq!(slots.running(), 2);
        assert_eq!(*log.lock().unwrap(), ["a", "b"]);

        // With every slot taken, c waits for exactly one to come free, not for a's nine.
        let c = tokio::spawn(job(slots.clone(), "c", finish.clone(), log.clone()));
        settle().await;
        assert_eq!(slots.running(), 2);
        finish.notify_one(); // one of the running compiles ends
        settle().await;
        let order = log.lock().unwrap().clone();
        assert_eq!(order.len(), 3, "{order:?}");
        assert_eq!(order.get(2), Some(&"c"), "c is next in turn: {order:?}");

        // Everything drains, and the count comes back to zero.
        for _ in 0..40 {
            finish.notify_waiters();
            settle().await;
            if slots.running() == 0 && slots.waiting() == 0 {
                break;
            }
        }
        for t in a.into_iter().chain([b, c]) {
            t.await.unwrap();
        }
        assert_eq!(slots.running(), 0);
        assert_eq!(slots.waiting(), 0);
        assert_eq!(log.lock().unwrap().len(), 12);
    }

    #[tokio::test]
    async fn res_19_a_caller_that_gives_up_waiting_loses_no_slot() {
        let slots = CompileSlots::new(1);
        let held = slots.acquire("a").await;
        // b waits, then gives up (its request timed out).
        let waited = tokio::time::timeout(Duration::from_millis(50), slots.acquire("b")).await;
        assert!(waited.is_err());
        assert_eq!(slots.waiting(), 1, "the dead waiter is skipped lazily");
        drop(held);
        assert_eq!(slots.running(), 0, "no slot went to the caller that left");
        let again = tokio::time::timeout(Duration::from_secs(5), slots.acquire("b")).await;
        assert!(again.is_ok(), "the slot is free again");
        drop(again);
        assert_eq!(slots.running(), 0);
    }
}
