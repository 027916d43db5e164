//! Process metrics, rendered in Prometheus text format by `GET /metrics`. Counters and
//! histograms are atomics: recording never blocks and never allocates.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; 12],
    overflow: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        match BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .and_then(|i| self.counts.get(i))
        {
            Some(c) => c.fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Prometheus lines for this histogram.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.overflow.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// The process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Step attempt durations.
    pub step_duration: Histogram,
    /// Plugin load (validate + compile or cache) durations.
    pub plugin_load: Histogram,
    /// Fuel used by finished step attempts.
    pub fuel_used: AtomicU64,
    /// HTTP responses by class: 2xx, 4xx, 5xx.
    pub http: [AtomicU64; 3],
    open_streams: AtomicI64,
    /// Model input tokens, as providers reported them.
    pub model_input_tokens: AtomicU64,
    /// Model output tokens.
    pub model_output_tokens: AtomicU64,
    /// Model calls answered from the cache.
    pub model_cache_hits: AtomicU64,
    /// Model cost at the configured prices, in millionths of the price unit.
    pub model_cost_micros: AtomicU64,
}

impl Metrics {
    /// Adjusts the open-stream gauge.
    pub fn open_streams_add(&self, n: i64) {
        self.open_streams.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a model call's usage and cost (all tenants together: `/metrics` names no
    /// tenant).
    pub fn add_model_usage(&self, usage: &crate::models::Usage, cached: bool, cost: Option<f64>) {
        self.model_input_tokens
            .fetch_add(usage.input_tokens, Ordering::Relaxed);
        self.model_output_tokens
            .fetch_add(usage.output_tokens, Ordering::Relaxed);
        if cached {
            self.model_cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(cost) = cost.filter(|c| c.is_finite() && *c > 0.0) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked above
            let micros = (cost * 1e6).round() as u64;
            self.model_cost_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    /// The open-stream gauge.
    pub fn open_streams(&self) -> i64 {
        self.open_streams.load(Ordering::Relaxed)
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}
