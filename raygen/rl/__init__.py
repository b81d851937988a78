"""RL stage: GRPO refinement of the SFT policy on catalog-constrained rollouts (MiniOneRec-style).

Pure core: :mod:`.rewards` (reward functions + registry), :mod:`.grpo` (advantages, clipped loss with
k3 KL, log-probs). The RL loop: :mod:`.loop` (:func:`run_grpo`), the learner :mod:`.learner`
(:class:`GrpoLearner`) and their Ray plumbing :mod:`.remote`; the prompts held out of SFT for RL are a tasks-layer
rule (:mod:`raygen.tasks.holdout`). Rollouts, the backends (transformers, vLLM), the actor pool and the weight sync into
it are in :mod:`raygen.generation`, shared with evaluation.
"""
from raygen.lazy import exports_of, lazy_exports

_EXPORTS = exports_of(**{
    "raygen.rl.config": ('RlConfig',),
    "raygen.rl.grpo": ('group_advantages', 'grpo_loss', 'sequence_logprobs'),
    "raygen.rl.rewards": ('RewardContext', 'combine', 'register_reward'),
    "raygen.rl.loop": ('run_grpo',),
    "raygen.rl.learner": ('GrpoLearner',),
})
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
