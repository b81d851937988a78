"""STAR SID-row mask and LoRA(+SID rows) trainability: what moves and what stays bit-identical."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from raygen.train.collate import pad_collate
from raygen.train.config import TrainConfig
from raygen.train.engine import TorchEngine, linear_schedule, train_steps
from raygen.train.loss import LossModule
from raygen.train.masks import (apply_lora, freeze_all_but_sid_rows, load_trainable_state, prepare_trainable,
                                sid_weights, trainable_state_dict)

V = 96
SID = list(range(80, 96))


def tiny(tie: bool, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg)


def examples(n: int = 12, seed: int = 0, answer_ids=SID) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(4, 12, (1,), generator=g))
        prompt = torch.randint(0, 80, (k,), generator=g).tolist()
        ans = [answer_ids[int(i)] for i in torch.randint(0, len(answer_ids), (3,), generator=g)]
        out.append({"input_ids": prompt + ans, "labels": [-100] * k + ans})
    return out


def run_steps(model, groups, steps: int = 5, lr: float = 1e-2, wd_default: float = 0.1, logits: str = "answer"):
    module = LossModule(model, logits=logits, sid_ids=SID)
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=wd_default)
    engine = TorchEngine(module, opt, linear_schedule(opt, 1, steps), grad_accum=1, grad_clip=1.0)
    ex = examples()
    batches = [pad_collate(ex[i:i + 4], 0, 64) for i in range(0, len(ex), 4)] * steps
    return train_steps(engine, batches, max_steps=steps)


@pytest.mark.parametrize("tie", [True, False])
def test_star_mask_keeps_non_sid_rows_and_backbone_bit_identical(tie):
    model = tiny(tie)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(mode="embeddings", weight_decay=0.1)  # decay > 0 must not leak into frozen rows
    model, groups = prepare_trainable(model, cfg.mode, SID, weight_decay=cfg.weight_decay)
    assert all(g["weight_decay"] == 0.0 for g in groups)
    assert run_steps(model, groups, wd_default=cfg.weight_decay) == 5

    vocab = {id(w) for w in sid_weights(model)}
    assert len(vocab) == (1 if tie else 2)
    non_sid = torch.ones(V, dtype=torch.bool)
    non_sid[SID] = False
    for name, p in model.named_parameters():
        if id(p) in vocab:
            assert torch.equal(p[non_sid], before[name][non_sid]), f"{name}: a non-SID row moved"
            assert not torch.equal(p[SID], before[name][SID]), f"{name}: SID rows did not train"
        else:
            assert torch.equal(p, before[name]), f"{name}: a frozen backbone weight moved"
            assert not p.requires_grad


def test_decoupled_weight_decay_would_leak_without_zero_decay_group():
    """Why STAR's group has weight_decay=0: AdamW's decoupled decay shrinks rows with zero gradient."""
    model = tiny(True)
    weights = freeze_all_but_sid_rows(model, SID)
    before = weights[0].detach().clone()
    run_steps(model, [{"params": weights, "weight_decay": 0.1}], steps=2)
    non_sid = torch.ones(V, dtype=torch.bool)
    non_sid[SID] = False
    assert not torch.equal(weights[0][non_sid], before[non_sid])


def test_mask_zeroes_grads_exactly_and_refuses_double_application():
    model = tiny(False)
    weights = freeze_all_but_sid_rows(model, SID)
    LossModule(model, "all")(**{k: v for k, v in pad_collate(examples(4), 0, 64).items() if k != "num_tokens"})[
        "loss"].backward()
    for w in weights:
        assert w.grad is not None and w.grad[:80].abs().sum() == 0 and w.grad[SID].abs().sum() > 0
    with pytest.raises(RuntimeError, match="already applied"):
        freeze_all_but_sid_rows(model, SID)
    with pytest.raises(ValueError, match="duplicates"):
        freeze_all_but_sid_rows(tiny(True), [80, 80])
    with pytest.raises(ValueError, match=r"\[0, 96\)"):
        freeze_all_but_sid_rows(tiny(True), [5, 200])


@pytest.mark.parametrize("tie", [True, False])
def test_lora_trains_only_adapters_and_sid_rows(tie):
    model = tiny(tie)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    q_before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    peft_model, groups = prepare_trainable(model, "lora", SID, weight_decay=0.1, lora_r=4, lora_alpha=8,
                                           lora_target_modules=["q_proj", "v_proj"])
    snapshot = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "trainable_tokens_delta" in n for n in trainable)
    assert sum("trainable_tokens_delta" in n for n in trainable) == (1 if tie else 2)
    run_steps(peft_model, groups, steps=4)
    for n, p in peft_model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, snapshot[n]), f"trainable {n} did not move"
        else:
            assert torch.equal(p, snapshot[n]), f"frozen {n} moved"
    merged = peft_model.merge_and_unload()
    emb = merged.get_input_embeddings().weight
    assert torch.equal(emb[:80], emb_before[:80]) and not torch.equal(emb[SID], emb_before[SID])
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, q_before)  # LoRA merged in


def test_lora_untied_head_sid_rows_train():
    model = tiny(False)
    head_before = model.lm_head.weight.detach().clone()
    peft_model = apply_lora(model, SID, r=4, alpha=8, dropout=0.0, target_modules=["q_proj"])
    groups = [{"params": [p for p in peft_model.parameters() if p.requires_grad]}]
    run_steps(peft_model, groups, steps=3, logits="sid")
    head = peft_model.merge_and_unload().lm_head.weight
    assert torch.equal(head[:80], head_before[:80]) and not torch.equal(head[SID], head_before[SID])


@pytest.mark.parametrize("mode", ["embeddings", "lora", "full"])
def test_trainable_state_roundtrip(mode):
    trained, groups = prepare_trainable(tiny(True), mode, SID, lora_target_modules=["q_proj"])
    run_steps(trained, groups, steps=2)
    state = trainable_state_dict(trained, mode, SID)
    if mode == "embeddings":
        assert list(state) == ["model.embed_tokens.weight"] and state["model.embed_tokens.weight"].shape == (16, 32)
    fresh, _ = prepare_trainable(tiny(True), mode, SID, lora_target_modules=["q_proj"])
    load_trainable_state(fresh, state, mode, SID)
    for (n, a), (_, b) in zip(trained.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), n
    with pytest.raises(KeyError):
        load_trainable_state(fresh, {"nope": torch.zeros(1)}, mode, SID)
