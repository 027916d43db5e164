//! The approver's pure logic: the question, the answer schema and the decision. The
//! `ask` call itself is in `lib.rs`.

use corral_sdk::{Error, Result};
use serde::Deserialize;
use serde_json::{Value, json};

/// The longest summary quoted in a question, in characters.
pub const MAX_SUMMARY_CHARS: usize = 500;

/// How many column names a default question lists.
const MAX_COLUMNS_LISTED: usize = 8;

/// The step config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The question to ask instead of the default one. `{summary}` and `{count}` are
    /// replaced by the input's summary and record count.
    pub question: Option<String>,
    /// The input field holding a summary for people (default `summary`).
    pub summary_field: Option<String>,
    /// When true, an approved input is passed on unchanged (for a next step that
    /// expects it as it was), instead of `{"approved", "comment", "input"}`.
    pub pass_through: bool,
}

/// A person's answer, as the answer schema allows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// Whether the input may go on.
    pub approved: bool,
    /// Why, optionally.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The JSON Schema every answer must match (the host checks it before `ask` returns).
pub fn answer_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "approved": {"type": "boolean"},
            "comment": {"type": "string"}
        },
        "required": ["approved"],
        "additionalProperties": false
    })
}

/// Cuts `s` to at most `max` characters, marking the cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", s.get(..at).unwrap_or(s)),
        None => s.to_string(),
    }
}

/// The records (or items) of the input: a top-level list, or a `records` list.
fn records(input: &Value) -> Option<&Vec<Value>> {
    input
        .as_array()
        .or_else(|| input.get("records").and_then(Value::as_array))
}

/// The input's summary for people: the summary field as text, if present.
pub fn summary(input: &Value, config: &Config) -> Option<String> {
    let field = config.summary_field.as_deref().unwrap_or("summary");
    let text = match input.get(field)? {
        Value::Null => return None,
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    };
    (!text.is_empty()).then(|| clip(&text, MAX_SUMMARY_CHARS))
}

fn column_names(input: &Value) -> Vec<String> {
    input
        .get("columns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .filter_map(|c| {
                    c.as_str()
                        .or_else(|| c.get("name").and_then(Value::as_str))
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The question for the person: the configured one with `{summary}` and `{count}`
/// filled in, or one describing the input (record count, columns, skipped rows,
/// summary, or a short preview when the input is none of these).
pub fn question(input: &Value, config: &Config) -> String {
    let summary = summary(input, config);
    let count = records(input).map(Vec::len);
    if let Some(q) = &config.question {
        return q
            .replace("{summary}", summary.as_deref().unwrap_or("(no summary)"))
            .replace(
                "{count}",
                &count.map_or_else(|| "?".to_string(), |n| n.to_string()),
            );
    }

    let mut q = match count {
        Some(1) => "Approve 1 record for the next step?".to_string(),
        Some(n) => format!("Approve {n} records for the next step?"),
        None => "Approve this input for the next step?".to_string(),
    };
    let columns = column_names(input);
    if !columns.is_empty() {
        let shown: Vec<&str> = columns
            .iter()
            .take(MAX_COLUMNS_LISTED)
            .map(String::as_str)
            .collect();
        let more = columns.len().saturating_sub(MAX_COLUMNS_LISTED);
        q.push_str(" Columns: ");
        q.push_str(&shown.join(", "));
        if more > 0 {
            q.push_str(&format!(" and {more} more"));
        }
        q.push('.');
    }
    if let Some(skipped) = input.get("skipped_count").and_then(Value::as_u64)
        && skipped > 0
    {
        q.push_str(&format!(
            " {skipped} malformed row{} skipped.",
            if skipped == 1 { " was" } else { "s were" }
        ));
    }
    match summary {
        Some(s) => q.push_str(&format!(" Summary: {s}")),
        None if count.is_none() => {
            q.push_str(&format!(" Input: {}", clip(&input.to_string(), 300)));
        }
        None => {}
    }
    q
}

/// The decision: approved gives the output; rejected is a `permanent` error carrying
/// the reviewer's comment.
pub fn decide(input: Value, answer: Answer, config: &Config) -> Result<Value> {
    let comment = answer
        .comment
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    if !answer.approved {
        return Err(Error::permanent(format!(
            "rejected by reviewer: {}",
            comment.as_deref().unwrap_or("(no comment)")
        )));
    }
    if config.pass_through {
        return Ok(input);
    }
    Ok(json!({
        "approved": true,
        "comment": comment,
        "input": input,
    }))
}
