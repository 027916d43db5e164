//! A plugin's permission manifest: what it may reach, granted explicitly. Deny by default:
//! a plugin without a manifest may call no tools. Checked when a pipeline is loaded, so a
//! step can never discover at call time that it lacks a grant.
//!
//! For a component file `NAME.wasm`, the manifest is `NAME.corral.toml` beside it:
//!
//! ```toml
//! [grants]
//! tools = ["text-tools"]   # tool plugins (by the pipeline's [tools] names) it may call
//! ```
//!
//! A pipeline step can only narrow these grants (its own `tools` list).

use super::pipeline::PluginRef;
use serde::Deserialize;
use std::path::PathBuf;

/// A plugin's manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// What it is granted.
    #[serde(default)]
    pub grants: Grants,
}

/// Grants. Network, secrets and files are not grantable yet, so they are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Tool plugins the plugin may call.
    #[serde(default)]
    pub tools: Vec<String>,
}

/// Where the manifest of a plugin lives, if it can have one.
pub fn path_for(plugin: &PluginRef) -> Option<PathBuf> {
    match plugin {
        PluginRef::Path(path) => Some(path.with_extension("corral.toml")),
        _ => None,
    }
}

/// The manifest of a plugin: its file's contents, or no grants at all.
pub fn for_plugin(plugin: &PluginRef) -> Result<Manifest, String> {
    let Some(path) = path_for(plugin) else {
        return Ok(Manifest::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if text.len() > 64 << 10 {
                return Err(format!("{} is larger than 64 KiB", path.display()));
            }
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_manifest_grants_nothing_and_unknown_grants_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = PluginRef::Path(dir.path().join("agent.wasm"));
        assert_eq!(for_plugin(&plugin).unwrap(), Manifest::default());
        std::fs::write(
            dir.path().join("agent.corral.toml"),
            "[grants]\ntools = [\"t\"]\n",
        )
        .unwrap();
        assert_eq!(for_plugin(&plugin).unwrap().grants.tools, ["t"]);
        std::fs::write(
            dir.path().join("agent.corral.toml"),
            "[grants]\nhttp = [\"*\"]\n",
        )
        .unwrap();
        let err = for_plugin(&plugin).unwrap_err();
        assert!(err.contains("http"), "{err}");
    }
}
