"""Corpus stage: item text embeddings and keywords.

Pure cores: ``embed`` (sentence embedder), ``keywords`` (teacher prompt, answer parser,
deterministic fallback), ``teacher`` (transformers / vLLM / no-LLM backends). Ray layer:
``ray_layer`` (Ray Data actor pools). Stage entry point: ``stage.run_corpus``.
"""
from raygen.corpus.config import CorpusConfig

__all__ = ["CorpusConfig"]
