//! The `corral` command line: one file per command. Exit codes: see [`runs::EXIT_CODES`].

mod call;
mod mcp;
mod plugin;
mod remote;
mod runs;
mod schedule;
mod secret;
mod serve;

use crate::engine::{Engine, EngineConfig, ErrorCode, Failure};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use std::io::IsTerminal;
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

    /// Log format on stderr: text, or one JSON object per line. Default: text (for
    /// `serve`, its config file's `log_format`). `RUST_LOG` sets the level: `serve` and
    /// `worker` log requests and run transitions at info, other commands only warnings.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CORRAL_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,

    /// The scratch directory of the command that runs plugins (`--scratch-dir` of `call`,
    /// `run`, `worker` and `serve`), taken from it after parsing.
    #[arg(skip)]
    pub scratch_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// A command that runs plugins: its own arguments, and where their scratch directories go.
#[derive(Debug, Args)]
pub(super) struct RunsPlugins<T: Args> {
    #[command(flatten)]
    args: T,
    /// Where each invocation's fresh scratch directory (the guest's `/work`) is made.
    /// Default: a `corral-scratch` folder in the system temp directory.
    #[arg(long, env = "CORRAL_SCRATCH_DIR", value_name = "DIR")]
    scratch_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with plugin files.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Call a plugin once, for a plugin author's quick loop.
    Call(RunsPlugins<call::CallArgs>),
    /// Run a pipeline to its end, showing its progress live.
    Run(RunsPlugins<runs::RunArgs>),
    /// List and show runs.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Print a run's events as JSON lines (replay, or --follow until it ends).
    Events(runs::EventsArgs),
    /// Answer the question a waiting run asked.
    Answer(runs::AnswerArgs),
    /// Cancel a queued, running, waiting or paused run.
    Cancel(runs::CancelArgs),
    /// Pause a run: after its current step attempt, or at once with --now.
    Pause(runs::PauseArgs),
    /// Resume a paused run: it continues with its next step.
    Resume(runs::ResumeArgs),
    /// Restart an ended or paused run from a step, with feedback for that step.
    Restart(RunsPlugins<runs::RestartArgs>),
    /// Schedule pipelines by cron expression: create, list, show, delete.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Execute queued runs, fire due schedules (and recover runs of crashed hosts).
    Worker(RunsPlugins<runs::WorkerArgs>),
    /// Serve the HTTP API (REST + SSE) and execute runs.
    Serve(RunsPlugins<serve::ServeArgs>),
    /// Serve the local tenant's tools and pipelines over the Model Context Protocol
    /// (`--stdio`), for MCP clients that start a process.
    Mcp(RunsPlugins<mcp::McpArgs>),
    /// Manage tenants (offline, on the database).
    #[command(subcommand)]
    Tenant(serve::TenantCommand),
    /// Manage API tokens (offline, on the database).
    #[command(subcommand)]
    Token(serve::TokenCommand),
    /// Manage a tenant's secrets (offline, on the database; values from stdin).
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    ///
    /// For example `corral completions bash > ~/.local/share/bash-completion/completions/corral`,
    /// `corral completions zsh > ~/.zfunc/_corral` (with `fpath+=~/.zfunc` before
    /// `compinit`), or `corral completions fish > ~/.config/fish/completions/corral.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs the CLI and returns the process exit code.
/// Gives SIGPIPE its default action back (Rust's runtime ignores it, so a write to a
/// closed pipe fails and `println!` panics).
#[allow(unsafe_code)]
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: signal(2) with SIG_DFL, called before any thread of ours is started; no
    // handler runs Rust code. Sockets are written with MSG_NOSIGNAL by std, so only
    // writes to pipes (stdout, stderr) are affected.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "corral",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    cli.scratch_dir = match &cli.command {
        Command::Call(c) => c.scratch_dir.clone(),
        Command::Run(c) => c.scratch_dir.clone(),
        Command::Restart(c) => c.scratch_dir.clone(),
        Command::Worker(c) => c.scratch_dir.clone(),
        Command::Serve(c) => c.scratch_dir.clone(),
        Command::Mcp(c) => c.scratch_dir.clone(),
        _ => None,
    };
    let format = cli
        .log_format
        .or_else(|| match &cli.command {
            Command::Serve(c) => serve::file_log_format(&c.args),
            _ => None,
        })
        .unwrap_or(LogFormat::Text);
    // The long-running commands log what they do; the others only what went wrong.
    let verbose = matches!(&cli.command, Command::Serve(_) | Command::Worker(_));
    init_tracing(format, verbose);
    if !verbose {
        // `corral run -o jsonl | head -1`: a reader that is gone ends the command quietly,
        // as it does other Unix tools, instead of a panic in the next print. The servers
        // keep ignoring SIGPIPE: their logs' reader going away must not stop them.
        restore_sigpipe();
    }
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
            Command::Call(c) => call::run(&cli, &c.args).await,
            Command::Run(c) => runs::run(&cli, &c.args).await,
            Command::Runs(cmd) => runs::runs(&cli, cmd).await,
            Command::Events(args) => runs::events(&cli, args).await,
            Command::Answer(args) => runs::answer(&cli, args).await,
            Command::Cancel(args) => runs::cancel(&cli, args).await,
            Command::Pause(args) => runs::pause(&cli, args).await,
            Command::Resume(args) => runs::resume(&cli, args).await,
            Command::Restart(c) => runs::restart(&cli, &c.args).await,
            Command::Schedule(cmd) => schedule::schedule(&cli, cmd).await,
            Command::Worker(c) => runs::worker(&cli, &c.args).await,
            Command::Serve(c) => serve::serve(&cli, &c.args).await,
            Command::Mcp(c) => mcp::mcp(&cli, &c.args).await,
            Command::Tenant(cmd) => serve::tenant(&cli, cmd).await,
            Command::Token(cmd) => serve::token(&cli, cmd).await,
            Command::Secret(cmd) => secret::secret(&cli, cmd).await,
            Command::Completions { .. } => Ok(ExitCode::SUCCESS),
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

/// Logs go to stderr, in `format`, at `RUST_LOG`'s levels when it is set; else warnings,
/// and with `verbose` corral's own info lines too (requests, run and step transitions).
/// Colours only when stderr is a terminal (and `NO_COLOR` is unset).
fn init_tracing(format: LogFormat, verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if verbose { "warn,corral=info" } else { "warn" };
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("warning: RUST_LOG `{spec}` is not a valid filter ({e}); using `{default}`");
            EnvFilter::new(default)
        }),
        _ => EnvFilter::new(default),
    };
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
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
