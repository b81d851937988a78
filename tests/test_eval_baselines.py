"""Most-popular baseline and SASRec on tiny synthetic data."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from raygen.eval.baselines import content_rank, most_popular, popularity_counts, popularity_rank
from raygen.eval.metrics import ranking_metrics
from raygen.eval.sasrec import SASRecConfig, fit_sasrec, sasrec_rank


def test_popularity_counts_histories_and_targets():
    histories = [[1, 2, 2], [3], [2, 4]]
    targets = [4, 4, 5]
    counts = popularity_counts(histories, targets)
    assert counts == {1: 1, 2: 3, 3: 1, 4: 3, 5: 1}
    # ties broken by smaller id: 2 and 4 (3 each), then 1, 3, 5 (1 each)
    assert most_popular(counts, 4).tolist() == [2, 4, 1, 3]
    ranks = popularity_rank(histories, targets, n_rows=2, k=3)
    assert ranks.tolist() == [[2, 4, 1], [2, 4, 1]]


def _successor_data(n_items: int, n: int, seed: int):
    """Histories of consecutive items (mod n_items) whose target is the next one."""
    rng = random.Random(seed)
    hist, tgt = [], []
    for _ in range(n):
        start, length = rng.randrange(n_items), rng.randint(1, 6)
        seq = [(start + j) % n_items for j in range(length + 1)]
        hist.append(seq[:-1])
        tgt.append(seq[-1])
    return hist, tgt


@pytest.fixture
def one_thread():
    """Tiny matmuls: a second intra-op thread only adds sync overhead (and stalls on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_sasrec_learns_successor_pattern(one_thread):
    n_items = 40
    hist, tgt = _successor_data(n_items, 2000, seed=0)
    test_hist, test_tgt = _successor_data(n_items, 300, seed=1)
    model = fit_sasrec(hist, tgt, n_items, SASRecConfig(hidden=32, max_len=8, epochs=8, dropout=0.1, lr=3e-3))
    top = sasrec_rank(model, test_hist, k=10)
    assert top.shape == (300, 10)
    m = ranking_metrics(top, np.array(test_tgt))
    assert m["hr@1"] > 0.9, m
    # a popularity baseline cannot do this (targets are uniform), so the model really learned the pattern
    pop = ranking_metrics(popularity_rank(hist, tgt, 300, 10), np.array(test_tgt))
    assert pop["hr@1"] < 0.1


def test_sasrec_rejects_out_of_range_items():
    with pytest.raises(ValueError, match="outside"):
        fit_sasrec([[0, 5]], [1], n_items=3)


def _valid_ndcg10(model, hist, tgt) -> float:
    return ranking_metrics(sasrec_rank(model, hist, k=10), np.array(tgt), ks=(10,))["ndcg@10"]


def _noisy_valid_setup(n_items: int = 20):
    """Successor-pattern training data and 100 valid rows whose targets are noise, so the valid metric peaks
    early and then wanders: ``(n_items, hist, tgt, v_hist, v_tgt)``."""
    hist, tgt = _successor_data(n_items, 400, seed=0)
    rng = random.Random(2)
    v_hist = [[rng.randrange(n_items) for _ in range(3)] for _ in range(100)]
    v_tgt = [rng.randrange(n_items) for _ in range(100)]
    return n_items, hist, tgt, v_hist, v_tgt


def test_sasrec_early_stopping_keeps_best_epoch(one_thread):
    n_items, hist, tgt, v_hist, v_tgt = _noisy_valid_setup()
    cfg = SASRecConfig(hidden=16, n_layers=1, max_len=6, epochs=60, patience=3, min_epochs=0, dropout=0.1,
                       lr=3e-3)
    model = fit_sasrec(hist, tgt, n_items, cfg, valid_histories=v_hist, valid_targets=v_tgt)
    info = model.fit_info
    assert info["stopped_early"] and info["epochs_run"] < cfg.epochs
    assert info["epochs_run"] == info["best_epoch"] + cfg.patience
    assert info["valid_rows"] == 100 and len(info["valid_curve"]) == info["epochs_run"]
    assert max(info["valid_curve"]) == pytest.approx(info["best_valid_ndcg@10"], abs=1e-6)
    # the returned weights are the best epoch's: same valid metric, same weights as training that long
    assert _valid_ndcg10(model, v_hist, v_tgt) == pytest.approx(info["best_valid_ndcg@10"], abs=1e-9)
    fixed = fit_sasrec(hist, tgt, n_items, SASRecConfig(**{**cfg.__dict__, "epochs": info["best_epoch"]}))
    for (k, a), b in zip(model.state_dict().items(), fixed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_sasrec_min_epochs_outlasts_an_early_plateau(one_thread):
    """The same fit with min_epochs: no stop before it (the early best would have stopped it), and the weights
    returned are still the best epoch's."""
    n_items, hist, tgt, v_hist, v_tgt = _noisy_valid_setup()
    base = dict(hidden=16, n_layers=1, max_len=6, epochs=60, patience=3, dropout=0.1, lr=3e-3)
    early = fit_sasrec(hist, tgt, n_items, SASRecConfig(**base, min_epochs=0), v_hist, v_tgt).fit_info
    floor = early["epochs_run"] + 5
    model = fit_sasrec(hist, tgt, n_items, SASRecConfig(**base, min_epochs=floor), v_hist, v_tgt)
    info = model.fit_info
    assert info["epochs_run"] >= floor and info["valid_curve"][:early["epochs_run"]] == early["valid_curve"]
    assert info["best_epoch"] >= early["best_epoch"]
    assert _valid_ndcg10(model, v_hist, v_tgt) == pytest.approx(info["best_valid_ndcg@10"], abs=1e-9)
    capped = fit_sasrec(hist, tgt, n_items, SASRecConfig(**{**base, "epochs": 4}, min_epochs=100), v_hist, v_tgt)
    assert capped.fit_info["epochs_run"] == 4  # never more than epochs


def test_sasrec_without_valid_trains_fixed_epochs(one_thread):
    hist, tgt = _successor_data(10, 50, seed=0)
    model = fit_sasrec(hist, tgt, 10, SASRecConfig(hidden=16, n_layers=1, max_len=6, epochs=2))
    assert model.fit_info["epochs_run"] == 2 and model.fit_info["best_epoch"] is None
    assert model.fit_info["stopped_early"] is False
    with pytest.raises(ValueError, match="or neither"):
        fit_sasrec(hist, tgt, 10, valid_histories=hist)
    with pytest.raises(ValueError, match="outside"):
        fit_sasrec(hist, tgt, 10, valid_histories=[[0, 11]], valid_targets=[1])


def test_sasrec_config_validation():
    from raygen.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="eval.sasrec.patience"):
        load_config(None, ["eval.sasrec.patience=0"])
    with pytest.raises(ConfigError, match="eval.sasrec.epochs"):
        load_config(None, ["eval.sasrec.epochs=0"])
    with pytest.raises(ConfigError, match="eval.sasrec.hidden"):
        load_config(None, ["eval.sasrec.hidden=63"])
    with pytest.raises(ConfigError, match="eval.sasrec.min_epochs"):
        load_config(None, ["eval.sasrec.min_epochs=-1"])
    cfg = load_config(None, ["eval.sasrec.patience=4"])
    assert cfg.eval.sasrec.patience == 4 and cfg.eval.sasrec.epochs == 200


def test_sasrec_valid_data_maps_and_skips():
    import pyarrow as pa

    from raygen.eval.stage import sasrec_valid_data

    samples = pa.table({"split": ["train", "valid", "valid", "valid", "valid", "test"],
                        "history": [[10], [10, 20], [10, 99], [], [30], [20]],
                        "target": [20, 30, 10, 10, 98, 30]})
    hist, tgt, skipped = sasrec_valid_data(samples, {10: 0, 20: 1, 30: 2})
    assert hist == [[0, 1]] and tgt == [2]
    assert skipped == 3  # unknown history item, empty history, unknown target


def test_eval_stage_sasrec_maps_item_ids_both_ways(one_thread):
    """The eval stage's SASRec works on catalog indices; item ids go in and come out through the catalog.

    Item ids here are sparse and shuffled (index k holds item id ``ids[k]``), so an off-by-one, an
    identity mapping or a mapping from the wrong side ranks the wrong items and the assert fails."""
    import pyarrow as pa

    from raygen.eval.config import EvalConfig
    from raygen.eval.rows import Catalog, Rows
    from raygen.eval.stage import baseline_ranks

    n_items = 30
    rng = np.random.default_rng(0)
    ids = rng.choice(np.arange(1000, 100_000), size=n_items, replace=False).astype(np.int64)
    succ = {int(ids[k]): int(ids[(k + 1) % n_items]) for k in range(n_items)}  # a successor chain over ids
    order = rng.permutation(n_items)  # the catalog lists items in another order than the chain
    catalog = Catalog(item_ids=ids[order], sid_matrix=torch.zeros(n_items, 3, dtype=torch.long))

    def rows_of(n, seed):
        hist, tgt = _successor_data(n_items, n, seed)
        return [[int(ids[h]) for h in hs] for hs in hist], [int(ids[t]) for t in tgt]

    th, tt = rows_of(1500, 0)
    vh, vt = rows_of(100, 1)
    samples = pa.table({"split": ["train"] * len(tt) + ["valid"] * len(vt), "history": th + vh,
                        "target": tt + vt})
    test_h, test_t = rows_of(200, 2)
    rows = Rows(row_ids=np.arange(200), prompt_ids=[[0]] * 200, targets=np.array(test_t), histories=test_h)
    cfg = EvalConfig()
    cfg.sasrec = SASRecConfig(hidden=32, max_len=8, epochs=8, patience=8, dropout=0.1, lr=3e-3)
    top = baseline_ranks("sasrec", samples, catalog, rows, cfg, cache := {})
    assert top.shape == (200, cfg.beam_width) and set(top.ravel().tolist()) <= set(ids.tolist())
    expected = np.array([succ[h[-1]] for h in test_h])
    # 0.8 measured; any wrong mapping is at chance (1/30)
    assert (top[:, 0] == expected).mean() > 0.6  # item ids, not indices, and the right ones
    assert "sasrec" in cache and cache["sasrec"].fit_info["valid_skipped_rows"] == 0


def test_content_baseline_ranks_by_cosine():
    item_ids = np.array([1, 2, 3, 4])
    emb_ids = np.array([4, 3, 2, 1])  # embeddings in another order than the catalog
    X = np.array([[-1, 0], [0, 1], [0.8, 0.6], [5, 0]], dtype=np.float32)  # item 1 is (1, 0) scaled by 5
    # last item 1 = (1, 0): cosines 1 -> 1, 2 -> 0.8, 3 -> 0, 4 -> -1
    assert content_rank([[3, 1]], item_ids, emb_ids, X, 4).tolist() == [[1, 2, 3, 4]]
    # last two items 3, 1: query (0.5, 0.5): 2 -> 0.99, 1 and 3 -> 0.71 (tie: catalog order), 4 -> -0.71
    assert content_rank([[3, 1]], item_ids, emb_ids, X, 4, last=2).tolist() == [[2, 1, 3, 4]]
    assert content_rank([[4], [3]], item_ids, emb_ids, X, 2).tolist() == [[4, 3], [3, 2]]


def test_content_baseline_names_what_it_cannot_rank():
    item_ids, emb_ids, X = np.array([1, 2]), np.array([1, 2]), np.eye(2, dtype=np.float32)
    with pytest.raises(ValueError, match=r"history item\(s\) \[7\] have no corpus embedding"):
        content_rank([[1], [7]], item_ids, emb_ids, X, 2)
    with pytest.raises(ValueError, match="empty history"):
        content_rank([[1], []], item_ids, emb_ids, X, 2)
    with pytest.raises(ValueError, match="last must be >= 1"):
        content_rank([[1]], item_ids, emb_ids, X, 2, last=0)


def test_eval_stage_content_baseline_uses_the_run_embeddings_and_eval_content_last():
    from raygen.configbase import ConfigError
    from raygen.eval.config import EvalConfig
    from raygen.eval.rows import Catalog, Rows
    from raygen.eval.stage import baseline_ranks

    catalog = Catalog(item_ids=np.array([10, 20, 30]), sid_matrix=torch.zeros(3, 3, dtype=torch.long))
    emb = (np.array([30, 10, 20]), np.array([[0, 1], [1, 0], [1, 1]], dtype=np.float32))
    rows = Rows(row_ids=np.arange(2), prompt_ids=[[0]] * 2, targets=np.array([20, 30]), histories=[[30, 10], [10]])
    cfg = EvalConfig(beam_width=3, ks=[1, 3])
    # last item 10 = (1, 0): 10 (cos 1), 20 (0.71), 30 (0)
    assert baseline_ranks("content", None, catalog, rows, cfg, {"embeddings": emb}).tolist() == [[10, 20, 30]] * 2
    cfg.content_last = 2  # row 0: mean of 30 and 10 = (0.5, 0.5): 20 first
    assert baseline_ranks("content", None, catalog, rows, cfg, {"embeddings": emb})[0].tolist() == [20, 10, 30]
    with pytest.raises(ValueError, match="need the corpus stage's item embeddings"):
        baseline_ranks("content", None, catalog, rows, cfg, {})
    with pytest.raises(ConfigError, match="eval.content_last"):
        EvalConfig(content_last=0).validate()
    EvalConfig(baselines=["content"]).validate()
