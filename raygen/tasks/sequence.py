"""Sequence-level next-item training: one example per user window, a loss on every item after the first.

The *prompt* format (``tasks.seqrec_format: prompt``) makes one chat example per (history, target)
sample: the chat template and the whole history are re-encoded to supervise the 3-4 answer
tokens of a single target. The *sequence* format encodes each training user's items once:

    <prefix ids> <SID ids of item 0> <SID ids of item 1> ... <SID ids of item n-1>

with labels on the SID tokens of every item from ``first_target`` on (as SASRec, HSTU and GRID's
all-positions option train): the same next-item supervision in far fewer tokens. Evaluation, RL and
``raygen recommend`` build the prompt of a history with :func:`next_item_prompt_ids`, which for this
format is exactly the first part of a training row (``prefix + history SIDs``), so the model is
asked in the form it was trained on.

Windows: a user's train sequence ``seq`` is cut into target blocks of ``max_history + 1`` items;
the block ``seq[t0:t1]`` is trained in the row ``seq[max(0, t0 - max_history):t1]``, so every target
``seq[i]`` (i >= 1) is supervised exactly once and sees at least ``min(i, max_history)`` items of
context, at least as much as the prompt format shows (:func:`supervised_pairs` lists them, for
tests). A user's sequence is rebuilt from the split's samples (the data stage emits every prefix
``seq[:i] -> seq[i]``, histories cut to ``data.max_history``); a sample that does not continue the
chain starts a new sequence and is counted.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import pyarrow as pa

from raygen.data.schema import SkipLog

IGNORE_INDEX = -100
TASK = "seqrec"


def user_sequences(samples: pa.Table, split: str = "train", skips: SkipLog | None = None
                   ) -> list[tuple[str, list[int]]]:
    """``(user_id, items)`` chains rebuilt from the samples of ``split`` (rows in file order).

    Each user's next sample must continue the current chain: its history is a suffix of the chain
    and its target is appended. A sample that does not (out of order, gap) starts a new chain for
    that user, counted in ``skips`` as ``sequence: new chain``; nothing is dropped.
    """
    chains: dict[str, list[list[int]]] = {}
    cols = samples.select(["user_id", "history", "target", "split"]).to_pydict()
    for i, (user, hist, target, sp) in enumerate(zip(cols["user_id"], cols["history"], cols["target"],
                                                     cols["split"])):
        if sp != split:
            continue
        hist = list(hist or [])
        user_chains = chains.setdefault(user, [])
        cur = user_chains[-1] if user_chains else None
        if cur is not None and hist and len(hist) <= len(cur) and cur[len(cur) - len(hist):] == hist:
            cur.append(int(target))
            continue
        if cur is not None and skips is not None:
            skips.add("sequence: new chain (sample does not continue the user's sequence)",
                      f"samples row {i} (user {user})")
        user_chains.append([*map(int, hist), int(target)])
    return [(u, c) for u, cs in chains.items() for c in cs]


def windows(n_items: int, max_history: int) -> list[tuple[int, int, int]]:
    """``(start, first_target, end)`` rows covering targets ``1..n_items-1`` of a sequence once each."""
    block = max_history + 1
    return [(max(0, t0 - max_history), t0, min(n_items, t0 + block)) for t0 in range(1, n_items, block)]


def sequence_examples(samples: pa.Table, sids: dict[int, str], cfg, split: str = "train",
                      skips: SkipLog | None = None) -> list[dict]:
    """Sequence-format examples ``{"task", "prefix", "sids", "first_target"}`` of ``split``.

    Items without a SID cut the sequence there (counted); a piece of one item supervises nothing.
    """
    out = []
    for user, seq in user_sequences(samples, split, skips):
        pieces, cur = [], []
        for item in seq:
            if item in sids:
                cur.append(item)
                continue
            if skips is not None:
                skips.add("sequence: item without SID (sequence cut)", f"user {user}: item {item}")
            pieces.append(cur)
            cur = []
        pieces.append(cur)
        for piece in pieces:
            for s, t0, e in windows(len(piece), cfg.max_history):
                out.append({"task": TASK, "prefix": cfg.sequence_prefix, "sids": [sids[i] for i in piece[s:e]],
                            "first_target": t0 - s})
    return out


def supervised_pairs(example: dict, max_history: int) -> list[tuple[tuple[str, ...], str]]:
    """The (last ``max_history`` context SIDs, target SID) pairs one sequence example trains."""
    s, t0 = example["sids"], example["first_target"]
    return [(tuple(s[max(0, i - max_history):i]), s[i]) for i in range(t0, len(s))]


class SidIds:
    """SID text -> token ids, cached (SID tokens are added tokens: each SID text is its own tokens)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[str, list[int]] = {}

    def __call__(self, sid: str) -> list[int]:
        ids = self.cache.get(sid)
        if ids is None:
            ids = self.cache[sid] = list(self.tokenizer(sid, add_special_tokens=False)["input_ids"])
        return ids

    def prefix(self, text: str) -> list[int]:
        key = "\0prefix\0" + text
        if key not in self.cache:
            self.cache[key] = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
        return self.cache[key]


def encode_sequence(ids: SidIds, prefix: str, sids: Sequence[str], first_target: int | None = None) -> dict:
    """``{"input_ids", "labels"}`` of ``prefix + sids``; labels on the SID tokens of items ``>= first_target``.

    ``first_target=None`` gives the prompt only (``input_ids``): what generation starts from.
    """
    input_ids = list(ids.prefix(prefix))
    labels = [IGNORE_INDEX] * len(input_ids)
    for k, sid in enumerate(sids):
        tok = ids(sid)
        input_ids += tok
        labels += tok if first_target is not None and k >= first_target else [IGNORE_INDEX] * len(tok)
    if first_target is None:
        return {"input_ids": input_ids}
    if first_target < 1 or first_target >= len(sids):
        raise ValueError(f"first_target must be in [1, {len(sids) - 1}], got {first_target}")
    return {"input_ids": input_ids, "labels": labels}


def encode_sequence_examples(tokenizer, examples: Iterable[dict], max_len: int,
                             skips: SkipLog | None = None, ids: SidIds | None = None) -> list[dict]:
    """Encode sequence examples; rows longer than ``max_len`` are cut from the left by whole items
    (keeping >= 1 context item) and counted. ``ids``: a shared :class:`SidIds` cache."""
    ids = ids or SidIds(tokenizer)
    out = []
    for i, ex in enumerate(examples):
        sids, first = list(ex["sids"]), ex["first_target"]
        enc = encode_sequence(ids, ex["prefix"], sids, first)
        while len(enc["input_ids"]) > max_len and first > 1:
            sids, first = sids[1:], first - 1
            enc = encode_sequence(ids, ex["prefix"], sids, first)
        if len(enc["input_ids"]) > max_len:
            if skips is None:
                raise ValueError(f"sequence example {i} needs {len(enc['input_ids'])} tokens > max_len={max_len}")
            skips.add("seqrec: sequence longer than max_len", f"example {i}")
            continue
        if len(sids) < len(ex["sids"]) and skips is not None:
            skips.add("seqrec: sequence context left-truncated to fit max_len", f"example {i}")
        out.append({"task": ex["task"], **enc})
    return out
