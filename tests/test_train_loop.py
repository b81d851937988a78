"""Loss paths (all / answer-only / SID-only head), the step loop, schedule, config and export."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from raygen.configbase import ConfigError, Resources, from_dict
from raygen.train.collate import pad_collate
from raygen.train.config import TrainConfig
from raygen.train.deepspeed_cfg import deepspeed_config, worker_env
from raygen.train.engine import TorchEngine, adamw, linear_schedule, steps_per_epoch, train_steps
from raygen.train.export import export_model
from raygen.train.loss import LossModule
from raygen.train.masks import prepare_trainable, trainable_state_dict

V = 96
SID = list(range(80, 96))


def tiny(seed: int = 0, tie: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie))


def batch(n: int = 6, seed: int = 0, answers=SID) -> dict:
    g = torch.Generator().manual_seed(seed)
    ex = []
    for _ in range(n):
        k = int(torch.randint(3, 10, (1,), generator=g))
        prompt = torch.randint(0, 80, (k,), generator=g).tolist()
        ans = [answers[int(i)] for i in torch.randint(0, len(answers), (3,), generator=g)]
        ex.append({"input_ids": prompt + ans, "labels": [-100] * k + ans})
    return {k: v for k, v in pad_collate(ex, 0, 64).items() if k != "num_tokens"}


def test_answer_only_logits_equal_hf_loss_and_grads():
    lm = tiny()
    b = batch()
    hf = LossModule(lm, "all")(**b)
    hf["loss"].backward()
    g_hf = lm.model.layers[0].mlp.up_proj.weight.grad.clone()
    lm.zero_grad()
    ours = LossModule(lm, "answer")(**b)
    ours["loss"].backward()
    torch.testing.assert_close(ours["loss"], hf["loss"])
    torch.testing.assert_close(lm.model.layers[0].mlp.up_proj.weight.grad, g_hf, rtol=1e-4, atol=1e-6)
    assert int(ours["n_target"]) == int(hf["n_target"]) == 18


def test_sid_head_loss_equals_full_head_with_non_sid_logits_masked():
    """The documented relation: SID(+EOS)-only softmax == full softmax with every other logit at -inf."""
    lm = tiny()
    eos = 3
    b = batch(answers=SID + [eos])
    sid_loss = LossModule(lm, "sid", sid_ids=SID, extra_ids=[eos])(**b)["loss"]
    with torch.no_grad():
        y = b["labels"][:, 1:]
        full_logits = lm(input_ids=b["input_ids"]).logits[:, :-1][y != -100]
        masked = full_logits.clone()
        keep = torch.zeros(V, dtype=torch.bool)
        keep[SID + [eos]] = True
        masked[:, ~keep] = float("-inf")
        ref = F.cross_entropy(masked, y[y != -100])
        full = F.cross_entropy(full_logits, y[y != -100])
    assert (y == eos).any()
    torch.testing.assert_close(sid_loss.detach(), ref, rtol=1e-5, atol=1e-5)
    assert float(sid_loss.detach()) < float(full)  # a smaller softmax support can only raise target probabilities


@pytest.mark.parametrize("logits", ["answer", "sid"])
def test_both_heads_decrease_the_loss(logits):
    lm = tiny()
    model, groups = prepare_trainable(lm, "full", SID)
    module = LossModule(model, logits=logits, sid_ids=SID)
    opt = torch.optim.AdamW(groups, lr=3e-3)
    engine = TorchEngine(module, opt, grad_accum=1)
    b = batch()
    losses = []
    train_steps(engine, [dict(b, num_tokens=torch.tensor(1))] * 8, max_steps=8,
                on_step=lambda r: losses.append(r.loss))
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]


def test_sid_head_rejects_non_sid_targets():
    lm = tiny()
    with pytest.raises(ValueError, match=r"\[5\] are neither SID tokens nor EOS"):
        LossModule(lm, "sid", sid_ids=SID, extra_ids=[3])(**batch(answers=[5, 81, 82]))


def test_train_steps_counts_accumulation_and_tokens():
    lm = tiny()
    model, groups = prepare_trainable(lm, "embeddings", SID)
    opt = torch.optim.AdamW(groups, lr=1e-3)
    engine = TorchEngine(LossModule(model), opt, linear_schedule(opt, 2, 6), grad_accum=2)
    b = dict(batch(), num_tokens=torch.tensor(40))
    seen = []
    step = train_steps(engine, [b] * 20, max_steps=3, on_step=seen.append)
    assert step == 3 and engine.global_steps == 3 and engine.micro_steps == 6
    assert [r.step for r in seen] == [1, 2, 3] and all(r.tokens == 80 and r.targets == 36 for r in seen)
    # resume-style start: nothing to do when already at max_steps; stop early via on_step
    assert train_steps(engine, [b] * 4, max_steps=3, start_step=3) == 3
    assert train_steps(engine, [b] * 20, max_steps=0, start_step=3, on_step=lambda r: r.step >= 4) == 4


def test_linear_schedule_and_steps_per_epoch():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25])
    assert steps_per_epoch(100, 2, 8, 1) == 7 and steps_per_epoch(100, 1, 8, 2) == 6


def test_config_validation_and_deepspeed_dict():
    cfg = from_dict(TrainConfig, {"mode": "lora", "zero_stage": 2, "bf16": True, "bf16_impl": "deepspeed"})
    ds = deepspeed_config(cfg, bf16_ok=True)
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"] is True
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["train_micro_batch_size_per_gpu"] == cfg.batch_size and ds["gradient_clipping"] == cfg.grad_clip
    assert deepspeed_config(cfg, bf16_ok=False)["bf16"]["enabled"] is False
    assert deepspeed_config(TrainConfig(bf16=True), bf16_ok=True)["bf16"]["enabled"] is False  # autocast instead
    assert worker_env(TrainConfig())["DS_ACCELERATOR"] == "cpu" and "DS_ACCELERATOR" not in worker_env(
        TrainConfig(resources=Resources(gpus=1)))
    assert worker_env(TrainConfig(resources=Resources(cpus=3)))["OMP_NUM_THREADS"] == "3"
    with pytest.raises(ConfigError, match="mode"):
        from_dict(TrainConfig, {"mode": "adapters"})
    with pytest.raises(ConfigError, match="zero_stage"):
        from_dict(TrainConfig, {"zero_stage": 4})
    with pytest.raises(ConfigError, match="resources.count must be >= 1"):
        from_dict(TrainConfig, {"resources": {"count": 0}})
    with pytest.raises(ConfigError, match="resources.cpus must be a whole number"):
        from_dict(TrainConfig, {"resources": {"cpus": 0.5}})
    with pytest.raises(ConfigError, match="sid_only_head"):
        from_dict(TrainConfig, {"sid_only_head": True, "zero_stage": 3})


@pytest.mark.parametrize("mode", ["embeddings", "lora"])
def test_export_model_loads_with_transformers(tmp_path, mode):
    base = tiny(tie=False)
    base.save_pretrained(tmp_path / "base")
    lora = {"lora_r": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj"]}
    model, groups = prepare_trainable(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), mode, SID, **lora)
    opt = torch.optim.AdamW(groups, lr=1e-2)
    train_steps(TorchEngine(LossModule(model), opt), [batch()] * 3, max_steps=3)
    out = export_model(trainable_state_dict(model, mode, SID), tmp_path / "base", tmp_path / "out", mode, SID, lora)
    loaded = AutoModelForCausalLM.from_pretrained(out)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        a, b = loaded.get_parameter(name), base.get_parameter(name)
        assert torch.equal(a[:80], b[:80]) and not torch.equal(a[SID], b[SID])
    with torch.no_grad():
        expect = (model.merge_and_unload() if mode == "lora" else model)(input_ids=batch()["input_ids"]).logits
        torch.testing.assert_close(loaded(input_ids=batch()["input_ids"]).logits, expect, rtol=1e-4, atol=1e-5)


def test_adamw_is_fused_on_cpu_and_updates_as_the_default_loop(tiny_llama):
    """The fused AdamW raygen trains with makes the same updates as torch's default per-tensor loop
    (decay and no-decay groups, with a masked row as STAR's gradient mask leaves it)."""
    from raygen.train.masks import prepare_trainable

    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        model, groups = prepare_trainable(tiny_llama(vocab_size=64, seed=3), "full", [60, 61, 62], weight_decay=0.1)
        opt = adamw(groups, 1e-2, 0.1) if fused else torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.1)
        assert bool(opt.defaults.get("fused")) is fused
        for step in range(3):
            ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(step))
            model(input_ids=ids, labels=ids).loss.backward()
            model.get_input_embeddings().weight.grad[5] = 0.0  # a row without gradient
            opt.step()
            opt.zero_grad()
        results.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], atol=1e-6, rtol=1e-5)
