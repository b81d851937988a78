"""SID token strings, the prefix trie and token keywords."""
from __future__ import annotations

import numpy as np
import pytest

from raygen.sid.token_keywords import TOKENS_SCHEMA, token_keyword_rows, tokens_table
from raygen.sid.tokens import SidParseError, parse_sid, parse_token, present_tokens, sid_text, sid_token

CODES = np.array([[1, 2, 0], [1, 2, 1], [1, 3, 0], [4, 2, 0]])


# -- tokens ----------------------------------------------------------------------------------

def test_token_strings_round_trip():
    assert sid_token(0, 12) == "<a_12>" and sid_token(3, 0) == "<d_0>"
    assert sid_text([12, 80, 7]) == "<a_12><b_80><c_7>"
    assert parse_sid("<a_12><b_80><c_7>") == [12, 80, 7]
    assert parse_sid("  <a_0><b_255>\n", levels=2) == [0, 255]
    assert parse_token("<b_5>") == (1, 5)
    for codes in ([0], [255, 0, 17, 3], list(range(26))):
        assert parse_sid(sid_text(codes)) == codes
    assert present_tokens(CODES)[:3] == [(0, 1, "<a_1>"), (0, 4, "<a_4>"), (1, 2, "<b_2>")]
    with pytest.raises(ValueError):
        sid_token(26, 0)
    with pytest.raises(ValueError):
        sid_token(0, -1)


@pytest.mark.parametrize("bad", ["", "   ", "<a_1><c_2>", "<b_1>", "<a_1> <b_2>", "<a_1><b_>", "<a_x>",
                                 "<a_01>", "<A_1>", "a_1", "<a_1><b_2>junk", "<a_-1>", "<a_1><a_2>"])
def test_malformed_sid_text_raises(bad):
    with pytest.raises(SidParseError):
        parse_sid(bad)


def test_parse_checks_level_count():
    with pytest.raises(SidParseError, match="expected 3"):
        parse_sid("<a_1><b_2>", levels=3)
    with pytest.raises(SidParseError):
        parse_token("<a_1><b_2>")


# -- token keywords --------------------------------------------------------------------------

def test_cluster_specific_keyword_outranks_common_one():
    # level 0: items 0-2 have code 0, items 3-5 code 1. "tool" is on every item; "drill" only in
    # cluster 0 (2 of 3 items); "saw" once in cluster 0; "glue" in cluster 1.
    codes = np.array([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]])
    kws = [["Tool", "drill"], ["tool", "drill", "saw"], ["tool"], ["tool", "glue"], ["tool", "glue"], ["tool"]]
    rows = token_keyword_rows(codes, kws, n_keywords=3)
    by_token = {r["token"]: r for r in rows}
    assert [r["token"] for r in rows] == ["<a_0>", "<a_1>", "<b_0>", "<b_1>", "<b_2>"]
    assert by_token["<a_0>"]["keywords"] == ["drill", "saw", "tool"]  # case-folded, tool last
    assert by_token["<a_1>"]["keywords"] == ["glue", "tool"]
    assert by_token["<a_0>"]["description"] == "items about: drill, saw, tool"
    # <b_0> is shared across prefixes: items 0 and 3 (tool+drill, tool+glue) -> drill/glue tie, alphabetical
    assert by_token["<b_0>"]["keywords"] == ["drill", "glue", "tool"]
    assert by_token["<b_2>"]["keywords"] == ["tool"]
    assert token_keyword_rows(codes, kws, n_keywords=1)[0]["keywords"] == ["drill"]
    table = tokens_table(rows)
    assert table.schema == TOKENS_SCHEMA and table.num_rows == 5


def test_token_keywords_without_keywords():
    rows = token_keyword_rows(np.array([[0], [1]]), [[], None], n_keywords=4)
    assert [r["keywords"] for r in rows] == [[], []]
    assert rows[0]["description"] == "items about: (no keywords)"
    with pytest.raises(ValueError, match="keyword lists"):
        token_keyword_rows(np.array([[0]]), [[], []])
