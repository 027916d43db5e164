//! The guest SDKs and `corral plugin new`, as a plugin author uses them: the Python and
//! JavaScript example plugins (built by `cargo xtask build-plugins`) under `corral call`,
//! and every template generated into a temporary directory, built with its language's
//! toolchain and called. The toolchains are the project's own: the `.venv`'s
//! componentize-py and `sdk/js/node_modules`' componentize-js, both installed by xtask;
//! Rust templates build with the machine's default (stable) toolchain.

use crate::util::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corral() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.env("CORRAL_DATA_DIR", root().join("target/test-data"))
        .env_remove("RUST_LOG");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// `corral call FILE --json ARGS...`, returning the report.
fn call(file: &Path, args: &[&str]) -> (i32, Value) {
    let (code, out, err) = run(corral()
        .arg("call")
        .arg(file)
        .args(["--json", "--timeout", "120s"])
        .args(args));
    let doc = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, doc)
}

fn logs(doc: &Value) -> Vec<String> {
    doc["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{}: {}", l["level"].as_str().unwrap_or(""), l["message"]))
        .collect()
}

fn inspect(file: &Path) -> Value {
    let (code, out, err) = run(corral().args(["plugin", "inspect", "--json"]).arg(file));
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

/// The hello examples behave the same in every language.
fn check_hello(file: &Path, name: &str) {
    let info = inspect(file);
    assert_eq!(info["info"]["name"], name, "{info:#}");
    // `plugin inspect --json` embeds the schema as JSON (text, if it were not).
    let schema = match &info["info"]["input_schema"] {
        Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    };
    assert_eq!(schema["required"], json!(["name"]), "{schema:#}");
    assert_eq!(schema["properties"]["name"]["type"], "string");

    let (code, doc) = call(file, &["--input", r#"{"name": "Ada", "excited": true}"#]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["output"], json!({"greeting": "Hello, Ada!"}), "{doc:#}");
    assert!(
        logs(&doc)
            .iter()
            .any(|l| l.starts_with("info:") && l.contains("greeting Ada (step call, attempt 1)")),
        "{doc:#}"
    );

    // Typed input: a field of the wrong type is refused, naming it.
    let (code, doc) = call(file, &["--input", r#"{"name": 5}"#]);
    assert_eq!(code, 2, "{doc:#}");
    assert_eq!(doc["error_code"], "INVALID_INPUT", "{doc:#}");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains(r#""name" must be a string"#),
        "{doc:#}"
    );
    let (code, doc) = call(file, &["--input", "{}"]);
    assert_eq!(code, 2, "{doc:#}");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains(r#"missing required field "name""#),
        "{doc:#}"
    );
    // The plugin's own exception becomes the WIT error it names.
    let (code, doc) = call(file, &["--input", r#"{"name": " "}"#]);
    assert_eq!(code, 2, "{doc:#}");
    assert_eq!(doc["error_code"], "INVALID_INPUT");
    assert_eq!(doc["message"], r#""name" is empty"#);
}

#[test]
fn hello_py_on_the_python_sdk_runs_under_corral_call() {
    check_hello(&plugin_path("hello_py"), "hello-py");
}

#[test]
fn hello_js_on_the_javascript_sdk_runs_under_corral_call() {
    check_hello(&plugin_path("hello_js"), "hello-js");
}

#[test]
fn python_sdk_unit_tests_pass_under_cpython() {
    let (code, out, err) = run(Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(root().join("sdk/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("OK"), "{err}");
}

// ---- corral plugin new ----

fn new_project(lang: &str, kind: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(format!("hello-{kind}"));
    let (code, out, err) = run(corral()
        .args([
            "plugin",
            "new",
            &format!("hello-{kind}"),
            "--lang",
            lang,
            "--kind",
            kind,
        ])
        .current_dir(tmp.path()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("next:"), "{out}");
    assert!(dir.join("README.md").is_file());
    (tmp, dir)
}

/// Calls a built template of `kind` the way its README says, and checks the answer.
fn check_template(file: &Path, kind: &str) {
    let info = inspect(file);
    match kind {
        "agent" => {
            assert_eq!(info["info"]["name"], "hello-agent", "{info:#}");
            let (code, doc) = call(file, &["--input", r#"{"name": "Ada"}"#]);
            assert_eq!(code, 0, "{doc:#}");
            assert_eq!(doc["output"], json!({"greeting": "Hello, Ada!"}), "{doc:#}");
            assert!(
                logs(&doc).iter().any(|l| l.contains("greeting Ada")),
                "{doc:#}"
            );
            // Out of the box: no input at all greets the world.
            let (code, doc) = call(file, &[]);
            assert_eq!(code, 0, "{doc:#}");
            assert_eq!(doc["output"], json!({"greeting": "Hello, world!"}));
        }
        "tool" => {
            assert_eq!(info["tools"][0]["name"], "greet", "{info:#}");
            let (code, doc) = call(file, &["--tool", "greet", "--input", r#"{"name": "Ada"}"#]);
            assert_eq!(code, 0, "{doc:#}");
            assert_eq!(doc["output"], json!({"greeting": "Hello, Ada!"}), "{doc:#}");
            // The host checks arguments against the schema the template declares.
            let (code, doc) = call(file, &["--tool", "greet", "--input", "{}"]);
            assert_eq!(code, 2, "{doc:#}");
            assert_eq!(doc["error_code"], "INVALID_INPUT");
        }
        "connector" => {
            assert_eq!(info["info"]["name"], "hello-connector", "{info:#}");
            let (code, doc) = call(file, &[]);
            assert_eq!(code, 0, "{doc:#}");
            assert_eq!(
                doc["output"],
                json!({"items": [{"id": 0, "name": "alpha"}, {"id": 1, "name": "beta"}],
                       "next_cursor": "2"}),
                "{doc:#}"
            );
        }
        other => panic!("unknown kind {other}"),
    }
}

/// The rest of a new agent's README, past `corral call`: its `pipeline.toml` under `corral
/// run` on the local database, then against a real `corral serve` with the admin token it
/// prints on its first start; the CLI shows the run's output both times, and `runs show`
/// shows it again.
fn check_pipeline_flow(dir: &Path) {
    assert!(dir.join("pipeline.toml").is_file());
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("corral run pipeline.toml"), "{readme}");
    let input = r#"{"name": "Ada"}"#;
    let (code, out, err) = run(corral()
        .args(["run", "pipeline.toml", "--input", input])
        .current_dir(dir));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(r#""greeting": "Hello, Ada!""#), "{out}{err}");

    let server = Server::start(&[]);
    assert!(
        server.admin_token.starts_with("crl_"),
        "no first-start token"
    );
    let remote = |args: &[&str]| {
        run(corral()
            .args(args)
            .env("CORRAL_SERVER", &server.url)
            .env("CORRAL_TOKEN", &server.admin_token)
            .current_dir(dir))
    };
    let (code, out, err) = remote(&["run", "pipeline.toml", "--input", input, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"], json!({"greeting": "Hello, Ada!"}), "{doc:#}");
    let run_id = doc["run_id"].as_str().unwrap();
    let (code, out, err) = remote(&["runs", "show", run_id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Hello, Ada!"), "{out}");
}

fn rust_template(kind: &str) {
    let (_tmp, dir) = new_project("rust", kind);
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let sdk = root().join("sdk").canonicalize().unwrap();
    assert!(
        manifest.contains(&format!("path = {:?}", sdk.display().to_string())),
        "{manifest}"
    );
    // A target dir shared by the template tests (and kept between runs), so the SDK
    // and its dependencies compile once.
    let target = root().join("target/template-tests/rust");
    let (code, out, err) = run(Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO"));
    assert_eq!(code, 0, "{out}{err}");
    let file = target.join(format!(
        "wasm32-wasip2/release/hello_{}.wasm",
        kind.replace('-', "_")
    ));
    check_template(&file, kind);
    if kind == "agent" {
        // The project's pipeline names the component where `cargo build` in the project
        // puts it; this test built it into a shared target dir.
        let local = dir.join("target/wasm32-wasip2/release");
        std::fs::create_dir_all(&local).unwrap();
        std::fs::copy(&file, local.join("hello_agent.wasm")).unwrap();
        check_pipeline_flow(&dir);
    }
}

#[test]
fn plugin_new_rust_agent_builds_and_answers_corral_call() {
    rust_template("agent");
}

#[test]
fn plugin_new_rust_tool_builds_and_answers_corral_call() {
    rust_template("tool");
}

#[test]
fn plugin_new_rust_connector_builds_and_answers_corral_call() {
    rust_template("connector");
}

fn python_template(kind: &str) {
    let (_tmp, dir) = new_project("python", kind);
    assert!(dir.join("corral_sdk/__init__.py").is_file());
    assert!(dir.join("wit/worlds.wit").is_file());
    let tool = root().join(".venv/bin/componentize-py");
    assert!(
        tool.exists(),
        "{} is missing: run `cargo xtask build-plugins`",
        tool.display()
    );
    let world = format!("{kind}-plugin");
    let wasm = format!("hello_{kind}.wasm");
    // The README's build command, with the project venv's componentize-py.
    let (code, out, err) = run(Command::new(&tool)
        .args([
            "-d",
            "wit",
            "-w",
            &world,
            "componentize",
            "app",
            "-o",
            &wasm,
        ])
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("VIRTUAL_ENV"));
    assert_eq!(code, 0, "{out}{err}");
    check_template(&dir.join(&wasm), kind);
    if kind == "agent" {
        check_pipeline_flow(&dir);
    }
}

#[test]
fn plugin_new_python_agent_builds_and_answers_corral_call() {
    python_template("agent");
}

#[test]
fn plugin_new_python_tool_builds_and_answers_corral_call() {
    python_template("tool");
}

#[test]
fn plugin_new_python_connector_builds_and_answers_corral_call() {
    python_template("connector");
}

fn js_template(kind: &str) {
    let (_tmp, dir) = new_project("js", kind);
    assert!(dir.join("corral.js").is_file());
    let modules = root().join("sdk/js/node_modules");
    assert!(
        modules.join(".bin/componentize-js").exists(),
        "{} is missing: run `cargo xtask build-plugins`",
        modules.display()
    );
    // The template pins the same componentize-js as sdk/js/package-lock.json: link the
    // installed one instead of downloading it again, then run the README's `npm run build`.
    let pinned: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("sdk/js/package.json")).unwrap())
            .unwrap();
    let template: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).unwrap()).unwrap();
    assert_eq!(template["devDependencies"], pinned["devDependencies"]);
    std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();
    let (code, out, err) = run(Command::new("npm").args(["run", "build"]).current_dir(&dir));
    assert_eq!(code, 0, "{out}{err}");
    check_template(&dir.join(format!("hello_{kind}.wasm")), kind);
    if kind == "agent" {
        check_pipeline_flow(&dir);
    }
}

#[test]
fn plugin_new_js_agent_builds_and_answers_corral_call() {
    js_template("agent");
}

#[test]
fn plugin_new_js_tool_builds_and_answers_corral_call() {
    js_template("tool");
}

#[test]
fn plugin_new_js_connector_builds_and_answers_corral_call() {
    js_template("connector");
}

#[test]
fn plugin_new_refuses_bad_names_non_empty_dirs_and_a_missing_sdk() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["Hello", "1x", "../x", "a b"] {
        let (code, _, err) = run(corral()
            .args(["plugin", "new", bad, "--lang", "python"])
            .current_dir(tmp.path()));
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("is not a plugin name"), "{err}");
    }
    std::fs::create_dir(tmp.path().join("taken")).unwrap();
    std::fs::write(tmp.path().join("taken/keep.txt"), "mine").unwrap();
    let (code, _, err) = run(corral()
        .args(["plugin", "new", "taken", "--lang", "rust"])
        .current_dir(tmp.path()));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("taken/keep.txt")).unwrap(),
        "mine"
    );
    let (code, _, err) = run(corral()
        .args(["plugin", "new", "x", "--lang", "rust", "--sdk-path"])
        .arg(tmp.path().join("nowhere"))
        .current_dir(tmp.path()));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--sdk-path"), "{err}");
    assert!(!tmp.path().join("x").exists());
    // --sdk-path and --dir are honoured.
    let (code, out, err) = run(corral()
        .args([
            "plugin",
            "new",
            "y",
            "--lang",
            "rust",
            "--dir",
            "elsewhere/y",
            "--sdk-path",
        ])
        .arg(root().join("sdk"))
        .current_dir(tmp.path()));
    assert_eq!(code, 0, "{out}{err}");
    let manifest = std::fs::read_to_string(tmp.path().join("elsewhere/y/Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"y\""), "{manifest}");
}

#[test]
fn javascript_sdk_unit_tests_pass_under_node() {
    let (code, out, err) = run(Command::new("node")
        .args([
            "--import",
            "./test/register.mjs",
            "--test",
            "test/corral.test.mjs",
        ])
        .current_dir(root().join("sdk/js")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("# fail 0"), "{out}");
}
