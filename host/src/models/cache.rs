//! The response cache: answers to temperature-0 requests, per tenant, in memory, bounded
//! by a TTL, a count and a byte size (the oldest answers go first). It is per process: a
//! restart empties it, and several hosts on one database each keep their own.

use super::config::{CacheConfig, ModelConfig};
use super::{ChatRequest, ChatResponse};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A cache key: SHA-256 over the tenant, the provider, its URL, the model and the
/// request as JSON (with `max_tokens` resolved, so the default is part of the key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key of `request` to `m` for `tenant`; `None` if the request cannot be encoded.
    pub fn new(tenant: &str, m: &ModelConfig, request: &ChatRequest) -> Option<Self> {
        let body = serde_json::to_vec(request).ok()?;
        let mut h = Sha256::new();
        for part in [
            tenant.as_bytes(),
            m.provider.as_str().as_bytes(),
            m.base_url.trim_end_matches('/').as_bytes(),
            m.model.as_bytes(),
            &body,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Some(CacheKey(hex::encode(h.finalize())))
    }
}

struct Entry {
    answer: ChatResponse,
    size: usize,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<CacheKey, Entry>,
    order: VecDeque<CacheKey>,
    bytes: usize,
}

/// The bounded cache.
pub struct Cache {
    config: CacheConfig,
    inner: Mutex<Inner>,
}

fn size_of(a: &ChatResponse) -> usize {
    a.content.len()
        + a.tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len() + c.arguments.len() + 64)
            .sum::<usize>()
        + 128
}

impl Cache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        Cache {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.config.ttl_secs)
    }

    /// A fresh answer for `key`.
    pub fn get(&self, key: &CacheKey) -> Option<ChatResponse> {
        if self.config.ttl_secs == 0 {
            return None;
        }
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .entries
            .get(key)
            .filter(|e| e.at.elapsed() < self.ttl())
            .map(|e| e.answer.clone())
    }

    /// Keeps `answer` under `key`, dropping the oldest answers past the bounds.
    pub fn put(&self, key: CacheKey, answer: &ChatResponse) {
        let size = size_of(answer);
        if self.config.ttl_secs == 0 || self.config.max_entries == 0 || size > self.config.max_bytes
        {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes = inner.bytes.saturating_sub(old.size);
            inner.order.retain(|k| k != &key);
        }
        while inner.entries.len() >= self.config.max_entries
            || inner.bytes.saturating_add(size) > self.config.max_bytes
        {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.bytes = inner.bytes.saturating_sub(old.size);
            }
        }
        inner.bytes = inner.bytes.saturating_add(size);
        inner.order.push_back(key.clone());
        inner.entries.insert(
            key,
            Entry {
                answer: answer.clone(),
                size,
                at: Instant::now(),
            },
        );
    }

    /// How many answers it holds.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
