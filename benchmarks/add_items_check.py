"""`raygen add-items` on a finished real run: does an added item get the corpus stage's embedding, a SID, and
reach users through the served ranking?

    .venv/bin/python -m benchmarks.add_items_check --run runs/bench_industrial \
        --out benchmarks/results/add_items_industrial.json [--n 20]

Works on a copy of the run (``<run>_add_items_check``, made fresh; the run itself is never changed). Takes
``--n`` catalog items (the targets of the first test rows), writes each one's text again under a new item id
(a "twin": the same product listed twice), adds the twins with ``raygen add-items`` and measures:
the cosine between each twin's embedding and its original's corpus-stage embedding (1.0 when add-items
reproduces the corpus stage's text and embedder), how many twins the model's vocabulary covers, and, for a
history ending in the original, the twin's rank in the content ranking and in the served (``recommend``
default) ranking. Timing: the add-items call (embedder load included) and per recommend call.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality_local import machine  # noqa: E402
from raygen.io import read_parquet  # noqa: E402
from raygen.provenance import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run folder (raygen run through eval)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=20, help="items to list again as twins")
    a = ap.parse_args()
    from raygen.additions import read_additions
    from raygen.recommend import Recommender
    from raygen.sid.stage import read_embeddings

    src = Path(a.run)
    run = src.parent / f"{src.name}_add_items_check"
    if run.exists():
        shutil.rmtree(run)  # this script's own copy
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("ray_train", "tensorboard", "*_checkpoints"))
    samples = read_parquet(run / "data/samples.parquet")
    test = samples.filter(pc.equal(samples.column("split"), "test"))
    originals = list(dict.fromkeys(test.column("target").to_pylist()))[:a.n]
    items = {r["item_id"]: r for r in read_parquet(run / "data/items.parquet").to_pylist()}
    first = max(items) + 1
    twins = {first + i: o for i, o in enumerate(originals)}
    path = run / "twins.jsonl"
    path.write_text("".join(json.dumps({**items[o], "item_id": t}) + "\n" for t, o in twins.items()))
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "raygen", "add-items", "--run", str(run), "--items", str(path)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    add_s = time.time() - t0
    added, batches = read_additions(run)
    emb_ids, X = read_embeddings(run / "corpus/embeddings.parquet")
    pos = {int(i): k for k, i in enumerate(emb_ids)}
    new_X = np.array(added.column("embedding").to_pylist(), dtype=np.float32)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    cos = [float(unit(new_X[k]) @ unit(X[pos[twins[t]]])) for k, t in enumerate(added.column("item_id").to_pylist())]
    rec = Recommender(run)
    serving = rec.serving()
    rows, rec_s = [], []
    hist_of = {}
    for h, tgt in zip(test.column("history").to_pylist(), test.column("target").to_pylist()):
        hist_of.setdefault(tgt, h)
    for t, o in twins.items():
        history = [*hist_of[o], o]  # the user just bought the original
        t1 = time.time()
        served = [r["item_id"] for r in rec.top_k(history, k=10)]
        rec_s.append(time.time() - t1)
        fused = rec.top_k(history, k=10, hybrid=True)
        content = {r["item_id"]: r["content_rank"] for r in fused}
        rows.append({"twin": t, "original": o, "twin_in_served_top10": t in served,
                     "twin_rank_served": served.index(t) + 1 if t in served else None,
                     "twin_content_rank": content.get(t), "content_only": t in rec.content_only})
    res = {"run": str(src), "n_twins": len(twins), "add_items_s": round(add_s, 1), "batch": batches[-1],
           "embedding_cosine_to_original": {"min": min(cos), "mean": float(np.mean(cos))},
           "in_model_vocabulary": len(twins) - len(rec.content_only), "serving": serving,
           "twin_in_served_top10": sum(r["twin_in_served_top10"] for r in rows),
           "twin_content_rank_le2": sum((r["twin_content_rank"] or 99) <= 2 for r in rows),
           "recommend_s_mean": round(float(np.mean(rec_s)), 3), "rows": rows,
           "command": " ".join(["python", "-m", "benchmarks.add_items_check", *sys.argv[1:]]), "machine": machine(),
           "threads": os.environ.get("OMP_NUM_THREADS")}
    write_result(a.out, res)
    print(json.dumps({k: v for k, v in res.items() if k not in ("rows", "machine", "batch")}, indent=1))


if __name__ == "__main__":
    main()
