//! The entry points: a document (TOML or JSON, bounded in size) to a validated pipeline.

use super::location::{Lines, Origin, field_path};
use super::raw::{RawPipeline, Table};
use super::{MAX_DOCUMENT_BYTES, Pipeline, PipelineError, PluginRef, toml_spans, validate};
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// Parses a TOML pipeline. Relative plugin paths are resolved against `base_dir`
/// (itself made absolute against the current directory if it is relative).
pub fn parse_toml(text: &str, base_dir: &Path) -> Result<Pipeline, PipelineError> {
    check_size(text)?;
    let (value, lines) = toml_spans::to_json(text)?;
    build(&value, Some(base_dir), lines)
}

/// Parses a JSON pipeline (the same structure as the TOML form). With `base_dir`
/// `None` (pipelines submitted over the API) plugins must be `name@version`: file paths
/// are refused.
pub fn parse_json(text: &str, base_dir: Option<&Path>) -> Result<Pipeline, PipelineError> {
    check_size(text)?;
    let value: Value = serde_json::from_str(text).map_err(|e| PipelineError {
        file: None,
        field: None,
        line: Some(e.line()),
        message: format!("invalid JSON: {e}"),
    })?;
    build(&value, base_dir, Lines::new())
}

/// A registered plugin reference (`name@version` or `plg_...`), as the API takes them;
/// file paths are refused.
pub fn registered_plugin(text: &str) -> Result<PluginRef, String> {
    validate::plugin_ref(text, None)
}

/// Reads and parses a pipeline file: JSON if its extension is `.json`, TOML otherwise.
/// Plugin paths are resolved against the file's directory; every error names the file,
/// including those found later by [`Pipeline::load_plugins`] and the grant checks.
pub fn load_file(path: &Path) -> Result<Pipeline, PipelineError> {
    let text = read_limited(path).map_err(|e| e.in_file(path))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    let parsed = if is_json {
        parse_json(&text, Some(base))
    } else {
        parse_toml(&text, base)
    };
    let mut pipeline = parsed.map_err(|e| e.in_file(path))?;
    pipeline.origin.file = Some(path.to_path_buf());
    Ok(pipeline)
}

/// Turns a JSON value (parsed from JSON, or converted from TOML) into a pipeline. Serde's
/// errors (unknown keys, wrong types, bad durations) name their field by path.
fn build(value: &Value, base_dir: Option<&Path>, lines: Lines) -> Result<Pipeline, PipelineError> {
    let origin = Origin::new(lines);
    let Table(raw) =
        serde_path_to_error::deserialize::<_, Table<RawPipeline>>(value).map_err(|e| {
            let field = field_path(e.path());
            let message = e.into_inner().to_string();
            if field.is_empty() {
                PipelineError::document(message)
            } else {
                origin.error(&field, message)
            }
        })?;
    validate::pipeline(raw, base_dir, &origin)
}

fn read_limited(path: &Path) -> Result<String, PipelineError> {
    let cannot =
        |e: std::io::Error| PipelineError::document(format!("cannot read the pipeline file: {e}"));
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(PipelineError::document("is not a file"));
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    let limit = u64::try_from(MAX_DOCUMENT_BYTES).unwrap_or(u64::MAX);
    file.take(limit.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(cannot)?;
    check_size(&text)?;
    Ok(text)
}

fn check_size(text: &str) -> Result<(), PipelineError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(PipelineError::document(format!(
            "the document is more than {MAX_DOCUMENT_BYTES} bytes (1 MiB), the limit for pipelines"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use super::*;

    #[test]
    fn the_etl_example_parses() {
        let file = host_dir().join("../examples/etl/pipeline.toml");
        let pipeline = load_file(&file).unwrap();
        assert_eq!(pipeline.name, "etl-demo");
        assert!(pipeline.description.as_deref().unwrap().contains("CSV"));
        assert_eq!(
            pipeline.budget,
            RunBudget {
                fuel: Some(10_000_000_000),
                tokens: None,
                timeout: Duration::from_secs(600)
            }
        );
        let names: Vec<&str> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["extract", "transform", "validate"]);
        for (step, file) in
            pipeline
                .steps
                .iter()
                .zip(["csv_extract.wasm", "transform.wasm", "validate.wasm"])
        {
            let expected = resolved(
                host_dir()
                    .join("../examples/etl/../../target/plugins")
                    .join(file),
            );
            assert_eq!(step.plugin, PluginRef::Path(expected));
            let PluginRef::Path(path) = &step.plugin else {
                unreachable!()
            };
            assert!(path.is_absolute());
            assert_eq!(step.fuel, 2_000_000_000);
            assert_eq!(step.timeout, Duration::from_secs(30));
            assert_eq!(step.memory, 64 << 20);
            assert_eq!(step.max_attempts, 3);
            assert_eq!(step.backoff, Duration::from_secs(1));
            assert_eq!(step.backoff_max, Duration::from_secs(60));
            assert!(step.tools.is_empty());
            assert_eq!(step.on_failure, None);
        }
        let extract = &pipeline.steps[0];
        assert_eq!(extract.config, serde_json::json!({ "delimiter": "," }));
        assert_eq!(
            pipeline.steps[2].config["rules"][0],
            serde_json::json!({ "column": "order_id", "required": true, "unique": true })
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path_and_line() {
        let e = toml("name = \"p\"\ncolour = 1\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("colour"));
        assert_eq!(e.line, Some(2));
        assert!(
            e.to_string()
                .starts_with("line 2: colour: unknown field `colour`"),
            "{e}"
        );

        let text = one_step("colour = \"red\"");
        let e = toml(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[0].colour"));
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().contains("expected one of"), "{e}");

        assert_fails(
            toml(&with_table("[defaults]\nfule = 1", "")),
            "defaults.fule",
            "unknown field `fule`",
        );
        assert_fails(
            toml(&with_table("[budget]\ntime = \"1s\"", "")),
            "budget.time",
            "unknown field",
        );
        assert_fails(
            toml(&format!(
                "{}[[steps]]\nname = \"b\"\nplugin = \"b.wasm\"\non_failure = {{ send_back_to = \"a\", loops = 2 }}\n",
                one_step("")
            )),
            "steps[1].on_failure.loops",
            "unknown field `loops`",
        );
        assert_fails(
            parse_json(
                r#"{"name":"p","steps":[{"name":"a","plugin":"a@1","colour":1}]}"#,
                None,
            ),
            "steps[0].colour",
            "unknown field",
        );
    }

    #[test]
    fn toml_syntax_errors_keep_their_location() {
        let e = toml("name = \"p\"\n[[steps]\n").unwrap_err();
        assert_eq!(e.field, None);
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains("TOML parse error at line 2"), "{e}");
    }

    #[test]
    fn invalid_json_is_reported_with_its_line() {
        let e = parse_json("{\n\"name\": }", None).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains("invalid JSON"), "{e}");
        let e = parse_json("[1]", None).unwrap_err();
        assert_eq!(e.field, None);
        assert!(e.to_string().contains("expected a pipeline table"), "{e}");
    }

    #[test]
    fn toml_and_json_give_the_same_pipeline() {
        let text = r#"
            name = "same"
            description = "both ways"
            [tools]
            text-tools = "text-tools@0.1.0"
            [defaults]
            memory = "16MiB"
            backoff_max = "10s"
            [budget]
            fuel = 1_000_000
            [[steps]]
            name = "first"
            plugin = "plugins/first.wasm"
            config = { n = 1, x = 1.5, list = ["a", true], nested = { deep = -3 } }
            [[steps]]
            name = "second"
            plugin = "second@0.1.0"
            tools = ["text-tools"]
            timeout = "1m"
            on_failure = { send_back_to = "first", max_loops = 2 }
        "#;
        let json = r#"{
            "name": "same",
            "description": "both ways",
            "tools": { "text-tools": "text-tools@0.1.0" },
            "defaults": { "memory": 16777216, "backoff_max": "10s" },
            "budget": { "fuel": 1000000 },
            "steps": [
                { "name": "first", "plugin": "plugins/first.wasm",
                  "config": { "n": 1, "x": 1.5, "list": ["a", true], "nested": { "deep": -3 } } },
                { "name": "second", "plugin": "second@0.1.0", "tools": ["text-tools"],
                  "timeout": "60s", "on_failure": { "send_back_to": "first", "max_loops": 2 } }
            ]
        }"#;
        let base = Path::new("/pipelines");
        let from_toml = parse_toml(text, base).unwrap();
        let from_json = parse_json(json, Some(base)).unwrap();
        assert_eq!(from_toml, from_json);
        assert_eq!(from_toml.steps[0].memory, 16 << 20);
    }

    #[test]
    fn pipelines_round_trip_through_json() {
        let text = r#"
            name = "rt"
            [tools]
            t = "t@1"
            [budget]
            timeout = "1h 2m 3s 4ms"
            [[steps]]
            name = "a"
            plugin = "a.wasm"
            timeout = "1500ms"
            backoff = "0s"
            config = { k = "v" }
            [[steps]]
            name = "b"
            plugin = "b@2"
            tools = ["t"]
            on_failure = { send_back_to = "a" }
        "#;
        let pipeline = toml(text).unwrap();
        let json = serde_json::to_string_pretty(&pipeline).unwrap();
        assert!(json.contains(r#""timeout": "1s 500ms""#), "{json}");
        assert!(json.contains(r#""plugin": "b@2""#), "{json}");
        let back = parse_json(&json, Some(Path::new("/somewhere/else"))).unwrap();
        assert_eq!(back, pipeline);

        // Named-only pipelines round-trip without a base directory (the API case).
        let named = toml(&one_step("").replace("a.wasm", "a@1")).unwrap();
        let json = serde_json::to_string(&named).unwrap();
        assert!(
            !json.contains("description") && !json.contains("on_failure"),
            "{json}"
        );
        assert_eq!(parse_json(&json, None).unwrap(), named);
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let e = load_file(&missing).unwrap_err();
        assert_eq!(e.file.as_deref(), Some(missing.as_path()));
        assert!(
            e.to_string().starts_with(&missing.display().to_string()),
            "{e}"
        );
        assert!(e.to_string().contains("cannot read"), "{e}");

        let file = dir.path().join("p.toml");
        std::fs::write(&file, one_step("colour = 1")).unwrap();
        let e = load_file(&file).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:5: steps[0].colour: ", file.display())),
            "{e}"
        );

        std::fs::write(&file, one_step("")).unwrap();
        let p = load_file(&file).unwrap();
        let dir_real = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            p.steps[0].plugin,
            PluginRef::Path(resolved(dir_real.join("a.wasm")))
        );

        let json = dir.path().join("p.json");
        std::fs::write(
            &json,
            r#"{"name":"p","steps":[{"name":"a","plugin":"a.wasm"}]}"#,
        )
        .unwrap();
        assert_eq!(load_file(&json).unwrap().steps[0].plugin, p.steps[0].plugin);

        assert!(
            load_file(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a file")
        );
    }

    #[test]
    fn documents_over_1_mib_are_refused_before_parsing() {
        let big = format!("name = \"p\"\n#{}\n", "x".repeat(MAX_DOCUMENT_BYTES));
        let e = toml(&big).unwrap_err();
        assert!(e.to_string().contains("1 MiB"), "{e}");
        let big = format!("{{\"name\":\"{}\"}}", "x".repeat(MAX_DOCUMENT_BYTES));
        assert!(
            parse_json(&big, None)
                .unwrap_err()
                .to_string()
                .contains("1 MiB")
        );
    }

    /// Every class of error in a pipeline file reads `file:line: field: message`.
    #[test]
    fn errors_in_a_file_name_its_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pipeline.toml");
        // `extra` starts on line 6.
        let step = |extra: &str| {
            format!("name = \"p\"\n\n[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\n{extra}\n")
        };
        let cases = [
            ("colour = 1", "6: steps[0].colour", "unknown field `colour`"),
            (
                "fuel = \"lots\"",
                "6: steps[0].fuel",
                "invalid type: string \"lots\", expected u64",
            ),
            ("max_attempts = 0", "6: steps[0].max_attempts", "at least 1"),
            (
                "timeout = \"soon\"",
                "6: steps[0].timeout",
                "`soon` is not a duration",
            ),
            (
                "memory = \"lots\"",
                "6: steps[0].memory",
                "`lots` is not a size",
            ),
            ("memory = \"1KiB\"", "6: steps[0].memory", "at least 1MiB"),
            (
                "tools = [\n  \"search\",\n]",
                "7: steps[0].tools[0]",
                "`search` is not in the pipeline's [tools] table",
            ),
            (
                "on_failure = { send_back_to = \"zzz\" }",
                "6: steps[0].on_failure.send_back_to",
                "no step is named `zzz`",
            ),
            (
                "[[steps]]\nname = \"a\"\nplugin = \"b.wasm\"",
                "7: steps[1].name",
                "`a` is already the name of steps[0]",
            ),
            (
                "[budget]\ntimeout = \"8days\"",
                "7: budget.timeout",
                "at most 7days",
            ),
            (
                "[tools]\nBad_Name = \"x.wasm\"",
                "7: tools.Bad_Name",
                "tool names use",
            ),
        ];
        for (extra, at, phrase) in cases {
            std::fs::write(&file, step(extra)).unwrap();
            let e = load_file(&file).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{}:{at}: ", file.display())),
                "{extra:?}: {e}"
            );
            assert!(e.contains(phrase), "{extra:?}: expected {phrase:?} in {e}");
        }

        // A missing field points at its table.
        std::fs::write(&file, "name = \"p\"\n\n[[steps]]\nname = \"a\"\n").unwrap();
        let e = load_file(&file).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}:3: steps[0].plugin: is required",
                file.display()
            )),
            "{e}"
        );

        // A syntax error keeps toml's own message, after the file and line.
        std::fs::write(&file, step("[[steps]")).unwrap();
        let e = load_file(&file).unwrap_err();
        assert_eq!((e.field.as_deref(), e.line), (None, Some(6)));
        let e = e.to_string();
        assert!(
            e.starts_with(&format!("{}:6: TOML parse error at line 6", file.display())),
            "{e}"
        );

        // JSON has no lines for fields, but still names the file and the field.
        let json = dir.path().join("pipeline.json");
        std::fs::write(
            &json,
            r#"{"name":"p","steps":[{"name":"a","plugin":"a.wasm","fuel":"x"}]}"#,
        )
        .unwrap();
        let e = load_file(&json).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: steps[0].fuel: invalid type", json.display())),
            "{e}"
        );
    }

    #[test]
    fn tables_are_not_lists_of_their_values() {
        let json = r#"{"name":"p","steps":[["a","a@1"]]}"#;
        assert_fails(parse_json(json, None), "steps[0]", "expected a step table");
        assert_fails(
            toml(&one_step("on_failure = [\"a\", 3]")),
            "steps[0].on_failure",
            "invalid type: sequence, expected a table like",
        );
        assert_fails(
            toml("name = \"p\"\ndefaults = [1]\n[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\n"),
            "defaults",
            "expected a table of step defaults",
        );
    }
}
