"""Padding and packing layouts, and that packing gives the same loss as padding (no cross-talk)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from raygen.train.collate import IGNORE_INDEX, make_collate, pack_bins, pack_collate, pad_collate
from raygen.train.loss import LossModule

EX = [
    {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, -100, 4, 5]},
    {"input_ids": [6, 7], "labels": [-100, 7]},
    {"input_ids": [8, 9, 10, 11, 12, 13, 14], "labels": [-100] * 5 + [13, 14]},
    {"input_ids": [15, 16, 17], "labels": [-100, 16, 17]},
]


def test_pad_collate_right_pads_to_longest():
    b = pad_collate(EX, pad_id=0, max_len=16)
    assert b["input_ids"].shape == (4, 7)
    assert b["input_ids"][1].tolist() == [6, 7, 0, 0, 0, 0, 0]
    assert b["labels"][1].tolist() == [-100, 7] + [IGNORE_INDEX] * 5
    assert b["attention_mask"].sum(1).tolist() == [5, 2, 7, 3]
    assert int(b["num_tokens"]) == 17


def test_pack_collate_layout():
    b = pack_collate(EX, pad_id=0, max_len=8)
    # first-fit decreasing: [7], [5, 3], [2]  -> rows of width 8 (the longest packed row)
    assert pack_bins([5, 2, 7, 3], 8) == [[2], [0, 3], [1]]
    assert b["input_ids"].shape == (3, 8) and "attention_mask" not in b
    assert b["input_ids"][1].tolist() == [1, 2, 3, 4, 5, 15, 16, 17]
    assert b["position_ids"][1].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert b["labels"][1].tolist() == [-100, -100, -100, 4, 5, -100, 16, 17]
    assert b["position_ids"][2].tolist() == [0, 1, 0, 1, 2, 3, 4, 5]  # tail pad is its own segment
    assert b["labels"][2, 2:].eq(IGNORE_INDEX).all()
    assert int(b["num_tokens"]) == 17
    # every real token appears exactly once
    real = sorted(t for row, pos, lab in zip(b["input_ids"], b["position_ids"], b["labels"]) for t in row.tolist() if t)
    assert real == sorted(t for e in EX for t in e["input_ids"])


def test_collate_accepts_ray_numpy_columns_and_rejects_bad_rows():
    cols = {"input_ids": np.array([np.array(e["input_ids"]) for e in EX], dtype=object),
            "labels": np.array([np.array(e["labels"]) for e in EX], dtype=object)}
    for pad_to in ("longest", "packing"):
        a, b = make_collate(pad_to, 0, 16)(cols), make_collate(pad_to, 0, 16)(EX)
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="max_len=4"):
        pad_collate(EX, 0, 4)
    with pytest.raises(ValueError, match="equal-length"):
        pack_collate([{"input_ids": [1, 2], "labels": [1]}], 0, 8)
    with pytest.raises(ValueError, match="pad_to"):
        make_collate("bucket", 0, 8)


def test_packed_loss_equals_padded_loss():
    """position_ids restarts make transformers use block-diagonal attention: no cross-example leakage."""
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)).eval()
    for logits in ("all", "answer"):
        module = LossModule(lm, logits=logits)
        pad = {k: v for k, v in pad_collate(EX, 0, 8).items() if k != "num_tokens"}
        pack = {k: v for k, v in pack_collate(EX, 0, 8).items() if k != "num_tokens"}
        with torch.no_grad():
            lp, lk = module(**pad)["loss"], module(**pack)["loss"]
        torch.testing.assert_close(lp, lk, rtol=1e-5, atol=1e-5)
        # a naive concatenation WITHOUT position resets does leak context, and the loss changes
        leak = dict(pack, position_ids=torch.arange(pack["input_ids"].shape[1]).expand_as(pack["input_ids"]))
        with torch.no_grad():
            assert abs(float(module(**leak)["loss"]) - float(lp)) > 1e-4
