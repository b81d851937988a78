"""Training-free baselines on the rows of kept benchmark runs, paired with every kept variant.

    python -m benchmarks.baselines_on_runs --run runs/industrial \
        --runs-dir benchmarks/results/quality_industrial_runs --out benchmarks/results/content_vs_quality_industrial.json

A figure made before a baseline existed need not be retrained to get it: every kept run file in
``--runs-dir`` (``<variant>-s<seed>.npz`` of quality_local.py, search_quality.py, new_items.py, and the kept
SASRec fits ``baseline_sasrec-s<seed>.npz``: per-row metrics, row ids, targets) is read and grouped by
variant, and popularity plus the content baseline (``raygen.eval.baselines.content_rank``, last 1 and last 3
history items, ``--content-last``) are scored on exactly those rows of ``--run``'s samples, with ``--run``'s
corpus embeddings. The runs must have been scored on the same test rows, and ``--run`` must hold the same
samples: every kept row's target must equal ``--run``'s target of that row (else the script stops and says
which file differs). The data stage is deterministic, so a rebuilt run folder (other SIDs) still qualifies:
the baselines read no SIDs.

Also the hybrid of the eval stage (``raygen.eval.fusion``: each kept top-10 fused with the content ranking's top
``--fusion-depth`` by reciprocal rank fusion, k0 60), ``<variant>+content``, paired with the variant alone and
with content_last1. Reported: each method's HR@K / NDCG@K (mean ± std over seeds, bootstrap 95 % CI over rows, collapse check:
distinct top-1 items) and the paired bootstrap CIs of NDCG@10 and HR@10, variant minus each baseline.
Outputs ``--out`` (JSON) and its Markdown table beside it.

Two training settings side by side (each folder's runs named ``LABEL/<variant>``), paired with one of them:

    python -m benchmarks.baselines_on_runs --run runs/industrial \
        --runs-dir 10ep=benchmarks/results/epochs_industrial_10ep_runs \
        --runs-dir 5ep=benchmarks/results/epochs_industrial_5ep_runs --against 5ep/mean \
        --out benchmarks/results/epochs_industrial.json
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality import METRICS, cell, paired_diff, per_row, run_embeddings, summarize  # noqa: E402
from benchmarks.quality_local import command, machine, write_outputs  # noqa: E402
from raygen.io import read_parquet  # noqa: E402

RUN_FILE = re.compile(r"^(?P<name>.+)-s(?P<seed>\d+)\.npz$")


def runs_dirs(specs: list[str]) -> list[tuple[str, Path]]:
    """``--runs-dir`` values, ``DIR`` or ``LABEL=DIR``, as (label, folder): a label prefixes the folder's variant
    names (``LABEL/mean``), so two folders that each hold a ``mean`` (e.g. two training budgets) stay apart."""
    out = [tuple(s.split("=", 1)) if "=" in s else ("", s) for s in specs]
    if len(out) > 1 and not all(label for label, _ in out):
        raise SystemExit("several --runs-dir: give each a label, LABEL=DIR")
    return [(label, Path(d)) for label, d in out]


def kept_runs(dirs: list[tuple[str, Path]]) -> tuple[dict[str, list[dict]], dict[str, list], dict[str, list],
                                                       np.ndarray, np.ndarray]:
    """``{variant: [per-row metrics of each seed, seed order]}``, ``{variant: [distinct top-1 items of each seed
    (None where the run's record has no collapse check)]}``, ``{variant: [top-10 item ids of each seed]}`` (only
    variants whose files keep them: not the SASRec fits) and the row ids / targets they share, over the (label,
    folder) pairs of :func:`runs_dirs`."""
    groups: dict[str, list[tuple[int, dict, int | None, np.ndarray]]] = {}
    shared = None
    for label, runs_dir in dirs:
        files = sorted(p for p in runs_dir.glob("*.npz") if RUN_FILE.match(p.name))
        if not files:
            raise SystemExit(f"no kept run files (<variant>-s<seed>.npz) in {runs_dir}")
        shared = _group(files, label, groups, shared)
    ordered = {n: sorted(g, key=lambda x: x[0]) for n, g in groups.items()}
    topk = {n: [x[3] for x in g] for n, g in ordered.items() if all(len(x[3]) == len(shared[1]) for x in g)}
    return ({n: [x[1] for x in g] for n, g in ordered.items()}, {n: [x[2] for x in g] for n, g in ordered.items()},
            topk, shared[1], shared[2])


def _group(files: list[Path], label: str, groups: dict, shared):
    """Add ``files`` to ``groups`` under their (labelled) variant names; stop on a second row set."""
    for path in files:
        m = RUN_FILE.match(path.name)
        z = np.load(path, allow_pickle=False)
        rows = {k.split(":", 1)[1]: z[k] for k in z.files if k.startswith("metric:")}
        if shared is None:
            shared = (path, z["row_ids"], z["targets"])
        elif not (np.array_equal(shared[1], z["row_ids"]) and np.array_equal(shared[2], z["targets"])):
            raise SystemExit(f"{path} was scored on other rows than {shared[0]}: one figure, one row set")
        name = (f"{label}/" if label else "") + m["name"].removeprefix("baseline_")
        top1 = json.loads(str(z["record"])).get("collapse", {}).get("distinct_top1") if "record" in z.files else None
        groups.setdefault(name, []).append((int(m["seed"]), rows, top1,
                                            z["topk"] if "topk" in z.files else np.zeros((0, 10), np.int64)))
    return shared


def check_rows(samples: pa.Table, row_ids: np.ndarray, targets: np.ndarray, run: Path) -> None:
    """Stop unless ``run``'s samples hold ``targets`` at ``row_ids`` (the kept runs' data)."""
    if len(row_ids) and int(row_ids.max()) >= samples.num_rows:
        raise SystemExit(f"{run}/data/samples.parquet has {samples.num_rows} rows; the kept runs scored row "
                         f"{int(row_ids.max())}: not the same data")
    mine = samples.column("target").take(pa.array(row_ids)).to_numpy()
    bad = np.flatnonzero(mine != targets)
    if len(bad):
        raise SystemExit(f"{run}/data/samples.parquet differs from the kept runs at {len(bad)} row(s), first row "
                         f"{int(row_ids[bad[0]])} (target {int(mine[bad[0]])} vs kept {int(targets[bad[0]])})")


def markdown(res: dict) -> str:
    ks = METRICS
    lines = [f"# Training-free baselines on the kept runs of `{res['runs_dir']}` ({res['n_rows']} rows)", "",
             "Popularity: training-split frequency; content_lastN: every catalog item ranked by cosine between its "
             "corpus text embedding and the mean unit embedding of the user's last N history items (no training, "
             "history items not excluded). Mean ± std over seeds (– : one seed) [95 % bootstrap CI over rows].", "",
             "| method | " + " | ".join(k.upper() for k in ks) + " | distinct top-1 | seeds |",
             "|---|" + "---|" * (len(ks) + 2)]
    for name, r in res["methods"].items():
        top1 = r["distinct_top1"].replace("None", "-")
        lines.append(f"| {name} | " + " | ".join(cell(r["summary"][k]) for k in ks) + f" | {top1} | {r['seeds']} |")
    lines += ["", "Paired differences, variant minus baseline (and minus `--against`; bootstrap 95 % CI over rows):", ""]
    for name, refs in res["differences"].items():
        lines.append(f"- {name}: " + "; ".join(
            f"vs {ref} NDCG@10 {d['ndcg@10']['diff']:+.4f} [{d['ndcg@10']['ci95'][0]:+.4f}, {d['ndcg@10']['ci95'][1]:+.4f}],"
            f" HR@10 {d['hr@10']['diff']:+.4f} [{d['hr@10']['ci95'][0]:+.4f}, {d['hr@10']['ci95'][1]:+.4f}]"
            for ref, d in refs.items()))
    lines += ["", f"Wall time {res['wall_s']} s on {res['machine']['cpus']} CPU cores. Command: `{res['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run folder with data/ and corpus/embeddings.parquet")
    ap.add_argument("--runs-dir", required=True, action="append",
                    help="folder of kept run files (<variant>-s<seed>.npz); repeat as LABEL=DIR to put the runs of "
                         "several folders side by side (variants named LABEL/variant)")
    ap.add_argument("--against", default="",
                    help="also pair every other kept variant with this one (e.g. 5ep/mean), on the same rows")
    ap.add_argument("--out", required=True)
    ap.add_argument("--content-last", default="1,3", help="content baselines: last N history items, comma list")
    ap.add_argument("--fusion-depth", type=int, default=50,
                    help="content items fused with each kept top-10 (the eval stage's eval.fusion_depth)")
    a = ap.parse_args()
    t0 = time.time()
    from raygen.eval.baselines import content_rank, popularity_rank
    from raygen.eval.fusion import rrf_fuse

    run, dirs = Path(a.run), runs_dirs(a.runs_dir)
    variants, top1, topk, row_ids, targets = kept_runs(dirs)
    if a.against and a.against not in variants:
        raise SystemExit(f"--against {a.against}: no such kept variant (kept: {', '.join(sorted(variants))})")
    samples = read_parquet(run / "data/samples.parquet")
    check_rows(samples, row_ids, targets, run)
    embeddings = run_embeddings(run)
    if embeddings is None:
        raise SystemExit(f"{run}/corpus/embeddings.parquet is missing: the content baseline needs it")
    catalog = read_parquet(run / "sids/codes.parquet").column("item_id").to_numpy()
    histories = [list(h) for h in samples.column("history").take(pa.array(row_ids)).to_pylist()]
    train = samples.filter(pc.equal(samples.column("split"), "train"))
    tops = {"popularity": popularity_rank(train.column("history").to_pylist(), train.column("target").to_pylist(),
                                          len(targets), 10)}
    for n in (int(x) for x in a.content_last.split(",") if x):
        tops[f"content_last{n}"] = content_rank(histories, catalog, *embeddings, 10, n)
    base = {b: [per_row(t, targets)] for b, t in tops.items()}
    # the hybrid of raygen.eval.fusion (the eval stage's 'raygen+content') on each kept top-10
    content = content_rank(histories, catalog, *embeddings, a.fusion_depth, 1)
    fused_tops = {f"{n}+content": [rrf_fuse([t, content], 10) for t in tk] for n, tk in topk.items()}
    fused = {n: [per_row(t, targets) for t in tops_n] for n, tops_n in fused_tops.items()}
    methods = {n: {"summary": summarize(r), "seeds": len(r), "distinct_top1": "/".join(map(str, top1[n]))}
               for n, r in variants.items()}
    methods.update({b: {"summary": summarize(r), "seeds": 1, "distinct_top1": str(len(np.unique(tops[b][:, 0])))}
                    for b, r in base.items()})
    methods.update({n: {"summary": summarize(r), "seeds": len(r), "distinct_top1": "/".join(
        str(len(np.unique(t[:, 0]))) for t in fused_tops[n])} for n, r in fused.items()})
    refs = {**base, **({a.against: variants[a.against]} if a.against else {})}
    diffs = {n: {b: {m: paired_diff(r, rb, m) for m in ("ndcg@10", "hr@10")} for b, rb in refs.items() if b != n}
             for n, r in variants.items()}
    for n, r in fused.items():  # the hybrid against the model alone and against the content ranking alone
        own = n.removesuffix("+content")
        diffs[n] = {ref: {m: paired_diff(r, rows, m) for m in ("ndcg@10", "hr@10")}
                    for ref, rows in ((own, variants[own]), ("content_last1", base.get("content_last1")))
                    if rows is not None}
    res = {"runs_dir": ", ".join(f"{label}={d}" if label else str(d) for label, d in dirs), "run": str(run), "n_rows": len(targets), "methods": methods,
           "differences": diffs, "wall_s": round(time.time() - t0, 1), "command": command("benchmarks.baselines_on_runs"),
           "machine": machine()}
    write_outputs(Path(a.out), res, markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
