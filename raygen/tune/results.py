"""Sweep results without Ray: a row per trial, the best trial, CSV / Markdown tables, the curves plot.

Input is one dict per trial, ``{"trial_id", "params", "history", "error", "run_dir"}``, where
``history`` lists the trial's rung reports in order (dicts with ``rung``, ``step``, ``loss`` and
the validation metrics); :mod:`raygen.tune.sweep` builds them from Ray Tune's ResultGrid.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

PARAM_COLUMNS = ("init", "lr", "sa_init_depth", "lora_rank", "repeat")


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def partner_metric(metric: str) -> str:
    """'ndcg@K' <-> 'hr@K' (the table shows both at the same K)."""
    name, k = metric.split("@")
    return f"{'hr' if name == 'ndcg' else 'ndcg'}@{k}"


def summarize(trials: list[dict], metric: str, rungs: int) -> list[dict]:
    """One row per trial: params, rung reached, best and last ``metric``, status, run folder."""
    other = partner_metric(metric)
    rows = []
    for t in trials:
        hist = [h for h in t.get("history") or [] if _num(h.get(metric)) is not None]
        last = hist[-1] if hist else {}
        rung = int(last.get("rung", 0) or 0)
        if t.get("error"):
            status = f"error: {str(t['error']).splitlines()[0][:120]}"
        elif rung >= rungs:
            status = "completed"
        else:
            status = "stopped by ASHA" if rung else "no report"
        rows.append({
            "trial_id": t["trial_id"], **{k: t["params"].get(k) for k in PARAM_COLUMNS},
            "rung": rung, "step": int(last["step"]) if "step" in last else None,
            f"best_{metric}": max((_num(h[metric]) for h in hist), default=None),
            f"last_{metric}": _num(last.get(metric)), f"last_{other}": _num(last.get(other)),
            "loss": _num(last.get("loss")), "status": status, "run_dir": t.get("run_dir", ""),
        })
    return rows


def best_row(rows: list[dict], metric: str) -> dict | None:
    """The trial whose LAST report scores highest: its ``sft/model`` is the model that report measured
    (an earlier rung may have scored higher, but its weights were overwritten by the later rungs)."""
    scored = [r for r in rows if r[f"last_{metric}"] is not None]
    return max(scored, key=lambda r: (r[f"last_{metric}"], r["rung"])) if scored else None


def write_csv(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial_id"])
        w.writeheader()
        w.writerows(rows)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-2 and v != 0 else f"{v:.4f}"
    return str(v).replace("|", "\\|")


def to_markdown(rows: list[dict], skip: tuple[str, ...] = ("run_dir",)) -> str:
    """A GitHub Markdown table of ``rows`` (columns of the first row, minus ``skip``)."""
    if not rows:
        return "_no trials_\n"
    cols = [c for c in rows[0] if c not in skip]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_curves(trials: list[dict], metric: str, path: str | Path) -> None:
    """``metric`` against SFT step, one line per trial, coloured by init strategy (line style by lr)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inits = sorted({t["params"].get("init") for t in trials})
    lrs = sorted({t["params"].get("lr") for t in trials})
    colors = {init: plt.cm.tab10(i % 10) for i, init in enumerate(inits)}
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in trials:
        pts = [(h["step"], _num(h.get(metric))) for h in t.get("history") or []
               if _num(h.get(metric)) is not None and "step" in h]
        if not pts:
            continue
        p = t["params"]
        ax.plot(*zip(*pts), marker="o", color=colors[p.get("init")], linestyle=styles[lrs.index(p.get("lr")) % 4],
                label=f"{p.get('init')} lr={p.get('lr'):g} ({t['trial_id']})")
    ax.set_xlabel("SFT step")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"Sweep: {metric} per rung (colour = init, line style = lr)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
