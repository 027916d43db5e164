//! `corral plugin ...`: inspect plugin files, start plugin projects, upload plugins to a
//! server and list a server's plugins.

mod new;

use super::remote::{RemoteError, ServerArgs, read_manifest};
use super::{Cli, exit_code_for};
use crate::engine::{Failure, Output, ToolSpec};
use clap::Subcommand;
use serde::Serialize;
use serde_json::{Value, json};
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
    /// Upload a component to a server (`--server`, `--token`: an operator's; setting a
    /// manifest needs an admin's) and give it its permission manifest: `--manifest FILE`,
    /// or else `NAME.corral.toml` beside the file when there is one. Prints the plugin's
    /// `name@version` and id (`--json`: the server's answer).
    Upload {
        /// The component file (.wasm).
        file: PathBuf,
        /// The plugin's name on the server. Default: the name the plugin gives itself.
        #[arg(long)]
        name: Option<String>,
        /// The plugin's version. Default: the version the plugin gives itself.
        #[arg(long)]
        version: Option<String>,
        /// The permission manifest (TOML, as beside a local plugin) to set on it.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List a server's plugins (`--server`, `--token`), as a table or, with --json, as
    /// `{"plugins": [...]}`.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub(super) async fn run(cli: &Cli, cmd: &PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Inspect { file, json } => inspect(cli, file, *json).await,
        PluginCommand::New(args) => Ok(new::run(args)),
        PluginCommand::Upload {
            file,
            name,
            version,
            manifest,
            json,
            server,
        } => {
            let upload = Upload {
                file,
                name: name.as_deref(),
                version: version.as_deref(),
                manifest: manifest.as_deref(),
                json: *json,
            };
            Ok(upload_plugin(server, &upload).await)
        }
        PluginCommand::List { json, server } => list_plugins(server, *json).await,
    }
}

/// The server client for a plugin command: `--server` is required.
fn plugin_client(server: &ServerArgs) -> Result<super::remote::Client, ExitCode> {
    match server.client() {
        Ok(Some(client)) => Ok(client),
        Ok(None) => {
            eprintln!(
                "INVALID_REQUEST: this command works on a server: pass --server URL (or set CORRAL_SERVER) and --token"
            );
            Err(ExitCode::from(2))
        }
        Err(e) => Err(e.report()),
    }
}

/// `corral plugin upload`'s arguments.
struct Upload<'a> {
    file: &'a Path,
    name: Option<&'a str>,
    version: Option<&'a str>,
    manifest: Option<&'a Path>,
    json: bool,
}

async fn upload_plugin(server: &ServerArgs, args: &Upload<'_>) -> ExitCode {
    let client = match plugin_client(server) {
        Ok(client) => client,
        Err(code) => return code,
    };
    // The manifest is read (and checked) before anything is uploaded.
    let manifest_path = match args.manifest {
        Some(path) => Some(path.to_path_buf()),
        None => crate::runs::manifest::path_for(&crate::runs::pipeline::PluginRef::Path(
            args.file.to_path_buf(),
        ))
        .filter(|p| p.exists()),
    };
    let manifest = match manifest_path.as_deref().map(read_manifest).transpose() {
        Ok(m) => m,
        Err(e) => return e.report(),
    };
    let bytes = match std::fs::read(args.file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!(
                "INVALID_COMPONENT: cannot read {}: {e}",
                args.file.display()
            );
            return ExitCode::from(2);
        }
    };
    let mut created = match client.upload(args.name, args.version, bytes).await {
        Ok(created) => created,
        Err(e) => return e.report(),
    };
    let label = format!(
        "{}@{}",
        created.get("name").and_then(Value::as_str).unwrap_or("?"),
        created
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    let id = created
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let (Some(manifest), Some(path)) = (&manifest, &manifest_path) {
        if let Err(e) = client.set_manifest(&id, manifest).await {
            eprintln!("uploaded plugin {label} ({id}), but its manifest was not set:");
            return e.report();
        }
        if !args.json {
            eprintln!("set its manifest from {}", path.display());
        }
        if let Some(obj) = created.as_object_mut() {
            obj.insert("manifest".into(), manifest.clone());
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&created).unwrap_or_default()
        );
    } else {
        println!("uploaded plugin {label} ({id})");
    }
    ExitCode::SUCCESS
}

async fn list_plugins(server: &ServerArgs, as_json: bool) -> anyhow::Result<ExitCode> {
    let client = match plugin_client(server) {
        Ok(client) => client,
        Err(code) => return Ok(code),
    };
    let plugins = match client.plugins().await {
        Ok(plugins) => plugins,
        Err(e) => return Ok(RemoteError::report(&e)),
    };
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "plugins": plugins }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let text = |p: &Value, key: &str| {
        p.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let rows: Vec<[String; 6]> = plugins
        .iter()
        .map(|p| {
            [
                text(p, "id"),
                format!("{}@{}", text(p, "name"), text(p, "version")),
                text(p, "world"),
                p.get("size")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    .to_string(),
                if p.get("manifest").is_some_and(|m| !m.is_null()) {
                    "yes".to_string()
                } else {
                    "no".to_string()
                },
                text(p, "digest"),
            ]
        })
        .collect();
    let header = ["ID", "PLUGIN", "WORLD", "BYTES", "MANIFEST", "DIGEST"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out
    };
    println!("{}", line(&header.map(String::from)));
    for row in &rows {
        println!("{}", line(row));
    }
    Ok(ExitCode::SUCCESS)
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
