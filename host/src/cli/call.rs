//! `corral call`: one invocation, for a plugin author's quick loop.

use super::plugin::report_failure;
use super::{Cli, exit_code_for};
use crate::capabilities::log::{GuestEvent, Level};
use crate::engine::limits::{parse_duration, parse_size};
use crate::engine::{Call, Failure, Invocation, Limits, Output, RunContext, World};
use clap::Args;
use serde_json::json;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub(super) struct CallArgs {
    /// The component file (.wasm).
    file: PathBuf,
    /// JSON input: inline text, `@PATH` to read a file, or `@-` for stdin.
    #[arg(long, short, default_value = "{}", value_name = "JSON|@PATH")]
    input: String,
    /// For a tool plugin: the tool to call (the input is its arguments).
    #[arg(long, value_name = "NAME")]
    tool: Option<String>,
    /// The step config handed to an agent as `ctx.config` (JSON or @PATH).
    #[arg(long, default_value = "{}", value_name = "JSON|@PATH")]
    config: String,
    /// Fuel budget (about one unit per wasm instruction). Default: unmetered,
    /// bounded by --timeout.
    #[arg(long, value_parser = parse_fuel, value_name = "N")]
    fuel: Option<u64>,
    /// Wall-clock limit, e.g. 500ms, 5s, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Linear memory limit, e.g. 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    memory: usize,
    /// Largest output accepted, e.g. 16MiB.
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    max_output: usize,
    /// Print one JSON object: status, output or error_code/message, fuel_used,
    /// duration_ms and the captured logs.
    #[arg(long)]
    json: bool,
    /// A model alias for the plugin, e.g.
    /// `fast=openai:http://127.0.0.1:8000/v1,model=NAME,key-env=OPENAI_API_KEY`
    /// (`openai` or `anthropic`; also `max-tokens=N`, `stream=false`). Repeatable.
    #[arg(long = "model", value_name = "ALIAS=PROVIDER:URL[,...]")]
    models: Vec<String>,
}

fn parse_fuel(s: &str) -> Result<u64, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of fuel units"))
}

/// `JSON`, `@PATH` or `@-`.
fn read_json_arg(what: &str, value: &str) -> Result<String, Failure> {
    let Some(path) = value.strip_prefix('@') else {
        return Ok(value.to_string());
    };
    let mut text = String::new();
    let read = if path == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|e| Failure::invalid_input(format!("cannot read {what} from {path}: {e}")))?;
    Ok(text)
}

pub(super) async fn run(cli: &Cli, args: &CallArgs) -> anyhow::Result<ExitCode> {
    let engine = cli.engine()?;
    let input = match read_json_arg("input", &args.input) {
        Ok(t) => t,
        Err(f) => return Ok(report_failure(&f, args.json)),
    };
    let config = match read_json_arg("config", &args.config) {
        Ok(t) => t,
        Err(f) => return Ok(report_failure(&f, args.json)),
    };
    let plugin = match engine.load_file(&args.file).await {
        Ok(p) => p,
        Err(f) => return Ok(report_failure(&f, args.json)),
    };
    let call = match (plugin.world, &args.tool) {
        (World::Agent, None) => Call::Run {
            ctx: RunContext {
                run_id: "local".into(),
                step: "call".into(),
                attempt: 1,
                config,
                feedback: None,
            },
            input,
        },
        (World::Tool, Some(name)) => Call::CallTool {
            name: name.clone(),
            arguments: input,
        },
        (World::Tool, None) => {
            let f = Failure::invalid_input(
                "this is a tool plugin: pass --tool NAME (`corral plugin inspect` lists its tools)",
            );
            return Ok(report_failure(&f, args.json));
        }
        (World::Connector, None) => Call::Pull {
            query: input,
            cursor: None,
        },
        (_, Some(_)) => {
            let f = Failure::invalid_input(format!(
                "--tool is for tool plugins; this is a {}",
                plugin.world.as_str()
            ));
            return Ok(report_failure(&f, args.json));
        }
    };

    // Human mode shows the guest's logs live on stderr; --json collects them.
    let observer = (!args.json).then(|| {
        let color = std::io::stderr().is_terminal();
        Arc::new(move |event: GuestEvent| print_event(&event, color))
            as crate::capabilities::log::Observer
    });
    let cancel = tokio_util::sync::CancellationToken::new();
    let ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ctrl_c.cancel();
        }
    });
    let manifest = match crate::runs::manifest::for_plugin(&crate::runs::pipeline::PluginRef::Path(
        args.file.clone(),
    )) {
        Ok(m) => m,
        Err(e) => return Ok(report_failure(&Failure::invalid_input(e), args.json)),
    };
    let mut limits = Limits {
        fuel: args.fuel,
        timeout: args.timeout,
        memory_bytes: args.memory,
        max_output_bytes: args.max_output,
        ..Limits::default()
    };
    manifest.apply_scratch_limits(&mut limits);
    let how = Invocation {
        limits,
        observer,
        services: if args.models.is_empty() {
            None
        } else {
            let services = crate::models::local::CallServices::from_specs(&args.models)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(std::sync::Arc::new(services))
        },
        cancel,
        http: manifest
            .http_policy(&engine.config().http_resolver)
            .map(Arc::new),
        files: manifest.grants.resolved_files.clone(),
        deadline: None,
    };
    let outcome = engine.invoke(&plugin, call, how).await;
    let duration_ms = outcome.duration.as_millis();

    if args.json {
        let report = CallReport {
            status: if outcome.result.is_ok() {
                "ok"
            } else {
                "failed"
            },
            output: outcome.result.as_ref().ok().map(output_json),
            error_code: outcome.result.as_ref().err().map(|f| f.code.as_str()),
            message: outcome.result.as_ref().err().map(|f| f.message.as_str()),
            fuel_used: outcome.fuel_used,
            duration_ms,
            logs: &outcome.logs,
            logs_truncated: outcome.logs_truncated,
        };
        println!("{}", serde_json::to_string(&report)?);
        return Ok(match &outcome.result {
            Ok(_) => ExitCode::SUCCESS,
            Err(f) => exit_code_for(f),
        });
    }

    match &outcome.result {
        Ok(output) => {
            println!("{}", serde_json::to_string_pretty(&output_json(output))?);
            eprintln!(
                "ok: fuel {} in {duration_ms} ms{}",
                outcome.fuel_used,
                if outcome.logs_truncated {
                    " (logs truncated)"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            eprintln!("{}: {}", f.code, f.message);
            eprintln!("after fuel {} in {duration_ms} ms", outcome.fuel_used);
            Ok(exit_code_for(f))
        }
    }
}

/// `corral call --json`: one object, stable field names.
#[derive(serde::Serialize)]
struct CallReport<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    fuel_used: u64,
    duration_ms: u128,
    logs: &'a [crate::capabilities::log::LogLine],
    logs_truncated: bool,
}

/// An output as JSON: JSON text is embedded as a value, not as a string.
fn output_json(output: &Output) -> serde_json::Value {
    let parse = |s: &str| serde_json::from_str(s).unwrap_or_else(|_| json!(s));
    match output {
        Output::Json(text) => parse(text),
        Output::AgentInfo(info) => json!(info),
        Output::ConnectorInfo(info) => json!(info),
        Output::Tools(tools) => json!(tools),
        Output::Page { items, next_cursor } => json!({
            "items": items.iter().map(|i| parse(i)).collect::<Vec<_>>(),
            "next_cursor": next_cursor,
        }),
        Output::Count(n) => json!(n),
        Output::Items(items) => json!(items.iter().map(|i| parse(i)).collect::<Vec<_>>()),
    }
}

fn print_event(event: &GuestEvent, color: bool) {
    match event {
        GuestEvent::Log(line) => {
            let tag = match line.level {
                Level::Trace => "trace",
                Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error => "error",
            };
            let source = match line.source {
                crate::capabilities::log::Source::Log => "",
                crate::capabilities::log::Source::Stdout => " stdout",
                crate::capabilities::log::Source::Stderr => " stderr",
                crate::capabilities::log::Source::Host => " host",
            };
            if color {
                eprintln!("\x1b[2m[{tag}{source}]\x1b[0m {}", line.message);
            } else {
                eprintln!("[{tag}{source}] {}", line.message);
            }
        }
        GuestEvent::Progress { percent, label } => eprintln!("[{percent:>3}%] {label}"),
        GuestEvent::LogTruncated => eprintln!("[log truncated: the plugin's log budget is spent]"),
        GuestEvent::Http(r) => eprintln!(
            "[http] {} {}://{}:{}{} -> {} ({} bytes, {} ms){}",
            r.method,
            r.scheme,
            r.host,
            r.port,
            r.path,
            r.status
                .map_or_else(|| r.outcome.clone(), |s| s.to_string()),
            r.bytes,
            r.duration_ms,
            r.reason
                .as_ref()
                .map(|why| format!(": {why}"))
                .unwrap_or_default()
        ),
    }
}
