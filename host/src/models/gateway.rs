//! The [`ModelGateway`] over the operator's configuration: keys from tenant secrets, the
//! two protocols, and the response cache.

use super::cache::{Cache, CacheKey};
use super::config::{
    DEFAULT_MAX_TOKENS, DEFAULT_TIMEOUT_SECS, ModelConfig, ModelsConfig, Provider,
};
use super::{
    CallContext, ChatRequest, ChatResponse, DeltaSink, ModelError, ModelGateway, ModelInfo,
};
use super::{anthropic, openai, wire};
use std::sync::Arc;
use std::time::Duration;

/// Where API keys come from: a tenant's secrets.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync {
    /// The value of `tenant`'s secret `name`.
    async fn key(&self, tenant: &str, name: &str) -> Result<Option<String>, String>;
}

#[async_trait::async_trait]
impl KeySource for crate::store::Store {
    async fn key(&self, tenant: &str, name: &str) -> Result<Option<String>, String> {
        self.secret_value(tenant, name)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Fixed keys by (tenant, secret name), for `corral call` and tests.
#[derive(Default)]
pub struct StaticKeys(pub std::collections::BTreeMap<(String, String), String>);

#[async_trait::async_trait]
impl KeySource for StaticKeys {
    async fn key(&self, tenant: &str, name: &str) -> Result<Option<String>, String> {
        Ok(self.0.get(&(tenant.to_string(), name.to_string())).cloned())
    }
}

/// The gateway the host uses: configured aliases, real providers, a bounded cache.
pub struct HttpGateway {
    config: ModelsConfig,
    keys: Arc<dyn KeySource>,
    client: reqwest_tls::Client,
    cache: Cache,
}

impl HttpGateway {
    /// A gateway over `config` (checked), reading keys from `keys`.
    pub fn new(config: ModelsConfig, keys: Arc<dyn KeySource>) -> Result<Self, String> {
        config.check()?;
        let client = wire::client().map_err(|e| e.to_string())?;
        let cache = Cache::new(config.cache);
        Ok(HttpGateway {
            config,
            keys,
            client,
            cache,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelsConfig {
        &self.config
    }

    fn resolve(&self, tenant: &str, alias: &str) -> Result<&ModelConfig, ModelError> {
        self.config
            .resolve(tenant, alias)
            .ok_or_else(|| ModelError::UnknownAlias(alias.to_string()))
    }
}

#[async_trait::async_trait]
impl ModelGateway for HttpGateway {
    fn aliases(&self, tenant: &str) -> Vec<String> {
        self.config.aliases(tenant)
    }

    fn default_max_tokens(&self, tenant: &str, alias: &str) -> Option<u32> {
        self.config
            .resolve(tenant, alias)
            .map(|m| m.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS))
    }

    fn describe(&self, tenant: &str, alias: &str) -> Option<ModelInfo> {
        self.config.resolve(tenant, alias).map(|m| ModelInfo {
            provider: m.provider.as_str().to_string(),
            model: m.model.clone(),
            log_prompts: m.log_prompts,
            input_price_per_million: m.input_price_per_million,
            output_price_per_million: m.output_price_per_million,
        })
    }

    async fn complete(
        &self,
        ctx: &CallContext,
        alias: &str,
        request: &ChatRequest,
        deltas: DeltaSink<'_>,
    ) -> Result<ChatResponse, ModelError> {
        let m = self.resolve(&ctx.tenant, alias)?;
        let mut request = request.clone();
        if request.max_tokens.is_none() {
            request.max_tokens = Some(m.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS));
        }
        let cache_key = (request.temperature == Some(0.0))
            .then(|| CacheKey::new(&ctx.tenant, m, &request))
            .flatten();
        if let Some(key) = &cache_key
            && let Some(mut hit) = self.cache.get(key)
        {
            hit.usage = super::Usage::default();
            hit.cached = true;
            if !hit.content.is_empty() {
                deltas(&hit.content);
            }
            return Ok(hit);
        }
        let key = match &m.key_secret {
            Some(name) => match self.keys.key(&ctx.tenant, name).await {
                Ok(Some(k)) => Some(k),
                Ok(None) => {
                    return Err(ModelError::Permanent(format!(
                        "model alias `{alias}` needs the tenant secret `{name}`, which is not set"
                    )));
                }
                Err(e) => {
                    tracing::warn!(alias, "cannot read a model key: {e}");
                    return Err(ModelError::Transient(
                        "the host cannot read the model's key now; try again".into(),
                    ));
                }
            },
            None => None,
        };
        let ep = openai::Endpoint {
            base_url: &m.base_url,
            model: &m.model,
            key: key.as_deref(),
            stream: m.stream.unwrap_or(true),
            limits: wire::CallLimits {
                timeout: Duration::from_secs(m.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS).max(1)),
            },
        };
        let answer = match m.provider {
            Provider::Openai => openai::complete(&self.client, &ep, &request, deltas).await?,
            Provider::Anthropic => anthropic::complete(&self.client, &ep, &request, deltas).await?,
        };
        if let Some(key) = cache_key {
            self.cache.put(key, &answer);
        }
        Ok(answer)
    }
}
