//! A plugin's permission manifest: what it may reach, granted explicitly. Deny by default:
//! a plugin without a manifest may call no tools. Checked when a pipeline is loaded, so a
//! step can never discover at call time that it lacks a grant.
//!
//! For a component file `NAME.wasm`, the manifest is `NAME.corral.toml` beside it:
//!
//! ```toml
//! [grants]
//! tools = ["text-tools"]   # tool plugins (by the pipeline's [tools] names) it may call
//! models = ["fast"]        # model aliases (the operator's [models.<alias>]) it may use
//!
//! [[grants.http]]          # one rule per reachable endpoint
//! host = "api.github.com"  # a name, `*.domain`, or an IP literal
//! port = 443               # default: the scheme's
//! methods = ["GET", "POST"]  # default: GET and HEAD
//! path_prefix = "/repos/"  # default: every path
//!
//! [grants.secrets]         # secrets it may put in request headers, and for which hosts
//! GITHUB_TOKEN = ["api.github.com"]
//!
//! [limits]                 # what it needs, within the host's caps
//! http_requests = 64
//! http_response_bytes = 16777216
//! http_timeout = "30s"
//! scratch_bytes = "256MiB" # what it may write under /work per invocation (default 64MiB)
//! scratch_entries = 5000   # files and directories it may create there (default 1000)
//! ```
//!
//! A pipeline step can only narrow these grants (its own `tools`, `http` and `models`
//! lists).

use super::pipeline::PluginRef;
use crate::capabilities::http::{HttpLimits, HttpPolicy, HttpRule, Resolver};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Most `[[grants.http]]` rules.
const MAX_RULES: usize = 64;
/// Most secrets one plugin may be granted.
const MAX_SECRETS: usize = 32;
/// The host's caps on what a manifest may ask for.
const CAP_REQUESTS: u32 = 10_000;
const CAP_RESPONSE_BYTES: u64 = 1 << 30;
const CAP_TIMEOUT: Duration = Duration::from_secs(600);
/// Caps on the scratch-disk quota a manifest may ask for (the engine may cap lower).
const CAP_SCRATCH_BYTES: u64 = 1 << 30;
const CAP_SCRATCH_ENTRIES: u64 = 100_000;

/// A plugin's manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// What it is granted.
    #[serde(default)]
    pub grants: Grants,
    /// Limits it needs.
    #[serde(default)]
    pub limits: ManifestLimits,
}

/// Grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Tool plugins the plugin may call.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Model aliases it may use through `corral:plugin/model`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Endpoints it may reach over HTTP.
    #[serde(default)]
    pub http: Vec<HttpRule>,
    /// Secret name -> hosts the secret may be sent to.
    #[serde(default)]
    pub secrets: BTreeMap<String, Vec<String>>,
    /// Host files or directories (relative to the manifest) it may read, read-only,
    /// at `/work/in/<name>`. Only for plugins on the host's own disk.
    #[serde(default)]
    pub files: Vec<String>,
    /// `files`, resolved and checked when the manifest was read.
    #[serde(skip)]
    pub resolved_files: Vec<crate::capabilities::FileGrant>,
}

/// Limits a plugin asks for (each at most the host's cap).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    /// Most outbound requests per step attempt.
    pub http_requests: Option<u32>,
    /// Most response body bytes per step attempt.
    pub http_response_bytes: Option<u64>,
    /// Longest wait for one response, e.g. `"30s"`.
    pub http_timeout: Option<String>,
    /// Bytes it may write under `/work` per invocation: a number or a size like `"256MiB"`.
    pub scratch_bytes: Option<SizeSetting>,
    /// Files, directories and links it may create under `/work` per invocation.
    pub scratch_entries: Option<u64>,
}

/// A size in a manifest: bytes, or text like `"64MiB"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum SizeSetting {
    /// A number of bytes.
    Bytes(u64),
    /// A size with a unit.
    Text(String),
}

impl SizeSetting {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeSetting::Bytes(n) => Ok(*n),
            SizeSetting::Text(t) => {
                crate::engine::limits::parse_size(t).map(|n| u64::try_from(n).unwrap_or(u64::MAX))
            }
        }
    }
}

impl Manifest {
    /// Checks the manifest as a whole: well-formed rules and secret grants, and limits
    /// within the host's caps. Every message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.grants.http.len() > MAX_RULES {
            return Err(format!("grants.http: at most {MAX_RULES} rules"));
        }
        for (i, rule) in self.grants.http.iter().enumerate() {
            rule.validate()
                .map_err(|e| format!("grants.http[{i}]: {e}"))?;
        }
        if self.grants.models.len() > MAX_RULES {
            return Err(format!("grants.models: at most {MAX_RULES} aliases"));
        }
        for (i, alias) in self.grants.models.iter().enumerate() {
            if !crate::models::config::valid_alias(alias) {
                return Err(format!(
                    "grants.models[{i}]: `{}` is not a model alias (1-64 of a-z, 0-9, `_`, `-`, \
                     starting with a letter)",
                    crate::capabilities::log::neutralise(alias, 64)
                ));
            }
        }
        if self.grants.secrets.len() > MAX_SECRETS {
            return Err(format!("grants.secrets: at most {MAX_SECRETS} secrets"));
        }
        for (name, hosts) in &self.grants.secrets {
            crate::secrets::check_name(name).map_err(|e| format!("grants.secrets.{name}: {e}"))?;
            if hosts.is_empty() {
                return Err(format!(
                    "grants.secrets.{name}: list the hosts the secret may be sent to"
                ));
            }
            for host in hosts {
                if !self
                    .grants
                    .http
                    .iter()
                    .any(|r| r.host.eq_ignore_ascii_case(host))
                {
                    return Err(format!(
                        "grants.secrets.{name}: `{host}` is not a host of any [[grants.http]] rule"
                    ));
                }
            }
        }
        self.http_limits()?;
        self.scratch_limits().map(|_| ())
    }

    /// Checks the manifest of a tool plugin (`[tools]` of a pipeline, or a registered
    /// tool called over MCP): its calls get its `http`, `secrets` and `files` grants and
    /// its limits, but they cannot call tools (a tool call has no tools of its own) nor
    /// use models (a tool call has no token budget of its own; the calling step's
    /// models are the step's). Such grants are refused, not ignored. `place` says where
    /// the manifest is.
    pub fn check_for_tool(&self, place: &str) -> Result<(), String> {
        if !self.grants.tools.is_empty() {
            return Err(format!(
                "grants.tools: a tool plugin cannot call tools (its calls get http, secrets, \
                 files and limits from its manifest, but no tools); remove `tools` from {place}"
            ));
        }
        if !self.grants.models.is_empty() {
            return Err(format!(
                "grants.models: a tool plugin cannot use models (a tool call has no model \
                 budget of its own; let the step that calls it use the model); remove \
                 `models` from {place}"
            ));
        }
        Ok(())
    }

    /// The scratch-disk quota `(bytes, entries)` it asks for (`None`: the default);
    /// refused above the caps.
    pub fn scratch_limits(&self) -> Result<(Option<u64>, Option<u64>), String> {
        let bytes = match &self.limits.scratch_bytes {
            None => None,
            Some(size) => {
                let n = size
                    .bytes()
                    .map_err(|e| format!("limits.scratch_bytes: {e}"))?;
                if n > CAP_SCRATCH_BYTES {
                    return Err(format!(
                        "limits.scratch_bytes: at most {CAP_SCRATCH_BYTES} (1GiB)"
                    ));
                }
                Some(n)
            }
        };
        if let Some(n) = self.limits.scratch_entries
            && n > CAP_SCRATCH_ENTRIES
        {
            return Err(format!(
                "limits.scratch_entries: at most {CAP_SCRATCH_ENTRIES}"
            ));
        }
        Ok((bytes, self.limits.scratch_entries))
    }

    /// Lays the scratch-disk quota it asks for over `limits` (the engine still clamps
    /// it to the host's cap).
    pub fn apply_scratch_limits(&self, limits: &mut crate::engine::Limits) {
        if let Ok((bytes, entries)) = self.scratch_limits() {
            if let Some(n) = bytes {
                limits.scratch_bytes = n;
            }
            if let Some(n) = entries {
                limits.scratch_entries = n;
            }
        }
    }

    /// The HTTP limits: the manifest's asks, or the defaults; refused above the caps.
    pub fn http_limits(&self) -> Result<HttpLimits, String> {
        let mut limits = HttpLimits::default();
        if let Some(n) = self.limits.http_requests {
            if n > CAP_REQUESTS {
                return Err(format!("limits.http_requests: at most {CAP_REQUESTS}"));
            }
            limits.max_requests = n;
        }
        if let Some(n) = self.limits.http_response_bytes {
            if n > CAP_RESPONSE_BYTES {
                return Err(format!(
                    "limits.http_response_bytes: at most {CAP_RESPONSE_BYTES}"
                ));
            }
            limits.max_response_bytes = n;
        }
        if let Some(t) = &self.limits.http_timeout {
            let t = humantime::parse_duration(t)
                .map_err(|e| format!("limits.http_timeout: `{t}`: {e}"))?;
            if t > CAP_TIMEOUT || t.is_zero() {
                return Err("limits.http_timeout: between 1ms and 10m".into());
            }
            limits.request_timeout = t;
        }
        Ok(limits)
    }

    /// The plugin's egress policy, or `None` when it may reach nothing.
    pub fn http_policy(&self, resolver: &Resolver) -> Option<HttpPolicy> {
        self.http_policy_for(None, resolver)
    }

    /// The egress policy narrowed to the rules whose host a step keeps (`None`: all).
    pub fn http_policy_for(
        &self,
        keep: Option<&[String]>,
        resolver: &Resolver,
    ) -> Option<HttpPolicy> {
        let rules: Vec<HttpRule> = self
            .grants
            .http
            .iter()
            .filter(|r| keep.is_none_or(|hosts| hosts.contains(&r.host)))
            .cloned()
            .collect();
        if rules.is_empty() {
            return None;
        }
        Some(HttpPolicy {
            rules,
            secrets: self.grants.secrets.clone(),
            limits: self.http_limits().unwrap_or_default(),
            resolver: resolver.clone(),
        })
    }
}

/// A deserialization error that starts with the field it is about (`limits.http_requests: ...`).
fn field_error<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> String {
    let path = e.path().to_string();
    if path.is_empty() || path == "." {
        e.inner().to_string()
    } else {
        format!("{path}: {}", e.inner())
    }
}

/// Where the manifest of a plugin lives, if it can have one.
pub fn path_for(plugin: &PluginRef) -> Option<PathBuf> {
    match plugin {
        PluginRef::Path(path) => Some(path.with_extension("corral.toml")),
        _ => None,
    }
}

impl Manifest {
    /// A manifest from JSON (the API form; same structure as the TOML file), checked.
    /// File grants are refused: a tenant must not grant itself the host's files.
    pub fn from_json(value: &serde_json::Value) -> Result<Manifest, String> {
        // The error names the field (`limits.http_requests: invalid type ...`), not only the problem.
        let manifest: Manifest = serde_path_to_error::deserialize(value.clone())
            .map_err(|e| format!("manifest: {}", field_error(&e)))?;
        if !manifest.grants.files.is_empty() {
            return Err(
                "grants.files: file grants are only for plugins on the host's own disk \
                 (a NAME.corral.toml beside the component), not for uploaded plugins"
                    .into(),
            );
        }
        manifest.validate()?;
        Ok(manifest)
    }

    /// Resolves `files` against `base` (the manifest's directory): each must exist and
    /// be a regular file (at most 64 MiB) or a directory, with a distinct plain name.
    fn resolve_files(&mut self, base: &std::path::Path) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for (i, entry) in self.grants.files.iter().enumerate() {
            let field = format!("grants.files[{i}]");
            let path = std::fs::canonicalize(base.join(entry))
                .map_err(|e| format!("{field}: `{entry}`: {e}"))?;
            let meta = std::fs::metadata(&path).map_err(|e| format!("{field}: {e}"))?;
            if meta.is_file() && meta.len() > 64 << 20 {
                return Err(format!("{field}: `{entry}` is larger than 64 MiB"));
            }
            if !meta.is_file() && !meta.is_dir() {
                return Err(format!("{field}: `{entry}` is not a file or a directory"));
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| !n.is_empty() && !n.starts_with('.'))
                .ok_or_else(|| format!("{field}: `{entry}` has no usable name"))?;
            if !names.insert(name.clone()) {
                return Err(format!(
                    "{field}: a second grant named `{name}` under /work/in"
                ));
            }
            self.grants
                .resolved_files
                .push(crate::capabilities::FileGrant {
                    host: path,
                    name,
                    dir: meta.is_dir(),
                });
        }
        Ok(())
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
            let mut manifest: Manifest = toml::Deserializer::parse(&text)
                .map_err(|e| e.to_string())
                .and_then(|d| serde_path_to_error::deserialize(d).map_err(|e| field_error(&e)))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            manifest
                .validate()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let base = path.parent().unwrap_or(std::path::Path::new("."));
            manifest
                .resolve_files(base)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(manifest)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mal_07_manifest_type_errors_name_the_field_in_json_and_toml() {
        let e = Manifest::from_json(&serde_json::json!({"limits": {"http_requests": 1e30}}))
            .unwrap_err();
        assert!(e.contains("limits.http_requests"), "{e}");
        let e =
            Manifest::from_json(&serde_json::json!({"grants": {"tools": ["a", 7]}})).unwrap_err();
        assert!(e.contains("grants.tools[1]"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let component = dir.path().join("p.wasm");
        std::fs::write(
            dir.path().join("p.corral.toml"),
            "[limits]\nhttp_requests = 1e30\n",
        )
        .unwrap();
        let e = for_plugin(&PluginRef::Path(component)).unwrap_err();
        assert!(e.contains("limits.http_requests"), "{e}");
    }

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
            "[grants]\nnetwork = [\"/\"]\n",
        )
        .unwrap();
        let err = for_plugin(&plugin).unwrap_err();
        assert!(err.contains("network"), "{err}");
        std::fs::write(
            dir.path().join("agent.corral.toml"),
            "[grants]\nfiles = [\"missing.csv\"]\n",
        )
        .unwrap();
        let err = for_plugin(&plugin).unwrap_err();
        assert!(err.contains("grants.files[0]"), "{err}");
        let api = serde_json::json!({"grants": {"files": ["/etc"]}});
        assert!(
            Manifest::from_json(&api)
                .unwrap_err()
                .contains("host's own disk")
        );
        std::fs::write(
            dir.path().join("agent.corral.toml"),
            "[[grants.http]]\nhost = \"*\"\n",
        )
        .unwrap();
        let err = for_plugin(&plugin).unwrap_err();
        assert!(err.contains("grants.http[0]"), "{err}");
        std::fs::write(
            dir.path().join("agent.corral.toml"),
            "[[grants.http]]\nhost = \"a.example\"\n[grants.secrets]\nT = [\"b.example\"]\n",
        )
        .unwrap();
        let err = for_plugin(&plugin).unwrap_err();
        assert!(err.contains("grants.secrets.T"), "{err}");
    }

    #[test]
    fn res_16_a_manifest_sets_the_scratch_quota_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = PluginRef::Path(dir.path().join("agent.wasm"));
        let file = dir.path().join("agent.corral.toml");
        std::fs::write(
            &file,
            "[limits]\nscratch_bytes = \"256MiB\"\nscratch_entries = 5000\n",
        )
        .unwrap();
        let manifest = for_plugin(&plugin).unwrap();
        let mut limits = crate::engine::Limits::default();
        manifest.apply_scratch_limits(&mut limits);
        assert_eq!(limits.scratch_bytes, 256 << 20);
        assert_eq!(limits.scratch_entries, 5000);
        std::fs::write(&file, "[limits]\nscratch_bytes = 1048576\n").unwrap();
        let mut limits = crate::engine::Limits::default();
        for_plugin(&plugin)
            .unwrap()
            .apply_scratch_limits(&mut limits);
        assert_eq!(limits.scratch_bytes, 1 << 20);
        assert_eq!(
            limits.scratch_entries,
            crate::engine::Limits::default().scratch_entries
        );
        for (text, field) in [
            ("scratch_bytes = \"2GiB\"", "limits.scratch_bytes"),
            ("scratch_bytes = \"lots\"", "limits.scratch_bytes"),
            ("scratch_entries = 1000000", "limits.scratch_entries"),
        ] {
            std::fs::write(&file, format!("[limits]\n{text}\n")).unwrap();
            let err = for_plugin(&plugin).unwrap_err();
            assert!(err.contains(field), "{text}: {err}");
        }
        let api = serde_json::json!({"limits": {"scratch_entries": 200_000}});
        assert!(
            Manifest::from_json(&api)
                .unwrap_err()
                .contains("limits.scratch_entries")
        );
    }
}
