//! `planner`: the first step of the engineering loop. It turns a task and examples of
//! the wanted behaviour into requirements, test cases and a plan. The requirements are
//! derived from the examples, not written in: trimming, case, accents, the word
//! separator, which symbols disappear, repeated or edge separators, and a length limit
//! (an output with fewer letters and digits than its input was cut; the limit is the
//! longest output).
//!
//! Input: `{"task": "...", "examples": [{"input": "...", "expected": "..."}, ...]}`.
//!
//! Output: `{"task", "requirements": ["output is lowercase", ...], "constraints":
//! {"trim", "lowercase", "ascii_only", "separator", "removed_chars",
//! "no_repeated_separator", "no_edge_separator", "max_length"}, "test_cases": [examples],
//! "plan": ["developer: ...", "tester: ...", ...]}`. `constraints` is the requirements'
//! machine-readable form, which the developer drafts from.

mod plan;

use corral_sdk::{Agent, Context, Info, Result};
use serde_json::json;

use crate::plan::{PlanInput, PlanOutput};

struct Planner;

impl Agent for Planner {
    type Input = PlanInput;
    type Output = PlanOutput;

    fn info() -> Info {
        Info::new(
            "planner",
            env!("CARGO_PKG_VERSION"),
            "Turns a task and input/expected examples into requirements derived from the \
             examples, test cases and a plan for the developer and tester.",
        )
        .input_schema(json!({
            "type": "object",
            "required": ["examples"],
            "properties": {
                "task": {"type": "string"},
                "examples": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["input", "expected"],
                        "properties": {
                            "input": {"type": "string"},
                            "expected": {"type": "string"}
                        }
                    }
                }
            }
        }))
    }

    fn run(ctx: Context, input: PlanInput) -> Result<PlanOutput> {
        corral_sdk::progress(0, "analysing examples");
        let out = plan::plan(input)?;
        corral_sdk::info(&format!(
            "planner ({}): {} requirements from {} examples",
            ctx.step,
            out.requirements.len(),
            out.test_cases.len()
        ));
        for r in &out.requirements {
            corral_sdk::debug(&format!("requirement: {r}"));
        }
        corral_sdk::progress(100, "done");
        Ok(out)
    }
}

corral_sdk::export_agent!(Planner);

#[cfg(test)]
mod tests {
    use super::plan::*;

    fn ex(pairs: &[(&str, &str)]) -> Vec<Example> {
        pairs
            .iter()
            .map(|(i, e)| Example {
                input: i.to_string(),
                expected: e.to_string(),
            })
            .collect()
    }

    #[test]
    fn derives_slug_requirements_from_the_example_file() {
        let input: PlanInput = serde_json::from_str(include_str!(
            "../../../examples/engineering-loop/input.json"
        ))
        .unwrap();
        let out = plan(input).unwrap();
        let c = &out.constraints;
        assert!(c.trim && c.lowercase && c.ascii_only);
        assert_eq!(c.separator.as_deref(), Some("-"));
        assert_eq!(c.removed_chars, ",'()\"+&–%");
        assert!(c.no_repeated_separator && c.no_edge_separator);
        assert_eq!(c.max_length, Some(40));
        assert_eq!(out.test_cases.len(), 9);
        let text = out.requirements.join("\n");
        for needle in [
            "leading and trailing spaces are removed",
            "output is lowercase",
            "accented letters lose their accents (é è seen",
            "words are separated by '-' instead of spaces",
            "punctuation and symbols are removed: , ' ( ) \" + & – %",
            "'-' never repeats",
            "output never starts or ends with '-'",
            "at most 40 characters: longer inputs are cut (2 of the examples",
            "each of the 9 examples gives exactly its expected output",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(out.plan[0].contains("(trimming, lowercase, ' ' -> '-')"));
        assert!(out.plan[1].contains("all 9 examples"));
    }

    #[test]
    fn derives_nothing_that_the_examples_do_not_show() {
        let (reqs, c) = analyse(&ex(&[("Hello World", "Hello World"), ("a b", "a b")]));
        assert_eq!(c, Constraints::default());
        assert!(reqs.contains(&"letter case is kept as written".to_string()));
        assert!(reqs.contains(&"spaces between words are kept".to_string()));
    }

    #[test]
    fn other_separators_and_no_length_limit() {
        let (_, c) = analyse(&ex(&[("Big Red Dog", "big_red_dog"), ("A  B", "a_b")]));
        assert_eq!(c.separator.as_deref(), Some("_"));
        assert!(c.lowercase && c.no_repeated_separator && c.no_edge_separator);
        assert_eq!(c.max_length, None);
        assert!(!c.trim && !c.ascii_only);
    }

    #[test]
    fn symbols_kept_in_some_output_are_not_removed() {
        let (reqs, c) = analyse(&ex(&[
            ("C++ & C#", "c++-c#"),
            ("Rock & Roll!", "rock-roll"),
        ]));
        assert_eq!(c.removed_chars, "&!");
        assert_eq!(c.separator.as_deref(), Some("-"));
        assert!(
            reqs.iter()
                .any(|r| r == "punctuation and symbols are removed: & !")
        );
    }

    #[test]
    fn no_examples_is_invalid_input() {
        let e = plan(PlanInput {
            task: "x".into(),
            examples: vec![],
        })
        .unwrap_err();
        assert!(matches!(e, corral_sdk::Error::InvalidInput(_)));
    }
}
