//! The developer's pure logic: draft a normalisation program, and improve it from the
//! tester's failing cases. No host calls here, so it runs natively in unit tests (and
//! `plugins/tester/tests/engineering_loop.rs` includes this file by path).
//!
//! Improving works on differences, not on the requirements: each failing case's
//! `actual` is aligned with its `expected` (longest common subsequence, characters
//! matched as early as possible) and every stretch where they differ is explained by an
//! operation of the DSL, or reported as unexplained:
//!
//! | difference | inferred op |
//! |---|---|
//! | whitespace dropped at either end | `trim` |
//! | a non-ASCII letter became an ASCII letter (`é` -> `e`) | `ascii_fold` |
//! | an uppercase letter became lowercase | `lowercase` |
//! | whitespace became `-` | `{"replace": [" ", "-"]}` |
//! | a symbol dropped (`,` `(` `&` ...) | `strip_non_alnum_dash`, or `{"remove": ..}` when some expected output keeps a character that op would drop |
//! | a `-` dropped next to another `-` | `collapse_dashes` |
//! | a `-` dropped at either end | `trim_dashes` |
//! | a tail with letters or digits dropped | `{"truncate": n}`, n = the longest expected output; plus `trim_dashes` when a cut output is shorter than n (the cut landed on a `-`) |
//! | expected goes on where a `truncate` stopped | a larger `truncate` |
//!
//! New operations go where they belong in a normalisation pipeline (trim, fold, case,
//! separators, symbols, dashes, length, edges), after the ops already there.

use corral_sdk::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One test case, passed through to the tester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// The raw text.
    pub input: String,
    /// The output wanted.
    pub expected: String,
}

/// The planner's machine-readable requirements (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Constraints {
    /// Leading and trailing whitespace is removed.
    pub trim: bool,
    /// The output is lowercase.
    pub lowercase: bool,
    /// Accented letters lose their accents.
    pub ascii_only: bool,
    /// What replaces spaces between words.
    pub separator: Option<String>,
    /// Characters that never appear in an output.
    pub removed_chars: String,
    /// The separator never repeats.
    pub no_repeated_separator: bool,
    /// The output never starts or ends with the separator.
    pub no_edge_separator: bool,
    /// The longest output allowed.
    pub max_length: Option<usize>,
}

/// The developer's input: the planner's output.
#[derive(Debug, Clone, Deserialize)]
pub struct DevInput {
    /// The task.
    #[serde(default)]
    pub task: String,
    /// The requirements, for people.
    #[serde(default)]
    pub requirements: Vec<String>,
    /// The requirements, for programs.
    #[serde(default)]
    pub constraints: Constraints,
    /// The cases the program must pass.
    pub test_cases: Vec<Case>,
}

/// The developer's output: the tester's input.
#[derive(Debug, Clone, Serialize)]
pub struct DevOutput {
    /// The task, passed through.
    pub task: String,
    /// The program, in the normalisation DSL.
    pub program: Vec<Value>,
    /// The test cases, passed through.
    pub test_cases: Vec<Case>,
    /// 1 for the first draft, then one more per round of feedback.
    pub revision: u32,
    /// What this revision is and what changed, for people.
    pub notes: String,
    /// Each change with its reason (empty for a first draft).
    pub changes: Vec<String>,
}

/// How the first draft is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Draft {
    /// Test-first: only the core rules (trim, case, separator); the tester's failing
    /// cases drive the rest.
    #[default]
    Minimal,
    /// Every constraint the planner derived.
    Requirements,
}

/// `ctx.feedback` as the runner builds it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Feedback {
    /// The step that failed.
    pub from_step: String,
    /// Its error code (`PLUGIN_ERROR`).
    pub error_code: String,
    /// Its error message.
    pub message: String,
    /// Its error detail (the tester's `failures`, `program`, ...), or null.
    pub detail: Value,
    /// 1 for the first send-back, 2, ...
    #[serde(rename = "loop")]
    pub loop_n: u32,
}

/// The part of the tester's error detail the developer reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Detail {
    failures: Vec<Failure>,
    program: Option<Vec<Value>>,
    op_index: Option<usize>,
}

/// One failing case as the tester reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Failure {
    /// The case's input.
    pub input: String,
    /// What was wanted.
    pub expected: String,
    /// What the program gave.
    pub actual: String,
}

/// The most unexplained differences reported.
const MAX_UNEXPLAINED: usize = 10;

/// Above this many `actual` x `expected` characters a failure is not aligned.
const MAX_ALIGN_CELLS: usize = 4_000_000;

/// The name of an operation: the string itself, or the single key of an object.
pub fn op_name(op: &Value) -> Option<&str> {
    match op {
        Value::String(s) => Some(s),
        Value::Object(m) if m.len() == 1 => m.keys().next().map(String::as_str),
        _ => None,
    }
}

/// Where an operation belongs in a normalisation pipeline (lower runs first).
fn rank(op: &Value) -> Option<u8> {
    Some(match op_name(op)? {
        "trim" => 0,
        "ascii_fold" => 10,
        "lowercase" | "uppercase" => 20,
        "collapse_whitespace" => 25,
        "replace" => 30,
        "remove" | "strip_non_alnum_dash" => 40,
        "collapse_dashes" => 50,
        "truncate" => 60,
        "trim_dashes" => 70,
        _ => return None,
    })
}

/// Inserts `op` before the first op that belongs after it (ops of unknown rank stay
/// where they are).
fn insert_op(program: &mut Vec<Value>, op: Value) {
    let r = rank(&op).unwrap_or(u8::MAX);
    let at = program
        .iter()
        .position(|o| rank(o).is_some_and(|x| x > r))
        .unwrap_or(program.len());
    program.insert(at, op);
}

fn has_op(program: &[Value], name: &str) -> bool {
    program.iter().any(|o| op_name(o) == Some(name))
}

fn compact(op: &Value) -> String {
    op.to_string()
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// The separator the program or constraints use (`-` unless told otherwise).
fn separator(program: &[Value], constraints: &Constraints) -> char {
    let from_program = program.iter().find_map(|o| {
        let args = o.get("replace")?.as_array()?;
        match args.as_slice() {
            [Value::String(from), Value::String(to)] if from.trim().is_empty() => to.chars().next(),
            _ => None,
        }
    });
    from_program
        .or_else(|| {
            constraints
                .separator
                .as_deref()
                .and_then(|s| s.chars().next())
        })
        .unwrap_or('-')
}

/// The first draft.
pub fn draft(constraints: &Constraints, mode: Draft) -> (Vec<Value>, Vec<String>) {
    let c = constraints;
    let dash = c.separator.as_deref() == Some("-");
    let mut program = Vec::new();
    let mut deferred = Vec::new();
    let mut optional = |wanted: bool, op: Value, what: &str, program: &mut Vec<Value>| {
        if !wanted {
            return;
        }
        if mode == Draft::Requirements {
            program.push(op);
        } else {
            deferred.push(what.to_string());
        }
    };
    if c.trim {
        program.push(json!("trim"));
    }
    optional(c.ascii_only, json!("ascii_fold"), "accents", &mut program);
    if c.lowercase {
        program.push(json!("lowercase"));
    }
    if let Some(sep) = &c.separator {
        program.push(json!({"replace": [" ", sep]}));
    }
    let strip = if dash {
        json!("strip_non_alnum_dash")
    } else {
        json!({"remove": c.removed_chars})
    };
    optional(
        !c.removed_chars.is_empty(),
        strip,
        &format!("removing {}", c.removed_chars),
        &mut program,
    );
    optional(
        c.no_repeated_separator && dash,
        json!("collapse_dashes"),
        "repeated '-'",
        &mut program,
    );
    if let Some(n) = c.max_length {
        optional(
            true,
            json!({"truncate": n}),
            &format!("the {n}-character limit"),
            &mut program,
        );
    }
    optional(
        c.no_edge_separator && dash,
        json!("trim_dashes"),
        "'-' at the ends",
        &mut program,
    );
    (program, deferred)
}

/// One step of an alignment of `actual` with `expected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Keep(char),
    Del(char),
    Ins(char),
}

/// Aligns `a` (actual) with `b` (expected) by their longest common subsequence,
/// matching characters as early as possible and preferring a substitution to a
/// deletion and a later insertion; `None` when too large to align.
fn align(a: &[char], b: &[char]) -> Option<Vec<Step>> {
    let (n, m) = (a.len(), b.len());
    let width = m.checked_add(1)?;
    let cells = n.checked_add(1)?.checked_mul(width)?;
    if cells > MAX_ALIGN_CELLS {
        return None;
    }
    // lcs[i * width + j] = LCS length of a[i..] and b[j..].
    let mut lcs = vec![0u32; cells];
    let at = |lcs: &[u32], i: usize, j: usize| lcs.get(i * width + j).copied().unwrap_or(0);
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let v = if a.get(i) == b.get(j) {
                at(&lcs, i + 1, j + 1) + 1
            } else {
                at(&lcs, i + 1, j).max(at(&lcs, i, j + 1))
            };
            if let Some(cell) = lcs.get_mut(i * width + j) {
                *cell = v;
            }
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut steps = Vec::with_capacity(n + m);
    loop {
        match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x == y => {
                steps.push(Step::Keep(x));
                i += 1;
                j += 1;
            }
            (Some(&x), Some(&y)) => {
                if at(&lcs, i + 1, j + 1) == at(&lcs, i, j) {
                    // Skipping both loses nothing: a substitution (é -> e), kept
                    // together so the gap shows what became what.
                    steps.push(Step::Del(x));
                    steps.push(Step::Ins(y));
                    i += 1;
                    j += 1;
                } else if at(&lcs, i + 1, j) >= at(&lcs, i, j + 1) {
                    steps.push(Step::Del(x));
                    i += 1;
                } else {
                    steps.push(Step::Ins(y));
                    j += 1;
                }
            }
            (Some(&x), None) => {
                steps.push(Step::Del(x));
                i += 1;
            }
            (None, Some(&y)) => {
                steps.push(Step::Ins(y));
                j += 1;
            }
            (None, None) => break,
        }
    }
    Some(steps)
}

/// A stretch where actual and expected differ, with the matched characters around it
/// (`None`: the gap is at that end of the string).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Gap {
    del: Vec<char>,
    ins: Vec<char>,
    prev: Option<char>,
    next: Option<char>,
}

fn gaps(steps: &[Step]) -> Vec<Gap> {
    let mut out = Vec::new();
    let mut current = Gap::default();
    let mut prev = None;
    for step in steps {
        match *step {
            Step::Keep(c) => {
                if !current.del.is_empty() || !current.ins.is_empty() {
                    current.prev = prev;
                    current.next = Some(c);
                    out.push(std::mem::take(&mut current));
                }
                prev = Some(c);
            }
            Step::Del(c) => current.del.push(c),
            Step::Ins(c) => current.ins.push(c),
        }
    }
    if !current.del.is_empty() || !current.ins.is_empty() {
        current.prev = prev;
        current.next = None;
        out.push(current);
    }
    out
}

/// What one difference says the program lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finding {
    Trim,
    Fold,
    Lower,
    Spaces,
    Strip(char),
    Collapse,
    TrimDashes,
    Cut,
    Grow,
    Unexplained(String),
}

fn text(chars: &[char]) -> String {
    chars.iter().collect()
}

/// Explains a dropped `-`: at an end, next to another `-`, or one of several.
fn dropped_dash(g: &Gap, sep: char) -> Finding {
    let at_edge = g.prev.is_none() || g.next.is_none();
    let dashes = g.del.iter().filter(|c| **c == sep).count();
    if at_edge {
        Finding::TrimDashes
    } else if g.prev == Some(sep) || g.next == Some(sep) || dashes >= 2 {
        Finding::Collapse
    } else {
        Finding::Unexplained(format!("'{sep}' is dropped between words"))
    }
}

fn explain_gap(g: &Gap, sep: char) -> Vec<Finding> {
    let at_edge = g.prev.is_none() || g.next.is_none();
    let mut out = Vec::new();
    if g.ins.is_empty() {
        // Pure deletion.
        if g.next.is_none() && g.del.iter().any(|c| c.is_alphanumeric()) {
            return vec![Finding::Cut];
        }
        let mut dropped_words = String::new();
        for &c in &g.del {
            out.push(if c.is_whitespace() {
                if at_edge {
                    Finding::Trim
                } else {
                    Finding::Unexplained("a space is dropped between words".into())
                }
            } else if c == sep {
                dropped_dash(g, sep)
            } else if !c.is_alphanumeric() {
                Finding::Strip(c)
            } else {
                dropped_words.push(c);
                continue;
            });
        }
        if !dropped_words.is_empty() {
            out.push(Finding::Unexplained(format!(
                "{} is dropped",
                quote(&dropped_words)
            )));
        }
        return out;
    }
    if g.del.is_empty() {
        // Pure insertion: only "expected goes on" at the end is understood.
        if g.next.is_none() && g.ins.iter().all(|c| c.is_alphanumeric() || *c == sep) {
            return vec![Finding::Grow];
        }
        return vec![Finding::Unexplained(format!(
            "{} is missing",
            quote(&text(&g.ins))
        ))];
    }

    // Substitution: separators, symbols, then letters and digits pair by pair.
    let mut ins_symbols: Vec<char> = g
        .ins
        .iter()
        .copied()
        .filter(|c| !c.is_alphanumeric())
        .collect();
    let spaces = g.del.iter().filter(|c| c.is_whitespace()).count();
    if spaces > 0 {
        if let Some(at) = ins_symbols.iter().position(|c| *c == sep) {
            ins_symbols.remove(at);
            out.push(Finding::Spaces);
        } else if at_edge {
            out.push(Finding::Trim);
        } else {
            out.push(Finding::Unexplained(
                "a space is dropped between words".into(),
            ));
        }
    }
    for &c in g
        .del
        .iter()
        .filter(|c| !c.is_alphanumeric() && !c.is_whitespace())
    {
        if let Some(at) = ins_symbols.iter().position(|x| *x == c) {
            ins_symbols.remove(at);
        } else if c == sep {
            out.push(dropped_dash(g, sep));
        } else {
            out.push(Finding::Strip(c));
        }
    }
    if !ins_symbols.is_empty() {
        out.push(Finding::Unexplained(format!(
            "{} appears in the expected output",
            quote(&text(&ins_symbols))
        )));
    }
    let del_words: Vec<char> = g
        .del
        .iter()
        .copied()
        .filter(|c| c.is_alphanumeric())
        .collect();
    let ins_words: Vec<char> = g
        .ins
        .iter()
        .copied()
        .filter(|c| c.is_alphanumeric())
        .collect();
    let unexplained = || {
        Finding::Unexplained(format!(
            "{} became {}",
            quote(&text(&del_words)),
            quote(&text(&ins_words))
        ))
    };
    if del_words.len() == ins_words.len() {
        for (d, i) in del_words.iter().zip(&ins_words) {
            if d == i {
                continue;
            }
            if !d.is_ascii() && d.is_alphabetic() && i.is_ascii_alphabetic() {
                out.push(Finding::Fold);
                if d.is_uppercase() && i.is_lowercase() {
                    out.push(Finding::Lower);
                }
            } else if d.is_uppercase() && d.to_lowercase().eq(std::iter::once(*i)) {
                out.push(Finding::Lower);
            } else {
                out.push(unexplained());
            }
        }
    } else if !del_words.is_empty()
        && del_words.iter().all(|c| !c.is_ascii() && c.is_alphabetic())
        && ins_words.iter().all(char::is_ascii_alphabetic)
        && !ins_words.is_empty()
    {
        // One accented letter written as two (ß -> ss, æ -> ae).
        out.push(Finding::Fold);
        if del_words.iter().any(|c| c.is_uppercase()) && !ins_words.iter().any(|c| c.is_uppercase())
        {
            out.push(Finding::Lower);
        }
    } else if !del_words.is_empty() || !ins_words.is_empty() {
        out.push(unexplained());
    }
    out
}

/// Failure indexes per kind of finding, in order of first sight.
#[derive(Debug, Default)]
struct Evidence {
    trim: Vec<usize>,
    fold: Vec<usize>,
    lower: Vec<usize>,
    spaces: Vec<usize>,
    strip: Vec<usize>,
    stripped: Vec<char>,
    collapse: Vec<usize>,
    trim_dashes: Vec<usize>,
    cut: Vec<usize>,
    grow: Vec<usize>,
    unexplained: Vec<String>,
}

fn note(list: &mut Vec<usize>, index: usize) {
    if !list.contains(&index) {
        list.push(index);
    }
}

fn gather(failures: &[Failure], sep: char) -> Evidence {
    let mut ev = Evidence::default();
    for (index, f) in failures.iter().enumerate() {
        let actual: Vec<char> = f.actual.chars().collect();
        let expected: Vec<char> = f.expected.chars().collect();
        let Some(steps) = align(&actual, &expected) else {
            ev.unexplained
                .push(format!("case {}: too long to compare", quote(&f.input)));
            continue;
        };
        for gap in gaps(&steps) {
            for finding in explain_gap(&gap, sep) {
                match finding {
                    Finding::Trim => note(&mut ev.trim, index),
                    Finding::Fold => note(&mut ev.fold, index),
                    Finding::Lower => note(&mut ev.lower, index),
                    Finding::Spaces => note(&mut ev.spaces, index),
                    Finding::Strip(c) => {
                        note(&mut ev.strip, index);
                        if !ev.stripped.contains(&c) {
                            ev.stripped.push(c);
                        }
                    }
                    Finding::Collapse => note(&mut ev.collapse, index),
                    Finding::TrimDashes => note(&mut ev.trim_dashes, index),
                    Finding::Cut => note(&mut ev.cut, index),
                    Finding::Grow => note(&mut ev.grow, index),
                    Finding::Unexplained(why) => ev.unexplained.push(format!(
                        "{} should be {}: {why}",
                        quote(&f.actual),
                        quote(&f.expected)
                    )),
                }
            }
        }
    }
    ev
}

/// `"actual" should be "expected"` for the first of `cases`, and how many there are.
fn example(failures: &[Failure], cases: &[usize]) -> String {
    let first = cases
        .first()
        .and_then(|i| failures.get(*i))
        .map(|f| format!("e.g. {} should be {}", quote(&f.actual), quote(&f.expected)))
        .unwrap_or_default();
    match cases.len() {
        1 => format!("1 case, {first}"),
        n => format!("{n} cases, {first}"),
    }
}

/// Adds the ops the failures call for to `program`; returns the changes made (each with
/// its reason) and the differences no op explains.
pub fn improve(
    program: &mut Vec<Value>,
    failures: &[Failure],
    test_cases: &[Case],
    constraints: &Constraints,
) -> (Vec<String>, Vec<String>) {
    let sep = separator(program, constraints);
    let ev = gather(failures, sep);
    let mut changes = Vec::new();
    let add = |program: &mut Vec<Value>, changes: &mut Vec<String>, op: Value, why: String| {
        if let Some(name) = op_name(&op)
            && has_op(program, name)
        {
            return;
        }
        changes.push(format!("added {}: {why}", compact(&op)));
        insert_op(program, op);
    };

    if !ev.trim.is_empty() {
        add(
            program,
            &mut changes,
            json!("trim"),
            format!(
                "spaces at the ends must go ({})",
                example(failures, &ev.trim)
            ),
        );
    }
    if !ev.fold.is_empty() {
        add(
            program,
            &mut changes,
            json!("ascii_fold"),
            format!(
                "accented letters must become plain ASCII ({})",
                example(failures, &ev.fold)
            ),
        );
    }
    if !ev.lower.is_empty() {
        add(
            program,
            &mut changes,
            json!("lowercase"),
            format!(
                "letters must be lowercase ({})",
                example(failures, &ev.lower)
            ),
        );
    }
    if !ev.spaces.is_empty() {
        add(
            program,
            &mut changes,
            json!({"replace": [" ", sep.to_string()]}),
            format!(
                "spaces must become '{sep}' ({})",
                example(failures, &ev.spaces)
            ),
        );
    }
    if !ev.stripped.is_empty() {
        let listed: String = ev.stripped.iter().collect();
        // The general op, unless some expected output keeps a character it would drop.
        let general_ok = sep == '-'
            && test_cases.iter().all(|c| {
                c.expected
                    .chars()
                    .all(|x| x.is_ascii_alphanumeric() || x == '-')
            });
        let why = format!(
            "the expected outputs drop {} ({})",
            ev.stripped
                .iter()
                .map(char::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            example(failures, &ev.strip)
        );
        if general_ok {
            add(
                program,
                &mut changes,
                json!("strip_non_alnum_dash"),
                format!("{why}; generalised to every symbol, as no expected output keeps one"),
            );
        } else if let Some(existing) = program
            .iter_mut()
            .find(|o| op_name(o) == Some("remove"))
            .and_then(|o| o.get_mut("remove"))
        {
            let mut chars = existing.as_str().unwrap_or_default().to_string();
            for c in &ev.stripped {
                if !chars.contains(*c) {
                    chars.push(*c);
                }
            }
            *existing = Value::String(chars.clone());
            changes.push(format!("{{\"remove\"}} now also removes {listed}: {why}"));
        } else {
            add(program, &mut changes, json!({"remove": listed}), why);
        }
    }
    let dash_ops = sep == '-';
    if !ev.collapse.is_empty() && dash_ops {
        add(
            program,
            &mut changes,
            json!("collapse_dashes"),
            format!(
                "runs of '-' must be one '-' ({})",
                example(failures, &ev.collapse)
            ),
        );
    }
    let longest = test_cases
        .iter()
        .map(|c| c.expected.chars().count())
        .chain(failures.iter().map(|f| f.expected.chars().count()))
        .max()
        .unwrap_or(0);
    if !ev.cut.is_empty() {
        add(
            program,
            &mut changes,
            json!({"truncate": longest}),
            format!(
                "expected outputs are cut short ({}); the longest expected output has {longest} characters",
                example(failures, &ev.cut)
            ),
        );
        let short: Vec<usize> = ev
            .cut
            .iter()
            .copied()
            .filter(|i| {
                failures
                    .get(*i)
                    .is_some_and(|f| f.expected.chars().count() < longest)
            })
            .collect();
        if !short.is_empty() && dash_ops {
            add(
                program,
                &mut changes,
                json!("trim_dashes"),
                format!(
                    "a cut output is shorter than {longest} characters: the cut landed on a '-', which the expected output drops ({})",
                    example(failures, &short)
                ),
            );
        }
    }
    if !ev.grow.is_empty() {
        if let Some(limit) = program
            .iter_mut()
            .find(|o| op_name(o) == Some("truncate"))
            .and_then(|o| o.get_mut("truncate"))
        {
            if limit.as_u64() != u64::try_from(longest).ok() {
                changes.push(format!(
                    "{{\"truncate\"}} raised from {limit} to {longest}: expected outputs go on past the cut ({})",
                    example(failures, &ev.grow)
                ));
                *limit = json!(longest);
            }
        } else {
            let mut unexplained = ev.unexplained;
            unexplained.push(format!(
                "expected outputs go on past the end of the actual ones ({})",
                example(failures, &ev.grow)
            ));
            return (changes, capped(unexplained));
        }
    }
    if !ev.trim_dashes.is_empty() && dash_ops {
        add(
            program,
            &mut changes,
            json!("trim_dashes"),
            format!(
                "outputs must not start or end with '-' ({})",
                example(failures, &ev.trim_dashes)
            ),
        );
    }
    (changes, capped(ev.unexplained))
}

/// The unexplained differences, without repeats and at most [`MAX_UNEXPLAINED`].
fn capped(unexplained: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut more = 0usize;
    for u in unexplained {
        if out.contains(&u) {
            continue;
        }
        if out.len() < MAX_UNEXPLAINED {
            out.push(u);
        } else {
            more += 1;
        }
    }
    if more > 0 {
        out.push(format!("and {more} more"));
    }
    out
}

/// The whole developer: a first draft without feedback; with feedback, the program the
/// tester rejected (from `feedback.detail.program`, else a new draft) improved from the
/// failing cases. Fails when the feedback gives nothing to improve on.
pub fn develop(input: DevInput, feedback: Option<&Value>, mode: Draft) -> Result<DevOutput> {
    let Some(feedback) = feedback else {
        let (program, deferred) = draft(&input.constraints, mode);
        let ops: Vec<String> = program.iter().map(compact).collect();
        let notes = match mode {
            Draft::Requirements => format!(
                "revision 1: drafted from all {} requirements: {}",
                input.requirements.len(),
                ops.join(", ")
            ),
            Draft::Minimal if deferred.is_empty() => {
                format!("revision 1 (test-first draft): {}", ops.join(", "))
            }
            Draft::Minimal => format!(
                "revision 1 (test-first draft): {}; not handled yet, for the tester's failing \
                 cases to drive: {}",
                ops.join(", "),
                deferred.join(", ")
            ),
        };
        return Ok(DevOutput {
            task: input.task,
            program,
            test_cases: input.test_cases,
            revision: 1,
            notes,
            changes: Vec::new(),
        });
    };

    let feedback: Feedback = serde_json::from_value(feedback.clone())
        .map_err(|e| Error::invalid_input(format!("feedback: {e}")))?;
    let detail: Detail = if feedback.detail.is_null() {
        Detail::default()
    } else {
        serde_json::from_value(feedback.detail.clone())
            .map_err(|e| Error::invalid_input(format!("feedback.detail: {e}")))?
    };
    let revision = feedback.loop_n.saturating_add(1).max(2);
    let mut program = detail
        .program
        .clone()
        .unwrap_or_else(|| draft(&input.constraints, mode).0);
    let mut changes = Vec::new();

    // The tester rejected an op: drop it.
    if let Some(index) = detail.op_index
        && index < program.len()
    {
        let op = program.remove(index);
        changes.push(format!(
            "removed {} at program[{index}]: {}",
            compact(&op),
            feedback.message
        ));
    }

    let (more, unexplained) = improve(
        &mut program,
        &detail.failures,
        &input.test_cases,
        &input.constraints,
    );
    changes.extend(more);

    if changes.is_empty() {
        let why = if detail.failures.is_empty() {
            "it lists no failing cases".to_string()
        } else if unexplained.is_empty() {
            "the program already has every op the failing cases call for".to_string()
        } else {
            format!("no op explains: {}", unexplained.join("; "))
        };
        return Err(Error::permanent(format!(
            "revision {revision}: nothing to change after the feedback from {} ({}): {why}",
            if feedback.from_step.is_empty() {
                "a later step"
            } else {
                &feedback.from_step
            },
            feedback.message
        ))
        .with_detail(json!({
            "program": program,
            "unexplained": unexplained,
        })));
    }

    // The notes name each change; `changes` holds the reasons.
    let summary: Vec<&str> = changes
        .iter()
        .map(|c| c.split_once(": ").map_or(c.as_str(), |(what, _)| what))
        .collect();
    let mut notes = format!(
        "revision {revision} from the feedback of {} (loop {}: {}): {}",
        if feedback.from_step.is_empty() {
            "a later step"
        } else {
            &feedback.from_step
        },
        feedback.loop_n,
        feedback.message,
        summary.join(", ")
    );
    if !unexplained.is_empty() {
        notes.push_str(&format!("; still unexplained: {}", unexplained.join("; ")));
    }
    Ok(DevOutput {
        task: input.task,
        program,
        test_cases: input.test_cases,
        revision,
        notes,
        changes,
    })
}
