//! Tenant secrets in the database: only sealed values are ever written (see
//! `crate::secrets`); listing returns names and times, never values.

use super::{Result, Store, StoreError, now_ms};
use crate::secrets::Sealer;
use serde::Serialize;
use sqlx::Row;

/// A secret as listed: no value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl Store {
    /// Sets the key that seals secrets (without one, secrets cannot be set or read).
    pub fn with_sealer(mut self, sealer: Sealer) -> Store {
        self.sealer = Some(std::sync::Arc::new(sealer));
        self
    }

    fn sealer(&self) -> Result<&Sealer> {
        self.sealer.as_deref().ok_or(StoreError::SecretsDisabled)
    }

    /// Whether secrets can be set and read (the store has a key to seal them with).
    pub fn secrets_enabled(&self) -> bool {
        self.sealer.is_some()
    }

    /// Creates or replaces `tenant_id`'s secret `name`; returns whether it was new.
    pub async fn put_secret(&self, tenant_id: &str, name: &str, value: &str) -> Result<bool> {
        let sealed = self
            .sealer()?
            .seal(tenant_id, name, value)
            .map_err(StoreError::Corrupt)?;
        let now = now_ms();
        let _w = self.write_guard().await;
        let updated = sqlx::query(
            "UPDATE secrets SET sealed = $3, updated_at = $4 WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(&sealed)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO secrets (tenant_id, name, sealed, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(&sealed)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    /// The tenant's secrets, by name, without values.
    pub async fn secrets(&self, tenant_id: &str) -> Result<Vec<SecretInfo>> {
        let rows = sqlx::query(
            "SELECT name, created_at, updated_at FROM secrets WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SecretInfo {
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// The value of a secret, for the host's own use (outbound request headers).
    pub async fn secret_value(&self, tenant_id: &str, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT sealed FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: String = row.try_get("sealed")?;
        match self.sealer()?.open(tenant_id, name, &sealed) {
            Some(v) => Ok(Some(v)),
            None => Err(StoreError::Corrupt(format!(
                "secret `{name}` does not open with this key (was the key changed?)"
            ))),
        }
    }

    /// Deletes a secret; returns whether it existed.
    pub async fn delete_secret(&self, tenant_id: &str, name: &str) -> Result<bool> {
        let _w = self.write_guard().await;
        let done = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
