//! The planner's pure logic: derive requirements from input/expected examples. No host
//! calls here, so it runs natively in unit tests (and
//! `plugins/tester/tests/engineering_loop.rs` includes this file by path).

use std::collections::BTreeMap;

use corral_sdk::{Error, Result};
use serde::{Deserialize, Serialize};

/// One example: an input and the exact output wanted for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The raw text.
    pub input: String,
    /// The normalised text wanted.
    pub expected: String,
}

/// The planner's input.
#[derive(Debug, Clone, Deserialize)]
pub struct PlanInput {
    /// What is to be built, in words.
    #[serde(default)]
    pub task: String,
    /// Examples of the wanted behaviour.
    pub examples: Vec<Example>,
}

/// The requirements in machine-readable form (what the developer drafts from).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraints {
    /// Leading and trailing whitespace is removed.
    pub trim: bool,
    /// The output is lowercase.
    pub lowercase: bool,
    /// The output is plain ASCII: accented letters lose their accents.
    pub ascii_only: bool,
    /// What replaces spaces between words, if anything.
    pub separator: Option<String>,
    /// Characters of the inputs that never appear in an output (in order of first use).
    pub removed_chars: String,
    /// The separator never appears twice in a row.
    pub no_repeated_separator: bool,
    /// The output never starts or ends with the separator.
    pub no_edge_separator: bool,
    /// The longest output allowed, when long inputs are cut.
    pub max_length: Option<usize>,
}

/// The planner's output: the developer's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanOutput {
    /// The task, passed through.
    pub task: String,
    /// The requirements derived from the examples, for people.
    pub requirements: Vec<String>,
    /// The same requirements, for programs.
    pub constraints: Constraints,
    /// The examples, which the tester runs as test cases.
    pub test_cases: Vec<Example>,
    /// Who does what, in order.
    pub plan: Vec<String>,
}

/// The most examples accepted (they are test cases; a few dozen is plenty).
pub const MAX_EXAMPLES: usize = 1000;

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// The longest run of consecutive non-word characters in the trimmed text.
fn longest_symbol_run(s: &str) -> usize {
    let mut best = 0;
    let mut run = 0;
    for c in s.trim().chars() {
        if is_word_char(c) {
            run = 0;
        } else {
            run += 1;
            best = best.max(run);
        }
    }
    best
}

fn word_char_count(s: &str) -> usize {
    s.chars().filter(|c| is_word_char(*c)).count()
}

/// Pushes `c` to `list` unless it is there already.
fn push_unique(list: &mut Vec<char>, c: char) {
    if !list.contains(&c) {
        list.push(c);
    }
}

/// Derives requirements (text and constraints) from the examples.
pub fn analyse(examples: &[Example]) -> (Vec<String>, Constraints) {
    let mut reqs = Vec::new();
    let mut c = Constraints::default();
    let first_input = |pred: &dyn Fn(&Example) -> bool| {
        examples
            .iter()
            .find(|e| pred(e))
            .map(|e| quote(&e.input))
            .unwrap_or_default()
    };

    // Trimming: some input has surrounding whitespace, no output does.
    let padded = |s: &str| s.trim() != s;
    if examples.iter().any(|e| padded(&e.input)) && !examples.iter().any(|e| padded(&e.expected)) {
        c.trim = true;
        reqs.push(format!(
            "leading and trailing spaces are removed (e.g. {})",
            first_input(&|e| padded(&e.input))
        ));
    }

    // Case: every output is lowercase although inputs are not.
    let has_upper = |s: &str| s.chars().any(char::is_uppercase);
    if examples.iter().any(|e| has_upper(&e.input)) {
        if examples.iter().any(|e| has_upper(&e.expected)) {
            reqs.push("letter case is kept as written".to_string());
        } else {
            c.lowercase = true;
            reqs.push("output is lowercase".to_string());
        }
    }

    // Accents: inputs have non-ASCII letters, outputs are all ASCII.
    let mut accented = Vec::new();
    for e in examples {
        for ch in e
            .input
            .chars()
            .filter(|ch| !ch.is_ascii() && ch.is_alphabetic())
        {
            push_unique(&mut accented, ch);
        }
    }
    if !accented.is_empty() && examples.iter().all(|e| e.expected.is_ascii()) {
        c.ascii_only = true;
        let list: Vec<String> = accented.iter().map(char::to_string).collect();
        reqs.push(format!(
            "output is plain ASCII: accented letters lose their accents ({} seen, e.g. {})",
            list.join(" "),
            first_input(&|e| e.input.chars().any(|ch| accented.contains(&ch)))
        ));
    }

    // Separator: inputs have spaces between words, outputs have none; the separator
    // is the symbol the outputs gained most over their inputs.
    let inner_space = |s: &str| s.trim().chars().any(char::is_whitespace);
    let sep = if examples.iter().any(|e| inner_space(&e.input))
        && !examples
            .iter()
            .any(|e| e.expected.chars().any(char::is_whitespace))
    {
        let mut gained: BTreeMap<char, usize> = BTreeMap::new();
        for e in examples {
            let mut symbols = Vec::new();
            for ch in e.expected.chars().filter(|ch| !is_word_char(*ch)) {
                push_unique(&mut symbols, ch);
            }
            for ch in symbols {
                let count = |s: &str| s.chars().filter(|x| *x == ch).count();
                *gained.entry(ch).or_default() +=
                    count(&e.expected).saturating_sub(count(&e.input));
            }
        }
        gained
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(ch, n)| (*n, std::cmp::Reverse(*ch)))
            .map(|(ch, _)| ch)
    } else {
        None
    };
    if let Some(s) = sep {
        c.separator = Some(s.to_string());
        reqs.push(format!("words are separated by '{s}' instead of spaces"));
    } else if examples.iter().any(|e| inner_space(&e.input)) {
        reqs.push("spaces between words are kept".to_string());
    }

    // Removed characters: symbols of the inputs that no output contains.
    let mut removed = Vec::new();
    for e in examples {
        for ch in e
            .input
            .chars()
            .filter(|ch| !is_word_char(*ch) && !ch.is_whitespace())
        {
            if !examples.iter().any(|x| x.expected.contains(ch)) {
                push_unique(&mut removed, ch);
            }
        }
    }
    if !removed.is_empty() {
        c.removed_chars = removed.iter().collect();
        let list: Vec<String> = removed.iter().map(char::to_string).collect();
        reqs.push(format!(
            "punctuation and symbols are removed: {}",
            list.join(" ")
        ));
    }

    if let Some(s) = sep {
        // No repeated separator, where an input has several symbols or spaces in a row.
        let doubled = format!("{s}{s}");
        if !examples.iter().any(|e| e.expected.contains(&doubled))
            && examples.iter().any(|e| longest_symbol_run(&e.input) >= 2)
        {
            c.no_repeated_separator = true;
            let widest = examples
                .iter()
                .map(|e| longest_symbol_run(&e.input))
                .max()
                .unwrap_or(0);
            reqs.push(format!(
                "'{s}' never repeats, even where the input has several symbols or spaces in \
                 a row (e.g. {})",
                first_input(&|e| longest_symbol_run(&e.input) == widest)
            ));
        }
        // No separator at either end.
        if !examples
            .iter()
            .any(|e| e.expected.starts_with(s) || e.expected.ends_with(s))
        {
            c.no_edge_separator = true;
            reqs.push(format!("output never starts or ends with '{s}'"));
        }
    }

    // Length: an output with fewer letters and digits than its input was cut; the
    // limit is the longest output.
    let cut: Vec<&Example> = examples
        .iter()
        .filter(|e| word_char_count(&e.expected) < word_char_count(&e.input))
        .collect();
    let longest = examples
        .iter()
        .map(|e| e.expected.chars().count())
        .max()
        .unwrap_or(0);
    if !cut.is_empty() && longest > 0 {
        c.max_length = Some(longest);
        reqs.push(format!(
            "at most {longest} characters: longer inputs are cut ({} of the examples, e.g. {})",
            cut.len(),
            cut.first().map(|e| quote(&e.input)).unwrap_or_default()
        ));
    }

    reqs.push(format!(
        "each of the {} examples gives exactly its expected output",
        examples.len()
    ));
    (reqs, c)
}

/// The whole planner: validates the examples, derives requirements and writes the plan.
pub fn plan(input: PlanInput) -> Result<PlanOutput> {
    if input.examples.is_empty() {
        return Err(Error::invalid_input(
            "examples: at least one {\"input\", \"expected\"} example is needed",
        ));
    }
    if input.examples.len() > MAX_EXAMPLES {
        return Err(Error::invalid_input(format!(
            "examples: {} given, at most {MAX_EXAMPLES} allowed",
            input.examples.len()
        )));
    }
    let (requirements, constraints) = analyse(&input.examples);
    let n = input.examples.len();

    let mut core = Vec::new();
    if constraints.trim {
        core.push("trimming".to_string());
    }
    if constraints.lowercase {
        core.push("lowercase".to_string());
    }
    if let Some(s) = &constraints.separator {
        core.push(format!("' ' -> '{s}'"));
    }
    let core = if core.is_empty() {
        String::new()
    } else {
        format!(" ({})", core.join(", "))
    };
    let task = if input.task.trim().is_empty() {
        "normalise text as the examples show".to_string()
    } else {
        input.task.trim().to_string()
    };
    let plan = vec![
        format!(
            "developer: write a first program in the normalisation DSL for the core rules{core}"
        ),
        format!(
            "tester: run the program on all {n} examples and report every mismatch (input, expected, actual)"
        ),
        "developer: extend the program from the reported mismatches (the tester sends them back)"
            .to_string(),
        format!("done when all {n} examples pass; the requirements are the acceptance criteria"),
    ];
    Ok(PlanOutput {
        task,
        requirements,
        constraints,
        test_cases: input.examples,
        plan,
    })
}
