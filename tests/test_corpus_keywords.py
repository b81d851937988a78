"""Keyword core: prompt, robust parser of teacher answers, deterministic fallback, extract_keywords."""
from __future__ import annotations

import pytest

from raygen.corpus.keywords import (EXAMPLE_KEYWORDS, SOURCE_FALLBACK, SOURCE_TEACHER, build_prompt,
                                    extract_keywords, fallback_keywords, keywords_rows, parse_keywords)

ITEM = {
    "item_id": 7,
    "title": "SUPCO SPP6 Relay/Capacitor Hard Start Kit",
    "brand": "Sealed Unit Parts Co., Inc.",
    "categories": ["HVAC", "Compressor Parts"],
    "description": "Relay and capacitor hard start kit. Increases compressor starting torque for heat pump "
                   "systems and room air conditioner units. The kit fits most <b>single phase</b> units.",
}


@pytest.mark.parametrize("text, expected", [
    ("relay kit, capacitor, hvac, compressor, hard start",
     ["relay kit", "capacitor", "hvac", "compressor", "hard start"]),
    ("Keywords: relay kit, capacitor, hvac", ["relay kit", "capacitor", "hvac"]),
    ("Here are 5 keywords for this product:\n1. Relay kit\n2. Capacitor\n3. HVAC",
     ["relay kit", "capacitor", "hvac"]),
    ("- relay\n- capacitor\n* hvac\n• compressor", ["relay", "capacitor", "hvac", "compressor"]),
    ('"relay", \'capacitor\', “hvac”', ["relay", "capacitor", "hvac"]),
    ("**Relay**, **Capacitor**, relay, RELAY", ["relay", "capacitor"]),  # markdown + duplicates
    ("relay; capacitor | hvac", ["relay", "capacitor", "hvac"]),
    ("1) relay 2) capacitor 3) hvac", ["relay", "capacitor", "hvac"]),  # inline numbering
    ("```\nrelay, capacitor.\n```", ["relay", "capacitor"]),
    ("relay, this sentence is far too long to be a keyword, capacitor", ["relay", "capacitor"]),
    ("relay, capacitor, hvac, compressor, hard start, torque, heat pump", None),  # cut to n below
])
def test_parse_keywords_messy_answers(text, expected):
    got = parse_keywords(text, 5)
    if expected is None:  # more than n: the first n in answer order
        assert got == ["relay", "capacitor", "hvac", "compressor", "hard start"]
    else:
        assert got == expected


@pytest.mark.parametrize("garbage", [
    None, "", "   \n ", "1. 1.1.1.1.1.1.1.1.1.1.1", "1. 1. 2. 3. 4. 5.",
    "Title: SUPCO SPP6 Relay\nBrand: Sealed Unit Parts",  # prompt echoed
    "Give 5 short keywords (one to three words each) for this product, separated by commas.",
    "This is a relay and capacitor kit which increases the starting torque of compressors",
    "the, a, of, and", "kit kit kit, relay", "keywords, keywords", "???, !!!, ---",
])
def test_parse_keywords_garbage_is_none(garbage):
    assert parse_keywords(garbage, 5) is None


def test_parse_keywords_min_keywords_and_length_limits():
    assert parse_keywords("relay", 5) is None  # one usable < min_keywords=2
    assert parse_keywords("relay", 5, min_keywords=1) == ["relay"]
    assert parse_keywords("relay, capacitor", 1) == ["relay"]  # n=1 needs only one
    assert parse_keywords("one two three four five, relay, capacitor", 5) == ["relay", "capacitor"]
    assert parse_keywords("relay, capacitor", 5, max_words=1) == ["relay", "capacitor"]
    assert parse_keywords("hard start kit, relay", 5, max_words=2) is None


def test_parse_keywords_grounding_drops_hallucinations_and_copied_example():
    src = "SUPCO relay capacitor kits for heat pumps"
    answer = f"{EXAMPLE_KEYWORDS[0]}, relay, epoxy, capacitor kit, heat pump, stallion"
    assert parse_keywords(answer, 5, source_text=src) == ["relay", "capacitor kit", "heat pump"]
    # Without a source text nothing is judged against the item.
    assert parse_keywords(answer, 5)[:3] == [EXAMPLE_KEYWORDS[0], "relay", "epoxy"]
    # An example phrase survives grounding only when the item really says it.
    assert parse_keywords("cast iron skillet, lodge", 5, source_text="Lodge cast iron skillet") == \
        ["cast iron skillet", "lodge"]


def test_build_prompt_holds_item_fields_and_one_worked_example():
    msgs = build_prompt(ITEM, 4, max_chars=100)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == ", ".join(EXAMPLE_KEYWORDS[:4])
    user = msgs[-1]["content"]
    assert "Give 4 short keywords" in user and "Title: SUPCO SPP6" in user
    assert "Brand: Sealed Unit Parts" in user and "Categories: HVAC, Compressor Parts" in user
    body = user.split("\n\n", 1)[1]
    assert len(body) <= 100 + 4 * len("Description: \n")  # field text capped at max_chars
    assert "Description: Relay and" in user and "heat pump" not in user
    assert "<b>" not in build_prompt(ITEM, 4)[-1]["content"]  # HTML stripped
    assert build_prompt({"title": None}, 3)[-1]["content"].endswith("Title: (unknown)")


def test_fallback_keywords_ranking_and_determinism():
    kw = fallback_keywords(ITEM, 5)
    assert kw == fallback_keywords(dict(reversed(list(ITEM.items()))), 5)  # field order irrelevant
    assert len(kw) == 5 and len(set(kw)) == 5
    # Title words weigh 3, categories 2, description 1; ties go to the earlier word:
    # kit 3+1+1, relay/capacitor/hard/start 3+1, then compressor 2+1, hvac 2.
    assert kw == ["kit", "relay", "capacitor", "hard", "start"]
    assert fallback_keywords(ITEM, 9)[5:] == ["supco", "spp6", "compressor", "hvac"]
    for w in kw:
        assert w not in {"the", "and", "for"} and len(w) >= 3 and not w.isdigit()
    assert "b" not in fallback_keywords(ITEM, 50)  # HTML tag names are not words
    assert fallback_keywords({"title": "", "description": ""}, 5) == []
    assert fallback_keywords({"title": "The 100 and of"}, 5) == []


class FakeTeacher:
    uses_llm = True

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def generate(self, conversations, max_new_tokens):
        self.calls.append((len(conversations), max_new_tokens))
        return [self.answers[i % len(self.answers)] for i in range(len(conversations))]


def test_extract_keywords_mixes_teacher_and_fallback_per_item():
    rows = [ITEM, {**ITEM, "title": "Stanley staples"}, {**ITEM, "title": "Kreg pocket screws"}]
    teacher = FakeTeacher(["relay, capacitor, hvac", "1. 1.1.1.1", "relay, capacitor"])
    out = extract_keywords(teacher, rows, 3, max_new_tokens=17)
    assert teacher.calls == [(3, 17)]
    assert out[0] == (["relay", "capacitor", "hvac"], SOURCE_TEACHER)
    assert out[1] == (fallback_keywords(rows[1], 3), SOURCE_FALLBACK)
    assert out[2] == (["relay", "capacitor"], SOURCE_TEACHER)


def test_extract_keywords_use_teacher_flags_and_no_llm():
    teacher = FakeTeacher(["relay, capacitor"])
    out = extract_keywords(teacher, [ITEM, ITEM], 2, use_teacher=[False, True])
    assert teacher.calls == [(1, 24)]  # only the flagged row was prompted
    assert [s for _, s in out] == [SOURCE_FALLBACK, SOURCE_TEACHER]
    assert extract_keywords(None, [ITEM], 2) == [(fallback_keywords(ITEM, 2), SOURCE_FALLBACK)]

    class NoLLM(FakeTeacher):
        uses_llm = False

    quiet = NoLLM(["relay, capacitor"])
    assert extract_keywords(quiet, [ITEM], 2)[0][1] == SOURCE_FALLBACK and quiet.calls == []
    with pytest.raises(ValueError, match="2 flags for 1 rows"):
        extract_keywords(teacher, [ITEM], 2, use_teacher=[True, False])


def test_extract_keywords_rejects_a_teacher_returning_the_wrong_count():
    class Short(FakeTeacher):
        def generate(self, conversations, max_new_tokens):
            return ["relay, capacitor"]

    with pytest.raises(RuntimeError, match="1 answers for 2 prompts"):
        extract_keywords(Short([]), [ITEM, ITEM], 2)


def test_keywords_rows_columns():
    cols = keywords_rows([3, 4], [(["a b"], SOURCE_TEACHER), ([], SOURCE_FALLBACK)])
    assert cols == {"item_id": [3, 4], "keywords": [["a b"], []], "source": ["teacher", "fallback"]}
