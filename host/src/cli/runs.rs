//! Run commands: `corral run`, `runs list/show`, `events`, `answer`, `cancel`, `pause`,
//! `resume`, `restart`, `worker`.
//! Embedded, they use the SQLite database in the data directory unless `--database-url`;
//! with `--server URL --token T` (all but `worker`) they use a server's HTTP API instead
//! (see `remote.rs`), with the same output and exit codes.

use super::Cli;
use super::remote::{Client, ServerArgs};
use crate::runs::pipeline;
use crate::runs::{RunError, Runner, RunnerConfig};
use crate::store::{Event, Store};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The tenant embedded commands act as unless `--tenant`.
pub(super) const LOCAL_TENANT: &str = "local";

/// The exit codes, for `corral --help` (the README's "Exit codes" table says the same).
pub(super) const EXIT_CODES: &str = "\
Exit codes:
  0    ok (for `corral run`: the run succeeded)
  1    the run or the plugin failed (or the server failed: a 5xx answer)
  2    bad usage or bad input: flags, pipeline, input, answer, plugin or manifest file,
       an unknown run or tenant, or a request the server refused (4xx)
  3    the server cannot be reached: connection refused, unknown host, TLS failure
       (an untrusted certificate: see --ca-cert), timeout
  130  the run was cancelled (Ctrl-C, or `corral cancel`)";

/// `--tenant`, on the commands that work on the local database.
#[derive(Debug, Args)]
pub(super) struct TenantArgs {
    /// The tenant to act as on the local database (default `local`, the tenant embedded
    /// runs use; a server's tenants are there too when it shares the database). With
    /// --server, the token decides the tenant.
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
}

impl TenantArgs {
    /// Refuses `--tenant` with `--server` (exit 2).
    pub(super) fn check_remote(&self) -> Result<(), ExitCode> {
        if self.tenant.is_some() {
            eprintln!(
                "INVALID_REQUEST: --tenant is for the local database; with --server the token decides the tenant"
            );
            return Err(ExitCode::from(2));
        }
        Ok(())
    }

    /// The tenant's id on the local database: `local` is made when missing, any other
    /// must exist (else `TENANT_NOT_FOUND`, exit 2).
    pub(super) async fn resolve(&self, store: &Store) -> anyhow::Result<Result<String, ExitCode>> {
        match &self.tenant {
            None => Ok(Ok(store.ensure_tenant(LOCAL_TENANT).await?)),
            Some(name) if name == LOCAL_TENANT => Ok(Ok(store.ensure_tenant(name).await?)),
            Some(name) => match store.tenant_id(name).await? {
                Some(id) => Ok(Ok(id)),
                None => {
                    eprintln!(
                        "TENANT_NOT_FOUND: no tenant `{}` in this database (`corral tenant create NAME` makes one)",
                        name.escape_debug()
                    );
                    Ok(Err(ExitCode::from(2)))
                }
            },
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct DbArgs {
    /// Database URL (`postgres://...` or `sqlite://PATH`). Default: SQLite in the data dir.
    #[arg(long, global = true, env = "CORRAL_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
}

/// Where a command acts: on a server with `--server URL --token T`, else on the local
/// database (`--database-url`, default SQLite in the data dir) as the `--tenant`.
#[derive(Debug, Args)]
pub(super) struct Target {
    #[command(flatten)]
    pub tenant: TenantArgs,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// What a [`Target`] opened: a server's client, or the local database with the tenant's id.
pub(super) enum Opened {
    Server(Client),
    Local(Store, String),
}

impl Target {
    /// The server client when `--server` is given (refusing `--tenant` with it), `None`
    /// to work on the local database, or the exit code of a refusal (already printed).
    pub(super) fn remote(&self) -> Result<Option<Client>, ExitCode> {
        let client = server(&self.server)?;
        if client.is_some() {
            self.tenant.check_remote()?;
        }
        Ok(client)
    }

    /// The server's client, or the local database and the tenant's id; or the exit code
    /// of a refusal (already printed).
    pub(super) async fn open(&self, cli: &Cli) -> anyhow::Result<Result<Opened, ExitCode>> {
        match self.remote() {
            Err(code) => Ok(Err(code)),
            Ok(Some(client)) => Ok(Ok(Opened::Server(client))),
            Ok(None) => {
                let store = cli.store(&self.db).await?;
                Ok(match self.tenant.resolve(&store).await? {
                    Ok(tenant) => Ok(Opened::Local(store, tenant)),
                    Err(code) => Err(code),
                })
            }
        }
    }

    /// `remote` against the server when `--server` is given, else `local` against the
    /// local database as the `--tenant`: what it answered, or the exit code of its
    /// refusal (already printed).
    pub(super) async fn act<T>(
        &self,
        cli: &Cli,
        remote: impl AsyncFnOnce(Client) -> Result<T, super::remote::RemoteError>,
        local: impl AsyncFnOnce(Store, String) -> anyhow::Result<Result<T, ExitCode>>,
    ) -> anyhow::Result<Result<T, ExitCode>> {
        match self.open(cli).await? {
            Err(code) => Ok(Err(code)),
            Ok(Opened::Server(client)) => Ok(remote(client).await.map_err(|e| e.report())),
            Ok(Opened::Local(store, tenant)) => local(store, tenant).await,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum OutputFormat {
    /// Live progress bars, logs and retries on stderr; then the artifacts written, the
    /// final status and fuel, and the output (pretty JSON) on stdout.
    Human,
    /// Exactly the event JSON, one per line.
    Jsonl,
    /// Progress on stderr, then one JSON object on stdout: run_id, status, output,
    /// error, fuel_used, tokens_used, timings, steps, artifacts.
    Json,
}

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// The run's input: JSON, `@PATH`, or `@-` for stdin.
    #[arg(long, short, default_value = "{}", value_name = "JSON|@PATH")]
    input: String,
    /// How to show the run.
    #[arg(long, short, value_enum, default_value = "human")]
    output: OutputFormat,
    /// Also write the run's output JSON (the last step's output; `null` when the run did
    /// not succeed) to this file.
    #[arg(long, value_name = "PATH")]
    output_file: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Subcommand)]
pub(super) enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs with this status.
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show a run: its output, timings, steps, attempts, fuel, tokens and artifacts.
    Show {
        /// The run id.
        run_id: String,
        /// Print JSON: `{run, output, steps, attempts, artifacts}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Args)]
pub(super) struct EventsArgs {
    /// The run id.
    run_id: String,
    /// Keep following until the run ends.
    #[arg(long, short)]
    follow: bool,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: i64,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(super) struct AnswerArgs {
    /// The run id.
    run_id: String,
    /// The answer: JSON, `@PATH`, or `@-`.
    answer: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(super) struct CancelArgs {
    /// The run id.
    run_id: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(super) struct PauseArgs {
    /// The run id.
    run_id: String,
    /// Interrupt the current step attempt instead of letting it finish; it runs again
    /// (at-least-once) on resume.
    #[arg(long)]
    now: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(super) struct ResumeArgs {
    /// The run id.
    run_id: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(super) struct RestartArgs {
    /// The run id.
    run_id: String,
    /// The step to go on from (every step before it must have succeeded; their outputs
    /// are reused).
    #[arg(long = "from", value_name = "STEP")]
    from: String,
    /// Feedback for that step (JSON; the step reads it as `ctx.feedback`).
    #[arg(long, value_name = "JSON", conflicts_with = "feedback_file")]
    feedback: Option<String>,
    /// Feedback for that step, read from a file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    feedback_file: Option<PathBuf>,
    /// Why, for the run's `restarted` event.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Only queue the run again; don't wait for it (locally, a `corral worker` or
    /// `corral serve` on the same database executes it).
    #[arg(long)]
    detach: bool,
    /// Print JSON: the restart's answer (`{run_id, status, from_step, attempt, restarts,
    /// seq}`) as a line (on stdout with --detach, else on stderr before the run's events
    /// as JSON lines), then the run's output on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(super) struct WorkerArgs {
    /// Exit once the queue is empty (after recovering runs of crashed hosts), printing
    /// how many runs it executed and how each ended.
    #[arg(long)]
    until_idle: bool,
    /// Runs executed at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[command(flatten)]
    db: DbArgs,
}

impl Cli {
    pub(super) async fn store(&self, db: &DbArgs) -> anyhow::Result<Store> {
        let store = match &db.database_url {
            Some(url) => Store::open(url).await?,
            None => Store::open_in_dir(&self.data_dir()).await?,
        };
        Ok(store)
    }

    pub(super) async fn runner(&self, db: &DbArgs, concurrency: usize) -> anyhow::Result<Runner> {
        self.runner_on(self.store(db).await?, concurrency)
    }

    /// A runner on an opened database.
    pub(super) fn runner_on(&self, store: Store, concurrency: usize) -> anyhow::Result<Runner> {
        let lease = lease_from_env();
        Ok(Runner::new(
            self.engine()?,
            store,
            RunnerConfig {
                max_concurrent_runs: concurrency,
                lease,
                ..RunnerConfig::default()
            },
        ))
    }
}

/// How long a host's claim on a run lasts (`CORRAL_LEASE_MS`, for tests and tuning):
/// after a crash, its runs are recovered once this has passed.
pub(super) fn lease_from_env() -> Duration {
    std::env::var("CORRAL_LEASE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(RunnerConfig::default().lease)
}

pub(super) fn read_arg(value: &str) -> anyhow::Result<String> {
    match value.strip_prefix('@') {
        None => Ok(value.to_string()),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            Ok(s)
        }
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))
        }
    }
}

/// A refusal as `CODE: message`; bad input exits 2, anything else 1.
fn refuse(e: &RunError) -> ExitCode {
    eprintln!("{e}");
    match e {
        RunError::InvalidPipeline(_)
        | RunError::InvalidInput(_)
        | RunError::InvalidAnswer(_)
        | RunError::NotFound(_)
        | RunError::NotWaiting(_)
        | RunError::NotPaused(..)
        | RunError::AlreadyFinished(..)
        | RunError::StillActive(..)
        | RunError::UnknownStep(..)
        | RunError::StepNotReached(..)
        | RunError::RestartLimit(..)
        | RunError::InvalidFeedback(_) => ExitCode::from(2),
        RunError::Store(_) | RunError::TooManyQueued(_) => ExitCode::from(1),
    }
}

/// The server client when `--server` is given, `None` to work embedded, or the exit code
/// of a refused `--server`/`--token` (already printed).
pub(super) fn server(args: &ServerArgs) -> Result<Option<Client>, ExitCode> {
    args.client().map_err(|e| e.report())
}

/// Where a run's events come from: the local database or a server's stream.
trait EventSource {
    /// The next event, or `None` after the run's final event.
    async fn next_event(&mut self) -> anyhow::Result<Option<Event>>;
}

impl EventSource for tokio::sync::mpsc::Receiver<Event> {
    async fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        Ok(self.recv().await)
    }
}

impl EventSource for super::remote::EventStream {
    async fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        Ok(self.next().await?)
    }
}

/// Shows a run's events as they come (the human view, or each event's JSON on a line)
/// and returns its final status (`failed` if the stream ended without one).
async fn show_events(
    events: &mut impl EventSource,
    view: &mut Option<HumanView>,
) -> anyhow::Result<String> {
    let mut status = String::from("failed");
    while let Some(event) = events.next_event().await? {
        match view {
            Some(v) => v.show(&event),
            None => println!("{}", serde_json::to_string(&event)?),
        }
        if event.is_final() {
            status = event
                .payload
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("failed")
                .to_string();
        }
    }
    Ok(status)
}

/// `corral run`'s exit code for a run's final status.
fn exit_for_status(status: &str) -> ExitCode {
    match status {
        "succeeded" => ExitCode::SUCCESS,
        "cancelled" => ExitCode::from(130),
        _ => ExitCode::from(1),
    }
}

pub(super) async fn run(cli: &Cli, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let client = match args.target.remote() {
        Ok(client) => client,
        Err(code) => return Ok(code),
    };
    let pipeline = match pipeline::load_file(&args.pipeline) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("INVALID_PIPELINE: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let input = match read_arg(&args.input) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("INVALID_INPUT: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    match client {
        Some(client) => run_remote(cli, args, &client, &pipeline, &input).await,
        None => run_embedded(cli, args, &pipeline, &input).await,
    }
}

/// The live view for `-o human` and `-o json` (on stderr), none for `-o jsonl`.
fn live_view(
    args: &RunArgs,
    run_id: &str,
    pipeline: &pipeline::Pipeline,
    answer_flags: String,
) -> Option<HumanView> {
    match args.output {
        OutputFormat::Human | OutputFormat::Json => {
            Some(HumanView::new(run_id, pipeline, answer_flags))
        }
        OutputFormat::Jsonl => None,
    }
}

async fn run_embedded(
    cli: &Cli,
    args: &RunArgs,
    pipeline: &pipeline::Pipeline,
    input: &str,
) -> anyhow::Result<ExitCode> {
    let runner = cli.runner(&args.target.db, 1).await?;
    let tenant = match args.target.tenant.resolve(runner.store()).await? {
        Ok(tenant) => tenant,
        Err(code) => return Ok(code),
    };
    // Runs left behind by a crashed `corral` are queued again (a worker finishes them).
    runner.recover().await?;
    let run = match runner.submit(&tenant, pipeline, None, input).await {
        Ok(run) => run,
        Err(e) => return Ok(refuse(&e)),
    };
    let mut events = runner.subscribe(&tenant, &run.id, 0).await?;
    let exec = {
        let (runner, id) = (runner.clone(), run.id.clone());
        tokio::spawn(async move { execute_through_pauses(&runner, &id).await })
    };
    // Ctrl-C cancels the run cleanly; the stream then shows its end.
    {
        let (runner, tenant, id) = (runner.clone(), tenant.clone(), run.id.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = runner.cancel(&tenant, &id).await;
            }
        });
    }
    let mut view = live_view(args, &run.id, pipeline, String::new());
    let status = show_events(&mut events, &mut view).await?;
    if let Err(e) = exec.await? {
        eprintln!("error: {e}");
    }
    let store = runner.store();
    let Some(doc) = local_doc(store, &tenant, &run.id).await? else {
        return Ok(refuse(&RunError::NotFound(run.id.clone())));
    };
    let mut files = Vec::new();
    if view.is_some() {
        for a in store.artifacts(&run.id).await? {
            if let Some((_, content)) = store.artifact_content(&tenant, &a.id).await? {
                files.push(ArtifactFile {
                    step: a.step,
                    name: a.name,
                    id: a.id,
                    content: content.to_vec(),
                });
            }
        }
    }
    finish_run(cli, args, view, &doc, files)?;
    Ok(exit_for_status(&status))
}

/// Executes a run here to its end, across pauses: a run paused (by `corral pause` from
/// anywhere) waits here until it is resumed, then continues in this process, unless
/// another host (a worker or a server on the same database) claims it first; the event
/// stream then shows that host's progress.
async fn execute_through_pauses(runner: &Runner, run_id: &str) -> Result<(), RunError> {
    loop {
        runner.execute(run_id).await?;
        loop {
            match runner.store().run(run_id).await? {
                Some(run) if run.status == "paused" => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Some(run) if run.status == "queued" => break,
                _ => return Ok(()),
            }
        }
    }
}

/// `corral run --server`: uploads the pipeline's plugin files (once: they are named by
/// content) with the manifests beside them, submits the pipeline inline, and follows the
/// run's stream to its end.
async fn run_remote(
    cli: &Cli,
    args: &RunArgs,
    client: &Client,
    pipeline: &pipeline::Pipeline,
    input: &str,
) -> anyhow::Result<ExitCode> {
    // Checked as embedded runs check it (the server checks the size).
    let parsed = crate::engine::json::check("input", input, usize::MAX)
        .and_then(|()| serde_json::from_str::<Value>(input).map_err(|e| e.to_string()));
    let input = match parsed {
        Ok(input) => input,
        Err(e) => {
            eprintln!("INVALID_INPUT: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let doc = match client.inline_pipeline(pipeline).await {
        Ok(doc) => doc,
        Err(e) => return Ok(e.report()),
    };
    let run_id = match client.submit(doc, input).await {
        Ok(id) => id,
        Err(e) => return Ok(e.report()),
    };
    let mut events = client.events(&run_id, 0, false);
    // Ctrl-C asks the server to cancel; the stream then shows the run's end.
    {
        let (client, id) = (client.clone(), run_id.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = client.cancel(&id).await;
            }
        });
    }
    let mut view = live_view(
        args,
        &run_id,
        pipeline,
        format!(" --server {}", client.server()),
    );
    let status = match show_events(&mut events, &mut view).await {
        Ok(status) => status,
        Err(e) => {
            return Ok(match e.downcast_ref::<super::remote::RemoteError>() {
                Some(remote) => remote.report(),
                None => return Err(e),
            });
        }
    };
    let fetched = async {
        let doc = remote_doc(client, &run_id).await?;
        let mut files = Vec::new();
        if view.is_some() {
            for a in field(&doc, "artifacts").as_array().into_iter().flatten() {
                let (Some(id), Some(name)) = (
                    a.get("id").and_then(Value::as_str),
                    a.get("name").and_then(Value::as_str),
                ) else {
                    continue;
                };
                files.push(ArtifactFile {
                    step: text_of(a, "step").to_string(),
                    name: name.to_string(),
                    id: id.to_string(),
                    content: client.artifact(id).await?.to_vec(),
                });
            }
        }
        Ok::<_, super::remote::RemoteError>((doc, files))
    };
    let (doc, files) = match fetched.await {
        Ok(got) => got,
        Err(e) => return Ok(e.report()),
    };
    finish_run(cli, args, view, &doc, files)?;
    Ok(exit_for_status(&status))
}

/// A run as `runs show --json` prints it, from the local database: `{run, output, steps,
/// attempts, artifacts}` (`None`: no such run of the tenant).
async fn local_doc(store: &Store, tenant: &str, run_id: &str) -> anyhow::Result<Option<Value>> {
    let Some(run) = store.run_for_tenant(tenant, run_id).await? else {
        return Ok(None);
    };
    let output: Option<Value> = run
        .output
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok());
    let steps = store.steps(run_id).await?;
    let attempts = store.attempts(run_id).await?;
    let artifacts = store.artifacts(run_id).await?;
    Ok(Some(with_totals(json!({
        "run": run,
        "output": output,
        "steps": steps,
        "attempts": attempts,
        "artifacts": artifacts,
    }))))
}

/// The same from a server: `GET /v1/runs/{id}` and its artifacts.
async fn remote_doc(client: &Client, run_id: &str) -> Result<Value, super::remote::RemoteError> {
    let run = client.run(run_id).await?;
    let artifacts = client.artifacts(run_id).await?;
    Ok(with_totals(json!({
        "run": field(&run, "run"),
        "output": field(&run, "output"),
        "steps": field(&run, "steps"),
        "attempts": field(&run, "attempts"),
        "artifacts": artifacts,
    })))
}

/// Model tokens a step (or an attempt) used: its `tokens_used` field. No record carries
/// one yet (no capability calls a model), so this is 0 until one does; this is the one
/// place that reads it.
fn tokens_used(record: &Value) -> i64 {
    number_of(record, "tokens_used")
}

/// How long a record (run, step, attempt) took, from its `started_at` and `finished_at`
/// (unix ms), when both are known.
fn duration_ms(record: &Value) -> Option<i64> {
    let started = record.get("started_at").and_then(Value::as_i64)?;
    let finished = record.get("finished_at").and_then(Value::as_i64)?;
    Some(finished.saturating_sub(started).max(0))
}

/// Adds `duration_ms` and `tokens_used` to the run and to each step (a step's tokens are
/// its own, or its attempts'; the run's, its steps').
fn with_totals(mut doc: Value) -> Value {
    let attempts = field(&doc, "attempts")
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut run_tokens = 0i64;
    if let Some(steps) = doc.get_mut("steps").and_then(Value::as_array_mut) {
        for step in steps {
            let idx = step.get("idx").and_then(Value::as_i64);
            let mut tokens = tokens_used(step);
            if step.get("tokens_used").is_none() {
                tokens = attempts
                    .iter()
                    .filter(|a| a.get("step_idx").and_then(Value::as_i64) == idx)
                    .map(tokens_used)
                    .fold(0i64, i64::saturating_add);
            }
            run_tokens = run_tokens.saturating_add(tokens);
            let took = duration_ms(step);
            if let Some(obj) = step.as_object_mut() {
                obj.insert("tokens_used".into(), json!(tokens));
                obj.insert("duration_ms".into(), json!(took));
            }
        }
    }
    if let Some(run) = doc.get_mut("run").and_then(Value::as_object_mut) {
        if !run.contains_key("tokens_used") {
            run.insert("tokens_used".into(), json!(run_tokens));
        }
        let took = duration_ms(&Value::Object(run.clone()));
        run.insert("duration_ms".into(), json!(took));
    }
    doc
}

/// `corral run -o json`: one object.
fn run_summary(doc: &Value, artifact_paths: &HashMap<String, PathBuf>) -> Value {
    let run = field(doc, "run");
    let error = |r: &Value| match r.get("error_code").and_then(Value::as_str) {
        Some(code) => json!({"code": code, "message": text_of(r, "error_message")}),
        None => Value::Null,
    };
    let steps: Vec<Value> = field(doc, "steps")
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            json!({
                "name": field(s, "name"),
                "status": field(s, "status"),
                "attempts": field(s, "attempts"),
                "loops": field(s, "loops"),
                "fuel_used": field(s, "fuel_used"),
                "tokens_used": field(s, "tokens_used"),
                "cost_micros": field(s, "cost_micros"),
                "started_at": timestamp(s, "started_at"),
                "finished_at": timestamp(s, "finished_at"),
                "duration_ms": field(s, "duration_ms"),
                "error": error(s),
            })
        })
        .collect();
    let artifacts: Vec<Value> = field(doc, "artifacts")
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            json!({
                "id": field(a, "id"),
                "step": field(a, "step"),
                "name": field(a, "name"),
                "media_type": field(a, "media_type"),
                "size": field(a, "size"),
                "digest": field(a, "digest"),
                "path": artifact_paths.get(text_of(a, "id")).map(|p| p.display().to_string()),
            })
        })
        .collect();
    json!({
        "run_id": field(run, "id"),
        "pipeline": field(run, "pipeline_name"),
        "status": field(run, "status"),
        "output": field(doc, "output"),
        "error": error(run),
        "fuel_used": field(run, "fuel_used"),
        "tokens_used": field(run, "tokens_used"),
        "cost_micros": field(run, "cost_micros"),
        "queued_at": timestamp(run, "created_at"),
        "started_at": timestamp(run, "started_at"),
        "finished_at": timestamp(run, "finished_at"),
        "duration_ms": field(run, "duration_ms"),
        "steps": steps,
        "artifacts": artifacts,
    })
}

/// A unix-ms field as RFC 3339 text (`null` when absent).
fn timestamp(record: &Value, key: &str) -> Value {
    match record.get(key).and_then(Value::as_u64) {
        Some(ms) => {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
            json!(humantime::format_rfc3339_millis(at).to_string())
        }
        None => Value::Null,
    }
}

/// The end of `corral run`: artifacts written out, `--output-file`, and the result on
/// stdout (the status line and the output's pretty JSON, or `-o json`'s one object).
fn finish_run(
    cli: &Cli,
    args: &RunArgs,
    view: Option<HumanView>,
    doc: &Value,
    files: Vec<ArtifactFile>,
) -> anyhow::Result<()> {
    let run = field(doc, "run");
    let run_id = text_of(run, "id");
    let output = field(doc, "output");
    if let Some(path) = &args.output_file {
        let mut text = serde_json::to_string_pretty(output)?;
        text.push('\n');
        std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write the output to {}: {e}", path.display()))?;
    }
    let Some(view) = view else {
        return Ok(());
    };
    view.finish();
    let paths = write_artifacts(&cli.data_dir(), run_id, &files)?;
    if args.output == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&run_summary(doc, &paths))?
        );
        return Ok(());
    }
    for a in &files {
        if let Some(path) = paths.get(&a.id) {
            println!(
                "artifact {}/{} ({}): {}",
                a.step,
                a.name,
                a.id,
                path.display()
            );
        }
    }
    print_result(doc)
}

/// A run's end for people, on stdout: `run ID STATUS · fuel N`, then its output (pretty
/// JSON) unless it has none.
fn print_result(doc: &Value) -> anyhow::Result<()> {
    let run = field(doc, "run");
    println!(
        "run {} {} · fuel {}",
        text_of(run, "id"),
        text_of(run, "status"),
        number_of(run, "fuel_used")
    );
    let output = field(doc, "output");
    if !output.is_null() {
        println!("{}", serde_json::to_string_pretty(output)?);
    }
    Ok(())
}

/// Writes a run's artifacts under `DATA/artifacts/RUN/STEP/NAME`, each to a path of its
/// own (two steps storing the same name do not overwrite each other; two names that
/// read the same once made safe get the artifact's id appended). Returns the paths by id.
fn write_artifacts(
    data_dir: &Path,
    run_id: &str,
    files: &[ArtifactFile],
) -> anyhow::Result<HashMap<String, PathBuf>> {
    let mut paths = HashMap::new();
    let mut used = std::collections::HashSet::new();
    if files.is_empty() {
        return Ok(paths);
    }
    let dir = data_dir.join("artifacts").join(safe_file_name(run_id));
    for a in files {
        let step_dir = dir.join(safe_file_name(&a.step));
        let mut path = step_dir.join(safe_file_name(&a.name));
        if !used.insert(path.clone()) {
            path = step_dir.join(format!(
                "{}-{}",
                safe_file_name(&a.name),
                safe_file_name(&a.id)
            ));
            used.insert(path.clone());
        }
        std::fs::create_dir_all(&step_dir)?;
        std::fs::write(&path, &a.content)?;
        paths.insert(a.id.clone(), path);
    }
    Ok(paths)
}

/// An artifact of a finished run, to write out for a person to open.
struct ArtifactFile {
    step: String,
    name: String,
    id: String,
    content: Vec<u8>,
}

/// A field of an event payload (`null` when absent), for display.
fn field<'a>(payload: &'a Value, key: &str) -> &'a Value {
    payload.get(key).unwrap_or(&Value::Null)
}

/// The human view of a run: a progress bar per step, logs and retries above them.
struct HumanView {
    bars: MultiProgress,
    /// Without a terminal, bars are hidden: transitions are printed as lines instead.
    tty: bool,
    steps: HashMap<String, ProgressBar>,
    style: ProgressStyle,
    /// Appended to the `corral answer` hint (` --server URL` for a remote run).
    answer_flags: String,
}

impl HumanView {
    fn new(run_id: &str, pipeline: &pipeline::Pipeline, answer_flags: String) -> Self {
        eprintln!("run {run_id}: pipeline `{}`", pipeline.name);
        let names: Vec<String> = pipeline.steps.iter().map(|s| s.name.clone()).collect();
        HumanView::for_steps(&names, answer_flags)
    }

    /// A bar for each of these steps (a restart shows those it runs again).
    fn for_steps(names: &[String], answer_flags: String) -> Self {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bars = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let mut steps = HashMap::new();
        for name in names {
            let bar = bars.add(ProgressBar::new(100));
            bar.set_style(style.clone());
            bar.set_prefix(name.clone());
            bar.set_message("queued");
            steps.insert(name.clone(), bar);
        }
        HumanView {
            bars,
            tty,
            steps,
            style,
            answer_flags,
        }
    }

    /// A line above the bars (or on its own without a terminal).
    fn say(&self, line: String) {
        if self.tty {
            let _ = self.bars.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    fn bar(&self, payload: &Value) -> Option<&ProgressBar> {
        payload
            .get("step_id")
            .and_then(Value::as_str)
            .and_then(|s| self.steps.get(s))
    }

    fn show(&mut self, e: &Event) {
        let p = &e.payload;
        let text = |k: &str| field(p, k).as_str().unwrap_or_default().to_string();
        match e.kind.as_str() {
            "running" => {
                if !self.tty && field(p, "progress_label") == "started" {
                    self.say(format!(
                        "  ▶ {} started (attempt {})",
                        text("step_id"),
                        field(p, "attempt")
                    ));
                }
                if let Some(bar) = self.bar(p) {
                    if let Some(pct) = field(p, "progress_pct").as_u64() {
                        bar.set_position(pct);
                    }
                    let attempt = field(p, "attempt").as_u64().unwrap_or(1);
                    let label = text("progress_label");
                    bar.set_message(if attempt > 1 {
                        format!("{label} (attempt {attempt})")
                    } else {
                        label
                    });
                }
            }
            "complete" if e.is_final() => {
                if let Some(msg) = field(p, "message").as_str() {
                    self.say(format!("error: {} {msg}", text("error_code")));
                }
            }
            "complete" => {
                if !self.tty {
                    self.say(format!(
                        "  ✓ {} done · fuel {}",
                        text("step_id"),
                        field(p, "fuel_used")
                    ));
                }
                if let Some(bar) = self.bar(p) {
                    bar.set_position(100);
                    bar.finish_with_message(format!("done · fuel {}", field(p, "fuel_used")));
                }
            }
            "error" => {
                let retry = if field(p, "will_retry").as_bool() == Some(true) {
                    ", will retry"
                } else {
                    ""
                };
                self.say(format!(
                    "  ✗ {} attempt {}: {}: {}{retry}",
                    text("step_id"),
                    field(p, "attempt"),
                    text("error_code"),
                    text("message")
                ));
                if let Some(bar) = self.bar(p) {
                    bar.set_message(format!("failed: {}", text("error_code")));
                }
            }
            "retrying" => {
                let why = if text("reason") == "feedback" {
                    format!(
                        "feedback from `{}` (loop {})",
                        text("from_step"),
                        field(p, "loop")
                    )
                } else {
                    format!("retry in {} ms", field(p, "delay_ms"))
                };
                self.say(format!("  ↻ {}: {why}", text("step_id")));
                if let Some(bar) = self.bar(p) {
                    bar.reset();
                    bar.set_style(self.style.clone());
                    bar.set_message(why);
                }
            }
            "log" => {
                self.say(format!(
                    "  [{} {}] {}",
                    text("step_id"),
                    text("level"),
                    text("message")
                ));
            }
            "input_required" => {
                let schema = field(p, "answer_schema");
                self.say(format!(
                    "  ? {} asks: {}\n    answer with: corral answer {} '<JSON>'{}{}",
                    text("step_id"),
                    text("question"),
                    e.run_id,
                    self.answer_flags,
                    if schema.is_null() {
                        String::new()
                    } else {
                        format!("  (schema: {schema})")
                    }
                ));
                if let Some(bar) = self.bar(p) {
                    bar.set_message("waiting for input");
                }
            }
            "artifact" => {
                self.say(format!(
                    "  + {} stored artifact `{}` ({}, {} bytes)",
                    text("step_id"),
                    text("name"),
                    text("media_type"),
                    field(p, "size")
                ));
            }
            "cancelled" => {
                self.say("  run cancelled".to_string());
            }
            "paused" => {
                let before = match (field(p, "step_id").as_str(), field(p, "interrupted")) {
                    (Some(step), Value::Bool(true)) => {
                        format!(" (step `{step}` interrupted: it runs again on resume)")
                    }
                    (Some(step), _) => format!(" before step `{step}`"),
                    _ => String::new(),
                };
                self.say(format!(
                    "  ‖ run paused{before}; continue with: corral resume {}{}",
                    e.run_id, self.answer_flags
                ));
                if let Some(bar) = self.bar(p) {
                    bar.set_message("paused");
                }
            }
            "resumed" => {
                self.say("  ▶ run resumed".to_string());
            }
            _ => {}
        }
    }

    /// Leaves the bars as they are (the result is printed after them).
    fn finish(self) {
        for bar in self.steps.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// A guest-chosen artifact name as a plain file name: no separators, no dot-dot.
fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    if cleaned.is_empty() {
        "artifact".into()
    } else {
        cleaned.to_string()
    }
}

/// A string field of a record, for display.
fn text_of<'a>(record: &'a Value, key: &str) -> &'a str {
    record.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A number field of a record, for display.
fn number_of(record: &Value, key: &str) -> i64 {
    record.get(key).and_then(Value::as_i64).unwrap_or_default()
}

/// A list (`runs list`, `schedule list`): each item's JSON on a line with `--json`, else
/// its `line` for people.
pub(super) fn print_lines(
    items: &[Value],
    json: bool,
    line: impl Fn(&Value) -> String,
) -> anyhow::Result<()> {
    for item in items {
        if json {
            println!("{}", serde_json::to_string(item)?);
        } else {
            println!("{}", line(item));
        }
    }
    Ok(())
}

/// One record (`runs show`, `schedule show`): pretty JSON with `--json`, else `human`.
pub(super) fn print_doc(
    doc: &Value,
    json: bool,
    human: impl FnOnce(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(doc)?);
        Ok(())
    } else {
        human(doc)
    }
}

/// A run of `runs list` on a line: id, status, pipeline, fuel, error code.
fn run_line(run: &Value) -> String {
    format!(
        "{}  {:<10} {:<24} fuel {:>14}  {}",
        text_of(run, "id"),
        text_of(run, "status"),
        text_of(run, "pipeline_name"),
        number_of(run, "fuel_used"),
        text_of(run, "error_code")
    )
}

/// `runs show` for people, from `{run, output, steps, attempts, artifacts}`.
fn print_run(doc: &Value) -> anyhow::Result<()> {
    let run = field(doc, "run");
    println!(
        "run {} ({}) {}",
        text_of(run, "id"),
        text_of(run, "pipeline_name"),
        text_of(run, "status")
    );
    if let (Some(c), Some(m)) = (
        run.get("error_code").and_then(Value::as_str),
        run.get("error_message").and_then(Value::as_str),
    ) {
        println!("  error: {c}: {m}");
    }
    let when = |key: &str| match timestamp(run, key) {
        Value::String(s) => s,
        _ => "-".to_string(),
    };
    if let Some(schedule) = run.get("schedule_id").and_then(Value::as_str) {
        println!(
            "  schedule {schedule} (the slot of {})",
            when("scheduled_for")
        );
    }
    println!("  queued   {}", when("created_at"));
    println!("  started  {}", when("started_at"));
    if run.get("paused_at").and_then(Value::as_i64).is_some() {
        println!("  paused   {}", when("paused_at"));
    }
    println!(
        "  finished {}{}",
        when("finished_at"),
        duration_ms(run)
            .map(|ms| format!(" (took {})", took(ms)))
            .unwrap_or_default()
    );
    let cost = number_of(run, "cost_micros");
    println!(
        "  fuel {} · tokens {}{}",
        number_of(run, "fuel_used"),
        number_of(run, "tokens_used"),
        if cost > 0 {
            #[allow(clippy::cast_precision_loss)] // costs far below 2^52 millionths
            let c = cost as f64 / 1_000_000.0;
            format!(" · cost {c:.6}")
        } else {
            String::new()
        }
    );
    let list = |key: &str| field(doc, key).as_array().cloned().unwrap_or_default();
    for s in &list("steps") {
        let line = format!(
            "  step {:<16} {:<10} attempts {} loops {} fuel {} tokens {} took {} {}",
            text_of(s, "name"),
            text_of(s, "status"),
            number_of(s, "attempts"),
            number_of(s, "loops"),
            number_of(s, "fuel_used"),
            number_of(s, "tokens_used"),
            duration_ms(s).map_or_else(|| "-".to_string(), took),
            text_of(s, "error_code")
        );
        println!("{}", line.trim_end());
    }
    for a in &list("artifacts") {
        println!(
            "  artifact {} {}/{} {} bytes {}",
            text_of(a, "id"),
            text_of(a, "step"),
            text_of(a, "name"),
            number_of(a, "size"),
            text_of(a, "digest")
        );
    }
    let output = field(doc, "output");
    if !output.is_null() {
        println!("output:");
        println!("{}", serde_json::to_string_pretty(output)?);
    }
    Ok(())
}

/// Milliseconds for people: `850ms`, `12.345s`.
fn took(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    }
}

pub(super) async fn runs(cli: &Cli, cmd: &RunsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RunsCommand::List {
            status,
            limit,
            json,
            target,
        } => {
            let runs = target
                .act(
                    cli,
                    async |client| client.list_runs(status.as_deref(), *limit).await,
                    async |store, tenant| {
                        let runs = store
                            .list_runs(&tenant, status.as_deref(), *limit, None)
                            .await?;
                        Ok(Ok(runs.iter().map(serde_json::to_value).collect::<Result<
                            Vec<_>,
                            _,
                        >>(
                        )?))
                    },
                )
                .await?;
            match runs {
                Ok(runs) => print_lines(&runs, *json, run_line)?,
                Err(code) => return Ok(code),
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Show {
            run_id,
            json,
            target,
        } => {
            let doc = target
                .act(
                    cli,
                    async |client| remote_doc(&client, run_id).await,
                    async |store, tenant| {
                        Ok(match local_doc(&store, &tenant, run_id).await? {
                            Some(doc) => Ok(doc),
                            None => Err(refuse(&RunError::NotFound(run_id.clone()))),
                        })
                    },
                )
                .await?;
            match doc {
                Ok(doc) => print_doc(&doc, *json, print_run)?,
                Err(code) => return Ok(code),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) async fn events(cli: &Cli, args: &EventsArgs) -> anyhow::Result<ExitCode> {
    match args.target.open(cli).await? {
        Err(code) => Ok(code),
        Ok(Opened::Server(client)) => events_remote(&client, args).await,
        Ok(Opened::Local(store, tenant)) => events_embedded(store, &tenant, args).await,
    }
}

async fn events_embedded(
    store: Store,
    tenant: &str,
    args: &EventsArgs,
) -> anyhow::Result<ExitCode> {
    if store.run_for_tenant(tenant, &args.run_id).await?.is_none() {
        return Ok(refuse(&RunError::NotFound(args.run_id.clone())));
    }
    if args.follow {
        // Events come from the `corral run` (or server) writing them: the bus's watcher
        // polls the database file once for all of this process's subscribers.
        let bus = crate::events::Bus::watching(store.clone());
        let mut rx = crate::events::subscribe(store, &bus, args.run_id.clone(), args.after);
        while let Some(event) = rx.recv().await {
            println!("{}", serde_json::to_string(&event)?);
        }
    } else {
        let mut after = args.after;
        loop {
            let page = store.events_after(&args.run_id, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for event in &page {
                println!("{}", serde_json::to_string(event)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `events --server`: the run's SSE stream. Without `--follow` (or for a run that has
/// already ended) it stops once the logged events are read; with it, at the final event.
async fn events_remote(client: &Client, args: &EventsArgs) -> anyhow::Result<ExitCode> {
    let follow = if args.follow {
        let doc = match client.run(&args.run_id).await {
            Ok(doc) => doc,
            Err(e) => return Ok(e.report()),
        };
        let status = text_of(field(&doc, "run"), "status");
        !crate::store::TERMINAL.contains(&status)
    } else {
        false
    };
    let mut stream = client.events(&args.run_id, args.after, !follow);
    loop {
        match stream.next().await {
            Ok(Some(event)) => println!("{}", serde_json::to_string(&event)?),
            Ok(None) => return Ok(ExitCode::SUCCESS),
            Err(e) => return Ok(e.report()),
        }
    }
}

/// A command's action (`answer`, `cancel`, `pause`, `resume`, `schedule show|delete`):
/// `remote` against the server when `--server` is given, else `local` with a runner on the
/// local database as the `--tenant`; what it answered, or the exit code of its refusal.
pub(super) async fn act_on_run<T>(
    cli: &Cli,
    target: &Target,
    remote: impl AsyncFnOnce(Client) -> Result<T, super::remote::RemoteError>,
    local: impl AsyncFnOnce(Runner, String) -> Result<T, ExitCode>,
) -> anyhow::Result<Result<T, ExitCode>> {
    target
        .act(cli, remote, async |store, tenant| {
            Ok(local(cli.runner_on(store, 1)?, tenant).await)
        })
        .await
}

pub(super) async fn answer(cli: &Cli, args: &AnswerArgs) -> anyhow::Result<ExitCode> {
    let answer = match read_arg(&args.answer) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("INVALID_ANSWER: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let result = act_on_run(
        cli,
        &args.target,
        async |client| client.answer(&args.run_id, &answer).await,
        async |runner, tenant| {
            runner
                .answer(&tenant, &args.run_id, &answer)
                .await
                .map_err(|e| refuse(&e))
        },
    )
    .await?;
    match result {
        Ok(()) => {
            eprintln!("answered run {}", args.run_id);
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

pub(super) async fn cancel(cli: &Cli, args: &CancelArgs) -> anyhow::Result<ExitCode> {
    let result = act_on_run(
        cli,
        &args.target,
        async |client| client.cancel(&args.run_id).await,
        async |runner, tenant| {
            runner
                .cancel(&tenant, &args.run_id)
                .await
                .map_err(|e| refuse(&e))
        },
    )
    .await?;
    match result {
        Ok(()) => {
            eprintln!("cancel requested for run {}", args.run_id);
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

pub(super) async fn pause(cli: &Cli, args: &PauseArgs) -> anyhow::Result<ExitCode> {
    let result = act_on_run(
        cli,
        &args.target,
        async |client| client.pause(&args.run_id, args.now).await,
        async |runner, tenant| {
            runner
                .pause(&tenant, &args.run_id, args.now)
                .await
                .map(|p| p.status)
                .map_err(|e| refuse(&e))
        },
    )
    .await?;
    match result {
        Ok(status) if status == "paused" => {
            eprintln!("run {} paused", args.run_id);
            Ok(ExitCode::SUCCESS)
        }
        Ok(status) => {
            eprintln!(
                "pause requested for run {} ({status}); it pauses {}",
                args.run_id,
                if args.now {
                    "within moments (its current step attempt is interrupted)"
                } else {
                    "once its current step attempt ends"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

pub(super) async fn resume(cli: &Cli, args: &ResumeArgs) -> anyhow::Result<ExitCode> {
    let result = act_on_run(
        cli,
        &args.target,
        async |client| client.resume(&args.run_id).await,
        async |runner, tenant| {
            runner
                .resume(&tenant, &args.run_id)
                .await
                .map_err(|e| refuse(&e))
        },
    )
    .await?;
    match result {
        Ok(()) => {
            eprintln!(
                "run {} resumed: queued for the next worker{}",
                args.run_id,
                if args
                    .target
                    .server
                    .server
                    .as_deref()
                    .is_some_and(|s| !s.trim().is_empty())
                {
                    ""
                } else {
                    " (the `corral run` showing it, `corral worker`, or a server on this database)"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

/// The feedback of `corral restart`: `--feedback JSON` or `--feedback-file F` (`-`: stdin).
fn restart_feedback(args: &RestartArgs) -> anyhow::Result<Option<String>> {
    let text = match (&args.feedback, &args.feedback_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => read_arg("@-")?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        (None, None) => return Ok(None),
    };
    // Checked here for a clear message; the runner (or server) checks size and depth.
    serde_json::from_str::<Value>(&text).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
    Ok(Some(text))
}

/// `corral restart RUN_ID --from STEP`: queues the run again from that step and says so,
/// then (unless `--detach`) follows it from its `restarted` event to its end (the live
/// view on stderr, then the status line and the output on stdout; with `--json`, each
/// event as a JSON line on stderr and the output's JSON on stdout); exits like `corral run`.
pub(super) async fn restart(cli: &Cli, args: &RestartArgs) -> anyhow::Result<ExitCode> {
    let client = match args.target.remote() {
        Ok(client) => client,
        Err(code) => return Ok(code),
    };
    let feedback = match restart_feedback(args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("INVALID_FEEDBACK: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    match client {
        Some(client) => restart_remote(args, &client, feedback).await,
        None => restart_embedded(cli, args, feedback).await,
    }
}

/// Says what a restart did, from its answer (`{run_id, status, from_step, attempt,
/// restarts, seq}`, as `POST /v1/runs/{id}/restart` gives it): for people
/// `RUN restarted from step S (attempt N); status queued` on stdout; with `--json` that
/// answer as a JSON line, on stdout with `--detach` (it is all there is), else on stderr
/// ahead of the events.
fn say_restarted(args: &RestartArgs, answer: &Value) -> anyhow::Result<()> {
    if args.json {
        let line = serde_json::to_string(answer)?;
        if args.detach {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
        return Ok(());
    }
    println!(
        "{} restarted from step {} (attempt {}); status {}",
        text_of(answer, "run_id"),
        text_of(answer, "from_step"),
        number_of(answer, "attempt"),
        text_of(answer, "status")
    );
    Ok(())
}

/// The names of a run's steps from `step` on (those a restart from it runs again), from
/// `{steps: [{name, idx}, ...]}`.
fn steps_from(doc: &Value, step: &str) -> Vec<String> {
    let mut steps: Vec<&Value> = field(doc, "steps")
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    steps.sort_by_key(|s| number_of(s, "idx"));
    let names = steps.iter().map(|s| text_of(s, "name").to_string());
    names.skip_while(|name| name != step).collect()
}

/// The live view of a restart (none with `--json`).
fn restart_view(args: &RestartArgs, doc: &Value, answer_flags: String) -> Option<HumanView> {
    (!args.json).then(|| HumanView::for_steps(&steps_from(doc, &args.from), answer_flags))
}

/// The end of a restart that was followed: the output's JSON (`null` when none) with
/// `--json`, else the status line and the output.
fn finish_restart(args: &RestartArgs, view: Option<HumanView>, doc: &Value) -> anyhow::Result<()> {
    match view {
        Some(view) => {
            view.finish();
            print_result(doc)
        }
        None if args.json => {
            println!("{}", serde_json::to_string_pretty(field(doc, "output"))?);
            Ok(())
        }
        None => print_result(doc),
    }
}

async fn restart_embedded(
    cli: &Cli,
    args: &RestartArgs,
    feedback: Option<String>,
) -> anyhow::Result<ExitCode> {
    let runner = cli.runner(&args.target.db, 1).await?;
    let tenant = match args.target.tenant.resolve(runner.store()).await? {
        Ok(tenant) => tenant,
        Err(code) => return Ok(code),
    };
    let req = crate::runs::Restart {
        from_step: args.from.clone(),
        feedback,
        reason: args.reason.clone(),
    };
    let restarted = match runner.restart(&tenant, &args.run_id, &req, None).await {
        Ok(r) => r,
        Err(e) => return Ok(refuse(&e)),
    };
    let id = restarted.run.id.clone();
    say_restarted(
        args,
        &json!({
            "run_id": id,
            // What the restart did (the API answers the same).
            "status": "queued",
            "from_step": restarted.step,
            "attempt": restarted.attempt,
            "restarts": restarted.run.restarts,
            "seq": restarted.seq,
        }),
    )?;
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let store = runner.store();
    let mut view = match local_doc(store, &tenant, &id).await? {
        Some(doc) => restart_view(args, &doc, String::new()),
        None => None,
    };
    let mut events = runner.subscribe(&tenant, &id, restarted.seq - 1).await?;
    let exec = {
        let (runner, id) = (runner.clone(), id.clone());
        tokio::spawn(async move { runner.execute(&id).await })
    };
    {
        let (runner, tenant, id) = (runner.clone(), tenant.clone(), id.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = runner.cancel(&tenant, &id).await;
            }
        });
    }
    let status = follow_to_end(&mut events, &mut view).await?;
    if let Err(e) = exec.await? {
        eprintln!("error: {e}");
    }
    let Some(doc) = local_doc(store, &tenant, &id).await? else {
        return Ok(refuse(&RunError::NotFound(id)));
    };
    finish_restart(args, view, &doc)?;
    Ok(exit_for_status(&status))
}

async fn restart_remote(
    args: &RestartArgs,
    client: &Client,
    feedback: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({"from_step": args.from});
    if let (Some(obj), Some(text)) = (body.as_object_mut(), &feedback) {
        obj.insert("feedback".into(), serde_json::from_str(text)?);
    }
    if let (Some(obj), Some(reason)) = (body.as_object_mut(), &args.reason) {
        obj.insert("reason".into(), Value::String(reason.clone()));
    }
    let answer = match client.restart(&args.run_id, &body).await {
        Ok(doc) => doc,
        Err(e) => return Ok(e.report()),
    };
    let seq = answer.get("seq").and_then(Value::as_i64).unwrap_or(1);
    say_restarted(args, &answer)?;
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let mut view = match client.run(&args.run_id).await {
        Ok(doc) => restart_view(args, &doc, format!(" --server {}", client.server())),
        Err(e) => return Ok(e.report()),
    };
    let mut stream = client.events(&args.run_id, seq - 1, false);
    let status = follow_to_end(&mut stream, &mut view).await?;
    let doc = match client.run(&args.run_id).await {
        Ok(doc) => doc,
        Err(e) => return Ok(e.report()),
    };
    finish_restart(args, view, &doc)?;
    Ok(exit_for_status(&status))
}

/// Shows each event (in the live view, or as a JSON line on stderr) until the run's
/// final event; its status (`failed` if the stream ended without one).
async fn follow_to_end(
    events: &mut impl EventSource,
    view: &mut Option<HumanView>,
) -> anyhow::Result<String> {
    while let Some(event) = events.next_event().await? {
        match view {
            Some(v) => v.show(&event),
            None => eprintln!("{}", serde_json::to_string(&event)?),
        }
        if event.is_final() {
            return Ok(event
                .payload
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("failed")
                .to_string());
        }
    }
    Ok("failed".into())
}

pub(super) async fn worker(cli: &Cli, args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let runner = cli.runner(&args.db, args.concurrency).await?;
    let recovered = runner.recover().await?;
    if recovered > 0 {
        eprintln!("recovered {recovered} run(s) from a crashed host");
    }
    let stop = CancellationToken::new();
    let ctrl_c = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ctrl_c.cancel();
        }
    });
    if !args.until_idle {
        // A long-running worker fires due schedules too, as `corral serve` does.
        let schedules = {
            let (runner, stop) = (runner.clone(), stop.clone());
            let config = super::schedule::scheduler_config(Some(
                crate::api::ApiConfig::default().max_queued_per_tenant,
            ));
            tokio::spawn(async move { runner.run_schedules(config, stop).await })
        };
        runner.work(false, stop).await?;
        schedules.abort();
        return Ok(ExitCode::SUCCESS);
    }
    let mut claimed = runner.claims();
    runner.work(true, stop).await?;
    // What this worker executed, and how each run ended (a run that waits for an
    // answer, or that Ctrl-C left to recovery, shows as such).
    let mut ids = Vec::new();
    while let Ok(id) = claimed.try_recv() {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    let mut lines = Vec::new();
    for id in &ids {
        let status = match runner.store().run(id).await? {
            Some(run) => run.status,
            None => "gone".to_string(),
        };
        lines.push(format!("  {id} {status}"));
        *outcomes.entry(status).or_default() += 1;
    }
    let summary: Vec<String> = outcomes.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!(
        "executed {} run(s){}{}",
        ids.len(),
        if summary.is_empty() { "" } else { ": " },
        summary.join(", ")
    );
    for line in lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
