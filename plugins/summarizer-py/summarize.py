"""Extractive text summarisation, in pure standard-library Python.

This module knows nothing about WebAssembly or Corral's WIT bindings, so it can
be imported and unit tested with plain CPython (see ``test_summarize.py``).
``app.py`` wraps it as a Corral agent.

The method is classic frequency-based extraction (after Luhn, 1958):

1. split the text into sentences and the sentences into words;
2. count every word that is not a stop word ("the", "and", ...);
3. normalise the counts by the largest count, so the most frequent content
   word weighs 1.0;
4. score each sentence as the sum of the normalised frequencies of its
   content words, divided by the square root of how many content words it
   has (so long sentences are not favoured just for being long, nor are
   one-word sentences favoured for being short);
5. keep the best ``n`` sentences (ties go to the earlier sentence) and return
   them in their original order.
"""

import json
import math
import re
from collections import Counter

NAME = "summarizer-py"
VERSION = "0.1.0"
DESCRIPTION = (
    "Extractive summariser written in Python: picks the sentences whose "
    "non-stop words are most frequent in the text and returns them in their "
    "original order, with word statistics."
)

DEFAULT_SENTENCES = 3
MIN_SENTENCES = 1
MAX_SENTENCES = 20
TOP_WORDS = 5

INPUT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "text": {
            "type": "string",
            "minLength": 1,
            "description": "The text to summarise.",
        },
        "sentences": {
            "type": "integer",
            "minimum": MIN_SENTENCES,
            "maximum": MAX_SENTENCES,
            "default": DEFAULT_SENTENCES,
            "description": "How many sentences the summary may have "
            "(default: the step config's `sentences`, else 3).",
        },
    },
    "required": ["text"],
}

OUTPUT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "sentences": {"type": "array", "items": {"type": "string"}},
        "word_count": {"type": "integer", "minimum": 0},
        "sentence_count": {"type": "integer", "minimum": 0},
        "top_words": {
            "type": "array",
            "maxItems": TOP_WORDS,
            "items": {
                "type": "object",
                "properties": {
                    "word": {"type": "string"},
                    "count": {"type": "integer", "minimum": 1},
                },
                "required": ["word", "count"],
            },
        },
    },
    "required": ["summary", "sentences", "word_count", "sentence_count", "top_words"],
}

# A compact English stop-word list (articles, pronouns, auxiliaries,
# prepositions, conjunctions and other very common function words).
STOPWORDS = frozenset(
    """
    a about above after again against all almost also although am among an and
    another any anyone anything are aren't around as at be became because become
    been before being below between both but by can can't cannot could couldn't
    did didn't do does doesn't doing don't done down during each either else
    enough etc even ever every few for from further get gets got had hadn't has
    hasn't have haven't having he he'd he'll he's her here here's hers herself
    him himself his how how's however i i'd i'll i'm i've if in into is isn't it
    it's its itself just least less let's like made make many may me might more
    most much must mustn't my myself neither never no nor not now of off often on
    once one only or other others otherwise ought our ours ourselves out over own
    per perhaps quite rather really same several shan't she she'd she'll she's
    should shouldn't since so some something still such than that that's the
    their theirs them themselves then there there's therefore these they they'd
    they'll they're they've this those though through thus to too toward towards
    under until up upon us very was wasn't we we'd we'll we're we've were weren't
    what what's whatever when when's where where's whether which while who who's
    whom whose why why's will with within without won't would wouldn't yet you
    you'd you'll you're you've your yours yourself yourselves
    """.split()
)

# Abbreviations whose trailing full stop does not end a sentence.
ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof sr jr st vs etc e.g i.e cf al fig vol approx dept
    inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec
    """.split()
)

# Sentence-ending punctuation, optional closing quotes/brackets, then space.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+")
# A blank line always ends a sentence (headings, list items without a stop).
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# Words: runs of letters/digits, allowing inner apostrophes ("don't").
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_SPACE = re.compile(r"\s+")


class InvalidInput(ValueError):
    """The input is not acceptable (maps to the WIT `invalid-input` error)."""


class BadConfig(ValueError):
    """The step's config is not acceptable (maps to the WIT `permanent` error)."""


def split_sentences(text):
    """Splits ``text`` into sentences, whitespace-normalised, in order."""
    sentences = []
    for paragraph in _PARAGRAPH.split(text):
        start = 0
        for match in _SENTENCE_END.finditer(paragraph):
            before = paragraph[start : match.start() + 1]
            last = before.split()[-1] if before.split() else ""
            token = last.rstrip(".").lower().lstrip("(\"'\u201c\u2018")
            # "Dr. Smith", "e.g. this", "J. R. R. Tolkien": not an end.
            if match.group().startswith(".") and len(match.group().strip()) == 1 and (
                token in ABBREVIATIONS or (len(token) == 1 and token.isalpha())
            ):
                continue
            sentences.append(paragraph[start : match.end()])
            start = match.end()
        sentences.append(paragraph[start:])
    cleaned = (_SPACE.sub(" ", s).strip() for s in sentences)
    return [s for s in cleaned if s]


def words(text):
    """The words of ``text``, lower-cased, with curly apostrophes straightened."""
    return [w.replace("\u2019", "'") for w in _WORD.findall(text.lower())]


def content_words(tokens):
    """``tokens`` without stop words and bare numbers."""
    return [w for w in tokens if w not in STOPWORDS and not w.isdigit()]


def summarize(text, n=DEFAULT_SENTENCES):
    """Summarises ``text`` into at most ``n`` sentences.

    Returns the output object as a dict (see ``OUTPUT_SCHEMA``). Raises
    ``InvalidInput`` when the text has no words.
    """
    sentences = split_sentences(text)
    all_words = words(text)
    if not all_words:
        raise InvalidInput('"text" contains no words')

    freq = Counter(content_words(all_words))
    top = max(freq.values()) if freq else 0

    def score(sentence):
        content = content_words(words(sentence))
        if not content or not top:
            return 0.0
        return sum(freq[w] / top for w in content) / math.sqrt(len(content))

    scored = [(score(s), i) for i, s in enumerate(sentences)]
    # Highest score first; on a tie the earlier sentence wins.
    best = sorted(scored, key=lambda si: (-si[0], si[1]))[:n]
    chosen = [sentences[i] for i in sorted(i for _, i in best)]

    top_words = sorted(freq.items(), key=lambda wc: (-wc[1], wc[0]))[:TOP_WORDS]
    return {
        "summary": " ".join(chosen),
        "sentences": chosen,
        "word_count": len(all_words),
        "sentence_count": len(sentences),
        "top_words": [{"word": w, "count": c} for w, c in top_words],
    }


def _sentence_count(value, where, error):
    """Checks a `sentences` value; raises ``error`` naming ``where``."""
    # bool is an int in Python, but `true` is not a sentence count.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f'{where} must be an integer, got {json.dumps(value)}')
    if isinstance(value, float):
        if not value.is_integer():
            raise error(f"{where} must be an integer, got {value}")
        value = int(value)
    if not MIN_SENTENCES <= value <= MAX_SENTENCES:
        raise error(
            f"{where} must be between {MIN_SENTENCES} and {MAX_SENTENCES}, got {value}"
        )
    return value


def config_sentences(config_json):
    """The default sentence count from the step's config JSON text.

    ``{}`` (or a config without ``sentences``) gives ``DEFAULT_SENTENCES``.
    Raises ``BadConfig`` when the config is unusable.
    """
    if not config_json or not config_json.strip():
        return DEFAULT_SENTENCES
    try:
        config = json.loads(config_json)
    except ValueError as e:
        raise BadConfig(f"step config is not valid JSON: {e}") from None
    if config is None:
        return DEFAULT_SENTENCES
    if not isinstance(config, dict):
        raise BadConfig("step config must be a JSON object")
    if "sentences" not in config:
        return DEFAULT_SENTENCES
    return _sentence_count(config["sentences"], 'config "sentences"', BadConfig)


def parse_input(input_json, default_sentences=DEFAULT_SENTENCES):
    """Parses and validates the agent's input JSON text.

    Returns ``(text, sentences)``. Raises ``InvalidInput`` naming the problem.
    """
    try:
        value = json.loads(input_json)
    except ValueError as e:
        raise InvalidInput(f"input is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidInput("input must be a JSON object with a \"text\" field")
    if "text" not in value:
        raise InvalidInput('input has no "text" field')
    text = value["text"]
    if not isinstance(text, str):
        raise InvalidInput(f'"text" must be a string, got {type(text).__name__}')
    if not text.strip():
        raise InvalidInput('"text" is empty')
    if "sentences" in value and value["sentences"] is not None:
        n = _sentence_count(value["sentences"], '"sentences"', InvalidInput)
    else:
        n = default_sentences
    return text, n


def run_json(input_json, config_json="{}"):
    """Input JSON text in, output JSON text out: the whole agent minus the host.

    Raises ``InvalidInput`` or ``BadConfig``.
    """
    text, n = parse_input(input_json, config_sentences(config_json))
    return to_json(summarize(text, n))


def to_json(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
