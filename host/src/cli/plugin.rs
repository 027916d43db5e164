//! `corral plugin ...`: inspect plugin files, start plugin projects.

mod new;

use super::{Cli, exit_code_for};
use crate::engine::{Failure, Output, ToolSpec};
use clap::Subcommand;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum PluginCommand {
    /// Show a plugin's world, exports, imports, digest, size, and what it says about
    /// itself (an agent's info, a tool plugin's tools with their schemas).
    Inspect {
        /// The component file (.wasm).
        file: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start a plugin project from a template: `corral plugin new hello --lang python`.
    /// The project's README.md says how to build it and `corral call` it.
    New(new::NewArgs),
}

pub(super) async fn run(cli: &Cli, cmd: &PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Inspect { file, json } => inspect(cli, file, *json).await,
        PluginCommand::New(args) => Ok(new::run(args)),
    }
}

async fn inspect(cli: &Cli, file: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let engine = cli.engine()?;
    let plugin = match engine.load_file(file).await {
        Ok(p) => p,
        Err(f) => return Ok(report_failure(&f, as_json)),
    };
    let described = engine.describe(&plugin).await;
    let manifest = crate::runs::manifest::for_plugin(&crate::runs::pipeline::PluginRef::Path(
        file.to_path_buf(),
    ));
    let mut report = InspectReport {
        file: file.display().to_string(),
        world: plugin.world.as_str(),
        digest: &plugin.digest,
        size: plugin.size,
        exports: &plugin.exports,
        imports: &plugin.imports,
        info: None,
        tools: None,
        describe_error: None,
        grants: match &manifest {
            Ok(m) => json!({
                "tools": m.grants.tools,
                "http": m.grants.http,
                "secrets": m.grants.secrets,
                "files": m.grants.files,
                "limits": m.http_limits().ok().map(|l| json!({
                    "http_requests": l.max_requests,
                    "http_response_bytes": l.max_response_bytes,
                    "http_timeout_ms": u64::try_from(l.request_timeout.as_millis()).unwrap_or(u64::MAX),
                })),
            }),
            Err(e) => json!({"error": e}),
        },
    };
    match &described.result {
        Ok(Output::AgentInfo(info)) => report.info = Some(json!(info)),
        Ok(Output::ConnectorInfo(info)) => report.info = Some(json!(info)),
        Ok(Output::Tools(tools)) => report.tools = Some(tools.clone()),
        Ok(_) => {}
        Err(f) => report.describe_error = Some(f.clone()),
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(match &described.result {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    })
}

/// `corral plugin inspect --json`.
#[derive(Serialize)]
struct InspectReport<'a> {
    file: String,
    world: &'static str,
    digest: &'a str,
    size: usize,
    exports: &'a [String],
    imports: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<ToolSpec>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "failure_json"
    )]
    describe_error: Option<Failure>,
    /// What the plugin's manifest (NAME.corral.toml beside it) grants; nothing without one.
    grants: serde_json::Value,
}

fn failure_json<S: serde::Serializer>(f: &Option<Failure>, s: S) -> Result<S::Ok, S::Error> {
    f.as_ref()
        .map(|f| json!({"error_code": f.code, "message": f.message}))
        .serialize(s)
}

fn print_text(r: &InspectReport<'_>) {
    println!("file:    {}", r.file);
    println!("world:   {}", r.world);
    println!("digest:  {}", r.digest);
    println!("size:    {} bytes", r.size);
    println!("exports:");
    for e in r.exports {
        println!("  {e}");
    }
    println!("imports:");
    for i in r.imports {
        println!("  {i}");
    }
    println!("grants:  {}", r.grants);
    if let Some(serde_json::Value::Object(info)) = &r.info {
        println!("info:");
        for (key, value) in info {
            match value {
                serde_json::Value::Null => {}
                serde_json::Value::String(s) => println!("  {key}: {s}"),
                other => println!("  {key}: {other}"),
            }
        }
    }
    if let Some(tools) = &r.tools {
        println!("tools:");
        for t in tools {
            println!("  {} - {}", t.name, t.description);
            println!("    input schema: {}", t.input_schema);
        }
    }
    if let Some(f) = &r.describe_error {
        println!("describe failed: {}: {}", f.code, f.message);
    }
}

/// Prints a failure as `CODE: message` on stderr (and as JSON on stdout with --json).
pub(super) fn report_failure(f: &Failure, as_json: bool) -> ExitCode {
    if as_json {
        println!(
            "{}",
            json!({"status": "failed", "error_code": f.code, "message": f.message})
        );
    }
    eprintln!("{}: {}", f.code, f.message);
    exit_code_for(f)
}
