//! Browser sessions, CSRF and CORS over real HTTP against `corral serve` (API-11), and
//! how streams end for browsers (SSE-08). Cookies are sent by hand, as a browser would:
//! the session is only its `corral_session` cookie plus the `X-CSRF-Token` header.

use crate::util::*;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A logged-in browser: its cookie and the session's CSRF token.
struct Browser {
    http: Client,
    url: String,
    /// `corral_session=...`, as the browser sends it back.
    cookie: String,
    csrf: String,
    /// What the login answered.
    login: Value,
    /// The login's `Set-Cookie`.
    set_cookie: String,
}

/// `POST /v1/session` with `token`: the status, body and `Set-Cookie`.
async fn login_raw(
    url: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value, Option<String>) {
    let mut r = client()
        .post(format!("{url}/v1/session"))
        .json(&json!({ "token": token }));
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    let set_cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = status_and_body(resp).await;
    (status, body, set_cookie)
}

impl Browser {
    async fn login(server: &Server, token: &str) -> Browser {
        let (status, body, set_cookie) = login_raw(&server.url, token, &[]).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let set_cookie = set_cookie.expect("a login sets the session cookie");
        let cookie = set_cookie.split(';').next().unwrap().trim().to_string();
        Browser {
            http: client(),
            url: server.url.clone(),
            cookie,
            csrf: body["csrf_token"].as_str().unwrap().to_string(),
            login: body,
            set_cookie,
        }
    }

    /// A request with the cookie, and the CSRF header when `csrf`.
    fn req(&self, method: Method, path: &str, csrf: bool) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("cookie", &self.cookie);
        if csrf {
            r.header("x-csrf-token", &self.csrf)
        } else {
            r
        }
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        csrf: bool,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.req(method, path, csrf);
        if let Some(b) = body {
            r = r.json(&b);
        }
        status_and_body(r.send().await.unwrap()).await
    }

    /// Starts a run of `flaky@0.1.0` that waits for an answer: its id.
    async fn waiting_run(&self) -> String {
        let (status, run) = self
            .json(
                Method::POST,
                "/v1/runs",
                true,
                Some(run_body("flaky@0.1.0", json!({"ask": "?"}))),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        run["run_id"].as_str().unwrap().to_string()
    }
}

/// A bearer-token request.
async fn bearer(
    url: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = client()
        .request(method, format!("{url}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    status_and_body(r.send().await.unwrap()).await
}

async fn upload(url: &str, token: &str, plugin: &str) {
    let resp = client()
        .post(format!("{url}/v1/plugins"))
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(std::fs::read(plugin_path(plugin)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

fn run_body(plugin: &str, config: Value) -> Value {
    json!({"pipeline": {"name": "t", "steps": [{"name": "s", "plugin": plugin, "config": config}]}, "input": {}})
}

/// Reads an SSE response to its end: (id, retry, data JSON) of each event.
async fn read_stream(resp: reqwest::Response) -> Vec<(String, Option<Duration>, Value)> {
    assert_eq!(resp.status(), StatusCode::OK);
    let mut events = resp.bytes_stream().eventsource();
    let mut out = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .unwrap()
    {
        let e = e.unwrap();
        out.push((
            e.id.clone(),
            e.retry,
            serde_json::from_str(&e.data).unwrap(),
        ));
    }
    out
}

async fn session_cookie_is_httponly_samesite_strict(postgres: bool) {
    let Some(envs) = database_envs(postgres).await else {
        return;
    };
    let server = start_with(&envs, &[]);
    let admin = server.admin_token.clone();
    let b = Browser::login(&server, &admin).await;

    // The cookie: a long random value, HttpOnly, SameSite=Strict, the whole site, the TTL
    // (12 h by default); not Secure over plain HTTP.
    let attrs: Vec<&str> = b.set_cookie.split(';').map(str::trim).collect();
    let value = b.cookie.strip_prefix("corral_session=").unwrap();
    assert!(
        value.len() >= 64 && value.bytes().all(|c| c.is_ascii_hexdigit()),
        "{value}"
    );
    for want in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(attrs.contains(&want), "{want} missing: {}", b.set_cookie);
    }
    assert!(!attrs.contains(&"Secure"), "{}", b.set_cookie);
    assert!(
        !b.set_cookie.contains(&admin),
        "the cookie is not the token"
    );

    // The answer: who the session is, and a CSRF token; never the token itself.
    assert_eq!(b.login["tenant"], "default", "{}", b.login);
    assert_eq!(b.login["role"], "admin");
    assert!(b.login["token_id"].as_str().unwrap().starts_with("tok_"));
    assert!(b.csrf.len() >= 32, "{}", b.csrf);
    let expires = b.login["expires_at"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(expires).is_ok(), "{expires}");
    assert!(!b.login.to_string().contains(&admin));
    assert!(!b.login.to_string().contains(value));

    // GET /v1/session: the same session and CSRF token, for the cookie only.
    let (status, again) = b.json(Method::GET, "/v1/session", false, None).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, b.login);
    assert_eq!(
        bearer(&server.url, Method::GET, "/v1/session", &admin, None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let anonymous = client()
        .get(format!("{}/v1/session", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // The cookie stands in for the token on every authenticated route.
    let (status, runs) = b.json(Method::GET, "/v1/runs", false, None).await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    let (status, _) = b.json(Method::GET, "/v1/tokens", false, None).await;
    assert_eq!(status, StatusCode::OK);

    // Behind a TLS proxy the cookie is Secure.
    let (status, _, set_cookie) =
        login_raw(&server.url, &admin, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(status, StatusCode::CREATED);
    let set_cookie = set_cookie.unwrap();
    assert!(
        set_cookie.split(';').map(str::trim).any(|a| a == "Secure"),
        "{set_cookie}"
    );

    // A bad token gets no session; no token is ever taken from a URL.
    let (status, body, set_cookie) = login_raw(&server.url, "crl_wrong", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(set_cookie.is_none());
    let in_url = client()
        .get(format!("{}/v1/runs?token={admin}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(in_url.status(), StatusCode::UNAUTHORIZED);
    // A forged or malformed cookie is no session.
    for forged in [
        "corral_session=00".to_string(),
        format!("corral_session={}", "0".repeat(64)),
        format!("{}; {}", b.cookie, b.cookie),
    ] {
        let resp = client()
            .get(format!("{}/v1/runs", server.url))
            .header("cookie", forged.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{forged}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_session_cookie_is_httponly_samesite_strict() {
    session_cookie_is_httponly_samesite_strict(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_session_cookie_is_httponly_samesite_strict_on_postgres() {
    session_cookie_is_httponly_samesite_strict(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_mutation_without_csrf_token_is_403() {
    let server = Server::start(&[("CORRAL_CORS_ORIGINS", "https://app.example")]);
    let admin = server.admin_token.clone();
    upload(&server.url, &admin, "echo").await;
    let b = Browser::login(&server, &admin).await;
    let body = run_body("echo@0.1.0", json!({}));

    // No header, a wrong one, another session's: 403, and nothing was started.
    let other = Browser::login(&server, &admin).await;
    for csrf in [None, Some("0".repeat(64)), Some(other.csrf.clone())] {
        let mut r = b.req(Method::POST, "/v1/runs", false).json(&body);
        if let Some(c) = &csrf {
            r = r.header("x-csrf-token", c);
        }
        let (status, err) = status_and_body(r.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{csrf:?}: {err}");
        assert_eq!(err["error"]["code"], "CSRF_TOKEN_INVALID");
    }
    let (_, runs) = b.json(Method::GET, "/v1/runs", false, None).await;
    assert_eq!(runs["runs"], json!([]), "no run was started");

    // With the CSRF token it goes through, from the server's own origin too.
    let (status, created) = b
        .json(Method::POST, "/v1/runs", true, Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let own = server.url.clone();
    let resp = b
        .req(Method::POST, "/v1/runs", true)
        .header("origin", own)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // A listed CORS origin may use the session too.
    let resp = b
        .req(Method::POST, "/v1/runs", true)
        .header("origin", "https://app.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // Another origin may not, even with the token, not even to read.
    for (method, csrf) in [(Method::POST, true), (Method::GET, false)] {
        let resp = b
            .req(method.clone(), "/v1/runs", csrf)
            .header("origin", "https://evil.example")
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, err) = status_and_body(resp).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method}: {err}");
        assert_eq!(err["error"]["code"], "ORIGIN_NOT_ALLOWED");
    }
    // Nor may another origin log a browser in.
    let (status, err, set_cookie) =
        login_raw(&server.url, &admin, &[("origin", "https://evil.example")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert!(set_cookie.is_none());

    // Bearer tokens are unaffected: no CSRF header needed.
    let (status, _) = bearer(
        &server.url,
        Method::POST,
        "/v1/runs",
        &admin,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // A viewer's session has the viewer's role.
    let viewer = server.token("default", "viewer");
    let v = Browser::login(&server, &viewer).await;
    assert_eq!(v.login["role"], "viewer");
    let (status, err) = v
        .json(Method::POST, "/v1/runs", true, Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["error"]["code"], "FORBIDDEN");

    // Logging out needs the CSRF token too; then the cookie is cleared and dead.
    let (status, err) = b.json(Method::DELETE, "/v1/session", false, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let resp = b
        .req(Method::DELETE, "/v1/session", true)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let cleared = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cleared.starts_with("corral_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(
        b.json(Method::GET, "/v1/session", false, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        b.json(Method::GET, "/v1/runs", false, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The other session of the same token lives on.
    assert_eq!(
        other.json(Method::GET, "/v1/session", false, None).await.0,
        StatusCode::OK
    );
}

async fn session_is_revoked_with_its_token(postgres: bool) {
    let Some(envs) = database_envs(postgres).await else {
        return;
    };
    let server = start_with(&envs, &[]);
    let admin = server.admin_token.clone();
    upload(&server.url, &admin, "flaky").await;
    let (status, tok) = bearer(
        &server.url,
        Method::POST,
        "/v1/tokens",
        &admin,
        Some(json!({"role": "operator", "name": "browser"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{tok}");
    let (secret, id) = (
        tok["token"].as_str().unwrap().to_string(),
        tok["id"].as_str().unwrap().to_string(),
    );
    let b = Browser::login(&server, &secret).await;
    assert_eq!(b.login["token_id"], id.as_str());
    // A waiting run, its stream open with the session.
    let run = b.waiting_run().await;
    let resp = b
        .req(Method::GET, &format!("/v1/runs/{run}/events"), false)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream().eventsource();
    stream.next().await.unwrap().unwrap();

    let (status, _) = bearer(
        &server.url,
        Method::DELETE,
        &format!("/v1/tokens/{id}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The session is gone at once, everywhere.
    assert_eq!(
        b.json(Method::GET, "/v1/session", false, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        b.json(Method::GET, "/v1/runs", false, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Its open stream closes (SSE-07, by the session's token id).
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the session's stream closes when its token is revoked")
        {
            None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
    // And a new login with the revoked token is refused.
    assert_eq!(
        login_raw(&server.url, &secret, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_session_is_revoked_with_its_token() {
    session_is_revoked_with_its_token(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_session_is_revoked_with_its_token_on_postgres() {
    session_is_revoked_with_its_token(true).await;
}

async fn session_of_tenant_a_gets_404_on_tenant_b_run(postgres: bool) {
    let Some(envs) = database_envs(postgres).await else {
        return;
    };
    let server = start_with(&envs, &[]);
    let a = server.admin_token.clone();
    let b_token = token(&server, &envs, "tenant-b", "admin");
    upload(&server.url, &b_token, "flaky").await;
    let (status, run) = bearer(
        &server.url,
        Method::POST,
        "/v1/runs",
        &b_token,
        Some(run_body("flaky@0.1.0", json!({"ask": "?"}))),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run = run["run_id"].as_str().unwrap().to_string();
    // Wait until B's run asks its question, so A's answer below would have somewhere to go.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, detail) = bearer(
            &server.url,
            Method::GET,
            &format!("/v1/runs/{run}"),
            &b_token,
            None,
        )
        .await;
        if detail["run"]["status"] == "waiting" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B's run never started waiting: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let session_a = Browser::login(&server, &a).await;
    assert_eq!(session_a.login["tenant"], "default");
    for (method, path) in [
        (Method::GET, format!("/v1/runs/{run}")),
        (Method::GET, format!("/v1/runs/{run}/events")),
        (Method::GET, format!("/v1/runs/{run}/artifacts")),
        (Method::POST, format!("/v1/runs/{run}/cancel")),
        (Method::POST, format!("/v1/runs/{run}/input")),
    ] {
        let (status, err) = session_a
            .json(method.clone(), &path, true, Some(json!({"approved": true})))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {err}");
        assert_eq!(err["error"]["code"], "RUN_NOT_FOUND");
    }
    let (_, runs) = session_a.json(Method::GET, "/v1/runs", false, None).await;
    assert_eq!(runs["runs"], json!([]));
    // B's run was not touched.
    let (_, detail) = bearer(
        &server.url,
        Method::GET,
        &format!("/v1/runs/{run}"),
        &b_token,
        None,
    )
    .await;
    assert_eq!(detail["run"]["status"], "waiting", "{detail}");

    // A bearer header wins over the cookie: with B's token the caller is B.
    let resp = session_a
        .req(Method::GET, &format!("/v1/runs/{run}"), false)
        .bearer_auth(&b_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = session_a
        .req(Method::GET, "/v1/runs", false)
        .bearer_auth("crl_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a bad bearer is not rescued by the cookie"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_session_of_tenant_a_gets_404_on_tenant_b_run() {
    session_of_tenant_a_gets_404_on_tenant_b_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_session_of_tenant_a_gets_404_on_tenant_b_run_on_postgres() {
    session_of_tenant_a_gets_404_on_tenant_b_run(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_a_session_expires_after_its_ttl_and_expired_rows_are_deleted() {
    let server = Server::start(&[("CORRAL_SESSION_TTL_SECS", "4")]);
    let admin = server.admin_token.clone();
    let b = Browser::login(&server, &admin).await;
    assert!(
        b.set_cookie.split(';').any(|a| a.trim() == "Max-Age=4"),
        "{}",
        b.set_cookie
    );
    let expires = humantime::parse_rfc3339(b.login["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        b.json(Method::GET, "/v1/session", false, None).await.0,
        StatusCode::OK
    );
    // A stream opened with the session ends when the session does.
    let resp = b
        .req(Method::GET, "/v1/events", false)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream().eventsource();
    let ended = tokio::spawn(async move {
        loop {
            match stream.next().await {
                None | Some(Err(_)) => return std::time::SystemTime::now(),
                Some(Ok(_)) => continue,
            }
        }
    });
    // Well past its expiry.
    let wait = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_secs(2)).await;
    let ended = tokio::time::timeout(Duration::from_secs(30), ended)
        .await
        .expect("the session's stream ends when the session expires")
        .unwrap();
    assert!(
        ended >= expires,
        "the stream ended before the session expired"
    );
    assert_eq!(
        b.json(Method::GET, "/v1/session", false, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        b.json(Method::GET, "/v1/runs", false, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The next login deletes the expired row: only the new session is stored, and only
    // as a hash.
    let fresh = Browser::login(&server, &admin).await;
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        server.data.path().join("corral.db").display()
    ))
    .await
    .unwrap();
    let hashes: Vec<String> = sqlx::query_scalar("SELECT hash FROM sessions")
        .fetch_all(&db)
        .await
        .unwrap();
    let value = fresh.cookie.strip_prefix("corral_session=").unwrap();
    assert_eq!(hashes.len(), 1, "{hashes:?}");
    assert_ne!(hashes[0], value, "the cookie value is not stored");
    assert_ne!(hashes[0], fresh.csrf, "nor is the CSRF token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_04_api_09_bad_logins_are_throttled_and_never_lock_out_a_valid_token() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    let b = Browser::login(&server, &admin).await;
    // Bad logins and bad bearer tokens count alike (20 a minute per address).
    let mut last = StatusCode::OK;
    for i in 0..25 {
        last = if i % 2 == 0 {
            login_raw(&server.url, "crl_wrong", &[]).await.0
        } else {
            bearer(&server.url, Method::GET, "/v1/runs", "crl_wrong", None)
                .await
                .0
        };
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    let (status, err, _) = login_raw(&server.url, "crl_wrong", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(err["error"]["code"], "TOO_MANY_AUTH_FAILURES");
    // A forged cookie from the throttled address: 429 as well.
    let resp = client()
        .get(format!("{}/v1/runs", server.url))
        .header("cookie", format!("corral_session={}", "a".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // A valid token still logs in, and a valid session still works, from that address.
    assert_eq!(
        login_raw(&server.url, &admin, &[]).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        b.json(Method::GET, "/v1/runs", false, None).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_cors_only_for_listed_origins() {
    let listed = "https://app.example";
    let server = Server::start(&[(
        "CORRAL_CORS_ORIGINS",
        "https://app.example, http://localhost:3000",
    )]);
    let admin = server.admin_token.clone();
    let http = client();
    let preflight = |path: &str, origin: &str| {
        http.request(Method::OPTIONS, format!("{}{path}", server.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, x-csrf-token",
            )
            .send()
    };
    // A listed origin's preflight: 204 with credentials, the path's methods, our headers.
    let resp = preflight("/v1/runs", listed).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], listed);
    assert_eq!(h["access-control-allow-credentials"], "true");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    assert!(!methods.contains("DELETE"), "{methods}");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, content-type, last-event-id, x-csrf-token"
    );
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h.get_all("vary").iter().any(|v| v == "Origin"));
    let resp = preflight("/v1/runs/run_x/cancel", "http://localhost:3000")
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(resp.headers()["access-control-allow-methods"], "POST");

    // Any other origin: a 204 with no CORS header at all, so the browser blocks.
    for origin in [
        "https://evil.example",
        "http://app.example",
        "https://app.example:8443",
        "null",
    ] {
        let resp = preflight("/v1/runs", origin).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{origin}");
        let cors: Vec<_> = resp
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "{origin}: {cors:?}");
    }
    // OPTIONS never answers 405; a path that is no route is still a 404.
    assert_eq!(
        preflight("/v1/session", listed).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        preflight("/v1/nothing-here", listed)
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    // Actual answers: the listed origin can read them (errors too), others cannot.
    for (token, want) in [(admin.as_str(), 200), ("crl_wrong", 401)] {
        let resp = http
            .get(format!("{}/v1/runs", server.url))
            .bearer_auth(token)
            .header("origin", listed)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want);
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], listed);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-expose-headers"], "retry-after, location");
        assert!(h.get_all("vary").iter().any(|v| v == "Origin"));
    }
    let resp = http
        .get(format!("{}/v1/runs", server.url))
        .bearer_auth(&admin)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        resp.headers()
    );
    // A listed origin's page streams a run with the session (EventSource withCredentials).
    upload(&server.url, &admin, "echo").await;
    let b = Browser::login(&server, &admin).await;
    let (status, run) = b
        .json(
            Method::POST,
            "/v1/runs",
            true,
            Some(run_body("echo@0.1.0", json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let resp = b
        .req(
            Method::GET,
            &format!("/v1/runs/{}/events", run["run_id"].as_str().unwrap()),
            false,
        )
        .header("origin", listed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], listed);
    let events = read_stream(resp).await;
    assert_eq!(events.last().unwrap().2["payload"]["all_done"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_origins_come_from_corral_toml_and_a_bad_entry_stops_the_server() {
    // Same-origin only by default: no CORS header for anyone.
    let server = Server::start(&[]);
    let resp = client()
        .request(Method::OPTIONS, format!("{}/v1/runs", server.url))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(
        resp.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-"))
    );
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corral.toml");
    std::fs::write(&config, "cors_origins = [\"https://app.example\"]\n").unwrap();
    let server = Server::start(&[("CORRAL_CONFIG", config.to_str().unwrap())]);
    let resp = client()
        .request(Method::OPTIONS, format!("{}/v1/runs", server.url))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    drop(server);

    // A bad entry is a configuration error at start-up, naming it.
    for (how, env) in [
        ("file", None),
        ("flag", Some("https://app.example/dashboard")),
    ] {
        if how == "file" {
            std::fs::write(&config, "cors_origins = [\"app.example\"]\n").unwrap();
        }
        let data = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .env("CORRAL_DATA_DIR", data.path())
            .env("CORRAL_CONFIG", &config)
            .env_remove("CORRAL_DATABASE_URL")
            .env_remove("CORRAL_CORS_ORIGINS");
        if let Some(origin) = env {
            cmd.args(["--cors-origin", origin]);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{how}: the server started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cors_origins"), "{how}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_08_reconnect_after_final_event_is_204() {
    let server = Server::start(&[]);
    let admin = server.admin_token.clone();
    upload(&server.url, &admin, "echo").await;
    let b = Browser::login(&server, &admin).await;
    let (status, run) = b
        .json(
            Method::POST,
            "/v1/runs",
            true,
            Some(run_body("echo@0.1.0", json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run = run["run_id"].as_str().unwrap().to_string();
    let path = format!("/v1/runs/{run}/events");

    // The whole stream, with the session; its first frame tells browsers `retry: 3000`.
    let all = read_stream(b.req(Method::GET, &path, false).send().await.unwrap()).await;
    let (last_id, _, last) = all.last().unwrap();
    assert_eq!(last["payload"]["all_done"], true, "{all:?}");
    assert_eq!(all[0].1, Some(Duration::from_millis(3000)), "{all:?}");
    assert!(all[1..].iter().all(|(_, retry, _)| retry.is_none()));
    let final_seq: i64 = last_id.parse().unwrap();

    // A reconnect from the final event (header or query): 204, so EventSource stops.
    for resp in [
        b.req(Method::GET, &path, false)
            .header("last-event-id", final_seq.to_string())
            .send()
            .await
            .unwrap(),
        b.req(
            Method::GET,
            &format!("{path}?last_event_id={final_seq}"),
            false,
        )
        .send()
        .await
        .unwrap(),
    ] {
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    // Past the final event there is no such event: 400, as before.
    let resp = b
        .req(Method::GET, &path, false)
        .header("last-event-id", (final_seq + 1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // SSE-04 holds: a reconnect from before the final event replays the rest and closes.
    let rest = read_stream(
        b.req(Method::GET, &path, false)
            .header("last-event-id", (final_seq - 1).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].0, final_seq.to_string());
    assert_eq!(rest[0].1, Some(Duration::from_millis(3000)));
}

/// API-11: logging out closes the streams the session opened, as revoking its token does
/// (SSE-07), while a stream of the same token's other session stays open. On Postgres
/// the stream is on a second server on the same database, so the logout reaches it
/// through the database's notification.
async fn logout_closes_the_sessions_streams(postgres: bool) {
    let Some(envs) = database_envs(postgres).await else {
        return;
    };
    let server = start_with(&envs, &[]);
    let admin = server.admin_token.clone();
    upload(&server.url, &admin, "flaky").await;
    let second = postgres.then(|| start_with(&envs, &[]));
    let b = Browser::login(&server, &admin).await;
    let mut other = Browser::login(&server, &admin).await;
    let run = b.waiting_run().await;
    let stream_url = second
        .as_ref()
        .map_or(server.url.clone(), |s| s.url.clone());
    let open = |cookie: &str| {
        client()
            .get(format!("{stream_url}/v1/runs/{run}/events"))
            .header("cookie", cookie)
            .send()
    };
    let resp = open(&b.cookie).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut mine = resp.bytes_stream().eventsource();
    mine.next().await.unwrap().unwrap();
    other.url = stream_url.clone();
    let resp = open(&other.cookie).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut theirs = resp.bytes_stream().eventsource();
    theirs.next().await.unwrap().unwrap();

    let resp = b
        .req(Method::DELETE, "/v1/session", true)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    loop {
        match tokio::time::timeout(Duration::from_secs(60), mine.next())
            .await
            .expect("the logged-out session's stream closes")
        {
            None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
    // The other session's stream is still open: a heartbeat or an event comes, not an end.
    let next = tokio::time::timeout(Duration::from_secs(60), theirs.next())
        .await
        .expect("the other session's stream stays open");
    assert!(matches!(next, Some(Ok(_))), "{next:?}");
    assert_eq!(
        other.json(Method::GET, "/v1/session", false, None).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_logout_closes_the_sessions_streams() {
    logout_closes_the_sessions_streams(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_11_logout_closes_the_sessions_streams_on_postgres() {
    logout_closes_the_sessions_streams(true).await;
}
