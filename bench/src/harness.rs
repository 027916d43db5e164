//! Measuring contenders side by side, and the rows the report is made of.
//!
//! Every metric runs Corral and its baseline(s) in the same process, alternately: each
//! round runs one batch of every contender, starting with a different contender each
//! round, so drift (another build on the machine, CPU frequency, page cache) hits all
//! of them alike. A contender's figure is the median of its per-round medians; the
//! ratio of two such medians holds on a noisy machine where absolute times do not.

use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// How much to measure for one comparison.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Plan {
    /// Rounds; each runs one batch of every contender.
    pub rounds: usize,
    /// Timed iterations per batch.
    pub iters: usize,
    /// Untimed iterations of every contender before the first round.
    pub warmup: usize,
}

impl Plan {
    /// A plan.
    pub const fn new(rounds: usize, iters: usize, warmup: usize) -> Self {
        Plan {
            rounds,
            iters,
            warmup,
        }
    }
}

/// The timings of one contender.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    /// Every timed iteration.
    pub all: Vec<Duration>,
    /// The median of each round's batch.
    pub round_medians: Vec<Duration>,
    /// Iterations per second of each round's batch (iterations / summed time).
    pub round_rates: Vec<f64>,
}

impl Samples {
    /// The median of the per-round medians.
    pub fn median(&self) -> Option<Duration> {
        median(&self.round_medians)
    }

    /// The 99th percentile of all iterations (nearest rank).
    pub fn p99(&self) -> Option<Duration> {
        percentile(&self.all, 0.99)
    }

    /// Adds one round's batch of timings measured outside [`side_by_side`] (latencies
    /// collected while a batch ran): its median, its rate, and every sample.
    pub fn push_batch(&mut self, batch: &[Duration]) {
        if let Some(m) = median(batch) {
            self.round_medians.push(m);
        }
        let total: Duration = batch.iter().sum();
        if !total.is_zero() {
            self.round_rates
                .push(batch.len() as f64 / total.as_secs_f64());
        }
        self.all.extend_from_slice(batch);
    }

    /// The median per-round rate, per second.
    pub fn rate(&self) -> Option<f64> {
        let mut rates: Vec<f64> = self
            .round_rates
            .iter()
            .copied()
            .filter(|r| r.is_finite())
            .collect();
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied()
    }
}

/// For profiling: `CORRAL_BENCH_SOLO=i` runs only contender `i` of every comparison
/// (0 is Corral), so a profiler sees one side alone. The report then lacks numbers.
fn solo() -> Option<usize> {
    std::env::var("CORRAL_BENCH_SOLO").ok()?.parse().ok()
}

/// Runs `n` contenders side by side. `f(i)` runs one iteration of contender `i` and
/// returns the time of the part that counts (so untimed set-up, such as a fresh engine
/// for a cold start, can live in the same closure). Any error stops the comparison.
pub async fn side_by_side(
    n: usize,
    plan: Plan,
    mut f: impl AsyncFnMut(usize) -> anyhow::Result<Duration>,
) -> anyhow::Result<Vec<Samples>> {
    let solo = solo();
    let runs = |i: usize| solo.is_none_or(|s| s == i);
    for i in (0..n).filter(|&i| runs(i)) {
        for _ in 0..plan.warmup {
            f(i).await?;
        }
    }
    let mut out = vec![Samples::default(); n];
    for round in 0..plan.rounds {
        for k in 0..n {
            let i = (round + k) % n;
            if !runs(i) {
                continue;
            }
            let mut batch = Vec::with_capacity(plan.iters);
            for _ in 0..plan.iters.max(1) {
                batch.push(f(i).await?);
            }
            let total: Duration = batch.iter().sum();
            let samples = out
                .get_mut(i)
                .ok_or_else(|| anyhow::anyhow!("no contender {i}"))?;
            if let Some(m) = median(&batch) {
                samples.round_medians.push(m);
            }
            samples
                .round_rates
                .push(batch.len() as f64 / total.as_secs_f64());
            samples.all.extend(batch);
        }
    }
    Ok(out)
}

/// The median (the upper one of an even count).
pub fn median(values: &[Duration]) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied()
}

/// The `q` quantile by nearest rank.
pub fn percentile(values: &[Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

/// The unit a row is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// Microseconds.
    #[serde(rename = "us")]
    Micros,
    /// Milliseconds.
    #[serde(rename = "ms")]
    Millis,
    /// Operations per second (a rate: higher is better).
    #[serde(rename = "per_s")]
    PerSecond,
    /// Kibibytes (memory: lower is better).
    #[serde(rename = "KiB")]
    KiB,
}

impl Unit {
    /// A duration in this unit (`None` for a rate).
    pub fn of(self, d: Duration) -> Option<f64> {
        match self {
            Unit::Micros => Some(d.as_secs_f64() * 1e6),
            Unit::Millis => Some(d.as_secs_f64() * 1e3),
            Unit::PerSecond | Unit::KiB => None,
        }
    }

    /// The label in the table.
    pub fn label(self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::Millis => "ms",
            Unit::PerSecond => "/s",
            Unit::KiB => "KiB",
        }
    }
}

/// One line of the report: Corral, its baseline, and the ratio.
///
/// `ratio` is `corral / baseline` for costs and `baseline / corral` for rates, so in
/// both cases above 1 means Corral is slower.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Metric name, e.g. `instantiate` or `call_64KiB`.
    pub name: String,
    /// Unit of `corral` and `baseline`.
    pub unit: Unit,
    /// Corral's figure.
    pub corral: Option<f64>,
    /// The baseline's figure.
    pub baseline: Option<f64>,
    /// Above 1: Corral is slower.
    pub ratio: Option<f64>,
    /// What was measured and how much (rounds, iterations, sizes, extra figures).
    pub params: Value,
}

impl Row {
    /// A cost (a time): ratio = corral / baseline.
    pub fn cost(
        name: impl Into<String>,
        unit: Unit,
        corral: Option<Duration>,
        baseline: Option<Duration>,
        params: Value,
    ) -> Row {
        let corral = corral.and_then(|d| unit.of(d)).and_then(round);
        let baseline = baseline.and_then(|d| unit.of(d)).and_then(round);
        Row {
            name: name.into(),
            unit,
            corral,
            baseline,
            ratio: ratio(corral, baseline),
            params,
        }
    }

    /// A rate (per second): ratio = baseline / corral.
    pub fn rate(
        name: impl Into<String>,
        corral: Option<f64>,
        baseline: Option<f64>,
        params: Value,
    ) -> Row {
        let corral = corral.and_then(round);
        let baseline = baseline.and_then(round);
        Row {
            name: name.into(),
            unit: Unit::PerSecond,
            corral,
            baseline,
            ratio: ratio(baseline, corral),
            params,
        }
    }

    /// A cost that is not a time (memory, in `unit`): ratio = corral / baseline.
    pub fn amount(
        name: impl Into<String>,
        unit: Unit,
        corral: Option<f64>,
        baseline: Option<f64>,
        params: Value,
    ) -> Row {
        let corral = corral.and_then(round);
        let baseline = baseline.and_then(round);
        Row {
            name: name.into(),
            unit,
            corral,
            baseline,
            ratio: ratio(corral, baseline),
            params,
        }
    }

    /// A metric that produced no number.
    pub fn missing(name: impl Into<String>, error: &str) -> Row {
        Row {
            name: name.into(),
            unit: Unit::Micros,
            corral: None,
            baseline: None,
            ratio: None,
            params: serde_json::json!({ "error": error }),
        }
    }

    /// Whether every figure is a number.
    pub fn complete(&self) -> bool {
        self.corral.is_some() && self.baseline.is_some() && self.ratio.is_some()
    }
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => round(n / d),
        _ => None,
    }
}

/// Three decimals are more than the noise allows; `None` for NaN and infinities.
fn round(v: f64) -> Option<f64> {
    v.is_finite().then(|| (v * 1000.0).round() / 1000.0)
}

/// A duration in milliseconds, for `params`.
pub fn ms(d: Option<Duration>) -> Option<f64> {
    d.and_then(|d| round(d.as_secs_f64() * 1e3))
}

/// A duration in microseconds, for `params`.
pub fn us(d: Option<Duration>) -> Option<f64> {
    d.and_then(|d| round(d.as_secs_f64() * 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        let d = |n: u64| Duration::from_micros(n);
        let v: Vec<Duration> = (1..=100).map(d).collect();
        assert_eq!(median(&v), Some(d(51)));
        assert_eq!(percentile(&v, 0.99), Some(d(99)));
        assert_eq!(percentile(&v, 1.0), Some(d(100)));
        assert_eq!(percentile(&[], 0.99), None);
        assert_eq!(median(&[d(3), d(1), d(2)]), Some(d(2)));
    }

    #[test]
    fn ratios_say_above_one_is_slower_for_costs_and_rates() {
        let d = Duration::from_micros;
        let cost = Row::cost("x", Unit::Micros, Some(d(150)), Some(d(100)), Value::Null);
        assert_eq!(cost.ratio, Some(1.5));
        let rate = Row::rate("y", Some(100.0), Some(150.0), Value::Null);
        assert_eq!(rate.ratio, Some(1.5));
        assert!(!Row::missing("z", "boom").complete());
        assert!(!Row::cost("w", Unit::Micros, Some(d(1)), None, Value::Null).complete());
    }
}
