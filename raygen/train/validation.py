"""Validation-driven training: valid NDCG@K by constrained beam search every N steps, best-state keeping,
early stopping on patience, and the learning curve. Pure torch (no Ray): the Ray worker calls it, and
tests drive it directly.

Rank 0 runs the beam search on its (whole, ZeRO <= 2) model; the metrics are broadcast so every
rank takes the same stop decision. The best trainable state is kept on rank 0 (CPU copy) and
exported at the end instead of the last step's when ``keep_best`` is set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from raygen.eval.metrics import ranking_metrics
from raygen.generation.beam import constrained_beam_search
from raygen.generation.trie import SidTrie


METRIC_KS = (1, 5, 10)
METRIC_KEYS = tuple(f"{m}@{k}" for m in ("hr", "ndcg") for k in METRIC_KS)


@dataclass
class ValidSet:
    """Fixed validation rows: generation prompts and target item indices into ``sid_matrix``."""
    prompt_ids: list[list[int]]
    targets: list[int]
    """Row index in ``sid_matrix`` of each row's target item."""
    sid_matrix: list[list[int]]
    """SID token ids of every catalog item [n_items, levels]."""
    pad_id: int

    def to_dict(self) -> dict:
        return {"prompt_ids": self.prompt_ids, "targets": self.targets, "sid_matrix": self.sid_matrix,
                "pad_id": self.pad_id}


@dataclass
class Validator:
    """Evaluates, tracks the best, decides when to stop. ``metric`` is e.g. ``ndcg@10``."""
    valid: ValidSet
    beam_width: int = 10
    batch_size: int = 32
    patience: int = 0
    """Stop after this many evaluations in a row without improvement (0 = never stop early)."""
    metric: str = "ndcg@10"
    autocast_dtype: torch.dtype | None = None
    sid_only: bool = False
    """Score over the SID tokens + ``eos_id`` only (models trained with ``sid_only_head``)."""
    eos_id: int | list[int] | None = None
    best: float = float("-inf")
    best_step: int = -1
    bad: int = 0
    curve: list[dict] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None

    def __post_init__(self):
        self.sid = torch.as_tensor(self.valid.sid_matrix, dtype=torch.long)
        self.trie = SidTrie.build(self.sid)
        self.targets = np.asarray(self.valid.targets, dtype=np.int64)

    def evaluate(self, model) -> dict[str, float]:
        """HR@K / NDCG@K (K = 1, 5, 10; a K above the beam width scores the whole beam) on the valid rows."""
        items, _ = constrained_beam_search(model, self.valid.prompt_ids, self.sid, self.beam_width,
                                           self.valid.pad_id, self.batch_size, autocast_dtype=self.autocast_dtype,
                                           trie=self.trie, sid_only=self.sid_only, eos_id=self.eos_id)
        return ranking_metrics(items.numpy(), self.targets, METRIC_KS)

    def record(self, step: int, metrics: dict[str, float], extra: dict | None = None) -> bool:
        """Add one evaluation to the curve; True if it is a new best (then call :meth:`keep`)."""
        score = float(metrics[self.metric])
        self.curve.append({"step": step, **(extra or {}), **{f"valid_{k}": float(v) for k, v in metrics.items()}})
        if score > self.best:
            self.best, self.best_step, self.bad = score, step, 0
            return True
        self.bad += 1
        return False

    def keep(self, state: dict[str, torch.Tensor]) -> None:
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad >= self.patience

    def state(self) -> dict:
        """JSON-able progress, for checkpoints (the best weights are saved separately)."""
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad, "curve": self.curve}

    def load_state(self, state: dict) -> None:
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.bad, self.curve = int(state["bad"]), list(state["curve"])


class Progress:
    """The per-step bookkeeping of validation-driven training, shared by the Ray worker and
    :func:`raygen.train.local.fit_local`: train-time clock and loss since the last validation, the time
    budget, when to validate, keep-best and when to stop. ``state_fn()`` returns the trainable state
    (called on every rank when a new best is found: under ZeRO-3 it is a collective)."""

    def __init__(self, cfg, validator: Validator | None, examples_per_step: int, stop_step: int, device,
                 rank: int = 0, log=None):
        self.cfg, self.validator, self.examples_per_step = cfg, validator, examples_per_step
        self.stop_step, self.device, self.rank, self.log = stop_step, device, rank, log
        self.train_s, self.loss_sum, self.loss_n = 0.0, 0.0, 0

    def step(self, res, model, state_fn) -> tuple[bool, dict]:
        """After optimizer step ``res`` (a StepResult): ``(done, {"valid_<metric>": ...} or {})``."""
        self.train_s += res.seconds
        self.loss_sum += res.loss
        self.loss_n += 1
        budget = self.cfg.time_budget_s
        out_of_time = bool(broadcast_metrics({"t": float(budget > 0 and self.train_s >= budget)}, ["t"],
                                             self.device)["t"])
        last = res.step == self.stop_step or out_of_time
        v = self.validator
        metrics = {}
        if v is not None and (res.step % self.cfg.valid_every == 0 or last):
            metrics = self.validate(res.step, model, state_fn)
        return last or (v is not None and v.should_stop), metrics

    def validate(self, step: int, model, state_fn) -> dict:
        v = self.validator
        metrics = broadcast_metrics(v.evaluate(model) if self.rank == 0 else None, METRIC_KEYS, self.device)
        loss = self.loss_sum / max(self.loss_n, 1)
        self.loss_sum, self.loss_n = 0.0, 0
        improved = v.record(step, metrics, {"examples": step * self.examples_per_step, "loss": loss,
                                            "train_s": round(self.train_s, 2)})
        if improved and self.cfg.keep_best:
            state = state_fn()
            if self.rank == 0:
                v.keep(state)
        if self.rank == 0 and self.log is not None:
            self.log.info("valid step %d: %s (best %.4f at step %d)", step,
                          {k: round(x, 4) for k, x in metrics.items() if k.endswith("@10")}, v.best, v.best_step)
        return {f"valid_{k}": x for k, x in metrics.items()}


def broadcast_metrics(metrics: dict[str, float] | None, keys: Sequence[str], device) -> dict[str, float]:
    """Rank 0's ``metrics`` on every rank (a no-op without a process group)."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return dict(metrics or {})
    t = torch.tensor([float((metrics or {}).get(k, 0.0)) for k in keys], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return dict(zip(keys, t.tolist()))
