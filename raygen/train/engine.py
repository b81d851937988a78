"""The training engine shared by the Ray workers, the single-process trainer, the GRPO learner and the tests.

- :func:`adamw` and :func:`linear_schedule`: the optimizer and schedule every trainer uses;
- :class:`TorchEngine` gives plain torch / DDP the few methods of ``DeepSpeedEngine`` the loop uses, so
  :func:`train_steps` drives either one;
- :func:`steps_per_epoch`: optimizer steps of one pass.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

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


def steps_per_epoch(n_examples: int, num_workers: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps one pass over ``n_examples`` takes (each worker sees n // workers rows)."""
    per_worker = n_examples // num_workers
    return max(1, math.ceil(per_worker / batch_size) // grad_accum)
