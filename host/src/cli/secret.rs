//! `corral secret set|list|delete`: a tenant's secrets, offline on the database (like
//! `corral token`). Values are read from stdin or an environment variable, never from
//! the command line (where `ps` and shell history would see them), and never printed.

use super::Cli;
use clap::Subcommand;
use std::io::Read;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum SecretCommand {
    /// Create or replace a secret; the value comes from stdin (one trailing newline is
    /// dropped) or from --from-env.
    Set {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// The secret's name, as plugins refer to it: `${secret:NAME}`.
        name: String,
        /// Read the value from this environment variable instead of stdin.
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
        #[command(flatten)]
        db: super::runs::DbArgs,
    },
    /// List a tenant's secrets (names and times, never values).
    List {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        db: super::runs::DbArgs,
    },
    /// Delete a secret.
    Delete {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// The secret's name.
        name: String,
        #[command(flatten)]
        db: super::runs::DbArgs,
    },
}

fn read_value(from_env: Option<&str>) -> Result<String, String> {
    let value = match from_env {
        Some(var) => std::env::var(var).map_err(|_| format!("${var} is not set"))?,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .take(u64::try_from(crate::secrets::MAX_VALUE).unwrap_or(u64::MAX) + 2)
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read the value from stdin: {e}"))?;
            let trimmed = text.strip_suffix('\n').unwrap_or(&text);
            trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string()
        }
    };
    if value.is_empty() || value.len() > crate::secrets::MAX_VALUE {
        return Err(format!(
            "the value must be 1 to {} bytes",
            crate::secrets::MAX_VALUE
        ));
    }
    Ok(value)
}

pub(super) async fn secret(cli: &Cli, cmd: &SecretCommand) -> anyhow::Result<ExitCode> {
    let (tenant, db) = match cmd {
        SecretCommand::Set { tenant, db, .. }
        | SecretCommand::List { tenant, db }
        | SecretCommand::Delete { tenant, db, .. } => (tenant, db),
    };
    if let SecretCommand::Set { name, .. } | SecretCommand::Delete { name, .. } = cmd
        && let Err(e) = crate::secrets::check_name(name)
    {
        eprintln!("INVALID_INPUT: {e}");
        return Ok(ExitCode::from(2));
    }
    let store = cli.store(db).await?;
    // The tenant embedded commands (`corral run`) act as exists on first use.
    if tenant == super::runs::LOCAL_TENANT {
        store.ensure_tenant(tenant).await?;
    }
    let Some(tenant_id) = store.tenant_id(tenant).await? else {
        eprintln!("TENANT_NOT_FOUND: no tenant `{tenant}`");
        return Ok(ExitCode::from(2));
    };
    match cmd {
        SecretCommand::Set { name, from_env, .. } => {
            let value = match read_value(from_env.as_deref()) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("INVALID_INPUT: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let created = store.put_secret(&tenant_id, name, &value).await?;
            let what = if created { "created" } else { "replaced" };
            eprintln!("{what} secret `{name}` for `{tenant}`");
        }
        SecretCommand::List { .. } => {
            for s in store.secrets(&tenant_id).await? {
                println!(
                    "{}  updated {}",
                    s.name,
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis(
                                u64::try_from(s.updated_at).unwrap_or(0)
                            )
                    )
                );
            }
        }
        SecretCommand::Delete { name, .. } => {
            if !store.delete_secret(&tenant_id, name).await? {
                eprintln!("SECRET_NOT_FOUND: no secret `{name}` for `{tenant}`");
                return Ok(ExitCode::from(2));
            }
            eprintln!("deleted secret `{name}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}
