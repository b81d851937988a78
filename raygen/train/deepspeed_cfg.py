"""DeepSpeed config and worker environment for a :class:`TrainConfig`.

CPU notes: DeepSpeed picks its accelerator from ``DS_ACCELERATOR`` at import time, so CPU workers
get ``DS_ACCELERATOR=cpu`` through the Ray runtime env (:func:`worker_env`), and the process group is
gloo (oneCCL is not required). The first DeepSpeed run on a machine JIT-compiles its CPU
shared-memory comm op (``deepspeed_shm_comm``, about 1-2 min on 2 cores) into
``~/.cache/torch_extensions`` (or ``$TORCH_EXTENSIONS_DIR``); later runs reuse it.
The optimizer is torch's AdamW (``torch_adam``), which needs no compiled op on any device.
"""
from __future__ import annotations

from raygen.train.config import TrainConfig


def on_gpu(cfg: TrainConfig) -> bool:
    """Whether the workers train on CUDA: they reserve GPUs (``resources.gpus > 0``)."""
    return cfg.resources.gpus > 0


def bf16_supported(gpu: bool) -> bool:
    """Whether DeepSpeed's bf16 mode can run on this worker's accelerator (``gpu``: a CUDA worker)."""
    import torch

    if gpu:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return True  # DeepSpeed's CPU accelerator supports bf16 (slow without AVX512-BF16/AMX)


def deepspeed_config(cfg: TrainConfig, *, bf16_ok: bool | None = None, bf16: bool | None = None) -> dict:
    """The ``config`` dict for ``deepspeed.initialize``.

    The optimizer's per-group ``weight_decay`` comes from the param groups passed as
    ``model_parameters`` (STAR's embedding group has 0); the value here is only the default.
    bf16 mode is on when ``cfg.bf16`` and ``cfg.bf16_impl == 'deepspeed'`` and the accelerator supports
    it (``bf16_ok``, default :func:`bf16_supported`); with ``bf16_impl='autocast'`` DeepSpeed stays fp32.
    ``bf16``: the worker's resolved choice (:func:`raygen.precision.resolve_bf16`); None resolves
    ``cfg.bf16`` here for this process's device ('auto' never counts as on without resolving).
    """
    if bf16_ok is None:
        bf16_ok = bf16_supported(on_gpu(cfg))
    if bf16 is None:
        from raygen.precision import resolve_bf16

        bf16 = resolve_bf16(cfg.bf16, "cuda" if on_gpu(cfg) else "cpu")[0]
    ds_bf16 = bool(bf16) and cfg.bf16_impl == "deepspeed" and bf16_ok
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.zero_stage in (1, 2):
        zero.update(contiguous_gradients=True, overlap_comm=on_gpu(cfg), reduce_scatter=True)
    if cfg.zero_stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=False)
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": cfg.lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": cfg.weight_decay,
                       "torch_adam": True},
        },
        "zero_optimization": zero,
        "bf16": {"enabled": ds_bf16},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def worker_env(cfg: TrainConfig) -> dict[str, str]:
    """Environment variables for the Ray Train workers (``RunConfig(worker_runtime_env=...)``):
    raygen's offline defaults plus thread count and, for CPU workers, ``DS_ACCELERATOR=cpu``."""
    from raygen.ray_utils import worker_env as base_env

    env = {**base_env(), "OMP_NUM_THREADS": str(int(cfg.resources.cpus))}
    env.pop("DS_ACCELERATOR", None)
    if not on_gpu(cfg):
        env["DS_ACCELERATOR"] = "cpu"
    return env


def dist_backend(cfg: TrainConfig) -> str:
    """torch.distributed backend: nccl on GPUs, gloo on CPUs."""
    return "nccl" if on_gpu(cfg) else "gloo"
