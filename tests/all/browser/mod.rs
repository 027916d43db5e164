//! The dashboard and browser sessions in a real browser: Debian's `chromium`, headless,
//! driven over the DevTools protocol (`cdp.rs`) against a real `corral serve` on loopback.
//!
//! A missing chromium fails these tests (`cargo xtask test` and .ci/run install it);
//! `CORRAL_SKIP_BROWSER=1` skips them. Screenshots go to `target/browser/`.

mod cdp;

use crate::util::*;
use cdp::{Browser, Page, WAIT, js_str, shots_dir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// A request to the API with a bearer token, as a script would make it (setup and checks).
async fn api(
    server: &Server,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", server.url))
        .timeout(Duration::from_secs(60))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    status_and_body(r.send().await.unwrap()).await
}

async fn upload(server: &Server, token: &str, plugin: &str) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/plugins", server.url))
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(std::fs::read(plugin_path(plugin)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "uploading {plugin}");
}

/// Stores pipeline `name` of `flaky` steps (step name, config) for the dashboard's form.
async fn flaky_pipeline(server: &Server, token: &str, name: &str, steps: &[(&str, Value)]) {
    let steps: Vec<Value> = steps
        .iter()
        .map(|(step, config)| json!({"name": step, "plugin": "flaky@0.1.0", "config": config}))
        .collect();
    let (status, body) = api(
        server,
        Method::POST,
        "/v1/pipelines",
        token,
        Some(json!({"name": name, "defaults": {"backoff": "10ms"}, "steps": steps})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Starts a run of `flaky` steps over the API and returns its id.
async fn flaky_run(server: &Server, token: &str, steps: &[(&str, Value)]) -> String {
    let steps: Vec<Value> = steps
        .iter()
        .map(|(step, config)| json!({"name": step, "plugin": "flaky@0.1.0", "config": config}))
        .collect();
    let (status, body) = api(
        server,
        Method::POST,
        "/v1/runs",
        token,
        Some(json!({"pipeline": {"name": "t", "defaults": {"backoff": "10ms"}, "steps": steps}, "input": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["run_id"].as_str().unwrap().to_string()
}

/// The seqs of a run's whole event log, read over the API.
async fn logged_seqs(server: &Server, token: &str, run: &str) -> Vec<i64> {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/runs/{run}/events", server.url))
        .timeout(Duration::from_secs(60))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.trim().parse().unwrap())
        .collect()
}

/// A browser with one page open on the server's dashboard.
async fn open(server: &Server) -> Option<(Browser, Page)> {
    let browser = Browser::launch().await?;
    let page = browser.page().await;
    page.goto(&format!("{}/", server.url)).await;
    Some((browser, page))
}

/// Logs in through the dashboard's form with `token` and waits for the runs list.
async fn login(page: &Page, token: &str) {
    page.wait_for(
        "document.querySelector('form#login input[name=token]')",
        WAIT,
    )
    .await;
    page.fill("form#login input[name=token]", token).await;
    page.click("form#login button").await;
    page.wait_for("document.querySelector('table#runs')", WAIT)
        .await;
}

/// Logs in as a script on the server's origin would, without the dashboard: `fetch`
/// POST /v1/session from a page of the server (the cookie lands the same way).
async fn session_login(page: &Page, server: &Server, token: &str) {
    page.goto(&format!("{}/health", server.url)).await;
    let got = page
        .eval(&format!(
            "fetch('/v1/session', {{method: 'POST', headers: {{'content-type': 'application/json'}}, \
               body: JSON.stringify({{token: {}}})}}).then(r => r.status)",
            js_str(token)
        ))
        .await;
    assert_eq!(got, 201, "POST /v1/session from the page");
}

/// Records every state each step card shows, from now on, in `window.__states`
/// (`{step: [state, ...]}`, a state once per change), with a MutationObserver so a
/// state shown for a moment is not missed between two polls.
async fn record_card_states(page: &Page) {
    page.eval(
        "(() => { window.__states = {}; \
           const note = c => { const s = c.dataset.step, st = c.dataset.state; \
             if (!s || !st) return; const l = (window.__states[s] ||= []); \
             if (l[l.length - 1] !== st) l.push(st); }; \
           const scan = n => { if (n.nodeType !== 1) return; \
             if (n.matches('.card[data-step]')) note(n); \
             n.querySelectorAll('.card[data-step]').forEach(note); }; \
           scan(document.body); \
           new MutationObserver(ms => ms.forEach(m => { \
             if (m.type === 'attributes') scan(m.target); \
             m.addedNodes.forEach(scan); })) \
             .observe(document.body, {subtree: true, childList: true, attributes: true, \
                                      attributeFilter: ['data-state']}); \
           return true; })()",
    )
    .await;
}

/// True when `want` appears in `seen` in this order (other states may come between).
fn in_order(seen: &[String], want: &[&str]) -> bool {
    let mut it = seen.iter();
    want.iter().all(|w| it.any(|s| s == w))
}

/// The selector of `step`'s card.
fn card(step: &str) -> String {
    format!(".card[data-step={}]", js_str(step))
}

/// Waits for the run page of `run` to show status `status`.
async fn wait_run_status(page: &Page, run: &str, status: &str) {
    page.wait_for(
        &format!(
            "document.querySelector('section#run[data-run-id={}][data-status={}]')",
            js_str(run),
            js_str(status)
        ),
        WAIT,
    )
    .await;
}

/// The harness itself, on a page of its own: typing, clicking, evaluating, screenshots,
/// the request log and the exception log all work (so a dashboard test failing is the
/// dashboard, not the driver).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_harness_types_clicks_and_records_requests_and_exceptions() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let page = browser.page().await;
    let html = "<form id=f onsubmit=\"event.preventDefault(); \
                document.body.dataset.got = this.q.value + '/' + this.s.value\">\
                <input name=q><select name=s><option>a</option><option>b</option></select>\
                <button>go</button></form>";
    page.goto(&format!("data:text/html,{}", urlencode(html)))
        .await;
    page.fill("#f input[name=q]", "typed text").await;
    page.fill("#f select[name=s]", "b").await;
    page.click("#f button").await;
    let got = page.wait_for("document.body.dataset.got", WAIT).await;
    assert_eq!(got, "typed text/b");
    assert_eq!(page.eval("Promise.resolve(6 * 7)").await, 42);
    assert!(page.errors().is_empty(), "{:?}", page.errors());
    page.eval("setTimeout(() => { throw new Error('thrown on purpose') }, 0); true")
        .await;
    page.wait_for("true", WAIT).await;
    let start = std::time::Instant::now();
    while page.errors().is_empty() && start.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        page.errors()[0].contains("thrown on purpose"),
        "{:?}",
        page.errors()
    );
    assert!(page.request_urls()[0].starts_with("data:text/html"));
    let shot = shots_dir().join("harness.png");
    page.set_viewport(375, 700).await;
    page.screenshot(&shot).await;
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Opens the run page of `run` in the (logged-in) dashboard.
async fn show_run(page: &Page, run: &str) {
    page.eval(&format!("location.hash = '#/runs/' + {}", js_str(run)))
        .await;
    page.wait_for(
        &format!(
            "document.querySelector('section#run[data-run-id={}]')",
            js_str(run)
        ),
        WAIT,
    )
    .await;
}

/// The run the dashboard shows after its start form was submitted.
async fn started_run(page: &Page) -> String {
    let id = page
        .wait_for(
            "(document.querySelector('section#run[data-run-id]') || {dataset: {}}).dataset.runId",
            WAIT,
        )
        .await;
    id.as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_login_start_run_and_watch_cards_go_queued_running_complete() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    upload(&server, &admin, "flaky").await;
    flaky_pipeline(
        &server,
        &admin,
        "watched",
        &[
            ("fetch", json!({"progress_first": 40, "sleep_ms": 3000})),
            ("report", json!({"sleep_ms": 1500})),
        ],
    )
    .await;
    let Some((_browser, page)) = open(&server).await else {
        return;
    };
    login(&page, &admin).await;
    record_card_states(&page).await;
    page.fill("form#start-run select[name=pipeline]", "watched")
        .await;
    page.fill(
        "form#start-run textarea[name=input]",
        r#"{"hello": "browser"}"#,
    )
    .await;
    page.click("form#start-run button").await;
    let run = started_run(&page).await;

    // The first step runs with its progress shown, while the second waits its turn.
    page.wait_for(
        &format!(
            "(c => c.dataset.state === 'running' && \
              Math.round(100 * c.querySelector('progress').value / c.querySelector('progress').max) === 40) \
             (document.querySelector({}))",
            js_str(&card("fetch"))
        ),
        WAIT,
    )
    .await;
    page.wait_for(
        &format!(
            "document.querySelector({}).dataset.state === 'queued'",
            js_str(&card("report"))
        ),
        WAIT,
    )
    .await;
    let toast = page
        .wait_for(
            "(t => t && !t.hidden && t.getClientRects().length > 0 && t.textContent.trim())\
             (document.querySelector('#toast'))",
            WAIT,
        )
        .await;
    wait_run_status(&page, &run, "succeeded").await;
    assert!(!toast.as_str().unwrap().is_empty());
    let states: std::collections::HashMap<String, Vec<String>> =
        serde_json::from_value(page.eval("window.__states").await).unwrap();
    assert!(
        in_order(&states["report"], &["queued", "running", "succeeded"]),
        "{states:?}"
    );
    assert!(
        in_order(&states["fetch"], &["running", "succeeded"]),
        "{states:?}"
    );
    page.wait_for(
        "window.__corral && window.__corral.streamOpen === false",
        WAIT,
    )
    .await;

    page.screenshot(&shots_dir().join("run-page.png")).await;
    page.set_viewport(375, 812).await;
    // At phone width nothing sticks out sideways.
    page.wait_for(
        "document.documentElement.scrollWidth <= window.innerWidth",
        WAIT,
    )
    .await;
    page.screenshot(&shots_dir().join("run-page-375.png")).await;
    page.assert_no_errors().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_failing_run_shows_the_error_card_and_the_stream_closes() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    upload(&server, &admin, "flaky").await;
    let Some((_browser, page)) = open(&server).await else {
        return;
    };
    login(&page, &admin).await;
    let run = flaky_run(
        &server,
        &admin,
        &[
            (
                "build",
                json!({"fail_until_attempt": 9, "kind": "permanent", "sleep_ms": 1000}),
            ),
            ("ship", json!({})),
        ],
    )
    .await;
    show_run(&page, &run).await;
    wait_run_status(&page, &run, "failed").await;
    let error = page
        .wait_for(
            &format!(
                "(c => c.dataset.state === 'failed' && c.querySelector('.error').textContent)\
                 (document.querySelector({}))",
                js_str(&card("build"))
            ),
            WAIT,
        )
        .await;
    assert!(
        error
            .as_str()
            .unwrap()
            .contains("scripted failure on attempt 1"),
        "{error}"
    );
    let ship = page
        .eval(&format!(
            "document.querySelector({}).dataset.state",
            js_str(&card("ship"))
        ))
        .await;
    assert!(ship != "succeeded" && ship != "running", "{ship}");
    page.wait_for(
        "window.__corral && window.__corral.streamOpen === false",
        WAIT,
    )
    .await;
    page.screenshot(&shots_dir().join("failed-run.png")).await;
    page.assert_no_errors().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_waiting_run_is_answered_through_the_form() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    upload(&server, &admin, "flaky").await;
    let Some((_browser, page)) = open(&server).await else {
        return;
    };
    login(&page, &admin).await;
    let run = flaky_run(&server, &admin, &[("gate", json!({"ask": "Ship it?"}))]).await;
    show_run(&page, &run).await;
    wait_run_status(&page, &run, "waiting").await;
    page.wait_for(
        &format!(
            "document.querySelector({}).dataset.state === 'waiting'",
            js_str(&card("gate"))
        ),
        WAIT,
    )
    .await;
    page.wait_for("document.body.innerText.includes('Ship it?')", WAIT)
        .await;
    // The answer's schema is {"approved": boolean}: the form has a checkbox for it.
    page.click("form#answer input[name=approved]").await;
    page.screenshot(&shots_dir().join("waiting-run.png")).await;
    page.click("form#answer button").await;
    wait_run_status(&page, &run, "succeeded").await;
    let (status, detail) = api(
        &server,
        Method::GET,
        &format!("/v1/runs/{run}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        detail["output"]["answer"],
        json!({"approved": true}),
        "{detail}"
    );
    page.assert_no_errors().await;
}

/// The run page's Pause and Resume buttons (DUR-11 in a browser): the run pauses after
/// its step, shows `paused` with only Resume and Cancel offered, and finishes once resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pause_and_resume_buttons_pause_and_resume_a_run() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    upload(&server, &admin, "flaky").await;
    let Some((_browser, page)) = open(&server).await else {
        return;
    };
    login(&page, &admin).await;
    let run = flaky_run(
        &server,
        &admin,
        &[("slow", json!({"sleep_ms": 4000})), ("after", json!({}))],
    )
    .await;
    show_run(&page, &run).await;
    wait_run_status(&page, &run, "running").await;
    page.wait_for("!document.querySelector('#resume:not([hidden])')", WAIT)
        .await;
    page.click("#pause").await;
    wait_run_status(&page, &run, "paused").await;
    page.wait_for(
        "document.querySelector('#pause').hidden && !document.querySelector('#resume').hidden          && !document.querySelector('#cancel').hidden",
        WAIT,
    )
    .await;
    page.wait_for(
        &format!(
            "document.querySelector({}).dataset.state === 'succeeded' &&              document.querySelector({}).dataset.state === 'queued'",
            js_str(&card("slow")),
            js_str(&card("after"))
        ),
        WAIT,
    )
    .await;
    page.screenshot(&shots_dir().join("paused-run.png")).await;
    let (status, detail) = api(
        &server,
        Method::GET,
        &format!("/v1/runs/{run}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["run"]["status"], "paused", "{detail}");
    page.click("#resume").await;
    wait_run_status(&page, &run, "succeeded").await;
    page.wait_for(
        "document.querySelector('#pause').hidden && document.querySelector('#resume').hidden",
        WAIT,
    )
    .await;
    page.assert_no_errors().await;
}

/// SSE-01 in a browser: the run page's stream survives a `kill -9` of the server and its
/// restart on the same address; the page ends with every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_reconnects_after_a_server_restart_with_no_gap_or_duplicate() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    let listen = server.url.trim_start_matches("http://").to_string();
    upload(&server, &admin, "flaky").await;
    let Some((_browser, page)) = open(&server).await else {
        return;
    };
    login(&page, &admin).await;
    let run = flaky_run(
        &server,
        &admin,
        &[
            ("one", json!({"log": "before"})),
            ("two", json!({"sleep_ms": 3000})),
            ("three", json!({"log": "after the restart"})),
        ],
    )
    .await;
    show_run(&page, &run).await;
    page.wait_for(
        &format!(
            "document.querySelector({}).dataset.state === 'running' && window.__corral.streamOpen",
            js_str(&card("two"))
        ),
        WAIT,
    )
    .await;
    let before = page.eval("window.__corral.seqs.length").await;
    let data = server.kill();
    let server = Server::start_at(data, &listen, &[]);
    wait_run_status(&page, &run, "succeeded").await;
    let seqs: Vec<i64> = serde_json::from_value(page.eval("window.__corral.seqs").await).unwrap();
    let logged = logged_seqs(&server, &admin, &run).await;
    assert_eq!(logged, (1..=logged.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        seqs, logged,
        "the page saw every event once, in order (it had {before} before the kill)"
    );
    assert!(seqs.len() as u64 > before.as_u64().unwrap());
    page.assert_no_errors().await;
}

/// API-11: a session is its token's tenant; another tenant's run is 404 to it, from
/// `fetch` and from an EventSource alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_session_cannot_read_another_tenants_run() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    upload(&server, &admin, "flaky").await;
    let theirs = flaky_run(&server, &admin, &[("a", json!({}))]).await;
    let other = server.token("other", "admin");
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let page = browser.page().await;
    session_login(&page, &server, &other).await;
    let got = page
        .eval(&format!(
            "(async () => {{ const id = {}; const out = {{}}; \
               for (const p of ['', '/events', '/artifacts']) {{ \
                 const r = await fetch('/v1/runs/' + id + p); \
                 out[p] = [r.status, (await r.text()).includes(id) && r.status !== 404]; }} \
               const mine = await fetch('/v1/runs'); \
               out.list = [mine.status, (await mine.text()).includes(id)]; \
               return out; }})()",
            js_str(&theirs)
        ))
        .await;
    assert_eq!(got["list"], json!([200, false]), "the session works: {got}");
    for p in ["", "/events", "/artifacts"] {
        assert_eq!(got[p][0], 404, "{p}: {got}");
    }
}

/// API-11: with the session cookie alone, a mutation is refused (403) until it carries
/// the session's CSRF token; the same request with it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_session_cannot_mutate_without_the_csrf_token() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    upload(&server, &admin, "flaky").await;
    let running = flaky_run(&server, &admin, &[("a", json!({"sleep_ms": 60000}))]).await;
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let page = browser.page().await;
    session_login(&page, &server, &admin).await;
    let got = page
        .eval(&format!(
            "(async () => {{ \
               const body = JSON.stringify({{pipeline: {{name: 'p', steps: [{{name: 'a', plugin: 'flaky@0.1.0'}}]}}, input: {{}}}}); \
               const post = async (path, headers, body) => {{ \
                 const r = await fetch(path, {{method: 'POST', headers, body}}); \
                 const t = await r.text(); let j = null; try {{ j = JSON.parse(t); }} catch (e) {{}} \
                 return [r.status, j && j.error ? j.error.code : null]; }}; \
               const json = {{'content-type': 'application/json'}}; \
               const csrf = (await (await fetch('/v1/session')).json()).csrf_token; \
               return {{ \
                 none: await post('/v1/runs', json, body), \
                 wrong: await post('/v1/runs', {{...json, 'X-CSRF-Token': 'x' + csrf}}, body), \
                 cancel: await post('/v1/runs/' + {run} + '/cancel', {{}}, null), \
                 right: await post('/v1/runs', {{...json, 'X-CSRF-Token': csrf}}, body), \
               }}; }})()",
            run = js_str(&running)
        ))
        .await;
    for case in ["none", "wrong", "cancel"] {
        assert_eq!(
            got[case],
            json!([403, "CSRF_TOKEN_INVALID"]),
            "{case}: {got}"
        );
    }
    assert_eq!(got["right"][0], 201, "{got}");
    let (_, detail) = api(
        &server,
        Method::GET,
        &format!("/v1/runs/{running}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        detail["run"]["status"], "running",
        "the refused cancel did nothing"
    );
}

/// API-11: a whole dashboard session (log in, start a run, watch it, list runs, log out)
/// never puts the token, or the session's cookie, in a URL; the cookie is HttpOnly and
/// SameSite=Strict, out of the page's reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_no_token_appears_in_any_request_url() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    upload(&server, &admin, "flaky").await;
    flaky_pipeline(
        &server,
        &admin,
        "quick",
        &[("a", json!({"artifact": true}))],
    )
    .await;
    let Some((_browser, page)) = open(&server).await else {
        return;
    };
    login(&page, &admin).await;
    page.fill("form#start-run select[name=pipeline]", "quick")
        .await;
    page.fill("form#start-run textarea[name=input]", "{}").await;
    page.click("form#start-run button").await;
    let run = started_run(&page).await;
    wait_run_status(&page, &run, "succeeded").await;
    page.eval("location.hash = '#/runs'").await;
    page.wait_for(
        &format!(
            "document.querySelector('table#runs tr[data-run-id={}]')",
            js_str(&run)
        ),
        WAIT,
    )
    .await;

    let cookies = page
        .cmd("Network.getCookies", json!({"urls": [server.url]}))
        .await;
    let session = cookies["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "corral_session")
        .unwrap_or_else(|| panic!("no corral_session cookie: {cookies}"))
        .clone();
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    let secret = session["value"].as_str().unwrap().to_string();
    assert!(
        !page
            .eval("document.cookie")
            .await
            .as_str()
            .unwrap()
            .contains(&secret),
        "the page can read its session cookie"
    );

    let urls = page.request_urls();
    assert!(urls.len() > 5, "the session made few requests: {urls:?}");
    assert!(
        urls.iter()
            .any(|u| u.contains(&format!("/v1/runs/{run}/events"))),
        "the run page streamed: {urls:?}"
    );
    for url in &urls {
        assert!(!url.contains(&admin), "the token is in {url}");
        assert!(!url.contains(&secret), "the session is in {url}");
        assert!(!url.contains("crl_"), "a token is in {url}");
        assert!(
            !url.to_lowercase().contains("token="),
            "a token parameter is in {url}"
        );
    }
    page.assert_no_errors().await;
}

/// SSE-08: an EventSource on a finished run gets the log, then reconnects once with the
/// final event's id, gets 204 and stops: no reconnect loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_08_browser_eventsource_stops_after_the_final_event() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    upload(&server, &admin, "flaky").await;
    let run = flaky_run(&server, &admin, &[("a", json!({}))]).await;
    let logged = logged_seqs(&server, &admin, &run).await;
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let page = browser.page().await;
    session_login(&page, &server, &admin).await;
    let events_url = format!("{}/v1/runs/{run}/events", server.url);
    page.eval(&format!(
        "(() => {{ window.__es = {{ids: [], opens: 0}}; \
           const es = new EventSource({}); window.__es.source = es; \
           es.onopen = () => window.__es.opens++; \
           es.onmessage = e => window.__es.ids.push(Number(e.lastEventId)); \
           return true; }})()",
        js_str(&events_url)
    ))
    .await;
    page.wait_for("window.__es.source.readyState === EventSource.CLOSED", WAIT)
        .await;
    let ids: Vec<i64> = serde_json::from_value(page.eval("window.__es.ids").await).unwrap();
    assert_eq!(ids, logged, "every event once, in order");
    let connects = |page: &Page| {
        page.requests()
            .iter()
            .filter(|r| r.kind == "EventSource" && r.url.starts_with(&events_url))
            .count()
    };
    assert_eq!(
        connects(&page),
        2,
        "one read and one reconnect answered 204"
    );
    // Several `retry:` periods later, still no further reconnect.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(connects(&page), 2, "the EventSource kept reconnecting");
    assert_eq!(page.eval("window.__es.opens").await, 1);
}

/// Restart from the dashboard (issue 15): an ended run's page has a restart form (step
/// picker, feedback, reason); the restarted run goes on in the same page, and each step
/// card then shows its history, the output a restart replaced among it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_restarts_an_ended_run_from_a_step_and_shows_its_history() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    upload(&server, &admin, "flaky").await;
    let Some((_browser, page)) = open(&server).await else {
        return;
    };
    login(&page, &admin).await;
    let run = flaky_run(
        &server,
        &admin,
        &[("draft", json!({})), ("review", json!({}))],
    )
    .await;
    show_run(&page, &run).await;
    wait_run_status(&page, &run, "succeeded").await;
    page.click("#restart-open").await;
    page.wait_for("!document.querySelector('#restart-form').hidden", WAIT)
        .await;
    page.fill("#restart-step", "draft").await;
    page.fill("#restart-feedback", r#"{"note": "shorter"}"#)
        .await;
    page.fill("#restart-reason", "too long").await;
    page.screenshot(&shots_dir().join("restart-form.png")).await;
    page.click("#restart-submit").await;
    // The page shows the run again, live: it goes on and succeeds once more.
    page.wait_for(
        "document.querySelectorAll(\"#events li[data-type='restarted']\").length === 1",
        WAIT,
    )
    .await;
    wait_run_status(&page, &run, "succeeded").await;
    let (status, detail) = api(
        &server,
        Method::GET,
        &format!("/v1/runs/{run}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["run"]["restarts"], 1, "{detail}");
    assert_eq!(
        detail["output"]["input"]["feedback"],
        json!({"note": "shorter"}),
        "{detail}"
    );
    // Shown afresh, each card has its history: two attempts, the replaced output first.
    page.eval("location.hash = '#/runs'").await;
    page.wait_for("document.querySelector('table#runs')", WAIT)
        .await;
    show_run(&page, &run).await;
    let draft = card("draft");
    page.wait_for(
        &format!(
            "document.querySelectorAll({} + ' details.history li').length === 2",
            js_str(&draft)
        ),
        WAIT,
    )
    .await;
    let shown = page
        .eval(&format!(
            "(() => {{ const c = document.querySelector({}); c.querySelector('details').open = true; \
               return [c.querySelector('.prior-output') !== null, \
                       c.querySelector('pre.feedback').textContent]; }})()",
            js_str(&draft)
        ))
        .await;
    assert_eq!(shown[0], true, "{shown}");
    assert!(shown[1].as_str().unwrap().contains("shorter"), "{shown}");
    page.screenshot(&shots_dir().join("restart-history.png"))
        .await;
    page.assert_no_errors().await;
}

/// DUR-38: the dashboard's schedules page lists a schedule (pipeline, cron, next fire, its
/// latest run as a link), a run it started names it, and its delete button deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dur_38_dashboard_lists_schedules_runs_name_theirs_and_delete_works() {
    let server = Server::start(&[("CORRAL_SCHEDULE_TICK_MS", "100")]);
    let admin = server.admin_token.clone();
    upload(&server, &admin, "echo").await;
    let (status, s) = api(
        &server,
        Method::POST,
        "/v1/schedules",
        &admin,
        Some(json!({
            "pipeline": {"name": "nightly", "steps": [{"name": "say", "plugin": "echo@0.1.0"}]},
            "cron": "* * * * * *",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    // Its first run, seen over the API.
    let mut fired = false;
    for _ in 0..600 {
        let (_, list) = api(&server, Method::GET, "/v1/schedules", &admin, None).await;
        if list["schedules"][0]["last_run_id"].is_string() {
            fired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fired, "the schedule never fired");
    let Some((_browser, page)) = open(&server).await else {
        return;
    };
    login(&page, &admin).await;
    page.eval("location.hash = '#/schedules'").await;
    let row = format!("tr[data-schedule-id=\"{id}\"]");
    page.wait_for(
        &format!(
            "document.querySelector({})",
            js_str(&format!("{row} .last-run a"))
        ),
        WAIT,
    )
    .await;
    let text = page
        .eval(&format!(
            "document.querySelector({}).innerText",
            js_str(&row)
        ))
        .await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("nightly") && text.contains("* * * * * *"),
        "{text}"
    );
    page.screenshot(&shots_dir().join("schedules.png")).await;
    page.click(&format!("{row} .last-run a")).await;
    page.wait_for(
        &format!(
            "(document.querySelector('#run-schedule') || {{innerText: ''}}).innerText.includes({})",
            js_str(&id)
        ),
        WAIT,
    )
    .await;
    page.eval("location.hash = '#/schedules'").await;
    page.wait_for(&format!("document.querySelector({})", js_str(&row)), WAIT)
        .await;
    // The delete button asks first; the test says yes.
    page.eval("window.confirm = () => true").await;
    page.click(&format!("{row} button.delete-schedule")).await;
    page.wait_for(&format!("!document.querySelector({})", js_str(&row)), WAIT)
        .await;
    let (status, _) = api(
        &server,
        Method::GET,
        &format!("/v1/schedules/{id}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    page.assert_no_errors().await;
}
