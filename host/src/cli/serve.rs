//! `corral serve`, and the offline `tenant` and `token` commands.

use super::{Cli, LogFormat};
use crate::api::{ApiConfig, AppState, Role};
use crate::runs::{Runner, RunnerConfig};
use crate::store::Store;
use clap::{Args, Subcommand};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Every setting comes from a flag, else a `CORRAL_*` variable, else the config file, else
/// its default.
#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Address to listen on. Default: 127.0.0.1:8080.
    #[arg(long, env = "CORRAL_LISTEN")]
    listen: Option<String>,
    /// Database URL (postgres://... or sqlite://PATH). Default: SQLite in the data dir.
    #[arg(long, env = "CORRAL_DATABASE_URL")]
    database_url: Option<String>,
    /// A TOML config file. Default: ./corral.toml when it exists.
    #[arg(long, env = "CORRAL_CONFIG")]
    config: Option<PathBuf>,
    /// Runs executed at once. Default: 8.
    #[arg(long, env = "CORRAL_MAX_CONCURRENT_RUNS")]
    max_concurrent_runs: Option<usize>,
    /// Open SSE streams per tenant. Default: 100.
    #[arg(long, env = "CORRAL_MAX_STREAMS_PER_TENANT")]
    max_streams_per_tenant: Option<usize>,
    /// Seconds running steps get to finish on shutdown before they are left for recovery.
    /// Default: 10.
    #[arg(long, env = "CORRAL_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: Option<u64>,
    /// Queued runs per tenant before new submissions get 429. Default: 1000.
    #[arg(long, env = "CORRAL_MAX_QUEUED_PER_TENANT")]
    max_queued_per_tenant: Option<i64>,
    /// Largest run input, and largest arguments of an MCP tool call, in bytes. Default:
    /// 16777216 (16 MiB; a request body is capped at 1 MiB before that).
    #[arg(long, env = "CORRAL_MAX_INPUT_BYTES")]
    max_input_bytes: Option<usize>,
    /// Seconds a client has to send a request's headers (also the next request's, once its
    /// first byte arrived on a kept-alive connection). Default: 10.
    #[arg(long, env = "CORRAL_HEADER_READ_TIMEOUT_SECS")]
    header_read_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request's body, from its headers. Default: 30.
    #[arg(long, env = "CORRAL_BODY_READ_TIMEOUT_SECS")]
    body_read_timeout_secs: Option<u64>,
    /// Seconds a kept-alive connection may wait between requests (SSE streams are not
    /// idle). Default: 60.
    #[arg(long, env = "CORRAL_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Open connections per client address; more are closed at once. Default: 64.
    #[arg(long, env = "CORRAL_MAX_CONNECTIONS_PER_ADDRESS")]
    max_connections_per_address: Option<usize>,
    /// Seconds of silence before a stream heartbeat (sent within 1.5 times this). Default: 15.
    #[arg(long, env = "CORRAL_HEARTBEAT_SECS", hide = true)]
    heartbeat_secs: Option<u64>,
    /// Seconds a browser session lives (it ends with its token before that). Default:
    /// 43200 (12 h).
    #[arg(long, env = "CORRAL_SESSION_TTL_SECS")]
    session_ttl_secs: Option<u64>,
    /// Mark session cookies `Secure` even when a request has no `X-Forwarded-Proto: https`
    /// (the server is only reached over TLS, through a proxy).
    #[arg(long, env = "CORRAL_COOKIE_SECURE")]
    cookie_secure: bool,
    /// An origin (`scheme://host[:port]`) whose pages may call the API from a browser with
    /// credentials (CORS); repeat it, or comma-separate them in the variable. Default: none
    /// (same-origin only).
    #[arg(
        long = "cors-origin",
        env = "CORRAL_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
}

/// The config file's keys (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    max_concurrent_runs: Option<usize>,
    max_streams_per_tenant: Option<usize>,
    max_queued_per_tenant: Option<i64>,
    max_input_bytes: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    heartbeat_secs: Option<u64>,
    header_read_timeout_secs: Option<u64>,
    body_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections_per_address: Option<usize>,
    session_ttl_secs: Option<u64>,
    cookie_secure: Option<bool>,
    /// Origins allowed to call the API from a browser with credentials.
    cors_origins: Option<Vec<String>>,
    /// Base64 of the 32-byte key that seals tenant secrets (else CORRAL_SECRETS_KEY, else
    /// a key file in the data directory for the embedded database).
    secrets_key: Option<String>,
    /// Outbound HTTP: host names pinned to addresses, like curl's `--resolve`.
    #[serde(default)]
    http_resolve: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
    /// Model aliases (`[models.<alias>]`), for every tenant.
    #[serde(default)]
    models: std::collections::BTreeMap<String, crate::models::ModelConfig>,
    /// Per-tenant settings (`[tenants.<name>]`), by tenant name.
    #[serde(default)]
    tenants: std::collections::BTreeMap<String, TenantFileConfig>,
    /// The model response cache's bounds.
    #[serde(default)]
    model_cache: Option<crate::models::config::CacheConfig>,
}

/// A tenant's settings in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFileConfig {
    /// Model aliases of this tenant's, replacing (or adding to) the shared ones.
    #[serde(default)]
    models: std::collections::BTreeMap<String, crate::models::ModelConfig>,
}

/// The model gateway the config file describes (`None` when it names no models). Tenants
/// are named; their overrides apply from the next start to tenants created later.
async fn model_gateway(
    models: &std::collections::BTreeMap<String, crate::models::ModelConfig>,
    tenants_file: &std::collections::BTreeMap<String, TenantFileConfig>,
    cache: Option<crate::models::config::CacheConfig>,
    store: &Store,
) -> anyhow::Result<Option<std::sync::Arc<dyn crate::models::ModelGateway>>> {
    if models.is_empty() && tenants_file.values().all(|t| t.models.is_empty()) {
        return Ok(None);
    }
    let known = store.tenants().await?;
    let mut tenants = std::collections::BTreeMap::new();
    for (name, t) in tenants_file {
        let Some(record) = known.iter().find(|k| &k.name == name) else {
            anyhow::bail!("tenants.{name}: no tenant is called `{name}` (create it first)");
        };
        tenants.insert(record.id.clone(), t.models.clone());
    }
    let config = crate::models::ModelsConfig {
        aliases: models.clone(),
        tenants,
        cache: cache.unwrap_or_default(),
    };
    let gateway = crate::models::HttpGateway::new(config, std::sync::Arc::new(store.clone()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(std::sync::Arc::new(gateway)))
}

/// A configuration error: reported as `error: ...` with exit code 2 (bad usage), naming the
/// file or flag and the field.
#[derive(Debug)]
struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The config file and where it is (`None` when no file was given and ./corral.toml is
/// absent).
fn load_file_config(path: Option<&PathBuf>) -> Result<(FileConfig, Option<PathBuf>), ConfigError> {
    let (path, required) = match path {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from("corral.toml"), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_file_config(&text)
            .map(|c| (c, Some(path.clone())))
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display()))),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            Ok((FileConfig::default(), None))
        }
        Err(e) => Err(ConfigError(format!(
            "cannot read config file {}: {e}",
            path.display()
        ))),
    }
}

/// The file's keys, an error naming the field (`max_concurrent_runs: invalid type: ...`).
fn parse_file_config(text: &str) -> Result<FileConfig, String> {
    let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path.is_empty() || path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// The log format the config file names, read before the runtime starts (an unreadable
/// file is reported by `serve` itself).
pub(super) fn file_log_format(args: &ServeArgs) -> Option<LogFormat> {
    load_file_config(args.config.as_ref())
        .ok()
        .and_then(|(f, _)| f.log_format)
}

/// Where a setting came from, for error messages: the file and key, or the flag and its
/// variable.
fn source(file: Option<&Path>, key: &str, flag: &str, env: &str, from_flag: bool) -> String {
    match file {
        Some(file) if !from_flag => format!("config file {}: {key}", file.display()),
        _ => format!("{flag} (or {env}; `{key}` in the config file)"),
    }
}

async fn open_store(
    cli: &Cli,
    url: Option<&str>,
    data_dir: &std::path::Path,
) -> anyhow::Result<Store> {
    let _ = cli;
    Ok(match url {
        Some(url) => Store::open(url).await?,
        None => Store::open_in_dir(data_dir).await?,
    })
}

pub(super) async fn serve(cli: &Cli, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    match serve_checked(cli, args).await {
        Ok(code) => Ok(code),
        Err(e) => match e.downcast::<ConfigError>() {
            Ok(config) => {
                eprintln!("error: {config}");
                Ok(ExitCode::from(2))
            }
            Err(e) => Err(e),
        },
    }
}

async fn serve_checked(cli: &Cli, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let (file, file_path) = load_file_config(args.config.as_ref())?;
    let file_path = file_path.as_deref();
    let cors_origins = cors_origins(args, &file, file_path)?;
    let data_dir = cli
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| cli.data_dir());
    let listen = args
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    if tokio::net::lookup_host(&listen).await.is_err() {
        let from = source(
            file_path,
            "listen",
            "--listen",
            "CORRAL_LISTEN",
            args.listen.is_some(),
        );
        return Err(ConfigError(format!(
            "{from}: `{listen}` is not an address to listen on (HOST:PORT, e.g. 127.0.0.1:8080)"
        ))
        .into());
    }
    let database_url = args.database_url.clone().or(file.database_url.clone());
    if let Some(url) = &database_url
        && !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
    {
        let from = source(
            file_path,
            "database_url",
            "--database-url",
            "CORRAL_DATABASE_URL",
            args.database_url.is_some(),
        );
        return Err(ConfigError(format!(
            "{from}: unsupported database URL `{}` (use sqlite://PATH or postgres://...)",
            crate::store::redact_url(url)
        ))
        .into());
    }
    // The key is checked before the database is opened, so a bad one is a configuration
    // error (the file's key wins over the variable).
    let file_sealer = match &file.secrets_key {
        Some(key) => Some(crate::secrets::Sealer::from_base64(key).map_err(|e| {
            let file = file_path
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            ConfigError(format!("config file {file}: secrets_key: {e}"))
        })?),
        None => {
            crate::secrets::Sealer::from_env().map_err(ConfigError)?;
            None
        }
    };
    let mut store = open_store(cli, database_url.as_deref(), &data_dir).await?;
    if let Some(sealer) = file_sealer {
        store = store.with_sealer(sealer);
    }

    if !store.secrets_enabled() {
        tracing::warn!(
            "secrets are disabled: no secrets key is configured; set {} (base64 of 32 random \
             bytes) or `secrets_key` in the config file to enable them (until then the \
             /v1/secrets routes answer 503 SECRETS_DISABLED)",
            crate::secrets::KEY_ENV
        );
    }

    let engine = crate::engine::Engine::new(crate::engine::EngineConfig {
        cache_dir: Some(data_dir.join("cache")),
        scratch_root: cli
            .scratch_dir
            .clone()
            .unwrap_or(crate::engine::EngineConfig::default().scratch_root),
        http_resolver: crate::capabilities::http::Resolver::with_overrides(
            file.http_resolve.clone(),
        ),
        ..crate::engine::EngineConfig::default()
    })?;
    let runner_config = RunnerConfig {
        max_concurrent_runs: args
            .max_concurrent_runs
            .or(file.max_concurrent_runs)
            .unwrap_or(8),
        lease: super::runs::lease_from_env(),
        max_input_bytes: args
            .max_input_bytes
            .or(file.max_input_bytes)
            .unwrap_or(RunnerConfig::default().max_input_bytes)
            .max(1),
        ..RunnerConfig::default()
    };
    let lease = runner_config.lease;
    let models = model_gateway(&file.models, &file.tenants, file.model_cache, &store).await?;
    let runner = Runner::new(engine, store, runner_config);
    if let Some(models) = models {
        runner.set_models(models);
    }
    // One watcher for the whole server of what other hosts commit (LISTEN/NOTIFY on
    // Postgres, one poller on SQLite), up before the first stream opens.
    runner.bus().start_watcher();
    let defaults = ApiConfig::default();
    let api_config = ApiConfig {
        max_streams_per_tenant: args
            .max_streams_per_tenant
            .or(file.max_streams_per_tenant)
            .unwrap_or(defaults.max_streams_per_tenant),
        max_queued_per_tenant: args
            .max_queued_per_tenant
            .or(file.max_queued_per_tenant)
            .unwrap_or(defaults.max_queued_per_tenant),
        heartbeat: Duration::from_secs(
            args.heartbeat_secs
                .or(file.heartbeat_secs)
                .unwrap_or(15)
                .max(1),
        ),
        session_ttl: Duration::from_secs(
            args.session_ttl_secs
                .or(file.session_ttl_secs)
                .unwrap_or(defaults.session_ttl.as_secs())
                // At least a second; at most 400 days, as browsers cap cookies.
                .clamp(1, 400 * 86_400),
        ),
        cookie_secure: args.cookie_secure || file.cookie_secure.unwrap_or(false),
        cors_origins,
        ..defaults
    };
    let grace = Duration::from_secs(
        args.shutdown_grace_secs
            .or(file.shutdown_grace_secs)
            .unwrap_or(10),
    );
    let conn_defaults = crate::api::server::ConnectionLimits::default();
    let secs = |flag: Option<u64>, file: Option<u64>, default: Duration| {
        flag.or(file)
            .map(|s| Duration::from_secs(s.max(1)))
            .unwrap_or(default)
    };
    let conn_limits = crate::api::server::ConnectionLimits {
        header_read: secs(
            args.header_read_timeout_secs,
            file.header_read_timeout_secs,
            conn_defaults.header_read,
        ),
        body_read: secs(
            args.body_read_timeout_secs,
            file.body_read_timeout_secs,
            conn_defaults.body_read,
        ),
        idle: secs(
            args.idle_timeout_secs,
            file.idle_timeout_secs,
            conn_defaults.idle,
        ),
        max_per_address: args
            .max_connections_per_address
            .or(file.max_connections_per_address)
            .unwrap_or(conn_defaults.max_per_address)
            .max(1),
    };
    let state = AppState::new(runner.clone(), api_config);
    let app = crate::api::router(state.clone());

    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    first_admin_token(state.runner.store(), addr).await?;
    println!("corral listening on http://{addr}");
    tracing::info!(%addr, "listening");

    // The scheduler, and recovery of runs whose host died (checked every lease period).
    let stop = CancellationToken::new();
    let worker = {
        let (runner, stop) = (runner.clone(), stop.clone());
        tokio::spawn(async move { runner.work(false, stop).await })
    };
    let recovery = {
        let (runner, stop) = (runner.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = runner.recover().await {
                    tracing::warn!("recovery failed: {e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(lease) => {}
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    // Webhook deliveries waiting out a debounce window become runs when it passes.
    let _webhook_batches = {
        let (runner, stop) = (runner.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = runner.start_due_webhook_runs().await {
                    tracing::warn!("starting debounced webhook runs failed: {e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        })
    };

    let shutdown = state.shutdown.clone();
    crate::api::server::serve(listener, app, conn_limits, async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new requests; running steps get the grace period");
        shutdown.cancel();
    })
    .await;
    stop.cancel();
    recovery.abort();
    // Let running steps finish, up to the grace period; whatever is still running then is
    // recovered by the next start once its lease expires. No run is lost either way.
    let deadline = tokio::time::Instant::now() + grace;
    while runner.live_runs() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.abort();
    Ok(ExitCode::SUCCESS)
}

/// The embedded commands' tenant: not one a server's client uses.
const EMBEDDED_TENANT: &str = super::runs::LOCAL_TENANT;

/// On a database with no server tenant (empty, or only the embedded commands' `local`, as
/// after `corral run` or `./x demo` on the same data directory): creates the tenant
/// `default` with an admin token and prints it once, on stderr. Otherwise says how to get
/// a token. Never logged: the token goes to stderr as a plain line, not through tracing.
async fn first_admin_token(store: &Store, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let tenants = store.tenants().await?;
    let server_tenant = tenants.iter().find(|t| t.name != EMBEDDED_TENANT);
    if let Some(tenant) = server_tenant {
        let names: Vec<&str> = tenants
            .iter()
            .filter(|t| t.name != EMBEDDED_TENANT)
            .map(|t| t.name.as_str())
            .collect();
        tracing::info!(
            tenants = %names.join(", "),
            "no token is printed: the database has tenants already; to get an admin token, run \
             (offline, with the same --data-dir or --database-url): corral token create \
             --tenant {} --role admin",
            tenant.name
        );
        return Ok(());
    }
    let tenant = store.ensure_tenant("default").await?;
    let (_, secret) = store.create_token(&tenant, "admin", "first admin").await?;
    eprintln!(
        "\ncorral: created tenant `default` and its admin token. It is shown only this once; keep it:\n\n\
         \x20   {secret}\n\n\
         Use it as `Authorization: Bearer <token>` on http://{addr}/v1/..., to log in to the \
         dashboard at http://{addr}/, or with the CLI: CORRAL_TOKEN=<token> corral runs list \
         --server http://{addr}\n\
         More tokens (offline): corral token create --tenant default --role admin|operator|viewer\n"
    );
    Ok(())
}

/// The CORS allow-list (flags, else the variable, else the file), each entry checked and
/// normalized: a bad entry is a configuration error at start-up.
fn cors_origins(
    args: &ServeArgs,
    file: &FileConfig,
    file_path: Option<&Path>,
) -> Result<Vec<String>, ConfigError> {
    let from_flag = !args.cors_origins.is_empty();
    let given: Vec<String> = if from_flag {
        args.cors_origins.clone()
    } else {
        file.cors_origins.clone().unwrap_or_default()
    };
    let mut origins = Vec::new();
    for entry in given.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let origin = crate::api::cors::normalize_origin(entry).map_err(|e| {
            let from = source(
                file_path,
                "cors_origins",
                "--cors-origin",
                "CORRAL_CORS_ORIGINS",
                from_flag,
            );
            ConfigError(format!("{from}: {e}"))
        })?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum TenantCommand {
    /// Create a tenant and print an admin token for it (shown once).
    Create {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        db: super::runs::DbArgs,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        db: super::runs::DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Create a token (the secret is printed once).
    Create {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        db: super::runs::DbArgs,
    },
    /// List a tenant's tokens.
    List {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        db: super::runs::DbArgs,
    },
    /// Revoke a token by id.
    Revoke {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// The token id (`tok_...`).
        id: String,
        #[command(flatten)]
        db: super::runs::DbArgs,
    },
}

pub(super) async fn tenant(cli: &Cli, cmd: &TenantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantCommand::Create { name, db } => {
            let store = cli.store(db).await?;
            if store.tenant_id(name).await?.is_some() {
                eprintln!("TENANT_EXISTS: tenant `{name}` already exists");
                return Ok(ExitCode::from(2));
            }
            let id = store.ensure_tenant(name).await?;
            let (_, secret) = store.create_token(&id, "admin", "tenant admin").await?;
            println!("{secret}");
            eprintln!("created tenant `{name}` ({id}); the admin token above is shown once");
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::List { db } => {
            let store = cli.store(db).await?;
            for t in store.tenants().await? {
                println!(
                    "{}  {:<24} fuel {}  tokens {}  cost {:.6}",
                    t.id,
                    t.name,
                    t.fuel_used,
                    t.tokens_used,
                    micros(t.cost_micros)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) async fn token(cli: &Cli, cmd: &TokenCommand) -> anyhow::Result<ExitCode> {
    let (tenant, db) = match cmd {
        TokenCommand::Create { tenant, db, .. }
        | TokenCommand::List { tenant, db }
        | TokenCommand::Revoke { tenant, db, .. } => (tenant, db),
    };
    let store = cli.store(db).await?;
    let Some(tenant_id) = store.tenant_id(tenant).await? else {
        eprintln!("TENANT_NOT_FOUND: no tenant `{tenant}`");
        return Ok(ExitCode::from(2));
    };
    match cmd {
        TokenCommand::Create { role, name, .. } => {
            let Some(role) = Role::parse(role) else {
                eprintln!("INVALID_ROLE: use admin, operator or viewer");
                return Ok(ExitCode::from(2));
            };
            let (record, secret) = store.create_token(&tenant_id, role.as_str(), name).await?;
            println!("{secret}");
            eprintln!(
                "created {} token {} for `{tenant}`; the secret above is shown once",
                record.role, record.id
            );
        }
        TokenCommand::List { .. } => {
            for t in store.tokens(&tenant_id).await? {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "live"
                };
                println!("{}  {:<8} {:<8} {}", t.id, t.role, state, t.name);
            }
        }
        TokenCommand::Revoke { id, .. } => {
            if !store.revoke_token(&tenant_id, id).await? {
                eprintln!("TOKEN_NOT_FOUND: no live token `{id}` for `{tenant}`");
                return Ok(ExitCode::from(2));
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A cost in millionths as a number of the price currency.
#[allow(clippy::cast_precision_loss)] // costs far below 2^52 millionths
fn micros(m: i64) -> f64 {
    m as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_takes_models_and_tenant_overrides() {
        let file: FileConfig = toml::from_str(
            r#"
            [models.fast]
            provider = "openai"
            base_url = "http://127.0.0.1:8000/v1"
            model = "small"
            key_secret = "openai_key"
            max_tokens = 256
            input_price_per_million = 0.15
            output_price_per_million = 0.6

            [tenants.acme.models.fast]
            provider = "anthropic"
            base_url = "http://127.0.0.1:8001"
            model = "claude-haiku"
            log_prompts = true

            [model_cache]
            ttl_secs = 60
            "#,
        )
        .unwrap();
        let fast = &file.models["fast"];
        assert_eq!(fast.provider, crate::models::Provider::Openai);
        assert_eq!(fast.max_tokens, Some(256));
        assert_eq!(fast.key_secret.as_deref(), Some("openai_key"));
        let acme = &file.tenants["acme"].models["fast"];
        assert_eq!(acme.provider, crate::models::Provider::Anthropic);
        assert!(acme.log_prompts);
        assert_eq!(file.model_cache.unwrap().ttl_secs, 60);
        assert_eq!(file.model_cache.unwrap().max_entries, 1000);
        let bad = toml::from_str::<FileConfig>(
            "[models.fast]\nprovider = \"gemini\"\nbase_url = \"http://x\"\nmodel = \"m\"\n",
        );
        assert!(bad.is_err());
        let bad = toml::from_str::<FileConfig>(
            "[models.fast]\nprovider = \"openai\"\nbase_url = \"http://x\"\nmodel = \"m\"\napi_key = \"sk\"\n",
        );
        assert!(bad.is_err(), "keys are secrets, never config");
    }

    #[test]
    fn the_config_file_takes_the_connection_bounds() {
        let file: FileConfig = toml::from_str(
            "header_read_timeout_secs = 5\nbody_read_timeout_secs = 20\n\
             idle_timeout_secs = 90\nmax_connections_per_address = 16\n",
        )
        .unwrap();
        assert_eq!(file.header_read_timeout_secs, Some(5));
        assert_eq!(file.body_read_timeout_secs, Some(20));
        assert_eq!(file.idle_timeout_secs, Some(90));
        assert_eq!(file.max_connections_per_address, Some(16));
    }
}
