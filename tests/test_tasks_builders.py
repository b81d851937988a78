"""Builders: seqrec, every configured STAR direction, TS-Align, mixing; skips are counted."""
from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from raygen.data.schema import SkipLog
from raygen.tasks.builders import (alignment_examples, build_sft_examples, clean_text, mix, seqrec_examples,
                                   sids_by_item, token_align_examples)
from raygen.tasks.config import TasksConfig
from raygen.tasks.templates import ALIGN_DIRECTIONS, TOKEN_DIRECTIONS


@pytest.fixture
def sids(tiny_catalog):
    return sids_by_item(tiny_catalog["codes"])


def prompt(ex):
    return ex["messages"][-1]["content"]


def test_sids_by_item(sids):
    assert sids[100] == "<a_0><b_0><c_0>" and sids[105] == "<a_1><b_1><c_2>"


def test_seqrec(tiny_catalog, sids):
    skips = SkipLog()
    cfg = TasksConfig(templates={"seqrec": ["H: {history}"]}, max_history=3, history_sep=" | ")
    ex = seqrec_examples(tiny_catalog["samples"], sids, cfg, split="train", skips=skips)
    assert [e["answer"] for e in ex] == [sids[103], sids[106], sids[102]]
    assert prompt(ex[0]) == "H: " + " | ".join(sids[i] for i in (100, 101, 102))
    assert prompt(ex[2]) == "H: " + " | ".join(sids[i] for i in (111, 100, 101))  # last 3 only
    assert ex[0]["messages"] == [{"role": "user", "content": prompt(ex[0])}] and ex[0]["task"] == "seqrec"
    assert skips.counts == Counter({"seqrec: empty history": 1, "seqrec: item without SID": 1})
    assert [e["answer"] for e in seqrec_examples(tiny_catalog["samples"], sids, cfg, split="valid")] == [sids[104]]


def test_every_alignment_direction(tiny_catalog, sids):
    skips = SkipLog()
    ex = alignment_examples(tiny_catalog["items"], sids, TasksConfig(), skips=skips)
    by_task = Counter(e["task"] for e in ex)
    assert set(by_task) == set(ALIGN_DIRECTIONS)
    assert by_task["title2sid"] == by_task["sid2title"] == 12
    for d in ("desc2sid", "titledesc2sid", "sid2desc", "sid2titledesc"):
        assert by_task[d] == 11  # item 105 has no description
        assert skips.counts[f"align {d}: empty description"] == 1
    assert sum(skips.counts.values()) == 4
    item = tiny_catalog["items"].to_pylist()[0]
    sid = sids[item["item_id"]]
    one = {e["task"]: e for e in ex if sid == e["answer"] or sid in prompt(e)}
    assert one["title2sid"]["answer"] == sid and item["title"] in prompt(one["title2sid"])
    assert one["desc2sid"]["answer"] == sid and item["description"] in prompt(one["desc2sid"])
    assert item["title"] in prompt(one["titledesc2sid"]) and item["description"] in prompt(one["titledesc2sid"])
    assert one["sid2title"]["answer"] == item["title"] and sid in prompt(one["sid2title"])
    assert one["sid2desc"]["answer"] == item["description"]
    assert one["sid2titledesc"]["answer"] == f"{item['title']}\n{item['description']}"


def test_direction_subset_and_system_prompt(tiny_catalog, sids):
    cfg = TasksConfig(align_directions=["sid2title"], system_prompt="You recommend items.")
    ex = alignment_examples(tiny_catalog["items"], sids, cfg)
    assert {e["task"] for e in ex} == {"sid2title"} and len(ex) == 12
    assert ex[0]["messages"][0] == {"role": "system", "content": "You recommend items."}


def test_token_alignment(tiny_catalog):
    skips = SkipLog()
    cfg = TasksConfig(templates={"token2desc": ["T {token} L{level}"], "desc2token": ["D {description} K {keywords}"]})
    ex = token_align_examples(tiny_catalog["tokens"], cfg, skips=skips)
    assert Counter(e["task"] for e in ex) == Counter({d: 11 for d in TOKEN_DIRECTIONS})  # <c_3> has nothing
    assert skips.counts == Counter({"token align: no description or keywords": 1})
    row = tiny_catalog["tokens"].to_pylist()[5]  # <b_1>
    t2d = next(e for e in ex if e["task"] == "token2desc" and prompt(e).startswith("T <b_1>"))
    assert prompt(t2d) == "T <b_1> L2" and t2d["answer"] == row["description"]
    d2t = next(e for e in ex if e["task"] == "desc2token" and e["answer"] == "<b_1>")
    assert prompt(d2t) == f"D {row['description']} K {', '.join(row['keywords'])}"


def test_token_alignment_falls_back_to_keywords():
    rows = [{"level": 0, "code": 3, "token": "<a_3>", "keywords": ["tea", "mug"], "description": ""}]
    ex = token_align_examples(rows, TasksConfig(token_directions=["token2desc"]))
    assert len(ex) == 1 and ex[0]["answer"] == "tea, mug"


def test_mix_counts_and_determinism():
    a = [{"task": "a", "i": i} for i in range(10)]
    b = [{"task": "b", "i": i} for i in range(4)]
    m = mix(a, b, ratio=0.5, seed=3)
    assert Counter(e["task"] for e in m) == Counter({"a": 10, "b": 5})
    assert sorted(e["i"] for e in m if e["task"] == "a") == list(range(10))
    assert set(e["i"] for e in m if e["task"] == "b") == {0, 1, 2, 3}  # a full pass before repeats
    assert m == mix(a, b, ratio=0.5, seed=3) and m != mix(a, b, ratio=0.5, seed=4)
    assert mix(a, b, ratio=0.0, seed=0).__len__() == 10
    with pytest.raises(ValueError):
        mix(a, b, ratio=-1, seed=0)


def test_build_sft_examples(tiny_catalog):
    cfg = TasksConfig(align_ratio=1.0, token_ratio=2.0)
    args = (tiny_catalog["samples"], tiny_catalog["items"], tiny_catalog["codes"], tiny_catalog["tokens"], cfg)
    train = build_sft_examples(*args, split="train")
    tasks = Counter(e["task"] for e in train)
    assert tasks["seqrec"] == 3
    assert sum(tasks[d] for d in ALIGN_DIRECTIONS) == 3 and sum(tasks[d] for d in TOKEN_DIRECTIONS) == 6
    assert train == build_sft_examples(*args, split="train")
    assert Counter(e["task"] for e in build_sft_examples(*args, split="test")) == Counter({"seqrec": 1})


def test_search_examples_train_only_and_mixed_by_ratio(tiny_catalog):
    from raygen.data.schema import SkipLog
    from raygen.lm.vocab import sid_text
    from raygen.tasks.builders import search_examples

    codes = {r["item_id"]: r["codes"] for r in tiny_catalog["codes"].to_pylist()}
    item = next(iter(codes))
    queries = pa.table({"item_id": [item, item, 424242], "query": ["steel  bolt", "test query", "lost"],
                        "split": ["train", "test", "train"]})
    skips = SkipLog()
    ex = search_examples(queries, {i: sid_text(c) for i, c in codes.items()}, TasksConfig(), "train", skips)
    assert len(ex) == 1 and ex[0]["task"] == "query2sid" and ex[0]["answer"] == sid_text(codes[item])
    assert "steel bolt" in ex[0]["messages"][-1]["content"] and skips.to_dict()["total"] == 1
    cfg = TasksConfig(align_ratio=0, token_ratio=0, search_ratio=2.0)
    args = (tiny_catalog["samples"], tiny_catalog["items"], tiny_catalog["codes"], tiny_catalog["tokens"], cfg)
    tasks = Counter(e["task"] for e in build_sft_examples(*args, "train", queries=queries))
    assert tasks == Counter({"seqrec": 3, "query2sid": 6})  # 2 per seqrec example, sampled from 1 train query
    with pytest.raises(ValueError, match="needs the corpus stage's queries"):
        build_sft_examples(*args, "train")


def test_clean_text():
    assert clean_text("  a\n\tb  ", 10) == "a b"
    assert clean_text("alpha beta gamma", 12) == "alpha beta"
    assert clean_text(None, 5) == ""
