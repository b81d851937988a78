from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raygen.configbase import Resources, check_bf16


@dataclass
class SASRecConfig:
    hidden: int = 64
    """Embedding / model width."""
    n_layers: int = 2
    """Causal self-attention blocks."""
    n_heads: int = 2
    """Attention heads per block."""
    max_len: int = 20
    """Most recent items kept per history."""
    dropout: float = 0.2
    """Dropout on embeddings and inside the blocks."""
    epochs: int = 200
    """Most passes over the training samples. With validation rows, training stops earlier after
    ``patience`` epochs without a better valid NDCG@10; without them, exactly this many passes."""
    patience: int = 10
    """Epochs without a better validation NDCG@10 before stopping (only with validation rows)."""
    min_epochs: int = 40
    """Epochs always run before ``patience`` may stop training (the best epoch is still the one kept). On
    Industrial one seed of three stopped at epoch 18 on an early plateau of valid NDCG@10 (best epoch 8,
    test NDCG@10 0.045) while the other two improved until epochs 94-106 (0.072): a plateau early in
    training is not convergence. 0 = RecBole's rule (stop after ``patience`` epochs from the start); never
    more than ``epochs``."""
    batch_size: int = 128
    """Samples per optimiser step."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    all_positions: bool = True
    """Train every position to predict its next item (standard SASRec); False: only the target."""
    seed: int = 0
    """Seed for initialisation and shuffling."""


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
    resources: Resources = field(default_factory=lambda: Resources(count=1, cpus=1.0, gpus=0.0))
    """The beam-search actors sharing the rows: count (0 = search in the driver process, no Ray; cpus
    and gpus are then unused), CPUs and GPUs each."""
    bf16: Literal["auto"] | bool = "auto"
    """Run the beam search under bf16 autocast: 'auto' (default) = bf16 on GPUs that support it and on
    CPUs with native bf16 (AVX512-BF16/AMX), fp32 elsewhere, decided where the search runs; true / false
    force it. The choice and its reason go to the eval metrics ('precision')."""
    sid_only_head: bool = True
    """Score the beam search over the SID tokens + EOS only (log-softmax over those; what a model
    trained with `sft.sid_only_head` normalises over, and ~50x less head work than the whole
    vocabulary). false = full-vocabulary log-probabilities. Within one beam both rank the allowed
    tokens the same; across beams the normaliser differs."""
    baselines: list[str] = field(default_factory=lambda: ["popularity", "sasrec", "content"])
    """Baselines evaluated on the same rows: 'popularity' (training-set frequency), 'sasrec' (trained on
    the train split, early-stopped on valid) and 'content' (no training: items ranked by cosine between
    their corpus text embedding and the user's last `content_last` history items; the yardstick that
    also ranks cold items, which a generative model rarely emits)."""
    content_last: int = 1
    """History items whose mean unit embedding queries the 'content' baseline (the last N)."""
    fusion: bool = True
    """Also report 'raygen+content', a hybrid ranking: the model's top `beam_width` fused with the content
    ranking's top `fusion_depth` by reciprocal rank fusion (raygen.eval.fusion: k0 60, equal weights, no
    tuning). It keeps most of the model's top hits and adds items the model never emits (cold, newly added). Needs
    the corpus embeddings; evaluated with the baselines, on the same rows. With the 'valid' split in `splits`,
    the better of 'raygen' and 'raygen+content' on valid NDCG@max(ks) is what `raygen recommend` serves by
    default (metrics.json 'serving')."""
    fusion_depth: int = 50
    """Items of the content ranking that enter the fusion."""
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    """SASRec baseline settings."""
    seed: int = 0
    """Seed for the row subsample."""
    search: bool = True
    """Also evaluate STAR's search task (query -> item) on the test queries when the model trained on it
    (tasks.search_ratio > 0, corpus.n_queries > 0): recall/NDCG@{1,3,5,10} next to a BM25 baseline."""
    search_max_rows: int = 0
    """Evaluate at most this many test queries (0 = all; a fixed seeded sample)."""

    def validate(self) -> None:
        from raygen.configbase import ConfigError

        bad = set(self.splits) - {"train", "valid", "test"}
        if bad:
            raise ConfigError(f"eval.splits: unknown split(s) {sorted(bad)}")
        bad = set(self.baselines) - {"popularity", "sasrec", "content"}
        if bad:
            raise ConfigError(f"eval.baselines: unknown baseline(s) {sorted(bad)}")
        if self.content_last < 1:
            raise ConfigError(f"eval.content_last: must be >= 1, got {self.content_last}")
        if self.fusion_depth < 1:
            raise ConfigError(f"eval.fusion_depth: must be >= 1, got {self.fusion_depth}")
        check_bf16(self.bf16, "eval.bf16")
        if self.beam_width < max(self.ks):
            raise ConfigError(f"eval.beam_width ({self.beam_width}) must be >= max(eval.ks) ({max(self.ks)})")
        sr = self.sasrec
        if sr.min_epochs < 0:
            raise ConfigError(f"eval.sasrec.min_epochs: must be >= 0, got {sr.min_epochs}")
        for name in ("epochs", "patience", "batch_size", "max_len", "hidden", "n_heads", "n_layers"):
            if getattr(sr, name) < 1:
                raise ConfigError(f"eval.sasrec.{name}: must be >= 1, got {getattr(sr, name)}")
        if sr.hidden % sr.n_heads:
            raise ConfigError(f"eval.sasrec.hidden ({sr.hidden}) must be a multiple of eval.sasrec.n_heads "
                              f"({sr.n_heads})")
        if not 0.0 <= sr.dropout < 1.0:
            raise ConfigError(f"eval.sasrec.dropout: must be in [0, 1), got {sr.dropout}")
