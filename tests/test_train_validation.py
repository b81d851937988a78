"""Validation-driven training core: evaluation by beam search, best tracking, patience, state round trip."""
from __future__ import annotations

import pytest
import torch

from raygen.train.validation import ValidSet, Validator, broadcast_metrics


def _valid(tiny_llama, n_items=6):
    lm = tiny_llama(vocab_size=64)
    sid = [[40 + i, 50 + i] for i in range(n_items)]  # 2-level SIDs, distinct
    prompts = [[1, 2, 3 + i] for i in range(8)]
    targets = [i % n_items for i in range(8)]
    return lm, ValidSet(prompt_ids=prompts, targets=targets, sid_matrix=sid, pad_id=0)


def test_evaluate_matches_brute_force_ranking(tiny_llama):
    lm, valid = _valid(tiny_llama)
    v = Validator(valid, beam_width=6, batch_size=3)
    m = v.evaluate(lm)
    # exhaustive beam (beam = catalog): HR@5 is whether the target is not the single worst item
    with torch.no_grad():
        hits = 0
        for p, t in zip(valid.prompt_ids, valid.targets):
            scores = []
            for s in valid.sid_matrix:
                ids = torch.tensor([p + s])
                logp = torch.log_softmax(lm(ids).logits[0].float(), -1)
                scores.append(float(logp[len(p) - 1, s[0]] + logp[len(p), s[1]]))
            rank = sorted(range(len(scores)), key=lambda i: -scores[i]).index(t)
            hits += rank < 5
    assert m["hr@5"] == hits / len(valid.targets)
    assert set(m) == {"hr@1", "hr@5", "hr@10", "ndcg@1", "ndcg@5", "ndcg@10"}
    assert m["hr@10"] == 1.0  # K above the beam width scores the whole (exhaustive) beam


def test_record_best_patience_and_state_round_trip(tiny_llama):
    _, valid = _valid(tiny_llama)
    v = Validator(valid, patience=2)
    assert v.record(10, {"ndcg@10": 0.1, "hr@10": 0.2}, {"examples": 80})
    v.keep({"w": torch.ones(2)})
    assert not v.record(20, {"ndcg@10": 0.05, "hr@10": 0.1})
    assert not v.should_stop
    assert v.record(30, {"ndcg@10": 0.2, "hr@10": 0.3})
    assert (v.best, v.best_step, v.bad) == (0.2, 30, 0)
    assert not v.record(40, {"ndcg@10": 0.2, "hr@10": 0.3})  # equal is not better
    assert not v.record(50, {"ndcg@10": 0.1, "hr@10": 0.3})
    assert v.should_stop
    assert v.curve[0] == {"step": 10, "examples": 80, "valid_ndcg@10": 0.1, "valid_hr@10": 0.2}
    w = Validator(valid, patience=2)
    w.load_state(v.state())
    assert (w.best, w.best_step, w.bad, w.curve) == (v.best, v.best_step, v.bad, v.curve)
    assert Validator(valid, patience=0).should_stop is False


def test_broadcast_without_process_group_is_identity():
    assert broadcast_metrics({"a": 1.5}, ["a"], "cpu") == {"a": 1.5}


def _cycle():
    """A learnable item cycle: 48 training rows (5 items in cycle order), its valid set, the SID ids."""
    items = [[60 + i, 70 + (i * 3) % 6] for i in range(6)]
    rows, g = [], torch.Generator().manual_seed(0)
    for _ in range(48):
        seq = [int(torch.randint(0, 6, (1,), generator=g))]
        for _ in range(4):
            seq.append((seq[-1] + 1) % 6)
        flat = [t for i in seq for t in items[i]]
        rows.append({"input_ids": [5, 6] + flat, "labels": [-100] * 4 + flat[2:]})
    valid = ValidSet([[5, 6] + items[i] for i in range(6)], [(i + 1) % 6 for i in range(6)], items, pad_id=0)
    return rows, valid, sorted({t for s in items for t in s})


def test_fit_local_learns_a_cycle_keeps_best_and_stops(tiny_llama):
    """The single-process trainer (same cores as the Ray worker) on a learnable item cycle."""
    from raygen.train.config import TrainConfig
    from raygen.train.local import fit_local

    torch.manual_seed(0)
    lm = tiny_llama(vocab_size=80)
    rows, valid, sid_ids = _cycle()
    cfg = TrainConfig(mode="full", batch_size=8, max_steps=300, lr=3e-2, valid_every=5, valid_beam=6, patience=3,
                      pad_to="packing", max_len=64, bf16=False, sid_only_head=True)
    model, summary = fit_local(lm, rows, sid_ids, cfg, pad_id=0, eos_ids=[2], valid=valid)
    best = max(c["valid_ndcg@10"] for c in summary["learning_curve"])
    assert summary["stopped_early"] and summary["final_step"] < 300 and best > 0.6
    assert summary["exported_step"] == summary["best_step"]
    v = Validator(valid, beam_width=6, sid_only=True, eos_id=[2])
    assert v.evaluate(model)["ndcg@10"] == best  # the returned model is the best state


def test_fit_local_resumes_a_run_cut_short_exactly(tiny_llama, tmp_path, monkeypatch):
    """A run killed after step 10 resumes from its step-8 checkpoint and ends where an uninterrupted run
    ends: same weights, best step and learning curve (same batches in the same order after the resume)."""
    import raygen.train.local as local
    from raygen.train.config import TrainConfig

    rows, valid, sid_ids = _cycle()
    cfg = TrainConfig(mode="full", batch_size=8, epochs=3, lr=3e-2, valid_every=4, valid_beam=6, patience=0,
                      pad_to="packing", max_len=64, bf16=False, sid_only_head=True)  # 6 steps/epoch: 18
    ref, ref_sum = local.fit_local(tiny_llama(vocab_size=80), rows, sid_ids, cfg, 0, [2], valid=valid)

    class Killed(RuntimeError):
        pass

    class KilledAfterStep10(local.Progress):
        def step(self, res, model, state_fn):
            if res.step == 11:
                raise Killed
            return super().step(res, model, state_fn)

    ck = tmp_path / "ck"
    monkeypatch.setattr(local, "Progress", KilledAfterStep10)
    with pytest.raises(Killed):
        local.fit_local(tiny_llama(vocab_size=80), rows, sid_ids, cfg, 0, [2], valid=valid, checkpoint_dir=ck)
    monkeypatch.undo()
    assert sorted(p.name for p in ck.iterdir()) == ["step_0000008"]  # the newest checkpoint only
    model, summary = local.fit_local(tiny_llama(vocab_size=80), rows, sid_ids, cfg, 0, [2], valid=valid,
                                     checkpoint_dir=ck)
    assert summary["start_step"] == 8 and summary["final_step"] == ref_sum["final_step"] == 18
    assert summary["best_step"] == ref_sum["best_step"]
    untimed = [[{k: v for k, v in c.items() if k != "train_s"} for c in s["learning_curve"]]
               for s in (summary, ref_sum)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 5  # steps 4, 8, 12, 16, 18
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), n
    assert ref_sum["start_step"] == 0
    with pytest.raises(ValueError, match="other training settings"):  # never mixed into another run
        local.fit_local(tiny_llama(vocab_size=80), rows, sid_ids, TrainConfig(**{**cfg.__dict__, "lr": 1e-2}), 0,
                        [2], valid=valid, checkpoint_dir=ck)


def test_fit_local_refuses_fewer_examples_than_one_batch(tiny_llama):
    """Fewer examples than batch_size used to spin forever (no full batch ever yielded); now a clear error."""
    from raygen.train.config import TrainConfig
    from raygen.train.local import fit_local

    rows = [{"input_ids": [5, 6, 60], "labels": [-100, -100, 60]}] * 3
    cfg = TrainConfig(mode="full", batch_size=4, max_steps=2, bf16=False)
    with pytest.raises(ValueError, match="3 training examples, fewer than batch_size 4"):
        fit_local(tiny_llama(vocab_size=80), rows, [60], cfg, pad_id=0, eos_ids=[2])
