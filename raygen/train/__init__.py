"""Training: STAR embedding-only alignment and SFT (LoRA / full) on Ray Train + DeepSpeed.

    from raygen.train import TrainConfig, train
    result = train(model_dir, examples, sid_ids, TrainConfig(mode="embeddings"), out_dir, storage_path)

Pure core (no Ray): :mod:`~raygen.train.masks` (what trains), :mod:`~raygen.train.collate`
(padding / packing), :mod:`~raygen.train.loss`, :mod:`~raygen.train.engine` (optimizer, engine, step
loop), :mod:`~raygen.train.export`, :mod:`~raygen.train.deepspeed_cfg`. Ray layer: :mod:`~raygen.train.ray_trainer`.
"""
from raygen.lazy import exports_of, lazy_exports

_EXPORTS = exports_of(**{
    "raygen.train.collate": ('make_collate', 'pack_collate', 'pad_collate'),
    "raygen.train.config": ('TrainConfig',),
    "raygen.train.deepspeed_cfg": ('deepspeed_config', 'worker_env'),
    "raygen.train.loss": ('LossModule',),
    "raygen.train.engine": ('StepResult', 'TorchEngine', 'adamw', 'linear_schedule', 'train_steps'),
    "raygen.train.export": ('export_model',),
    "raygen.train.masks": ('apply_lora', 'freeze_all_but_sid_rows', 'load_trainable_state', 'prepare_trainable', 'trainable_state_dict'),
    "raygen.train.ray_trainer": ('train',),
})
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
