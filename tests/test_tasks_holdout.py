"""RL prompts held out of SFT: the last train row of a seeded share of users moves to split 'rl'."""
from __future__ import annotations

import pytest

from raygen.data.schema import samples_table
from raygen.tasks.holdout import RL_SPLIT, hold_out_last_train, rl_prompt_rows, sft_samples
from raygen.tasks.sequence import user_sequences


def _rows():
    rows = []
    for u in range(10):
        seq = [100 * u + k for k in range(2 + u % 3)]  # 2-4 items: 1-3 train targets
        rows += [{"user_id": f"u{u}", "history": seq[:i], "target": seq[i], "split": "train"}
                 for i in range(1, len(seq))]
        rows.append({"user_id": f"u{u}", "history": seq, "target": 100 * u + 50, "split": "valid"})
        rows.append({"user_id": f"u{u}", "history": seq + [100 * u + 50], "target": 100 * u + 60, "split": "test"})
    return samples_table(rows)


def test_last_train_row_of_a_share_of_users_moves_and_nothing_else_changes():
    table = _rows()
    held, n = hold_out_last_train(table, 0.5, seed=3)
    assert n == 5
    before, after = table.to_pylist(), held.to_pylist()
    moved = [i for i, (a, b) in enumerate(zip(before, after)) if a["split"] != b["split"]]
    assert len(moved) == 5 and all(after[i]["split"] == RL_SPLIT for i in moved)
    for i in moved:  # each moved row is its user's last train row
        user = before[i]["user_id"]
        assert i == max(k for k, r in enumerate(before) if r["user_id"] == user and r["split"] == "train")
    assert len({before[i]["user_id"] for i in moved}) == 5
    for a, b in zip(before, after):  # histories, targets, valid and test rows untouched
        assert (a["user_id"], a["history"], a["target"]) == (b["user_id"], b["history"], b["target"])
        if a["split"] != "train":
            assert a["split"] == b["split"]
    # SFT's chains lose exactly the held-out targets; no held-out target is ever trained
    train_chains = dict(user_sequences(held, "train"))
    for i in moved:
        user, target = before[i]["user_id"], before[i]["target"]
        assert target not in train_chains.get(user, [])
        # the chain ends just before the held-out target (a user with one train row has no chain left)
        assert train_chains.get(user, before[i]["history"]) == before[i]["history"]
    # the same seed picks the same users; share 0 and 1 are the edges
    assert hold_out_last_train(table, 0.5, seed=3)[0].equals(held)
    assert hold_out_last_train(table, 0.0)[1] == 0 and hold_out_last_train(table, 1.0)[1] == 10


def test_bad_share_or_split_name_is_refused():
    table = _rows()
    with pytest.raises(ValueError, match="share"):
        hold_out_last_train(table, 1.5)
    with pytest.raises(ValueError, match="new split"):
        hold_out_last_train(table, 0.5, to="valid")
    held, _ = hold_out_last_train(table, 0.5)
    with pytest.raises(ValueError, match="hold out once"):
        hold_out_last_train(held, 0.5)


def test_sft_and_rl_stages_split_the_same_rows():
    from raygen.tasks.config import TasksConfig

    table = _rows()
    off = TasksConfig()
    assert sft_samples(table, off) == (table, 0) and rl_prompt_rows(table, off) == (table, "train")
    on = TasksConfig(rl_holdout_share=0.3)
    sft, held = sft_samples(table, on)
    rl, split = rl_prompt_rows(table, on)
    assert split == RL_SPLIT and held == 3 and sft.equals(rl)
    rl_rows = [r for r in rl.to_pylist() if r["split"] == RL_SPLIT]
    trained = {t for _, chain in user_sequences(sft, "train") for t in chain[1:]}
    assert len(rl_rows) == 3 and all(r["target"] not in trained for r in rl_rows)


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_config_refuses_a_share_outside_0_1(share):
    from raygen.configbase import ConfigError
    from raygen.tasks.config import TasksConfig

    with pytest.raises(ConfigError, match="rl_holdout_share"):
        TasksConfig(rl_holdout_share=share).validate()
