//! TOML to the JSON value both formats share, remembering the line of every field from
//! toml's spans (keys and array items), so that errors found later name their line.
//!
//! Going through JSON rather than deserializing straight from TOML keeps one model and
//! one set of messages for both formats, and makes `config` the same JSON either way
//! (datetimes as strings; `inf` and `nan`, which JSON cannot hold, refused).

use super::PipelineError;
use super::location::{LineIndex, Lines, child_path};
use serde_json::Value;
use toml::de::{DeTable, DeValue};

/// Parses `text` as TOML: its JSON value and the line of each field path.
pub(super) fn to_json(text: &str) -> Result<(Value, Lines), PipelineError> {
    let index = LineIndex::new(text);
    let root = DeTable::parse(text).map_err(|e| PipelineError {
        file: None,
        field: None,
        line: e.span().map(|s| index.line(s.start)),
        message: e.to_string().trim_end().to_string(),
    })?;
    let mut converter = Converter {
        index,
        lines: Lines::new(),
    };
    let value = converter.table(root.get_ref(), "")?;
    Ok((value, converter.lines))
}

struct Converter {
    index: LineIndex,
    lines: Lines,
}

impl Converter {
    fn table(&mut self, table: &DeTable<'_>, path: &str) -> Result<Value, PipelineError> {
        let mut map = serde_json::Map::new();
        for (key, value) in table.iter() {
            let child = child_path(path, key.get_ref());
            self.lines
                .insert(child.clone(), self.index.line(key.span().start));
            let converted = self.value(value.get_ref(), &child)?;
            map.insert(key.get_ref().to_string(), converted);
        }
        Ok(Value::Object(map))
    }

    fn value(&mut self, value: &DeValue<'_>, path: &str) -> Result<Value, PipelineError> {
        let error = |lines: &Lines, message: &str| PipelineError {
            file: None,
            field: Some(path.to_string()),
            line: lines.get(path).copied(),
            message: message.to_string(),
        };
        Ok(match value {
            DeValue::String(s) => Value::String(s.to_string()),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Value::from(n),
                Err(_) => match u64::from_str_radix(i.as_str(), i.radix()) {
                    Ok(n) => Value::from(n),
                    Err(_) => return Err(error(&self.lines, "integer out of range")),
                },
            },
            DeValue::Float(f) => {
                let number = f
                    .as_str()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64);
                match number {
                    Some(n) => Value::Number(n),
                    None => {
                        return Err(error(
                            &self.lines,
                            "only finite floats are supported (not inf or nan)",
                        ));
                    }
                }
            }
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(d) => Value::String(d.to_string()),
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    self.lines
                        .insert(child.clone(), self.index.line(item.span().start));
                    out.push(self.value(item.get_ref(), &child)?);
                }
                Value::Array(out)
            }
            DeValue::Table(table) => self.table(table, path)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_and_item_has_its_line() {
        let text = "name = \"p\"\n[[steps]]\nname = \"a\"\ntools = [\n  \"x\",\n  \"y\",\n]\n\
                    [[steps]]\non_failure = { send_back_to = \"a\" }\n";
        let (value, lines) = to_json(text).unwrap();
        assert_eq!(value["steps"][0]["tools"][1], "y");
        let line = |p: &str| lines.get(p).copied();
        assert_eq!(line("name"), Some(1));
        assert_eq!(line("steps[0].name"), Some(3));
        assert_eq!(line("steps[0].tools"), Some(4));
        assert_eq!(line("steps[0].tools[1]"), Some(6));
        assert_eq!(line("steps[1].on_failure.send_back_to"), Some(9));
    }

    #[test]
    fn values_json_cannot_hold_are_refused_on_their_line() {
        let e = to_json("name = \"p\"\n[config]\nx = nan\n").unwrap_err();
        assert_eq!((e.field.as_deref(), e.line), (Some("config.x"), Some(3)));
        assert!(e.message.contains("finite"), "{e}");
        let (value, _) = to_json("when = 1979-05-27T07:32:00Z\n").unwrap();
        assert_eq!(value["when"], "1979-05-27T07:32:00Z");
    }
}
