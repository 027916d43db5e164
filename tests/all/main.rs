//! Corral's integration tests: one binary, a module per area. They run real components
//! (built by `cargo xtask build-plugins` into target/plugins/) in real wasmtime sandboxes.
//! Tests named after ../shared/SECURITY-CASES.md ids prove those cases.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod browser;
mod cli;
mod connectors;
mod dashboard;
mod durability;
mod egress;
mod engine;
mod hostile;
mod lifecycle;
mod logs;
mod mcp;
mod mcp_python;
mod models;
mod models_guest;
mod openapi;
mod remote;
mod restart;
mod runs;
mod schedules;
mod sdks;
mod server;
mod sessions;
mod streams;
mod support;
mod tool_grants;
mod util;
