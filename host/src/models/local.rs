//! Models for `corral call`: aliases given on the command line
//! (`--model fast=openai:http://127.0.0.1:8000/v1,model=x,key-env=OPENAI_API_KEY`), with
//! no budgets, grants or events (a quick loop against a provider, not a run).

use super::config::{ModelConfig, ModelsConfig, Provider};
use super::{ChatRequest, ChatResponse, DeltaSink, HttpGateway, ModelGateway, StaticKeys};
use crate::capabilities::{RunServices, not_granted};
use crate::engine::bindings::types::PluginError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The tenant name `corral call`'s keys are filed under.
const TENANT: &str = "local";

/// Parses one `--model` value: `ALIAS=PROVIDER:BASE_URL[,model=NAME][,key-env=VAR]
/// [,max-tokens=N][,stream=false]`. The key is read from the environment variable now.
pub fn parse_spec(
    spec: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(String, ModelConfig, Option<String>), String> {
    let usage = "expected ALIAS=PROVIDER:BASE_URL[,model=NAME][,key-env=VAR][,max-tokens=N]";
    let (alias, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("--model {spec}: {usage}"))?;
    let mut parts = rest.split(',');
    let head = parts.next().unwrap_or_default();
    let (provider, base_url) = head
        .split_once(':')
        .ok_or_else(|| format!("--model {spec}: {usage}"))?;
    let provider = match provider {
        "openai" => Provider::Openai,
        "anthropic" => Provider::Anthropic,
        other => {
            return Err(format!(
                "--model {alias}: unknown provider `{other}` (openai or anthropic)"
            ));
        }
    };
    let mut m = ModelConfig {
        provider,
        base_url: base_url.to_string(),
        model: String::new(),
        key_secret: None,
        max_tokens: None,
        input_price_per_million: None,
        output_price_per_million: None,
        log_prompts: false,
        stream: None,
        timeout_secs: None,
    };
    let mut key = None;
    for part in parts {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--model {alias}: `{part}` is not KEY=VALUE"))?;
        match k {
            "model" => m.model = v.to_string(),
            "key-env" => {
                key = Some(env(v).ok_or_else(|| {
                    format!("--model {alias}: the environment variable {v} is not set")
                })?);
                m.key_secret = Some(format!("{alias}-key"));
            }
            "max-tokens" => {
                m.max_tokens = Some(
                    v.parse()
                        .map_err(|_| format!("--model {alias}: max-tokens must be a number"))?,
                )
            }
            "stream" => m.stream = Some(v != "false"),
            other => return Err(format!("--model {alias}: unknown option `{other}`")),
        }
    }
    if m.model.is_empty() {
        m.model = "default".into();
    }
    Ok((alias.to_string(), m, key))
}

/// What `corral call` gives a plugin when `--model` is set: the models, nothing else.
pub struct CallServices {
    gateway: HttpGateway,
}

impl CallServices {
    /// Services over the `--model` values (keys from the environment).
    pub fn from_specs(specs: &[String]) -> Result<Self, String> {
        let mut aliases = BTreeMap::new();
        let mut keys = StaticKeys::default();
        for spec in specs {
            let (alias, m, key) = parse_spec(spec, |v| std::env::var(v).ok())?;
            if let (Some(key), Some(name)) = (key, &m.key_secret) {
                keys.0.insert((TENANT.into(), name.clone()), key);
            }
            aliases.insert(alias, m);
        }
        let config = ModelsConfig {
            aliases,
            ..ModelsConfig::default()
        };
        Ok(CallServices {
            gateway: HttpGateway::new(config, Arc::new(keys))?,
        })
    }
}

#[async_trait::async_trait]
impl RunServices for CallServices {
    async fn call_tool(&self, name: &str, _arguments: &str) -> Result<String, PluginError> {
        Err(not_granted(&format!("tool `{name}`")))
    }
    async fn put_artifact(&self, _: &str, _: &str, _: &[u8]) -> Result<String, PluginError> {
        Err(not_granted("put-artifact"))
    }
    async fn ask(&self, _: &str, _: Option<&str>) -> Result<String, PluginError> {
        Err(not_granted("ask"))
    }
    async fn state_get(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    async fn state_set(&self, _: &str, _: &[u8]) -> Result<(), PluginError> {
        Err(not_granted("state-set"))
    }
    async fn model(
        &self,
        alias: &str,
        request: &ChatRequest,
        deltas: DeltaSink<'_>,
    ) -> Result<ChatResponse, PluginError> {
        let ctx = super::CallContext {
            tenant: TENANT.into(),
            run_id: None,
        };
        self.gateway
            .complete(&ctx, alias, request, deltas)
            .await
            .map_err(|e| match e {
                super::ModelError::Transient(m) => PluginError::Transient(m),
                super::ModelError::InvalidRequest(m) => PluginError::InvalidInput(m),
                super::ModelError::UnknownAlias(a) => not_granted(&format!("model `{a}`")),
                super::ModelError::Permanent(m) => PluginError::Permanent(m),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_specs_parse_and_read_the_key_from_the_environment() {
        let env = |v: &str| (v == "K").then(|| "sk-1".to_string());
        let (alias, m, key) = parse_spec(
            "fast=openai:http://127.0.0.1:8000/v1,model=x,key-env=K,max-tokens=9",
            env,
        )
        .unwrap();
        assert_eq!(alias, "fast");
        assert_eq!(m.provider, Provider::Openai);
        assert_eq!(m.base_url, "http://127.0.0.1:8000/v1");
        assert_eq!(m.model, "x");
        assert_eq!(m.max_tokens, Some(9));
        assert_eq!(key.as_deref(), Some("sk-1"));
        let (_, m, key) = parse_spec("s=anthropic:http://127.0.0.1:8001", env).unwrap();
        assert_eq!(m.provider, Provider::Anthropic);
        assert!(key.is_none() && m.key_secret.is_none());
        for bad in [
            "fast",
            "fast=gemini:http://x",
            "fast=openai:http://x,key-env=NOPE",
            "f=openai:http://x,colour=red",
        ] {
            assert!(parse_spec(bad, env).is_err(), "{bad}");
        }
    }
}
