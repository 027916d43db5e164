//! Schedules (DUR-31...): real `corral serve` processes on SQLite and, when
//! CORRAL_TEST_POSTGRES_URL is set, Postgres. A schedule fires runs linked to it; two
//! servers on one database fire each slot exactly once; after a downtime `catch_up`
//! decides; `overlap` decides while the previous run is active; bad expressions and other
//! tenants are refused.

use crate::util::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A fast scheduler tick, so tests wait less for each slot.
const TICK: (&str, &str) = ("CORRAL_SCHEDULE_TICK_MS", "100");

/// Where a server on `db` keeps its database: the data dir's SQLite file, or Postgres.
fn database_url(db: &Db, data: &tempfile::TempDir) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}/corral.db", data.path().display()),
        Db::Postgres(url) => url.clone(),
    }
}

/// Starts `corral serve` on `data` with `db` (Postgres by URL; SQLite in the data dir).
fn serve(db: &Db, data: std::sync::Arc<tempfile::TempDir>) -> Server {
    match db {
        Db::Sqlite => Server::start_in(data, &[TICK]),
        Db::Postgres(url) => Server::start_in(data, &[TICK, ("CORRAL_DATABASE_URL", url)]),
    }
}

/// A token for `tenant` (made if missing) with `role`, offline on the server's database.
fn token(db: &Db, server: &Server, tenant: &str, role: &str) -> String {
    let url = database_url(db, &server.data);
    token_with(
        server.data.path(),
        &[("CORRAL_DATABASE_URL", url)],
        tenant,
        role,
    )
}

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    fn new(server: &Server, token: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            url: server.url.clone(),
            token: token.to_string(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        status_and_body(r.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Uploads a built plugin; its `name@version`.
    async fn upload(&self, plugin: &str) -> String {
        let resp = self
            .http
            .post(format!("{}/v1/plugins", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/wasm")
            .body(std::fs::read(plugin_path(plugin)).unwrap())
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_body(resp).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        format!(
            "{}@{}",
            body["name"].as_str().unwrap(),
            body["version"].as_str().unwrap()
        )
    }

    /// Creates a schedule; its record.
    async fn schedule(&self, body: Value) -> Value {
        let (status, record) = self.call(Method::POST, "/v1/schedules", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{record}");
        record
    }

    async fn detail(&self, id: &str) -> Value {
        self.get(&format!("/v1/schedules/{id}")).await
    }

    async fn fires(&self, id: &str) -> Vec<Value> {
        self.detail(id).await["fires"].as_array().unwrap().clone()
    }

    /// The schedule's runs (from the runs list), oldest slot first.
    async fn runs_of(&self, id: &str) -> Vec<Value> {
        let list = self.get("/v1/runs?limit=1000").await;
        let mut runs: Vec<Value> = list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["schedule_id"] == id)
            .cloned()
            .collect();
        runs.sort_by_key(|r| r["scheduled_for"].as_i64());
        runs
    }

    async fn delete(&self, id: &str) {
        let (status, body) = self
            .call(Method::DELETE, &format!("/v1/schedules/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
}

/// Polls `check` until it answers, failing after a bound generous enough never to flake.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn one_step(name: &str, plugin: &str) -> Value {
    json!({"name": name, "steps": [{"name": "only", "plugin": plugin}]})
}

fn now_ms() -> i64 {
    corral::store::now_ms()
}

async fn dur_31_a_schedule_fires_runs_linked_to_it(db: Db) {
    let server = serve(&db, std::sync::Arc::new(tempfile::tempdir().unwrap()));
    let api = Api::new(&server, &server.admin_token);
    let echo = api.upload("echo").await;
    let before = now_ms();
    let s = api
        .schedule(json!({
            "pipeline": one_step("tick", &echo),
            "cron": "* * * * * *",
            "input": {"n": 1},
            "overlap": "queue",
            "catch_up": "all",
        }))
        .await;
    let id = s["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sch_"), "{s}");
    assert_eq!(s["timezone"], "UTC", "the default zone: {s}");
    assert_eq!(s["pipeline_name"], "tick");
    assert_eq!(s["input"], json!({"n": 1}));
    assert!(s["next_fire_at"].as_i64().unwrap() > before, "{s}");
    let runs = until("two succeeded runs of the schedule", || async {
        let runs = api.runs_of(&id).await;
        let done: Vec<Value> = runs
            .into_iter()
            .filter(|r| r["status"] == "succeeded")
            .collect();
        (done.len() >= 2).then_some(done)
    })
    .await;
    let mut slots = Vec::new();
    for run in &runs {
        let slot = run["scheduled_for"].as_i64().unwrap();
        assert_eq!(slot % 1000, 0, "slots are whole seconds: {run}");
        assert!(slot > before, "no slot before the schedule was made: {run}");
        slots.push(slot);
        let detail = api
            .get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
            .await;
        assert_eq!(detail["run"]["schedule_id"], id.as_str());
        assert_eq!(detail["run"]["scheduled_for"], slot);
        assert_eq!(detail["output"], json!({"n": 1}), "the schedule's input");
    }
    slots.dedup();
    assert_eq!(slots.len(), runs.len(), "one run per slot: {runs:?}");
    let detail = api.detail(&id).await;
    let fires = detail["fires"].as_array().unwrap();
    for run in &runs {
        let fire = fires
            .iter()
            .find(|f| f["fire_at"] == run["scheduled_for"])
            .unwrap_or_else(|| panic!("no fire for {run}: {fires:?}"));
        assert_eq!(fire["status"], "started");
        assert_eq!(fire["run_id"], run["id"]);
    }
    let list = api.get("/v1/schedules").await;
    let listed = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(listed["last_run_id"].is_string(), "{listed}");
    // A stored pipeline by id, on a schedule that fires once a year.
    let (status, stored) = api
        .call(
            Method::POST,
            "/v1/pipelines",
            Some(one_step("stored", &echo)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let yearly = api
        .schedule(json!({"pipeline": stored["id"], "cron": "@yearly", "timezone": "Europe/Paris"}))
        .await;
    assert_eq!(yearly["pipeline_id"], stored["id"]);
    assert_eq!(yearly["overlap"], "skip", "the default: {yearly}");
    assert_eq!(yearly["catch_up"], "none", "the default: {yearly}");
    // Deleted: gone from the API, its runs stay.
    api.delete(&id).await;
    let (status, body) = api
        .call(Method::GET, &format!("/v1/schedules/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "SCHEDULE_NOT_FOUND");
    for run in &runs {
        api.get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
            .await;
    }
}
on_both_dbs!(dur_31_a_schedule_fires_runs_linked_to_it);

async fn dur_32_two_servers_on_one_database_fire_each_slot_exactly_once(db: Db) {
    let data_a = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let data_b = std::sync::Arc::new(tempfile::tempdir().unwrap());
    // Both on one database: A's data dir's SQLite file, or one Postgres schema.
    let url = database_url(&db, &data_a);
    let envs = [TICK, ("CORRAL_DATABASE_URL", url.as_str())];
    let a = Server::start_in(data_a, &envs);
    let b = Server::start_in(data_b, &envs);
    let api_a = Api::new(&a, &a.admin_token);
    let api_b = Api::new(&b, &a.admin_token);
    let echo = api_a.upload("echo").await;
    let s = api_a
        .schedule(json!({
            "pipeline": one_step("both", &echo),
            "cron": "* * * * * *",
            "overlap": "queue",
            "catch_up": "all",
        }))
        .await;
    let id = s["id"].as_str().unwrap().to_string();
    until("eight fires", || async {
        let started = api_b
            .fires(&id)
            .await
            .iter()
            .filter(|f| f["status"] == "started")
            .count();
        (started >= 8).then_some(())
    })
    .await;
    api_b.delete(&id).await;
    let runs = api_a.runs_of(&id).await;
    let mut per_slot: BTreeMap<i64, usize> = BTreeMap::new();
    for run in &runs {
        *per_slot
            .entry(run["scheduled_for"].as_i64().unwrap())
            .or_default() += 1;
    }
    assert!(per_slot.len() >= 8, "{per_slot:?}");
    assert!(
        per_slot.values().all(|n| *n == 1),
        "a slot fired more than once: {per_slot:?}"
    );
    // Every slot from the first to the last fired (none lost between the two hosts).
    let first = *per_slot.keys().next().unwrap();
    let last = *per_slot.keys().last().unwrap();
    assert_eq!(
        usize::try_from((last - first) / 1000 + 1).unwrap(),
        per_slot.len(),
        "{per_slot:?}"
    );
    drop(b);
}
on_both_dbs!(dur_32_two_servers_on_one_database_fire_each_slot_exactly_once);

async fn dur_33_after_a_downtime_catch_up_fires_none_the_latest_or_all(db: Db) {
    let data = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let server = serve(&db, data.clone());
    let token = server.admin_token.clone();
    let api = Api::new(&server, &token);
    let echo = api.upload("echo").await;
    // Hourly, half an hour away from now: the slots of the last five hours are half an
    // hour old and more (well past the grace period), and the next one is far ahead.
    let minute = (now_ms() / 60_000 + 30) % 60;
    let cron = format!("0 {minute} * * * *");
    let mut ids = BTreeMap::new();
    for catch_up in ["none", "latest", "all"] {
        let s = api
            .schedule(json!({
                "pipeline": one_step(catch_up, &echo),
                "cron": cron,
                "overlap": "queue",
                "catch_up": catch_up,
            }))
            .await;
        ids.insert(catch_up, s["id"].as_str().unwrap().to_string());
    }
    // The downtime: the server stops, and its schedules were last handled five hours ago.
    let data = server.stop();
    let cursor = now_ms() - 5 * 3_600_000;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&database_url(&db, &data))
        .await
        .unwrap();
    for id in ids.values() {
        sqlx::query("UPDATE schedules SET last_fire_at = $1, next_fire_at = $1 WHERE id = $2")
            .bind(cursor)
            .bind(id.as_str())
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let server = serve(&db, data);
    let api = Api::new(&server, &token);
    // Each schedule's cursor reaches its latest slot (half an hour ago).
    let mut latest = BTreeMap::new();
    for (catch_up, id) in &ids {
        let s = until("the cursor to move past the downtime", || async {
            let s = api.detail(id).await["schedule"].clone();
            (s["last_fire_at"].as_i64().unwrap() > cursor + 4 * 3_600_000).then_some(s)
        })
        .await;
        assert!(
            s["next_fire_at"].as_i64().unwrap() > now_ms(),
            "{catch_up}: the next slot is ahead: {s}"
        );
        latest.insert(*catch_up, s["last_fire_at"].as_i64().unwrap());
    }
    // none: the latest missed slot is recorded as missed; nothing runs.
    let fires = api.fires(&ids["none"]).await;
    assert_eq!(fires.len(), 1, "{fires:?}");
    assert_eq!(fires[0]["status"], "missed");
    assert_eq!(fires[0]["fire_at"], latest["none"]);
    assert!(
        fires[0]["reason"]
            .as_str()
            .unwrap()
            .contains("catch_up = none")
    );
    assert!(api.runs_of(&ids["none"]).await.is_empty());
    // latest: the most recent missed slot runs, once.
    let runs = until("the latest slot's run", || async {
        let runs = api.runs_of(&ids["latest"]).await;
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["scheduled_for"], latest["latest"]);
    let fires = api.fires(&ids["latest"]).await;
    assert_eq!(fires.len(), 1, "{fires:?}");
    assert_eq!(fires[0]["status"], "started");
    // all: each of the five missed slots runs once, an hour apart, oldest first.
    let runs = until("the five missed slots' runs", || async {
        let runs = api.runs_of(&ids["all"]).await;
        (runs.len() >= 5).then_some(runs)
    })
    .await;
    let slots: Vec<i64> = runs
        .iter()
        .map(|r| r["scheduled_for"].as_i64().unwrap())
        .collect();
    assert_eq!(slots.len(), 5, "{slots:?}");
    assert!(
        slots.windows(2).all(|w| w[1] - w[0] == 3_600_000),
        "{slots:?}"
    );
    assert_eq!(slots.last().copied(), Some(latest["all"]));
    assert!(slots.iter().all(|s| *s > cursor));
}
on_both_dbs!(dur_33_after_a_downtime_catch_up_fires_none_the_latest_or_all);

async fn dur_34_overlap_skips_queues_or_cancels_the_previous_run(db: Db) {
    let server = serve(&db, std::sync::Arc::new(tempfile::tempdir().unwrap()));
    let api = Api::new(&server, &server.admin_token);
    let sleeper = api.upload("sleeper").await;
    // A run that stays active for ten minutes unless cancelled.
    let slow = json!({"name": "slow", "defaults": {"timeout": "10m"},
                      "steps": [{"name": "sleep", "plugin": sleeper}]});
    let mut ids = BTreeMap::new();
    for overlap in ["skip", "queue", "cancel_previous"] {
        let s = api
            .schedule(json!({
                "pipeline": slow,
                "cron": "*/2 * * * * *",
                "input": {"secs": 600, "mode": "poll", "tick_ms": 50},
                "overlap": overlap,
            }))
            .await;
        ids.insert(overlap, s["id"].as_str().unwrap().to_string());
    }
    // skip: the first slot's run is still sleeping, so the next slots are skipped.
    let fires = handled(&api, &ids["skip"], 3).await;
    let runs = api.runs_of(&ids["skip"]).await;
    assert_eq!(runs.len(), 1, "one run only: {runs:?}");
    let first = runs[0]["id"].as_str().unwrap();
    assert!(
        !["succeeded", "failed", "cancelled"].contains(&runs[0]["status"].as_str().unwrap()),
        "{runs:?}"
    );
    let (oldest, later) = fires.split_last().unwrap();
    assert_eq!(oldest["status"], "started");
    assert_eq!(oldest["run_id"], first);
    for f in later {
        assert_eq!(f["status"], "skipped", "{fires:?}");
        assert!(f["reason"].as_str().unwrap().contains(first), "{f}");
    }
    // queue: every slot starts a run, side by side.
    handled(&api, &ids["queue"], 3).await;
    let runs = api.runs_of(&ids["queue"]).await;
    assert!(runs.len() >= 3, "{runs:?}");
    assert!(
        runs.iter().all(|r| r["status"] != "cancelled"),
        "queue cancels nothing: {runs:?}"
    );
    // cancel_previous: each slot cancels the run before it; the newest stays.
    handled(&api, &ids["cancel_previous"], 3).await;
    let runs = until("every run but the newest cancelled", || async {
        let runs = api.runs_of(&ids["cancel_previous"]).await;
        let (newest, older) = runs.split_last()?;
        let ok = runs.len() >= 3
            && older.iter().all(|r| r["status"] == "cancelled")
            && newest["status"] != "cancelled";
        ok.then_some(runs)
    })
    .await;
    assert!(runs.len() >= 3);
    // Nothing left sleeping for the next test's CPU.
    for r in api.get("/v1/runs?limit=1000").await["runs"]
        .as_array()
        .unwrap()
    {
        let _ = api
            .call(
                Method::POST,
                &format!("/v1/runs/{}/cancel", r["id"].as_str().unwrap()),
                None,
            )
            .await;
    }
}
on_both_dbs!(dur_34_overlap_skips_queues_or_cancels_the_previous_run);

/// Waits until the schedule has handled `n` slots, then deletes it; its fires then,
/// newest first.
async fn handled(api: &Api, id: &str, n: usize) -> Vec<Value> {
    let fires = until("handled slots", || async {
        let fires = api.fires(id).await;
        (fires.len() >= n).then_some(fires)
    })
    .await;
    api.delete(id).await;
    fires
}

async fn dur_35_a_bad_expression_time_zone_or_body_is_refused(db: Db) {
    let server = serve(&db, std::sync::Arc::new(tempfile::tempdir().unwrap()));
    let api = Api::new(&server, &server.admin_token);
    let echo = api.upload("echo").await;
    let p = one_step("p", &echo);
    let refused = [
        (
            json!({"pipeline": p, "cron": "not a cron"}),
            400,
            "INVALID_CRON",
        ),
        (
            json!({"pipeline": p, "cron": "61 * * * *"}),
            400,
            "INVALID_CRON",
        ),
        (
            json!({"pipeline": p, "cron": "* * * * * * * *"}),
            400,
            "INVALID_CRON",
        ),
        (
            json!({"pipeline": p, "cron": "1,".repeat(100)}),
            400,
            "INVALID_CRON",
        ),
        // February 30th never comes.
        (
            json!({"pipeline": p, "cron": "0 0 30 2 *"}),
            400,
            "INVALID_CRON",
        ),
        (
            json!({"pipeline": p, "cron": "* * * * *", "timezone": "Mars/Olympus_Mons"}),
            400,
            "INVALID_TIMEZONE",
        ),
        (
            json!({"pipeline": p, "cron": "* * * * *", "timezone": "x".repeat(100)}),
            400,
            "INVALID_TIMEZONE",
        ),
        (
            json!({"pipeline": p, "cron": "* * * * *", "overlap": "sometimes"}),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"pipeline": p, "cron": "* * * * *", "catch_up": "most"}),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"pipeline": p, "cron": "* * * * *", "when": "now"}),
            400,
            "INVALID_REQUEST",
        ),
        (json!({"pipeline": p}), 400, "INVALID_REQUEST"),
        (
            json!({"pipeline": "pip_nope", "cron": "* * * * *"}),
            404,
            "PIPELINE_NOT_FOUND",
        ),
        (
            json!({"pipeline": 7, "cron": "* * * * *"}),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"pipeline": one_step("p", "nope@1.0.0"), "cron": "* * * * *"}),
            400,
            "INVALID_PIPELINE",
        ),
        (
            json!({"pipeline": one_step("p", "/etc/passwd"), "cron": "* * * * *"}),
            400,
            "INVALID_PIPELINE",
        ),
    ];
    for (body, status, code) in refused {
        let (got, answer) = api
            .call(Method::POST, "/v1/schedules", Some(body.clone()))
            .await;
        assert_eq!(got.as_u16(), status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    // Input nested past the limit is refused like a run's.
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let resp = api
        .http
        .post(format!("{}/v1/schedules", api.url))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body(format!(
            "{{\"pipeline\": {p}, \"cron\": \"* * * * *\", \"input\": {deep}}}"
        ))
        .send()
        .await
        .unwrap();
    let (status, answer) = status_and_body(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        api.get("/v1/schedules").await["schedules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A viewer reads but may not create (API-07).
    let viewer = Api::new(&server, &token(&db, &server, "default", "viewer"));
    let (status, _) = viewer
        .call(
            Method::POST,
            "/v1/schedules",
            Some(json!({"pipeline": p, "cron": "* * * * *"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    viewer.get("/v1/schedules").await;
    // The tenant's cap: 100 schedules, then 409.
    for i in 0..100 {
        let (status, body) = api
            .call(
                Method::POST,
                "/v1/schedules",
                Some(json!({"pipeline": p, "cron": format!("{} 0 1 1 *", i % 60)})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{i}: {body}");
    }
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/schedules",
            Some(json!({"pipeline": p, "cron": "0 0 1 1 *"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "TOO_MANY_SCHEDULES");
}
on_both_dbs!(dur_35_a_bad_expression_time_zone_or_body_is_refused);

/// API-01 for schedules: another tenant's schedule answers exactly like a missing one.
async fn dur_36_another_tenant_cannot_see_or_delete_a_schedule(db: Db) {
    let server = serve(&db, std::sync::Arc::new(tempfile::tempdir().unwrap()));
    let a = Api::new(&server, &server.admin_token);
    let b = Api::new(&server, &token(&db, &server, "other", "admin"));
    let echo = a.upload("echo").await;
    let s = a
        .schedule(json!({"pipeline": one_step("mine", &echo), "cron": "@yearly"}))
        .await;
    let id = s["id"].as_str().unwrap();
    let (status, theirs) = b
        .call(Method::GET, &format!("/v1/schedules/{id}"), None)
        .await;
    let (_, missing) = b.call(Method::GET, "/v1/schedules/sch_0000", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(theirs["error"]["code"], missing["error"]["code"]);
    let (status, _) = b
        .call(Method::DELETE, &format!("/v1/schedules/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        b.get("/v1/schedules").await["schedules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A's schedule is untouched.
    assert_eq!(a.detail(id).await["schedule"]["id"], id);
    // B cannot schedule A's stored pipeline either.
    let (_, stored) = a
        .call(
            Method::POST,
            "/v1/pipelines",
            Some(one_step("stored", &echo)),
        )
        .await;
    let (status, body) = b
        .call(
            Method::POST,
            "/v1/schedules",
            Some(json!({"pipeline": stored["id"], "cron": "@yearly"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // Control characters in the id are refused before any database sees them (MAL-09).
    let (status, _) = a.call(Method::GET, "/v1/schedules/sch_%00", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
on_both_dbs!(dur_36_another_tenant_cannot_see_or_delete_a_schedule);

/// `corral schedule create|list|show|delete` on the local database and against a
/// server, and a long-running `corral worker` firing a local schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dur_37_corral_schedule_commands_local_and_server() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin_path("echo"), dir.path().join("echo.wasm")).unwrap();
    let file = dir.path().join("tick.toml");
    std::fs::write(
        &file,
        "name = \"tick\"\n[[steps]]\nname = \"say\"\nplugin = \"echo.wasm\"\n",
    )
    .unwrap();
    let corral = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(args)
            .env("CORRAL_DATA_DIR", data.path())
            .env_remove("CORRAL_DATABASE_URL")
            .env_remove("CORRAL_SERVER")
            .env_remove("CORRAL_TOKEN")
            .output()
            .unwrap()
    };
    let file = file.to_str().unwrap();
    let out = corral(&["schedule", "create", file, "--cron", "bad cron"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_CRON"));
    let out = corral(&[
        "schedule",
        "create",
        file,
        "--cron",
        "* * * * * *",
        "--input",
        "{\"k\": 2}",
        "--overlap",
        "queue",
        "--catch-up",
        "all",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = record["id"].as_str().unwrap().to_string();
    assert_eq!(record["overlap"], "queue");
    let out = corral(&["schedule", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&id) && text.contains("`* * * * * *` (UTC)"),
        "{text}"
    );
    // A long-running worker fires it; its runs say so.
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["worker"])
        .env("CORRAL_DATA_DIR", data.path())
        .env("CORRAL_SCHEDULE_TICK_MS", "100")
        .env_remove("CORRAL_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = until("a run of the local schedule", || async {
        let out = corral(&["runs", "list", "--json"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["schedule_id"] == id.as_str() && r["status"] == "succeeded")
    })
    .await;
    let _ = worker.kill();
    let _ = worker.wait();
    let out = corral(&["runs", "show", run["id"].as_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("schedule {id}")), "{text}");
    let out = corral(&["schedule", "show", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("started") && text.contains(run["id"].as_str().unwrap()),
        "{text}"
    );
    let out = corral(&["schedule", "delete", &id]);
    assert!(out.status.success());
    let out = corral(&["schedule", "show", &id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SCHEDULE_NOT_FOUND"));

    // Against a server: the pipeline's plugin is uploaded, the schedule made over the API.
    let server = Server::start(&[TICK]);
    let remote = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--server",
            server.url.as_str(),
            "--token",
            server.admin_token.as_str(),
        ]);
        corral(&all)
    };
    let out = remote(&[
        "schedule",
        "create",
        file,
        "--cron",
        "@yearly",
        "--timezone",
        "Asia/Tokyo",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["timezone"], "Asia/Tokyo");
    let id = record["id"].as_str().unwrap();
    let out = remote(&["schedule", "list", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(id));
    let out = remote(&["schedule", "show", id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Asia/Tokyo"));
    let out = remote(&[
        "schedule",
        "create",
        file,
        "--cron",
        "* * * * *",
        "--timezone",
        "Nowhere/Land",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_TIMEZONE"));
    let out = remote(&["schedule", "delete", id]);
    assert!(out.status.success());
    let out = remote(&["schedule", "delete", id]);
    assert_eq!(out.status.code(), Some(2));
}
