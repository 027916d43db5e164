//! The `corral` command line: one file per command. Exit codes: see [`runs::EXIT_CODES`].

mod call;
mod plugin;
mod remote;
mod runs;
mod secret;
mod serve;

use crate::engine::{Engine, EngineConfig, ErrorCode, Failure};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Corral: a WebAssembly plugin host for pluggable agents.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, long_about = None, after_help = runs::EXIT_CODES)]
pub struct Cli {
    /// Where Corral keeps its data (compiled-code cache, and later its database).
    /// Default: $XDG_DATA_HOME/corral or ~/.local/share/corral.
    #[arg(long, global = true, env = "CORRAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Where each invocation's fresh scratch directory (the guest's `/work`) is made.
    /// Default: a `corral-scratch` folder in the system temp directory.
    #[arg(long, global = true, env = "CORRAL_SCRATCH_DIR", value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with plugin files.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Call a plugin once, for a plugin author's quick loop.
    Call(call::CallArgs),
    /// Run a pipeline to its end, showing its progress live.
    Run(runs::RunArgs),
    /// List and show runs.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Print a run's events as JSON lines (replay, or --follow until it ends).
    Events(runs::EventsArgs),
    /// Answer the question a waiting run asked.
    Answer(runs::AnswerArgs),
    /// Cancel a queued, running or waiting run.
    Cancel(runs::CancelArgs),
    /// Execute queued runs (and recover runs of crashed hosts).
    Worker(runs::WorkerArgs),
    /// Serve the HTTP API (REST + SSE) and execute runs.
    Serve(serve::ServeArgs),
    /// Manage tenants (offline, on the database).
    #[command(subcommand)]
    Tenant(serve::TenantCommand),
    /// Manage API tokens (offline, on the database).
    #[command(subcommand)]
    Token(serve::TokenCommand),
    /// Manage a tenant's secrets (offline, on the database; values from stdin).
    #[command(subcommand)]
    Secret(secret::SecretCommand),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = matches!(&cli.command, Command::Serve(args) if serve::log_format(args) == serve::LogFormat::Json);
    init_tracing(json_logs);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let result = match &cli.command {
            Command::Plugin(cmd) => plugin::run(&cli, cmd).await,
            Command::Call(args) => call::run(&cli, args).await,
            Command::Run(args) => runs::run(&cli, args).await,
            Command::Runs(cmd) => runs::runs(&cli, cmd).await,
            Command::Events(args) => runs::events(&cli, args).await,
            Command::Answer(args) => runs::answer(&cli, args).await,
            Command::Cancel(args) => runs::cancel(&cli, args).await,
            Command::Worker(args) => runs::worker(&cli, args).await,
            Command::Serve(args) => serve::serve(&cli, args).await,
            Command::Tenant(cmd) => serve::tenant(&cli, cmd).await,
            Command::Token(cmd) => serve::token(&cli, cmd).await,
            Command::Secret(cmd) => secret::secret(&cli, cmd).await,
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        }
    })
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

impl Cli {
    fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(xdg).join("corral");
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local/share/corral"),
            None => PathBuf::from("corral-data"),
        }
    }

    /// The engine, with its compiled-code cache in the data directory.
    fn engine(&self) -> anyhow::Result<Engine> {
        let data = self.data_dir();
        let defaults = EngineConfig::default();
        Engine::new(EngineConfig {
            cache_dir: Some(data.join("cache")),
            scratch_root: self
                .scratch_dir
                .clone()
                .unwrap_or(defaults.scratch_root.clone()),
            ..defaults
        })
    }
}

/// Exit code for a failure: bad input (a broken plugin, unusable input) is 2,
/// a plugin that ran and failed is 1.
fn exit_code_for(failure: &Failure) -> ExitCode {
    match failure.code {
        ErrorCode::InvalidComponent | ErrorCode::InvalidInput => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}
