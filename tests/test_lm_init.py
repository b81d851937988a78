"""random / mean / sa_init set the SID rows to the expected vectors, for tied and untied heads."""
from __future__ import annotations

import pytest
import torch

from raygen.lm.init import init_sid_rows
from raygen.lm.vocab import add_sid_tokens

ROWS = [
    {"level": 0, "code": 0, "token": "<a_0>", "keywords": ["waterproof boots", "jacket"]},
    {"level": 0, "code": 1, "token": "<a_1>", "keywords": ["qzxv"]},  # unseen word: byte pieces
    {"level": 0, "code": 2, "token": "<a_2>", "keywords": ["", "   "]},  # no usable keyword
    {"level": 1, "code": 0, "token": "<b_0>", "keywords": ["coffee"]},
    {"level": 1, "code": 1, "token": "<b_1>", "keywords": []},
]
TOKENS = [r["token"] for r in ROWS]


def setup(tiny_llama, tok, tied=True):
    model = tiny_llama(tie_word_embeddings=tied)
    pre_in = model.get_input_embeddings().weight.detach().clone()
    pre_out = model.get_output_embeddings().weight.detach().clone()
    ids = add_sid_tokens(model, tok, TOKENS)
    return model, ids, pre_in, pre_out


def hand_keyword_mean(tok, matrix, keywords):
    """Independent computation: tokenize ' keyword' into pieces, drop pure-space pieces, average."""
    per_kw = []
    for kw in keywords:
        pieces = [p for p in tok.tokenize(" " + kw) if p.replace("Ġ", "")]
        if pieces:
            per_kw.append(torch.stack([matrix[tok.convert_tokens_to_ids(p)] for p in pieces]).mean(0))
    return torch.stack(per_kw).mean(0)


def test_random_is_seeded_normal(tiny_llama, tiny_tokenizer):
    model, ids, pre_in, _ = setup(tiny_llama, tiny_tokenizer)
    rep = init_sid_rows(model, tiny_tokenizer, ids, ROWS, strategy="random", seed=7, std=0.5)
    w = model.get_input_embeddings().weight.detach()
    expected = torch.randn(len(ids), w.shape[1], generator=torch.Generator().manual_seed(7)) * 0.5
    torch.testing.assert_close(w[ids], expected)
    assert torch.equal(w[: pre_in.shape[0]], pre_in)
    assert rep["random"] == len(ids) and rep["tied_head"] is True


def test_mean_excludes_sid_rows(tiny_llama, tiny_tokenizer):
    model, ids, pre_in, _ = setup(tiny_llama, tiny_tokenizer)
    with torch.no_grad():
        model.get_input_embeddings().weight[ids] = 100.0  # must not leak into the mean
    rep = init_sid_rows(model, tiny_tokenizer, ids, ROWS, strategy="mean")
    w = model.get_input_embeddings().weight.detach()
    torch.testing.assert_close(w[ids], pre_in.mean(0).expand(len(ids), -1))
    assert rep["mean"] == len(ids)


def test_sa_init_matches_hand_computed_keyword_means(tiny_llama, tiny_tokenizer):
    model, ids, pre_in, _ = setup(tiny_llama, tiny_tokenizer)
    assert len(tiny_tokenizer.tokenize(" qzxv")) >= 2  # a multi-piece keyword is really exercised
    rep = init_sid_rows(model, tiny_tokenizer, ids, ROWS, strategy="sa_init", sa_init_depth=2)
    w = model.get_input_embeddings().weight.detach()
    mean = pre_in.mean(0)
    torch.testing.assert_close(w[ids[0]], hand_keyword_mean(tiny_tokenizer, pre_in, ["waterproof boots", "jacket"]))
    torch.testing.assert_close(w[ids[1]], hand_keyword_mean(tiny_tokenizer, pre_in, ["qzxv"]))
    torch.testing.assert_close(w[ids[2]], mean)  # no usable keyword -> mean
    torch.testing.assert_close(w[ids[3]], hand_keyword_mean(tiny_tokenizer, pre_in, ["coffee"]))
    torch.testing.assert_close(w[ids[4]], mean)
    assert rep["sa_init"] == 3 and rep["mean_no_keywords"] == 2 and rep["mean"] == 2
    assert rep["keywords_unusable"] == 2 and rep["keywords_total"] == 6


def test_sa_init_depth_honoured(tiny_llama, tiny_tokenizer):
    model, ids, pre_in, _ = setup(tiny_llama, tiny_tokenizer)
    rep = init_sid_rows(model, tiny_tokenizer, ids, ROWS, strategy="sa_init", sa_init_depth=1)
    w = model.get_input_embeddings().weight.detach()
    torch.testing.assert_close(w[ids[3]], pre_in.mean(0))  # level 1 >= depth -> mean
    assert not torch.allclose(w[ids[0]], pre_in.mean(0))
    assert rep["sa_init"] == 2 and rep["mean_below_depth"] == 2 and rep["mean"] == 3


def test_untied_head_initialised_the_same_way(tiny_llama, tiny_tokenizer):
    model, ids, pre_in, pre_out = setup(tiny_llama, tiny_tokenizer, tied=False)
    rep = init_sid_rows(model, tiny_tokenizer, ids, ROWS, strategy="sa_init", sa_init_depth=2)
    inp = model.get_input_embeddings().weight.detach()
    out = model.get_output_embeddings().weight.detach()
    torch.testing.assert_close(inp[ids[3]], hand_keyword_mean(tiny_tokenizer, pre_in, ["coffee"]))
    torch.testing.assert_close(out[ids[3]], hand_keyword_mean(tiny_tokenizer, pre_out, ["coffee"]))
    torch.testing.assert_close(out[ids[4]], pre_out.mean(0))
    assert rep["tied_head"] is False
    init_sid_rows(model, tiny_tokenizer, ids, ROWS, strategy="random", seed=1)
    assert not torch.allclose(model.get_input_embeddings().weight[ids], model.get_output_embeddings().weight[ids])


def test_unknown_token_row_is_an_error(tiny_llama, tiny_tokenizer):
    model, ids, _, _ = setup(tiny_llama, tiny_tokenizer)
    with pytest.raises(ValueError, match="<c_9>"):
        init_sid_rows(model, tiny_tokenizer, ids, ROWS + [{"level": 2, "code": 9, "token": "<c_9>", "keywords": []}])
    with pytest.raises(ValueError, match="unknown init strategy"):
        init_sid_rows(model, tiny_tokenizer, ids, ROWS, strategy="zeros")


def _row_norms(w, ids):
    return w[torch.as_tensor(ids)].float().norm(dim=1)


@pytest.mark.parametrize("tied", [True, False])
def test_sa_init_rescale_sets_vocab_mean_norm(tiny_llama, tiny_tokenizer, tied):
    model, ids, pre_in, pre_out = setup(tiny_llama, tiny_tokenizer, tied=tied)
    rep = init_sid_rows(model, tiny_tokenizer, ids, ROWS, strategy="sa_init", sa_init_depth=2, sa_init_rescale=True)
    inp = model.get_input_embeddings().weight.detach()
    vocab_norm = pre_in.norm(dim=1).mean()
    keyword_rows = ids[[0, 1, 3]]
    torch.testing.assert_close(_row_norms(inp, keyword_rows), vocab_norm.expand(3), rtol=1e-5, atol=1e-5)
    # direction kept: same unit vector as the plain keyword mean
    plain = hand_keyword_mean(tiny_tokenizer, pre_in, ["waterproof boots", "jacket"])
    torch.testing.assert_close(inp[ids[0]] / inp[ids[0]].norm(), plain / plain.norm())
    torch.testing.assert_close(inp[ids[2]], pre_in.mean(0))  # 'mean' fallback rows are not rescaled
    assert rep["sa_init_rescaled"] is True
    assert rep["vocab_mean_norm"] == pytest.approx(float(vocab_norm), rel=1e-5)
    assert rep["sid_mean_norm"] == pytest.approx(float(_row_norms(inp, ids).mean()), rel=1e-5)
    assert rep["sa_init_raw_mean_norm"] < rep["vocab_mean_norm"]  # the shortening rescaling undoes
    if not tied:
        out = model.get_output_embeddings().weight.detach()
        head_norm = pre_out.norm(dim=1).mean()
        torch.testing.assert_close(_row_norms(out, keyword_rows), head_norm.expand(3), rtol=1e-5, atol=1e-5)
        assert rep["head_vocab_mean_norm"] == pytest.approx(float(head_norm), rel=1e-5)
    else:
        assert "head_vocab_mean_norm" not in rep


def test_sa_init_without_rescale_keeps_plain_means_and_reports_norms(tiny_llama, tiny_tokenizer):
    model, ids, pre_in, _ = setup(tiny_llama, tiny_tokenizer)
    rep = init_sid_rows(model, tiny_tokenizer, ids, ROWS, strategy="sa_init", sa_init_depth=2)
    inp = model.get_input_embeddings().weight.detach()
    plain = [hand_keyword_mean(tiny_tokenizer, pre_in, k)
             for k in (["waterproof boots", "jacket"], ["qzxv"], ["coffee"])]
    for tid, p in zip(ids[[0, 1, 3]], plain):
        torch.testing.assert_close(inp[tid], p)
    assert rep["sa_init_rescaled"] is False
    assert rep["sa_init_raw_mean_norm"] == pytest.approx(float(torch.stack(plain).norm(dim=1).mean()), rel=1e-5)
    assert rep["sid_mean_norm"] == pytest.approx(float(_row_norms(inp, ids).mean()), rel=1e-5)
    assert rep["vocab_mean_norm"] == pytest.approx(float(pre_in.norm(dim=1).mean()), rel=1e-5)


def test_sa_init_rescale_config_field():
    from raygen.configbase import ConfigError, from_dict
    from raygen.lm.config import LmConfig

    assert LmConfig().sa_init_rescale is False
    assert from_dict(LmConfig, {"sa_init_rescale": True}).sa_init_rescale is True
    with pytest.raises(ConfigError, match="lm.sa_init_rescale"):
        from_dict(LmConfig, {"sa_init_rescale": "yes please"}, prefix="lm")
