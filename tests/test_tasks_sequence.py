"""Sequence-format next-item training: chains, windows, supervised pairs, encoding, prompts, packing."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raygen.data.schema import SkipLog, samples_table
from raygen.lm.vocab import sid_text
from raygen.tasks.builders import build_sft_examples, next_item_prompt_ids, seqrec_examples, sids_by_item
from raygen.tasks.config import TasksConfig
from raygen.tasks.encode import encode_examples
from raygen.tasks.sequence import (IGNORE_INDEX, SidIds, encode_sequence, sequence_examples, supervised_pairs,
                                   user_sequences, windows)
from raygen.train.collate import pack_collate
from raygen.train.loss import LossModule

REAL = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon18-industrial").resolve()


def _sids(n=40):
    return {i: sid_text([i % 4, (i // 4) % 4, i // 16]) for i in range(n)}


def _prefix_rows(user, seq, split="train", max_history=20):
    return [{"user_id": user, "history": seq[:i][-max_history:], "target": seq[i], "split": split}
            for i in range(1, len(seq))]


def test_user_sequences_rebuild_chains_from_prefix_samples_even_with_cut_histories():
    rows = _prefix_rows("u1", list(range(12)), max_history=3) + _prefix_rows("u2", [20, 21, 22])
    rows.append({"user_id": "u1", "history": [11], "target": 30, "split": "valid"})  # other split: ignored
    skips = SkipLog()
    seqs = dict(user_sequences(samples_table(rows), "train", skips))
    assert seqs == {"u1": list(range(12)), "u2": [20, 21, 22]}
    assert skips.to_dict()["total"] == 0


def test_user_sequences_count_a_broken_chain_and_keep_its_samples():
    rows = [{"user_id": "u", "history": [1], "target": 2, "split": "train"},
            {"user_id": "u", "history": [7], "target": 8, "split": "train"}]  # does not continue [1, 2]
    skips = SkipLog()
    assert user_sequences(samples_table(rows), "train", skips) == [("u", [1, 2]), ("u", [7, 8])]
    assert skips.to_dict()["total"] == 1


@pytest.mark.parametrize("n,h", [(2, 10), (11, 10), (12, 10), (30, 4), (9, 1)])
def test_windows_supervise_every_target_once_with_enough_context(n, h):
    seen = []
    for s, t0, e in windows(n, h):
        assert s == max(0, t0 - h) and t0 < e <= n
        seen += range(t0, e)
    assert seen == list(range(1, n))


def test_sequence_format_supervises_the_same_pairs_as_the_prompt_format():
    cfg = TasksConfig(max_history=4, seqrec_format="sequence")
    sids = _sids()
    rows = _prefix_rows("a", list(range(15))) + _prefix_rows("b", [30, 31, 32]) + _prefix_rows("c", [5, 6])
    rows += _prefix_rows("a", list(range(15)) + [33], split="valid")[-1:]
    samples = samples_table(rows)
    seq = sequence_examples(samples, sids, cfg)
    pairs = sorted(p for ex in seq for p in supervised_pairs(ex, cfg.max_history))
    prompt = sorted((tuple(sids[h] for h in r["history"][-cfg.max_history:]), sids[r["target"]])
                    for r in rows if r["split"] == "train")
    assert pairs == prompt
    assert len(seqrec_examples(samples, sids, cfg)) == len(pairs)
    assert sids[33] not in {t for _, t in pairs}  # the valid target is never trained


@pytest.mark.skipif(not REAL.exists(), reason=f"shared Industrial data not found at {REAL}")
def test_industrial_sequence_format_equals_prompt_pairs_and_never_trains_eval_targets():
    from raygen.data.config import DataConfig
    from raygen.data.load import load_data

    items, samples, _ = load_data(DataConfig(source="minionerec", path=str(REAL), max_history=10))
    sids = {i: f"<a_{i}>" for i in items.column("item_id").to_pylist()}  # one token per item is enough here
    cfg = TasksConfig(max_history=10)
    seq = sequence_examples(samples, sids, cfg)
    pairs = sorted(p for ex in seq for p in supervised_pairs(ex, cfg.max_history))
    rows = [r for r in samples.to_pylist() if r["split"] == "train"]
    assert pairs == sorted((tuple(sids[h] for h in r["history"][-10:]), sids[r["target"]]) for r in rows)
    # no valid/test event is trained: per user, no (history -> target) of an evaluation row is a training pair
    trained = {(u, tuple(c[max(0, i - 10):i]), c[i]) for u, c in user_sequences(samples) for i in range(1, len(c))}
    evals = [r for r in samples.to_pylist() if r["split"] != "train"]
    assert evals and not any((r["user_id"], tuple(r["history"][-10:]), r["target"]) in trained for r in evals)
    n_tokens = sum(len(ex["sids"]) for ex in seq)
    assert n_tokens < len(rows) * 3  # each user once, not every prefix again


def test_encoding_labels_and_prompt_are_the_start_of_a_training_row(tiny_tokenizer, tiny_catalog):
    cfg = TasksConfig(max_history=3, seqrec_format="sequence")
    codes = tiny_catalog["codes"]
    sids = sids_by_item(codes)
    _add_sid_tokens(tiny_tokenizer, sids)
    ids = SidIds(tiny_tokenizer)
    enc = encode_sequence(ids, cfg.sequence_prefix, [sids[100], sids[101], sids[102]], first_target=1)
    n_prefix = len(ids.prefix(cfg.sequence_prefix))
    assert len(enc["input_ids"]) == n_prefix + 9
    assert enc["labels"][:n_prefix + 3] == [IGNORE_INDEX] * (n_prefix + 3)
    assert enc["labels"][n_prefix + 3:] == enc["input_ids"][n_prefix + 3:]
    (prompt,) = next_item_prompt_ids(tiny_tokenizer, [[100, 101]], sids, cfg)
    assert prompt == enc["input_ids"][:n_prefix + 6]
    assert tiny_tokenizer.decode(prompt[n_prefix:]) == sids[100] + sids[101]
    # history longer than max_history: only the last max_history items are shown
    (long,) = next_item_prompt_ids(tiny_tokenizer, [[103, 100, 101, 102]], sids, cfg)
    assert long == encode_sequence(ids, cfg.sequence_prefix, [sids[100], sids[101], sids[102]])["input_ids"]


def _add_sid_tokens(tokenizer, sids: dict[int, str]) -> None:
    from transformers import AddedToken

    tokens = sorted({t + ">" for s in sids.values() for t in s.split(">") if t})
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in tokens])


def test_build_sft_examples_mixes_alignment_into_sequence_examples(tiny_tokenizer, tiny_catalog):
    cfg = TasksConfig(max_history=3, seqrec_format="sequence", align_ratio=1.0, token_ratio=0.0)
    c = tiny_catalog
    skips = SkipLog()
    examples = build_sft_examples(c["samples"], c["items"], c["codes"], c["tokens"], cfg, "train", skips)
    seq = [e for e in examples if "sids" in e]
    assert len(seq) >= 1 and len(examples) == 2 * len(seq)
    assert {e["task"] for e in examples if "sids" not in e} <= {"title2sid", "desc2sid", "titledesc2sid",
                                                                 "sid2title", "sid2desc", "sid2titledesc"}
    sids = sids_by_item(c["codes"])
    _add_sid_tokens(tiny_tokenizer, sids)
    enc = encode_examples(tiny_tokenizer, examples, 256, skips)
    assert len(enc) == len(examples)


def test_packed_users_give_the_same_loss_as_one_by_one(tiny_tokenizer, tiny_llama, tiny_catalog):
    cfg = TasksConfig(max_history=3, seqrec_format="sequence")
    sids = sids_by_item(tiny_catalog["codes"])
    _add_sid_tokens(tiny_tokenizer, sids)
    rows = (_prefix_rows("a", [100, 101, 102, 103, 104, 105]) + _prefix_rows("b", [106, 107, 108])
            + _prefix_rows("c", [109, 110, 111, 100, 101]))
    enc = encode_examples(tiny_tokenizer, sequence_examples(samples_table(rows), sids, cfg), 128)
    assert len(enc) >= 3
    lm = tiny_llama(vocab_size=len(tiny_tokenizer))
    module = LossModule(lm, logits="answer")
    with torch.no_grad():
        packed = module(**{k: v for k, v in pack_collate(enc, 0, 128).items() if k != "num_tokens"})
        total, n = 0.0, 0
        for e in enc:
            one = module(**{k: v for k, v in pack_collate([e], 0, 128).items() if k != "num_tokens"})
            total += float(one["loss"]) * int(one["n_target"])
            n += int(one["n_target"])
    assert int(packed["n_target"]) == n
    assert float(packed["loss"]) == pytest.approx(total / n, rel=1e-4)
