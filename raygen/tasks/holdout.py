"""Samples held out of SFT for RL: prompts the SFT model has not been trained on (a tasks-layer rule that
the SFT and RL stages both read).

GRPO on the train split's positions asks the SFT model for targets it was fitted to: on Industrial a beam of
8 hits the target in 43-48 % of those prompts against HR@10 0.12 on test, and 100 GRPO steps there left test
NDCG@10 where SFT had it (benchmarks/results/rl_industrial.md). :func:`hold_out_last_train` withholds the last
train-period target of a seeded share of users from SFT (their rows move to the split ``rl``), so RL can
refine the policy on positions it has to generalise to, as valid and test ask it to. Measured on Industrial
(benchmarks/results/rl_industrial_holdout.md): withholding 30 % of the users' last targets cost SFT ~0.009
test NDCG@10 and GRPO on those prompts still lowered it, so this stays an option, off by default.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

RL_SPLIT = "rl"


def hold_out_last_train(samples: pa.Table, share: float, seed: int = 0, to: str = RL_SPLIT) -> tuple[pa.Table, int]:
    """``samples`` with the last ``train`` row (in file order) of a seeded ``share`` of the users that have
    train rows relabelled to split ``to``: ``(table, rows relabelled)``.

    Only the *last* row of a user moves, so the user's remaining train rows still form one chain
    (:func:`raygen.tasks.sequence.user_sequences`) and the valid and test rows are unchanged (their histories
    still contain the held-out item, as an input, never as a target). A user whose only train row moves is
    no longer trained on at all.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"hold-out share must be in [0, 1], got {share}")
    if to in ("train", "valid", "test"):
        raise ValueError(f"hold-out split must be a new split name, got {to!r}")
    splits = samples.column("split").to_pylist()
    if to in splits:
        raise ValueError(f"samples already have rows of split {to!r}: hold out once")
    users = samples.column("user_id").to_pylist()
    last: dict = {}
    for i, (u, s) in enumerate(zip(users, splits)):
        if s == "train":
            last[u] = i
    order = sorted(last, key=str)  # a stable user order, whatever the user id type
    n = int(round(share * len(order)))
    chosen = np.random.default_rng(seed).choice(len(order), n, replace=False) if n else []
    for k in chosen:
        splits[last[order[int(k)]]] = to
    col = samples.schema.get_field_index("split")
    table = samples.set_column(col, samples.schema.field(col), pa.array(splits, samples.column("split").type))
    return table, n


def sft_samples(samples: pa.Table, tasks_cfg) -> tuple[pa.Table, int]:
    """The samples the SFT stage trains on, with ``tasks.rl_holdout_share`` of the users' last train rows moved
    to split ``rl``: ``(table, rows held out)``."""
    if not tasks_cfg.rl_holdout_share:
        return samples, 0
    return hold_out_last_train(samples, tasks_cfg.rl_holdout_share)


def rl_prompt_rows(samples: pa.Table, tasks_cfg) -> tuple[pa.Table, str]:
    """``(samples, split)`` whose rows are the rl stage's prompts: the held-out ``rl`` rows when
    ``tasks.rl_holdout_share`` > 0 (the same choice :func:`sft_samples` made), else the train split."""
    if not tasks_cfg.rl_holdout_share:
        return samples, "train"
    return hold_out_last_train(samples, tasks_cfg.rl_holdout_share)[0], RL_SPLIT
