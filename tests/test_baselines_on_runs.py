"""benchmarks/baselines_on_runs.py: training-free baselines scored on the rows of kept runs, paired with them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]


def _keep(path: Path, row_ids, targets, ndcg, seed: int, top1=None, topk=None) -> None:
    record = {"seed": seed, **({"collapse": {"distinct_top1": top1}} if top1 is not None else {})}
    np.savez(path, row_ids=row_ids, targets=targets, record=json.dumps(record),
             **({"topk": topk} if topk is not None else {}), **{
        f"metric:{m}": ndcg for m in ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10")})


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.baselines_on_runs", *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


def test_baselines_on_kept_rows_paired_with_each_variant(tmp_path, tiny_run_dir):
    from raygen.eval.baselines import content_rank
    from raygen.eval.fusion import rrf_fuse
    from raygen.io import read_parquet
    from raygen.sid.stage import read_embeddings

    from benchmarks.quality import per_row

    samples = read_parquet(tiny_run_dir / "data/samples.parquet")
    row_ids = np.flatnonzero(np.array(samples.column("split").to_pylist()) == "test")
    targets = samples.column("target").to_numpy()[row_ids]
    rng = np.random.default_rng(0)
    runs = tmp_path / "runs"
    runs.mkdir()
    kept = {}
    catalog = read_parquet(tiny_run_dir / "sids/codes.parquet").column("item_id").to_numpy()
    model_top = np.stack([rng.permutation(catalog)[:10] for _ in row_ids])  # mean's top-10 lists
    for name, seed in (("mean", 0), ("mean", 1), ("star", 0)):
        kept[name, seed] = (rng.random(len(row_ids)) < 0.5).astype(float)
        _keep(runs / f"{name}-s{seed}.npz", row_ids, targets, kept[name, seed], seed, top1=3 + seed,
              topk=model_top if name == "mean" else None)
    out = tmp_path / "res" / "b.json"
    done = _run("--run", tiny_run_dir, "--runs-dir", runs, "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["methods"]) == {"mean", "star", "popularity", "content_last1", "content_last3", "mean+content"}
    assert res["n_rows"] == len(row_ids) and res["methods"]["mean"]["seeds"] == 2
    assert res["methods"]["mean"]["distinct_top1"] == "3/4"
    # the content baseline is content_rank on exactly the kept rows
    emb = read_embeddings(tiny_run_dir / "corpus/embeddings.parquet")
    hist = [list(h) for h in samples.column("history").take(pa.array(row_ids)).to_pylist()]
    want = per_row(content_rank(hist, catalog, *emb, 10, 1), targets)["ndcg@10"].mean()
    assert np.isclose(res["methods"]["content_last1"]["summary"]["ndcg@10"]["mean"], want)
    # paired: the seed-averaged variant minus the baseline, on the same rows
    d = res["differences"]["mean"]["content_last1"]["ndcg@10"]["diff"]
    assert np.isclose(d, (kept["mean", 0] + kept["mean", 1]).mean() / 2 - want)
    assert (out.parent / "b.md").read_text().count("| content_last") == 2
    # the hybrid: the kept top-10 fused with the content ranking as the eval stage does, paired with the model
    fused = per_row(rrf_fuse([model_top, content_rank(hist, catalog, *emb, 50, 1)], 10), targets)["ndcg@10"]
    assert np.isclose(res["methods"]["mean+content"]["summary"]["ndcg@10"]["mean"], fused.mean())
    assert res["methods"]["mean+content"]["seeds"] == 2
    assert set(res["differences"]["mean+content"]) == {"mean", "content_last1"}


def test_refuses_rows_of_other_data_or_of_two_row_sets(tmp_path, tiny_run_dir):
    from raygen.io import read_parquet

    samples = read_parquet(tiny_run_dir / "data/samples.parquet")
    row_ids = np.arange(4)
    targets = samples.column("target").to_numpy()[row_ids].copy()
    runs = tmp_path / "runs"
    runs.mkdir()
    targets[2] += 1000
    _keep(runs / "mean-s0.npz", row_ids, targets, np.zeros(4), 0)
    bad = _run("--run", tiny_run_dir, "--runs-dir", runs, "--out", tmp_path / "b.json")
    assert bad.returncode != 0 and "differs from the kept runs at 1 row(s), first row 2" in bad.stderr
    _keep(runs / "mean-s0.npz", row_ids, targets - np.array([0, 0, 1000, 0]), np.zeros(4), 0)
    _keep(runs / "star-s0.npz", row_ids[:3], targets[:3], np.zeros(3), 0)
    two = _run("--run", tiny_run_dir, "--runs-dir", runs, "--out", tmp_path / "b.json")
    assert two.returncode != 0 and "was scored on other rows than" in two.stderr


def test_two_labelled_folders_paired_with_one_of_them(tmp_path, tiny_run_dir):
    from raygen.io import read_parquet

    samples = read_parquet(tiny_run_dir / "data/samples.parquet")
    row_ids = np.flatnonzero(np.array(samples.column("split").to_pylist()) == "test")
    targets = samples.column("target").to_numpy()[row_ids]
    rng = np.random.default_rng(1)
    kept = {}
    for label in ("long", "short"):
        (tmp_path / label).mkdir()
        kept[label] = (rng.random(len(row_ids)) < 0.5).astype(float)
        _keep(tmp_path / label / "mean-s0.npz", row_ids, targets, kept[label], 0)
    out = tmp_path / "e.json"
    done = _run("--run", tiny_run_dir, "--runs-dir", f"long={tmp_path / 'long'}", "--runs-dir",
                f"short={tmp_path / 'short'}", "--against", "short/mean", "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())
    assert {"long/mean", "short/mean", "content_last1"} <= set(res["methods"])
    d = res["differences"]["long/mean"]["short/mean"]["ndcg@10"]
    assert np.isclose(d["diff"], kept["long"].mean() - kept["short"].mean())
    assert "short/mean" not in res["differences"]["short/mean"]  # not paired with itself
    # several folders need labels; --against must name a kept variant
    unlabelled = _run("--run", tiny_run_dir, "--runs-dir", tmp_path / "long", "--runs-dir", tmp_path / "short",
                      "--out", out)
    assert unlabelled.returncode != 0 and "give each a label" in unlabelled.stderr
    missing = _run("--run", tiny_run_dir, "--runs-dir", tmp_path / "long", "--against", "star", "--out", out)
    assert missing.returncode != 0 and "--against star: no such kept variant (kept: mean)" in missing.stderr
