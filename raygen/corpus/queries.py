"""Search queries per item (STAR's search task): the teacher prompt, a JSON-tolerant parser, a
deterministic fallback and the per-item train / valid / test split of the queries.

Pure core (no torch, no Ray); the teacher is the same ``generate(conversations, max_new_tokens)``
backend as keyword extraction (:mod:`raygen.corpus.teacher`, HF or vLLM) and runs in the same Ray
Data actor pool. As STAR's prompt does, the teacher is asked for pure JSON: ``{"queries": [...]}``
with ``n`` realistic shopper queries (product type, brand, features, use cases, a misspelling;
varied length and specificity). Small teachers often answer with prose, numbering or broken JSON,
so every answer is parsed defensively. Each item always ends with exactly ``n`` distinct queries;
its record says how many came from the teacher (``n_teacher``), whether the answer was malformed,
and ``source``: 'teacher' (all n), 'mixed' (some, topped up by the fallback) or 'fallback' (none
usable, or no teacher). Nothing is dropped silently: the stage reports these counts.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable, Sequence

import numpy as np

from raygen.corpus.keywords import STOP_WORDS, Teacher, _field, _product_block, ask_teacher, tokens

SOURCE_TEACHER, SOURCE_MIXED, SOURCE_FALLBACK = "teacher", "mixed", "fallback"
QUERY_SPLITS = ("train", "valid", "test")

SYSTEM_PROMPT = "You are a shopping search assistant. You answer with JSON only."
EXAMPLE_PRODUCT = {
    "title": "Lodge 10.25 Inch Cast Iron Skillet, Pre-Seasoned",
    "brand": "Lodge",
    "categories": ["Kitchen", "Cookware"],
    "description": "Pre-seasoned cast iron pan for searing, frying and baking on the stove, in the oven or over a campfire.",
}
EXAMPLE_QUERIES = ("cast iron skillet", "lodge 10 inch pan preseasoned", "frying pan for campfire cooking",
                   "oven safe skillet for searing steak", "cast iorn pan")

_JSON_OBJ = re.compile(r"\{.*\}", re.S)
_JSON_ARR = re.compile(r"\[.*\]", re.S)
_LIST_MARK = re.compile(r"^\s*(?:\(?\d{1,2}[.):]|[-*+•]+)\s*")
_STRIP = " \t\"'`“”‘’«»*_()[]{}<>.,!?:;"


def _instruction(n: int) -> str:
    return (f"Write {n} different search queries a shopper might type to find this product: by product type, "
            "brand, features and use cases, short and long, one with a typo. Answer with JSON only: "
            '{"queries": [...]}')


def build_prompt(row: dict, n: int, max_chars: int = 512) -> list[dict]:
    """Chat messages asking the teacher for ``n`` search queries of product ``row`` as JSON, with one
    worked example (a product from another domain) showing the format."""
    example = json.dumps({"queries": list(EXAMPLE_QUERIES[:n])})
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{_instruction(n)}\n\n{_product_block(EXAMPLE_PRODUCT, max_chars)}"},
        {"role": "assistant", "content": example},
        {"role": "user", "content": f"{_instruction(n)}\n\n{_product_block(row, max_chars)}"},
    ]


def _clean(q: Any) -> str | None:
    if not isinstance(q, str):
        return None
    q = re.sub(r"\s+", " ", _LIST_MARK.sub("", q)).strip(_STRIP).strip().lower()
    words = q.split()
    if not (1 <= len(words) <= 12) or len(q) > 100 or sum(c.isalpha() for c in q) < 3:
        return None
    if all(w in STOP_WORDS for w in words):
        return None
    return q


def parse_queries(text: str | None, n: int, example: Sequence[str] = EXAMPLE_QUERIES) -> tuple[list[str], bool]:
    """``(queries, malformed)`` from a teacher's answer: at most ``n`` distinct cleaned queries, and
    whether the answer was not the JSON asked for (then a line-per-query reading is tried).

    Accepts ``{"queries": [...]}``, a bare JSON array, JSON inside prose or code fences (non-string
    entries dropped), and, as a malformed answer, one query per line when there are at least two
    lines (numbering and bullets removed; a single line of prose gives nothing). Queries copied from the
    worked example are dropped (small teachers copy it)."""
    if not text or not text.strip():
        return [], True
    candidates: list[Any] | None = None
    for pattern in (_JSON_OBJ, _JSON_ARR):
        m = pattern.search(text)
        if m is None:
            continue
        try:
            obj = json.loads(m.group(0))
        except ValueError:
            continue
        if isinstance(obj, dict):
            obj = obj.get("queries", next((v for v in obj.values() if isinstance(v, list)), None))
        if isinstance(obj, list):
            candidates = obj
            break
    malformed = candidates is None
    if candidates is None:  # read a list of lines; a single line of prose is no list
        lines = [line for line in text.replace("```", "\n").split("\n") if line.strip()]
        candidates = lines if len(lines) >= 2 else []
    banned = {e.lower() for e in example}
    out: list[str] = []
    for c in candidates:
        q = _clean(c)
        if q is not None and q not in out and q not in banned:
            out.append(q)
        if len(out) == n:
            break
    return out, malformed


def fallback_queries(row: dict, n: int) -> list[str]:
    """``n`` deterministic queries from the item's own words: the title's first content words, brand +
    title words, category + title words, title words alone, ... (distinct; the same row always gives the
    same queries)."""
    def content(text: str) -> list[str]:
        return [w for w in tokens(text) if len(w) > 2 and w not in STOP_WORDS and any(c.isalpha() for c in w)]

    title, brand = content(_field(row, "title")), content(_field(row, "brand"))
    cats = content(_field(row, "categories"))
    desc = content(_field(row, "description"))
    head = list(dict.fromkeys(title)) or list(dict.fromkeys(desc)) or ["product"]
    options = [" ".join(head[:3]), " ".join(dict.fromkeys(brand[:1] + head[:2])), " ".join(head[:2] + cats[-1:]),
               " ".join(head[:5]), " ".join(dict.fromkeys(cats[-2:] + head[:1])), " ".join(head[1:4]),
               " ".join(dict.fromkeys(brand[:1] + cats[-1:])), " ".join(head[:1] + desc[:2])]
    out: list[str] = []
    for q in options:
        q = q.strip()
        if q and q not in out:
            out.append(q)
    k = 1
    while len(out) < n:  # tiny texts: numbered variants keep the count exact
        out.append(f"{head[0]} {k}")
        k += 1
    return out[:n]


def extract_queries(backend: Teacher | None, rows: Sequence[dict], n: int, max_new_tokens: int = 96,
                    max_chars: int = 512, use_teacher: Iterable[bool] | None = None) -> list[dict]:
    """One record per row, in order: ``{"queries": [n strings], "source", "n_teacher", "malformed"}``.

    Rows with ``use_teacher`` False (default all True), and every row without an LLM backend, get
    :func:`fallback_queries` (``malformed`` False: nothing was asked). The others are asked in one
    ``generate`` call; their parsed queries are topped up to ``n`` from the fallback."""
    rows = list(rows)
    answers = ask_teacher(backend, rows, lambda r: build_prompt(r, n, max_chars), max_new_tokens, use_teacher)
    parsed = [None if a is None else parse_queries(a, n) for a in answers]
    out = []
    for row, p in zip(rows, parsed):
        got, malformed = p if p is not None else ([], False)
        queries = list(got)
        for q in fallback_queries(row, n + len(got)):
            if len(queries) == n:
                break
            if q not in queries:
                queries.append(q)
        source = SOURCE_TEACHER if len(got) == n else SOURCE_MIXED if got else SOURCE_FALLBACK
        out.append({"queries": queries, "source": source, "n_teacher": len(got), "malformed": malformed})
    return out


def split_queries(item_ids: Sequence[int], n: int, ratios: tuple[int, int, int] = (3, 1, 1),
                  seed: int = 0) -> list[list[str]]:
    """Per item, the split ('train' / 'valid' / 'test') of each of its ``n`` queries: a seeded
    per-item permutation cut in ``ratios`` (scaled to ``n``), so test queries are never trained on
    and the split does not depend on the other items."""
    total = sum(ratios)
    if total <= 0 or any(r < 0 for r in ratios):
        raise ValueError(f"query split ratios must be >= 0 with a positive sum, got {ratios}")
    counts = [int(np.floor(n * r / total)) for r in ratios]
    for j in np.argsort([-(n * r / total - c) for r, c in zip(ratios, counts)], kind="stable"):
        if sum(counts) == n:
            break
        counts[j] += 1
    labels = [s for s, c in zip(QUERY_SPLITS, counts) for _ in range(c)]
    out = []
    for item in item_ids:
        perm = np.random.default_rng([seed, int(item) & 0x7FFFFFFF]).permutation(n)
        out.append([labels[int(p)] for p in np.argsort(perm)])
    return out


def query_rows(item_ids: Iterable[Any], results: Sequence[dict], splits: Sequence[Sequence[str]]) -> dict[str, list]:
    """Long-format columns of ``queries.parquet``: one row per (item, query) with its split and the item's
    source, teacher count and malformed flag."""
    cols: dict[str, list] = {"item_id": [], "query": [], "split": [], "source": [], "n_teacher": [],
                             "malformed": []}
    for item, rec, sp in zip(item_ids, results, splits):
        for q, s in zip(rec["queries"], sp):
            cols["item_id"].append(int(item))
            cols["query"].append(q)
            cols["split"].append(s)
            cols["source"].append(rec["source"])
            cols["n_teacher"].append(int(rec["n_teacher"]))
            cols["malformed"].append(bool(rec["malformed"]))
    return cols
