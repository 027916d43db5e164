//! The pipeline document's JSON Schema (for `/openapi.json`), derived from the raw model
//! the parser deserializes, so the two cannot disagree.

use super::raw::{Capped, Dur, RawPipeline, Size, Table};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use std::borrow::Cow;

/// The JSON form of a pipeline file, as a JSON Schema.
#[derive(Debug)]
pub struct PipelineDocument;

impl JsonSchema for PipelineDocument {
    fn schema_name() -> Cow<'static, str> {
        RawPipeline::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        RawPipeline::schema_id()
    }

    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        RawPipeline::json_schema(g)
    }
}

impl<T: JsonSchema> JsonSchema for Table<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        g.subschema_for::<T>()
    }
}

impl<T: JsonSchema, const N: usize> JsonSchema for Capped<T, N> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Capped_{}_{N}", T::schema_name()).into()
    }

    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let items = g.subschema_for::<T>();
        json_schema!({"type": "array", "items": items, "maxItems": N})
    }
}

impl JsonSchema for Dur {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as \"30s\", \"250ms\" or \"1h30m\".",
        })
    }
}

impl JsonSchema for Size {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size such as \"64MiB\", or a number of bytes.",
            "anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
        })
    }
}
