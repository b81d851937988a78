"""HF rollout backend (constrained sampling / beam), weight loading, LoRA-merged sync weights."""
from __future__ import annotations

import os

import pytest
import torch

from raygen.generation.backends import HFBackend, constrained_sample
from raygen.generation.beam import constrained_beam_search
from raygen.generation.sync import merged_state_dict, state_checksum
from raygen.generation.trie import SidTrie

VOCAB, LEVELS, CODES, N_ITEMS, PAD = 100, 3, 4, 20, 3
SID_BASE = VOCAB - LEVELS * CODES          # level l, code c -> SID_BASE + CODES * l + c


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_llama):
    path = tmp_path_factory.mktemp("rl_backend_model")
    tiny_llama(vocab_size=VOCAB, initializer_range=0.2, seed=0).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def backend(model_dir, random_sid_matrix):
    return HFBackend(model_dir, random_sid_matrix(N_ITEMS, CODES, LEVELS, SID_BASE), PAD, batch_size=2)


PROMPTS = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]


def constrained_logprob(model, prompt, sid_row, trie_rows):
    """Exact log-prob of ``sid_row`` under level-wise softmax restricted to valid catalog children."""
    x = torch.tensor([prompt + sid_row.tolist()])
    with torch.no_grad():
        logits = model(x).logits[0].float()
    total = 0.0
    for t in range(LEVELS):
        prefix = sid_row[:t]
        allowed = sorted({int(r[t]) for r in trie_rows if torch.equal(r[:t], prefix)})
        lp = torch.log_softmax(logits[len(prompt) - 1 + t, allowed], -1)
        total += float(lp[allowed.index(int(sid_row[t]))])
    return total


def test_sample_mode_valid_and_scored_exactly(backend):
    sid = backend.sid_matrix
    ro = backend.generate(PROMPTS, group_size=5, mode="sample", temperature=1.0, seed=3)
    assert ro.items.shape == (3, 5) and ro.tokens.shape == (3, 5, LEVELS)
    assert ((ro.items >= 0) & (ro.items < N_ITEMS)).all()
    assert torch.equal(ro.tokens, sid[ro.items])
    for b, p in enumerate(PROMPTS):
        for g in range(5):
            want = constrained_logprob(backend.model, p, sid[ro.items[b, g]], sid)
            assert float(ro.scores[b, g]) == pytest.approx(want, abs=1e-4)


def test_sample_mode_seeded_and_temperature(backend):
    a = backend.generate(PROMPTS, 6, "sample", 1.0, seed=7)
    b = backend.generate(PROMPTS, 6, "sample", 1.0, seed=7)
    c = backend.generate(PROMPTS, 6, "sample", 1.0, seed=8)
    assert torch.equal(a.items, b.items) and not torch.equal(a.items, c.items)
    cold = backend.generate(PROMPTS, 6, "sample", 1e-4, seed=7)
    assert all(len(set(r.tolist())) == 1 for r in cold.items)       # ~greedy: one item per group


def test_sample_frequencies_follow_the_constrained_policy(model_dir, random_sid_matrix):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    sid = random_sid_matrix(6, CODES, LEVELS, SID_BASE, seed=4)
    trie = SidTrie.build(sid)
    gen = torch.Generator().manual_seed(0)
    items, _ = constrained_sample(model, [[5, 6, 7]], trie, 3000, PAD, 1.0, 1, gen)
    freq = torch.bincount(items[0], minlength=6).float() / 3000
    probs = torch.tensor([constrained_logprob(model, [5, 6, 7], sid[i], sid) for i in range(6)]).exp()
    assert probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert (freq - probs).abs().max() < 0.04


def test_beam_mode_matches_constrained_beam_search(backend):
    ro = backend.generate(PROMPTS, 4, "beam")
    items, scores = constrained_beam_search(backend.model, PROMPTS, backend.sid_matrix, 4, PAD)
    assert torch.equal(ro.items, items) and torch.allclose(ro.scores, scores)
    assert all(len(set(r.tolist())) == 4 for r in ro.items)          # distinct candidates
    # (ro.tokens is computed as sid_matrix[items]: asserting that equality would test nothing)
    with pytest.raises(ValueError, match="mode"):
        backend.generate(PROMPTS, 4, "greedy")


def test_load_weights_version_and_checksum(model_dir, tiny_llama, random_sid_matrix):
    be = HFBackend(model_dir, random_sid_matrix(N_ITEMS, CODES, LEVELS, SID_BASE), PAD)
    other = tiny_llama(vocab_size=VOCAB, initializer_range=0.2, seed=5)
    before = be.checksum()
    state = merged_state_dict(other)
    assert be.load_weights(state, version=7) == 7 and be.weights_version == 7
    assert be.checksum() == state_checksum(state) != before
    assert be.load_weights(state) == 8                                 # no version given: increments
    with pytest.raises(KeyError, match="mismatch"):
        be.load_weights({"not.a.weight": torch.zeros(1)})


def test_merged_state_dict_of_lora_equals_peft_forward(tiny_llama):
    from peft import LoraConfig, get_peft_model

    base = tiny_llama(vocab_size=VOCAB, seed=1)
    plain_keys = set(base.state_dict())
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False, lora_dropout=0.0)).eval()
    merged = merged_state_dict(peft)
    assert set(merged) == plain_keys
    plain = tiny_llama(vocab_size=VOCAB, seed=2)
    plain.load_state_dict(merged, strict=True)
    x = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        want, got = peft(x).logits, plain(x).logits
        with peft.disable_adapter():
            base_logits = peft(x).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(base_logits, want, atol=1e-3)            # the adapter does change the output
    # the trained model is untouched (no merge/unmerge): merging twice gives the same bytes
    assert state_checksum(merged_state_dict(peft)) == state_checksum(merged)


@pytest.mark.parametrize("tie", [True, False])
def test_merged_state_dict_puts_trained_sid_rows_into_the_plain_model(tiny_llama, tie):
    """RL's LoRA policy (prepare_trainable 'lora': adapters + SID-row deltas of embedding and head) sent
    to the actors as a plain state dict: same logits as the PEFT policy, other rows untouched."""
    from raygen.train.masks import prepare_trainable

    sid_ids = [VOCAB - 3, VOCAB - 2, VOCAB - 1]
    base = tiny_llama(vocab_size=VOCAB, seed=1, tie_word_embeddings=tie)
    plain_keys, before = set(base.state_dict()), base.get_input_embeddings().weight.detach().clone()
    peft, _ = prepare_trainable(base, "lora", sid_ids, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj"])
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "trainable_tokens_delta" in n or "lora_B" in n:
                p.add_(torch.randn_like(p))  # as if trained
    merged = merged_state_dict(peft.eval())
    assert set(merged) == plain_keys
    plain = tiny_llama(vocab_size=VOCAB, seed=2, tie_word_embeddings=tie)
    plain.load_state_dict(merged, strict=True)
    x = torch.tensor([[5, 6, VOCAB - 3, VOCAB - 1, 9]])
    with torch.no_grad():
        assert torch.allclose(plain(x).logits, peft(x).logits, atol=1e-5)
    moved = (merged["model.embed_tokens.weight"] != before).any(dim=1).nonzero().flatten().tolist()
    assert moved == sid_ids


def test_vllm_backend_pure_parts_without_vllm():
    """vLLM is not installable here: check the prefix table, the request-level mask and the clear error."""
    import importlib.util
    from types import SimpleNamespace

    import numpy as np

    from raygen.generation import vllm_backend as vb

    sid = np.array([[10, 20, 30], [10, 21, 31], [11, 20, 32]])
    table = vb.allowed_next_tokens(sid)
    assert table[()].tolist() == [10, 11] and table[(10,)].tolist() == [20, 21] and table[(10, 21)].tolist() == [31]
    proc = object.__new__(vb.SidPrefixLogitsProcessor)     # skip vLLM's base __init__
    proc._allowed = {k: torch.as_tensor(v) for k, v in table.items()}
    assert proc.new_req_logits_processor(SimpleNamespace(extra_args=None)) is None
    mask = proc.new_req_logits_processor(SimpleNamespace(extra_args={vb.PREFIX_ARG: [10]}))
    out = mask([21], torch.zeros(40))                        # prefix (10,) + generated (21,) -> only 31
    assert torch.isfinite(out).nonzero().flatten().tolist() == [31]
    out = mask([], torch.arange(40.0))
    assert torch.isfinite(out).nonzero().flatten().tolist() == [20, 21] and out[21] == 21.0
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match="raygen\\[vllm\\]"):
            vb.VLLMBackend("/nonexistent", sid, 0)


def test_cpu_engine_defaults_bound_memory_and_leave_threads_unpinned(monkeypatch):
    """On a CPU, vLLM engines get a small KV cache and unpinned threads unless the user set the variables."""
    import torch

    from raygen.generation.vllm_backend import CPU_KV_CACHE_GB, engine_memory_kwargs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    assert engine_memory_kwargs(0.9) == {"gpu_memory_utilization": 0.2}
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == CPU_KV_CACHE_GB
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-3")   # the user's own binding wins
    engine_memory_kwargs(0.9)
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"
