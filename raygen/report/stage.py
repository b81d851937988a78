"""The report stage: one Markdown page with every stage's headline numbers and plots."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from raygen.io import atomic_path, read_json
from raygen.runner import SUCCESS, StageContext

# Headline metrics shown per stage (everything else stays in the stage's metrics.json).
HEADLINES = {
    "data": ["n_items", "n_users", "samples", "skips.total"],
    "corpus": ["n_items", "dim", "n_teacher", "n_fallback", "embed_items_per_s", "keyword_items_per_s"],
    "sids": ["n_items", "levels_final", "collision_rate_before", "collision_rate", "utilization", "recon_error"],
    "lm": ["init", "n_sid_tokens", "layers", "params"],
    "align": ["mode", "steps", "final_loss", "tokens_per_s"],
    "sft": ["mode", "steps", "final_loss", "tokens_per_s"],
    "rl": ["steps", "reward_mean_first", "reward_mean_last", "sync_s_mean"],
    "eval": ["split", "n_rows", "invalid", "table"],
}


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


def _metric_table(rows: dict) -> list[str]:
    """rows: {method: {metric: value}} -> Markdown table lines."""
    metrics = sorted({m for r in rows.values() for m in r})
    lines = ["| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(r.get(m, "")) for m in metrics) + " |")
    return lines


def build_report(run_dir: Path, out: Path) -> dict:
    lines = [f"# raygen run report: `{run_dir}`", ""]
    seconds = {}
    for stage in HEADLINES:
        folder = run_dir / stage
        if not (folder / SUCCESS).exists():
            continue
        m = read_json(folder / "metrics.json")
        seconds[stage] = m.get("seconds")
        lines += [f"## {stage}", "", f"{m.get('seconds', 0):.1f} s", ""]
        for key in HEADLINES[stage]:
            v = _get(m, key)
            if v is None:
                continue
            if key == "table" and isinstance(v, dict):
                lines += _metric_table(v) + [""]
            else:
                lines.append(f"- **{key}**: {_fmt(v)}")
        lines.append("")
        for png in sorted(folder.rglob("*.png")):
            rel = Path("plots") / f"{stage}_{png.name}"
            (out / "plots").mkdir(exist_ok=True)
            shutil.copy2(png, out / rel)
            lines += [f"![{stage} {png.stem}]({rel})", ""]
    total = sum(v for v in seconds.values() if v)
    lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in seconds.items() if v is not None]
    lines += [f"| total | {total:.1f} |", ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    return {"stage_seconds": seconds, "total_seconds": round(total, 1)}


def run_report(ctx: StageContext) -> dict:
    return build_report(ctx.run_dir, ctx.out)
