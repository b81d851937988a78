"""Config of the training stages: :class:`TrainConfig` (the trainer's knobs) and the ``align`` and
``sft`` sections built on it (no torch import: loading a config stays light).

Defaults are CPU-friendly (one worker, fp32, no ZeRO partitioning); GPU clusters raise
``resources.count`` (workers), give each worker ``resources.gpus``, set ``bf16`` and pick a ZeRO stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raygen.configbase import ConfigError, Resources


@dataclass
class TrainConfig:
    mode: Literal["embeddings", "lora", "full"] = "embeddings"
    """What trains. 'embeddings' (STAR alignment): every weight frozen except the SID rows of the
    input embedding (and of an untied output head); 'lora': LoRA adapters plus the SID rows;
    'full': every parameter."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay for LoRA/full parameters (never biases/norms). Not applied to
    the embedding/head in 'embeddings' mode: AdamW's decay `p -= lr*wd*p` acts on the whole tensor,
    so it would change the frozen non-SID rows."""
    warmup_steps: int = 0
    """Linear warm-up steps, then linear decay to 0 at the last step."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = run `epochs` full passes)."""
    epochs: int = 1
    """Passes over the data when `max_steps` is 0 (with `max_steps` > 0 the data repeats as needed)."""
    batch_size: int = 8
    """Examples per micro-batch per worker."""
    grad_accum: int = 1
    """Micro-batches accumulated into one optimizer step."""
    max_len: int = 256
    """Longest sequence in tokens (examples are encoded to fit, see raygen.tasks.encode_example;
    the collator rejects longer ones). Also the row length for packing."""
    resources: Resources = field(default_factory=lambda: Resources(count=1, cpus=1.0, gpus=0.0))
    """The Ray Train workers: count = data-parallel ranks (>= 1); CPUs each, a whole number >= 1 that is
    also the worker's torch thread count; GPUs each (> 0: the workers train on CUDA with nccl, usually 1;
    0 = CPU workers with gloo)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3 (0 = plain data parallel). Ignored when `deepspeed` is false."""
    bf16: Literal["auto"] | bool = "auto"
    """Mixed precision: forward/backward under bf16 autocast with fp32 master weights and optimizer
    state. 'auto' (default) = bf16 on GPUs that support it and on CPUs with native bf16 (AVX512-BF16
    or AMX), fp32 elsewhere, decided on each worker (raygen.precision.resolve_bf16); true forces bf16
    (on CPUs without native bf16 this is slower than fp32); false = fp32."""
    bf16_impl: Literal["autocast", "deepspeed"] = "autocast"
    """How `bf16` is done: 'autocast' (torch.autocast, fp32 params, works with and without
    DeepSpeed) or 'deepspeed' (DeepSpeed bf16 mode: bf16 params/grads, fp32 master copy in the
    optimizer; only with `deepspeed` and an accelerator that supports bf16)."""
    deepspeed: bool = True
    """Wrap the model with deepspeed.initialize; false = torch DDP via ray.train.torch.prepare_model."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 = no clipping)."""
    checkpoint_every: int = 50
    """Report a checkpoint (trainable params + optimizer/step state) every N optimizer steps
    (0 = only at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept in storage (Ray CheckpointConfig.num_to_keep)."""
    max_failures: int = 0
    """Worker-group restarts Ray Train attempts after a failure, resuming from the last checkpoint."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """Module names (suffixes) that get LoRA adapters."""
    pad_to: Literal["longest", "packing"] = "longest"
    """Batch layout: 'longest' right-pads each micro-batch to its longest example; 'packing'
    concatenates the micro-batch's examples into as few rows of <= max_len tokens as possible,
    with position_ids restarting per example (block-diagonal attention)."""
    sid_only_head: bool = False
    """Compute the output head only over the SID tokens and EOS (logits = h @ W[sid_ids + eos].T) and
    the loss over those logits only (= full-head loss with all other logits at -inf). Valid only when
    every answer token is a SID token or EOS (the next-item task; checked at run time, a clear error
    otherwise). Not with ZeRO-3."""
    shuffle: bool = True
    """Shuffle the examples once (seeded by `seed`) before they are sharded over the workers."""
    log_every: int = 10
    """Report metrics (loss, tokens/s, lr) every N optimizer steps."""
    seed: int = 0
    """Seed for weights that get initialised (LoRA), data order and dropout."""
    valid_every: int = 0
    """Validate every N optimizer steps (and after the last one): NDCG@10 / HR@10 of the constrained
    beam search on `valid_rows` rows of the valid split, in the learning curve (metrics.json,
    TensorBoard, the report's PNG). 0 = no validation. Needs zero_stage <= 2."""
    valid_rows: int = 500
    """Validation rows (a fixed seeded subset of the valid split; 0 = all)."""
    valid_beam: int = 10
    """Beam width of the validation search (= the K of its HR@K / NDCG@K)."""
    valid_batch_size: int = 32
    """Rows per forward pass of the validation search."""
    patience: int = 0
    """Stop after this many validations in a row without a better valid NDCG@10 (0 = never stop early)."""
    keep_best: bool = True
    """With validation: export the weights of the best validation, not the last step's."""
    time_budget_s: float = 0.0
    """Stop training after this many seconds of training steps (0 = no limit): equal-time comparisons."""

    def validate(self) -> None:
        """Raise ConfigError on values no run could use."""
        checks = [
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.max_steps >= 0, "max_steps must be >= 0"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (self.max_len >= 2, "max_len must be >= 2"),
            (self.resources.count >= 1, "resources.count must be >= 1 (Ray Train workers)"),
            (self.resources.cpus >= 1 and self.resources.cpus == int(self.resources.cpus),
             f"resources.cpus must be a whole number >= 1 (also the worker's torch threads), got "
             f"{self.resources.cpus}"),
            (0 <= self.zero_stage <= 3, "zero_stage must be 0, 1, 2 or 3"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
            (self.max_failures >= -1, "max_failures must be >= -1 (-1 = retry forever)"),
            (self.lora_r >= 1, "lora_r must be >= 1"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.valid_every >= 0, "valid_every must be >= 0"),
            (self.valid_rows >= 0, "valid_rows must be >= 0"),
            (self.valid_beam >= 1, "valid_beam must be >= 1"),
            (self.valid_batch_size >= 1, "valid_batch_size must be >= 1"),
            (self.patience >= 0, "patience must be >= 0"),
            (self.time_budget_s >= 0, "time_budget_s must be >= 0"),
            (not (self.valid_every and self.deepspeed and self.zero_stage == 3),
             "validation (valid_every > 0) runs on rank 0's whole model: use zero_stage <= 2"),
            (not (self.sid_only_head and self.deepspeed and self.zero_stage == 3),
             "sid_only_head needs the full head weight on every rank: use zero_stage <= 2"),
            (isinstance(self.bf16, bool) or self.bf16 == "auto",
             f"bf16 must be 'auto', true or false, got {self.bf16!r}"),
            (not (self.bf16 is not False and self.bf16_impl == "deepspeed" and not self.deepspeed),
             "bf16_impl='deepspeed' needs deepspeed: true (or use bf16_impl='autocast')"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"train config: {msg}")


@dataclass
class AlignConfig(TrainConfig):
    enabled: bool = True
    """Run the alignment stage (init strategy 'star' = lm.init mean/sa_init + this stage)."""
    token_ratio: float = 0.0
    """TS-Align: token-level examples (SID token <-> cluster description) mixed in per item-level
    STAR example (0 = STAR item-level pairs only)."""


@dataclass
class SftConfig(TrainConfig):
    mode: Literal["embeddings", "lora", "full"] = "full"
    """What trains in SFT: 'full', 'lora' (adapters + SID rows) or 'embeddings'."""
    lr: float = 2e-4
    """Peak learning rate (AdamW)."""
    enabled: bool = True
    """Run SFT (false hands the upstream model on unchanged)."""
