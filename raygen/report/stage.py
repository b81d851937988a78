"""The report stage: one Markdown page with every stage's headline numbers and plots.

Besides the headlines: the eval section says in words whether the model collapsed (every user
getting nearly the same ranking, see :func:`raygen.eval.metrics.collapse_stats`) and shows the
diversity diagnostics of every method, and a ``learning_curve`` list in align/sft metrics.json
(dicts with ``step``, ``examples``, ``loss`` and optionally ``valid_ndcg@10`` / ``valid_hr@10``) is
drawn into ``plots/learning_curve_<stage>.png``.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from raygen.io import atomic_path, read_json
from raygen.runner import SUCCESS, StageContext

log = logging.getLogger("raygen")

# Headline metrics shown per stage (everything else stays in the stage's metrics.json). A key ending
# in "?" is shown when the stage wrote it (e.g. validation results only when validation ran); every
# other key is required: a stage that no longer writes it is listed under ``missing`` in the report's
# metrics and in report.md, so the report cannot drift from the stages unnoticed.
HEADLINES = {
    "data": ["source", "items", "users", "interactions", "samples", "skips.total"],
    "corpus": ["n_items", "dim", "n_teacher", "n_fallback", "embed_items_per_s", "keyword_items_per_s"],
    "sids": ["method", "n_items", "levels_final", "collision_rate_before", "collision_rate", "utilization",
             "recon_error"],
    "lm": ["init.strategy", "sid_tokens", "num_hidden_layers", "parameters", "init.sid_mean_norm",
           "init.vocab_mean_norm"],
    "align": ["mode", "final_step", "loss", "tokens_per_s", "precision.bf16"],
    "sft": ["mode", "final_step", "exported_step", "loss", "tokens_per_s", "precision.bf16", "best_step?",
            "best_valid?", "stopped_early?"],
    "rl": ["chosen", "steps", "reward_mean_first", "reward_mean_last", "sync_s_mean", "selection_metric",
           "valid_metric_before", "valid_metric_after"],
    "eval": ["split", "n_rows", "invalid", "table", "serving.ranking?", "serving.why?", "sasrec_fit?"],
}
COLLAPSE_KEYS = ["distinct_top1", "coverage@10", "same_top10_share", "collapsed"]
"""Diversity diagnostics per method and split in eval/metrics.json (``collapse_stats``)."""
CURVE_VALID_KEYS = ["valid_ndcg@10", "valid_hr@10"]


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and all(isinstance(x, float) for x in v):
        return "[" + ", ".join(f"{x:.3g}" for x in v) + "]"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def _metric_order(name: str) -> tuple:
    """Sort key: 'name@K' metrics grouped by name, K ascending (hr@1, hr@3, hr@5, hr@10, ndcg@1, ...),
    then the other columns alphabetically."""
    base, at, k = name.partition("@")
    return (0, base, int(k), "") if at and k.isdigit() else (1, "", 0, name)


def _metric_table(rows: dict, columns: list[str] | None = None) -> list[str]:
    """rows: {method: {metric: value}} -> Markdown table lines (``columns``: their order; default all
    metrics in :func:`_metric_order`)."""
    metrics = columns or sorted({m for r in rows.values() for m in r}, key=_metric_order)
    lines = ["| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(r.get(m, "")) for m in metrics) + " |")
    return lines


def collapse_lines(m: dict) -> list[str]:
    """Eval-section lines: a sentence per split on which the model collapsed, then the diagnostics."""
    splits = m.get("splits") or {}
    lines = []
    for split, table in splits.items():
        r = (table or {}).get("raygen") or {}
        if r.get("collapsed"):
            lines += [f"> Collapsed: every user gets nearly the same ranking on the `{split}` split -- "
                      f"{r.get('same_top10_share', 0):.0%} of the {r.get('n', '?')} rows share one top-10 "
                      f"list, {r.get('distinct_top1', '?')} distinct item(s) are ranked first, and the top-10 "
                      f"lists cover {r.get('coverage@10', 0):.1%} of the catalog. The model ignores the user's "
                      f"history; its HR/NDCG come from the item prior alone.", ""]
    diag = {f"{method} ({split})": {k: r[k] for k in COLLAPSE_KEYS if k in r}
            for split, table in splits.items() for method, r in (table or {}).items()
            if isinstance(r, dict) and "collapsed" in r}
    if diag:
        if not lines:
            lines += ["Not collapsed: the model's rankings vary across users (diagnostics below).", ""]
        lines += ["Ranking diversity (a popularity baseline is collapsed by construction):", ""]
        lines += _metric_table(diag, COLLAPSE_KEYS) + [""]
    return lines


def interval_lines(m: dict) -> list[str]:
    """Eval-section tables: each method's headline metrics with 95 % bootstrap intervals on the main split, and
    the paired differences of the model and the hybrid with the others (an interval that excludes 0 is a
    difference the rows support)."""
    conf = (m.get("intervals") or {}).get(m.get("split"))
    if not conf:
        return []
    metrics = list(conf)
    first = conf[metrics[0]]

    def cell(value: float, ci: list) -> str:
        return f"{value:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"

    lines = [f"95 % intervals on the `{m['split']}` split ({first['n']} rows, {first['resamples']} bootstrap "
             "resamples of the rows; differences paired: the same resamples for both methods):", "",
             "| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for method in first["methods"]:
        lines.append(f"| {method} | " + " | ".join(cell(conf[x]["methods"][method]["mean"],
                                                         conf[x]["methods"][method]["ci95"]) for x in metrics) + " |")
    if first["paired"]:
        lines += ["", "| difference | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for pair in first["paired"]:
            lines.append(f"| {pair} | " + " | ".join(cell(conf[x]["paired"][pair]["diff"], conf[x]["paired"][pair]["ci95"])
                                                     for x in metrics) + " |")
    return lines + [""]


def slice_and_search_lines(m: dict) -> list[str]:
    """Eval-section tables: each method's metrics on cold rows (target never a training target) and warm
    rows with their counts, and, when the search task ran, search Recall/NDCG@K next to BM25."""
    lines = []
    slices = m.get("slices") or {}
    rows = {f"{method} ({name}, n={sl[name].get('n', 0)})": {k: v for k, v in sl[name].items() if k != "n"}
            for method, sl in slices.items() for name in ("cold", "warm") if isinstance(sl.get(name), dict)}
    if rows:
        lines += [f"Cold / warm rows of the `{m.get('split', '?')}` split (cold: the target is never a training "
                  "target):", ""] + _metric_table(rows) + [""]
    search = m.get("search") or {}
    if search:
        cols = sorted({k for r in search.values() for k in r if k.startswith(("recall@", "ndcg@"))},
                      key=lambda k: (not k.startswith("recall@"), _metric_order(k)))  # recall first, as STAR
        n = next(iter(search.values())).get("n", "?")
        lines += [f"Search (query -> item) on {n} test queries:", ""] + _metric_table(search, cols) + [""]
    return lines


def plot_learning_curve(curve: list, path: Path, title: str) -> bool:
    """Train loss (left axis) and valid NDCG@10 / HR@10 (right axis) against examples seen (or steps
    when no entry has ``examples``). Returns False, writing nothing, when there is nothing to draw."""
    pts = [c for c in curve if isinstance(c, dict)]
    xkey = "examples" if any(c.get("examples") is not None for c in pts) else "step"

    def series(key):
        return [(c[xkey], c[key]) for c in pts if c.get(xkey) is not None and isinstance(c.get(key), (int, float))]

    loss, valid = series("loss"), {k: series(k) for k in CURVE_VALID_KEYS}
    if not loss and not any(valid.values()):
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    handles = []
    if loss:
        handles += ax.plot(*zip(*loss), color="tab:blue", label="train loss")
        ax.set_ylabel("train loss")
    ax.set_xlabel("examples seen" if xkey == "examples" else "step")
    if any(valid.values()):
        ax2 = ax.twinx()
        for (key, pts_k), (color, marker) in zip(valid.items(), [("tab:orange", "o"), ("tab:green", "s")]):
            if pts_k:
                handles += ax2.plot(*zip(*pts_k), color=color, marker=marker, label=key.replace("_", " "))
        ax2.set_ylabel("valid metric")
    ax.legend(handles=handles, loc="best", fontsize="small")
    ax.set_title(title)
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> bool:
    """Write ``fig`` as a PNG at ``path`` atomically and close it; True."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return True


def ci_bars(ax, names: list[str], summaries: list[dict | None], colors: list[str], title: str) -> None:
    """Bars of ``{"mean", "ci95"}`` summaries with their 95 % interval as error bars (``None``: no bar), names
    under the bars."""
    mean = np.array([s["mean"] if s else 0.0 for s in summaries])
    err = np.array([[m - s["ci95"][0], s["ci95"][1] - m] if s else [0.0, 0.0] for m, s in zip(mean, summaries)]).T
    ax.bar(range(len(names)), mean, yerr=np.maximum(err, 0), capsize=4, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(bottom=0)


def plot_intervals(m: dict, path: Path) -> bool:
    """One panel per evaluated split: every method's headline NDCG with its 95 % interval (the model and the
    hybrid in colour, baselines grey). False (nothing drawn) without intervals in ``m``."""
    intervals = m.get("intervals") or {}
    panels = [(split, next((c for name, c in conf.items() if name.startswith("ndcg@")), None))
              for split, conf in intervals.items()]
    panels = [(split, c) for split, c in panels if c and c.get("methods")]
    if not panels:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.8, 3.6), squeeze=False)
    for ax, (split, conf) in zip(axes[0], panels):
        names = list(conf["methods"])
        colors = ["tab:blue" if n == "raygen" else "tab:orange" if n.startswith("raygen+") else "0.6" for n in names]
        ci_bars(ax, names, [conf["methods"][n] for n in names], colors,
                f"{split}: {conf['metric']} ({conf['n']} rows, 95 % CI)")
    return save_figure(fig, path)


def build_report(run_dir: Path, out: Path, folder_of=None) -> dict:
    """``report.md`` (and plots) in ``out`` from the finished stages' metrics.json. ``folder_of(stage)``
    finds a stage's folder (the runner's ``ctx.input``; default ``run_dir/<stage>``); unfinished
    stages are left out."""
    lines = [f"# raygen run report: `{run_dir}`", ""]
    seconds: dict = {}
    missing: dict[str, list[str]] = {}
    for stage in HEADLINES:
        try:
            folder = folder_of(stage) if folder_of else run_dir / stage
        except FileNotFoundError:  # ctx.input of a stage that has not finished
            continue
        if not (folder / SUCCESS).exists():
            continue
        m = read_json(folder / "metrics.json")
        seconds[stage] = m.get("seconds")
        lines += [f"## {stage}", "", f"{m.get('seconds', 0):.1f} s", ""]
        if "skipped_training" in m:  # a disabled training stage handed its upstream's model on
            lines += [f"- **skipped_training**: {m['skipped_training']}", ""]
            continue
        for spec in HEADLINES[stage]:
            key = spec.rstrip("?")
            v = _get(m, key)
            if v is None:
                if not spec.endswith("?"):
                    missing.setdefault(stage, []).append(key)
                continue
            if key == "table" and isinstance(v, dict):
                lines += [""] + _metric_table(v) + [""]  # a table needs a blank line after a list
            else:
                lines.append(f"- **{key}**: {_fmt(v)}")
        lines.append("")
        if stage == "eval":
            lines += interval_lines(m)
            if plot_intervals(m, out / "plots" / "eval_intervals.png"):
                lines += ["![eval intervals](plots/eval_intervals.png)", ""]
            lines += collapse_lines(m) + slice_and_search_lines(m)
        curve = m.get("learning_curve")
        if isinstance(curve, list) and curve:
            rel = Path("plots") / f"learning_curve_{stage}.png"
            if plot_learning_curve(curve, out / rel, f"{stage} learning curve"):
                lines += [f"![{stage} learning curve]({rel})", ""]
        for png in sorted(folder.rglob("*.png")):
            rel = Path("plots") / f"{stage}_{png.name}"
            (out / "plots").mkdir(exist_ok=True)
            shutil.copy2(png, out / rel)
            lines += [f"![{stage} {png.stem}]({rel})", ""]
    total = sum(v for v in seconds.values() if v)
    lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in seconds.items() if v is not None]
    lines += [f"| total | {total:.1f} |", ""]
    if missing:
        log.warning("report: headline metrics missing from the stages' metrics.json: %s", missing)
        lines += ["## Missing headline metrics", "", "These stages did not write a metric the report expects "
                  "(a stage changed its metrics.json): " + "; ".join(f"{k}: {', '.join(v)}" for k, v in
                                                                     missing.items()), ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    return {"stage_seconds": seconds, "total_seconds": round(total, 1), "missing": missing}


def run_report(ctx: StageContext) -> dict:
    return build_report(ctx.run_dir, ctx.out, ctx.input)
