"""Constrained beam search on a tiny random Llama: validity and exactness vs brute force."""
from __future__ import annotations

import pytest
import torch

from raygen.generation.beam import constrained_beam_search
from raygen.generation.trie import SidTrie

VOCAB, N_LEVELS, N_CODES, N_ITEMS = 200, 3, 8, 30
SID_BASE = VOCAB - N_LEVELS * N_CODES  # ids 176..199 are SID tokens: level l, code c -> SID_BASE + 8*l + c
PAD = 3  # the tiny_llama fixture's pad_token_id


@pytest.fixture(scope="module")
def model(tiny_llama):
    # initializer_range 0.2 (not 0.02) so that item log-probs are well separated (no near-ties).
    return tiny_llama(vocab_size=VOCAB, initializer_range=0.2)


@pytest.fixture(scope="module")
def sid_matrix(random_sid_matrix):
    return random_sid_matrix(N_ITEMS, N_CODES, N_LEVELS, SID_BASE)


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(2)
    return [torch.randint(PAD + 1, SID_BASE, (n,), generator=g).tolist() for n in (3, 9, 5, 12, 1)]


def brute_force(model, prompt, sid_matrix):
    """Exact log p(SID | prompt) of every catalog item by teacher forcing (no padding, no cache)."""
    x = torch.cat([torch.tensor(prompt).expand(len(sid_matrix), -1), sid_matrix], 1)
    with torch.no_grad():
        logp = torch.log_softmax(model(x).logits.float(), -1)
    p = len(prompt)
    return logp[:, p - 1:p - 1 + sid_matrix.shape[1]].gather(-1, sid_matrix[:, :, None]).squeeze(-1).sum(-1)


def test_trie_rejects_duplicate_sids(sid_matrix):
    with pytest.raises(ValueError, match="duplicate rows"):
        SidTrie.build(torch.cat([sid_matrix, sid_matrix[:1]]))


def test_trie_children_match_catalog(sid_matrix):
    trie = SidTrie.build(sid_matrix)
    child, valid = trie.children(0, torch.zeros(1, dtype=torch.long))
    assert set(trie.level_tokens[0][valid[0]].tolist()) == set(sid_matrix[:, 0].tolist())
    assert len(trie.leaf_item) == N_ITEMS


def test_outputs_are_distinct_catalog_items(model, sid_matrix, prompts):
    items, scores = constrained_beam_search(model, prompts, sid_matrix, beam_width=10, pad_id=PAD, batch_size=2)
    assert items.shape == scores.shape == (len(prompts), 10)
    assert ((items >= 0) & (items < N_ITEMS)).all()
    for row in items.tolist():
        assert len(set(row)) == 10
    assert torch.isfinite(scores).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all(), "scores must be sorted best first"


def test_exhaustive_beam_equals_brute_force(model, sid_matrix, prompts):
    items, scores = constrained_beam_search(model, prompts, sid_matrix, beam_width=N_ITEMS + 2, pad_id=PAD,
                                            batch_size=3)
    for b, prompt in enumerate(prompts):
        exact = brute_force(model, prompt, sid_matrix)
        order = exact.argsort(descending=True)
        assert items[b, :N_ITEMS].tolist() == order.tolist()
        torch.testing.assert_close(scores[b, :N_ITEMS], exact[order], atol=1e-4, rtol=0)
        assert abs(scores[b, 0].item() - exact.max().item()) < 1e-4
        # the catalog has fewer items than beams: surplus slots are explicitly empty
        assert items[b, N_ITEMS:].tolist() == [-1, -1]
        assert torch.isneginf(scores[b, N_ITEMS:]).all()


def test_narrow_beam_scores_are_exact_logprobs(model, sid_matrix, prompts):
    items, scores = constrained_beam_search(model, prompts, sid_matrix, beam_width=4, pad_id=PAD, batch_size=5)
    for b, prompt in enumerate(prompts):
        exact = brute_force(model, prompt, sid_matrix)
        torch.testing.assert_close(scores[b], exact[items[b]], atol=1e-4, rtol=0)


def test_batching_and_order_do_not_change_results(model, sid_matrix, prompts):
    a = constrained_beam_search(model, prompts, sid_matrix, beam_width=6, pad_id=PAD, batch_size=1,
                                sort_by_length=False)
    b = constrained_beam_search(model, prompts, sid_matrix, beam_width=6, pad_id=PAD, batch_size=4)
    assert torch.equal(a[0], b[0])
    torch.testing.assert_close(a[1], b[1], atol=1e-4, rtol=0)


def brute_force_sid_only(model, prompt, sid_matrix, eos_id):
    """Exact log p(SID | prompt) with the softmax over the SID tokens + EOS only (the sid_only_head loss)."""
    allowed = torch.unique(torch.cat([sid_matrix.flatten(), torch.tensor([eos_id])]))
    x = torch.cat([torch.tensor(prompt).expand(len(sid_matrix), -1), sid_matrix], 1)
    with torch.no_grad():
        logits = model(x).logits.float()
    restricted = torch.full_like(logits, float("-inf"))
    restricted[..., allowed] = logits[..., allowed]
    logp = torch.log_softmax(restricted, -1)
    p = len(prompt)
    return logp[:, p - 1:p - 1 + sid_matrix.shape[1]].gather(-1, sid_matrix[:, :, None]).squeeze(-1).sum(-1)


def test_sid_only_scoring_equals_brute_force_over_sid_tokens(model, sid_matrix, prompts):
    items, scores = constrained_beam_search(model, prompts, sid_matrix, beam_width=N_ITEMS, pad_id=PAD, batch_size=2,
                                            sid_only=True, eos_id=2)
    full, _ = constrained_beam_search(model, prompts, sid_matrix, beam_width=N_ITEMS, pad_id=PAD, batch_size=2)
    for b, prompt in enumerate(prompts):
        exact = brute_force_sid_only(model, prompt, sid_matrix, eos_id=2)
        order = exact.argsort(descending=True)
        assert items[b].tolist() == order.tolist()
        torch.testing.assert_close(scores[b], exact[order], atol=1e-4, rtol=0)
    assert not torch.equal(items, full)  # a different normaliser per beam: the ranking can change
