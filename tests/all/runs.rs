//! The run lifecycle on real databases: every test in `both!` runs on SQLite and, when
//! CORRAL_TEST_POSTGRES_URL is set (.ci/run sets it), on Postgres in a fresh schema.

use crate::util::*;
use corral::runs::pipeline::{self, Pipeline};
use corral::runs::{RunError, Runner, RunnerConfig};
use corral::store::Event;
use serde_json::{Value, json};
use std::time::Duration;

/// What `both!` tests run on (also imported by other modules as `runs::Db`).
pub(crate) use crate::util::StoreDb as Db;

/// A Postgres URL whose connections use a schema of their own. Schemas are named after
/// the test process; those of processes that are gone are dropped first, so the shared
/// test database does not fill up run after run.
pub(crate) async fn postgres_schema(base: &str) -> String {
    let pid = std::process::id();
    let schema = format!("corral_test_{pid}_{:016x}", rand_u64());
    let admin = sqlx::PgPool::connect(base).await.unwrap();
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'corral\\_test\\_%'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    for name in old {
        let owner: Option<u32> = name
            .strip_prefix("corral_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|p| p.parse().ok());
        // Old-style names carry no pid; processes still running keep theirs.
        let gone = owner.is_none_or(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
        if gone {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
            )))
            .execute(&admin)
            .await;
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

struct Env {
    runner: Runner,
    tenant: String,
    /// Keeps the SQLite directory alive as long as the runner uses it.
    _db: Db,
}

async fn env(db: Db) -> Env {
    let store = db.store().await;
    let tenant = store.ensure_tenant("tests").await.unwrap();
    let runner = Runner::new(
        engine(),
        store,
        RunnerConfig {
            lease: Duration::from_secs(30),
            ..RunnerConfig::default()
        },
    );
    Env {
        runner,
        tenant,
        _db: db,
    }
}

/// A one-step pipeline in `dir` running fixture `fixture` under the manifest `manifest`.
fn one_step_with_manifest(dir: &std::path::Path, fixture: &str, manifest: &str) -> Pipeline {
    std::fs::copy(plugin_path(fixture), dir.join("step.wasm")).unwrap();
    std::fs::write(dir.join("step.corral.toml"), manifest).unwrap();
    pipeline::parse_toml(
        "name = \"one\"\n[[steps]]\nname = \"only\"\nplugin = \"step.wasm\"\n",
        dir,
    )
    .unwrap()
}

fn pipeline(toml: &str) -> Pipeline {
    pipeline::parse_toml(toml, &root().join("target/plugins")).unwrap()
}

impl Env {
    async fn submit(&self, p: &Pipeline, input: &str) -> String {
        self.runner
            .submit(&self.tenant, p, None, input)
            .await
            .unwrap()
            .id
    }

    /// Submits and executes to the end; returns all events.
    async fn run(&self, p: &Pipeline, input: &str) -> (String, Vec<Event>) {
        let id = self.submit(p, input).await;
        self.runner.execute(&id).await.unwrap();
        let events = self.events(&id).await;
        (id, events)
    }

    async fn events(&self, id: &str) -> Vec<Event> {
        let mut all: Vec<Event> = Vec::new();
        loop {
            let after = all.last().map_or(0, |e| e.seq);
            let page = self
                .runner
                .store()
                .events_after(id, after, 10_000)
                .await
                .unwrap();
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// Waits (bounded) until the run has an event of `kind`.
    async fn wait_for(&self, id: &str, kind: &str) -> Vec<Event> {
        for _ in 0..600 {
            let events = self.events(id).await;
            if events.iter().any(|e| e.kind == kind) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no `{kind}` event in run {id}: {:#?}",
            self.events(id).await
        );
    }
}

/// Every run's log: seq 1..n with no gap, exactly one final event, and it is last.
fn assert_well_formed(events: &[Event]) -> &Value {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            i as i64 + 1,
            "seq gap or duplicate at {i}: {events:#?}"
        );
    }
    let finals: Vec<_> = events.iter().filter(|e| e.is_final()).collect();
    assert_eq!(finals.len(), 1, "exactly one final event: {events:#?}");
    let last = events.last().unwrap();
    assert!(last.is_final(), "the final event is the last one");
    &last.payload
}

both!(etl_pipeline_runs_to_success_with_its_events);
async fn etl_pipeline_runs_to_success_with_its_events(db: Db) {
    let env = env(db).await;
    let p = pipeline::load_file(&root().join("examples/etl/pipeline.toml")).unwrap();
    let csv = std::fs::read_to_string(root().join("examples/etl/data/orders.csv")).unwrap();
    let (id, events) = env.run(&p, &json!({"csv": csv}).to_string()).await;
    let last = assert_well_formed(&events);
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["all_done"], true);
    assert_eq!(last["error"], false);
    assert_eq!(events[0].kind, "queued");
    assert_eq!(events[0].payload["steps"].as_array().unwrap().len(), 3);
    let completes: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "complete" && !e.is_final())
        .collect();
    assert_eq!(completes.len(), 3);
    for c in &completes {
        for field in [
            "step_id",
            "agent_type",
            "fuel_used",
            "tokens_used",
            "artifact_id",
            "output_preview",
        ] {
            assert!(
                c.payload.get(field).is_some(),
                "{field} missing in {}",
                c.payload
            );
        }
    }
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    assert_eq!(run.status, "succeeded");
    let step_fuel: i64 = completes
        .iter()
        .map(|c| c.payload["fuel_used"].as_i64().unwrap())
        .sum();
    assert_eq!(run.fuel_used, step_fuel);
    assert_eq!(last["fuel_used"], run.fuel_used);
    let report: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert_eq!(report["row_count"], 40);
    // Cost tracking: the tenant's total includes this run.
    assert!(env.runner.store().tenant_fuel(&env.tenant).await.unwrap() >= run.fuel_used);
}

fn flaky(config: &str, extra: &str) -> Pipeline {
    let backoff = if extra.contains("backoff") {
        ""
    } else {
        "backoff = \"10ms\""
    };
    pipeline(&format!(
        r#"name = "flaky"
[defaults]
{backoff}
max_attempts = 3
{extra}
[[steps]]
name = "only"
plugin = "flaky.wasm"
config = {config}
"#
    ))
}

both!(dur_05_transient_failures_retry_with_backoff_then_succeed);
async fn dur_05_transient_failures_retry_with_backoff_then_succeed(db: Db) {
    let env = env(db).await;
    let (id, events) = env
        .run(&flaky("{ fail_until_attempt = 3 }", ""), "{}")
        .await;
    let last = assert_well_formed(&events);
    assert_eq!(last["status"], "succeeded");
    let errors: Vec<_> = events.iter().filter(|e| e.kind == "error").collect();
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().all(|e| e.payload["will_retry"] == true));
    let retrying: Vec<_> = events.iter().filter(|e| e.kind == "retrying").collect();
    assert_eq!(retrying.len(), 2);
    // Exponential backoff: the second delay doubles the first.
    assert_eq!(retrying[0].payload["delay_ms"], 10);
    assert_eq!(retrying[1].payload["delay_ms"], 20);
    let attempts = env.runner.store().attempts(&id).await.unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.status.as_str())
            .collect::<Vec<_>>(),
        ["failed", "failed", "succeeded"]
    );
    let output: Value = serde_json::from_str(
        &env.runner
            .store()
            .run(&id)
            .await
            .unwrap()
            .unwrap()
            .output
            .unwrap(),
    )
    .unwrap();
    assert_eq!(output["attempt"], 3, "ctx.attempt counts");
}

#[tokio::test]
async fn dur_05_transient_failures_stop_at_max_attempts() {
    let env = env(Db::sqlite()).await;
    let (_, events) = env
        .run(&flaky("{ fail_until_attempt = 10 }", ""), "{}")
        .await;
    let last = assert_well_formed(&events);
    assert_eq!(last["status"], "failed");
    assert_eq!(last["error"], true);
    let errors: Vec<_> = events.iter().filter(|e| e.kind == "error").collect();
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[2].payload["will_retry"], false);
}

#[tokio::test]
async fn traps_are_retried_and_permanent_errors_are_not() {
    let env = env(Db::sqlite()).await;
    let (_, events) = env
        .run(
            &flaky(r#"{ fail_until_attempt = 2, kind = "trap" }"#, ""),
            "{}",
        )
        .await;
    assert_eq!(assert_well_formed(&events)["status"], "succeeded");
    assert_eq!(events.iter().filter(|e| e.kind == "error").count(), 1);

    for kind in ["permanent", "invalid"] {
        let (_, events) = env
            .run(
                &flaky(
                    &format!(r#"{{ fail_until_attempt = 5, kind = "{kind}" }}"#),
                    "",
                ),
                "{}",
            )
            .await;
        let last = assert_well_formed(&events);
        assert_eq!(last["status"], "failed", "{kind}");
        let errors: Vec<_> = events.iter().filter(|e| e.kind == "error").collect();
        assert_eq!(errors.len(), 1, "{kind} is not retried");
        assert_eq!(errors[0].payload["will_retry"], false);
    }
}

#[tokio::test]
async fn res_01_budget_exhaustion_fails_the_step_and_the_run_and_is_not_retried() {
    let env = env(Db::sqlite()).await;
    let p = flaky("{ spin = true }", "fuel = 50_000_000");
    let (id, events) = env.run(&p, "{}").await;
    let last = assert_well_formed(&events);
    assert_eq!(last["status"], "failed");
    assert_eq!(last["error_code"], "BUDGET_EXHAUSTED");
    let errors: Vec<_> = events.iter().filter(|e| e.kind == "error").collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].payload["error_code"], "BUDGET_EXHAUSTED");
    let steps = env.runner.store().steps(&id).await.unwrap();
    assert_eq!(steps[0].status, "failed", "the step never stays running");
}

#[tokio::test]
async fn the_run_fuel_budget_spans_all_steps() {
    let env = env(Db::sqlite()).await;
    let p = pipeline(
        r#"name = "budget"
[budget]
fuel = 60_000_000
[[steps]]
name = "first"
plugin = "echo.wasm"
[[steps]]
name = "second"
plugin = "flaky.wasm"
config = { spin = true }
"#,
    );
    let (_, events) = env.run(&p, "{}").await;
    let last = assert_well_formed(&events);
    assert_eq!(last["status"], "failed");
    assert_eq!(last["error_code"], "BUDGET_EXHAUSTED");
    assert!(
        last["fuel_used"].as_i64().unwrap() <= 60_000_000 + 1_000_000,
        "{last}"
    );
}

both!(feedback_loop_sends_failures_back_and_is_bounded);
async fn feedback_loop_sends_failures_back_and_is_bounded(db: Db) {
    let env = env(db).await;
    let p = pipeline(
        r#"name = "loop"
[[steps]]
name = "developer"
plugin = "flaky.wasm"
[[steps]]
name = "tester"
plugin = "flaky.wasm"
config = { fail_until_attempt = 99, kind = "permanent" }
on_failure = { send_back_to = "developer", max_loops = 2 }
"#,
    );
    let (id, events) = env.run(&p, r#"{"task":"x"}"#).await;
    let last = assert_well_formed(&events);
    assert_eq!(last["status"], "failed");
    let loops: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "retrying" && e.payload["reason"] == "feedback")
        .collect();
    assert_eq!(loops.len(), 2, "max_loops bounds the loop");
    assert_eq!(loops[0].payload["step_id"], "developer");
    let developer_runs = events
        .iter()
        .filter(|e| e.kind == "complete" && e.payload["step_id"] == "developer")
        .count();
    assert_eq!(developer_runs, 3);
    let steps = env.runner.store().steps(&id).await.unwrap();
    assert_eq!(steps[0].loops, 2);
    // The developer's re-runs saw the tester's failure as ctx.feedback.
    let preview = events
        .iter()
        .rfind(|e| e.kind == "complete" && e.payload["step_id"] == "developer")
        .unwrap()
        .payload["output_preview"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        preview.contains("from_step") && preview.contains("tester"),
        "{preview}"
    );
}

both!(ask_waits_for_an_answer_refuses_a_wrong_one_and_resumes);
async fn ask_waits_for_an_answer_refuses_a_wrong_one_and_resumes(db: Db) {
    let env = env(db).await;
    let p = flaky(r#"{ ask = "Ship it?" }"#, "");
    let id = env.submit(&p, r#"{"n":1}"#).await;
    let exec = {
        let (runner, id) = (env.runner.clone(), id.clone());
        tokio::spawn(async move { runner.execute(&id).await })
    };
    let events = env.wait_for(&id, "input_required").await;
    let asked = events.iter().find(|e| e.kind == "input_required").unwrap();
    assert_eq!(asked.payload["question"], "Ship it?");
    assert_eq!(
        asked.payload["answer_schema"]["required"],
        json!(["approved"])
    );
    assert_eq!(
        env.runner.store().run(&id).await.unwrap().unwrap().status,
        "waiting"
    );

    let wrong = env
        .runner
        .answer(&env.tenant, &id, r#"{"approved":"yes"}"#)
        .await
        .unwrap_err();
    assert!(matches!(wrong, RunError::InvalidAnswer(_)), "{wrong}");
    assert!(
        wrong.to_string().contains("/approved"),
        "the reason names the field: {wrong}"
    );
    assert_eq!(
        env.runner.store().run(&id).await.unwrap().unwrap().status,
        "waiting"
    );

    env.runner
        .answer(&env.tenant, &id, r#"{"approved":true}"#)
        .await
        .unwrap();
    exec.await.unwrap().unwrap();
    let events = env.events(&id).await;
    assert_eq!(assert_well_formed(&events)["status"], "succeeded");
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert_eq!(output["answer"], json!({"approved": true}));
}

both!(artifacts_and_run_state_are_real);
async fn artifacts_and_run_state_are_real(db: Db) {
    let env = env(db).await;
    let p = pipeline(
        r#"name = "stateful"
[[steps]]
name = "one"
plugin = "flaky.wasm"
config = { count_key = "visits", artifact = true }
[[steps]]
name = "two"
plugin = "flaky.wasm"
config = { count_key = "visits" }
"#,
    );
    let (id, events) = env.run(&p, r#"{"hello":"world"}"#).await;
    assert_eq!(assert_well_formed(&events)["status"], "succeeded");
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert_eq!(output["count"], 2, "state is shared by the run's steps");
    let artifacts = env.runner.store().artifacts(&id).await.unwrap();
    assert_eq!(artifacts.len(), 1);
    assert_eq!(artifacts[0].name, "input.json");
    assert_eq!(artifacts[0].media_type, "application/json");
    assert!(artifacts[0].digest.starts_with("sha256:"));
    let (_, content) = env
        .runner
        .store()
        .artifact_content(&env.tenant, &artifacts[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&content).unwrap(),
        json!({"hello": "world"})
    );
    assert!(
        events
            .iter()
            .any(|e| e.kind == "artifact" && e.payload["artifact_id"] == artifacts[0].id.as_str())
    );
    let one_done = events
        .iter()
        .find(|e| e.kind == "complete" && e.payload["step_id"] == "one")
        .unwrap();
    assert_eq!(one_done.payload["artifact_id"], artifacts[0].id.as_str());
    // Another tenant cannot read it.
    let other = env
        .runner
        .store()
        .ensure_tenant("someone-else")
        .await
        .unwrap();
    assert!(
        env.runner
            .store()
            .artifact_content(&other, &artifacts[0].id)
            .await
            .unwrap()
            .is_none()
    );
}

both!(dur_06_cancel_in_every_state_ends_the_run_once);
async fn dur_06_cancel_in_every_state_ends_the_run_once(db: Db) {
    let env = env(db).await;
    let cancelled = |events: &[Event]| {
        let last = assert_well_formed(events);
        assert_eq!(last["status"], "cancelled", "{events:#?}");
        assert!(events.iter().any(|e| e.kind == "cancelled"));
    };

    // Queued: nobody has claimed it.
    let id = env.submit(&flaky("{}", ""), "{}").await;
    env.runner.cancel(&env.tenant, &id).await.unwrap();
    cancelled(&env.events(&id).await);
    env.runner.execute(&id).await.unwrap();
    cancelled(&env.events(&id).await);

    // Running (burning CPU), waiting (for an answer), retrying (in a long backoff). The
    // spinner's fuel lasts minutes, so the cancel, not the fuel, is what stops it.
    for (config, extra, wait_for) in [
        ("{ spin = true }", "fuel = 10_000_000_000_000", "running"),
        (r#"{ ask = "ok?" }"#, "", "input_required"),
        ("{ fail_until_attempt = 9 }", "backoff = \"1h\"", "retrying"),
    ] {
        let id = env.submit(&flaky(config, extra), "{}").await;
        let exec = {
            let (runner, id) = (env.runner.clone(), id.clone());
            tokio::spawn(async move { runner.execute(&id).await })
        };
        env.wait_for(&id, wait_for).await;
        let started = std::time::Instant::now();
        env.runner.cancel(&env.tenant, &id).await.unwrap();
        exec.await.unwrap().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{config}: {:?}",
            started.elapsed()
        );
        cancelled(&env.events(&id).await);
        let steps = env.runner.store().steps(&id).await.unwrap();
        assert!(
            matches!(steps[0].status.as_str(), "cancelled" | "failed" | "skipped"),
            "{steps:?}"
        );
    }

    // Finished: refused, and nothing changes.
    let (id, before) = env.run(&flaky("{}", ""), "{}").await;
    let err = env.runner.cancel(&env.tenant, &id).await.unwrap_err();
    assert!(matches!(err, RunError::AlreadyFinished(..)), "{err}");
    assert_eq!(env.events(&id).await, before);
}

#[tokio::test]
async fn res_13_cancel_while_the_guest_is_inside_a_host_call() {
    let env = env(Db::sqlite()).await;
    let p = pipeline("name = \"sleepy\"\n[[steps]]\nname = \"sleep\"\nplugin = \"sleeper.wasm\"\n");
    let id = env.submit(&p, r#"{"secs": 3600}"#).await;
    let exec = {
        let (runner, id) = (env.runner.clone(), id.clone());
        tokio::spawn(async move { runner.execute(&id).await })
    };
    env.wait_for(&id, "running").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    env.runner.cancel(&env.tenant, &id).await.unwrap();
    exec.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        assert_well_formed(&env.events(&id).await)["status"],
        "cancelled"
    );
}

both!(dur_07_subscribers_see_committed_events_in_order_from_any_point);
async fn dur_07_subscribers_see_committed_events_in_order_from_any_point(db: Db) {
    let env = env(db).await;
    let p = flaky("{ fail_until_attempt = 2 }", "");
    let id = env.submit(&p, "{}").await;
    // Two live subscribers before the run starts, one from the start and one from seq 1.
    let mut a = env.runner.subscribe(&env.tenant, &id, 0).await.unwrap();
    let mut b = env.runner.subscribe(&env.tenant, &id, 1).await.unwrap();
    env.runner.execute(&id).await.unwrap();
    let mut seen_a = Vec::new();
    while let Some(e) = a.recv().await {
        seen_a.push(e);
    }
    let mut seen_b = Vec::new();
    while let Some(e) = b.recv().await {
        seen_b.push(e);
    }
    let stored = env.events(&id).await;
    assert_well_formed(&stored);
    assert_eq!(seen_a, stored, "live delivery equals the committed log");
    assert_eq!(seen_b, stored[1..].to_vec());
    // A late subscriber replays and the stream ends after the final event.
    let mut late = env.runner.subscribe(&env.tenant, &id, 3).await.unwrap();
    let mut seen_late = Vec::new();
    while let Some(e) = late.recv().await {
        seen_late.push(e);
    }
    assert_eq!(seen_late, stored[3..].to_vec());
    // Another tenant's subscription is refused as not found.
    let other = env.runner.store().ensure_tenant("intruder").await.unwrap();
    assert!(matches!(
        env.runner.subscribe(&other, &id, 0).await,
        Err(RunError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_pipeline_with_a_bad_plugin_is_refused_before_anything_runs() {
    let env = env(Db::sqlite()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.wasm"), b"not wasm").unwrap();
    let p = pipeline::parse_toml(
        "name = \"bad\"\n[[steps]]\nname = \"x\"\nplugin = \"bad.wasm\"\n",
        dir.path(),
    )
    .unwrap();
    let err = env
        .runner
        .submit(&env.tenant, &p, None, "{}")
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::InvalidPipeline(_)), "{err}");
    assert!(err.to_string().contains("INVALID_COMPONENT"), "{err}");
    let runs = env
        .runner
        .store()
        .list_runs(&env.tenant, None, 10, None)
        .await
        .unwrap();
    assert!(runs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engineering_loop_tester_fails_the_first_draft_and_passes_after_feedback() {
    let env = env(Db::sqlite()).await;
    let p = pipeline::load_file(&root().join("examples/engineering-loop/pipeline.toml")).unwrap();
    let input =
        std::fs::read_to_string(root().join("examples/engineering-loop/input.json")).unwrap();
    let (id, events) = env.run(&p, &input).await;
    let last = assert_well_formed(&events);
    assert_eq!(last["status"], "succeeded", "{events:#?}");
    let tester_errors: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "error" && e.payload["step_id"] == "tester")
        .collect();
    assert_eq!(tester_errors.len(), 1, "the first draft fails the tests");
    assert!(
        tester_errors[0].payload["detail"]["failures"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == "retrying" && e.payload["reason"] == "feedback")
            .count(),
        1
    );
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert_eq!(output["failed"], 0);
    assert_eq!(
        output["revision"], 2,
        "the developer used the feedback once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_is_fifo_per_tenant_and_fair_across_tenants() {
    let db = Db::sqlite();
    let store = db.store().await;
    let a = store.ensure_tenant("a").await.unwrap();
    let b = store.ensure_tenant("b").await.unwrap();
    let runner = Runner::new(
        engine(),
        store,
        RunnerConfig {
            max_concurrent_runs: 1,
            ..RunnerConfig::default()
        },
    );
    let p = flaky("{}", "");
    let mut a_runs = Vec::new();
    for _ in 0..4 {
        a_runs.push(runner.submit(&a, &p, None, "{}").await.unwrap().id);
    }
    let b_run = runner.submit(&b, &p, None, "{}").await.unwrap().id;
    runner
        .work(true, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    let mut started = Vec::new();
    for id in a_runs.iter().chain([&b_run]) {
        let run = runner.store().run(id).await.unwrap().unwrap();
        assert_eq!(run.status, "succeeded");
        started.push((run.claim_seq.unwrap(), id.clone()));
    }
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, id)| id.as_str()).collect();
    // A's first run, then B's (B had nothing running), then A's in submission order.
    assert_eq!(order[0], a_runs[0]);
    assert_eq!(order[1], b_run);
    assert_eq!(
        &order[2..],
        &[a_runs[1].as_str(), a_runs[2].as_str(), a_runs[3].as_str()]
    );
}

/// A directory with flaky.wasm (granted `grants` by its manifest, if any) and a pipeline
/// whose [tools] table names text_tools.wasm as `text`.
fn tool_setup(
    grants: Option<&str>,
    step_tools: &str,
    call: Value,
) -> (tempfile::TempDir, Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin_path("flaky"), dir.path().join("agent.wasm")).unwrap();
    if let Some(grants) = grants {
        std::fs::write(
            dir.path().join("agent.corral.toml"),
            format!("[grants]\ntools = {grants}\n"),
        )
        .unwrap();
    }
    let text = format!(
        "name = \"tools\"\n[tools]\ntext = \"{}\"\n[[steps]]\nname = \"agent\"\nplugin = \"agent.wasm\"\ntools = {step_tools}\nconfig = {{ call_tool = {} }}\n",
        plugin_path("text_tools").display(),
        toml_inline(&call)
    );
    let p = pipeline::parse_toml(&text, dir.path()).unwrap();
    (dir, p)
}

fn toml_inline(v: &Value) -> String {
    match v {
        Value::Object(m) => format!(
            "{{ {} }}",
            m.iter()
                .map(|(k, v)| format!("{k} = {}", toml_inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(toml_inline).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_tool_is_called_in_its_own_sandbox_and_its_fuel_counts_for_the_run() {
    let env = env(Db::sqlite()).await;
    let call = json!({"name": "word_count", "arguments": {"text": "one two three"}});
    let (_dir, p) = tool_setup(Some("[\"text\"]"), "[\"text\"]", call);
    let (id, events) = env.run(&p, "{}").await;
    assert_eq!(assert_well_formed(&events)["status"], "succeeded");
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert_eq!(output["tool_result"]["words"], 3, "{output}");
    let calls: Vec<_> = events.iter().filter(|e| e.kind == "tool_call").collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].payload["phase"], "started");
    assert_eq!(calls[0].payload["tool"], "text/word_count");
    assert_eq!(calls[1].payload["phase"], "completed");
    assert_eq!(calls[1].payload["status"], "ok");
    let tool_fuel = calls[1].payload["fuel_used"].as_i64().unwrap();
    assert!(tool_fuel > 0);
    let step_fuel = events
        .iter()
        .find(|e| e.kind == "complete" && !e.is_final())
        .unwrap()
        .payload["fuel_used"]
        .as_i64()
        .unwrap();
    assert_eq!(
        run.fuel_used,
        step_fuel + tool_fuel,
        "the tool's fuel is charged to the run"
    );
}

/// RES-15 for tools: the step's deadline stops a tool call mid-flight. The call runs on
/// the step's clock, so it stops with the step; it is charged the fuel it burnt (about 2 s
/// of a tight loop), which its `completed` event reports, and that comes before the step's
/// failure. The run's fuel in the database, in its final event and on the tenant agree:
/// a guest cannot dodge the charge by timing out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn res_15_a_tool_call_cut_off_by_the_steps_deadline_is_charged_what_it_burnt() {
    let env = env(Db::sqlite()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin_path("flaky"), dir.path().join("agent.wasm")).unwrap();
    std::fs::write(
        dir.path().join("agent.corral.toml"),
        "[grants]\ntools = [\"spin\"]\n",
    )
    .unwrap();
    let fuel: i64 = 900_000_000_000;
    let text = format!(
        "name = \"spin\"\n[tools]\nspin = \"{}\"\n[defaults]\nmax_attempts = 1\n[[steps]]\nname = \"agent\"\nplugin = \"agent.wasm\"\ntools = [\"spin\"]\nfuel = {fuel}\ntimeout = \"2s\"\nconfig = {{ call_tool = {{ name = \"spin\", arguments = {{}} }} }}\n",
        plugin_path("spin_tool").display(),
    );
    let p = pipeline::parse_toml(&text, dir.path()).unwrap();
    let (id, events) = env.run(&p, "{}").await;
    let end = assert_well_formed(&events);
    assert_eq!(end["status"], "failed", "{end}");
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    let completed = events
        .iter()
        .position(|e| e.kind == "tool_call" && e.payload["phase"] == "completed")
        .unwrap_or_else(|| panic!("no completed tool call: {kinds:?}"));
    let error = events.iter().position(|e| e.kind == "error").unwrap();
    assert!(completed < error, "{kinds:?}");
    let call = &events[completed].payload;
    // Stopped by its own check of the step's clock, or by the step's end (whichever the
    // host saw first).
    assert!(
        ["DEADLINE_EXCEEDED", "CANCELLED"].contains(&call["error_code"].as_str().unwrap_or("")),
        "{call}"
    );
    let burnt = call["fuel_used"].as_i64().unwrap();
    assert!(burnt > 0 && burnt < fuel, "{call}");
    assert!(run.fuel_used >= burnt, "{} < {burnt}", run.fuel_used);
    assert_eq!(end["fuel_used"].as_i64(), Some(run.fuel_used), "{end}");
    let tenants = env.runner.store().tenants().await.unwrap();
    let tenant = tenants.iter().find(|t| t.id == env.tenant).unwrap();
    assert!(tenant.fuel_used >= burnt, "{}", tenant.fuel_used);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_invalid_tool_arguments_never_reach_the_tool() {
    let env = env(Db::sqlite()).await;
    let call = json!({"name": "word_count", "arguments": {"txt": 1}});
    let (_dir, p) = tool_setup(Some("[\"text\"]"), "[\"text\"]", call);
    let (id, events) = env.run(&p, "{}").await;
    assert_eq!(assert_well_formed(&events)["status"], "succeeded");
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    let err = output["tool_error"].as_str().unwrap();
    assert!(
        err.contains("invalid input") && err.contains("arguments for `text/word_count`"),
        "{err}"
    );
    assert!(
        !events.iter().any(|e| e.kind == "tool_call"),
        "the tool never ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_tool_is_refused_at_load_naming_the_missing_grant() {
    let env = env(Db::sqlite()).await;
    let call = json!({"name": "word_count", "arguments": {"text": "x"}});
    let (_dir, p) = tool_setup(None, "[\"text\"]", call);
    let err = env
        .runner
        .submit(&env.tenant, &p, None, "{}")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("steps[0].tools[0]") && msg.contains("missing grant `tools = [\"text\"]`"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_can_only_narrow_its_plugins_grants() {
    let env = env(Db::sqlite()).await;
    // The manifest grants `text`, but this step lists no tools: the call is refused.
    let call = json!({"name": "word_count", "arguments": {"text": "x"}});
    let (_dir, p) = tool_setup(Some("[\"text\"]"), "[]", call);
    let (id, events) = env.run(&p, "{}").await;
    assert_eq!(assert_well_formed(&events)["status"], "succeeded");
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    let err = output["tool_error"].as_str().unwrap();
    assert!(
        err.contains("not granted: tool `word_count` (this step may call: no tools)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_research_example_calls_its_granted_tools() {
    let env = env(Db::sqlite()).await;
    let p = pipeline::load_file(&root().join("examples/research/pipeline.toml")).unwrap();
    let input = std::fs::read_to_string(root().join("examples/research/input.json")).unwrap();
    let (id, events) = env.run(&p, &input).await;
    assert_eq!(
        assert_well_formed(&events)["status"],
        "succeeded",
        "{events:#?}"
    );
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let brief: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert!(brief["words"].as_u64().unwrap() > 40, "{brief}");
    assert!(
        brief["keywords"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "sandboxes" || k == "plugin" || k == "budget"),
        "{brief}"
    );
    assert_eq!(events.iter().filter(|e| e.kind == "tool_call").count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_grants_are_read_only_under_work_in_and_nothing_else_is_visible() {
    let env = env(Db::sqlite()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/a.txt"), "alpha").unwrap();
    std::fs::write(dir.path().join("ref.csv"), "x,y\n1,2\n").unwrap();
    std::fs::write(dir.path().join("private.txt"), "not granted").unwrap();
    let p = one_step_with_manifest(
        dir.path(),
        "file_reader",
        "[grants]\nfiles = [\"data\", \"ref.csv\"]\n",
    );
    let input = json!({"paths": ["/work/in", "/work/in/data/a.txt", "/work/in/ref.csv",
        "/work/in/data", "/work/in/private.txt", "/work/in/../private.txt"]});
    let (id, events) = env.run(&p, &input.to_string()).await;
    assert_eq!(assert_well_formed(&events)["status"], "succeeded");
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let out: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    let r = &out["results"];
    assert_eq!(r[0]["list"], json!(["data", "ref.csv"]), "{out}");
    assert_eq!(r[1]["read"], "alpha");
    assert_eq!(r[2]["read"], "x,y\n1,2\n");
    assert_eq!(r[3]["list"], json!(["a.txt"]));
    assert!(r[4]["read"].is_null() && r[5]["read"].is_null(), "{out}");
    for (i, result) in r.as_array().unwrap().iter().enumerate() {
        assert_eq!(result["write_ok"], false, "read-only: {i} {result}");
    }
    // The host's files are untouched.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/a.txt")).unwrap(),
        "alpha"
    );
    assert!(!dir.path().join("data/written-by-guest.txt").exists());
    assert!(!dir.path().join("ref.written").exists());
}

both!(res_15_fuel_burnt_until_the_deadline_is_charged_to_the_run);
async fn res_15_fuel_burnt_until_the_deadline_is_charged_to_the_run(db: Db) {
    // A guest that spins until its wall clock stops it burns fuel the whole time; the
    // run is charged for it, so the deadline is no way around the fuel budget.
    let env = env(db).await;
    let p = flaky(
        "{ spin = true }",
        "fuel = 10_000_000_000_000\ntimeout = \"1s\"",
    );
    let (id, events) = env.run(&p, "{}").await;
    let last = assert_well_formed(&events);
    assert_eq!(last["status"], "failed");
    assert_eq!(last["error_code"], "DEADLINE_EXCEEDED");
    // Even a starved guest on a loaded machine runs millions of instructions a second;
    // before the fix the charge was the ~2,000 units burnt before the loop began.
    let charged = last["fuel_used"].as_i64().unwrap();
    assert!(charged > 50_000_000, "{last}");
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    assert_eq!(run.fuel_used, charged);
}

both!(sse_09_every_log_line_within_the_budget_is_an_event_in_order);
async fn sse_09_every_log_line_within_the_budget_is_an_event_in_order(db: Db) {
    let env = env(db).await;
    // 5,000 lines of about 100 bytes: well within the 1 MiB / 10,000-line log budget.
    let p = flaky("{ log_lines = 5000 }", "");
    let (_, events) = env.run(&p, "{}").await;
    assert_eq!(assert_well_formed(&events)["status"], "succeeded");
    let lines: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "log" && e.payload["source"] == "log")
        .map(|e| e.payload["message"].as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 5000, "no line is lost");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("line {i:06} ")), "{i}: {line}");
    }
    assert!(
        !events.iter().any(|e| e.kind == "log"
            && e.payload["message"]
                .as_str()
                .is_some_and(|m| m.contains("truncated"))),
        "no truncation notice within the budget"
    );

    // Past the budget: every line up to it, then exactly one notice.
    let p = flaky("{ log_lines = 12000 }", "");
    let (_, events) = env.run(&p, "{}").await;
    assert_eq!(assert_well_formed(&events)["status"], "succeeded");
    let kept = events
        .iter()
        .filter(|e| e.kind == "log" && e.payload["source"] == "log")
        .count();
    assert_eq!(kept, corral::capabilities::log::MAX_LINES);
    let notices: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "log" && e.payload["source"] == "host")
        .collect();
    assert_eq!(notices.len(), 1, "{notices:#?}");
    assert!(
        notices[0].payload["message"]
            .as_str()
            .unwrap()
            .contains("truncated")
    );
}

both!(sse_09_progress_before_an_artifact_or_a_question_is_committed_before_it);
async fn sse_09_progress_before_an_artifact_or_a_question_is_committed_before_it(db: Db) {
    let env = env(db).await;
    let p = flaky(
        "{ log_lines = 3, progress_first = 40, artifact = true, ask = \"Ship it?\" }",
        "",
    );
    let id = env.submit(&p, "{}").await;
    let exec = {
        let (runner, id) = (env.runner.clone(), id.clone());
        tokio::spawn(async move { runner.execute(&id).await })
    };
    env.wait_for(&id, "input_required").await;
    env.runner
        .answer(&env.tenant, &id, r#"{"approved":true}"#)
        .await
        .unwrap();
    exec.await.unwrap().unwrap();
    let events = env.events(&id).await;
    assert_eq!(assert_well_formed(&events)["status"], "succeeded");
    let position = |pred: &dyn Fn(&Event) -> bool| {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("missing event: {events:#?}"))
    };
    let last_log = events
        .iter()
        .rposition(|e| e.kind == "log" && e.payload["source"] == "log")
        .unwrap();
    let progress = position(&|e| e.kind == "running" && e.payload["progress_pct"] == 40);
    let artifact = position(&|e| e.kind == "artifact");
    let asked = position(&|e| e.kind == "input_required");
    assert!(
        last_log < progress && progress < artifact && artifact < asked,
        "log {last_log}, progress {progress}, artifact {artifact}, ask {asked}: {events:#?}"
    );
}

both!(res_17_what_a_guest_hands_the_host_to_store_is_capped);
async fn res_17_what_a_guest_hands_the_host_to_store_is_capped(db: Db) {
    let env = env(db).await;
    let p = flaky(
        r#"{ artifact_names = ["../x", "/etc/x", "a\u0000b", "..", "ok.txt"], state_fill = { keys = 300, bytes = 10 }, schema_bytes = 100000 }"#,
        "",
    );
    let (id, events) = env.run(&p, "{}").await;
    assert_eq!(assert_well_formed(&events)["status"], "succeeded");
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    let results = output["artifact_results"].as_array().unwrap();
    for bad in &results[..4] {
        assert!(
            bad["error"].as_str().unwrap().contains("artifact name"),
            "{output}"
        );
    }
    assert!(results[4]["ok"].is_string(), "{output}");
    let names: Vec<String> = env
        .runner
        .store()
        .artifacts(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["ok.txt"], "no refused name was stored");
    assert_eq!(output["state_stored"], 256, "{output}");
    assert!(
        output["state_error"].as_str().unwrap().contains("256 keys"),
        "{output}"
    );
    assert!(
        output["ask_error"]
            .as_str()
            .unwrap()
            .contains("answer schema"),
        "{output}"
    );
    assert!(
        !events.iter().any(|e| e.kind == "input_required"),
        "the over-size question was never asked"
    );

    // Values are capped in total, not only per key.
    let p = flaky("{ state_fill = { keys = 40, bytes = 60000 } }", "");
    let (id, _) = env.run(&p, "{}").await;
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert_eq!(
        output["state_stored"], 17,
        "17 x 60,000 bytes fit 1 MiB: {output}"
    );
    assert!(
        output["state_error"].as_str().unwrap().contains("bytes"),
        "{output}"
    );

    // A 2 MiB error message is cut before it is stored or streamed.
    let p = flaky("{ error_bytes = 2097152 }", "");
    let (id, events) = env.run(&p, "{}").await;
    let last = assert_well_formed(&events);
    assert_eq!(last["status"], "failed");
    let run = env.runner.store().run(&id).await.unwrap().unwrap();
    let message = run.error_message.unwrap();
    assert!(message.len() < 20_000, "{}", message.len());
    for e in &events {
        assert!(
            e.payload.to_string().len() <= corral::store::MAX_EVENT_BYTES,
            "{} event of {} bytes",
            e.kind,
            e.payload.to_string().len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn res_16_a_manifest_sets_its_steps_scratch_quota() {
    let env = env(Db::sqlite()).await;
    let dir = tempfile::tempdir().unwrap();
    let p = one_step_with_manifest(
        dir.path(),
        "disk_filler",
        "[limits]\nscratch_bytes = \"2MiB\"\nscratch_entries = 7\n",
    );
    for (input, done) in [
        (json!({"mode": "files", "count": 100}), 7),
        (json!({"mode": "write", "bytes": 16 << 20}), 2 << 20),
    ] {
        let (id, events) = env.run(&p, &input.to_string()).await;
        assert_eq!(assert_well_formed(&events)["status"], "succeeded");
        let run = env.runner.store().run(&id).await.unwrap().unwrap();
        let out: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
        assert!(out["error"].is_string(), "{out}");
        assert!(out["done"].as_u64().unwrap() <= done, "{out}");
        assert!(out["bytes_on_disk"].as_u64().unwrap() <= 2 << 20, "{out}");
    }
}

both!(concurrent_runs_each_end_once_with_contiguous_events_under_group_commit);
/// Many runs at once share the store's group commits: whatever the mix (success, failure
/// for good, retries, a cancel racing each run's end), each run's log is seq 1..n with
/// one final event, its status is that event's, and nothing is written after it.
async fn concurrent_runs_each_end_once_with_contiguous_events_under_group_commit(db: Db) {
    let env = env(db).await;
    let runner = Runner::new(
        engine(),
        env.runner.store().clone(),
        RunnerConfig {
            max_concurrent_runs: 8,
            ..RunnerConfig::default()
        },
    );
    let kinds = [
        flaky("{}", ""),
        flaky("{ fail_until_attempt = 2 }", ""),
        flaky("{ permanent = true }", ""),
        pipeline(
            "name = \"echo2\"\n[[steps]]\nname = \"a\"\nplugin = \"echo.wasm\"\n\
             [[steps]]\nname = \"b\"\nplugin = \"echo.wasm\"\n",
        ),
    ];
    let mut ids = Vec::new();
    for i in 0..32 {
        let p = &kinds[i % kinds.len()];
        ids.push(runner.submit(&env.tenant, p, None, "{}").await.unwrap().id);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = {
        let (runner, stop) = (runner.clone(), stop.clone());
        tokio::spawn(async move { runner.work(false, stop).await })
    };
    // Every fifth run gets a cancel at some point of its life (queued, running, or ended).
    for id in ids.iter().step_by(5) {
        let _ = runner.cancel(&env.tenant, id).await;
    }
    for id in &ids {
        let mut events = runner.subscribe(&env.tenant, id, 0).await.unwrap();
        while events.recv().await.is_some() {}
    }
    stop.cancel();
    worker.await.unwrap().unwrap();
    for id in &ids {
        let stored = env.events(id).await;
        let last = assert_well_formed(&stored);
        let run = runner.store().run(id).await.unwrap().unwrap();
        assert!(run.is_terminal(), "{id} ended: {}", run.status);
        assert_eq!(last["status"], run.status.as_str(), "{id}: {stored:#?}");
        assert_eq!(
            run.next_seq - 1,
            stored.len() as i64,
            "nothing after the end"
        );
    }
}

both!(claiming_several_runs_at_once_takes_tenants_in_turn);
/// One claim for several free slots takes the runs a claim per slot would: round-robin
/// across tenants, each tenant's oldest first.
async fn claiming_several_runs_at_once_takes_tenants_in_turn(db: Db) {
    let env = env(db).await;
    let store = env.runner.store();
    let b = store.ensure_tenant("b").await.unwrap();
    let p = flaky("{}", "");
    let mut a_runs = Vec::new();
    for _ in 0..3 {
        a_runs.push(env.submit(&p, "{}").await);
    }
    let b_run = env.runner.submit(&b, &p, None, "{}").await.unwrap().id;
    let claimed = store
        .claim_runs("host_test", Duration::from_secs(30), 3)
        .await
        .unwrap();
    let mut got: Vec<&str> = claimed.iter().map(|r| r.id.as_str()).collect();
    got.sort();
    let mut want = vec![a_runs[0].as_str(), a_runs[1].as_str(), b_run.as_str()];
    want.sort();
    assert_eq!(got, want, "A's two oldest and B's one, not A's third");
    assert!(claimed.iter().all(|r| r.status == "running"));
    let rest = store
        .claim_runs("host_test", Duration::from_secs(30), 3)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, a_runs[2]);
}
