//! Webhooks, seen delivery ids, and debounce batches.

use super::{Result, Store, StoreError, new_id, now_ms};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A registered webhook.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WebhookRecord {
    /// `whk_...`: also the delivery URL's last segment.
    pub id: String,
    /// Owner.
    #[serde(skip)]
    pub tenant_id: String,
    /// Unique per tenant.
    pub name: String,
    /// The connector plugin (`name@version` or `plg_...`).
    pub plugin: String,
    /// Names of the tenant secrets that sign deliveries (two during a rotation).
    pub signing_secrets: Vec<String>,
    /// The pipeline a delivery starts, if any.
    pub pipeline_id: Option<String>,
    /// Deliveries within this window become one run.
    pub debounce_ms: i64,
    /// Unix ms.
    pub created_at: i64,
}

impl WebhookRecord {
    fn from_row(r: &AnyRow) -> Result<WebhookRecord> {
        let secrets: String = r.try_get("signing_secrets")?;
        Ok(WebhookRecord {
            id: r.try_get("id")?,
            tenant_id: r.try_get("tenant_id")?,
            name: r.try_get("name")?,
            plugin: r.try_get("plugin")?,
            signing_secrets: serde_json::from_str(&secrets)
                .map_err(|e| StoreError::Corrupt(format!("webhook signing secrets: {e}")))?,
            pipeline_id: r.try_get("pipeline_id")?,
            debounce_ms: r.try_get("debounce_ms")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// A new webhook.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// Unique per tenant.
    pub name: String,
    /// The connector plugin reference.
    pub plugin: String,
    /// Signing secret names.
    pub signing_secrets: Vec<String>,
    /// Trigger pipeline.
    pub pipeline_id: Option<String>,
    /// Debounce window.
    pub debounce_ms: i64,
}

/// A batch whose debounce window has passed, claimed for one run.
#[derive(Debug, Clone)]
pub struct DueBatch {
    /// Batch id.
    pub id: String,
    /// The webhook.
    pub webhook_id: String,
    /// Owner.
    pub tenant_id: String,
    /// The items, a JSON array.
    pub items: Vec<Value>,
    /// Delivery ids in the batch.
    pub deliveries: Vec<String>,
}

const COLUMNS: &str =
    "id, tenant_id, name, plugin, signing_secrets, pipeline_id, debounce_ms, created_at";

impl Store {
    /// Registers a webhook; `None` if the tenant already has one of that name.
    pub async fn create_webhook(
        &self,
        tenant_id: &str,
        new: &NewWebhook,
    ) -> Result<Option<WebhookRecord>> {
        if self.webhook_named(tenant_id, &new.name).await?.is_some() {
            return Ok(None);
        }
        let id = new_id("whk");
        let secrets = serde_json::to_string(&new.signing_secrets)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _w = self.write_guard().await;
        sqlx::query(
            "INSERT INTO webhooks (id, tenant_id, name, plugin, signing_secrets, pipeline_id, \
             debounce_ms, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(&new.name)
        .bind(&new.plugin)
        .bind(&secrets)
        .bind(new.pipeline_id.as_deref())
        .bind(new.debounce_ms)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        drop(_w);
        self.webhook(&id).await
    }

    /// A webhook by id (any tenant: the id is the delivery URL).
    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRecord>> {
        let q = format!("SELECT {COLUMNS} FROM webhooks WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(WebhookRecord::from_row).transpose()
    }

    async fn webhook_named(&self, tenant_id: &str, name: &str) -> Result<Option<WebhookRecord>> {
        let q = format!("SELECT {COLUMNS} FROM webhooks WHERE tenant_id = $1 AND name = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(WebhookRecord::from_row).transpose()
    }

    /// The tenant's webhooks.
    pub async fn webhooks(&self, tenant_id: &str) -> Result<Vec<WebhookRecord>> {
        let q = format!("SELECT {COLUMNS} FROM webhooks WHERE tenant_id = $1 ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(WebhookRecord::from_row).collect()
    }

    /// Deletes a webhook of the tenant; returns whether it existed.
    pub async fn delete_webhook(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let _w = self.write_guard().await;
        let done = sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a delivery id; `false` if it was seen before (a replay). Ids older than
    /// `keep_ms` are forgotten (the signature window refuses such deliveries anyway).
    pub async fn record_delivery(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        keep_ms: i64,
    ) -> Result<bool> {
        let now = now_ms();
        let _w = self.write_guard().await;
        sqlx::query("DELETE FROM webhook_deliveries WHERE received_at < $1")
            .bind(now.saturating_sub(keep_ms))
            .execute(&self.pool)
            .await?;
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (webhook_id, delivery_id, received_at) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(webhook_id)
        .bind(delivery_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets a delivery id (its handling failed, so the sender's retry is welcome).
    pub async fn forget_delivery(&self, webhook_id: &str, delivery_id: &str) -> Result<()> {
        let _w = self.write_guard().await;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND delivery_id = $2")
            .bind(webhook_id)
            .bind(delivery_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Runs of the tenant waiting on a question (newest question first), at most 100.
    pub async fn runs_waiting_on(&self, tenant_id: &str, question: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT a.run_id AS run_id FROM answers a JOIN runs r ON r.id = a.run_id \
             WHERE r.tenant_id = $1 AND a.question = $2 AND a.answer IS NULL \
             AND r.status IN ('running', 'waiting', 'paused') ORDER BY a.asked_at LIMIT 100",
        )
        .bind(tenant_id)
        .bind(question)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("run_id")?)).collect()
    }

    /// Adds a delivery's items to the webhook's open batch (one whose window has not
    /// passed), or opens one due `debounce_ms` from now. Returns the batch id.
    pub async fn add_to_batch(
        &self,
        webhook: &WebhookRecord,
        delivery_id: &str,
        items: &[Value],
    ) -> Result<String> {
        let now = now_ms();
        let _w = self.write_guard().await;
        let mut tx = self.pool.begin().await?;
        let open = sqlx::query(
            "SELECT id, items, deliveries FROM webhook_batches \
             WHERE webhook_id = $1 AND run_id IS NULL AND claimed_at IS NULL AND due_at > $2 \
             ORDER BY created_at LIMIT 1",
        )
        .bind(&webhook.id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let id = if let Some(row) = open {
            let id: String = row.try_get("id")?;
            let mut all: Vec<Value> = parse_list(&row.try_get::<String, _>("items")?)?;
            let mut ids: Vec<String> = parse_list(&row.try_get::<String, _>("deliveries")?)?;
            all.extend_from_slice(items);
            ids.push(delivery_id.to_string());
            sqlx::query("UPDATE webhook_batches SET items = $2, deliveries = $3 WHERE id = $1")
                .bind(&id)
                .bind(to_text(&all)?)
                .bind(to_text(&ids)?)
                .execute(&mut *tx)
                .await?;
            id
        } else {
            let id = new_id("bat");
            sqlx::query(
                "INSERT INTO webhook_batches (id, webhook_id, tenant_id, items, deliveries, \
                 due_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(&webhook.id)
            .bind(&webhook.tenant_id)
            .bind(to_text(items)?)
            .bind(to_text(&[delivery_id])?)
            .bind(now.saturating_add(webhook.debounce_ms))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            id
        };
        tx.commit().await?;
        Ok(id)
    }

    /// Claims batches whose window has passed (and batches claimed by a host that did
    /// not finish within `stale_ms`), for runs to be started.
    pub async fn claim_due_batches(&self, stale_ms: i64) -> Result<Vec<DueBatch>> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT id, webhook_id, tenant_id, items, deliveries FROM webhook_batches \
             WHERE run_id IS NULL AND due_at <= $1 \
             AND (claimed_at IS NULL OR claimed_at < $2) ORDER BY due_at LIMIT 32",
        )
        .bind(now)
        .bind(now.saturating_sub(stale_ms))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::new();
        for row in rows {
            let id: String = row.try_get("id")?;
            let _w = self.write_guard().await;
            let done = sqlx::query(
                "UPDATE webhook_batches SET claimed_at = $2 WHERE id = $1 AND run_id IS NULL \
                 AND (claimed_at IS NULL OR claimed_at < $3)",
            )
            .bind(&id)
            .bind(now)
            .bind(now.saturating_sub(stale_ms))
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                claimed.push(DueBatch {
                    id,
                    webhook_id: row.try_get("webhook_id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    items: parse_list(&row.try_get::<String, _>("items")?)?,
                    deliveries: parse_list(&row.try_get::<String, _>("deliveries")?)?,
                });
            }
        }
        Ok(claimed)
    }

    /// Records the run a batch started.
    pub async fn batch_started(&self, batch_id: &str, run_id: &str) -> Result<()> {
        let _w = self.write_guard().await;
        sqlx::query("UPDATE webhook_batches SET run_id = $2 WHERE id = $1")
            .bind(batch_id)
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The run a batch started, once it has.
    pub async fn batch_run(&self, batch_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT run_id FROM webhook_batches WHERE id = $1")
            .bind(batch_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("run_id")?,
            None => None,
        })
    }
}

fn parse_list<T: serde::de::DeserializeOwned>(text: &str) -> Result<Vec<T>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("webhook batch: {e}")))
}

fn to_text<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}
