"""Ranking metrics on hand-computed cases, invalid counting and the predictions table."""
from __future__ import annotations

import math

import numpy as np
import pytest

from raygen.eval.metrics import (PAD_ITEM, collapse_stats, evaluate_rankings, hit_ranks, indices_to_item_ids,
                                 ranking_metrics, write_predictions)
from raygen.io import read_parquet


def test_hand_computed_hr_ndcg():
    topk = np.array([[5, 7, 9, 11, 13],    # target 5 at rank 0
                     [1, 2, 3, 4, 6],      # target 3 at rank 2
                     [8, 9, 10, 12, 14],   # target 99 absent
                     [20, 21, 22, 23, 24]])  # target 24 at rank 4
    targets = np.array([5, 3, 99, 24])
    assert hit_ranks(topk, targets).tolist() == [0, 2, -1, 4]
    m = ranking_metrics(topk, targets, ks=(1, 3, 5, 10))
    assert m["hr@1"] == 0.25
    assert m["hr@3"] == 0.5
    assert m["hr@5"] == 0.75 and m["hr@10"] == 0.75  # K beyond the list width scores the whole list
    assert m["ndcg@1"] == 0.25
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 4)   # = (1 + 0.5) / 4
    assert m["ndcg@5"] == pytest.approx((1 + 0.5 + 1 / math.log2(6)) / 4)


def test_invalid_and_unfilled_are_counted():
    topk = np.array([[1, 2, 500], [3, -1, -1], [2, 2, 1]])
    m = evaluate_rankings(topk, np.array([500, 3, 1]), catalog_item_ids=[1, 2, 3, 4])
    assert m["n"] == 3
    assert m["invalid"] == 1          # 500 is not in the catalog
    assert m["unfilled"] == 2
    assert m["rows_with_duplicates"] == 1
    assert m["hr@3"] == pytest.approx(1.0)  # 500 hits here too: counting, not dropping, is the contract


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="topk_items"):
        ranking_metrics(np.array([1, 2]), np.array([1]))


def test_indices_to_item_ids_keeps_padding():
    ids = indices_to_item_ids(np.array([[2, 0, -1]]), np.array([10, 20, 30]))
    assert ids.tolist() == [[30, 10, -1]]


def test_predictions_table_round_trip(tmp_path):
    path = tmp_path / "predictions.parquet"
    write_predictions(path, [7, 8], [1, 2], np.array([[1, 3], [4, 2]]), np.array([[-0.5, -1.0], [-0.1, -2.0]]))
    t = read_parquet(path).to_pydict()
    assert t["row_id"] == [7, 8] and t["target"] == [1, 2]
    assert t["topk"] == [[1, 3], [4, 2]]
    assert t["scores"][1] == pytest.approx([-0.1, -2.0])
    with pytest.raises(ValueError, match="shape mismatch"):
        write_predictions(path, [7], [1, 2], np.array([[1, 3]]), np.array([[0.0, 0.0]]))


def test_collapse_stats_same_list_for_everyone():
    topk = np.tile(np.arange(10, 20), (40, 1))
    topk[:10] = np.arange(20, 30)          # a quarter of the rows differ, but 75% share one list
    c = collapse_stats(topk, n_catalog=200)
    assert c["distinct_top1"] == 2
    assert c["coverage@10"] == pytest.approx(20 / 200)
    assert c["same_top10_share"] == pytest.approx(0.75)
    assert c["collapsed"] is True


def test_collapse_stats_one_top1_item_is_collapsed_even_if_lists_differ():
    rng = np.random.default_rng(0)
    topk = np.stack([np.r_[7, rng.permutation(np.arange(8, 100))[:9]] for _ in range(50)])
    c = collapse_stats(topk, n_catalog=100)
    assert c["distinct_top1"] == 1 and c["same_top10_share"] < 0.1
    assert c["collapsed"] is True


def test_collapse_stats_diverse_rankings():
    rng = np.random.default_rng(1)
    topk = np.stack([rng.permutation(100)[:10] for _ in range(50)])
    c = collapse_stats(topk, n_catalog=100)
    assert c["distinct_top1"] > 20 and c["same_top10_share"] == pytest.approx(1 / 50)
    assert c["coverage@10"] > 0.9
    assert c["collapsed"] is False


def test_collapse_stats_ignores_padding_and_needs_enough_rows():
    topk = np.array([[1, 2, PAD_ITEM], [1, 2, PAD_ITEM], [3, PAD_ITEM, PAD_ITEM]])
    c = collapse_stats(topk, n_catalog=10)
    assert c["distinct_top1"] == 2 and c["coverage@10"] == pytest.approx(0.3)
    assert c["same_top10_share"] == pytest.approx(2 / 3)
    assert c["collapsed"] is False  # 3 rows: too few to call


def test_evaluate_rankings_includes_collapse_stats_with_catalog():
    topk = np.tile(np.array([1, 2, 3]), (25, 1))
    m = evaluate_rankings(topk, np.full(25, 2), catalog_item_ids=[1, 2, 3, 4])
    assert m["collapsed"] is True and m["distinct_top1"] == 1 and m["coverage@10"] == pytest.approx(0.75)
    assert "collapsed" not in evaluate_rankings(topk, np.full(25, 2))
