//! Developer tasks for Corral: `cargo xtask <task>`.
//!
//! - `build-plugins`: builds every plugin and hostile fixture to `target/plugins/<name>.wasm`
//!   (Rust crates for `wasm32-wasip2`; Python plugins with componentize-py from a
//!   project-local `.venv`, created on first use; JavaScript plugins with componentize-js
//!   from `sdk/js/node_modules`, see `js.rs`).
//! - `test [ARGS]`: `build-plugins`, installs Debian's `chromium` for the browser tests
//!   when it is missing (see `chromium.rs`), schemathesis (pinned, into `.venv`) for
//!   the API conformance test and the MCP Python SDK (pinned, into `.venv`) for the MCP
//!   client test, then the whole test suite (`cargo test` ARGS).
//! - `demo [--serve]`: `build-plugins`, then runs the ETL demo with the release `corral` binary
//!   (`--serve`: on the web dashboard, see `demo_serve`).
//! - `bench [--quick]`: `build-plugins`, then the benchmark harness (`bench/`).

mod chromium;
mod demo_serve;
mod js;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// componentize-py turns a Python module into a component; pinned so builds repeat.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// Validates the server's /openapi.json in the test suite.
const OPENAPI_VALIDATOR: &str = "openapi-spec-validator==0.7.2";
/// Tests a live `corral serve` against its /openapi.json in the test suite
/// (tests/all/openapi.rs); `CORRAL_SKIP_SCHEMATHESIS=1` skips it.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// The official MCP Python SDK (a library, no command): the second, independent MCP client
/// that drives `/mcp` in the test suite (tests/all/mcp_python.rs, tests/mcp_python/);
/// `CORRAL_SKIP_MCP_PYTHON=1` skips it.
const MCP_PYTHON: (&str, &str) = ("mcp", "2.3.0");

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = workspace_root()?;
    match task.as_str() {
        "build-plugins" => build_plugins(&root),
        "test" => {
            build_plugins(&root)?;
            python_tool(&root, "openapi-spec-validator", OPENAPI_VALIDATOR)?;
            if std::env::var("CORRAL_SKIP_SCHEMATHESIS").is_ok_and(|v| v == "1") {
                println!("CORRAL_SKIP_SCHEMATHESIS=1: the schemathesis test will not run");
            } else {
                python_tool(&root, "schemathesis", SCHEMATHESIS)?;
            }
            if std::env::var("CORRAL_SKIP_MCP_PYTHON").is_ok_and(|v| v == "1") {
                println!("CORRAL_SKIP_MCP_PYTHON=1: the MCP Python SDK test will not run");
            } else {
                python_package(&root, MCP_PYTHON.0, MCP_PYTHON.1)?;
            }
            chromium::ensure()?;
            run(Command::new(cargo())
                .current_dir(&root)
                .arg("test")
                .args(&rest))
        }
        "bench" => {
            build_plugins(&root)?;
            // The streaming metric's cross-node row runs two real `corral serve`.
            run(Command::new(cargo()).current_dir(&root).args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "corral",
                "--bin",
                "corral",
            ]))?;
            run(Command::new(cargo())
                .current_dir(&root)
                .args(["run", "--release", "--quiet", "-p", "corral-bench", "--"])
                .args(&rest))
        }
        "demo" => {
            build_plugins(&root)?;
            if rest.iter().any(|a| a == "--serve") {
                return demo_serve::demo_serve(&root);
            }
            demo(&root, &rest)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 build-plugins   build every plugin and fixture to target/plugins/\n  \
                 test [ARGS]     build plugins, then run the whole test suite\n  \
                 demo [--serve]  build plugins, then run the ETL demo (--serve: on the dashboard)\n  \
                 bench [--quick] build plugins, then run the benchmarks (target/bench/results.json)"
            );
            std::process::exit(2);
        }
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Directories holding plugin sources: every plugin and every hostile fixture.
fn plugin_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for parent in ["plugins", "tests/fixtures"] {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The package name from a Cargo.toml, read without a TOML dependency.
fn package_name(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest)?;
    text.lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("name")
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
        .with_context(|| format!("no package name in {}", manifest.display()))
}

fn build_plugins(root: &Path) -> Result<()> {
    let out = root.join("target/plugins");
    std::fs::create_dir_all(&out)?;
    let dirs = plugin_dirs(root)?;

    // Rust plugins and fixtures: one cargo invocation for all of them.
    let mut rust = Vec::new();
    for dir in &dirs {
        let manifest = dir.join("Cargo.toml");
        if manifest.exists() {
            rust.push(package_name(&manifest)?);
        }
    }
    if !rust.is_empty() {
        let mut cmd = Command::new(cargo());
        cmd.current_dir(root)
            .args(["build", "--profile", "plugin", "--target", "wasm32-wasip2"]);
        for name in &rust {
            cmd.args(["-p", name]);
        }
        run(&mut cmd)?;
        for name in &rust {
            let file = format!("{}.wasm", name.replace('-', "_"));
            let built = root.join("target/wasm32-wasip2/plugin").join(&file);
            std::fs::copy(&built, out.join(&file))
                .with_context(|| format!("copying {}", built.display()))?;
        }
    }

    // Permission manifests travel with their components: `plugins/NAME/corral.toml`
    // becomes `target/plugins/NAME.corral.toml`.
    for dir in &dirs {
        let manifest = dir.join("corral.toml");
        if manifest.exists() {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .context("plugin directory name")?
                .replace('-', "_");
            std::fs::copy(&manifest, out.join(format!("{name}.corral.toml")))?;
        }
    }

    // Python plugins: a directory with `app.py`, built by componentize-py.
    let python: Vec<&PathBuf> = dirs.iter().filter(|d| d.join("app.py").exists()).collect();
    if !python.is_empty() {
        let tool = componentize_py(root)?;
        for dir in python {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .context("plugin directory name")?
                .replace('-', "_");
            let world = std::fs::read_to_string(dir.join("app.py"))?
                .lines()
                .find_map(|l| {
                    l.strip_prefix("# corral-world:")
                        .map(|w| w.trim().to_string())
                })
                .unwrap_or_else(|| "agent-plugin".into());
            let target = out.join(format!("{name}.wasm"));
            // componentize-py is slow (it snapshots a CPython); skip when nothing changed.
            let sdk = root.join("sdk/python");
            if is_fresh(&target, &[dir.as_path(), &root.join("wit"), &sdk])? {
                continue;
            }
            // The plugin's own directory first, then the Python SDK (`corral_sdk`).
            run(Command::new(&tool)
                .current_dir(dir)
                .arg("-d")
                .arg(root.join("wit"))
                .args(["-w", &world, "componentize", "app", "-p", ".", "-p"])
                .arg(&sdk)
                .arg("-o")
                .arg(&target))?;
        }
    }
    js::build_plugins(root, &dirs, &out)?;
    println!("plugins built in {}", out.display());
    Ok(())
}

/// True when `target` exists and is newer than every file under `inputs`.
fn is_fresh(target: &Path, inputs: &[&Path]) -> Result<bool> {
    let Ok(built) = std::fs::metadata(target).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    fn newest(path: &Path) -> Result<std::time::SystemTime> {
        let meta = std::fs::metadata(path)?;
        let mut t = meta.modified()?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                let p = entry?.path();
                if p.file_name().is_some_and(|n| n == "__pycache__") {
                    continue;
                }
                t = t.max(newest(&p)?);
            }
        }
        Ok(t)
    }
    for input in inputs {
        if newest(input)? > built {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Path to componentize-py in the project-local venv, installing it on first use.
fn componentize_py(root: &Path) -> Result<PathBuf> {
    python_tool(root, "componentize-py", COMPONENTIZE_PY)
}

/// A command-line tool from PyPI in the project-local `.venv`, installed on first use.
fn python_tool(root: &Path, command: &str, requirement: &str) -> Result<PathBuf> {
    let venv = root.join(".venv");
    let tool = venv.join("bin").join(command);
    if tool.exists() {
        return Ok(tool);
    }
    if !venv.join("bin/pip").exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    println!("installing {requirement} into {}", venv.display());
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        requirement,
    ]))?;
    Ok(tool)
}

/// A library from PyPI at exactly `version` in the project-local `.venv`: installed when
/// it is missing or at another version (a library has no command whose presence tells).
fn python_package(root: &Path, name: &str, version: &str) -> Result<()> {
    let venv = root.join(".venv");
    let python = venv.join("bin/python");
    if python.exists() {
        let out = Command::new(&python)
            .args([
                "-c",
                "import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))",
                name,
            ])
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == version {
            return Ok(());
        }
    } else {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    let requirement = format!("{name}=={version}");
    println!("installing {requirement} into {}", venv.display());
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &requirement,
    ]))
}

fn demo(root: &Path, rest: &[String]) -> Result<()> {
    run(Command::new(cargo())
        .current_dir(root)
        .args(["build", "--release", "-p", "corral"]))?;
    let corral = root.join("target/release/corral");
    let script = root.join("examples/etl/demo.sh");
    run(Command::new("bash")
        .arg(script)
        .args(rest)
        .env("CORRAL", corral)
        .current_dir(root))
}
