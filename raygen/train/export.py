"""Model export: a plain transformers folder (fp32, safetensors, LoRA merged) from a trainable state."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from raygen.train.checkpoint import save_model_atomic
from raygen.train.masks import load_trainable_state, prepare_trainable


@torch.no_grad()
def export_model(state: dict[str, torch.Tensor], model_dir: str | Path, out: str | Path, mode: str,
                 sid_ids: Sequence[int] | torch.Tensor, lora: dict | None = None) -> Path:
    """Write base model + trainable ``state`` as a plain transformers folder (fp32, safetensors).

    Loads the base from ``model_dir``, re-applies ``mode`` (LoRA: ``lora`` kwargs of
    :func:`prepare_trainable`), loads ``state``, merges LoRA into the weights, and saves it with the
    tokenizer of ``model_dir`` (when it has one) into ``out``, atomically.
    """
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model, _ = prepare_trainable(base, mode, sid_ids, **(lora or {}))
    load_trainable_state(model, state, mode, sid_ids)
    if mode == "lora":
        model = model.merge_and_unload()
    for hook in getattr(model, "_raygen_sid_hooks", []):
        hook.remove()
    model.requires_grad_(False)
    return save_model_atomic(model, out, model_dir)
