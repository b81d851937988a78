"""Issue #35, lever 3: wider beams at evaluation (keeping the top 10), on a kept model, valid and test.

    RAYGEN_CPU_BF16=0 python -m benchmarks.beam_width --model runs/models/refit/mean-s0 --run runs/industrial \\
        --widths 10,20,50 --out benchmarks/results/beam_width_industrial.json

A wider constrained beam search finds SIDs of higher probability that a narrow one prunes early (MiniOneRec
evaluates with 50 beams). Each width is scored on every row of the valid and the test split of ``--run``; the
paired difference of each width to the first (NDCG@10, 95 % bootstrap CI) is on the same rows; seconds per width
say what it costs. Choose on valid, report on test.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.quality_local import Data, machine, score_split
from raygen.eval.metrics import collapse_stats, paired_diff, summarize
from raygen.eval.rows import Catalog
from raygen.io import atomic_path
from raygen.precision import resolve_bf16
from raygen.provenance import write_result


def markdown(res: dict) -> str:
    lines = [f"# Beam width at evaluation ({res['model']})", "",
             "| split | beams | NDCG@10 | HR@10 | vs first width (NDCG@10, 95 % CI) | seconds |", "|---|---|---|---|---|---|"]
    for split, per in res["splits"].items():
        for w, r in per.items():
            d = r.get("vs_first")
            diff = f"{d['diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d else "–"
            lines.append(f"| {split} | {w} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | {diff} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a kept model folder (quality_local.py --save-models)")
    ap.add_argument("--run", required=True, help="run folder with data/ and sids/ (the model's SID build)")
    ap.add_argument("--widths", default="10,20,50")
    ap.add_argument("--splits", default="valid,test")
    ap.add_argument("--max-history", type=int, default=10)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = Data(Path(a.run))
    tok = AutoTokenizer.from_pretrained(a.model)
    lm = AutoModelForCausalLM.from_pretrained(a.model).eval()
    bf16, why = resolve_bf16("auto", torch.device("cpu"))
    catalog = Catalog.from_codes(d.codes, tok)
    widths = [int(w) for w in a.widths.split(",")]
    res = {"model": a.model, "widths": widths, "precision": {"bf16": bf16, "reason": why}, "splits": {},
           "machine": machine()}
    for split in a.splits.split(","):
        rows, per = {}, {}
        for w in widths:
            t0 = time.time()
            with torch.no_grad():
                r, topk, _ = score_split(d, lm, tok, catalog, bf16, a, split, 0, width=w)
            rows[w] = r
            per[w] = {"ndcg@10": float(r["ndcg@10"].mean()), "hr@10": float(r["hr@10"].mean()),
                      "n_rows": len(r["ndcg@10"]), "seconds": round(time.time() - t0, 1),
                      "summary": summarize([r]), "collapse": collapse_stats(topk, len(catalog.item_ids))}
            if w != widths[0]:
                per[w]["vs_first"] = paired_diff([r], [rows[widths[0]]])
            print(f"[beam] {split} width {w}: ndcg@10 {per[w]['ndcg@10']:.4f} ({per[w]['seconds']} s)", flush=True)
            res["splits"][split] = per
            write_result(a.out, res)
    with atomic_path(Path(a.out).with_suffix(".md")) as tmp:
        tmp.write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
