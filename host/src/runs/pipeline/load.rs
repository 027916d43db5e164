//! Loading a pipeline's plugins before anything runs: every step's component, its
//! permission manifest and the grants its step asks for, and the `[tools]` plugins. Their
//! errors name the field, and the file and line when the pipeline came from one.

use super::{Pipeline, PipelineError, PluginRef};
use crate::engine::{Engine, Failure, Output, Plugin, ToolSpec, World};
use crate::runs::manifest::{self, Manifest};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A tool plugin a step may call, loaded, with the tools it provides.
#[derive(Debug, Clone)]
pub struct LoadedTool {
    /// The pipeline's name for it.
    pub name: String,
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// Its tools, as it listed them.
    pub specs: Vec<ToolSpec>,
    /// Its own permission manifest: the http, secrets and files grants and the limits
    /// its calls run with (checked by [`Manifest::check_for_tool`]; none: nothing).
    pub manifest: Manifest,
}

/// Where registered plugins (`name@version`, `plg_...`) come from: a server's registry.
#[async_trait::async_trait]
pub trait Registry: Send + Sync {
    /// The component bytes of a registered plugin, or why there are none.
    async fn fetch(&self, plugin: &PluginRef) -> Result<Vec<u8>, String>;
    /// Loads a registered plugin with `engine` (the outer error: why the registry has
    /// none). A registry that records digests skips fetching and hashing the bytes of
    /// a plugin the engine already holds.
    async fn load(
        &self,
        plugin: &PluginRef,
        engine: &Engine,
    ) -> Result<Result<Arc<Plugin>, Failure>, String> {
        let bytes = self.fetch(plugin).await?;
        Ok(engine.load(bytes).await)
    }
    /// A registered plugin's permission manifest (none: it is granted nothing).
    async fn manifest(&self, plugin: &PluginRef) -> Result<Manifest, String> {
        let _ = plugin;
        Ok(Manifest::default())
    }
}

/// A plugin's manifest, read and checked: the file beside a component file, or what the
/// registry holds for a registered plugin.
async fn manifest_of(
    plugin: &PluginRef,
    registry: Option<&dyn Registry>,
) -> Result<Manifest, String> {
    match (plugin, registry) {
        (PluginRef::Path(_), _) | (_, None) => manifest::for_plugin(plugin),
        (registered, Some(registry)) => registry.manifest(registered).await,
    }
}

/// A tool plugin's own manifest, read and checked for a tool's calls
/// ([`Manifest::check_for_tool`]); `place` names it in errors when it is not a file.
pub async fn tool_manifest(
    plugin: &PluginRef,
    registry: Option<&dyn Registry>,
    place: &str,
) -> Result<Manifest, String> {
    let manifest = manifest_of(plugin, registry).await?;
    let place =
        manifest::path_for(plugin).map_or_else(|| place.to_string(), |p| p.display().to_string());
    manifest.check_for_tool(&place)?;
    Ok(manifest)
}

impl Pipeline {
    /// Every step's plugin manifest, read and checked (in step order): the file beside a
    /// component file, or what the registry holds for a registered plugin.
    pub async fn manifests(
        &self,
        registry: Option<&dyn Registry>,
    ) -> Result<Vec<Manifest>, PipelineError> {
        let mut out = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let manifest = manifest_of(&step.plugin, registry)
                .await
                .map_err(|e| self.origin.error(format!("steps[{i}].plugin"), e))?;
            for (j, host) in step.http.iter().flatten().enumerate() {
                if !manifest.grants.http.iter().any(|r| &r.host == host) {
                    let granted: Vec<&str> = manifest
                        .grants
                        .http
                        .iter()
                        .map(|r| r.host.as_str())
                        .collect();
                    return Err(self.origin.error(
                        format!("steps[{i}].http[{j}]"),
                        format!(
                            "step `{}` may not reach `{host}`: its plugin's manifest grants no \
                             such host (missing grant: [[grants.http]] host = \"{host}\"; it \
                             grants: {})",
                            step.name,
                            if granted.is_empty() {
                                "none".to_string()
                            } else {
                                granted.join(", ")
                            }
                        ),
                    ));
                }
            }
            out.push(manifest);
        }
        Ok(out)
    }

    /// The model aliases each step may use (in step order): its `models` list, else every
    /// alias its manifest grants. A step may only list aliases its manifest grants, and
    /// every alias a step may use must be one the operator configured for the tenant
    /// (`configured`); either failure names the step's field.
    pub fn check_models(
        &self,
        manifests: &[Manifest],
        configured: &[String],
    ) -> Result<Vec<Vec<String>>, PipelineError> {
        let mut out = Vec::with_capacity(self.steps.len());
        for (i, (step, manifest)) in self.steps.iter().zip(manifests).enumerate() {
            let place = manifest::path_for(&step.plugin)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "its manifest".into());
            let granted = &manifest.grants.models;
            let granted_text = if granted.is_empty() {
                "none".to_string()
            } else {
                granted.join(", ")
            };
            let configured_text = if configured.is_empty() {
                "none".to_string()
            } else {
                configured.join(", ")
            };
            let (aliases, field): (Vec<String>, Box<dyn Fn(usize) -> String>) = match &step.models {
                Some(list) => {
                    for (j, alias) in list.iter().enumerate() {
                        if !granted.contains(alias) {
                            return Err(self.origin.error(
                                format!("steps[{i}].models[{j}]"),
                                format!(
                                    "step `{}` may not use model `{alias}`: its plugin is not \
                                     granted it (missing grant `models = [\"{alias}\"]` in \
                                     {place}; it grants: {granted_text})",
                                    step.name
                                ),
                            ));
                        }
                    }
                    (
                        list.clone(),
                        Box::new(move |j| format!("steps[{i}].models[{j}]")),
                    )
                }
                None => (
                    granted.clone(),
                    Box::new(move |_| format!("steps[{i}].plugin")),
                ),
            };
            for (j, alias) in aliases.iter().enumerate() {
                if !configured.contains(alias) {
                    return Err(self.origin.error(
                        field(j),
                        format!(
                            "step `{}` may use model `{alias}`, which the operator has not \
                             configured for this tenant (configured: {configured_text}; see \
                             [models.{alias}] in the server's config file)",
                            step.name
                        ),
                    ));
                }
            }
            out.push(aliases);
        }
        Ok(out)
    }

    /// Loads the `[tools]` plugins (each must be a tool plugin that lists its tools), each
    /// with its own manifest (see [`Manifest::check_for_tool`]), and
    /// checks every step's grants against its plugin's manifest (`manifests`, in step
    /// order, from [`Pipeline::manifests`]): a step may only list tools it is granted.
    pub async fn load_tools(
        &self,
        engine: &Engine,
        registry: Option<&dyn Registry>,
        manifests: &[Manifest],
    ) -> Result<BTreeMap<String, LoadedTool>, PipelineError> {
        for (i, (step, manifest)) in self.steps.iter().zip(manifests).enumerate() {
            for (j, tool) in step.tools.iter().enumerate() {
                if !manifest.grants.tools.contains(tool) {
                    let granted = if manifest.grants.tools.is_empty() {
                        "none".to_string()
                    } else {
                        manifest.grants.tools.join(", ")
                    };
                    let place = manifest::path_for(&step.plugin)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "its manifest".into());
                    return Err(self.origin.error(
                        format!("steps[{i}].tools[{j}]"),
                        format!(
                            "step `{}` may not call `{tool}`: its plugin is not granted that tool \
                             (missing grant `tools = [\"{tool}\"]` in {place}; it grants: {granted})",
                            step.name
                        ),
                    ));
                }
            }
        }
        let mut tools = BTreeMap::new();
        for (name, plugin_ref) in &self.tools {
            let field = format!("tools.{name}");
            let loaded = match (plugin_ref, registry) {
                (PluginRef::Path(path), _) => engine.load_file(path).await,
                (registered, Some(registry)) => match registry.load(registered, engine).await {
                    Ok(loaded) => loaded,
                    Err(why) => return Err(self.origin.error(field, why)),
                },
                (_, None) => {
                    return Err(self.origin.error(
                        field,
                        "registered plugins need a server with a plugin registry; use a path",
                    ));
                }
            };
            let plugin = loaded.map_err(|f| self.origin.error(&field, f.to_string()))?;
            if plugin.world != World::Tool {
                return Err(self.origin.error(
                    field,
                    format!(
                        "`{plugin_ref}` is a {}, not a tool-plugin",
                        plugin.world.as_str()
                    ),
                ));
            }
            let place = format!("the manifest of `{plugin_ref}`");
            let manifest = tool_manifest(plugin_ref, registry, &place)
                .await
                .map_err(|e| self.origin.error(&field, format!("tool `{name}`: {e}")))?;
            let specs = match engine.describe(&plugin).await.result {
                Ok(Output::Tools(specs)) => specs,
                Ok(_) => Vec::new(),
                Err(f) => {
                    return Err(self
                        .origin
                        .error(field, format!("listing its tools failed: {f}")));
                }
            };
            tools.insert(
                name.clone(),
                LoadedTool {
                    name: name.clone(),
                    plugin,
                    specs,
                    manifest,
                },
            );
        }
        Ok(tools)
    }

    /// Loads every step's plugin with the engine, one per step, in order, so that a bad
    /// pipeline fails before anything runs: a file that is not a loadable component, a
    /// plugin that is not an agent, or a registered plugin the registry does not have.
    pub async fn load_plugins(
        &self,
        engine: &Engine,
        registry: Option<&dyn Registry>,
    ) -> Result<Vec<Arc<Plugin>>, PipelineError> {
        let mut plugins = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("steps[{i}].plugin");
            let loaded = match (&step.plugin, registry) {
                (PluginRef::Path(path), _) => engine.load_file(path).await,
                (registered, Some(registry)) => match registry.load(registered, engine).await {
                    Ok(loaded) => loaded,
                    Err(why) => {
                        return Err(self
                            .origin
                            .error(field, format!("step `{}`: {why}", step.name)));
                    }
                },
                (_, None) => {
                    return Err(self.origin.error(
                        field,
                        "registered plugins (`name@version`) need a server with a plugin \
                         registry; use a path",
                    ));
                }
            };
            let file_name = match &step.plugin {
                PluginRef::Path(path) => path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into(),
                ),
                other => other.to_string(),
            };
            let plugin = loaded.map_err(|failure| {
                self.origin.error(
                    &field,
                    format!("step `{}` (`{file_name}`): {failure}", step.name),
                )
            })?;
            match (step.connector, plugin.world) {
                (None, World::Agent) | (Some(_), World::Connector) => {}
                (None, World::Connector) => {
                    return Err(self.origin.error(
                        field,
                        format!(
                            "step `{}`: `{file_name}` is a connector-plugin: say what the step \
                             does with it, `connector = \"pull\"` or `connector = \"push\"`",
                            step.name
                        ),
                    ));
                }
                (None, world) => {
                    return Err(self.origin.error(
                        field,
                        format!(
                            "step `{}`: steps must be agents or connectors; `{file_name}` is a {}",
                            step.name,
                            world.as_str()
                        ),
                    ));
                }
                (Some(_), world) => {
                    return Err(self.origin.error(
                        field,
                        format!(
                            "step `{}` has `connector` set, but `{file_name}` is a {}, not a \
                             connector-plugin",
                            step.name,
                            world.as_str()
                        ),
                    ));
                }
            }
            plugins.push(plugin);
        }
        Ok(plugins)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use super::*;

    #[tokio::test]
    async fn plugins_load_before_anything_runs() {
        let scratch = tempfile::tempdir().unwrap();
        let engine = Engine::new(crate::engine::EngineConfig {
            scratch_root: scratch.path().to_path_buf(),
            max_concurrent: 4,
            ..Default::default()
        })
        .unwrap();
        let plugins = plugins_dir();
        let echo = plugins.join("echo.wasm");
        let text_tools = plugins.join("text_tools.wasm");
        let garbage = scratch.path().join("garbage.wasm");
        std::fs::write(&garbage, b"this is not wasm at all").unwrap();
        let pipeline = |plugins: &[&Path]| {
            let mut text = String::from("name = \"p\"\n");
            for (i, plugin) in plugins.iter().enumerate() {
                text.push_str(&format!(
                    "[[steps]]\nname = \"s{i}\"\nplugin = {:?}\n",
                    plugin.display().to_string()
                ));
            }
            parse_toml(&text, scratch.path()).unwrap()
        };

        let loaded = pipeline(&[&echo, &echo])
            .load_plugins(&engine, None)
            .await
            .unwrap();
        assert_eq!(loaded.len(), 2);
        assert!(loaded.iter().all(|p| p.world == World::Agent));

        let e = pipeline(&[&echo, &text_tools])
            .load_plugins(&engine, None)
            .await
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[1].plugin"));
        assert!(
            e.to_string().contains(
                "step `s1`: steps must be agents or connectors; `text_tools.wasm` is a tool-plugin"
            ),
            "{e}"
        );

        let e = pipeline(&[&garbage])
            .load_plugins(&engine, None)
            .await
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[0].plugin"));
        assert!(e.to_string().contains("step `s0`"), "{e}");
        assert!(
            e.to_string()
                .contains("INVALID_COMPONENT: not a WebAssembly binary"),
            "{e}"
        );

        let missing = scratch.path().join("missing.wasm");
        let e = pipeline(&[&echo, &missing])
            .load_plugins(&engine, None)
            .await
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[1].plugin"));
        assert!(
            e.to_string().contains("INVALID_COMPONENT: cannot read"),
            "{e}"
        );

        let named = parse_json(
            r#"{"name":"p","steps":[{"name":"a","plugin":"echo@1.0"}]}"#,
            None,
        )
        .unwrap();
        let e = named.load_plugins(&engine, None).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "steps[0].plugin: registered plugins (`name@version`) need a server with a plugin \
             registry; use a path"
        );
    }

    /// Errors found while loading a pipeline file (a plugin file that is not there, a
    /// missing grant, a `[tools]` entry that is not a tool) name its file, line and field.
    #[tokio::test]
    async fn load_errors_name_the_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(crate::engine::EngineConfig {
            scratch_root: dir.path().join("scratch"),
            max_concurrent: 4,
            ..Default::default()
        })
        .unwrap();
        // Without a manifest beside it, this copy is granted nothing.
        std::fs::copy(
            plugins_dir().join("echo.wasm"),
            dir.path().join("echo.wasm"),
        )
        .unwrap();
        let file = dir.path().join("pipeline.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            load_file(&file).unwrap()
        };
        let at = |line: usize, field: &str| format!("{}:{line}: {field}: ", file.display());

        let p = load(
            "name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = \"echo.wasm\"\n\
             [[steps]]\nname = \"b\"\nplugin = \"missing/x.wasm\"\n",
        );
        let e = p.load_plugins(&engine, None).await.unwrap_err().to_string();
        assert!(e.starts_with(&at(7, "steps[1].plugin")), "{e}");
        assert!(
            e.contains("step `b` (`x.wasm`): INVALID_COMPONENT: cannot read"),
            "{e}"
        );

        let p = load(
            "name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = \"echo.wasm\"\n\
             http = [\"api.example.com\"]\n",
        );
        let e = p.manifests(None).await.unwrap_err().to_string();
        assert!(e.starts_with(&at(5, "steps[0].http[0]")), "{e}");
        assert!(
            e.contains("missing grant: [[grants.http]] host = \"api.example.com\""),
            "{e}"
        );

        let text_tools = plugins_dir().join("text_tools.wasm");
        let p = load(&format!(
            "name = \"p\"\n[tools]\ntext = {:?}\n[[steps]]\nname = \"a\"\n\
             plugin = \"echo.wasm\"\ntools = [\"text\"]\n",
            text_tools.display().to_string()
        ));
        let manifests = p.manifests(None).await.unwrap();
        let e = p
            .load_tools(&engine, None, &manifests)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&at(7, "steps[0].tools[0]")), "{e}");
        assert!(e.contains("missing grant `tools = [\"text\"]`"), "{e}");

        let p = load(
            "name = \"p\"\n[tools]\ntext = \"echo.wasm\"\n[[steps]]\nname = \"a\"\n\
             plugin = \"echo.wasm\"\n",
        );
        let e = p
            .load_tools(&engine, None, &[Manifest::default()])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&at(3, "tools.text")), "{e}");
        assert!(e.contains("not a tool-plugin"), "{e}");

        // What the remote CLI reports about a step's plugin file reads the same.
        assert_eq!(
            p.field_error("steps[0].plugin", "bad").to_string(),
            format!("{}bad", at(6, "steps[0].plugin"))
        );
    }

    /// RES-20: a step may use only the model aliases its manifest grants and the operator
    /// configured; either failure names the file, line and field at load.
    #[test]
    fn res_20_ungranted_or_unconfigured_model_aliases_fail_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pipeline.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            load_file(&file).unwrap()
        };
        let at = |line: usize, field: &str| format!("{}:{line}: {field}: ", file.display());
        let mut manifest = Manifest::default();
        manifest.grants.models = vec!["fast".into()];
        let configured = vec!["fast".to_string(), "smart".to_string()];

        let p = load("name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = \"x.wasm\"\n");
        // Without a step list: every granted alias.
        assert_eq!(
            p.check_models(std::slice::from_ref(&manifest), &configured)
                .unwrap(),
            vec![vec!["fast".to_string()]]
        );
        // Nothing granted: nothing to check, no model.
        assert_eq!(
            p.check_models(&[Manifest::default()], &[]).unwrap(),
            vec![Vec::<String>::new()]
        );
        // Granted but not configured: the step's plugin line.
        let e = p
            .check_models(std::slice::from_ref(&manifest), &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&at(4, "steps[0].plugin")), "{e}");
        assert!(
            e.contains("model `fast`, which the operator has not configured"),
            "{e}"
        );

        let p = load(
            "name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = \"x.wasm\"\n\
             models = [\"smart\"]\n",
        );
        let e = p
            .check_models(std::slice::from_ref(&manifest), &configured)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&at(5, "steps[0].models[0]")), "{e}");
        assert!(e.contains("missing grant `models = [\"smart\"]`"), "{e}");

        // A step narrows to none.
        let p = load("name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = \"x.wasm\"\nmodels = []\n");
        assert_eq!(
            p.check_models(std::slice::from_ref(&manifest), &[])
                .unwrap(),
            vec![Vec::<String>::new()]
        );
    }
}
