"""Pure-torch training core shared by the Ray worker, the naive baseline and the tests.

- :class:`LossModule` wraps a causal LM and returns the answer-token loss. Three ways to get logits:
  ``"all"`` (plain transformers: ``lm(..., labels=...)``, logits at every position), ``"answer"``
  (backbone hidden states, then the head only at positions that have a target: same loss, far less
  head work and no ``[B, L, V]`` logits tensor) and ``"sid"`` (head restricted to the SID rows:
  ``logits = h @ W[sid_ids + eos].T``; the softmax runs over SID tokens and EOS only, so it is only
  valid, and checked, when every target is one of them: the next-item task). It equals the full-head
  loss with every other logit at -inf. All three average the loss over target tokens.
- :class:`TorchEngine` gives plain torch / DDP the few methods of ``DeepSpeedEngine`` the loop
  uses, so :func:`train_steps` drives either one.
- :func:`export_model` writes a plain transformers folder from a trainable state.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raygen.train.checkpoint import save_model_atomic
from raygen.train.collate import IGNORE_INDEX
from raygen.train.masks import as_ids, load_trainable_state, prepare_trainable

Logits = Literal["all", "answer", "sid"]


def sid_head_weight(lm: nn.Module, sid_ids: torch.Tensor) -> torch.Tensor:
    """Rows ``sid_ids`` of the effective output-head weight, differentiable ([n_sid, D]).

    Handles a PEFT ``TrainableTokensWrapper`` head (LoRA mode): its SID rows live in the adapter's
    ``trainable_tokens_delta`` and replace the base rows at forward time.
    """
    head = lm.get_output_embeddings()
    adapter = getattr(head, "token_adapter", None)
    if adapter is None:
        return head.weight[sid_ids.to(head.weight.device)]
    active = [a for a in adapter.active_adapters if a in adapter.token_indices]
    if adapter.merged or adapter.disable_adapters or not active:
        return adapter.get_base_layer().weight[sid_ids]
    if len(active) == 1:
        pos = {t: i for i, t in enumerate(adapter.token_indices[active[0]])}
        if all(int(t) in pos for t in sid_ids):
            delta = adapter.trainable_tokens_delta[active[0]]
            return delta[torch.tensor([pos[int(t)] for t in sid_ids], device=delta.device)]
    return adapter.get_merged_weights(active)[sid_ids]


class LossModule(nn.Module):
    """``forward(input_ids, labels, attention_mask=None, position_ids=None) -> {"loss", "n_target"}``.

    ``logits="sid"`` restricts the head to ``sid_ids`` plus ``extra_ids`` (pass the EOS id(s): answers
    end with EOS); every target must be one of them (checked).

    Wrap this (not the bare LM) with DeepSpeed/DDP so the loss is computed inside their forward.
    ``bf16=True`` runs the LM under bf16 autocast (the loss itself is computed in fp32).
    """

    def __init__(self, lm: nn.Module, logits: Logits = "answer", sid_ids: Sequence[int] | torch.Tensor | None = None,
                 bf16: bool = False, extra_ids: Sequence[int] = ()):
        super().__init__()
        if logits not in ("all", "answer", "sid"):
            raise ValueError(f"logits must be 'all', 'answer' or 'sid', got {logits!r}")
        self.lm = lm
        self.logits = logits
        self.bf16 = bf16
        if logits == "sid":
            if sid_ids is None:
                raise ValueError("logits='sid' needs sid_ids")
            # The restricted head: SID tokens plus ``extra_ids`` (EOS: encoded answers end with it).
            ids = as_ids(list(dict.fromkeys([*as_ids(sid_ids).tolist(), *map(int, extra_ids)])))
            lookup = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
            lookup[ids] = torch.arange(len(ids))
            self.register_buffer("sid_ids", ids, persistent=False)
            self.register_buffer("sid_lookup", lookup, persistent=False)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **_: Any) -> dict[str, torch.Tensor]:
        autocast = torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        if self.logits == "all":
            with autocast:
                out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              labels=labels, use_cache=False)
            return {"loss": out.loss, "n_target": (labels[:, 1:] != IGNORE_INDEX).sum()}
        if attention_mask is not None and bool((attention_mask[:, :-1] < attention_mask[:, 1:]).any()):
            raise ValueError("LossModule expects right padding (pad_collate); got a mask with pads before tokens")
        # Right padding needs no attention mask: causal attention already keeps every real token from
        # seeing the pads after it, and without a mask SDPA takes its fused causal kernel.
        targets = labels[:, 1:]
        sel = targets != IGNORE_INDEX
        with autocast:
            hidden = self.lm.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False)[0]
            h = hidden[:, :-1][sel]
            y = targets[sel]
            if self.logits == "sid":
                lut = self.sid_lookup
                local = torch.where(y < lut.numel(), lut[y.clamp(max=lut.numel() - 1)], -1)
                if bool((local < 0).any()):
                    bad = y[local < 0].unique()[:10].tolist()
                    raise ValueError(f"sid_only_head: target token ids {bad} are neither SID tokens nor EOS; "
                                     "use it only for tasks whose answers are SIDs (next-item)")
                y = local
                logits = h @ sid_head_weight(self.lm, self.sid_ids).T
            else:
                logits = self.lm.get_output_embeddings()(h)
        n = sel.sum()
        loss = F.cross_entropy(logits.float(), y, reduction="sum") / n.clamp(min=1)
        return {"loss": loss, "n_target": n}


def adamw(groups: list[dict], lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """torch's AdamW over ``groups``, fused (one vectorised pass per parameter group) where every parameter is
    a floating tensor on the same CPU or CUDA device, else torch's default loop. Same update rule (a test
    compares them). Why: on a CPU torch's default is a per-tensor loop, and py-spy put ~1/3 of a 4-layer
    SmolLM2 SFT step (1 thread, 3 jobs sharing 2 cores) in it; whether fused is faster there is measured
    by ``benchmarks/optimizer_step.py`` (not settled yet: runs on the shared, loaded cores disagreed)."""
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    fused = (len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params))
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak lr over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    warmup, total = max(0, warmup_steps), max(1, total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TorchEngine:
    """The part of ``deepspeed.DeepSpeedEngine``'s interface :func:`train_steps` uses, for torch/DDP.

    ``engine(**batch)`` -> module output; ``backward(loss)`` scales by 1/grad_accum (under DDP's
    ``no_sync`` between accumulation boundaries); ``step()`` clips, steps optimizer and scheduler
    and zeroes grads at a boundary.
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler=None, grad_accum: int = 1,
                 grad_clip: float = 0.0):
        self.module, self.optimizer, self.lr_scheduler = module, optimizer, scheduler
        self.grad_accum, self.grad_clip = grad_accum, grad_clip
        self.micro_steps = 0
        self.global_steps = 0
        self._sync = contextlib.ExitStack()

    def is_gradient_accumulation_boundary(self) -> bool:
        return (self.micro_steps + 1) % self.grad_accum == 0

    def __call__(self, **batch):
        if hasattr(self.module, "no_sync") and not self.is_gradient_accumulation_boundary():
            self._sync.enter_context(self.module.no_sync())
        return self.module(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        try:
            (loss / self.grad_accum).backward()
        finally:
            self._sync.close()

    def step(self) -> None:
        if self.is_gradient_accumulation_boundary():
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            if self.grad_clip > 0 and params:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            self.optimizer.step()
            if self.lr_scheduler is not None:
                self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_steps += 1
        self.micro_steps += 1

    def get_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]


@dataclass
class StepResult:
    """One optimizer step on this rank."""
    step: int
    """Optimizer steps done so far (1-based after the first step)."""
    loss: float
    """Mean micro-batch loss over the accumulation window."""
    tokens: int
    """Real (non-pad) input tokens processed in this step on this rank."""
    targets: int
    """Answer tokens (loss terms) in this step on this rank."""
    lr: float
    seconds: float
    """Wall time of this step: from the end of the previous step's ``on_step`` callback (or the
    loop's start) to the end of this step's last micro-batch; includes waiting for data."""


def _to(batch: dict, device: torch.device | None) -> dict:
    return {k: (v.to(device, non_blocking=True) if device is not None and isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def train_steps(engine, batches: Iterable[dict], *, max_steps: int, start_step: int = 0,
                device: torch.device | None = None,
                on_step: Callable[[StepResult], bool | None] | None = None) -> int:
    """Feed collated ``batches`` through ``engine`` (DeepSpeedEngine or :class:`TorchEngine`).

    Stops after optimizer step ``max_steps`` (``max_steps <= 0``: when ``batches`` ends) or when
    ``on_step`` returns True. Returns the number of optimizer steps reached. A trailing partial
    accumulation window is dropped (its gradients are discarded on the next step's zeroing).
    """
    step = start_step
    if max_steps > 0 and step >= max_steps:
        return step
    losses: list[float] = []
    tokens = targets = 0
    t0 = time.perf_counter()
    for batch in batches:
        batch = dict(batch)
        n_tok = int(batch.pop("num_tokens", 0))
        out = engine(**_to(batch, device))
        engine.backward(out["loss"])
        boundary = engine.is_gradient_accumulation_boundary()
        engine.step()
        losses.append(float(out["loss"].detach()))
        tokens += n_tok
        targets += int(out["n_target"])
        if not boundary:
            continue
        step += 1
        res = StepResult(step=step, loss=sum(losses) / len(losses), tokens=tokens, targets=targets,
                         lr=float(engine.get_lr()[0]), seconds=time.perf_counter() - t0)
        losses, tokens, targets = [], 0, 0
        if on_step is not None and on_step(res):
            break
        if 0 < max_steps <= step:
            break
        t0 = time.perf_counter()  # the on_step callback (reports, checkpoints) is not step time
    return step


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


def steps_per_epoch(n_examples: int, num_workers: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps one pass over ``n_examples`` takes (each worker sees n // workers rows)."""
    per_worker = n_examples // num_workers
    return max(1, math.ceil(per_worker / batch_size) // grad_accum)
