"""SID quantizers, collision resolution, metrics and new-item assignment (pure numpy/torch)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raygen.sid.assign import AssignError, assign_new_items
from raygen.sid.collisions import add_extra_level, resolve_collisions, sinkhorn
from raygen.sid.metrics import (collision_groups, collision_rate, perplexity, recon_error, recon_rel,
                                utilization)
from raygen.sid.quantizer import load_quantizer, save_quantizer
from raygen.sid.rqkmeans import RQKMeans
from raygen.sid.rqvae import RQVAE


def clustered(n=500, d=32, centers=12, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d))
    X = c[rng.integers(centers, size=n)] + noise * rng.standard_normal((n, d))
    return X.astype(np.float32)


def tiny_rqvae(**kw):
    args = dict(levels=3, codebook_size=16, latent_dim=16, hidden_dims=[64], epochs=60, batch_size=128,
                lr=3e-3, kmeans_iters=10, seed=0, num_threads=1)
    return RQVAE(**{**args, **kw})


@pytest.fixture(scope="module")
def X():
    return clustered()


@pytest.fixture(scope="module")
def rqvae(X):
    return tiny_rqvae().fit(X)


# -- metrics ---------------------------------------------------------------------------------

def test_metrics_hand_computed():
    codes = np.array([[0, 1], [0, 1], [0, 2], [1, 1], [1, 1], [1, 1]])
    assert collision_rate(codes) == pytest.approx(5 / 6)  # only [0, 2] is unique
    assert [g.tolist() for g in collision_groups(codes)] == [[0, 1], [3, 4, 5]]
    assert utilization(codes, 4) == [0.5, 0.5]
    # level 0: 3/3 split -> perplexity 2; level 1: 5/6 vs 1/6
    p = np.array([5 / 6, 1 / 6])
    assert perplexity(codes) == pytest.approx([2.0, math.exp(-(p * np.log(p)).sum())])
    assert collision_rate(np.array([[0], [1], [2]])) == 0.0
    X = np.array([[0.0, 0.0], [1.0, 1.0]])
    X_hat = np.array([[1.0, 0.0], [1.0, 3.0]])
    assert recon_error(X, X_hat) == pytest.approx((1 + 4) / 2)
    assert recon_rel(X, X) == 0.0
    assert recon_rel(X, np.full_like(X, 0.5)) == pytest.approx(1.0)  # predicting the mean


# -- quantizers ------------------------------------------------------------------------------

def _check_codes(codes, n, levels, k):
    assert codes.shape == (n, levels) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < k


def test_rqkmeans_codes_decode_and_roundtrip(X, tmp_path):
    q = RQKMeans(levels=3, codebook_size=16, iters=20, seed=0).fit(X)
    codes = q.encode(X)
    _check_codes(codes, len(X), 3, 16)
    # each level refines: error after 3 levels < after 1 level < predicting the mean
    err3 = recon_error(X, q.decode(codes))
    err1 = recon_error(X, q.codebooks()[0][codes[:, 0]])
    assert err3 < err1 < recon_error(X, np.broadcast_to(X.mean(0), X.shape))
    assert collision_rate(codes) < 0.5
    save_quantizer(q, tmp_path)
    q2 = load_quantizer(tmp_path)
    assert isinstance(q2, RQKMeans)
    np.testing.assert_array_equal(q2.encode(X), codes)
    np.testing.assert_array_equal(RQKMeans(3, 16, 20, 0).fit(X).encode(X), codes)  # deterministic


def test_rqkmeans_caps_clusters_when_few_items():
    X = clustered(n=10, d=4)
    with pytest.warns(UserWarning, match="codebook_size=16"):
        q = RQKMeans(levels=2, codebook_size=16, iters=5).fit(X)
    assert q.fit_info["clusters_capped"] and q.fit_info["clusters_per_level"][0] == 10
    codes = q.encode(X)
    assert collision_rate(codes) == 0.0  # 10 clusters for 10 distinct items
    assert recon_error(X, q.decode(codes)) < 1e-8


def test_rqvae_with_fewer_items_than_codes():
    X = clustered(n=10, d=4)
    q = tiny_rqvae(epochs=3).fit(X)
    assert q.fit_info["init_clusters_per_level"][0] == 10  # the other 6 codewords are filled from data
    _check_codes(q.encode(X), 10, 3, 16)
    with pytest.raises(ValueError, match="epochs"):
        tiny_rqvae(epochs=0)


def test_rqvae_trains_deterministically_and_roundtrips(X, rqvae, tmp_path):
    info = rqvae.fit_info
    assert info["init_clusters_per_level"] == [16, 16, 16]
    assert info["final_loss"] < info["first_loss"]
    codes, dists = rqvae.encode_with_distances(X)
    _check_codes(codes, len(X), 3, 16)
    assert dists.shape == (len(X), 16)
    np.testing.assert_array_equal(dists.argmin(1), codes[:, -1])  # last code = nearest codeword
    assert recon_rel(X, rqvae.decode(codes)) < 0.5
    state = torch.get_rng_state()
    again = tiny_rqvae().fit(X)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    np.testing.assert_array_equal(again.encode(X), codes)
    save_quantizer(rqvae, tmp_path)
    loaded = load_quantizer(tmp_path)
    np.testing.assert_array_equal(loaded.encode(X), codes)
    np.testing.assert_allclose(loaded.decode(codes), rqvae.decode(codes), atol=1e-6)
    assert not np.array_equal(tiny_rqvae(seed=1).fit(X).encode(X), codes)


def _check_sinkhorn(codes, dists, fixed, rep):
    """Only colliding items move, only on the last level; final rate 0."""
    assert rep.collision_rate_before == pytest.approx(collision_rate(codes))
    assert rep.collision_rate == 0.0 == collision_rate(fixed)
    assert rep.items_reassigned > 0
    np.testing.assert_array_equal(fixed[:, :codes.shape[1] - 1], codes[:, :-1])
    untouched = np.ones(len(codes), bool)
    untouched[np.concatenate(collision_groups(codes))] = False
    np.testing.assert_array_equal(fixed[untouched, :codes.shape[1]], codes[untouched])


def test_sinkhorn_removes_rqkmeans_collisions(X):
    codes, dists = RQKMeans(3, 16, 20, 0).fit(X).encode_with_distances(X)
    assert collision_rate(codes) > 0.1  # plenty of raw collisions to fix
    fixed, rep = resolve_collisions(codes, dists, np.arange(len(X)), extra_level=False)
    assert rep.collision_rate_sinkhorn == 0.0 and not rep.extra_level_added and fixed.shape == codes.shape
    _check_sinkhorn(codes, dists, fixed, rep)
    moved = np.flatnonzero(fixed[:, -1] != codes[:, -1])
    ranks = [(dists[i] < dists[i, fixed[i, -1]]).sum() for i in moved]  # 0 = the nearest code
    assert 1 <= np.mean(ranks) < 2  # moved items land on (about) their next-nearest free code


def test_sinkhorn_then_extra_level_for_rqvae(X, rqvae):
    codes, dists = rqvae.encode_with_distances(X)
    fixed, rep = resolve_collisions(codes, dists, np.arange(len(X)))
    # a briefly trained RQ-VAE leaves some prefixes with more items than last-level codes
    assert 0 < rep.collision_rate_sinkhorn < rep.collision_rate_before / 3
    assert rep.extra_level_added and fixed.shape == (len(X), 4)
    assert (fixed[:, 3] > 0).sum() <= rep.collision_rate_sinkhorn * len(X)
    _check_sinkhorn(codes, dists, fixed, rep)


# -- collisions ------------------------------------------------------------------------------

def test_sinkhorn_plan_has_uniform_marginals():
    cost = np.random.default_rng(0).random((5, 7))
    plan = sinkhorn(cost, epsilon=0.1, iters=500)
    np.testing.assert_allclose(plan.sum(1), 1 / 5, atol=1e-6)
    np.testing.assert_allclose(plan.sum(0), 1 / 7, atol=1e-6)


def test_sinkhorn_spreads_two_items_over_nearest_codes():
    codes = np.array([[0, 1], [0, 1], [0, 2]])
    # items 0 and 1 both prefer code 1; code 2 is held by settled item 2, code 3 is the next best
    d = np.array([[0.0, 0.1, 0.5, 0.9], [0.05, 0.1, 0.5, 0.9], [0.9, 0.9, 0.0, 0.9]])
    fixed, rep = resolve_collisions(codes, d, np.array([10, 11, 12]))
    assert rep.collision_rate_before == pytest.approx(2 / 3) and rep.collision_rate == 0.0
    assert fixed[2].tolist() == [0, 2]
    assert sorted(fixed[:2, 1].tolist()) == [0, 1]


def test_duplicates_get_extra_level_by_item_id():
    codes = np.array([[1, 2], [1, 2], [3, 4], [1, 2], [5, 5]])
    d = np.zeros((5, 6))  # identical cost rows: Sinkhorn cannot separate them
    ids = np.array([7, 3, 1, 5, 9])
    fixed, rep = resolve_collisions(codes, d, ids)
    assert rep.extra_level_added and rep.collision_rate == 0.0 and fixed.shape == (5, 3)
    # colliding group rows 0, 1, 3 (ids 7, 3, 5) -> extra codes by id order: 3->0, 5->1, 7->2
    assert fixed[:, 2].tolist() == [2, 0, 0, 1, 0]
    assert rep.extra_level_max == 2
    with pytest.raises(ValueError, match="extra_level"):
        resolve_collisions(codes, d, ids, extra_level=False)
    assert add_extra_level(np.array([[0], [1]]), np.array([0, 1]))[:, 1].tolist() == [0, 0]


def test_duplicate_embeddings_resolved_to_zero():
    X = clustered(n=200, d=16)
    X[50:60] = X[49]  # eleven identical items
    q = RQKMeans(2, 8, 10, 0).fit(X)
    codes, dists = q.encode_with_distances(X)
    fixed, rep = resolve_collisions(codes, dists, np.arange(200))
    assert rep.extra_level_added and collision_rate(fixed) == 0.0
    assert sorted(fixed[49:60, -1].tolist()) == list(range(11))


def test_no_extra_level_when_not_needed():
    codes = np.array([[0, 0], [0, 1]])
    fixed, rep = resolve_collisions(codes, np.zeros((2, 2)), np.array([0, 1]))
    assert not rep.extra_level_added and rep.sinkhorn_rounds == 0
    np.testing.assert_array_equal(fixed, codes)


# -- new items -------------------------------------------------------------------------------

def test_assign_new_items_collision_free_and_stable(X):
    old, new = X[:400], X[400:]
    q = RQKMeans(3, 16, 20, 0).fit(old)
    codes, d = q.encode_with_distances(old)
    existing, _ = resolve_collisions(codes, d, np.arange(400))
    before = existing.copy()
    new_codes, rep = assign_new_items(q, new, np.arange(400, 500), existing, np.arange(400))
    np.testing.assert_array_equal(existing, before)
    allc = np.concatenate([existing, new_codes])
    assert allc.shape[1] == existing.shape[1] and collision_rate(allc) == 0.0
    raw = q.encode(new)
    # a new item that did not collide keeps its own encoding
    assert rep["n_new"] == 100 and (new_codes[:, :3] == raw).all(1).sum() == 100 - rep["n_moved_last_level"]
    np.testing.assert_array_equal(new_codes[:, :2], raw[:, :2])  # prefixes never change
    with pytest.raises(ValueError, match="already have SIDs"):
        assign_new_items(q, new[:1], [3], existing, np.arange(400))


def test_assign_duplicates_use_extra_level_or_fail():
    X = clustered(n=60, d=8)
    q = RQKMeans(2, 2, 10, 0).fit(X)  # 4 slots: prefixes fill up quickly
    codes, d = q.encode_with_distances(X)
    existing, rep = resolve_collisions(codes, d, np.arange(60))
    assert rep.extra_level_added
    dup = np.repeat(X[:1], 3, axis=0)
    new_codes, arep = assign_new_items(q, dup, np.array([100, 101, 102]), existing)
    assert collision_rate(np.concatenate([existing, new_codes])) == 0.0 and arep["n_extra_level"] == 3
    small = np.array([[0, 0], [0, 1]])
    with pytest.raises(AssignError, match="no extra level"):
        assign_new_items(RQKMeans(2, 2, 10, 0).fit(X), X[:1], [5], np.array([[a, b] for a in (0, 1) for b in (0, 1)]))
    new_codes, _ = assign_new_items(q, X[:1], [5], small)
    assert new_codes[0].tolist() not in small.tolist()
