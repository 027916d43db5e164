//! `transform`: typed cleaning of `csv-extract` output.
//!
//! Input: `{"columns": ["Order ID", ..], "records": [{"Order ID": "1001", ..}], ..}`
//! (other fields are ignored; `columns` may also be `[{"name": .., "type": ..}]`, and
//! when missing the record keys are used).
//!
//! It trims every value (empty becomes `null`), renames columns to snake_case, infers
//! each column's type (`integer`, `number`, `boolean`, `date` as `YYYY-MM-DD`, or
//! `string`) from its values, converts the values (those that do not parse become `null`
//! and are counted in `conversion_errors`), then adds the derived columns the step config
//! asks for.
//!
//! Config (all optional):
//! ```json
//! {"derive": [{"name": "total", "op": "mul", "args": ["quantity", "unit_price"], "round": 2}],
//!  "types": {"zip": "string"},
//!  "inference_threshold": 0.8}
//! ```
//! `op` is `mul`, `add` (two or more args), `sub` or `div` (exactly two). An arg is a
//! column name or a number. A derived value is `null` when an operand is `null` and on
//! division by zero. A derivation whose columns are missing or not numeric is skipped
//! with a warning.
//!
//! Output: `{"columns": [{"name", "type"}], "records": [..typed values..], "row_count": n,
//! "conversion_errors": {column: count}, "renamed": {old: new}, "warnings": [..]}`.

mod values;

use std::collections::{BTreeMap, HashSet};

use corral_sdk::{Agent, Context, Error, Info, Result};
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Number, Value, json};

pub use values::ColType;

/// The most warnings listed in the output.
const MAX_WARNINGS: usize = 50;

/// A column of the input: a bare name, or a typed column from an earlier transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InputColumn {
    /// `"name"`.
    Name(String),
    /// `{"name": "...", "type": "..."}` (the type is inferred again).
    Typed {
        /// The column's name.
        name: String,
    },
}

impl InputColumn {
    fn name(&self) -> &str {
        match self {
            InputColumn::Name(n) | InputColumn::Typed { name: n } => n,
        }
    }
}

/// The agent's input: `csv-extract`'s output.
#[derive(Debug, Clone, Deserialize)]
pub struct Input {
    /// Column names in order.
    #[serde(default)]
    pub columns: Option<Vec<InputColumn>>,
    /// The records (`items`, what a connector's pull step outputs, is accepted too).
    #[serde(alias = "items")]
    pub records: Vec<Map<String, Value>>,
}

/// An arithmetic operation for a derived column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Product of all args.
    Mul,
    /// Sum of all args.
    Add,
    /// First minus second.
    Sub,
    /// First divided by second (`null` on division by zero).
    Div,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Mul => "mul",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Div => "div",
        }
    }
}

/// An operand: a column name or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Arg {
    /// A constant.
    Number(Number),
    /// A column (its original or snake_case name).
    Column(String),
}

/// One derived column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derive {
    /// The new column's name (normalised to snake_case).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// The operands.
    pub args: Vec<Arg>,
    /// Decimal places to round non-integer results to.
    #[serde(default)]
    pub round: Option<u32>,
}

/// The step config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Derived columns, computed in order (later ones may use earlier ones).
    #[serde(default)]
    pub derive: Vec<Derive>,
    /// Forced column types, by original or snake_case name.
    #[serde(default)]
    pub types: BTreeMap<String, ColType>,
    /// Share (0..=1) of a column's values that must parse as a type for the column to
    /// get that type. Default 0.8.
    #[serde(default)]
    pub inference_threshold: Option<f64>,
}

/// A column of the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    /// The snake_case name.
    pub name: String,
    /// The column's type.
    #[serde(rename = "type")]
    pub ty: ColType,
}

/// The agent's output. Serializes records as objects in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct Transformed {
    /// The columns, derived ones last.
    pub columns: Vec<Column>,
    /// Typed values, aligned with `columns`.
    pub rows: Vec<Vec<Value>>,
    /// Values that did not parse as their column's type, per column (only non-zero).
    pub conversion_errors: BTreeMap<String, usize>,
    /// Columns whose names changed: original -> snake_case.
    pub renamed: BTreeMap<String, String>,
    /// Things worth a look (conversion examples, skipped derivations).
    pub warnings: Vec<String>,
}

struct Records<'a>(&'a [Column], &'a [Vec<Value>]);
struct Row<'a>(&'a [Column], &'a [Value]);

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (col, value) in self.0.iter().zip(self.1) {
            map.serialize_entry(&col.name, value)?;
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

impl Serialize for Transformed {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Transformed", 6)?;
        st.serialize_field("columns", &self.columns)?;
        st.serialize_field("records", &Records(&self.columns, &self.rows))?;
        st.serialize_field("row_count", &self.rows.len())?;
        st.serialize_field("conversion_errors", &self.conversion_errors)?;
        st.serialize_field("renamed", &self.renamed)?;
        st.serialize_field("warnings", &self.warnings)?;
        st.end()
    }
}

/// The text of an input value: `None` for null and for blank strings.
fn text_of(value: Option<&Value>) -> Option<String> {
    let text = match value? {
        Value::Null => return None,
        Value::String(s) => s.trim().to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    (!text.is_empty()).then_some(text)
}

/// Unique snake_case names for `originals`.
fn normalise_names(originals: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    originals
        .iter()
        .enumerate()
        .map(|(i, orig)| {
            let snake = values::snake_case(orig);
            let base = if snake.is_empty() {
                format!("column_{}", i + 1)
            } else {
                snake
            };
            let mut name = base.clone();
            let mut n = 2;
            while !seen.insert(name.clone()) {
                name = format!("{base}_{n}");
                n += 1;
            }
            name
        })
        .collect()
}

fn push_warning(warnings: &mut Vec<String>, w: String) {
    if warnings.len() < MAX_WARNINGS {
        warnings.push(w);
    }
}

/// Cleans, types and converts the records, then applies the derivations.
/// `on_progress` gets a percentage as columns are processed.
pub fn transform(
    input: Input,
    config: &Config,
    on_progress: &mut dyn FnMut(u8),
) -> std::result::Result<Transformed, String> {
    let threshold = config.inference_threshold.unwrap_or(0.8);
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(format!(
            "inference_threshold must be in (0, 1], got {threshold}"
        ));
    }

    let originals: Vec<String> = match &input.columns {
        Some(cols) => cols.iter().map(|c| c.name().to_string()).collect(),
        None => {
            let mut seen = HashSet::new();
            let mut names = Vec::new();
            for record in &input.records {
                for key in record.keys() {
                    if seen.insert(key.clone()) {
                        names.push(key.clone());
                    }
                }
            }
            names
        }
    };
    let names = normalise_names(&originals);
    let renamed: BTreeMap<String, String> = originals
        .iter()
        .zip(&names)
        .filter(|(o, n)| o != n)
        .map(|(o, n)| (o.clone(), n.clone()))
        .collect();

    // Forced types by snake_case name.
    let forced: BTreeMap<String, ColType> = config
        .types
        .iter()
        .map(|(k, t)| (values::snake_case(k), *t))
        .collect();
    let mut warnings = Vec::new();
    for key in forced.keys() {
        if !names.contains(key) {
            push_warning(&mut warnings, format!("types: no column named `{key}`"));
        }
    }

    let row_count = input.records.len();
    let mut rows: Vec<Vec<Value>> = vec![Vec::with_capacity(names.len()); row_count];
    let mut columns = Vec::with_capacity(names.len() + config.derive.len());
    let mut conversion_errors = BTreeMap::new();
    let ncols = originals.len().max(1);

    for (ci, (orig, name)) in originals.iter().zip(&names).enumerate() {
        let texts: Vec<Option<String>> =
            input.records.iter().map(|r| text_of(r.get(orig))).collect();
        let ty = forced.get(name).copied().unwrap_or_else(|| {
            values::infer_type(texts.iter().flatten().map(String::as_str), threshold)
        });
        let mut errors = 0usize;
        for (ri, (text, row)) in texts.iter().zip(rows.iter_mut()).enumerate() {
            let value = match text {
                None => Value::Null,
                Some(t) => values::convert(t, ty).unwrap_or_else(|| {
                    errors += 1;
                    push_warning(
                        &mut warnings,
                        format!(
                            "row {ri}: {name} = {t:?} is not a valid {}, set to null",
                            ty.describe()
                        ),
                    );
                    Value::Null
                }),
            };
            row.push(value);
        }
        if errors > 0 {
            conversion_errors.insert(name.clone(), errors);
        }
        columns.push(Column {
            name: name.clone(),
            ty,
        });
        on_progress(u8::try_from((ci + 1) * 90 / ncols).unwrap_or(90));
    }

    for d in &config.derive {
        derive(d, &mut columns, &mut rows, &mut warnings)?;
    }
    on_progress(100);

    Ok(Transformed {
        columns,
        rows,
        conversion_errors,
        renamed,
        warnings,
    })
}

/// A resolved operand.
enum Operand {
    Column(usize),
    Const(Number),
}

fn operand_i64(op: &Operand, row: &[Value]) -> Option<i64> {
    match op {
        Operand::Column(i) => row.get(*i)?.as_i64(),
        Operand::Const(n) => n.as_i64(),
    }
}

fn operand_f64(op: &Operand, row: &[Value]) -> Option<f64> {
    match op {
        Operand::Column(i) => row.get(*i)?.as_f64(),
        Operand::Const(n) => n.as_f64(),
    }
}

fn fold_i64(op: Op, vals: &[i64]) -> Option<i64> {
    let (first, rest) = vals.split_first()?;
    rest.iter().try_fold(*first, |acc, v| match op {
        Op::Mul => acc.checked_mul(*v),
        Op::Add => acc.checked_add(*v),
        Op::Sub => acc.checked_sub(*v),
        Op::Div => None,
    })
}

fn fold_f64(op: Op, vals: &[f64]) -> Option<f64> {
    let (first, rest) = vals.split_first()?;
    let r = rest.iter().try_fold(*first, |acc, v| match op {
        Op::Mul => Some(acc * v),
        Op::Add => Some(acc + v),
        Op::Sub => Some(acc - v),
        Op::Div => (*v != 0.0).then(|| acc / v),
    })?;
    r.is_finite().then_some(r)
}

fn round_to(x: f64, places: u32) -> f64 {
    let factor = 10f64.powi(i32::try_from(places).unwrap_or(12));
    let r = (x * factor).round() / factor;
    if r.is_finite() { r } else { x }
}

/// Adds one derived column. Config mistakes are errors; missing or non-numeric
/// columns skip the derivation with a warning.
fn derive(
    d: &Derive,
    columns: &mut Vec<Column>,
    rows: &mut [Vec<Value>],
    warnings: &mut Vec<String>,
) -> std::result::Result<(), String> {
    let name = values::snake_case(&d.name);
    if name.is_empty() {
        return Err(format!("derive: invalid column name {:?}", d.name));
    }
    if columns.iter().any(|c| c.name == name) {
        return Err(format!(
            "derive `{name}`: a column with that name already exists"
        ));
    }
    let arity_ok = match d.op {
        Op::Mul | Op::Add => d.args.len() >= 2,
        Op::Sub | Op::Div => d.args.len() == 2,
    };
    if !arity_ok {
        return Err(format!(
            "derive `{name}`: {} takes {} args, got {}",
            d.op.as_str(),
            if matches!(d.op, Op::Mul | Op::Add) {
                "two or more"
            } else {
                "exactly two"
            },
            d.args.len()
        ));
    }
    if d.round.is_some_and(|r| r > 12) {
        return Err(format!("derive `{name}`: round must be at most 12"));
    }

    let mut operands = Vec::with_capacity(d.args.len());
    let mut all_integer = d.op != Op::Div;
    for arg in &d.args {
        match arg {
            Arg::Number(n) => {
                all_integer &= n.is_i64();
                operands.push(Operand::Const(n.clone()));
            }
            Arg::Column(c) => {
                let wanted = values::snake_case(c);
                let Some((i, col)) = columns
                    .iter()
                    .enumerate()
                    .find(|(_, col)| col.name == wanted)
                else {
                    push_warning(
                        warnings,
                        format!("derive `{name}` skipped: no column `{c}`"),
                    );
                    return Ok(());
                };
                if !col.ty.is_numeric() {
                    push_warning(
                        warnings,
                        format!("derive `{name}` skipped: column `{wanted}` is not numeric"),
                    );
                    return Ok(());
                }
                all_integer &= col.ty == ColType::Integer;
                operands.push(Operand::Column(i));
            }
        }
    }

    for row in rows.iter_mut() {
        let value = if all_integer {
            operands
                .iter()
                .map(|o| operand_i64(o, row))
                .collect::<Option<Vec<_>>>()
                .and_then(|v| fold_i64(d.op, &v))
                .map_or(Value::Null, Value::from)
        } else {
            operands
                .iter()
                .map(|o| operand_f64(o, row))
                .collect::<Option<Vec<_>>>()
                .and_then(|v| fold_f64(d.op, &v))
                .map(|x| d.round.map_or(x, |p| round_to(x, p)))
                .map_or(Value::Null, Value::from)
        };
        row.push(value);
    }
    columns.push(Column {
        name,
        ty: if all_integer {
            ColType::Integer
        } else {
            ColType::Number
        },
    });
    Ok(())
}

struct Transform;

impl Agent for Transform {
    type Input = Input;
    type Output = Transformed;

    fn info() -> Info {
        Info::new(
            "transform",
            env!("CARGO_PKG_VERSION"),
            "Trims, types (integer, number, boolean, date, string) and snake_cases \
             csv-extract records, counting unparseable values, and adds derived columns \
             from config.",
        )
        .input_schema(json!({
            "type": "object",
            "properties": {
                "columns": {"type": "array"},
                "records": {"type": "array", "items": {"type": "object"}}
            },
            "required": ["records"]
        }))
        .output_schema(json!({
            "type": "object",
            "properties": {
                "columns": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "type": {"enum": ["integer", "number", "boolean", "date", "string"]}
                        },
                        "required": ["name", "type"]
                    }
                },
                "records": {"type": "array", "items": {"type": "object"}},
                "row_count": {"type": "integer", "minimum": 0},
                "conversion_errors": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"}
                },
                "renamed": {"type": "object", "additionalProperties": {"type": "string"}},
                "warnings": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["columns", "records", "row_count", "conversion_errors"]
        }))
    }

    fn run(ctx: Context, input: Input) -> Result<Transformed> {
        corral_sdk::progress(0, "typing columns");
        let config: Config = ctx.config()?;
        let out = transform(input, &config, &mut |pct| {
            corral_sdk::progress(pct, "typing columns");
        })
        .map_err(|e| Error::invalid_input(format!("step config: {e}")))?;
        let errors: usize = out.conversion_errors.values().sum();
        corral_sdk::info(&format!(
            "transform: {} records, {} columns, {errors} conversion errors",
            out.rows.len(),
            out.columns.len()
        ));
        for w in out.warnings.iter().take(10) {
            corral_sdk::warn(&format!("transform: {w}"));
        }
        corral_sdk::progress(100, "done");
        Ok(out)
    }
}

corral_sdk::export_agent!(Transform);

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> Input {
        serde_json::from_value(v).unwrap()
    }

    fn config(v: Value) -> Config {
        serde_json::from_value(v).unwrap()
    }

    fn run_json(i: Value, c: Value) -> Value {
        let out = transform(input(i), &config(c), &mut |_| {}).unwrap();
        serde_json::to_value(&out).unwrap()
    }

    fn sample() -> Value {
        json!({
            "columns": ["Order ID", "Customer", "quantity", "unitPrice", "order_date", "paid"],
            "records": [
                {"Order ID": "1001", "Customer": "  Smith, Jane ", "quantity": "2",
                 "unitPrice": "19.99", "order_date": "2024-03-01", "paid": "yes"},
                {"Order ID": "1002", "Customer": "Bob", "quantity": "3",
                 "unitPrice": "n/a", "order_date": "2024-03-02", "paid": "no"},
                {"Order ID": "1003", "Customer": null, "quantity": "-1",
                 "unitPrice": "5", "order_date": "2024-02-30", "paid": "TRUE"},
                {"Order ID": "1004", "Customer": "   ", "quantity": "4",
                 "unitPrice": "2.50", "order_date": "2024-03-04", "paid": "false"},
                {"Order ID": "1005", "Customer": "Eve", "quantity": "1",
                 "unitPrice": "10", "order_date": "2024-03-05", "paid": null}
            ],
            "row_count": 5,
            "skipped": []
        })
    }

    #[test]
    fn types_names_and_conversion_errors() {
        let out = run_json(sample(), json!({}));
        assert_eq!(
            out["columns"],
            json!([
                {"name": "order_id", "type": "integer"},
                {"name": "customer", "type": "string"},
                {"name": "quantity", "type": "integer"},
                {"name": "unit_price", "type": "number"},
                {"name": "order_date", "type": "date"},
                {"name": "paid", "type": "boolean"}
            ])
        );
        assert_eq!(out["row_count"], 5);
        assert_eq!(
            out["records"][0],
            json!({"order_id": 1001, "customer": "Smith, Jane", "quantity": 2,
                   "unit_price": 19.99, "order_date": "2024-03-01", "paid": true})
        );
        assert_eq!(out["records"][1]["unit_price"], Value::Null);
        assert_eq!(out["records"][2]["order_date"], Value::Null);
        assert_eq!(out["records"][3]["customer"], Value::Null);
        assert_eq!(out["records"][2]["quantity"], -1);
        assert_eq!(
            out["conversion_errors"],
            json!({"unit_price": 1, "order_date": 1})
        );
        assert_eq!(
            out["renamed"],
            json!({"Order ID": "order_id", "Customer": "customer", "unitPrice": "unit_price"})
        );
        assert_eq!(out["warnings"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn no_config_derives_nothing() {
        let out = run_json(sample(), json!({}));
        assert_eq!(out["columns"].as_array().unwrap().len(), 6);
        assert!(out["records"][0].get("total").is_none());
    }

    #[test]
    fn derive_total_with_rounding_and_nulls() {
        let out = run_json(
            sample(),
            json!({"derive": [{"name": "total", "op": "mul",
                               "args": ["quantity", "unitPrice"], "round": 2}]}),
        );
        assert_eq!(
            out["columns"][6],
            json!({"name": "total", "type": "number"})
        );
        assert_eq!(out["records"][0]["total"], 39.98);
        assert_eq!(out["records"][1]["total"], Value::Null);
        assert_eq!(out["records"][2]["total"], -5.0);
        assert_eq!(out["records"][3]["total"], 10.0);
    }

    #[test]
    fn derive_integer_ops_constants_and_chaining() {
        let out = run_json(
            sample(),
            json!({"derive": [
                {"name": "double_qty", "op": "mul", "args": ["quantity", 2]},
                {"name": "Qty Plus", "op": "add", "args": ["double_qty", "quantity", 1]},
                {"name": "id_minus", "op": "sub", "args": ["order_id", "quantity"]}
            ]}),
        );
        assert_eq!(
            out["columns"][6],
            json!({"name": "double_qty", "type": "integer"})
        );
        assert_eq!(
            out["columns"][7],
            json!({"name": "qty_plus", "type": "integer"})
        );
        assert_eq!(out["records"][0]["double_qty"], 4);
        assert_eq!(out["records"][0]["qty_plus"], 7);
        assert_eq!(out["records"][2]["id_minus"], 1004);
    }

    #[test]
    fn div_by_zero_is_null() {
        let out = run_json(
            json!({"columns": ["a", "b"], "records": [
                {"a": "6", "b": "3"}, {"a": "1", "b": "0"}, {"a": "1", "b": "4"}
            ]}),
            json!({"derive": [{"name": "ratio", "op": "div", "args": ["a", "b"]}]}),
        );
        assert_eq!(out["columns"][2]["type"], "number");
        assert_eq!(out["records"][0]["ratio"], 2.0);
        assert_eq!(out["records"][1]["ratio"], Value::Null);
        assert_eq!(out["records"][2]["ratio"], 0.25);
    }

    #[test]
    fn integer_overflow_is_null() {
        let out = run_json(
            json!({"columns": ["a"], "records": [{"a": "9223372036854775807"}]}),
            json!({"derive": [{"name": "b", "op": "add", "args": ["a", 1]}]}),
        );
        assert_eq!(out["records"][0]["b"], Value::Null);
    }

    #[test]
    fn derivation_on_missing_or_text_columns_is_skipped() {
        let out = run_json(
            sample(),
            json!({"derive": [
                {"name": "x", "op": "mul", "args": ["quantity", "nope"]},
                {"name": "y", "op": "add", "args": ["customer", "quantity"]}
            ]}),
        );
        assert_eq!(out["columns"].as_array().unwrap().len(), 6);
        let warnings = out["warnings"].to_string();
        assert!(warnings.contains("derive `x` skipped"), "{warnings}");
        assert!(warnings.contains("derive `y` skipped"), "{warnings}");
    }

    #[test]
    fn bad_derive_config_is_an_error() {
        let s = || input(sample());
        let c = config(json!({"derive": [{"name": "q", "op": "sub", "args": ["quantity"]}]}));
        assert!(transform(s(), &c, &mut |_| {}).is_err());
        let c = config(json!({"derive": [{"name": "quantity", "op": "add", "args": [1, 2]}]}));
        assert!(transform(s(), &c, &mut |_| {}).is_err());
        assert!(
            serde_json::from_value::<Config>(json!({"derive": [
                {"name": "q", "op": "pow", "args": [1, 2]}
            ]}))
            .is_err()
        );
        assert!(serde_json::from_value::<Config>(json!({"derivations": []})).is_err());
        let c = config(json!({"inference_threshold": 0}));
        assert!(transform(s(), &c, &mut |_| {}).is_err());
    }

    #[test]
    fn forced_types() {
        let out = run_json(sample(), json!({"types": {"Order ID": "string"}}));
        assert_eq!(
            out["columns"][0],
            json!({"name": "order_id", "type": "string"})
        );
        assert_eq!(out["records"][0]["order_id"], "1001");
    }

    #[test]
    fn records_in_column_order_and_missing_columns() {
        let out = transform(
            input(json!({"records": [{"b": "1", "a": "x"}, {"a": "y", "c": "2024-01-01"}]})),
            &Config::default(),
            &mut |_| {},
        )
        .unwrap();
        let names: Vec<&str> = out.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "c"]);
        assert_eq!(
            out.rows[1],
            vec![json!("y"), Value::Null, json!("2024-01-01")]
        );
        let text = serde_json::to_string(&out).unwrap();
        assert!(text.contains(r#"{"a":"x","b":1,"c":null}"#), "{text}");
    }

    #[test]
    fn duplicate_names_after_normalising_are_made_unique() {
        assert_eq!(
            normalise_names(&["Order ID".into(), "order_id".into(), "!!".into()]),
            vec!["order_id", "order_id_2", "column_3"]
        );
    }

    #[test]
    fn typed_columns_input_is_accepted() {
        let out = run_json(
            json!({"columns": [{"name": "a", "type": "integer"}], "records": [{"a": 3}]}),
            json!({}),
        );
        assert_eq!(out["records"][0]["a"], 3);
        assert_eq!(out["columns"][0]["type"], "integer");
    }
}
