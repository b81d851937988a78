"""RL stage: GRPO refinement of the SFT policy on catalog-constrained rollouts (MiniOneRec-style).

Pure core: :mod:`.rewards` (reward functions + registry), :mod:`.grpo` (advantages, clipped loss with
k3 KL, log-probs), :mod:`.backends` (constrained beam/sample rollouts with transformers),
:mod:`.sync` (LoRA-merged weights, checksums). Thin Ray layer: :mod:`.rollout` (actor pool, one-put
weight broadcast) and :mod:`.loop` (:func:`run_grpo`). :mod:`.vllm_backend` is the GPU backend.
"""
from raygen.lazy import exports_of, lazy_exports

_EXPORTS = exports_of(**{
    "raygen.rl.config": ('RlConfig',),
    "raygen.rl.grpo": ('group_advantages', 'grpo_loss', 'sequence_logprobs'),
    "raygen.rl.rewards": ('RewardContext', 'combine', 'register_reward'),
    "raygen.rl.loop": ('run_grpo',),
})
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
