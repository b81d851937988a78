"""Single-process training with the cores the Ray worker uses (no Ray, no DeepSpeed): for one device
(a laptop, one GPU), benchmarks and tests. Same trainable selection, loss, engine, schedule,
validation, keep-best and early stopping as :mod:`raygen.train.ray_trainer`; no checkpoints.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import torch

from raygen.precision import resolve_bf16
from raygen.train.collate import make_collate
from raygen.train.config import TrainConfig
from raygen.train.loop import (LossModule, StepResult, TorchEngine, adamw, linear_schedule, steps_per_epoch,
                               train_steps)
from raygen.train.masks import load_trainable_state, prepare_trainable, trainable_state_dict
from raygen.train.validation import Progress, ValidSet, Validator

log = logging.getLogger("raygen")


def fit_local(lm: torch.nn.Module, encoded: list[dict], sid_ids: Sequence[int], cfg: TrainConfig, pad_id: int,
              eos_ids: Sequence[int], valid: ValidSet | None = None, device: torch.device | str = "cpu"
              ) -> tuple[torch.nn.Module, dict]:
    """Train ``lm`` (a causal LM with the SID tokens) on ``encoded`` rows; return the trained model (the
    best validation state when ``cfg.keep_best``) and a summary like the Ray trainer's. LoRA is not
    merged here (use :func:`raygen.train.loop.export_model` for a plain folder)."""
    cfg.validate()
    if len(encoded) < cfg.batch_size:  # no full batch: batches() below would never yield (and spin forever)
        raise ValueError(f"{len(encoded)} training examples, fewer than batch_size {cfg.batch_size}: "
                         "lower batch_size or give more data")
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    use_bf16, reason = resolve_bf16(cfg.bf16, device)
    lm = lm.to(device)
    lm, groups = prepare_trainable(lm, cfg.mode, sid_ids, weight_decay=cfg.weight_decay, lora_r=cfg.lora_r,
                                   lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                   lora_target_modules=cfg.lora_target_modules)
    module = LossModule(lm, logits="sid" if cfg.sid_only_head else "answer", sid_ids=sid_ids, bf16=use_bf16,
                        extra_ids=eos_ids).to(device)
    optimizer = adamw(groups, cfg.lr, cfg.weight_decay)
    spe = steps_per_epoch(len(encoded), 1, cfg.batch_size, cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * spe
    engine = TorchEngine(module, optimizer, linear_schedule(optimizer, cfg.warmup_steps, total), cfg.grad_accum,
                         cfg.grad_clip)
    validator = None
    if valid is not None and cfg.valid_every > 0:
        validator = Validator(valid, beam_width=cfg.valid_beam, batch_size=cfg.valid_batch_size,
                              patience=cfg.patience, autocast_dtype=torch.bfloat16 if use_bf16 else None,
                              sid_only=cfg.sid_only_head, eos_id=list(eos_ids))
    progress = Progress(cfg, validator, cfg.batch_size * cfg.grad_accum, total, device, 0, log)
    collate = make_collate(cfg.pad_to, pad_id, cfg.max_len)
    rng = np.random.default_rng(cfg.seed)

    def batches():
        epoch = 0
        while cfg.max_steps > 0 or epoch < cfg.epochs:
            order = rng.permutation(len(encoded)) if cfg.shuffle else np.arange(len(encoded))
            for s in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
                yield collate([encoded[i] for i in order[s:s + cfg.batch_size]])
            epoch += 1

    stats = {"tokens": 0, "targets": 0, "seconds": 0.0, "loss": float("nan")}

    def on_step(res: StepResult) -> bool:
        if res.step > 1:  # the first step (warm-up) is not timed
            stats["tokens"] += res.tokens
            stats["seconds"] += res.seconds
        stats["targets"] += res.targets
        stats["loss"] = res.loss
        done, _ = progress.step(res, lm, lambda: trainable_state_dict(lm, cfg.mode, sid_ids))
        return done

    t0 = time.time()
    step = train_steps(engine, batches(), max_steps=total, device=device, on_step=on_step)
    exported = step
    if validator is not None and cfg.keep_best and validator.best_state is not None:
        load_trainable_state(lm, validator.best_state, cfg.mode, sid_ids)
        exported = validator.best_step
    lm.eval()
    summary = {"final_step": step, "exported_step": exported, "total_steps": total, "steps_per_epoch": spe,
               "loss": stats["loss"], "train_seconds": round(time.time() - t0, 2),
               "tokens_per_s": stats["tokens"] / stats["seconds"] if stats["seconds"] > 0 else 0.0,
               "examples_seen": step * cfg.batch_size * cfg.grad_accum, "precision": {"bf16": use_bf16, "reason": reason}}
    if validator is not None:
        summary.update(learning_curve=validator.curve, best_step=validator.best_step,
                       best_valid={"ndcg@10": validator.best}, stopped_early=validator.should_stop)
    return lm, summary
