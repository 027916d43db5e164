//! The engineering loop of `examples/engineering-loop/pipeline.toml`, natively: planner ->
//! developer -> tester, the tester's failure sent back to the developer as the runner
//! does it, developer again -> tester. The three agents' pure logic is included by
//! path (the crates are cdylib-only), so this is the same code the components run.

// Test helpers outside `#[test]` functions: clippy's test allowances do not reach them.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

#[allow(dead_code)]
#[path = "../../planner/src/plan.rs"]
mod plan;

#[allow(dead_code)]
#[path = "../../developer/src/develop.rs"]
mod develop;

#[allow(dead_code)]
#[path = "../src/check.rs"]
mod check;

use corral_sdk::Error;
use serde_json::{Value, json};

const INPUT: &str = include_str!("../../../examples/engineering-loop/input.json");

/// The step's JSON output becomes the next step's input, as JSON text, as in a run.
fn hand_over<T: serde::Serialize, U: serde::de::DeserializeOwned>(out: &T) -> U {
    serde_json::from_str(&serde_json::to_string(out).unwrap()).unwrap()
}

/// `ctx.feedback` exactly as the runner builds it from a step's plugin error: the SDK's
/// `with_detail` sends `{"message", "detail"}` as the error text, which the host unpacks.
fn runner_feedback(from_step: &str, error: &Error, loop_n: u32) -> Value {
    assert!(matches!(error, Error::Permanent(_)), "{error}");
    let (message, detail) = match serde_json::from_str::<Value>(error.message()) {
        Ok(Value::Object(m)) if m.contains_key("message") && m.contains_key("detail") => (
            m["message"].as_str().unwrap().to_string(),
            m["detail"].clone(),
        ),
        _ => (error.message().to_string(), Value::Null),
    };
    json!({
        "from_step": from_step,
        "error_code": "PLUGIN_ERROR",
        "message": message,
        "detail": detail,
        "loop": loop_n,
    })
}

fn run_loop(draft: develop::Draft, max_loops: u32) -> (Vec<Value>, check::TestReport) {
    let run_input: plan::PlanInput = serde_json::from_str(INPUT).unwrap();
    let planned = plan::plan(run_input).unwrap();
    let developer_input: Value = hand_over(&planned);

    let mut feedback: Option<Value> = None;
    let mut history = Vec::new();
    for loop_n in 0..=max_loops {
        // The developer is re-run with the SAME input it had the first time.
        let dev_in: develop::DevInput = serde_json::from_value(developer_input.clone()).unwrap();
        let developed = develop::develop(dev_in, feedback.as_ref(), draft).unwrap();
        history.push(serde_json::to_value(&developed).unwrap());
        match check::check(hand_over(&developed), check::DEFAULT_MAX_FAILURES_LISTED) {
            Ok(report) => return (history, report),
            Err(e) => feedback = Some(runner_feedback("tester", &e, loop_n + 1)),
        }
    }
    panic!("no pass after {max_loops} loops: {history:#?}\nlast feedback: {feedback:#?}");
}

#[test]
fn first_attempt_fails_then_the_feedback_makes_it_pass() {
    let run_input: plan::PlanInput = serde_json::from_str(INPUT).unwrap();
    let total = run_input.examples.len();
    let planned = plan::plan(run_input).unwrap();
    let developer_input: Value = hand_over(&planned);

    // Revision 1: the test-first draft.
    let dev_in: develop::DevInput = serde_json::from_value(developer_input.clone()).unwrap();
    let first = develop::develop(dev_in, None, develop::Draft::Minimal).unwrap();
    assert_eq!(first.revision, 1);
    assert_eq!(
        Value::Array(first.program.clone()),
        json!(["trim", "lowercase", {"replace": [" ", "-"]}])
    );

    // The tester really runs it and fails it, listing every failing case.
    let error = check::check(hand_over(&first), 50).unwrap_err();
    let feedback = runner_feedback("tester", &error, 1);
    assert_eq!(feedback["message"], format!("7 of {total} cases failed"));
    let failures = feedback["detail"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 7);
    assert!(failures.contains(&json!({
        "index": 3,
        "input": "Coffee Maker - Deluxe Edition",
        "expected": "coffee-maker-deluxe-edition",
        "actual": "coffee-maker---deluxe-edition",
    })));
    assert_eq!(feedback["detail"]["program"], json!(first.program));

    // Revision 2: the same input again, now with the feedback.
    let dev_in: develop::DevInput = serde_json::from_value(developer_input).unwrap();
    let second = develop::develop(dev_in, Some(&feedback), develop::Draft::Minimal).unwrap();
    assert_eq!(second.revision, 2);
    assert_eq!(
        Value::Array(second.program.clone()),
        json!(["trim", "ascii_fold", "lowercase", {"replace": [" ", "-"]},
            "strip_non_alnum_dash", "collapse_dashes", {"truncate": 40}, "trim_dashes"])
    );
    assert_eq!(second.changes.len(), 5, "{:#?}", second.changes);
    for (change, needle) in second.changes.iter().zip([
        "added \"ascii_fold\"",
        "added \"strip_non_alnum_dash\": the expected outputs drop , ' ( ) \" – %",
        "added \"collapse_dashes\"",
        "added {\"truncate\":40}",
        "added \"trim_dashes\": a cut output is shorter than 40 characters",
    ]) {
        assert!(
            change.starts_with(needle),
            "{change:?} should start with {needle:?}"
        );
    }
    assert!(second.notes.starts_with(&format!(
        "revision 2 from the feedback of tester (loop 1: 7 of {total} cases failed)"
    )));

    // The tester passes it.
    let report = check::check(hand_over(&second), 50).unwrap();
    assert_eq!((report.passed, report.failed), (total, 0));
    assert_eq!(report.revision, Some(2));
    assert_eq!(
        report.report,
        format!("all {total} cases pass (program of 8 ops, revision 2)")
    );
}

#[test]
fn the_loop_as_the_runner_drives_it_passes_on_the_second_developer_run() {
    let (history, report) = run_loop(develop::Draft::Minimal, 3);
    assert_eq!(history.len(), 2);
    assert_eq!(report.revision, Some(2));
}

#[test]
fn a_draft_from_all_requirements_passes_at_once() {
    // The planner's derived constraints are complete for these examples.
    let (history, report) = run_loop(develop::Draft::Requirements, 3);
    assert_eq!(history.len(), 1);
    assert_eq!(report.failed, 0);
    assert_eq!(history[0]["program"], json!(report.program));
}
