"""Thin Ray layer: STAR alignment / SFT on Ray Train (V2 API) with DeepSpeed or torch DDP.

    result = train(model_dir, examples, sid_ids, cfg, out_dir="runs/x/sft", storage_path="runs/x/ray")

``examples`` (a Ray Dataset or a list of ``{"input_ids", "labels"}`` dicts) is sharded over the
workers by Ray Train (``datasets={"train": ds}``); each worker collates its shard with
:mod:`raygen.train.collate` inside ``iter_torch_batches`` (a background thread), runs
:func:`raygen.train.engine.train_steps` on a DeepSpeed engine (or a DDP-wrapped module), reports
loss / tokens/s / lr with ``ray.train.report`` and a checkpoint every ``checkpoint_every`` steps,
and resumes from ``ray.train.get_checkpoint()`` after a failure or when the same run
(``storage_path``/``name``) is started again. Rank 0 finally writes a plain transformers folder
(``out_dir/model``: fp32 safetensors + tokenizer).

Locations: ``model_dir`` and ``storage_path`` may be URIs (``s3://...``): Ray Train keeps its run and
checkpoints under ``storage_path`` through pyarrow.fs (every node sees them), and each worker
materializes ``model_dir`` on its own node (:func:`raygen.storage.materialize`). With a URI
``storage_path`` rank 0 exports the final model on its node, uploads it to
``<storage_path>/<name>/final_model`` and the driver downloads it into ``out_dir/model``, so the model
reaches the driver whichever node rank 0 ran on.

Checkpoint layout (one folder per report, merged by Ray over ranks):
``trainable.safetensors`` (rank 0: trainable params, SID rows only in 'embeddings' mode, gathered
under ZeRO-3), ``state.json`` (step), and either ``optimizer.pt`` (torch path; tensors only, loaded
with ``weights_only=True``) or ``deepspeed/`` (DeepSpeed's own per-rank ZeRO shards, written by
``engine.save_checkpoint`` and read back by ``engine.load_checkpoint``, which unpickles them: they
are files this run wrote into its own storage).

With local paths, ``model_dir``, ``out_dir`` and ``storage_path`` must be visible to every worker (a
shared file system on a multi-node cluster).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from raygen.configbase import from_dict
from raygen.faults import fault_env, maybe_fault
from raygen.io import load_tensors, save_tensors
from raygen import storage as st
from raygen.lm.vocab import config_pad_id, eos_ids
from raygen.train import checkpoint as ckpt
from raygen.train.checkpoint import has_tokenizer
from raygen.train.collate import make_collate
from raygen.train.config import TrainConfig
from raygen.train.deepspeed_cfg import deepspeed_config, dist_backend, worker_env
from raygen.train.engine import StepResult, TorchEngine, adamw, linear_schedule, steps_per_epoch, train_steps
from raygen.train.export import export_model
from raygen.train.loss import LossModule
from raygen.precision import resolve_bf16
from raygen.train.validation import Progress, ValidSet, Validator
from raygen.train.masks import as_ids, count_trainable, load_trainable_state, prepare_trainable, sid_weights, \
    trainable_state_dict

log = logging.getLogger("raygen")


# ----------------------------------------------------------------------------------------- driver

def train(model_dir: str | Path, examples: Any, sid_ids: Sequence[int], cfg: TrainConfig, out_dir: str | Path,
          storage_path: str | Path, resume: bool = True, name: str = "train",
          callbacks: list | None = None, stop_step: int = 0, valid: Any = None, model_key: str | None = None) -> dict:
    """Train ``model_dir`` on encoded ``examples`` with Ray Train; return a summary dict.

    ``resume=True`` continues the run ``storage_path/name`` from its latest checkpoint when one
    exists (Ray Train V2 restores a run started again with the same name and storage path);
    ``resume=False`` deletes that run folder first. ``stop_step`` > 0 ends this call after that
    optimizer step while the lr schedule still spans the whole run (the SFT rungs of a Tune sweep
    resume the same run with a growing ``stop_step``). The summary holds the exported model folder,
    steps, final metrics, tokens/s and the latest checkpoint path.

    ``valid`` (a :class:`raygen.train.validation.ValidSet`) with ``cfg.valid_every > 0`` validates
    every N steps on rank 0, stops on ``cfg.patience`` and exports the best state (``cfg.keep_best``);
    the summary then holds ``learning_curve``, ``best_step`` and ``best_valid``.

    ``model_dir`` and ``storage_path`` are locations (paths or URIs; ``model_key`` names the model's
    content for :func:`raygen.storage.materialize`); ``out_dir`` is a local folder of the driver.
    """
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg.validate()
    ids = as_ids(sid_ids).tolist()
    if isinstance(examples, ray.data.Dataset):
        ds = examples.random_shuffle(seed=cfg.seed) if cfg.shuffle else examples
    else:  # in-memory rows are shuffled here: Ray Data's all-to-all shuffle runs tasks per block (slow on CPUs)
        rows = _checked_rows(examples)
        if cfg.shuffle:
            perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed))
            rows = [rows[i] for i in perm.tolist()]
        ds = ray.data.from_items(rows)
    n = ds.count()
    res = cfg.resources
    if n < res.count:
        raise ValueError(f"{n} training examples cannot be split over {res.count} workers")
    spe = steps_per_epoch(n, res.count, cfg.batch_size, cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * spe
    stop = min(stop_step, total) if stop_step > 0 else total
    storage = str(storage_path) if st.is_uri(storage_path) else str(Path(storage_path).resolve())
    if not resume:
        st.delete_folder(st.join(storage, name))
    # Materialised up front so no Ray Data task competes with the workers for CPUs mid-training.
    ds = ds.materialize()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    export_to = st.join(storage, name, "final_model") if st.is_uri(storage) else str(out_dir / "model")
    loop_config = {"model_dir": str(model_dir) if st.is_uri(model_dir) else str(Path(model_dir).resolve()),
                   "model_key": model_key, "sid_ids": ids, "cfg": dataclasses.asdict(cfg),
                   "export_to": export_to, "total_steps": total, "stop_step": stop, "steps_per_epoch": spe,
                   "valid": valid.to_dict() if valid is not None and cfg.valid_every > 0 else None}
    per_worker = {"CPU": res.cpus, **({"GPU": res.gpus} if res.gpus > 0 else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=dist_backend(cfg)),
        scaling_config=ScalingConfig(num_workers=res.count, use_gpu=res.gpus > 0, resources_per_worker=per_worker),
        run_config=RunConfig(name=name, **ckpt.run_storage(storage),
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
                             worker_runtime_env={"env_vars": {**worker_env(cfg), **fault_env()}},
                             callbacks=callbacks or None),
        datasets={"train": ds},
    )
    t0 = time.time()
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    summary = dict(result.return_value or {})
    if st.is_uri(storage):  # rank 0 uploaded the model (it may have run on another node): fetch it here
        summary["model_dir"] = str(ckpt.fetch_model(export_to, out_dir / "model"))
    summary.update(wall_s=round(time.time() - t0, 2), examples=n, total_steps=total, steps_per_epoch=spe,
                   checkpoint=result.checkpoint.path if result.checkpoint else None,
                   metrics=dict(result.metrics or {}), run_path=st.join(storage, name))
    return summary


def _checked_rows(examples: Any) -> list[dict]:
    rows = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict) or "input_ids" not in ex or "labels" not in ex:
            raise ValueError(f"example {i}: expected a dict with 'input_ids' and 'labels', got {type(ex).__name__}")
        rows.append({"input_ids": list(map(int, ex["input_ids"])), "labels": list(map(int, ex["labels"]))})
    if not rows:
        raise ValueError("no training examples")
    return rows


# -------------------------------------------------------------------------------- fault injection

def _maybe_fault(step: int, rank: int) -> None:
    """With ``RAYGEN_FAULT_AT_STEP=N`` rank 0's process dies right after step N and its report, once
    (:mod:`raygen.faults`); Ray Train then restarts the worker group (within ``max_failures``) from the
    latest checkpoint it registered."""
    if rank == 0:
        maybe_fault("AT_STEP", step)


# ----------------------------------------------------------------------------------------- worker

def _ray_collate(pad_to: str, pad_id: int, max_len: int):
    from ray.data.collate_fn import NumpyBatchCollateFn

    class Collate(NumpyBatchCollateFn):
        """Ray Data calls this in its prefetch thread with a dict of numpy columns."""

        def __init__(self):
            self.fn = make_collate(pad_to, pad_id, max_len)

        def __call__(self, batch):
            return self.fn(batch)

    return Collate()


def _worker_nodes() -> list[str]:
    """The distinct Ray node ids of the worker group (a collective: call it on every rank)."""
    import ray
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [node]
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, node)
    return sorted(set(everyone))


def _worker_loop(config: dict) -> dict:
    import ray.train
    import ray.train.torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    t_start = time.time()
    cfg = from_dict(TrainConfig, config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(int(cfg.resources.cpus))
    torch.manual_seed(cfg.seed + rank)
    device = ray.train.torch.get_device()
    model_dir = str(st.materialize(config["model_dir"], config.get("model_key")))  # a location: local on this node
    sid_ids, total = config["sid_ids"], config["total_steps"]
    stop = config.get("stop_step", total)  # last step of this call; the lr schedule spans `total`
    lora_kw = dict(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                   lora_target_modules=cfg.lora_target_modules)

    use_bf16, precision_reason = resolve_bf16(cfg.bf16, device)
    if rank == 0:
        log.info("training precision: %s", precision_reason)
    lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    pad_id = config_pad_id(lm.config)
    lm, groups = prepare_trainable(lm, cfg.mode, sid_ids, weight_decay=cfg.weight_decay, **lora_kw)
    module = LossModule(lm, logits="sid" if cfg.sid_only_head else "answer", sid_ids=sid_ids,
                        bf16=use_bf16 and cfg.bf16_impl == "autocast", extra_ids=eos_ids(model_dir, lm.config))
    validator = None
    if config.get("valid"):
        validator = Validator(ValidSet(**config["valid"]), beam_width=cfg.valid_beam, batch_size=cfg.valid_batch_size,
                              patience=cfg.patience, autocast_dtype=torch.bfloat16 if use_bf16 else None,
                              sid_only=cfg.sid_only_head, eos_id=eos_ids(model_dir, lm.config))
    if cfg.deepspeed:
        import deepspeed

        engine, *_ = deepspeed.initialize(model=module, model_parameters=groups, config=deepspeed_config(cfg, bf16=use_bf16),
                                          lr_scheduler=lambda opt: linear_schedule(opt, cfg.warmup_steps, total))
    else:
        wrapped = ray.train.torch.prepare_model(module)
        optimizer = adamw(groups, cfg.lr, cfg.weight_decay)
        engine = TorchEngine(wrapped, optimizer, linear_schedule(optimizer, cfg.warmup_steps, total),
                             cfg.grad_accum, cfg.grad_clip)
    gather = _gatherer(cfg, lm)

    start_step = 0
    resume_from = ray.train.get_checkpoint()
    if resume_from is not None:
        with resume_from.as_directory() as d:
            start_step = _restore(Path(d), cfg, engine, lm, sid_ids, validator, rank)
    # STAR integrity check: snapshot of the vocabulary matrices to prove no frozen row moved.
    frozen_ref = ([w.detach().clone() for w in sid_weights(lm)]
                  if cfg.mode == "embeddings" and not (cfg.deepspeed and cfg.zero_stage == 3) else None)

    shard = ray.train.get_dataset_shard("train")
    collate = _ray_collate(cfg.pad_to, pad_id, cfg.max_len)
    spe = config["steps_per_epoch"]

    def batches() -> Iterator[dict]:
        epoch, skip = divmod(start_step, spe)
        skip *= cfg.grad_accum  # micro-batches of a partly done epoch to pass over on resume
        while cfg.max_steps > 0 or epoch < cfg.epochs:
            for i, b in enumerate(shard.iter_torch_batches(batch_size=cfg.batch_size, collate_fn=collate)):
                if i >= skip:
                    yield b
            epoch, skip = epoch + 1, 0

    stats = _Stats(device)
    last_report = {"step": start_step}
    examples_per_step = cfg.batch_size * cfg.grad_accum * world
    progress = Progress(cfg, validator, examples_per_step, stop, device, rank, log)
    state_fn = lambda: gather(lambda: trainable_state_dict(lm, cfg.mode, sid_ids) if rank == 0 else None)  # noqa: E731

    def on_step(res: StepResult) -> bool:
        stats.add(res, timed=res.step > start_step + 1)  # the first step (warm-up) is not timed
        done, valid_metrics = progress.step(res, lm, state_fn)
        due_ckpt = cfg.checkpoint_every > 0 and res.step % cfg.checkpoint_every == 0
        if res.step % cfg.log_every == 0 or due_ckpt or done or valid_metrics:
            metrics = {**stats.window(res), **valid_metrics}
            last_report.update(metrics)
            _report(metrics, cfg, engine, lm, sid_ids, gather, rank, checkpoint=due_ckpt or done, validator=validator)
        _maybe_fault(res.step, rank)
        return done

    t0 = time.time()
    setup_s = t0 - t_start  # model load, DeepSpeed/DDP set-up, checkpoint restore
    step = train_steps(engine, batches(), max_steps=stop, start_step=start_step, device=device, on_step=on_step)
    if last_report["step"] != step:  # data ran out before `total`: report and checkpoint where we are
        metrics = stats.window(StepResult(step, float("nan"), 0, 0, float(engine.get_lr()[0]), 0.0))
        last_report.update(metrics)
        _report(metrics, cfg, engine, lm, sid_ids, gather, rank, checkpoint=True, validator=validator)

    changed = None  # not checked under ZeRO-3 (parameters are partitioned) or outside 'embeddings' mode
    if frozen_ref is not None:
        changed = 0
        ids = torch.as_tensor(sid_ids)
        for w, ref in zip(sid_weights(lm), frozen_ref):
            keep = torch.ones(w.shape[0], dtype=torch.bool)
            keep[ids] = False
            changed += int((w.detach()[keep.to(w.device)] != ref[keep.to(ref.device)]).any(dim=1).sum())
        if changed:
            raise RuntimeError(f"STAR mask leak: {changed} non-SID rows of the vocabulary matrices changed")
    t_export = time.time()
    state = state_fn()
    exported_step = step
    if validator is not None and cfg.keep_best and validator.best_state is not None:
        state, exported_step = validator.best_state, validator.best_step
    nodes = _worker_nodes()  # a collective: every rank takes part
    summary = {}
    if rank == 0:
        with ckpt.export_location(config["export_to"]) as local_out:
            out = export_model(state, model_dir, local_out, cfg.mode, sid_ids, lora=lora_kw)
            tokenizer_saved = has_tokenizer(out)
        summary = {"model_dir": config["export_to"], "has_tokenizer": tokenizer_saved, "start_step": start_step,
                   "final_step": step, "loss": last_report.get("loss"), "tokens_per_s": stats.run_tokens_per_s(),
                   "setup_seconds": round(setup_s, 2), "train_seconds": round(t_export - t0, 2),
                   "export_seconds": round(time.time() - t_export, 2), "frozen_rows_changed": changed,
                   "trainable_params": count_trainable(lm, cfg.mode, sid_ids), "world_size": world,
                   "exported_step": exported_step, "examples_seen": step * examples_per_step,
                   "precision": {"bf16": use_bf16, "reason": precision_reason},
                   "nodes": {"train_workers": nodes}}  # Ray node ids of the worker group
        if validator is not None:
            summary.update(learning_curve=validator.curve, best_step=validator.best_step,
                           best_valid={"ndcg@10": validator.best}, stopped_early=validator.should_stop)
    if dist.is_initialized():
        dist.barrier()
    return summary


class _Stats:
    """Loss / token / time accumulators, reduced over ranks when a report is due."""

    def __init__(self, device: torch.device):
        self.device = device
        self.win = [0.0, 0, 0, 0.0]  # loss sum, steps, tokens, seconds
        self.run_tokens, self.run_seconds, self.total_tokens = 0, 0.0, 0

    def add(self, res: StepResult, timed: bool) -> None:
        self.win[0] += res.loss
        self.win[1] += 1
        self.win[2] += res.tokens
        self.win[3] += res.seconds
        self.total_tokens += res.tokens
        if timed:
            self.run_tokens += res.tokens
            self.run_seconds += res.seconds

    def _reduce(self, values: list[float], op) -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(t, op=op)
        return t.tolist()

    def window(self, res: StepResult) -> dict:
        import torch.distributed as dist

        loss_sum, steps, tokens, total_tokens, run_tokens = self._reduce(
            [self.win[0], self.win[1], self.win[2], self.total_tokens, self.run_tokens], dist.ReduceOp.SUM)
        seconds, run_seconds = self._reduce([self.win[3], self.run_seconds], dist.ReduceOp.MAX)
        self.global_run = (run_tokens, run_seconds)
        self.win = [0.0, 0, 0, 0.0]
        return {"step": res.step, "loss": loss_sum / max(steps, 1), "lr": res.lr,
                "tokens_per_s": tokens / seconds if seconds > 0 else 0.0, "tokens": int(total_tokens)}

    def run_tokens_per_s(self) -> float:
        tokens, seconds = getattr(self, "global_run", (0, 0.0))
        return tokens / seconds if seconds > 0 else 0.0


def _gatherer(cfg: TrainConfig, lm: torch.nn.Module):
    """``gather(fn)`` runs ``fn`` with every trainable parameter whole (ZeRO-3 gathers; collective)."""
    if not (cfg.deepspeed and cfg.zero_stage == 3):
        return lambda fn: fn()

    def gather(fn):
        import deepspeed

        params = [p for p in lm.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return fn()

    return gather


def _report(metrics: dict, cfg: TrainConfig, engine, lm, sid_ids, gather, rank: int, checkpoint: bool,
            validator: Validator | None = None) -> None:
    import ray.train

    if not checkpoint:
        ray.train.report(metrics)
        return
    state = gather(lambda: trainable_state_dict(lm, cfg.mode, sid_ids) if rank == 0 else None)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if cfg.deepspeed:
            engine.save_checkpoint(str(d / "deepspeed"), tag="ds", client_state={"step": metrics["step"]},
                                   exclude_frozen_parameters=True)
        if rank == 0:
            ckpt.write(d, state, None if cfg.deepspeed else engine.optimizer,
                       None if cfg.deepspeed else engine.lr_scheduler,
                       meta={"step": metrics["step"], "mode": cfg.mode, "sid_ids_sha1": _sha1(sid_ids),
                             "deepspeed": cfg.deepspeed, "zero_stage": cfg.zero_stage,
                             "valid": validator.state() if validator is not None else None})
            if validator is not None and validator.best_state is not None:
                save_tensors(d / "best.safetensors", validator.best_state)
        # Ray merges the folders of all ranks that pass one (DeepSpeed: every rank has its shard).
        has_files = any(d.iterdir())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if has_files else None,
                         checkpoint_dir_name=ckpt.step_name(metrics["step"]))


def _sha1(ids: Sequence[int]) -> str:
    return hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()


def _restore(d: Path, cfg: TrainConfig, engine, lm, sid_ids, validator: Validator | None = None,
             rank: int = 0) -> int:
    """Load a checkpoint written by :func:`_report`; return its step."""
    state = ckpt.read_meta(d)
    if validator is not None and state.get("valid"):
        validator.load_state(state["valid"])
        if rank == 0 and (d / "best.safetensors").exists():
            validator.keep(load_tensors(d / "best.safetensors"))
    if state["mode"] != cfg.mode or state["sid_ids_sha1"] != _sha1(sid_ids):
        raise ValueError(f"checkpoint {d} was written for mode={state['mode']!r} and other SID ids; "
                         "start a new run (resume=False or another name)")
    if state["deepspeed"] != cfg.deepspeed:
        raise ValueError(f"checkpoint {d} was written with deepspeed={state['deepspeed']}; keep the setting to resume")
    step = int(state["step"])
    if cfg.deepspeed:
        _, client = engine.load_checkpoint(str(d / "deepspeed"), tag="ds", load_module_strict=False)
        if client is None or int(client.get("step", -1)) != step:
            raise RuntimeError(f"DeepSpeed checkpoint in {d} is incomplete (client state {client})")
    else:
        load_trainable_state(lm, ckpt.read_trainable(d), cfg.mode, sid_ids)
        ckpt.restore_optimizer(d, engine.optimizer, engine.lr_scheduler)
        engine.global_steps, engine.micro_steps = step, step * cfg.grad_accum
    log.info("resumed from %s at step %d", d, step)
    return step
