//! Tenants, tokens, registered plugins and stored pipelines.

use super::{Result, Store, link_stmt, new_id, now_ms};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// An API token's record (never its secret).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TokenRecord {
    /// Id (shown in listings, used to revoke).
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// `admin`, `operator` or `viewer`.
    #[schemars(extend("enum" = ["admin", "operator", "viewer"]))]
    pub role: String,
    /// A label.
    pub name: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, when revoked.
    pub revoked_at: Option<i64>,
}

impl TokenRecord {
    fn from_row(r: &AnyRow) -> Result<TokenRecord> {
        Ok(TokenRecord {
            id: r.try_get("id")?,
            tenant_id: r.try_get("tenant_id")?,
            role: r.try_get("role")?,
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
            revoked_at: r.try_get("revoked_at")?,
        })
    }
}

/// A tenant.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRecord {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Fuel used by all its runs.
    pub fuel_used: i64,
    /// Model tokens used by all its runs.
    pub tokens_used: i64,
    /// Their cost, in millionths of the currency of the model prices.
    pub cost_micros: i64,
}

/// A registered plugin.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PluginRecord {
    /// Id (`plg_...`).
    pub id: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// WIT world.
    pub world: String,
    /// What it said about itself (agent info or tool specs).
    pub info: serde_json::Value,
    /// Bytes.
    pub size: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Its permission manifest (`null`: it is granted nothing).
    #[schemars(schema_with = "crate::api::doc::optional_manifest")]
    pub manifest: Option<serde_json::Value>,
}

impl PluginRecord {
    fn from_row(r: &AnyRow) -> Result<PluginRecord> {
        let info: String = r.try_get("info")?;
        Ok(PluginRecord {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            version: r.try_get("version")?,
            digest: r.try_get("digest")?,
            world: r.try_get("world")?,
            info: serde_json::from_str(&info).unwrap_or(serde_json::Value::Null),
            size: r.try_get("size")?,
            created_at: r.try_get("created_at")?,
            manifest: r
                .try_get::<Option<String>, _>("manifest")?
                .and_then(|m| serde_json::from_str(&m).ok()),
        })
    }
}

impl Store {
    /// Sets a registered plugin's permission manifest (already validated); returns
    /// whether the plugin exists.
    pub async fn set_plugin_manifest(
        &self,
        tenant_id: &str,
        id: &str,
        manifest: &serde_json::Value,
    ) -> Result<bool> {
        let _w = self.write_guard().await;
        let done = sqlx::query("UPDATE plugins SET manifest = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .bind(manifest.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A stored pipeline.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PipelineRecord {
    /// Id (`pip_...`).
    pub id: String,
    /// Name.
    pub name: String,
    /// The pipeline document (JSON).
    #[schemars(schema_with = "crate::api::doc::pipeline_document")]
    pub spec: serde_json::Value,
    /// Unix ms.
    pub created_at: i64,
}

impl PipelineRecord {
    fn from_row(r: &AnyRow) -> Result<PipelineRecord> {
        let spec: String = r.try_get("spec")?;
        Ok(PipelineRecord {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            spec: serde_json::from_str(&spec).unwrap_or(serde_json::Value::Null),
            created_at: r.try_get("created_at")?,
        })
    }
}

/// The SHA-256 hex of a token secret: the only form in which tokens are stored.
pub fn token_hash(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Store {
    /// All tenants.
    pub async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, fuel_used, tokens_used, cost_micros FROM tenants ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TenantRecord {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    fuel_used: r.try_get("fuel_used")?,
                    tokens_used: r.try_get("tokens_used")?,
                    cost_micros: r.try_get("cost_micros")?,
                })
            })
            .collect()
    }

    /// A tenant's id by name.
    pub async fn tenant_id(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("id")?),
            None => None,
        })
    }

    /// Creates a token and returns its record and its secret (shown once, never stored).
    pub async fn create_token(
        &self,
        tenant_id: &str,
        role: &str,
        name: &str,
    ) -> Result<(TokenRecord, String)> {
        let bits: [u8; 32] = rand::random();
        let secret = format!("crl_{}", hex::encode(bits));
        let id = new_id("tok");
        let now = now_ms();
        let _w = self.write_guard().await;
        sqlx::query(
            "INSERT INTO tokens (id, tenant_id, role, name, hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(role)
        .bind(name)
        .bind(token_hash(&secret))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok((
            TokenRecord {
                id,
                tenant_id: tenant_id.to_string(),
                role: role.to_string(),
                name: name.to_string(),
                created_at: now,
                revoked_at: None,
            },
            secret,
        ))
    }

    /// The live (not revoked) token with this hash.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, role, name, hash, created_at, revoked_at FROM tokens \
             WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        // The lookup found it by hash; compare again in constant time so timing says
        // nothing about how much of a guess matched.
        let stored: String = row.try_get("hash")?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            stored.as_bytes(),
            hash.as_bytes(),
        )) {
            return Ok(None);
        }
        Ok(Some(TokenRecord::from_row(&row)?))
    }

    /// A tenant's tokens.
    pub async fn tokens(&self, tenant_id: &str) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, role, name, created_at, revoked_at FROM tokens \
             WHERE tenant_id = $1 ORDER BY created_at",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(TokenRecord::from_row).collect()
    }

    /// Revokes a tenant's token; `false` if there is no such live token.
    pub async fn revoke_token(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let _w = self.write_guard().await;
        let done = sqlx::query(
            "UPDATE tokens SET revoked_at = $3 WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Registers a plugin (its bytes go into the content-addressed blobs).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_plugin(
        &self,
        tenant_id: &str,
        name: &str,
        version: &str,
        digest: &str,
        world: &str,
        info: &serde_json::Value,
        bytes: &[u8],
    ) -> Result<Option<PluginRecord>> {
        let id = new_id("plg");
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let now = now_ms();
        let _w = self.write_guard().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO blobs (digest, size, content) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(size)
        .bind(bytes)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "INSERT INTO plugins (id, tenant_id, name, version, digest, world, info, size, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tenant_id, name, version) DO NOTHING",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(name)
        .bind(version)
        .bind(digest)
        .bind(world)
        .bind(info.to_string())
        .bind(size)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        self.plugin(tenant_id, &id).await
    }

    /// A tenant's plugins.
    pub async fn plugins(&self, tenant_id: &str) -> Result<Vec<PluginRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, version, digest, world, info, size, created_at, manifest FROM plugins \
             WHERE tenant_id = $1 ORDER BY name, created_at",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PluginRecord::from_row).collect()
    }

    /// A tenant's plugin by id.
    pub async fn plugin(&self, tenant_id: &str, id: &str) -> Result<Option<PluginRecord>> {
        let row = sqlx::query(
            "SELECT id, name, version, digest, world, info, size, created_at, manifest FROM plugins \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| PluginRecord::from_row(&r)).transpose()
    }

    /// A tenant's plugin by name and version.
    pub async fn plugin_named(
        &self,
        tenant_id: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<PluginRecord>> {
        let row = sqlx::query(
            "SELECT id, name, version, digest, world, info, size, created_at, manifest FROM plugins \
             WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| PluginRecord::from_row(&r)).transpose()
    }

    /// The component bytes of a tenant's plugin.
    pub async fn plugin_bytes(&self, tenant_id: &str, id: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query(
            "SELECT b.content AS content FROM plugins p JOIN blobs b ON b.digest = p.digest \
             WHERE p.tenant_id = $1 AND p.id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("content")?),
            None => None,
        })
    }

    /// Records which registered plugins a run uses.
    pub async fn link_run_plugins(&self, run_id: &str, plugin_ids: &[String]) -> Result<()> {
        if let Some(link) = link_stmt(run_id, plugin_ids) {
            self.writer.write(vec![link]).await?;
        }
        Ok(())
    }

    /// Deletes a tenant's plugin unless a live run uses it. `Ok(None)`: no such plugin;
    /// `Ok(Some(false))`: in use.
    pub async fn delete_plugin(&self, tenant_id: &str, id: &str) -> Result<Option<bool>> {
        if self.plugin(tenant_id, id).await?.is_none() {
            return Ok(None);
        }
        let _w = self.write_guard().await;
        let done = sqlx::query(
            "DELETE FROM plugins WHERE tenant_id = $1 AND id = $2 AND NOT EXISTS ( \
               SELECT 1 FROM run_plugins rp JOIN runs r ON r.id = rp.run_id \
               WHERE rp.plugin_id = $2 AND r.status IN ('queued', 'running', 'waiting', 'paused'))",
        )
        .bind(tenant_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(Some(done.rows_affected() == 1))
    }

    /// Stores a pipeline document.
    pub async fn insert_pipeline(
        &self,
        tenant_id: &str,
        name: &str,
        spec: &serde_json::Value,
    ) -> Result<PipelineRecord> {
        let id = new_id("pip");
        let now = now_ms();
        let _w = self.write_guard().await;
        sqlx::query(
            "INSERT INTO pipelines (id, tenant_id, name, spec, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(name)
        .bind(spec.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(PipelineRecord {
            id,
            name: name.to_string(),
            spec: spec.clone(),
            created_at: now,
        })
    }

    /// A tenant's pipelines.
    pub async fn pipelines(&self, tenant_id: &str) -> Result<Vec<PipelineRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, spec, created_at FROM pipelines WHERE tenant_id = $1 ORDER BY created_at",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PipelineRecord::from_row).collect()
    }

    /// A tenant's pipeline by id.
    pub async fn pipeline(&self, tenant_id: &str, id: &str) -> Result<Option<PipelineRecord>> {
        let row = sqlx::query(
            "SELECT id, name, spec, created_at FROM pipelines WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| PipelineRecord::from_row(&r)).transpose()
    }

    /// Deletes a tenant's pipeline; `false` if there is none.
    pub async fn delete_pipeline(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let _w = self.write_guard().await;
        let done = sqlx::query("DELETE FROM pipelines WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Queued runs of a tenant.
    pub async fn queued_count(&self, tenant_id: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM runs WHERE tenant_id = $1 AND status = 'queued'",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Runs per status, for metrics.
    pub async fn run_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }
}
