// Corral dashboard: vanilla JS, no build step. Talks to the REST API and SSE streams with
// the session cookie; non-GET requests carry the session's CSRF token. The API token is
// only ever POSTed to /v1/session and never stored by the page.
"use strict";

(function () {
  const session = { me: null, csrf: "" };
  // Streams open for the current view; closed when the view changes.
  let streams = [];
  const test = (window.__corral = { seqs: [], streamOpen: false });
  const STEP_STATES = ["queued", "running", "waiting", "retrying", "succeeded", "failed", "cancelled", "skipped"];

  const $ = (sel, root) => (root || document).querySelector(sel);

  // Builds an element: el("td", {class: "x", "data-run-id": id}, "text", child, ...).
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || (body && body.message) || "HTTP " + status);
      this.status = status;
      this.code = body && body.error && body.error.code;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
    const opts = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(path, opts);
    if (resp.status === 204) return null;
    let data = null;
    const text = await resp.text();
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { message: text }; }
    if (!resp.ok) {
      if (resp.status === 401 && path !== "/v1/session") loggedOut();
      throw new ApiError(resp.status, data);
    }
    return data;
  }

  const fmtTime = (t) => {
    if (t === null || t === undefined) return "-";
    const ms = t > 1e12 ? t : t * 1000;
    return new Date(ms).toLocaleString();
  };
  function fmtDuration(start, end) {
    if (!start) return "-";
    const s = (end || Date.now() / (start > 1e12 ? 1 : 1000)) - start;
    const secs = start > 1e12 ? s / 1000 : s;
    if (secs < 0) return "-";
    if (secs < 60) return secs.toFixed(secs < 10 ? 1 : 0) + " s";
    return Math.floor(secs / 60) + " m " + Math.round(secs % 60) + " s";
  }
  const num = (n) => (typeof n === "number" ? n.toLocaleString() : "-");
  const pretty = (v) => JSON.stringify(v, null, 2);
  const badge = (s) => el("span", { class: "badge st-" + s }, s);
  const canOperate = () => session.me && (session.me.role === "operator" || session.me.role === "admin");
  const isAdmin = () => session.me && session.me.role === "admin";

  function toast(text, bad) {
    const t = $("#toast");
    t.textContent = text;
    t.className = bad ? "bad" : "";
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
  }

  function closeStreams() {
    for (const s of streams) s.close();
    streams = [];
    test.streamOpen = false;
  }

  // ---- session ----

  function showSession() {
    const me = session.me;
    $("#nav").hidden = !me;
    $("#who").hidden = !me;
    $("#nav-admin").hidden = !isAdmin();
    $("#who-tenant").textContent = me ? me.tenant : "";
    $("#who-role").textContent = me ? me.role : "";
  }

  function loggedOut() {
    session.me = null;
    session.csrf = "";
    closeStreams();
    showSession();
    $("#view").replaceChildren();
    $("#login-view").hidden = false;
    $("#login-token").focus();
  }

  function loggedIn(me) {
    session.me = me;
    session.csrf = me.csrf_token || "";
    showSession();
    $("#login-view").hidden = true;
    route();
  }

  async function login(ev) {
    ev.preventDefault();
    const form = ev.target;
    const err = $("#login-error");
    err.hidden = true;
    const token = form.elements.token.value.trim();
    form.elements.token.value = "";
    try {
      loggedIn(await api("POST", "/v1/session", { token }));
    } catch (e) {
      err.textContent = e.status === 401 ? "That token is not valid (or was revoked)." : e.message;
      err.hidden = false;
      form.elements.token.focus();
    }
  }

  async function logout() {
    try { await api("DELETE", "/v1/session"); } catch (_) { /* logged out either way */ }
    location.hash = "#/runs";
    loggedOut();
  }

  // ---- routing ----

  function route() {
    closeStreams();
    if (!session.me) return loggedOut();
    const hash = location.hash || "#/runs";
    const parts = hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    for (const a of document.querySelectorAll("#nav a")) {
      a.toggleAttribute("aria-current", hash.startsWith(a.getAttribute("href")));
      if (a.hasAttribute("aria-current")) a.setAttribute("aria-current", "page");
    }
    const view = $("#view");
    view.replaceChildren();
    const page =
      parts[0] === "runs" && parts[1] ? () => runPage(view, parts[1]) :
      parts[0] === "plugins" ? () => pluginsPage(view) :
      parts[0] === "pipelines" ? () => pipelinesPage(view) :
      parts[0] === "schedules" ? () => schedulesPage(view) :
      parts[0] === "admin" ? () => adminPage(view) :
      () => runsPage(view, parts[0] === "runs" ? new URLSearchParams(hash.split("?")[1] || "") : new URLSearchParams());
    page().catch((e) => view.append(el("p", { class: "error", role: "alert" }, e.message)));
  }

  // ---- runs list ----

  async function runsPage(view, params) {
    const filter = el("select", { id: "status-filter", name: "status" },
      ["", "queued", "running", "waiting", "paused", "succeeded", "failed", "cancelled"].map((s) =>
        el("option", { value: s }, s || "all")));
    const tbody = el("tbody");
    const empty = el("p", { class: "muted", id: "runs-empty", hidden: true }, "No runs yet.");
    const table = el("table", { id: "runs" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Run"), el("th", {}, "Status"), el("th", {}, "Pipeline"),
        el("th", { class: "hide-narrow" }, "Started"), el("th", {}, "Duration"),
        el("th", { class: "hide-narrow" }, "Fuel"), el("th", { class: "hide-narrow" }, "Tokens"))),
      tbody);
    view.append(el("h1", {}, "Runs"));
    if (canOperate()) view.append(await startRunForm(params.get("pipeline")));
    view.append(el("div", { class: "toolbar" },
      el("div", {}, el("label", { for: "status-filter" }, "Status"), filter)),
      el("div", { class: "table-wrap" }, table),
      empty);

    let reloading = null;
    async function reload() {
      const q = filter.value ? "?status=" + encodeURIComponent(filter.value) + "&limit=100" : "?limit=100";
      const data = await api("GET", "/v1/runs" + q);
      tbody.replaceChildren(...(data.runs || []).map(runRow));
      empty.hidden = tbody.children.length > 0;
    }
    // Coalesces bursts of events into one re-read of the list.
    function soon() {
      if (reloading) return;
      reloading = setTimeout(() => { reloading = null; reload().catch(() => {}); }, 300);
    }
    filter.addEventListener("change", () => reload().catch((e) => toast(e.message, true)));
    await reload();

    const es = new EventSource("/v1/events");
    streams.push(es);
    es.onopen = () => { test.streamOpen = true; };
    es.onerror = () => { test.streamOpen = es.readyState === EventSource.OPEN; };
    es.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (_) { return; }
      if (ev.type === "heartbeat") return;
      if (ev.type === "resync") return soon();
      const row = tbody.querySelector('tr[data-run-id="' + CSS.escape(ev.run_id || "") + '"]');
      const status = runStatusOf(ev);
      if (!row) return soon();
      if (status) {
        if (filter.value && filter.value !== status) return soon();
        row.dataset.status = status;
        row.querySelector(".status").replaceChildren(badge(status));
      }
      if (ev.payload && ev.payload.all_done) soon();
    };
  }

  // The run status an event implies, when it implies one.
  function runStatusOf(ev) {
    const p = ev.payload || {};
    if (ev.type === "complete" && p.all_done) return p.status;
    if (ev.type === "input_required") return "waiting";
    if (ev.type === "paused") return "paused";
    if (ev.type === "resumed") return "queued";
    if (ev.type === "running") return "running";
    if (ev.type === "queued" || ev.type === "restarted") return "queued";
    return null;
  }

  function runRow(r) {
    return el("tr", { "data-run-id": r.id, "data-status": r.status },
      el("td", {}, el("a", { href: "#/runs/" + encodeURIComponent(r.id) }, r.id)),
      el("td", { class: "status" }, badge(r.status)),
      el("td", {}, r.pipeline_name || r.pipeline_id || "-"),
      el("td", { class: "hide-narrow" }, fmtTime(r.started_at || r.created_at)),
      el("td", { class: "num" }, fmtDuration(r.started_at, r.finished_at)),
      el("td", { class: "num hide-narrow" }, num(r.fuel_used)),
      // No capability reports LLM tokens yet.
      el("td", { class: "num hide-narrow" }, "-"));
  }

  async function startRunForm(preselect) {
    const data = await api("GET", "/v1/pipelines");
    const pipelines = data.pipelines || [];
    const select = el("select", { id: "start-pipeline", name: "pipeline", required: true },
      pipelines.map((p) => el("option", { value: p.id, selected: p.id === preselect || p.name === preselect }, p.name + " (" + p.id + ")")));
    const input = el("textarea", { id: "start-input", name: "input", spellcheck: "false" }, "{}");
    const err = el("p", { class: "error", role: "alert", hidden: true });
    const form = el("form", { id: "start-run", class: "panel" },
      el("h2", {}, "Start a run"),
      pipelines.length ? null : el("p", { class: "muted" }, "No stored pipelines yet: POST one to /v1/pipelines."),
      el("div", { class: "row" }, el("label", { for: "start-pipeline" }, "Pipeline"), select),
      el("div", { class: "row" }, el("label", { for: "start-input" }, "Input (JSON)"), input),
      el("button", { type: "submit", disabled: !pipelines.length }, "Start run"), err);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.hidden = true;
      let value;
      try { value = JSON.parse(input.value || "null"); } catch (e) {
        err.textContent = "Input is not JSON: " + e.message;
        err.hidden = false;
        return;
      }
      try {
        const r = await api("POST", "/v1/runs", { pipeline: select.value, input: value });
        location.hash = "#/runs/" + encodeURIComponent(r.run_id);
      } catch (e) {
        err.textContent = e.message;
        err.hidden = false;
      }
    });
    return form;
  }

  // ---- one run ----

  async function runPage(view, id) {
    const data = await api("GET", "/v1/runs/" + encodeURIComponent(id));
    const run = data.run;
    const section = el("section", { id: "run", "data-run-id": run.id, "data-status": run.status });
    const statusBadge = el("span", { id: "run-status" }, badge(run.status));
    const cancel = el("button", { type: "button", id: "cancel", class: "danger" }, "Cancel run");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try { await api("POST", "/v1/runs/" + encodeURIComponent(run.id) + "/cancel"); toast("Cancel requested"); }
      catch (e) { toast(e.message, true); cancel.disabled = false; }
    });
    // Pause lets the current step attempt finish; the run's `paused` event shows when it has.
    const pause = el("button", { type: "button", id: "pause" }, "Pause");
    pause.addEventListener("click", async () => {
      pause.disabled = true;
      try {
        const r = await api("POST", "/v1/runs/" + encodeURIComponent(run.id) + "/pause");
        toast(r && r.status === "paused" ? "Run paused" : "Pause requested: it pauses after the current step attempt");
      } catch (e) { toast(e.message, true); pause.disabled = false; }
    });
    const resume = el("button", { type: "button", id: "resume" }, "Resume");
    resume.addEventListener("click", async () => {
      resume.disabled = true;
      try { await api("POST", "/v1/runs/" + encodeURIComponent(run.id) + "/resume"); toast("Run resumed"); }
      catch (e) { toast(e.message, true); resume.disabled = false; }
    });
    // Which of the buttons an operator sees for a run in status `s`.
    function showActions(s) {
      const op = canOperate();
      cancel.hidden = !op || !["queued", "running", "waiting", "paused"].includes(s);
      pause.hidden = !op || !["queued", "running", "waiting"].includes(s);
      resume.hidden = !op || s !== "paused";
      pause.disabled = false;
      resume.disabled = false;
    }
    showActions(run.status);
    let restartBox = restartForm(run, data.steps || []);
    const cards = el("div", { class: "cards", id: "steps" });
    const byName = new Map();
    for (const s of data.steps || []) {
      const card = stepCard(s, (data.attempts || []).filter((a) => a.step_idx === s.idx));
      byName.set(s.name, card);
      cards.append(card);
    }
    const events = el("ol", { id: "events", "aria-label": "Run log" });
    const ask = el("div", { id: "ask" });
    const output = el("pre", { id: "output" }, data.output === null || data.output === undefined ? "-" : pretty(data.output));
    const runError = el("p", { class: "error", id: "run-error", hidden: !run.error_message }, run.error_message || "");
    const artifacts = el("ul", { id: "artifacts" });
    // Held here, not looked up when an event comes: the page may have moved on by then.
    const runFuel = el("span", { id: "run-fuel" }, num(run.fuel_used));
    section.append(
      el("h1", {}, "Run ", el("code", {}, run.id), " ", statusBadge),
      el("p", { class: "muted" }, "Pipeline ", run.pipeline_name || "-", " - started ", fmtTime(run.started_at || run.created_at),
        " - fuel ", runFuel),
      run.schedule_id ? el("p", { class: "muted", id: "run-schedule" }, "Started by schedule ",
        el("a", { href: "#/schedules" }, el("code", {}, run.schedule_id)), " for ", fmtTime(run.scheduled_for)) : null,
      el("div", { class: "run-actions" }, pause, resume, cancel), runError, ask, restartBox,
      el("h2", {}, "Steps"), cards,
      el("h2", {}, "Output"), output,
      el("h2", {}, "Artifacts"), artifacts,
      el("h2", {}, "Log"), events);
    view.append(section);
    await loadArtifacts(run.id, artifacts);

    const terminal = (s) => ["succeeded", "failed", "cancelled"].includes(s);
    function setStatus(s) {
      const changed = section.dataset.status !== s;
      section.dataset.status = s;
      statusBadge.replaceChildren(badge(s));
      if (changed || terminal(s)) showActions(s);
      if (!terminal(s) && s !== "paused") restartBox.hidden = true;
    }
    function card(name) {
      let c = byName.get(name);
      if (!c && name) {
        c = stepCard({ name, status: "queued", attempts: 0, fuel_used: 0 });
        byName.set(name, c);
        cards.append(c);
      }
      return c;
    }

    test.seqs = [];
    const seen = new Set();
    const es = new EventSource("/v1/runs/" + encodeURIComponent(run.id) + "/events");
    streams.push(es);
    es.onopen = () => { test.streamOpen = true; };
    es.onerror = () => {
      // The browser reconnects by itself with Last-Event-ID; after the final event the
      // server answers 204 and the browser stops (CLOSED).
      test.streamOpen = es.readyState === EventSource.OPEN;
    };
    es.onmessage = async (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (_) { return; }
      if (ev.type === "heartbeat" || typeof ev.seq !== "number") return;
      if (seen.has(ev.seq)) return;
      seen.add(ev.seq);
      test.seqs.push(ev.seq);
      const p = ev.payload || {};
      const c = card(p.step_id);
      switch (ev.type) {
        case "queued":
          if (!p.step_id) setStatus("queued");
          break;
        case "restarted": {
          // A restarted run goes on in the same stream: the step and those after it start over.
          setStatus("queued");
          runError.hidden = true;
          let from = false;
          for (const [name, cc] of byName) {
            if (name === p.step_id) from = true;
            if (from) setCard(cc, "queued", {});
          }
          break;
        }
        case "running":
          setStatus("running");
          if (c) setCard(c, "running", p);
          break;
        case "retrying":
          if (c) setCard(c, "retrying", p);
          break;
        case "input_required":
          setStatus("waiting");
          if (c) setCard(c, "waiting", p);
          ask.replaceChildren(answerForm(run.id, p, ask));
          break;
        case "error":
          if (c) setCard(c, p.will_retry ? "retrying" : "failed", p);
          break;
        case "cancelled":
          if (c) setCard(c, "cancelled", p);
          break;
        case "paused":
          setStatus("paused");
          // An interrupted attempt runs again on resume.
          if (c && p.interrupted) setCard(c, "queued", p);
          break;
        case "resumed":
          setStatus("queued");
          break;
        case "complete":
          if (p.all_done) {
            setStatus(p.status);
            ask.replaceChildren();
            if (typeof p.fuel_used === "number") runFuel.textContent = num(p.fuel_used);
            if (p.message) { runError.textContent = (p.error_code ? p.error_code + ": " : "") + p.message; runError.hidden = false; }
            // A restarted run's log has a final event per segment: the replay of an
            // earlier one goes on (the server ends the stream after the latest).
            if (ev.seq < run.last_seq) break;
            es.close();
            test.streamOpen = false;
            if (p.status === "succeeded") toast("Run succeeded");
            else toast("Run " + p.status, true);
            try {
              const fresh = await api("GET", "/v1/runs/" + encodeURIComponent(run.id));
              output.textContent = fresh.output === null || fresh.output === undefined ? "-" : pretty(fresh.output);
              for (const s of fresh.steps || []) { const cc = card(s.name); if (cc) setCard(cc, s.status, { fuel_used: s.fuel_used, attempt: s.attempts, message: s.error_message }); }
              // Ended: it can be restarted, from the steps it reached.
              const box = restartForm(fresh.run, fresh.steps || []);
              restartBox.replaceWith(box);
              restartBox = box;
              await loadArtifacts(run.id, artifacts);
            } catch (_) { /* the page keeps what the stream showed */ }
          } else if (c) {
            setCard(c, "succeeded", p);
            if (p.artifact_id) loadArtifacts(run.id, artifacts).catch(() => {});
          }
          break;
        default:
          break;
      }
      events.append(eventLine(ev));
      events.scrollTop = events.scrollHeight;
    };
  }

  // ---- restarting an ended run from a step ----

  function restartForm(run, steps) {
    const box = el("div", { id: "restart" });
    const ended = ["succeeded", "failed", "cancelled", "paused"].includes(run.status);
    box.hidden = !canOperate() || !ended || !steps.length;
    // A step can be restarted when every step before it succeeded (their outputs are reused).
    const choices = [];
    for (const s of steps) {
      choices.push(s);
      if (s.status !== "succeeded") break;
    }
    const open = el("button", { type: "button", id: "restart-open", class: "secondary" }, "Restart from a step");
    const err = el("p", { class: "error", role: "alert", hidden: true });
    const pick = el("select", { id: "restart-step", name: "from_step" },
      choices.map((s) => el("option", { value: s.name, selected: s === choices[choices.length - 1] }, s.name)));
    const form = el("form", { id: "restart-form", class: "panel", hidden: true },
      el("h2", {}, "Restart this run"),
      el("p", { class: "hint" }, "The run goes on from the step you pick; the steps before it keep their outputs. " +
        "The step gets your feedback as ctx.feedback; its earlier output stays in its history."),
      el("div", { class: "row" }, el("label", { for: "restart-step" }, "From step"), pick),
      el("div", { class: "row" }, el("label", { for: "restart-feedback" }, "Feedback (JSON, or plain text)"),
        el("textarea", { id: "restart-feedback", name: "feedback", spellcheck: "true" }, "")),
      el("div", { class: "row" }, el("label", { for: "restart-reason" }, "Reason (optional)"),
        el("input", { id: "restart-reason", name: "reason", type: "text", maxlength: 1000 })),
      el("button", { type: "submit", id: "restart-submit" }, "Restart run"), err);
    open.addEventListener("click", () => { form.hidden = !form.hidden; });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.hidden = true;
      const text = form.elements.feedback.value.trim();
      let feedback;
      if (text) { try { feedback = JSON.parse(text); } catch (_) { feedback = text; } }
      const body = { from_step: pick.value };
      if (feedback !== undefined) body.feedback = feedback;
      if (form.elements.reason.value.trim()) body.reason = form.elements.reason.value.trim();
      const submit = $("#restart-submit", form);
      submit.disabled = true;
      try {
        const r = await api("POST", "/v1/runs/" + encodeURIComponent(run.id) + "/restart", body);
        toast("Restarted from " + r.from_step + " (attempt " + r.attempt + ")");
        route();
      } catch (e) { err.textContent = e.message; err.hidden = false; submit.disabled = false; }
    });
    box.append(open, form);
    return box;
  }

  // The earlier attempts of a step: each with the feedback it got and, once a restart
  // replaced it, the output it had.
  function historyOf(attempts) {
    const past = attempts.filter((a) => a.output !== null && a.output !== undefined ||
      a.feedback !== null && a.feedback !== undefined || a.status !== "succeeded");
    if (attempts.length < 2 && !past.length) return null;
    return el("details", { class: "history" },
      el("summary", {}, "History (" + attempts.length + " attempt" + (attempts.length === 1 ? "" : "s") + ")"),
      el("ol", {}, attempts.map((a) => el("li", { "data-attempt": a.attempt, "data-generation": a.generation },
        "attempt " + a.attempt + " ", badge(a.status),
        a.error_code ? el("span", { class: "muted" }, " " + a.error_code) : null,
        a.feedback !== null && a.feedback !== undefined ? el("div", {}, el("span", { class: "muted" }, "feedback "), el("pre", { class: "feedback" }, pretty(a.feedback))) : null,
        a.output !== null && a.output !== undefined ? el("div", {}, el("span", { class: "muted" }, "output "), el("pre", { class: "prior-output" }, pretty(a.output))) : null))));
  }

  function stepCard(s, attempts) {
    const c = el("div", { class: "card", "data-step": s.name, "data-state": s.status },
      el("h3", {}, s.name),
      el("div", { class: "meta" }, s.plugin || ""),
      el("div", { class: "state" }, badge(s.status)),
      el("progress", { max: 100, value: 0, hidden: s.status !== "running" }),
      el("div", { class: "label meta" }),
      el("div", { class: "meta" }, "attempt ", el("span", { class: "attempt" }, s.attempts || 0),
        " - fuel ", el("span", { class: "fuel" }, num(s.fuel_used))),
      s.restarts ? el("div", { class: "meta" }, "restarted " + s.restarts + "x") : null,
      el("p", { class: "error", hidden: !s.error_message }, s.error_message || ""),
      historyOf(attempts || []));
    return c;
  }

  function setCard(c, state, p) {
    if (!STEP_STATES.includes(state)) return;
    c.dataset.state = state;
    $(".state", c).replaceChildren(badge(state));
    const bar = $("progress", c);
    bar.hidden = state !== "running";
    if (typeof p.progress_pct === "number") bar.value = Math.max(0, Math.min(100, p.progress_pct));
    if (p.progress_label) $(".label", c).textContent = p.progress_label;
    if (state === "succeeded") { bar.value = 100; $(".label", c).textContent = ""; }
    if (typeof p.attempt === "number") $(".attempt", c).textContent = p.attempt;
    if (typeof p.fuel_used === "number") $(".fuel", c).textContent = num(p.fuel_used);
    const err = $(".error", c);
    if (state === "failed" && p.message) { err.textContent = (p.error_code ? p.error_code + ": " : "") + p.message; err.hidden = false; }
    else if (state !== "failed") err.hidden = true;
  }

  function eventLine(ev) {
    const p = ev.payload || {};
    let text;
    if (ev.type === "log") text = (p.step_id ? "[" + p.step_id + "] " : "") + (p.level || "") + " " + (p.message || "");
    else if (ev.type === "http") text = (p.step_id ? "[" + p.step_id + "] " : "") + [p.method, p.url || p.host, p.status].filter((x) => x !== undefined).join(" ") || pretty(p);
    else if (ev.type === "tool_call") text = (p.step_id ? "[" + p.step_id + "] " : "") + (p.tool || p.name || "") + " " + JSON.stringify(p);
    else if (ev.type === "model_call") text = (p.step_id ? "[" + p.step_id + "] " : "") + [p.alias, "(" + [p.provider, p.model].filter(Boolean).join(" ") + ")", p.status, num(p.input_tokens || 0) + " in + " + num(p.output_tokens || 0) + " out tokens", p.cached ? "cached" : "", p.replayed ? "replayed" : "", typeof p.latency_ms === "number" ? p.latency_ms + " ms" : "", p.error || ""].filter(Boolean).join(" ");
    else if (ev.type === "model") text = (p.step_id ? "[" + p.step_id + "] " : "") + (p.text || p.delta || JSON.stringify(p));
    else if (ev.type === "paused") text = p.interrupted ? "[" + p.step_id + "] attempt " + p.attempt + " interrupted: it runs again on resume" : p.step_id ? "before [" + p.step_id + "]" : "";
    else if (ev.type === "resumed") text = "queued again";
    else if (ev.type === "running" && p.progress_label) text = "[" + p.step_id + "] " + (p.progress_pct || 0) + "% " + p.progress_label;
    else text = JSON.stringify(p);
    return el("li", { "data-seq": ev.seq, "data-type": ev.type, class: p.level ? "lv-" + p.level : null },
      el("span", { class: "muted" }, "#" + ev.seq + " "), el("span", { class: "kind" }, ev.type), text);
  }

  async function loadArtifacts(runId, list) {
    const data = await api("GET", "/v1/runs/" + encodeURIComponent(runId) + "/artifacts");
    const items = data.artifacts || [];
    list.replaceChildren(...items.map((a) => {
      const href = "/v1/artifacts/" + encodeURIComponent(a.id);
      return el("li", {}, (a.step || a.step_name || a.name || a.id) + " ",
        el("span", { class: "muted" }, a.content_type || "", a.size !== undefined ? " " + num(a.size) + " B" : ""), " ",
        el("a", { href, target: "_blank", rel: "noopener" }, "view"), " ",
        el("a", { href, download: (a.name || a.id) }, "download"));
    }));
    if (!items.length) list.append(el("li", { class: "muted" }, "none"));
  }

  // ---- answering a question ----

  function answerForm(runId, p, box) {
    const schema = p.answer_schema && typeof p.answer_schema === "object" ? p.answer_schema : null;
    const err = el("p", { class: "error", role: "alert", hidden: true });
    const form = el("form", { id: "answer", class: "panel" },
      el("h2", {}, "This run is waiting for an answer"),
      el("p", { id: "question" }, p.question || ""));
    const simple = schema && schema.type === "object" && schema.properties &&
      Object.values(schema.properties).every((f) => f && (Array.isArray(f.enum) || ["string", "number", "integer", "boolean"].includes(f.type)));
    const required = new Set((schema && schema.required) || []);
    const fields = [];
    if (simple) {
      for (const [name, f] of Object.entries(schema.properties)) {
        const id = "answer-" + name;
        let input;
        if (Array.isArray(f.enum)) {
          input = el("select", { id, name, required: required.has(name) },
            required.has(name) ? null : el("option", { value: "" }, "-"),
            f.enum.map((v, i) => el("option", { value: String(i) }, String(v))));
        } else if (f.type === "boolean") {
          input = el("input", { id, name, type: "checkbox" });
        } else if (f.type === "number" || f.type === "integer") {
          input = el("input", { id, name, type: "number", step: f.type === "integer" ? "1" : "any", required: required.has(name),
            min: f.minimum, max: f.maximum });
        } else {
          input = el("input", { id, name, type: "text", required: required.has(name), maxlength: f.maxLength, minlength: f.minLength });
        }
        fields.push([name, f, input]);
        form.append(el("div", { class: "row" },
          el("label", { for: id }, (f.title || name) + (required.has(name) ? " *" : "")), input,
          f.description ? el("div", { class: "hint" }, f.description) : null));
      }
    } else {
      const ta = el("textarea", { id: "answer-json", name: "answer", spellcheck: "false" }, "");
      form.append(el("div", { class: "row" }, el("label", { for: "answer-json" }, "Answer (JSON)"),
        schema ? el("pre", {}, pretty(schema)) : null, ta));
    }
    form.append(el("button", { type: "submit" }, "Send answer"), err);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.hidden = true;
      let answer;
      try {
        if (simple) {
          answer = {};
          for (const [name, f, input] of fields) {
            if (Array.isArray(f.enum)) { if (input.value !== "") answer[name] = f.enum[Number(input.value)]; }
            else if (f.type === "boolean") answer[name] = input.checked;
            else if (f.type === "number" || f.type === "integer") { if (input.value !== "") answer[name] = Number(input.value); }
            else if (input.value !== "" || required.has(name)) answer[name] = input.value;
          }
        } else {
          answer = JSON.parse(form.elements.answer.value);
        }
      } catch (e) { err.textContent = "Answer is not JSON: " + e.message; err.hidden = false; return; }
      try {
        await api("POST", "/v1/runs/" + encodeURIComponent(runId) + "/input", answer);
        box.replaceChildren(el("p", { class: "muted" }, "Answer sent; the run resumes."));
      } catch (e) { err.textContent = e.message; err.hidden = false; }
    });
    return form;
  }

  // ---- plugins, pipelines, admin ----

  async function pluginsPage(view) {
    const [plugins, tools] = await Promise.all([api("GET", "/v1/plugins"), api("GET", "/v1/tools")]);
    view.append(el("h1", {}, "Plugins"));
    const rows = (plugins.plugins || []).map((p) => {
      return el("tr", { "data-plugin-id": p.id },
        el("td", {}, p.name + "@" + p.version),
        el("td", {}, p.world || "-"),
        el("td", { class: "hide-narrow" }, el("code", { title: p.digest }, (p.digest || "").slice(0, 19))),
        el("td", {}, p.manifest ? el("pre", {}, pretty(p.manifest)) : el("span", { class: "muted" }, "none")));
    });
    view.append(el("div", { class: "table-wrap" }, el("table", { id: "plugins" },
      el("thead", {}, el("tr", {}, el("th", {}, "Plugin"), el("th", {}, "World"), el("th", { class: "hide-narrow" }, "Digest"), el("th", {}, "Grants"))),
      el("tbody", {}, rows))));
    if (!rows.length) view.append(el("p", { class: "muted" }, "No plugins uploaded yet."));
    view.append(el("h2", {}, "Tools"));
    const tl = (tools.tools || []).map((t) => el("div", { class: "panel", "data-tool": t.name },
      el("h3", {}, t.name, " ", el("span", { class: "muted" }, t.plugin)),
      t.description ? el("p", {}, t.description) : null,
      el("pre", {}, pretty(t.inputSchema))));
    view.append(...(tl.length ? tl : [el("p", { class: "muted" }, "No tool plugins.")]));
  }

  async function pipelinesPage(view) {
    const data = await api("GET", "/v1/pipelines");
    view.append(el("h1", {}, "Pipelines"));
    const list = data.pipelines || [];
    if (!list.length) view.append(el("p", { class: "muted" }, "No stored pipelines yet."));
    for (const p of list) {
      let spec = p.spec || p.pipeline || null;
      if (!spec) {
        try { spec = (await api("GET", "/v1/pipelines/" + encodeURIComponent(p.id))); } catch (_) { spec = {}; }
      }
      if (typeof spec === "string") { try { spec = JSON.parse(spec); } catch (_) { /* shown as is */ } }
      const body = (spec && (spec.spec || spec.pipeline)) || spec || {};
      const steps = (body && body.steps) || [];
      view.append(el("div", { class: "panel", "data-pipeline-id": p.id },
        el("h2", {}, p.name, " ", el("span", { class: "muted" }, p.id)),
        el("ol", {}, steps.map((s) => el("li", {}, el("strong", {}, s.name), " - ", s.plugin || s.agent || ""))),
        canOperate() ? el("a", { class: "button", href: "#/runs?pipeline=" + encodeURIComponent(p.id) }, "Start run") : null));
    }
  }

  async function schedulesPage(view) {
    view.append(el("h1", {}, "Schedules"));
    const rows = el("tbody");
    const table = el("div", { class: "table-wrap" }, el("table", { id: "schedules" },
      el("thead", {}, el("tr", {}, el("th", {}, "Pipeline"), el("th", {}, "Cron"), el("th", { class: "hide-narrow" }, "Policies"),
        el("th", {}, "Next fire"), el("th", {}, "Last run"), el("th", {}, ""))), rows));
    const empty = el("p", { class: "muted", hidden: true }, "No schedules yet: POST one to /v1/schedules, or use corral schedule create.");
    async function reload() {
      const data = await api("GET", "/v1/schedules");
      const list = data.schedules || [];
      empty.hidden = list.length > 0;
      rows.replaceChildren(...list.map((s) => el("tr", { "data-schedule-id": s.id },
        el("td", {}, s.pipeline_name, " ", el("span", { class: "muted hide-narrow" }, s.id)),
        el("td", {}, el("code", {}, s.cron), " ", el("span", { class: "muted" }, s.timezone)),
        el("td", { class: "hide-narrow" }, "overlap " + s.overlap + ", catch-up " + s.catch_up),
        el("td", { class: "next-fire" }, s.next_fire_at ? fmtTime(s.next_fire_at) : "never"),
        el("td", { class: "last-run" }, s.last_run_id ? el("a", { href: "#/runs/" + encodeURIComponent(s.last_run_id) }, s.last_run_id) : "-"),
        el("td", {}, canOperate() ? el("button", { type: "button", class: "danger delete-schedule", onclick: async () => {
          if (!confirm("Delete schedule " + s.id + "? Its runs stay.")) return;
          try { await api("DELETE", "/v1/schedules/" + encodeURIComponent(s.id)); toast("Schedule deleted"); await reload(); }
          catch (e) { toast(e.message, true); }
        } }, "Delete") : null))));
    }
    view.append(table, empty);
    await reload();
  }

  async function adminPage(view) {
    view.append(el("h1", {}, "Admin"));
    if (!isAdmin()) { view.append(el("p", {}, "Admins only.")); return; }
    const tokens = el("tbody");
    const secrets = el("ul", { id: "secrets" });
    const shown = el("div", { id: "new-token" });
    async function reload() {
      const [t, s] = await Promise.all([api("GET", "/v1/tokens"), api("GET", "/v1/secrets")]);
      tokens.replaceChildren(...(t.tokens || []).map((k) => el("tr", { "data-token-id": k.id },
        el("td", {}, el("code", {}, k.id)), el("td", {}, k.name || "-"), el("td", {}, k.role),
        el("td", { class: "hide-narrow" }, fmtTime(k.created_at)),
        el("td", {}, k.revoked_at ? "revoked" : k.id === session.me.token_id ? "this session" :
          el("button", { type: "button", class: "danger", onclick: async () => {
            if (!confirm("Revoke " + k.id + "?")) return;
            try { await api("DELETE", "/v1/tokens/" + encodeURIComponent(k.id)); await reload(); } catch (e) { toast(e.message, true); }
          } }, "Revoke")))));
      const names = (s.secrets || []).map((x) => (typeof x === "string" ? x : x.name));
      secrets.replaceChildren(...names.map((n) => el("li", {}, el("code", {}, n))));
      if (!names.length) secrets.append(el("li", { class: "muted" }, "none"));
    }
    const role = el("select", { id: "token-role", name: "role" }, ["viewer", "operator", "admin"].map((r) => el("option", { value: r }, r)));
    const name = el("input", { id: "token-name", name: "name", type: "text", maxlength: 100 });
    const err = el("p", { class: "error", role: "alert", hidden: true });
    const form = el("form", { id: "create-token", class: "panel" },
      el("h2", {}, "Create a token"),
      el("div", { class: "row" }, el("label", { for: "token-role" }, "Role"), role),
      el("div", { class: "row" }, el("label", { for: "token-name" }, "Name"), name),
      el("button", { type: "submit" }, "Create token"), err, shown);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.hidden = true;
      try {
        const body = { role: role.value };
        if (name.value) body.name = name.value;
        const t = await api("POST", "/v1/tokens", body);
        shown.replaceChildren(el("p", {}, "New token (shown once; copy it now):"), el("p", { class: "secret" }, t.token));
        name.value = "";
        await reload();
      } catch (e) { err.textContent = e.message; err.hidden = false; }
    });
    view.append(form,
      el("h2", {}, "Tokens"),
      el("div", { class: "table-wrap" }, el("table", { id: "tokens" },
        el("thead", {}, el("tr", {}, el("th", {}, "Id"), el("th", {}, "Name"), el("th", {}, "Role"), el("th", { class: "hide-narrow" }, "Created"), el("th", {}, ""))), tokens)),
      el("h2", {}, "Secrets (names only)"), secrets);
    await reload();
  }

  // ---- start ----

  document.addEventListener("DOMContentLoaded", async () => {
    $("#login").addEventListener("submit", login);
    $("#logout").addEventListener("click", logout);
    window.addEventListener("hashchange", route);
    try {
      loggedIn(await api("GET", "/v1/session"));
    } catch (_) {
      loggedOut();
    }
  });
})();
