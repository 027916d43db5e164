//! A small Chrome DevTools Protocol client, enough to drive Debian's `chromium` from the
//! tests: launch it headless, open pages, evaluate JavaScript, click and type with real
//! input events, take screenshots, and record what the page requested and threw.
//!
//! One WebSocket to the browser carries every page's session (`Target.attachToTarget`
//! with `flatten`): a reader task routes answers to their callers by `id` and records the
//! events the tests look at (requests, exceptions, console errors) per session.
//!
//! Every wait is bounded; a failure saves a screenshot under `target/browser/` and says
//! what was awaited, what the page shows and what it threw.

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long one protocol call may take before the test fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the browser may take to start and open its DevTools port.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// The default bound of `Page::wait_for` (a loaded 2-core machine is slow, never this slow).
pub const WAIT: Duration = Duration::from_secs(45);

/// Where screenshots go: `target/browser/`.
pub fn shots_dir() -> PathBuf {
    let dir = crate::util::root().join("target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One request the page made, from `Network.requestWillBeSent`.
#[derive(Clone, Debug)]
pub struct Request {
    pub url: String,
    /// `Document`, `Fetch`, `EventSource`, `Script`, ...
    pub kind: String,
}

/// What a page's session reported.
#[derive(Default)]
struct Seen {
    requests: Vec<Request>,
    /// Uncaught exceptions and `console.error` calls.
    errors: Vec<String>,
    /// Browser log entries at level `error` (failed loads and the like): diagnostics only,
    /// since a test may provoke them (a 404, a restart).
    log: Vec<String>,
}

type Answer = Result<Value, String>;

struct Conn {
    out: mpsc::UnboundedSender<String>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_id: AtomicU64,
    seen: Mutex<HashMap<String, Seen>>,
}

impl Conn {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Answer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        if self.out.send(msg.to_string()).is_err() {
            return Err(format!("{method}: the connection to the browser is closed"));
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer.map_err(|e| format!("{method}: {e}")),
            Ok(Err(_)) => Err(format!("{method}: the connection to the browser closed")),
            Err(_) => Err(format!("{method}: no answer from the browser within 60 s")),
        }
    }

    /// Routes one message from the browser: an answer to its caller, an event to `seen`.
    fn dispatch(&self, text: &str) {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let Some(id) = msg["id"].as_u64() {
            if let Some(tx) = self.pending.lock().unwrap().remove(&id) {
                let answer = match msg.get("error") {
                    Some(e) => Err(e.to_string()),
                    None => Ok(msg["result"].clone()),
                };
                let _ = tx.send(answer);
            }
            return;
        }
        let Some(session) = msg["sessionId"].as_str() else {
            return;
        };
        let p = &msg["params"];
        let mut seen = self.seen.lock().unwrap();
        let seen = seen.entry(session.to_string()).or_default();
        match msg["method"].as_str().unwrap_or_default() {
            "Network.requestWillBeSent" => seen.requests.push(Request {
                url: p["request"]["url"].as_str().unwrap_or_default().into(),
                kind: p["type"].as_str().unwrap_or_default().into(),
            }),
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                let what = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("an exception");
                seen.errors.push(format!(
                    "uncaught: {what} ({}:{})",
                    d["url"].as_str().unwrap_or(""),
                    d["lineNumber"]
                ));
            }
            "Runtime.consoleAPICalled" if p["type"] == "error" => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| match (&a["value"], a["description"].as_str()) {
                        (Value::String(s), _) => s.clone(),
                        (Value::Null, Some(d)) => d.to_string(),
                        (v, _) => v.to_string(),
                    })
                    .collect();
                seen.errors
                    .push(format!("console.error: {}", args.join(" ")));
            }
            "Log.entryAdded" if p["entry"]["level"] == "error" => seen.log.push(format!(
                "{} ({})",
                p["entry"]["text"].as_str().unwrap_or_default(),
                p["entry"]["url"].as_str().unwrap_or_default()
            )),
            _ => {}
        }
    }
}

/// A headless chromium with its own profile, killed on drop.
pub struct Browser {
    child: std::process::Child,
    conn: Arc<Conn>,
    _profile: tempfile::TempDir,
}

/// The `chromium` on PATH, if any.
fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}

/// True when this process runs as root (chromium's sandbox refuses to start as root).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Browser {
    /// Starts Debian's `chromium` headless. `None` only when `CORRAL_SKIP_BROWSER=1` is set:
    /// without that, a missing browser fails the test, saying what to install.
    pub async fn launch() -> Option<Browser> {
        if std::env::var("CORRAL_SKIP_BROWSER").is_ok_and(|v| v == "1") {
            eprintln!("CORRAL_SKIP_BROWSER=1: browser test not run");
            return None;
        }
        let exe = find_chromium().unwrap_or_else(|| {
            panic!(
                "the browser tests need Debian's chromium on PATH: `apt-get install chromium` \
                 (`cargo xtask test` and .ci/run install it when run as root), or set \
                 CORRAL_SKIP_BROWSER=1 to skip them"
            )
        });
        let profile = tempfile::tempdir().unwrap();
        let stderr_path = profile.path().join("chromium.log");
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "--headless=new",
            "--remote-debugging-port=0",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--window-size=1280,900",
            // No sync, update checks or field trials talking to the outside.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-features=Translate,MediaRouter,OptimizationHints",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
        if is_root() {
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        // Its own process group, so drop can end the renderers with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));

        // chromium writes the port it chose and the browser's WebSocket path here.
        let port_file = profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        let ws_url = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let [port, path, ..] = text.lines().collect::<Vec<_>>()[..]
            {
                break format!("ws://127.0.0.1:{port}{path}");
            }
            let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("chromium exited at start ({status}):\n{}", log());
            }
            if start.elapsed() > LAUNCH_TIMEOUT {
                let _ = child.kill();
                panic!(
                    "chromium wrote no DevToolsActivePort within 60 s:\n{}",
                    log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(&ws_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to chromium at {ws_url}: {e}"));
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<String>();
        let conn = Arc::new(Conn {
            out,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            seen: Mutex::new(HashMap::new()),
        });
        tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        });
        let reader = conn.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(text) = msg {
                    reader.dispatch(&text);
                }
            }
            // The browser went away: fail every waiting call now rather than at its timeout.
            reader.pending.lock().unwrap().clear();
        });
        Some(Browser {
            child,
            conn,
            _profile: profile,
        })
    }

    /// A new tab at `about:blank`, with the page, runtime, network and log domains on.
    pub async fn page(&self) -> Page {
        let call = |m: &'static str, p: Value| {
            let conn = self.conn.clone();
            async move { conn.call(None, m, p).await.unwrap() }
        };
        let target = call("Target.createTarget", json!({"url": "about:blank"})).await;
        let target = target["targetId"].as_str().unwrap().to_string();
        let attached = call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )
        .await;
        let session = attached["sessionId"].as_str().unwrap().to_string();
        let page = Page {
            conn: self.conn.clone(),
            session,
        };
        for domain in ["Page", "Runtime", "Network", "Log"] {
            page.cmd(&format!("{domain}.enable"), json!({})).await;
        }
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group holds the browser and its renderer, GPU and utility processes.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab, driven through its own session on the browser's connection.
pub struct Page {
    conn: Arc<Conn>,
    session: String,
}

/// A JavaScript string literal for `s`.
pub fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

impl Page {
    /// Sends a protocol command on this page's session; failure fails the test.
    pub async fn cmd(&self, method: &str, params: Value) -> Value {
        match self.conn.call(Some(&self.session), method, params).await {
            Ok(v) => v,
            Err(e) => self.fail(&e).await,
        }
    }

    /// Evaluates `js` (awaiting a promise), returning its value or the exception's text.
    pub async fn try_eval(&self, js: &str) -> Result<Value, String> {
        let r = self
            .conn
            .call(
                Some(&self.session),
                "Runtime.evaluate",
                json!({"expression": js, "awaitPromise": true, "returnByValue": true}),
            )
            .await?;
        if let Some(d) = r.get("exceptionDetails") {
            return Err(d["exception"]["description"]
                .as_str()
                .or(d["text"].as_str())
                .unwrap_or("exception")
                .to_string());
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Evaluates `js` (awaiting a promise) and returns its value as JSON; an exception
    /// fails the test.
    pub async fn eval(&self, js: &str) -> Value {
        match self.try_eval(js).await {
            Ok(v) => v,
            Err(e) => self.fail(&format!("evaluating {js}: {e}")).await,
        }
    }

    /// Navigates to `url` and waits for the document to load.
    pub async fn goto(&self, url: &str) {
        let r = self.cmd("Page.navigate", json!({"url": url})).await;
        if let Some(e) = r["errorText"].as_str() {
            self.fail::<()>(&format!("navigating to {url}: {e}")).await;
        }
        self.wait_for("document.readyState === 'complete'", WAIT)
            .await;
    }

    /// Polls `js` until it is truthy and returns its value; fails after `timeout`. An
    /// expression that throws (an element not there yet) counts as not yet.
    pub async fn wait_for(&self, js: &str, timeout: Duration) -> Value {
        let expr = format!("(() => {{ try {{ return ({js}); }} catch (e) {{ return null; }} }})()");
        let start = Instant::now();
        loop {
            // During a navigation the context may be gone for a moment: not yet, too.
            if let Ok(v) = self.try_eval(&expr).await
                && truthy(&v)
            {
                return v;
            }
            if start.elapsed() > timeout {
                self.fail::<()>(&format!("waited {timeout:?} for `{js}`"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for `selector` to match a rendered element, scrolls it into view and returns
    /// its centre in CSS pixels.
    async fn centre(&self, selector: &str) -> (f64, f64) {
        let js = format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) return null; \
             e.scrollIntoView({{block: 'center', inline: 'center'}}); \
             const r = e.getBoundingClientRect(); \
             if (r.width === 0 || r.height === 0) return null; \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            s = js_str(selector)
        );
        let v = self.wait_for(&js, WAIT).await;
        (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
    }

    /// Clicks the element matching `selector` with real mouse events at its centre.
    pub async fn click(&self, selector: &str) {
        let (x, y) = self.centre(selector).await;
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.cmd(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Replaces the value of the field matching `selector` with `text`: typed as real
    /// text input into inputs and textareas, chosen in a `<select>` (the option with
    /// that value, that text, or that text followed by ` (...)`).
    pub async fn fill(&self, selector: &str, text: &str) {
        self.centre(selector).await;
        let prepare = format!(
            "(() => {{ const e = document.querySelector({s}); e.focus(); \
             if (e.tagName === 'SELECT') {{ \
               const o = [...e.options].find(o => o.value === {t} || o.text.trim() === {t} || o.text.startsWith({t} + ' (')); \
               if (!o) return 'no option ' + {t}; \
               e.value = o.value; \
               e.dispatchEvent(new Event('input', {{bubbles: true}})); \
               e.dispatchEvent(new Event('change', {{bubbles: true}})); return 'chosen'; }} \
             e.select ? e.select() : null; e.value = ''; return 'type'; }})()",
            s = js_str(selector),
            t = js_str(text)
        );
        match self.eval(&prepare).await.as_str() {
            Some("type") => {
                self.cmd("Input.insertText", json!({"text": text})).await;
                self.eval(&format!(
                    "document.querySelector({}).dispatchEvent(new Event('change', {{bubbles: true}}))",
                    js_str(selector)
                ))
                .await;
            }
            Some("chosen") => {}
            other => {
                self.fail::<()>(&format!("filling {selector}: {other:?}"))
                    .await;
            }
        }
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let r = self
            .conn
            .call(
                Some(&self.session),
                "Page.captureScreenshot",
                json!({"format": "png"}),
            )
            .await
            .unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Emulates a `width` x `height` screen (a phone when narrow).
    pub async fn set_viewport(&self, width: u32, height: u32) {
        self.cmd(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        )
        .await;
    }

    /// Every request the page has made so far.
    pub fn requests(&self) -> Vec<Request> {
        let seen = self.conn.seen.lock().unwrap();
        seen.get(&self.session)
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    /// Every URL the page has requested so far.
    pub fn request_urls(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.url).collect()
    }

    /// Uncaught exceptions and `console.error` calls so far.
    pub fn errors(&self) -> Vec<String> {
        let seen = self.conn.seen.lock().unwrap();
        seen.get(&self.session)
            .map(|s| s.errors.clone())
            .unwrap_or_default()
    }

    /// Fails unless the page has thrown nothing and logged no error.
    pub async fn assert_no_errors(&self) {
        let errors = self.errors();
        if !errors.is_empty() {
            self.fail::<()>(&format!("the page reported errors: {errors:#?}"))
                .await;
        }
    }

    /// Fails the test: saves a screenshot named after the test, then panics with `what`,
    /// the page's address and text, and what it threw and logged. (Generic rather than
    /// `-> !`, which an async fn cannot return on stable.)
    pub async fn fail<T>(&self, what: &str) -> T {
        let name = std::thread::current()
            .name()
            .unwrap_or("browser")
            .replace("::", "-");
        let shot = shots_dir().join(format!("{name}-failure.png"));
        let saved = match self
            .conn
            .call(
                Some(&self.session),
                "Page.captureScreenshot",
                json!({"format": "png"}),
            )
            .await
        {
            Ok(r) => base64::engine::general_purpose::STANDARD
                .decode(r["data"].as_str().unwrap_or_default())
                .ok()
                .and_then(|png| std::fs::write(&shot, png).ok())
                .map(|_| shot.display().to_string()),
            Err(_) => None,
        };
        let state = self
            .try_eval(
                "JSON.stringify({url: location.href, \
                 text: (document.body ? document.body.innerText : '').slice(0, 1500)})",
            )
            .await
            .unwrap_or_default();
        let (errors, log) = {
            let seen = self.conn.seen.lock().unwrap();
            seen.get(&self.session)
                .map(|s| (s.errors.clone(), s.log.clone()))
                .unwrap_or_default()
        };
        panic!(
            "{what}\nscreenshot: {}\npage: {}\nerrors: {errors:#?}\nbrowser log: {log:#?}",
            saved.as_deref().unwrap_or("(none)"),
            state.as_str().unwrap_or_default()
        );
    }
}
