"""How long and how much driver memory does the data stage take on a team-sized interactions table?

    nice python benchmarks/data_scale.py                       # 10 M interactions / 1 M users / 200 k items
    nice python benchmarks/data_scale.py --rows 1000000 --users 100000 --items 20000 --out /tmp/ds.json

Generates (into a temporary folder, never committed) Parquet interactions with string user and item ids,
integer epoch timestamps and a zipf-ish item popularity (p ~ 1/(rank+10)^0.9), in ``--files`` parts, plus an
item table with a title and a description column; then runs the data stage's core
(:func:`raygen.data.table.build_table`: read, id maps, repeats, 5-core, loo split, samples streamed to
Parquet) in a child process and records its wall time and peak RSS (``resource.getrusage``), with the
per-row cost extrapolated linearly to 100 M rows. Result: ``benchmarks/results/data_scale.json``.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]

from raygen.provenance import cpu_flags, write_result  # noqa: E402

TARGET_ROWS = 100_000_000


def _ids(prefix: str, values: np.ndarray, width: int) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width, "0"), "")


def generate(folder: Path, rows: int, users: int, items: int, files: int, seed: int = 0) -> dict:
    """Write ``interactions/part-*.parquet`` and ``items.parquet`` under ``folder``; their sizes."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / (np.arange(items) + 10.0) ** 0.9
    cdf = np.cumsum(weights / weights.sum())
    item_of_rank = rng.permutation(items)  # popularity is not id order
    (folder / "interactions").mkdir(parents=True)
    per = -(-rows // files)
    for f in range(files):
        n = min(per, rows - f * per)
        u = rng.integers(0, users, n)
        it = item_of_rank[np.minimum(np.searchsorted(cdf, rng.random(n)), items - 1)]
        ts = 1_600_000_000 + rng.integers(0, 3 * 365 * 86400, n)
        pq.write_table(pa.table({"user_id": _ids("u", u, 7), "item_id": _ids("i", it, 6),
                                 "ts": pa.array(ts, pa.int64()), "rating": pa.array(rng.integers(1, 6, n), pa.int8())}),
                       folder / "interactions" / f"part-{f:03d}.parquet")
    ids = np.arange(items)
    text = lambda prefix, v: pc.binary_join_element_wise(prefix, pc.cast(pa.array(v), pa.string()), "")  # noqa: E731
    pq.write_table(pa.table({"item_id": _ids("i", ids, 6), "title": text("Product ", ids),
                             "about": text("A thing of kind ", ids % 97)}), folder / "items.parquet")
    return {"rows": rows, "users": users, "items": items, "files": files,
            "bytes": sum(p.stat().st_size for p in folder.rglob("*.parquet"))}


def stage_child(folder: Path, out: Path, split: str, batch_rows: int) -> dict:
    """Run the data stage core on ``folder`` (in this process); wall time and peak RSS."""
    from raygen.data.config import DataConfig, TableConfig
    from raygen.data.table import build_table

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # after imports
    cfg = DataConfig(source="table", split=split, min_interactions=5, max_history=20,
                     table=TableConfig(interactions=str(folder / "interactions"), user_column="user_id",
                                       item_column="item_id", timestamp_column="ts", items=str(folder / "items.parquet"),
                                       title_column="title", text_columns=["about"], batch_rows=batch_rows))
    t0 = time.perf_counter()
    report = build_table(cfg, out)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"wall_s": round(wall, 2), "peak_rss_bytes": peak, "rss_after_imports_bytes": base_rss,
            "report": {k: report[k] for k in ("items", "samples", "users", "kcore", "interactions_read")},
            "skips": report["skips"]["counts"],
            "outputs_bytes": {p.name: p.stat().st_size for p in sorted(out.iterdir())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--split", choices=["loo", "time"], default="loo")
    ap.add_argument("--batch-rows", type=int, default=1_000_000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(stage_child(Path(args.child[0]), Path(args.child[1]), args.split, args.batch_rows)))
        return
    with tempfile.TemporaryDirectory(prefix="raygen-data-scale-") as tmp:
        t0 = time.perf_counter()
        table = generate(Path(tmp) / "in", args.rows, args.users, args.items, args.files)
        gen_s = time.perf_counter() - t0
        print(f"generated {table} in {gen_s:.0f} s", flush=True)
        # A child process, so the peak RSS is the data stage's alone (not the generator's).
        proc = subprocess.run([sys.executable, __file__, "--child", str(Path(tmp) / "in"), str(Path(tmp) / "out"),
                               "--split", args.split, "--batch-rows", str(args.batch_rows)],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            sys.exit(f"data stage failed:\n{proc.stderr[-4000:]}")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = table["rows"]
    per_row_s = child["wall_s"] / rows
    rss_per_row = (child["peak_rss_bytes"] - child["rss_after_imports_bytes"]) / rows
    result = {
        "question": "wall time and peak driver RSS of the data stage (table source) at 10 M interactions",
        "table": table, "split": args.split, "batch_rows": args.batch_rows, "generate_s": round(gen_s, 1),
        "data_stage": child,
        "peak_rss_gib": round(child["peak_rss_bytes"] / 2 ** 30, 2),
        "per_row_us": round(per_row_s * 1e6, 3), "rss_per_row_bytes": round(rss_per_row, 1),
        "extrapolated_100m": {"wall_min": round(per_row_s * TARGET_ROWS / 60, 1),
                              "peak_rss_gib": round((child["rss_after_imports_bytes"] + rss_per_row * TARGET_ROWS)
                                                    / 2 ** 30, 1),
                              "how": "linear in rows from this run (the sorts are n log n: a lower bound)"},
        "avx512_bf16": "avx512_bf16" in cpu_flags(),
    }
    write_result(args.out, result)
    print(json.dumps({k: result[k] for k in ("peak_rss_gib", "per_row_us", "extrapolated_100m")}, indent=1))
    print(f"wall {child['wall_s']} s -> {args.out}")


if __name__ == "__main__":
    main()
