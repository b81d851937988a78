"""Item keywords: the teacher prompt, a robust parser of its answer, and a deterministic fallback.

Pure core (no torch, no Ray). A *teacher* is anything with ``generate(conversations,
max_new_tokens) -> list[str]`` (see ``raygen.corpus.teacher``); small teachers often answer
with numbering, bullets, quotes, a "Keywords:" preamble, an echo of the prompt, whole
sentences or nothing useful, so every answer is parsed defensively and an item whose answer
yields too few usable keywords gets the fallback extractor's keywords instead (source
``'fallback'``), never an empty or garbage list.
"""
from __future__ import annotations

import html
import re
from collections import Counter
from typing import Any, Iterable, Protocol, Sequence

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

SOURCE_TEACHER = "teacher"
SOURCE_FALLBACK = "fallback"

SYSTEM_PROMPT = "You are a product catalog assistant. You answer with keywords only."
PROMPT_FIELDS = ("title", "brand", "categories", "description")
# Words of the prompt itself: an answer made of these is an echo of the prompt, not keywords.
PROMPT_WORDS = frozenset({"keyword", "keywords", "title", "brand", "categories", "category", "description",
                          "product", "none", "n/a", "unknown", "answer"})
# Instruction words: a phrase containing one is the prompt echoed back ("separated by commas").
ECHO_WORDS = frozenset({"keyword", "keywords", "comma", "commas", "separated", "comma-separated"})
# Product-listing filler that says nothing about the item (added to scikit-learn's English list).
FILLER_WORDS = frozenset({"use", "used", "uses", "using", "ideal", "perfect", "great", "best", "quality", "high",
                          "new", "designed", "design", "features", "feature", "includes", "include", "including",
                          "made", "make", "makes", "provides", "provide", "allows", "easy", "easily", "item", "items",
                          "products", "product", "brand", "pack", "pcs", "piece", "pieces", "set", "count", "size",
                          "inch", "inches", "mm", "cm", "ft", "lbs", "oz", "approx", "com", "www", "http", "https",
                          "br", "nbsp", "amp", "li", "ul", "div", "span", "strong", "p", "b", "i"})
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) | FILLER_WORDS

EXAMPLE_PRODUCT = {
    "title": "Lodge 10.25 Inch Cast Iron Skillet, Pre-Seasoned",
    "brand": "Lodge",
    "categories": ["Kitchen", "Cookware"],
    "description": "Pre-seasoned cast iron pan for searing, frying and baking on the stove, in the oven or over a campfire.",
}
EXAMPLE_KEYWORDS = ("cast iron skillet", "frying pan", "cookware", "pre-seasoned", "lodge", "campfire cooking",
                    "oven safe", "searing", "kitchen", "baking")

_TAG = re.compile(r"<[^>]{0,200}>")
_WORD = re.compile(r"[a-z][a-z0-9]*(?:[-'][a-z0-9]+)*")
_LIST_MARK = re.compile(r"^\s*(?:\(?\d{1,2}[.):]|\(?[a-z][.)](?=\s)|[-*+•·▪►–—#>]+)\s*", re.IGNORECASE)
_PREAMBLE = re.compile(r"^[^:\n]{0,80}?\b(?:keywords?|key words|tags|here (?:are|is))\b[^:\n]{0,80}:\s*",
                       re.IGNORECASE)
_LABEL = re.compile(r"^\s*(title|brand|categories|category|description)\s*:", re.IGNORECASE)
_SPLIT = re.compile(r"[,;\n|]+|\s+-\s+|\s+\(?\d{1,2}[.)]\s+|\s{3,}|\t")
_STRIP = " \t\"'`“”‘’«»*_()[]{}<>.!?:;"


class Teacher(Protocol):
    """What ``extract_keywords`` needs from a teacher backend (see ``raygen.corpus.teacher``)."""

    uses_llm: bool

    def generate(self, conversations: list[list[dict]], max_new_tokens: int) -> list[str]: ...


def _field(row: dict, name: str) -> str:
    v = row.get(name)
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v if x)
    return str(v).strip() if v else ""


def _product_block(row: dict, max_chars: int) -> str:
    lines = []
    budget = max_chars
    for name in PROMPT_FIELDS:
        value = _TAG.sub(" ", html.unescape(_field(row, name)))
        value = re.sub(r"\s+", " ", value).strip()[:max(budget, 0)]
        if value:
            lines.append(f"{name.capitalize()}: {value}")
            budget -= len(value)
    return "\n".join(lines) or "Title: (unknown)"


def _instruction(n: int) -> str:
    return f"Give {n} short keywords (one to three words each) for this product, separated by commas."


def build_prompt(row: dict, n: int, max_chars: int = 512) -> list[dict]:
    """Chat messages asking the teacher for ``n`` comma-separated keywords of the product ``row``.

    One worked example (a product from another domain) shows the answer format; without it a
    135M-parameter teacher mostly answers with numbering or sentences. ``max_chars`` caps the
    item's field text (prompt length dominates the teacher's cost).
    """
    example = ", ".join(EXAMPLE_KEYWORDS[:n])
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{_instruction(n)}\n\n{_product_block(EXAMPLE_PRODUCT, max_chars)}"},
        {"role": "assistant", "content": example},
        {"role": "user", "content": f"{_instruction(n)}\n\n{_product_block(row, max_chars)}"},
    ]


def _clean_phrase(piece: str) -> str:
    piece = _LIST_MARK.sub("", piece.strip())
    piece = piece.replace("**", "").replace("__", "")
    piece = re.sub(r"\s+", " ", piece).strip(_STRIP).strip()
    return piece.lower()


def _usable(phrase: str, max_words: int, max_chars: int) -> bool:
    words = phrase.split()
    if not words or len(words) > max_words or len(phrase) > max_chars:
        return False
    if sum(ch.isalpha() for ch in phrase) < 2:  # numbers, symbols, single letters
        return False
    if all(w in STOP_WORDS or w in PROMPT_WORDS for w in words):  # "the", "title", "none"
        return False
    if any(w.strip(_STRIP) in ECHO_WORDS for w in words):  # "separated by commas"
        return False
    if len(set(words)) < len(words):  # degenerate repetition: "the the", "kit kit kit"
        return False
    return True


def _stem(word: str) -> str:
    """Crude plural folding for grounding checks ("screws" ~ "screw", "boxes" ~ "box")."""
    for suffix in ("es", "s"):
        if len(word) > 4 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _grounded(phrase: str, vocab: set[str], source_text: str) -> bool:
    """A phrase is grounded if one of its content words occurs in the item's text; a phrase of
    the worked example (which small teachers copy) only if the whole phrase does."""
    if phrase in EXAMPLE_KEYWORDS:
        return phrase in source_text
    content = [_stem(w) for w in _WORD.findall(phrase) if w not in STOP_WORDS]
    return any(w in vocab for w in content)


def parse_keywords(text: str | None, n: int, min_keywords: int = 2, max_words: int = 4,
                   max_chars: int = 40, source_text: str | None = None) -> list[str] | None:
    """Keywords from a teacher's answer, or None when it yields fewer than ``min_keywords``.

    Accepts comma/semicolon/newline/pipe-separated lists with numbering, bullets, quotes,
    markdown bold and a "Keywords:"/"Here are ...:" preamble. Drops phrases longer than
    ``max_words`` words or ``max_chars`` characters (sentences), echoed prompt lines
    ("Title: ..."), stop-word-only or repeated-word phrases and duplicates (case-insensitive);
    with ``source_text`` (the item's text) also phrases not grounded in it (see ``_grounded``).
    Keeps the first ``n`` in answer order, lower-cased.
    """
    if not text or not text.strip():
        return None
    vocab = source = None
    if source_text is not None:
        source = " ".join(tokens(source_text))
        vocab = {_stem(w) for w in source.split()}
    text = text.replace("\r", "\n").replace("```", "\n")
    kept: list[str] = []
    seen: set[str] = set()
    for line in text.split("\n"):
        line = _LIST_MARK.sub("", line.strip())
        if _LABEL.match(line):  # the prompt echoed back ("Title: ...", "Brand: ...")
            continue
        line = _PREAMBLE.sub("", line)
        for piece in _SPLIT.split(line):
            phrase = _clean_phrase(piece)
            if phrase in seen or not _usable(phrase, max_words, max_chars):
                continue
            if vocab is not None and not _grounded(phrase, vocab, source):
                continue
            seen.add(phrase)
            kept.append(phrase)
            if len(kept) == n:
                return kept
    return kept if len(kept) >= min(min_keywords, n) else None


def tokens(text: str) -> list[str]:
    """Lower-case word tokens of ``text`` with HTML tags/entities removed."""
    text = _TAG.sub(" ", html.unescape(text or "")).lower()
    return _WORD.findall(text)


def fallback_keywords(row: dict, n: int) -> list[str]:
    """Deterministic keywords: content words of title, categories and description.

    Stop words (scikit-learn's English list plus listing filler), numbers and words shorter
    than 3 characters are dropped. Ranking: a title word counts 3, a category word 2, a
    description word 1, summed over occurrences; ties go to the earlier first occurrence.
    Always the same output for the same row (no randomness, no dict-order dependence).
    """
    score: Counter = Counter()
    first: dict[str, int] = {}
    pos = 0
    for name, weight in (("title", 3), ("categories", 2), ("description", 1)):
        for w in tokens(_field(row, name)):
            w = w.strip("'-")
            if len(w) < 3 or w in STOP_WORDS or not any(c.isalpha() for c in w):
                continue
            score[w] += weight
            first.setdefault(w, pos)
            pos += 1
    ranked = sorted(score, key=lambda w: (-score[w], first[w]))
    return ranked[:n]


def ask_teacher(backend: Teacher | None, rows: Sequence[dict], prompt, max_new_tokens: int,
                use_teacher: Iterable[bool] | None = None) -> list[str | None]:
    """The teacher's raw answer per row (``prompt(row)`` -> chat messages), in one ``generate`` call;
    None for rows not asked (``use_teacher`` False, or no LLM backend)."""
    flags = [True] * len(rows) if use_teacher is None else [bool(f) for f in use_teacher]
    if len(flags) != len(rows):
        raise ValueError(f"use_teacher has {len(flags)} flags for {len(rows)} rows")
    out: list[str | None] = [None] * len(rows)
    if backend is None or not getattr(backend, "uses_llm", True):
        return out
    idx = [i for i, f in enumerate(flags) if f]
    if idx:
        answers = backend.generate([prompt(rows[i]) for i in idx], max_new_tokens)
        if len(answers) != len(idx):
            raise RuntimeError(f"teacher returned {len(answers)} answers for {len(idx)} prompts")
        for i, a in zip(idx, answers):
            out[i] = a
    return out


def extract_keywords(backend: Teacher | None, rows: Sequence[dict], n: int, max_new_tokens: int = 24,
                     max_chars: int = 512, min_keywords: int = 2, grounded: bool = True,
                     use_teacher: Iterable[bool] | None = None) -> list[tuple[list[str], str]]:
    """(keywords, source) per row, in row order; source is 'teacher' or 'fallback'.

    Rows with ``use_teacher`` False (default: all True), and every row when ``backend`` is
    None or not an LLM, get ``fallback_keywords``. The others are sent to the teacher in one
    ``generate`` call (the caller controls batch size) and parsed with ``parse_keywords``
    (grounded in the item's own text if ``grounded``); a row whose answer yields fewer than
    ``min_keywords`` usable keywords falls back individually.
    """
    rows = list(rows)
    answers = ask_teacher(backend, rows, lambda r: build_prompt(r, n, max_chars), max_new_tokens, use_teacher)
    parsed: list[list[str] | None] = [None] * len(rows)
    for i, a in enumerate(answers):
        if a is not None:
            source = " ".join(_field(rows[i], f) for f in PROMPT_FIELDS) if grounded else None
            parsed[i] = parse_keywords(a, n, min_keywords=min_keywords, source_text=source)
    return [(kw, SOURCE_TEACHER) if kw is not None else (fallback_keywords(r, n), SOURCE_FALLBACK)
            for r, kw in zip(rows, parsed)]


def keywords_rows(item_ids: Iterable[Any], results: Sequence[tuple[list[str], str]]) -> dict[str, list]:
    """Columns (item_id, keywords, source) for a keywords table from ``extract_keywords`` output."""
    return {"item_id": [int(i) for i in item_ids], "keywords": [list(k) for k, _ in results],
            "source": [s for _, s in results]}
