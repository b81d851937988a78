"""RL rewards against hand-computed values: hits, misses, ties, absent targets, empty slots, registry."""
from __future__ import annotations

import math

import pytest
import torch

from raygen.rl.rewards import (RewardContext, combine, competition_ranks, get_reward, ranking_reward,
                               register_reward, rule_reward, semantic_reward)

L2 = math.log2


def test_rule_reward():
    cands = torch.tensor([[3, 1, 2], [0, 0, 5], [-1, 4, 4]])
    r = rule_reward(cands, torch.tensor([1, 7, 4]))
    assert r.tolist() == [[0, 1, 0], [0, 0, 0], [0, 1, 1]]


def test_ranking_by_position_with_a_hit():
    # target at rank 1; wrong at ranks 0 and 2: weights 1/log2(2) = 1 and 1/log2(4) = 0.5, total 1.5
    r = ranking_reward(torch.tensor([[3, 1, 2]]), torch.tensor([1]))
    assert r[0].tolist() == pytest.approx([-1 / 1.5, 1.0, -0.5 / 1.5])


def test_ranking_target_absent_penalties_sum_to_minus_one():
    r = ranking_reward(torch.tensor([[4, 5, 6]]), torch.tensor([9]))
    w = [1.0, 1 / L2(3), 0.5]
    assert r[0].tolist() == pytest.approx([-x / sum(w) for x in w])
    assert r[0].tolist() == pytest.approx([-0.469279, -0.296082, -0.234639], abs=1e-6)
    assert float(r.sum()) == pytest.approx(-1.0)


def test_ranking_ties_share_rank_and_penalty():
    cands = torch.tensor([[7, 8, 8, 9]])
    scores = torch.tensor([[-1.0, -2.0, -2.0, -3.0]])
    assert competition_ranks(scores).tolist() == [[0, 1, 1, 3]]
    r = ranking_reward(cands, torch.tensor([9]), RewardContext(scores=scores))
    w = [1.0, 1 / L2(3), 1 / L2(3)]          # the hit (rank 3) is excluded from the normaliser
    assert r[0].tolist() == pytest.approx([-w[0] / sum(w), -w[1] / sum(w), -w[2] / sum(w), 1.0])
    assert r[0, 1] == r[0, 2]


def test_ranking_scores_reorder_ranks():
    # the same group, but the scores say item 6 is the most likely: it gets the biggest penalty
    r = ranking_reward(torch.tensor([[4, 5, 6]]), torch.tensor([9]),
                       RewardContext(scores=torch.tensor([[-3.0, -2.0, -1.0]])))
    w = {6: 1.0, 5: 1 / L2(3), 4: 0.5}
    total = sum(w.values())
    assert r[0].tolist() == pytest.approx([-w[4] / total, -w[5] / total, -w[6] / total])


def test_empty_slots_get_zero():
    cands = torch.tensor([[2, -1], [-1, -1]])
    t = torch.tensor([2, 0])
    assert rule_reward(cands, t).tolist() == [[1, 0], [0, 0]]
    assert ranking_reward(cands, t).tolist() == [[1, 0], [0, 0]]
    emb = torch.eye(3)
    assert semantic_reward(cands, t, RewardContext(item_embeddings=emb)).tolist() == [[1, 0], [0, 0]]


def test_all_hits_group():
    r = ranking_reward(torch.tensor([[1, 1]]), torch.tensor([1]))
    assert r.tolist() == [[1.0, 1.0]]


def test_semantic_reward_cosine():
    emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    r = semantic_reward(torch.tensor([[0, 1, 2]]), torch.tensor([2]), RewardContext(item_embeddings=emb))
    s = 1 / math.sqrt(2)
    assert r[0].tolist() == pytest.approx([s, s, 1.0])
    r = semantic_reward(torch.tensor([[0, 1]]), torch.tensor([0]), RewardContext(item_embeddings=emb))
    assert r[0].tolist() == pytest.approx([1.0, 0.0])
    with pytest.raises(ValueError, match="embeddings"):
        semantic_reward(torch.tensor([[0]]), torch.tensor([0]), RewardContext())


def test_combine_weights_and_skips_zero():
    cands, t = torch.tensor([[3, 1, 2]]), torch.tensor([1])
    fn = combine({"rule": 1.0, "ranking": 0.5, "semantic": 0.0})    # semantic unused: no embeddings needed
    out = fn(cands, t, RewardContext())
    expected = rule_reward(cands, t) + 0.5 * ranking_reward(cands, t)
    assert torch.allclose(out, expected)
    assert out[0].tolist() == pytest.approx([-1 / 3, 1.5, -1 / 6])
    with pytest.raises(KeyError, match="registered rewards"):
        combine({"no_such_reward": 1.0})
    with pytest.raises(ValueError, match="non-zero"):
        combine({"rule": 0.0})


def test_register_custom_reward():
    @register_reward("test_rl_first_slot")
    def first_slot(candidates, targets, ctx):
        r = torch.zeros(candidates.shape)
        r[:, 0] = 2.0
        return r

    assert get_reward("test_rl_first_slot") is first_slot
    out = combine({"test_rl_first_slot": 0.5, "rule": 1.0})(torch.tensor([[5, 6]]), torch.tensor([6]),
                                                            RewardContext())
    assert out.tolist() == [[1.0, 1.0]]
    with pytest.raises(ValueError, match="already registered"):
        register_reward("test_rl_first_slot")(lambda c, t, x: c)


def test_shape_errors():
    with pytest.raises(ValueError, match="candidates"):
        rule_reward(torch.tensor([1, 2]), torch.tensor([1]))


def test_prefix_reward_credits_shared_leading_levels():
    from raygen.rl.rewards import RewardContext, combine, prefix_reward

    sid = torch.tensor([[10, 20, 30], [10, 20, 31], [10, 21, 30], [11, 20, 30]])
    cand = torch.tensor([[0, 1, 2, 3, -1]])
    r = prefix_reward(cand, torch.tensor([0]), RewardContext(sid_matrix=sid))
    # the item itself; 2 leading levels shared; 1 (row 2 shares level 3 too, but after a mismatch); 0; empty slot
    assert r.tolist() == [[1.0, pytest.approx(2 / 3), pytest.approx(1 / 3), 0.0, 0.0]]
    both = combine({"rule": 1.0, "prefix": 0.5})(cand, torch.tensor([0]), RewardContext(sid_matrix=sid))
    assert both[0, 0] == pytest.approx(1.5) and both[0, 1] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="SID matrix"):
        prefix_reward(cand, torch.tensor([0]), RewardContext())
