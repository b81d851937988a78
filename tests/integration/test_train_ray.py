"""STAR alignment on Ray Train with 2 CPU workers + DeepSpeed ZeRO-2: checkpoints, export, resume.

The first DeepSpeed run on a machine JIT-builds its CPU comm op (~1-2 min, cached in
~/.cache/torch_extensions); later runs start in seconds. Each ``train`` call here then takes
roughly 30-60 s on 2 cores (Ray Train + worker start-up dominate; the steps take about a second).
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from raygen.configbase import Resources

pytestmark = pytest.mark.integration


def _examples(tok, sid_tokens, n=24):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        hist = "".join(sid_tokens[int(i)] for i in torch.randint(0, len(sid_tokens), (3,), generator=g))
        prompt = tok(f"history {hist} next", add_special_tokens=False)["input_ids"]
        answer = tok.convert_tokens_to_ids([sid_tokens[int(i)] for i in torch.randint(0, 4, (3,), generator=g)])
        out.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return out


def test_star_alignment_two_workers_deepspeed_checkpoints_export_resume(ray_local, tmp_path, tiny_tokenizer):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from raygen.train import TrainConfig, train

    tok = tiny_tokenizer
    sid_tokens = [f"<{level}_{c}>" for level in "abc" for c in range(4)]
    tok.add_tokens(sid_tokens)
    sid_ids = tok.convert_tokens_to_ids(sid_tokens)
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    examples = _examples(tok, sid_tokens)
    # every answer is a SID, so the SID-only head is valid; weight decay > 0 must not touch frozen rows
    cfg = TrainConfig(mode="embeddings", resources=Resources(count=2), deepspeed=True, zero_stage=2, batch_size=4,
                      max_steps=2, checkpoint_every=1, keep_checkpoints=2, log_every=1, lr=1e-2, weight_decay=0.1,
                      sid_only_head=True, max_len=64)
    out, storage = tmp_path / "out", tmp_path / "ray"

    r1 = train(tmp_path / "base", examples, sid_ids, cfg, out, storage, resume=False)
    assert (r1["start_step"], r1["final_step"], r1["world_size"]) == (0, 2, 2)
    assert r1["frozen_rows_changed"] == 0 and r1["tokens_per_s"] > 0 and r1["metrics"]["step"] == 2
    ckpts = sorted(p.name for p in (storage / "train").glob("step_*"))
    assert ckpts == ["step_0000001", "step_0000002"]
    last = storage / "train" / "step_0000002"
    rows = load_file(last / "trainable.safetensors")
    assert list(rows) == ["model.embed_tokens.weight"] and rows["model.embed_tokens.weight"].shape == (12, 32)
    shards = sorted(p.name for p in (last / "deepspeed" / "ds").glob("zero_pp_rank_*"))
    assert len(shards) == 2  # both ranks' ZeRO optimizer shards merged into one checkpoint

    trained = AutoModelForCausalLM.from_pretrained(out / "model")
    assert AutoTokenizer.from_pretrained(out / "model").convert_tokens_to_ids("<c_3>") == sid_ids[-1]
    non_sid = torch.ones(len(tok), dtype=torch.bool)
    non_sid[sid_ids] = False
    emb, emb0 = trained.get_input_embeddings().weight, base.get_input_embeddings().weight
    assert torch.equal(emb[non_sid], emb0[non_sid]) and not torch.equal(emb[sid_ids], emb0[sid_ids])
    assert torch.equal(emb[sid_ids], rows["model.embed_tokens.weight"])
    for (name, p), (_, p0) in zip(trained.named_parameters(), base.named_parameters()):
        if "embed_tokens" not in name:
            assert torch.equal(p, p0), name

    r2 = train(tmp_path / "base", examples, sid_ids, dataclasses.replace(cfg, max_steps=4), out, storage, resume=True)
    assert (r2["start_step"], r2["final_step"]) == (2, 4) and r2["metrics"]["step"] == 4
    assert sorted(p.name for p in (storage / "train").glob("step_*")) == ["step_0000003", "step_0000004"]
    resumed = AutoModelForCausalLM.from_pretrained(out / "model").get_input_embeddings().weight
    assert torch.equal(resumed[non_sid], emb0[non_sid]) and not torch.equal(resumed[sid_ids], emb[sid_ids])


def test_validation_keeps_best_state_and_stops_on_patience(ray_local, tmp_path, tiny_tokenizer):
    """Sequence-style rows of a deterministic item cycle; valid NDCG@10 drives keep-best and early stop."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from raygen.train import TrainConfig, train
    from raygen.train.validation import ValidSet, Validator

    tok = tiny_tokenizer
    sid_tokens = [f"<{level}_{c}>" for level in "ab" for c in range(6)]
    tok.add_tokens(sid_tokens)
    ids = tok.convert_tokens_to_ids(sid_tokens)
    items = [[ids[i], ids[6 + (i * 5) % 6]] for i in range(6)]  # 6 items, 2-level SIDs
    nxt = lambda i: (i + 1) % 6  # noqa: E731
    prefix = tok("history", add_special_tokens=False)["input_ids"]
    rows, g = [], torch.Generator().manual_seed(0)
    for _ in range(32):
        seq = [int(torch.randint(0, 6, (1,), generator=g))]
        for _ in range(4):
            seq.append(nxt(seq[-1]))
        flat = [t for i in seq for t in items[i]]
        rows.append({"input_ids": prefix + flat, "labels": [-100] * (len(prefix) + 2) + flat[2:]})
    valid = ValidSet(prompt_ids=[prefix + items[i] for i in range(6)], targets=[nxt(i) for i in range(6)],
                     sid_matrix=items, pad_id=0)
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    cfg = TrainConfig(mode="full", resources=Resources(count=1), deepspeed=False, batch_size=8, max_steps=200, lr=3e-2,
                      checkpoint_every=0, log_every=5, valid_every=4, valid_beam=6, patience=3, pad_to="packing",
                      max_len=128, bf16=False)
    r = train(tmp_path / "base", rows, ids, cfg, tmp_path / "out", tmp_path / "ray", resume=False, valid=valid)
    curve = r["learning_curve"]
    assert r["stopped_early"] and r["final_step"] < 200
    assert [c["step"] for c in curve] == list(range(4, r["final_step"] + 1, 4))
    assert curve[-1]["examples"] == r["final_step"] * 8 and all("loss" in c for c in curve)
    best = max(c["valid_ndcg@10"] for c in curve)
    assert best > 0.6 and r["best_valid"]["ndcg@10"] == best
    assert r["exported_step"] == r["best_step"] == next(c["step"] for c in curve if c["valid_ndcg@10"] == best)
    # the exported model is the best one: it scores exactly the best valid NDCG again
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")
    assert Validator(valid, beam_width=6).evaluate(model)["ndcg@10"] == best
    assert r["precision"]["bf16"] is False
