//! Webhook deliveries: verified before the connector sees a byte, turned into items by
//! the connector's `handle-webhook`, and (when the webhook has a trigger pipeline) into
//! runs, debounced so that a burst of deliveries becomes one run.
//!
//! Signatures follow Standard Webhooks: headers `webhook-id`, `webhook-timestamp` (unix
//! seconds) and `webhook-signature` (space-separated `v1,<base64 HMAC-SHA256>` over
//! `id.timestamp.body`). The key is a tenant secret (`whsec_<base64>`, or its raw bytes);
//! a webhook lists one or two (during a rotation) and any of them may sign. A timestamp
//! more than five minutes off is refused, and so is a delivery id seen before.

use super::Runner;
use super::pipeline;
use crate::engine::{Call, Invocation, Limits, Output};
use crate::store::{StoreError, WebhookRecord, now_ms};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;

/// How far a delivery's timestamp may be from now.
pub const WINDOW_SECS: i64 = 300;
/// Most items one delivery may produce.
const MAX_ITEMS: usize = 10_000;
/// Longest delivery id kept.
const MAX_ID: usize = 256;

/// Why a delivery was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No such webhook.
    #[error("WEBHOOK_NOT_FOUND: no webhook `{0}`")]
    NotFound(String),
    /// Headers missing or malformed.
    #[error("INVALID_DELIVERY: {0}")]
    BadRequest(String),
    /// The signature or timestamp does not verify.
    #[error("INVALID_SIGNATURE: {0}")]
    Unauthorized(String),
    /// The delivery id was seen before.
    #[error("REPLAYED_DELIVERY: delivery `{0}` was already received")]
    Replay(String),
    /// The connector refused or failed on the delivery.
    #[error("CONNECTOR_FAILED: {0}")]
    Connector(String),
    /// Starting the run failed.
    #[error(transparent)]
    Run(#[from] super::RunError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an accepted delivery led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Items the connector produced.
    pub items: usize,
    /// The run started at once (no debounce window).
    pub run_id: Option<String>,
    /// The batch it joined (a debounce window is open).
    pub batch_id: Option<String>,
    /// Runs that were waiting for this webhook and got the delivery.
    pub woken: Vec<String>,
}

/// The signing key a secret value stands for.
fn signing_key(value: &str) -> Vec<u8> {
    match value.strip_prefix("whsec_").map(|b| B64.decode(b)) {
        Some(Ok(key)) => key,
        _ => value.as_bytes().to_vec(),
    }
}

/// Whether any `v1,` signature in `header` is `key`'s over `id.timestamp.body`.
/// Comparison is constant-time (the MAC's own verify).
pub fn verify(key: &[u8], id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    header.split_whitespace().any(|sig| {
        sig.strip_prefix("v1,")
            .and_then(|b| B64.decode(b).ok())
            .is_some_and(|bytes| mac.clone().verify_slice(&bytes).is_ok())
    })
}

/// Signs like a sender would (for tests, examples and `corral` clients).
pub fn sign(key_secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = signing_key(key_secret);
    match Hmac::<Sha256>::new_from_slice(&key) {
        Ok(mut mac) => {
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Runner {
    /// Verifies a delivery, hands it to the webhook's connector, and starts (or joins the
    /// debounce batch of) the trigger pipeline's run.
    pub async fn deliver_webhook(
        &self,
        webhook_id: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Accepted, WebhookError> {
        let store = self.store();
        let webhook = store
            .webhook(webhook_id)
            .await?
            .ok_or_else(|| WebhookError::NotFound(webhook_id.to_string()))?;
        let missing = |h: &str| WebhookError::BadRequest(format!("the `{h}` header is missing"));
        let id = header(headers, "webhook-id").ok_or_else(|| missing("webhook-id"))?;
        let timestamp =
            header(headers, "webhook-timestamp").ok_or_else(|| missing("webhook-timestamp"))?;
        let signature =
            header(headers, "webhook-signature").ok_or_else(|| missing("webhook-signature"))?;
        if id.is_empty() || id.len() > MAX_ID {
            return Err(WebhookError::BadRequest(format!(
                "webhook-id must be 1-{MAX_ID} bytes"
            )));
        }
        let sent: i64 = timestamp.trim().parse().map_err(|_| {
            WebhookError::BadRequest("webhook-timestamp must be unix seconds".into())
        })?;
        let now = now_ms() / 1000;
        if now.abs_diff(sent) > WINDOW_SECS.unsigned_abs() {
            return Err(WebhookError::Unauthorized(format!(
                "webhook-timestamp is more than {WINDOW_SECS} s from now"
            )));
        }
        let mut verified = false;
        for name in &webhook.signing_secrets {
            if let Some(value) = store.secret_value(&webhook.tenant_id, name).await?
                && verify(&signing_key(&value), id, timestamp.trim(), body, signature)
            {
                verified = true;
                break;
            }
        }
        if !verified {
            return Err(WebhookError::Unauthorized(
                "no signing secret of this webhook verifies the signature".into(),
            ));
        }
        let keep_ms = (WINDOW_SECS * 2 + 60) * 1000;
        if !store.record_delivery(&webhook.id, id, keep_ms).await? {
            return Err(WebhookError::Replay(id.to_string()));
        }
        let items = match self.webhook_items(&webhook, headers, body).await {
            Ok(items) => items,
            Err(e) => {
                // The sender will retry with the same id: let it.
                store.forget_delivery(&webhook.id, id).await?;
                return Err(e);
            }
        };
        let count = items.len();
        let woken = self.wake_waiting(&webhook, &items, id).await?;
        let mut accepted = Accepted {
            items: count,
            run_id: None,
            batch_id: None,
            woken,
        };
        let Some(pipeline_id) = &webhook.pipeline_id else {
            return Ok(accepted);
        };
        if webhook.debounce_ms <= 0 {
            let run_id = self
                .start_webhook_run(
                    &webhook.tenant_id,
                    pipeline_id,
                    &webhook,
                    &items,
                    &[id.to_string()],
                )
                .await?;
            accepted.run_id = Some(run_id);
        } else {
            accepted.batch_id = Some(store.add_to_batch(&webhook, id, &items).await?);
        }
        Ok(accepted)
    }

    /// Answers the runs waiting for this webhook (`corral_sdk::wait_for_webhook`, the
    /// question `webhook:<name>`) with the delivery's items.
    async fn wake_waiting(
        &self,
        webhook: &WebhookRecord,
        items: &[Value],
        delivery: &str,
    ) -> Result<Vec<String>, WebhookError> {
        let question = format!("webhook:{}", webhook.name);
        let waiting = self
            .store()
            .runs_waiting_on(&webhook.tenant_id, &question)
            .await?;
        let answer = json!({
            "items": items,
            "webhook": {"id": webhook.id, "name": webhook.name, "deliveries": [delivery]},
        })
        .to_string();
        let mut woken = Vec::new();
        for run_id in waiting {
            match self.answer(&webhook.tenant_id, &run_id, &answer).await {
                Ok(()) => woken.push(run_id),
                // Answered or ended meanwhile, or its question wants another shape.
                Err(e) => tracing::debug!(run = %run_id, "webhook did not wake the run: {e}"),
            }
        }
        Ok(woken)
    }

    async fn webhook_items(
        &self,
        webhook: &WebhookRecord,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<Value>, WebhookError> {
        let plugin_ref =
            pipeline::registered_plugin(&webhook.plugin).map_err(WebhookError::Connector)?;
        let registry = super::StoreRegistry::new(self.store().clone(), &webhook.tenant_id);
        // A plugin the engine already holds (by its registered digest) is neither fetched
        // nor hashed again: a webhook is a hot path.
        let plugin = pipeline::Registry::load(&registry, &plugin_ref, self.engine())
            .await
            .map_err(WebhookError::Connector)?
            .map_err(|f| WebhookError::Connector(f.to_string()))?;
        let call = Call::Webhook {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: body.to_vec(),
        };
        let how = Invocation {
            limits: Limits {
                fuel: Some(2_000_000_000),
                timeout: Duration::from_secs(10),
                ..Limits::default()
            },
            ..Invocation::default()
        };
        let outcome = self.engine().invoke(&plugin, call, how).await;
        let texts = match outcome.result {
            Ok(Output::Items(items)) => items,
            Ok(other) => {
                return Err(WebhookError::Connector(format!(
                    "unexpected output {other:?}"
                )));
            }
            Err(f) => return Err(WebhookError::Connector(f.to_string())),
        };
        if texts.len() > MAX_ITEMS {
            return Err(WebhookError::Connector(format!(
                "the connector made {} items of one delivery (at most {MAX_ITEMS})",
                texts.len()
            )));
        }
        texts
            .iter()
            .map(|t| {
                serde_json::from_str(t)
                    .map_err(|e| WebhookError::Connector(format!("an item is not JSON: {e}")))
            })
            .collect()
    }

    async fn start_webhook_run(
        &self,
        tenant_id: &str,
        pipeline_id: &str,
        webhook: &WebhookRecord,
        items: &[Value],
        deliveries: &[String],
    ) -> Result<String, WebhookError> {
        let record = self
            .store()
            .pipeline(tenant_id, pipeline_id)
            .await?
            .ok_or_else(|| {
                super::RunError::InvalidPipeline(format!(
                    "webhook `{}`: its pipeline `{pipeline_id}` no longer exists",
                    webhook.name
                ))
            })?;
        let p = pipeline::parse_json(&record.spec.to_string(), None)
            .map_err(|e| super::RunError::InvalidPipeline(e.to_string()))?;
        let input = json!({
            "items": items,
            "webhook": {"id": webhook.id, "name": webhook.name, "deliveries": deliveries},
        });
        let run = self
            .submit(tenant_id, &p, Some(record.id), &input.to_string())
            .await?;
        Ok(run.id)
    }

    /// Starts the runs of debounce batches whose window has passed. Returns how many.
    pub async fn start_due_webhook_runs(&self) -> Result<usize, WebhookError> {
        let due = self.store().claim_due_batches(60_000).await?;
        let mut started = 0;
        for batch in due {
            let Some(webhook) = self.store().webhook(&batch.webhook_id).await? else {
                continue; // deleted meanwhile: its batch is dropped
            };
            let Some(pipeline_id) = &webhook.pipeline_id else {
                continue;
            };
            match self
                .start_webhook_run(
                    &batch.tenant_id,
                    pipeline_id,
                    &webhook,
                    &batch.items,
                    &batch.deliveries,
                )
                .await
            {
                Ok(run_id) => {
                    self.store().batch_started(&batch.id, &run_id).await?;
                    started += 1;
                }
                Err(e) => {
                    tracing::warn!(webhook = %webhook.id, "a debounced webhook run did not start: {e}")
                }
            }
        }
        Ok(started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_the_right_key_only() {
        let key = format!("whsec_{}", B64.encode(b"0123456789abcdef0123456789abcdef"));
        let sig = sign(&key, "msg_1", 1_700_000_000, b"{\"a\":1}");
        let k = signing_key(&key);
        assert!(verify(&k, "msg_1", "1700000000", b"{\"a\":1}", &sig));
        assert!(verify(
            &k,
            "msg_1",
            "1700000000",
            b"{\"a\":1}",
            &format!("v1,AAAA {sig}")
        ));
        assert!(!verify(&k, "msg_1", "1700000000", b"{\"a\":2}", &sig));
        assert!(!verify(&k, "msg_2", "1700000000", b"{\"a\":1}", &sig));
        assert!(!verify(
            &signing_key("other"),
            "msg_1",
            "1700000000",
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify(&k, "msg_1", "1700000000", b"{\"a\":1}", "v2,xyz"));
    }
}
