"""SID tokens become single ids; tied and untied heads are resized correctly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raygen.lm.vocab import add_sid_tokens, parse_sid, sid_matrix, sid_text, sid_token, sid_token_ids

TOKENS = [sid_token(level, code) for level in range(3) for code in range(4)]


def test_token_naming_and_parsing():
    assert sid_token(0, 12) == "<a_12>" and sid_token(3, 0) == "<d_0>"
    assert sid_text([12, 80, 7]) == "<a_12><b_80><c_7>"
    assert parse_sid(" <a_12><b_80><c_7>\n") == [12, 80, 7]
    assert parse_sid("<a_1><c_2>") is None  # skipped level
    assert parse_sid("<a_1>x<b_2>") is None and parse_sid("") is None and parse_sid("<b_1>") is None


def test_sid_tokens_are_single_ids(tiny_tokenizer, tiny_llama):
    model = tiny_llama()
    with pytest.raises(ValueError, match="not single tokens"):
        sid_token_ids(tiny_tokenizer, TOKENS)
    before = len(tiny_tokenizer)
    ids = add_sid_tokens(model, tiny_tokenizer, TOKENS)
    assert ids.tolist() == list(range(before, before + len(TOKENS)))
    text = "the user bought <a_1><b_2><c_3>, then <a_0><b_0><c_0>"
    enc = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    for tok in ("<a_1>", "<b_2>", "<c_3>", "<a_0>", "<b_0>", "<c_0>"):
        assert tiny_tokenizer.convert_tokens_to_ids(tok) in enc
    assert tiny_tokenizer.decode(enc, skip_special_tokens=True) == text  # kept when skipping specials
    # idempotent: same ids, nothing added twice
    again = add_sid_tokens(model, tiny_tokenizer, TOKENS)
    assert torch.equal(again, ids) and len(tiny_tokenizer) == before + len(TOKENS)


def test_tied_head_resized_as_one_matrix(tiny_tokenizer, tiny_llama):
    model = tiny_llama(tie_word_embeddings=True)
    old = model.get_input_embeddings().weight.detach().clone()
    ids = add_sid_tokens(model, tiny_tokenizer, TOKENS)
    inp, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert inp.shape == (len(tiny_tokenizer), 64) and out.shape == inp.shape
    assert inp.data_ptr() == out.data_ptr()
    assert torch.equal(inp[: old.shape[0]], old)  # pretrained rows untouched
    torch.testing.assert_close(inp[ids], old.mean(0).expand(len(ids), -1))
    assert model.config.vocab_size == len(tiny_tokenizer)
    logits = model(torch.tensor([[5, int(ids[0])]])).logits
    assert logits.shape[-1] == len(tiny_tokenizer)


def test_untied_head_both_resized(tiny_tokenizer, tiny_llama):
    model = tiny_llama(tie_word_embeddings=False)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    assert not torch.equal(old_in, old_out)
    ids = add_sid_tokens(model, tiny_tokenizer, TOKENS)
    inp, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert inp.data_ptr() != out.data_ptr()
    assert inp.shape[0] == out.shape[0] == len(tiny_tokenizer)
    assert torch.equal(out[: old_out.shape[0]], old_out)
    torch.testing.assert_close(inp[ids], old_in.mean(0).expand(len(ids), -1))
    torch.testing.assert_close(out[ids], old_out.mean(0).expand(len(ids), -1))


def test_vocab_padding_rows_are_reused_not_shrunk(tiny_tokenizer, tiny_llama):
    padded = len(tiny_tokenizer) + 64  # models often pad the vocab beyond the tokenizer
    model = tiny_llama(vocab_size=padded)
    ids = add_sid_tokens(model, tiny_tokenizer, TOKENS)
    assert model.get_input_embeddings().weight.shape[0] == padded
    assert int(ids.max()) < padded


def test_sid_matrix(tiny_tokenizer, tiny_llama):
    add_sid_tokens(tiny_llama(), tiny_tokenizer, TOKENS)
    codes = np.array([[1, 2, 3], [0, 0, 0], [3, 2, 1]])
    mat = sid_matrix(tiny_tokenizer, codes)
    assert mat.shape == (3, 3) and mat.dtype == torch.long
    assert tiny_tokenizer.convert_ids_to_tokens(mat[0].tolist()) == ["<a_1>", "<b_2>", "<c_3>"]
    assert tiny_tokenizer.decode(mat[2].tolist()) == "<a_3><b_2><c_1>"
    with pytest.raises(ValueError, match="single tokens"):
        sid_matrix(tiny_tokenizer, np.array([[9, 0, 0]]))  # <a_9> was never added


def test_one_padding_rule_for_tokenizers_and_model_configs(tiny_tokenizer):
    from transformers import LlamaConfig

    from raygen.lm.vocab import config_pad_id, pad_id_of

    assert pad_id_of(tiny_tokenizer) == tiny_tokenizer.pad_token_id == 3
    tiny_tokenizer.pad_token = None
    assert pad_id_of(tiny_tokenizer) == tiny_tokenizer.eos_token_id == 2
    assert config_pad_id(LlamaConfig(pad_token_id=None, eos_token_id=[7, 8], bos_token_id=1)) == 7
    assert config_pad_id({"pad_token_id": None, "eos_token_id": None, "bos_token_id": 1}) == 1
    assert config_pad_id({}) == 0
