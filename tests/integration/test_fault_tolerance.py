"""Fault tolerance, end to end on a local Ray.

(a) A Ray Train worker dies in the middle of SFT (``RAYGEN_FAULT_AT_STEP``: rank 0 calls ``os._exit``
    once); Ray Train restarts the worker group from the last checkpoint and the run finishes with the
    same weights as an uninterrupted run.
(b) The driver of ``python -m raygen run`` is SIGKILLed while a stage runs; the rerun skips the
    finished stages, reruns the interrupted one and finishes; no half-written stage folder is left.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _tiny_base(tmp_path: Path, tok) -> tuple[Path, list[int], list[dict]]:
    """A tiny Llama with SID tokens, saved with its tokenizer, and next-SID examples."""
    from transformers import LlamaConfig, LlamaForCausalLM

    sid_tokens = [f"<{level}_{c}>" for level in "abc" for c in range(4)]
    tok.add_tokens(sid_tokens)
    sid_ids = tok.convert_tokens_to_ids(sid_tokens)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         tie_word_embeddings=True))
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    g = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(32):
        hist = "".join(sid_tokens[int(i)] for i in torch.randint(0, 12, (3,), generator=g))
        prompt = tok(f"history {hist} next", add_special_tokens=False)["input_ids"]
        answer = sid_ids[int(torch.randint(0, 4, (1,), generator=g))::4][:3]
        examples.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return base, sid_ids, examples


def test_worker_killed_mid_sft_resumes_from_last_checkpoint(ray_local, tmp_path, tiny_tokenizer, monkeypatch):
    from safetensors.torch import load_file

    from raygen.train import TrainConfig, train
    from raygen.train.ray_trainer import FAULT_AT_STEP, FAULT_MARKER

    base, sid_ids, examples = _tiny_base(tmp_path, tiny_tokenizer)
    # log_every=1: a worker's report of step N is queued only after the controller took its report
    # of step N-1, so once both ranks passed step 5's report the step-3 checkpoint is registered.
    cfg = TrainConfig(mode="full", num_workers=2, deepspeed=False, batch_size=2, max_steps=8, lr=1e-3,
                      checkpoint_every=3, keep_checkpoints=5, log_every=1, max_failures=1, max_len=64)

    monkeypatch.setenv(FAULT_AT_STEP, "5")
    monkeypatch.setenv(FAULT_MARKER, str(tmp_path / "fault.marker"))
    faulty = train(base, examples, sid_ids, cfg, tmp_path / "out_fault", tmp_path / "ray", resume=False,
                   name="faulty")
    assert (tmp_path / "fault.marker").exists()  # rank 0 did die after step 5
    # the last attempt started from the step-3 checkpoint, not from 0, and ran to the end
    assert (faulty["start_step"], faulty["final_step"], faulty["metrics"]["step"]) == (3, 8, 8)
    ckpts = sorted(p.name for p in (tmp_path / "ray" / "faulty").glob("step_*"))
    assert ckpts == ["step_0000003", "step_0000006", "step_0000008"]

    # the resumed run ends exactly where an uninterrupted one does (optimizer, LR schedule and data
    # position restored): same final weights
    monkeypatch.delenv(FAULT_AT_STEP)
    clean = train(base, examples, sid_ids, cfg, tmp_path / "out_clean", tmp_path / "ray", resume=False,
                  name="clean")
    assert (clean["start_step"], clean["final_step"]) == (0, 8)
    a = load_file(tmp_path / "out_fault" / "model" / "model.safetensors")
    b = load_file(tmp_path / "out_clean" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert faulty["loss"] == pytest.approx(clean["loss"], rel=1e-4)


def test_fault_injection_needs_a_marker(monkeypatch):
    from raygen.train.ray_trainer import FAULT_AT_STEP, FAULT_MARKER, fault_env

    monkeypatch.delenv(FAULT_MARKER, raising=False)
    monkeypatch.setenv(FAULT_AT_STEP, "3")
    with pytest.raises(ValueError, match=FAULT_MARKER):
        fault_env()
