//! Pausing and resuming runs (DUR-11 to DUR-18), on SQLite and, when
//! CORRAL_TEST_POSTGRES_URL is set, on Postgres in a fresh schema: in-process runners on a
//! real database, and real `corral serve` hosts killed with SIGKILL.

use crate::runs::Db;
use crate::util::*;
use corral::runs::pipeline::{self, Pipeline};
use corral::runs::{RunError, Runner, RunnerConfig};
use corral::store::{Event, RunRecord, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// A runner (a node) on the test's database.
fn node(store: Store, lease: Duration) -> Runner {
    Runner::new(
        engine(),
        store,
        RunnerConfig {
            lease,
            ..RunnerConfig::default()
        },
    )
}

struct Env {
    runner: Runner,
    tenant: String,
    db: Db,
}

async fn env(db: Db) -> Env {
    let store = db.store().await;
    let tenant = store.ensure_tenant("tests").await.unwrap();
    Env {
        runner: node(store, Duration::from_secs(30)),
        tenant,
        db,
    }
}

/// A pipeline of `flaky` steps `s0`, `s1`, ... with these configs (inline TOML tables).
fn flaky_steps(extra: &str, configs: &[&str]) -> Pipeline {
    let mut toml = format!("name = \"pausable\"\n{extra}\n");
    for (i, config) in configs.iter().enumerate() {
        toml.push_str(&format!(
            "[[steps]]\nname = \"s{i}\"\nplugin = \"flaky.wasm\"\nconfig = {config}\n"
        ));
    }
    pipeline::parse_toml(&toml, &root().join("target/plugins")).unwrap()
}

impl Env {
    async fn submit(&self, p: &Pipeline) -> String {
        self.runner
            .submit(&self.tenant, p, None, r#"{"n": 1}"#)
            .await
            .unwrap()
            .id
    }

    /// Executes the run in this process (until it ends or pauses), in the background.
    fn execute(&self, id: &str) -> tokio::task::JoinHandle<Result<(), RunError>> {
        let (runner, id) = (self.runner.clone(), id.to_string());
        tokio::spawn(async move { runner.execute(&id).await })
    }

    async fn events(&self, id: &str) -> Vec<Event> {
        self.runner
            .store()
            .events_after(id, 0, 10_000)
            .await
            .unwrap()
    }

    async fn run(&self, id: &str) -> RunRecord {
        self.runner.store().run(id).await.unwrap().unwrap()
    }

    /// Waits (bounded) until `pred` holds for the run's events.
    async fn wait(&self, id: &str, what: &str, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        wait_events(self.runner.store(), id, what, pred).await
    }
}

/// Waits (bounded: a minute) until `pred` holds for the run's events.
async fn wait_events(
    store: &Store,
    id: &str,
    what: &str,
    pred: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    for _ in 0..1200 {
        let events = store.events_after(id, 0, 10_000).await.unwrap();
        if pred(&events) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "run {id}: no {what}: {:#?}",
        store.events_after(id, 0, 10_000).await.unwrap()
    );
}

/// Whether a step of that name has an event of that kind.
fn has(events: &[Event], kind: &str, step: &str) -> bool {
    events
        .iter()
        .any(|e| e.kind == kind && e.payload["step_id"] == step)
}

fn count(events: &[Event], kind: &str) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

/// A finished run's log: seq 1..n without gap, one final event, last, agreeing with the
/// run; every `paused` is followed by a `resumed` unless the run was cancelled while
/// paused. Returns the final status.
fn assert_ended_once(run: &RunRecord, events: &[Event]) -> String {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "seq gap: {events:#?}");
    }
    assert_eq!(
        events.iter().filter(|e| e.is_final()).count(),
        1,
        "{events:#?}"
    );
    let last = events.last().unwrap();
    assert!(last.is_final(), "{events:#?}");
    assert!(run.is_terminal(), "{run:?}");
    assert_eq!(last.payload["status"], run.status.as_str());
    let (paused, resumed) = (count(events, "paused"), count(events, "resumed"));
    assert!(
        resumed == paused || (run.status == "cancelled" && resumed + 1 == paused),
        "{paused} paused, {resumed} resumed: {events:#?}"
    );
    run.status.clone()
}

/// A paused run: no owner, no lease, no pause pending, its `paused` event last.
fn assert_paused(run: &RunRecord, events: &[Event]) {
    assert_eq!(run.status, "paused", "{events:#?}");
    assert!(run.owner.is_none() && run.lease_until.is_none(), "{run:?}");
    assert!(!run.pause_requested && run.paused_at.is_some(), "{run:?}");
    assert_eq!(events.last().unwrap().kind, "paused", "{events:#?}");
}

both!(dur_11_a_pause_lets_the_step_finish_and_resume_continues_with_the_next_step);
async fn dur_11_a_pause_lets_the_step_finish_and_resume_continues_with_the_next_step(db: Db) {
    let env = env(db).await;
    let p = flaky_steps(
        "",
        &[
            r#"{ sleep_ms = 3000, count_key = "s0" }"#,
            r#"{ count_key = "s1" }"#,
        ],
    );
    let id = env.submit(&p).await;
    let exec = env.execute(&id);
    env.wait(&id, "s0 running", |e| has(e, "running", "s0"))
        .await;
    let asked = env.runner.pause(&env.tenant, &id, false).await.unwrap();
    assert_eq!(asked.status, "running", "it pauses once s0's attempt ends");
    // The executor lets the run go once it has paused.
    exec.await.unwrap().unwrap();
    let events = env.events(&id).await;
    let run = env.run(&id).await;
    assert_paused(&run, &events);
    let paused = events.last().unwrap();
    assert_eq!(paused.payload["step_id"], "s1", "paused before s1");
    assert_eq!(paused.payload["interrupted"], false);
    let steps = env.runner.store().steps(&id).await.unwrap();
    assert_eq!(
        steps[0].status, "succeeded",
        "the attempt finished: {steps:?}"
    );
    assert_eq!((steps[1].status.as_str(), steps[1].attempts), ("queued", 0));
    // Pausing again changes nothing; a paused run is not claimed.
    assert_eq!(
        env.runner
            .pause(&env.tenant, &id, true)
            .await
            .unwrap()
            .status,
        "paused"
    );
    env.runner.execute(&id).await.unwrap();
    assert_eq!(env.events(&id).await, events, "a paused run is not claimed");

    env.runner.resume(&env.tenant, &id).await.unwrap();
    assert_eq!(env.run(&id).await.status, "queued");
    let err = env.runner.resume(&env.tenant, &id).await.unwrap_err();
    assert!(matches!(err, RunError::NotPaused(..)), "{err}");
    assert_eq!(err.code(), "NOT_PAUSED");
    env.runner.execute(&id).await.unwrap();
    let events = env.events(&id).await;
    let run = env.run(&id).await;
    assert_eq!(assert_ended_once(&run, &events), "succeeded");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(at("paused") < at("resumed"), "{kinds:?}");
    assert!(
        events
            .iter()
            .position(|e| e.kind == "running" && e.payload["step_id"] == "s1")
            .unwrap()
            > at("resumed"),
        "s1 starts after the resume: {kinds:?}"
    );
    // s0 ran once, s1 once: nothing re-ran.
    let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert_eq!(output["count"], 1, "{output}");
    let attempts = env.runner.store().attempts(&id).await.unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(
        attempts
            .iter()
            .all(|a| a.status == "succeeded" && a.attempt == 1)
    );

    // A finished run cannot be paused or resumed.
    let err = env.runner.pause(&env.tenant, &id, false).await.unwrap_err();
    assert!(matches!(err, RunError::AlreadyFinished(..)), "{err}");
    let err = env.runner.resume(&env.tenant, &id).await.unwrap_err();
    assert!(matches!(err, RunError::AlreadyFinished(..)), "{err}");
    assert_eq!(env.events(&id).await, events, "nothing changed");

    // A queued run pauses before it starts.
    let id = env.submit(&p).await;
    let asked = env.runner.pause(&env.tenant, &id, false).await.unwrap();
    assert_eq!(asked.status, "paused");
    env.runner.execute(&id).await.unwrap();
    let events = env.events(&id).await;
    assert_paused(&env.run(&id).await, &events);
    assert_eq!(count(&events, "running"), 0, "{events:#?}");
    env.runner.resume(&env.tenant, &id).await.unwrap();
    env.runner.execute(&id).await.unwrap();
    let run = env.run(&id).await;
    assert_eq!(assert_ended_once(&run, &env.events(&id).await), "succeeded");
}

both!(dur_12_pause_now_interrupts_the_attempt_and_reruns_it_on_resume);
async fn dur_12_pause_now_interrupts_the_attempt_and_reruns_it_on_resume(db: Db) {
    let env = env(db).await;
    // s0 counts its runs only after its sleep: an interrupted run never gets there.
    let p = flaky_steps(
        "[defaults]\nmax_attempts = 1\ntimeout = \"120s\"",
        &[r#"{ sleep_ms = 5000, count_key = "s0" }"#, "{}"],
    );
    let id = env.submit(&p).await;
    let exec = env.execute(&id);
    env.wait(&id, "s0 running", |e| has(e, "running", "s0"))
        .await;
    env.runner.pause(&env.tenant, &id, true).await.unwrap();
    exec.await.unwrap().unwrap();
    let events = env.events(&id).await;
    assert_paused(&env.run(&id).await, &events);
    let paused = events.last().unwrap();
    assert_eq!(paused.payload["step_id"], "s0");
    assert_eq!(paused.payload["interrupted"], true);
    assert_eq!(paused.payload["attempt"], 1);
    assert!(
        !events
            .iter()
            .any(|e| e.kind == "complete" && e.payload["step_id"] == "s0"),
        "s0 did not finish: {events:#?}"
    );
    let steps = env.runner.store().steps(&id).await.unwrap();
    assert_eq!((steps[0].status.as_str(), steps[0].attempts), ("queued", 0));
    let attempts = env.runner.store().attempts(&id).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].status, "interrupted");
    assert_eq!(attempts[0].error_code.as_deref(), Some("PAUSED"));
    let fuel_before = env.run(&id).await.fuel_used;

    env.runner.resume(&env.tenant, &id).await.unwrap();
    env.runner.execute(&id).await.unwrap();
    let events = env.events(&id).await;
    let run = env.run(&id).await;
    assert_eq!(assert_ended_once(&run, &events), "succeeded", "{events:#?}");
    // The same attempt ran again (max_attempts = 1 did not stop it), to its end once.
    let attempts = env.runner.store().attempts(&id).await.unwrap();
    let s0: Vec<_> = attempts.iter().filter(|a| a.step_idx == 0).collect();
    assert_eq!(s0.len(), 1, "{attempts:?}");
    assert_eq!((s0[0].attempt, s0[0].status.as_str()), (1, "succeeded"));
    let reruns: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "running" && e.payload["step_id"] == "s0")
        .filter(|e| e.payload["progress_label"] == "started")
        .map(|e| e.payload["attempt"].clone())
        .collect();
    assert_eq!(reruns, vec![json!(1), json!(1)], "{events:#?}");
    let steps = env.runner.store().steps(&id).await.unwrap();
    let s0_output: Value = serde_json::from_str(steps[0].output.as_deref().unwrap()).unwrap();
    assert_eq!(s0_output["count"], 1, "the interrupted run never counted");
    assert_eq!(s0_output["attempt"], 1);
    // Fuel of both runs of the attempt is charged, to the run, its step and the attempt.
    assert!(run.fuel_used >= fuel_before, "{run:?}");
    assert_eq!(
        steps.iter().map(|s| s.fuel_used).sum::<i64>(),
        run.fuel_used
    );
    assert_eq!(
        attempts.iter().map(|a| a.fuel_used).sum::<i64>(),
        run.fuel_used
    );
}

both!(dur_14_cancel_while_paused_ends_the_run_cancelled);
async fn dur_14_cancel_while_paused_ends_the_run_cancelled(db: Db) {
    let env = env(db).await;
    let p = flaky_steps("", &[r#"{ sleep_ms = 3000 }"#, "{}"]);
    // Paused while queued, and paused after a step.
    let queued = env.submit(&p).await;
    env.runner.pause(&env.tenant, &queued, false).await.unwrap();
    let ran = env.submit(&p).await;
    let exec = env.execute(&ran);
    env.wait(&ran, "s0 running", |e| has(e, "running", "s0"))
        .await;
    env.runner.pause(&env.tenant, &ran, false).await.unwrap();
    exec.await.unwrap().unwrap();
    for id in [&queued, &ran] {
        assert_paused(&env.run(id).await, &env.events(id).await);
        env.runner.cancel(&env.tenant, id).await.unwrap();
        let events = env.events(id).await;
        let run = env.run(id).await;
        assert_eq!(assert_ended_once(&run, &events), "cancelled", "{events:#?}");
        assert_eq!(count(&events, "cancelled"), 1);
        // Neither resumed nor executed afterwards.
        let err = env.runner.resume(&env.tenant, id).await.unwrap_err();
        assert!(matches!(err, RunError::AlreadyFinished(..)), "{err}");
        env.runner.execute(id).await.unwrap();
        assert_eq!(env.events(id).await, events);
    }
    let steps = env.runner.store().steps(&ran).await.unwrap();
    assert_eq!(steps[0].status, "succeeded");
    assert_eq!(steps[1].status, "skipped", "{steps:?}");
}

both!(dur_16_the_time_budget_does_not_tick_while_paused);
async fn dur_16_the_time_budget_does_not_tick_while_paused(db: Db) {
    let env = env(db).await;
    // Paused for longer than the whole budget: it still succeeds after the resume.
    let p = flaky_steps(
        "[budget]\ntimeout = \"10s\"",
        &[r#"{ sleep_ms = 2000 }"#, r#"{ sleep_ms = 300 }"#],
    );
    let id = env.submit(&p).await;
    let exec = env.execute(&id);
    env.wait(&id, "s0 running", |e| has(e, "running", "s0"))
        .await;
    env.runner.pause(&env.tenant, &id, false).await.unwrap();
    exec.await.unwrap().unwrap();
    assert_paused(&env.run(&id).await, &env.events(&id).await);
    tokio::time::sleep(Duration::from_secs(11)).await;
    env.runner.resume(&env.tenant, &id).await.unwrap();
    env.runner.execute(&id).await.unwrap();
    let run = env.run(&id).await;
    assert_eq!(
        assert_ended_once(&run, &env.events(&id).await),
        "succeeded",
        "{run:?}"
    );

    // The time it ran before the pause still counts: 4 s before, 4 s after, of 6 s.
    let p = flaky_steps(
        "[budget]\ntimeout = \"6s\"\n[defaults]\nmax_attempts = 1",
        &[r#"{ sleep_ms = 4000 }"#, r#"{ sleep_ms = 4000 }"#],
    );
    let id = env.submit(&p).await;
    let exec = env.execute(&id);
    env.wait(&id, "s0 running", |e| has(e, "running", "s0"))
        .await;
    env.runner.pause(&env.tenant, &id, false).await.unwrap();
    exec.await.unwrap().unwrap();
    let paused = env.run(&id).await;
    assert!(paused.active_ms >= 4000, "{paused:?}");
    env.runner.resume(&env.tenant, &id).await.unwrap();
    env.runner.execute(&id).await.unwrap();
    let run = env.run(&id).await;
    assert_eq!(assert_ended_once(&run, &env.events(&id).await), "failed");
    assert_eq!(
        run.error_code.as_deref(),
        Some("DEADLINE_EXCEEDED"),
        "{run:?}"
    );
}

both!(dur_17_a_paused_run_is_not_recovered_by_another_node_and_resumes_on_any);
async fn dur_17_a_paused_run_is_not_recovered_by_another_node_and_resumes_on_any(db: Db) {
    let env = env(db).await;
    let p = flaky_steps("", &[r#"{ sleep_ms = 3000 }"#, r#"{ count_key = "s1" }"#]);
    let id = env.submit(&p).await;
    let exec = env.execute(&id);
    env.wait(&id, "s0 running", |e| has(e, "running", "s0"))
        .await;
    env.runner.pause(&env.tenant, &id, false).await.unwrap();
    exec.await.unwrap().unwrap();
    let before = env.events(&id).await;
    assert_paused(&env.run(&id).await, &before);

    // Another node with a short lease: after any lease would have expired, its recovery
    // and its scheduler leave the paused run alone.
    let other = node(env.db.store().await, Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(other.recover().await.unwrap(), 0);
    other
        .work(true, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        env.events(&id).await,
        before,
        "the paused run was left alone"
    );
    assert_paused(&env.run(&id).await, &before);

    // Resumed through the other node, it finishes there.
    other.resume(&env.tenant, &id).await.unwrap();
    other
        .work(true, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    let run = env.run(&id).await;
    assert_eq!(assert_ended_once(&run, &env.events(&id).await), "succeeded");
    let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert_eq!(output["count"], 1);
}

both!(dur_18_pausing_a_waiting_run_interrupts_the_wait_and_an_answer_meanwhile_is_replayed);
async fn dur_18_pausing_a_waiting_run_interrupts_the_wait_and_an_answer_meanwhile_is_replayed(
    db: Db,
) {
    let env = env(db).await;
    let p = flaky_steps("", &["{}", r#"{ ask = "ship it?" }"#]);
    let id = env.submit(&p).await;
    let exec = env.execute(&id);
    env.wait(&id, "a question", |e| has(e, "input_required", "s1"))
        .await;
    // Without `now`: a wait for a person does not hold the run.
    env.runner.pause(&env.tenant, &id, false).await.unwrap();
    exec.await.unwrap().unwrap();
    let events = env.events(&id).await;
    assert_paused(&env.run(&id).await, &events);
    assert_eq!(events.last().unwrap().payload["step_id"], "s1");
    assert_eq!(events.last().unwrap().payload["interrupted"], true);
    // The answer is checked and recorded while the run is paused...
    let err = env
        .runner
        .answer(&env.tenant, &id, r#"{"approved": "yes"}"#)
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::InvalidAnswer(_)), "{err}");
    env.runner
        .answer(&env.tenant, &id, r#"{"approved": true}"#)
        .await
        .unwrap();
    assert_eq!(env.run(&id).await.status, "paused");
    // ...and replayed when the step asks again after the resume: nobody is asked twice.
    env.runner.resume(&env.tenant, &id).await.unwrap();
    env.runner.execute(&id).await.unwrap();
    let events = env.events(&id).await;
    let run = env.run(&id).await;
    assert_eq!(assert_ended_once(&run, &events), "succeeded", "{events:#?}");
    assert_eq!(count(&events, "input_required"), 1, "{events:#?}");
    let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert_eq!(output["answer"], json!({"approved": true}));
    assert_eq!(output["attempt"], 1);
}

// ---- `corral serve` hosts, killed with SIGKILL (DUR-13, DUR-15) ----

/// Runs `body` with a server database: SQLite in the server's data directory, and
/// Postgres (a schema of its own) when it is configured.
macro_rules! on_servers {
    ($name:ident) => {
        on_both_dbs!($name, None, Some);
    };
}

const LEASE_MS: u64 = 3000;

/// A [`ServerHost`] on this file's lease with `flaky` uploaded.
struct Host {
    host: ServerHost,
    /// The id of the uploaded `flaky`.
    flaky: String,
}

impl std::ops::Deref for Host {
    type Target = ServerHost;
    fn deref(&self) -> &ServerHost {
        &self.host
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut ServerHost {
        &mut self.host
    }
}

impl Host {
    /// Starts a host and uploads `flaky` to it.
    async fn start(db: Option<String>) -> Host {
        let lease = LEASE_MS.to_string();
        let db = db.map_or(crate::util::Db::Sqlite, crate::util::Db::Postgres);
        let host = ServerHost::start(&db, &[("CORRAL_LEASE_MS", &lease)]);
        let flaky = host.upload("flaky").await;
        Host { host, flaky }
    }

    fn url(&self) -> &str {
        &self.host.url
    }

    /// Submits a run of one `flaky` step per config; the run's id.
    async fn submit(&self, configs: &[Value]) -> String {
        let steps: Vec<Value> = configs
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"name": format!("s{i}"), "plugin": self.flaky, "config": c}))
            .collect();
        let (status, body) = self
            .post(
                "/v1/runs",
                Some(json!({"pipeline": {"name": "pausable", "steps": steps,
                                         "defaults": {"timeout": "120s"}},
                            "input": {"n": 1}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["run_id"].as_str().unwrap().to_string()
    }
}

async fn wait_status(store: &Store, id: &str, status: &str) -> RunRecord {
    for _ in 0..1200 {
        let run = store.run(id).await.unwrap().unwrap();
        if run.status == status {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = store.run(id).await.unwrap().unwrap();
    panic!(
        "run {id} is {} (not {status}): {:#?}",
        run.status,
        store.events_after(id, 0, 10_000).await.unwrap()
    );
}

on_servers!(dur_13_pause_and_resume_across_a_kill_9_of_the_host);
async fn dur_13_pause_and_resume_across_a_kill_9_of_the_host(db: Option<String>) {
    let mut host = Host::start(db).await;
    let store = host.store().await;
    // `done`: paused (committed) before the kill. `asked`: a pause requested from the host
    // mid-attempt, then the kill. `down`: running at the kill, paused while the host is down.
    let done = host
        .submit(&[json!({"sleep_ms": 3000}), json!({"count_key": "s1"})])
        .await;
    wait_events(&store, &done, "s0 running", |e| has(e, "running", "s0")).await;
    let (status, body) = host.post(&format!("/v1/runs/{done}/pause"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["pause_requested"], true);
    wait_status(&store, &done, "paused").await;
    let before = store.events_after(&done, 0, 10_000).await.unwrap();

    let asked = host
        .submit(&[json!({"sleep_ms": 4000}), json!({"count_key": "s1"})])
        .await;
    let down = host
        .submit(&[json!({"sleep_ms": 4000}), json!({"count_key": "s1"})])
        .await;
    for id in [&asked, &down] {
        wait_events(&store, id, "s0 running", |e| has(e, "running", "s0")).await;
    }
    let (status, body) = host.post(&format!("/v1/runs/{asked}/pause"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    host.kill();

    // The host is down: another node takes the pause (its lease has not expired yet, so
    // the request waits for recovery).
    let other = node(store.clone(), Duration::from_millis(LEASE_MS));
    let tenant = store.ensure_tenant("default").await.unwrap();
    other.pause(&tenant, &down, false).await.unwrap();

    // Back up: its recovery pauses both where it would queue them again.
    host.boot();
    for id in [&asked, &down] {
        let run = wait_status(&store, id, "paused").await;
        assert!(run.owner.is_none() && !run.pause_requested, "{run:?}");
        let events = store.events_after(id, 0, 10_000).await.unwrap();
        assert_eq!(events.last().unwrap().kind, "paused", "{events:#?}");
        assert!(
            events
                .iter()
                .any(|e| e.kind == "error" && e.payload["error_code"] == "HOST_CRASH"),
            "{events:#?}"
        );
    }
    // The run paused before the kill stays as it was, past the lease.
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 500)).await;
    assert_eq!(store.events_after(&done, 0, 10_000).await.unwrap(), before);
    assert_eq!(store.run(&done).await.unwrap().unwrap().status, "paused");

    for id in [&done, &asked, &down] {
        let (status, body) = host.post(&format!("/v1/runs/{id}/resume"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["status"], "queued");
    }
    for id in [&done, &asked, &down] {
        let run = wait_status(&store, id, "succeeded").await;
        let events = store.events_after(id, 0, 10_000).await.unwrap();
        assert_eq!(assert_ended_once(&run, &events), "succeeded");
        let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
        assert_eq!(output["count"], 1, "s1 ran once: {output}");
    }
    // The crashed attempt is recorded; the step got another one.
    for id in [&asked, &down] {
        let attempts = store.attempts(id).await.unwrap();
        let s0: Vec<&str> = attempts
            .iter()
            .filter(|a| a.step_idx == 0)
            .map(|a| a.status.as_str())
            .collect();
        assert_eq!(s0, ["crashed", "succeeded"], "{attempts:?}");
    }
}

on_servers!(dur_15_pause_and_resume_over_the_api_and_the_cli_refuse_with_409);
async fn dur_15_pause_and_resume_over_the_api_and_the_cli_refuse_with_409(db: Option<String>) {
    let host = Host::start(db).await;
    let store = host.store().await;
    let corral = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(args)
            .args(["--server", host.url(), "--token", &host.token])
            .env_remove("CORRAL_DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let id = host.submit(&[json!({"sleep_ms": 5000}), json!({})]).await;
    wait_events(&store, &id, "s0 running", |e| has(e, "running", "s0")).await;
    // Resuming a run that is not paused: 409 NOT_PAUSED (exit 2).
    let (status, body) = host.post(&format!("/v1/runs/{id}/resume"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "NOT_PAUSED");
    let (code, err) = corral(&["resume", &id]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("NOT_PAUSED"), "{err}");
    // `corral pause --now`, then `corral resume`.
    let (code, err) = corral(&["pause", &id, "--now"]);
    assert_eq!(code, Some(0), "{err}");
    wait_status(&store, &id, "paused").await;
    let (code, err) = corral(&["resume", &id]);
    assert_eq!(code, Some(0), "{err}");
    let run = wait_status(&store, &id, "succeeded").await;
    assert_eq!(
        assert_ended_once(&run, &store.events_after(&id, 0, 10_000).await.unwrap()),
        "succeeded"
    );
    // A finished run: 409 ALREADY_FINISHED for both (exit 2), and nothing changes.
    for action in ["pause", "resume"] {
        let (status, body) = host.post(&format!("/v1/runs/{id}/{action}"), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {body}");
        assert_eq!(body["error"]["code"], "ALREADY_FINISHED", "{body}");
        let (code, err) = corral(&[action, &id]);
        assert_eq!(code, Some(2), "{action}: {err}");
        assert!(err.contains("ALREADY_FINISHED"), "{err}");
    }
    let (status, body) = host.post("/v1/runs/run_nope/pause?now=true", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = host
        .post(&format!("/v1/runs/{id}/pause?now=maybe"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(store.run(&id).await.unwrap().unwrap().status, "succeeded");
}

/// `corral pause` and `corral resume` on the local database, from other processes, while
/// `corral run` shows the run: it shows the pause, waits, and finishes the run once it is
/// resumed (exit 0).
#[test]
fn dur_19_an_embedded_run_is_paused_and_resumed_from_other_processes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pipeline = dir.path().join("pipeline.toml");
    let plugin = plugin_path("flaky");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"pausable\"\n\
             [[steps]]\nname = \"s0\"\nplugin = \"{p}\"\nconfig = {{ sleep_ms = 5000 }}\n\
             [[steps]]\nname = \"s1\"\nplugin = \"{p}\"\nconfig = {{ count_key = \"s1\" }}\n",
            p = plugin.display()
        ),
    )
    .unwrap();
    let corral = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
        cmd.env("CORRAL_DATA_DIR", &data)
            .env_remove("CORRAL_DATABASE_URL")
            .env_remove("CORRAL_SERVER")
            .env_remove("RUST_LOG");
        cmd
    };
    let mut child = corral()
        .arg("run")
        .arg(&pipeline)
        .args(["--output", "jsonl"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || -> Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    let run_id = loop {
        let event = next();
        if event["type"] == "running" && event["payload"]["step_id"] == "s0" {
            break event["run_id"].as_str().unwrap().to_string();
        }
    };
    // Not paused yet: resume is refused.
    let out = corral().args(["resume", &run_id]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_PAUSED"));
    let out = corral().args(["pause", &run_id]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    loop {
        let event = next();
        assert!(
            !event["payload"]["all_done"].as_bool().unwrap_or(false),
            "{event}"
        );
        if event["type"] == "paused" {
            assert_eq!(event["payload"]["step_id"], "s1", "{event}");
            break;
        }
    }
    let show = corral()
        .args(["runs", "show", &run_id, "--json"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(doc["run"]["status"], "paused", "{doc}");
    let out = corral().args(["resume", &run_id]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rest = Vec::new();
    for line in lines {
        rest.push(serde_json::from_str::<Value>(&line.unwrap()).unwrap());
    }
    assert_eq!(rest.first().unwrap()["type"], "resumed", "{rest:#?}");
    assert_eq!(rest.last().unwrap()["payload"]["status"], "succeeded");
    assert!(child.wait().unwrap().success());
}

on_servers!(runs_show_says_when_a_paused_run_paused);
/// `corral runs show` of a paused run says when it paused (`paused_at` in its JSON), and
/// no longer once it is resumed.
async fn runs_show_says_when_a_paused_run_paused(db: Option<String>) {
    let host = Host::start(db).await;
    let store = host.store().await;
    let show = |id: &str, json: bool| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["runs", "show", id])
            .args(if json { &["--json"][..] } else { &[][..] })
            .args(["--server", host.url(), "--token", &host.token])
            .env_remove("CORRAL_DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let id = host.submit(&[json!({"sleep_ms": 5000}), json!({})]).await;
    wait_events(&store, &id, "s0 running", |e| has(e, "running", "s0")).await;
    let (status, body) = host
        .post(&format!("/v1/runs/{id}/pause?now=true"), None)
        .await;
    assert!(status.is_success(), "{body}");
    let run = wait_status(&store, &id, "paused").await;
    let paused_at = run.paused_at.unwrap();

    let doc: Value = serde_json::from_str(&show(&id, true)).unwrap();
    assert_eq!(doc["run"]["paused_at"], json!(paused_at), "{doc:#}");
    let text = show(&id, false);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("paused "))
        .unwrap_or_else(|| panic!("no paused line: {text}"));
    // RFC 3339 with milliseconds, as the other times of `runs show`.
    let at = line.trim_start().trim_start_matches("paused").trim();
    let ms = humantime::parse_rfc3339(at)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert_eq!(ms, u128::try_from(paused_at).unwrap(), "{text}");

    let (status, body) = host.post(&format!("/v1/runs/{id}/resume"), None).await;
    assert!(status.is_success(), "{body}");
    wait_status(&store, &id, "succeeded").await;
    let doc: Value = serde_json::from_str(&show(&id, true)).unwrap();
    assert_eq!(doc["run"]["paused_at"], Value::Null, "{doc:#}");
    let text = show(&id, false);
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("paused ")),
        "{text}"
    );
}
