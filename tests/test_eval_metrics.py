"""Ranking metrics on hand-computed cases, invalid counting and the predictions table."""
from __future__ import annotations

import math

import numpy as np
import pytest

from raygen.eval.metrics import (PAD_ITEM, bootstrap_ci, collapse_stats, confidence, evaluate_rankings, hit_ranks,
                                 indices_to_item_ids, ranking_metrics, write_predictions)
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


def test_confidence_intervals_and_paired_differences():
    rng = np.random.default_rng(0)
    n = 2000
    targets = rng.integers(0, 1000, size=n)
    noise = rng.integers(1000, 2000, size=(n, 10))  # never a target
    perfect = noise.copy()
    perfect[:, 0] = targets  # every row a hit at rank 1
    half = noise.copy()
    half[::2, 0] = targets[::2]  # hits at rank 1 on every second row
    half_again = noise.copy()
    half_again[1::2, 0] = targets[1::2]  # same mean as `half`, on the other rows
    conf = confidence({"perfect": perfect, "half": half, "half_again": half_again}, targets, "ndcg@10",
                      [("perfect", "half"), ("half", "half_again"), ("half", "half")])
    assert conf["n"] == n and conf["resamples"] == 1000 and conf["metric"] == "ndcg@10"
    assert conf["methods"]["perfect"] == {"mean": 1.0, "ci95": [1.0, 1.0]}  # no spread to resample
    lo, hi = conf["methods"]["half"]["ci95"]
    assert lo < 0.5 < hi and hi - lo < 0.06  # ~ +-1.96 * sqrt(.25 / 2000) = +-0.022
    assert conf["methods"]["half"]["ci95"] == bootstrap_ci(np.arange(n) % 2 == 0)  # same resamples as alone
    big = conf["paired"]["perfect - half"]
    assert big["diff"] == pytest.approx(0.5) and big["ci95"][0] > 0.45  # a real difference excludes 0
    even = conf["paired"]["half - half_again"]
    assert even["diff"] == 0.0 and even["ci95"][0] < 0 < even["ci95"][1]  # no difference: 0 inside
    assert conf["paired"]["half - half"]["ci95"] == [0.0, 0.0]  # paired: identical rankings never differ
    assert confidence({"half": half}, targets, "hr@1", [])["methods"]["half"]["mean"] == 0.5
    with pytest.raises(ValueError, match="metric must be"):
        confidence({"half": half}, targets, "mrr", [])
