"""What trains: STAR's SID-rows-only mask, LoRA plus SID rows (PEFT), or every weight.

Three modes (``TrainConfig.mode``):

- ``embeddings`` (STAR alignment): :func:`freeze_all_but_sid_rows` leaves only the input
  embedding (and an untied output head) trainable and registers a gradient hook that zeroes every
  non-SID row. AdamW then never moves those rows: their gradients, and therefore both Adam moments,
  stay exactly 0, so the update ``m / (sqrt(v) + eps)`` is exactly 0. The one thing that would still
  move them is AdamW's *decoupled* weight decay (``p -= lr * wd * p`` on the whole tensor), so the
  embedding/head param group always has ``weight_decay = 0``.
- ``lora``: PEFT LoRA adapters on ``lora_target_modules`` plus PEFT's ``trainable_token_indices``
  (a small ``[n_sid, D]`` parameter that replaces the SID rows at forward time), so the new SID
  tokens still learn while the rest of the vocabulary stays frozen. Decoupled decay is safe here:
  the token parameter holds the SID rows only (it is still excluded, like every embedding).
- ``full``: every parameter trains.

The trainable state (what a checkpoint stores) is :func:`trainable_state_dict`; in ``embeddings``
mode it holds only the SID rows, which is all that can differ from the base model.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

MODES = ("embeddings", "lora", "full")


def as_ids(sid_ids: Sequence[int] | torch.Tensor, num_rows: int | None = None) -> torch.LongTensor:
    """SID token ids as a 1-D LongTensor (order kept), checked for emptiness, duplicates and range."""
    ids = torch.as_tensor(list(sid_ids) if not isinstance(sid_ids, torch.Tensor) else sid_ids, dtype=torch.long)
    ids = ids.flatten()
    if ids.numel() == 0:
        raise ValueError("sid_ids is empty: add the SID tokens to the vocabulary first (raygen.lm.add_sid_tokens)")
    if ids.unique().numel() != ids.numel():
        raise ValueError("sid_ids contains duplicates")
    if ids.min() < 0 or (num_rows is not None and ids.max() >= num_rows):
        raise ValueError(f"sid_ids must lie in [0, {num_rows}); got min {int(ids.min())}, max {int(ids.max())}")
    return ids


def sid_weights(model: nn.Module) -> list[nn.Parameter]:
    """The vocabulary matrices holding SID rows: input embedding, plus the output head if untied."""
    emb = model.get_input_embeddings().weight
    head_mod = model.get_output_embeddings()
    head = getattr(head_mod, "weight", None) if head_mod is not None else None
    return [emb] if head is None or head is emb else [emb, head]


class _RowMask:
    """Gradient hook keeping only the rows where ``keep`` is true (exact zeros elsewhere)."""

    def __init__(self, keep: torch.Tensor):
        self.keep = keep  # [rows, 1] bool

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        keep = self.keep.to(grad.device)
        return torch.where(keep, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))


def freeze_all_but_sid_rows(model: nn.Module, sid_ids: Sequence[int] | torch.Tensor) -> list[nn.Parameter]:
    """STAR mask: freeze everything, then let only the SID rows of the vocabulary matrices learn.

    Sets ``requires_grad=False`` on every parameter except the input embedding (and an untied output
    head), and registers a hook on those that zeroes the gradient of every non-SID row. Returns the
    trainable parameters; put them in an optimizer param group with ``weight_decay=0`` (see module
    docstring). Calling it twice on the same model raises (hooks would stack).
    """
    if getattr(model, "_raygen_sid_hooks", None):
        raise RuntimeError("freeze_all_but_sid_rows was already applied to this model")
    weights = sid_weights(model)
    ids = as_ids(sid_ids, weights[0].shape[0])
    for p in model.parameters():
        p.requires_grad_(False)
    handles = []
    for w in weights:
        if w.shape[0] <= int(ids.max()):
            raise ValueError(f"sid id {int(ids.max())} is outside a vocabulary matrix with {w.shape[0]} rows")
        keep = torch.zeros(w.shape[0], 1, dtype=torch.bool, device=w.device)
        keep[ids.to(w.device)] = True
        w.requires_grad_(True)
        handles.append(w.register_hook(_RowMask(keep)))
    model._raygen_sid_hooks = handles
    return weights


def apply_lora(model: nn.Module, sid_ids: Sequence[int] | torch.Tensor, *, r: int, alpha: int, dropout: float,
               target_modules: Iterable[str]) -> nn.Module:
    """Wrap ``model`` with PEFT LoRA; the SID rows of the embedding (and untied head) train too.

    Uses ``LoraConfig(trainable_token_indices=...)``: a list targets the input embedding (PEFT ties
    the head to it when the weights are tied); an untied head is named explicitly.
    """
    from peft import LoraConfig, get_peft_model

    ids = as_ids(sid_ids, model.get_input_embeddings().weight.shape[0]).tolist()
    weights = sid_weights(model)
    if len(weights) == 1:
        token_indices: list[int] | dict[str, list[int]] = ids
    else:
        names = {id(m): n for n, m in model.named_modules()}
        emb_name = names[id(model.get_input_embeddings())].split(".")[-1]
        head_name = names[id(model.get_output_embeddings())].split(".")[-1]
        token_indices = {emb_name: ids, head_name: ids}
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        trainable_token_indices=token_indices, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _no_decay(name: str, p: nn.Parameter, vocab_ids: set[int]) -> bool:
    """Biases, norms, embeddings/heads and PEFT token rows are never decayed."""
    return p.ndim < 2 or id(p) in vocab_ids or "trainable_tokens" in name


def prepare_trainable(model: nn.Module, mode: str, sid_ids: Sequence[int] | torch.Tensor, *,
                      weight_decay: float = 0.0, lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0,
                      lora_target_modules: Iterable[str] = ("q_proj", "v_proj")) -> tuple[nn.Module, list[dict]]:
    """Apply ``mode`` to ``model``; return the (maybe PEFT-wrapped) model and AdamW param groups."""
    if mode not in MODES:
        raise ValueError(f"unknown train mode {mode!r}; expected one of {MODES}")
    if mode == "embeddings":
        return model, [{"params": freeze_all_but_sid_rows(model, sid_ids), "weight_decay": 0.0}]
    vocab_ids = {id(w) for w in sid_weights(model)}
    if mode == "lora":
        model = apply_lora(model, sid_ids, r=lora_r, alpha=lora_alpha, dropout=lora_dropout,
                           target_modules=lora_target_modules)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if _no_decay(name, p, vocab_ids) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return model, [g for g in groups if g["params"]]


def trainable_state_dict(model: nn.Module, mode: str, sid_ids: Sequence[int] | torch.Tensor) -> dict[str, torch.Tensor]:
    """CPU copies of what training can change. In 'embeddings' mode: only the SID rows, keyed by the
    parameter name (load with :func:`load_trainable_state`)."""
    out = {}
    ids = as_ids(sid_ids)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        t = p.detach()
        if mode == "embeddings":
            t = t[ids.to(t.device)]
        out[name] = t.to("cpu", copy=True).contiguous()
    return out


@torch.no_grad()
def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], mode: str,
                         sid_ids: Sequence[int] | torch.Tensor) -> None:
    """Inverse of :func:`trainable_state_dict` on a model prepared with the same mode and sid_ids."""
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    unknown = [n for n in state if n not in params]
    if missing or unknown:
        raise KeyError(f"trainable state does not match the model: missing {missing[:5]}, unknown {unknown[:5]}")
    ids = as_ids(sid_ids)
    for name, t in state.items():
        p = params[name]
        if mode == "embeddings":
            p.index_copy_(0, ids.to(p.device), t.to(p.device, p.dtype))
        else:
            p.copy_(t.to(p.device, p.dtype))


def count_trainable(model: nn.Module, mode: str, sid_ids: Sequence[int] | torch.Tensor) -> int:
    """Number of scalars that can change (SID rows only in 'embeddings' mode). ZeRO-3-safe: uses
    DeepSpeed's ``ds_shape``/``ds_numel`` of partitioned parameters."""
    if mode == "embeddings":
        return sum(len(as_ids(sid_ids)) * getattr(w, "ds_shape", w.shape)[1] for w in sid_weights(model))
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
