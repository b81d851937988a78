"""Single-process training with the cores the Ray worker uses (no Ray, no DeepSpeed): for one device
(a laptop, one GPU), benchmarks and tests. Same trainable selection, loss, engine, schedule,
validation, keep-best and early stopping as :mod:`raygen.train.ray_trainer`. With ``checkpoint_dir`` it
writes a resumable checkpoint (the checkpoint format of :mod:`raygen.train.checkpoint`, plus the best state and
the batch order's position) after every validation, and a later call with the same arguments continues from it
exactly where it stopped: a run longer than the process that runs it (a CPU benchmark cut short) still finishes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from raygen.io import load_tensors
from raygen.precision import resolve_bf16
from raygen.train import checkpoint as ckpt
from raygen.train.collate import make_collate
from raygen.train.config import TrainConfig
from raygen.train.engine import StepResult, TorchEngine, adamw, linear_schedule, steps_per_epoch, train_steps
from raygen.train.loss import LossModule
from raygen.train.masks import load_trainable_state, prepare_trainable, trainable_state_dict
from raygen.train.validation import Progress, ValidSet, Validator

log = logging.getLogger("raygen")


def fit_local(lm: torch.nn.Module, encoded: list[dict], sid_ids: Sequence[int], cfg: TrainConfig, pad_id: int,
              eos_ids: Sequence[int], valid: ValidSet | None = None, device: torch.device | str = "cpu",
              checkpoint_dir: str | Path | None = None) -> tuple[torch.nn.Module, dict]:
    """Train ``lm`` (a causal LM with the SID tokens) on ``encoded`` rows; return the trained model (the
    best validation state when ``cfg.keep_best``) and a summary like the Ray trainer's. LoRA is not
    merged here (use :func:`raygen.train.export.export_model` for a plain folder).

    ``checkpoint_dir``: after every validation (that does not end the run) the trainable state, optimizer,
    schedule, validation progress, best state and step go to ``<checkpoint_dir>/step_NNNNNNN`` (atomically,
    the newest kept); when it already holds one, training resumes there: same batches from that step on,
    same result as an uninterrupted run. A checkpoint of other data or settings is refused, not mixed in.
    ``lm`` must arrive as a fresh call would give it (the resumed state overwrites what training changes)."""
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
    stats = {"tokens": 0, "targets": 0, "seconds": 0.0, "loss": float("nan")}
    identity = _identity(cfg, encoded, sid_ids)
    start_step = 0
    resume = ckpt.latest_step(Path(checkpoint_dir)) if checkpoint_dir else None
    if resume is not None:
        start_step = _restore(resume, identity, lm, cfg, sid_ids, engine, validator, progress, stats)

    def batches():
        skip = start_step * cfg.grad_accum  # micro-batches already trained (resume): same order, passed over
        epoch = 0
        while cfg.max_steps > 0 or epoch < cfg.epochs:
            order = rng.permutation(len(encoded)) if cfg.shuffle else np.arange(len(encoded))
            for s in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
                if skip > 0:
                    skip -= 1
                    continue
                yield collate([encoded[i] for i in order[s:s + cfg.batch_size]])
            epoch += 1

    def on_step(res: StepResult) -> bool:
        if res.step > 1:  # the first step (warm-up) is not timed
            stats["tokens"] += res.tokens
            stats["seconds"] += res.seconds
        stats["targets"] += res.targets
        stats["loss"] = res.loss
        done, metrics = progress.step(res, lm, lambda: trainable_state_dict(lm, cfg.mode, sid_ids))
        if checkpoint_dir and metrics and not done:
            stats["wall_s"] = time.time() - t0
            _save(Path(checkpoint_dir), res.step, identity, lm, cfg, sid_ids, engine, validator, progress, stats)
        return done

    t0 = time.time() - stats.pop("wall_s", 0.0)  # a resumed run's clock goes on from the checkpoint's
    step = train_steps(engine, batches(), max_steps=total, start_step=start_step, device=device, on_step=on_step)
    exported = step
    if validator is not None and cfg.keep_best and validator.best_state is not None:
        load_trainable_state(lm, validator.best_state, cfg.mode, sid_ids)
        exported = validator.best_step
    lm.eval()
    summary = {"final_step": step, "exported_step": exported, "start_step": start_step, "total_steps": total,
               "steps_per_epoch": spe,
               "loss": stats["loss"], "train_seconds": round(time.time() - t0, 2),
               "tokens_per_s": stats["tokens"] / stats["seconds"] if stats["seconds"] > 0 else 0.0,
               "examples_seen": step * cfg.batch_size * cfg.grad_accum,
               "precision": {"bf16": use_bf16, "reason": reason}}
    if validator is not None:
        summary.update(learning_curve=validator.curve, best_step=validator.best_step,
                       best_valid={"ndcg@10": validator.best}, stopped_early=validator.should_stop)
    return lm, summary


def _identity(cfg: TrainConfig, encoded: list[dict], sid_ids: Sequence[int]) -> str:
    """A digest of what a checkpoint is only valid for: the settings, the examples, the SID ids."""
    h = hashlib.sha1(json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str).encode())
    for ex in encoded:
        h.update(np.asarray(ex["input_ids"], dtype=np.int64).tobytes())
        h.update(np.asarray(ex["labels"], dtype=np.int64).tobytes())
    h.update(np.asarray(list(sid_ids), dtype=np.int64).tobytes())
    return h.hexdigest()


def _save(root: Path, step: int, identity: str, lm, cfg: TrainConfig, sid_ids, engine, validator, progress,
          stats: dict) -> None:
    best = validator.best_state if validator is not None else None
    meta = {"identity": identity, "valid": validator.state() if validator is not None else None,
            "train_s": progress.train_s, "stats": stats}
    ckpt.save_step(root, step, trainable_state_dict(lm, cfg.mode, sid_ids), engine.optimizer, meta, keep=1,
                   scheduler=engine.lr_scheduler, extra={"best.safetensors": best} if best is not None else None)
    log.info("checkpoint: step %d in %s", step, root)


def _restore(d: Path, identity: str, lm, cfg: TrainConfig, sid_ids, engine, validator, progress, stats: dict) -> int:
    """Load a checkpoint written by :func:`_save` into the fresh training state; return its step."""
    meta = ckpt.read_meta(d)
    if meta.get("identity") != identity:
        raise ValueError(f"checkpoint {d} was written for other training settings, examples or SID ids; "
                         "remove that folder or give another checkpoint_dir to start over")
    step = int(meta["step"])
    load_trainable_state(lm, ckpt.read_trainable(d), cfg.mode, sid_ids)
    ckpt.restore_optimizer(d, engine.optimizer, engine.lr_scheduler)
    engine.global_steps, engine.micro_steps = step, step * cfg.grad_accum
    if validator is not None and meta.get("valid"):
        validator.load_state(meta["valid"])
        if (d / "best.safetensors").exists():
            validator.keep(load_tensors(d / "best.safetensors"))
    progress.train_s = float(meta["train_s"])
    stats.update(meta["stats"])
    log.info("resumed from %s at step %d", d, step)
    return step
