//! Browser sessions: a token exchanged for a cookie. Only the SHA-256 hash of the cookie's
//! value is stored (like tokens); a session is found only while its token is live and it
//! has not expired, so revoking the token ends its sessions at once.

use super::{Result, Store, now_ms, token_hash};
use sqlx::Row;

/// Live sessions one token may hold; a login past it replaces the token's oldest session.
pub const MAX_SESSIONS_PER_TOKEN: i64 = 100;

/// Expired sessions deleted at each login: lazy clean-up, bounded work per request.
const CLEANUP_BATCH: i64 = 100;

/// A live session: its token's tenant and role.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The hash of the session's cookie value: the session's key (never the value).
    pub hash: String,
    /// The token the session was made from.
    pub token_id: String,
    /// The token's tenant id.
    pub tenant_id: String,
    /// The tenant's name.
    pub tenant_name: String,
    /// The token's role.
    pub role: String,
    /// Unix ms after which the session is gone.
    pub expires_at: i64,
}

impl Store {
    /// Records a session for `token_id` whose cookie value is `secret` (only its hash is
    /// stored), valid for `ttl_ms`. Deletes a bounded batch of expired sessions first, and
    /// the token's oldest session when it already holds [`MAX_SESSIONS_PER_TOKEN`].
    pub async fn create_session(&self, token_id: &str, secret: &str, ttl_ms: i64) -> Result<i64> {
        let now = now_ms();
        let expires_at = now.saturating_add(ttl_ms.max(1));
        let _w = self.write_guard().await;
        sqlx::query(
            "DELETE FROM sessions WHERE hash IN (SELECT s.hash FROM sessions s \
             JOIN tokens t ON t.id = s.token_id \
             WHERE s.expires_at <= $1 OR t.revoked_at IS NOT NULL LIMIT $2)",
        )
        .bind(now)
        .bind(CLEANUP_BATCH)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "DELETE FROM sessions WHERE token_id = $1 AND hash NOT IN \
             (SELECT hash FROM sessions WHERE token_id = $1 ORDER BY created_at DESC LIMIT $2)",
        )
        .bind(token_id)
        .bind(MAX_SESSIONS_PER_TOKEN - 1)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "INSERT INTO sessions (hash, token_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash(secret))
        .bind(token_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(expires_at)
    }

    /// The live session whose cookie value is `secret`: not expired, and its token not
    /// revoked (checked on every lookup).
    pub async fn session(&self, secret: &str) -> Result<Option<SessionRecord>> {
        let hash = token_hash(secret);
        let row = sqlx::query(
            "SELECT s.hash, s.expires_at, t.id, t.tenant_id, t.role, n.name FROM sessions s \
             JOIN tokens t ON t.id = s.token_id JOIN tenants n ON n.id = t.tenant_id \
             WHERE s.hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL",
        )
        .bind(&hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        // Found by hash; compared again in constant time, as tokens are.
        let stored: String = row.try_get("hash")?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            stored.as_bytes(),
            hash.as_bytes(),
        )) {
            return Ok(None);
        }
        Ok(Some(SessionRecord {
            hash: stored,
            token_id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            tenant_name: row.try_get("name")?,
            role: row.try_get("role")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    /// Deletes the session whose cookie value is `secret`; returns whether it existed.
    pub async fn delete_session(&self, secret: &str) -> Result<bool> {
        let _w = self.write_guard().await;
        let done = sqlx::query("DELETE FROM sessions WHERE hash = $1")
            .bind(token_hash(secret))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
