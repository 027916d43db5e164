//! Group commit: the store's writes of the run lifecycle (submissions, claims, transitions
//! and their events) queue here, and a writer task commits whatever has queued up in one
//! transaction. Each queued unit of work (a "member", one run's transition) keeps its own
//! all-or-nothing: a refused guard or a failed statement rolls back that member alone (to
//! its savepoint) and the others commit. Nobody hears back before the COMMIT has returned,
//! so an event is never published before it is durable, and a submission returns only
//! once its run is committed.
//!
//! SQLite has one writer anyway: one writer task, and a member's statements go to the
//! connection's worker thread as one multi-statement query (one hand-off instead of one
//! per statement). Postgres: a few writer tasks, each with its own connection and
//! transaction, statements one by one.

use super::{Backend, Result, StoreError};
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Either, Executor};
use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{mpsc, oneshot};

/// Most members in one transaction. Postgres keeps each member's savepoint open until the
/// COMMIT, and more than 64 open subtransactions spill out of its fast path.
const GROUP: usize = 48;
/// Writer tasks (and so connections writing at once) on Postgres. A run waits for each of
/// its commits, so with fewer writers than runs in flight a commit would queue behind
/// another one's flush; Postgres combines concurrent flushes itself.
const PG_WRITERS: usize = 8;

/// One bound value.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Bytes(Vec<u8>),
}

/// One statement of a member. Its placeholders are `$1..$n` for its own `args`.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub(crate) sql: Cow<'static, str>,
    pub(crate) args: Vec<Arg>,
    /// Matching no row refuses the whole member (the state has moved on).
    pub(crate) guarded: bool,
}

impl Stmt {
    pub(crate) fn new(sql: impl Into<Cow<'static, str>>, args: Vec<Arg>) -> Stmt {
        Stmt {
            sql: sql.into(),
            args,
            guarded: false,
        }
    }

    pub(crate) fn guarded(mut self) -> Stmt {
        self.guarded = true;
        self
    }
}

/// What one statement did.
#[derive(Default)]
pub(crate) struct Done {
    pub(crate) affected: u64,
    pub(crate) rows: Vec<AnyRow>,
}

/// A member's outcome: `None` when a guard refused it (nothing of it was written).
pub(crate) type Outcome = Option<Vec<Done>>;

struct Pending {
    stmts: Vec<Stmt>,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// The queue in front of the writer tasks. Cheap to clone (it is shared by the store's
/// clones); the tasks start on first use, in the runtime of the caller, and again if that
/// runtime went away.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    db: Db,
    /// Unbounded, yet bounded by its callers: each waits for its reply, so the queue holds
    /// at most one member per caller waiting (whose statements it already holds).
    tx: Arc<Mutex<Option<mpsc::UnboundedSender<Pending>>>>,
}

/// What the writer tasks write with. Not the queue's sender: a task holding that would keep
/// its own queue open, and so itself and its connections alive after the store is dropped.
#[derive(Debug, Clone)]
struct Db {
    pool: AnyPool,
    backend: Backend,
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Writer {
    pub(crate) fn new(
        pool: AnyPool,
        backend: Backend,
        write_lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Writer {
        Writer {
            db: Db {
                pool,
                backend,
                write_lock,
            },
            tx: Arc::new(Mutex::new(None)),
        }
    }

    /// Commits `stmts` as one member of a group and answers once the group's COMMIT has
    /// returned.
    pub(crate) async fn write(&self, stmts: Vec<Stmt>) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        let mut pending = Pending { stmts, reply };
        for _ in 0..2 {
            match self.sender().send(pending) {
                Ok(()) => {
                    return answer.await.unwrap_or_else(|_| {
                        // The writer went away (its runtime shut down) without answering:
                        // whether it committed is unknown, so this is reported as a failure
                        // and never silently written twice.
                        Err(StoreError::Database(sqlx::Error::WorkerCrashed))
                    });
                }
                // Its runtime is gone: start the writers again, here.
                Err(mpsc::error::SendError(back)) => {
                    pending = back;
                    *self.tx.lock().unwrap_or_else(PoisonError::into_inner) = None;
                }
            }
        }
        Err(StoreError::Database(sqlx::Error::WorkerCrashed))
    }

    fn sender(&self) -> mpsc::UnboundedSender<Pending> {
        let mut tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = tx.as_ref().filter(|t| !t.is_closed()) {
            return tx.clone();
        }
        let (sender, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let writers = match self.db.backend {
            Backend::Sqlite => 1,
            Backend::Postgres => PG_WRITERS,
        };
        for _ in 0..writers {
            tokio::spawn(run_writer(self.db.clone(), rx.clone()));
        }
        *tx = Some(sender.clone());
        sender
    }
}

/// One writer task: takes what has queued up (at most [`GROUP`]) and commits it as one
/// transaction, until the store is dropped.
async fn run_writer(writer: Db, rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>>) {
    let mut group = Vec::with_capacity(GROUP);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut group, GROUP).await == 0 {
                return;
            }
        }
        let _w = match writer.backend {
            Backend::Sqlite => Some(writer.write_lock.lock().await),
            Backend::Postgres => None,
        };
        commit_group(&writer, std::mem::take(&mut group)).await;
    }
}

/// Commits a group; if the group as a whole fails (a statement error, or a COMMIT the
/// database refused), every member is tried again on its own, so one member's fault never
/// fails another.
async fn commit_group(writer: &Db, group: Vec<Pending>) {
    let mut conn = match writer.pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            let text = e.to_string();
            for p in group {
                let _ = p.reply.send(Err(StoreError::Corrupt(format!(
                    "no database connection: {text}"
                ))));
            }
            return;
        }
    };
    if group.len() > 1 {
        let failed = match together(&mut conn, writer.backend, &group).await {
            Ok(outcomes) => match conn.execute("COMMIT").await {
                Ok(_) => {
                    for (p, outcome) in group.into_iter().zip(outcomes) {
                        let _ = p.reply.send(Ok(outcome));
                    }
                    return;
                }
                // The database answered the COMMIT with an error: nothing was committed.
                Err(e @ sqlx::Error::Database(_)) => e.to_string(),
                // No answer (the connection broke): the group may have committed, and
                // trying its members again could write one twice. Each hears of the
                // failure, as a member alone would of its own COMMIT's.
                Err(e) => {
                    conn.close_on_drop();
                    let text = e.to_string();
                    for p in group {
                        let _ = p.reply.send(Err(StoreError::Database(sqlx::Error::Io(
                            std::io::Error::other(format!(
                                "no answer to COMMIT (it may have committed): {text}"
                            )),
                        ))));
                    }
                    return;
                }
            },
            Err(e) => e.to_string(),
        };
        tracing::debug!("group commit failed, committing its members one by one: {failed}");
        if rollback(&mut conn).await.is_err() {
            conn.close_on_drop();
            return commit_alone_fresh(writer, group).await;
        }
    }
    let mut rest = group.into_iter();
    while let Some(p) = rest.next() {
        let (outcome, usable) = alone_or_rollback(&mut conn, writer.backend, &p.stmts).await;
        let _ = p.reply.send(outcome);
        if !usable {
            return commit_alone_fresh(writer, rest.collect()).await;
        }
    }
}

/// The members one by one on a new connection (the old one could not even roll back).
async fn commit_alone_fresh(writer: &Db, group: Vec<Pending>) {
    for p in group {
        let outcome = match writer.pool.acquire().await {
            Ok(mut conn) => {
                alone_or_rollback(&mut conn, writer.backend, &p.stmts)
                    .await
                    .0
            }
            Err(e) => Err(e.into()),
        };
        let _ = p.reply.send(outcome);
    }
}

/// [`alone`], with what a failure left open rolled back. `false` beside the outcome: even
/// that failed, so the connection is closed and must not be used again.
async fn alone_or_rollback(
    conn: &mut PoolConnection<Any>,
    backend: Backend,
    stmts: &[Stmt],
) -> (Result<Outcome>, bool) {
    let outcome = alone(conn, backend, stmts).await;
    // A single statement ran without a transaction: nothing is left open (and SQLite
    // answers a ROLLBACK outside a transaction with an error).
    let broken = outcome.is_err() && !matches!(stmts, [_]) && rollback(conn).await.is_err();
    if broken {
        conn.close_on_drop();
    }
    (outcome, !broken)
}

async fn rollback(conn: &mut AnyConnection) -> Result<()> {
    conn.execute("ROLLBACK").await?;
    Ok(())
}

/// One member in its own transaction: a refusal rolls it back, an error is returned with
/// the transaction still open (the caller rolls back, see [`alone_or_rollback`]).
async fn alone(conn: &mut AnyConnection, backend: Backend, stmts: &[Stmt]) -> Result<Outcome> {
    // One statement needs no transaction of its own: it is atomic, and a guard that
    // matches no row has written nothing.
    if let [one] = stmts {
        let done = run_stmt(conn, one).await?;
        if one.guarded && done.affected == 0 {
            return Ok(None);
        }
        return Ok(Some(vec![done]));
    }
    match run_member(conn, backend, stmts, Some("BEGIN")).await? {
        Some(done) => {
            conn.execute("COMMIT").await?;
            Ok(Some(done))
        }
        None => {
            rollback(conn).await?;
            Ok(None)
        }
    }
}

/// Every member in one transaction, each behind its own savepoint (one name for all: a
/// rollback goes to the newest, the member's own), up to its COMMIT (the caller's). `Err`:
/// the group failed as a whole and the transaction is still open (the caller rolls back).
async fn together(
    conn: &mut AnyConnection,
    backend: Backend,
    group: &[Pending],
) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::with_capacity(group.len());
    for (i, p) in group.iter().enumerate() {
        // Postgres stops at a refused guard: a member guarded by its first statement alone
        // has then written nothing and needs no savepoint (a round trip). SQLite runs the
        // member's whole query before its results are looked at.
        let savepoint = backend == Backend::Sqlite || p.stmts.iter().skip(1).any(|s| s.guarded);
        let prefix = match (i == 0, savepoint) {
            (true, true) => Some("BEGIN; SAVEPOINT m"),
            (true, false) => Some("BEGIN"),
            (false, true) => Some("SAVEPOINT m"),
            (false, false) => None,
        };
        let outcome = run_member(conn, backend, &p.stmts, prefix).await?;
        if outcome.is_none() && savepoint {
            conn.execute("ROLLBACK TO SAVEPOINT m").await?;
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Runs a member's statements in order (SQLite: as one multi-statement query, after
/// `prefix`). `None`: a guard matched no row; what the member wrote is still there, for the
/// caller to roll back.
async fn run_member(
    conn: &mut AnyConnection,
    backend: Backend,
    stmts: &[Stmt],
    prefix: Option<&str>,
) -> Result<Outcome> {
    match backend {
        Backend::Postgres => {
            for part in prefix.iter().flat_map(|p| p.split(';')) {
                conn.execute(sqlx::AssertSqlSafe(part.trim().to_string()))
                    .await?;
            }
            let mut out = Vec::with_capacity(stmts.len());
            for stmt in stmts {
                let done = run_stmt(conn, stmt).await?;
                if stmt.guarded && done.affected == 0 {
                    return Ok(None);
                }
                out.push(done);
            }
            Ok(Some(out))
        }
        Backend::Sqlite => run_joined(conn, stmts, prefix).await,
    }
}

/// One statement on its own.
async fn run_stmt(conn: &mut AnyConnection, stmt: &Stmt) -> Result<Done> {
    let q = bind(
        sqlx::query(sqlx::AssertSqlSafe(stmt.sql.to_string())),
        &stmt.args,
    );
    match collect(conn.fetch_many(q), 0).await {
        (_, Some(e)) => Err(e.into()),
        (mut done, None) => Ok(done.pop().unwrap_or_default()),
    }
}

/// SQLite: the member's statements as one query, numbered through (`$1..` of the second
/// statement become `$n+1..`), so its worker thread runs them in one hand-off.
async fn run_joined(
    conn: &mut AnyConnection,
    stmts: &[Stmt],
    prefix: Option<&str>,
) -> Result<Outcome> {
    let mut sql = String::new();
    let mut skip = 0;
    if let Some(prefix) = prefix {
        sql.push_str(prefix);
        sql.push_str(";\n");
        skip = prefix.split(';').filter(|s| !s.trim().is_empty()).count();
    }
    let mut offset = 0;
    for stmt in stmts {
        renumber(&stmt.sql, offset, &mut sql);
        sql.push_str(";\n");
        offset += stmt.args.len();
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for stmt in stmts {
        q = bind(q, &stmt.args);
    }
    let (done, error) = collect(conn.fetch_many(q), skip).await;
    // A refused guard decides, even if a later statement then failed because of it (the
    // steps of a run whose capped insert was refused have no run to belong to).
    if stmts
        .iter()
        .zip(&done)
        .any(|(s, d)| s.guarded && d.affected == 0)
    {
        return Ok(None);
    }
    if let Some(e) = error {
        return Err(e.into());
    }
    if done.len() != stmts.len() {
        return Err(StoreError::Corrupt(format!(
            "expected {} statement results, got {}",
            stmts.len(),
            done.len()
        )));
    }
    Ok(Some(done))
}

/// Collects a query's per-statement results: the first `skip` results (the prefix's) are
/// dropped, then the rest kept. Rows belong to the statement whose result follows them. An
/// error is returned beside the results of the statements before it.
async fn collect(
    mut stream: BoxStream<
        '_,
        std::result::Result<Either<sqlx::any::AnyQueryResult, AnyRow>, sqlx::Error>,
    >,
    skip: usize,
) -> (Vec<Done>, Option<sqlx::Error>) {
    let mut out = Vec::new();
    let mut current = Done::default();
    let mut seen = 0;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Either::Right(row)) => current.rows.push(row),
            Ok(Either::Left(result)) => {
                current.affected = result.rows_affected();
                let done = std::mem::take(&mut current);
                if seen >= skip {
                    out.push(done);
                }
                seen += 1;
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    args: &[Arg],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for arg in args {
        q = match arg {
            Arg::Text(t) => q.bind(t.clone()),
            Arg::OptText(t) => q.bind(t.clone()),
            Arg::Int(i) => q.bind(*i),
            Arg::OptInt(i) => q.bind(*i),
            Arg::Bytes(b) => q.bind(b.clone()),
        };
    }
    q
}

/// Appends `sql` to `out` with every `$N` placeholder raised by `offset`. The statements
/// are the store's own, with no `$` anywhere but in placeholders.
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut n = 0usize;
        let mut digits = false;
        while let Some(&(_, d)) = chars.peek() {
            match d.to_digit(10) {
                Some(v) => {
                    n = n * 10 + v as usize;
                    digits = true;
                    chars.next();
                }
                None => break,
            }
        }
        if digits {
            out.push_str(&(n + offset).to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NewRun, Store};
    use super::*;

    #[test]
    fn placeholders_are_numbered_through() {
        let mut out = String::new();
        renumber("UPDATE t SET a = $1, b = $12 WHERE id = $2", 3, &mut out);
        assert_eq!(out, "UPDATE t SET a = $4, b = $15 WHERE id = $5");
    }

    /// A store on SQLite, or on Postgres in a schema of its own when
    /// CORRAL_TEST_POSTGRES_URL is set (`postgres`).
    async fn store(postgres: bool) -> Option<(Store, Option<tempfile::TempDir>)> {
        if !postgres {
            let dir = tempfile::tempdir().unwrap();
            return Some((Store::open_in_dir(dir.path()).await.unwrap(), Some(dir)));
        }
        let base = std::env::var("CORRAL_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        let schema = format!(
            "corral_test_{}_w{:x}",
            std::process::id(),
            rand::random::<u32>()
        );
        sqlx::any::install_default_drivers();
        let admin = AnyPool::connect(&base).await.unwrap();
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .await
            .unwrap();
        admin.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Some((Store::open(&url).await.unwrap(), None))
    }

    async fn queued_run(store: &Store) -> String {
        let tenant = store.ensure_tenant("t").await.unwrap();
        let (run, _) = store
            .create_run(&NewRun {
                tenant_id: tenant,
                pipeline_id: None,
                pipeline_name: "p".into(),
                spec: "{}".into(),
                input: "{}".into(),
                steps: vec![("s".into(), "echo".into())],
            })
            .await
            .unwrap();
        run.id
    }

    fn set_state(run: &str, key: &str) -> Stmt {
        Stmt::new(
            "INSERT INTO run_state (run_id, key, value) VALUES ($1, $2, $3)",
            vec![
                Arg::Text(run.into()),
                Arg::Text(key.into()),
                Arg::Bytes(b"v".to_vec()),
            ],
        )
    }

    fn status(run: &str, from: &str, to: &str) -> Stmt {
        Stmt::new(
            "UPDATE runs SET status = $3 WHERE id = $1 AND status = $2",
            vec![
                Arg::Text(run.into()),
                Arg::Text(from.into()),
                Arg::Text(to.into()),
            ],
        )
        .guarded()
    }

    async fn keys(store: &Store, run: &str) -> Vec<String> {
        let rows = sqlx::query("SELECT key FROM run_state WHERE run_id = $1 ORDER BY key")
            .bind(run)
            .fetch_all(&store.pool)
            .await
            .unwrap();
        rows.iter()
            .map(|r| sqlx::Row::try_get(r, "key").unwrap())
            .collect()
    }

    /// Commits `members` as one group, as the writer task would, and returns the replies.
    async fn group(store: &Store, members: Vec<Vec<Stmt>>) -> Vec<Result<Outcome>> {
        let (pending, answers): (Vec<_>, Vec<_>) = members
            .into_iter()
            .map(|stmts| {
                let (reply, answer) = oneshot::channel();
                (Pending { stmts, reply }, answer)
            })
            .unzip();
        commit_group(&store.writer.db, pending).await;
        let mut out = Vec::new();
        for answer in answers {
            out.push(answer.await.unwrap());
        }
        out
    }

    async fn a_refused_member_leaves_the_rest_of_its_group_committed(postgres: bool) {
        let Some((store, _dir)) = store(postgres).await else {
            return;
        };
        let (a, b, c) = (
            queued_run(&store).await,
            queued_run(&store).await,
            queued_run(&store).await,
        );
        let replies = group(
            &store,
            vec![
                vec![status(&a, "queued", "running"), set_state(&a, "x")],
                // Writes first, then its guard refuses: what it wrote must go too.
                vec![set_state(&b, "x"), status(&b, "running", "waiting")],
                vec![set_state(&c, "x"), status(&c, "queued", "running")],
            ],
        )
        .await;
        assert!(matches!(replies.first(), Some(Ok(Some(_)))));
        assert!(matches!(replies.get(1), Some(Ok(None))), "b was refused");
        assert!(matches!(replies.get(2), Some(Ok(Some(_)))));
        assert_eq!(keys(&store, &a).await, ["x"]);
        assert!(keys(&store, &b).await.is_empty(), "nothing of b is written");
        assert_eq!(keys(&store, &c).await, ["x"]);
        let status_of = async |id: &str| store.run(id).await.unwrap().unwrap().status;
        assert_eq!(status_of(&a).await, "running");
        assert_eq!(status_of(&b).await, "queued");
        assert_eq!(status_of(&c).await, "running");
    }

    async fn a_failing_member_fails_alone(postgres: bool) {
        let Some((store, _dir)) = store(postgres).await else {
            return;
        };
        let (a, b) = (queued_run(&store).await, queued_run(&store).await);
        let replies = group(
            &store,
            vec![
                vec![set_state(&a, "x")],
                // The same key twice: the second insert fails on the primary key.
                vec![set_state(&b, "x"), set_state(&b, "x")],
                vec![set_state(&a, "y")],
            ],
        )
        .await;
        assert!(matches!(replies.first(), Some(Ok(Some(_)))));
        assert!(matches!(replies.get(1), Some(Err(_))), "b failed");
        assert!(matches!(replies.get(2), Some(Ok(Some(_)))));
        assert_eq!(keys(&store, &a).await, ["x", "y"]);
        assert!(keys(&store, &b).await.is_empty());
    }

    /// A single statement runs on its own when its group is tried member by member: its
    /// failure must neither fail nor drop the members after it.
    async fn a_failing_single_statement_fails_alone(postgres: bool) {
        let Some((store, _dir)) = store(postgres).await else {
            return;
        };
        let a = queued_run(&store).await;
        let replies = group(
            &store,
            vec![
                vec![set_state(&a, "x")],
                vec![set_state(&a, "x")],
                vec![set_state(&a, "y")],
            ],
        )
        .await;
        assert!(matches!(replies.first(), Some(Ok(Some(_)))));
        assert!(
            matches!(replies.get(1), Some(Err(_))),
            "the second x failed"
        );
        assert!(matches!(replies.get(2), Some(Ok(Some(_)))));
        assert_eq!(keys(&store, &a).await, ["x", "y"]);
    }

    #[tokio::test]
    async fn the_writer_tasks_end_with_the_store() {
        let (store, _dir) = store(false).await.unwrap();
        queued_run(&store).await;
        // Held by the store and by every writer task.
        let lock = Arc::downgrade(&store.write_lock);
        drop(store);
        for _ in 0..200 {
            if lock.upgrade().is_none() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("a writer task outlived its store");
    }

    #[tokio::test]
    async fn a_failing_single_statement_in_a_group_fails_only_itself_sqlite() {
        a_failing_single_statement_fails_alone(false).await;
    }

    #[tokio::test]
    async fn a_failing_single_statement_in_a_group_fails_only_itself_postgres() {
        a_failing_single_statement_fails_alone(true).await;
    }

    #[tokio::test]
    async fn a_refused_guard_in_a_group_rolls_back_only_its_own_run_sqlite() {
        a_refused_member_leaves_the_rest_of_its_group_committed(false).await;
    }

    #[tokio::test]
    async fn a_refused_guard_in_a_group_rolls_back_only_its_own_run_postgres() {
        a_refused_member_leaves_the_rest_of_its_group_committed(true).await;
    }

    #[tokio::test]
    async fn a_failing_statement_in_a_group_fails_only_its_own_run_sqlite() {
        a_failing_member_fails_alone(false).await;
    }

    #[tokio::test]
    async fn a_failing_statement_in_a_group_fails_only_its_own_run_postgres() {
        a_failing_member_fails_alone(true).await;
    }
}
