"""Is the hybrid's untuned fusion leaving quality on the table? Tune it on valid, measure on test.

    .venv/bin/python -m benchmarks.fusion_tune --run runs/bench_industrial \
        --out benchmarks/results/fusion_tune_industrial.json

The eval stage's ``raygen+content`` fuses the model's top ``beam_width`` with the content ranking's top
``eval.fusion_depth`` by RRF with k0 = 60 and equal weights, chosen without looking at any split. This script
takes a finished run's saved rankings (``eval/predictions_{valid,test}.parquet``), recomputes the content
ranking on the same rows with the eval stage's own functions, and scores every combination of the grid below on
valid (NDCG@max(eval.ks)); the best on valid is then scored on test, paired against the default (the same
rows, :func:`raygen.eval.metrics.confidence`). Test figures of the whole grid are written too, so the reader sees
how much of the valid gain is selection noise. No model runs: seconds on one core.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.eval_intervals import SavedRun, run_and_out  # noqa: E402
from benchmarks.quality_local import machine  # noqa: E402
from raygen.io import atomic_path  # noqa: E402
from raygen.provenance import write_result  # noqa: E402

WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)   # the content list's weight; the model's is 1
K0 = (1.0, 5.0, 20.0, 60.0)
DEPTHS = (10, 20, 50)
CONTENT_LAST = (1, 2, 3)


def grid():
    return [dict(weight=w, k0=k0, depth=d, content_last=c)
            for w, k0, d, c in itertools.product(WEIGHTS, K0, DEPTHS, CONTENT_LAST)]


def key(p: dict) -> str:
    return f"w{p['weight']:g} k0 {p['k0']:g} depth {p['depth']} last {p['content_last']}"


def fused(saved: SavedRun, rows, model: np.ndarray, params: list[dict]) -> dict[str, np.ndarray]:
    """{key: the fused top beam_width} for every parameter set (one content ranking per content_last)."""
    from raygen.eval.fusion import rrf_fuse
    from raygen.eval.stage import content_top

    ev = saved.cfg.eval
    content = {c: content_top(saved.catalog, rows, dataclasses.replace(ev, content_last=c), saved.cache, max(DEPTHS))
               for c in sorted({p["content_last"] for p in params})}
    return {key(p): rrf_fuse([model, content[p["content_last"]][:, :p["depth"]]], ev.beam_width,
                             [1.0, p["weight"]], p["k0"]) for p in params}


def main() -> None:
    a = run_and_out(__doc__, "a finished run folder evaluated on valid and test")
    from raygen.eval.metrics import confidence, per_row_metrics

    saved = SavedRun(Path(a.run))
    ev = saved.cfg.eval
    metric = f"ndcg@{max(ev.ks)}"
    default = dict(weight=1.0, k0=60.0, depth=ev.fusion_depth, content_last=ev.content_last)
    params = grid() + ([default] if default not in grid() else [])
    scores, ranked = {}, {}
    for split in ("valid", "test"):
        rows, model = saved.split(split)
        ranked[split] = {"raygen": model, **fused(saved, rows, model, params)}
        scores[split] = {m: float(per_row_metrics(r, rows.targets, [max(ev.ks)])[metric].mean())
                         for m, r in ranked[split].items()}
        ranked[split]["_targets"] = rows.targets
    best = max((key(p) for p in params), key=lambda m: scores["valid"][m])
    test = ranked["test"]
    conf = confidence({"raygen": test["raygen"], "default": test[key(default)], "tuned": test[best]},
                      test["_targets"], metric, [("tuned", "default"), ("tuned", "raygen"), ("default", "raygen")],
                      seed=ev.seed)
    grid_test = np.array([scores["test"][key(p)] for p in params])
    result = {"run": str(saved.run), "machine": machine(), "metric": metric,
              "grid": {"weights": WEIGHTS, "k0": K0, "depths": DEPTHS, "content_last": CONTENT_LAST,
                       "size": len(params)},
              "default": {"params": default, "valid": scores["valid"][key(default)],
                          "test": scores["test"][key(default)]},
              "tuned": {"params": best, "valid": scores["valid"][best], "test": scores["test"][best]},
              "model": {"valid": scores["valid"]["raygen"], "test": scores["test"]["raygen"]},
              "test_grid": {"min": float(grid_test.min()), "max": float(grid_test.max()),
                            "argmax": max((key(p) for p in params), key=lambda m: scores["test"][m])},
              "test_confidence": conf,
              "all": {m: {"valid": scores["valid"][m], "test": scores["test"][m]} for m in scores["valid"]}}
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    write_result(a.out, result)
    with atomic_path(Path(a.out).with_suffix(".md")) as tmp:
        tmp.write_text(report(result))
    print(report(result))
    print(json.dumps({"out": a.out}))


def report(r: dict) -> str:
    c = r["test_confidence"]
    m = r["metric"]
    lines = [f"# Fusion tuned on valid ({r['run']}, {m})", "",
             f"Grid of {r['grid']['size']} settings (content weight x k0 x content depth x content_last); "
             "the model's weight is 1.", "",
             "| fusion | valid | test | test 95 % CI |", "|---|---|---|---|"]
    for name, row in (("model alone", r["model"]), ("default (w1 k0 60 depth "
                                                     f"{r['default']['params']['depth']} last "
                                                     f"{r['default']['params']['content_last']})", r["default"]),
                      (f"tuned on valid ({r['tuned']['params']})", r["tuned"])):
        ci = c["methods"][{"model alone": "raygen"}.get(name, "default" if name.startswith("default") else "tuned")]
        lines.append(f"| {name} | {row['valid']:.4f} | {row['test']:.4f} | [{ci['ci95'][0]:.4f}, {ci['ci95'][1]:.4f}] |")
    lines += ["", "Paired on test:"]
    lines += [f"- {p}: {d['diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" for p, d in c["paired"].items()]
    lines += ["", f"Test {m} over the whole grid: {r['test_grid']['min']:.4f} .. {r['test_grid']['max']:.4f} "
              f"(best on test: {r['test_grid']['argmax']}).", "", f"Machine: {r['machine']}", "",
              f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
