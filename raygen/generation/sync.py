"""What the learner sends to the rollout actors: the policy's full (LoRA-merged) weights, and a checksum.

Rollout actors always hold a *plain* model (the architecture of ``model_dir``); when the policy is a
PEFT model, :func:`merged_state_dict` folds each LoRA delta into its base weight
(``W + scaling * B @ A`` via PEFT's ``get_delta_weight``), puts the trained SID rows of PEFT's
trainable-token adapters into the embedding/head matrices (``get_merged_weights``) and maps PEFT's
parameter names back to the plain model's, without touching the trained model (no merge/unmerge
round trip, so no drift).
"""
from __future__ import annotations

import hashlib

import torch

__all__ = ["is_peft_model", "merged_state_dict", "state_checksum"]


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


@torch.no_grad()
def merged_state_dict(model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Detached CPU state dict of ``model`` in plain-model naming; LoRA deltas merged in.

    Args:
        model: a transformers model or a ``peft.PeftModel`` around one.
        dtype: cast floating tensors to this dtype (e.g. bfloat16 halves the bytes sent); None keeps them.
    """
    if not is_peft_model(model):
        state = model.state_dict()
    else:
        from peft.tuners.lora import LoraLayer
        from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

        base = model.get_base_model()
        deltas: dict[str, torch.Tensor] = {}
        rows: dict[str, torch.Tensor] = {}  # owner -> whole matrix with the trained token rows in place
        for name, mod in base.named_modules():
            if isinstance(mod, LoraLayer) and not getattr(mod, "disable_adapters", False):
                own = set(mod.lora_A) | set(getattr(mod, "lora_embedding_A", {}))
                active = [a for a in mod.active_adapters if a in own]
                if active:
                    deltas[name] = sum(mod.get_delta_weight(a) for a in active)
            elif isinstance(mod, TrainableTokensLayer) and not (mod.disable_adapters or mod.merged):
                active = [a for a in mod.active_adapters if a in mod.token_indices]
                if active:
                    rows[name.rpartition(".token_adapter")[0]] = mod.get_merged_weights(active)
        state = {}
        for key, value in base.state_dict().items():
            if ".lora_" in key or ".original_module." in key or ".trainable_tokens_" in key:
                continue  # adapter factors/rows (merged below) and modules_to_save's frozen originals
            if ".token_adapter.base_layer." in key:
                owner, _, leaf = key.partition(".token_adapter.base_layer.")
                state[f"{owner}.{leaf}"] = rows[owner] if leaf == "weight" and owner in rows else value
                continue
            plain = key.replace(".base_layer.", ".")
            for adapter in getattr(model, "peft_config", {}):
                plain = plain.replace(f".modules_to_save.{adapter}.", ".")
            owner, _, leaf = plain.rpartition(".")
            if leaf == "weight" and ".base_layer." in key and owner in deltas:
                value = value + deltas[owner].to(value.dtype)
            state[plain] = value
    out, copies = {}, {}
    for k, v in state.items():
        v = v.detach()
        # Tied weights (embed_tokens / lm_head) stay ONE tensor, so pickling / ray.put sends them once.
        alias = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)
        if alias not in copies:
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            copies[alias] = v.to("cpu", copy=True).contiguous()
        out[k] = copies[alias]
    return out


def state_checksum(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted names and raw bytes of all tensors (exact equality of weights)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().to("cpu").contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
