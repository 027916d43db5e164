//! `validate`: a data-quality report for `transform` output.
//!
//! Input: `{"columns": [{"name", "type"}], "records": [..], "conversion_errors": {..}}`
//! (bare column names are accepted too and treated as `string`; other fields ignored).
//!
//! Config (all optional):
//! ```json
//! {"rules": [{"column": "quantity", "min": 1},
//!            {"column": "email", "required": true},
//!            {"column": "order_id", "unique": true},
//!            {"column": "country", "allowed": ["DE", "FR"]}],
//!  "fail_on_violation": false,
//!  "max_violations": 1000}
//! ```
//! A rule may combine `required`, `unique`, `min`, `max` (numbers for numeric columns,
//! strings for dates/text, compared in order) and `allowed`.
//!
//! Output: `{"ok", "row_count", "columns": {name: stats}, "duplicates": [{"rows": [..]}],
//! "violations": [{"rule", "column", "row", "value", "message"}], "violation_count",
//! "summary"}`. Rows are 0-based indexes into `records`. Bad data never fails the call:
//! `ok` is false when there are rule violations, duplicate records, type errors or
//! upstream conversion errors. With `fail_on_violation: true` a report that is not ok
//! becomes a `permanent` error carrying the summary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use corral_sdk::{Agent, Context, Error, Info, Result};
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value, json};

/// Default cap on listed violations and duplicate groups.
const DEFAULT_MAX_VIOLATIONS: usize = 1000;

/// A column of the input.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InputColumn {
    /// A bare name (type `string`).
    Name(String),
    /// `{"name", "type"}` as `transform` writes it.
    Typed {
        /// The column's name.
        name: String,
        /// `integer`, `number`, `boolean`, `date` or `string`.
        #[serde(rename = "type")]
        ty: String,
    },
}

/// The agent's input: `transform`'s output.
#[derive(Debug, Clone, Deserialize)]
pub struct Input {
    /// The columns in order (when missing, the record keys, as strings).
    #[serde(default)]
    pub columns: Option<Vec<InputColumn>>,
    /// The records.
    pub records: Vec<Map<String, Value>>,
    /// Per-column conversion errors reported upstream.
    #[serde(default)]
    pub conversion_errors: BTreeMap<String, u64>,
}

/// One configurable check on a column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The column checked.
    pub column: String,
    /// Every record must have a non-null value.
    #[serde(default)]
    pub required: bool,
    /// Non-null values must not repeat.
    #[serde(default)]
    pub unique: bool,
    /// Smallest allowed value (a number, or a string compared as text).
    #[serde(default)]
    pub min: Option<Value>,
    /// Largest allowed value.
    #[serde(default)]
    pub max: Option<Value>,
    /// The only values allowed (nulls are left to `required`).
    #[serde(default)]
    pub allowed: Option<Vec<Value>>,
}

/// The step config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Turn a report that is not ok into a `permanent` error.
    #[serde(default)]
    pub fail_on_violation: bool,
    /// Cap on listed violations and duplicate groups (all are counted).
    #[serde(default)]
    pub max_violations: Option<usize>,
}

/// Statistics of one column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnStats {
    /// The declared type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Null or missing values.
    pub null_count: usize,
    /// Non-null values that do not match the declared type.
    pub type_errors: usize,
    /// Distinct non-null values.
    pub distinct_count: usize,
    /// Smallest value (numeric and date columns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<Value>,
    /// Largest value (numeric and date columns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<Value>,
    /// Values that did not convert upstream (from the input's `conversion_errors`).
    pub conversion_errors: u64,
}

/// A group of identical records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    /// The 0-based indexes of the identical records, first occurrence first.
    pub rows: Vec<usize>,
}

/// One failed rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// `required`, `unique`, `min`, `max`, `allowed` or `column_exists`.
    pub rule: String,
    /// The column.
    pub column: String,
    /// The 0-based record index (`null` for `column_exists`).
    pub row: Option<usize>,
    /// The offending value.
    pub value: Value,
    /// What is wrong, for people.
    pub message: String,
}

/// The report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// No violations, duplicates, type errors or conversion errors.
    pub ok: bool,
    /// Number of records.
    pub row_count: usize,
    /// Per-column statistics, in column order.
    pub columns: Vec<(String, ColumnStats)>,
    /// Duplicate record groups (capped).
    pub duplicates: Vec<Duplicate>,
    /// Rule violations (capped).
    pub violations: Vec<Violation>,
    /// All rule violations, listed or not.
    pub violation_count: usize,
    /// All duplicate groups, listed or not.
    pub duplicate_count: usize,
    /// One sentence for people.
    pub summary: String,
}

struct Ordered<'a>(&'a [(String, ColumnStats)]);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, stats) in self.0 {
            map.serialize_entry(name, stats)?;
        }
        map.end()
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Report", 8)?;
        st.serialize_field("ok", &self.ok)?;
        st.serialize_field("row_count", &self.row_count)?;
        st.serialize_field("columns", &Ordered(&self.columns))?;
        st.serialize_field("duplicates", &self.duplicates)?;
        st.serialize_field("duplicate_count", &self.duplicate_count)?;
        st.serialize_field("violations", &self.violations)?;
        st.serialize_field("violation_count", &self.violation_count)?;
        st.serialize_field("summary", &self.summary)?;
        st.end()
    }
}

/// Whether `v` (non-null) is a valid value of the declared type. Unknown types accept
/// anything.
fn matches_type(v: &Value, ty: &str) -> bool {
    match ty {
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "date" => v.as_str().is_some_and(is_date),
        "string" => v.is_string(),
        _ => true,
    }
}

/// A real calendar date written `YYYY-MM-DD`.
fn is_date(s: &str) -> bool {
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_digit());
    if !digits(y, 4) || !digits(m, 2) || !digits(d, 2) {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u32>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return false;
    };
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// Orders two values when both are numbers or both are strings.
fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Equality that treats `1` and `1.0` as the same.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A key identifying a value for distinct/unique counting (`1` and `1.0` agree).
fn value_key(v: &Value) -> String {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |f| format!("n:{f}")),
        other => other.to_string(),
    }
}

/// A record's value for `col`, `null` when missing.
fn get<'a>(row: &'a Map<String, Value>, col: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    row.get(col).unwrap_or(&NULL)
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn check_config(config: &Config) -> std::result::Result<(), String> {
    for rule in &config.rules {
        for (what, bound) in [("min", &rule.min), ("max", &rule.max)] {
            if let Some(b) = bound
                && !(b.is_number() || b.is_string())
            {
                return Err(format!(
                    "rule on `{}`: {what} must be a number or a string, got {b}",
                    rule.column
                ));
            }
        }
    }
    Ok(())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Builds the report. Only a malformed config is an error.
pub fn validate(
    input: &Input,
    config: &Config,
    on_progress: &mut dyn FnMut(u8),
) -> std::result::Result<Report, String> {
    check_config(config)?;
    let cap = config.max_violations.unwrap_or(DEFAULT_MAX_VIOLATIONS);

    let columns: Vec<(String, String)> = match &input.columns {
        Some(cols) => cols
            .iter()
            .map(|c| match c {
                InputColumn::Name(n) => (n.clone(), "string".to_string()),
                InputColumn::Typed { name, ty } => (name.clone(), ty.clone()),
            })
            .collect(),
        None => {
            let mut seen = HashSet::new();
            let mut names = Vec::new();
            for r in &input.records {
                for k in r.keys() {
                    if seen.insert(k.clone()) {
                        names.push((k.clone(), "string".to_string()));
                    }
                }
            }
            names
        }
    };
    let records = &input.records;

    // Per-column statistics.
    let ncols = columns.len().max(1);
    let mut stats = Vec::with_capacity(columns.len());
    for (ci, (name, ty)) in columns.iter().enumerate() {
        let mut s = ColumnStats {
            ty: ty.clone(),
            null_count: 0,
            type_errors: 0,
            distinct_count: 0,
            min: None,
            max: None,
            conversion_errors: input.conversion_errors.get(name).copied().unwrap_or(0),
        };
        let ordered = matches!(ty.as_str(), "integer" | "number" | "date");
        let mut distinct = HashSet::new();
        for row in records {
            let v = get(row, name);
            if v.is_null() {
                s.null_count += 1;
                continue;
            }
            distinct.insert(value_key(v));
            if !matches_type(v, ty) {
                s.type_errors += 1;
                continue;
            }
            if ordered {
                if s.min
                    .as_ref()
                    .is_none_or(|m| compare(v, m).is_some_and(|o| o.is_lt()))
                {
                    s.min = Some(v.clone());
                }
                if s.max
                    .as_ref()
                    .is_none_or(|m| compare(v, m).is_some_and(|o| o.is_gt()))
                {
                    s.max = Some(v.clone());
                }
            }
        }
        s.distinct_count = distinct.len();
        stats.push((name.clone(), s));
        on_progress(u8::try_from((ci + 1) * 50 / ncols).unwrap_or(50));
    }

    // Full-record duplicates.
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, row) in records.iter().enumerate() {
        let key = columns
            .iter()
            .map(|(name, _)| value_key(get(row, name)))
            .collect::<Vec<_>>()
            .join("\u{1f}");
        groups.entry(key).or_default().push(i);
    }
    let mut all_duplicates: Vec<Duplicate> = groups
        .into_values()
        .filter(|rows| rows.len() > 1)
        .map(|rows| Duplicate { rows })
        .collect();
    all_duplicates.sort_by_key(|d| d.rows.first().copied().unwrap_or(0));
    let duplicate_count = all_duplicates.len();
    let duplicates: Vec<Duplicate> = all_duplicates.into_iter().take(cap).collect();
    on_progress(70);

    // Rules.
    let mut violations = Vec::new();
    let mut violation_count = 0usize;
    let mut per_rule: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut add = |v: Violation| {
        violation_count += 1;
        *per_rule
            .entry((v.rule.clone(), v.column.clone()))
            .or_default() += 1;
        if violations.len() < cap {
            violations.push(v);
        }
    };
    for rule in &config.rules {
        let col = &rule.column;
        if !columns.iter().any(|(n, _)| n == col) {
            add(Violation {
                rule: "column_exists".into(),
                column: col.clone(),
                row: None,
                value: Value::Null,
                message: format!("the data has no column `{col}`"),
            });
            continue;
        }
        let mut first_seen: HashMap<String, usize> = HashMap::new();
        for (i, row) in records.iter().enumerate() {
            let v = get(row, col);
            if v.is_null() {
                if rule.required {
                    add(Violation {
                        rule: "required".into(),
                        column: col.clone(),
                        row: Some(i),
                        value: Value::Null,
                        message: format!("row {i}: {col} is missing"),
                    });
                }
                continue;
            }
            if rule.unique {
                let key = value_key(v);
                if let Some(first) = first_seen.get(&key) {
                    add(Violation {
                        rule: "unique".into(),
                        column: col.clone(),
                        row: Some(i),
                        value: v.clone(),
                        message: format!("row {i}: {col} = {} repeats row {first}", show(v)),
                    });
                } else {
                    first_seen.insert(key, i);
                }
            }
            if let Some(min) = &rule.min
                && compare(v, min).is_some_and(|o| o.is_lt())
            {
                add(Violation {
                    rule: "min".into(),
                    column: col.clone(),
                    row: Some(i),
                    value: v.clone(),
                    message: format!(
                        "row {i}: {col} = {} is below the minimum {}",
                        show(v),
                        show(min)
                    ),
                });
            }
            if let Some(max) = &rule.max
                && compare(v, max).is_some_and(|o| o.is_gt())
            {
                add(Violation {
                    rule: "max".into(),
                    column: col.clone(),
                    row: Some(i),
                    value: v.clone(),
                    message: format!(
                        "row {i}: {col} = {} is above the maximum {}",
                        show(v),
                        show(max)
                    ),
                });
            }
            if let Some(allowed) = &rule.allowed
                && !allowed.iter().any(|a| same_value(a, v))
            {
                add(Violation {
                    rule: "allowed".into(),
                    column: col.clone(),
                    row: Some(i),
                    value: v.clone(),
                    message: format!("row {i}: {col} = {} is not an allowed value", show(v)),
                });
            }
        }
    }
    on_progress(95);

    let type_errors: usize = stats.iter().map(|(_, s)| s.type_errors).sum();
    let conversion_errors: u64 = stats.iter().map(|(_, s)| s.conversion_errors).sum();
    let ok =
        violation_count == 0 && duplicate_count == 0 && type_errors == 0 && conversion_errors == 0;

    let shape = format!(
        "{} and {}",
        plural(records.len(), "row", "rows"),
        plural(columns.len(), "column", "columns")
    );
    let summary = if ok {
        format!("All checks passed for {shape}.")
    } else {
        let mut parts = Vec::new();
        if violation_count > 0 {
            let detail = per_rule
                .iter()
                .map(|((rule, col), n)| format!("{rule} on {col}: {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!(
                "{} ({detail})",
                plural(violation_count, "rule violation", "rule violations")
            ));
        }
        if duplicate_count > 0 {
            let mut s = plural(
                duplicate_count,
                "duplicate record group",
                "duplicate record groups",
            );
            let listed: Vec<String> = duplicates
                .iter()
                .take(3)
                .map(|d| {
                    let rows: Vec<String> = d.rows.iter().map(ToString::to_string).collect();
                    format!("rows {}", rows.join("/"))
                })
                .collect();
            let _ = write!(
                s,
                " ({}{})",
                listed.join(", "),
                if duplicate_count > 3 { ", ..." } else { "" }
            );
            parts.push(s);
        }
        if type_errors > 0 {
            parts.push(plural(type_errors, "type error", "type errors"));
        }
        if conversion_errors > 0 {
            let detail = stats
                .iter()
                .filter(|(_, s)| s.conversion_errors > 0)
                .map(|(n, s)| format!("{n}: {}", s.conversion_errors))
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!(
                "{} upstream ({detail})",
                plural(
                    usize::try_from(conversion_errors).unwrap_or(usize::MAX),
                    "conversion error",
                    "conversion errors"
                )
            ));
        }
        format!("Data-quality problems in {shape}: {}.", parts.join("; "))
    };
    on_progress(100);

    Ok(Report {
        ok,
        row_count: records.len(),
        columns: stats,
        duplicates,
        violations,
        violation_count,
        duplicate_count,
        summary,
    })
}

struct Validate;

impl Agent for Validate {
    type Input = Input;
    type Output = Report;

    fn info() -> Info {
        Info::new(
            "validate",
            env!("CARGO_PKG_VERSION"),
            "Data-quality report for typed records: nulls, type errors, min/max, distinct \
             counts, duplicate records and configurable rules. Bad data gives ok=false, \
             not an error (unless fail_on_violation is set).",
        )
        .input_schema(json!({
            "type": "object",
            "properties": {
                "columns": {"type": "array"},
                "records": {"type": "array", "items": {"type": "object"}},
                "conversion_errors": {"type": "object", "additionalProperties": {"type": "integer"}}
            },
            "required": ["records"]
        }))
        .output_schema(json!({
            "type": "object",
            "properties": {
                "ok": {"type": "boolean"},
                "row_count": {"type": "integer"},
                "columns": {"type": "object"},
                "duplicates": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"rows": {"type": "array", "items": {"type": "integer"}}},
                        "required": ["rows"]
                    }
                },
                "duplicate_count": {"type": "integer"},
                "violations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "rule": {"type": "string"},
                            "column": {"type": "string"},
                            "row": {"type": ["integer", "null"]},
                            "value": {},
                            "message": {"type": "string"}
                        },
                        "required": ["rule", "column", "row", "value"]
                    }
                },
                "violation_count": {"type": "integer"},
                "summary": {"type": "string"}
            },
            "required": ["ok", "row_count", "columns", "duplicates", "violations", "summary"]
        }))
    }

    fn run(ctx: Context, input: Input) -> Result<Report> {
        corral_sdk::progress(0, "checking columns");
        let config: Config = ctx.config()?;
        let report = validate(&input, &config, &mut |pct| {
            let label = match pct {
                0..=50 => "checking columns",
                51..=70 => "finding duplicates",
                71..=99 => "applying rules",
                _ => "done",
            };
            corral_sdk::progress(pct, label);
        })
        .map_err(|e| Error::invalid_input(format!("step config: {e}")))?;
        // The report is also kept as the run's artifact, for people to open later. Where
        // the host grants no artifacts (e.g. `corral call`), the report is still returned.
        match serde_json::to_vec_pretty(&report) {
            Ok(bytes) => {
                match corral_sdk::put_artifact("quality-report.json", "application/json", &bytes) {
                    Ok(id) => {
                        corral_sdk::info(&format!("validate: report stored as artifact {id}"))
                    }
                    Err(e) => corral_sdk::debug(&format!("validate: report not stored: {e}")),
                }
            }
            Err(e) => corral_sdk::warn(&format!("validate: cannot serialize the report: {e}")),
        }
        if report.ok {
            corral_sdk::info(&format!("validate: {}", report.summary));
        } else {
            corral_sdk::warn(&format!("validate: {}", report.summary));
            if config.fail_on_violation {
                return Err(Error::permanent(report.summary));
            }
        }
        Ok(report)
    }
}

corral_sdk::export_agent!(Validate);

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> Input {
        serde_json::from_value(v).unwrap()
    }

    fn config(v: Value) -> Config {
        serde_json::from_value(v).unwrap()
    }

    fn report(i: Value, c: Value) -> Value {
        serde_json::to_value(validate(&input(i), &config(c), &mut |_| {}).unwrap()).unwrap()
    }

    fn sample() -> Value {
        json!({
            "columns": [
                {"name": "order_id", "type": "integer"},
                {"name": "email", "type": "string"},
                {"name": "quantity", "type": "integer"},
                {"name": "unit_price", "type": "number"},
                {"name": "order_date", "type": "date"}
            ],
            "records": [
                {"order_id": 1, "email": "a@x.com", "quantity": 2, "unit_price": 9.5, "order_date": "2024-01-03"},
                {"order_id": 2, "email": null, "quantity": -1, "unit_price": 3.0, "order_date": "2024-01-01"},
                {"order_id": 3, "email": "c@x.com", "quantity": 5, "unit_price": null, "order_date": "2024-02-01"},
                {"order_id": 1, "email": "a@x.com", "quantity": 2, "unit_price": 9.5, "order_date": "2024-01-03"}
            ],
            "row_count": 4,
            "conversion_errors": {"unit_price": 1}
        })
    }

    fn rules() -> Value {
        json!({"rules": [
            {"column": "quantity", "min": 1},
            {"column": "email", "required": true},
            {"column": "order_id", "unique": true}
        ]})
    }

    #[test]
    fn column_stats() {
        let r = report(sample(), json!({}));
        let q = &r["columns"]["quantity"];
        assert_eq!(q["type"], "integer");
        assert_eq!(q["min"], -1);
        assert_eq!(q["max"], 5);
        assert_eq!(q["null_count"], 0);
        assert_eq!(q["distinct_count"], 3);
        assert_eq!(r["columns"]["email"]["null_count"], 1);
        assert_eq!(r["columns"]["email"]["distinct_count"], 2);
        assert!(r["columns"]["email"].get("min").is_none());
        assert_eq!(r["columns"]["unit_price"]["conversion_errors"], 1);
        assert_eq!(r["columns"]["unit_price"]["min"], 3.0);
        assert_eq!(r["columns"]["order_date"]["min"], "2024-01-01");
        assert_eq!(r["columns"]["order_date"]["max"], "2024-02-01");
    }

    #[test]
    fn columns_object_keeps_column_order() {
        let r = validate(&input(sample()), &Config::default(), &mut |_| {}).unwrap();
        let text = serde_json::to_string(&r).unwrap();
        let a = text.find("\"order_id\":{").unwrap();
        let b = text.find("\"email\":{").unwrap();
        let c = text.find("\"order_date\":{").unwrap();
        assert!(a < b && b < c, "{text}");
    }

    #[test]
    fn duplicates_are_found() {
        let r = report(sample(), json!({}));
        assert_eq!(r["duplicates"], json!([{"rows": [0, 3]}]));
        assert_eq!(r["duplicate_count"], 1);
        assert_eq!(r["ok"], false);
    }

    #[test]
    fn rules_produce_violations() {
        let r = report(sample(), rules());
        let v = r["violations"].as_array().unwrap();
        let brief: Vec<(String, String, Value)> = v
            .iter()
            .map(|x| {
                (
                    x["rule"].as_str().unwrap().to_string(),
                    x["column"].as_str().unwrap().to_string(),
                    x["row"].clone(),
                )
            })
            .collect();
        assert_eq!(
            brief,
            vec![
                ("min".into(), "quantity".into(), json!(1)),
                ("required".into(), "email".into(), json!(1)),
                ("unique".into(), "order_id".into(), json!(3)),
            ]
        );
        assert_eq!(v[0]["value"], -1);
        assert_eq!(r["violation_count"], 3);
        assert_eq!(r["ok"], false);
        let summary = r["summary"].as_str().unwrap();
        assert!(summary.contains("3 rule violations"), "{summary}");
        assert!(summary.contains("min on quantity: 1"), "{summary}");
        assert!(summary.contains("rows 0/3"), "{summary}");
        assert!(summary.contains("unit_price: 1"), "{summary}");
    }

    #[test]
    fn clean_data_is_ok() {
        let r = report(
            json!({
                "columns": [{"name": "id", "type": "integer"}, {"name": "d", "type": "date"}],
                "records": [{"id": 1, "d": "2024-01-01"}, {"id": 2, "d": "2024-01-02"}]
            }),
            json!({"rules": [{"column": "id", "unique": true, "required": true, "min": 1, "max": 2},
                             {"column": "d", "min": "2024-01-01", "max": "2024-12-31"}]}),
        );
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["violations"], json!([]));
        assert_eq!(r["summary"], "All checks passed for 2 rows and 2 columns.");
    }

    #[test]
    fn type_errors_are_counted() {
        let r = report(
            json!({
                "columns": [{"name": "n", "type": "integer"}, {"name": "d", "type": "date"},
                            {"name": "b", "type": "boolean"}],
                "records": [{"n": 1.5, "d": "2024-02-30", "b": true},
                            {"n": "7", "d": "2024-02-29", "b": "yes"},
                            {"n": 3, "d": null, "b": null}]
            }),
            json!({}),
        );
        assert_eq!(r["columns"]["n"]["type_errors"], 2);
        assert_eq!(r["columns"]["n"]["min"], 3);
        assert_eq!(r["columns"]["d"]["type_errors"], 1);
        assert_eq!(r["columns"]["b"]["type_errors"], 1);
        assert_eq!(r["ok"], false);
        assert!(r["summary"].as_str().unwrap().contains("4 type errors"));
    }

    #[test]
    fn max_allowed_and_missing_column() {
        let r = report(
            sample(),
            json!({"rules": [
                {"column": "unit_price", "max": 5},
                {"column": "email", "allowed": ["a@x.com"]},
                {"column": "nope", "required": true}
            ]}),
        );
        let v = r["violations"].as_array().unwrap();
        let rules: Vec<&str> = v.iter().map(|x| x["rule"].as_str().unwrap()).collect();
        assert_eq!(rules, vec!["max", "max", "allowed", "column_exists"]);
        assert_eq!(v[2]["value"], "c@x.com");
        assert_eq!(v[3]["row"], Value::Null);
    }

    #[test]
    fn violations_are_capped_but_counted() {
        let records: Vec<Value> = (0..20).map(|_| json!({"q": -1})).collect();
        let r = report(
            json!({"columns": [{"name": "q", "type": "integer"}], "records": records}),
            json!({"rules": [{"column": "q", "min": 0}], "max_violations": 5}),
        );
        assert_eq!(r["violations"].as_array().unwrap().len(), 5);
        assert_eq!(r["violation_count"], 20);
    }

    #[test]
    fn bad_config_is_rejected() {
        assert!(
            serde_json::from_value::<Config>(json!({"rules": [{"column": "a", "minimum": 1}]}))
                .is_err()
        );
        assert!(serde_json::from_value::<Config>(json!({"rulez": []})).is_err());
        let c = config(json!({"rules": [{"column": "a", "min": [1]}]}));
        assert!(validate(&input(sample()), &c, &mut |_| {}).is_err());
    }

    #[test]
    fn bare_column_names_and_no_columns() {
        let r = report(
            json!({"columns": ["a"], "records": [{"a": "x"}, {"a": null}]}),
            json!({}),
        );
        assert_eq!(r["columns"]["a"]["type"], "string");
        assert_eq!(r["columns"]["a"]["null_count"], 1);
        let r = report(json!({"records": [{"b": "x"}]}), json!({}));
        assert_eq!(r["columns"]["b"]["distinct_count"], 1);
        assert_eq!(r["ok"], true);
    }

    #[test]
    fn empty_input_is_ok() {
        let r = report(json!({"columns": [], "records": []}), rules());
        assert_eq!(r["row_count"], 0);
        // The rules name columns that do not exist.
        assert_eq!(r["violation_count"], 3);
    }
}
