//! `corral-bench`: Corral's costs side by side with bare wasmtime (and, for its run
//! layer, with raw sqlx and a plain SSE server), as ratios measured in one process run
//! (run it with `cargo xtask bench [--quick]`).
//!
//! ```text
//! corral-bench [--quick] [--only NAME[,NAME..]] [--plugins DIR] [--out FILE]
//!              [--scratch-root DIR]
//! ```
//!
//! The run-layer metrics (persistence, runs, streaming) use SQLite in a fresh temporary
//! directory, and Postgres in a fresh schema (dropped afterwards) when
//! `CORRAL_TEST_POSTGRES_URL` is set (e.g. `postgres://postgres@127.0.0.1:5432/test`);
//! without it their Postgres rows are skipped with a note.
//!
//! `--scratch-root` is where Corral's per-call scratch directories go; by default a
//! temporary directory under the system temp dir, the filesystem of Corral's own
//! default (`EngineConfig::scratch_root`).
//!
//! Profiling one side alone: `CORRAL_BENCH_SOLO=0` runs only Corral (contender 0) in
//! every comparison, `CORRAL_BENCH_SOLO=1` only the (first) baseline; run it under
//! `perf record` or `valgrind --tool=callgrind`, with `--only METRIC`.
//!
//! Prints a table and writes `target/bench/results.json`: the environment, and one
//! object per metric with `name`, `unit`, `corral`, `baseline`, `ratio` (above 1:
//! Corral is slower) and `params`. Exits non-zero if any metric has no number; it never
//! fails because something is slow.

mod bare;
mod db;
mod harness;
mod metrics;
mod raw;

use anyhow::Context as _;
use corral::engine::{Engine, EngineConfig};
use harness::Row;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The wasmtime this binary was built with, from the workspace's Cargo.lock (compiled
/// in, so a results file can never name another version than the one measured).
fn wasmtime_version() -> Option<String> {
    let lock = include_str!("../../Cargo.lock");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasmtime\"" {
            return lines
                .next()
                .and_then(|v| v.strip_prefix("version = \""))
                .map(|v| v.trim_end_matches('"').to_string());
        }
    }
    None
}

/// What every metric gets.
pub struct Ctx {
    /// `--quick`: fewer rounds and smaller workloads, for CI.
    pub quick: bool,
    /// Where the built plugins are (target/plugins).
    pub plugins: PathBuf,
    /// Compiled caches kept between runs (target/bench/cache).
    pub cache: PathBuf,
    /// Where Corral's per-call scratch directories go (`EngineConfig::scratch_root`).
    pub scratch_root: PathBuf,
    /// The engine settings Corral and the bare baseline share (Corral's defaults).
    pub config: EngineConfig,
    /// `CORRAL_TEST_POSTGRES_URL`: the Postgres server for the run-layer metrics, if any.
    pub postgres: Option<String>,
    /// Temporary files of this run (databases), removed at exit.
    pub work: PathBuf,
}

impl Ctx {
    /// `quick` in quick mode, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }

    /// A built plugin, e.g. `echo` for target/plugins/echo.wasm.
    pub fn plugin(&self, name: &str) -> PathBuf {
        self.plugins.join(format!("{name}.wasm"))
    }

    /// A built plugin's bytes.
    pub fn plugin_bytes(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.plugin(name);
        std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (build the plugins first: `cargo xtask build-plugins`)",
                path.display()
            )
        })
    }

    /// A new Corral engine with the shared settings.
    pub fn corral(&self, cache_dir: Option<PathBuf>) -> anyhow::Result<Engine> {
        self.corral_in(cache_dir, self.scratch_root.clone())
    }

    /// A new Corral engine with the shared settings and its own scratch root.
    pub fn corral_in(
        &self,
        cache_dir: Option<PathBuf>,
        scratch_root: PathBuf,
    ) -> anyhow::Result<Engine> {
        Engine::new(EngineConfig {
            cache_dir,
            scratch_root,
            ..self.config.clone()
        })
    }
}

struct Args {
    quick: bool,
    only: Option<Vec<String>>,
    plugins: PathBuf,
    out: PathBuf,
    scratch_root: Option<PathBuf>,
    /// Internal: `--stream-probe KIND` serves one SSE stream for the streaming metric's
    /// memory probe (see `metrics::streaming`).
    probe: Option<String>,
}

fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn parse_args() -> Result<Args, String> {
    let root = root();
    let mut args = Args {
        quick: false,
        only: None,
        plugins: root.join("target/plugins"),
        out: root.join("target/bench/results.json"),
        scratch_root: None,
        probe: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--quick" => args.quick = true,
            // `cargo xtask bench -- ARGS` passes the separator on: ignore it.
            "--" => {}
            "--only" => {
                args.only = Some(
                    value("--only")?
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .collect(),
                );
            }
            "--plugins" => args.plugins = PathBuf::from(value("--plugins")?),
            "--out" => args.out = PathBuf::from(value("--out")?),
            "--scratch-root" => args.scratch_root = Some(PathBuf::from(value("--scratch-root")?)),
            "--stream-probe" => args.probe = Some(value("--stream-probe")?),
            "-h" | "--help" => {
                return Err(String::new());
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

const USAGE: &str = "usage: corral-bench [--quick] [--only NAME[,NAME..]] [--plugins DIR] [--out FILE] [--scratch-root DIR]";

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            let names: Vec<&str> = metrics::ALL.iter().map(|m| m.name).collect();
            eprintln!("{USAGE}\nmetrics: {}", names.join(", "));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(kind) = &args.probe {
        return match runtime.block_on(metrics::streaming::probe(kind)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: stream probe: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the metrics; `Ok(false)` when some metric has no number.
async fn run(args: Args) -> anyhow::Result<bool> {
    if let Some(only) = &args.only {
        for name in only {
            anyhow::ensure!(
                metrics::ALL.iter().any(|m| m.name == name),
                "no metric `{name}`"
            );
        }
    }
    let cache = args
        .out
        .parent()
        .map_or_else(|| root().join("target/bench"), Path::to_path_buf)
        .join("cache");
    std::fs::create_dir_all(&cache)?;
    // Removed at exit, with everything Corral's engines left in it.
    let work = match &args.scratch_root {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::Builder::new()
                .prefix("corral-bench-")
                .tempdir_in(dir)?
        }
        None => tempfile::Builder::new().prefix("corral-bench-").tempdir()?,
    };
    let ctx = Ctx {
        quick: args.quick,
        plugins: args.plugins,
        cache,
        scratch_root: work.path().join("scratch"),
        config: EngineConfig::default(),
        postgres: std::env::var(db::POSTGRES_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty()),
        work: work.path().to_path_buf(),
    };
    let mode = if ctx.quick { "quick" } else { "full" };
    eprintln!(
        "corral-bench: {mode} mode, plugins from {}",
        ctx.plugins.display()
    );
    match &ctx.postgres {
        Some(url) => eprintln!(
            "corral-bench: Postgres at {}",
            corral::store::redact_url(url)
        ),
        None => eprintln!(
            "corral-bench: note: {} is not set, so the Postgres rows of persistence and runs are skipped",
            db::POSTGRES_ENV
        ),
    }

    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut timings = serde_json::Map::new();
    for metric in metrics::ALL {
        if let Some(only) = &args.only
            && !only.iter().any(|n| n == metric.name)
        {
            continue;
        }
        eprintln!("== {}", metric.name);
        let t = Instant::now();
        let result = (metric.run)(&ctx).await;
        timings.insert(metric.name.into(), json!(t.elapsed().as_secs_f64()));
        let promised: Vec<String> = metric
            .rows
            .iter()
            .map(|r| r.to_string())
            .chain((metric.more_rows)(&ctx))
            .collect();
        match result {
            Ok(mut got) => {
                for name in &promised {
                    if !got.iter().any(|r| &r.name == name) {
                        got.push(Row::missing(name, "the metric did not report this row"));
                    }
                }
                for row in &got {
                    eprintln!("   {}", one_line(row));
                }
                rows.extend(got);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                eprintln!("   FAILED: {msg}");
                rows.extend(promised.iter().map(|name| Row::missing(name, &msg)));
            }
        }
    }
    let elapsed = started.elapsed();

    let complete = rows.iter().all(Row::complete);
    let report = json!({
        "mode": mode,
        "date": today(),
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok(),
        "elapsed_s": elapsed.as_secs_f64(),
        "metric_elapsed_s": timings,
        "environment": environment(&ctx.scratch_root),
        "ratio": "corral / baseline for costs (us, ms), baseline / corral for rates (per_s): above 1 means Corral is slower",
        "metrics": rows,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;

    println!();
    println!("{}", table(&rows));
    println!(
        "{mode} mode, {:.0} s; ratio above 1 means Corral is slower; results in {}",
        elapsed.as_secs_f64(),
        args.out.display()
    );
    if !complete {
        let missing: Vec<&str> = rows
            .iter()
            .filter(|r| !r.complete())
            .map(|r| r.name.as_str())
            .collect();
        eprintln!("error: no number for: {}", missing.join(", "));
    }
    Ok(complete)
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 1000.0 => format!("{v:.0}"),
        Some(v) if v >= 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |r| format!("{r:.2}x"))
}

fn one_line(row: &Row) -> String {
    format!(
        "{}: corral {} {}, baseline {} {}, ratio {}",
        row.name,
        fmt_value(row.corral),
        row.unit.label(),
        fmt_value(row.baseline),
        row.unit.label(),
        fmt_ratio(row.ratio)
    )
}

/// The table, as Markdown (readable on a terminal, pasteable into BENCHMARKS.md).
fn table(rows: &[Row]) -> String {
    let mut lines = vec![
        "| metric | unit | corral | baseline | ratio |".to_string(),
        "|---|---|---:|---:|---:|".to_string(),
    ];
    for r in rows {
        lines.push(format!(
            "| {} | {} | {} | {} | {} |",
            r.name,
            r.unit.label(),
            fmt_value(r.corral),
            fmt_value(r.baseline),
            fmt_ratio(r.ratio)
        ));
    }
    lines.join("\n")
}

/// The machine and versions the numbers come from.
fn environment(scratch_root: &Path) -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string());
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu": cpu,
        "memory_gib": mem_kib.map(|k| ((k as f64 / (1u64 << 20) as f64) * 10.0).round() / 10.0),
        "os": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| format!("{} {}", std::env::consts::OS, s.trim())),
        "arch": std::env::consts::ARCH,
        "wasmtime": wasmtime_version(),
        "corral": env!("CARGO_PKG_VERSION"),
        "rustc": command_output("rustc", &["--version"]),
        "git": command_output("git", &["describe", "--always", "--dirty"]),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "scratch_root": scratch_root,
        "scratch_mount": mount_of(scratch_root),
    })
}

/// The filesystem type and mount options of the mount holding `path` (per-call scratch
/// directories cost very different amounts on tmpfs and on ext4 mounted with
/// `discard`).
fn mount_of(path: &Path) -> Option<String> {
    let path = path
        .ancestors()
        .find_map(|p| std::fs::canonicalize(p).ok())?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, dir, fs, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            path.starts_with(dir)
                .then(|| (dir.len(), format!("{dir} {fs} {opts}")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, m)| m)
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .current_dir(root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Today's UTC date as YYYY-MM-DD (civil-from-days, no date crate needed).
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
