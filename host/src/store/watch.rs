//! What `events::watch` reads to learn of commits made by other processes (another
//! `corral serve` on the same Postgres, a `corral run` next to `corral events --follow` on
//! one SQLite file): the database's URL, for the one connection a process watches with;
//! the Postgres channel the event trigger notifies (migration 0007); and on SQLite the
//! heads of the events committed after a row id.

use super::{Backend, Result, Store, redact_url};
use sqlx::{AnyConnection, Connection, Row};
use std::collections::HashSet;
use std::sync::Arc;

/// A database URL, kept for the watcher's own connection. Its `Debug` hides the password.
#[derive(Clone)]
pub(crate) struct DbUrl(Arc<str>);

impl DbUrl {
    pub(crate) fn new(url: &str) -> DbUrl {
        DbUrl(Arc::from(url))
    }
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// The notification channel of the current schema (the trigger computes the same name),
/// so two deployments in two schemas of one database do not wake each other. Channel
/// names are at most 63 bytes, hence a digest rather than the schema's name.
const CHANNEL: &str = "SELECT 'corral_' || left(md5(current_schema()), 16) AS channel";

/// How many ids one token query names.
const TOKEN_CHUNK: usize = 500;

/// A committed event's position, as the SQLite watcher reads it.
#[derive(Debug, Clone)]
pub(crate) struct EventHead {
    /// The event row's `rowid`: SQLite has one writer, so row ids follow commit order.
    pub(crate) rowid: i64,
    pub(crate) run_id: String,
    pub(crate) tenant_id: String,
    pub(crate) seq: i64,
}

/// The prefix of a watched browser session's key (then the hash of its cookie value),
/// beside the token ids open streams are watched by.
pub const SESSION_KEY: &str = "session:";

impl Store {
    /// The database URL.
    pub(crate) fn url(&self) -> &str {
        &self.url.0
    }

    /// The Postgres channel this store's events are notified on (None on SQLite).
    pub(crate) async fn notify_channel(&self) -> Result<Option<String>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let row = sqlx::query(CHANNEL).fetch_one(&self.pool).await?;
        Ok(Some(row.try_get("channel")?))
    }

    /// Which of `ids` are live: a token id whose token exists and is not revoked, or a
    /// [`SESSION_KEY`] key whose session exists, has not expired and whose token is live.
    /// One query per [`TOKEN_CHUNK`] ids of each kind, however many streams use them.
    pub(crate) async fn live_tokens(&self, ids: &[String]) -> Result<HashSet<String>> {
        let (sessions, tokens): (Vec<&String>, Vec<&String>) =
            ids.iter().partition(|id| id.starts_with(SESSION_KEY));
        let mut live = HashSet::new();
        for chunk in sessions.chunks(TOKEN_CHUNK) {
            let params: Vec<String> = (2..=chunk.len() + 1).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT s.hash FROM sessions s JOIN tokens t ON t.id = s.token_id \
                 WHERE s.expires_at > $1 AND t.revoked_at IS NULL AND s.hash IN ({})",
                params.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(super::now_ms());
            for key in chunk {
                query = query.bind(key.strip_prefix(SESSION_KEY).unwrap_or(key));
            }
            for row in query.fetch_all(&self.pool).await? {
                let hash: String = row.try_get("hash")?;
                live.insert(format!("{SESSION_KEY}{hash}"));
            }
        }
        for chunk in tokens.chunks(TOKEN_CHUNK) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id FROM tokens WHERE revoked_at IS NULL AND id IN ({})",
                params.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                live.insert(row.try_get("id")?);
            }
        }
        Ok(live)
    }
}

/// A connection of its own to a SQLite database, for the process's one poller.
pub(crate) async fn sqlite_connect(url: &str) -> Result<AnyConnection> {
    let mut conn = AnyConnection::connect(url).await?;
    sqlx::query("PRAGMA busy_timeout = 10000")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// `PRAGMA data_version`: changes when another connection (of this process or another)
/// has committed since this connection last looked.
pub(crate) async fn sqlite_data_version(conn: &mut AnyConnection) -> Result<i64> {
    let row = sqlx::query("PRAGMA data_version").fetch_one(conn).await?;
    Ok(row.try_get(0)?)
}

/// The highest event row id (0: no events yet).
pub(crate) async fn sqlite_last_rowid(conn: &mut AnyConnection) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(rowid), 0) AS last FROM events")
        .fetch_one(conn)
        .await?;
    Ok(row.try_get("last")?)
}

/// The heads of events committed after row id `after`, in commit order, at most `limit`.
pub(crate) async fn sqlite_heads_after(
    conn: &mut AnyConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<EventHead>> {
    let rows = sqlx::query(
        "SELECT rowid AS rid, run_id, tenant_id, seq FROM events WHERE rowid > $1 \
         ORDER BY rowid LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EventHead {
                rowid: r.try_get("rid")?,
                run_id: r.try_get("run_id")?,
                tenant_id: r.try_get("tenant_id")?,
                seq: r.try_get("seq")?,
            })
        })
        .collect()
}
