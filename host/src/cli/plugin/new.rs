//! `corral plugin new NAME --lang rust|python|js [--kind agent|tool|connector]`: writes a
//! plugin project from templates embedded in this binary (`host/templates/<lang>/`).
//!
//! The Rust project takes `corral-sdk` by path (crates.io has none): by default the SDK of
//! the checkout this binary was built from, or `--sdk-path`. The Python and JavaScript
//! projects carry copies of their SDK and of the WIT contract, so they build on their own.

use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(in crate::cli) enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(in crate::cli) enum Kind {
    Agent,
    Tool,
    Connector,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Tool => "tool",
            Kind::Connector => "connector",
        }
    }

    fn world(self) -> &'static str {
        match self {
            Kind::Agent => "agent-plugin",
            Kind::Tool => "tool-plugin",
            Kind::Connector => "connector-plugin",
        }
    }
}

#[derive(Debug, Args)]
pub(in crate::cli) struct NewArgs {
    /// The plugin's name: a lowercase letter, then lowercase letters, digits, `-` or `_`
    /// (at most 64). Also the project directory unless --dir is given.
    name: String,
    /// The language of the project.
    #[arg(long, value_enum)]
    lang: Lang,
    /// What the plugin is: an agent (a pipeline step), a tool (functions agents call),
    /// or a connector (records in and out of an outside system).
    #[arg(long, value_enum, default_value = "agent")]
    kind: Kind,
    /// Where to write the project (must not exist, or be empty). Default: ./NAME.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Rust only: the `sdk/` directory of a Corral checkout. Default: the one this
    /// `corral` was built from.
    #[arg(long, value_name = "DIR")]
    sdk_path: Option<PathBuf>,
}

/// The Rust SDK of the checkout this binary was built from.
const BUILT_SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// The WIT contract, copied into Python and JavaScript projects.
const WIT: &[(&str, &str)] = &[
    ("wit/agent.wit", include_str!("../../../../wit/agent.wit")),
    (
        "wit/connector.wit",
        include_str!("../../../../wit/connector.wit"),
    ),
    ("wit/host.wit", include_str!("../../../../wit/host.wit")),
    ("wit/model.wit", include_str!("../../../../wit/model.wit")),
    ("wit/tool.wit", include_str!("../../../../wit/tool.wit")),
    ("wit/types.wit", include_str!("../../../../wit/types.wit")),
    ("wit/worlds.wit", include_str!("../../../../wit/worlds.wit")),
];

const PYTHON_SDK: &str = include_str!("../../../../sdk/python/corral_sdk/__init__.py");
const JS_SDK: &str = include_str!("../../../../sdk/js/corral.js");

mod tpl {
    pub const RUST_CARGO: &str = include_str!("../../../templates/rust/Cargo.toml");
    pub const RUST_README: &str = include_str!("../../../templates/rust/README.md");
    pub const RUST_GITIGNORE: &str = include_str!("../../../templates/rust/gitignore");
    pub const RUST_AGENT: &str = include_str!("../../../templates/rust/agent.rs");
    pub const RUST_TOOL: &str = include_str!("../../../templates/rust/tool.rs");
    pub const RUST_CONNECTOR: &str = include_str!("../../../templates/rust/connector.rs");
    pub const PY_README: &str = include_str!("../../../templates/python/README.md");
    pub const PY_GITIGNORE: &str = include_str!("../../../templates/python/gitignore");
    pub const PY_AGENT: &str = include_str!("../../../templates/python/agent.py");
    pub const PY_TOOL: &str = include_str!("../../../templates/python/tool.py");
    pub const PY_CONNECTOR: &str = include_str!("../../../templates/python/connector.py");
    pub const JS_README: &str = include_str!("../../../templates/js/README.md");
    pub const JS_GITIGNORE: &str = include_str!("../../../templates/js/gitignore");
    pub const JS_PACKAGE: &str = include_str!("../../../templates/js/package.json");
    pub const JS_AGENT: &str = include_str!("../../../templates/js/agent.js");
    pub const JS_TOOL: &str = include_str!("../../../templates/js/tool.js");
    pub const JS_CONNECTOR: &str = include_str!("../../../templates/js/connector.js");
    pub const PIPELINE: &str = include_str!("../../../templates/pipeline.toml");
    pub const PIPELINE_README: &str = include_str!("../../../templates/pipeline-readme.md");
}

/// Why a project could not be written: bad usage (exit 2) or an I/O failure (exit 1).
enum NewError {
    Usage(String),
    Io(String),
}

pub(in crate::cli) fn run(args: &NewArgs) -> ExitCode {
    match generate(args) {
        Ok((dir, next)) => {
            println!(
                "created {} {} `{}` in {}",
                lang_name(args.lang),
                args.kind.as_str(),
                args.name,
                dir.display()
            );
            println!("next:\n  cd {}", dir.display());
            for line in next {
                println!("  {line}");
            }
            ExitCode::SUCCESS
        }
        Err(NewError::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(NewError::Io(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    }
}

/// A valid plugin name: `[a-z][a-z0-9_-]{0,63}`.
fn check_name(name: &str) -> Result<(), NewError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !first_ok || !rest_ok || name.len() > 64 {
        return Err(NewError::Usage(format!(
            "`{}` is not a plugin name: use a lowercase letter, then lowercase letters, digits, `-` or `_` (at most 64)",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// The files of the project (relative path, contents) and the commands to run next.
fn generate(args: &NewArgs) -> Result<(PathBuf, Vec<String>), NewError> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if let Ok(mut entries) = std::fs::read_dir(&dir) {
        if entries.next().is_some() {
            return Err(NewError::Usage(format!(
                "{} already exists and is not empty",
                dir.display()
            )));
        }
    } else if dir.exists() {
        return Err(NewError::Usage(format!(
            "{} exists and is not a directory",
            dir.display()
        )));
    }
    let file = args.name.replace('-', "_");
    let (mut files, build, call) = match args.lang {
        Lang::Rust => rust_files(args, &file)?,
        Lang::Python => python_files(args, &file),
        Lang::Js => js_files(args, &file),
    };
    if args.kind == Kind::Agent {
        // An agent also gets a one-step pipeline, so `corral run` (embedded or --server)
        // works on it out of the box.
        let wasm = wasm_path(args.lang, &file);
        let vars = [("name", args.name.as_str()), ("wasm", wasm.as_str())];
        if let Some((_, readme)) = files.iter_mut().find(|(path, _)| path == "README.md") {
            readme.push_str(&fill(tpl::PIPELINE_README, &vars));
        }
        files.push(("pipeline.toml".to_string(), fill(tpl::PIPELINE, &vars)));
    }
    for (path, contents) in &files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| NewError::Io(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&target, contents)
            .map_err(|e| NewError::Io(format!("cannot write {}: {e}", target.display())))?;
    }
    let mut next = build;
    next.push(call);
    Ok((dir, next))
}

type Files = Vec<(String, String)>;

/// Where the project's build puts its component, relative to the project.
fn wasm_path(lang: Lang, file: &str) -> String {
    match lang {
        Lang::Rust => format!("target/wasm32-wasip2/release/{file}.wasm"),
        Lang::Python | Lang::Js => format!("{file}.wasm"),
    }
}

/// `corral call ...` for a plugin of this kind.
fn call_line(kind: Kind, wasm: &str) -> String {
    match kind {
        Kind::Agent => format!("corral call {wasm} --input '{{\"name\": \"Ada\"}}'"),
        Kind::Tool => format!("corral call {wasm} --tool greet --input '{{\"name\": \"Ada\"}}'"),
        Kind::Connector => format!("corral call {wasm}    # pulls the first page"),
    }
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

fn rust_files(args: &NewArgs, file: &str) -> Result<(Files, Vec<String>, String), NewError> {
    let sdk = match &args.sdk_path {
        Some(p) => p.clone(),
        None => PathBuf::from(BUILT_SDK_PATH),
    };
    let sdk = sdk.canonicalize().ok().filter(|p| p.join("Cargo.toml").is_file()).ok_or_else(|| {
        NewError::Usage(format!(
            "no Corral Rust SDK at {}{}: pass --sdk-path with the sdk/ directory of a Corral checkout",
            sdk.display(),
            if args.sdk_path.is_none() { " (where this corral was built)" } else { "" }
        ))
    })?;
    let sdk_plain = sdk.display().to_string();
    // A JSON string is a valid TOML basic string (same escapes).
    let sdk_toml = serde_json::to_string(&sdk_plain).map_err(|e| NewError::Io(e.to_string()))?;
    let wasm = wasm_path(args.lang, file);
    let call = call_line(args.kind, &wasm);
    let vars = [
        ("name", args.name.as_str()),
        ("kind", args.kind.as_str()),
        ("file", file),
        ("sdk_path", sdk_toml.as_str()),
        ("sdk_path_plain", sdk_plain.as_str()),
        ("call", call.as_str()),
    ];
    let lib = match args.kind {
        Kind::Agent => tpl::RUST_AGENT,
        Kind::Tool => tpl::RUST_TOOL,
        Kind::Connector => tpl::RUST_CONNECTOR,
    };
    let files = vec![
        ("Cargo.toml".to_string(), fill(tpl::RUST_CARGO, &vars)),
        ("src/lib.rs".to_string(), fill(lib, &vars)),
        ("README.md".to_string(), fill(tpl::RUST_README, &vars)),
        (".gitignore".to_string(), tpl::RUST_GITIGNORE.to_string()),
    ];
    Ok((
        files,
        vec!["cargo build --release --target wasm32-wasip2".into()],
        call,
    ))
}

fn with_wit(mut files: Files) -> Files {
    files.extend(
        WIT.iter()
            .map(|(p, c)| ((*p).to_string(), (*c).to_string())),
    );
    files
}

fn python_files(args: &NewArgs, file: &str) -> (Files, Vec<String>, String) {
    let wasm = wasm_path(args.lang, file);
    let call = call_line(args.kind, &wasm);
    let vars = [
        ("name", args.name.as_str()),
        ("kind", args.kind.as_str()),
        ("file", file),
        ("world", args.kind.world()),
        ("call", call.as_str()),
    ];
    let app = match args.kind {
        Kind::Agent => tpl::PY_AGENT,
        Kind::Tool => tpl::PY_TOOL,
        Kind::Connector => tpl::PY_CONNECTOR,
    };
    let files = with_wit(vec![
        ("app.py".to_string(), fill(app, &vars)),
        ("corral_sdk/__init__.py".to_string(), PYTHON_SDK.to_string()),
        ("README.md".to_string(), fill(tpl::PY_README, &vars)),
        (".gitignore".to_string(), tpl::PY_GITIGNORE.to_string()),
    ]);
    let build = vec![
        "python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1".into(),
        format!(
            ".venv/bin/componentize-py -d wit -w {} componentize app -o {wasm}",
            args.kind.world()
        ),
    ];
    (files, build, call)
}

fn js_files(args: &NewArgs, file: &str) -> (Files, Vec<String>, String) {
    let wasm = wasm_path(args.lang, file);
    let call = call_line(args.kind, &wasm);
    let vars = [
        ("name", args.name.as_str()),
        ("kind", args.kind.as_str()),
        ("file", file),
        ("world", args.kind.world()),
        ("call", call.as_str()),
    ];
    let app = match args.kind {
        Kind::Agent => tpl::JS_AGENT,
        Kind::Tool => tpl::JS_TOOL,
        Kind::Connector => tpl::JS_CONNECTOR,
    };
    let files = with_wit(vec![
        ("app.js".to_string(), fill(app, &vars)),
        ("corral.js".to_string(), JS_SDK.to_string()),
        ("package.json".to_string(), fill(tpl::JS_PACKAGE, &vars)),
        ("README.md".to_string(), fill(tpl::JS_README, &vars)),
        (".gitignore".to_string(), tpl::JS_GITIGNORE.to_string()),
    ]);
    (
        files,
        vec!["npm install".into(), "npm run build".into()],
        call,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["hello", "a", "my-agent_2"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Hello", "1x", "-x", "a/b", "a b", "..", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_fill_every_placeholder() {
        let vars = [
            ("name", "n"),
            ("kind", "agent"),
            ("file", "n"),
            ("world", "agent-plugin"),
            ("sdk_path", "\"/x\""),
            ("sdk_path_plain", "/x"),
            ("call", "corral call n.wasm"),
            ("wasm", "n.wasm"),
        ];
        for t in [
            tpl::RUST_CARGO,
            tpl::RUST_README,
            tpl::RUST_AGENT,
            tpl::RUST_TOOL,
            tpl::RUST_CONNECTOR,
            tpl::PY_README,
            tpl::PY_AGENT,
            tpl::PY_TOOL,
            tpl::PY_CONNECTOR,
            tpl::JS_README,
            tpl::JS_PACKAGE,
            tpl::JS_AGENT,
            tpl::JS_TOOL,
            tpl::JS_CONNECTOR,
            tpl::PIPELINE,
            tpl::PIPELINE_README,
        ] {
            let out = fill(t, &vars);
            assert!(!out.contains("{{"), "unfilled placeholder in:\n{out}");
        }
    }
}
