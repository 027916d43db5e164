//! The OpenAPI 3.1 document, generated from the Rust types.
//!
//! Each row of [`super::ROUTES`] builds its handler with [`op!`], which also asks the
//! handler's own signature what it takes and answers ([`HandlerDoc`]): a `Body<T>`
//! argument is the JSON request body `T`, a `Query<T>` the query parameters of `T`, and
//! the return type (`Json<T>`, `Reply<T>`, `StatusCode`, each maybe in a `Result`) the
//! success body. The schemas are derived (`schemars`) from those same types, so the
//! document and the wire format come from one definition and cannot drift.

use super::auth::{Admin, Caller, ClientIp, Operator, Session};
use super::error::ApiError;
use super::extract::{Path, Query};
use super::handlers::Body;
use super::types::{NoContent, Reply};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// Adds a type's schema to a generator's definitions and returns its `$ref` (or the
/// schema itself, for types schemars inlines).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema (usually a `$ref`) of `T`.
pub fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// The schema of `T` itself, never a `$ref` (for query structs, whose properties become
/// parameters).
fn inline_schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    T::json_schema(g)
}

/// Where the document keeps its schemas.
const DEFINITIONS: &str = "/components/schemas";

/// Settings for the document's schemas: JSON Schema 2020-12 (OpenAPI 3.1's dialect),
/// definitions under `#/components/schemas`.
fn settings() -> SchemaSettings {
    // `true` (any value) is spelled `{}`: some client generators read no boolean schemas.
    let mut no_bools = schemars::transform::ReplaceBoolSchemas::default();
    no_bools.skip_additional_properties = true;
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = DEFINITIONS.into();
            s.meta_schema = None;
        })
        .with_transform(no_bools)
}

/// Generators for request bodies (how types are deserialized: fields with defaults are
/// optional) and response bodies (how they are serialized: every field not skipped is
/// there).
pub(super) fn generators() -> (SchemaGenerator, SchemaGenerator) {
    (
        settings().for_deserialize().into_generator(),
        settings().for_serialize().into_generator(),
    )
}

/// The schema of `T` as it is deserialized, whatever `g`'s contract: for values the
/// server stores only after deserializing them as `T` (a pipeline, a manifest) and hands
/// back as they came.
fn deserialized<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    let mut inner = settings().for_deserialize().into_generator();
    let schema = inner.subschema_for::<T>();
    let defs = inner.take_definitions(true);
    let outer = g.definitions_mut();
    for (name, def) in defs {
        outer.entry(name).or_insert(def);
    }
    schema
}

/// A stored pipeline document: what `POST /v1/pipelines` accepted.
pub(crate) fn pipeline_document(g: &mut SchemaGenerator) -> Schema {
    deserialized::<crate::runs::pipeline::PipelineDocument>(g)
}

/// A permission manifest (the JSON form of `NAME.corral.toml`).
pub(crate) fn manifest(g: &mut SchemaGenerator) -> Schema {
    deserialized::<crate::runs::manifest::Manifest>(g)
}

/// Any JSON value. (A list of every type would say the same, but client generators read
/// it as a union they cannot build.) Bodies of this kind get a description of their own.
pub(crate) fn any_json(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({})
}

/// A stored pipeline's id, or an inline pipeline document.
pub(crate) fn pipeline_or_id(g: &mut SchemaGenerator) -> Schema {
    let doc = pipeline_document(g);
    schemars::json_schema!({
        "anyOf": [{"type": "string", "description": "A stored pipeline's id (`pip_...`)."}, doc],
    })
}

/// A stored permission manifest, or `null`.
pub(crate) fn optional_manifest(g: &mut SchemaGenerator) -> Schema {
    let manifest = deserialized::<crate::runs::manifest::Manifest>(g);
    schemars::json_schema!({"anyOf": [manifest, {"type": "null"}]})
}

/// What a handler's success answer is, read from its return type.
#[derive(Clone, Copy)]
pub enum Answer {
    /// A JSON body of this schema.
    Json(SchemaFn),
    /// No body (a bare status, 204).
    Empty,
    /// A body the route row describes (a stream, bytes, text).
    Raw,
}

/// What a route's handler takes and answers, from its signature.
#[derive(Clone, Copy)]
pub struct OpDoc {
    /// The JSON body of a `Body<T>` argument.
    pub request: Option<SchemaFn>,
    /// The query struct of a `Query<T>` argument.
    pub query: Option<SchemaFn>,
    /// The least role its caller extractor needs (`Caller`: viewer), if any.
    pub role: Option<super::Role>,
    /// Whether it authenticates by the session cookie only.
    pub session: bool,
    /// Its success answer.
    pub answer: Answer,
}

impl Default for OpDoc {
    fn default() -> Self {
        OpDoc {
            request: None,
            query: None,
            role: None,
            session: false,
            answer: Answer::Raw,
        }
    }
}

/// A handler argument's part in the document.
pub trait ArgDoc {
    /// Records what this argument says about the operation.
    fn describe(_op: &mut OpDoc) {}
}

impl<S> ArgDoc for State<S> {}
impl ArgDoc for HeaderMap {}
impl ArgDoc for Uri {}
impl ArgDoc for Request {}
impl ArgDoc for ClientIp {}
impl<T> ArgDoc for Path<T> {}
impl ArgDoc for Caller {
    fn describe(op: &mut OpDoc) {
        op.role = Some(super::Role::Viewer);
    }
}
impl ArgDoc for Operator {
    fn describe(op: &mut OpDoc) {
        op.role = Some(super::Role::Operator);
    }
}
impl ArgDoc for Admin {
    fn describe(op: &mut OpDoc) {
        op.role = Some(super::Role::Admin);
    }
}
impl ArgDoc for Session {
    fn describe(op: &mut OpDoc) {
        op.role = Some(super::Role::Viewer);
        op.session = true;
    }
}
impl<T: JsonSchema> ArgDoc for Query<T> {
    fn describe(op: &mut OpDoc) {
        op.query = Some(inline_schema_of::<T>);
    }
}
impl<T: JsonSchema> ArgDoc for Body<T> {
    fn describe(op: &mut OpDoc) {
        op.request = Some(schema_of::<T>);
    }
}

/// A handler return type's part in the document.
pub trait AnswerDoc {
    /// The success answer.
    fn answer() -> Answer;
}

impl AnswerDoc for Response {
    fn answer() -> Answer {
        Answer::Raw
    }
}
impl AnswerDoc for StatusCode {
    fn answer() -> Answer {
        Answer::Empty
    }
}
impl AnswerDoc for NoContent {
    fn answer() -> Answer {
        Answer::Empty
    }
}
impl<T: JsonSchema> AnswerDoc for Json<T> {
    fn answer() -> Answer {
        Answer::Json(schema_of::<T>)
    }
}
impl<T: JsonSchema> AnswerDoc for Reply<T> {
    fn answer() -> Answer {
        Answer::Json(schema_of::<T>)
    }
}
impl<T: AnswerDoc> AnswerDoc for Result<T, ApiError> {
    fn answer() -> Answer {
        T::answer()
    }
}

/// A handler function's document, from its argument and return types.
pub trait HandlerDoc<Args> {
    /// What it takes and answers.
    fn doc() -> OpDoc;
}

macro_rules! handler_doc {
    ($($arg:ident),*) => {
        impl<F, Fut, $($arg: ArgDoc,)*> HandlerDoc<($($arg,)*)> for F
        where
            F: FnOnce($($arg),*) -> Fut,
            Fut: std::future::Future,
            Fut::Output: AnswerDoc,
        {
            fn doc() -> OpDoc {
                #[allow(unused_mut)]
                let mut op = OpDoc {
                    answer: <Fut::Output as AnswerDoc>::answer(),
                    ..OpDoc::default()
                };
                $($arg::describe(&mut op);)*
                op
            }
        }
    };
}

handler_doc!();
handler_doc!(A1);
handler_doc!(A1, A2);
handler_doc!(A1, A2, A3);
handler_doc!(A1, A2, A3, A4);
handler_doc!(A1, A2, A3, A4, A5);
handler_doc!(A1, A2, A3, A4, A5, A6);

/// The document of handler `h`.
pub fn doc_of<H: HandlerDoc<A>, A>(_h: &H) -> OpDoc {
    H::doc()
}

/// The query parameters of a query struct's schema: one per property, with its schema,
/// description and whether it is required.
pub(super) fn query_parameters(schema: &Schema) -> Vec<Value> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, prop)| {
            let mut prop = prop.as_object().cloned().unwrap_or_default();
            let description = prop.remove("description");
            prop.remove("title");
            // `Option<T>` is `["T", "null"]`: a query value is never null, only absent.
            if let Some(Value::Array(types)) = prop.get_mut("type") {
                types.retain(|t| t != "null");
                if let [only] = types.as_slice() {
                    let only = only.clone();
                    prop.insert("type".into(), only);
                }
            }
            let mut p = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": Value::Object(prop),
            });
            if let (Some(d), Some(obj)) = (description, p.as_object_mut()) {
                obj.insert("description".into(), d);
            }
            p
        })
        .collect()
}

/// Merges two generators' definitions; a name defined differently by both is a conflict
/// (returned, and the first kept).
pub(super) fn merge_definitions(
    requests: &mut SchemaGenerator,
    responses: &mut SchemaGenerator,
) -> (Map<String, Value>, Vec<String>) {
    let mut all = requests.take_definitions(true);
    let mut conflicts = Vec::new();
    for (name, def) in responses.take_definitions(true) {
        match all.get(&name) {
            Some(existing) if *existing != def => conflicts.push(name),
            Some(_) => {}
            None => {
                all.insert(name, def);
            }
        }
    }
    (all, conflicts)
}

/// Builds a route's handler and its document from one handler path, so the two cannot
/// name different functions.
macro_rules! op {
    ($method:ident, $handler:path) => {
        || {
            (
                axum::routing::$method($handler),
                $crate::api::doc::doc_of(&$handler),
            )
        }
    };
}
pub(super) use op;
