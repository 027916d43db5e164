//! The API's typed request and response bodies. Handlers answer with these (never with
//! hand-built JSON), and `/openapi.json` derives its schemas from them, so the document
//! describes exactly what goes on the wire.

use crate::store::{
    ArtifactRecord, AttemptRecord, FireRecord, PipelineRecord, PluginRecord, RunRecord,
    ScheduleRecord, SecretInfo, StepRecord, TokenRecord, WebhookRecord,
};
use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A typed JSON answer: a status, a body of type `T` and extra headers.
pub(super) struct Reply<T> {
    status: StatusCode,
    body: T,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl<T> Reply<T> {
    /// `status` with `body`.
    pub(super) fn new(status: StatusCode, body: T) -> Self {
        Reply {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// `201 Created` with `body`.
    pub(super) fn created(body: T) -> Self {
        Reply::new(StatusCode::CREATED, body)
    }

    /// `202 Accepted` with `body`.
    pub(super) fn accepted(body: T) -> Self {
        Reply::new(StatusCode::ACCEPTED, body)
    }

    /// Adds a header.
    pub(super) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// `204 No Content`, with extra headers.
pub(super) struct NoContent(pub Vec<(HeaderName, HeaderValue)>);

impl IntoResponse for NoContent {
    fn into_response(self) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        for (name, value) in self.0 {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Every error: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// A stable code, e.g. `RUN_NOT_FOUND`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// `GET /healthz`.
#[derive(Serialize, JsonSchema)]
pub(super) struct Health {
    /// Always `ok`.
    #[schemars(extend("const" = "ok"))]
    pub status: &'static str,
}

/// `GET /readyz`.
#[derive(Serialize, JsonSchema)]
pub(super) struct Ready {
    /// Always `ready`.
    #[schemars(extend("const" = "ready"))]
    pub status: &'static str,
}

/// The OpenAPI document itself.
#[derive(Serialize)]
#[serde(transparent)]
pub(super) struct OpenApiDocument(pub Value);

impl JsonSchema for OpenApiDocument {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OpenApiDocument".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An OpenAPI 3.1 document.",
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {
                "openapi": {"type": "string"},
                "info": {"type": "object"},
                "paths": {"type": "object"},
                "components": {"type": "object"},
            },
        })
    }
}

// ---- sessions ----

/// `POST /v1/session`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    /// An API token (`crl_...`).
    pub token: String,
}

/// A browser session: who it is and the CSRF token its non-GET requests must send.
#[derive(Serialize, JsonSchema)]
pub(super) struct SessionInfo {
    /// The tenant's name.
    pub tenant: String,
    /// The token's role.
    #[schemars(extend("enum" = ["admin", "operator", "viewer"]))]
    pub role: String,
    /// The id of the token the session was made from.
    pub token_id: String,
    /// Send as `X-CSRF-Token` with every request other than GET, HEAD and OPTIONS.
    pub csrf_token: String,
    /// RFC 3339 time the session ends.
    pub expires_at: String,
}

// ---- plugins ----

/// `POST /v1/plugins` query: the name and version, for plugins that do not describe
/// themselves (or to override what they say).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadQuery {
    /// The plugin's name (1-64 of `[A-Za-z0-9._+-]`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._+\-]{1,64}$"))]
    pub name: Option<String>,
    /// The plugin's version (1-64 of `[A-Za-z0-9._+-]`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._+\-]{1,64}$"))]
    pub version: Option<String>,
}

/// A plugin just registered.
#[derive(Serialize, JsonSchema)]
pub(super) struct PluginCreated {
    /// Id (`plg_...`).
    pub id: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// WIT world.
    pub world: String,
}

/// `GET /v1/plugins`.
#[derive(Serialize, JsonSchema)]
pub(super) struct PluginList {
    /// The tenant's plugins.
    pub plugins: Vec<PluginRecord>,
}

/// A tool of a tool plugin, in the Model Context Protocol's shape.
#[derive(Serialize, JsonSchema)]
pub(super) struct ToolEntry {
    /// The tool's name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    #[serde(rename = "inputSchema")]
    pub input_schema: Value,
    /// The plugin that has it, `name@version`.
    pub plugin: String,
}

/// A tool spec as a tool plugin's stored self-description has it.
#[derive(Deserialize)]
pub(super) struct StoredTool {
    pub name: String,
    pub description: String,
    #[serde(rename = "inputSchema")]
    pub input_schema: Value,
}

/// `GET /v1/tools`.
#[derive(Serialize, JsonSchema)]
pub(super) struct ToolList {
    /// Every tool of the tenant's tool plugins.
    pub tools: Vec<ToolEntry>,
}

/// `PUT /v1/plugins/{id}/manifest`: the manifest now in force.
#[derive(Serialize, JsonSchema)]
pub(super) struct ManifestSet {
    /// The plugin.
    pub id: String,
    /// The manifest, as sent.
    #[schemars(schema_with = "super::doc::manifest")]
    pub manifest: Value,
}

/// A permission manifest: the JSON form of `NAME.corral.toml`.
#[derive(Deserialize)]
#[serde(transparent)]
pub(super) struct ManifestBody(pub Value);

impl JsonSchema for ManifestBody {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ManifestBody".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        super::doc::manifest(g)
    }
}

// ---- pipelines ----

/// A pipeline document (the JSON form of a pipeline file), as a request body.
#[derive(Deserialize)]
#[serde(transparent)]
pub(super) struct PipelineBody(pub Value);

impl JsonSchema for PipelineBody {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PipelineBody".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        super::doc::pipeline_document(g)
    }
}

/// A pipeline just stored.
#[derive(Serialize, JsonSchema)]
pub(super) struct PipelineCreated {
    /// Id (`pip_...`).
    pub id: String,
    /// Its name.
    pub name: String,
}

/// `GET /v1/pipelines`.
#[derive(Serialize, JsonSchema)]
pub(super) struct PipelineList {
    /// The tenant's pipelines.
    pub pipelines: Vec<PipelineRecord>,
}

// ---- runs ----

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// `POST /v1/runs`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRun {
    /// A stored pipeline's id, or an inline pipeline document.
    #[schemars(schema_with = "super::doc::pipeline_or_id")]
    pub pipeline: Value,
    /// The run's input (JSON; `{}` when left out).
    #[serde(default = "empty_object")]
    #[schemars(schema_with = "super::doc::any_json")]
    pub input: Value,
}

/// A run just queued.
#[derive(Serialize, JsonSchema)]
pub(super) struct RunCreated {
    /// The run's id.
    pub run_id: String,
    /// Its status (`queued`).
    pub status: String,
}

/// `GET /v1/runs` query.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListRuns {
    /// Only runs with this status.
    #[schemars(extend("enum" = ["queued", "running", "waiting", "paused", "succeeded", "failed", "cancelled"]))]
    pub status: Option<String>,
    /// Runs per page, 1 to 1000 (default 50).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /v1/runs`: newest first.
#[derive(Serialize, JsonSchema)]
pub(super) struct RunList {
    /// A page of runs.
    pub runs: Vec<RunRecord>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /v1/runs/{id}`.
#[derive(Serialize, JsonSchema)]
pub(super) struct RunDetail {
    /// The run.
    pub run: RunRecord,
    /// The last step's output, once the run succeeded (else `null`).
    #[schemars(schema_with = "super::doc::any_json")]
    pub output: Option<Value>,
    /// Its steps, in order.
    pub steps: Vec<StepRecord>,
    /// Every attempt of every step.
    pub attempts: Vec<AttemptRecord>,
}

/// `POST /v1/runs/{id}/cancel`.
#[derive(Serialize, JsonSchema)]
pub(super) struct CancelRequested {
    /// The run.
    pub run_id: String,
    /// Always `true`.
    pub cancel_requested: bool,
}

/// `POST /v1/runs/{id}/pause` query.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseQuery {
    /// Interrupt the current step attempt instead of letting it finish; it runs again
    /// (at-least-once) when the run is resumed. Default `false`.
    pub now: Option<bool>,
}

/// `POST /v1/runs/{id}/pause`.
#[derive(Serialize, JsonSchema)]
pub(super) struct PauseRequested {
    /// The run.
    pub run_id: String,
    /// `paused` when the run has paused already (it was queued, or paused before);
    /// `running` or `waiting` while the pause waits for the current step attempt to end
    /// (its `paused` event says when it has).
    #[schemars(extend("enum" = ["paused", "running", "waiting", "queued"]))]
    pub status: String,
    /// Always `true`.
    pub pause_requested: bool,
}

/// `POST /v1/runs/{id}/resume`.
#[derive(Serialize, JsonSchema)]
pub(super) struct Resumed {
    /// The run.
    pub run_id: String,
    /// `queued`: the run waits for a worker, then continues with its next step.
    #[schemars(extend("enum" = ["queued"]))]
    pub status: String,
}

/// `POST /v1/runs/{id}/restart`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RestartRun {
    /// The step the run goes on from (its name in the pipeline). Every step before it
    /// must have succeeded: their outputs are reused, they do not run again.
    pub from_step: String,
    /// A person's feedback for that step (any JSON, at most 64 KiB): the step gets it as
    /// `ctx.feedback` on each of its attempts in the restarted run.
    #[serde(default)]
    #[schemars(schema_with = "super::doc::any_json")]
    pub feedback: Option<Value>,
    /// Why the run is restarted, for its `restarted` event (at most 1000 characters).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A run restarted from a step: queued again.
#[derive(Serialize, JsonSchema)]
pub(super) struct RunRestarted {
    /// The run (the same id: a restart continues it).
    pub run_id: String,
    /// `queued`: the restart queued the run (a worker may have started it since).
    #[schemars(extend("enum" = ["queued"]))]
    pub status: String,
    /// The step it goes on from.
    pub from_step: String,
    /// The attempt number that step's next attempt gets (its attempts go on counting).
    pub attempt: i64,
    /// How many times the run has been restarted, this one included.
    pub restarts: i64,
    /// The seq of the `restarted` event: follow the run's events from `seq - 1`
    /// (`Last-Event-ID`) to see the restarted run without its earlier segments.
    pub seq: i64,
}

/// `POST /v1/runs/{id}/input`.
#[derive(Serialize, JsonSchema)]
pub(super) struct Answered {
    /// The run.
    pub run_id: String,
    /// Always `true`.
    pub answered: bool,
}

/// The answer to a run's open question: any JSON value, checked against the question's
/// schema (the `schema` of its `input_required` event).
pub(super) struct AnswerBody;

impl JsonSchema for AnswerBody {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Answer".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut s = super::doc::any_json(g);
        s.insert(
            "description".into(),
            "The answer: any JSON value that fits the open question's schema (the `schema` \
             of its `input_required` event)."
                .into(),
        );
        s
    }
}

/// `GET /v1/runs/{id}/artifacts`.
#[derive(Serialize, JsonSchema)]
pub(super) struct ArtifactList {
    /// The run's artifacts.
    pub artifacts: Vec<ArtifactRecord>,
}

/// A stream's notice that is not a run event.
#[derive(Serialize, JsonSchema)]
pub(super) struct Notice {
    /// `heartbeat` after silence; `resync` when events may have been missed (re-read the
    /// runs' own streams).
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["heartbeat", "resync"]))]
    pub kind: &'static str,
    /// How many events the client fell behind (`resync` only, when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

impl Notice {
    /// The notice as one line of JSON, for an SSE `data:` field.
    pub(super) fn to_data(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What an SSE frame's `data` holds: a run event, or a notice.
pub(super) struct StreamFrame;

impl JsonSchema for StreamFrame {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StreamFrame".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let event = g.subschema_for::<crate::store::Event>();
        let notice = g.subschema_for::<Notice>();
        schemars::json_schema!({
            "description": "A run event (with `seq`, also the frame's `id` on a run's stream), or a notice.",
            "anyOf": [event, notice],
        })
    }
}

/// One server-sent event, as a client's parser reads it: `data` is one line of JSON.
pub(super) fn sse_event_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let frame = g.subschema_for::<StreamFrame>();
    schemars::json_schema!({
        "description": "A server-sent event.",
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": frame},
            "id": {"type": "string", "description": "The event's `seq` (a run's stream only): send it back as Last-Event-ID."},
            "event": {"type": "string"},
            "retry": {"type": "integer", "description": "The reconnection delay, ms (the first frame)."},
        },
    })
}

/// `GET /v1/runs/{id}/events` query.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// Resume after this event (its `seq`), like the `Last-Event-ID` header (which wins).
    pub last_event_id: Option<String>,
}

// ---- tokens ----

/// `POST /v1/tokens`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    /// The token's role.
    #[schemars(extend("enum" = ["admin", "operator", "viewer"]))]
    pub role: String,
    /// A label (at most 128 bytes).
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub name: String,
}

/// A token just created: the only time its secret is shown.
#[derive(Serialize, JsonSchema)]
pub(super) struct TokenCreated {
    /// Id (to list and revoke it).
    pub id: String,
    /// Its role.
    pub role: String,
    /// Its label.
    pub name: String,
    /// The secret (`crl_...`): send as `Authorization: Bearer`.
    pub token: String,
}

/// `GET /v1/tokens`.
#[derive(Serialize, JsonSchema)]
pub(super) struct TokenList {
    /// The tenant's tokens, revoked ones included.
    pub tokens: Vec<TokenRecord>,
}

// ---- secrets ----

/// `PUT /v1/secrets/{name}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSecret {
    /// The value (1 byte to the server's limit). Sealed at rest, never returned.
    #[schemars(length(min = 1, max = 16384))]
    pub value: String,
}

/// A secret just stored.
#[derive(Serialize, JsonSchema)]
pub(super) struct SecretStored {
    /// Its name.
    pub name: String,
    /// Whether it is new (else it replaced a value).
    pub created: bool,
}

/// `GET /v1/secrets`.
#[derive(Serialize, JsonSchema)]
pub(super) struct SecretList {
    /// Names and times, never values.
    pub secrets: Vec<SecretInfo>,
}

// ---- webhooks ----

/// `POST /v1/webhooks`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewWebhookBody {
    /// A unique name (1-128 bytes).
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// The connector plugin, `name@version` or `plg_...`.
    pub plugin: String,
    /// Names of secrets holding the signing key: one, or two while rotating.
    #[schemars(length(min = 1, max = 2))]
    pub signing_secrets: Vec<String>,
    /// A stored pipeline to start per delivery (or per debounce window).
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Collect deliveries this long into one run, e.g. `"30s"` (at most 1h).
    #[serde(default)]
    pub debounce: Option<String>,
}

/// A webhook just registered: its record and the URL to deliver to.
#[derive(Serialize, JsonSchema)]
pub(super) struct WebhookCreated {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: WebhookRecord,
    /// The path deliveries go to (`POST`).
    pub url: String,
}

/// `GET /v1/webhooks`.
#[derive(Serialize, JsonSchema)]
pub(super) struct WebhookList {
    /// The tenant's webhooks.
    pub webhooks: Vec<WebhookRecord>,
}

/// A delivery's body: whatever the sender sends (the connector reads it).
pub(super) struct DeliveryBody;

impl JsonSchema for DeliveryBody {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Delivery".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut s = super::doc::any_json(g);
        s.insert(
            "description".into(),
            "The sender's payload, signed per Standard Webhooks; the connector plugin reads it."
                .into(),
        );
        s
    }
}

/// A delivery accepted.
#[derive(Serialize, JsonSchema)]
pub(super) struct DeliveryAccepted {
    /// Items the connector made of it.
    pub items: usize,
    /// The run it started, if it started one now.
    pub run_id: Option<String>,
    /// The debounce batch it joined, if any.
    pub batch_id: Option<String>,
    /// Waiting runs it woke (their ids).
    pub woken: Vec<String>,
}

// ---- schedules ----

fn utc() -> String {
    "UTC".into()
}

/// `POST /v1/schedules`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewScheduleBody {
    /// A stored pipeline's id, or an inline pipeline document (stored with the schedule
    /// as it is now: each fire runs this version).
    #[schemars(schema_with = "super::doc::pipeline_or_id")]
    pub pipeline: Value,
    /// A cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
    /// seconds first; `@hourly`, `@daily`, `@weekly`, `@monthly` and `@yearly` too. At most
    /// 128 bytes.
    #[schemars(length(min = 1, max = 128))]
    pub cron: String,
    /// The IANA time zone the expression is read in (default `UTC`).
    #[serde(default = "utc")]
    #[schemars(length(min = 1, max = 64))]
    pub timezone: String,
    /// Each run's input (JSON; `{}` when left out).
    #[serde(default = "empty_object")]
    #[schemars(schema_with = "super::doc::any_json")]
    pub input: Value,
    /// While the schedule's previous run is still active: `skip` this slot (the
    /// default), `queue` the new run anyway, or `cancel_previous` and start the new one.
    #[serde(default)]
    pub overlap: crate::runs::schedules::Overlap,
    /// Slots missed while no scheduler ran: fire `none` of them (the default), the
    /// `latest` one, or `all` (at most 100 per schedule).
    #[serde(default)]
    pub catch_up: crate::runs::schedules::CatchUp,
}

/// `GET /v1/schedules`.
#[derive(Serialize, JsonSchema)]
pub(super) struct ScheduleList {
    /// The tenant's schedules, oldest first.
    pub schedules: Vec<ScheduleRecord>,
}

/// `GET /v1/schedules/{id}`.
#[derive(Serialize, JsonSchema)]
pub(super) struct ScheduleDetail {
    /// The schedule.
    pub schedule: ScheduleRecord,
    /// Its latest slots (at most 50, newest first) and what became of each.
    pub fires: Vec<FireRecord>,
}
