//! Validation: the raw model to a [`Pipeline`], every field range-checked where it is
//! written and `[defaults]` merged into each step.

use super::location::Origin;
use super::raw::{Dur, RawBudget, RawFeedback, RawLimits, RawPipeline, RawStep, Size, Table};
use super::*;
use crate::engine::limits::DEFAULT_FUEL;
use std::collections::{BTreeMap, HashMap};

/// Checks `raw` and builds the pipeline; errors are made through `origin`.
pub(super) fn pipeline(
    raw: RawPipeline,
    base_dir: Option<&Path>,
    origin: &Origin,
) -> Result<Pipeline, PipelineError> {
    Validator { origin, base_dir }.pipeline(raw)
}

struct Validator<'a> {
    origin: &'a Origin,
    base_dir: Option<&'a Path>,
}

/// Per-attempt budgets, before or after merging.
#[derive(Clone, Copy)]
struct StepLimits {
    fuel: u64,
    tokens: Option<u64>,
    timeout: Duration,
    memory: usize,
    max_attempts: u32,
    backoff: Duration,
    backoff_max: Duration,
}

impl Default for StepLimits {
    fn default() -> Self {
        StepLimits {
            fuel: DEFAULT_FUEL,
            tokens: None,
            timeout: Duration::from_secs(30),
            memory: 64 << 20,
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

fn human(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// A step name: `^[a-z0-9][a-z0-9_-]{0,62}$`.
fn valid_step_name(name: &str) -> bool {
    match name.as_bytes().split_first() {
        Some((first, rest)) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.len() <= 62
                && rest.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-'
                })
        }
        None => false,
    }
}

fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Validator<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> PipelineError {
        self.origin.error(field, message)
    }

    fn pipeline(&self, raw: RawPipeline) -> Result<Pipeline, PipelineError> {
        let name = match raw.name {
            None => return Err(self.err("name", "is required: give the pipeline a name")),
            Some(name) if name.trim().is_empty() => {
                return Err(self.err("name", "must not be empty"));
            }
            Some(name) => name,
        };
        let defaults = self.limits(
            &raw.defaults.map(|t| t.0).unwrap_or_default(),
            StepLimits::default(),
            "defaults",
        )?;
        let budget = self.budget(raw.budget.map(|t| t.0))?;

        let raw_steps: Vec<RawStep> = raw
            .steps
            .map(|s| s.0.into_iter().map(|t| t.0).collect())
            .unwrap_or_default();
        if raw_steps.is_empty() {
            return Err(self.err(
                "steps",
                "a pipeline needs at least one step (add a [[steps]] table)",
            ));
        }
        if raw_steps.len() > MAX_STEPS {
            return Err(self.err(
                "steps",
                format!("has {} steps; the limit is {MAX_STEPS}", raw_steps.len()),
            ));
        }

        // Names first: feedback loops refer to them.
        let mut names: Vec<&str> = Vec::with_capacity(raw_steps.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, step) in raw_steps.iter().enumerate() {
            let field = format!("steps[{i}].name");
            let name = step
                .name
                .as_deref()
                .ok_or_else(|| self.err(&field, "is required"))?;
            if !valid_step_name(name) {
                return Err(self.err(
                    &field,
                    format!(
                        "`{name}` is not a valid step name: use 1 to 63 of a-z, 0-9, `_` and \
                         `-`, starting with a letter or digit"
                    ),
                ));
            }
            if let Some(first) = seen.insert(name, i) {
                return Err(self.err(
                    &field,
                    format!(
                        "`{name}` is already the name of steps[{first}]; step names must be unique"
                    ),
                ));
            }
            names.push(name);
        }

        let mut steps = Vec::with_capacity(raw_steps.len());
        for (i, raw_step) in raw_steps.iter().enumerate() {
            steps.push(self.step(i, raw_step, &names, defaults)?);
        }
        let tools = self.tools(raw.tools.as_ref())?;
        for (i, step) in steps.iter().enumerate() {
            for (j, tool) in step.tools.iter().enumerate() {
                if !tools.contains_key(tool) {
                    let known: Vec<&str> = tools.keys().map(String::as_str).collect();
                    return Err(self.err(
                        &format!("steps[{i}].tools[{j}]"),
                        format!(
                            "`{tool}` is not in the pipeline's [tools] table (it has: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
        Ok(Pipeline {
            name,
            description: raw.description,
            budget,
            tools,
            steps,
            origin: self.origin.clone(),
        })
    }

    /// The `[tools]` table: tool names (like step names) to plugin references.
    fn tools(&self, raw: Option<&Value>) -> Result<BTreeMap<String, PluginRef>, PipelineError> {
        let mut tools = BTreeMap::new();
        let Some(raw) = raw else { return Ok(tools) };
        let Value::Object(table) = raw else {
            return Err(self.err("tools", "must be a table of tool name = plugin"));
        };
        if table.len() > MAX_TOOLS {
            return Err(self.err("tools", format!("has more than {MAX_TOOLS} tools")));
        }
        for (name, plugin) in table {
            let field = format!("tools.{name}");
            if !valid_step_name(name) {
                return Err(self.err(&field, "tool names use 1 to 63 of a-z, 0-9, `_` and `-`"));
            }
            let Value::String(text) = plugin else {
                return Err(self.err(&field, "must be a plugin: a path, `name@version` or an id"));
            };
            let plugin = plugin_ref(text, self.base_dir).map_err(|m| self.err(&field, m))?;
            tools.insert(name.clone(), plugin);
        }
        Ok(tools)
    }

    fn budget(&self, raw: Option<RawBudget>) -> Result<RunBudget, PipelineError> {
        let Some(raw) = raw else {
            return Ok(RunBudget::default());
        };
        if raw.fuel == Some(0) {
            return Err(self.err(
                "budget.fuel",
                "must be at least 1 (leave it out for unlimited fuel)",
            ));
        }
        if raw.tokens == Some(0) {
            return Err(self.err(
                "budget.tokens",
                "must be at least 1 (leave it out for unlimited tokens)",
            ));
        }
        let timeout = raw.timeout.map_or(DEFAULT_RUN_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            return Err(self.err("budget.timeout", "must be more than 0"));
        }
        if timeout > MAX_RUN_TIMEOUT {
            return Err(self.err(
                "budget.timeout",
                format!(
                    "must be at most {} (got {})",
                    human(MAX_RUN_TIMEOUT),
                    human(timeout)
                ),
            ));
        }
        Ok(RunBudget {
            fuel: raw.fuel,
            tokens: raw.tokens,
            timeout,
        })
    }

    /// Checks the keys `raw` sets (as `prefix.key`) and lays them over `base`.
    fn limits(
        &self,
        raw: &RawLimits,
        base: StepLimits,
        prefix: &str,
    ) -> Result<StepLimits, PipelineError> {
        let field = |key: &str| format!("{prefix}.{key}");
        let mut out = base;
        if let Some(fuel) = raw.fuel {
            if fuel == 0 {
                return Err(self.err(&field("fuel"), "must be at least 1"));
            }
            if fuel > MAX_STEP_FUEL {
                return Err(self.err(
                    &field("fuel"),
                    format!("must be at most {MAX_STEP_FUEL} (got {fuel})"),
                ));
            }
            out.fuel = fuel;
        }
        if let Some(tokens) = raw.tokens {
            if tokens == 0 {
                return Err(self.err(&field("tokens"), "must be at least 1"));
            }
            out.tokens = Some(tokens);
        }
        if let Some(Dur(timeout)) = raw.timeout {
            if timeout.is_zero() {
                return Err(self.err(&field("timeout"), "must be more than 0"));
            }
            if timeout > MAX_STEP_TIMEOUT {
                return Err(self.err(
                    &field("timeout"),
                    format!(
                        "must be at most {} (got {})",
                        human(MAX_STEP_TIMEOUT),
                        human(timeout)
                    ),
                ));
            }
            out.timeout = timeout;
        }
        if let Some(Size(memory)) = raw.memory {
            let bytes = u64::try_from(memory).unwrap_or(u64::MAX);
            if bytes < MIN_STEP_MEMORY {
                return Err(self.err(
                    &field("memory"),
                    format!("must be at least 1MiB (got {memory} bytes)"),
                ));
            }
            if bytes > MAX_STEP_MEMORY {
                return Err(self.err(
                    &field("memory"),
                    format!("must be at most 4GiB (got {memory} bytes)"),
                ));
            }
            out.memory = memory;
        }
        if let Some(attempts) = raw.max_attempts {
            if attempts == 0 {
                return Err(self.err(
                    &field("max_attempts"),
                    "must be at least 1 (1 means no retries)",
                ));
            }
            if attempts > MAX_ATTEMPTS {
                return Err(self.err(
                    &field("max_attempts"),
                    format!("must be at most {MAX_ATTEMPTS} (got {attempts})"),
                ));
            }
            out.max_attempts = attempts;
        }
        for (key, value, slot) in [
            ("backoff", &raw.backoff, &mut out.backoff),
            ("backoff_max", &raw.backoff_max, &mut out.backoff_max),
        ] {
            if let Some(Dur(delay)) = value {
                if *delay > MAX_BACKOFF {
                    return Err(self.err(
                        &field(key),
                        format!(
                            "must be at most {} (got {})",
                            human(MAX_BACKOFF),
                            human(*delay)
                        ),
                    ));
                }
                *slot = *delay;
            }
        }
        Ok(out)
    }

    fn step(
        &self,
        i: usize,
        raw: &RawStep,
        names: &[&str],
        defaults: StepLimits,
    ) -> Result<Step, PipelineError> {
        let prefix = format!("steps[{i}]");
        let field = |key: &str| format!("{prefix}.{key}");
        let name = names.get(i).copied().unwrap_or_default().to_string();

        let plugin = match raw.plugin.as_deref() {
            None => {
                return Err(self.err(
                    &field("plugin"),
                    "is required: a path to a .wasm component or `name@version`",
                ));
            }
            Some(text) => {
                plugin_ref(text, self.base_dir).map_err(|m| self.err(&field("plugin"), m))?
            }
        };

        let config = match &raw.config {
            None => Value::Object(serde_json::Map::new()),
            Some(config @ Value::Object(_)) => config.clone(),
            Some(other) => {
                return Err(self.err(
                    &field("config"),
                    format!(
                        "must be a table (an object in JSON), not {}",
                        json_type(other)
                    ),
                ));
            }
        };

        let tools: Vec<String> = raw.tools.as_ref().map(|t| t.0.clone()).unwrap_or_default();
        for (j, tool) in tools.iter().enumerate() {
            let tool_field = format!("{prefix}.tools[{j}]");
            if tool.trim().is_empty() {
                return Err(self.err(&tool_field, "a tool name must not be empty"));
            }
            if let Some(first) = tools.iter().position(|t| t == tool).filter(|&k| k < j) {
                return Err(self.err(
                    &tool_field,
                    format!("`{tool}` is listed twice (also tools[{first}])"),
                ));
            }
        }

        let on_failure = match &raw.on_failure {
            None => None,
            Some(Table(feedback)) => Some(self.feedback(i, &prefix, feedback, names)?),
        };

        let input_from = match raw.input_from.as_deref() {
            None => None,
            Some(from) => {
                let earlier = names.get(..i).unwrap_or_default();
                if !earlier.contains(&from) {
                    return Err(self.err(
                        &field("input_from"),
                        format!(
                            "`{from}` is not an earlier step (earlier steps: {})",
                            if earlier.is_empty() {
                                "none".to_string()
                            } else {
                                backticked(earlier)
                            }
                        ),
                    ));
                }
                Some(from.to_string())
            }
        };

        let connector = match raw.connector.as_deref() {
            None => None,
            Some("pull") => Some(ConnectorMode::Pull),
            Some("push") => Some(ConnectorMode::Push),
            Some(other) => {
                return Err(self.err(
                    &field("connector"),
                    format!("`{other}` is not a connector action: use \"pull\" or \"push\""),
                ));
            }
        };
        if connector.is_some() && !tools.is_empty() {
            return Err(self.err(
                &field("tools"),
                "connector steps cannot call tools (only agents can)",
            ));
        }
        if connector != Some(ConnectorMode::Pull)
            && (raw.max_pages.is_some_and(|n| n != DEFAULT_MAX_PAGES)
                || raw.max_items.is_some_and(|n| n != DEFAULT_MAX_ITEMS))
        {
            return Err(self.err(
                &field("max_pages"),
                "max_pages and max_items are for `connector = \"pull\"` steps",
            ));
        }
        let max_pages = raw.max_pages.unwrap_or(DEFAULT_MAX_PAGES);
        let max_items = raw.max_items.unwrap_or(DEFAULT_MAX_ITEMS);
        if max_pages == 0 || max_pages > 100_000 || max_items == 0 || max_items > 1_000_000 {
            return Err(self.err(
                &field("max_pages"),
                "max_pages must be 1 to 100000 and max_items 1 to 1000000",
            ));
        }

        let overrides = RawLimits {
            fuel: raw.fuel,
            tokens: raw.tokens,
            timeout: raw.timeout,
            memory: raw.memory,
            max_attempts: raw.max_attempts,
            backoff: raw.backoff,
            backoff_max: raw.backoff_max,
        };
        let limits = self.limits(&overrides, defaults, &prefix)?;

        Ok(Step {
            name,
            plugin,
            config,
            tools,
            on_failure,
            http: raw.http.as_ref().map(|h| h.0.clone()),
            models: raw.models.as_ref().map(|h| h.0.clone()),
            input_from,
            connector,
            max_pages,
            max_items,
            fuel: limits.fuel,
            tokens: limits.tokens,
            timeout: limits.timeout,
            memory: limits.memory,
            max_attempts: limits.max_attempts,
            backoff: limits.backoff,
            backoff_max: limits.backoff_max,
        })
    }

    fn feedback(
        &self,
        i: usize,
        prefix: &str,
        raw: &RawFeedback,
        names: &[&str],
    ) -> Result<FeedbackLoop, PipelineError> {
        let field = format!("{prefix}.on_failure.send_back_to");
        let earlier = names.get(..i).unwrap_or_default();
        let earlier_text = if earlier.is_empty() {
            "there are no earlier steps, so the first step cannot have a feedback loop".to_string()
        } else {
            format!("earlier steps: {}", backticked(earlier))
        };
        let target = raw.send_back_to.as_deref().ok_or_else(|| {
            self.err(
                &field,
                format!("is required: the name of an earlier step ({earlier_text})"),
            )
        })?;
        match names.iter().position(|n| *n == target) {
            Some(k) if k < i => {}
            Some(k) if k == i => {
                return Err(self.err(
                    &field,
                    format!(
                        "a step cannot send work back to itself (use max_attempts to retry it); \
                         {earlier_text}"
                    ),
                ));
            }
            Some(k) => {
                return Err(self.err(
                    &field,
                    format!(
                        "`{target}` is a later step (steps[{k}]); work can only be sent back \
                         to an earlier step; {earlier_text}"
                    ),
                ));
            }
            None => {
                return Err(self.err(
                    &field,
                    format!("no step is named `{target}`; {earlier_text}"),
                ));
            }
        }
        let max_loops = raw.max_loops.unwrap_or(DEFAULT_MAX_LOOPS);
        if max_loops == 0 || max_loops > MAX_LOOPS {
            return Err(self.err(
                &format!("{prefix}.on_failure.max_loops"),
                format!("must be between 1 and {MAX_LOOPS} (got {max_loops})"),
            ));
        }
        Ok(FeedbackLoop {
            send_back_to: target.to_string(),
            max_loops,
        })
    }
}

/// A plugin reference: `name@version`, or a path resolved against the base directory.
pub(super) fn plugin_ref(text: &str, base_dir: Option<&Path>) -> Result<PluginRef, String> {
    if text.trim().is_empty() {
        return Err("must not be empty: give a path to a .wasm component or `name@version`".into());
    }
    if let Some(hex) = text.strip_prefix("plg_")
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Ok(PluginRef::Id(text.to_string()));
    }
    let path_like =
        text.contains('/') || text.contains('\\') || text.ends_with(".wasm") || !text.contains('@');
    if !path_like {
        let (name, version) = text.split_once('@').unwrap_or((text, ""));
        if name.trim().is_empty() {
            return Err(format!("`{text}`: the plugin name before `@` is empty"));
        }
        if version.trim().is_empty() {
            return Err(format!("`{text}`: the version after `@` is empty"));
        }
        if version.contains('@') || text.chars().any(char::is_whitespace) {
            return Err(format!(
                "`{text}` is not `name@version` (one `@`, no spaces)"
            ));
        }
        return Ok(PluginRef::Named {
            name: name.to_string(),
            version: version.to_string(),
        });
    }
    let Some(base) = base_dir else {
        return Err(format!(
            "`{text}` is a file path, but this pipeline has no directory to resolve it \
             against (it was not loaded from a file): name a registered plugin as \
             `name@version` instead"
        ));
    };
    let path = Path::new(text);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        absolute_dir(base)?.join(path)
    };
    let resolved = std::fs::canonicalize(&joined).unwrap_or(joined);
    if resolved.to_str().is_none() {
        return Err(format!(
            "`{text}` resolves to {}, which is not valid UTF-8",
            resolved.display()
        ));
    }
    Ok(PluginRef::Path(resolved))
}

/// `dir` made absolute against the current directory (an empty `dir` is the current one).
fn absolute_dir(dir: &Path) -> Result<PathBuf, String> {
    let result = if dir.as_os_str().is_empty() {
        std::env::current_dir()
    } else {
        std::path::absolute(dir)
    };
    result.map_err(|e| format!("cannot resolve the directory {}: {e}", dir.display()))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn step_tools_must_be_declared_in_the_tools_table() {
        assert_fails(
            toml(&one_step("tools = [\"search\"]")),
            "steps[0].tools[0]",
            "`search` is not in the pipeline's [tools] table (it has: none)",
        );
        assert_fails(
            toml(
                "name = \"p\"\n[tools]\nBad_Name = \"x.wasm\"\n[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\n",
            ),
            "tools.Bad_Name",
            "tool names use",
        );
        let p = toml(
            "name = \"p\"\n[tools]\nsearch = \"search@1.0.0\"\n[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\ntools = [\"search\"]\n",
        )
        .unwrap();
        assert_eq!(
            p.tools.get("search"),
            Some(&PluginRef::Named {
                name: "search".into(),
                version: "1.0.0".into()
            })
        );
    }

    #[test]
    fn defaults_and_per_step_overrides_merge() {
        let text = r#"
            name = "p"
            [tools]
            text-tools = "/abs/text_tools.wasm"
            search = "search@1.0.0"
            [defaults]
            fuel = 5_000
            timeout = "5s"
            memory = "32MiB"
            max_attempts = 5
            backoff = "100ms"
            backoff_max = "2s"
            [[steps]]
            name = "a"
            plugin = "plugins/a.wasm"
            [[steps]]
            name = "b"
            plugin = "/abs/b.wasm"
            fuel = 7
            timeout = "1m30s"
            memory = 2097152
            max_attempts = 1
            backoff = "0s"
            backoff_max = "1h"
            tools = ["text-tools", "search"]
            on_failure = { send_back_to = "a" }
        "#;
        let p = toml(text).unwrap();
        assert_eq!(p.budget, RunBudget::default());
        assert_eq!(p.budget.timeout, Duration::from_secs(3600));
        let [a, b] = p.steps.as_slice() else {
            panic!("two steps")
        };
        assert_eq!(
            a.plugin,
            PluginRef::Path(PathBuf::from("/pipelines/plugins/a.wasm"))
        );
        assert_eq!(
            (
                a.fuel,
                a.timeout,
                a.memory,
                a.max_attempts,
                a.backoff,
                a.backoff_max
            ),
            (
                5_000,
                Duration::from_secs(5),
                32 << 20,
                5,
                Duration::from_millis(100),
                Duration::from_secs(2)
            )
        );
        assert_eq!(a.config, serde_json::json!({}));
        assert_eq!(b.plugin, PluginRef::Path(PathBuf::from("/abs/b.wasm")));
        assert_eq!(
            (
                b.fuel,
                b.timeout,
                b.memory,
                b.max_attempts,
                b.backoff,
                b.backoff_max
            ),
            (
                7,
                Duration::from_secs(90),
                2 << 20,
                1,
                Duration::ZERO,
                Duration::from_secs(3600)
            )
        );
        assert_eq!(b.tools, ["text-tools", "search"]);
        assert_eq!(
            b.on_failure,
            Some(FeedbackLoop {
                send_back_to: "a".into(),
                max_loops: 3
            })
        );
        let limits = b.limits();
        assert_eq!(limits.fuel, Some(7));
        assert_eq!(limits.memory_bytes, 2 << 20);
        assert_eq!(limits.timeout, Duration::from_secs(90));
    }

    #[test]
    fn named_plugins_parse() {
        let p = toml(&one_step("").replace("a.wasm", "csv-extract@1.2.0")).unwrap();
        assert_eq!(
            p.steps[0].plugin,
            PluginRef::Named {
                name: "csv-extract".into(),
                version: "1.2.0".into()
            }
        );
        assert_eq!(p.steps[0].plugin.to_string(), "csv-extract@1.2.0");
    }

    #[test]
    fn missing_or_empty_names_and_steps_are_errors() {
        assert_fails(
            toml("[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\n"),
            "name",
            "required",
        );
        assert_fails(
            toml(&one_step("").replace("\"p\"", "\" \"")),
            "name",
            "empty",
        );
        assert_fails(toml("name = \"p\"\n"), "steps", "at least one step");
        assert_fails(
            parse_json(r#"{"name":"p","steps":[]}"#, None),
            "steps",
            "at least one step",
        );
        assert_fails(
            toml("name = \"p\"\n[[steps]]\nplugin = \"a.wasm\"\n"),
            "steps[0].name",
            "required",
        );
        assert_fails(
            toml("name = \"p\"\n[[steps]]\nname = \"a\"\n"),
            "steps[0].plugin",
            "required",
        );
        assert_fails(
            toml("name = 5\n"),
            "name",
            "invalid type: integer `5`, expected a string",
        );
        assert_fails(
            toml("name = \"p\"\nsteps = 3\n"),
            "steps",
            "expected a list",
        );
        assert_fails(
            toml("name = \"p\"\nsteps = [1]\n"),
            "steps[0]",
            "expected a step table",
        );
    }

    #[test]
    fn more_than_64_steps_are_refused() {
        let mut text = String::from("name = \"p\"\n");
        for i in 0..65 {
            text.push_str(&format!(
                "[[steps]]\nname = \"s{i}\"\nplugin = \"a.wasm\"\n"
            ));
        }
        assert_fails(toml(&text), "steps", "more than 64");
        let steps: Vec<String> = (0..100_000)
            .map(|i| format!(r#"{{"name":"s{i}","plugin":"a@1"}}"#))
            .collect();
        let json = format!(r#"{{"name":"p","steps":[{}]}}"#, steps.join(","));
        assert!(json.len() < MAX_DOCUMENT_BYTES * 4);
        let e = parse_json(&json, None).unwrap_err();
        assert!(e.to_string().contains("1 MiB"), "{e}");
        let steps: Vec<String> = (0..65)
            .map(|i| format!(r#"{{"name":"s{i}","plugin":"a@1"}}"#))
            .collect();
        let json = format!(r#"{{"name":"p","steps":[{}]}}"#, steps.join(","));
        assert_fails(parse_json(&json, None), "steps", "more than 64");
        // 64 is fine.
        let steps: Vec<String> = (0..64)
            .map(|i| format!(r#"{{"name":"s{i}","plugin":"a@1"}}"#))
            .collect();
        let json = format!(r#"{{"name":"p","steps":[{}]}}"#, steps.join(","));
        assert_eq!(parse_json(&json, None).unwrap().steps.len(), 64);
    }

    #[test]
    fn step_names_must_be_valid_and_unique() {
        let two = |a: &str, b: &str| {
            format!(
                "name = \"p\"\n[[steps]]\nname = \"{a}\"\nplugin = \"a.wasm\"\n[[steps]]\nname = \"{b}\"\nplugin = \"b.wasm\"\n"
            )
        };
        assert_fails(
            toml(&two("a", "a")),
            "steps[1].name",
            "already the name of steps[0]",
        );
        for bad in ["Extract", "-a", "_a", "a b", "a.b", "", "é"] {
            assert_fails(
                toml(&two("ok", bad)),
                "steps[1].name",
                "not a valid step name",
            );
        }
        let long = "a".repeat(64);
        assert_fails(
            toml(&two("ok", &long)),
            "steps[1].name",
            "not a valid step name",
        );
        assert!(toml(&two("0-a_b", &"a".repeat(63))).is_ok());
    }

    #[test]
    fn feedback_loops_must_go_back_to_an_earlier_step() {
        let three = |on_failure: &str| {
            format!(
                "name = \"p\"\n\
                 [[steps]]\nname = \"planner\"\nplugin = \"a.wasm\"\n\
                 [[steps]]\nname = \"developer\"\nplugin = \"a.wasm\"\n\
                 [[steps]]\nname = \"tester\"\nplugin = \"a.wasm\"\non_failure = {on_failure}\n\
                 [[steps]]\nname = \"approver\"\nplugin = \"a.wasm\"\n"
            )
        };
        let ok = toml(&three("{ send_back_to = \"developer\", max_loops = 20 }")).unwrap();
        assert_eq!(
            ok.steps[2].on_failure,
            Some(FeedbackLoop {
                send_back_to: "developer".into(),
                max_loops: 20
            })
        );
        let field = "steps[2].on_failure.send_back_to";
        let e = toml(&three("{ send_back_to = \"approver\" }")).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(field) && text.contains("later step"),
            "{text}"
        );
        assert!(
            text.contains("earlier steps: `planner`, `developer`"),
            "{text}"
        );
        assert_fails(
            toml(&three("{ send_back_to = \"tester\" }")),
            field,
            "itself",
        );
        assert_fails(
            toml(&three("{ send_back_to = \"qa\" }")),
            field,
            "no step is named `qa`; earlier steps: `planner`, `developer`",
        );
        assert_fails(toml(&three("{ max_loops = 2 }")), field, "required");
        assert_fails(
            toml(&one_step("on_failure = { send_back_to = \"a\" }")),
            "steps[0].on_failure.send_back_to",
            "no earlier steps",
        );
        let loops = "steps[2].on_failure.max_loops";
        assert_fails(
            toml(&three("{ send_back_to = \"planner\", max_loops = 0 }")),
            loops,
            "between 1 and 20",
        );
        assert_fails(
            toml(&three("{ send_back_to = \"planner\", max_loops = 21 }")),
            loops,
            "got 21",
        );
        assert_fails(
            toml(&three("\"planner\"")),
            "steps[2].on_failure",
            "expected a table",
        );
    }

    #[test]
    fn limits_are_range_checked_where_they_are_written() {
        let cases = [
            ("max_attempts = 0", "max_attempts", "at least 1"),
            ("max_attempts = 21", "max_attempts", "at most 20"),
            ("max_attempts = -1", "max_attempts", "invalid value"),
            ("fuel = 0", "fuel", "at least 1"),
            (
                "fuel = 10_000_000_000_001",
                "fuel",
                "at most 10000000000000",
            ),
            ("fuel = -5", "fuel", "invalid value: integer `-5`"),
            ("fuel = \"lots\"", "fuel", "invalid type"),
            ("timeout = \"0s\"", "timeout", "more than 0"),
            ("timeout = \"25h\"", "timeout", "at most 1day"),
            ("timeout = \"soon\"", "timeout", "`soon` is not a duration"),
            ("timeout = 30", "timeout", "expected a duration"),
            ("memory = \"1000KB\"", "memory", "at least 1MiB"),
            ("memory = \"5GiB\"", "memory", "at most 4GiB"),
            ("memory = \"lots\"", "memory", "`lots` is not a size"),
            ("memory = -1", "memory", "negative"),
            ("backoff = \"2h\"", "backoff", "at most 1h"),
            ("backoff_max = \"61m\"", "backoff_max", "at most 1h"),
        ];
        for (line, key, phrase) in cases {
            assert_fails(toml(&one_step(line)), &format!("steps[0].{key}"), phrase);
            assert_fails(
                toml(&with_table(&format!("[defaults]\n{line}"), "")),
                &format!("defaults.{key}"),
                phrase,
            );
        }
        // A good override does not hide a bad default.
        assert_fails(
            toml(&with_table(
                "[defaults]\nmemory = \"1KiB\"",
                "memory = \"8MiB\"",
            )),
            "defaults.memory",
            "at least 1MiB",
        );
        assert!(
            toml(&one_step(
                "memory = \"4GiB\"\nfuel = 10_000_000_000_000\ntimeout = \"24h\""
            ))
            .is_ok()
        );
    }

    #[test]
    fn run_budgets_are_checked() {
        assert_fails(
            toml(&with_table("[budget]\ntimeout = \"0s\"", "")),
            "budget.timeout",
            "more than 0",
        );
        assert_fails(
            toml(&with_table("[budget]\nfuel = 0", "")),
            "budget.fuel",
            "at least 1",
        );
        assert_fails(
            toml(&with_table("[budget]\ntimeout = \"8days\"", "")),
            "budget.timeout",
            "at most 7days",
        );
        assert_fails(
            toml(&with_table("[budget]\ntokens = 0", "")),
            "budget.tokens",
            "at least 1",
        );
        assert_fails(
            toml(&one_step("tokens = 0")),
            "steps[0].tokens",
            "at least 1",
        );
        let p = toml(&with_table("[defaults]\ntokens = 40", "")).unwrap();
        assert_eq!(p.steps[0].tokens, Some(40));
        let p = toml(&one_step("tokens = 30")).unwrap();
        assert_eq!(p.steps[0].tokens, Some(30));
        let p = toml(&with_table("[budget]\nfuel = 9\ntokens = 500", "")).unwrap();
        assert_eq!(
            p.budget,
            RunBudget {
                fuel: Some(9),
                tokens: Some(500),
                timeout: Duration::from_secs(3600)
            }
        );
    }

    #[test]
    fn negative_fuel_in_json_names_the_field() {
        let json = r#"{"name":"p","steps":[{"name":"a","plugin":"a@1","fuel":-1}]}"#;
        assert_fails(
            parse_json(json, None),
            "steps[0].fuel",
            "invalid value: integer `-1`",
        );
        let json = r#"{"name":"p","budget":{"fuel":-1},"steps":[{"name":"a","plugin":"a@1"}]}"#;
        assert_fails(parse_json(json, None), "budget.fuel", "invalid value");
        let json = r#"{"name":"p","steps":[{"name":"a","plugin":"a@1","fuel":1.5}]}"#;
        assert_fails(parse_json(json, None), "steps[0].fuel", "invalid type");
    }

    #[test]
    fn configs_plugins_and_tools_are_checked() {
        assert_fails(
            toml(&one_step("config = 3")),
            "steps[0].config",
            "must be a table",
        );
        assert_fails(
            toml(&one_step("config = [1]")),
            "steps[0].config",
            "not an array",
        );
        assert_fails(
            parse_json(
                r#"{"name":"p","steps":[{"name":"a","plugin":"a@1","config":"x"}]}"#,
                None,
            ),
            "steps[0].config",
            "must be a table",
        );
        let plugin = |p: &str| {
            toml(&format!(
                "name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = \"{p}\"\n"
            ))
        };
        assert_fails(plugin(""), "steps[0].plugin", "must not be empty");
        assert_fails(plugin("  "), "steps[0].plugin", "must not be empty");
        assert_fails(
            plugin("@1.0"),
            "steps[0].plugin",
            "name before `@` is empty",
        );
        assert_fails(
            plugin("echo@"),
            "steps[0].plugin",
            "version after `@` is empty",
        );
        assert_fails(plugin("echo@1@2"), "steps[0].plugin", "not `name@version`");
        assert_fails(
            toml("name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = 3\n"),
            "steps[0].plugin",
            "invalid type: integer `3`, expected a string",
        );
        assert_fails(
            toml(&one_step("tools = [\"a\", \"\"]")),
            "steps[0].tools[1]",
            "must not be empty",
        );
        assert_fails(
            toml(&one_step("tools = [\"a\", \"b\", \"a\"]")),
            "steps[0].tools[2]",
            "`a` is listed twice (also tools[0])",
        );
        assert_fails(
            toml(&one_step("tools = [\"a\", 2]")),
            "steps[0].tools[1]",
            "invalid type",
        );
        let tools: Vec<String> = (0..65).map(|i| format!("\"t{i}\"")).collect();
        let json = format!(
            r#"{{"name":"p","steps":[{{"name":"a","plugin":"a@1","tools":[{}]}}]}}"#,
            tools.join(",")
        );
        assert_fails(parse_json(&json, None), "steps[0].tools", "more than 64");
    }

    #[test]
    fn path_plugins_need_a_base_directory() {
        let json = r#"{"name":"p","steps":[{"name":"a","plugin":"x/a.wasm"}]}"#;
        assert_fails(parse_json(json, None), "steps[0].plugin", "`name@version`");
        let json = r#"{"name":"p","steps":[{"name":"a","plugin":"/abs/a.wasm"}]}"#;
        assert_fails(parse_json(json, None), "steps[0].plugin", "is a file path");
        let p = parse_json(json, Some(Path::new("/elsewhere"))).unwrap();
        assert_eq!(
            p.steps[0].plugin,
            PluginRef::Path(PathBuf::from("/abs/a.wasm"))
        );
    }
}
