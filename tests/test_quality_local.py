"""benchmarks/quality_local.py's kept runs: several processes share one runs folder (``--train-only``), the SASRec
baselines are fitted once per seed and kept (``--baselines-only``), and the full report reuses both (no Ray)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "benchmarks.quality_local", *args], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_train_only_baselines_only_then_report_reuses_both(tmp_path, tiny_model_dir, tiny_catalog, tiny_run_dir):
    run = tiny_run_dir
    runs, out = tmp_path / "kept", tmp_path / "res" / "q.json"
    common = ["--model-dir", str(tiny_model_dir), "--run", str(run), "--runs-dir", str(runs), "--variants", "mean",
              "--seeds", "0", "--epochs", "1", "--max-steps", "4", "--batch-size", "2", "--valid-every", "2",
              "--valid-rows", "8", "--patience", "2", "--eval-batch", "16", "--checkpoint-dir", str(tmp_path / "ck"),
              "--sasrec-max-epochs", "2"]

    first = _run([*common, "--out", str(tmp_path / "worker.json"), "--train-only", "--save-models",
                  str(tmp_path / "models")])
    assert "mean seed 0: ndcg@10" in first.stdout and "SASRec" not in first.stdout
    assert sorted(p.name for p in runs.iterdir()) == ["mean-s0.npz"]
    # SFT checkpointed at step 2 (resumable) into a folder of its own, removed once the run was kept
    assert (tmp_path / "ck" / "kept").is_dir() and not any((tmp_path / "ck" / "kept").iterdir())
    kept_model = tmp_path / "models" / "mean-s0"  # the scored model, loadable with its SID tokens
    tok = AutoTokenizer.from_pretrained(kept_model)
    sid_tokens = set(tiny_catalog["tokens"].column("token").to_pylist())
    assert sid_tokens <= set(tok.get_vocab())
    lm = AutoModelForCausalLM.from_pretrained(kept_model)
    assert lm.get_input_embeddings().weight.shape[0] >= len(tok)
    assert json.loads((tmp_path / "worker.json").read_text())["baselines"] == {}

    seeds = common.index("--seeds") + 1
    second = _run([*common[:seeds], "0,1", *common[seeds + 1:], "--out", str(out), "--baselines-only"])
    assert "SASRec seed 0" in second.stdout and "SASRec seed 1" in second.stdout
    assert not (runs / "mean-s1.npz").exists()  # a missing run is not trained by --baselines-only
    kept = runs / "baseline_sasrec-s0.npz"
    stamp = kept.stat().st_mtime_ns

    third = _run([*common, "--out", str(out)])
    assert "mean seed 0: reused" in third.stdout
    assert kept.stat().st_mtime_ns == stamp  # SASRec not refitted
    res = json.loads(out.read_text())
    assert not res["partial"] and set(res["baselines"]) == {"popularity", "sasrec", "content"}
    z = np.load(kept)
    assert np.isclose(res["baselines"]["sasrec"]["summary"]["ndcg@10"]["seeds"][0], z["metric:ndcg@10"].mean())
    assert len(z["metric:ndcg@10"]) == res["settings"]["test_rows_used"]
    assert set(res["slices"]) == {"mean", "popularity", "sasrec", "content"}
    assert (out.parent / "q.md").exists()

    # other SASRec settings: the kept fit is not reused
    fourth = _run([*common[:-1], "3", "--out", str(out), "--baselines-only"])
    assert "made with other settings" in fourth.stdout and kept.stat().st_mtime_ns != stamp

    # --finished-only: the full report on what is finished; the missing seed is listed, not trained
    fifth = _run([*common[:seeds], "0,1", *common[seeds + 1:-1], "3", "--out", str(out), "--finished-only",
                  "--note", "seed 1 not run"])
    assert "mean seed 1: ndcg" not in fifth.stdout and not (runs / "mean-s1.npz").exists()
    res = json.loads(out.read_text())
    assert res["missing_runs"] == ["mean seed 1"] and res["partial"] and res["note"] == "seed 1 not run"
    assert len(res["variants"]["mean"]["runs"]) == 1 and set(res["baselines"]) == {"popularity", "sasrec", "content"}
    md = (out.parent / "q.md").read_text()
    assert "Not run (planned, missing from this table): mean seed 1." in md and "Note: seed 1 not run" in md


def test_unfilled_beam_slots_are_never_a_catalog_item_and_are_counted(tiny_model_dir, tiny_run_dir):
    """A top-10 slot the constrained beam search cannot fill (a catalog of 4 items here) stays PAD_ITEM: it is
    never the catalog's last item (a silent false hit before) and the report counts it."""
    import argparse

    import torch

    import benchmarks.quality_local as ql
    from raygen.eval.metrics import PAD_ITEM
    from raygen.eval.rows import Catalog
    from raygen.lm.vocab import add_sid_tokens

    d = ql.Data(tiny_run_dir)
    lm, tok = ql.load(str(tiny_model_dir), 1, torch.device("cpu"))
    add_sid_tokens(lm, tok, [r["token"] for r in d.token_rows])
    few = d.codes.slice(0, 4)
    r, topk, rows = ql.score_split(d, lm, tok, Catalog.from_codes(few, tok), False,
                                   argparse.Namespace(max_history=20, eval_batch=8), "test", 0)
    assert topk.shape == (len(rows.targets), 10)
    assert set(topk[:, :4].ravel()) <= set(few.column("item_id").to_pylist())
    assert (topk[:, 4:] == PAD_ITEM).all()
    assert ql.generation_checks([topk], d) == {"invalid_total": 0, "unfilled_total": 6 * len(topk)}
    outside = topk.copy()
    outside[0, 0] = 10_000  # not a catalog item
    assert ql.generation_checks([topk, outside], d) == {"invalid_total": 1, "unfilled_total": 12 * len(topk)}
    in_top = [t in row[:4] for t, row in zip(rows.targets, topk)]
    assert np.array_equal(r["hr@10"] > 0, in_top)


def test_data_digest_changes_with_the_sids_and_queries(tiny_run_dir):
    """A kept run is keyed by the data it trained on: another SID build (or other queries) is other data."""
    import pyarrow as pa

    from benchmarks.quality_local import Data, data_digest

    d = Data(Path(tiny_run_dir))
    base = data_digest(d)
    assert data_digest(Data(Path(tiny_run_dir))) == base     # the same folder read again
    codes = d.codes.to_pydict()
    codes["codes"] = [list(reversed(c)) for c in codes["codes"]]
    other = Data.of(d.items, d.samples, pa.table(codes, schema=d.codes.schema), d.tokens, d.token_rows)
    assert data_digest(other) != base
    queries = pa.table({"item_id": [1], "query": ["red bolt"]})
    assert data_digest(d, queries) not in (base, data_digest(d, queries.slice(0, 0)))


def test_with_valid_as_train_relabels_only_the_valid_rows(tiny_run_dir):
    from benchmarks.quality_local import Data, with_valid_as_train

    samples = Data(Path(tiny_run_dir)).samples
    out = with_valid_as_train(samples)
    before, after = samples["split"].to_pylist(), out["split"].to_pylist()
    assert "valid" in before and "valid" not in after
    assert [a for b, a in zip(before, after) if b == "valid"] == ["train"] * before.count("valid")
    assert [a for b, a in zip(before, after) if b != "valid"] == [b for b in before if b != "valid"]
    assert out.column("history").equals(samples.column("history"))


def test_the_refit_supervises_every_valid_target_too(tiny_run_dir):
    """Sequence-format SFT on train + valid trains one more target per valid row (the chains continue)."""
    from benchmarks.quality_local import Data, sft_examples, with_valid_as_train
    from raygen.tasks.config import TasksConfig

    d = Data(Path(tiny_run_dir))
    tasks = TasksConfig(seqrec_format="sequence", max_history=10, align_ratio=0.0, token_ratio=0.0)

    def targets(data) -> int:
        return sum(len(ex["sids"]) - ex["first_target"] for ex in sft_examples(data, tasks))

    refit = Data.of(d.items, with_valid_as_train(d.samples), d.codes, d.tokens, d.token_rows)
    n_valid = d.samples["split"].to_pylist().count("valid")
    assert n_valid and targets(refit) == targets(d) + n_valid


def test_refit_valid_trains_on_more_rows_without_validation(tmp_path, tiny_model_dir, tiny_run_dir):
    common = ["--model-dir", str(tiny_model_dir), "--run", str(tiny_run_dir), "--variants", "mean", "--seeds", "0",
              "--epochs", "1", "--batch-size", "2", "--valid-every", "2", "--valid-rows", "8", "--patience", "2",
              "--eval-batch", "16", "--checkpoint-dir", str(tmp_path / "ck"), "--train-only"]
    _run([*common, "--runs-dir", str(tmp_path / "a"), "--out", str(tmp_path / "a.json")])
    _run([*common, "--runs-dir", str(tmp_path / "b"), "--out", str(tmp_path / "b.json"), "--refit-valid"])
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    ra, rb = a["variants"]["mean"]["runs"][0], b["variants"]["mean"]["runs"][0]
    assert "refit_valid" in b["settings"] and "refit_valid" not in a["settings"]
    assert rb["best_step"] is None and rb["final_step"] > 0 and ra["best_step"] is not None  # nothing validated: the last step
    assert rb["n_rows"] == ra["n_rows"]  # scored on the same test rows
