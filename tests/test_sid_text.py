"""SID token strings, the prefix trie and token keywords."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raygen.sid.token_keywords import TOKENS_SCHEMA, token_keyword_rows, tokens_table
from raygen.sid.tokens import SidParseError, parse_sid, parse_token, present_tokens, sid_text, sid_token
from raygen.sid.trie import SidTrie

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


# -- trie ------------------------------------------------------------------------------------

def test_trie_allowed_and_items():
    trie = SidTrie(CODES, item_ids=[10, 11, 12, 13])
    assert trie.allowed([]) == [1, 4]
    assert trie.allowed([1]) == [2, 3]
    assert trie.allowed([1, 2]) == [0, 1]
    assert trie.allowed([4, 2]) == [0]
    assert trie.allowed([4, 3]) == [] and trie.allowed([7]) == []
    assert trie.allowed([1, 2, 1]) == []  # complete
    assert trie.contains([1, 3, 0]) and not trie.contains([1, 3]) and not trie.contains([1, 3, 1])
    assert trie.item_of([1, 2, 1]) == 11 and trie.item_of([1, 2]) is None
    with pytest.raises(ValueError, match="duplicate SID"):
        SidTrie([[1, 2], [1, 2]])


def test_trie_token_ids_tensor_and_json(tmp_path):
    trie = SidTrie(CODES, item_ids=[10, 11, 12, 13])
    table = {(lvl, c): 1000 + 100 * lvl + c for lvl in range(3) for c in range(5)}
    tok = trie.to_token_ids(table)
    seqs = tok.sequences_tensor()
    assert seqs.dtype == torch.long and seqs.shape == (4, 3)
    assert seqs[0].tolist() == [1001, 1102, 1200]
    assert tok.allowed([1001]) == [1102, 1103]
    assert tok.item_of([1004, 1102, 1200]) == 13
    with pytest.raises(KeyError, match="level 0 code 4"):
        trie.to_token_ids({k: v for k, v in table.items() if k != (0, 4)})
    trie.save(tmp_path / "trie.json")
    back = SidTrie.load(tmp_path / "trie.json")
    np.testing.assert_array_equal(back.sequences, CODES)
    assert back.allowed([1]) == [2, 3] and back.item_of([4, 2, 0]) == 13


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
