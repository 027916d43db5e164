//! The tester's pure logic: the normalisation DSL's interpreter and the check of a
//! program against test cases. No host calls here, so it runs natively in unit tests
//! (and `plugins/tester/tests/engineering_loop.rs` includes this file by path).
//!
//! # The DSL
//! A program is a JSON list of operations applied to a string in order. An operation
//! is either a name or a one-key object holding its argument:
//!
//! | op | effect |
//! |---|---|
//! | `"trim"` | removes leading and trailing whitespace |
//! | `"lowercase"`, `"uppercase"` | changes letter case |
//! | `"ascii_fold"` | writes accented Latin letters as plain ASCII (`é` -> `e`, `ß` -> `ss`) |
//! | `"collapse_whitespace"` | turns each run of whitespace into one space |
//! | `{"replace": [from, to]}` | replaces every occurrence of `from` (not empty) with `to` |
//! | `{"remove": "chars"}` | removes every character listed |
//! | `"strip_non_alnum_dash"` | keeps only ASCII letters, digits and `-` |
//! | `"collapse_dashes"` | turns each run of `-` into one `-` |
//! | `"trim_dashes"` | removes leading and trailing `-` |
//! | `{"truncate": n}` | keeps the first `n` characters |

use corral_sdk::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The names of all operations, for error messages.
pub const KNOWN_OPS: &[&str] = &[
    "trim",
    "lowercase",
    "uppercase",
    "ascii_fold",
    "collapse_whitespace",
    "replace",
    "remove",
    "strip_non_alnum_dash",
    "collapse_dashes",
    "trim_dashes",
    "truncate",
];

/// The longest string (in bytes) a program may produce at any point; a program that
/// grows a string past it (e.g. a `replace` that keeps doubling it) fails.
pub const MAX_STRING_BYTES: usize = 1 << 20;

/// How many failing cases a failure report lists by default (all are counted).
pub const DEFAULT_MAX_FAILURES_LISTED: usize = 50;

/// One operation of a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Removes leading and trailing whitespace.
    Trim,
    /// Lowercases.
    Lowercase,
    /// Uppercases.
    Uppercase,
    /// Accented Latin letters to plain ASCII.
    AsciiFold,
    /// Runs of whitespace to one space.
    CollapseWhitespace,
    /// Replaces every occurrence of the first string with the second.
    Replace(String, String),
    /// Removes the listed characters.
    Remove(Vec<char>),
    /// Keeps only ASCII alphanumerics and `-`.
    StripNonAlnumDash,
    /// Runs of `-` to one `-`.
    CollapseDashes,
    /// Removes leading and trailing `-`.
    TrimDashes,
    /// Keeps the first n characters.
    Truncate(usize),
}

/// Why a program could not be parsed: which operation, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramError {
    /// The index of the bad operation in the program.
    pub index: usize,
    /// What is wrong.
    pub message: String,
}

/// The name of an operation: the string itself, or the single key of an object.
pub fn op_name(op: &Value) -> Option<&str> {
    match op {
        Value::String(s) => Some(s),
        Value::Object(m) if m.len() == 1 => m.keys().next().map(String::as_str),
        _ => None,
    }
}

fn parse_op(op: &Value) -> std::result::Result<Op, String> {
    let Some(name) = op_name(op) else {
        return Err(format!(
            "an operation is a name or a one-key object, not {op}"
        ));
    };
    let arg = op.get(name);
    let unit = |o: Op| match arg {
        None => Ok(o),
        Some(_) => Err(format!("{name:?} takes no argument: write \"{name}\"")),
    };
    match name {
        "trim" => unit(Op::Trim),
        "lowercase" => unit(Op::Lowercase),
        "uppercase" => unit(Op::Uppercase),
        "ascii_fold" => unit(Op::AsciiFold),
        "collapse_whitespace" => unit(Op::CollapseWhitespace),
        "strip_non_alnum_dash" => unit(Op::StripNonAlnumDash),
        "collapse_dashes" => unit(Op::CollapseDashes),
        "trim_dashes" => unit(Op::TrimDashes),
        "replace" => match arg.and_then(Value::as_array).map(Vec::as_slice) {
            Some([Value::String(from), Value::String(to)]) if !from.is_empty() => {
                Ok(Op::Replace(from.clone(), to.clone()))
            }
            _ => Err("\"replace\" takes [from, to]: two strings, `from` not empty".into()),
        },
        "remove" => match arg.and_then(Value::as_str) {
            Some(chars) if !chars.is_empty() => Ok(Op::Remove(chars.chars().collect())),
            _ => Err("\"remove\" takes a non-empty string of characters".into()),
        },
        "truncate" => match arg.and_then(Value::as_u64).map(usize::try_from) {
            Some(Ok(n)) => Ok(Op::Truncate(n)),
            _ => Err("\"truncate\" takes a non-negative integer".into()),
        },
        other => Err(format!(
            "unknown op {other:?} (known ops: {})",
            KNOWN_OPS.join(", ")
        )),
    }
}

/// Parses a program, naming the first bad operation.
pub fn parse_program(program: &[Value]) -> std::result::Result<Vec<Op>, ProgramError> {
    program
        .iter()
        .enumerate()
        .map(|(index, op)| parse_op(op).map_err(|message| ProgramError { index, message }))
        .collect()
}

/// The plain-ASCII spelling of an accented Latin letter, if it has one.
pub fn fold_char(c: char) -> Option<&'static str> {
    Some(match c {
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'Ā' | 'Ă' | 'Ą' => "A",
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'Æ' => "AE",
        'æ' => "ae",
        'Ç' | 'Ć' | 'Č' => "C",
        'ç' | 'ć' | 'č' => "c",
        'Ď' | 'Đ' => "D",
        'ď' | 'đ' => "d",
        'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ė' | 'Ę' | 'Ě' => "E",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
        'Ğ' => "G",
        'ğ' => "g",
        'Ì' | 'Í' | 'Î' | 'Ï' | 'Ī' | 'İ' => "I",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'ı' => "i",
        'Ł' => "L",
        'ł' => "l",
        'Ñ' | 'Ń' | 'Ň' => "N",
        'ñ' | 'ń' | 'ň' => "n",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'Ō' | 'Ő' => "O",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'Œ' => "OE",
        'œ' => "oe",
        'Ř' => "R",
        'ř' => "r",
        'Ś' | 'Š' | 'Ş' => "S",
        'ś' | 'š' | 'ş' => "s",
        'ß' => "ss",
        'Ť' => "T",
        'ť' => "t",
        'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ū' | 'Ů' | 'Ű' => "U",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' => "u",
        'Ý' | 'Ÿ' => "Y",
        'ý' | 'ÿ' => "y",
        'Ź' | 'Ż' | 'Ž' => "Z",
        'ź' | 'ż' | 'ž' => "z",
        _ => return None,
    })
}

fn collapse_runs(s: &str, is_run_char: impl Fn(char) -> bool, replacement: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars() {
        if is_run_char(c) {
            if !in_run {
                out.push(replacement);
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// Applies one operation.
pub fn apply_op(op: &Op, s: &str) -> String {
    match op {
        Op::Trim => s.trim().to_string(),
        Op::Lowercase => s.to_lowercase(),
        Op::Uppercase => s.to_uppercase(),
        Op::AsciiFold => s
            .chars()
            .fold(String::with_capacity(s.len()), |mut out, c| {
                match fold_char(c) {
                    Some(f) => out.push_str(f),
                    None => out.push(c),
                }
                out
            }),
        Op::CollapseWhitespace => collapse_runs(s, char::is_whitespace, ' '),
        Op::Replace(from, to) => s.replace(from.as_str(), to),
        Op::Remove(chars) => s.chars().filter(|c| !chars.contains(c)).collect(),
        Op::StripNonAlnumDash => s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect(),
        Op::CollapseDashes => collapse_runs(s, |c| c == '-', '-'),
        Op::TrimDashes => s.trim_matches('-').to_string(),
        Op::Truncate(n) => s.chars().take(*n).collect(),
    }
}

/// Runs a parsed program on one string. Fails only if the string grows past
/// [`MAX_STRING_BYTES`].
pub fn run_program(ops: &[Op], input: &str) -> std::result::Result<String, String> {
    let mut s = input.to_string();
    for (index, op) in ops.iter().enumerate() {
        s = apply_op(op, &s);
        if s.len() > MAX_STRING_BYTES {
            return Err(format!(
                "program[{index}] grew the string past {MAX_STRING_BYTES} bytes"
            ));
        }
    }
    Ok(s)
}

/// One test case: what goes in and what must come out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// The text the program is run on.
    pub input: String,
    /// The exact output required.
    pub expected: String,
}

/// The tester's input: the developer's output (other fields are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct TestInput {
    /// The program under test.
    pub program: Vec<Value>,
    /// The cases it must pass.
    pub test_cases: Vec<Case>,
    /// The developer's revision number, reported back.
    #[serde(default)]
    pub revision: Option<u32>,
}

/// What the program made of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The case's input.
    pub input: String,
    /// The program's output.
    pub output: String,
}

/// The tester's output when every case passes.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    /// How many cases passed (all of them).
    pub passed: usize,
    /// Always 0: a failing case makes the step fail.
    pub failed: usize,
    /// The program that passed.
    pub program: Vec<Value>,
    /// The developer's revision that passed, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// One line for people.
    pub report: String,
    /// The program's output for each case.
    pub outputs: Vec<Outcome>,
}

/// Runs `input.program` on every test case. All pass: the report. Any fail: a
/// `permanent` error "k of n cases failed" whose detail lists the failing cases
/// (`index`, `input`, `expected`, `actual`; at most `max_listed` of them), the counts
/// and the program. A program that does not parse is a `permanent` error naming the
/// operation, with `op_index`, `op` and `program` in its detail.
pub fn check(input: TestInput, max_listed: usize) -> Result<TestReport> {
    if input.test_cases.is_empty() {
        return Err(Error::invalid_input("test_cases: no test cases to run"));
    }
    let ops = parse_program(&input.program).map_err(|e| {
        Error::permanent(format!("program[{}]: {}", e.index, e.message)).with_detail(json!({
            "op_index": e.index,
            "op": input.program.get(e.index),
            "program": input.program,
            "revision": input.revision,
        }))
    })?;

    let total = input.test_cases.len();
    let mut failures = Vec::new();
    let mut failed = 0usize;
    let mut outputs = Vec::with_capacity(total);
    for (index, case) in input.test_cases.iter().enumerate() {
        let actual = run_program(&ops, &case.input).map_err(|e| {
            Error::permanent(format!("test case {index}: {e}")).with_detail(json!({
                "program": input.program,
                "revision": input.revision,
            }))
        })?;
        if actual != case.expected {
            failed += 1;
            if failures.len() < max_listed {
                failures.push(json!({
                    "index": index,
                    "input": case.input,
                    "expected": case.expected,
                    "actual": actual,
                }));
            }
        }
        outputs.push(Outcome {
            input: case.input.clone(),
            output: actual,
        });
    }

    let passed = total - failed;
    if failed > 0 {
        return Err(
            Error::permanent(format!("{failed} of {total} cases failed")).with_detail(json!({
                "failures": failures,
                "failed": failed,
                "passed": passed,
                "total": total,
                "program": input.program,
                "revision": input.revision,
            })),
        );
    }
    let revision_note = input
        .revision
        .map(|r| format!(", revision {r}"))
        .unwrap_or_default();
    Ok(TestReport {
        passed,
        failed: 0,
        report: format!(
            "all {total} cases pass (program of {} ops{revision_note})",
            ops.len()
        ),
        program: input.program,
        revision: input.revision,
        outputs,
    })
}
