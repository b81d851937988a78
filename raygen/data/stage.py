"""The data stage: load the configured source into the internal items/samples tables.

Writes ``items.parquet`` and ``samples.parquet``; the table source (whose ids are the team's own) also writes
``item_ids.parquet`` and ``user_ids.parquet`` (:mod:`raygen.data.idmap`) and streams its samples."""
from __future__ import annotations

from raygen.io import write_parquet
from raygen.runner import StageContext


def run_data(ctx: StageContext) -> dict:
    from raygen.data.load import load_data

    if ctx.cfg.data.source == "table":  # streams samples to the folder: never the whole table in memory
        from raygen.data.table import build_table

        return build_table(ctx.cfg.data, ctx.out)
    items, samples, report = load_data(ctx.cfg.data)
    write_parquet(ctx.out / "items.parquet", items)
    write_parquet(ctx.out / "samples.parquet", samples)
    return report
