//! The DBOS peer: `bench/peers/dbos_noop.py` in a venv the bench makes once
//! (`target/bench/dbos-venv`, `pip install -r bench/peers/requirements.txt` from PyPI),
//! kept running for the whole Postgres part of the metric and fed one batch at a time
//! over its stdin, so its batches alternate with Corral's in the same rounds.
//!
//! DBOS gets a fresh database of its own on the bench's Postgres server (a unique name;
//! DBOS creates it on launch, with its system tables), dropped when the peer stops.
//! Nothing here needs the network unless the venv is missing or stale (then PyPI, once);
//! quick mode, `CORRAL_BENCH_PEERS=0`, no `python3` and an unreachable PyPI skip the peer
//! with a note.

use super::Took;
use crate::Ctx;
use crate::raw;
use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// `CORRAL_BENCH_PEERS=0` skips the peer (no venv, no Python).
const PEERS_ENV: &str = "CORRAL_BENCH_PEERS";

/// The script's environment variable naming DBOS's system database.
const URL_ENV: &str = "CORRAL_BENCH_DBOS_URL";

/// A copy of the requirements the venv was made from, inside the venv.
const MARKER: &str = "corral-bench-requirements.txt";

/// How long DBOS may take to launch, and one batch to run.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(120);
const BATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// The peer's state for the metric.
pub enum Peer {
    /// Not on this database (DBOS runs on Postgres).
    NoPostgres,
    /// Not measured, and why (no row).
    Skipped(String),
    /// Could not start, and why (its rows report no number).
    Failed(String),
    /// Launched and waiting for batches.
    Ready(Box<Dbos>),
}

impl Peer {
    /// Makes or reuses the venv and launches DBOS on a fresh database on `server`.
    pub async fn start(ctx: &Ctx, server: &str) -> Peer {
        if std::env::var(PEERS_ENV).is_ok_and(|v| v == "0") {
            return Peer::Skipped(format!("{PEERS_ENV}=0"));
        }
        if ctx.quick {
            // A fresh database, DBOS's launch and its shutdown take about 5 s here.
            return Peer::Skipped("quick mode; full mode measures it".into());
        }
        let python = match venv(ctx).await {
            Ok(python) => python,
            Err(why) => return Peer::Skipped(why),
        };
        match Dbos::launch(&python, server).await {
            Ok(dbos) => Peer::Ready(Box::new(dbos)),
            Err(e) => Peer::Failed(format!("DBOS did not start: {e:#}")),
        }
    }

    /// Whether batches can be run.
    pub fn ready(&self) -> bool {
        matches!(self, Peer::Ready(_))
    }

    /// Why the peer's rows have no number, if it failed to start.
    pub fn failure(&self) -> Option<String> {
        match self {
            Peer::Failed(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// What to tell on the console when the peer is not measured.
    pub fn note(&self) -> Option<String> {
        match self {
            Peer::Skipped(why) => Some(format!(
                "the DBOS peer is skipped ({why}): runs_postgres_c1_dbos and runs_postgres_c8_dbos are absent"
            )),
            Peer::Failed(why) => Some(why.clone()),
            Peer::NoPostgres | Peer::Ready(_) => None,
        }
    }

    /// For `params`: what was measured, or why not.
    pub fn describe(&self) -> Value {
        match self {
            Peer::NoPostgres => Value::Null,
            Peer::Skipped(why) => json!({ "skipped": why }),
            Peer::Failed(why) => json!({ "failed": why }),
            Peer::Ready(dbos) => dbos.info.clone(),
        }
    }

    /// `m` workflows by `c` client threads.
    pub async fn batch(&mut self, c: usize, m: usize) -> Result<Took> {
        match self {
            Peer::Ready(dbos) => dbos.batch(c, m).await,
            _ => anyhow::bail!("the DBOS peer is not running"),
        }
    }

    /// Stops DBOS and drops its database.
    pub async fn stop(self) -> Result<()> {
        match self {
            Peer::Ready(dbos) => dbos.stop().await,
            _ => Ok(()),
        }
    }
}

/// The venv's Python, made when missing or made from other requirements; `Err` says
/// why there is none.
async fn venv(ctx: &Ctx) -> std::result::Result<PathBuf, String> {
    let bench_dir = ctx.cache.parent().unwrap_or(&ctx.cache);
    let dir = bench_dir.join("dbos-venv");
    let python = dir.join("bin").join("python");
    let requirements = peers_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("reading {}: {e}", requirements.display()))?;
    let made = std::fs::read_to_string(dir.join(MARKER)).ok();
    if python.is_file() && made.as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    eprintln!(
        "   making {} (python3 -m venv; pip install -r {})",
        dir.display(),
        requirements.display()
    );
    let mut make = Command::new("python3");
    make.args(["-m", "venv", "--clear"]).arg(&dir);
    quietly(&mut make, Duration::from_secs(120))
        .await
        .map_err(|e| format!("cannot make the venv {}: {e}", dir.display()))?;
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--timeout",
        "20",
        "--retries",
        "1",
        "-r",
    ])
    .arg(&requirements);
    quietly(&mut pip, Duration::from_secs(600))
        .await
        .map_err(|e| format!("pip install failed (is PyPI reachable?): {e}"))?;
    std::fs::write(dir.join(MARKER), &wanted)
        .map_err(|e| format!("writing {}: {e}", dir.join(MARKER).display()))?;
    Ok(python)
}

/// bench/peers.
fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// Runs `cmd` to its end within `limit`; `Err` has the end of its output.
async fn quietly(cmd: &mut Command, limit: Duration) -> std::result::Result<(), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| format!("timed out after {limit:?}"))?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = text.lines().rev().take(6).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!("{}: {}", out.status, tail.join(" | ")))
}

/// The URL of database `name` on the server of `server` (same user, host, port and
/// query), in the `postgresql://` spelling SQLAlchemy wants.
fn database_url(server: &str, name: &str) -> Result<String> {
    let (scheme, rest) = server
        .split_once("://")
        .context("the Postgres URL has no scheme")?;
    let scheme = match scheme {
        "postgres" | "postgresql" => "postgresql",
        other => anyhow::bail!("not a Postgres URL scheme: {other}"),
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let authority = path.split('/').next().unwrap_or(path);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

/// The last lines a child wrote to stderr, for error messages.
type Tail = Arc<Mutex<VecDeque<String>>>;

fn tail_text(tail: &Tail) -> String {
    tail.lock()
        .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "))
        .unwrap_or_default()
}

/// DBOS running `dbos_noop.py`.
pub struct Dbos {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Tail,
    server: String,
    database: String,
    /// The launch report (versions, launch time) and where it ran, for `params`.
    info: Value,
}

impl Dbos {
    async fn launch(python: &Path, server: &str) -> Result<Dbos> {
        // Lowercase hex: a valid unquoted identifier, unique per run.
        let database = corral::store::new_id("corral_bench_dbos");
        let url = database_url(server, &database)?;
        let mut child = Command::new(python)
            .arg(peers_dir().join("dbos_noop.py"))
            .arg("--input")
            .arg(raw::INPUT)
            .env(URL_ENV, &url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}", python.display()))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            anyhow::bail!("the DBOS process has no pipes");
        };
        let tail: Tail = Arc::default();
        {
            let tail = tail.clone();
            let mut lines = BufReader::new(stderr).lines();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut t) = tail.lock() {
                        t.push_back(line);
                        while t.len() > 12 {
                            t.pop_front();
                        }
                    }
                }
            });
        }
        let mut dbos = Dbos {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout).lines(),
            stderr: tail,
            server: server.to_string(),
            database,
            info: Value::Null,
        };
        match dbos.reply(LAUNCH_TIMEOUT).await {
            Ok(ready) if ready.get("ready") == Some(&json!(true)) => {
                dbos.info = json!({
                    "measured": true,
                    "dbos": ready.get("dbos"),
                    "python": ready.get("python"),
                    "launch_s": ready.get("launch_s"),
                    "database": format!(
                        "a fresh database {} on {}, DBOS's system database, dropped afterwards",
                        dbos.database,
                        corral::store::redact_url(server)
                    ),
                    "script": "bench/peers/dbos_noop.py",
                });
                Ok(dbos)
            }
            Ok(other) => {
                let _ = dbos.stop().await;
                anyhow::bail!("unexpected launch report {other}")
            }
            Err(e) => {
                let _ = dbos.stop().await;
                Err(e)
            }
        }
    }

    /// The script's next JSON line (other lines on stdout are skipped).
    async fn reply(&mut self, limit: Duration) -> Result<Value> {
        let read = async {
            loop {
                match self.stdout.next_line().await? {
                    Some(line) => {
                        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&line) {
                            return Ok(v);
                        }
                    }
                    None => anyhow::bail!("DBOS exited: {}", tail_text(&self.stderr)),
                }
            }
        };
        tokio::time::timeout(limit, read)
            .await
            .map_err(|_| anyhow::anyhow!("DBOS gave no answer in {limit:?}"))?
    }

    async fn batch(&mut self, clients: usize, workflows: usize) -> Result<Took> {
        let request = json!({ "clients": clients, "workflows": workflows }).to_string() + "\n";
        let stdin = self
            .stdin
            .as_mut()
            .context("the DBOS process's stdin is closed")?;
        stdin.write_all(request.as_bytes()).await?;
        stdin.flush().await?;
        let reply = self.reply(BATCH_TIMEOUT).await?;
        if let Some(error) = reply.get("error") {
            anyhow::bail!("DBOS batch failed: {error}");
        }
        let elapsed = reply
            .get("elapsed_s")
            .and_then(Value::as_f64)
            .context("DBOS's reply has no elapsed_s")?;
        let latencies: Vec<Duration> = reply
            .get("latencies_ms")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_f64)
                    .map(|ms| Duration::from_secs_f64(ms / 1e3))
                    .collect()
            })
            .unwrap_or_default();
        anyhow::ensure!(
            latencies.len() == workflows,
            "DBOS ran {} workflows, not {workflows}",
            latencies.len()
        );
        Ok(Took {
            wall: Duration::from_secs_f64(elapsed),
            latencies,
            commits: 0,
        })
    }

    /// Closes its stdin (DBOS shuts down), waits for it (or kills it), and drops its
    /// database.
    async fn stop(mut self) -> Result<()> {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let admin = sqlx::PgPool::connect(&self.server).await?;
        // FORCE (Postgres 13+) ends sessions DBOS may have left; older servers without it.
        let force = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database);
        if sqlx::query(sqlx::AssertSqlSafe(force))
            .execute(&admin)
            .await
            .is_err()
        {
            let plain = format!("DROP DATABASE IF EXISTS {}", self.database);
            sqlx::query(sqlx::AssertSqlSafe(plain))
                .execute(&admin)
                .await
                .with_context(|| format!("dropping DBOS's database {}", self.database))?;
        }
        admin.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_keeps_the_server_and_names_the_database() {
        let url = |s: &str| database_url(s, "db_x").ok();
        assert_eq!(
            url("postgres://postgres@127.0.0.1:5432/test").as_deref(),
            Some("postgresql://postgres@127.0.0.1:5432/db_x")
        );
        assert_eq!(
            url("postgresql://u:p@h/test?sslmode=disable").as_deref(),
            Some("postgresql://u:p@h/db_x?sslmode=disable")
        );
        assert_eq!(
            url("postgres://h:5432").as_deref(),
            Some("postgresql://h:5432/db_x")
        );
        assert_eq!(url("mysql://h/test"), None);
    }
}
