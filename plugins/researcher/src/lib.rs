//! `researcher`: an agent that uses tools. It asks the `text` tools (granted by its
//! manifest, `corral.toml`) for a text's statistics and keywords and writes a brief.

use corral_sdk::{Agent, Context, Error, Info, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Input {
    text: String,
    #[serde(default)]
    topic: Option<String>,
}

#[derive(Serialize)]
struct Brief {
    topic: String,
    words: u64,
    sentences: u64,
    keywords: Vec<String>,
    brief: String,
}

struct Researcher;

impl Agent for Researcher {
    type Input = Input;
    type Output = Brief;

    fn info() -> Info {
        Info::new(
            "researcher",
            env!("CARGO_PKG_VERSION"),
            "Writes a brief about a text using the text tools.",
        )
        .input_schema(json!({
            "type": "object",
            "properties": {"text": {"type": "string", "minLength": 1}, "topic": {"type": "string"}},
            "required": ["text"]
        }))
    }

    fn run(_ctx: Context, input: Input) -> Result<Brief> {
        if input.text.trim().is_empty() {
            return Err(Error::invalid_input("text is empty"));
        }
        corral_sdk::progress(10, "counting");
        let stats: Value = corral_sdk::call_tool("text/word_count", &json!({"text": input.text}))?;
        corral_sdk::progress(50, "finding keywords");
        let found: Value = corral_sdk::call_tool(
            "text/extract_keywords",
            &json!({"text": input.text, "top": 5}),
        )?;
        let keywords: Vec<String> = found
            .get("keywords")
            .and_then(Value::as_array)
            .map(|k| {
                k.iter()
                    .filter_map(|k| k.get("word").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let number = |k: &str| stats.get(k).and_then(Value::as_u64).unwrap_or(0);
        let topic = input
            .topic
            .or_else(|| keywords.first().cloned())
            .unwrap_or_else(|| "the text".into());
        let brief = format!(
            "A {}-word text in {} sentences about {topic}; it keeps returning to {}.",
            number("words"),
            number("sentences"),
            if keywords.is_empty() {
                "no particular words".to_string()
            } else {
                keywords.join(", ")
            }
        );
        corral_sdk::info(&brief);
        corral_sdk::progress(100, "done");
        Ok(Brief {
            topic,
            words: number("words"),
            sentences: number("sentences"),
            keywords,
            brief,
        })
    }
}

corral_sdk::export_agent!(Researcher);
