//! The operator's model configuration: `[models.<alias>]` tables in the serve config
//! file, overridden per tenant by `[tenants.<tenant>.models.<alias>]`.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// OpenAI-style chat completions (`POST {base_url}/chat/completions`).
    Openai,
    /// Anthropic messages (`POST {base_url}/v1/messages`).
    Anthropic,
}

impl Provider {
    /// Its name in config and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::Anthropic => "anthropic",
        }
    }
}

/// One alias: which provider, model and key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `openai` or `anthropic`.
    pub provider: Provider,
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// The provider's model name.
    pub model: String,
    /// The name of the tenant secret holding the API key (none: no key is sent).
    #[serde(default)]
    pub key_secret: Option<String>,
    /// Answer-token cap when a request gives none. Default: 1024.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Price of a million input tokens, for the cost figures.
    #[serde(default)]
    pub input_price_per_million: Option<f64>,
    /// Price of a million output tokens.
    #[serde(default)]
    pub output_price_per_million: Option<f64>,
    /// Put the prompt text in the call's event. Default: false.
    #[serde(default)]
    pub log_prompts: bool,
    /// Stream the answer from the provider. Default: true.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Seconds a call may take, from sending to the answer's last byte. Default: 120.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The default answer-token cap.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;
/// The default call timeout.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;

impl ModelConfig {
    /// Checks what can be checked before the first call.
    pub fn check(&self, alias: &str) -> Result<(), String> {
        let url = reqwest_tls::Url::parse(&self.base_url)
            .map_err(|e| format!("models.{alias}.base_url: {e}"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!(
                "models.{alias}.base_url must be http:// or https://"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "models.{alias}.base_url must not hold credentials: name a tenant secret in \
                 key_secret"
            ));
        }
        if self.model.is_empty() {
            return Err(format!("models.{alias}.model is empty"));
        }
        if self.max_tokens == Some(0) {
            return Err(format!("models.{alias}.max_tokens must be at least 1"));
        }
        for p in [self.input_price_per_million, self.output_price_per_million]
            .into_iter()
            .flatten()
        {
            if !p.is_finite() || p < 0.0 {
                return Err(format!(
                    "models.{alias}: prices must be non-negative numbers"
                ));
            }
        }
        Ok(())
    }
}

/// The response cache's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Seconds an answer stays cached. Default: 3600; 0 turns the cache off.
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
    /// Most answers held, all tenants together. Default: 1000.
    #[serde(default = "default_entries")]
    pub max_entries: usize,
    /// Most bytes of answers held. Default: 64 MiB.
    #[serde(default = "default_bytes")]
    pub max_bytes: usize,
}

fn default_ttl() -> u64 {
    3600
}
fn default_entries() -> usize {
    1000
}
fn default_bytes() -> usize {
    64 << 20
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl_secs: default_ttl(),
            max_entries: default_entries(),
            max_bytes: default_bytes(),
        }
    }
}

/// Every alias, with the tenants' overrides.
#[derive(Debug, Clone, Default)]
pub struct ModelsConfig {
    /// Aliases every tenant has.
    pub aliases: BTreeMap<String, ModelConfig>,
    /// Per tenant: aliases that replace (or add to) the shared ones.
    pub tenants: BTreeMap<String, BTreeMap<String, ModelConfig>>,
    /// The response cache.
    pub cache: CacheConfig,
}

/// Longest alias.
pub const MAX_ALIAS: usize = 64;

/// Whether `alias` is a usable alias name: 1-64 of `[a-z0-9_-]`, starting with a letter.
pub fn valid_alias(alias: &str) -> bool {
    alias.len() <= MAX_ALIAS
        && alias.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && alias
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl ModelsConfig {
    /// Checks every alias.
    pub fn check(&self) -> Result<(), String> {
        let shared = self.aliases.iter().map(|(a, m)| (None, a, m));
        let tenants = self
            .tenants
            .iter()
            .flat_map(|(t, m)| m.iter().map(move |(a, m)| (Some(t), a, m)));
        for (tenant, alias, m) in shared.chain(tenants) {
            if !valid_alias(alias) {
                return Err(format!(
                    "model alias `{alias}`: aliases are 1-{MAX_ALIAS} of a-z, 0-9, `_`, `-`, \
                     starting with a letter"
                ));
            }
            m.check(alias).map_err(|e| match tenant {
                Some(t) => format!("tenants.{t}.{e}"),
                None => e,
            })?;
        }
        Ok(())
    }

    /// The alias as `tenant` sees it.
    pub fn resolve(&self, tenant: &str, alias: &str) -> Option<&ModelConfig> {
        self.tenants
            .get(tenant)
            .and_then(|m| m.get(alias))
            .or_else(|| self.aliases.get(alias))
    }

    /// Every alias `tenant` has.
    pub fn aliases(&self, tenant: &str) -> Vec<String> {
        let mut all: Vec<String> = self.aliases.keys().cloned().collect();
        if let Some(m) = self.tenants.get(tenant) {
            all.extend(m.keys().cloned());
        }
        all.sort();
        all.dedup();
        all
    }
}
