"""`raygen recommend` on Ray workers (the generation pool) ranks exactly as in process, in input order."""
from __future__ import annotations

import json

import pytest

from raygen.recommend import Recommender
from raygen.recommend_batch import recommend_file

pytestmark = pytest.mark.integration


def test_workers_rank_as_in_process(tiny_run, ray_local, tmp_path):
    histories = [[100, 101], [105, 106, 107], [103], [101, 100, 110], [104, 108]]
    src = tmp_path / "users.jsonl"
    src.write_text("".join(json.dumps({"user_id": f"u{i}", "history": h}) + "\n" for i, h in enumerate(histories))
                   + json.dumps({"user_id": "bad", "history": [4242]}) + "\n")
    local = Recommender(tiny_run)
    with Recommender(tiny_run, workers=2) as rec:
        assert rec.model is None  # the actors load the model, the driver does not
        out = tmp_path / "recs.jsonl"
        summary = recommend_file(rec, src, out, k=4, exclude_history=True, hybrid=False, chunk_rows=3, progress=False)
        assert rec._pool is not None and len(rec._pool) == 2
        # fewer rows than workers: one actor gets an empty shard
        one = rec.top_k([100, 101], k=4, hybrid=False)
    assert rec._pool is None  # closed on leaving the block
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user_id"] for r in rows] == [f"u{i}" for i in range(5)] + ["bad"]
    for r, h in zip(rows, histories):
        expected = local.top_k(h, k=4, exclude_history=True, hybrid=False)
        assert r["item_ids"] == [x["item_id"] for x in expected]
        assert r["scores"] == pytest.approx([x["score"] for x in expected], abs=1e-5)
    assert [x["item_id"] for x in one] == [x["item_id"] for x in local.top_k([100, 101], k=4, hybrid=False)]
    assert summary["ranked"] == 5 and summary["skipped"]["counts"] == {"unknown_items": 1}
    assert summary["precision"]["bf16"] is False  # eval.bf16=false, resolved by each actor
