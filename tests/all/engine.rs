//! Loading, checking and calling components: the happy path and malformed input (MAL, SBX-12).

use crate::util::*;
use corral::capabilities::log::{GuestEvent, Level, Source};
use corral::engine::{Call, ErrorCode, Invocation, Output, World};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn echo_returns_its_input_and_reports_progress_live() {
    let engine = engine();
    let plugin = load(&engine, "echo").await;
    assert_eq!(plugin.world, World::Agent);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let how = Invocation {
        limits: limits(),
        observer: Some(Arc::new(move |e| sink.lock().unwrap().push(e))),
        ..Invocation::default()
    };
    let input = r#"{"text":"hello","n":[1,2,3],"nested":{"ok":true}}"#;
    let outcome = engine.invoke(&plugin, run_call(input), how).await;
    assert_eq!(
        json_output(&outcome),
        serde_json::from_str::<serde_json::Value>(input).unwrap()
    );
    assert!(outcome.fuel_used > 0);
    let events = seen.lock().unwrap().clone();
    assert!(
        events.contains(&GuestEvent::Progress {
            percent: 100,
            label: "done".into()
        }),
        "{events:?}"
    );
    assert!(
        outcome.logs.iter().any(|l| l.level == Level::Info
            && l.source == Source::Log
            && l.message.contains("step test-step attempt 1")),
        "{:?}",
        outcome.logs
    );
}

#[tokio::test]
async fn describe_returns_the_agents_info() {
    let engine = engine();
    let plugin = load(&engine, "echo").await;
    let outcome = engine
        .invoke(&plugin, Call::Describe, Invocation::default())
        .await;
    match outcome.result {
        Ok(Output::AgentInfo(info)) => {
            assert_eq!(info.name, "echo");
            assert!(!info.version.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn loading_the_same_bytes_twice_reuses_the_loaded_plugin() {
    let engine = engine();
    let bytes = std::fs::read(plugin_path("echo")).unwrap();
    let a = engine.load(bytes.clone()).await.unwrap();
    let b = engine.load(bytes).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(a.digest.starts_with("sha256:") && a.digest.len() == 7 + 64);
}

/// Engine settings with a compiled-code cache in `cache` and scratch under `dir`.
fn cached_config(cache: &std::path::Path, dir: &std::path::Path) -> corral::engine::EngineConfig {
    corral::engine::EngineConfig {
        cache_dir: Some(cache.to_path_buf()),
        scratch_root: dir.join("scratch"),
        max_concurrent: 4,
        ..Default::default()
    }
}

#[tokio::test]
async fn compiled_code_cache_survives_a_new_engine_and_ignores_tampered_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = || cached_config(&cache, dir.path());
    let bytes = std::fs::read(plugin_path("echo")).unwrap();
    let first = corral::engine::Engine::new(config()).unwrap();
    first.load(bytes.clone()).await.unwrap();
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1);

    // Flip a byte of the compiled code: the HMAC no longer verifies, so the entry is
    // ignored and the component is compiled again rather than deserialized.
    let mut code = std::fs::read(&entries[0]).unwrap();
    let last = code.len() - 1;
    code[last] ^= 0xff;
    std::fs::write(&entries[0], &code).unwrap();
    let second = corral::engine::Engine::new(config()).unwrap();
    let plugin = second.load(bytes).await.unwrap();
    let out = second
        .invoke(&plugin, run_call("[1]"), Invocation::default())
        .await;
    assert_eq!(json_output(&out), serde_json::json!([1]));
    let rewritten = std::fs::read(&entries[0]).unwrap();
    assert_ne!(
        rewritten, code,
        "the tampered entry was replaced by a fresh compile"
    );
}

#[tokio::test]
async fn a_new_engine_loads_an_unchanged_plugin_file_from_the_cache_without_reading_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = || cached_config(&cache, dir.path());
    let file = dir.path().join("echo.wasm");
    std::fs::copy(plugin_path("echo"), &file).unwrap();
    let first = corral::engine::Engine::new(config()).unwrap();
    let digest = first.load_file(&file).await.unwrap().digest.clone();
    assert_eq!(first.compile_count(), 1);

    let second = corral::engine::Engine::new(config()).unwrap();
    let plugin = second.load_file(&file).await.unwrap();
    assert_eq!(second.compile_count(), 0, "served by the compiled cache");
    assert_eq!(plugin.digest, digest);
    let out = second
        .invoke(&plugin, run_call("[2]"), Invocation::default())
        .await;
    assert_eq!(json_output(&out), serde_json::json!([2]));

    // The file changes under the same name, its modification time set back: its
    // status-change time still moves, so the new bytes are read and hashed.
    let other = std::fs::read(plugin_path("panicker")).unwrap();
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::fs::write(&file, &other).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(before)
        .unwrap();
    let third = corral::engine::Engine::new(config()).unwrap();
    let changed = third.load_file(&file).await.unwrap();
    assert_ne!(changed.digest, digest);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_named_as_a_plugin_file_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("plugin.wasm");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        return;
    }
    let engine = engine();
    let path = fifo.clone();
    let load = tokio::spawn(async move { engine.load_file(&path).await.err() });
    let failure = match tokio::time::timeout(std::time::Duration::from_secs(10), load).await {
        Ok(joined) => joined.unwrap().expect("a FIFO is not a plugin"),
        Err(_) => {
            // Let the waiting open go before failing, or the runtime never stops.
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
            panic!("the load waited for a writer of the FIFO");
        }
    };
    assert!(failure.message.contains("is not a file"), "{failure}");
}

#[tokio::test]
async fn cached_code_edited_in_place_with_its_times_set_back_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = || cached_config(&cache, dir.path());
    let bytes = std::fs::read(plugin_path("echo")).unwrap();
    corral::engine::Engine::new(config())
        .unwrap()
        .load(bytes.clone())
        .await
        .unwrap();
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    // Same size, one byte flipped, modification time restored: only the status-change
    // time (which no unprivileged process can set) tells, and the full check catches it.
    let mut code = std::fs::read(&entry).unwrap();
    let last = code.len() - 1;
    code[last] ^= 0xff;
    let modified = std::fs::metadata(&entry).unwrap().modified().unwrap();
    std::fs::write(&entry, &code).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&entry)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let second = corral::engine::Engine::new(config()).unwrap();
    let plugin = second.load(bytes).await.unwrap();
    assert_eq!(
        second.compile_count(),
        1,
        "compiled again, not deserialized"
    );
    let out = second
        .invoke(&plugin, run_call("[1]"), Invocation::default())
        .await;
    assert_eq!(json_output(&out), serde_json::json!([1]));
}

#[tokio::test]
async fn res_12_json_nested_deeper_than_128_is_invalid_input() {
    let engine = engine();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let outcome = run_agent(&engine, "echo", &deep, limits()).await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::InvalidInput);
    assert!(f.message.contains("deeper than 128"), "{}", f.message);
    assert_eq!(outcome.fuel_used, 0, "bad input never reaches the guest");
}

#[tokio::test]
async fn mal_08_output_that_is_not_json_or_nests_too_deep_is_invalid_input() {
    // wit/types.wit: output that fails the JSON boundary check fails the invocation with
    // INVALID_INPUT (OUTPUT_TOO_LARGE for size); PLUGIN_ERROR is the plugin's own error.
    let engine = engine();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for (text, expect) in [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        (deep.as_str(), "deeper than 128"),
    ] {
        let input = serde_json::json!({"mode": "raw", "text": text}).to_string();
        let outcome = run_agent(&engine, "huge_output", &input, limits()).await;
        let f = outcome.result.unwrap_err();
        assert_eq!(f.code, ErrorCode::InvalidInput, "{text:.20}: {}", f.message);
        assert!(f.message.contains(expect), "{}", f.message);
        assert!(
            f.message.contains("output"),
            "names the output: {}",
            f.message
        );
    }
    // Valid JSON passes through unchanged.
    let input = serde_json::json!({"mode": "raw", "text": "[1,2]"}).to_string();
    let outcome = run_agent(&engine, "huge_output", &input, limits()).await;
    assert_eq!(json_output(&outcome), serde_json::json!([1, 2]));
}

#[tokio::test]
async fn input_that_is_not_json_is_invalid_input_before_the_guest_runs() {
    let engine = engine();
    let outcome = run_agent(&engine, "echo", "{not json", limits()).await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::InvalidInput);
    assert_eq!(outcome.fuel_used, 0);
}

#[tokio::test]
async fn calling_a_tool_export_on_an_agent_is_refused() {
    let engine = engine();
    let plugin = load(&engine, "echo").await;
    let outcome = engine
        .invoke(&plugin, Call::ListTools, Invocation::default())
        .await;
    let f = outcome.result.unwrap_err();
    assert_eq!(f.code, ErrorCode::InvalidInput);
    assert!(f.message.contains("agent-plugin"), "{}", f.message);
}

async fn load_err(bytes: Vec<u8>) -> corral::engine::Failure {
    engine().load(bytes).await.expect_err("load must fail")
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap()
}

#[tokio::test]
async fn mal_01_every_truncation_of_a_real_component_is_invalid_component() {
    let bytes = std::fs::read(plugin_path("echo")).unwrap();
    let engine = engine();
    // Every cut offset, spread over the cores; none may panic. A cut either fails with
    // INVALID_COMPONENT or, when it only drops trailing custom sections (names,
    // producers), leaves a component that still loads and works.
    let mut tasks = Vec::new();
    let workers = 4;
    for w in 0..workers {
        let (engine, bytes) = (engine.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            let (mut cut, mut valid) = (w, Vec::new());
            while cut < bytes.len() {
                match engine.load(bytes[..cut].to_vec()).await {
                    Err(f) => assert_eq!(f.code, ErrorCode::InvalidComponent, "cut at {cut}: {f}"),
                    Ok(plugin) => {
                        let out = engine
                            .invoke(&plugin, run_call("[7]"), Invocation::default())
                            .await;
                        assert_eq!(json_output(&out), serde_json::json!([7]), "cut at {cut}");
                        valid.push(cut);
                    }
                }
                cut += workers;
            }
            valid
        }));
    }
    let mut valid = Vec::new();
    for t in tasks {
        valid.extend(t.await.unwrap());
    }
    // Only cuts near the end (inside the trailing custom sections) can be valid.
    assert!(valid.len() < 64, "{} truncations loaded", valid.len());
    assert_echo_still_works(&engine).await;
}

#[tokio::test]
async fn mal_01_garbage_bytes_are_invalid_component() {
    for bytes in [
        vec![],
        b"\0asm".to_vec(),
        vec![0xff; 1000],
        b"\0asm\x0d\0\x01\0garbage".to_vec(),
    ] {
        let f = load_err(bytes).await;
        assert_eq!(f.code, ErrorCode::InvalidComponent);
    }
}

#[tokio::test]
async fn mal_02_a_core_module_is_rejected_at_load() {
    let f = load_err(wat("(module (func (export \"run\")))")).await;
    assert_eq!(f.code, ErrorCode::InvalidComponent);
    assert!(
        f.message.contains("core WebAssembly module"),
        "{}",
        f.message
    );
}

#[tokio::test]
async fn mal_02_a_component_of_no_known_world_is_rejected_at_load() {
    let f = load_err(wat("(component)")).await;
    assert_eq!(f.code, ErrorCode::InvalidComponent);
    assert!(f.message.contains("exports none of"), "{}", f.message);

    let other = wat(r#"(component (instance $i) (export "acme:thing/api@1.0.0" (instance $i)))"#);
    let f = load_err(other).await;
    assert!(f.message.contains("acme:thing/api@1.0.0"), "{}", f.message);
}

#[tokio::test]
async fn mal_02_a_component_missing_an_export_of_its_world_is_rejected_at_load() {
    let empty_agent =
        wat(r#"(component (instance $i) (export "corral:plugin/agent@0.1.0" (instance $i)))"#);
    let f = load_err(empty_agent).await;
    assert_eq!(f.code, ErrorCode::InvalidComponent);
    assert!(
        f.message
            .contains("does not implement the agent-plugin world"),
        "{}",
        f.message
    );
}

#[tokio::test]
async fn sbx_12_an_import_the_host_does_not_provide_is_rejected_naming_it() {
    for name in [
        "evil:escape/door@1.0.0",
        "wasi:http/outgoing-handler@0.3.0",
        "wasi:keyvalue/store@0.2.0",
        "corral:plugin/host@9.0.0",
    ] {
        let f = load_err(wat(&format!(r#"(component (import "{name}" (instance)))"#))).await;
        assert_eq!(f.code, ErrorCode::InvalidComponent);
        assert!(
            f.message.contains(&format!("imports `{name}`")),
            "{}",
            f.message
        );
    }
}

#[tokio::test]
async fn mal_03_components_using_disabled_proposals_are_rejected_at_load() {
    let cases = [
        ("threads", "(component (core module (memory 1 1 shared)))"),
        ("memory64", "(component (core module (memory i64 1)))"),
        ("gc", "(component (core module (type (struct))))"),
        ("exceptions", "(component (core module (tag)))"),
    ];
    for (proposal, text) in cases {
        let f = load_err(wat(text)).await;
        assert_eq!(f.code, ErrorCode::InvalidComponent, "{proposal}: {f}");
    }
}

#[tokio::test]
async fn an_invocation_can_be_cancelled_from_outside_promptly() {
    let engine = engine();
    let plugin = load(&engine, "spin_loop").await;
    let how = Invocation {
        limits: corral::engine::Limits {
            fuel: None,
            timeout: Duration::from_secs(120),
            ..limits()
        },
        ..Invocation::default()
    };
    let cancel = how.cancel.clone();
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let outcome = engine.invoke(&plugin, run_call("{}"), how).await;
    assert_eq!(outcome.result.unwrap_err().code, ErrorCode::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_echo_still_works(&engine).await;
}

/// An engine of its own, with no compiled-code cache: every load that is not in its
/// memory compiles, so its compile count tells what was compiled.
fn uncached_engine(scratch: &std::path::Path, compile_timeout: Duration) -> corral::engine::Engine {
    corral::engine::Engine::new(corral::engine::EngineConfig {
        cache_dir: None,
        scratch_root: scratch.to_path_buf(),
        max_concurrent: 4,
        compile_timeout,
        ..corral::engine::EngineConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn res_19_an_unknown_import_or_world_is_refused_before_compiling() {
    let scratch = tempfile::tempdir().unwrap();
    let engine = uncached_engine(scratch.path(), Duration::from_secs(120));
    // An agent in every other way, with one import the host lacks; and a big core
    // module inside it, so that compiling it would take real work.
    let mut body = String::new();
    for i in 0..2_000 {
        body.push_str(&format!(
            "(func (export \"f{i}\") (param i32) (result i32) local.get 0 i32.const {i} i32.add)"
        ));
    }
    let text = format!(
        r#"(component
             (import "evil:escape/door@1.0.0" (instance))
             (core module {body})
             (instance $i)
             (export "corral:plugin/agent@0.1.0" (instance $i)))"#
    );
    let f = engine.load(wat(&text)).await.unwrap_err();
    assert_eq!(f.code, ErrorCode::InvalidComponent, "{f}");
    assert!(
        f.message.contains("imports `evil:escape/door@1.0.0`"),
        "{f}"
    );
    let f = engine
        .load(wat(&format!("(component (core module {body}))")))
        .await
        .unwrap_err();
    assert!(f.message.contains("exports none of"), "{f}");
    assert_eq!(engine.compile_count(), 0, "nothing was compiled");

    // A real plugin compiles once; loading it again is a cache hit.
    let echo = std::fs::read(plugin_path("echo")).unwrap();
    engine.load(echo.clone()).await.unwrap();
    engine.load(echo).await.unwrap();
    assert_eq!(engine.compile_count(), 1);
}

#[tokio::test]
async fn res_19_a_compile_past_its_time_limit_is_answered_and_its_slot_comes_back() {
    let scratch = tempfile::tempdir().unwrap();
    // No real compile finishes in a millisecond.
    let engine = uncached_engine(scratch.path(), Duration::from_millis(1));
    let bytes = std::fs::read(plugin_path("text_tools")).unwrap();
    let f = engine.load_as(bytes.clone(), "acme").await.unwrap_err();
    assert_eq!(f.code, ErrorCode::CompileTimeout, "{f}");
    assert_eq!(f.code.as_str(), "COMPILE_TIMEOUT");
    // The compile goes on in the background, holding its slot until it ends.
    let mut running = usize::MAX;
    for _ in 0..600 {
        running = engine.compile_slots().running();
        if running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running, 0, "the slot came back");
    assert_eq!(engine.compile_slots().waiting(), 0);
    // Its result was kept: the same bytes now load at once, without compiling again.
    let plugin = engine.load_as(bytes, "acme").await.unwrap();
    assert_eq!(plugin.world, corral::engine::World::Tool);
    assert_eq!(engine.compile_count(), 1);
}
