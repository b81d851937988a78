"""GRPO through Ray: rollout actor pool (order, parity with local), one-put weight sync, 2-3 RL steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raygen.configbase import from_dict
from raygen.rl.config import RlConfig
from raygen.rl.loop import run_grpo
from raygen.generation.pool import LocalPool, RolloutPool, shard_bounds
from raygen.generation.sync import merged_state_dict, state_checksum

pytestmark = pytest.mark.integration

VOCAB, PAD = 100, 3
SID = (torch.tensor([[a, b, c] for a in range(3) for b in range(3) for c in range(2)]) +
       torch.tensor([88, 91, 94]))
PROMPTS = [[5 + i, 20 + (i * 7) % 50, 30 + i][: 2 + i % 2] for i in range(7)]
TARGETS = [(5 * i) % 18 for i in range(7)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_llama):
    path = tmp_path_factory.mktemp("rl_ray_model")
    tiny_llama(vocab_size=VOCAB, initializer_range=0.2, seed=0).save_pretrained(path)
    return str(path)


def test_shard_bounds():
    assert shard_bounds(7, 2) == [(0, 4), (4, 7)] or shard_bounds(7, 2) == [(0, 3), (3, 7)]
    assert shard_bounds(2, 3)[0][0] == 0 and shard_bounds(2, 3)[-1][1] == 2
    assert sum(hi - lo for lo, hi in shard_bounds(10, 3)) == 10


def test_pool_matches_local_and_broadcast_syncs_all_actors(ray_local, model_dir, tiny_llama):
    pool = RolloutPool(2, "hf", model_dir, SID, PAD, num_cpus=0.5, backend_kwargs={"batch_size": 2})
    local = LocalPool("hf", model_dir, SID, PAD, {"batch_size": 2})
    try:
        ro = pool.generate(PROMPTS, 4, "beam")
        want = local.generate(PROMPTS, 4, "beam")
        assert torch.equal(ro.items, want.items)                 # shards gathered in prompt order
        assert torch.allclose(ro.scores, want.scores, atol=1e-5)
        new = merged_state_dict(tiny_llama(vocab_size=VOCAB, initializer_range=0.2, seed=9))
        report = pool.broadcast_weights(new, version=5)
        assert report["versions"] == [5, 5] and pool.weights_versions() == [5, 5]
        # timings (put_s, sync_s) are figures for benchmarks/rl_throughput.py, not test assertions
        assert pool.checksums() == [state_checksum(new)] * 2
        local.broadcast_weights(new, version=5)
        after = pool.generate(PROMPTS, 4, "beam")
        assert torch.equal(after.items, local.generate(PROMPTS, 4, "beam").items)
        assert not torch.equal(after.scores, ro.scores)          # the new weights are in use
    finally:
        pool.shutdown()


def test_pool_survives_an_actor_death_and_resyncs_its_weights(ray_local, model_dir, tiny_llama, tmp_path,
                                                              monkeypatch):
    """An actor dies on its first generate call after a weight sync: Ray restarts it from the model folder,
    the pool re-sends the synced weights and resubmits that shard only: rows come back once, in order, and
    exactly as the synced policy generates them (a restarted actor left on its initial weights would not)."""
    from raygen.faults import MARKER, site_var

    monkeypatch.setenv(site_var("GENERATE_CALL"), "1")
    monkeypatch.setenv(MARKER, str(tmp_path / "fault.marker"))
    pool = RolloutPool(2, "hf", model_dir, SID, PAD, num_cpus=0.5, backend_kwargs={"batch_size": 2})
    local = LocalPool("hf", model_dir, SID, PAD, {"batch_size": 2})
    try:
        new = merged_state_dict(tiny_llama(vocab_size=VOCAB, initializer_range=0.2, seed=9))
        pool.broadcast_weights(new, version=5)
        local.broadcast_weights(new, version=5)
        ro = pool.generate(PROMPTS, 4, "beam")
        assert (tmp_path / "fault.marker").exists() and pool.recoveries == 1   # one actor did die
        want = local.generate(PROMPTS, 4, "beam")
        assert torch.equal(ro.items, want.items) and torch.allclose(ro.scores, want.scores, atol=1e-5)
        assert pool.weights_versions() == [5, 5] and pool.checksums() == [state_checksum(new)] * 2
    finally:
        pool.shutdown()


@pytest.mark.parametrize("learner_actors", [0, 1])
def test_grpo_steps_with_two_rollout_actors(ray_local, model_dir, tmp_path, learner_actors):
    steps = 3 if learner_actors == 0 else 2
    cfg = from_dict(RlConfig, dict(group_size=4, rollout_batch=4, steps=steps, lr=5e-3, kl_beta=0.05,
                                   rollout_resources={"count": 2, "cpus": 0.5},
                                   learner_resources={"count": learner_actors},
                                   rollout_mode="sample", checkpoint_every=0,
                                   rewards={"rule": 1.0, "ranking": 0.5}))
    res = run_grpo(model_dir, PROMPTS, TARGETS, SID, None, cfg, str(tmp_path / "rl"), pad_id=PAD,
                   verify_sync=True)
    assert res["actor_versions"] == [steps, steps]
    assert res["actor_checksums"] == [res["learner_checksum"]] * 2
    from transformers import AutoModelForCausalLM

    init = AutoModelForCausalLM.from_pretrained(model_dir)
    assert res["learner_checksum"] != state_checksum(init.state_dict())   # the actors hold trained weights
    hist = res["history"]
    assert [h["weights_version"] for h in hist] == list(range(1, steps + 1))
    assert all(np.isfinite(h["reward_mean"]) and h["rollout_tokens_per_s"] > 0 for h in hist)
