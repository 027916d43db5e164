//! The metrics, one module each. A metric is a name, the rows it promises, and an async
//! function that measures Corral and its baseline side by side and returns those rows.
//! To add one: write a module with `pub const METRIC: Metric`, and list it in [`ALL`].
//!
//! Metrics 1 to 4 compare Corral with bare wasmtime (`bare.rs`); metrics 5 to 7 compare
//! its run layer with the raw databases and a plain SSE server (`raw.rs`, `db.rs`);
//! metric 8 (`runs_limits`) with the database's physical limit and a real peer (DBOS).

use crate::Ctx;
use crate::harness::Row;
use std::future::Future;
use std::pin::Pin;

pub mod call;
pub mod cold_start;
pub mod instantiate;
pub mod metering;
pub mod persistence;
pub mod runs;
pub mod runs_limits;
pub mod streaming;

/// What a metric's function returns.
pub type Rows<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Vec<Row>>> + 'a>>;

/// One metric of the list.
pub struct Metric {
    /// Name, as given to `--only`.
    pub name: &'static str,
    /// The rows it reports: a row it does not produce counts as "no number".
    pub rows: &'static [&'static str],
    /// Rows it reports only in some settings (quick or full mode, with or without
    /// Postgres), promised like `rows`.
    pub more_rows: fn(&Ctx) -> Vec<String>,
    /// Measures and returns the rows.
    pub run: for<'a> fn(&'a Ctx) -> Rows<'a>,
}

/// Every metric, in report order.
pub const ALL: &[Metric] = &[
    instantiate::METRIC,
    call::METRIC,
    metering::METRIC,
    cold_start::METRIC,
    persistence::METRIC,
    runs::METRIC,
    streaming::METRIC,
    runs_limits::METRIC,
];

/// `more_rows` of a metric whose rows are all in `rows`.
pub fn no_more_rows(_: &Ctx) -> Vec<String> {
    Vec::new()
}
