//! Run commands: `corral run`, `runs list/show`, `events`, `answer`, `cancel`, `worker`.
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

/// The tenant embedded commands act as.
pub(super) const LOCAL_TENANT: &str = "local";

#[derive(Debug, Args)]
pub(super) struct DbArgs {
    /// Database URL (`postgres://...` or `sqlite://PATH`). Default: SQLite in the data dir.
    #[arg(long, global = true, env = "CORRAL_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum OutputFormat {
    /// Live progress bars, logs, retries, the final status and fuel.
    Human,
    /// Exactly the event JSON, one per line.
    Jsonl,
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
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    server: ServerArgs,
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
        db: DbArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a run: its steps, attempts, fuel and timings.
    Show {
        /// The run id.
        run_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        server: ServerArgs,
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
    db: DbArgs,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub(super) struct AnswerArgs {
    /// The run id.
    run_id: String,
    /// The answer: JSON, `@PATH`, or `@-`.
    answer: String,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub(super) struct CancelArgs {
    /// The run id.
    run_id: String,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub(super) struct WorkerArgs {
    /// Exit once the queue is empty (after recovering runs of crashed hosts).
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
        let store = self.store(db).await?;
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

fn read_arg(value: &str) -> anyhow::Result<String> {
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
        | RunError::AlreadyFinished(..) => ExitCode::from(2),
        RunError::Store(_) | RunError::TooManyQueued(_) => ExitCode::from(1),
    }
}

/// The server client when `--server` is given, `None` to work embedded, or the exit code
/// of a refused `--server`/`--token` (already printed).
fn server(args: &ServerArgs) -> Result<Option<Client>, ExitCode> {
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
    let client = match server(&args.server) {
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

async fn run_embedded(
    cli: &Cli,
    args: &RunArgs,
    pipeline: &pipeline::Pipeline,
    input: &str,
) -> anyhow::Result<ExitCode> {
    let runner = cli.runner(&args.db, 1).await?;
    let tenant = runner.store().ensure_tenant(LOCAL_TENANT).await?;
    // Runs left behind by a crashed `corral` are queued again (a worker finishes them).
    runner.recover().await?;
    let run = match runner.submit(&tenant, pipeline, None, input).await {
        Ok(run) => run,
        Err(e) => return Ok(refuse(&e)),
    };
    let mut events = runner.subscribe(&tenant, &run.id, 0).await?;
    let exec = {
        let (runner, id) = (runner.clone(), run.id.clone());
        tokio::spawn(async move { runner.execute(&id).await })
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
    let mut view = match args.output {
        OutputFormat::Human => Some(HumanView::new(&run.id, pipeline, String::new())),
        OutputFormat::Jsonl => None,
    };
    let status = show_events(&mut events, &mut view).await?;
    if let Err(e) = exec.await? {
        eprintln!("error: {e}");
    }
    if let Some(view) = view {
        let mut files = Vec::new();
        for a in runner.store().artifacts(&run.id).await? {
            if let Some((_, content)) = runner.store().artifact_content(&tenant, &a.id).await? {
                files.push(ArtifactFile {
                    name: a.name,
                    id: a.id,
                    content: content.to_vec(),
                });
            }
        }
        view.finish(&cli.data_dir(), &run.id, files)?;
    }
    Ok(exit_for_status(&status))
}

/// `corral run --server`: uploads the pipeline's plugin files (once: they are named by
/// content), submits the pipeline inline, and follows the run's stream to its end.
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
    let mut view = match args.output {
        OutputFormat::Human => Some(HumanView::new(
            &run_id,
            pipeline,
            format!(" --server {}", client.server()),
        )),
        OutputFormat::Jsonl => None,
    };
    let status = show_events(&mut events, &mut view).await?;
    if let Some(view) = view {
        let mut files = Vec::new();
        for a in client.artifacts(&run_id).await? {
            let (Some(id), Some(name)) = (
                a.get("id").and_then(Value::as_str),
                a.get("name").and_then(Value::as_str),
            ) else {
                continue;
            };
            files.push(ArtifactFile {
                name: name.to_string(),
                id: id.to_string(),
                content: client.artifact(id).await?.to_vec(),
            });
        }
        view.finish(&cli.data_dir(), &run_id, files)?;
    }
    Ok(exit_for_status(&status))
}

/// An artifact of a finished run, to write out for a person to open.
struct ArtifactFile {
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
    fuel: i64,
    status: String,
    /// Appended to the `corral answer` hint (` --server URL` for a remote run).
    answer_flags: String,
}

impl HumanView {
    fn new(run_id: &str, pipeline: &pipeline::Pipeline, answer_flags: String) -> Self {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bars = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        eprintln!("run {run_id}: pipeline `{}`", pipeline.name);
        let mut steps = HashMap::new();
        for step in &pipeline.steps {
            let bar = bars.add(ProgressBar::new(100));
            bar.set_style(style.clone());
            bar.set_prefix(step.name.clone());
            bar.set_message("queued");
            steps.insert(step.name.clone(), bar);
        }
        HumanView {
            bars,
            tty,
            steps,
            style,
            fuel: 0,
            status: String::new(),
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
                self.fuel = field(p, "fuel_used").as_i64().unwrap_or(0);
                self.status = text("status");
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
            _ => {}
        }
    }

    /// Final line, and artifacts written out to files (under the data directory) so a
    /// person can open them.
    fn finish(
        self,
        data_dir: &Path,
        run_id: &str,
        artifacts: Vec<ArtifactFile>,
    ) -> anyhow::Result<()> {
        for bar in self.steps.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
        if !artifacts.is_empty() {
            let dir = data_dir.join("artifacts").join(run_id);
            std::fs::create_dir_all(&dir)?;
            for a in artifacts {
                let path = dir.join(safe_file_name(&a.name));
                std::fs::write(&path, &a.content)?;
                println!("artifact {} ({}): {}", a.name, a.id, path.display());
            }
        }
        println!("run {run_id} {} · fuel {}", self.status, self.fuel);
        Ok(())
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

/// A run of `runs list`: its JSON on a line, or a summary line.
fn print_run_line(run: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(run)?);
    } else {
        println!(
            "{}  {:<10} {:<24} fuel {:>14}  {}",
            text_of(run, "id"),
            text_of(run, "status"),
            text_of(run, "pipeline_name"),
            number_of(run, "fuel_used"),
            text_of(run, "error_code")
        );
    }
    Ok(())
}

/// `runs show`: `{run, steps, attempts, artifacts}` as pretty JSON, or for people.
fn print_run(doc: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(doc)?);
        return Ok(());
    }
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
    println!("  fuel {}", number_of(run, "fuel_used"));
    let list = |key: &str| field(doc, key).as_array().cloned().unwrap_or_default();
    for s in &list("steps") {
        println!(
            "  step {:<16} {:<10} attempts {} loops {} fuel {} {}",
            text_of(s, "name"),
            text_of(s, "status"),
            number_of(s, "attempts"),
            number_of(s, "loops"),
            number_of(s, "fuel_used"),
            text_of(s, "error_code")
        );
    }
    for a in &list("artifacts") {
        println!(
            "  artifact {} {} {} bytes {}",
            text_of(a, "id"),
            text_of(a, "name"),
            number_of(a, "size"),
            text_of(a, "digest")
        );
    }
    Ok(())
}

pub(super) async fn runs(cli: &Cli, cmd: &RunsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RunsCommand::List {
            status,
            limit,
            json,
            db,
            server: server_args,
        } => {
            let runs = match server(server_args) {
                Err(code) => return Ok(code),
                Ok(Some(client)) => match client.list_runs(status.as_deref(), *limit).await {
                    Ok(runs) => runs,
                    Err(e) => return Ok(e.report()),
                },
                Ok(None) => {
                    let store = cli.store(db).await?;
                    let tenant = store.ensure_tenant(LOCAL_TENANT).await?;
                    store
                        .list_runs(&tenant, status.as_deref(), *limit, None)
                        .await?
                        .iter()
                        .map(serde_json::to_value)
                        .collect::<Result<Vec<_>, _>>()?
                }
            };
            for r in &runs {
                print_run_line(r, *json)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Show {
            run_id,
            json,
            db,
            server: server_args,
        } => {
            let doc = match server(server_args) {
                Err(code) => return Ok(code),
                Ok(Some(client)) => {
                    let fetched = async {
                        let run = client.run(run_id).await?;
                        let artifacts = client.artifacts(run_id).await?;
                        Ok::<_, super::remote::RemoteError>(json!({
                            "run": field(&run, "run"),
                            "steps": field(&run, "steps"),
                            "attempts": field(&run, "attempts"),
                            "artifacts": artifacts,
                        }))
                    };
                    match fetched.await {
                        Ok(doc) => doc,
                        Err(e) => return Ok(e.report()),
                    }
                }
                Ok(None) => {
                    let store = cli.store(db).await?;
                    let tenant = store.ensure_tenant(LOCAL_TENANT).await?;
                    let Some(run) = store.run_for_tenant(&tenant, run_id).await? else {
                        return Ok(refuse(&RunError::NotFound(run_id.clone())));
                    };
                    let steps = store.steps(run_id).await?;
                    let attempts = store.attempts(run_id).await?;
                    let artifacts = store.artifacts(run_id).await?;
                    json!({"run": run, "steps": steps, "attempts": attempts, "artifacts": artifacts})
                }
            };
            print_run(&doc, *json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) async fn events(cli: &Cli, args: &EventsArgs) -> anyhow::Result<ExitCode> {
    match server(&args.server) {
        Err(code) => Ok(code),
        Ok(Some(client)) => events_remote(&client, args).await,
        Ok(None) => events_embedded(cli, args).await,
    }
}

async fn events_embedded(cli: &Cli, args: &EventsArgs) -> anyhow::Result<ExitCode> {
    let store = cli.store(&args.db).await?;
    let tenant = store.ensure_tenant(LOCAL_TENANT).await?;
    if store.run_for_tenant(&tenant, &args.run_id).await?.is_none() {
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

pub(super) async fn answer(cli: &Cli, args: &AnswerArgs) -> anyhow::Result<ExitCode> {
    let client = match server(&args.server) {
        Ok(client) => client,
        Err(code) => return Ok(code),
    };
    let answer = read_arg(&args.answer)?;
    let result = match client {
        Some(client) => client
            .answer(&args.run_id, &answer)
            .await
            .map_err(|e| e.report()),
        None => {
            let runner = cli.runner(&args.db, 1).await?;
            let tenant = runner.store().ensure_tenant(LOCAL_TENANT).await?;
            runner
                .answer(&tenant, &args.run_id, &answer)
                .await
                .map_err(|e| refuse(&e))
        }
    };
    match result {
        Ok(()) => {
            eprintln!("answered run {}", args.run_id);
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

pub(super) async fn cancel(cli: &Cli, args: &CancelArgs) -> anyhow::Result<ExitCode> {
    let result = match server(&args.server) {
        Err(code) => return Ok(code),
        Ok(Some(client)) => client.cancel(&args.run_id).await.map_err(|e| e.report()),
        Ok(None) => {
            let runner = cli.runner(&args.db, 1).await?;
            let tenant = runner.store().ensure_tenant(LOCAL_TENANT).await?;
            runner
                .cancel(&tenant, &args.run_id)
                .await
                .map_err(|e| refuse(&e))
        }
    };
    match result {
        Ok(()) => {
            eprintln!("cancel requested for run {}", args.run_id);
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
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
    runner.work(args.until_idle, stop).await?;
    Ok(ExitCode::SUCCESS)
}
