"""GRPO math: advantages, the clipped loss + k3 KL against hand-computed numbers, log-probs."""
from __future__ import annotations

import math

import pytest
import torch

from raygen.generation.beam import left_pad
from raygen.rl.grpo import build_sequences, completion_logprobs, group_advantages, grpo_loss, sequence_logprobs


def test_advantages_hand_computed():
    # mean 0.5, sample std sqrt(4 * 0.25 / 3) = 0.577350; (1 - 0.5) / (0.577350 + 1e-4) = 0.865875
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0]]))
    assert adv[0].tolist() == pytest.approx([0.865875, -0.865875, -0.865875, 0.865875], abs=1e-6)
    std = math.sqrt(2 / 3)
    assert adv[1].tolist() == pytest.approx([1 / (std + 1e-4), -1 / (std + 1e-4), 0.0, 0.0], abs=1e-6)


def test_constant_groups_have_zero_advantage():
    adv = group_advantages(torch.tensor([[0.3, 0.3, 0.3], [2.0, 2.0, 2.0], [0.0, 1.0, 0.0]]))
    assert adv[0].tolist() == [0.0, 0.0, 0.0] and adv[1].tolist() == [0.0, 0.0, 0.0]
    assert adv[2].abs().sum() > 0
    with pytest.raises(ValueError):
        group_advantages(torch.tensor([[1.0], [2.0]]))


def _example():
    # Position 0 is a prompt token (mask 0) holding garbage that must not leak into the loss.
    logp = torch.tensor([[5.0, -1.0, -0.5], [5.0, -2.0, -0.1]], requires_grad=True)
    old = torch.tensor([[-5.0, -1.2, -0.5], [-5.0, -1.5, -0.1]])
    ref = torch.tensor([[0.0, -1.1, -0.7], [0.0, -2.0, -0.3]])
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1]])
    return logp, old, ref, adv, mask


def test_grpo_loss_hand_computed():
    logp, old, ref, adv, mask = _example()
    loss, stats = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=0.1)
    # token (0,1): ratio e^0.2 = 1.221403 > 1.2, A = +1 -> clipped: pg = -1.2
    # token (0,2): ratio 1 -> pg = -1
    # token (1,1): ratio e^-0.5 = 0.606531 < 0.8, A = -2 -> min(-1.213061, -1.6) = -1.6: pg = +1.6 (clipped)
    # token (1,2): ratio 1 -> pg = +2
    # k3 with d = ref - logp: (0,1) d=-0.1: e^-0.1 + 0.1 - 1 = 0.00483742; (0,2) d=-0.2: 0.01873075;
    #                         (1,1) d=0: 0;                              (1,2) d=-0.2: 0.01873075
    k = [0.00483742, 0.01873075, 0.0, 0.01873075]
    pg = [-1.2, -1.0, 1.6, 2.0]
    expected = sum(p + 0.1 * q for p, q in zip(pg, k)) / 4
    assert expected == pytest.approx(0.3510575, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-6)
    assert stats["pg_loss"] == pytest.approx(0.35, abs=1e-6)
    assert stats["kl"] == pytest.approx(sum(k) / 4, abs=1e-6)
    assert stats["clip_frac"] == pytest.approx(0.5)
    loss.backward()
    g = logp.grad
    assert g[:, 0].tolist() == [0.0, 0.0]                       # masked prompt tokens get no gradient
    # unclipped (0,2): d/dlogp = (-A * ratio + beta * (1 - e^d)) / 4 = (-1 + 0.1 * 0.181269) / 4
    assert float(g[0, 2]) == pytest.approx((-1 + 0.1 * (1 - math.exp(-0.2))) / 4, abs=1e-6)
    # clipped (0,1): only the KL term: 0.1 * (1 - e^-0.1) / 4
    assert float(g[0, 1]) == pytest.approx(0.1 * (1 - math.exp(-0.1)) / 4, abs=1e-6)
    # unclipped (1,2) with A = -2: (2 + 0.1 * 0.181269) / 4
    assert float(g[1, 2]) == pytest.approx((2 + 0.1 * (1 - math.exp(-0.2))) / 4, abs=1e-6)


def test_grpo_loss_without_kl():
    logp, old, _, adv, mask = _example()
    loss, stats = grpo_loss(logp, old, None, adv, mask, clip_eps=0.2, beta=0.0)
    assert float(loss.detach()) == pytest.approx(0.35, abs=1e-6) and stats["kl"] == 0.0
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, old, None, adv, mask, clip_eps=0.2, beta=0.1)


def test_on_policy_gradient_is_advantage_weighted_score():
    # ratio == 1 everywhere and beta = 0: d loss / d logp = -A / n_tokens
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.7]], requires_grad=True)
    adv = torch.tensor([0.5, -1.5])
    loss, _ = grpo_loss(logp, logp.detach(), None, adv, torch.ones(2, 2), 0.2, 0.0)
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-0.125, -0.125, 0.375, 0.375])


def test_build_sequences_layout():
    ids, att, cm = build_sequences([[5, 6, 7], [8]], torch.tensor([[1, 2], [3, 4]]), pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 1, 2], [0, 0, 8, 3, 4]]
    assert att.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert cm.tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]
    assert left_pad([[1], [2, 3]], 9)[0].tolist() == [[9, 1], [2, 3]]


def test_sequence_logprobs_matches_unpadded_teacher_forcing(tiny_llama):
    model = tiny_llama(vocab_size=100, initializer_range=0.2)
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    comp = torch.tensor([[40, 41, 42], [43, 44, 45]])
    ids, att, cm = build_sequences(prompts, comp, pad_id=3)
    with torch.no_grad():
        got = sequence_logprobs(model, ids, att, cm)
    assert got.shape == ids.shape and (got[cm == 0] == 0).all()
    for i, p in enumerate(prompts):
        x = torch.tensor([p + comp[i].tolist()])
        with torch.no_grad():
            lp = torch.log_softmax(model(x).logits.float(), -1)[0]
        want = [float(lp[len(p) - 1 + t, comp[i, t]]) for t in range(3)]
        assert got[i, -3:].tolist() == pytest.approx(want, abs=1e-5)


def test_sequence_logprobs_over_a_restricted_head(tiny_llama):
    """head_ids: the softmax over those tokens only (the SID-only policy), left padding included."""
    model = tiny_llama(vocab_size=100, initializer_range=0.2)
    head = torch.tensor([2, 40, 41, 42, 43, 44, 45, 60])
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    comp = torch.tensor([[40, 41, 2], [43, 44, 45]])
    ids, att, cm = build_sequences(prompts, comp, pad_id=3)
    with torch.no_grad():
        got = sequence_logprobs(model, ids, att, cm, head_ids=head)
    assert got.shape == ids.shape and (got[cm == 0] == 0).all()
    for i, p in enumerate(prompts):
        x = torch.tensor([p + comp[i].tolist()])
        with torch.no_grad():
            lp = torch.log_softmax(model(x).logits.float()[0][:, head], -1)
        want = [float(lp[len(p) - 1 + t, (head == comp[i, t]).nonzero()[0, 0]]) for t in range(3)]
        assert got[i, -3:].tolist() == pytest.approx(want, abs=1e-5)
    with torch.no_grad():
        full = sequence_logprobs(model, ids, att, cm)
    assert (got[cm == 1] > full[cm == 1]).all()  # fewer tokens share the mass
    with pytest.raises(ValueError, match=r"\[50\] are not in head_ids"):
        sequence_logprobs(model, *build_sequences(prompts, torch.tensor([[40, 50, 2], [43, 44, 45]]), 3),
                          head_ids=head)


@pytest.mark.parametrize("restricted", [False, True])
def test_shared_prompt_logprobs_equal_the_full_sequences_and_their_gradients(tiny_llama, restricted):
    """completion_logprobs encodes each distinct prompt once (groups of G completions share it): values
    and parameter gradients equal the plain prompt+completion pass, whatever the prompts' lengths/order."""
    model = tiny_llama(vocab_size=100, initializer_range=0.2)
    head = torch.tensor([2, 40, 41, 42, 43, 44, 45, 60]) if restricted else None
    a, b, c = [5, 6, 7, 8, 9], [10, 11], [12, 13, 14]
    prompts = [a, a, a, b, b, c, a]  # groups, plus a repeat of a out of order
    comp = torch.tensor([[40, 41, 2], [43, 44, 45], [60, 41, 42], [40, 40, 2], [45, 44, 43], [42, 60, 2],
                         [41, 42, 43]])
    weights = torch.linspace(-1.0, 2.0, comp.numel()).view(comp.shape)  # any loss touching every token

    def grads(logp):
        model.zero_grad(set_to_none=True)
        (logp * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ids, att, cm = build_sequences(prompts, comp, pad_id=3)
    want = sequence_logprobs(model, ids, att, cm, head_ids=head)[:, -3:]
    want_grads = grads(want)
    got = completion_logprobs(model, prompts, comp, pad_id=3, head_ids=head)
    got_grads = grads(got)
    assert got.shape == comp.shape
    assert torch.allclose(got, want, atol=1e-5)
    assert want_grads.keys() == got_grads.keys() and len(got_grads) > 0
    for n in want_grads:
        assert torch.allclose(got_grads[n], want_grads[n], rtol=1e-4, atol=1e-5 * float(want_grads[n].abs().max())), n
    with pytest.raises(ValueError, match="2 prompts but 7 completions"):
        completion_logprobs(model, prompts[:2], comp, pad_id=3)
    if restricted:
        with pytest.raises(ValueError, match=r"\[50\] are not in head_ids"):
            completion_logprobs(model, prompts, comp.masked_fill(comp == 41, 50), pad_id=3, head_ids=head)
