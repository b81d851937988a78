"""The data stage: load the configured source into the internal items/samples tables."""
from __future__ import annotations

from raygen.io import write_parquet
from raygen.runner import StageContext


def run_data(ctx: StageContext) -> dict:
    from raygen.data.load import load_data

    items, samples, report = load_data(ctx.cfg.data)
    write_parquet(ctx.out / "items.parquet", items)
    write_parquet(ctx.out / "samples.parquet", samples)
    return report
