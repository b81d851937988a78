"""Cold / warm slices: the row partition and per-slice metrics, checked by hand."""
import numpy as np
import pyarrow as pa
import pytest

from raygen.eval.slices import cold_mask, slice_metrics, training_targets


def test_training_targets_are_the_train_splits_only():
    samples = pa.table({"split": ["train", "train", "valid", "test"], "target": [5, 7, 9, 11],
                        "history": [[1], [2], [3], [4]]})
    assert training_targets(samples).tolist() == [5, 7]
    assert cold_mask(np.array([5, 9, 7, 11]), training_targets(samples)).tolist() == [False, True, False, True]


def test_slice_metrics_by_hand():
    topk = np.array([[5, 1], [2, 9], [7, 3], [4, 6]])
    targets = np.array([5, 9, 8, 6])
    cold = np.array([False, True, False, True])
    s = slice_metrics(topk, targets, cold, ks=[1, 2])
    assert s["warm"]["n"] == 2 and s["cold"]["n"] == 2
    assert s["warm"]["hr@1"] == 0.5 and s["warm"]["hr@2"] == 0.5            # row 0 hit at 1, row 2 missed
    assert s["cold"]["hr@1"] == 0.0 and s["cold"]["hr@2"] == 1.0            # both at rank 2
    assert s["cold"]["ndcg@2"] == pytest.approx(1 / np.log2(3))
    empty = slice_metrics(topk, targets, np.zeros(4, dtype=bool), ks=[1])
    assert empty["cold"] == {"n": 0} and empty["warm"]["n"] == 4
