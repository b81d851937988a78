"""Items/s of the corpus embedding pass through Ray Data vs the same embedder called directly.

Same items (MiniOneRec Industrial, ``item_text`` of title/brand/categories/description), same
model, batch size, input blocks (longest text first) and CPU count on both paths. Reported:

- steady state (the target): items after the first output block divided by the time from the
  first output block to the last, i.e. actor start-up and model load excluded on the Ray
  path, model load excluded on the direct path;
- end to end: all items over the whole wall time (Ray: building the dataset, actor start-up,
  model load, collecting; direct: model load and embedding);
- the model load time of the direct path on its own.

    python -m benchmarks.corpus_throughput [--n-items N] [--batch-size 64] [--repeats 2]

Writes benchmarks/results/corpus_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]

from raygen.configbase import Resources  # noqa: E402
from raygen.corpus.config import CorpusConfig  # noqa: E402
from raygen.corpus.embed import embed_texts, load_embedder  # noqa: E402
from raygen.corpus.ray_layer import embed_blocks, embed_dataset, ensure_ray  # noqa: E402
from raygen.data.minionerec import read_items  # noqa: E402
from raygen.data.schema import SkipLog, items_table  # noqa: E402

DEFAULT_ITEMS = ROOT.parent / "shared" / "data" / "amazon18-industrial" / "items.json"


def _rates(n_total: int, stamps: list[tuple[float, int]], t_start: float) -> dict:
    """stamps: (time a block finished, rows in it), in arrival order."""
    t_first, n_first = stamps[0]
    t_end = stamps[-1][0]
    steady = (n_total - n_first) / (t_end - t_first) if len(stamps) > 1 else float("nan")
    return {"steady_items_per_s": steady, "end_to_end_items_per_s": n_total / (t_end - t_start),
            "first_block_s": t_first - t_start, "total_s": t_end - t_start}


def run_direct(items: pa.Table, cfg: CorpusConfig) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    model = load_embedder(cfg.embed_model, "cpu")
    load_s = time.perf_counter() - t0
    stamps = []
    for block in embed_blocks(items, cfg):
        emb = embed_texts(model, block.column("text").to_pylist(), cfg.embed_batch_size, cfg.normalize)
        stamps.append((time.perf_counter(), emb.shape[0]))
    out = _rates(items.num_rows, stamps, t0)
    out["load_s"] = load_s
    # Steady state on this path starts after the model load and the first block.
    return out


def run_ray(items: pa.Table, cfg: CorpusConfig) -> dict:
    t0 = time.perf_counter()
    return stream_rates(embed_dataset(items, cfg), items, t0)


def stream_rates(ds, items: pa.Table, t0: float) -> dict:
    """Consume a corpus Ray Dataset block by block as it streams out; :func:`_rates` from ``t0`` (before the
    dataset was built). Raises unless exactly the items' ids came back, each once."""
    stamps, ids = [], []
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        stamps.append((time.perf_counter(), block.num_rows))
        ids += block.column("item_id").to_pylist()
    if sorted(ids) != sorted(items.column("item_id").to_pylist()):
        raise RuntimeError(f"Ray path returned {len(ids)} rows ({len(set(ids))} distinct ids) for "
                           f"{items.num_rows} items, or other ids")
    return {**_rates(items.num_rows, stamps, t0), "rows_out": len(ids)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", default=str(DEFAULT_ITEMS))
    ap.add_argument("--n-items", type=int, default=0, help="first N items (0 = all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="direct/Ray run pairs in ABBA order; medians reported")
    ap.add_argument("--ray-num-cpus", type=float, default=0.0,
                    help="corpus.embed_resources.cpus for the Ray path (0 = auto: all CPUs, torch threads to match; "
                         "1 = one CPU and one torch thread, Ray's default for an actor)")
    ap.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    args = ap.parse_args(argv)

    path = Path(args.items)
    if not path.exists():
        sys.exit(f"items file not found: {path} (the shared Industrial data)")
    rows, _ = read_items(path, 2000, SkipLog())
    items = items_table(rows[: args.n_items] if args.n_items > 0 else rows)
    cpus = os.cpu_count() or 1
    cfg = CorpusConfig(embed_batch_size=args.batch_size, embed_resources=Resources(count=1, cpus=args.ray_num_cpus))
    ensure_ray()

    runs = {"direct": [], "ray": []}
    paths = (("direct", run_direct), ("ray", run_ray))
    for r in range(args.repeats):
        # ABBA order, so a drift in machine load over time does not favour one path.
        for name, fn in (paths if r % 2 == 0 else paths[::-1]):
            load_before = os.getloadavg()[0]
            res = fn(items, cfg)
            res["loadavg_1min_before_after"] = (load_before, os.getloadavg()[0])
            runs[name].append(res)
            print(f"[{r}] {name:6s} steady {res['steady_items_per_s']:7.1f} items/s | end-to-end "
                  f"{res['end_to_end_items_per_s']:7.1f} items/s in {res['total_s']:.1f}s "
                  f"(first block after {res['first_block_s']:.1f}s)", flush=True)

    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0] if not k.startswith("loadavg")}
           for name, rs in runs.items()}
    result = {
        "ray_items_per_s": round(med["ray"]["steady_items_per_s"], 2),
        "direct_items_per_s": round(med["direct"]["steady_items_per_s"], 2),
        "ratio": round(med["ray"]["steady_items_per_s"] / med["direct"]["steady_items_per_s"], 3),
        "measure": "steady state: items after the first output block / time from first to last block "
                   "(actor start-up and model load excluded); medians over repeats",
        "ray_end_to_end_items_per_s": round(med["ray"]["end_to_end_items_per_s"], 2),
        "direct_end_to_end_items_per_s": round(med["direct"]["end_to_end_items_per_s"], 2),
        "end_to_end_ratio": round(med["ray"]["end_to_end_items_per_s"] / med["direct"]["end_to_end_items_per_s"], 3),
        "ray_first_block_s": round(med["ray"]["first_block_s"], 2),
        "direct_model_load_s": round(med["direct"]["load_s"], 2),
        "n_items": items.num_rows,
        "batch_size": args.batch_size,
        "cpus": cpus,
        "ray_embed_num_cpus": args.ray_num_cpus,
        "model": cfg.embed_model,
        "repeats": args.repeats,
        "runs": runs,
        "note": "load: see each run's loadavg_1min_before_after (the 2-core machine may have been running other jobs)",
        "command": "python -m benchmarks.corpus_throughput " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(f"steady state: Ray {result['ray_items_per_s']:.1f} items/s, direct {result['direct_items_per_s']:.1f} "
          f"items/s, ratio {result['ratio']:.3f} (end-to-end ratio {result['end_to_end_ratio']:.3f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
