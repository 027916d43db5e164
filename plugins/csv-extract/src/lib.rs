//! `csv-extract`: turns CSV text into JSON records.
//!
//! Input: a JSON string holding the CSV text, or an object
//! `{"csv": "...", "delimiter": ",", "has_header": true}` (`delimiter` and `has_header`
//! optional). The step config may set `delimiter` and `has_header` too; values given in
//! the input object win over the config, which wins over the defaults (`,` and `true`).
//!
//! Output:
//! `{"columns": [..], "records": [{column: "text" | null}], "row_count": n,
//!   "skipped": [{"line": n, "reason": ".."}], "skipped_count": n}`.
//! Empty fields become `null`. Rows whose field count differs from the header's are
//! skipped and reported (at most [`MAX_SKIPPED_REPORTED`] of them are listed;
//! `skipped_count` is the full number). Empty input is an `invalid_input` error.

mod csv;

use std::collections::{BTreeMap, HashSet};

use corral_sdk::{Agent, Context, Error, Info, Result};
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Value, json};

/// The most skipped rows listed in the output (all are counted).
pub const MAX_SKIPPED_REPORTED: usize = 1000;

/// How to read the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The field delimiter.
    pub delimiter: char,
    /// Whether the first record names the columns.
    pub has_header: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            delimiter: ',',
            has_header: true,
        }
    }
}

/// A row that was not turned into a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The 1-based line the row starts on.
    pub line: usize,
    /// Why it was skipped.
    pub reason: String,
}

/// The parsed table. Serializes to the agent's output shape, records keeping the
/// column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// Column names, in file order.
    pub columns: Vec<String>,
    /// One entry per record, aligned with `columns`; `None` for empty fields.
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows that were skipped (capped at [`MAX_SKIPPED_REPORTED`]).
    pub skipped: Vec<Skipped>,
    /// How many rows were skipped in all.
    pub skipped_count: usize,
}

struct Records<'a>(&'a [String], &'a [Vec<Option<String>>]);
struct Row<'a>(&'a [String], &'a [Option<String>]);

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0.iter().zip(self.1) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl Serialize for Records<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.len()))?;
        for row in self.1 {
            seq.serialize_element(&Row(self.0, row))?;
        }
        seq.end()
    }
}

impl Serialize for Extracted {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Extracted", 5)?;
        st.serialize_field("columns", &self.columns)?;
        st.serialize_field("records", &Records(&self.columns, &self.rows))?;
        st.serialize_field("row_count", &self.rows.len())?;
        st.serialize_field("skipped", &self.skipped)?;
        st.serialize_field("skipped_count", &self.skipped_count)?;
        st.end()
    }
}

/// Makes header names usable as JSON keys: trimmed, never empty, never repeated.
fn column_names(header: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(header.len());
    for (i, raw) in header.into_iter().enumerate() {
        let trimmed = raw.trim();
        let base = if trimmed.is_empty() {
            format!("column_{}", i + 1)
        } else {
            trimmed.to_string()
        };
        let mut name = base.clone();
        let mut n = 2;
        while seen.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        seen.insert(name.clone());
        names.push(name);
    }
    names
}

/// Parses `text` into a table. `on_progress` is called with a percentage (0..=100)
/// every time another tenth of the rows is done.
pub fn extract(
    text: &str,
    options: Options,
    on_progress: &mut dyn FnMut(u8),
) -> std::result::Result<Extracted, String> {
    if text.trim().is_empty() {
        return Err("the CSV text is empty".into());
    }
    let mut raw = csv::parse(text, options.delimiter).into_iter();

    let columns = if options.has_header {
        let header = raw.next().ok_or("the CSV text has no header row")?;
        if let Some(error) = header.error {
            return Err(format!("cannot read the header row: {error}"));
        }
        column_names(header.fields)
    } else {
        Vec::new()
    };

    let raw: Vec<csv::RawRecord> = raw.collect();
    let columns = if options.has_header {
        columns
    } else {
        let width = raw
            .iter()
            .find(|r| r.error.is_none())
            .map_or(0, |r| r.fields.len());
        (1..=width).map(|i| format!("column_{i}")).collect()
    };

    let total = raw.len();
    let mut rows = Vec::with_capacity(total);
    let mut skipped = Vec::new();
    let mut skipped_count = 0usize;
    let mut last_tenth = 0usize;

    for (i, record) in raw.into_iter().enumerate() {
        let reason = match (&record.error, record.fields.len()) {
            (Some(error), _) => Some(error.clone()),
            (None, n) if n != columns.len() => {
                Some(format!("expected {} fields, found {n}", columns.len()))
            }
            _ => None,
        };
        match reason {
            Some(reason) => {
                skipped_count += 1;
                if skipped.len() < MAX_SKIPPED_REPORTED {
                    skipped.push(Skipped {
                        line: record.line,
                        reason,
                    });
                }
            }
            None => rows.push(
                record
                    .fields
                    .into_iter()
                    .map(|f| if f.is_empty() { None } else { Some(f) })
                    .collect(),
            ),
        }
        let tenth = (i + 1) * 10 / total.max(1);
        if tenth > last_tenth {
            last_tenth = tenth;
            on_progress(u8::try_from(tenth * 10).unwrap_or(100));
        }
    }

    Ok(Extracted {
        columns,
        rows,
        skipped,
        skipped_count,
    })
}

/// The step config. Unknown keys are logged and ignored.
#[derive(Debug, Default, Deserialize)]
struct Config {
    delimiter: Option<String>,
    has_header: Option<bool>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

fn parse_delimiter(text: &str, origin: &str) -> std::result::Result<char, String> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c != '"' && c != '\r' && c != '\n' => Ok(c),
        _ => Err(format!(
            "{origin} delimiter must be one character other than a quote or a line break, got {text:?}"
        )),
    }
}

/// Works out the CSV text and options from the input and the step config.
fn resolve(input: Value, config: &Config) -> std::result::Result<(String, Options), String> {
    let mut options = Options::default();
    if let Some(d) = &config.delimiter {
        options.delimiter = parse_delimiter(d, "config")?;
    }
    if let Some(h) = config.has_header {
        options.has_header = h;
    }
    let text = match input {
        Value::String(text) => text,
        Value::Object(mut map) => {
            let text = match map.remove("csv") {
                Some(Value::String(text)) => text,
                Some(_) => return Err("input field `csv` must be a string".into()),
                None => return Err("input object needs a `csv` field with the CSV text".into()),
            };
            match map.remove("delimiter") {
                Some(Value::String(d)) => options.delimiter = parse_delimiter(&d, "input")?,
                Some(Value::Null) | None => {}
                Some(_) => return Err("input field `delimiter` must be a string".into()),
            }
            match map.remove("has_header") {
                Some(Value::Bool(h)) => options.has_header = h,
                Some(Value::Null) | None => {}
                Some(_) => return Err("input field `has_header` must be true or false".into()),
            }
            if let Some(key) = map.keys().next() {
                return Err(format!(
                    "unknown input field `{key}` (expected csv, delimiter, has_header)"
                ));
            }
            text
        }
        _ => {
            return Err(
                "input must be a string of CSV text or an object {\"csv\": \"...\"}".into(),
            );
        }
    };
    Ok((text, options))
}

struct CsvExtract;

impl Agent for CsvExtract {
    type Input = Value;
    type Output = Extracted;

    fn info() -> Info {
        Info::new(
            "csv-extract",
            env!("CARGO_PKG_VERSION"),
            "Parses CSV text (quoted fields, doubled quotes, CRLF) into JSON records; \
             rows with the wrong number of fields are skipped and reported.",
        )
        .input_schema(json!({
            "oneOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "object",
                    "properties": {
                        "csv": {"type": "string", "minLength": 1},
                        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1},
                        "has_header": {"type": "boolean"}
                    },
                    "required": ["csv"],
                    "additionalProperties": false
                }
            ]
        }))
        .output_schema(json!({
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "records": {
                    "type": "array",
                    "items": {"type": "object", "additionalProperties": {"type": ["string", "null"]}}
                },
                "row_count": {"type": "integer", "minimum": 0},
                "skipped": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "line": {"type": "integer"},
                            "reason": {"type": "string"}
                        },
                        "required": ["line", "reason"]
                    }
                },
                "skipped_count": {"type": "integer", "minimum": 0}
            },
            "required": ["columns", "records", "row_count", "skipped"]
        }))
    }

    fn run(ctx: Context, input: Value) -> Result<Extracted> {
        corral_sdk::progress(0, "reading CSV");
        let config: Config = ctx.config()?;
        for key in config.other.keys() {
            corral_sdk::warn(&format!("csv-extract: ignoring unknown config key `{key}`"));
        }
        let (text, options) = resolve(input, &config).map_err(Error::invalid_input)?;
        let out = extract(&text, options, &mut |pct| {
            corral_sdk::progress(pct, "building records");
        })
        .map_err(Error::invalid_input)?;
        corral_sdk::info(&format!(
            "csv-extract: {} records, {} columns, skipped rows: {}",
            out.rows.len(),
            out.columns.len(),
            out.skipped_count
        ));
        if out.skipped_count > 0 {
            corral_sdk::warn(&format!(
                "csv-extract: malformed rows skipped: {} (see `skipped`)",
                out.skipped_count
            ));
        }
        corral_sdk::progress(100, "done");
        Ok(out)
    }
}

corral_sdk::export_agent!(CsvExtract);

#[cfg(test)]
mod tests {
    use super::*;

    fn run_extract(text: &str, options: Options) -> Value {
        let out = extract(text, options, &mut |_| {}).unwrap();
        serde_json::to_value(&out).unwrap()
    }

    #[test]
    fn header_records_and_nulls() {
        let out = run_extract(
            "id,name,email\n1,\"Smith, Jane\",\n2,Bob,bob@example.com\n",
            Options::default(),
        );
        assert_eq!(out["columns"], json!(["id", "name", "email"]));
        assert_eq!(out["row_count"], 2);
        assert_eq!(
            out["records"][0],
            json!({"id": "1", "name": "Smith, Jane", "email": null})
        );
        assert_eq!(out["records"][1]["email"], "bob@example.com");
        assert_eq!(out["skipped"], json!([]));
        assert_eq!(out["skipped_count"], 0);
    }

    #[test]
    fn records_keep_column_order_in_json_text() {
        let out = extract("z,a\n1,2\n", Options::default(), &mut |_| {}).unwrap();
        let text = serde_json::to_string(&out).unwrap();
        assert!(text.contains(r#"{"z":"1","a":"2"}"#), "{text}");
    }

    #[test]
    fn wrong_field_counts_are_skipped_and_reported() {
        let out = run_extract("a,b\n1,2\n1,2,3\n4\n5,6\n", Options::default());
        assert_eq!(out["row_count"], 2);
        assert_eq!(out["records"][1], json!({"a": "5", "b": "6"}));
        assert_eq!(
            out["skipped"],
            json!([
                {"line": 3, "reason": "expected 2 fields, found 3"},
                {"line": 4, "reason": "expected 2 fields, found 1"}
            ])
        );
        assert_eq!(out["skipped_count"], 2);
    }

    #[test]
    fn unterminated_quote_is_skipped_not_fatal() {
        let out = run_extract("a,b\n1,2\n3,\"open\n", Options::default());
        assert_eq!(out["row_count"], 1);
        assert_eq!(out["skipped"][0]["line"], 3);
    }

    #[test]
    fn no_header_names_columns() {
        let out = run_extract(
            "1;x\n2;y\n",
            Options {
                delimiter: ';',
                has_header: false,
            },
        );
        assert_eq!(out["columns"], json!(["column_1", "column_2"]));
        assert_eq!(out["records"][1], json!({"column_1": "2", "column_2": "y"}));
    }

    #[test]
    fn header_names_are_trimmed_and_made_unique() {
        assert_eq!(
            column_names(vec![" a ".into(), "a".into(), String::new(), "a".into()]),
            vec!["a", "a_2", "column_3", "a_3"]
        );
    }

    #[test]
    fn empty_input_is_an_error() {
        assert!(extract("", Options::default(), &mut |_| {}).is_err());
        assert!(extract(" \r\n\n", Options::default(), &mut |_| {}).is_err());
    }

    #[test]
    fn header_only_gives_no_records() {
        let out = run_extract("a,b\r\n", Options::default());
        assert_eq!(out["row_count"], 0);
        assert_eq!(out["columns"], json!(["a", "b"]));
    }

    #[test]
    fn progress_reports_each_tenth_once() {
        let text: String = std::iter::once("n\n".to_string())
            .chain((0..95).map(|i| format!("{i}\n")))
            .collect();
        let mut seen = Vec::new();
        extract(&text, Options::default(), &mut |p| seen.push(p)).unwrap();
        assert_eq!(seen, vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    }

    #[test]
    fn resolve_precedence_input_over_config_over_default() {
        let config = Config {
            delimiter: Some(";".into()),
            has_header: Some(false),
            other: BTreeMap::new(),
        };
        let (text, opts) = resolve(json!("a;b"), &config).unwrap();
        assert_eq!(text, "a;b");
        assert_eq!(
            opts,
            Options {
                delimiter: ';',
                has_header: false
            }
        );
        let (_, opts) = resolve(
            json!({"csv": "x", "delimiter": "\t", "has_header": true}),
            &config,
        )
        .unwrap();
        assert_eq!(
            opts,
            Options {
                delimiter: '\t',
                has_header: true
            }
        );
        let (_, opts) = resolve(json!({"csv": "x"}), &Config::default()).unwrap();
        assert_eq!(opts, Options::default());
    }

    #[test]
    fn resolve_rejects_bad_input() {
        let c = Config::default();
        assert!(resolve(json!(42), &c).is_err());
        assert!(resolve(json!({"text": "a"}), &c).is_err());
        assert!(resolve(json!({"csv": "a", "delimter": ";"}), &c).is_err());
        assert!(resolve(json!({"csv": "a", "delimiter": ";;"}), &c).is_err());
        assert!(resolve(json!({"csv": "a", "delimiter": "\""}), &c).is_err());
        let bad = Config {
            delimiter: Some(String::new()),
            ..Config::default()
        };
        assert!(resolve(json!("a"), &bad).is_err());
    }

    #[test]
    fn example_orders_file() {
        let text = include_str!("../../../examples/etl/data/orders.csv");
        let out = run_extract(text, Options::default());
        assert_eq!(
            out["columns"],
            json!([
                "order_id",
                "customer",
                "email",
                "order_date",
                "quantity",
                "unit_price",
                "country"
            ])
        );
        assert_eq!(out["row_count"], 40);
        assert_eq!(out["skipped_count"], 0);
        let records = out["records"].as_array().unwrap();
        assert!(records.iter().any(|r| r["customer"] == "Smith, Jane"));
        assert!(
            records
                .iter()
                .any(|r| r["customer"] == "The \"Corner\" Shop")
        );
        assert_eq!(records.iter().filter(|r| r["email"].is_null()).count(), 1);
        assert!(records.iter().any(|r| r["unit_price"] == "n/a"));
        assert!(records.iter().any(|r| r["quantity"] == "-2"));
        assert_eq!(
            records.iter().filter(|r| r["order_id"] == "1017").count(),
            2
        );
    }

    #[test]
    fn config_parses_from_json_with_unknown_keys() {
        let c: Config = serde_json::from_value(json!({"delimiter": "|", "extra": 1})).unwrap();
        assert_eq!(c.delimiter.as_deref(), Some("|"));
        assert!(c.other.contains_key("extra"));
    }
}
