//! Corral: a WebAssembly plugin host for pluggable agents.
//!
//! Data flows one way: `cli` -> `engine` -> `capabilities`. The engine loads untrusted
//! components, checks them against the `corral:plugin` contract, and runs each call in
//! a fresh sandbox with hard budgets; it always answers with a typed [`engine::Outcome`].

pub mod api;
pub mod capabilities;
pub mod cli;
pub mod engine;
pub mod events;
pub mod metrics;
pub mod models;
pub mod runs;
pub mod secrets;
pub mod store;
