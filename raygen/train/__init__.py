"""Training: STAR embedding-only alignment and SFT (LoRA / full) on Ray Train + DeepSpeed.

    from raygen.train import TrainConfig, train
    result = train(model_dir, examples, sid_ids, TrainConfig(mode="embeddings"), out_dir, storage_path)

Pure core (no Ray): :mod:`~raygen.train.masks` (what trains), :mod:`~raygen.train.collate`
(padding / packing), :mod:`~raygen.train.loop` (loss, engine, step loop, export),
:mod:`~raygen.train.deepspeed_cfg`. Ray layer: :mod:`~raygen.train.ray_trainer`.
"""
from raygen.train.collate import make_collate, pack_collate, pad_collate
from raygen.train.config import TrainConfig
from raygen.train.deepspeed_cfg import deepspeed_config, worker_env
from raygen.train.loop import LossModule, StepResult, TorchEngine, export_model, linear_schedule, train_steps
from raygen.train.masks import (apply_lora, freeze_all_but_sid_rows, load_trainable_state, prepare_trainable,
                                trainable_state_dict)


def train(*args, **kwargs):
    """Lazy alias of :func:`raygen.train.ray_trainer.train` (imports Ray only when called)."""
    from raygen.train.ray_trainer import train as _train

    return _train(*args, **kwargs)


__all__ = ["TrainConfig", "train", "pad_collate", "pack_collate", "make_collate", "LossModule", "TorchEngine",
           "StepResult", "train_steps", "linear_schedule", "export_model", "freeze_all_but_sid_rows", "apply_lora",
           "prepare_trainable", "trainable_state_dict", "load_trainable_state", "deepspeed_config", "worker_env"]
