"""benchmarks/new_items.py (issue #12, items added after training): the hold-out, the held-out SIDs, the
evaluation catalog, the content baseline, and one tiny end-to-end run of the script (no Ray)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from benchmarks.new_items import held_out_sids, hold_out, pick_new_items, row_slices, with_new_share
from benchmarks.quality import per_row
from raygen.data.schema import samples_table
from raygen.sid.config import SidConfig

ROOT = Path(__file__).resolve().parents[1]


def _samples() -> pa.Table:
    return samples_table([
        {"user_id": "u1", "history": [1], "target": 2, "split": "train"},
        {"user_id": "u1", "history": [1, 2], "target": 9, "split": "train"},      # target new: dropped
        {"user_id": "u1", "history": [1, 2, 9], "target": 3, "split": "train"},   # 9 cut out
        {"user_id": "u1", "history": [1, 2, 9, 3], "target": 4, "split": "valid"},  # 9 cut out
        {"user_id": "u1", "history": [1, 2, 9, 3, 4], "target": 8, "split": "test"},
        {"user_id": "u2", "history": [9], "target": 5, "split": "train"},         # history empty: dropped
        {"user_id": "u2", "history": [9, 5], "target": 8, "split": "valid"},      # target new: dropped
        {"user_id": "u2", "history": [9, 5, 8], "target": 6, "split": "test"},
    ])


def test_hold_out_removes_new_items_from_training_rows_and_counts_it():
    held, counts = hold_out(_samples(), np.array([8, 9]))
    train_valid = [r for r in held.to_pylist() if r["split"] != "test"]
    assert all(r["target"] not in (8, 9) and not {8, 9} & set(r["history"]) and r["history"] for r in train_valid)
    assert [(r["history"], r["target"]) for r in train_valid] == [([1], 2), ([1, 2], 3), ([1, 2, 3], 4)]
    assert counts["train"] == {"rows_in": 4, "dropped_target_new": 1, "histories_cut": 2, "history_items_removed": 2,
                               "dropped_history_empty": 1, "rows_out": 2}
    assert counts["valid"] == {"rows_in": 2, "dropped_target_new": 1, "histories_cut": 1, "history_items_removed": 1,
                               "dropped_history_empty": 0, "rows_out": 1}
    assert counts["test"] == {"rows": 2, "target_new": 1, "history_holds_new": 2}
    # test rows are kept as they are, in order
    assert [r for r in held.to_pylist() if r["split"] == "test"] == \
        [r for r in _samples().to_pylist() if r["split"] == "test"]
    assert held.schema == _samples().schema


def test_pick_new_items_draws_test_targets_only_seeded():
    samples = _samples()
    catalog = np.arange(1, 11)  # 10 items; test targets 8 and 6
    picked = pick_new_items(samples, catalog, 0.2, seed=3)
    assert sorted(picked.tolist()) == [6, 8]
    one = pick_new_items(samples, catalog, 0.1, seed=0)
    assert len(one) == 1 and one[0] in (6, 8)
    assert np.array_equal(one, pick_new_items(samples, catalog, 0.1, seed=0))
    with pytest.raises(ValueError, match="pool"):
        pick_new_items(samples, catalog, 0.5, seed=0)


@pytest.fixture(scope="module")
def catalog():
    rng = np.random.default_rng(0)
    ids = np.arange(100, 160)
    X = rng.normal(size=(60, 8)).astype(np.float32)
    keywords = [[f"kw{i % 7}", f"shared{i % 3}"] for i in range(60)]
    new_ids = np.array([103, 117, 131, 140, 158])
    for i in new_ids - 100:
        keywords[i] = ["onlynew"]
    return ids, X, keywords, new_ids


def test_held_out_sids_fit_old_items_only_and_assign_new_ones(catalog):
    from raygen.sid.assign import assign_new_items
    from raygen.sid.stage import fit_unique_codes

    ids, X, keywords, new_ids = catalog
    cfg = SidConfig(method="rqkmeans", levels=2, codebook_size=4, kmeans_iters=10)
    perm = np.random.default_rng(1).permutation(len(ids))  # file order does not matter
    s = held_out_sids(cfg, ids[perm], X[perm], [keywords[i] for i in perm], new_ids)
    old = ~np.isin(ids, new_ids)
    assert np.array_equal(s.old_ids, ids[old]) and np.array_equal(s.new_ids, new_ids)
    # the quantizer saw the old items only: the same fit on them gives the same codes
    _, _, old_codes, _, _ = fit_unique_codes(cfg, ids[old], X[old])
    assert np.array_equal(s.old_codes, old_codes)
    # the new items' SIDs are the new-item path's, and collide with no old SID nor with each other
    expected, _ = assign_new_items(s.quantizer, X[~old], new_ids, old_codes, ids[old])
    assert np.array_equal(s.new_codes, expected)
    assert not set(map(tuple, s.old_codes.tolist())) & set(map(tuple, s.new_codes.tolist()))
    assert len(set(map(tuple, s.new_codes.tolist()))) == len(new_ids)
    assert s.report["new_assignment"]["n_new"] == len(new_ids)
    # token keywords come from the old items only
    assert all("onlynew" not in r["keywords"] for r in s.token_rows) and any(r["keywords"] for r in s.token_rows)
    # the evaluation catalog holds old + new items; the vocabulary every token of both
    all_codes = s.codes_table("all")
    assert all_codes.column("item_id").to_pylist() == ids.tolist()
    assert s.codes_table("old").column("item_id").to_pylist() == ids[old].tolist()
    vocab = {(r["level"], r["code"]) for r in s.vocab_rows()}
    assert vocab == {(lvl, c) for codes in all_codes.column("codes").to_pylist() for lvl, c in enumerate(codes)}
    assert len(s.vocab_rows()) - len(s.token_rows) == s.report["tokens_only_new_items_use"]
    assert s.digest() == held_out_sids(cfg, ids, X, keywords, new_ids).digest()


def test_saved_hold_out_is_reused_on_the_same_inputs_only(catalog, tmp_path):
    from benchmarks.new_items import inputs_digest, load_holdout, save_holdout

    ids, X, keywords, new_ids = catalog
    cfg = SidConfig(method="rqkmeans", levels=2, codebook_size=4, kmeans_iters=10)
    s = held_out_sids(cfg, ids, X, keywords, new_ids)
    inputs = inputs_digest(cfg, ids, X, keywords, new_ids)
    folder = tmp_path / "holdout"
    assert load_holdout(folder, inputs) is None                       # nothing saved yet
    save_holdout(folder, s, {"dropped": 0}, inputs)
    back = load_holdout(folder, inputs)
    assert back is not None and back.digest() == s.digest()
    for name in ("old_ids", "old_codes", "new_ids", "new_codes"):
        assert np.array_equal(getattr(back, name), getattr(s, name)), name
    assert back.token_rows == s.token_rows and back.vocab_rows() == s.vocab_rows()
    assert np.array_equal(back.quantizer.encode(X[:5]), s.quantizer.encode(X[:5]))
    # other inputs (embeddings that differ, another quantizer config): fit again
    assert load_holdout(folder, inputs_digest(cfg, ids, X + 1e-3, keywords, new_ids)) is None
    other = SidConfig(method="rqkmeans", levels=2, codebook_size=8, kmeans_iters=10)
    assert load_holdout(folder, inputs_digest(other, ids, X, keywords, new_ids)) is None
    # codes edited by hand no longer match the recorded digest: a clear error, not silent reuse
    import pyarrow.parquet as pq

    codes = pq.read_table(folder / "codes.parquet").to_pydict()
    codes["codes"][0] = [c + 1 for c in codes["codes"][0]]
    pq.write_table(pa.table(codes, schema=pq.read_schema(folder / "codes.parquet")), folder / "codes.parquet")
    with pytest.raises(ValueError, match="damaged hold-out"):
        load_holdout(folder, inputs)


def test_evaluation_trie_holds_old_and_new_items(catalog, tiny_tokenizer, tiny_llama):
    from raygen.eval.rows import Catalog
    from raygen.lm.vocab import add_sid_tokens

    ids, X, keywords, new_ids = catalog
    s = held_out_sids(SidConfig(method="rqkmeans", levels=2, codebook_size=4, kmeans_iters=10), ids, X, keywords,
                      new_ids)
    add_sid_tokens(tiny_llama(), tiny_tokenizer, [r["token"] for r in s.vocab_rows()])
    cat = Catalog.from_codes(s.codes_table("all"), tiny_tokenizer)
    assert set(cat.item_ids.tolist()) == set(ids.tolist())
    assert len({tuple(r) for r in cat.sid_matrix.tolist()}) == len(ids)  # every trie path is one item


def test_slices_and_new_share():
    targets = np.array([8, 2, 5, 9])
    train = samples_table([{"user_id": "u", "history": [1], "target": 2, "split": "train"}])
    m = row_slices(targets, np.array([8, 9]), train)
    assert m["new"].tolist() == [True, False, False, True]
    assert m["old_warm"].tolist() == [False, True, False, False] and m["old_cold"].tolist() == [False, False, True, False]
    topk = np.array([[8, 1], [1, 2], [3, 4], [1, 9]])
    r = with_new_share(per_row(topk, targets), topk, np.array([8, 9]))
    assert r["new@10"].tolist() == [1, 0, 0, 1] and r["hr@10"].tolist() == [1, 1, 0, 1]


def make_tiny_run(path: Path) -> Path:
    """A run folder with what benchmarks/new_items.py reads: a synthetic catalog (data/), random text
    embeddings and keywords (corpus/) and a config.yaml with a small RQ-KMeans sids section."""
    from raygen.data import DataConfig, SyntheticConfig
    from raygen.data.synthetic import load_synthetic
    from raygen.io import write_parquet

    items, samples, _ = load_synthetic(DataConfig(max_history=5, synthetic=SyntheticConfig(
        n_items=40, n_users=30, min_seq_len=4, max_seq_len=7)))
    ids = np.asarray(items.column("item_id").to_numpy())
    rng = np.random.default_rng(0)
    write_parquet(path / "data/items.parquet", items)
    write_parquet(path / "data/samples.parquet", samples)
    write_parquet(path / "corpus/embeddings.parquet", pa.table({
        "item_id": pa.array(ids, pa.int64()),
        "embedding": pa.array(list(rng.normal(size=(len(ids), 16)).astype(np.float32)), pa.list_(pa.float32(), 16))}))
    titles = items.column("title").to_pylist()
    write_parquet(path / "corpus/keywords.parquet", pa.table({
        "item_id": pa.array(ids, pa.int64()), "keywords": [t.lower().split()[:3] for t in titles],
        "source": ["fallback"] * len(ids)}))
    (path / "config.yaml").write_text(yaml.safe_dump({"sids": {"method": "rqkmeans", "levels": 2, "codebook_size": 8,
                                                               "kmeans_iters": 10}}))
    return path


def test_script_end_to_end_tiny_and_resumes(tmp_path, tiny_model_dir):
    run = make_tiny_run(tmp_path / "run")
    out = tmp_path / "res" / "new_items.json"
    cmd = [sys.executable, "-m", "benchmarks.new_items", "--model-dir", str(tiny_model_dir), "--run",
           str(run), "--out", str(out), "--variants", "mean,sa_init,star", "--seeds", "0", "--new-share", "0.15",
           "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--valid-every", "2", "--valid-rows", "8",
           "--patience", "1", "--align-steps", "2", "--eval-batch", "16", "--content-last", "1,3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    res = json.loads(out.read_text())
    assert not res["partial"] and res["holdout"]["n_new"] == 6
    hybrids = {"mean+content", "sa_init+content", "star+content"}
    assert set(res["slices"]) == {"mean", "sa_init", "star", "popularity", "content_last1", "content_last3", *hybrids}
    assert set(res["hybrids"]) == hybrids
    n_new = res["slices"]["mean"]["new"]["n"]
    assert n_new == res["holdout"]["counts"]["test"]["target_new"] > 0
    assert n_new + res["slices"]["mean"]["old"]["n"] == res["settings"]["test_rows_used"] == 30
    assert res["slices"]["popularity"]["new"]["hr@10"]["mean"] == 0  # popularity never ranks a new item
    assert res["slices"]["popularity"]["new"]["new@10"]["mean"] == 0
    assert set(res["differences"]["star"]["new"]) == {"mean", "content_last1", "content_last3"}
    assert set(res["differences"]["star+content"]["new"]) == {"mean", "content_last1", "content_last3", "star"}
    assert (out.parent / "new_items.md").exists() and (out.parent / "new_items.png").stat().st_size > 0
    assert (out.parent / "new_items_holdout" / "codes.parquet").exists()
    assert len(list((out.parent / "new_items_runs").glob("*.npz"))) == 3
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    reused = [ln for ln in second.stdout.splitlines() if ln.startswith("[local]") and "reused" in ln]
    assert len(reused) == 3  # same settings, same held-out SIDs: nothing retrained
    # the saved hold-out was read back, not fitted again
    assert json.loads(out.read_text())["holdout"]["sids"]["reused_from"] == str(out.parent / "new_items_holdout")
    assert json.loads(out.read_text())["slices"] == res["slices"]
    # --finished-only with a seed never run: the kept runs reported, the missing ones listed, nothing trained
    seeds = cmd.index("--seeds") + 1
    third = subprocess.run([*cmd[:seeds], "0,1", *cmd[seeds + 1:], "--finished-only"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    res3 = json.loads(out.read_text())
    assert res3["missing_runs"] == ["mean seed 1", "sa_init seed 1", "star seed 1"] and res3["partial"]
    assert len(list((out.parent / "new_items_runs").glob("*.npz"))) == 3
    assert "Not run yet: mean seed 1" in (out.parent / "new_items.md").read_text()
