//! `corral schedule create|list|show|delete`: on the local database (as the tenant
//! `local` unless `--tenant`; a `corral serve` or `corral worker` on that database fires
//! them), or on a server with `--server URL --token T`.

use super::Cli;
use super::runs::{Target, act_on_run, print_doc, print_lines, read_arg};
use crate::runs::pipeline;
use crate::runs::schedules::{CatchUp, Overlap, ScheduleError, ScheduleRequest};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum ScheduleCommand {
    /// Schedule a pipeline: one run per slot of a cron expression.
    Create(CreateArgs),
    /// List schedules: pipeline, cron, time zone, next slot, latest run.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show a schedule and what became of its latest slots.
    Show {
        /// The schedule id (`sch_...`).
        id: String,
        /// Print JSON: `{schedule, fires}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a schedule (its runs stay).
    Delete {
        /// The schedule id (`sch_...`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Args)]
pub(super) struct CreateArgs {
    /// The pipeline file (TOML, or JSON); with --server also a stored pipeline's id
    /// (`pip_...`). Stored with the schedule as it is now.
    pipeline: String,
    /// The cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6
    /// with seconds first (e.g. `*/30 * * * * *`), or `@daily` and the like.
    #[arg(long)]
    cron: String,
    /// The IANA time zone the expression is read in.
    #[arg(long, default_value = "UTC", value_name = "ZONE")]
    timezone: String,
    /// Each run's input: JSON, `@PATH`, or `@-` for stdin.
    #[arg(long, short, default_value = "{}", value_name = "JSON|@PATH")]
    input: String,
    /// While the schedule's previous run is still active: skip the slot, queue the new
    /// run anyway, or cancel the previous one and start the new one.
    #[arg(long, value_enum, default_value = "skip")]
    overlap: Overlap,
    /// Slots missed while no scheduler ran: fire none of them, the latest, or all (at
    /// most 100 per schedule).
    #[arg(long, value_enum, default_value = "none")]
    catch_up: CatchUp,
    /// Print the schedule as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

/// Runs a `corral schedule` command.
pub(super) async fn schedule(cli: &Cli, cmd: &ScheduleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ScheduleCommand::Create(args) => create(cli, args).await,
        ScheduleCommand::List { json, target } => {
            let schedules = target
                .act(
                    cli,
                    async |client| client.schedules().await,
                    async |store, tenant| {
                        Ok(Ok(store
                            .schedules(&tenant)
                            .await?
                            .iter()
                            .map(serde_json::to_value)
                            .collect::<Result<Vec<_>, _>>()?))
                    },
                )
                .await?;
            let schedules = match schedules {
                Ok(list) => list,
                Err(code) => return Ok(code),
            };
            print_lines(&schedules, *json, line)?;
            if schedules.is_empty() && !*json {
                eprintln!("no schedules");
            }
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Show { id, json, target } => {
            let doc = act_on_run(
                cli,
                target,
                async |client| client.schedule(id).await,
                async |runner, tenant| match runner.schedule(&tenant, id).await {
                    Ok((schedule, fires)) => Ok(json!({"schedule": schedule, "fires": fires})),
                    Err(e) => Err(refuse(&e)),
                },
            )
            .await?;
            let doc = match doc {
                Ok(doc) => doc,
                Err(code) => return Ok(code),
            };
            print_doc(&doc, *json, print_detail)?;
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Delete { id, target } => {
            let deleted = act_on_run(
                cli,
                target,
                async |client| client.delete_schedule(id).await,
                async |runner, tenant| {
                    runner
                        .delete_schedule(&tenant, id)
                        .await
                        .map_err(|e| refuse(&e))
                },
            )
            .await?;
            if let Err(code) = deleted {
                return Ok(code);
            }
            eprintln!("deleted schedule {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn create(cli: &Cli, args: &CreateArgs) -> anyhow::Result<ExitCode> {
    let client = match args.target.remote() {
        Ok(client) => client,
        Err(code) => return Ok(code),
    };
    let input = match read_arg(&args.input).and_then(|text| {
        crate::engine::json::check("input", &text, usize::MAX).map_err(anyhow::Error::msg)?;
        Ok(text)
    }) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("INVALID_INPUT: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let stored_id = client.is_some() && args.pipeline.starts_with("pip_");
    let file = (!stored_id).then(|| pipeline::load_file(Path::new(&args.pipeline)));
    let file = match file.transpose() {
        Ok(file) => file,
        Err(e) => {
            eprintln!("INVALID_PIPELINE: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let record = match (client, file) {
        (Some(client), file) => {
            let pipeline = match &file {
                Some(p) => match client.inline_pipeline(p).await {
                    Ok(doc) => doc,
                    Err(e) => return Ok(e.report()),
                },
                None => Value::String(args.pipeline.clone()),
            };
            let input: Value = serde_json::from_str(&input)?;
            let body = json!({
                "pipeline": pipeline,
                "cron": args.cron,
                "timezone": args.timezone,
                "input": input,
                "overlap": args.overlap,
                "catch_up": args.catch_up,
            });
            match client.create_schedule(&body).await {
                Ok(record) => record,
                Err(e) => return Ok(e.report()),
            }
        }
        (None, Some(p)) => {
            let runner = cli.runner(&args.target.db, 1).await?;
            let tenant = match args.target.tenant.resolve(runner.store()).await? {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            let req = ScheduleRequest {
                pipeline: &p,
                pipeline_id: None,
                input: &input,
                cron: &args.cron,
                timezone: &args.timezone,
                overlap: args.overlap,
                catch_up: args.catch_up,
            };
            match runner.create_schedule(&tenant, &req).await {
                Ok(record) => serde_json::to_value(record)?,
                Err(e) => return Ok(refuse(&e)),
            }
        }
        (None, None) => return Ok(ExitCode::from(2)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        println!("{}", line(&record));
    }
    Ok(ExitCode::SUCCESS)
}

/// The scheduler loop's settings: a tick every 500 ms, and slots more than 60 s old when
/// first seen count as missed (`CORRAL_SCHEDULE_TICK_MS` and `CORRAL_SCHEDULE_GRACE_MS`, for
/// tests and tuning). Fires are refused while the tenant has `max_queued` queued runs.
pub(super) fn scheduler_config(max_queued: Option<i64>) -> crate::runs::schedules::SchedulerConfig {
    let defaults = crate::runs::schedules::SchedulerConfig::default();
    let ms = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
    };
    crate::runs::schedules::SchedulerConfig {
        tick: ms("CORRAL_SCHEDULE_TICK_MS")
            .unwrap_or(defaults.tick)
            .max(std::time::Duration::from_millis(10)),
        grace: ms("CORRAL_SCHEDULE_GRACE_MS").unwrap_or(defaults.grace),
        max_queued_per_tenant: max_queued,
    }
}

/// A refusal as `CODE: message`; bad input exits 2, a database failure 1.
fn refuse(e: &ScheduleError) -> ExitCode {
    eprintln!("{e}");
    match e {
        ScheduleError::Store(_) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// Unix ms as RFC 3339 (UTC, seconds), or `-`.
fn time(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_i64)
        .and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// One schedule on one line: id, pipeline, cron (zone), policies, next slot, latest run.
fn line(s: &Value) -> String {
    format!(
        "{}  {}  `{}` ({})  overlap={} catch_up={}  next {}  last run {}",
        text(s, "id"),
        text(s, "pipeline_name"),
        text(s, "cron"),
        text(s, "timezone"),
        text(s, "overlap"),
        text(s, "catch_up"),
        time(s, "next_fire_at"),
        text(s, "last_run_id"),
    )
}

fn print_detail(doc: &Value) -> anyhow::Result<()> {
    let s = doc.get("schedule").unwrap_or(&Value::Null);
    println!("schedule {}", text(s, "id"));
    println!("  pipeline   {}", text(s, "pipeline_name"));
    println!(
        "  cron       `{}` ({})",
        text(s, "cron"),
        text(s, "timezone")
    );
    println!("  overlap    {}", text(s, "overlap"));
    println!("  catch_up   {}", text(s, "catch_up"));
    println!("  input      {}", s.get("input").unwrap_or(&Value::Null));
    println!("  created    {}", time(s, "created_at"));
    println!("  next       {}", time(s, "next_fire_at"));
    println!("  last run   {}", text(s, "last_run_id"));
    let fires = doc.get("fires").and_then(Value::as_array);
    match fires {
        Some(fires) if !fires.is_empty() => {
            println!("fires (newest first):");
            for f in fires {
                let detail = match (f.get("run_id").and_then(Value::as_str), f.get("reason")) {
                    (Some(run), _) => format!("run {run}"),
                    (None, Some(Value::String(reason))) => reason.escape_debug().to_string(),
                    _ => String::new(),
                };
                println!(
                    "  {}  {:<8} {}",
                    time(f, "fire_at"),
                    text(f, "status"),
                    detail
                );
            }
        }
        _ => println!("no fires yet"),
    }
    Ok(())
}
