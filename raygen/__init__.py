"""raygen: Ray-distributed trainer for LLM-based generative recommenders."""

__version__ = "0.1.0"
