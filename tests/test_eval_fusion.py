"""Reciprocal rank fusion of the model's ranking with a training-free one (raygen.eval.fusion)."""
from __future__ import annotations

import numpy as np
import pytest

from raygen.eval.fusion import HYBRID, rrf_fuse, serving_choice
from raygen.eval.metrics import PAD_ITEM


def test_rrf_scores_by_reciprocal_rank_and_breaks_ties_by_the_first_ranking():
    model = np.array([[1, 2, 3]])
    content = np.array([[4, 3, 1]])
    # k0 = 1: 1 -> 1/1 + 1/3, 2 -> 1/2, 3 -> 1/3 + 1/2, 4 -> 1/1
    assert rrf_fuse([model, content], 4, k0=1).tolist() == [[1, 4, 3, 2]]
    # k0 = 60: 1 (1/60 + 1/62 = 0.03280) > 3 (1/62 + 1/61 = 0.03252) > 4 (1/60) > 2 (1/61)
    assert rrf_fuse([model, content], 4).tolist() == [[1, 3, 4, 2]]
    # equal scores keep the first ranking's order: 2 and 5 both 1/61
    assert rrf_fuse([np.array([[1, 2]]), np.array([[1, 5]])], 3).tolist() == [[1, 2, 5]]
    # a weight of 0 drops a ranking's say but keeps its items as candidates after the others
    assert rrf_fuse([model, content], 4, weights=[1, 0]).tolist() == [[1, 2, 3, 4]]


def test_rrf_ignores_pad_slots_and_pads_short_rows():
    model = np.array([[7, PAD_ITEM, PAD_ITEM], [1, 2, 3]])
    content = np.array([[PAD_ITEM], [9]])
    got = rrf_fuse([model, content], 3)
    assert got[0].tolist() == [7, PAD_ITEM, PAD_ITEM]
    assert got[1].tolist() == [1, 9, 2]  # 1 and 9 at 1/60 each (tie: model first), then 2 at 1/61


def test_rrf_rejects_mismatched_rows_and_bad_weights():
    with pytest.raises(ValueError, match="same rows"):
        rrf_fuse([np.zeros((2, 3), int), np.zeros((3, 3), int)], 3)
    with pytest.raises(ValueError, match="one weight"):
        rrf_fuse([np.zeros((2, 3), int)], 3, weights=[1, 1])
    with pytest.raises(ValueError, match="no rankings"):
        rrf_fuse([], 3)


def test_serving_choice_is_decided_on_the_valid_split_only():
    def tables(model, hybrid):
        return {"raygen": {"ndcg@10": model, "hr@10": 0.5, "n": 40}, HYBRID: {"ndcg@10": hybrid, "hr@10": 0.9}}

    # the hybrid wins on test but loses on valid: the model is served (test never decides)
    got = serving_choice({"valid": tables(0.30, 0.25), "test": tables(0.30, 0.40)})
    assert got["ranking"] == "raygen" and got["chosen_on"] == "valid" and got["n_rows"] == 40
    assert (got["raygen"], got[HYBRID]) == (0.30, 0.25) and "0.2500 vs raygen 0.3000" in got["why"]
    assert serving_choice({"valid": tables(0.30, 0.31), "test": tables(0.30, 0.20)})["ranking"] == HYBRID
    assert serving_choice({"valid": tables(0.30, 0.30)})["ranking"] == "raygen"  # a tie keeps the model
    assert serving_choice({"valid": tables(0.30, 0.20)}, metric="hr@10")["ranking"] == HYBRID
    # no valid split, or no hybrid row (eval.fusion false): the model, saying why
    for per_split in ({"test": tables(0.1, 0.9)}, {"valid": {"raygen": {"ndcg@10": 0.1, "n": 3}}}):
        got = serving_choice(per_split)
        assert got["ranking"] == "raygen" and got["chosen_on"] is None and "valid" in got["why"]


def test_serving_choice_carries_the_valid_difference_and_says_when_it_holds_zero():
    def tables(model, hybrid):
        return {"raygen": {"ndcg@10": model, "n": 40}, HYBRID: {"ndcg@10": hybrid}}

    def intervals(lo, hi):
        return {"valid": {"ndcg@10": {"paired": {f"{HYBRID} - raygen": {"diff": 0.01, "ci95": [lo, hi]}}}}}

    clear = serving_choice({"valid": tables(0.30, 0.31)}, intervals=intervals(0.004, 0.016))
    assert clear["ranking"] == HYBRID and clear["diff_ci95"] == [0.004, 0.016]
    assert "difference +0.0100 [+0.0040, +0.0160])" in clear["why"] and "holds 0" not in clear["why"]
    unclear = serving_choice({"valid": tables(0.30, 0.31)}, intervals=intervals(-0.002, 0.022))
    assert unclear["ranking"] == HYBRID and "an interval that holds 0: the valid rows do not separate" in unclear["why"]
    plain = serving_choice({"valid": tables(0.30, 0.31)})  # no intervals: the figures alone
    assert "diff_ci95" not in plain and plain["why"].endswith("(40 rows)")
