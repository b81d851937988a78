"""RL stage: GRPO refinement of the SFT policy on catalog-constrained rollouts (MiniOneRec-style).

Pure core: :mod:`.rewards` (reward functions + registry), :mod:`.grpo` (advantages, clipped loss with
k3 KL, log-probs), :mod:`.backends` (constrained beam/sample rollouts with transformers),
:mod:`.sync` (LoRA-merged weights, checksums). Thin Ray layer: :mod:`.rollout` (actor pool, one-put
weight broadcast) and :mod:`.loop` (:func:`run_grpo`). :mod:`.vllm_backend` is the GPU backend.
"""
from raygen.rl.config import RlConfig
from raygen.rl.grpo import group_advantages, grpo_loss, sequence_logprobs
from raygen.rl.rewards import RewardContext, combine, register_reward

__all__ = ["RlConfig", "group_advantages", "grpo_loss", "sequence_logprobs", "RewardContext", "combine",
           "register_reward", "run_grpo"]


def __getattr__(name):  # keep `import raygen.rl` light: the loop pulls in transformers/ray lazily
    if name == "run_grpo":
        from raygen.rl.loop import run_grpo

        return run_grpo
    raise AttributeError(name)
