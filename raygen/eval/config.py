from __future__ import annotations

from dataclasses import dataclass, field

from raygen.eval.sasrec import SASRecConfig


@dataclass
class EvalConfig:
    splits: list[str] = field(default_factory=lambda: ["valid", "test"])
    """Splits to evaluate (each gets predictions_<split>.parquet and metrics)."""
    beam_width: int = 10
    """Beams of the constrained beam search = items ranked per row."""
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10])
    """Cut-offs of HR@K and NDCG@K."""
    max_rows: int = 0
    """Evaluate at most this many rows per split (0 = all; rows are taken in a fixed seeded order)."""
    batch_size: int = 16
    """Rows per forward pass of the beam search."""
    num_actors: int = 1
    """Ray actors sharing the rows (0 = run in the driver process)."""
    num_gpus_per_actor: float = 0.0
    """GPUs per evaluation actor."""
    bf16: bool = False
    """Run the beam search under bf16 autocast."""
    baselines: list[str] = field(default_factory=lambda: ["popularity", "sasrec"])
    """Baselines evaluated on the same rows: 'popularity', 'sasrec'."""
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    """SASRec baseline settings."""
    seed: int = 0
    """Seed for the row subsample."""

    def validate(self) -> None:
        from raygen.configbase import ConfigError

        bad = set(self.splits) - {"train", "valid", "test"}
        if bad:
            raise ConfigError(f"eval.splits: unknown split(s) {sorted(bad)}")
        bad = set(self.baselines) - {"popularity", "sasrec"}
        if bad:
            raise ConfigError(f"eval.baselines: unknown baseline(s) {sorted(bad)}")
        if self.beam_width < max(self.ks):
            raise ConfigError(f"eval.beam_width ({self.beam_width}) must be >= max(eval.ks) ({max(self.ks)})")
