//! `tester`: really runs the developer's text-normalisation program against every test
//! case, with its own interpreter of the DSL (see [`check`] for the operations).
//!
//! Input: the developer's output, `{"program": [ops], "test_cases": [{"input",
//! "expected"}], "revision"?}` (other fields are ignored).
//!
//! Config (optional): `{"max_failures_listed": 50}`.
//!
//! All cases pass: `{"passed": n, "failed": 0, "program", "revision"?, "report",
//! "outputs": [{"input", "output"}]}`.
//!
//! Any case fails: a `permanent` error `"k of n cases failed"` with the detail
//! `{"failures": [{"index", "input", "expected", "actual"}], "failed", "passed", "total",
//! "program", "revision"}`. With `on_failure = { send_back_to = "developer" }` the runner
//! hands that detail to the developer as `ctx.feedback.detail`.
//!
//! A bad program (unknown op, bad argument) is a `permanent` error naming the op, with
//! the detail `{"op_index", "op", "program", "revision"}`.

mod check;

use corral_sdk::{Agent, Context, Info, Result};
use serde::Deserialize;
use serde_json::json;

use crate::check::{DEFAULT_MAX_FAILURES_LISTED, TestInput, TestReport};

/// The step config.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// How many failing cases an error lists (all are counted).
    max_failures_listed: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_failures_listed: DEFAULT_MAX_FAILURES_LISTED,
        }
    }
}

struct Tester;

impl Agent for Tester {
    type Input = TestInput;
    type Output = TestReport;

    fn info() -> Info {
        Info::new(
            "tester",
            env!("CARGO_PKG_VERSION"),
            "Runs a text-normalisation DSL program against test cases. Any failing case \
             fails the step with the failures (input, expected, actual) in the detail.",
        )
        .input_schema(json!({
            "type": "object",
            "required": ["program", "test_cases"],
            "properties": {
                "program": {"type": "array"},
                "test_cases": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["input", "expected"],
                        "properties": {
                            "input": {"type": "string"},
                            "expected": {"type": "string"}
                        }
                    }
                },
                "revision": {"type": "integer"}
            }
        }))
    }

    fn run(ctx: Context, input: TestInput) -> Result<TestReport> {
        let config: Config = ctx.config()?;
        corral_sdk::progress(0, "running test cases");
        let revision = input.revision;
        let result = check::check(input, config.max_failures_listed);
        match &result {
            Ok(report) => corral_sdk::info(&format!("tester: {}", report.report)),
            Err(e) => corral_sdk::warn(&format!(
                "tester: revision {}: {}",
                revision.map_or_else(|| "?".to_string(), |r| r.to_string()),
                // The message of a detailed error is JSON; log only its headline.
                headline(e.message())
            )),
        }
        corral_sdk::progress(100, "done");
        result
    }
}

/// The `message` of an error built with `with_detail`, or the text itself.
fn headline(message: &str) -> String {
    serde_json::from_str::<serde_json::Value>(message)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| message.to_string())
}

corral_sdk::export_agent!(Tester);

#[cfg(test)]
mod tests {
    use super::check::*;
    use super::headline;
    use corral_sdk::Error;
    use serde_json::{Value, json};

    fn ops(program: Value) -> Vec<Op> {
        parse_program(program.as_array().unwrap()).unwrap()
    }

    fn input(program: Value, cases: &[(&str, &str)]) -> TestInput {
        TestInput {
            program: program.as_array().unwrap().clone(),
            test_cases: cases
                .iter()
                .map(|(i, e)| Case {
                    input: i.to_string(),
                    expected: e.to_string(),
                })
                .collect(),
            revision: Some(1),
        }
    }

    /// Splits an error made by `with_detail` into (message, detail), as the host does.
    fn unpack(e: &Error) -> (String, Value) {
        let v: Value = serde_json::from_str(e.message()).unwrap();
        (
            v["message"].as_str().unwrap().to_string(),
            v["detail"].clone(),
        )
    }

    #[test]
    fn every_op_does_what_the_table_says() {
        let run = |p: Value, s: &str| run_program(&ops(p), s).unwrap();
        assert_eq!(run(json!(["trim"]), "  a b \t"), "a b");
        assert_eq!(run(json!(["lowercase"]), "ÀB"), "àb");
        assert_eq!(run(json!(["uppercase"]), "ab"), "AB");
        assert_eq!(
            run(json!(["ascii_fold"]), "Café Straße Œuvre"),
            "Cafe Strasse OEuvre"
        );
        assert_eq!(run(json!(["collapse_whitespace"]), "a  \t b"), "a b");
        assert_eq!(run(json!([{"replace": [" ", "-"]}]), "a b c"), "a-b-c");
        assert_eq!(run(json!([{"remove": "(),"}]), "(a, b)"), "a b");
        assert_eq!(run(json!(["strip_non_alnum_dash"]), "a-b, é!c_1"), "a-bc1");
        assert_eq!(run(json!(["collapse_dashes"]), "a---b--c-d"), "a-b-c-d");
        assert_eq!(run(json!(["trim_dashes"]), "--a-b-"), "a-b");
        assert_eq!(run(json!([{"truncate": 3}]), "héllo"), "hél");
        assert_eq!(run(json!([{"truncate": 0}]), "x"), "");
        assert_eq!(run(json!([]), " X "), " X ");
    }

    #[test]
    fn a_slug_program() {
        let program = json!(["trim", "ascii_fold", "lowercase", {"replace": [" ", "-"]},
            "strip_non_alnum_dash", "collapse_dashes", {"truncate": 12}, "trim_dashes"]);
        let run = |s: &str| run_program(&ops(program.clone()), s).unwrap();
        assert_eq!(run("  Crème Brûlée (6 Pack) "), "creme-brulee");
        assert_eq!(run("Coffee - Beans"), "coffee-beans");
        assert_eq!(run("Rock & Roll Pillow"), "rock-roll-pi");
        assert_eq!(run("Abcdefghijk Lm"), "abcdefghijk");
    }

    #[test]
    fn bad_ops_are_named_with_their_index() {
        let e = parse_program(json!(["trim", "frobnicate"]).as_array().unwrap()).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(
            e.message.contains("unknown op \"frobnicate\""),
            "{}",
            e.message
        );
        for bad in [
            json!({"replace": ["", "x"]}),
            json!({"replace": ["a"]}),
            json!({"truncate": -1}),
            json!({"truncate": "3"}),
            json!({"remove": ""}),
            json!({"trim": true}),
            json!({"trim": 1, "lowercase": 2}),
            json!(3),
        ] {
            assert!(parse_program(std::slice::from_ref(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_op_fails_the_check_with_detail() {
        let e = check(input(json!(["trim", "shout"]), &[("a", "a")]), 10).unwrap_err();
        assert!(matches!(e, Error::Permanent(_)));
        let (message, detail) = unpack(&e);
        assert!(
            message.starts_with("program[1]: unknown op \"shout\""),
            "{message}"
        );
        assert_eq!(detail["op_index"], 1);
        assert_eq!(detail["op"], "shout");
        assert_eq!(detail["program"], json!(["trim", "shout"]));
    }

    #[test]
    fn all_pass_gives_a_report() {
        let r = check(
            input(json!(["trim", "lowercase"]), &[(" A ", "a"), ("B", "b")]),
            10,
        )
        .unwrap();
        assert_eq!((r.passed, r.failed), (2, 0));
        assert_eq!(r.report, "all 2 cases pass (program of 2 ops, revision 1)");
        assert_eq!(r.outputs[0].output, "a");
    }

    #[test]
    fn failures_are_listed_with_input_expected_actual() {
        let e = check(
            input(
                json!(["lowercase"]),
                &[("A", "a"), ("B C", "b-c"), ("D!", "d"), ("E", "e")],
            ),
            1,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Permanent(_)));
        let (message, detail) = unpack(&e);
        assert_eq!(message, "2 of 4 cases failed");
        assert_eq!(headline(e.message()), "2 of 4 cases failed");
        assert_eq!(
            detail["failures"],
            json!([{"index": 1, "input": "B C", "expected": "b-c", "actual": "b c"}])
        );
        assert_eq!(detail["failed"], 2);
        assert_eq!(detail["passed"], 2);
        assert_eq!(detail["total"], 4);
        assert_eq!(detail["program"], json!(["lowercase"]));
        assert_eq!(detail["revision"], 1);
    }

    #[test]
    fn no_cases_is_invalid_input() {
        let e = check(input(json!([]), &[]), 10).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)));
    }

    #[test]
    fn runaway_growth_is_stopped() {
        let program: Vec<Value> =
            std::iter::repeat_n(json!({"replace": ["a", "aaaa"]}), 30).collect();
        let e = check(
            TestInput {
                program,
                test_cases: vec![Case {
                    input: "a".into(),
                    expected: "a".into(),
                }],
                revision: None,
            },
            10,
        )
        .unwrap_err();
        assert!(e.message().contains("grew the string"), "{e}");
    }
}
