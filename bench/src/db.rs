//! Fresh databases for the run-layer metrics: SQLite in a new temporary directory (with
//! the other temporary files of the run), or Postgres in a new schema that is dropped
//! afterwards, the isolation the store tests use (tests/all/runs.rs): a uniquely named
//! schema, and a URL whose connections set `search_path` to it.

use anyhow::{Context as _, Result};
use std::path::Path;

/// The variable naming the Postgres server (as for the test suite).
pub const POSTGRES_ENV: &str = "CORRAL_TEST_POSTGRES_URL";

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SQLite, Corral's embedded default.
    Sqlite,
    /// Postgres.
    Postgres,
}

impl Kind {
    /// `sqlite` or `postgres`, as in row names.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
        }
    }
}

/// Where a fresh database lives.
enum Place {
    Dir(tempfile::TempDir),
    Schema { server: String, schema: String },
}

/// A new, empty database (no tables yet: `corral::store::Store::open` migrates it).
pub struct FreshDb {
    /// Which database.
    pub kind: Kind,
    /// The URL to open it with.
    pub url: String,
    place: Place,
}

impl FreshDb {
    /// A new SQLite database in a new directory under `parent`.
    pub fn sqlite(parent: &Path) -> Result<FreshDb> {
        std::fs::create_dir_all(parent)?;
        let dir = tempfile::Builder::new().prefix("db-").tempdir_in(parent)?;
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("corral.db").display()
        );
        Ok(FreshDb {
            kind: Kind::Sqlite,
            url,
            place: Place::Dir(dir),
        })
    }

    /// A new schema on the Postgres server at `server`.
    pub async fn postgres(server: &str) -> Result<FreshDb> {
        // Lowercase hex: a valid unquoted identifier, unique per call.
        let schema = corral::store::new_id("corral_bench");
        let admin = sqlx::PgPool::connect(server)
            .await
            .with_context(|| format!("connecting to {}", corral::store::redact_url(server)))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let sep = if server.contains('?') { '&' } else { '?' };
        Ok(FreshDb {
            kind: Kind::Postgres,
            url: format!("{server}{sep}options=-c%20search_path%3D{schema}"),
            place: Place::Schema {
                server: server.to_string(),
                schema,
            },
        })
    }

    /// A new database of `kind`: SQLite under `parent`, Postgres on `postgres`.
    pub async fn new(kind: Kind, parent: &Path, postgres: Option<&str>) -> Result<FreshDb> {
        match kind {
            Kind::Sqlite => FreshDb::sqlite(parent),
            Kind::Postgres => {
                let server = postgres.ok_or_else(|| {
                    anyhow::anyhow!("{POSTGRES_ENV} is not set: no Postgres to measure")
                })?;
                FreshDb::postgres(server).await
            }
        }
    }

    /// The filesystem or server it is on, for `params`.
    pub fn location(&self) -> String {
        match &self.place {
            Place::Dir(dir) => crate::mount_of(dir.path()).unwrap_or_default(),
            Place::Schema { server, .. } => corral::store::redact_url(server),
        }
    }

    /// Removes it: the directory, or the schema with everything in it. Pools on it
    /// should be closed (or dropped) first.
    pub async fn remove(self) -> Result<()> {
        match self.place {
            Place::Dir(dir) => Ok(dir.close()?),
            Place::Schema { server, schema } => {
                let admin = sqlx::PgPool::connect(&server).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&admin)
                .await?;
                admin.close().await;
                Ok(())
            }
        }
    }
}

/// Runs `body` with two fresh databases of `kind` (one for Corral, one for its
/// baseline) and removes both afterwards, whatever `body` returned.
pub async fn with_two<T>(
    kind: Kind,
    parent: &Path,
    postgres: Option<&str>,
    body: impl AsyncFnOnce(&FreshDb, &FreshDb) -> Result<T>,
) -> Result<T> {
    let a = FreshDb::new(kind, parent, postgres).await?;
    let b = match FreshDb::new(kind, parent, postgres).await {
        Ok(b) => b,
        Err(e) => {
            let _ = a.remove().await;
            return Err(e);
        }
    };
    let result = body(&a, &b).await;
    // Give dropped pools a moment to close their connections before a schema goes.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let removed_a = a.remove().await;
    let removed_b = b.remove().await;
    let out = result?;
    removed_a.context("removing the database")?;
    removed_b.context("removing the database")?;
    Ok(out)
}
