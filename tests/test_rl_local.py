"""benchmarks/rl_local.py: GRPO after a kept quality_local.py SFT model, scored on the same test rows as the
SFT run (paired), runs kept and reused, reward mixes checked (no Ray, tiny model)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, args: list[str], ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "benchmarks." + script.removesuffix(".py"), *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    if ok:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def _sft_model(tmp_path: Path, model_dir, run_dir) -> tuple[Path, Path]:
    """A kept quality_local.py SFT run (2 steps): (its runs folder, its models folder)."""
    sft_runs, models = tmp_path / "sft_runs", tmp_path / "models"
    _run("quality_local.py", ["--model-dir", str(model_dir), "--run", str(run_dir), "--runs-dir",
                              str(sft_runs), "--variants", "mean", "--seeds", "0", "--epochs", "1", "--max-steps", "2",
                              "--batch-size", "2", "--valid-every", "2", "--valid-rows", "8", "--patience", "1",
                              "--eval-batch", "16", "--out", str(tmp_path / "q.json"), "--train-only",
                              "--save-models", str(models)])
    return sft_runs, models


def test_rl_after_a_kept_sft_model(tmp_path, tiny_model_dir, tiny_run_dir):
    sft_runs, models = _sft_model(tmp_path, tiny_model_dir, tiny_run_dir)
    out, runs = tmp_path / "res" / "rl.json", tmp_path / "rl_runs"
    common = ["--run", str(tiny_run_dir), "--sft", str(models / "mean-s0"), "--runs-dir", str(runs), "--work-dir",
              str(tmp_path / "work"), "--seeds", "0,1", "--steps", "2", "--rollout-batch", "2", "--group", "2",
              "--lr", "1e-3", "--eval-every", "1", "--valid-rows", "8", "--eval-batch", "16"]
    first = _run("rl_local.py", [*common, "--sft-runs-dir", str(sft_runs), "--out", str(out),
                                 "--rewards", "rule=1,ranking=0.5", "rule=1,prefix=1"])
    assert "SFT test scoring from" in first.stdout
    res = json.loads(out.read_text())
    sft = np.load(sft_runs / "mean-s0.npz")
    assert np.isclose(res["sft"]["ndcg@10"], sft["metric:ndcg@10"].mean())
    assert set(res["mixes"]) == {"rule1+ranking0.5", "rule1+prefix1"}
    for mix in res["mixes"].values():
        assert [r["seed"] for r in mix["runs"]] == [0, 1] and len(mix["summary"]["ndcg@10"]["seeds"]) == 2
        assert {"diff", "ci95"} <= set(mix["vs_sft"]) and {"diff", "ci95"} <= set(mix["keep_best_vs_sft"])
        assert all(len(c) == 2 for c in mix["curves"])  # valid NDCG@10 after each of the 2 steps
        for r in mix["runs"]:
            assert r["handed_on"] == ("rl" if r["valid_ndcg@10_after"] >= r["valid_ndcg@10_before"] else "sft")
            assert 0.0 <= r["groups_with_signal"] <= 1.0
    assert sorted(p.name for p in runs.iterdir()) == ["rule1+prefix1-s0.npz", "rule1+prefix1-s1.npz",
                                                      "rule1+ranking0.5-s0.npz", "rule1+ranking0.5-s1.npz"]
    work = sorted(p.name for p in (tmp_path / "work").iterdir())  # one folder per run and settings
    assert len(work) == 4 and all(n.startswith(("rule1+prefix1-s", "rule1+ranking0.5-s")) for n in work)
    for w in (tmp_path / "work").iterdir():  # the policy is not kept by default; the spent checkpoints are gone
        assert not (w / "model").exists() and not (w / "checkpoints").exists()
    assert (out.parent / "rl.md").exists() and (out.parent / "rl.png").exists()

    # a rerun reuses the kept runs; without the SFT run's file the SFT model is scored here, with the same result
    second = _run("rl_local.py", [*common, "--out", str(tmp_path / "rl2.json"), "--rewards", "rule=1,ranking=0.5"])
    assert second.stdout.count("reused") == 2 and "SFT test scoring from" not in second.stdout
    again = json.loads((tmp_path / "rl2.json").read_text())
    assert np.isclose(again["sft"]["ndcg@10"], res["sft"]["ndcg@10"])
    assert again["mixes"]["rule1+ranking0.5"]["runs"] == res["mixes"]["rule1+ranking0.5"]["runs"]

    # --finished-only reports the kept runs and lists the others, training nothing
    # ... and an SFT run file made on other data (another SID build) is not paired with: the model is scored here
    other = tmp_path / "other_sft_runs"
    other.mkdir()
    z = dict(np.load(sft_runs / "mean-s0.npz"))
    fp = json.loads(str(z["fingerprint"]))
    assert len(fp["data_digest"]) == 64                       # quality_local records the data it trained on
    z["fingerprint"] = np.asarray(json.dumps({**fp, "data_digest": "0" * 64}, sort_keys=True))
    np.savez_compressed(other / "mean-s0.npz", **z)
    common3 = [("0,1,2" if x == "0,1" else x) for x in common]
    third = _run("rl_local.py", [*common3, "--out", str(tmp_path / "rl3.json"), "--rewards", "rule=1,ranking=0.5",
                                 "--finished-only", "--sft-runs-dir", str(other)])
    assert "was made on other data or SIDs" in third.stdout and "SFT test scoring from" not in third.stdout
    assert third.stdout.count("reused") == 2 and not list((tmp_path / "work").glob("rule1+ranking0.5-s2-*"))
    partial = json.loads((tmp_path / "rl3.json").read_text())
    assert partial["missing_runs"] == ["rule1+ranking0.5 seed 2"]
    assert partial["mixes"]["rule1+ranking0.5"]["runs"] == res["mixes"]["rule1+ranking0.5"]["runs"]
    assert "Not run yet" in (tmp_path / "rl3.md").read_text()

    bad = _run("rl_local.py", [*common, "--out", str(out), "--rewards", "rule=1,novelty=2"], ok=False)
    assert bad.returncode != 0 and "unknown reward 'novelty'" in bad.stderr


def test_rl_on_positions_held_out_of_sft(tmp_path, tiny_model_dir, tiny_run_dir):
    sft_runs, models = tmp_path / "sft_runs", tmp_path / "models"
    sft = _run("quality_local.py", ["--model-dir", str(tiny_model_dir), "--run", str(tiny_run_dir), "--runs-dir",
                                    str(sft_runs), "--variants", "mean", "--seeds", "0", "--epochs", "1",
                                    "--max-steps", "2", "--batch-size", "1", "--valid-every", "2", "--valid-rows", "8",
                                    "--patience", "1", "--eval-batch", "16", "--out", str(tmp_path / "q.json"),
                                    "--train-only", "--save-models", str(models), "--rl-holdout-share", "0.5"])
    held = int(sft.stdout.split(" train targets held out of SFT")[0].rsplit(maxsplit=1)[-1])
    assert held > 0
    out = tmp_path / "rl.json"
    rl = _run("rl_local.py", ["--run", str(tiny_run_dir), "--sft", str(models / "mean-s0"), "--sft-runs-dir",
                              str(sft_runs), "--work-dir", str(tmp_path / "work"), "--seeds", "0", "--steps", "1",
                              "--rollout-batch", "2", "--group", "2", "--eval-every", "0", "--valid-rows", "8",
                              "--eval-batch", "16", "--out", str(out), "--rl-holdout-share", "0.5"])
    assert "(split 'rl')" in rl.stdout
    res = json.loads(out.read_text())
    assert res["settings"]["rl_holdout_share"] == 0.5
    assert res["settings"]["train_prompts"] == held  # every held-out position is a prompt (all have SIDs)
    assert "held-out positions" in (tmp_path / "rl.md").read_text()
    # the RL options reach the config and the report; the supervised control is a row of its own
    out2 = tmp_path / "rl_opts.json"
    _run("rl_local.py", ["--run", str(tiny_run_dir), "--sft", str(models / "mean-s0"), "--sft-runs-dir",
                         str(sft_runs), "--work-dir", str(tmp_path / "work2"), "--seeds", "0", "--steps", "2",
                         "--rollout-batch", "2", "--group", "2", "--eval-every", "0", "--valid-rows", "8",
                         "--eval-batch", "16", "--out", str(out2), "--rl-holdout-share", "0.5", "--target-in-group",
                         "--signal-rounds", "2", "--sft-control", "--sft-coefs", "0", "0.5"])
    res2 = json.loads(out2.read_text())
    assert res2["settings"]["target_in_group"] is True and res2["settings"]["signal_rounds"] == 2
    assert set(res2["mixes"]) == {"rule1+ranking0.5", "rule1+ranking0.5+sft0.5", "sft-control"}
    ptx = res2["mixes"]["rule1+ranking0.5+sft0.5"]
    assert ptx["sft_coef"] == 0.5 and ptx["runs"][0]["sft_nll_first"] > 0  # the supervised term ran
    assert "sft_coef" not in res2["mixes"]["rule1+ranking0.5"] and "sft_nll_first" not in res2["mixes"][
        "rule1+ranking0.5"]["runs"][0]
    control = res2["mixes"]["sft-control"]["runs"][0]
    assert control["rewards"] is None and control["groups_with_signal"] is None and 0 <= control["ndcg@10"] <= 1
    md = (tmp_path / "rl_opts.md").read_text()
    assert "dynamic sampling" in md and "the target put in place" in md and "| sft-control |" in md
    assert "rl.sft_coef = c" in md and "Against the supervised control" in md
    for name in ("rule1+ranking0.5", "rule1+ranking0.5+sft0.5"):  # each GRPO row paired with the control
        vs = res2["mixes"][name]["vs_control"]
        diff = np.mean(np.array(res2["mixes"][name]["summary"]["ndcg@10"]["seeds"]) -
                       np.array(res2["mixes"]["sft-control"]["summary"]["ndcg@10"]["seeds"]))
        assert vs["seeds"] == [0] and np.isclose(vs["diff"], diff) and vs["ci95"][0] <= vs["diff"] <= vs["ci95"][1]
    assert "vs_control" not in res2["mixes"]["sft-control"]


def test_sft_control_learns_the_prompts_targets(tiny_model_dir, tiny_run_dir, tmp_path):
    """The control trains on prompt + target SID with GRPO's optimizer settings: the targets' loss falls."""
    import types

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.rl_local import control_model

    from raygen.lm.vocab import add_sid_tokens
    from raygen.train.loss import LossModule
    from raygen.eval.rows import Catalog
    from benchmarks.quality_local import Data

    d = Data(tiny_run_dir)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    add_sid_tokens(lm, tok, [r["token"] for r in d.token_rows])
    lm.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    catalog = Catalog.from_codes(d.codes, tok)
    sid = np.asarray(catalog.sid_matrix)
    prompts = [[5, 6, 7 + i] for i in range(4)]
    task = {"train_prompts": prompts, "train_targets": [0, 1, 2, 3]}

    def loss(model):
        ids = torch.tensor([p + sid[t].tolist() for p, t in zip(prompts, task["train_targets"])])
        labels = ids.clone()
        labels[:, :3] = -100
        sid_ids = sorted({int(x) for x in sid.reshape(-1)})
        module = LossModule(model, logits="sid", sid_ids=sid_ids, extra_ids=[tok.eos_token_id])
        with torch.no_grad():
            return float(module(ids, labels)["loss"])

    a = types.SimpleNamespace(sft=str(tmp_path / "sft"), steps=6, rollout_batch=4, lr=1e-2)
    before = loss(AutoModelForCausalLM.from_pretrained(tmp_path / "sft"))
    after = loss(control_model(a, tok, catalog, task, seed=0))
    assert after < before - 0.1


def test_a_run_cut_short_resumes_from_its_checkpoint(tmp_path, tiny_model_dir, tiny_run_dir):
    """Killed after its first GRPO checkpoint, the same command resumes the run there (not from step 0)."""
    import time

    sft_runs, models = _sft_model(tmp_path, tiny_model_dir, tiny_run_dir)
    args = ["--run", str(tiny_run_dir), "--sft", str(models / "mean-s0"), "--sft-runs-dir", str(sft_runs),
            "--work-dir", str(tmp_path / "work"), "--seeds", "0", "--steps", "30", "--rollout-batch", "2",
            "--group", "2", "--eval-every", "0", "--valid-rows", "8", "--eval-batch", "16", "--checkpoint-every", "3",
            "--out", str(tmp_path / "rl.json")]
    cmd = [sys.executable, "-m", "benchmarks.rl_local", *args]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not list((tmp_path / "work").glob("*/checkpoints/step_*/state.json")):
            assert proc.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "rl.json").exists()
    done = _run("rl_local.py", args)
    rec = json.loads((tmp_path / "rl.json").read_text())["mixes"]["rule1+ranking0.5"]["runs"][0]
    assert rec["resumed_from_step"] is not None and 3 <= rec["resumed_from_step"] < 30, done.stdout[-2000:]
    assert not list((tmp_path / "work").glob("*/checkpoints"))
