"""Search-query generation core: prompt, tolerant JSON parsing, fallback, counted sources, splits."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from raygen.corpus.queries import (EXAMPLE_QUERIES, build_prompt, extract_queries, fallback_queries, parse_queries,
                                   query_rows, split_queries)

ROW = {"title": "Stainless Steel Hex Bolt M8", "brand": "Bolty", "categories": ["Industrial", "Fasteners"],
       "description": "Corrosion resistant bolt for outdoor machinery."}


def test_prompt_asks_for_json_with_a_worked_example():
    msgs = build_prompt(ROW, 5)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert json.loads(msgs[2]["content"]) == {"queries": list(EXAMPLE_QUERIES)}
    assert '{"queries": [...]}' in msgs[3]["content"] and "Hex Bolt" in msgs[3]["content"]


@pytest.mark.parametrize("text,want,malformed", [
    ('{"queries": ["steel bolt", "m8 hex bolt", "Bolty bolts"]}', ["steel bolt", "m8 hex bolt", "bolty bolts"], False),
    ('Sure! ```json\n["hex bolt m8", "hex bolt m8", "outdoor bolt"]\n```', ["hex bolt m8", "outdoor bolt"], False),
    ('{"q": ["stainless bolt"]}', ["stainless bolt"], False),                      # any list value
    ("1. steel bolt\n2) bolt for machinery\n- the", ["steel bolt", "bolt for machinery"], True),  # prose lines
    ('{"queries": ["cast iron skillet", "m8 bolt"]}', ["m8 bolt"], False),          # copied example dropped
    ('{"queries": [3, null, "ok bolt"]', ["ok bolt"], False),                       # the array inside still reads
    ("I cannot help with that.", [], True),                                         # one line of prose: nothing
    ("", [], True),
])
def test_parse_queries_is_tolerant_and_says_when_malformed(text, want, malformed):
    got, bad = parse_queries(text, 5)
    assert got == want and bad is malformed


def test_fallback_is_deterministic_distinct_and_exact():
    a = fallback_queries(ROW, 5)
    assert a == fallback_queries(dict(ROW), 5) and len(a) == len(set(a)) == 5
    assert a[0] == "stainless steel hex"
    tiny = fallback_queries({"title": "Bolt"}, 5)
    assert len(tiny) == len(set(tiny)) == 5


class Scripted:
    uses_llm = True

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def generate(self, conversations, max_new_tokens):
        self.calls.append(len(conversations))
        return self.answers[: len(conversations)]


def test_extract_counts_teacher_mixed_and_fallback_items():
    full = json.dumps({"queries": ["q one bolt", "q two bolt", "q three bolt", "q four bolt", "q five bolt"]})
    teacher = Scripted([full, '{"queries": ["steel bolt outdoor"]}', "no idea"])
    rows = [ROW, ROW, ROW, ROW]
    out = extract_queries(teacher, rows, 5, use_teacher=[True, True, True, False])
    assert teacher.calls == [3]
    assert [r["source"] for r in out] == ["teacher", "mixed", "fallback", "fallback"]
    assert [r["n_teacher"] for r in out] == [5, 1, 0, 0]
    assert [r["malformed"] for r in out] == [False, False, True, False]
    assert all(len(r["queries"]) == len(set(r["queries"])) == 5 for r in out)
    assert out[1]["queries"][0] == "steel bolt outdoor" and out[3]["queries"] == fallback_queries(ROW, 5)
    assert extract_queries(None, rows[:1], 5)[0]["source"] == "fallback"
    with pytest.raises(RuntimeError, match="2 answers for 3"):
        extract_queries(Scripted([full, full]), rows[:3], 5)


def test_split_is_per_item_seeded_and_in_ratio():
    splits = split_queries([10, 11, 12], 5)
    assert all(Counter(s) == Counter({"train": 3, "valid": 1, "test": 1}) for s in splits)
    assert splits == split_queries([10, 11, 12], 5) and split_queries([11], 5)[0] == splits[1]
    assert len({tuple(s) for s in split_queries(range(50), 5)}) > 1   # not the same positions for every item
    assert Counter(split_queries([1], 4)[0]) == Counter({"train": 2, "valid": 1, "test": 1})  # largest remainder
    cols = query_rows([10], extract_queries(None, [ROW], 5), splits[:1])
    assert len(cols["query"]) == 5 and set(cols["split"]) == {"train", "valid", "test"}
    with pytest.raises(ValueError, match="ratios"):
        split_queries([1], 5, ratios=(0, 0, 0))
