"""The eval stage's 95 % intervals and paired differences for a run evaluated before the stage computed them.

    .venv/bin/python -m benchmarks.eval_intervals --run runs/bench_industrial \
        --out benchmarks/results/eval_intervals_industrial.json

Reads the model's saved rankings (``eval/predictions_{split}.parquet``) and recomputes, on the same rows,
the deterministic rankings the eval stage compared them with: popularity, content and the hybrid
``raygen+content`` (the eval stage's own functions and config). SASRec is left out: refitting it does not
reproduce the eval stage's fit exactly (a refit of the Industrial pipeline run's SASRec stopped at another
epoch: test NDCG@10 0.0725 vs the stage's 0.0716). Then :func:`raygen.eval.metrics.confidence` as the eval
stage now runs it: every method's NDCG/HR at max(eval.ks) with a 95 % bootstrap interval, and the paired
differences of the model and the hybrid with the others. A check: the model's and the hybrid's means must
equal the eval stage's table to 1e-9, or the script stops.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality_local import machine  # noqa: E402
from raygen.io import read_json, read_parquet  # noqa: E402
from raygen.provenance import write_result  # noqa: E402


class SavedRun:
    """A finished run's eval inputs: config, samples, catalog, corpus embeddings, and per split the eval rows
    with the model's saved rankings (``eval/predictions_{split}.parquet``; the rows must be the split's rows
    under the run's config, or :meth:`split` stops)."""

    def __init__(self, run: Path):
        from transformers import AutoTokenizer

        from raygen.eval.rows import Catalog
        from raygen.recommend import check_final_model, load_run_config
        from raygen.sid.stage import read_embeddings

        self.run = Path(run)
        self.cfg = load_run_config(self.run)
        self.metrics = read_json(self.run / "eval/metrics.json")
        self.samples = read_parquet(self.run / "data/samples.parquet")
        self.codes = read_parquet(self.run / "sids/codes.parquet")
        self.tokenizer = AutoTokenizer.from_pretrained(check_final_model(self.run, self.cfg), local_files_only=True)
        self.catalog = Catalog.from_codes(self.codes, self.tokenizer)
        self.cache = {"embeddings": read_embeddings(self.run / "corpus/embeddings.parquet")}

    def split(self, split: str):
        """(rows, the model's rankings [N, beam_width]) of ``split``."""
        from raygen.eval.rows import split_rows

        ev = self.cfg.eval
        rows = split_rows(self.samples, self.codes, self.tokenizer, self.cfg.tasks, split, ev.max_rows, ev.seed)
        preds = pq.read_table(self.run / f"eval/predictions_{split}.parquet").to_pydict()
        if list(preds["row_id"]) != list(rows.row_ids):
            sys.exit(f"{split}: the predictions' rows are not the split's rows (another config?)")
        return rows, np.array(preds["topk"])


def run_and_out(doc: str, run_help: str = "a finished run folder (raygen run through eval)") -> argparse.Namespace:
    """``--run`` and ``--out``: the arguments of the scripts that work on a run's saved rankings."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help=run_help)
    ap.add_argument("--out", required=True)
    return ap.parse_args()


def main() -> None:
    a = run_and_out(__doc__)
    from raygen.eval.fusion import HYBRID, rrf_fuse
    from raygen.eval.metrics import confidence
    from raygen.eval.stage import baseline_ranks, content_top

    saved = SavedRun(Path(a.run))
    cfg, ev, catalog, samples, cache = saved.cfg, saved.metrics, saved.catalog, saved.samples, saved.cache
    k = max(cfg.eval.ks)
    result = {"run": str(saved.run), "machine": machine(), "splits": {}}
    for split in cfg.eval.splits:
        rows, model = saved.split(split)
        ranked = {"raygen": model,
                  "popularity": baseline_ranks("popularity", samples, catalog, rows, cfg.eval, cache),
                  "content": baseline_ranks("content", samples, catalog, rows, cfg.eval, cache),
                  HYBRID: rrf_fuse([model, content_top(catalog, rows, cfg.eval, cache, cfg.eval.fusion_depth)],
                                   cfg.eval.beam_width)}
        others = ["popularity", "content"]
        pairs = [("raygen", m) for m in others] + [(HYBRID, "raygen")] + [(HYBRID, m) for m in others]
        out = {f"{m}@{k}": confidence(ranked, rows.targets, f"{m}@{k}", pairs, seed=cfg.eval.seed) for m in ("ndcg", "hr")}
        for method in ("raygen", HYBRID, "content", "popularity"):
            mine, theirs = out[f"ndcg@{k}"]["methods"][method]["mean"], ev["splits"][split][method][f"ndcg@{k}"]
            if abs(mine - theirs) > 1e-9:
                sys.exit(f"{split} {method}: recomputed ndcg@{k} {mine} != the eval stage's {theirs}")
        result["splits"][split] = out
        conf = out[f"ndcg@{k}"]
        print(split, {m: f"{r['mean']:.4f} [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]" for m, r in conf["methods"].items()})
        print(split, {p: f"{r['diff']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]" for p, r in conf["paired"].items()})
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    write_result(a.out, result)
    print(json.dumps({"out": a.out}))


if __name__ == "__main__":
    main()
