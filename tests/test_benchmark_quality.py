"""The quality benchmark's cold / warm summary (benchmarks/quality.py), on hand-made rankings."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from benchmarks.quality import cold_rows, cold_warm, per_row
from raygen.eval.metrics import cell, summarize


def test_cold_warm_summarizes_each_slice_over_seeds():
    samples = pa.table({"split": ["train", "train", "test", "test", "test", "test"],
                        "history": [[1], [1, 2], [2], [3], [1], [4]], "target": [2, 3, 9, 3, 8, 2]})
    row_ids, targets = np.array([2, 3, 4, 5]), np.array([9, 3, 8, 2])
    cold = cold_rows(samples, row_ids, targets)
    assert cold.tolist() == [True, False, True, False]  # 9 and 8 are never training targets
    top_a = np.array([[9, 1], [1, 3], [1, 2], [2, 1]])  # hits: rank 0, rank 1, miss, rank 0
    top_b = np.array([[1, 9], [3, 1], [8, 1], [1, 3]])  # hits: rank 1, rank 0, rank 0, miss
    out = cold_warm({"m": [per_row(top_a, targets), per_row(top_b, targets)]}, cold)
    assert out["m"]["cold"]["n"] == 2 and out["m"]["warm"]["n"] == 2
    ndcg = lambda r: 1 / np.log2(r + 2)  # noqa: E731
    cold_seeds = [(1 + 0) / 2, (ndcg(1) + 1) / 2]  # seed a: rows 9 (rank 0), 8 (miss); seed b: rank 1, rank 0
    warm_seeds = [(ndcg(1) + 1) / 2, (1 + 0) / 2]
    assert np.allclose(out["m"]["cold"]["ndcg@10"]["seeds"], cold_seeds)
    assert np.allclose(out["m"]["warm"]["ndcg@10"]["seeds"], warm_seeds)
    assert out["m"]["cold"]["hr@1"]["mean"] == (0.5 + 0.5) / 2
    lo, hi = out["m"]["cold"]["ndcg@10"]["ci95"]
    assert lo <= out["m"]["cold"]["ndcg@10"]["mean"] <= hi


def test_cold_warm_slice_without_rows_has_only_its_count():
    targets = np.array([1, 2])
    out = cold_warm({"m": [per_row(np.array([[1], [2]]), targets)]}, np.array([False, False]))
    assert out["m"]["cold"] == {"n": 0} and out["m"]["warm"]["hr@1"]["mean"] == 1.0


def test_differences_pair_each_variant_with_mean_and_what_it_is_built_on():
    from benchmarks.quality import differences

    n = 50
    rows = {name: [{"ndcg@10": np.full(n, v)}] for name, v in
            (("mean", 0.10), ("sa_init", 0.08), ("sa_init+ts_align", 0.09), ("random", 0.05))}
    base = {"popularity": {"rows": [{"ndcg@10": np.full(n, 0.04)}]}}
    d = differences(rows, base)
    assert set(d["mean"]) == {"popularity"}
    assert set(d["random"]) == {"popularity", "mean"}
    assert set(d["sa_init+ts_align"]) == {"popularity", "mean", "sa_init"}
    assert d["sa_init+ts_align"]["sa_init"]["diff"] == pytest.approx(0.01)
    assert d["sa_init+ts_align"]["mean"]["diff"] == pytest.approx(-0.01)
    del rows["sa_init"]   # the variant it is built on did not run: no such pair
    assert set(differences(rows, base)["sa_init+ts_align"]) == {"popularity", "mean"}


def test_cell_shows_the_spread_over_seeds_only_when_there_are_several():
    rows = [{"ndcg@10": np.array([0.0, 1.0, 1.0, 0.0])}, {"ndcg@10": np.array([1.0, 1.0, 1.0, 0.0])}]
    two = cell(summarize(rows, ["ndcg@10"])["ndcg@10"])
    assert two.startswith("0.6250 ± 0.1250 [")
    one = cell(summarize(rows[:1], ["ndcg@10"])["ndcg@10"])
    assert one.startswith("0.5000 ± – [")
