"""How much sequential signal the embedded synthetic catalog carries, against popularity.

    .venv/bin/python -m benchmarks.synthetic_signal [--config configs/default.yaml] [overrides ...]

Loads the config's synthetic data through raygen's loader and scores three recommenders on every
row of the valid and test splits (all trained on the train split only, nothing excluded from
the rankings, as in the eval stage):

    popularity  raygen.eval.baselines.popularity_rank
    markov      first-order transitions prev -> next counted in the train samples (history[-1] ->
                target), ranked by count; ties and missing slots filled in popularity order
    sasrec      raygen.eval.sasrec.fit_sasrec / sasrec_rank with the config's eval.sasrec settings
                (early-stopped on the valid split when fit_sasrec supports it, as in the eval
                stage: its valid figures are then optimistic, the test ones are not)

A sequential recommender can only show that it learns when markov and sasrec clearly beat
popularity. Writes benchmarks/results/synthetic_signal.json (or --out).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]

from raygen.config import load_config  # noqa: E402
from raygen.data.synthetic import load_synthetic  # noqa: E402
from raygen.eval.baselines import most_popular, popularity_counts, popularity_rank  # noqa: E402
from raygen.eval.metrics import ranking_metrics  # noqa: E402
from raygen.eval.sasrec import fit_sasrec, sasrec_rank  # noqa: E402

K = 10


def markov_rank(train_hist, train_tgt, histories, k: int) -> np.ndarray:
    """[N, k] item ids: the most frequent train successors of each row's last item, then popularity."""
    follow: dict[int, Counter] = defaultdict(Counter)
    for h, t in zip(train_hist, train_tgt):
        follow[int(h[-1])][int(t)] += 1
    popular = most_popular(popularity_counts(train_hist, train_tgt), k).tolist()
    out = np.empty((len(histories), k), np.int64)
    for r, h in enumerate(histories):
        ranked = [i for i, _ in sorted(follow[int(h[-1])].items(), key=lambda kv: (-kv[1], kv[0]))][:k]
        ranked += [i for i in popular if i not in ranked][: k - len(ranked)]
        out[r] = ranked
    return out


def split(samples, name: str):
    t = samples.filter(pc.equal(samples.column("split"), name))
    return t.column("history").to_pylist(), np.asarray(t.column("target").to_pylist(), np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    ap.add_argument("--no-sasrec", action="store_true", help="skip SASRec (seconds instead of a minute)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for SASRec (1: on a shared 2-core machine 2 threads ran ~18x slower)")
    ap.add_argument("overrides", nargs="*", help="section.field=value, e.g. data.synthetic.n_users=800")
    a = ap.parse_args()
    cfg = load_config(ROOT / a.config if not Path(a.config).is_absolute() else a.config, a.overrides)
    if cfg.data.source != "synthetic":
        raise SystemExit(f"{a.config}: data.source is {cfg.data.source!r}, not synthetic")

    t0 = time.perf_counter()
    items, samples, report = load_synthetic(cfg.data)
    gen_s = time.perf_counter() - t0
    train_hist, train_tgt = split(samples, "train")
    n_items = items.num_rows
    item_ids = np.asarray(items.column("item_id").to_pylist(), np.int64)
    index = {int(i): j for j, i in enumerate(item_ids)}

    sasrec_model, sasrec_s = None, 0.0
    if not a.no_sasrec:
        import torch

        torch.set_num_threads(a.threads)
        t0 = time.perf_counter()
        kw = {}
        if "valid_histories" in inspect.signature(fit_sasrec).parameters:  # early stopping, as the eval stage
            vh, vt = split(samples, "valid")
            kw = {"valid_histories": [[index[x] for x in h] for h in vh], "valid_targets": [index[int(t)] for t in vt]}
        sasrec_model = fit_sasrec([[index[x] for x in h] for h in train_hist], [index[int(t)] for t in train_tgt],
                                  n_items, cfg.eval.sasrec, **kw)
        sasrec_s = time.perf_counter() - t0

    counts = popularity_counts(train_hist, train_tgt)
    top10_share = sum(c for _, c in counts.most_common(max(1, n_items // 10))) / sum(counts.values())
    metrics: dict = {}
    for name in ("valid", "test"):
        hist, tgt = split(samples, name)
        ranks = {"popularity": popularity_rank(train_hist, train_tgt, len(tgt), K),
                 "markov": markov_rank(train_hist, train_tgt, hist, K)}
        if sasrec_model is not None:
            top = sasrec_rank(sasrec_model, [[index[x] for x in h] for h in hist], K)
            ranks["sasrec"] = item_ids[top]
        metrics[name] = {m: {key: round(v, 4) for key, v in ranking_metrics(r, tgt, (1, 5, 10)).items()}
                         for m, r in ranks.items()}
        metrics[name]["rows"] = len(tgt)

    print(f"synthetic data: {n_items} items, {report['users']} users, {report['interactions']} interactions, "
          f"train samples {len(train_tgt)}; top-10% items hold {top10_share:.1%} of train occurrences; "
          f"generated in {gen_s:.2f}s, SASRec fit {sasrec_s:.1f}s")
    if getattr(sasrec_model, "fit_info", None):
        print(f"sasrec fit: {sasrec_model.fit_info}")
    print(f"{'split':6} {'model':11} {'NDCG@10':>8} {'HR@10':>7} {'HR@1':>7}")
    for name in ("valid", "test"):
        for m, v in metrics[name].items():
            if m != "rows":
                print(f"{name:6} {m:11} {v['ndcg@10']:8.4f} {v['hr@10']:7.4f} {v['hr@1']:7.4f}")
    test = metrics["test"]
    ratio = test["markov"]["ndcg@10"] / max(test["popularity"]["ndcg@10"], 1e-9)
    print(f"test markov / popularity NDCG@10: {ratio:.2f}x")

    out = {
        "command": " ".join(["python -m benchmarks.synthetic_signal"] +
            ([f"--config {a.config}"] if a.config != "configs/default.yaml" else []) + a.overrides
            + (["--no-sasrec"] if a.no_sasrec else []) + ([f"--threads {a.threads}"] if a.threads != 1 else [])),
        "config": a.config, "overrides": a.overrides,
        "data": {"items": n_items, "users": report["users"], "interactions": report["interactions"],
                 "train_samples": len(train_tgt), "top10pct_item_share": round(top10_share, 4),
                 "synthetic": vars(cfg.data.synthetic), "seed": cfg.data.seed},
        "sasrec": None if a.no_sasrec else {"config": vars(cfg.eval.sasrec),
                                              "fit_info": getattr(sasrec_model, "fit_info", None)},
        "seconds": {"generate": round(gen_s, 3), "sasrec_fit": round(sasrec_s, 1)},
        "markov_over_popularity_test_ndcg10": round(ratio, 2),
        "metrics": metrics,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
