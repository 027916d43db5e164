//! Metric 4, cold start: what it costs before the first call.
//!
//! - `cold_compile`: a fresh engine loads `echo` from its bytes with no compiled cache
//!   (Corral: digest, compile, import and export checks, pre-instantiation) against
//!   bare wasmtime compiling and pre-instantiating the same bytes.
//! - `cold_cached`: a fresh engine loads `echo`'s file from Corral's compiled cache (the
//!   file's digest record, the entry's identity tag, a lazy map of the compiled code,
//!   checks, pre-instantiation) against bare wasmtime
//!   deserialising its own precompiled file (`Component::deserialize_file`) and
//!   pre-instantiating it.
//! - `cold_startup`: a process's start-up with N plugins: a new engine, then every
//!   plugin in target/plugins loaded from the compiled cache, against a new bare engine
//!   and linker deserialising the same N precompiled files.
//!
//! Compiled caches live in target/bench/cache, so only the first run compiles them.

use super::{Metric, Rows};
use crate::Ctx;
use crate::bare::{Bare, Interruption, Wt};
use crate::harness::{Plan, Row, Unit, side_by_side};
use serde_json::json;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;
use wasmtime::component::Component;

/// The metric.
pub const METRIC: Metric = Metric {
    name: "cold_start",
    rows: &["cold_compile", "cold_cached", "cold_startup"],
    more_rows: super::no_more_rows,
    run: run_boxed,
};

fn run_boxed(ctx: &Ctx) -> Rows<'_> {
    Box::pin(run(ctx))
}

const PLUGIN: &str = "echo";

/// Quick mode leaves out plugins bigger than this from `cold_startup` (a Python
/// component is ~18 MB and takes about a minute to compile the first time).
const QUICK_MAX_PLUGIN_BYTES: u64 = 4 << 20;

async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let corral_cache = ctx.cache.join("corral");
    let bare_cache = ctx.cache.join("bare");
    std::fs::create_dir_all(&bare_cache)?;
    let echo = ctx.plugin(PLUGIN);
    let bytes = ctx.plugin_bytes(PLUGIN)?;

    // Every plugin of the start-up set, in both compiled caches.
    let startup = startup_set(ctx)?;
    let (startup_bytes, bare_files) = prime(ctx, &corral_cache, &bare_cache, &startup).await?;
    let echo_file = bare_files
        .iter()
        .zip(&startup)
        .find(|(_, p)| **p == echo)
        .map(|(f, _)| f.clone());
    let echo_file = match echo_file {
        Some(f) => f,
        None => prime(ctx, &corral_cache, &bare_cache, std::slice::from_ref(&echo))
            .await?
            .1
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no precompiled echo"))?,
    };

    let mut rows = Vec::new();

    // Compile from bytes: a fresh engine each time, so nothing is cached in memory.
    let plan = ctx.pick(Plan::new(3, 1, 0), Plan::new(10, 1, 1));
    let s = side_by_side(2, plan, async |i| {
        Ok(if i == 0 {
            let engine = ctx.corral(None)?;
            let b = bytes.clone();
            let t = Instant::now();
            engine.load(b).await?;
            t.elapsed()
        } else {
            let bare = Bare::new(&ctx.config, Interruption::CORRAL)?;
            let t = Instant::now();
            bare.load_agent(&bytes)?;
            t.elapsed()
        })
    })
    .await?;
    if let [corral, baseline] = s.as_slice() {
        rows.push(Row::cost(
            "cold_compile",
            Unit::Millis,
            corral.median(),
            baseline.median(),
            json!({
                "plugin": PLUGIN,
                "component_bytes": bytes.len(),
                "rounds": plan.rounds,
                "warmup": plan.warmup,
                "corral": "fresh Engine (no cache_dir), Engine::load(bytes)",
                "baseline": "fresh bare engine, Component::from_binary + instantiate_pre + AgentPluginPre::new",
            }),
        ));
    }

    // Load from the compiled cache: a fresh engine each time.
    let plan = ctx.pick(Plan::new(10, 1, 1), Plan::new(60, 1, 3));
    let s = side_by_side(2, plan, async |i| {
        Ok(if i == 0 {
            let engine = ctx.corral(Some(corral_cache.clone()))?;
            let t = Instant::now();
            engine.load_file(&echo).await?;
            t.elapsed()
        } else {
            let bare = Bare::new(&ctx.config, Interruption::CORRAL)?;
            let t = Instant::now();
            let component = deserialize(&bare, &echo_file)?;
            bare.agent(&component)?;
            t.elapsed()
        })
    })
    .await?;
    if let [corral, baseline] = s.as_slice() {
        rows.push(Row::cost(
            "cold_cached",
            Unit::Millis,
            corral.median(),
            baseline.median(),
            json!({
                "plugin": PLUGIN,
                "component_bytes": bytes.len(),
                "compiled_bytes": std::fs::metadata(&echo_file).map(|m| m.len()).ok(),
                "rounds": plan.rounds,
                "warmup": plan.warmup,
                "corral": "fresh Engine (warm cache_dir), Engine::load_file of a plugin file loaded before (by an earlier engine)",
                "baseline": "fresh bare engine, Component::deserialize_file + instantiate_pre + AgentPluginPre::new",
            }),
        ));
    }

    // Start-up with N plugins: engine creation included on both sides.
    let plan = ctx.pick(Plan::new(4, 1, 1), Plan::new(20, 1, 1));
    let s = side_by_side(2, plan, async |i| {
        Ok(if i == 0 {
            let t = Instant::now();
            let engine = ctx.corral(Some(corral_cache.clone()))?;
            for path in &startup {
                engine.load_file(path).await?;
            }
            t.elapsed()
        } else {
            let t = Instant::now();
            let bare = Bare::new(&ctx.config, Interruption::CORRAL)?;
            for file in &bare_files {
                bare.pre(&deserialize(&bare, file)?)?;
            }
            t.elapsed()
        })
    })
    .await?;
    if let [corral, baseline] = s.as_slice() {
        let names: Vec<String> = startup
            .iter()
            .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(String::from))
            .collect();
        rows.push(Row::cost(
            "cold_startup",
            Unit::Millis,
            corral.median(),
            baseline.median(),
            json!({
                "n": startup.len(),
                "plugins": names,
                "component_bytes_total": startup_bytes,
                "rounds": plan.rounds,
                "warmup": plan.warmup,
                "quick_max_plugin_bytes": ctx.quick.then_some(QUICK_MAX_PLUGIN_BYTES),
                "corral": "Engine::new (warm cache_dir) + Engine::load_file for each plugin",
                "baseline": "bare engine + linker, Component::deserialize_file + instantiate_pre for each",
            }),
        ));
    }
    Ok(rows)
}

/// The `.wasm` files of target/plugins, by name (quick mode: the small ones), that are
/// built against the current contract: the bare baseline links `corral:plugin@0.2.0`
/// only, so a 0.1.0 component (the compatibility fixture `echo_v0_1`) is left out of both
/// sides. Its import names are plain strings in the binary.
fn startup_set(ctx: &Ctx) -> anyhow::Result<Vec<PathBuf>> {
    const OLD_CONTRACT: &[u8] = b"corral:plugin/host@0.1.0";
    let mut set = Vec::new();
    for entry in std::fs::read_dir(&ctx.plugins)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let len = std::fs::metadata(&path)?.len();
            if ctx.quick && len > QUICK_MAX_PLUGIN_BYTES {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            if bytes.windows(OLD_CONTRACT.len()).any(|w| w == OLD_CONTRACT) {
                continue;
            }
            set.push(path);
        }
    }
    set.sort();
    anyhow::ensure!(!set.is_empty(), "no plugins in {}", ctx.plugins.display());
    Ok(set)
}

/// Puts every plugin in Corral's compiled cache (by loading it once) and in the bare
/// one; returns the plugins' total size and the bare precompiled files.
async fn prime(
    ctx: &Ctx,
    corral_cache: &Path,
    bare_cache: &Path,
    plugins: &[PathBuf],
) -> anyhow::Result<(u64, Vec<PathBuf>)> {
    let engine = ctx.corral(Some(corral_cache.to_path_buf()))?;
    let bare = Bare::new(&ctx.config, Interruption::CORRAL)?;
    let mut total = 0;
    let mut files = Vec::new();
    for path in plugins {
        engine
            .load_file(path)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let bytes = std::fs::read(path)?;
        total += bytes.len() as u64;
        files.push(bare_artifact(&bare, bare_cache, path, &bytes)?);
    }
    Ok((total, files))
}

/// The bare precompiled file for `bytes`, compiled and written if missing or stale.
fn bare_artifact(bare: &Bare, dir: &Path, path: &Path, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    bare.engine
        .precompile_compatibility_hash()
        .hash(&mut hasher);
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let file = dir.join(format!("{stem}-{:016x}.cwasm", hasher.finish()));
    if file.exists() && deserialize(bare, &file).is_ok() {
        return Ok(file);
    }
    let code = bare.compile(bytes)?.serialize().wt("serializing")?;
    let tmp = dir.join(format!(".{stem}.tmp"));
    std::fs::write(&tmp, code)?;
    std::fs::rename(&tmp, &file)?;
    Ok(file)
}

#[allow(unsafe_code)]
fn deserialize(bare: &Bare, file: &Path) -> anyhow::Result<Component> {
    // SAFETY: `file` was written by `bare_artifact` from `Component::serialize` of a
    // component this benchmark compiled itself, in target/bench/cache; wasmtime also
    // checks that the engine settings embedded in it match.
    unsafe { Component::deserialize_file(&bare.engine, file) }.wt("deserializing")
}
