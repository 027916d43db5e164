//! `approver`: a human in the loop. It asks a person (`corral_sdk::ask`) whether the
//! step's input may go on, and waits for the answer.
//!
//! Input: any JSON: a records list, `csv-extract` or `transform` output, a `validate`
//! report, ...
//!
//! Config (all optional): `{"question": "Publish {count} records? Report: {summary}",
//! "summary_field": "summary", "pass_through": false}`. Without `question` the agent
//! describes the input itself: record count, columns, skipped rows, and the summary
//! field (default `summary`) when the input has one.
//!
//! The answer must match `{"approved": boolean, "comment"?: string}` (no other fields);
//! the host validates it against that schema before `ask` returns.
//!
//! Output when approved: `{"approved": true, "comment": string or null, "input": <the
//! input>}`, or with `pass_through: true` the input itself, unchanged, so the next step
//! reads it as if the approver were not there. Rejected: a `permanent` error
//! `"rejected by reviewer: <comment>"`. If `ask` itself fails (not granted, as under
//! `corral call`), that error is returned unchanged.

mod approve;

use corral_sdk::{Agent, Context, Info, Result};
use serde_json::Value;

use crate::approve::{Answer, Config};

struct Approver;

impl Agent for Approver {
    type Input = Value;
    type Output = Value;

    fn info() -> Info {
        Info::new(
            "approver",
            env!("CARGO_PKG_VERSION"),
            "Asks a person to approve the step's input and passes it on only if approved; \
             a rejection fails the step with the reviewer's comment.",
        )
    }

    fn run(ctx: Context, input: Value) -> Result<Value> {
        let config: Config = ctx.config()?;
        let question = approve::question(&input, &config);
        corral_sdk::progress(0, "waiting for a person");
        corral_sdk::info(&format!("approver ({}): asking: {question}", ctx.step));
        let answer: Answer = corral_sdk::ask(&question, Some(&approve::answer_schema()))?;
        corral_sdk::info(&format!(
            "approver: {} by reviewer{}",
            if answer.approved {
                "approved"
            } else {
                "rejected"
            },
            answer
                .comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ));
        corral_sdk::progress(100, "answered");
        approve::decide(input, answer, &config)
    }
}

corral_sdk::export_agent!(Approver);

#[cfg(test)]
mod tests {
    use super::approve::*;
    use corral_sdk::Error;
    use serde_json::{Value, json};

    fn config(v: Value) -> Config {
        serde_json::from_value(v).unwrap()
    }

    fn answer(v: Value) -> Answer {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn describes_csv_extract_output() {
        let input = json!({
            "columns": ["order_id", "customer", "email"],
            "records": [{"order_id": "1"}, {"order_id": "2"}],
            "row_count": 2, "skipped": [{"line": 4, "reason": "x"}], "skipped_count": 1
        });
        assert_eq!(
            question(&input, &Config::default()),
            "Approve 2 records for the next step? Columns: order_id, customer, email. \
             1 malformed row was skipped."
        );
    }

    #[test]
    fn quotes_the_summary_of_a_validate_report() {
        let input = json!({"ok": false, "row_count": 39, "summary": "39 rows; 2 violations"});
        assert_eq!(
            question(&input, &Config::default()),
            "Approve this input for the next step? Summary: 39 rows; 2 violations"
        );
        let custom = config(json!({"summary_field": "verdict"}));
        let q = question(&json!({"verdict": "fine", "summary": "x"}), &custom);
        assert!(q.ends_with("Summary: fine"), "{q}");
    }

    #[test]
    fn configured_question_with_placeholders() {
        let c = config(json!({"question": "Publish {count} records? Report: {summary}"}));
        let q = question(&json!({"records": [1, 2, 3], "summary": "all good"}), &c);
        assert_eq!(q, "Publish 3 records? Report: all good");
        let q = question(&json!({"x": 1}), &c);
        assert_eq!(q, "Publish ? records? Report: (no summary)");
    }

    #[test]
    fn other_inputs_get_a_preview_and_long_text_is_clipped() {
        let q = question(&json!({"x": "y".repeat(1000)}), &Config::default());
        assert!(q.starts_with("Approve this input for the next step? Input: {\"x\":\"yyy"));
        assert!(q.ends_with("..."));
        assert!(q.chars().count() < 400);
        let q = question(&json!(["a"]), &Config::default());
        assert_eq!(q, "Approve 1 record for the next step?");
        let s = summary(&json!({"summary": "é".repeat(600)}), &Config::default()).unwrap();
        assert_eq!(s.chars().count(), MAX_SUMMARY_CHARS + 3);
    }

    #[test]
    fn the_answer_schema_matches_what_answer_accepts() {
        let schema = answer_schema();
        assert_eq!(schema["required"], json!(["approved"]));
        assert_eq!(schema["additionalProperties"], json!(false));
        assert!(serde_json::from_value::<Answer>(json!({"approved": true})).is_ok());
        assert!(serde_json::from_value::<Answer>(json!({"approved": true, "x": 1})).is_err());
    }

    #[test]
    fn approved_wraps_or_passes_through() {
        let input = json!({"records": [{"a": 1}]});
        let out = decide(
            input.clone(),
            answer(json!({"approved": true, "comment": " ok "})),
            &Config::default(),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"approved": true, "comment": "ok", "input": input})
        );
        let out = decide(
            input.clone(),
            answer(json!({"approved": true})),
            &Config::default(),
        )
        .unwrap();
        assert_eq!(out["comment"], Value::Null);
        let out = decide(
            input.clone(),
            answer(json!({"approved": true})),
            &config(json!({"pass_through": true})),
        )
        .unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn rejected_is_a_permanent_error_with_the_comment() {
        let e = decide(
            json!({}),
            answer(json!({"approved": false, "comment": "row 12 looks wrong"})),
            &Config::default(),
        )
        .unwrap_err();
        assert_eq!(
            e,
            Error::permanent("rejected by reviewer: row 12 looks wrong")
        );
        let e = decide(
            json!({}),
            answer(json!({"approved": false})),
            &Config::default(),
        )
        .unwrap_err();
        assert_eq!(e, Error::permanent("rejected by reviewer: (no comment)"));
    }

    #[test]
    fn unknown_config_is_refused() {
        assert!(serde_json::from_value::<Config>(json!({"questoin": "x"})).is_err());
    }
}
