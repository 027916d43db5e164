//! Host-side bindings for the three plugin worlds. `host` and `types` are generated
//! once (with the agent world) and shared, so one `Host` implementation serves all.

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
        },
    });
}

pub use agent::corral::plugin::host;
pub use agent::corral::plugin::types;
