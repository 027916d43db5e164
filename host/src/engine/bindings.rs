//! Host-side bindings for the plugin worlds, of both contract versions.
//!
//! `corral:plugin@0.2.0` (`wit/`) is the current contract: its `host`, `model` and
//! `types` are generated once (with the agent world) and shared by all three worlds, so
//! one implementation serves all. `corral:plugin@0.1.0` (`wit/archive/0.1.0/`, frozen)
//! is still linked and called for components built against it: its `types` are the
//! 0.2.0 Rust types (the interface is the same), its `host` is a separate interface
//! whose implementation delegates to the 0.2.0 one.

#![allow(missing_docs, clippy::all)]

pub mod agent {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "agent-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub mod tool {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tool-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "corral:plugin/types": super::agent::corral::plugin::types,
            "corral:plugin/host": super::agent::corral::plugin::host,
            "corral:plugin/model": super::agent::corral::plugin::model,
        },
    });
}

pub mod connector {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "connector-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "corral:plugin/types": super::agent::corral::plugin::types,
            "corral:plugin/host": super::agent::corral::plugin::host,
            "corral:plugin/model": super::agent::corral::plugin::model,
        },
    });
}

/// The frozen 0.1.0 worlds.
pub mod v0_1 {
    pub mod agent {
        wasmtime::component::bindgen!({
            path: "../wit/archive/0.1.0",
            world: "agent-plugin",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "corral:plugin/types": crate::engine::bindings::types,
            },
        });
    }

    pub mod tool {
        wasmtime::component::bindgen!({
            path: "../wit/archive/0.1.0",
            world: "tool-plugin",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "corral:plugin/types": crate::engine::bindings::types,
                "corral:plugin/host": super::agent::corral::plugin::host,
            },
        });
    }

    pub mod connector {
        wasmtime::component::bindgen!({
            path: "../wit/archive/0.1.0",
            world: "connector-plugin",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "corral:plugin/types": crate::engine::bindings::types,
                "corral:plugin/host": super::agent::corral::plugin::host,
            },
        });
    }

    pub use agent::corral::plugin::host;
}

pub use agent::corral::plugin::host;
pub use agent::corral::plugin::model;
pub use agent::corral::plugin::types;
