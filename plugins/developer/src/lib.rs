//! `developer`: writes a text-normalisation program in the tester's DSL, and improves it
//! when the tester sends its failing cases back (a feedback loop).
//!
//! Input: the planner's output, `{"task", "requirements", "constraints", "test_cases":
//! [{"input", "expected"}], "plan"}` (only `test_cases` is required).
//!
//! Config (optional): `{"draft": "minimal"}` (default: test-first, the first draft covers
//! only trimming, case and the word separator, and the tester's failing cases drive the
//! rest) or `{"draft": "requirements"}` (the first draft covers every constraint the
//! planner derived).
//!
//! Without `ctx.feedback`: the first draft. With it (the runner sets it when the tester
//! fails: `{"from_step", "error_code", "message", "detail": {"failures": [{"input",
//! "expected", "actual"}], "program", ...}, "loop"}`), the program in `detail.program` is
//! improved from the differences between `actual` and `expected` (see [`develop`] for
//! how each difference maps to an op), and the revision is `loop + 1`. Feedback that
//! leads to no change is a `permanent` error, so a loop never repeats itself.
//!
//! Output: `{"task", "program": [ops], "test_cases": [passed through], "revision",
//! "notes", "changes": ["added \"collapse_dashes\": runs of '-' must be one '-' (...)",
//! ...]}`. Each change is also logged.

mod develop;

use corral_sdk::{Agent, Context, Info, Result};
use serde::Deserialize;

use crate::develop::{DevInput, DevOutput, Draft};

/// The step config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// How the first draft is written.
    draft: Draft,
}

struct Developer;

impl Agent for Developer {
    type Input = DevInput;
    type Output = DevOutput;

    fn info() -> Info {
        Info::new(
            "developer",
            env!("CARGO_PKG_VERSION"),
            "Writes a text-normalisation program (a JSON list of DSL ops) from the \
             planner's requirements, and improves it from the tester's failing cases.",
        )
    }

    fn run(ctx: Context, input: DevInput) -> Result<DevOutput> {
        let config: Config = ctx.config()?;
        corral_sdk::progress(0, "writing the program");
        if let Some(f) = &ctx.feedback {
            corral_sdk::info(&format!(
                "developer: feedback from {} (loop {}): {}",
                f.get("from_step").and_then(|v| v.as_str()).unwrap_or("?"),
                f.get("loop")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
                f.get("message").and_then(|v| v.as_str()).unwrap_or("")
            ));
        }
        let out = develop::develop(input, ctx.feedback.as_ref(), config.draft)?;
        corral_sdk::info(&format!("developer: {}", out.notes));
        for change in &out.changes {
            corral_sdk::info(&format!("developer: revision {}: {change}", out.revision));
        }
        corral_sdk::progress(100, "done");
        Ok(out)
    }
}

corral_sdk::export_agent!(Developer);

#[cfg(test)]
mod tests {
    use super::develop::*;
    use serde_json::{Value, json};

    fn constraints() -> Constraints {
        serde_json::from_value(json!({
            "trim": true, "lowercase": true, "ascii_only": true, "separator": "-",
            "removed_chars": ",()", "no_repeated_separator": true,
            "no_edge_separator": true, "max_length": 20
        }))
        .unwrap()
    }

    fn failure(input: &str, expected: &str, actual: &str) -> Value {
        json!({"input": input, "expected": expected, "actual": actual})
    }

    fn feedback(program: Value, failures: Vec<Value>, loop_n: u32) -> Value {
        json!({
            "from_step": "tester",
            "error_code": "PLUGIN_ERROR",
            "message": format!("{} of 9 cases failed", failures.len()),
            "detail": {"failures": failures, "program": program},
            "loop": loop_n,
        })
    }

    fn input(cases: &[(&str, &str)]) -> DevInput {
        DevInput {
            task: "slugs".into(),
            requirements: vec!["r".into()],
            constraints: constraints(),
            test_cases: cases
                .iter()
                .map(|(i, e)| Case {
                    input: i.to_string(),
                    expected: e.to_string(),
                })
                .collect(),
        }
    }

    fn improved(failures: Vec<Value>) -> (Vec<Value>, Vec<String>) {
        let fb = feedback(
            json!(["trim", "lowercase", {"replace": [" ", "-"]}]),
            failures,
            1,
        );
        let out = develop(input(&[("a", "a")]), Some(&fb), Draft::Minimal).unwrap();
        assert_eq!(out.revision, 2);
        (out.program, out.changes)
    }

    #[test]
    fn minimal_draft_covers_the_core_rules_only() {
        let out = develop(input(&[("A b", "a-b")]), None, Draft::Minimal).unwrap();
        assert_eq!(
            out.program,
            json!(["trim", "lowercase", {"replace": [" ", "-"]}])
                .as_array()
                .unwrap()
                .clone()
        );
        assert_eq!(out.revision, 1);
        assert!(out.notes.contains("not handled yet"), "{}", out.notes);
        assert!(
            out.notes.contains("the 20-character limit"),
            "{}",
            out.notes
        );
        assert_eq!(out.test_cases.len(), 1);
    }

    #[test]
    fn requirements_draft_covers_every_constraint_in_pipeline_order() {
        let (program, deferred) = draft(&constraints(), Draft::Requirements);
        assert!(deferred.is_empty());
        assert_eq!(
            Value::Array(program),
            json!(["trim", "ascii_fold", "lowercase", {"replace": [" ", "-"]},
                "strip_non_alnum_dash", "collapse_dashes", {"truncate": 20}, "trim_dashes"])
        );
    }

    #[test]
    fn infers_symbol_removal_generalised() {
        let (program, changes) = improved(vec![failure("A, b (c)", "a-b-c", "a,-b-(c)")]);
        assert_eq!(
            Value::Array(program),
            json!(["trim", "lowercase", {"replace": [" ", "-"]}, "strip_non_alnum_dash"])
        );
        assert!(changes[0].contains("drop , ( )"), "{changes:?}");
    }

    #[test]
    fn infers_remove_when_an_output_keeps_symbols() {
        let fb = feedback(
            json!(["lowercase", {"replace": [" ", "-"]}]),
            vec![failure("C++ & Go!", "c++-go", "c++-&-go!")],
            1,
        );
        let out = develop(input(&[("C++ & Go!", "c++-go")]), Some(&fb), Draft::Minimal).unwrap();
        assert_eq!(
            Value::Array(out.program),
            json!(["lowercase", {"replace": [" ", "-"]}, {"remove": "&!"}, "collapse_dashes"])
        );
    }

    #[test]
    fn infers_fold_collapse_and_edge_dashes() {
        let (program, changes) = improved(vec![
            failure("Crème  Brûlée", "creme-brulee", "crème--brûlée"),
            failure("- Sale -", "sale", "--sale--"),
        ]);
        assert_eq!(
            Value::Array(program),
            json!(["trim", "ascii_fold", "lowercase", {"replace": [" ", "-"]},
                "collapse_dashes", "trim_dashes"])
        );
        assert_eq!(changes.len(), 3, "{changes:?}");
    }

    #[test]
    fn infers_truncation_and_the_dash_left_by_a_cut() {
        let fb = feedback(
            json!(["lowercase", {"replace": [" ", "-"]}]),
            vec![
                failure("abcde fghij", "abcde", "abcde-fghij"),
                failure("abcdef ghij", "abcdef", "abcdef-ghij"),
            ],
            1,
        );
        let cases = [("abcde fghij", "abcde"), ("abcdef ghij", "abcdef")];
        let out = develop(input(&cases), Some(&fb), Draft::Minimal).unwrap();
        assert_eq!(
            Value::Array(out.program),
            json!(["lowercase", {"replace": [" ", "-"]}, {"truncate": 6}, "trim_dashes"])
        );
        assert!(
            out.changes[1].contains("cut landed on a '-'"),
            "{:?}",
            out.changes
        );
    }

    #[test]
    fn raises_a_truncation_that_is_too_short() {
        let fb = feedback(
            json!(["lowercase", {"truncate": 3}]),
            vec![failure("abcdef", "abcdef", "abc")],
            2,
        );
        let out = develop(input(&[("abcdef", "abcdef")]), Some(&fb), Draft::Minimal).unwrap();
        assert_eq!(out.revision, 3);
        assert_eq!(
            Value::Array(out.program),
            json!(["lowercase", {"truncate": 6}])
        );
    }

    #[test]
    fn infers_missing_core_ops_too() {
        let fb = feedback(
            json!([]),
            vec![failure("  Big Dog ", "big-dog", "  Big Dog ")],
            1,
        );
        let out = develop(
            input(&[("  Big Dog ", "big-dog")]),
            Some(&fb),
            Draft::Minimal,
        )
        .unwrap();
        assert_eq!(
            Value::Array(out.program),
            json!(["trim", "lowercase", {"replace": [" ", "-"]}])
        );
    }

    #[test]
    fn drops_an_op_the_tester_rejected() {
        let fb = json!({
            "from_step": "tester", "error_code": "PLUGIN_ERROR",
            "message": "program[1]: unknown op \"shout\"",
            "detail": {"op_index": 1, "op": "shout", "program": ["trim", "shout"]},
            "loop": 1
        });
        let out = develop(input(&[("a", "a")]), Some(&fb), Draft::Minimal).unwrap();
        assert_eq!(Value::Array(out.program), json!(["trim"]));
        assert!(out.changes[0].starts_with("removed \"shout\" at program[1]"));
    }

    #[test]
    fn no_progress_is_a_permanent_error() {
        // Already has every op: nothing new to add.
        let full = json!(["trim", "lowercase", {"replace": [" ", "-"]}, "strip_non_alnum_dash"]);
        let fb = feedback(full, vec![failure("a, b", "a-b", "a,-b")], 3);
        let e = develop(input(&[("a", "a")]), Some(&fb), Draft::Minimal).unwrap_err();
        assert!(matches!(e, corral_sdk::Error::Permanent(_)));
        assert!(e.message().contains("already has every op"), "{e}");

        // A difference no op explains (letters swapped).
        let fb = feedback(json!([]), vec![failure("ab", "ba", "ab")], 1);
        let e = develop(input(&[("ab", "ba")]), Some(&fb), Draft::Minimal).unwrap_err();
        assert!(e.message().contains("no op explains"), "{e}");

        // No detail at all.
        let fb = json!({"from_step": "tester", "error_code": "PLUGIN_ERROR",
            "message": "boom", "detail": null, "loop": 1});
        let e = develop(input(&[("a", "a")]), Some(&fb), Draft::Minimal).unwrap_err();
        assert!(e.message().contains("lists no failing cases"), "{e}");
    }
}
