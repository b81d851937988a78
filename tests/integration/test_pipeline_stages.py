"""The stages as a user runs them: one tiny real pipeline (synthetic catalog, tiny Llama, every stage
on: STAR alignment, SFT with validation, GRPO, evaluation with both baselines, the report), then what
each stage promises about its outputs: the report shows every headline, the model RL hands on is the
one eval and ``recommend`` load (both keep-best branches), eval's predictions line up with the samples.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raygen.config import load_config
from raygen.io import read_json, read_parquet
from raygen.pipeline import run_pipeline
from raygen.report.stage import HEADLINES


def _overrides(run_dir: Path, model_dir: Path, address: str, keep_best: bool) -> list[str]:
    syn = {"n_items": 40, "n_users": 30, "n_categories": 4, "n_tastes": 3, "min_seq_len": 4, "max_seq_len": 6}
    return [f"run_dir={run_dir}", f"ray.address={address}", "data.source=synthetic",
            *[f"data.synthetic.{k}={v}" for k, v in syn.items()],
            "corpus.keyword_backend=fallback", "corpus.n_queries=5", "tasks.search_ratio=0.5", "sids.method=rqkmeans", "sids.levels=2", "sids.codebook_size=8",
            "sids.kmeans_iters=10", f"lm.model={model_dir}", "lm.init=sa_init",
            "align.enabled=true", "align.max_steps=3", "align.batch_size=4", "align.resources.count=1",
            "align.deepspeed=false", "align.checkpoint_every=0", "align.max_len=128",
            "sft.mode=full", "sft.resources.count=1", "sft.deepspeed=false", "sft.batch_size=4", "sft.max_steps=6",
            "sft.checkpoint_every=0", "sft.max_len=128", "sft.valid_every=3", "sft.valid_rows=8",
            "sft.patience=5", "rl.steps=2", "rl.rollout_batch=4", "rl.group_size=2", "rl.eval_rows=8",
            "rl.eval_beam=4", "rl.rollout_resources.count=1", f"rl.keep_best={str(keep_best).lower()}",
            "eval.splits=[valid,test]", "eval.max_rows=12", "eval.resources.count=0", "eval.beam_width=5",
            "eval.ks=[1,5]", "eval.baselines=[popularity,sasrec]", "eval.sasrec.epochs=3"]


@pytest.fixture(scope="module")
def tiny_run(ray_local, tmp_path_factory, tiny_model_dir):
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    address = ray_local.get_runtime_context().gcs_address
    cfg = load_config(None, _overrides(run_dir, tiny_model_dir, address, keep_best=False))
    summary = run_pipeline(cfg)
    assert all(s["status"] == "ran" for s in summary.values()), summary
    return run_dir, address


def test_report_shows_every_headline_of_every_stage(tiny_run):
    run_dir, _ = tiny_run
    report = read_json(run_dir / "report" / "metrics.json")
    assert report["missing"] == {}  # each required headline key is in its stage's metrics.json
    text = (run_dir / "report" / "report.md").read_text()
    for stage, keys in HEADLINES.items():
        assert f"## {stage}\n" in text
        for spec in keys:
            if not spec.endswith("?") and spec != "table":
                assert f"- **{spec}**: " in text, (stage, spec)
    assert "- **chosen**: rl" in text and "- **best_step**: " in text
    serving = read_json(run_dir / "eval" / "metrics.json")["serving"]
    assert f"- **serving.ranking**: {serving['ranking']}" in text and "- **serving.why**: valid ndcg@5: " in text
    assert "| method | hr@1 | hr@5 | ndcg@1 | ndcg@5 | invalid |" in text
    assert "95 % intervals on the `test` split" in text and "| raygen+content - raygen | " in text
    assert "![sft learning curve](plots/learning_curve_sft.png)" in text
    assert (run_dir / "report" / "plots" / "learning_curve_sft.png").stat().st_size > 0


def test_rl_model_is_the_one_eval_and_recommend_load(tiny_run):
    from raygen.recommend import Recommender

    run_dir, _ = tiny_run
    rl = read_json(run_dir / "rl" / "metrics.json")
    assert rl["chosen"] == "rl" and rl["model_dir"] == "rl/model" and rl["rejected_model_dir"] is None
    assert (run_dir / "rl" / "model" / "config.json").exists() and not (run_dir / "rl" / "model_ref.json").exists()
    assert Path(read_json(run_dir / "eval" / "metrics.json")["model_dir"]).resolve() == (run_dir / "rl/model").resolve()
    assert Path(Recommender(run_dir).model_dir).resolve() == (run_dir / "rl/model").resolve()


def test_eval_predictions_line_up_with_the_samples(tiny_run):
    run_dir, _ = tiny_run
    ev = read_json(run_dir / "eval" / "metrics.json")
    samples = read_parquet(run_dir / "data" / "samples.parquet").to_pydict()
    catalog = set(read_parquet(run_dir / "sids" / "codes.parquet").column("item_id").to_pylist())
    for split in ("valid", "test"):
        pred = pq.read_table(run_dir / "eval" / f"predictions_{split}.parquet").to_pydict()
        n_split = sum(s == split and len(h) > 0 for s, h in zip(samples["split"], samples["history"]))
        assert len(pred["row_id"]) == min(12, n_split) == ev["splits"][split]["raygen"]["n"]  # eval.max_rows
        assert len(set(pred["row_id"])) == len(pred["row_id"])  # each row scored once
        for i, target, topk in zip(pred["row_id"], pred["target"], pred["topk"]):  # row_id: samples row
            assert samples["split"][i] == split and samples["target"][i] == target
            assert len(topk) == 5 and len(set(topk)) == 5 and set(topk) <= catalog
        for method in ("raygen", "popularity", "sasrec", "raygen+content"):  # eval.fusion: on by default
            assert ev["splits"][split][method]["invalid"] == 0
    # the table's HR@5 is the share of scored rows whose target is in the top 5 of the predictions file
    pred = pq.read_table(run_dir / "eval" / "predictions_test.parquet").to_pydict()
    hits = np.mean([t in k[:5] for t, k in zip(pred["target"], pred["topk"])])
    assert ev["table"]["raygen"]["hr@5"] == pytest.approx(hits)
    assert ev["sasrec_fit"]["epochs_run"] >= 1
    # the ranking recommend serves by default: the better of model and hybrid on the valid split's NDCG@max(ks)
    serving, valid = ev["serving"], ev["splits"]["valid"]
    better = "raygen+content" if valid["raygen+content"]["ndcg@5"] > valid["raygen"]["ndcg@5"] else "raygen"
    assert serving["chosen_on"] == "valid" and serving["ranking"] == better and serving["metric"] == "ndcg@5"
    assert serving["raygen"] == valid["raygen"]["ndcg@5"] and serving["n_rows"] == valid["raygen"]["n"]
    assert serving["diff_ci95"] == ev["intervals"]["valid"]["ndcg@5"]["paired"]["raygen+content - raygen"]["ci95"]
    # 95 % intervals of every method on each split, and the paired differences of model and hybrid
    for split in ("valid", "test"):
        conf = ev["intervals"][split]["ndcg@5"]
        assert conf["n"] == ev["splits"][split]["raygen"]["n"]
        for method, r in conf["methods"].items():
            assert r["mean"] == pytest.approx(ev["splits"][split][method]["ndcg@5"])
            assert r["ci95"][0] <= r["mean"] <= r["ci95"][1]
        assert set(conf["paired"]) == {"raygen - popularity", "raygen - sasrec", "raygen+content - raygen",
                                       "raygen+content - popularity", "raygen+content - sasrec"}


def test_search_task_trains_and_evaluates_with_counted_queries_and_bm25(tiny_run):
    """Issue 12: queries for every item (fallback backend: all counted as fallback), the search task mixed
    into SFT, search metrics for the model and BM25 on the same test queries, cold/warm slices."""
    from raygen.recommend import recommend

    run_dir, _ = tiny_run
    corpus = read_json(run_dir / "corpus" / "metrics.json")
    queries = read_parquet(run_dir / "corpus" / "queries.parquet").to_pydict()
    n_items = corpus["n_items"]
    assert corpus["n_queries"] == len(queries["query"]) == 5 * n_items
    assert corpus["query_items_fallback"] == n_items and corpus["query_items_teacher"] == 0
    assert corpus["queries_by_split"] == {"train": 3 * n_items, "valid": n_items, "test": n_items}
    assert read_json(run_dir / "sft" / "metrics.json")["tasks"]["query2sid"] > 0
    ev = read_json(run_dir / "eval" / "metrics.json")
    pred = pq.read_table(run_dir / "eval" / "predictions_search.parquet").to_pydict()
    for method in ("raygen", "bm25"):
        m = ev["search"][method]
        assert m["n"] == len(pred["row_id"]) == n_items and m["invalid"] == 0
        assert 0 <= m["recall@1"] <= m["recall@5"] <= 1 and "hr@1" not in m
    for i, target in zip(pred["row_id"], pred["target"]):  # row_id: queries row, a test query of that item
        assert queries["split"][i] == "test" and queries["item_id"][i] == target
    # fallback queries repeat the item's own title words: BM25 finds most of them
    assert ev["search"]["bm25"]["recall@5"] > 0.5
    for method, sl in ev["slices"].items():
        assert sl["cold"]["n"] + sl["warm"]["n"] == ev["splits"]["test"][method]["n"], method
    recs = recommend(run_dir, query=queries["query"][0], k=3)
    assert len({r["item_id"] for r in recs}) == 3


def test_keep_best_hands_on_sft_when_rl_lowers_valid_ndcg(tiny_run, monkeypatch):
    """Rerun rl with keep_best on, its 'after' score forced below 'before': rl/model must not exist,
    the reference points at sft/model, and eval and recommend load the SFT model."""
    import raygen.rl.stage as rl_stage
    from raygen.recommend import Recommender

    run_dir, _ = tiny_run
    real = rl_stage.evaluate_split
    calls = []

    def worse_after(model_dir, *a, **k):
        out = real(model_dir, *a, **k)
        calls.append(str(model_dir))
        if len(calls) == 2:  # the RL policy's validation
            out["raygen"] = {k: v - 1.0 if k.startswith("ndcg@") else v for k, v in out["raygen"].items()}
        return out

    monkeypatch.setattr(rl_stage, "evaluate_split", worse_after)
    cfg = load_config(str(run_dir / "config.yaml"), ["rl.keep_best=true"])  # the run's saved config
    summary = run_pipeline(cfg, only=["rl", "eval"])
    assert summary["rl"]["status"] == "ran" and summary["eval"]["status"] == "ran"
    rl = read_json(run_dir / "rl" / "metrics.json")
    assert rl["chosen"] == "sft" and rl["model_dir"] == "sft/model" and rl["selection_metric"] == "ndcg@5"
    assert rl["rejected_model_dir"] == "rl/rejected_rl_model"
    assert not (run_dir / "rl" / "model").exists() and (run_dir / "rl" / "rejected_rl_model" / "config.json").exists()
    assert json.loads((run_dir / "rl" / "model_ref.json").read_text())["model_dir"] == "sft/model"
    sft_model = (run_dir / "sft" / "model").resolve()
    assert Path(read_json(run_dir / "eval" / "metrics.json")["model_dir"]).resolve() == sft_model
    assert Path(Recommender(run_dir).model_dir).resolve() == sft_model


def test_rl_prompts_held_out_of_sft(tiny_run):
    """tasks.rl_holdout_share: SFT and RL rerun; RL's prompts are exactly the withheld positions. (Last in this
    module: it changes the run's sft and rl stages.)"""
    from raygen.tasks.holdout import hold_out_last_train

    run_dir, _ = tiny_run
    cfg = load_config(str(run_dir / "config.yaml"), ["tasks.rl_holdout_share=0.5"])
    summary = run_pipeline(cfg, only=["sft", "rl"])
    assert summary["sft"]["status"] == "ran" and summary["rl"]["status"] == "ran"
    rl = read_json(run_dir / "rl" / "metrics.json")
    _, held = hold_out_last_train(read_parquet(run_dir / "data" / "samples.parquet"), 0.5)
    assert rl["prompt_split"] == "rl" and rl["train_rows"] == held > 0
