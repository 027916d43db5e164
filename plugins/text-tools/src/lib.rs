//! `text-tools`: a tool plugin with small text utilities for agents.
//!
//! - `word_count` `{"text"}` -> `{"words", "characters", "lines", "sentences"}`
//! - `extract_keywords` `{"text", "top"?: 1..=50 (default 5)}` ->
//!   `{"keywords": [{"word", "count"}]}` (English stopwords ignored)
//! - `slugify` `{"text"}` -> `{"slug"}`

use std::collections::HashMap;

use corral_sdk::{Error, Result, ToolSpec, Tools};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Default number of keywords.
const DEFAULT_TOP: u32 = 5;
/// Largest `top` accepted.
const MAX_TOP: u32 = 50;

/// Common English words that say nothing about a text's subject.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "aren't",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "can't",
    "cannot",
    "could",
    "couldn't",
    "did",
    "didn't",
    "do",
    "does",
    "doesn't",
    "doing",
    "don't",
    "down",
    "during",
    "each",
    "even",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "got",
    "had",
    "hadn't",
    "has",
    "hasn't",
    "have",
    "haven't",
    "having",
    "he",
    "he'd",
    "he'll",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "however",
    "i",
    "i'd",
    "i'll",
    "i'm",
    "i've",
    "if",
    "in",
    "into",
    "is",
    "isn't",
    "it",
    "it's",
    "its",
    "itself",
    "just",
    "let's",
    "like",
    "may",
    "me",
    "might",
    "more",
    "most",
    "much",
    "must",
    "mustn't",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "ought",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "shall",
    "shan't",
    "she",
    "she'd",
    "she'll",
    "should",
    "shouldn't",
    "so",
    "some",
    "such",
    "than",
    "that",
    "that's",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "there's",
    "these",
    "they",
    "they'd",
    "they'll",
    "they're",
    "they've",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "upon",
    "us",
    "very",
    "was",
    "wasn't",
    "we",
    "we'd",
    "we'll",
    "we're",
    "we've",
    "were",
    "weren't",
    "what",
    "what's",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "within",
    "without",
    "won't",
    "would",
    "wouldn't",
    "yet",
    "you",
    "you'd",
    "you'll",
    "you're",
    "you've",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// `word_count`'s result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Whitespace-separated tokens that contain a letter or digit.
    pub words: usize,
    /// Unicode scalar values.
    pub characters: usize,
    /// Lines (a final line break does not start a new line).
    pub lines: usize,
    /// Runs of text ended by `.`, `!` or `?` (or by the end of the text).
    pub sentences: usize,
}

/// Counts words, characters, lines and sentences.
pub fn word_count(text: &str) -> Counts {
    let words = text
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count();
    let mut sentences = 0;
    let mut in_sentence = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() {
            in_sentence = true;
        } else if matches!(c, '.' | '!' | '?' | '…') && in_sentence {
            // `3.14` and `e.g` do not end a sentence: the terminator must be followed
            // by something that is not a letter or digit.
            if chars.peek().is_none_or(|n| !n.is_alphanumeric()) {
                sentences += 1;
                in_sentence = false;
            }
        }
    }
    if in_sentence {
        sentences += 1;
    }
    Counts {
        words,
        characters: text.chars().count(),
        lines: text.lines().count(),
        sentences,
    }
}

/// One keyword and how often it occurs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Keyword {
    /// The word, lower case.
    pub word: String,
    /// Occurrences.
    pub count: usize,
}

/// Lower-case words of `text`, apostrophes inside words kept (curly ones straightened).
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '\u{2019}'))
        .map(|w| w.replace('\u{2019}', "'").trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
}

/// The `top` most frequent words that are not stopwords, numbers or single letters;
/// ties are broken alphabetically. A possessive `'s` is dropped (`Corral's` -> `corral`).
pub fn extract_keywords(text: &str, top: usize) -> Vec<Keyword> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for word in words(text) {
        if STOPWORDS.contains(&word.as_str()) {
            continue;
        }
        let word = word.strip_suffix("'s").map(str::to_string).unwrap_or(word);
        if word.chars().count() < 2
            || word.chars().all(|c| c.is_numeric() || c == '\'')
            || STOPWORDS.contains(&word.as_str())
        {
            continue;
        }
        *counts.entry(word).or_default() += 1;
    }
    let mut list: Vec<Keyword> = counts
        .into_iter()
        .map(|(word, count)| Keyword { word, count })
        .collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)));
    list.truncate(top);
    list
}

/// ASCII spelling of common accented Latin letters (given in lower case).
fn transliterate(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'č' | 'ĉ' | 'ċ' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
        'ğ' | 'ģ' => "g",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => "i",
        'ķ' => "k",
        'ł' | 'ľ' | 'ļ' => "l",
        'ñ' | 'ń' | 'ň' | 'ņ' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'œ' => "oe",
        'ř' => "r",
        'ß' => "ss",
        'ś' | 'š' | 'ş' | 'ș' => "s",
        'ť' | 'ţ' | 'ț' => "t",
        'þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => "u",
        'ý' | 'ÿ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        _ => return None,
    })
}

/// Appends `s` to `slug`, after a `-` if one is pending.
fn push(s: &str, slug: &mut String, pending: &mut bool) {
    if *pending && !slug.is_empty() {
        slug.push('-');
    }
    *pending = false;
    slug.push_str(s);
}

/// A URL-friendly slug: lower-case ASCII letters and digits separated by single `-`.
/// Accented Latin letters are transliterated, `&` becomes `and`, apostrophes vanish
/// and everything else separates words. Empty when nothing usable is left.
pub fn slugify(text: &str) -> String {
    let mut slug = String::with_capacity(text.len());
    let mut pending_dash = false;
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            push(c.encode_utf8(&mut [0; 4]), &mut slug, &mut pending_dash);
        } else if let Some(t) = transliterate(c) {
            push(t, &mut slug, &mut pending_dash);
        } else if c == '&' {
            pending_dash = true;
            push("and", &mut slug, &mut pending_dash);
            pending_dash = true;
        } else if c == '\'' || c == '\u{2019}' {
            // "don't" -> "dont"
        } else {
            pending_dash = true;
        }
    }
    slug
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextArgs {
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeywordArgs {
    text: String,
    #[serde(default)]
    top: Option<u32>,
}

fn text_schema(description: &str) -> Value {
    json!({
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": description}
        },
        "required": ["text"],
        "additionalProperties": false
    })
}

/// The tool specs, names and schemas.
pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec::new(
            "word_count",
            "Counts the words, characters, lines and sentences of a text. \
             Returns {words, characters, lines, sentences}.",
            text_schema("The text to count."),
        ),
        ToolSpec::new(
            "extract_keywords",
            "Finds the most frequent meaningful words of an English text, ignoring \
             stopwords and numbers. Returns {keywords: [{word, count}]}, most frequent first.",
            json!({
                "type": "object",
                "properties": {
                    "text": {"type": "string", "description": "The text to analyse."},
                    "top": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_TOP,
                        "default": DEFAULT_TOP,
                        "description": "How many keywords to return."
                    }
                },
                "required": ["text"],
                "additionalProperties": false
            }),
        ),
        ToolSpec::new(
            "slugify",
            "Turns a text into a URL-friendly slug such as `hello-world`. Returns {slug}.",
            text_schema("The text to turn into a slug."),
        ),
    ]
}

fn to_json<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::permanent(format!("result: {e}")))
}

/// Runs the tool `name` on JSON `arguments`.
pub fn call(name: &str, arguments: Value) -> Result<Value> {
    match name {
        "word_count" => {
            let args: TextArgs = corral_sdk::parse_arguments(arguments)?;
            to_json(&word_count(&args.text))
        }
        "extract_keywords" => {
            let args: KeywordArgs = corral_sdk::parse_arguments(arguments)?;
            let top = args.top.unwrap_or(DEFAULT_TOP);
            if !(1..=MAX_TOP).contains(&top) {
                return Err(Error::invalid_input(format!(
                    "arguments: top must be between 1 and {MAX_TOP}, got {top}"
                )));
            }
            let keywords = extract_keywords(&args.text, usize::try_from(top).unwrap_or(5));
            Ok(json!({ "keywords": keywords }))
        }
        "slugify" => {
            let args: TextArgs = corral_sdk::parse_arguments(arguments)?;
            Ok(json!({ "slug": slugify(&args.text) }))
        }
        other => {
            let known: Vec<String> = specs().into_iter().map(|s| s.name).collect();
            Err(Error::invalid_input(format!(
                "unknown tool `{other}` (this plugin has: {})",
                known.join(", ")
            )))
        }
    }
}

struct TextTools;

impl Tools for TextTools {
    fn tools() -> Vec<ToolSpec> {
        specs()
    }

    fn call(name: &str, arguments: Value) -> Result<Value> {
        call(name, arguments)
    }
}

corral_sdk::export_tools!(TextTools);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let c = word_count("Hello, world! This is Corral.\nIt costs 3.14 dollars, e.g. not much");
        assert_eq!(c.words, 12);
        assert_eq!(c.lines, 2);
        // "Hello, world!" / "This is Corral." / "It costs ... e.g." / "not much"
        assert_eq!(c.sentences, 4);
        assert_eq!(c.characters, 66);
    }

    #[test]
    fn counts_edge_cases() {
        assert_eq!(
            word_count(""),
            Counts {
                words: 0,
                characters: 0,
                lines: 0,
                sentences: 0
            }
        );
        let c = word_count("Wait... what?!  — ok\n\n");
        assert_eq!(c.words, 3);
        assert_eq!(c.sentences, 3);
        assert_eq!(c.lines, 2);
        assert_eq!(word_count("héllo").characters, 5);
    }

    #[test]
    fn keywords() {
        let text = "The pipeline runs plugins. Plugins are sandboxed; the pipeline's \
                    plugins can't escape. Sandboxed plugins are safe, and 42 is a number.";
        let k = extract_keywords(text, 3);
        assert_eq!(
            k,
            vec![
                Keyword {
                    word: "plugins".into(),
                    count: 4
                },
                Keyword {
                    word: "pipeline".into(),
                    count: 2
                },
                Keyword {
                    word: "sandboxed".into(),
                    count: 2
                },
            ]
        );
        let all = extract_keywords(text, 50);
        assert!(all.iter().all(|k| !STOPWORDS.contains(&k.word.as_str())));
        assert!(all.iter().all(|k| k.word != "42"));
        assert!(extract_keywords("the and of", 5).is_empty());
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("Hello, World!"), "hello-world");
        assert_eq!(
            slugify("  Crème Brûlée & Straße "),
            "creme-brulee-and-strasse"
        );
        assert_eq!(slugify("Don't   stop -- me now"), "dont-stop-me-now");
        assert_eq!(slugify("Q3 2024: results"), "q3-2024-results");
        assert_eq!(slugify("日本語"), "");
        assert_eq!(slugify("a&b"), "a-and-b");
        assert_eq!(slugify("&"), "and");
    }

    #[test]
    fn call_dispatches_and_rejects() {
        let r = call("word_count", json!({"text": "one two"})).unwrap();
        assert_eq!(
            r,
            json!({"words": 2, "characters": 7, "lines": 1, "sentences": 1})
        );
        let r = call("slugify", json!({"text": "A B"})).unwrap();
        assert_eq!(r, json!({"slug": "a-b"}));
        let r = call("extract_keywords", json!({"text": "rust rust wasm"})).unwrap();
        assert_eq!(
            r,
            json!({"keywords": [{"word": "rust", "count": 2}, {"word": "wasm", "count": 1}]})
        );
        let r = call(
            "extract_keywords",
            json!({"text": "rust rust wasm", "top": 1}),
        )
        .unwrap();
        assert_eq!(r["keywords"].as_array().unwrap().len(), 1);

        let err = call("shout", json!({})).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("`shout`")),
            "{err}"
        );
        assert!(matches!(
            call("extract_keywords", json!({"text": "x", "top": 0})),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            call("extract_keywords", json!({"text": "x", "top": 51})),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            call("slugify", json!({"text": "x", "extra": 1})),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            call("word_count", json!({})),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn specs_are_strict_object_schemas() {
        let specs = specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["word_count", "extract_keywords", "slugify"]);
        for s in &specs {
            let schema = &s.input_schema;
            assert_eq!(schema["type"], "object", "{}", s.name);
            assert_eq!(schema["additionalProperties"], false, "{}", s.name);
            assert_eq!(schema["required"], json!(["text"]), "{}", s.name);
            assert_eq!(schema["properties"]["text"]["type"], "string", "{}", s.name);
        }
        assert_eq!(specs[1].input_schema["properties"]["top"]["maximum"], 50);
    }
}
