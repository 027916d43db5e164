//! Event streams across processes: a subscriber sees what another process commits (two
//! stores on one SQLite file or one Postgres schema stand for two hosts; `corral events
//! --follow` is a real second process), with no store poll per subscriber, and a dropped
//! listen connection loses nothing.

use corral::events::{self, Bus};
use corral::store::{Change, Event, NewRun, RunRecord, Store};
use serde_json::json;
use std::time::Duration;

/// Two stores on one database, as two hosts would open it.
async fn two_stores(url: &str) -> (Store, Store) {
    (
        Store::open(url).await.unwrap(),
        Store::open(url).await.unwrap(),
    )
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("corral.db").display())
}

async fn postgres_url() -> Option<String> {
    match std::env::var("CORRAL_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(crate::runs::postgres_schema(&url).await),
        _ => {
            eprintln!("CORRAL_TEST_POSTGRES_URL is not set: Postgres variant not run");
            None
        }
    }
}

/// A queued run of tenant `tenant` (created if missing).
async fn new_run_of(store: &Store, tenant: &str) -> RunRecord {
    let tenant = store.ensure_tenant(tenant).await.unwrap();
    let (run, _) = store
        .create_run(&NewRun {
            tenant_id: tenant,
            pipeline_id: None,
            pipeline_name: "p".into(),
            spec: r#"{"name":"p","steps":[]}"#.into(),
            input: "{}".into(),
            steps: vec![("s".into(), "echo".into())],
        })
        .await
        .unwrap();
    run
}

/// Commits log line `n` of `run` (without publishing it anywhere: another host did it).
async fn log(store: &Store, run: &RunRecord, n: usize) -> Event {
    store
        .commit(&run.as_ref(), &[], Some(("log", json!({"message": n}))))
        .await
        .unwrap()
        .flatten()
        .unwrap()
}

/// Ends `run` with its final event.
async fn finish(store: &Store, run: &RunRecord) {
    let changes = [Change::RunFinish {
        status: "succeeded",
        output: Some("{}".into()),
        error_code: None,
        error_message: None,
    }];
    let payload = json!({"run_id": run.id, "all_done": true, "status": "succeeded"});
    store
        .commit(&run.as_ref(), &changes, Some(("complete", payload)))
        .await
        .unwrap()
        .unwrap();
}

/// The next event, bounded so a lost event fails the test instead of hanging it.
async fn next(rx: &mut tokio::sync::mpsc::Receiver<Event>) -> Option<Event> {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("no event within 60 s: one was lost")
}

/// A follows-only host B sees everything host A commits, in order, once, up to the end.
async fn another_hosts_commits_reach_a_subscriber(url: &str) {
    let (a, b) = two_stores(url).await;
    let run = new_run_of(&a, "streams").await;
    let bus = Bus::watching(b.clone());
    let mut rx = events::subscribe(b, &bus, run.id.clone(), 0);
    assert_eq!(next(&mut rx).await.unwrap().kind, "queued");
    for n in 0..20 {
        log(&a, &run, n).await;
    }
    finish(&a, &run).await;
    let mut seqs = vec![1];
    while let Some(event) = next(&mut rx).await {
        seqs.push(event.seq);
    }
    assert_eq!(seqs, (1..=22).collect::<Vec<i64>>(), "in order, each once");
}

/// Host A's store, a run of A's, and host B's bus with a subscriber that has the run's
/// first two events: the second came through B's watcher, so it is up (and its start-up
/// resync is behind us).
async fn following(url: &str) -> (Store, RunRecord, Bus, tokio::sync::mpsc::Receiver<Event>) {
    let (a, b) = two_stores(url).await;
    let run = new_run_of(&a, "streams").await;
    let bus = Bus::watching(b.clone());
    let mut rx = events::subscribe(b, &bus, run.id.clone(), 0);
    assert_eq!(next(&mut rx).await.unwrap().seq, 1);
    log(&a, &run, 0).await;
    assert_eq!(next(&mut rx).await.unwrap().seq, 2);
    (a, run, bus, rx)
}

/// Once following, an idle subscriber never reads the store (no poll): only the watcher,
/// once per process, watches the database.
async fn an_idle_subscriber_makes_no_store_reads(url: &str) {
    let (a, run, bus, mut rx) = following(url).await;
    let reads = bus.follower_reads();
    // Longer than the old poll (250 ms) and token check (500 ms) periods, several times.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        bus.follower_reads(),
        reads,
        "an idle subscriber read the store"
    );
    finish(&a, &run).await;
    assert!(next(&mut rx).await.unwrap().is_final());
    assert!(next(&mut rx).await.is_none());
}

/// Runs `body` on a SQLite file, and on Postgres when it is configured.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                super::$name(&super::sqlite_url(&dir)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(url) = super::postgres_url().await {
                    super::$name(&url).await;
                }
            }
        }
    };
}

on_both!(another_hosts_commits_reach_a_subscriber);
on_both!(an_idle_subscriber_makes_no_store_reads);

/// The watcher's listen connection is killed while host A keeps committing: the
/// subscriber on host B still gets every event (the watcher reconnects and everyone
/// resyncs from the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_listener_reconnect_loses_nothing() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let (a, run, _bus, mut rx) = following(&url).await;
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let channel: String = sqlx::query_scalar("SELECT 'corral_' || left(md5(current_schema()), 16)")
        .fetch_one(&admin)
        .await
        .unwrap();
    let mut seqs = vec![1, 2];
    for round in 0..3 {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(events::listener_name(&channel))
        .fetch_all(&admin)
        .await
        .unwrap();
        assert!(
            round > 0 || killed.iter().any(|k| *k),
            "no listen connection to kill"
        );
        for n in 0..5 {
            log(&a, &run, n).await;
        }
        for _ in 0..5 {
            seqs.push(next(&mut rx).await.unwrap().seq);
        }
    }
    finish(&a, &run).await;
    while let Some(event) = next(&mut rx).await {
        seqs.push(event.seq);
    }
    assert_eq!(seqs, (1..=18).collect::<Vec<i64>>(), "in order, each once");
}

/// `corral events --follow` in its own process prints what this process commits to the
/// same SQLite file, and exits after the final event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_in_another_process_sees_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let store = Store::open(&url).await.unwrap();
    // The CLI's embedded tenant.
    let run = new_run_of(&store, "local").await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["events", "--follow", &run.id, "--database-url", &url])
        .env("CORRAL_DATA_DIR", dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for n in 0..10 {
        log(&store, &run, n).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    finish(&store, &run).await;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("events --follow did not end after the final event")
        .unwrap();
    assert!(out.status.success());
    let seqs: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<i64>>());
}
